//! Which databases, schemas and tables a job covers. Patterns are globs (`*`, `?`, `[abc]`)
//! matched case-sensitively against names as stored; dots separate `db.schema.table`, and a
//! double-quoted part is literal (`'"my.schema"."Odd*Name"'`).

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The filters a user gave, as written; [`Filter::compile`] checks them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    /// Databases to copy (`--all-databases` mode): names or globs.
    pub include_databases: Vec<String>,
    /// Databases to skip.
    pub exclude_databases: Vec<String>,
    /// Schemas to copy: `schema` or `db.schema`.
    pub include_schemas: Vec<String>,
    /// Schemas to skip.
    pub exclude_schemas: Vec<String>,
    /// Tables to copy: `table`, `schema.table` or `db.schema.table`.
    pub include_tables: Vec<String>,
    /// Tables to skip.
    pub exclude_tables: Vec<String>,
    /// Tables whose structure is copied without their rows.
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

    /// Checks every pattern; errors name the flag and the pattern.
    pub fn compile(&self) -> Result<CompiledFilter> {
        let list = |flag: &'static str, patterns: &[String], max_parts: usize| -> Result<Vec<Pattern>> {
            patterns.iter().map(|p| parse_pattern(flag, p, max_parts)).collect()
        };
        Ok(CompiledFilter {
            include_databases: list("--include-database", &self.include_databases, 1)?,
            exclude_databases: list("--exclude-database", &self.exclude_databases, 1)?,
            include_schemas: list("--include-schema", &self.include_schemas, 2)?,
            exclude_schemas: list("--exclude-schema", &self.exclude_schemas, 2)?,
            include_tables: list("--include-table", &self.include_tables, 3)?,
            exclude_tables: list("--exclude-table", &self.exclude_tables, 3)?,
            schema_only_tables: list("--schema-only-table", &self.schema_only_tables, 3)?,
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

/// Splits `a.b."c.d"` into parts; a quoted part is literal and `""` inside it is one quote.
fn split_parts(flag: &str, pattern: &str) -> Result<Vec<String>> {
    let bad = |why: &str| Error::Invalid(format!("{flag} {pattern:?}: {why}"));
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
        return Err(bad("unterminated double quote"));
    }
    if parts.iter().any(String::is_empty) {
        return Err(bad("empty name part (two dots in a row, or a leading or trailing dot)"));
    }
    Ok(parts)
}

fn parse_pattern(flag: &'static str, pattern: &str, max_parts: usize) -> Result<Pattern> {
    let parts = split_parts(flag, pattern)?;
    if parts.len() > max_parts {
        let shape = match max_parts {
            1 => "a database name",
            2 => "schema or db.schema",
            _ => "table, schema.table or db.schema.table",
        };
        return Err(Error::Invalid(format!(
            "{flag} {pattern:?}: too many dot-separated parts; expected {shape} (quote names that contain dots: '\"my.schema\".t')"
        )));
    }
    let glob = |part: &str| -> Result<GlobMatcher> {
        GlobBuilder::new(part)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map(|g| g.compile_matcher())
            .map_err(|e| Error::Invalid(format!("{flag} {pattern:?}: {e}")))
    };
    let mut globs = parts.iter().map(|p| glob(p)).collect::<Result<Vec<_>>>()?;
    let name = globs.pop().ok_or_else(|| Error::Invalid(format!("{flag}: empty pattern")))?;
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
