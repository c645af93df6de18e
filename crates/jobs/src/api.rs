//! Request and response bodies of the coordinator API, shared by the coordinator, the CLI
//! and the worker.

use serde::{Deserialize, Serialize};

use crate::{
    job::{ChangeRecord, ChangeState, Job, JobId, JobStatus, Outcome, Timestamp},
    progress::Progress,
    spec::{Command, Filter, JobSpec, Options, SyncChange},
};

/// The header that makes `POST /jobs` idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = crate::spec::MAX_SPEC_BYTES;
/// Jobs per page of `GET /jobs` unless `limit` says otherwise, and the most it may say.
pub const PAGE_SIZE: (u32, u32) = (20, 100);

/// A job as its owner sees it: no credentials, no internals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// Its id.
    pub id: JobId,
    /// Who asked.
    pub owner: String,
    /// What it does.
    pub command: Command,
    /// Source URL, redacted.
    pub source: String,
    /// Target URL, redacted.
    pub target: String,
    /// Which databases, schemas and tables.
    pub filter: Filter,
    /// How.
    pub options: Options,
    /// Where it is.
    pub status: JobStatus,
    /// The owner asked to stop.
    pub cancel_requested: bool,
    /// The owner asked a sync job to cut over.
    #[serde(default)]
    pub cutover_requested: bool,
    /// The changes the owner asked of a sync job (pause, resume, tables) and what became
    /// of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ChangeRecord>,
    /// Current attempt (1-based).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The worker's machine.
    pub instance_id: Option<String>,
    /// The worker's latest progress.
    pub progress: Option<Progress>,
    /// When it was created.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// When its worker claimed it.
    pub started_at: Option<Timestamp>,
    /// The worker's last sign of life.
    pub heartbeat_at: Option<Timestamp>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// When the current state must have moved on.
    pub deadline: Option<Timestamp>,
    /// Why the previous attempt ended, when this one is a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// A sync job that ended with its replication objects still on the servers: a worker
    /// is removing them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cleaning_up: bool,
    /// What barge could not remove, and how to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leftover: Option<String>,
    /// The worker's size, once decided from its plan, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizing: Option<crate::sizing::InstanceSizing>,
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> Self {
        JobView {
            id: job.id.clone(),
            owner: job.owner.clone(),
            command: job.command,
            source: job.source.clone(),
            target: job.target.clone(),
            filter: job.filter.clone(),
            options: job.options.clone(),
            status: job.status.clone(),
            cancel_requested: job.cancel_requested,
            cutover_requested: job.cutover_requested,
            changes: job.changes.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            instance_id: job.instance_id.clone(),
            progress: job.progress.clone(),
            created_at: job.created_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            heartbeat_at: job.heartbeat_at,
            finished_at: job.finished_at,
            deadline: job.deadline,
            last_failure: job.last_failure.clone(),
            cleaning_up: job.state().is_terminal() && job.replication.is_some(),
            leftover: job.leftover.clone(),
            sizing: job.sizing.clone(),
        }
    }
}

/// `GET /jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobView>,
    /// Pass as `?cursor=` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Lines per `GET /jobs/{id}/logs` page: (default, maximum).
pub const LOG_PAGE_SIZE: (usize, usize) = (1000, 10_000);

/// One line of a job's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLineView {
    /// When the worker wrote it.
    pub at: Timestamp,
    /// The line: a JSON object from the worker (timestamp, level, message, fields), or
    /// plain text the worker process wrote before its logging started.
    pub text: String,
}

/// `GET /jobs/{id}/logs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsView {
    /// Lines in the order they were written.
    pub lines: Vec<LogLineView>,
    /// Pass as `?after=` for what follows (also when `lines` is empty, to follow the log).
    pub next: String,
}

/// `POST /jobs/{id}/claim`: what the worker needs to run the job, credentials included.
/// Served once, to the instance the job was launched on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The job.
    pub job: JobView,
    /// The spec with its URLs.
    pub spec: JobSpec,
    /// Not a run: the job ended with its replication objects left (a sync whose worker
    /// died); remove them (`sync stop` with the job's id) and finish.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cleanup: bool,
}

/// `POST /jobs/{id}/heartbeat` (and `/progress`) answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Stop cleanly and finish as `cancelled`.
    pub cancel_requested: bool,
    /// Cut over (sync jobs): catch up, sequences, remove replication, verify, finish.
    #[serde(default)]
    pub cutover_requested: bool,
    /// Changes the owner asked of a sync job that wait to run, oldest first: the worker
    /// runs each once and reports it (`POST /jobs/{id}/changes/{n}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<PendingChange>,
    /// The job's status as stored.
    pub status: JobStatus,
}

impl Heartbeat {
    /// The answer to a worker's report about `job`.
    pub fn of(job: &Job) -> Heartbeat {
        Heartbeat {
            cancel_requested: job.cancel_requested,
            cutover_requested: job.cutover_requested,
            changes: job
                .changes
                .iter()
                .filter(|c| c.state == ChangeState::Requested)
                .map(|c| PendingChange { id: c.id, change: c.change.clone() })
                .collect(),
            status: job.status.clone(),
        }
    }
}

/// A change a sync job's worker is to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    /// Its id: the worker reports it under this.
    pub id: u32,
    /// What to do.
    pub change: SyncChange,
}

/// Longest message a worker may report about a change, in bytes.
pub const MAX_CHANGE_MESSAGE: usize = 4096;

/// `POST /jobs/{id}/changes/{n}` body: what became of a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeReport {
    /// Whether it worked.
    pub ok: bool,
    /// What it did, or why it failed (no URL, no password: the worker redacts).
    pub message: String,
}

/// `POST /jobs/{id}/finish` body.
pub type Finish = Outcome;

/// Every error body: `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's code and message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable (`not_found`, `invalid_spec`, `limit_reached`, …).
    pub code: String,
    /// What happened and what to do.
    pub message: String,
}
