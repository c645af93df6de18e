//! Command-line arguments: clap structs whose doc comments are `--help`, turned into the
//! engine's [`Request`] by `TryFrom`, so every check lives in the engine.

use std::path::PathBuf;

use barge_engine::{ConnInfo, Filter, Options, Request, Side};
use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "Exit codes: 0 success; 1 the copy failed, verify found differences or validate found a failing check; 2 bad usage (flags, URLs, filters); 130 interrupted.";

/// barge moves PostgreSQL databases: copy schema and data in parallel from one server to
/// another, check it, and verify the result.
#[derive(Debug, Parser)]
#[command(name = "barge", version, about, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// barge's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy databases from the source server to the target server: schema, data, indexes,
    /// constraints, sequences, large objects.
    #[command(after_help = EXIT_CODES)]
    Init(InitArgs),
    /// Check that a copy can run: connectivity, versions, tools, privileges, extensions,
    /// roles, target databases; with --sync, logical replication prerequisites.
    #[command(after_help = EXIT_CODES)]
    Validate(ValidateArgs),
    /// Compare source and target: rows and checksums per table in key-range chunks,
    /// sequences and schema objects.
    #[command(after_help = EXIT_CODES)]
    Verify(VerifyArgs),
    /// Run barge's control plane on this machine: the job API on loopback, jobs in SQLite
    /// under the data directory, each job's worker as a local process, and the reaper.
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
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
    /// Source URL: postgres://user:password@host:port/dbname?sslmode=verify-full. Without a
    /// database name every database is copied. Prefer the BARGE_SOURCE variable (or
    /// ~/.pgpass) so the password stays out of the process list and shell history.
    #[arg(long, env = "BARGE_SOURCE", hide_env_values = true, value_name = "URL")]
    pub source: String,
    /// Target URL. Its database receives the source database (created when missing); with
    /// --all-databases it only names the database to connect to.
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
    /// Print the plan (databases, tables with sizes and parts, what would be created) and
    /// change nothing.
    #[arg(long)]
    pub dry_run: bool,
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
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `barge validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    #[command(flatten)]
    pub selection: Selection,
    /// Also check logical replication prerequisites (wal_level, REPLICATION, free slots).
    #[arg(long)]
    pub sync: bool,
    #[command(flatten)]
    pub policy: TargetPolicy,
    #[command(flatten)]
    pub ownership: Ownership,
    /// Parallel streams a copy would use (for the time estimate).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub tools: Tools,
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
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

fn request(endpoints: &Endpoints, selection: &Selection, options: Options) -> barge_engine::Result<Request> {
    let request = Request {
        source: ConnInfo::parse(Side::Source, &endpoints.source)?,
        target: ConnInfo::parse(Side::Target, &endpoints.target)?,
        all_databases: selection.all_databases,
        filter: selection.filter(),
        options,
    };
    request.filter.compile()?;
    Ok(request)
}

fn jobs(value: Option<usize>, default: usize) -> barge_engine::Result<usize> {
    match value {
        Some(0) => Err(barge_engine::Error::Invalid("--jobs must be at least 1".into())),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

impl TryFrom<&InitArgs> for Request {
    type Error = barge_engine::Error;

    fn try_from(args: &InitArgs) -> Result<Request, Self::Error> {
        let defaults = Options::default();
        let options = Options {
            jobs: jobs(args.jobs, defaults.jobs)?,
            index_jobs: jobs(args.index_jobs, defaults.index_jobs)?,
            split_tables_larger_than: args.split_tables_larger_than,
            drop_existing: args.policy.drop_existing,
            resume: args.policy.resume,
            roles: args.ownership.roles,
            no_owner: args.ownership.no_owner,
            no_acl: args.no_acl,
            no_tablespaces: args.no_tablespaces,
            skip_large_objects: args.skip_large_objects,
            maintenance_work_mem: args.maintenance_work_mem,
            pg_bin: args.tools.pg_bin.clone(),
            sync: false,
        };
        request(&args.endpoints, &args.selection, options)
    }
}

impl TryFrom<&ValidateArgs> for Request {
    type Error = barge_engine::Error;

    fn try_from(args: &ValidateArgs) -> Result<Request, Self::Error> {
        let defaults = Options::default();
        let options = Options {
            jobs: jobs(args.jobs, defaults.jobs)?,
            drop_existing: args.policy.drop_existing,
            resume: args.policy.resume,
            roles: args.ownership.roles,
            no_owner: args.ownership.no_owner,
            pg_bin: args.tools.pg_bin.clone(),
            sync: args.sync,
            ..defaults
        };
        request(&args.endpoints, &args.selection, options)
    }
}

impl TryFrom<&VerifyArgs> for Request {
    type Error = barge_engine::Error;

    fn try_from(args: &VerifyArgs) -> Result<Request, Self::Error> {
        let defaults = Options::default();
        let options = Options { jobs: jobs(args.jobs, defaults.jobs)?, ..defaults };
        request(&args.endpoints, &args.selection, options)
    }
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
        let cli = Cli::parse_from([
            "barge",
            "init",
            "--source",
            "postgres://u@s/a",
            "--target",
            "postgres://u@t/b",
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
            "--pg-bin",
            "/opt/pg",
        ]);
        let Command::Init(args) = &cli.command else { panic!("not init") };
        let req = Request::try_from(args).unwrap();
        assert!(req.all_databases);
        assert_eq!(req.filter.include_databases, ["a*"]);
        assert_eq!(req.filter.exclude_databases, ["x"]);
        assert_eq!(req.filter.include_schemas, ["s"]);
        assert_eq!(req.filter.exclude_schemas, ["t"]);
        assert_eq!(req.filter.include_tables, ["s.*"]);
        assert_eq!(req.filter.exclude_tables, ["s.logs"]);
        assert_eq!(req.filter.schema_only_tables, ["s.big"]);
        let o = &req.options;
        assert_eq!((o.jobs, o.index_jobs, o.split_tables_larger_than), (3, 5, 1 << 30));
        assert!(o.drop_existing && o.roles && o.no_owner && o.no_acl && o.no_tablespaces && o.skip_large_objects);
        assert_eq!(o.maintenance_work_mem, Some(512 << 20));
        assert_eq!(o.pg_bin.as_deref(), Some(std::path::Path::new("/opt/pg")));
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
        assert!(Request::try_from(args).unwrap_err().to_string().contains("--jobs"));
        let cli = Cli::parse_from(["barge", "verify", "--source", "mysql://u:pw@s/a", "--target", "postgres://u@t/b"]);
        let Command::Verify(args) = &cli.command else { panic!("not verify") };
        let err = Request::try_from(args).unwrap_err().to_string();
        assert!(err.contains("source URL") && !err.contains("pw@"), "{err}");
        assert!(
            Cli::try_parse_from(["barge", "init", "--source", "x", "--target", "y", "--drop-existing", "--resume"])
                .is_err()
        );
    }
}
