//! `barge sync start|status|stop` and `barge cutover`.

use barge_engine::{Error, Local, Request};
use barge_jobs::Command as JobCommand;
use clap::{Args, Subcommand};

use super::{
    OutputFormat,
    flags::{Endpoints, Placement, Scope, Selection, Tools},
    init::InitArgs,
    lower::{Lower, Lowered, job_count, lower},
    parse_duration,
};

pub(super) const SYNC_HELP: &str = concat!(
    "The copy reads in the snapshot of a new logical replication slot, and the target then subscribes to that slot: no gap, no duplicate. The target's own apply worker streams the changes; barge need not keep running. Needs wal_level=logical and a user with REPLICATION on the source, a target user that may create subscriptions (superuser, or pg_create_subscription on PostgreSQL 16+), and a target server that can reach the source (`barge validate --sync` checks all of it). Schema changes on the source are not replicated: `barge sync status` names them.\n\n",
    "Examples:\n",
    "  barge sync start                            # = barge init --sync\n",
    "  barge sync status --watch                   # lag in bytes and seconds, apply rate, per-table states\n",
    "  barge cutover                               # after stopping writes to the source\n",
    "  barge sync stop                             # remove the replication, keep the copied data\n",
    "  barge sync pause / resume                   # stop applying on the target for a while, then catch up\n",
    "  barge sync add --include-table 'billing.*'  # carry more tables; `sync remove` carries fewer\n",
    "  barge sync resync public.orders             # copy one table again while the rest streams\n",
    "  barge sync start --wal-warn 20GB --wal-limit 100GB   # guard the source's disk against the slot's WAL\n",
    "  barge sync start --remote                   # as a job; `barge jobs cutover <id>` switches over\n\n",
    exit_codes!()
);
pub(super) const CUTOVER_HELP: &str = concat!(
    "Stop writes to the source first: the cutover waits for what the source had written when it began, and writes after that are not on the target. If the target does not catch up within --timeout, nothing is changed and replication keeps running.\n\n",
    "Example:\n  barge cutover --timeout 30m\n\n",
    exit_codes!()
);

/// `barge sync start`: the copy with `--sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub init: InitArgs,
}

/// `barge sync start|status|stop`.
#[derive(Debug, Subcommand)]
pub enum SyncAction {
    /// Copy, then keep the target in sync by logical replication: the same as `barge init
    /// --sync`, with the same flags.
    #[command(after_help = SYNC_HELP)]
    Start(Box<SyncArgs>),
    /// Where the replication stands: lag in bytes and seconds from the source's slot,
    /// per-table states and apply errors from the target, the apply rate, and schema changes
    /// on the source since the copy (a failure: they do not replicate).
    #[command(after_help = "Examples:\n  barge sync status\n  barge sync status --watch --output json")]
    Status(SyncStatusArgs),
    /// Remove the replication (subscription, slot, publication) without cutting over; the
    /// copied data stays. Also removes what a copy that died left behind.
    #[command(after_help = "Example:\n  barge sync stop --yes")]
    Stop(SyncStopArgs),
    /// Stop applying changes on the target without removing anything: the subscription is
    /// disabled, and the source's slot keeps every change (and the WAL that holds them;
    /// `barge sync status` shows how much) until `barge sync resume`.
    #[command(after_help = "Example:\n  barge sync pause\n  barge sync status   # the WAL the source keeps meanwhile")]
    Pause(SyncPauseArgs),
    /// Apply changes on the target again after `barge sync pause`: it catches up from where it
    /// stopped, nothing lost.
    #[command(after_help = "Example:\n  barge sync resume")]
    Resume(SyncPauseArgs),
    /// Add source tables to the running sync: created on the target (structure, indexes,
    /// constraints, triggers), published, and copied by the target while the others stream;
    /// no gap and no duplicate whatever the source writes meanwhile. Waits until they stream.
    #[command(
        after_help = "Examples:\n  barge sync add --include-table 'public.invoices'\n  barge sync add --include-table 'billing.*'"
    )]
    Add(SyncTablesArgs),
    /// Stop carrying some tables: they leave the publication and the subscription; their
    /// rows stay on the target as they are.
    #[command(after_help = "Example:\n  barge sync remove --include-table public.audit_log")]
    Remove(SyncTablesArgs),
    /// Copy some tables again while the others stream (after an accident on the target):
    /// each is emptied on the target and copied from the source, then streams again.
    #[command(after_help = "Example:\n  barge sync resync public.orders")]
    Resync(SyncResyncArgs),
    /// Make the target follow the source's schema changes (`barge sync status` names them):
    /// columns added, types widened, indexes and tables created are applied; with
    /// --destructive also the statements named for drops, renames and narrowed types. A sync
    /// paused for a schema change resumes once none is left.
    #[command(
        name = "apply-ddl",
        after_help = "Examples:\n  barge sync apply-ddl\n  barge sync apply-ddl --destructive   # also runs the statements `status` named"
    )]
    ApplyDdl(SyncApplyDdlArgs),
}

/// `barge sync apply-ddl`.
#[derive(Debug, Args)]
pub struct SyncApplyDdlArgs {
    #[command(flatten)]
    pub sync: SyncTarget,
    /// Also run the statements for changes that drop, rename or narrow (`barge sync status`
    /// names each); without it they wait, and the sync stays paused.
    #[arg(long)]
    pub destructive: bool,
    /// Where pg_dump is, for tables created on the source that the target gets.
    #[command(flatten)]
    pub tools: Tools,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `barge sync add` and `barge sync remove`.
#[derive(Debug, Args)]
pub struct SyncTablesArgs {
    #[command(flatten)]
    pub sync: SyncTarget,
    /// Tables: `table`, `schema.table` or `db.schema.table` globs, as --include-table of a
    /// copy (repeat the flag for more).
    #[arg(long = "include-table", visible_alias = "table", value_name = "PATTERN", required = true)]
    pub tables: Vec<String>,
    /// Where pg_dump is, for the structure of the tables `add` creates on the target.
    #[command(flatten)]
    pub tools: Tools,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `barge sync resync`.
#[derive(Debug, Args)]
pub struct SyncResyncArgs {
    #[command(flatten)]
    pub sync: SyncTarget,
    /// The tables to copy again: `schema.table` (globs allowed) among those the sync carries.
    #[arg(value_name = "TABLE", required = true)]
    pub tables: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `barge sync pause` and `barge sync resume`.
#[derive(Debug, Args)]
pub struct SyncPauseArgs {
    #[command(flatten)]
    pub sync: SyncTarget,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Which sync. (Its own argument ids: `barge sync` also takes the copy's `--source`.)
#[derive(Debug, Args)]
pub struct SyncTarget {
    /// Source URL (as the sync was started with).
    #[arg(long = "source", id = "sync_source", env = "BARGE_SOURCE", hide_env_values = true, value_name = "URL")]
    pub source: String,
    /// Target URL (as the sync was started with).
    #[arg(long = "target", id = "sync_target", env = "BARGE_TARGET", hide_env_values = true, value_name = "URL")]
    pub target: String,
    /// The sync's id (`barge_<id>_<n>`), when the target has more than one.
    #[arg(long, value_name = "ID")]
    pub sync_id: Option<String>,
}

/// `barge sync status`.
#[derive(Debug, Args)]
pub struct SyncStatusArgs {
    #[command(flatten)]
    pub sync: SyncTarget,
    /// Keep showing the status every 2 seconds until Ctrl-C.
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `barge sync stop`.
#[derive(Debug, Args)]
pub struct SyncStopArgs {
    #[command(flatten)]
    pub sync: SyncTarget,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `barge cutover`.
#[derive(Debug, Args)]
pub struct CutoverArgs {
    #[command(flatten)]
    pub sync: SyncTarget,
    /// Longest wait for the target to catch up, e.g. 90s, 10m.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub timeout: u64,
    /// Parallel comparisons of the verify that follows [default: number of CPUs].
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

impl SyncTarget {
    /// The request status, cutover and stop work from.
    pub fn request(&self, jobs: Option<usize>) -> barge_engine::Result<Request> {
        let options =
            barge_jobs::Options { jobs: job_count(jobs, "--jobs").map_err(Error::Invalid)?, ..Default::default() };
        let endpoints = Endpoints { source: self.source.clone(), target: self.target.clone() };
        let scope = Scope { endpoints, selection: Selection::default() };
        let local = Local { sync_id: self.sync_id.clone(), ..Local::default() };
        lower(JobCommand::Sync, &scope, &Placement::default(), options, local, false).map_err(Error::Invalid)?.request()
    }
}

impl Lower for SyncArgs {
    fn lower(&self) -> Result<Lowered, String> {
        self.init.lower_as(JobCommand::Sync)
    }
}
