//! `barge verify`: compare source and target.

use barge_engine::Local;
use barge_jobs::Command as JobCommand;
use clap::Args;

use super::{
    flags::{Run, Scope},
    lower::{Lower, Lowered, job_count, lower},
};

pub(super) const VERIFY_HELP: &str = concat!(
    "Examples:\n",
    "  barge verify -j 8\n",
    "  barge verify --remote --detach             # prints the job id; `barge jobs watch` later\n\n",
    remote_help!(),
    "\n\n",
    exit_codes!()
);

/// `barge verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// Parallel chunk comparisons [default: number of CPUs].
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub run: Run,
}

impl Lower for VerifyArgs {
    fn lower(&self) -> Result<Lowered, String> {
        let options = barge_jobs::Options { jobs: job_count(self.jobs, "--jobs")?, ..Default::default() };
        lower(JobCommand::Verify, &self.scope, &self.run.placement, options, Local::default(), false)
    }
}
