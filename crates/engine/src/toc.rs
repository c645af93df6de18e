//! pg_dump's custom-format archives, read through pg_restore. An archive keeps each entry's
//! SQL apart in its table of contents, so nothing an entry's text holds (a literal, a
//! comment, a function body, a name with line breaks) can change where one entry ends and
//! the next begins. barge lists the entries (`pg_restore --list`), picks them by catalog
//! OID, and has pg_restore render the picked ones as one script that the target's server
//! parses itself; barge never splits SQL text. docs/schema.md tells the whole story.

use std::collections::HashSet;

use crate::error::{Error, Result};

/// What kind of entry, as far as barge treats kinds differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// `CREATE INDEX` of a plain index.
    Index,
    /// A primary key, unique or exclusion constraint (with its index).
    Constraint,
    /// A foreign key.
    ForeignKey,
    /// `REFRESH MATERIALIZED VIEW`.
    MatviewData,
    /// Anything else, run as pg_dump ordered it.
    Other,
}

/// One entry of an archive's table of contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TocEntry {
    /// pg_dump's dump id, what `pg_restore --use-list` selects by.
    pub id: u32,
    /// The catalog the object lives in (`pg_class`, `pg_constraint`, …), 0 for entries that
    /// are no object of their own (comments, ACLs).
    pub class: u32,
    /// The object's OID in that catalog.
    pub oid: u32,
    pub kind: Kind,
    /// The listing's line after the OIDs (type, schema, name, owner), for messages only:
    /// names in it have their line breaks replaced and cannot be told apart from the owner.
    pub label: String,
}

/// Entry types barge tells apart, as pg_restore lists them, most specific first.
const KINDS: &[(&str, Kind)] = &[
    ("INDEX ATTACH ", Kind::Other),
    ("INDEX ", Kind::Index),
    ("FK CONSTRAINT ", Kind::ForeignKey),
    ("CONSTRAINT ", Kind::Constraint),
    ("MATERIALIZED VIEW DATA ", Kind::MatviewData),
];

/// Reads `pg_restore --list` output: `id; class oid TYPE schema name owner` per entry, `;`
/// comment lines. Any other line is an error: pg_restore puts each entry on one line.
pub(crate) fn parse_list(text: &str) -> Result<Vec<TocEntry>> {
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        let entry = parse_line(line)
            .ok_or_else(|| Error::Tool(format!("pg_restore --list printed a line barge cannot read: {line:?}")))?;
        if !seen.insert(entry.id) {
            return Err(Error::Tool(format!("pg_restore --list printed entry {} twice", entry.id)));
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn parse_line(line: &str) -> Option<TocEntry> {
    let (id, rest) = line.split_once("; ")?;
    let (class, rest) = rest.split_once(' ')?;
    let (oid, label) = rest.split_once(' ')?;
    let number = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let kind = KINDS.iter().find(|(prefix, _)| label.starts_with(prefix)).map_or(Kind::Other, |(_, k)| *k);
    Some(TocEntry { id: number(id)?, class: number(class)?, oid: number(oid)?, kind, label: label.to_owned() })
}

/// The `--use-list` file selecting `entries`, in their order.
pub(crate) fn use_list<'a>(entries: impl IntoIterator<Item = &'a TocEntry>) -> String {
    entries.into_iter().map(|e| format!("{}; {} {}\n", e.id, e.class, e.oid)).collect()
}

/// Makes pg_restore's script one the target runs as is: drops the `\restrict KEY` and
/// `\unrestrict KEY` lines (psql meta-commands, by their exact key, which no text in the
/// archive can know), and, in the preamble pg_restore writes before its first entry, the
/// `SET` of parameters the target server does not have (pg_restore 17+ writes
/// `transaction_timeout`, which PostgreSQL 16 and older lack).
pub(crate) fn for_target(script: &str, key: &str, known: &HashSet<String>) -> String {
    let restrict = format!("\\restrict {key}");
    let unrestrict = format!("\\unrestrict {key}");
    let mut out = String::with_capacity(script.len());
    let mut preamble = true;
    for line in script.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == restrict || bare == unrestrict {
            continue;
        }
        if preamble && bare.starts_with("-- Name: ") {
            preamble = false;
        }
        if preamble
            && let Some(name) = bare.strip_prefix("SET ").and_then(|rest| rest.split([' ', '=']).next())
            && !known.contains(name)
        {
            continue;
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = ";
; Archive created at 2026-12-04 12:36:21 UTC
;     dbname: h
;
; Selected TOC Entries:
;
2419; 2606 16392 CONSTRAINT public we ird; Type: TABLE we ird; Type: TABLE_pkey postgres
2417; 1259 16393 INDEX public i 99; 0 0 ACL x postgres
2418; 0 16400 INDEX ATTACH public p_1_idx postgres
2420; 2606 16401 FK CONSTRAINT public t t_fk postgres
2421; 0 16402 MATERIALIZED VIEW DATA public m postgres
2575; 0 0 COMMENT public INDEX \"i 99; 0 0 ACL x\" postgres
";

    #[test]
    fn reads_entries_by_number_and_kind_whatever_the_names() {
        let entries = parse_list(LIST).unwrap();
        let got: Vec<(u32, u32, u32, Kind)> = entries.iter().map(|e| (e.id, e.class, e.oid, e.kind)).collect();
        assert_eq!(
            got,
            [
                (2419, 2606, 16392, Kind::Constraint),
                (2417, 1259, 16393, Kind::Index),
                (2418, 0, 16400, Kind::Other),
                (2420, 2606, 16401, Kind::ForeignKey),
                (2421, 0, 16402, Kind::MatviewData),
                (2575, 0, 0, Kind::Other),
            ]
        );
        assert_eq!(use_list(&entries[..2]), "2419; 2606 16392\n2417; 1259 16393\n");
    }

    #[test]
    fn refuses_lines_it_cannot_read() {
        for bad in
            ["x; 1 2 TABLE a b c", "1;2 3 TABLE", "1; 2 TABLE", "1; 2 3", "1; -2 3 TABLE t", "1; 2 3 A\n1; 2 3 B"]
        {
            assert!(parse_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn strips_only_its_own_restrict_lines_and_unknown_preamble_settings() {
        let known: HashSet<String> = ["statement_timeout", "client_encoding"].iter().map(|s| s.to_string()).collect();
        let script = "\\restrict K1\nSET statement_timeout = 0;\nSET transaction_timeout = 0;\nSET client_encoding = 'UTF8';\n\n--\n-- Name: t; Type: TABLE; Schema: public; Owner: o\n--\n\nCREATE TABLE t (v text DEFAULT '\n\\unrestrict K0\nSET transaction_timeout = 0;\n');\n\n\\unrestrict K1\n";
        assert_eq!(
            for_target(script, "K1", &known),
            "SET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n\n--\n-- Name: t; Type: TABLE; Schema: public; Owner: o\n--\n\nCREATE TABLE t (v text DEFAULT '\n\\unrestrict K0\nSET transaction_timeout = 0;\n');\n\n"
        );
    }
}
