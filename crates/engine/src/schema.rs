//! Schema: pg_dump reads the pre-data and post-data sections in the copy's snapshot; barge
//! applies pre-data in one transaction, creates the target database from pg_dump's own
//! `CREATE DATABASE`, and runs post-data entries on any connection with the session
//! settings each entry stood under.

use std::{collections::HashSet, sync::Arc};

use crate::{
    conninfo::ConnInfo,
    db::Db,
    error::{Error, Result},
    ident,
    pgtools::{self, DumpOptions, PgTools, Section},
    script::{Entry, Script},
};

/// Both schema sections of one database, read in one snapshot.
pub(crate) struct SchemaDump {
    pub pre: Script,
    pub post: Script,
}

/// Runs pg_dump for pre-data and post-data concurrently in `snapshot`.
pub(crate) async fn dump(
    tools: &PgTools,
    source: &ConnInfo,
    dbname: &str,
    tls_in_use: bool,
    snapshot: &str,
    options: &DumpOptions,
) -> Result<SchemaDump> {
    // Filters go in a 0600 file when pg_dump reads filter files: argv stays short however
    // many tables are left out.
    let filter_file =
        if tools.has_filter_files() && !(options.exclude_tables.is_empty() && options.exclude_schemas.is_empty()) {
            let file = tempfile::Builder::new()
                .prefix("barge-filter-")
                .tempfile()
                .map_err(|e| Error::io("create the pg_dump filter file", e))?;
            std::fs::write(file.path(), pgtools::filter_file_text(options))
                .map_err(|e| Error::io("write the pg_dump filter file", e))?;
            Some(file)
        } else {
            None
        };
    let path = filter_file.as_ref().map(|f| f.path());
    let database = pgtools::DumpSource { info: source, dbname, tls_in_use };
    let command = |section| tools.dump_schema(&database, Some(snapshot), section, options, path);
    let what = format!("pg_dump of source database \"{dbname}\"");
    let (pre, post) = tokio::try_join!(
        pgtools::run_capture(command(Section::PreData), &what),
        pgtools::run_capture(command(Section::PostData), &what),
    )?;
    let text = |bytes: Vec<u8>| {
        String::from_utf8(bytes).map_err(|_| Error::Tool(format!("{what} printed text that is not UTF-8")))
    };
    Ok(SchemaDump { pre: Script::parse(&text(pre)?), post: Script::parse(&text(post)?) })
}

/// Whether an entry concerns the database itself (`--create` output).
fn is_database_entry(e: &Entry) -> bool {
    e.kind == "DATABASE"
        || e.kind == "DATABASE PROPERTIES"
        || (matches!(e.kind.as_str(), "COMMENT" | "ACL" | "SECURITY LABEL") && e.name.starts_with("DATABASE "))
}

/// The `CREATE DATABASE` entry.
pub(crate) fn create_database_entry(pre: &Script) -> Option<&Entry> {
    pre.entries.iter().find(|e| e.kind == "DATABASE")
}

/// Database-level properties (settings, comment, grants), to run once the database exists.
pub(crate) fn database_property_entries(pre: &Script) -> Vec<&Entry> {
    pre.entries.iter().filter(|e| is_database_entry(e) && e.kind != "DATABASE").collect()
}

/// Pre-data entries for objects inside the database.
pub(crate) fn object_entries(pre: &Script) -> Vec<&Entry> {
    pre.entries.iter().filter(|e| !is_database_entry(e)).collect()
}

/// Rewrites `… DATABASE <source name> …` statements for the target name, one occurrence per
/// statement line (pg_dump writes the name right after the keyword).
pub(crate) fn rename_database(sql: &str, source_quoted: &str, target: &str) -> String {
    let needle = format!("DATABASE {source_quoted}");
    let replacement = format!("DATABASE {}", ident::quote(target));
    sql.lines()
        .map(|line| {
            let starts = ["CREATE ", "ALTER ", "COMMENT ", "GRANT ", "REVOKE ", "SECURITY "];
            match line.find(&needle) {
                Some(pos)
                    if starts.iter().any(|s| line.starts_with(s))
                        && line[pos + needle.len()..].starts_with([' ', ';']) =>
                {
                    format!("{}{}{}", &line[..pos], replacement, &line[pos + needle.len()..])
                }
                _ => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The statements of an entry, split at lines ending a statement (for entries that hold
/// statements which cannot share a transaction, such as `CREATE DATABASE`).
pub(crate) fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        if current.is_empty() && line.trim().is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') {
            out.push(std::mem::take(&mut current).trim().to_owned());
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

/// Applies entries' session settings on one connection, skipping parameters the server does
/// not know (pg_dump 18 writes `transaction_timeout`, which PostgreSQL 15 lacks).
pub(crate) struct Session {
    known: Arc<HashSet<String>>,
    current: Arc<Vec<String>>,
}

impl Session {
    /// Reads the parameters the server knows.
    pub(crate) async fn new(db: &Db) -> Result<Session> {
        let rows = db.query("list server parameters", "select name from pg_catalog.pg_settings", &[]).await?;
        Ok(Session { known: Arc::new(rows.iter().map(|r| r.get(0)).collect()), current: Arc::new(Vec::new()) })
    }

    /// Makes the connection's settings those of `entry`.
    pub(crate) async fn prepare(&mut self, db: &Db, entry: &Entry) -> Result<()> {
        if Arc::ptr_eq(&self.current, &entry.settings) || *self.current == *entry.settings {
            return Ok(());
        }
        let mut sql = String::new();
        for line in entry.settings.iter() {
            let name =
                line.strip_prefix("SET ").and_then(|rest| rest.split([' ', '=']).next()).unwrap_or("search_path");
            if self.known.contains(name) {
                sql.push_str(line);
                sql.push('\n');
            }
        }
        db.batch("apply pg_dump's session settings", &sql).await?;
        self.current = entry.settings.clone();
        Ok(())
    }
}

/// Runs one entry, naming it in the error and saying what to check.
pub(crate) async fn run_entry(db: &Db, session: &mut Session, entry: &Entry, sql: &str) -> Result<()> {
    session.prepare(db, entry).await?;
    db.client().batch_execute(sql).await.map_err(|e| entry_error(db, entry, &e))
}

pub(crate) fn entry_error(db: &Db, entry: &Entry, e: &tokio_postgres::Error) -> Error {
    let err = db.err(&format!("creating {} {}", entry.kind, describe(entry)), e);
    let extension = err.to_string().contains("extension");
    let hint = match err.sqlstate() {
        Some("42704") => {
            "something it names is missing on the target: --roles copies roles, --no-owner and --no-acl leave ownership and grants out"
        }
        Some("58P01") | Some("0A000") if extension => "install the extension on the target server",
        Some("42P01") | Some("42883") => {
            "it depends on an object that is missing on the target; check the filters (--exclude-*, --include-*)"
        }
        Some("53200") => {
            "the target ran out of lock slots applying the schema in one transaction: raise max_locks_per_transaction on the target"
        }
        _ => return err,
    };
    err.with_hint(hint)
}

fn describe(entry: &Entry) -> String {
    if entry.schema == "-" { entry.name.clone() } else { format!("{}.{}", entry.schema, entry.name) }
}

/// Quotes a database name the way pg_dump does (the server's `quote_ident` follows the same
/// rules), to find it in pg_dump's statements.
pub(crate) async fn quote_like_pg_dump(db: &Db, name: &str) -> Result<String> {
    Ok(db.query_one("quote a database name", "select pg_catalog.quote_ident($1)", &[&name]).await?.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_database_statements_only() {
        let sql = "CREATE DATABASE app WITH TEMPLATE = template0;\nALTER DATABASE app OWNER TO o;\nCOMMENT ON DATABASE app IS 'DATABASE app is fine';\nALTER DATABASE app SET work_mem TO '8MB';\nGRANT CONNECT ON DATABASE app TO r;";
        let out = rename_database(sql, "app", "New DB");
        assert_eq!(
            out,
            "CREATE DATABASE \"New DB\" WITH TEMPLATE = template0;\nALTER DATABASE \"New DB\" OWNER TO o;\nCOMMENT ON DATABASE \"New DB\" IS 'DATABASE app is fine';\nALTER DATABASE \"New DB\" SET work_mem TO '8MB';\nGRANT CONNECT ON DATABASE \"New DB\" TO r;"
        );
        // A longer name sharing the prefix is left alone.
        assert_eq!(rename_database("ALTER DATABASE apple OWNER TO o;", "app", "x"), "ALTER DATABASE apple OWNER TO o;");
    }

    #[test]
    fn splits_statements_at_line_ends() {
        let parts = statements("CREATE DATABASE a;\n\n\nALTER DATABASE a OWNER TO b;\n");
        assert_eq!(parts, vec!["CREATE DATABASE a;", "ALTER DATABASE a OWNER TO b;"]);
    }
}
