//! `barge serve`: barge's control plane on this machine.

use std::path::PathBuf;

use clap::Args;

pub(super) const SERVE_HELP: &str = "The API listens on 127.0.0.1 only. Callers authenticate with the bearer token in DATA_DIR/token (0600), created on first start; workers get one-job tokens. Each job's log is DATA_DIR/logs/<job>.log.\n\nExample:\n  barge serve --port 7447 --data-dir ~/.local/share/barge";

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
