//! Command-line arguments: clap structs whose doc comments are `--help`, one module per
//! command, lowered once into a job spec plus what only this machine honours
//! ([`lower::Lowered`]).

// Help texts several commands share; macros because `concat!` needs literals.
macro_rules! exit_codes {
    () => {
        "Exit codes: 0 success; 1 the copy failed, verify found differences or validate found a failing check; 2 bad usage (flags, URLs, filters); 3 the job was cancelled; 4 the job timed out (its --max-duration); 5 the barge API could not be reached; 130 interrupted (a remote job keeps running: `barge jobs watch`)."
    };
}

macro_rules! remote_help {
    () => {
        "Remote jobs: with --remote (the default once `barge configure` set an endpoint, or with --api/BARGE_API) the command is submitted as a job to the barge API and runs on a worker close to the databases; this terminal watches it (Ctrl-C detaches, the job keeps running). Requests to AWS are signed with your AWS credentials (the standard chain: environment, profiles, SSO, instance roles); requests to `barge serve` carry the token it wrote."
    };
}

mod configure;
mod flags;
mod init;
mod jobs;
mod lower;
mod serve;
mod sync;
mod validate;
mod verify;

pub use configure::ConfigureArgs;
pub use flags::Run;
pub use init::InitArgs;
pub use jobs::JobsCommand;
pub use lower::Lower;
pub use serve::ServeArgs;
pub use sync::{CutoverArgs, SyncAction, SyncApplyDdlArgs, SyncPauseArgs, SyncStatusArgs, SyncStopArgs, SyncTarget};
pub use validate::ValidateArgs;
pub use verify::VerifyArgs;

use clap::{Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = exit_codes!();

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
    #[command(after_help = init::INIT_HELP)]
    Init(InitArgs),
    /// Check that a copy can run: connectivity, versions, tools, privileges, extensions,
    /// roles, target databases; with --sync, logical replication prerequisites.
    #[command(after_help = validate::VALIDATE_HELP)]
    Validate(ValidateArgs),
    /// Compare source and target: rows and checksums per table in key-range chunks,
    /// sequences and schema objects.
    #[command(after_help = verify::VERIFY_HELP)]
    Verify(VerifyArgs),
    /// Keep the target in sync by logical replication until `barge cutover`: `barge sync
    /// start` (= `barge init --sync`), `barge sync status` (lag), `barge sync stop` (remove it).
    #[command(subcommand, after_help = sync::SYNC_HELP)]
    Sync(SyncAction),
    /// Switch over to the target: wait until it has applied everything the source had written
    /// (zero lag once writes stopped), copy sequence positions, remove the subscription, slot
    /// and publication, and verify.
    #[command(after_help = sync::CUTOVER_HELP)]
    Cutover(CutoverArgs),
    /// Run barge's control plane on this machine: the job API on loopback, jobs in SQLite
    /// under the data directory, each job's worker as a local process, and the reaper.
    #[command(after_help = serve::SERVE_HELP)]
    Serve(ServeArgs),
    /// List, show, watch, cancel remote jobs and read their logs.
    #[command(subcommand, after_help = jobs::JOBS_HELP)]
    Jobs(JobsCommand),
    /// Set the barge API endpoint of a profile: given, or read from a deployed stack's
    /// outputs (CloudFormation).
    #[command(after_help = configure::CONFIGURE_HELP)]
    Configure(ConfigureArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Example:\n  barge completions bash > ~/.local/share/bash-completion/completions/barge")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
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
mod tests;
