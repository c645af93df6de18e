//! Command-line arguments: clap structs whose doc comments are `--help`, lowered once into a
//! job spec plus what only this machine honours ([`Lowered`]); a run here and a remote job
//! both turn that spec into the engine's [`Request`] by [`Request::from_spec`].

use std::path::PathBuf;

use barge_engine::{Error, Filter, Local, Request};
use barge_jobs::{Command as JobCommand, JobSpec, Reach};
use clap::{Args, Parser, Subcommand, ValueEnum};

macro_rules! exit_codes {
    () => {
        "Exit codes: 0 success; 1 the copy failed, verify found differences or validate found a failing check; 2 bad usage (flags, URLs, filters); 3 the job was cancelled; 4 the job timed out (its --max-duration); 5 the barge API could not be reached; 130 interrupted (a remote job keeps running: `barge jobs watch`)."
    };
}

const EXIT_CODES: &str = exit_codes!();

macro_rules! remote_help {
    () => {
        "Remote jobs: with --remote (the default once `barge configure` set an endpoint, or with --api/BARGE_API) the command is submitted as a job to the barge API and runs on a worker close to the databases; this terminal watches it (Ctrl-C detaches, the job keeps running). Requests to AWS are signed with your AWS credentials (the standard chain: environment, profiles, SSO, instance roles); requests to `barge serve` carry the token it wrote."
    };
}

const INIT_HELP: &str = concat!(
    "Examples:\n",
    "  BARGE_SOURCE=postgres://app@old-db/shop BARGE_TARGET=postgres://app@new-db/shop barge init\n",
    "  barge init --source postgres://app@old-db --target postgres://app@new-db --all-databases -j 16\n",
    "  barge init --dry-run                       # the plan: databases, tables, parts; changes nothing\n",
    "  barge init --remote --max-duration 6h     # as a job on a worker next to the databases\n\n",
    remote_help!(),
    "\n\n",
    exit_codes!()
);
const VALIDATE_HELP: &str = concat!(
    "Examples:\n",
    "  barge validate                              # BARGE_SOURCE and BARGE_TARGET from the environment\n",
    "  barge validate --sync --remote              # from a worker, with logical replication checks\n\n",
    remote_help!(),
    "\n\n",
    exit_codes!()
);
const VERIFY_HELP: &str = concat!(
    "Examples:\n",
    "  barge verify -j 8\n",
    "  barge verify --remote --detach             # prints the job id; `barge jobs watch` later\n\n",
    remote_help!(),
    "\n\n",
    exit_codes!()
);

/// barge moves PostgreSQL databases: copy schema and data in parallel from one server to
/// another, check it, and verify the result.
#[derive(Debug, Parser)]
#[command(name = "barge", version, about, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The barge API endpoint for remote jobs and `barge jobs` [default: the profile's, see
    /// `barge configure`; else a `barge serve` running on this machine].
    #[arg(long, global = true, env = "BARGE_API", value_name = "URL")]
    pub api: Option<String>,
    /// Which `barge configure` profile to use.
    #[arg(long, global = true, env = "BARGE_PROFILE", value_name = "NAME", default_value = "default")]
    pub profile: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// barge's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy databases from the source server to the target server: schema, data, indexes,
    /// constraints, sequences, large objects.
    #[command(after_help = INIT_HELP)]
    Init(InitArgs),
    /// Check that a copy can run: connectivity, versions, tools, privileges, extensions,
    /// roles, target databases; with --sync, logical replication prerequisites.
    #[command(after_help = VALIDATE_HELP)]
    Validate(ValidateArgs),
    /// Compare source and target: rows and checksums per table in key-range chunks,
    /// sequences and schema objects.
    #[command(after_help = VERIFY_HELP)]
    Verify(VerifyArgs),
    /// Keep the target in sync by logical replication until `barge cutover`: `barge sync
    /// start` (= `barge init --sync`), `barge sync status` (lag), `barge sync stop` (remove it).
    #[command(subcommand, after_help = SYNC_HELP)]
    Sync(SyncAction),
    /// Switch over to the target: wait until it has applied everything the source had written
    /// (zero lag once writes stopped), copy sequence positions, remove the subscription, slot
    /// and publication, and verify.
    #[command(after_help = CUTOVER_HELP)]
    Cutover(CutoverArgs),
    /// Run barge's control plane on this machine: the job API on loopback, jobs in SQLite
    /// under the data directory, each job's worker as a local process, and the reaper.
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// List, show, watch, cancel remote jobs and read their logs.
    #[command(subcommand, after_help = JOBS_HELP)]
    Jobs(JobsCommand),
    /// Set the barge API endpoint of a profile: given, or read from a deployed stack's
    /// outputs (CloudFormation).
    #[command(after_help = CONFIGURE_HELP)]
    Configure(ConfigureArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Example:\n  barge completions bash > ~/.local/share/bash-completion/completions/barge")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

const CONFIGURE_HELP: &str = "Profiles live in $XDG_CONFIG_HOME/barge/config.json (~/.config/barge/config.json). Without flags, prints the profile.\n\nExamples:\n  barge configure --stack barge-prod          # the stack's ApiEndpoint output\n  barge configure --endpoint https://abc123.execute-api.eu-west-1.amazonaws.com\n  barge configure --profile local --endpoint http://127.0.0.1:7447";

/// `barge configure`.
#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// Read the endpoint from this CloudFormation stack's `ApiEndpoint` output (AWS
    /// credentials and region from the standard chain, or --region).
    #[arg(long, value_name = "NAME", conflicts_with = "endpoint")]
    pub stack: Option<String>,
    /// The endpoint to store.
    #[arg(long = "endpoint", value_name = "URL")]
    pub endpoint: Option<String>,
    /// AWS region of the stack [default: AWS_REGION, the AWS profile's].
    #[arg(long, value_name = "REGION", requires = "stack")]
    pub region: Option<String>,
    /// The bearer token file for a `barge serve` endpoint [default: the one it wrote].
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

const JOBS_HELP: &str = concat!(
    "Examples:\n",
    "  barge jobs list --status running\n",
    "  barge jobs watch                      # the last job submitted from this machine\n",
    "  barge jobs logs 7f9c… -f\n",
    "  barge jobs cancel 7f9c… --yes\n\n",
    "The endpoint comes from --api/BARGE_API, the profile (`barge configure`), or a barge serve on this machine.\n\n",
    exit_codes!()
);

const JOB_ID_HELP: &str = "The job id [default: the last job submitted from this machine].";

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

const SERVE_HELP: &str = "The API listens on 127.0.0.1 only. Callers authenticate with the bearer token in DATA_DIR/token (0600), created on first start; workers get one-job tokens. Each job's log is DATA_DIR/logs/<job>.log.\n\nExample:\n  barge serve --port 7447 --data-dir ~/.local/share/barge";

/// `barge serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port on 127.0.0.1 to listen on (0 picks a free one).
    #[arg(long, env = "BARGE_SERVE_PORT", default_value_t = 7447)]
    pub port: u16,
    /// Where jobs, the key sealing their credentials, the token and logs live
    /// [default: $XDG_DATA_HOME/barge or ~/.local/share/barge].
    #[arg(long, env = "BARGE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The barge-worker executable [default: barge-worker next to barge, else on PATH].
    #[arg(long, env = "BARGE_WORKER", value_name = "PATH")]
    pub worker: Option<PathBuf>,
    /// Jobs that may be active at once; more are refused with 429.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_active_jobs: u32,
    /// Seconds between reaper sweeps.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub reap_every: u64,
    /// Seconds without a heartbeat after which a worker counts as lost (its job gets a new
    /// attempt).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(5..=3600))]
    pub heartbeat_timeout: u32,
    /// Seconds between a worker's heartbeats.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=300))]
    pub worker_heartbeat: u32,
    /// Seconds a worker has to answer a cancel before the reaper stops it.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(5..=3600))]
    pub cancel_grace: u32,
    /// Attempts a job gets when its worker is lost or fails in a way that may pass.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub max_attempts: u32,
}

/// Where to copy from and to.
#[derive(Debug, Args)]
pub struct Endpoints {
    /// Source URL: postgres://user:password@host:port/dbname?sslmode=verify-full. It names
    /// the database to copy; --all-databases copies every database instead. Prefer the
    /// BARGE_SOURCE variable (or ~/.pgpass) so the password stays out of the process list and
    /// shell history.
    #[arg(long, env = "BARGE_SOURCE", hide_env_values = true, value_name = "URL")]
    pub source: String,
    /// Target URL. Its database receives the source database (created when missing; the
    /// source's name when it names none). With --all-databases each database goes into one of
    /// the same name, so the target URL names no database (or the source URL's).
    #[arg(long, env = "BARGE_TARGET", hide_env_values = true, value_name = "URL")]
    pub target: String,
}

/// Which databases, schemas and tables. Patterns are globs (*, ?, [abc]) matched
/// case-sensitively; dots separate db.schema.table; double-quote a part to take it literally.
#[derive(Debug, Args, Default)]
pub struct Selection {
    /// Copy every database of the source server into same-named target databases
    /// (postgres included unless excluded).
    #[arg(long)]
    pub all_databases: bool,
    /// Only these databases (with --all-databases). Repeatable.
    #[arg(long = "include-database", value_name = "PATTERN")]
    pub include_databases: Vec<String>,
    /// Skip these databases. Repeatable.
    #[arg(long = "exclude-database", value_name = "PATTERN")]
    pub exclude_databases: Vec<String>,
    /// Only these schemas: schema or db.schema. Repeatable.
    #[arg(long = "include-schema", value_name = "PATTERN")]
    pub include_schemas: Vec<String>,
    /// Skip these schemas. Repeatable.
    #[arg(long = "exclude-schema", value_name = "PATTERN")]
    pub exclude_schemas: Vec<String>,
    /// Only these tables (and views, sequences): table, schema.table or db.schema.table,
    /// e.g. 'sales.*'. Repeatable.
    #[arg(long = "include-table", value_name = "PATTERN")]
    pub include_tables: Vec<String>,
    /// Skip these tables, e.g. 'db.public.logs'. Repeatable.
    #[arg(long = "exclude-table", value_name = "PATTERN")]
    pub exclude_tables: Vec<String>,
    /// Copy these tables' structure without their rows. Repeatable.
    #[arg(long = "schema-only-table", value_name = "PATTERN")]
    pub schema_only_tables: Vec<String>,
}

impl Selection {
    /// The filter these flags select.
    fn filter(&self) -> Filter {
        Filter {
            include_databases: self.include_databases.clone(),
            exclude_databases: self.exclude_databases.clone(),
            include_schemas: self.include_schemas.clone(),
            exclude_schemas: self.exclude_schemas.clone(),
            include_tables: self.include_tables.clone(),
            exclude_tables: self.exclude_tables.clone(),
            schema_only_tables: self.schema_only_tables.clone(),
        }
    }
}

/// What happens to target databases that already exist (validate checks as init would).
#[derive(Debug, Args)]
pub struct TargetPolicy {
    /// Drop and re-create target databases that already hold objects.
    #[arg(long, conflicts_with = "resume")]
    pub drop_existing: bool,
    /// Continue an interrupted copy: parts and steps that committed are not redone.
    #[arg(long)]
    pub resume: bool,
}

/// Who owns what on the target.
#[derive(Debug, Args)]
pub struct Ownership {
    /// Create the source's roles that the target lacks, without passwords.
    #[arg(long)]
    pub roles: bool,
    /// Do not copy ownership: objects belong to the target user.
    #[arg(long)]
    pub no_owner: bool,
}

/// The PostgreSQL client tools barge runs.
#[derive(Debug, Args)]
pub struct Tools {
    /// Directory holding pg_dump (at least the source server's version) [default: PATH,
    /// then well-known install directories].
    #[arg(long, env = "BARGE_PG_BIN", value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
}

/// Where a command runs: on this machine, or as a job through the barge API.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Remote jobs")]
pub struct Placement {
    /// Submit the command as a job to the barge API (see --api) and watch it [default when
    /// an endpoint is configured].
    #[arg(long, conflicts_with = "local")]
    pub remote: bool,
    /// Run here even when an endpoint is configured.
    #[arg(long)]
    pub local: bool,
    /// Return right after submitting, printing the job id (remote only).
    #[arg(long)]
    pub detach: bool,
    /// Stop the job as timed out after this long, e.g. 90m, 6h, 2d (remote only) [default: 1d,
    /// at most 14d].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_duration: Option<u64>,
    /// EC2 instance type of the worker, e.g. m7i.2xlarge (remote only) [default: chosen from
    /// the estimated size].
    #[arg(long, value_name = "TYPE")]
    pub instance_type: Option<String>,
}

/// How output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Progress bars on a terminal, plain lines otherwise.
    #[default]
    Text,
    /// One JSON object per line on stdout.
    Json,
}

/// `barge init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    #[command(flatten)]
    pub selection: Selection,
    /// Parallel COPY streams [default: number of CPUs].
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
    /// maintenance_work_mem for index builds [default: sized from available memory].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub maintenance_work_mem: Option<u64>,
    #[command(flatten)]
    pub tools: Tools,
    #[command(flatten)]
    pub placement: Placement,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

const SYNC_HELP: &str = concat!(
    "The copy reads in the snapshot of a new logical replication slot, and the target then subscribes to that slot: no gap, no duplicate. The target's own apply worker streams the changes; barge need not keep running. Needs wal_level=logical and a user with REPLICATION on the source, a target user that may create subscriptions (superuser, or pg_create_subscription on PostgreSQL 16+), and a target server that can reach the source (`barge validate --sync` checks all of it). Schema changes on the source are not replicated: `barge sync status` names them.\n\n",
    "Examples:\n",
    "  barge sync start                            # = barge init --sync\n",
    "  barge sync status --watch                   # lag in bytes and seconds, apply rate, per-table states\n",
    "  barge cutover                               # after stopping writes to the source\n",
    "  barge sync stop                             # remove the replication, keep the copied data\n",
    "  barge sync start --remote                   # as a job; `barge jobs cutover <id>` switches over\n\n",
    exit_codes!()
);
const CUTOVER_HELP: &str = concat!(
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
        let local = Local { sync_id: self.sync_id.clone(), ..Local::default() };
        lower(JobCommand::Sync, &endpoints, &Selection::default(), &Placement::default(), options, local, false)
            .map_err(Error::Invalid)?
            .request()
    }
}

/// `barge validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    #[command(flatten)]
    pub selection: Selection,
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
    pub placement: Placement,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `barge verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    #[command(flatten)]
    pub selection: Selection,
    /// Parallel chunk comparisons [default: number of CPUs].
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub placement: Placement,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

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

fn lower(
    command: JobCommand,
    endpoints: &Endpoints,
    selection: &Selection,
    placement: &Placement,
    options: barge_jobs::Options,
    local: Local,
    dry_run: bool,
) -> Result<Lowered, String> {
    let spec = JobSpec {
        command,
        source_url: barge_jobs::ConnUrl::new(endpoints.source.clone()),
        target_url: barge_jobs::ConnUrl::new(endpoints.target.clone()),
        filter: selection.filter(),
        options: barge_jobs::Options {
            all_databases: selection.all_databases,
            max_duration: placement.max_duration,
            instance_type: placement.instance_type.clone(),
            ..options
        },
    };
    let syncs = spec.syncs() || spec.options.sync;
    let sync_only =
        [(spec.options.replica_identity_full, "--replica-identity-full"), (local.sync_id.is_some(), "--sync-id")];
    if let (false, Some((_, flag))) = (syncs, sync_only.iter().find(|(set, _)| *set)) {
        let or = if command == JobCommand::Init { " (or run `barge sync`)" } else { "" };
        return Err(format!("{flag} applies to a sync: add --sync{or}"));
    }
    spec.validate_options().map_err(|e| format!("{}: {}", flag_of(&e.field), e.message))?;
    Ok(Lowered { spec, local, dry_run })
}

fn job_count(value: Option<usize>, flag: &str) -> Result<Option<u32>, String> {
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

impl InitArgs {
    /// `barge init` (`JobCommand::Init`) or `barge sync start` (`JobCommand::Sync`).
    fn lower_as(&self, command: JobCommand) -> Result<Lowered, String> {
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
            maintenance_work_mem: self.maintenance_work_mem,
            ..Default::default()
        };
        let local = Local { pg_bin: self.tools.pg_bin.clone(), sync_id: self.sync_id.clone() };
        lower(command, &self.endpoints, &self.selection, &self.placement, options, local, self.dry_run)
    }
}

impl Lower for InitArgs {
    fn lower(&self) -> Result<Lowered, String> {
        self.lower_as(JobCommand::Init)
    }
}

impl Lower for SyncArgs {
    fn lower(&self) -> Result<Lowered, String> {
        self.init.lower_as(JobCommand::Sync)
    }
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
        lower(JobCommand::Validate, &self.endpoints, &self.selection, &self.placement, options, local, false)
    }
}

impl Lower for VerifyArgs {
    fn lower(&self) -> Result<Lowered, String> {
        let options = barge_jobs::Options { jobs: job_count(self.jobs, "--jobs")?, ..Default::default() };
        lower(JobCommand::Verify, &self.endpoints, &self.selection, &self.placement, options, Local::default(), false)
    }
}

/// `90m`, `6h`, `2d`, `45s`, `3600` → seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 90m, 6h or 2d"))?;
    let factor = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown duration unit {other:?} (use s, m, h or d)")),
    };
    value.checked_mul(factor).ok_or_else(|| format!("{text:?} is too long"))
}

/// `256MB`, `1.5GB`, `64kB`, `1048576` → bytes. Units are 1024-based, as PostgreSQL's are.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a size like 256MB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!("unknown size unit {other:?} (use kB, MB, GB or TB)"));
        }
    };
    Ok((value * factor as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MB"), Ok(256 << 20));
        assert_eq!(parse_size("1.5GB"), Ok(3 << 29));
        assert_eq!(parse_size("64kB"), Ok(64 << 10));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MB").is_err());
    }

    #[test]
    fn every_init_flag_reaches_the_request() {
        let head = ["barge", "init", "--source", "postgres://u@s/a", "--target", "postgres://u@t/b"];
        let tools = ["--pg-bin", "/opt/pg"];
        let cli = Cli::parse_from(head.iter().chain(&EVERY_SELECTION_FLAG).chain(&EVERY_INIT_FLAG).chain(&tools));
        let Command::Init(args) = &cli.command else { panic!("not init") };
        let req = args.local_request().unwrap();
        assert!(req.options.all_databases);
        assert_eq!(req.filter.include_databases, ["a*"]);
        assert_eq!(req.filter.exclude_databases, ["x"]);
        assert_eq!(req.filter.include_schemas, ["s"]);
        assert_eq!(req.filter.exclude_schemas, ["t"]);
        assert_eq!(req.filter.include_tables, ["s.*"]);
        assert_eq!(req.filter.exclude_tables, ["s.logs"]);
        assert_eq!(req.filter.schema_only_tables, ["s.big"]);
        let o = &req.options;
        assert_eq!((o.jobs, o.index_jobs, o.split_tables_larger_than), (Some(3), Some(5), Some(1 << 30)));
        assert!(o.drop_existing && o.roles && o.no_owner && o.no_acl && o.no_tablespaces && o.skip_large_objects);
        assert_eq!(o.maintenance_work_mem, Some(512 << 20));
        assert_eq!(req.local.pg_bin.as_deref(), Some(std::path::Path::new("/opt/pg")));
    }

    /// Every flag of `args`, run remotely: the spec the CLI submits becomes, on the worker,
    /// the same engine request the local run builds (the client tools aside: the worker's own).
    fn same_request_remotely<A: Lower>(args: &A, local: Request) {
        let spec = args.remote_spec().unwrap();
        // Through the API's JSON, as the worker receives it.
        let spec: JobSpec = JobSpec::from_json(
            &serde_json::to_vec(&serde_json::json!({
                "command": spec.command,
                "source_url": spec.source_url.expose(),
                "target_url": spec.target_url.expose(),
                "filter": spec.filter,
                "options": spec.options,
            }))
            .unwrap(),
        )
        .unwrap();
        let mut remote = barge_worker::execute::request(&spec, 1, barge_jobs::Reach::Anywhere).unwrap();
        remote.local.pg_bin = local.local.pg_bin.clone();
        assert_eq!(format!("{remote:?}"), format!("{local:?}"));
    }

    const EVERY_INIT_FLAG: [&str; 14] = [
        "-j",
        "3",
        "--index-jobs",
        "5",
        "--split-tables-larger-than",
        "1GB",
        "--drop-existing",
        "--roles",
        "--no-owner",
        "--no-acl",
        "--no-tablespaces",
        "--skip-large-objects",
        "--maintenance-work-mem",
        "512MB",
    ];

    const EVERY_SELECTION_FLAG: [&str; 15] = [
        "--all-databases",
        "--include-database",
        "a*",
        "--exclude-database",
        "x",
        "--include-schema",
        "s",
        "--exclude-schema",
        "t",
        "--include-table",
        "s.*",
        "--exclude-table",
        "s.logs",
        "--schema-only-table",
        "s.big",
    ];

    #[test]
    fn every_flag_reaches_the_worker() {
        let endpoints = ["--source", "postgres://u:pw@s/a", "--target", "postgres://u:pw@t/b"];
        let init = ["--remote", "--max-duration", "6h", "--instance-type", "m7i.2xlarge"];
        let cli = Cli::parse_from(
            ["barge", "init"]
                .iter()
                .chain(&endpoints)
                .chain(&EVERY_SELECTION_FLAG)
                .chain(&EVERY_INIT_FLAG)
                .chain(&init),
        );
        let Command::Init(args) = &cli.command else { panic!("not init") };
        same_request_remotely(args, args.local_request().unwrap());
        let spec = args.remote_spec().unwrap();
        assert_eq!(spec.options.max_duration, Some(6 * 3600));
        assert_eq!(spec.options.instance_type.as_deref(), Some("m7i.2xlarge"));
        // resume instead of drop
        let cli = Cli::parse_from(["barge", "init", "--resume"].iter().chain(&endpoints));
        let Command::Init(args) = &cli.command else { panic!("not init") };
        same_request_remotely(args, args.local_request().unwrap());

        let validate = ["--sync", "--resume", "--roles", "--no-owner", "-j", "7", "--remote"];
        let cli = Cli::parse_from(
            ["barge", "validate"].iter().chain(&endpoints).chain(&EVERY_SELECTION_FLAG).chain(&validate),
        );
        let Command::Validate(args) = &cli.command else { panic!("not validate") };
        same_request_remotely(args, args.local_request().unwrap());

        let selection = &EVERY_SELECTION_FLAG[..EVERY_SELECTION_FLAG.len() - 2];
        let cli = Cli::parse_from(["barge", "verify", "-j", "9"].iter().chain(&endpoints).chain(selection));
        let Command::Verify(args) = &cli.command else { panic!("not verify") };
        same_request_remotely(args, args.local_request().unwrap());
    }

    #[test]
    fn sync_flags_reach_the_worker_and_need_a_sync() {
        let endpoints = ["--source", "postgres://u:pw@s/a", "--target", "postgres://u:pw@t/b"];
        let cli = Cli::parse_from(
            ["barge", "init", "--sync", "--replica-identity-full", "--remote"].iter().chain(&endpoints),
        );
        let Command::Init(args) = &cli.command else { panic!("not init") };
        let local = args.local_request().unwrap();
        assert!(local.options.sync && local.options.replica_identity_full);
        same_request_remotely(args, local);
        assert!(args.remote_spec().unwrap().syncs());
        // `barge sync` is `init --sync`, submitted as a sync job.
        let cli = Cli::parse_from(["barge", "sync", "start", "-j", "2", "--remote"].iter().chain(&endpoints));
        let Command::Sync(SyncAction::Start(args)) = &cli.command else { panic!("not sync start") };
        same_request_remotely(args.as_ref(), args.local_request().unwrap());
        assert_eq!(args.remote_spec().unwrap().command, barge_jobs::Command::Sync);
        // Its actions take only the endpoints.
        let cli = Cli::parse_from(["barge", "sync", "status", "--watch", "--sync-id", "abc1"].iter().chain(&endpoints));
        let Command::Sync(SyncAction::Status(status)) = &cli.command else { panic!("not sync status") };
        assert!(status.watch);
        assert_eq!(status.sync.request(None).unwrap().local.sync_id.as_deref(), Some("abc1"));
        let cli =
            Cli::parse_from(["barge", "cutover", "--timeout", "90s", "--sync-id", "Bad!"].iter().chain(&endpoints));
        let Command::Cutover(cutover) = &cli.command else { panic!("not cutover") };
        assert_eq!(cutover.timeout, 90);
        assert!(cutover.sync.request(None).unwrap_err().to_string().contains("sync id"));
        // Sync-only flags without a sync are refused, naming the flag.
        let cli = Cli::parse_from(["barge", "init", "--replica-identity-full"].iter().chain(&endpoints));
        let Command::Init(args) = &cli.command else { panic!("not init") };
        assert!(args.local_request().unwrap_err().to_string().contains("--sync"));
        assert!(
            args.remote_spec().unwrap_err().contains("--replica-identity-full"),
            "{}",
            args.remote_spec().unwrap_err()
        );
        let cli = Cli::parse_from(["barge", "init", "--sync", "--sync-id", "x1", "--remote"].iter().chain(&endpoints));
        let Command::Init(args) = &cli.command else { panic!("not init") };
        assert!(args.remote_spec().unwrap_err().contains("--sync-id"));
        let cli = Cli::parse_from(["barge", "init", "--sync", "--resume", "--remote"].iter().chain(&endpoints));
        let Command::Init(args) = &cli.command else { panic!("not init") };
        assert!(args.remote_spec().unwrap_err().starts_with("--resume"));
    }

    #[test]
    fn remote_refuses_what_it_cannot_honour_naming_the_flag() {
        let parse = |extra: &[&str]| {
            Cli::parse_from(
                ["barge", "init", "--source", "postgres://u@s/a", "--target", "postgres://u@t/b"].iter().chain(extra),
            )
        };
        let spec_error = |extra: &[&str]| {
            let cli = parse(extra);
            let Command::Init(args) = &cli.command else { panic!("not init") };
            args.remote_spec().unwrap_err()
        };
        assert!(spec_error(&["--dry-run"]).contains("--dry-run"));
        assert!(spec_error(&["--jobs", "100000"]).starts_with("--jobs"));
        assert!(spec_error(&["--max-duration", "20d"]).starts_with("--max-duration"));
        assert!(spec_error(&["--instance-type", "huge"]).starts_with("--instance-type"));
        assert!(spec_error(&["--include-table", "a.b.c.d"]).starts_with("--include-table"));
        let cli = Cli::parse_from(["barge", "verify", "--source", "postgres://u@s/a", "--target", "postgres://u@s/a"]);
        let Command::Verify(args) = &cli.command else { panic!("not verify") };
        assert!(args.remote_spec().unwrap_err().starts_with("--target"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90m"), Ok(5400));
        assert_eq!(parse_duration("6h"), Ok(21_600));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("3600"), Ok(3600));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn bad_input_is_refused_with_the_flag() {
        let cli = Cli::parse_from([
            "barge",
            "init",
            "--source",
            "postgres://u@s/a",
            "--target",
            "postgres://u@t/b",
            "-j",
            "0",
        ]);
        let Command::Init(args) = &cli.command else { panic!("not init") };
        assert!(args.local_request().unwrap_err().to_string().contains("--jobs"));
        let cli = Cli::parse_from(["barge", "verify", "--source", "mysql://u:pw@s/a", "--target", "postgres://u@t/b"]);
        let Command::Verify(args) = &cli.command else { panic!("not verify") };
        let err = args.local_request().unwrap_err().to_string();
        assert!(err.contains("source URL") && !err.contains("pw@"), "{err}");
        assert!(
            Cli::try_parse_from(["barge", "init", "--source", "x", "--target", "y", "--drop-existing", "--resume"])
                .is_err()
        );
    }
}
