//! The one lowering from flags to the engine: a command's flags become a job spec plus what
//! only this machine honours ([`Lowered`]); a run here and a remote job both turn that spec
//! into the engine's [`Request`] by [`Request::from_spec`].

use barge_engine::{Error, Local, Request};
use barge_jobs::{Command as JobCommand, JobSpec, Reach};

use super::flags::{Placement, Scope};

/// What a command's flags ask for: the job spec a remote job would run (checked as the API
/// checks it, but for the URLs), and the part only this machine can honour.
#[derive(Debug)]
pub struct Lowered {
    /// Command, URLs, filter and options.
    pub spec: JobSpec,
    /// `--pg-bin`, `--sync-id`.
    pub local: Local,
    /// `--dry-run`: plan from here, change nothing.
    pub dry_run: bool,
}

impl Lowered {
    /// The engine request of a run on this machine.
    pub fn request(self) -> barge_engine::Result<Request> {
        Request::from_spec(&self.spec, self.local, Reach::Anywhere)
    }

    /// The spec of the same command run remotely, checked as the API will check it. Flags that
    /// only make sense here are refused rather than ignored; the error names the flag.
    pub fn remote(self) -> Result<JobSpec, String> {
        if self.dry_run {
            return Err("--dry-run shows the plan from this machine: run it with --local".into());
        }
        if self.local.pg_bin.is_some() && std::env::var_os("BARGE_PG_BIN").is_none() {
            return Err(
                "--pg-bin applies to runs on this machine; a remote worker uses the client tools of its image".into()
            );
        }
        if self.local.sync_id.is_some() {
            return Err(
                "--sync-id applies to runs on this machine; a job's replication objects are named after its id".into(),
            );
        }
        self.spec.validate().map_err(|e| format!("{}: {}", flag_of(&e.field), e.message))?;
        Ok(self.spec)
    }
}

/// A command whose flags lower into a [`Lowered`]: the one path from flags to the engine,
/// whether the command runs here or as a job (the worker calls the same
/// [`Request::from_spec`]).
pub trait Lower {
    /// The flags as a spec and a local part; the error names the flag.
    fn lower(&self) -> Result<Lowered, String>;

    /// The engine request of a run on this machine.
    fn local_request(&self) -> barge_engine::Result<Request> {
        self.lower().map_err(Error::Invalid)?.request()
    }

    /// The job spec of a remote run.
    fn remote_spec(&self) -> Result<JobSpec, String> {
        self.lower()?.remote()
    }
}

/// The spec and local part of `command`, with the flags every command shares; checks what
/// the flags ask for as the API checks a spec, but for the URLs (a run here may use a socket).
pub(super) fn lower(
    command: JobCommand,
    scope: &Scope,
    placement: &Placement,
    options: barge_jobs::Options,
    local: Local,
    dry_run: bool,
) -> Result<Lowered, String> {
    let spec = JobSpec {
        command,
        source_url: barge_jobs::ConnUrl::new(scope.endpoints.source.clone()),
        target_url: barge_jobs::ConnUrl::new(scope.endpoints.target.clone()),
        filter: scope.selection.filter(),
        options: barge_jobs::Options {
            all_databases: scope.selection.all_databases,
            max_duration: placement.max_duration,
            instance_type: placement.instance_type.clone(),
            ..options
        },
    };
    let syncs = spec.syncs() || spec.options.sync;
    let sync_only = [
        (spec.options.replica_identity_full, "--replica-identity-full"),
        (local.sync_id.is_some(), "--sync-id"),
        (spec.options.wal_warn.is_some(), "--wal-warn"),
        (spec.options.wal_limit.is_some(), "--wal-limit"),
        (spec.options.on_wal_limit.is_some(), "--on-wal-limit"),
    ];
    if let (false, Some((_, flag))) = (syncs, sync_only.iter().find(|(set, _)| *set)) {
        let or = if command == JobCommand::Init { " (or run `barge sync`)" } else { "" };
        return Err(format!("{flag} applies to a sync: add --sync{or}"));
    }
    if let Some(id) = &local.sync_id {
        barge_engine::sync::check_id(id).map_err(|e| e.to_string())?;
    }
    spec.validate_options().map_err(|e| format!("{}: {}", flag_of(&e.field), e.message))?;
    Ok(Lowered { spec, local, dry_run })
}

/// `-j`-style counts: at least 1.
pub(super) fn job_count(value: Option<usize>, flag: &str) -> Result<Option<u32>, String> {
    match value {
        Some(0) => Err(format!("{flag} must be at least 1")),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| format!("{flag} is too large")),
        None => Ok(None),
    }
}

/// The flag a spec field came from: `options.index_jobs` → `--index-jobs`,
/// `filter.include_tables[2]` → `--include-table`.
fn flag_of(field: &str) -> String {
    let name = field.rsplit('.').next().unwrap_or(field);
    let name = name.split('[').next().unwrap_or(name);
    let name = match name {
        "source_url" => "source",
        "target_url" => "target",
        "include_databases" => "include-database",
        "exclude_databases" => "exclude-database",
        "include_schemas" => "include-schema",
        "exclude_schemas" => "exclude-schema",
        "include_tables" => "include-table",
        "exclude_tables" => "exclude-table",
        "schema_only_tables" => "schema-only-table",
        other => other,
    };
    format!("--{}", name.replace('_', "-"))
}
