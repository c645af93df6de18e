//! The reaper: what happens to jobs whose worker died, never came, will not stop or ran too
//! long, and to workers nobody needs. [`decide`] looks at one job; [`sweep`] applies the
//! decisions to every active job and terminates orphan instances. It runs every minute (an
//! EventBridge schedule on AWS, a task in `barge serve`). Every decision is a conditional
//! transition re-checked against a fresh read, so the reaper and a late worker never both win.

use crate::{
    job::{Deadlines, Event, Job, JobId, JobStatus, Rejection, Timestamp},
    lifecycle::{self, ApplyError},
    ports::{JobStore, Launcher, StoreError},
};

/// How patient the reaper is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A running job whose worker was silent this long (seconds) lost its worker.
    pub heartbeat_timeout: i64,
    /// A worker gets this long (seconds) to stop after a cancel request.
    pub cancel_grace: i64,
    /// A worker whose job ended gets this long (seconds) to ship its last log lines and stop
    /// by itself before it counts as an orphan (the worker waits at most 30 s for its logs).
    pub finish_grace: i64,
    /// A running sync job gets this long (seconds) past its deadline before it is timed out
    /// and its instance terminated: its worker stops at the deadline and removes the
    /// replication slot and publication on the source, which would otherwise keep WAL
    /// until the source's disk is full.
    pub sync_cleanup_grace: i64,
    /// An instance younger than this (seconds) is never an orphan: its launch may not be
    /// recorded on its job yet (the coordinator writes the instance id after RunInstances
    /// answers).
    pub launch_grace: i64,
    /// Deadlines and attempts of every job.
    pub deadlines: Deadlines,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            heartbeat_timeout: 120,
            cancel_grace: 120,
            finish_grace: 60,
            sync_cleanup_grace: 300,
            launch_grace: 180,
            deadlines: Deadlines::default(),
        }
    }
}

impl Policy {
    /// From `HEARTBEAT_TIMEOUT_SECONDS`, `CANCEL_GRACE_SECONDS`, `LAUNCH_TIMEOUT_SECONDS` and
    /// `MAX_ATTEMPTS` (each optional; others ignored), given as `(name, value)` pairs so it
    /// reads the environment or a test's map. The coordinator and the reaper read the same.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Policy, String> {
        let mut policy = Policy::default();
        for (name, value) in vars {
            let number =
                || value.trim().parse::<u32>().map_err(|_| format!("{name} must be a whole number, not {value:?}"));
            match name.as_str() {
                "HEARTBEAT_TIMEOUT_SECONDS" => policy.heartbeat_timeout = i64::from(number()?.max(5)),
                "CANCEL_GRACE_SECONDS" => policy.cancel_grace = i64::from(number()?.max(5)),
                "LAUNCH_TIMEOUT_SECONDS" => policy.deadlines.launching = i64::from(number()?.max(60)),
                "MAX_ATTEMPTS" => policy.deadlines.max_attempts = number()?.clamp(1, 10),
                _ => {}
            }
        }
        Ok(policy)
    }
}

/// What the reaper does about one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: the job is healthy.
    Wait,
    /// Queued without a worker (a retryable launch failure, a lost worker): launch one.
    Launch,
    /// The worker is gone or never claimed: a new attempt, or `failed` when none remain.
    WorkerLost(String),
    /// The cancel request went unanswered: `cancelled`.
    CancelUnanswered,
    /// Past its deadline: `timed_out`.
    TimedOut,
    /// Ended with its replication objects left: launch a worker to remove them.
    LaunchCleanup,
    /// Every cleanup worker failed: record what is left.
    AbandonCleanup,
}

impl Decision {
    fn event(&self) -> Option<Event> {
        match self {
            Decision::Wait | Decision::Launch => None,
            Decision::WorkerLost(reason) => Some(Event::WorkerLost { reason: reason.clone() }),
            Decision::CancelUnanswered => Some(Event::CancelUnanswered),
            Decision::TimedOut => Some(Event::DeadlinePassed),
            Decision::LaunchCleanup => None,
            Decision::AbandonCleanup => Some(Event::CleanupAbandoned),
        }
    }
}

fn passed(at: Option<Timestamp>, seconds: i64, now: Timestamp) -> bool {
    at.is_some_and(|at| at.plus_seconds(seconds) <= now)
}

/// What the reaper does about `job` at `now`.
pub fn decide(job: &Job, policy: &Policy, now: Timestamp) -> Decision {
    if job.state().is_terminal() {
        return cleanup_decision(job, policy, now);
    }
    let overdue = job.deadline.is_some_and(|deadline| deadline <= now);
    let cleanup_grace = if crate::spec::syncs(job.command, &job.options) { policy.sync_cleanup_grace } else { 0 };
    let overdue_running = job.deadline.is_some_and(|deadline| deadline.plus_seconds(cleanup_grace) <= now);
    let cancel_unanswered = job.cancel_requested && passed(job.cancel_requested_at, policy.cancel_grace, now);
    match job.status {
        JobStatus::Queued if overdue => Decision::TimedOut,
        JobStatus::Queued if job.instance_id.is_none() => Decision::Launch,
        JobStatus::Launching | JobStatus::Running { .. } if cancel_unanswered => Decision::CancelUnanswered,
        JobStatus::Launching if overdue => Decision::WorkerLost(format!(
            "the worker did not claim the job within {} minutes of its launch",
            policy.deadlines.launching / 60
        )),
        JobStatus::Running { .. } if overdue_running => Decision::TimedOut,
        // Past its deadline and silent: no new attempt, the job is over.
        JobStatus::Running { .. } if overdue && passed(job.heartbeat_at, policy.heartbeat_timeout, now) => {
            Decision::TimedOut
        }
        JobStatus::Running { .. } if passed(job.heartbeat_at, policy.heartbeat_timeout, now) => {
            Decision::WorkerLost(format!("no heartbeat from the worker for {} seconds", policy.heartbeat_timeout))
        }
        _ => Decision::Wait,
    }
}

/// A cleanup worker gets this long (seconds) past its launch deadline to remove the
/// replication objects and report.
const CLEANUP_RUN: i64 = 600;

/// For an ended job: launch a cleanup worker when its replication objects may be left and
/// none runs (or the last one went silent); give up after as many cleanups as the stage
/// gives jobs attempts.
fn cleanup_decision(job: &Job, policy: &Policy, now: Timestamp) -> Decision {
    let Some(replication) = &job.replication else { return Decision::Wait };
    let running = replication.cleaner.is_some()
        && !passed(replication.cleaner_launched_at, policy.deadlines.launching + CLEANUP_RUN, now);
    if running {
        Decision::Wait
    } else if replication.cleanups >= policy.deadlines.max_attempts {
        Decision::AbandonCleanup
    } else {
        Decision::LaunchCleanup
    }
}

/// What a sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Jobs a worker was launched for (first launch after a failure, or a new attempt).
    pub launched: Vec<JobId>,
    /// Jobs whose worker was lost (relaunched or failed).
    pub lost: Vec<JobId>,
    /// Jobs ended as `cancelled`.
    pub cancelled: Vec<JobId>,
    /// Jobs ended as `timed_out`.
    pub timed_out: Vec<JobId>,
    /// Ended sync jobs a cleanup worker was launched for.
    pub cleanups: Vec<JobId>,
    /// Instances terminated.
    pub terminated: Vec<String>,
    /// What failed (the next sweep tries again).
    pub errors: Vec<String>,
}

/// One pass over every active job and every running instance.
pub async fn sweep<S: JobStore, L: Launcher>(store: &S, launcher: &L, policy: &Policy) -> Result<Sweep, StoreError> {
    let mut sweep = Sweep::default();
    for job in store.active().await? {
        let decision = decide(&job, policy, Timestamp::now());
        if decision == Decision::Launch {
            launch(store, launcher, &job, policy, &mut sweep).await;
            continue;
        }
        if decision == Decision::LaunchCleanup {
            launch_cleanup(store, launcher, &job, policy, &mut sweep).await;
            continue;
        }
        let Some(event) = decision.event() else { continue };
        // Still the same decision on a fresh read: a heartbeat or a finish that arrived
        // meanwhile wins over the reaper.
        let still = |fresh: &Job| {
            if decide(fresh, policy, Timestamp::now()) == decision {
                Ok(())
            } else {
                Err(ApplyError::Rejected(Rejection::Conflict("the job changed".into())))
            }
        };
        let next = match lifecycle::apply(store, &job.id, &event, policy.deadlines, still).await {
            Ok(next) => next,
            Err(ApplyError::Rejected(_) | ApplyError::NotFound) => continue,
            Err(e) => {
                sweep.errors.push(format!("job {}: {e}", job.id));
                continue;
            }
        };
        match decision {
            Decision::WorkerLost(_) => sweep.lost.push(job.id.clone()),
            Decision::CancelUnanswered => sweep.cancelled.push(job.id.clone()),
            Decision::TimedOut => sweep.timed_out.push(job.id.clone()),
            Decision::Wait | Decision::Launch | Decision::LaunchCleanup | Decision::AbandonCleanup => {}
        }
        if let Some(instance) = job.replication.as_ref().and_then(|r| r.cleaner.as_ref()) {
            terminate(launcher, instance, &mut sweep).await;
        }
        if decision == Decision::AbandonCleanup {
            continue;
        }
        if let Some(instance) = &job.instance_id {
            terminate(launcher, instance, &mut sweep).await;
        }
        if matches!(next.status, JobStatus::Queued) {
            launch(store, launcher, &next, policy, &mut sweep).await;
        }
    }
    orphans(store, launcher, policy, &mut sweep).await?;
    Ok(sweep)
}

async fn launch<S: JobStore, L: Launcher>(store: &S, launcher: &L, job: &Job, policy: &Policy, sweep: &mut Sweep) {
    match lifecycle::launch(store, launcher, job, policy.deadlines).await {
        Ok(next) if matches!(next.status, JobStatus::Launching) => sweep.launched.push(job.id.clone()),
        Ok(next) => {
            if let JobStatus::Failed { reason, .. } = &next.status {
                sweep.errors.push(format!("job {}: {reason}", job.id));
            }
        }
        Err(e) => sweep.errors.push(format!("job {}: launch: {e}", job.id)),
    }
}

/// Launches a worker that removes an ended sync job's replication objects. It runs as an
/// attempt of its own (attempt numbers past the job's, so EC2's idempotency token, the
/// instance's tags and its log stream are its own) and claims the job as its cleaner.
async fn launch_cleanup<S: JobStore, L: Launcher>(
    store: &S,
    launcher: &L,
    job: &Job,
    policy: &Policy,
    sweep: &mut Sweep,
) {
    let Some(replication) = &job.replication else { return };
    // A cleaner that went silent is replaced.
    if let Some(instance) = &replication.cleaner {
        terminate(launcher, instance, sweep).await;
    }
    let mut cleaner = job.clone();
    cleaner.attempt = job.attempt + 1 + replication.cleanups;
    let instance = match launcher.launch(&cleaner).await {
        Ok(instance) => instance,
        Err(e) => {
            sweep.errors.push(format!("job {}: launch a cleanup: {e}", job.id));
            return;
        }
    };
    let event = Event::CleanupLaunched { instance_id: instance.clone() };
    match lifecycle::apply(store, &job.id, &event, policy.deadlines, |_| Ok(())).await {
        Ok(_) => sweep.cleanups.push(job.id.clone()),
        Err(e) => {
            sweep.errors.push(format!("job {}: record the cleanup: {e}", job.id));
            terminate(launcher, &instance, sweep).await;
        }
    }
}

async fn terminate<L: Launcher>(launcher: &L, instance: &str, sweep: &mut Sweep) {
    match launcher.terminate(instance).await {
        Ok(()) => sweep.terminated.push(instance.to_string()),
        Err(e) => sweep.errors.push(format!("terminate {instance}: {e}")),
    }
}

/// Instances whose job is unknown, now runs elsewhere, or ended more than
/// [`Policy::finish_grace`] ago: a worker that just reported its outcome is still shipping its
/// last log lines, and stops by itself. An instance launched less than
/// [`Policy::launch_grace`] ago is left alone whatever its job says.
async fn orphans<S: JobStore, L: Launcher>(
    store: &S,
    launcher: &L,
    policy: &Policy,
    sweep: &mut Sweep,
) -> Result<(), StoreError> {
    let instances = match launcher.instances().await {
        Ok(instances) => instances,
        Err(e) => {
            sweep.errors.push(format!("list instances: {e}"));
            return Ok(());
        }
    };
    for instance in instances {
        if sweep.terminated.contains(&instance.id) {
            continue;
        }
        let job = match &instance.job {
            Some(id) => store.get(id).await?,
            None => None,
        };
        let now = Timestamp::now();
        let young = instance.launched_at.is_some_and(|at| at.plus_seconds(policy.launch_grace) > now);
        let cleaner = job
            .as_ref()
            .and_then(|job| job.replication.as_ref())
            .and_then(|r| r.cleaner.as_deref())
            .is_some_and(|cleaner| cleaner == instance.id);
        let needed = young
            || cleaner
            || job.is_some_and(|job| {
                job.instance_id.as_deref() == Some(instance.id.as_str())
                    && (job.is_active() || job.finished_at.is_some_and(|at| at.plus_seconds(policy.finish_grace) > now))
            });
        if !needed {
            terminate(launcher, &instance.id, sweep).await;
        }
    }
    Ok(())
}
