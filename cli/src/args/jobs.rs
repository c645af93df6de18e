//! `barge jobs …`: list, show, watch, cut over, cancel remote jobs, read their logs.

use clap::{Args, Subcommand};

use super::OutputFormat;

pub(super) const JOBS_HELP: &str = concat!(
    "Examples:\n",
    "  barge jobs list --status running\n",
    "  barge jobs watch                      # the last job submitted from this machine\n",
    "  barge jobs logs 7f9c… -f\n",
    "  barge jobs cancel 7f9c… --yes\n",
    "  barge jobs pause 7f9c…                # a sync job: also resume, add-tables, remove-tables, resync, apply-ddl\n\n",
    "The endpoint comes from --api/BARGE_API, the profile (`barge configure`), or a barge serve on this machine.\n\n",
    exit_codes!()
);

const JOB_ID_HELP: &str = "The job id [default: the last job submitted from this machine].";

/// How a change to a sync job is followed.
#[derive(Debug, Args)]
pub struct ChangeWait {
    /// Return right after asking; `barge jobs show` says what became of it.
    #[arg(long)]
    pub detach: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

impl JobsCommand {
    /// The change a sync job is asked for, with its job id and how to follow it.
    pub fn change(&self) -> Option<(&str, barge_jobs::SyncChange, &ChangeWait)> {
        use barge_jobs::SyncChange;
        Some(match self {
            JobsCommand::Pause { id, wait } => (id, SyncChange::Pause {}, wait),
            JobsCommand::Resume { id, wait } => (id, SyncChange::Resume {}, wait),
            JobsCommand::AddTables { id, tables, wait } => (id, SyncChange::AddTables { tables: tables.clone() }, wait),
            JobsCommand::RemoveTables { id, tables, wait } => {
                (id, SyncChange::RemoveTables { tables: tables.clone() }, wait)
            }
            JobsCommand::Resync { id, tables, wait } => (id, SyncChange::Resync { tables: tables.clone() }, wait),
            JobsCommand::ApplyDdl { id, destructive, wait } => {
                (id, SyncChange::ApplyDdl { destructive: *destructive }, wait)
            }
            _ => return None,
        })
    }
}

/// `barge jobs …`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// The most recent jobs: id, command, status, phase, progress, age.
    #[command(
        after_help = "Examples:\n  barge jobs list\n  barge jobs list --status running\n  barge jobs list --all --output json"
    )]
    List {
        /// Every job, not only the 20 most recent.
        #[arg(long)]
        all: bool,
        /// Only jobs in this state (queued, launching, running, succeeded, failed, cancelled, timed_out).
        #[arg(long, value_name = "STATE")]
        status: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// A job's details: spec (URLs redacted), status, error with next steps, attempts, worker.
    #[command(after_help = "Example:\n  barge jobs show 7f9c… --output json")]
    Show {
        #[arg(help = JOB_ID_HELP)]
        id: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Follow a job's progress until it ends (Ctrl-C stops watching, not the job).
    #[command(after_help = concat!("Example:\n  barge jobs watch --output json | jq -c .progress\n\n", exit_codes!()))]
    Watch {
        #[arg(help = JOB_ID_HELP)]
        id: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Ask a sync job to cut over: its worker waits for zero lag, copies sequences, removes
    /// the replication, verifies and ends the job `succeeded`; this terminal watches it.
    #[command(after_help = "Example:\n  barge jobs cutover 7f9c… --yes")]
    Cutover {
        /// The job id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Return right after asking.
        #[arg(long)]
        detach: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Pause a sync job: the target stops applying changes, the source keeps them (and the
    /// WAL that holds them) until `barge jobs resume`. Like `barge sync pause`.
    #[command(after_help = "Example:\n  barge jobs pause 7f9c…")]
    Pause {
        /// The job id.
        id: String,
        #[command(flatten)]
        wait: ChangeWait,
    },
    /// Resume a paused sync job: the target catches up, nothing lost. Like `barge sync resume`.
    #[command(after_help = "Example:\n  barge jobs resume 7f9c…")]
    Resume {
        /// The job id.
        id: String,
        #[command(flatten)]
        wait: ChangeWait,
    },
    /// Add source tables to a sync job: created on the target, copied while the rest streams.
    /// Like `barge sync add`.
    #[command(after_help = "Example:\n  barge jobs add-tables 7f9c… --include-table 'billing.*'")]
    AddTables {
        /// The job id.
        id: String,
        /// Tables: `table`, `schema.table` or `db.schema.table` globs (repeat for more).
        #[arg(long = "include-table", visible_alias = "table", value_name = "PATTERN", required = true)]
        tables: Vec<String>,
        #[command(flatten)]
        wait: ChangeWait,
    },
    /// Stop carrying tables in a sync job (their rows stay on the target). Like `barge sync
    /// remove`.
    #[command(after_help = "Example:\n  barge jobs remove-tables 7f9c… --include-table public.audit_log")]
    RemoveTables {
        /// The job id.
        id: String,
        /// Tables, as for add-tables.
        #[arg(long = "include-table", visible_alias = "table", value_name = "PATTERN", required = true)]
        tables: Vec<String>,
        #[command(flatten)]
        wait: ChangeWait,
    },
    /// Copy tables of a sync job again while the rest streams. Like `barge sync resync`.
    #[command(after_help = "Example:\n  barge jobs resync 7f9c… public.orders")]
    Resync {
        /// The job id.
        id: String,
        /// The tables: `schema.table` (globs allowed) among those the sync carries.
        #[arg(value_name = "TABLE", required = true)]
        tables: Vec<String>,
        #[command(flatten)]
        wait: ChangeWait,
    },
    /// Make a sync job's target follow the source's schema changes (`barge jobs show` names
    /// them). Like `barge sync apply-ddl`.
    #[command(
        name = "apply-ddl",
        after_help = "Examples:\n  barge jobs apply-ddl 7f9c…\n  barge jobs apply-ddl 7f9c… --destructive   # also the statements named for drops and renames"
    )]
    ApplyDdl {
        /// The job id.
        id: String,
        /// Also run the statements for changes that drop, rename or narrow.
        #[arg(long)]
        destructive: bool,
        #[command(flatten)]
        wait: ChangeWait,
    },
    /// Ask a job to stop; its worker stops cleanly (what committed is kept) and the job ends
    /// `cancelled`.
    #[command(after_help = "Example:\n  barge jobs cancel 7f9c… --yes")]
    Cancel {
        /// The job id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// A job's log (every attempt), from CloudWatch Logs or `barge serve`'s log file.
    #[command(after_help = "Examples:\n  barge jobs logs -f\n  barge jobs logs 7f9c… --raw | jq .fields.message")]
    Logs {
        #[arg(help = JOB_ID_HELP)]
        id: Option<String>,
        /// Keep printing new lines until the job ends.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print the worker's JSON lines as they are.
        #[arg(long)]
        raw: bool,
    },
}
