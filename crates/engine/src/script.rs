//! Reads pg_dump's plain-format output as a list of entries (one per archive TOC entry, as
//! pg_dump's `-- Name: …; Type: …; Schema: …; Owner: …` headers mark them) plus the session
//! settings each entry runs under, so entries can run on any connection, in any grouping.

use std::sync::Arc;

/// One pg_dump entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// pg_dump's object type: `TABLE`, `INDEX`, `FK CONSTRAINT`, `COMMENT`, …
    pub kind: String,
    /// Schema, or `-` for global objects.
    pub schema: String,
    /// pg_dump's tag: the object name, `table constraint` for constraints, `TABLE t` for ACLs.
    pub name: String,
    /// The SQL, without session settings or psql meta-commands.
    pub sql: String,
    /// The session settings (`SET …;`) in effect where the entry stood.
    pub settings: Arc<Vec<String>>,
}

/// A parsed plain-format dump.
#[derive(Clone, Debug, Default)]
pub(crate) struct Script {
    pub entries: Vec<Entry>,
}

/// Whether a line sets session state rather than belonging to an entry.
fn is_session_line(line: &str) -> bool {
    (line.starts_with("SET ") && line.ends_with(';'))
        || line.starts_with("SELECT pg_catalog.set_config('search_path'")
        || line.starts_with('\\')
}

fn setting_key(line: &str) -> Option<&str> {
    if let Some(rest) = line.strip_prefix("SET ") {
        return rest.split([' ', '=']).next();
    }
    if line.starts_with("SELECT pg_catalog.set_config('search_path'") {
        return Some("search_path");
    }
    None
}

fn parse_header(line: &str) -> Option<(String, String, String)> {
    let rest = line.strip_prefix("-- Name: ")?;
    let (name, rest) = rest.split_once("; Type: ")?;
    let (kind, rest) = rest.split_once("; Schema: ")?;
    let schema = rest.split_once("; Owner: ").map_or(rest, |(s, _)| s);
    Some((kind.to_owned(), schema.to_owned(), name.to_owned()))
}

impl Script {
    /// Splits pg_dump's plain output into entries.
    pub(crate) fn parse(text: &str) -> Script {
        let lines: Vec<&str> = text.lines().collect();
        let mut settings: Vec<String> = Vec::new();
        let mut shared = Arc::new(settings.clone());
        let mut entries = Vec::new();
        let mut i = 0;
        // Header: "--" / "-- Name: …" / "--".
        let header_at = |i: usize| -> Option<(String, String, String)> {
            if lines.get(i) == Some(&"--") && lines.get(i + 2) == Some(&"--") {
                parse_header(lines.get(i + 1)?)
            } else {
                None
            }
        };
        let apply = |line: &str, settings: &mut Vec<String>| {
            if let Some(key) = setting_key(line) {
                settings.retain(|s| setting_key(s) != Some(key));
                settings.push(line.to_owned());
            }
        };
        // Preamble: everything before the first header.
        while i < lines.len() && header_at(i).is_none() {
            if is_session_line(lines[i]) {
                apply(lines[i], &mut settings);
            }
            i += 1;
        }
        while i < lines.len() {
            let Some((kind, schema, name)) = header_at(i) else {
                i += 1;
                continue;
            };
            if *shared != settings {
                shared = Arc::new(settings.clone());
            }
            i += 3;
            let start = i;
            while i < lines.len() && header_at(i).is_none() {
                i += 1;
            }
            // Peel session lines, meta-commands and blanks off the entry's tail.
            let mut end = i;
            let mut tail = Vec::new();
            while end > start {
                let line = lines[end - 1];
                if line.trim().is_empty() || is_session_line(line) || line.starts_with("--") {
                    tail.push(line);
                    end -= 1;
                } else {
                    break;
                }
            }
            let body = lines[start..end].join("\n");
            let sql = body.trim().to_owned();
            entries.push(Entry { kind, schema, name, sql, settings: shared.clone() });
            for line in tail.into_iter().rev() {
                if is_session_line(line) {
                    apply(line, &mut settings);
                }
            }
        }
        Script { entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "--
-- PostgreSQL database dump
--

\\restrict abc

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: app; Type: DATABASE; Schema: -; Owner: postgres
--

CREATE DATABASE app WITH TEMPLATE = template0 ENCODING = 'UTF8';


ALTER DATABASE app OWNER TO postgres;

\\unrestrict abc
\\connect app
\\restrict abc

SET statement_timeout = 0;

--
-- Name: f(); Type: FUNCTION; Schema: s; Owner: o
--

CREATE FUNCTION s.f() RETURNS int LANGUAGE sql AS $$
select 1;
$$;

SET default_tablespace = '';

--
-- Name: t t_pkey; Type: CONSTRAINT; Schema: s; Owner: -
--

ALTER TABLE ONLY s.t
    ADD CONSTRAINT t_pkey PRIMARY KEY (id);


--
-- PostgreSQL database dump complete
--

\\unrestrict abc
";

    #[test]
    fn splits_entries_and_tracks_settings() {
        let script = Script::parse(DUMP);
        let kinds: Vec<&str> = script.entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["DATABASE", "FUNCTION", "CONSTRAINT"]);
        let db = &script.entries[0];
        assert_eq!(
            db.sql,
            "CREATE DATABASE app WITH TEMPLATE = template0 ENCODING = 'UTF8';\n\n\nALTER DATABASE app OWNER TO postgres;"
        );
        assert_eq!(db.settings.len(), 2);
        let f = &script.entries[1];
        assert_eq!((f.schema.as_str(), f.name.as_str()), ("s", "f()"));
        assert!(f.sql.ends_with("$$;"));
        let c = &script.entries[2];
        assert_eq!(c.name, "t t_pkey");
        assert!(c.settings.contains(&"SET default_tablespace = '';".to_owned()));
        assert!(!c.sql.contains("dump complete"), "{}", c.sql);
        assert!(!c.sql.contains('\\'));
    }
}
