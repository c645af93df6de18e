//! `barge validate`: the checks before a copy.

use barge_engine::Local;
use barge_jobs::Command as JobCommand;
use clap::Args;

use super::{
    flags::{Ownership, Run, Scope, TargetPolicy, Tools},
    lower::{Lower, Lowered, job_count, lower},
};

pub(super) const VALIDATE_HELP: &str = concat!(
    "Examples:\n",
    "  barge validate                              # BARGE_SOURCE and BARGE_TARGET from the environment\n",
    "  barge validate --sync --remote              # from a worker, with logical replication checks\n\n",
    remote_help!(),
    "\n\n",
    exit_codes!()
);

/// `barge validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// Also check logical replication prerequisites: the source's wal_level, REPLICATION,
    /// free slots and WAL senders, tables replication cannot follow, publication privileges,
    /// and that the target may subscribe and reach the source.
    #[arg(long)]
    pub sync: bool,
    /// With --sync: check as if tables without a primary key get REPLICA IDENTITY FULL.
    #[arg(long)]
    pub replica_identity_full: bool,
    #[command(flatten)]
    pub policy: TargetPolicy,
    #[command(flatten)]
    pub ownership: Ownership,
    /// Parallel streams a copy would use (for the time estimate).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub tools: Tools,
    #[command(flatten)]
    pub run: Run,
}

impl Lower for ValidateArgs {
    fn lower(&self) -> Result<Lowered, String> {
        let options = barge_jobs::Options {
            jobs: job_count(self.jobs, "--jobs")?,
            drop_existing: self.policy.drop_existing,
            resume: self.policy.resume,
            roles: self.ownership.roles,
            no_owner: self.ownership.no_owner,
            sync: self.sync,
            replica_identity_full: self.replica_identity_full,
            ..Default::default()
        };
        let local = Local { pg_bin: self.tools.pg_bin.clone(), ..Local::default() };
        lower(JobCommand::Validate, &self.scope, &self.run.placement, options, local, false)
    }
}
