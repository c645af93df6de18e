//! What a user asks for: [`JobSpec`]. The CLI builds it from flags, the API parses it from
//! JSON, the worker turns it into an engine request; one type, so the three cannot drift
//! (docs/design-notes.md 1). Validation lives here, once, with messages a user can act on. The
//! predecessor system's spec (`"version": "1.0"`) is accepted as is.

use std::fmt;

pub use crate::reach::Reach;
pub use crate::{
    ConnUrl, Filter,
    conn::MAX_URL_BYTES,
    filter::{MAX_PATTERN_BYTES, MAX_PATTERNS},
};
use crate::{
    Params,
    filter::split_pattern,
    reach::{check_remote, remote_host},
};
use serde::{Deserialize, Serialize};

/// Largest spec body accepted, in bytes.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;
/// Most parallel streams a job may ask for.
pub const MAX_JOBS: u32 = 256;
/// Shortest and longest `max_duration`, in seconds (one minute, fourteen days).
pub const MAX_DURATION_RANGE: (u64, u64) = (60, 14 * 24 * 3600);
/// `max_duration` when the spec gives none: one day.
pub const DEFAULT_MAX_DURATION: u64 = 24 * 3600;
/// Tables larger than this are split into parts by default (256 MiB).
pub const DEFAULT_SPLIT_BYTES: u64 = 256 << 20;

/// What the job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Copy schema and data from source to target.
    Init,
    /// Preflight checks, changing nothing.
    Validate,
    /// Compare source and target.
    Verify,
    /// Copy, then keep the target in sync by logical replication.
    Sync,
}

impl Command {
    /// Its name as users type it.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Init => "init",
            Command::Validate => "validate",
            Command::Verify => "verify",
            Command::Sync => "sync",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a URL points, as far as a spec can tell without resolving names.
#[derive(Debug, PartialEq, Eq)]
struct Endpoint {
    host: String,
    port: u16,
    database: Option<String>,
}

/// Parses a job's URL: a host (a job runs on another machine, so no Unix socket) and the
/// parameters a worker honours ([`crate::conn`]).
fn endpoint(url: &ConnUrl, field: &str) -> Result<(Endpoint, Params), SpecError> {
    let params = url.parse().map_err(|e| SpecError::new(field, e.0))?;
    let host = remote_host(&params).map_err(|e| SpecError::new(field, e.0))?.to_ascii_lowercase();
    Ok((Endpoint { host, port: params.port.unwrap_or(5432), database: params.dbname.clone() }, params))
}

/// How the job runs. Every field is optional in JSON; unknown names are refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Copy every database of the source (also implied by a source URL without a database).
    #[serde(skip_serializing_if = "is_false")]
    pub all_databases: bool,
    /// Drop and re-create target databases that already hold objects.
    #[serde(skip_serializing_if = "is_false")]
    pub drop_existing: bool,
    /// Continue an interrupted copy.
    #[serde(skip_serializing_if = "is_false")]
    pub resume: bool,
    /// Check for (validate) or set up (init) continuous logical replication after the copy;
    /// `init` with it is a `sync` job.
    #[serde(skip_serializing_if = "is_false")]
    pub sync: bool,
    /// With a sync: give source tables without a primary key `REPLICA IDENTITY FULL`
    /// instead of refusing them.
    #[serde(skip_serializing_if = "is_false")]
    pub replica_identity_full: bool,
    /// Parallel COPY streams (and verify workers) [default: a copy chooses from its plan
    /// (crates/engine/src/plan/sizing.rs); verify uses the worker's CPU count].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u32>,
    /// Parallel index builds [default: the worker's CPU count].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_jobs: Option<u32>,
    /// Split tables larger than this many bytes into parts; 0 never splits [default 256 MiB].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_tables_larger_than: Option<u64>,
    /// Create the source's roles the target lacks, without passwords.
    #[serde(skip_serializing_if = "is_false")]
    pub roles: bool,
    /// Leave ownership out.
    #[serde(skip_serializing_if = "is_false")]
    pub no_owner: bool,
    /// Leave grants out.
    #[serde(skip_serializing_if = "is_false")]
    pub no_acl: bool,
    /// Leave tablespace assignments out.
    #[serde(skip_serializing_if = "is_false")]
    pub no_tablespaces: bool,
    /// Do not copy large objects.
    #[serde(skip_serializing_if = "is_false")]
    pub skip_large_objects: bool,
    /// `ANALYZE` every copied table instead of carrying the source's planner statistics
    /// (which a PostgreSQL 18+ target takes).
    #[serde(skip_serializing_if = "is_false")]
    pub analyze: bool,
    /// `maintenance_work_mem` for index builds, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance_work_mem: Option<u64>,
    /// Longest the job may run, in seconds [default one day]; then it is `timed_out`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<u64>,
    /// EC2 instance type of the worker, among the stage's allowed types [default: the
    /// stage's first worker type with capacity].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// With a sync: warn when a replication slot keeps more than this many bytes of WAL on
    /// the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_warn: Option<u64>,
    /// With a sync: when a slot keeps more than this many bytes of WAL on the source, do
    /// what `on_wal_limit` says, before the source's disk fills or it invalidates the slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_limit: Option<u64>,
    /// What reaching `wal_limit` does [default: stop].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_wal_limit: Option<WalLimitAction>,
}

/// What a sync does when a slot keeps more WAL than its limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalLimitAction {
    /// Remove the replication (slot, publication, subscription): the source frees the WAL at
    /// once; the target keeps its copy and needs a new sync to follow the source again.
    #[default]
    Stop,
    /// Disable the subscription and leave everything in place for someone to decide: the
    /// slot keeps its WAL (for a target that cannot apply, where streaming on only retries).
    Pause,
}

impl WalLimitAction {
    /// Its name in flags and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            WalLimitAction::Stop => "stop",
            WalLimitAction::Pause => "pause",
        }
    }
}

/// See [`JobSpec::syncs`].
pub fn syncs(command: Command, options: &Options) -> bool {
    command == Command::Sync || (command == Command::Init && options.sync)
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl Options {
    /// `max_duration` in seconds, default applied.
    pub fn max_duration_seconds(&self) -> u64 {
        self.max_duration.unwrap_or(DEFAULT_MAX_DURATION)
    }

    /// Names of the options set to something other than their default: the fields the JSON
    /// form carries (each skips its default), so a new option needs no entry here.
    fn set(&self) -> Vec<String> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(fields)) => fields.into_iter().map(|(name, _)| name).collect(),
            _ => Vec::new(),
        }
    }

    /// Parallel COPY streams (and verify workers): `jobs`, else the CPUs of the machine that
    /// runs the engine.
    pub fn jobs_or_cpus(&self) -> usize {
        self.jobs.map_or_else(cpus, |n| n.max(1) as usize)
    }

    /// Parallel index builds and constraint validations: `index_jobs`, else the CPUs of the
    /// machine that runs the engine.
    pub fn index_jobs_or_cpus(&self) -> usize {
        self.index_jobs.map_or_else(cpus, |n| n.max(1) as usize)
    }

    /// Tables larger than this many bytes are split into parts copied in parallel (0: never).
    pub fn split_bytes(&self) -> u64 {
        self.split_tables_larger_than.unwrap_or(DEFAULT_SPLIT_BYTES)
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// Options `verify` uses; it refuses the others rather than ignore them (docs/design-notes.md 1).
const VERIFY_OPTIONS: &[&str] = &["all_databases", "jobs", "max_duration", "instance_type"];

/// A job request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// What to do.
    pub command: Command,
    /// Where data comes from.
    pub source_url: ConnUrl,
    /// Where it goes.
    pub target_url: ConnUrl,
    /// Which databases, schemas and tables.
    #[serde(default, skip_serializing_if = "Filter::is_empty")]
    pub filter: Filter,
    /// How.
    #[serde(default)]
    pub options: Options,
}

/// A spec that cannot run, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The offending field, as a JSON path (`options.jobs`), or `spec` for the whole.
    pub field: String,
    /// What is wrong and what to do; never holds a URL.
    pub message: String,
}

impl SpecError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError { field: field.into(), message: message.into() }
    }
}

/// The predecessor system's spec, accepted as is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacySpec {
    version: Option<String>,
    schema_version: Option<String>,
    command: Command,
    source_url: ConnUrl,
    target_url: ConnUrl,
    #[serde(default)]
    filter: LegacyFilter,
    #[serde(default)]
    options: LegacyOptions,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LegacyFilter {
    include_databases: Vec<String>,
    exclude_tables: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LegacyOptions {
    drop_existing: bool,
    no_sync: bool,
}

impl LegacySpec {
    fn into_spec(self) -> Result<JobSpec, SpecError> {
        let (field, version) = match (&self.version, &self.schema_version) {
            (Some(v), None) => ("version", v),
            (None, Some(v)) => ("schema_version", v),
            (Some(_), Some(_)) => return Err(SpecError::new("spec", "give `version` or `schema_version`, not both")),
            (None, None) => return Err(SpecError::new("version", "missing")),
        };
        if version != "1.0" && version != "1.0.0" {
            return Err(SpecError::new(
                field,
                format!("version {version:?} is not supported; use \"1.0\", or the current spec without a version"),
            ));
        }
        // `exclude_tables` held `db.table`: the table in any schema of that database.
        let exclude_tables = self
            .filter
            .exclude_tables
            .into_iter()
            .enumerate()
            .map(|(i, pattern)| match split_pattern(&pattern).map(|p| p.len()) {
                Some(2) => {
                    let (db, table) = pattern.split_at(pattern.find('.').unwrap_or(0));
                    Ok(format!("{db}.*{table}"))
                }
                Some(3) => Ok(pattern),
                _ => Err(SpecError::new(format!("filter.exclude_tables[{i}]"), "give db.table (or db.schema.table)")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let has_databases = !self.filter.include_databases.is_empty();
        Ok(JobSpec {
            command: self.command,
            source_url: self.source_url,
            target_url: self.target_url,
            filter: Filter { include_databases: self.filter.include_databases, exclude_tables, ..Filter::default() },
            options: Options {
                all_databases: has_databases,
                drop_existing: self.options.drop_existing,
                // The predecessor streamed changes after a copy unless told `no_sync`.
                sync: self.command != Command::Verify && !self.options.no_sync,
                ..Options::default()
            },
        })
    }
}

impl JobSpec {
    /// Parses and validates a spec from JSON: the current shape, or the predecessor's
    /// (recognised by its `version`/`schema_version` field).
    pub fn from_json(body: &[u8]) -> Result<JobSpec, SpecError> {
        if body.len() > MAX_SPEC_BYTES {
            return Err(SpecError::new("spec", format!("larger than {} KiB", MAX_SPEC_BYTES / 1024)));
        }
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| SpecError::new("spec", format!("not valid JSON: {}", json_message(&e))))?;
        let Some(object) = value.as_object() else {
            return Err(SpecError::new("spec", "must be a JSON object"));
        };
        let spec = if object.contains_key("version") || object.contains_key("schema_version") {
            deserialize::<LegacySpec>(value)?.into_spec()?
        } else {
            deserialize::<JobSpec>(value)?
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks everything that can be checked without connecting: what a job needs of its
    /// URLs, then [`JobSpec::validate_options`].
    pub fn validate(&self) -> Result<(), SpecError> {
        let (source, _) = endpoint(&self.source_url, "source_url")?;
        let (target, _) = endpoint(&self.target_url, "target_url")?;
        if source.host == target.host && source.port == target.port {
            // A URL without a database means every database (source) or the source's
            // database names (target): the same server either way.
            let same_database = match (&source.database, &target.database) {
                (Some(s), Some(t)) => s == t,
                _ => true,
            };
            if same_database {
                return Err(SpecError::new(
                    "target_url",
                    format!(
                        "names the same server and database as source_url ({}:{}/{}); a job never copies a database onto itself",
                        source.host,
                        source.port,
                        source.database.as_deref().unwrap_or("every database")
                    ),
                ));
            }
        }
        self.validate_options()
    }

    /// Checks the filter, the options and how they combine with the command: everything but
    /// the URLs, which a run on the user's own machine may point at a Unix socket.
    pub fn validate_options(&self) -> Result<(), SpecError> {
        if let Err(e) = self.filter.compile() {
            let field = match e.index {
                Some(i) => format!("filter.{}[{i}]", e.list),
                None => format!("filter.{}", e.list),
            };
            return Err(SpecError::new(field, e.reason));
        }
        let options = &self.options;
        for (name, value) in [("jobs", options.jobs), ("index_jobs", options.index_jobs)] {
            if let Some(n) = value
                && !(1..=MAX_JOBS).contains(&n)
            {
                return Err(SpecError::new(format!("options.{name}"), format!("must be between 1 and {MAX_JOBS}")));
            }
        }
        if let Some(bytes) = options.maintenance_work_mem
            && !(1 << 20..=2 << 40).contains(&bytes)
        {
            return Err(SpecError::new("options.maintenance_work_mem", "must be between 1 MiB and 2 TiB, in bytes"));
        }
        if let Some(seconds) = options.max_duration {
            let (min, max) = MAX_DURATION_RANGE;
            if !(min..=max).contains(&seconds) {
                return Err(SpecError::new(
                    "options.max_duration",
                    format!("must be between {min} and {max} seconds (14 days)"),
                ));
            }
        }
        if let Some(kind) = &options.instance_type {
            let valid = kind.len() <= 32
                && kind.split_once('.').is_some_and(|(family, size)| {
                    !family.is_empty()
                        && !size.is_empty()
                        && kind.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
                });
            if !valid {
                return Err(SpecError::new("options.instance_type", "must be an EC2 instance type such as m7i.large"));
            }
        }
        if options.drop_existing && options.resume {
            return Err(SpecError::new(
                "options.resume",
                "cannot be combined with drop_existing: resume keeps what the last run copied",
            ));
        }
        if options.replica_identity_full && !(self.syncs() || (self.command == Command::Validate && options.sync)) {
            return Err(SpecError::new(
                "options.replica_identity_full",
                "applies to continuous replication only: use the sync command (or init with sync)",
            ));
        }
        for (set, field) in [
            (options.wal_warn.is_some(), "wal_warn"),
            (options.wal_limit.is_some(), "wal_limit"),
            (options.on_wal_limit.is_some(), "on_wal_limit"),
        ] {
            if set && !self.syncs() {
                return Err(SpecError::new(
                    format!("options.{field}"),
                    "applies to continuous replication only: use the sync command (or init with sync)",
                ));
            }
        }
        if let (Some(warn), Some(limit)) = (options.wal_warn, options.wal_limit)
            && warn >= limit
        {
            return Err(SpecError::new(
                "options.wal_warn",
                "must be below wal_limit: the warning comes before the limit",
            ));
        }
        if options.on_wal_limit.is_some() && options.wal_limit.is_none() {
            return Err(SpecError::new(
                "options.on_wal_limit",
                "says what reaching wal_limit does: give wal_limit too",
            ));
        }
        for (value, field) in [(options.wal_warn, "wal_warn"), (options.wal_limit, "wal_limit")] {
            if value == Some(0) {
                return Err(SpecError::new(format!("options.{field}"), "give a size above 0 bytes"));
            }
        }
        if self.command == Command::Verify
            && let Some(unused) = options.set().into_iter().find(|name| !VERIFY_OPTIONS.contains(&name.as_str()))
        {
            return Err(SpecError::new(
                format!("options.{unused}"),
                format!("verify does not use it; verify takes {}", VERIFY_OPTIONS.join(", ")),
            ));
        }
        if self.command == Command::Verify && !self.filter.schema_only_tables.is_empty() {
            return Err(SpecError::new("filter.schema_only_tables", "verify does not use it"));
        }
        Ok(())
    }

    /// Checks that a worker with `reach` may use both URLs (see [`crate::reach`]).
    pub fn check_reach(&self, reach: Reach) -> Result<(), SpecError> {
        if reach == Reach::Remote {
            for (field, url) in [("source_url", &self.source_url), ("target_url", &self.target_url)] {
                let (_, params) = endpoint(url, field)?;
                check_remote(&params).map_err(|e| SpecError::new(field, e.0))?;
            }
        }
        Ok(())
    }

    /// Whether the job keeps the target in sync after the copy: `sync`, or `init` with
    /// `options.sync`.
    pub fn syncs(&self) -> bool {
        syncs(self.command, &self.options)
    }

    /// The URLs, for sealing.
    pub fn credentials(&self) -> Credentials {
        Credentials { source_url: self.source_url.clone(), target_url: self.target_url.clone() }
    }
}

/// The secret part of a spec: sealed before it is stored, unsealed only for the job's worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Source URL.
    pub source_url: ConnUrl,
    /// Target URL.
    pub target_url: ConnUrl,
}

fn deserialize<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "spec".to_string() } else { path };
        SpecError::new(field, json_message(e.inner()))
    })
}

/// serde_json's message without its "at line x column y" tail, and with the misleading
/// "expected one of" list kept (it names the known fields).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// What the owner of a running sync job asks of it besides a cutover (docs/sync.md): the
/// same changes as `barge sync pause|resume|add|remove|resync|apply-ddl` on this machine, run by the
/// job's worker with the same engine functions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum SyncChange {
    /// Disable the subscription: the target applies nothing, the source keeps the changes.
    /// (Empty braces, so that a body with other fields is refused rather than ignored.)
    Pause {},
    /// Enable it again: the target catches up.
    Resume {},
    /// Create, publish and copy the source tables these patterns select.
    AddTables {
        /// `table`, `schema.table` or `db.schema.table` globs, as `include_tables`.
        tables: Vec<String>,
    },
    /// Stop carrying these tables (their rows stay on the target).
    RemoveTables {
        /// Patterns, as for `add_tables`.
        tables: Vec<String>,
    },
    /// Copy these tables again while the others stream.
    Resync {
        /// Patterns, as for `add_tables`.
        tables: Vec<String>,
    },
    /// Make the target follow the source's schema changes: those that add to it, and with
    /// `destructive` also those that drop, rename or narrow (docs/sync.md, "Schema changes").
    ApplyDdl {
        #[serde(default)]
        /// Also the changes that drop, rename or narrow.
        destructive: bool,
    },
}

impl SyncChange {
    /// The table patterns it names (none for pause and resume).
    pub fn tables(&self) -> &[String] {
        match self {
            SyncChange::Pause {} | SyncChange::Resume {} | SyncChange::ApplyDdl { .. } => &[],
            SyncChange::AddTables { tables } | SyncChange::RemoveTables { tables } | SyncChange::Resync { tables } => {
                tables
            }
        }
    }

    /// Refuses a change that cannot run: table changes need patterns that compile.
    pub fn check(&self) -> Result<(), SpecError> {
        if matches!(self, SyncChange::Pause {} | SyncChange::Resume {} | SyncChange::ApplyDdl { .. }) {
            return Ok(());
        }
        let tables = self.tables();
        if tables.is_empty() {
            return Err(SpecError::new("tables", "name at least one table (a `schema.table` glob)"));
        }
        Filter { include_tables: tables.to_vec(), ..Filter::default() }
            .compile()
            .map_err(|e| SpecError::new(format!("tables[{}]", e.index.unwrap_or(0)), e.reason))?;
        Ok(())
    }

    /// In words, for messages: `add tables public.a, billing.*`.
    pub fn describe(&self) -> String {
        match self {
            SyncChange::Pause {} => "pause".into(),
            SyncChange::Resume {} => "resume".into(),
            SyncChange::AddTables { tables } => format!("add tables {}", tables.join(", ")),
            SyncChange::RemoveTables { tables } => format!("remove tables {}", tables.join(", ")),
            SyncChange::Resync { tables } => format!("resync {}", tables.join(", ")),
            SyncChange::ApplyDdl { destructive: false } => "apply schema changes".into(),
            SyncChange::ApplyDdl { destructive: true } => "apply schema changes, destructive ones included".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "postgres://app:p%3Bw%24d%60x@db1.example.com:5432/shop";
    const TARGET: &str = "postgresql://app:t0p@db2.example.com/shop_copy?sslmode=verify-full";

    fn parse(json: serde_json::Value) -> Result<JobSpec, SpecError> {
        JobSpec::from_json(json.to_string().as_bytes())
    }

    fn base() -> serde_json::Value {
        serde_json::json!({"command": "init", "source_url": SOURCE, "target_url": TARGET})
    }

    fn with(path: &[&str], value: serde_json::Value) -> serde_json::Value {
        let mut spec = base();
        let mut at = &mut spec;
        for key in &path[..path.len() - 1] {
            at = at.as_object_mut().unwrap().entry(*key).or_insert(serde_json::json!({}));
        }
        at[path[path.len() - 1]] = value;
        spec
    }

    fn error(json: serde_json::Value) -> SpecError {
        parse(json).unwrap_err()
    }

    #[test]
    fn current_specs_parse_with_percent_encoded_passwords() {
        let spec = parse(with(&["options", "jobs"], 8.into())).unwrap();
        assert_eq!(spec.command, Command::Init);
        assert_eq!(spec.options.jobs, Some(8));
        assert_eq!(spec.source_url.expose(), SOURCE);
        assert_eq!(spec.source_url.redacted(), "postgres://app:***@db1.example.com:5432/shop");
        assert!(!format!("{spec:?}").contains("p%3B"));
        assert!(!format!("{spec:?}").contains("t0p"));
        // A round trip keeps every field.
        let again = JobSpec::from_json(&serde_json::to_vec(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn predecessor_specs_are_accepted_as_is() {
        for version in [serde_json::json!({"version": "1.0"}), serde_json::json!({"schema_version": "1.0.0"})] {
            let mut json = serde_json::json!({
                "command": "init",
                "source_url": SOURCE,
                "target_url": "postgres://u:pw@db2.example.com:5433",
                "filter": {"include_databases": ["shop", "crm"], "exclude_tables": ["shop.audit_log", "crm.public.tmp"]},
                "options": {"drop_existing": true, "no_sync": true}
            });
            json.as_object_mut().unwrap().extend(version.as_object().unwrap().clone());
            let spec = parse(json).unwrap();
            assert_eq!(spec.filter.include_databases, ["shop", "crm"]);
            assert_eq!(spec.filter.exclude_tables, ["shop.*.audit_log", "crm.public.tmp"]);
            assert!(spec.options.drop_existing && spec.options.all_databases && !spec.options.sync);
        }
        let spec =
            parse(serde_json::json!({"version": "1.0", "command": "init", "source_url": SOURCE, "target_url": TARGET}))
                .unwrap();
        assert!(spec.options.sync, "the predecessor synced unless told no_sync");
        let e =
            error(serde_json::json!({"version": "2.0", "command": "init", "source_url": SOURCE, "target_url": TARGET}));
        assert_eq!(e.field, "version");
        let e = error(serde_json::json!({"version": "1.0", "command": "init", "source_url": SOURCE,
            "target_url": TARGET, "options": {"enable_sync": true}}));
        assert_eq!(e.field, "options.enable_sync");
        assert!(e.message.contains("enable_sync") && e.message.contains("no_sync"), "{e}");
    }

    #[test]
    fn unknown_fields_and_options_are_refused_by_name() {
        let e = error(with(&["options", "no_synk"], true.into()));
        assert_eq!(e.field, "options.no_synk");
        assert!(e.message.contains("unknown field `no_synk`"), "{e}");
        let e = error(with(&["filter", "tables"], serde_json::json!(["x"])));
        assert!(e.message.contains("unknown field `tables`"), "{e}");
        // The engine's glob grammar, checked by the API: `[a` would fail on the worker.
        let e = error(with(&["filter", "exclude_tables"], serde_json::json!(["ok", "[a"])));
        assert_eq!(e.field, "filter.exclude_tables[1]");
        let e = error(with(&["job_timeout"], 5.into()));
        assert!(e.message.contains("unknown field `job_timeout`"), "{e}");
        let e = error(with(&["command"], "clone".into()));
        assert_eq!(e.field, "command");
        assert!(e.message.contains("init"), "{e}");
        let e = error(with(&["options", "jobs"], "four".into()));
        assert_eq!(e.field, "options.jobs");
    }

    #[test]
    fn bad_urls_say_what_to_fix_without_echoing_them() {
        let cases = [
            ("mysql://u:secretpw@h/db", "postgres://"),
            ("postgres://u:secretpw@/db", "host"),
            ("postgres://u:secret%ZZpw@h/db", "%25"),
            ("postgres://u:secretpw@h:99999/db", "not a valid URL"),
            ("postgresql://postgres:se#cretpw@h:5432/app", "percent-encoded"),
            ("postgres://u:secret/pw@h/db", "percent-encoded"),
            ("postgres://u:secretpw@h/db?sslcert=/x", "client certificates"),
            ("postgres://u:secret%FFpw@h/db", "percent-encoded"),
            ("postgres://u:secretpw@h/db?sslmod=require", "unknown parameter \"sslmod\""),
            ("postgres:///db?host=/var/run/postgresql&password=secretpw", "Unix socket"),
            ("", "is empty"),
        ];
        for (url, needle) in cases {
            let e = error(with(&["source_url"], url.into()));
            assert_eq!(e.field, "source_url", "{url}");
            assert!(e.message.contains(needle), "{url}: {e}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        let long = format!("postgres://u:p@h/{}", "d".repeat(MAX_URL_BYTES));
        assert!(error(with(&["target_url"], long.into())).message.contains("longer"));
    }

    #[test]
    fn remote_reach_refuses_metadata_addresses_and_local_files() {
        let spec = |url: &str| parse(with(&["source_url"], url.into())).unwrap();
        for (url, needle) in [
            ("postgres://u:secretpw@169.254.169.254/db", "link-local"),
            ("postgres://u:secretpw@[fd00:ec2::254]/db", "fd00:ec2"),
            ("postgres://u:secretpw@127.0.0.1/db", "worker itself"),
            ("postgres://u:secretpw@db.example.com/db?sslrootcert=/etc/passwd", "sslrootcert=system"),
        ] {
            let e = spec(url).check_reach(Reach::Remote).unwrap_err();
            assert_eq!(e.field, "source_url");
            assert!(e.message.contains(needle) && !e.message.contains("secret"), "{e}");
            spec(url).check_reach(Reach::Anywhere).unwrap();
        }
        spec("postgres://u:p@10.0.0.7/db?sslrootcert=system").check_reach(Reach::Remote).unwrap();
    }

    #[test]
    fn identical_source_and_target_are_refused() {
        for target in
            ["postgres://other:x@DB1.example.com/shop", "postgres://app@db1.example.com:5432/shop?sslmode=require"]
        {
            let e = error(with(&["target_url"], target.into()));
            assert_eq!(e.field, "target_url");
            assert!(e.message.contains("db1.example.com:5432/shop"), "{e}");
        }
        // The same server under another database name is a copy, not a collision.
        parse(with(&["target_url"], "postgres://app:x@db1.example.com/shop_v2".into())).unwrap();
        parse(with(&["target_url"], "postgres://app:x@db1.example.com:5433/shop".into())).unwrap();
    }

    #[test]
    fn limits_and_combinations() {
        let cases = [
            (with(&["options", "jobs"], 0.into()), "options.jobs"),
            (with(&["options", "index_jobs"], 1000.into()), "options.index_jobs"),
            (with(&["options", "max_duration"], 5.into()), "options.max_duration"),
            (with(&["options", "instance_type"], "huge; rm -rf".into()), "options.instance_type"),
            (with(&["options", "maintenance_work_mem"], 10.into()), "options.maintenance_work_mem"),
            (with(&["filter", "include_tables"], serde_json::json!(["a.b.c.d"])), "filter.include_tables[0]"),
            (
                with(&["filter", "exclude_schemas"], serde_json::json!(["ok", "\"unbalanced"])),
                "filter.exclude_schemas[1]",
            ),
            (with(&["filter", "exclude_tables"], serde_json::json!(["a..b"])), "filter.exclude_tables[0]"),
            (with(&["filter", "include_databases"], serde_json::json!([""])), "filter.include_databases[0]"),
        ];
        for (json, field) in cases {
            assert_eq!(error(json).field, field);
        }
        let mut both = with(&["options", "drop_existing"], true.into());
        both["options"]["resume"] = true.into();
        assert_eq!(error(both).field, "options.resume");
        let many = serde_json::Value::from(vec!["t"; MAX_PATTERNS + 1]);
        assert_eq!(error(with(&["filter", "exclude_tables"], many)).field, "filter.exclude_tables");
        let huge = "x".repeat(MAX_SPEC_BYTES + 1);
        assert!(error(with(&["filter", "exclude_tables"], serde_json::json!([huge]))).message.contains("KiB"));
        // verify refuses options it would ignore.
        let mut verify = with(&["options", "drop_existing"], true.into());
        verify["command"] = "verify".into();
        assert_eq!(error(verify).field, "options.drop_existing");
        let mut verify = with(&["options", "jobs"], 4.into());
        verify["command"] = "verify".into();
        parse(verify).unwrap();
        assert_eq!(error(serde_json::json!([1])).message, "must be a JSON object");
        assert!(error(serde_json::json!("x")).field == "spec");
    }

    #[test]
    fn quoted_parts_keep_their_dots() {
        parse(with(&["filter", "include_tables"], serde_json::json!(["\"my.schema\".\"t.1\""]))).unwrap();
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_json_never_panics(json in json_strategy()) {
            let _ = JobSpec::from_json(json.to_string().as_bytes());
            // And the same with the fields a spec has, holding arbitrary values.
            let mut spec = base();
            for key in ["command", "source_url", "filter", "options", "version"] {
                spec[key] = json.clone();
                let _ = JobSpec::from_json(spec.to_string().as_bytes());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = JobSpec::from_json(&bytes);
        }

        #[test]
        fn arbitrary_urls_never_panic_nor_leak(url in "postgres(ql)?://[a-z%0-9]{0,6}(:[ -~]{0,12})?@[ -~]{0,20}") {
            let spec = with(&["source_url"], url.clone().into());
            let password = url
                .split_once("://")
                .and_then(|(_, rest)| rest.split_once(':'))
                .and_then(|(_, rest)| rest.rsplit_once('@'))
                .map(|(p, _)| p.to_string())
                .filter(|p| p.len() > 3);
            if let (Err(e), Some(password)) = (JobSpec::from_json(spec.to_string().as_bytes()), password) {
                proptest::prop_assert!(!e.message.contains(&password), "{e}");
            }
        }
    }

    fn json_strategy() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
            prop_oneof![Just("init"), Just("verify"), Just("1.0"), Just(SOURCE), Just(TARGET)]
                .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("command".to_string()),
                        Just("source_url".to_string()),
                        Just("target_url".to_string()),
                        Just("filter".to_string()),
                        Just("options".to_string()),
                        Just("include_databases".to_string()),
                        Just("exclude_tables".to_string()),
                        Just("jobs".to_string()),
                        Just("version".to_string()),
                        "[a-z_]{1,12}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn sync_changes_parse_and_check_their_patterns() {
        let add: SyncChange =
            serde_json::from_value(serde_json::json!({"action": "add_tables", "tables": ["billing.*"]})).unwrap();
        assert_eq!(add, SyncChange::AddTables { tables: vec!["billing.*".into()] });
        assert!(add.check().is_ok());
        assert_eq!(add.describe(), "add tables billing.*");
        let ddl: SyncChange = serde_json::from_value(serde_json::json!({"action": "apply_ddl"})).unwrap();
        assert_eq!(ddl, SyncChange::ApplyDdl { destructive: false });
        assert!(ddl.check().is_ok());
        let ddl: SyncChange =
            serde_json::from_value(serde_json::json!({"action": "apply_ddl", "destructive": true})).unwrap();
        assert_eq!(ddl.describe(), "apply schema changes, destructive ones included");
        assert!(
            serde_json::from_value::<SyncChange>(serde_json::json!({"action": "apply_ddl", "drop": true})).is_err()
        );
        let pause: SyncChange = serde_json::from_value(serde_json::json!({"action": "pause"})).unwrap();
        assert!(pause.check().is_ok() && pause.tables().is_empty());
        assert!(serde_json::from_value::<SyncChange>(serde_json::json!({"action": "drop_everything"})).is_err());
        assert!(serde_json::from_value::<SyncChange>(serde_json::json!({"action": "pause", "tables": ["x"]})).is_err());
        let none = SyncChange::Resync { tables: vec![] }.check().unwrap_err();
        assert_eq!(none.field, "tables");
        let bad = SyncChange::RemoveTables { tables: vec!["ok".into(), "a.b.c.d".into()] }.check().unwrap_err();
        assert_eq!(bad.field, "tables[1]", "{bad}");
    }
}
