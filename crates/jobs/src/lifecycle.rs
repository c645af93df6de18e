//! Applying an event to a stored job: read, check who asks, [`Job::apply`], conditional
//! replace, and again from a fresh read when another writer got there first. Shared by the
//! coordinator, the worker routes and the reaper, so all of them follow the one table.

use crate::{
    job::{Deadlines, Event, Job, JobId, Rejection, Timestamp},
    ports::{JobStore, Launcher, StoreError},
};

/// How often a transition is recomputed after losing a race before giving up.
const ATTEMPTS: usize = 16;

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// No such job (or expired, or not the caller's).
    #[error("no such job")]
    NotFound,
    /// The job's state (or the caller) does not allow it.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The store failed, or the job kept changing under us.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies `event` to job `id`. `allow` sees the current job first and can refuse (a
/// caller who does not own it); the transition is recomputed from a fresh read whenever a
/// concurrent writer wins, so the result always follows from what is stored.
pub async fn apply<S: JobStore>(
    store: &S,
    id: &JobId,
    event: &Event,
    deadlines: Deadlines,
    allow: impl Fn(&Job) -> Result<(), ApplyError>,
) -> Result<Job, ApplyError> {
    for _ in 0..ATTEMPTS {
        let Some(job) = store.get(id).await? else {
            return Err(ApplyError::NotFound);
        };
        allow(&job)?;
        let next = job.apply(event, deadlines, Timestamp::now())?;
        match store.replace(&job, &next).await {
            Ok(()) => return Ok(next),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict.into())
}

/// Asks `launcher` for a worker for the queued `job` and records the answer: `launching`
/// with the instance, or the launch failure (`failed` for good, still `queued` when the
/// reaper may try again). A job that moved on meanwhile (cancelled, launched by a
/// concurrent call) is returned as stored; a worker started for it is then an orphan the
/// reaper terminates.
pub async fn launch<S: JobStore, L: Launcher>(
    store: &S,
    launcher: &L,
    job: &Job,
    deadlines: Deadlines,
) -> Result<Job, ApplyError> {
    let event = match launcher.launch(job).await {
        Ok(instance_id) => Event::Launched { instance_id },
        Err(e) => Event::LaunchFailed { reason: e.message, retryable: e.retryable },
    };
    match apply(store, &job.id, &event, deadlines, |_| Ok(())).await {
        Err(ApplyError::Rejected(_)) => store.get(&job.id).await?.ok_or(ApplyError::NotFound),
        other => other,
    }
}
