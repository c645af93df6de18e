//! Which databases, schemas and tables a job covers. Patterns are globs (`*`, `?`, `[abc]`)
//! matched case-sensitively against names as stored; dots separate `db.schema.table`, and a
//! double-quoted part is literal (`'"my.schema"."Odd*Name"'`).

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

/// Most patterns in one list.
pub const MAX_PATTERNS: usize = 1000;
/// Longest pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 512;

/// A pattern (or list) that cannot be used: which list, which entry, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {}: {reason}", pattern.as_deref().map(|p| format!("{p:?}")).unwrap_or_default())]
pub struct FilterError {
    /// The list, as the job spec names it (`include_tables`).
    pub list: &'static str,
    /// The list, as the CLI names it (`--include-table`).
    pub flag: &'static str,
    /// The entry's position, when one entry is at fault.
    pub index: Option<usize>,
    /// The entry, when one is at fault.
    pub pattern: Option<String>,
    /// What is wrong.
    pub reason: String,
}

type Result<T> = std::result::Result<T, FilterError>;

/// The filters a user gave, as written; [`Filter::compile`] checks them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    /// Databases to copy (`--all-databases` mode): names or globs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include_databases: Vec<String>,
    /// Databases to skip.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude_databases: Vec<String>,
    /// Schemas to copy: `schema` or `db.schema`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include_schemas: Vec<String>,
    /// Schemas to skip.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude_schemas: Vec<String>,
    /// Tables to copy: `table`, `schema.table` or `db.schema.table`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include_tables: Vec<String>,
    /// Tables to skip.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude_tables: Vec<String>,
    /// Tables whose structure is copied without their rows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schema_only_tables: Vec<String>,
}

/// One compiled pattern: optional database and schema parts, and the object name.
#[derive(Debug, Clone)]
struct Pattern {
    /// The flag and the pattern as given, for messages.
    flag: &'static str,
    text: String,
    database: Option<GlobMatcher>,
    schema: Option<GlobMatcher>,
    name: GlobMatcher,
}

/// The names a filter was matched against: every schema and relation of the databases a job
/// covers (database patterns are checked against the source's database list).
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// (database, schema).
    pub schemas: Vec<(String, String)>,
    /// (database, schema, relation).
    pub relations: Vec<(String, String, String)>,
}

/// Filters ready for matching.
#[derive(Debug, Clone, Default)]
pub struct CompiledFilter {
    include_databases: Vec<Pattern>,
    exclude_databases: Vec<Pattern>,
    include_schemas: Vec<Pattern>,
    exclude_schemas: Vec<Pattern>,
    include_tables: Vec<Pattern>,
    exclude_tables: Vec<Pattern>,
    schema_only_tables: Vec<Pattern>,
}

impl Filter {
    /// Whether no filter at all was given.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Checks every pattern; errors name the list, the flag and the pattern.
    pub fn compile(&self) -> Result<CompiledFilter> {
        let list =
            |name: &'static str, flag: &'static str, patterns: &[String], max_parts: usize| -> Result<Vec<Pattern>> {
                if patterns.len() > MAX_PATTERNS {
                    return Err(FilterError {
                        list: name,
                        flag,
                        index: None,
                        pattern: None,
                        reason: format!("more than {MAX_PATTERNS} patterns"),
                    });
                }
                patterns
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        parse_pattern(flag, p, max_parts).map_err(|reason| FilterError {
                            list: name,
                            flag,
                            index: Some(i),
                            pattern: Some(p.clone()),
                            reason,
                        })
                    })
                    .collect()
            };
        Ok(CompiledFilter {
            include_databases: list("include_databases", "--include-database", &self.include_databases, 1)?,
            exclude_databases: list("exclude_databases", "--exclude-database", &self.exclude_databases, 1)?,
            include_schemas: list("include_schemas", "--include-schema", &self.include_schemas, 2)?,
            exclude_schemas: list("exclude_schemas", "--exclude-schema", &self.exclude_schemas, 2)?,
            include_tables: list("include_tables", "--include-table", &self.include_tables, 3)?,
            exclude_tables: list("exclude_tables", "--exclude-table", &self.exclude_tables, 3)?,
            schema_only_tables: list("schema_only_tables", "--schema-only-table", &self.schema_only_tables, 3)?,
        })
    }
}

impl CompiledFilter {
    /// One line per database pattern that matches none of `databases`, naming the closest.
    pub fn unmatched_databases(&self, databases: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.include_databases.iter().chain(&self.exclude_databases) {
            if !databases.iter().any(|d| p.name.is_match(d)) {
                out.push(no_match(p, "database", databases.iter().map(String::as_str)));
            }
        }
        out
    }

    /// One line per schema or table pattern that matches nothing in `seen`, naming the
    /// closest names that exist.
    pub fn unmatched(&self, seen: &Seen) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.include_schemas.iter().chain(&self.exclude_schemas) {
            let m = |(db, schema): &(String, String)| {
                p.database.as_ref().is_none_or(|d| d.is_match(db)) && p.name.is_match(schema)
            };
            if !seen.schemas.iter().any(m) {
                let mut names: Vec<&str> = seen.schemas.iter().map(|(_, s)| s.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                out.push(no_match(p, "schema", names.into_iter()));
            }
        }
        for p in self.include_tables.iter().chain(&self.exclude_tables).chain(&self.schema_only_tables) {
            if !seen.relations.iter().any(|(db, schema, name)| table_match(p, db, schema, name)) {
                let mut names: Vec<String> =
                    seen.relations.iter().map(|(_, schema, name)| format!("{schema}.{name}")).collect();
                names.sort_unstable();
                names.dedup();
                out.push(no_match(p, "table", names.iter().map(String::as_str)));
            }
        }
        out
    }

    /// Whether database filters were given.
    pub fn filters_databases(&self) -> bool {
        !self.include_databases.is_empty() || !self.exclude_databases.is_empty()
    }

    /// Whether `db` is copied.
    pub fn database(&self, db: &str) -> bool {
        let m = |p: &Pattern| p.name.is_match(db);
        (self.include_databases.is_empty() || self.include_databases.iter().any(m))
            && !self.exclude_databases.iter().any(m)
    }

    /// Whether `schema` in `db` is copied.
    pub fn schema(&self, db: &str, schema: &str) -> bool {
        let m = |p: &Pattern| p.database.as_ref().is_none_or(|d| d.is_match(db)) && p.name.is_match(schema);
        (self.include_schemas.is_empty() || self.include_schemas.iter().any(m)) && !self.exclude_schemas.iter().any(m)
    }

    /// Whether the relation `schema.name` in `db` is selected by the table filters (its
    /// schema's filters are checked separately).
    pub fn table(&self, db: &str, schema: &str, name: &str) -> bool {
        (self.include_tables.is_empty() || self.include_tables.iter().any(|p| table_match(p, db, schema, name)))
            && !self.excluded_table(db, schema, name)
    }

    /// Whether `--exclude-table` names the relation explicitly.
    pub fn excluded_table(&self, db: &str, schema: &str, name: &str) -> bool {
        self.exclude_tables.iter().any(|p| table_match(p, db, schema, name))
    }

    /// Whether the relation is copied without its rows.
    pub fn schema_only(&self, db: &str, schema: &str, name: &str) -> bool {
        self.schema_only_tables.iter().any(|p| table_match(p, db, schema, name))
    }
}

/// `--include-table "custmers" matches no table (closest: public.customers)`.
fn no_match<'a>(p: &Pattern, what: &str, names: impl Iterator<Item = &'a str>) -> String {
    let given = p.text.replace('"', "").to_lowercase();
    let mut scored: Vec<(usize, &str)> = names
        .map(|name| {
            let lower = name.to_lowercase();
            let short = lower.rsplit('.').next().unwrap_or(&lower).to_owned();
            let given_short = given.rsplit('.').next().unwrap_or(&given);
            (distance(&given, &lower).min(distance(given_short, &short)), name)
        })
        .filter(|(d, _)| *d <= (given.chars().count() / 3).max(2))
        .collect();
    scored.sort();
    let closest: Vec<&str> = scored.iter().take(3).map(|(_, n)| *n).collect();
    let hint = if closest.is_empty() { String::new() } else { format!("; did you mean {}?", closest.join(", ")) };
    format!("{} {:?} matches no {what}{hint}", p.flag, p.text)
}

/// Edit distance (insertions, deletions, substitutions) between two names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb { previous } else { 1 + previous.min(row[j]).min(current) };
            previous = current;
        }
    }
    row[b.len()]
}

fn table_match(p: &Pattern, db: &str, schema: &str, name: &str) -> bool {
    p.database.as_ref().is_none_or(|d| d.is_match(db))
        && p.schema.as_ref().is_none_or(|s| s.is_match(schema))
        && p.name.is_match(name)
}

/// Splits `a.b."c.d"` into parts as written (quotes kept); `None` when a quote is left open.
pub fn split_pattern(pattern: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in pattern.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => {
                parts.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&pattern[start..]);
    (!quoted).then_some(parts)
}

/// Splits `a.b."c.d"` into glob parts; a quoted part is literal and `""` inside it is one quote.
fn split_parts(pattern: &str) -> std::result::Result<Vec<String>, String> {
    let mut parts = vec![String::new()];
    let mut chars = pattern.chars().peekable();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        let piece = match (c, in_quotes) {
            ('"', false) => {
                in_quotes = true;
                continue;
            }
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                globset::escape("\"")
            }
            ('"', true) => {
                in_quotes = false;
                continue;
            }
            ('.', false) => {
                parts.push(String::new());
                continue;
            }
            (c, true) => globset::escape(&c.to_string()),
            (c, false) => c.to_string(),
        };
        if let Some(part) = parts.last_mut() {
            part.push_str(&piece);
        }
    }
    if in_quotes {
        return Err("unterminated double quote".into());
    }
    if parts.iter().any(String::is_empty) {
        return Err("empty name part (two dots in a row, or a leading or trailing dot)".into());
    }
    Ok(parts)
}

fn parse_pattern(flag: &'static str, pattern: &str, max_parts: usize) -> std::result::Result<Pattern, String> {
    if pattern.is_empty() {
        return Err("is empty".into());
    }
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!("longer than {MAX_PATTERN_BYTES} bytes"));
    }
    if pattern.chars().any(char::is_control) {
        return Err("holds a control character".into());
    }
    let parts = split_parts(pattern)?;
    if parts.len() > max_parts {
        let shape = match max_parts {
            1 => "a database name",
            2 => "schema or db.schema",
            _ => "table, schema.table or db.schema.table",
        };
        return Err(format!(
            "too many dot-separated parts; expected {shape} (quote names that contain dots: '\"my.schema\".t')"
        ));
    }
    let glob = |part: &str| -> std::result::Result<GlobMatcher, String> {
        GlobBuilder::new(part)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map(|g| g.compile_matcher())
            .map_err(|e| format!("{}", e.kind()))
    };
    let mut globs = parts.iter().map(|p| glob(p)).collect::<std::result::Result<Vec<_>, _>>()?;
    let name = globs.pop().ok_or_else(|| "is empty".to_string())?;
    let (database, schema) = match (max_parts, globs.len()) {
        (1, _) => (None, None),
        (2, 1) => (Some(globs.remove(0)), None),
        (3, 1) => (None, Some(globs.remove(0))),
        (3, 2) => {
            let schema = globs.pop();
            (globs.pop(), schema)
        }
        _ => (None, None),
    };
    Ok(Pattern { flag, text: pattern.to_owned(), database, schema, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(f: impl FnOnce(&mut Filter)) -> CompiledFilter {
        let mut filter = Filter::default();
        f(&mut filter);
        filter.compile().unwrap()
    }

    #[test]
    fn empty_filter_selects_everything() {
        let f = filter(|_| {});
        assert!(f.database("app") && f.schema("app", "public") && f.table("app", "public", "t"));
        assert!(!f.schema_only("app", "public", "t"));
    }

    #[test]
    fn table_globs_at_every_depth() {
        let f = filter(|f| {
            f.include_tables = vec!["sales.*".into(), "public.keep".into()];
            f.exclude_tables = vec!["db1.sales.secret*".into(), "logs".into()];
        });
        assert!(f.table("db1", "sales", "orders"));
        assert!(!f.table("db1", "sales", "secret_plans"));
        assert!(f.table("db2", "sales", "secret_plans"));
        assert!(f.table("db1", "public", "keep"));
        assert!(!f.table("db1", "public", "other"));
        assert!(!f.table("db1", "sales", "logs"));
    }

    #[test]
    fn quoted_parts_are_literal() {
        let f = filter(|f| f.exclude_tables = vec![r#"public."Odd ""Name"".x""#.into(), r#""a*b""#.into()]);
        assert!(f.excluded_table("d", "public", "Odd \"Name\".x"));
        assert!(f.excluded_table("d", "s", "a*b"));
        assert!(!f.excluded_table("d", "s", "aXb"));
    }

    #[test]
    fn schemas_and_databases() {
        let f = filter(|f| {
            f.exclude_databases = vec!["template*".into(), "rdsadmin".into()];
            f.include_schemas = vec!["app.sales".into(), "audit".into()];
        });
        assert!(!f.database("rdsadmin") && f.database("postgres"));
        assert!(f.schema("app", "sales") && !f.schema("other", "sales") && f.schema("other", "audit"));
    }

    #[test]
    fn patterns_that_match_nothing_are_named_with_the_closest_names() {
        let f = filter(|f| {
            f.include_tables = vec!["custmers".into(), "public.orders".into(), "zzz*".into()];
            f.exclude_schemas = vec!["audti".into()];
        });
        let seen = Seen {
            schemas: vec![("app".into(), "public".into()), ("app".into(), "audit".into())],
            relations: ["customers", "orders", "custom_fields"]
                .iter()
                .map(|t| ("app".into(), "public".into(), (*t).into()))
                .collect(),
        };
        assert_eq!(
            f.unmatched(&seen),
            [
                "--exclude-schema \"audti\" matches no schema; did you mean audit?",
                "--include-table \"custmers\" matches no table; did you mean public.customers?",
                "--include-table \"zzz*\" matches no table",
            ]
        );
        let f = filter(|f| f.include_databases = vec!["ap".into(), "post*".into()]);
        assert_eq!(
            f.unmatched_databases(&["app".into(), "postgres".into()]),
            ["--include-database \"ap\" matches no database; did you mean app?"]
        );
    }

    #[test]
    fn glob_errors_and_limits_name_the_list_and_entry() {
        let bad = Filter { exclude_tables: vec!["ok".into(), "[a".into()], ..Filter::default() };
        let e = bad.compile().unwrap_err();
        assert_eq!((e.list, e.index), ("exclude_tables", Some(1)));
        assert!(e.to_string().starts_with("--exclude-table \"[a\": "), "{e}");
        let many = Filter { include_schemas: vec!["s".into(); MAX_PATTERNS + 1], ..Filter::default() };
        assert_eq!(many.compile().unwrap_err().index, None);
        for bad in ["", "a\u{1b}b", &"x".repeat(MAX_PATTERN_BYTES + 1)] {
            let f = Filter { include_tables: vec![bad.to_string()], ..Filter::default() };
            assert!(f.compile().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_patterns_name_the_flag() {
        let mut bad = Filter { include_tables: vec!["a.b.c.d".into()], ..Filter::default() };
        assert!(bad.compile().unwrap_err().to_string().contains("--include-table \"a.b.c.d\": too many"));
        bad.include_tables = vec!["\"open".into()];
        assert!(bad.compile().unwrap_err().to_string().contains("unterminated"));
        bad.include_tables = vec!["a..b".into()];
        assert!(bad.compile().unwrap_err().to_string().contains("empty name part"));
        let bad = Filter { include_databases: vec!["a.b".into()], ..Filter::default() };
        assert!(bad.compile().is_err());
    }
}
