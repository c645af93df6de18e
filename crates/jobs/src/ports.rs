//! The ports: what the coordinator, the worker and the reaper need from the outside world.
//! Each has a real adapter (DynamoDB/EC2/KMS/IAM on AWS; SQLite/processes/a key file/bearer
//! tokens on one machine) and an in-memory one (crate `barge-jobs-testkit`). Native `async fn` in traits:
//! the binaries pick concrete adapters, nothing needs `dyn`.

use std::future::Future;

use crate::{
    job::{Job, JobId, State, Timestamp},
    spec::Credentials,
};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The job changed since it was read (another writer won); read it again.
    #[error("the job changed concurrently")]
    Conflict,
    /// The account's active-job limit is reached.
    #[error("{limit} jobs are already active")]
    LimitReached {
        /// The limit.
        limit: u32,
    },
    /// A page cursor that this store did not make.
    #[error("invalid page cursor; start again without one")]
    BadCursor,
    /// The idempotency key belongs to a job that has expired.
    #[error("the idempotency key was used by a job that has expired; use a new key")]
    KeyExpired,
    /// The store could not be reached or failed; the message is for logs, not callers.
    #[error("job store: {0}")]
    Unavailable(String),
    /// A stored item could not be read back.
    #[error("job store: unreadable item {id}: {message}")]
    Corrupt {
        /// The item.
        id: String,
        /// Why.
        message: String,
    },
}

/// What a create did.
#[derive(Clone, Debug, PartialEq)]
pub enum Created {
    /// The job was stored.
    New(Job),
    /// A job with this id (same owner and idempotency key) already existed; here it is.
    Existing(Job),
}

impl Created {
    /// The job either way.
    pub fn job(&self) -> &Job {
        match self {
            Created::New(job) | Created::Existing(job) => job,
        }
    }
}

/// One page of an owner's jobs, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// Pass to the next call for the following page; `None` on the last page.
    pub next: Option<String>,
}

impl Page {
    /// A page from up to `limit + 1` jobs read in order: the extra one only says that more
    /// follow, and the cursor points after the last job kept.
    pub fn cut(mut jobs: Vec<Job>, limit: u32, cursor: impl Fn(&Job) -> String) -> Page {
        let more = jobs.len() > limit as usize;
        jobs.truncate(limit as usize);
        let next = if more { jobs.last().map(cursor) } else { None };
        Page { jobs, next }
    }
}

/// Where jobs live. Every write is conditional; a job's `revision` and state are the
/// condition of the write that replaces it.
pub trait JobStore: Send + Sync + 'static {
    /// Stores `job` (queued, revision 0) unless a job with its id exists, in which case
    /// that job is returned. Refuses with [`StoreError::LimitReached`] when `max_active`
    /// jobs are active, counted exactly (no scan).
    fn create(&self, job: &Job, max_active: u32) -> impl Future<Output = Result<Created, StoreError>> + Send;

    /// The job, unless it does not exist or has expired.
    fn get(&self, id: &JobId) -> impl Future<Output = Result<Option<Job>, StoreError>> + Send;

    /// Replaces the stored job with `next` if the stored one is still `current` (same
    /// revision and state). Releases active capacity when `next` is terminal.
    fn replace(&self, current: &Job, next: &Job) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The owner's jobs, newest first, `limit` per page, optionally only those in `state`;
    /// expired jobs left out.
    fn list(
        &self,
        owner: &str,
        state: Option<State>,
        limit: u32,
        after: Option<&str>,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// Every active job (for the reaper), oldest first, read from an index of active jobs.
    fn active(&self) -> impl Future<Output = Result<Vec<Job>, StoreError>> + Send;

    /// How many jobs are active, as the create limit counts them.
    fn active_count(&self) -> impl Future<Output = Result<u32, StoreError>> + Send;
}

/// A launch failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LaunchError {
    /// What happened, for the user.
    pub message: String,
    /// Capacity, throttling: try again later.
    pub retryable: bool,
}

/// A worker machine (or process) the launcher started and has not seen end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Its id.
    pub id: String,
    /// The job it was launched for (its `JobId` tag), when readable.
    pub job: Option<JobId>,
    /// When it was launched, when the launcher knows.
    pub launched_at: Option<Timestamp>,
}

/// Starts and stops workers.
pub trait Launcher: Send + Sync + 'static {
    /// Starts a worker for `job`; returns the instance (or process) id. Launching the same
    /// job and attempt twice starts one worker.
    fn launch(&self, job: &Job) -> impl Future<Output = Result<String, LaunchError>> + Send;

    /// Stops a worker (the reaper's last resort).
    fn terminate(&self, instance_id: &str) -> impl Future<Output = Result<(), LaunchError>> + Send;

    /// Every worker still running (pending or running; not stopping or gone).
    fn instances(&self) -> impl Future<Output = Result<Vec<Instance>, LaunchError>> + Send;
}

/// One line of a worker's log (a JSON object, already redacted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When it was written.
    pub at: Timestamp,
    /// The line, without its newline.
    pub text: String,
}

/// Where a worker's log goes: CloudWatch Logs (a stream per job attempt) on AWS, a file per
/// job locally. Lines arrive in batches, in order.
pub trait LogSink: Send + 'static {
    /// Stores `lines`; an error is reported once and the lines are dropped (logging never
    /// stops a job).
    fn ship(&mut self, lines: &[LogLine]) -> impl Future<Output = Result<(), String>> + Send;
}

/// A page of a job's log, and where the next one starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPage {
    /// Lines in the order they were written.
    pub lines: Vec<LogLine>,
    /// Pass as `after` to read what follows (also when `lines` is empty: then it is where
    /// new lines will appear).
    pub next: String,
}

/// A log read failure.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An `after` cursor that this reader did not make.
    #[error("invalid log cursor; start again without one")]
    BadCursor,
    /// The log backend failed.
    #[error("reading the job's log: {0}")]
    Unavailable(String),
}

/// Reads what [`LogSink`]s wrote, for `GET /jobs/{id}/logs`: users read a job's log through
/// the API, so they need no permission on the log backend itself.
pub trait LogSource: Send + Sync + 'static {
    /// Up to `limit` lines of `job` (whose current attempt is `attempt`) after the cursor
    /// `after` (from the start when `None`). A job without a log yet reads as empty.
    fn read(
        &self,
        job: &JobId,
        attempt: u32,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<LogPage, LogError>> + Send;
}

/// A sealing failure; never holds the plaintext.
#[derive(Debug, thiserror::Error)]
#[error("sealing: {0}")]
pub struct SealError(pub String);

/// Seals credentials at rest, bound to their job: sealed for one job, they do not unseal
/// for another.
pub trait Sealer: Send + Sync + 'static {
    /// Seals `credentials` for `job`.
    fn seal(&self, job: &JobId, credentials: &Credentials) -> impl Future<Output = Result<Vec<u8>, SealError>> + Send;

    /// Unseals what [`Sealer::seal`] made for the same job.
    fn unseal(&self, job: &JobId, sealed: &[u8]) -> impl Future<Output = Result<Credentials, SealError>> + Send;
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A user; sees and acts on their own jobs only.
    User {
        /// Their identity (IAM ARN, or `local`).
        owner: String,
    },
    /// A worker; acts only on the job launched on its instance.
    Worker {
        /// The instance (or process) it runs on.
        instance_id: String,
    },
}

/// Why a caller was not recognised.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials (401).
    #[error("missing credentials: {0}")]
    Missing(String),
    /// Credentials that are not valid (401).
    #[error("invalid credentials")]
    Invalid,
}

/// Recognises callers from a request's head (headers and, on Lambda, the request context).
pub trait Authenticator: Send + Sync + 'static {
    /// Who sent the request.
    fn authenticate(&self, request: &http::request::Parts) -> Result<Caller, AuthError>;
}

/// A cursor for stores that order by `(created_at, id)`: `millis.id`.
pub fn keyset_cursor(job: &Job) -> String {
    format!("{}.{}", job.created_at.millis(), job.id)
}

/// Parses [`keyset_cursor`].
pub fn parse_keyset_cursor(cursor: &str) -> Result<(i64, String), StoreError> {
    cursor
        .split_once('.')
        .and_then(|(millis, id)| Some((millis.parse().ok()?, JobId::parse(id)?.to_string())))
        .ok_or(StoreError::BadCursor)
}

/// Serde for sealed bytes: base64 in JSON.
pub mod sealed_base64 {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes base64.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    /// Reads base64.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}
