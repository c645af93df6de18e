//! `barge init`: the copy.

use barge_engine::Local;
use barge_jobs::Command as JobCommand;
use clap::Args;

use super::{
    flags::{Ownership, Run, Scope, TargetPolicy, Tools},
    lower::{Lower, Lowered, job_count, lower},
    parse_size,
};

pub(super) const INIT_HELP: &str = concat!(
    "Examples:\n",
    "  BARGE_SOURCE=postgres://app@old-db/shop BARGE_TARGET=postgres://app@new-db/shop barge init\n",
    "  barge init --source postgres://app@old-db --target postgres://app@new-db --all-databases -j 16\n",
    "  barge init --dry-run                       # the plan: databases, tables, parts; changes nothing\n",
    "  barge init --remote --max-duration 6h     # as a job on a worker next to the databases\n\n",
    remote_help!(),
    "\n\n",
    exit_codes!()
);

fn parse_wal_action(text: &str) -> Result<barge_jobs::WalLimitAction, String> {
    match text {
        "stop" => Ok(barge_jobs::WalLimitAction::Stop),
        "pause" => Ok(barge_jobs::WalLimitAction::Pause),
        _ => Err(format!("{text:?}: use stop or pause")),
    }
}

/// `barge init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// Parallel COPY streams [default: chosen from the data (bytes and table parts), the CPUs
    /// here, whether both servers run on this machine and their free connections; the plan
    /// shows the choice and why].
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Parallel index builds and constraint validations [default: number of CPUs].
    #[arg(long, value_name = "N")]
    pub index_jobs: Option<usize>,
    /// Split tables larger than this into parts copied in parallel (integer key ranges,
    /// else block ranges); 0 never splits. Units: kB, MB, GB, TB (1024-based).
    #[arg(long, value_name = "SIZE", default_value = "256MB", value_parser = parse_size)]
    pub split_tables_larger_than: u64,
    #[command(flatten)]
    pub policy: TargetPolicy,
    /// With --drop-existing: drop the target databases the plan lists without asking
    /// (without a terminal to ask on, --drop-existing needs --yes).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the plan (databases, tables with sizes and parts, what would be created) and
    /// change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep the target in sync after the copy by logical replication until `barge cutover`
    /// (see `barge sync --help`).
    #[arg(long)]
    pub sync: bool,
    /// With --sync: give source tables without a primary key REPLICA IDENTITY FULL (their
    /// updates and deletes then log whole rows) instead of refusing them.
    #[arg(long)]
    pub replica_identity_full: bool,
    /// With --sync: the id in the replication objects' names, barge_<id>_<n> (lower-case
    /// letters and digits) [default: random].
    #[arg(long, value_name = "ID")]
    pub sync_id: Option<String>,
    /// With --sync: warn (in `barge sync status` and the job's progress) when a replication
    /// slot keeps more than this much WAL on the source. Units: kB, MB, GB, TB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub wal_warn: Option<u64>,
    /// With --sync: when a slot keeps more than this much WAL on the source, do what
    /// --on-wal-limit says, before the source's disk fills or it invalidates the slot. Acted
    /// on while barge watches: always in a remote sync job, locally by `barge sync status
    /// --watch`.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub wal_limit: Option<u64>,
    /// With --wal-limit: stop (remove the replication; the source frees the WAL, the target
    /// keeps its copy) or pause (disable the subscription; the slot keeps its WAL) [default:
    /// stop].
    #[arg(long, value_name = "ACTION", value_parser = parse_wal_action)]
    pub on_wal_limit: Option<barge_jobs::WalLimitAction>,
    #[command(flatten)]
    pub ownership: Ownership,
    /// Do not copy grants.
    #[arg(long)]
    pub no_acl: bool,
    /// Do not copy tablespace assignments.
    #[arg(long)]
    pub no_tablespaces: bool,
    /// Do not copy large objects.
    #[arg(long)]
    pub skip_large_objects: bool,
    /// Run ANALYZE on every copied table instead of carrying the source's planner
    /// statistics (done where the target runs PostgreSQL 18 or newer; ANALYZE otherwise).
    #[arg(long)]
    pub analyze: bool,
    /// maintenance_work_mem for index builds [default: sized from available memory].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub maintenance_work_mem: Option<u64>,
    #[command(flatten)]
    pub tools: Tools,
    #[command(flatten)]
    pub run: Run,
}

impl InitArgs {
    /// `barge init` (`JobCommand::Init`) or `barge sync start` (`JobCommand::Sync`).
    pub(super) fn lower_as(&self, command: JobCommand) -> Result<Lowered, String> {
        let options = barge_jobs::Options {
            sync: command == JobCommand::Init && self.sync,
            replica_identity_full: self.replica_identity_full,
            jobs: job_count(self.jobs, "--jobs")?,
            index_jobs: job_count(self.index_jobs, "--index-jobs")?,
            split_tables_larger_than: Some(self.split_tables_larger_than),
            drop_existing: self.policy.drop_existing,
            resume: self.policy.resume,
            roles: self.ownership.roles,
            no_owner: self.ownership.no_owner,
            no_acl: self.no_acl,
            no_tablespaces: self.no_tablespaces,
            skip_large_objects: self.skip_large_objects,
            analyze: self.analyze,
            maintenance_work_mem: self.maintenance_work_mem,
            wal_warn: self.wal_warn,
            wal_limit: self.wal_limit,
            on_wal_limit: self.on_wal_limit,
            ..Default::default()
        };
        let local = Local { pg_bin: self.tools.pg_bin.clone(), sync_id: self.sync_id.clone(), ..Local::default() };
        lower(command, &self.scope, &self.run.placement, options, local, self.dry_run)
    }
}

impl Lower for InitArgs {
    fn lower(&self) -> Result<Lowered, String> {
        self.lower_as(JobCommand::Init)
    }
}
