//! The coordinator: barge's job API as one [`axum::Router`] over the ports of `barge-jobs`.
//! The Lambda (`src/main.rs`) runs it behind API Gateway with DynamoDB, KMS and IAM; `barge
//! serve` runs the same router on loopback with SQLite, a key file and bearer tokens.
//!
//! Routes (`{id}` is a job id):
//! - users: `POST /jobs`, `GET /jobs`, `GET /jobs/{id}`, `POST /jobs/{id}/cancel`,
//!   `POST /jobs/{id}/cutover`,
//!   `GET /jobs/{id}/logs?after=&limit=`;
//! - the job's own worker: `POST /jobs/{id}/claim`, `/heartbeat`, `/progress`, `/size`,
//!   `/finish`.

mod error;
#[cfg(feature = "lambda")]
pub mod iam;
mod routes;

use std::sync::Arc;

use barge_jobs::{Authenticator, Deadlines, JobStore, Launcher, LogSource, Reach, Sealer};

pub use error::ApiError;
pub use routes::router;

/// The adapters a coordinator runs with.
pub trait Ports: Send + Sync + 'static {
    /// Where jobs live.
    type Store: JobStore;
    /// Starts workers.
    type Launcher: Launcher;
    /// Seals credentials.
    type Sealer: Sealer;
    /// Recognises callers.
    type Auth: Authenticator;
    /// Reads workers' logs.
    type Logs: LogSource;
}

/// Limits the coordinator enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Jobs that may be active at once across the account; more get 429.
    pub max_active_jobs: u32,
    /// Deadlines and attempts of every job.
    pub deadlines: Deadlines,
    /// How far a job's worker may reach: a job whose URL names what its worker must not
    /// connect to is refused with 400 ([`barge_jobs::Reach`]).
    pub reach: Reach,
    /// Instance types a job may ask for; empty: any (a deployment's IAM policy limits them
    /// too).
    pub instance_types: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_active_jobs: 20,
            deadlines: Deadlines::default(),
            reach: Reach::Remote,
            instance_types: Vec::new(),
        }
    }
}

impl Config {
    /// From `MAX_ACTIVE_JOBS`, `WORKER_ALLOWED_INSTANCE_TYPES` (comma-separated), `WORKER_REACH`
    /// (`remote`, the default, or `anywhere`) and the deadline variables of
    /// [`Policy::from_vars`](barge_jobs::reaper::Policy::from_vars) (each optional), given as
    /// `(name, value)` pairs so it reads the environment or a test's map.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Config, String> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut config =
            Config { deadlines: barge_jobs::reaper::Policy::from_vars(vars.clone())?.deadlines, ..Config::default() };
        if let Some((_, value)) = vars.iter().find(|(name, _)| name == "MAX_ACTIVE_JOBS") {
            let limit: u32 =
                value.trim().parse().map_err(|_| format!("MAX_ACTIVE_JOBS must be a whole number, not {value:?}"))?;
            config.max_active_jobs = limit.max(1);
        }
        if let Some((_, value)) = vars.iter().find(|(name, _)| name == "WORKER_ALLOWED_INSTANCE_TYPES") {
            config.instance_types = value.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
        }
        if let Some((_, value)) = vars.iter().find(|(name, _)| name == "WORKER_REACH") {
            config.reach = match value.trim() {
                "" | "remote" => Reach::Remote,
                "anywhere" => Reach::Anywhere,
                other => return Err(format!("WORKER_REACH must be remote or anywhere, not {other:?}")),
            };
        }
        Ok(config)
    }
}

/// A coordinator: its adapters and limits. Cheap to share (`Arc`).
pub struct App<P: Ports> {
    /// Where jobs live.
    pub store: P::Store,
    /// Starts workers.
    pub launcher: P::Launcher,
    /// Seals credentials.
    pub sealer: P::Sealer,
    /// Recognises callers.
    pub auth: P::Auth,
    /// Reads workers' logs.
    pub logs: P::Logs,
    /// Limits.
    pub config: Config,
}

impl<P: Ports> App<P> {
    /// A coordinator over these adapters.
    pub fn new(
        store: P::Store,
        launcher: P::Launcher,
        sealer: P::Sealer,
        auth: P::Auth,
        logs: P::Logs,
        config: Config,
    ) -> Arc<Self> {
        Arc::new(App { store, launcher, sealer, auth, logs, config })
    }
}
