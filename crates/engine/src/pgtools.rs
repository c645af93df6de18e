//! The one place that runs PostgreSQL's client tools (pg_dump, pg_restore). Builders return
//! the `Command`, so argv is unit-testable; passwords travel in the environment, never argv.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use tokio::process::Command;

use crate::{
    conninfo::{ConnInfo, PG_ENV_CLEARED, redact},
    error::{Error, Result},
};

/// A located pg_dump, the pg_restore beside it, and their major version.
#[derive(Clone, Debug)]
pub struct PgTools {
    bin_dir: Option<PathBuf>,
    version: String,
    major: u32,
    /// Whether pg_restore takes `--restrict-key` (it writes psql's `\restrict` lines then).
    restrict_key: bool,
}

/// Which part of the schema a dump holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Section {
    /// Types, tables, functions, views… everything before the data.
    PreData,
    /// Indexes, constraints, triggers, rules, policies, materialized view data.
    PostData,
}

/// The database a dump reads.
#[derive(Clone, Copy)]
pub(crate) struct DumpSource<'a> {
    pub info: &'a ConnInfo,
    pub dbname: &'a str,
    /// Whether barge's own connection negotiated TLS (the tool then verifies the server too).
    pub tls_in_use: bool,
}

/// Ownership, grants and tablespaces to leave out: flags pg_dump and pg_restore spell alike
/// (pg_dump ignores the first and last for archives; pg_restore applies them when rendering).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LeaveOut {
    pub owner: bool,
    pub acl: bool,
    pub tablespaces: bool,
}

impl LeaveOut {
    fn args(self) -> impl Iterator<Item = &'static str> {
        [(self.owner, "--no-owner"), (self.acl, "--no-privileges"), (self.tablespaces, "--no-tablespaces")]
            .into_iter()
            .filter_map(|(set, flag)| set.then_some(flag))
    }
}

/// What a schema dump leaves out.
#[derive(Clone, Debug, Default)]
pub(crate) struct DumpOptions {
    pub leave_out: LeaveOut,
    /// Schemas to leave out, as exact names.
    pub exclude_schemas: Vec<String>,
    /// Relations to leave out, as (schema, name).
    pub exclude_tables: Vec<(String, String)>,
    /// When not empty, only these relations (schema, name), with what belongs to them
    /// (indexes, constraints, triggers, owned sequences): the tables a sync adds.
    pub include_tables: Vec<(String, String)>,
}

impl DumpOptions {
    /// Whether any filter is set.
    pub(crate) fn filters(&self) -> bool {
        !(self.exclude_tables.is_empty() && self.exclude_schemas.is_empty() && self.include_tables.is_empty())
    }
}

/// Directories where distributions install versioned client tools.
const WELL_KNOWN: &[&str] = &[
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
];

impl PgTools {
    /// Finds a pg_dump at least as new as the source server (`server_major`): the one in
    /// `bin_dir` when given, else the one on PATH, else the newest in well-known install
    /// directories. The error lists every version found.
    pub async fn locate(bin_dir: Option<&Path>, server_major: u32) -> Result<PgTools> {
        let mut candidates: Vec<Option<PathBuf>> = Vec::new();
        match bin_dir {
            Some(dir) => candidates.push(Some(dir.to_path_buf())),
            None => {
                candidates.push(None);
                let mut dirs: Vec<PathBuf> = WELL_KNOWN.iter().flat_map(|pattern| expand(pattern)).collect();
                dirs.sort_by_key(|d| std::cmp::Reverse(version_in_path(d)));
                candidates.extend(dirs.into_iter().map(Some));
            }
        }
        let mut seen = Vec::new();
        for dir in candidates {
            let tools = match probe(dir.clone()).await {
                Ok(t) => t,
                Err(e) => {
                    if bin_dir.is_some() {
                        return Err(e);
                    }
                    continue;
                }
            };
            if tools.major >= server_major {
                return Ok(tools);
            }
            seen.push(format!("{} ({})", tools.version, tools.pg_dump().display()));
        }
        let found = if seen.is_empty() { "no pg_dump found".to_owned() } else { format!("found {}", seen.join(", ")) };
        Err(Error::Tool(format!(
            "pg_dump {server_major} or newer is needed: the source server runs PostgreSQL {server_major} and pg_dump refuses servers newer than itself; {found}. Install the PostgreSQL {server_major}+ client tools and pass --pg-bin DIR (or put them first on PATH)"
        )))
    }

    /// The pg_dump executable.
    pub fn pg_dump(&self) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join("pg_dump"),
            None => PathBuf::from("pg_dump"),
        }
    }

    /// The pg_restore executable beside pg_dump.
    pub fn pg_restore(&self) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join("pg_restore"),
            None => PathBuf::from("pg_restore"),
        }
    }

    /// The version line pg_dump printed, e.g. `18.6`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The major version, e.g. 18.
    pub fn major(&self) -> u32 {
        self.major
    }

    /// `pg_dump` of one schema section of `dbname` in `snapshot`, as an uncompressed
    /// custom-format archive written to `out`: its table of contents keeps every entry's SQL
    /// apart, whatever text the entry holds. The database itself (`--create`) is not in it;
    /// barge creates the target database from the catalog ([`crate::database`]).
    /// Filters go through a `--filter` file when pg_dump has it (17+), else argv patterns.
    pub(crate) fn dump_schema(
        &self,
        database: &DumpSource<'_>,
        snapshot: Option<&str>,
        section: Section,
        options: &DumpOptions,
        filter_file: Option<&Path>,
        out: &Path,
    ) -> Command {
        let DumpSource { info, dbname, tls_in_use } = *database;
        let mut cmd = Command::new(self.pg_dump());
        cmd.args(["--format=custom", "--compress=0"]).arg(format!("--file={}", out.display())).arg(match section {
            Section::PreData => "--section=pre-data",
            Section::PostData => "--section=post-data",
        });
        // pg_dump ≤ 16 puts large objects' lo_create into pre-data; barge copies them itself.
        cmd.args(["-B", "--no-subscriptions", "--lock-wait-timeout=300000", "--exclude-schema=_barge"]);
        if let Some(snapshot) = snapshot {
            cmd.arg(format!("--snapshot={snapshot}"));
        }
        cmd.args(options.leave_out.args());
        match filter_file {
            Some(path) => {
                cmd.arg(format!("--filter={}", path.display()));
            }
            None => {
                for schema in &options.exclude_schemas {
                    cmd.arg(format!("--exclude-schema={}", pattern_name(schema)));
                }
                for (schema, table) in &options.exclude_tables {
                    cmd.arg(format!("--exclude-table={}.{}", pattern_name(schema), pattern_name(table)));
                }
                for (schema, table) in &options.include_tables {
                    cmd.arg(format!("--table={}.{}", pattern_name(schema), pattern_name(table)));
                }
            }
        }
        self.connect_env(&mut cmd, info, dbname, tls_in_use);
        cmd
    }

    /// `pg_restore --list` of an archive: one line per entry, names with their line breaks
    /// replaced by spaces.
    pub(crate) fn list_archive(&self, archive: &Path) -> Command {
        let mut cmd = Command::new(self.pg_restore());
        cmd.arg("--list").arg(archive);
        self.no_connection(&mut cmd);
        cmd
    }

    /// `pg_restore` of an archive's entries (those in `list`, in its order; all without one)
    /// as one SQL script on stdout. `key` is the `\restrict` key when pg_restore writes one.
    pub(crate) fn render(&self, archive: &Path, list: Option<&Path>, leave_out: LeaveOut, key: &str) -> Command {
        let mut cmd = Command::new(self.pg_restore());
        cmd.arg("--file=-");
        if let Some(list) = list {
            cmd.arg(format!("--use-list={}", list.display()));
        }
        if self.restrict_key {
            cmd.arg(format!("--restrict-key={key}"));
        }
        cmd.args(leave_out.args());
        cmd.arg(archive);
        self.no_connection(&mut cmd);
        cmd
    }

    /// None of barge's PG* environment, no stdin, output captured; a tool that connects gets
    /// its connection's variables on top ([`PgTools::connect_env`]).
    fn no_connection(&self, cmd: &mut Command) {
        for var in PG_ENV_CLEARED {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    }

    /// Whether this pg_dump reads `--filter` files (PostgreSQL 17+).
    pub(crate) fn has_filter_files(&self) -> bool {
        self.major >= 17
    }

    fn connect_env(&self, cmd: &mut Command, info: &ConnInfo, dbname: &str, tls_in_use: bool) {
        self.no_connection(cmd);
        cmd.envs(info.pg_env(dbname, tls_in_use));
    }
}

/// The text of a `--filter` file excluding the given schemas and relations.
pub(crate) fn filter_file_text(options: &DumpOptions) -> String {
    let mut text = String::new();
    for schema in &options.exclude_schemas {
        text.push_str(&format!("exclude schema {}\n", pattern_name(schema)));
    }
    for (schema, table) in &options.exclude_tables {
        text.push_str(&format!("exclude table {}.{}\n", pattern_name(schema), pattern_name(table)));
    }
    for (schema, table) in &options.include_tables {
        text.push_str(&format!("include table {}.{}\n", pattern_name(schema), pattern_name(table)));
    }
    text
}

/// A name as a pg_dump pattern that matches exactly that name: double-quoted, where
/// wildcards and dots lose their meaning.
fn pattern_name(name: &str) -> String {
    crate::ident::quote(name)
}

/// Runs a tool to completion, returning its stdout; stderr is drained concurrently and its
/// tail (redacted) goes into the error.
pub(crate) async fn run_capture(mut cmd: Command, what: &str) -> Result<Vec<u8>> {
    let child = cmd.spawn().map_err(|e| Error::io(format!("cannot start {what}"), e))?;
    let output = child.wait_with_output().await.map_err(|e| Error::io(format!("{what} failed"), e))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(8)..].join("\n  ");
        return Err(Error::Tool(format!("{what} failed ({}):\n  {}", output.status, redact(&tail))));
    }
    Ok(output.stdout)
}

/// What a tool prints for `arg`.
async fn ask(exe: &Path, arg: &str) -> Result<String> {
    let output = Command::new(exe)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::Tool(format!("cannot run {}: {e}", exe.display())))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn probe(bin_dir: Option<PathBuf>) -> Result<PgTools> {
    let exe = |name: &str| match &bin_dir {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    };
    let (pg_dump, pg_restore) = (exe("pg_dump"), exe("pg_restore"));
    let text = ask(&pg_dump, "--version").await?;
    let version = text.trim().rsplit(' ').next().unwrap_or_default().to_owned();
    let major = parse_major(&version)
        .ok_or_else(|| Error::Tool(format!("{} --version printed {:?}", pg_dump.display(), text.trim())))?;
    let restore_version = ask(&pg_restore, "--version").await.map_err(|e| {
        Error::Tool(format!("{e}: barge needs the pg_restore of the same installation as {}", pg_dump.display()))
    })?;
    if restore_version.trim().rsplit(' ').next() != Some(version.as_str()) {
        return Err(Error::Tool(format!(
            "{} is version {version} but {} printed {:?}: install both from the same PostgreSQL client package",
            pg_dump.display(),
            pg_restore.display(),
            restore_version.trim()
        )));
    }
    let restrict_key = ask(&pg_restore, "--help").await?.contains("--restrict-key");
    Ok(PgTools { bin_dir, version, major, restrict_key })
}

/// `18.6` → 18, `9.6.24` → 9, `19beta1` → 19.
pub(crate) fn parse_major(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn expand(pattern: &str) -> Vec<PathBuf> {
    // Only the last-but-one component carries a '*' in WELL_KNOWN.
    let Some((prefix, suffix)) = pattern.split_once('*') else {
        return vec![PathBuf::from(pattern)];
    };
    let (dir, name_prefix) = match prefix.rfind('/') {
        Some(i) => (&prefix[..i], &prefix[i + 1..]),
        None => (".", prefix),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(name_prefix))
        .map(|e| PathBuf::from(format!("{}{}", e.path().display(), suffix)))
        .filter(|p| p.join("pg_dump").exists())
        .collect()
}

fn version_in_path(path: &Path) -> u32 {
    path.components()
        .filter_map(|c| {
            let s = c.as_os_str().to_string_lossy();
            let digits: String =
                s.chars().skip_while(|c| !c.is_ascii_digit()).take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conninfo::Side;

    #[test]
    fn argv_never_holds_the_password_and_env_does() {
        let tools =
            PgTools { bin_dir: Some("/opt/pg/bin".into()), version: "18.6".into(), major: 18, restrict_key: true };
        let info = ConnInfo::parse(Side::Source, "postgres://u:s3cret%21@db:5432/app").unwrap();
        let options = DumpOptions {
            leave_out: LeaveOut { owner: true, ..LeaveOut::default() },
            exclude_tables: vec![("public".into(), "Odd \"Name\".x".into())],
            ..DumpOptions::default()
        };
        let source = DumpSource { info: &info, dbname: "app", tls_in_use: false };
        let cmd = tools.dump_schema(&source, Some("00000003-1"), Section::PreData, &options, None, Path::new("/t/pre"));
        let std = cmd.as_std();
        let argv: Vec<String> = std.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(argv.iter().all(|a| !a.contains("s3cret")), "{argv:?}");
        assert!(argv.contains(&"--snapshot=00000003-1".to_owned()));
        assert!(argv.contains(&"--format=custom".to_owned()) && argv.contains(&"--file=/t/pre".to_owned()));
        assert!(argv.contains(&"--no-owner".to_owned()));
        assert!(argv.contains(&r#"--exclude-table="public"."Odd ""Name"".x""#.to_owned()), "{argv:?}");
        let env: Vec<(String, String)> = std
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_string_lossy().into_owned(), v?.to_string_lossy().into_owned())))
            .collect();
        assert!(env.contains(&("PGPASSWORD".into(), "s3cret!".into())));
        assert!(env.contains(&("PGDATABASE".into(), "app".into())));
    }

    #[test]
    fn filter_file_quotes_names() {
        let options = DumpOptions {
            exclude_schemas: vec!["tmp".into()],
            exclude_tables: vec![("s".into(), "a*b".into())],
            ..DumpOptions::default()
        };
        assert_eq!(filter_file_text(&options), "exclude schema \"tmp\"\nexclude table \"s\".\"a*b\"\n");
        let added = DumpOptions { include_tables: vec![("s".into(), "new\"t".into())], ..DumpOptions::default() };
        assert!(added.filters());
        assert_eq!(filter_file_text(&added), "include table \"s\".\"new\"\"t\"\n");
    }

    #[test]
    fn majors() {
        assert_eq!(parse_major("18.6"), Some(18));
        assert_eq!(parse_major("9.6.24"), Some(9));
        assert_eq!(parse_major("19beta1"), Some(19));
        assert_eq!(parse_major("x"), None);
    }
}
