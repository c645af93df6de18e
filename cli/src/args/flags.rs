//! Flag groups several commands share: the endpoints, the selection, the target policy,
//! ownership, the client tools and where the command runs.

use std::path::PathBuf;

use barge_engine::Filter;
use clap::Args;

use super::{OutputFormat, parse_duration};

/// What a command works on: the endpoints and the selection within them.
#[derive(Debug, Args)]
pub struct Scope {
    #[command(flatten)]
    pub endpoints: Endpoints,
    #[command(flatten)]
    pub selection: Selection,
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
    pub(super) fn filter(&self) -> Filter {
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

/// The flags of a command that may run as a job: where it runs, and how it prints.
#[derive(Debug, Args, Default)]
pub struct Run {
    #[command(flatten)]
    pub placement: Placement,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
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
    /// EC2 instance type of the worker, e.g. m7i.2xlarge (remote only), among the stage's
    /// allowed types [default: chosen from the estimate: the job starts on the stage's first
    /// type, and once planned moves to the smallest allowed type with the vCPUs its COPY
    /// streams and bytes want; `barge jobs show` says which and why].
    #[arg(long, value_name = "TYPE")]
    pub instance_type: Option<String>,
}
