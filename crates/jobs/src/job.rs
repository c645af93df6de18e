//! A job as stored: its identity, owner, what was asked (credentials sealed), its
//! [`JobStatus`] and the one transition function, [`Job::apply`], that decides what may
//! follow what. Every store writes a transition conditionally on the status and revision it
//! was computed from, so a late writer can never resurrect a finished job.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::progress::Phase;
use crate::{
    progress::Progress,
    sizing::InstanceSizing,
    spec::{Command, Filter, JobSpec, Options, SyncChange},
};

/// How long a finished job stays readable before the store's TTL may delete it.
pub const RETENTION_SECONDS: i64 = 30 * 24 * 3600;

/// A job's id: 32 lowercase hex digits (a UUID). Random, or derived from the caller and
/// their `Idempotency-Key` so a replayed create finds the job it made.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    /// A new random id.
    pub fn random() -> JobId {
        JobId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id a create with this owner and idempotency key always gets.
    pub fn for_key(owner: &str, key: &str) -> JobId {
        let name = format!("{}\n{owner}\n{key}", owner.len());
        JobId(uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).simple().to_string())
    }

    /// Parses an id from a path; `None` for anything that is not one.
    pub fn parse(text: &str) -> Option<JobId> {
        let valid = text.len() == 32 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| JobId(text.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for JobId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        JobId::parse(&value).ok_or_else(|| "a job id is 32 lowercase hex digits".to_string())
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0)
    }
}

/// A point in time, in milliseconds since the Unix epoch; RFC 3339 in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// Now, by the system clock.
    pub fn now() -> Timestamp {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// From milliseconds since the epoch.
    pub fn from_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (DynamoDB's TTL unit).
    pub fn seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// This time plus `seconds`.
    pub fn plus_seconds(self, seconds: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(seconds.saturating_mul(1000)))
    }

    /// RFC 3339 with milliseconds, in UTC.
    pub fn rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let t = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
            .map_err(serde::de::Error::custom)?;
        let millis = t.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(millis).map(Timestamp).map_err(serde::de::Error::custom)
    }
}

/// A job's state. Each variant says who sets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobStatus {
    /// Stored, no worker yet. Set by the coordinator on create, and by the reaper when it
    /// relaunches a job whose worker died.
    Queued,
    /// A worker machine was asked for; `instance_id` is known. Set by the coordinator (or the
    /// reaper) after the launcher answered.
    Launching,
    /// The worker claimed the job. Set by the worker on claim and on each phase change.
    Running {
        /// What the worker is doing.
        phase: Phase,
    },
    /// Finished as asked. Set by the worker.
    Succeeded,
    /// Finished with an error. Set by the worker (the engine failed), the coordinator (the
    /// launch failed for good) or the reaper (the worker died and no attempts remain).
    Failed {
        /// What went wrong and what to do; never holds a credential.
        reason: String,
        /// Whether running it again may succeed (lost connection, capacity).
        retryable: bool,
    },
    /// Stopped at the owner's request. Set by the coordinator (a job that had no worker yet),
    /// the worker (it stopped the engine cleanly) or the reaper (the worker did not stop).
    Cancelled,
    /// Ran past its `max_duration` or a state's deadline. Set by the worker or the reaper.
    TimedOut,
}

/// A status without its data, for conditions, indexes and filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// See [`JobStatus::Queued`].
    Queued,
    /// See [`JobStatus::Launching`].
    Launching,
    /// See [`JobStatus::Running`].
    Running,
    /// See [`JobStatus::Succeeded`].
    Succeeded,
    /// See [`JobStatus::Failed`].
    Failed,
    /// See [`JobStatus::Cancelled`].
    Cancelled,
    /// See [`JobStatus::TimedOut`].
    TimedOut,
}

impl State {
    /// Every state.
    pub const ALL: [State; 7] = [
        State::Queued,
        State::Launching,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Cancelled,
        State::TimedOut,
    ];

    /// Its name in JSON and in stores.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Launching => "launching",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::TimedOut => "timed_out",
        }
    }

    /// Parses [`State::as_str`].
    pub fn parse(text: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Finished: nothing follows.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Cancelled | State::TimedOut)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JobStatus {
    /// The state without data.
    pub fn state(&self) -> State {
        match self {
            JobStatus::Queued => State::Queued,
            JobStatus::Launching => State::Launching,
            JobStatus::Running { .. } => State::Running,
            JobStatus::Succeeded => State::Succeeded,
            JobStatus::Failed { .. } => State::Failed,
            JobStatus::Cancelled => State::Cancelled,
            JobStatus::TimedOut => State::TimedOut,
        }
    }
}

/// How a worker says its job ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// Done as asked.
    Succeeded,
    /// The engine failed.
    Failed {
        /// What went wrong, redacted.
        reason: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// Stopped after a cancel request.
    Cancelled,
    /// Stopped at `max_duration`.
    TimedOut,
}

/// Limits that give every non-terminal state a deadline (docs/design-notes.md 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// A queued job must be launched within this many seconds.
    pub queued: i64,
    /// A launched worker must claim its job within this many seconds.
    pub launching: i64,
    /// Attempts a job gets (a dead worker is replaced while attempts remain).
    pub max_attempts: u32,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines { queued: 15 * 60, launching: 10 * 60, max_attempts: 3 }
    }
}

/// A sync job's replication objects (slots, publications, subscriptions, its login role),
/// named after `sync_id`, while they may exist; and the workers launched to remove them once
/// the job ended without its worker doing so (the worker died, or never answered).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    /// The id in their names (`barge_<id>_<n>`, `barge_<id>_login`): the job's id.
    pub sync_id: String,
    /// The worker launched to remove them, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleaner: Option<String>,
    /// When it was launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleaner_launched_at: Option<Timestamp>,
    /// Cleanup workers launched so far.
    #[serde(default)]
    pub cleanups: u32,
    /// Why the last cleanup did not remove them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// Something that happens to a job.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The coordinator (or reaper) launched a worker.
    Launched {
        /// The machine (or process) the worker runs on.
        instance_id: String,
    },
    /// The reaper launched a worker to remove an ended sync job's replication objects.
    CleanupLaunched {
        /// Its machine (or process).
        instance_id: String,
    },
    /// That worker's result: `Succeeded` when nothing is left.
    CleanupFinished(Outcome),
    /// No cleanup worker could remove them: the job records what may be left.
    CleanupAbandoned,
    /// The launch failed.
    LaunchFailed {
        /// Why, for the user.
        reason: String,
        /// Capacity and throttling: the reaper tries again.
        retryable: bool,
    },
    /// The worker on `instance_id` took the job.
    Claimed {
        /// Who claims.
        instance_id: String,
    },
    /// The worker moved to another phase.
    Phase(Phase),
    /// The worker is alive.
    Heartbeat,
    /// The worker's latest progress.
    Progress(Box<Progress>),
    /// The owner asked to stop.
    CancelRequested,
    /// The owner asked a sync job to cut over.
    CutoverRequested,
    /// The owner asked a running sync job for a change (pause, resume, tables).
    ChangeRequested(SyncChange),
    /// The worker ran change `id`: whether it worked, and what it says.
    ChangeFinished {
        /// The change's id in [`Job::changes`].
        id: u32,
        /// Whether it worked.
        ok: bool,
        /// What it did, or why it failed, for the owner.
        message: String,
    },
    /// The worker finished.
    Finished(Outcome),
    /// The reaper found the worker gone (no heartbeat, instance terminated, never claimed).
    WorkerLost {
        /// What the reaper saw.
        reason: String,
    },
    /// The reaper found the job past its deadline.
    DeadlinePassed,
    /// The coordinator decided the worker's size from its plan (`sizing.rs`); with a type,
    /// the job goes back to `queued` for a worker of that type, without using up an attempt.
    Sized(InstanceSizing),
    /// The reaper gave up waiting for the worker to stop after a cancel request (it
    /// terminates the worker).
    CancelUnanswered,
}

impl Event {
    /// A short name, for messages and tests.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Launched { .. } => "launched",
            Event::LaunchFailed { .. } => "launch_failed",
            Event::Claimed { .. } => "claimed",
            Event::Phase(_) => "phase",
            Event::Heartbeat => "heartbeat",
            Event::Progress(_) => "progress",
            Event::CancelRequested => "cancel_requested",
            Event::CutoverRequested => "cutover_requested",
            Event::ChangeRequested(_) => "change_requested",
            Event::ChangeFinished { .. } => "change_finished",
            Event::Finished(_) => "finished",
            Event::WorkerLost { .. } => "worker_lost",
            Event::DeadlinePassed => "deadline_passed",
            Event::Sized(_) => "sized",
            Event::CancelUnanswered => "cancel_unanswered",
            Event::CleanupLaunched { .. } => "cleanup_launched",
            Event::CleanupFinished(_) => "cleanup_finished",
            Event::CleanupAbandoned => "cleanup_abandoned",
        }
    }
}

/// Why an event does not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The job's state does not allow it (409).
    #[error("{0}")]
    Conflict(String),
    /// The caller is not the job's worker (403).
    #[error("{0}")]
    NotYourJob(String),
}

/// Changes a job keeps a record of, finished ones dropped oldest first.
pub const MAX_CHANGES: usize = 20;
/// Changes that may wait to run at once.
pub const MAX_WAITING_CHANGES: usize = 5;

/// A change the owner asked of a running sync job, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRecord {
    /// 1 for the job's first change, +1 for each after.
    pub id: u32,
    /// What was asked.
    pub change: SyncChange,
    /// Where it is.
    pub state: ChangeState,
    /// What the worker said of it: what it did, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was asked for.
    pub requested_at: Timestamp,
    /// When the worker reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

/// Where a change is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeState {
    /// Waiting for the worker (it runs once the sync streams).
    Requested,
    /// Done.
    Succeeded,
    /// The worker could not do it; the message says why. The sync goes on.
    Failed,
}

impl ChangeState {
    /// Whether the worker has reported it.
    pub fn is_final(self) -> bool {
        self != ChangeState::Requested
    }
}

/// A job, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Who asked (an IAM ARN on AWS, `local` for `barge serve`).
    pub owner: String,
    /// What to do.
    pub command: Command,
    /// Source URL, redacted.
    pub source: String,
    /// Target URL, redacted.
    pub target: String,
    /// Which databases, schemas and tables.
    #[serde(default)]
    pub filter: Filter,
    /// How.
    #[serde(default)]
    pub options: Options,
    /// The URLs, sealed (base64 in JSON).
    #[serde(with = "crate::ports::sealed_base64")]
    pub sealed_credentials: Vec<u8>,
    /// Where it is.
    pub status: JobStatus,
    /// The owner asked to stop; the worker sees it on its next heartbeat.
    #[serde(default)]
    pub cancel_requested: bool,
    /// When the owner first asked to stop (the reaper gives the worker a grace period).
    #[serde(default)]
    pub cancel_requested_at: Option<Timestamp>,
    /// The owner asked a sync job to cut over; the worker sees it on its next report and
    /// cuts over once the target streams.
    #[serde(default)]
    pub cutover_requested: bool,
    /// The changes the owner asked of a sync job, oldest first: those still to run, and
    /// the last [`MAX_CHANGES`] with what became of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ChangeRecord>,
    /// 1 for the first worker, +1 for each replacement.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The worker's machine (or process), once launched.
    pub instance_id: Option<String>,
    /// The worker's latest progress.
    pub progress: Option<Progress>,
    /// The create's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// Hash of what was asked, credentials excluded, to tell a replay from a reused key.
    pub request_digest: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// When the current worker claimed it.
    pub started_at: Option<Timestamp>,
    /// The current worker's last sign of life.
    pub heartbeat_at: Option<Timestamp>,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
    /// When the current state must have moved on (the reaper enforces it).
    pub deadline: Option<Timestamp>,
    /// When a store may delete it (TTL); set on a terminal state. Reads hide it after this.
    pub expires_at: Option<Timestamp>,
    /// Why the previous attempt ended, when the job was requeued for another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Whether the current attempt's worker has reported since its claim (a heartbeat, a
    /// phase, progress): until then it may claim again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reported: bool,
    /// A sync job's replication objects, while they may exist on the servers: from its
    /// worker's claim until a worker says they are gone. A job that ends with them still
    /// there stays active until a cleanup worker has removed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
    /// Set when barge gave up removing them: what may be left, and how to remove it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leftover: Option<String>,
    /// The worker's size, decided once from the first worker's plan (`sizing.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizing: Option<InstanceSizing>,
    /// Bumped by every write; writes are conditional on it.
    pub revision: u64,
}

impl Job {
    /// A new queued job for `spec`, with credentials already sealed.
    pub fn new(
        id: JobId,
        owner: &str,
        spec: &JobSpec,
        sealed_credentials: Vec<u8>,
        idempotency_key: Option<&str>,
        deadlines: Deadlines,
        now: Timestamp,
    ) -> Job {
        Job {
            id,
            owner: owner.to_string(),
            command: spec.command,
            source: spec.source_url.redacted(),
            target: spec.target_url.redacted(),
            filter: spec.filter.clone(),
            options: spec.options.clone(),
            sealed_credentials,
            status: JobStatus::Queued,
            cancel_requested: false,
            cancel_requested_at: None,
            cutover_requested: false,
            changes: Vec::new(),
            attempt: 1,
            max_attempts: deadlines.max_attempts,
            instance_id: None,
            progress: None,
            idempotency_key: idempotency_key.map(str::to_string),
            request_digest: request_digest(spec),
            created_at: now,
            updated_at: now,
            started_at: None,
            heartbeat_at: None,
            finished_at: None,
            deadline: Some(now.plus_seconds(deadlines.queued)),
            expires_at: None,
            last_failure: None,
            reported: false,
            replication: None,
            leftover: None,
            sizing: None,
            revision: 0,
        }
    }

    /// Its state.
    pub fn state(&self) -> State {
        self.status.state()
    }

    /// Not finished, or finished with replication objects still to remove: counts against
    /// the active-job limit, and the reaper looks at it.
    pub fn is_active(&self) -> bool {
        !self.state().is_terminal() || self.replication.is_some()
    }

    /// Hidden from reads: past its retention.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The one transition function: what `event` makes of this job at `now`, or why it
    /// does not apply. The result carries the next revision; stores write it only if the
    /// stored job still has this job's state and revision.
    pub fn apply(&self, event: &Event, deadlines: Deadlines, now: Timestamp) -> Result<Job, Rejection> {
        use JobStatus as S;
        let state = self.state();
        let mut next = self.clone();
        next.revision = self.revision + 1;
        next.updated_at = now;
        let conflict = |what: &str| Err(Rejection::Conflict(format!("cannot {what}: the job is {state}")));
        match (&self.status, event) {
            (S::Queued, Event::Launched { instance_id }) => {
                next.status = S::Launching;
                next.instance_id = Some(instance_id.clone());
                next.deadline = Some(now.plus_seconds(deadlines.launching));
            }
            (S::Queued, Event::LaunchFailed { reason, retryable: false }) => {
                next.finish(
                    S::Failed { reason: format!("could not launch a worker: {reason}"), retryable: false },
                    now,
                );
            }
            // The reaper launches it again; the queued deadline still bounds the retries.
            (S::Queued, Event::LaunchFailed { retryable: true, .. }) => {}
            (S::Launching, Event::Claimed { instance_id }) => {
                if self.instance_id.as_deref() != Some(instance_id) {
                    return Err(Rejection::NotYourJob("this job was launched on another instance".into()));
                }
                // Its worker names replication objects after the job: from now on they may exist.
                if crate::spec::syncs(self.command, &self.options) && next.replication.is_none() {
                    next.replication = Some(Replication { sync_id: self.id.to_string(), ..Replication::default() });
                }
                next.status = S::Running { phase: Phase::Validating };
                next.started_at = Some(now);
                next.heartbeat_at = Some(now);
                let max = i64::try_from(self.options.max_duration_seconds()).unwrap_or(i64::MAX);
                next.deadline = Some(now.plus_seconds(max));
            }
            // The same instance claims again (its first answer was lost, or unsealing failed
            // after the claim landed) until it has reported anything: nothing changes.
            (S::Running { phase: Phase::Validating }, Event::Claimed { instance_id })
                if self.instance_id.as_deref() == Some(instance_id) && !self.reported => {}
            (S::Running { .. }, Event::Claimed { .. }) => return conflict("claim it again: it was claimed"),
            (S::Running { .. }, Event::Phase(phase)) => {
                next.status = S::Running { phase: *phase };
                next.heartbeat_at = Some(now);
                next.reported = true;
            }
            // Decided once, before the worker changes anything (it asks right after planning).
            (S::Running { phase: Phase::Validating }, Event::Sized(sizing)) => {
                if self.sizing.is_some() {
                    return conflict("size it again: its worker's size was decided");
                }
                next.sizing = Some(sizing.clone());
                if sizing.instance_type.is_some() {
                    // A larger worker takes over: another attempt, but not one used up.
                    next.requeue(String::new(), deadlines, now);
                    next.max_attempts = self.max_attempts + 1;
                    next.last_failure = self.last_failure.clone();
                } else {
                    next.heartbeat_at = Some(now);
                    next.reported = true;
                }
            }
            (S::Running { .. }, Event::Heartbeat) => {
                next.heartbeat_at = Some(now);
                next.reported = true;
            }
            (S::Running { .. }, Event::Progress(progress)) => {
                if let Some(phase) = progress.phase {
                    next.status = S::Running { phase };
                }
                if progress.replication_removed {
                    next.replication = None;
                }
                next.progress = Some((**progress).clone());
                next.heartbeat_at = Some(now);
                next.reported = true;
            }
            (S::Queued, Event::CancelRequested) => next.finish(S::Cancelled, now),
            (S::Launching | S::Running { .. }, Event::CancelRequested) => {
                next.cancel_requested = true;
                next.cancel_requested_at = self.cancel_requested_at.or(Some(now));
            }
            (S::Launching | S::Running { .. }, Event::CutoverRequested) => {
                if !crate::spec::syncs(self.command, &self.options) {
                    return Err(Rejection::Conflict(format!(
                        "cannot cut over: this is a {} job; only sync jobs (sync, or init with sync) cut over",
                        self.command
                    )));
                }
                if self.cancel_requested {
                    return conflict("cut over: it is being cancelled");
                }
                next.cutover_requested = true;
            }
            (S::Queued, Event::CutoverRequested) => {
                return conflict("cut over yet: its copy has not started; ask again once it streams");
            }
            (S::Launching | S::Running { .. }, Event::ChangeRequested(change)) => {
                if !crate::spec::syncs(self.command, &self.options) {
                    return Err(Rejection::Conflict(format!(
                        "cannot {}: this is a {} job; only sync jobs (sync, or init with sync) take pause, resume and table changes",
                        change.describe(),
                        self.command
                    )));
                }
                if self.cancel_requested {
                    return conflict("change it: it is being cancelled");
                }
                if self.cutover_requested {
                    return conflict("change it: it is cutting over");
                }
                let waiting = self.changes.iter().filter(|c| c.state == ChangeState::Requested).count();
                if waiting >= MAX_WAITING_CHANGES {
                    return conflict(&format!(
                        "take another change while {waiting} wait to run; ask again when they are done"
                    ));
                }
                let id = self.changes.iter().map(|c| c.id).max().unwrap_or(0) + 1;
                next.changes.push(ChangeRecord {
                    id,
                    change: change.clone(),
                    state: ChangeState::Requested,
                    message: None,
                    requested_at: now,
                    finished_at: None,
                });
                // The oldest finished records go first; waiting ones stay.
                while next.changes.len() > MAX_CHANGES {
                    match next.changes.iter().position(|c| c.state != ChangeState::Requested) {
                        Some(oldest) => {
                            next.changes.remove(oldest);
                        }
                        None => break,
                    }
                }
            }
            (S::Queued, Event::ChangeRequested(_)) => {
                return conflict("change it yet: its copy has not started; ask again once it streams");
            }
            (S::Running { .. }, Event::ChangeFinished { id, ok, message }) => {
                let Some(record) = next.changes.iter_mut().find(|c| c.id == *id) else {
                    return conflict(&format!("finish change {id}: it has no such change"));
                };
                // Reported twice (an answer lost on the way): the first report stands.
                if record.state == ChangeState::Requested {
                    record.state = if *ok { ChangeState::Succeeded } else { ChangeState::Failed };
                    record.message = Some(message.clone());
                    record.finished_at = Some(now);
                }
                next.heartbeat_at = Some(now);
                next.reported = true;
            }
            (S::Launching | S::Running { .. }, Event::CancelUnanswered) => {
                if !self.cancel_requested {
                    return conflict("end it as cancelled: no cancel was requested");
                }
                next.finish(S::Cancelled, now);
            }
            // A failure that may pass on another machine gets another attempt while any
            // remain; the reaper (or the coordinator, at once) launches it.
            (S::Running { .. }, Event::Finished(Outcome::Failed { reason, retryable: true }))
                if !self.cancel_requested && self.attempt < self.max_attempts =>
            {
                next.requeue(reason.clone(), deadlines, now);
            }
            (S::Running { .. }, Event::Finished(outcome)) => {
                let status = match outcome {
                    Outcome::Succeeded => S::Succeeded,
                    Outcome::Failed { reason, retryable } => {
                        S::Failed { reason: reason.clone(), retryable: *retryable }
                    }
                    Outcome::Cancelled => S::Cancelled,
                    Outcome::TimedOut => S::TimedOut,
                };
                // A sync succeeds by its cutover, which removes the replication.
                if *outcome == Outcome::Succeeded {
                    next.replication = None;
                }
                next.finish(status, now);
            }
            (S::Launching | S::Running { .. }, Event::WorkerLost { reason }) => {
                if self.cancel_requested {
                    next.finish(S::Cancelled, now);
                } else if self.attempt < self.max_attempts {
                    next.requeue(format!("the worker was lost: {reason}"), deadlines, now);
                } else {
                    let reason = format!("the worker was lost ({reason}) on each of {} attempts", self.attempt);
                    next.finish(S::Failed { reason, retryable: true }, now);
                }
            }
            (S::Queued | S::Launching | S::Running { .. }, Event::DeadlinePassed) => {
                if self.deadline.is_none_or(|deadline| deadline > now) {
                    return conflict("time it out before its deadline");
                }
                if self.cancel_requested {
                    next.finish(S::Cancelled, now);
                } else {
                    next.finish(S::TimedOut, now);
                }
            }
            (status, Event::CleanupLaunched { instance_id }) if status.state().is_terminal() => {
                let Some(replication) = next.replication.as_mut() else {
                    return conflict("clean up: nothing is left to remove");
                };
                replication.cleaner = Some(instance_id.clone());
                replication.cleaner_launched_at = Some(now);
                replication.cleanups += 1;
            }
            (status, Event::CleanupFinished(outcome)) if status.state().is_terminal() => {
                let Some(replication) = next.replication.as_mut() else {
                    return conflict("finish a cleanup: nothing is left to remove");
                };
                match outcome {
                    Outcome::Succeeded => next.replication = None,
                    Outcome::Failed { reason, .. } => {
                        replication.cleaner = None;
                        replication.last_failure = Some(reason.clone());
                    }
                    Outcome::Cancelled | Outcome::TimedOut => replication.cleaner = None,
                }
            }
            (status, Event::CleanupAbandoned) if status.state().is_terminal() => {
                let Some(replication) = next.replication.take() else {
                    return conflict("give up a cleanup: nothing is left to remove");
                };
                let id = &replication.sync_id;
                next.leftover = Some(format!(
                    "replication objects may be left: slots and publications barge_{id}_* and role barge_{id}_login on the source, subscriptions barge_{id}_* on the target (an inactive slot keeps WAL until the source's disk is full); remove them with `barge sync stop --sync-id {id}`{}",
                    replication.last_failure.map(|f| format!(" (the last cleanup said: {f})")).unwrap_or_default()
                ));
            }
            (status, event) if status.state().is_terminal() => {
                let done = format!("the job already finished: it {}", finished_words(status));
                return Err(Rejection::Conflict(match event {
                    Event::CancelRequested => format!("cannot cancel: {done}"),
                    Event::CutoverRequested => format!("cannot cut over: {done}"),
                    Event::ChangeRequested(change) => format!("cannot {}: {done}", change.describe()),
                    _ => done,
                }));
            }
            (_, event) => return conflict(&format!("apply {}", event.name().replace('_', " "))),
        }
        Ok(next)
    }

    /// Back to `queued` for the next attempt, remembering why this one ended.
    fn requeue(&mut self, reason: String, deadlines: Deadlines, now: Timestamp) {
        self.status = JobStatus::Queued;
        self.attempt += 1;
        self.instance_id = None;
        self.started_at = None;
        self.heartbeat_at = None;
        self.reported = false;
        self.deadline = Some(now.plus_seconds(deadlines.queued));
        self.last_failure = Some(reason);
    }

    fn finish(&mut self, status: JobStatus, now: Timestamp) {
        self.status = status;
        self.finished_at = Some(now);
        self.deadline = None;
        self.expires_at = Some(now.plus_seconds(RETENTION_SECONDS));
    }
}

fn finished_words(status: &JobStatus) -> &'static str {
    match status.state() {
        State::Succeeded => "succeeded",
        State::Failed => "failed",
        State::Cancelled => "was cancelled",
        State::TimedOut => "timed out",
        _ => "is active",
    }
}

/// What a create asked for, credentials excluded but their redacted form included: two
/// creates with the same idempotency key must have the same digest.
pub fn request_digest(spec: &JobSpec) -> String {
    let shape = serde_json::json!({
        "command": spec.command,
        "source": spec.source_url.redacted(),
        "target": spec.target_url.redacted(),
        "filter": spec.filter,
        "options": spec.options,
    });
    let digest = Sha256::digest(shape.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ConnUrl;

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn spec() -> JobSpec {
        JobSpec {
            command: Command::Init,
            source_url: ConnUrl::new("postgres://u:pw@a/db"),
            target_url: ConnUrl::new("postgres://u:pw@b/db"),
            filter: Filter::default(),
            options: Options::default(),
        }
    }

    fn job_in(status: JobStatus, cancel_requested: bool) -> Job {
        let mut job = Job::new(JobId::random(), "alice", &spec(), vec![1, 2, 3], None, Deadlines::default(), NOW);
        job.instance_id = (!matches!(status, JobStatus::Queued)).then(|| "i-1".to_string());
        job.cancel_requested = cancel_requested;
        job.status = status;
        job.deadline = Some(NOW.plus_seconds(-1));
        job
    }

    /// What the table expects.
    #[derive(Debug, PartialEq)]
    enum To {
        State(State),
        Same,
        CancelFlag,
        Requeued,
        Conflict,
        Forbidden,
    }

    fn events() -> Vec<Event> {
        vec![
            Event::Launched { instance_id: "i-2".into() },
            Event::LaunchFailed { reason: "no capacity".into(), retryable: true },
            Event::LaunchFailed { reason: "bad template".into(), retryable: false },
            Event::Claimed { instance_id: "i-1".into() },
            Event::Claimed { instance_id: "i-9".into() },
            Event::Phase(Phase::Copying),
            Event::Heartbeat,
            Event::Progress(Box::default()),
            Event::CancelRequested,
            Event::Finished(Outcome::Succeeded),
            Event::Finished(Outcome::Failed { reason: "x".into(), retryable: false }),
            Event::Finished(Outcome::Cancelled),
            Event::Finished(Outcome::TimedOut),
            Event::WorkerLost { reason: "no heartbeat".into() },
            Event::DeadlinePassed,
            Event::CancelUnanswered,
            Event::Finished(Outcome::Failed { reason: "connection lost".into(), retryable: true }),
            Event::CutoverRequested,
            Event::Sized(InstanceSizing { instance_type: Some("c7g.xlarge".into()), reason: "r".into() }),
            Event::ChangeRequested(SyncChange::Pause {}),
            Event::ChangeFinished { id: 1, ok: true, message: "paused".into() },
        ]
    }

    fn statuses() -> Vec<JobStatus> {
        vec![
            JobStatus::Queued,
            JobStatus::Launching,
            JobStatus::Running { phase: Phase::Schema },
            JobStatus::Succeeded,
            JobStatus::Failed { reason: "x".into(), retryable: true },
            JobStatus::Cancelled,
            JobStatus::TimedOut,
        ]
    }

    /// The whole table: every state against every event.
    fn expected(state: State, event: usize) -> To {
        use To::{CancelFlag, Conflict, Forbidden, Requeued, Same};
        let to = To::State;
        let row: [To; 21] = match state {
            State::Queued => [
                to(State::Launching),
                Same,
                to(State::Failed),
                Conflict,
                Conflict,
                Conflict,
                Conflict,
                Conflict,
                to(State::Cancelled),
                Conflict,
                Conflict,
                Conflict,
                Conflict,
                Conflict,
                to(State::TimedOut),
                Conflict,
                Conflict,
                Conflict,
                Conflict,
                Conflict,
                Conflict,
            ],
            State::Launching => [
                Conflict,
                Conflict,
                Conflict,
                to(State::Running),
                Forbidden,
                Conflict,
                Conflict,
                Conflict,
                CancelFlag,
                Conflict,
                Conflict,
                Conflict,
                Conflict,
                Requeued,
                to(State::TimedOut),
                Conflict,
                Conflict,
                Conflict,
                Conflict,
                Conflict,
                Conflict,
            ],
            State::Running => [
                Conflict,
                Conflict,
                Conflict,
                Conflict,
                Conflict,
                Same,
                Same,
                Same,
                CancelFlag,
                to(State::Succeeded),
                to(State::Failed),
                to(State::Cancelled),
                to(State::TimedOut),
                Requeued,
                to(State::TimedOut),
                Conflict,
                Requeued,
                Conflict,
                Conflict,
                Conflict,
                Conflict,
            ],
            State::Succeeded | State::Failed | State::Cancelled | State::TimedOut => std::array::from_fn(|_| Conflict),
        };
        row.into_iter().nth(event).unwrap_or(Conflict)
    }

    #[test]
    fn sync_jobs_take_a_cutover_request_once_started() {
        let mut job = job_in(JobStatus::Running { phase: Phase::Streaming }, false);
        job.command = Command::Sync;
        let asked = job.apply(&Event::CutoverRequested, Deadlines::default(), NOW).unwrap();
        assert!(asked.cutover_requested);
        assert_eq!(asked.state(), State::Running);
        let again = asked.apply(&Event::CutoverRequested, Deadlines::default(), NOW).unwrap();
        assert!(again.cutover_requested, "asking twice is harmless");
        job.command = Command::Init;
        job.options.sync = true;
        assert!(job.apply(&Event::CutoverRequested, Deadlines::default(), NOW).unwrap().cutover_requested);
        job.status = JobStatus::Queued;
        assert!(matches!(job.apply(&Event::CutoverRequested, Deadlines::default(), NOW), Err(Rejection::Conflict(_))));
        let mut cancelling = job_in(JobStatus::Running { phase: Phase::Streaming }, true);
        cancelling.command = Command::Sync;
        assert!(matches!(
            cancelling.apply(&Event::CutoverRequested, Deadlines::default(), NOW),
            Err(Rejection::Conflict(_))
        ));
    }

    #[test]
    fn sync_jobs_take_changes_that_their_worker_reports_once() {
        let mut job = job_in(JobStatus::Running { phase: Phase::Streaming }, false);
        let pause = Event::ChangeRequested(SyncChange::Pause {});
        // Only a sync job takes changes
        assert!(
            matches!(job.apply(&pause, Deadlines::default(), NOW), Err(Rejection::Conflict(m)) if m.contains("only sync jobs"))
        );
        job.command = Command::Sync;
        let asked = job.apply(&pause, Deadlines::default(), NOW).unwrap();
        let add = Event::ChangeRequested(SyncChange::AddTables { tables: vec!["b.*".into()] });
        let asked = asked.apply(&add, Deadlines::default(), NOW).unwrap();
        assert_eq!(
            asked.changes.iter().map(|c| (c.id, c.state)).collect::<Vec<_>>(),
            [(1, ChangeState::Requested), (2, ChangeState::Requested)]
        );
        // The worker reports each; a second report of the same change changes nothing
        let done = Event::ChangeFinished { id: 2, ok: false, message: "no table matches b.*".into() };
        let reported = asked.apply(&done, Deadlines::default(), NOW).unwrap();
        assert_eq!(reported.changes[1].state, ChangeState::Failed);
        assert_eq!(reported.changes[1].message.as_deref(), Some("no table matches b.*"));
        let ok = Event::ChangeFinished { id: 2, ok: true, message: "added".into() };
        assert_eq!(reported.apply(&ok, Deadlines::default(), NOW).unwrap().changes[1].state, ChangeState::Failed);
        assert!(matches!(
            reported.apply(
                &Event::ChangeFinished { id: 9, ok: true, message: String::new() },
                Deadlines::default(),
                NOW
            ),
            Err(Rejection::Conflict(_))
        ));
        // A bounded number wait; finished ones are forgotten oldest first
        let mut busy = reported;
        for _ in 0..(MAX_WAITING_CHANGES - 1) {
            busy = busy.apply(&pause, Deadlines::default(), NOW).unwrap();
        }
        assert!(
            matches!(busy.apply(&pause, Deadlines::default(), NOW), Err(Rejection::Conflict(m)) if m.contains("wait to run"))
        );
        let mut many = job.clone();
        for i in 0..(MAX_CHANGES as u32 + 5) {
            many = many.apply(&pause, Deadlines::default(), NOW).unwrap();
            many = many
                .apply(
                    &Event::ChangeFinished { id: i + 1, ok: true, message: "paused".into() },
                    Deadlines::default(),
                    NOW,
                )
                .unwrap();
        }
        assert_eq!(many.changes.len(), MAX_CHANGES);
        assert_eq!(many.changes[0].id, 6, "the oldest went first");
        // Not before the copy starts, nor while cancelling or cutting over
        job.status = JobStatus::Queued;
        assert!(matches!(job.apply(&pause, Deadlines::default(), NOW), Err(Rejection::Conflict(_))));
        let mut cutting = job_in(JobStatus::Running { phase: Phase::Streaming }, false);
        cutting.command = Command::Sync;
        cutting.cutover_requested = true;
        assert!(
            matches!(cutting.apply(&pause, Deadlines::default(), NOW), Err(Rejection::Conflict(m)) if m.contains("cutting over"))
        );
    }

    #[test]
    fn a_job_is_sized_once_while_its_worker_validates_and_a_relaunch_uses_no_attempt() {
        let relaunch = InstanceSizing { instance_type: Some("c7g.xlarge".into()), reason: "more CPUs".into() };
        let keep = InstanceSizing { instance_type: None, reason: "enough".into() };
        let mut job = job_in(JobStatus::Running { phase: Phase::Validating }, false);
        job.deadline = Some(NOW.plus_seconds(3600));
        job.last_failure = Some("the worker was lost: gone".into());
        // Relaunched: queued again for a worker of that type, an attempt more allowed
        let next = job.apply(&Event::Sized(relaunch.clone()), Deadlines::default(), NOW).unwrap();
        assert_eq!((next.state(), next.attempt, next.max_attempts), (State::Queued, 2, 4));
        assert_eq!((next.instance_id.as_deref(), next.sizing.as_ref()), (None, Some(&relaunch)));
        assert_eq!(next.last_failure, job.last_failure, "a relaunch is not a failure");
        assert_eq!(next.deadline, Some(NOW.plus_seconds(Deadlines::default().queued)));
        // Kept: recorded, still running
        let kept = job.apply(&Event::Sized(keep.clone()), Deadlines::default(), NOW).unwrap();
        assert_eq!((kept.state(), kept.attempt, kept.sizing.as_ref()), (State::Running, 1, Some(&keep)));
        // Once only, and only before the copy starts
        assert!(matches!(
            kept.apply(&Event::Sized(relaunch.clone()), Deadlines::default(), NOW),
            Err(Rejection::Conflict(_))
        ));
        let copying = job_in(JobStatus::Running { phase: Phase::Copying }, false);
        assert!(matches!(
            copying.apply(&Event::Sized(relaunch), Deadlines::default(), NOW),
            Err(Rejection::Conflict(_))
        ));
    }

    #[test]
    fn a_retryable_failure_is_retried_while_attempts_remain() {
        let failed = Event::Finished(Outcome::Failed { reason: "connection lost".into(), retryable: true });
        let mut job = job_in(JobStatus::Running { phase: Phase::Copying }, false);
        let next = job.apply(&failed, Deadlines::default(), NOW).unwrap();
        assert_eq!((next.state(), next.attempt, next.instance_id.as_deref()), (State::Queued, 2, None));
        assert_eq!(next.last_failure.as_deref(), Some("connection lost"));
        assert!(next.deadline.is_some_and(|at| at > NOW), "a requeued job has a launch deadline");
        job.attempt = job.max_attempts;
        let last = job.apply(&failed, Deadlines::default(), NOW).unwrap();
        assert_eq!(last.status, JobStatus::Failed { reason: "connection lost".into(), retryable: true });
        job.attempt = 1;
        job.cancel_requested = true;
        assert_eq!(job.apply(&failed, Deadlines::default(), NOW).unwrap().state(), State::Failed);
    }

    #[test]
    fn every_state_against_every_event() {
        for status in statuses() {
            for (i, event) in events().iter().enumerate() {
                let job = job_in(status.clone(), false);
                let got = match job.apply(event, Deadlines::default(), NOW) {
                    Err(Rejection::Conflict(message)) => {
                        assert!(!message.is_empty());
                        To::Conflict
                    }
                    Err(Rejection::NotYourJob(_)) => To::Forbidden,
                    Ok(next) => {
                        assert_eq!(next.revision, job.revision + 1, "every write bumps the revision");
                        if next.cancel_requested && !job.cancel_requested {
                            To::CancelFlag
                        } else if next.attempt > job.attempt {
                            assert_eq!(next.state(), State::Queued);
                            To::Requeued
                        } else if next.state() == job.state() {
                            To::Same
                        } else {
                            To::State(next.state())
                        }
                    }
                };
                assert_eq!(got, expected(status.state(), i), "{} + {}", status.state(), event.name());
            }
        }
    }

    #[test]
    fn terminal_transitions_set_retention_and_clear_the_deadline() {
        for status in statuses() {
            for event in events() {
                let job = job_in(status.clone(), false);
                if let Ok(next) = job.apply(&event, Deadlines::default(), NOW) {
                    if next.state().is_terminal() {
                        assert_eq!(next.finished_at, Some(NOW));
                        assert_eq!(next.expires_at, Some(NOW.plus_seconds(RETENTION_SECONDS)));
                        assert_eq!(next.deadline, None);
                    } else {
                        assert!(next.deadline.is_some(), "every active state has a deadline: {:?}", next.status);
                        assert_eq!(next.expires_at, None);
                    }
                }
            }
        }
    }

    #[test]
    fn a_cancel_requested_job_whose_worker_is_lost_is_cancelled_not_relaunched() {
        let job = job_in(JobStatus::Running { phase: Phase::Copying }, true);
        let next = job.apply(&Event::WorkerLost { reason: "gone".into() }, Deadlines::default(), NOW).unwrap();
        assert_eq!(next.status, JobStatus::Cancelled);
        let next = job.apply(&Event::DeadlinePassed, Deadlines::default(), NOW).unwrap();
        assert_eq!(next.status, JobStatus::Cancelled);
    }

    #[test]
    fn an_unanswered_cancel_ends_the_job_as_cancelled() {
        for status in [JobStatus::Launching, JobStatus::Running { phase: Phase::Copying }] {
            let job = job_in(status, false);
            let flagged = job.apply(&Event::CancelRequested, Deadlines::default(), NOW).unwrap();
            assert_eq!(flagged.cancel_requested_at, Some(NOW));
            let again = flagged.apply(&Event::CancelRequested, Deadlines::default(), NOW.plus_seconds(5)).unwrap();
            assert_eq!(again.cancel_requested_at, Some(NOW), "the first request's time is kept");
            let ended = again.apply(&Event::CancelUnanswered, Deadlines::default(), NOW.plus_seconds(200)).unwrap();
            assert_eq!(ended.status, JobStatus::Cancelled);
        }
    }

    #[test]
    fn attempts_run_out() {
        let mut job = job_in(JobStatus::Launching, false);
        job.attempt = job.max_attempts;
        let next = job.apply(&Event::WorkerLost { reason: "never booted".into() }, Deadlines::default(), NOW).unwrap();
        match next.status {
            JobStatus::Failed { reason, retryable: true } => assert!(reason.contains("never booted"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deadlines_are_only_enforced_once_passed() {
        let mut job = job_in(JobStatus::Running { phase: Phase::Copying }, false);
        job.deadline = Some(NOW.plus_seconds(60));
        assert!(matches!(job.apply(&Event::DeadlinePassed, Deadlines::default(), NOW), Err(Rejection::Conflict(_))));
        let claimed = job_in(JobStatus::Launching, false)
            .apply(&Event::Claimed { instance_id: "i-1".into() }, Deadlines::default(), NOW)
            .unwrap();
        assert_eq!(claimed.deadline, Some(NOW.plus_seconds(24 * 3600)), "max_duration bounds a running job");
    }

    #[test]
    fn statuses_serialise_tagged() {
        let json = serde_json::to_value(JobStatus::Running { phase: Phase::CuttingOver }).unwrap();
        assert_eq!(json, serde_json::json!({"state": "running", "phase": "cutting_over"}));
        let json = serde_json::to_value(JobStatus::Failed { reason: "r".into(), retryable: true }).unwrap();
        assert_eq!(json, serde_json::json!({"state": "failed", "reason": "r", "retryable": true}));
        for state in State::ALL {
            assert_eq!(State::parse(state.as_str()), Some(state));
        }
        let t = Timestamp::from_millis(1_700_000_000_123);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2023-11-14T22:13:20.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }

    #[test]
    fn ids_from_keys_are_stable_and_owner_scoped() {
        assert_eq!(JobId::for_key("alice", "k1"), JobId::for_key("alice", "k1"));
        assert_ne!(JobId::for_key("alice", "k1"), JobId::for_key("bob", "k1"));
        assert_ne!(JobId::for_key("a\n1", "k"), JobId::for_key("a", "1\nk"));
        assert!(JobId::parse(JobId::random().as_str()).is_some());
        assert!(JobId::parse("../etc").is_none());
        assert!(JobId::parse("counter#active").is_none());
    }
}
