//! Runs one job: the engine command its spec names, supervised. Progress is folded and
//! reported (coalesced: at most one update per [`Timing::progress_every`], always the final
//! one); a heartbeat goes out when nothing else did for [`Timing::heartbeat_every`]; an answer
//! that says "cancel" (or that the job is no longer this worker's) stops the engine; the
//! job's `max_duration` stops it too. Stopping drops the engine's future, which closes its
//! connections: open COPYs are aborted by the servers and nothing uncommitted is marked done.

use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use barge_engine::{Error, Request, sync};
use barge_jobs::{
    Command, JobSpec, Outcome, Phase, Progress, Reach, SyncChange,
    api::{ChangeReport, PendingChange},
    sizing::{SizeAnswer, SizeRequest},
};
use tokio::time::Instant;

use crate::{
    progress::JobProgress,
    report::{Answer, Reporter},
};

/// How often the worker reports.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// At most one progress update per this interval.
    pub progress_every: Duration,
    /// A heartbeat when nothing was sent for this long.
    pub heartbeat_every: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { progress_every: Duration::from_secs(2), heartbeat_every: Duration::from_secs(15) }
    }
}

/// One attempt of a job, as the worker runs it.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// What to run, with credentials.
    pub spec: JobSpec,
    /// Which attempt (1-based): later attempts of `init` resume what earlier ones committed.
    pub attempt: u32,
    /// When the job must stop (its `max_duration`).
    pub deadline: Option<Instant>,
    /// The id in a sync's replication object names (the job id, so a later attempt finds
    /// what an earlier one set up); random when unset.
    pub sync_id: Option<String>,
    /// How far the job's URLs may reach: `Remote` on EC2 (no metadata addresses, no local
    /// files, nothing from this machine's environment), `Anywhere` under `barge serve`.
    pub reach: Reach,
    /// Ask the coordinator to size the worker once the copy is planned: the job names no
    /// instance type and its size was not decided yet.
    pub sizable: bool,
}

/// How long a sync job gets to remove its replication objects after a cancel, an interrupt
/// or its deadline before the worker stops waiting.
const SYNC_STOP_GRACE: Duration = Duration::from_secs(120);

/// The engine request for a job spec: [`Request::from_spec`], as the CLI calls it, with this
/// machine's client tools; a later attempt of a copy continues what earlier ones committed
/// (their marks say what). A sync cannot: its copy reads in a slot's snapshot, gone with the
/// attempt.
pub fn request(spec: &JobSpec, attempt: u32, reach: Reach) -> Result<Request, Error> {
    // Where the machine's image (or barge serve's environment) put the client tools.
    let pg_bin = std::env::var_os("BARGE_PG_BIN").filter(|dir| !dir.is_empty()).map(std::path::PathBuf::from);
    let mut request =
        Request::from_spec(spec, barge_engine::Local { pg_bin, ..barge_engine::Local::default() }, reach)?;
    request.options.resume |= attempt > 1 && (spec.command == Command::Init || spec.syncs());
    Ok(request)
}

/// What the engine did, for the log and the last progress message.
#[derive(Debug)]
pub struct Done {
    /// One line for users.
    pub summary: String,
    /// The engine's full report.
    pub report: serde_json::Value,
}

/// Why an engine run did not succeed.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong, redacted.
    pub reason: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// The engine's report, when it produced one (failed checks, differing tables).
    pub report: Option<serde_json::Value>,
    /// A sync that stopped because it was told to (cancel, deadline, interrupt): not a failure.
    pub stopped: bool,
    /// Not a failure either: the coordinator relaunched the job on this larger type after
    /// the plan (`size_worker`); this worker stops without reporting.
    pub relaunched: Option<String>,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let stopped = matches!(e, Error::Stopped(_));
        Failure {
            reason: barge_engine::redact(&e.to_string()),
            retryable: e.retryable(),
            report: None,
            stopped,
            relaunched: None,
        }
    }
}

fn json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The plan's sizing, one database after another.
fn sizing_text(plan: &barge_engine::Plan) -> String {
    let lines: Vec<String> = plan.databases.iter().map(|d| format!("{}: {}", d.target, d.streams_reason)).collect();
    lines.join("; ")
}

/// Runs the engine command of `run`, folding its progress into `fold`; a sync job also
/// follows `control`.
pub async fn engine<R: Reporter>(
    run: &Attempt,
    reporter: &R,
    fold: Arc<Mutex<JobProgress>>,
    control: sync::Control,
    changes: Changes,
) -> Result<Done, Failure> {
    let (spec, attempt) = (&run.spec, run.attempt);
    let mut request = request(spec, attempt, run.reach)?;
    lock_phase(&fold, Phase::Validating);
    if spec.syncs() {
        request.local.sync_id = Some(run.sync_id.clone().unwrap_or_else(sync::new_id));
        return sync_job(run, reporter, &request, fold, control, changes).await;
    }
    match spec.command {
        Command::Init | Command::Sync => {
            let plan = barge_engine::plan(&request).await?;
            tracing::info!(databases = plan.databases.len(), plan = %json(&plan), "plan");
            size_worker(run, reporter, &plan).await?;
            {
                let mut fold = fold.lock().unwrap_or_else(PoisonError::into_inner);
                *fold = JobProgress::new(attempt, plan.databases.len() as u64);
                fold.set_sizing(&sizing_text(&plan));
                fold.set_phase(Phase::Schema);
            }
            let sink_fold = fold.clone();
            let sink: Arc<dyn barge_engine::ProgressSink> = Arc::new(move |event: barge_engine::Event| {
                sink_fold.lock().unwrap_or_else(PoisonError::into_inner).apply(&event);
            });
            let report = barge_engine::init(&request, &plan, sink).await?;
            let (tables, rows, bytes): (u64, u64, u64) =
                report.databases.iter().fold((0, 0, 0), |(t, r, b), d| (t + d.tables, r + d.rows, b + d.bytes));
            Ok(Done {
                summary: format!(
                    "copied {} database(s), {tables} table(s), {rows} rows, {} in {}",
                    report.databases.len(),
                    barge_engine::human::human_bytes(bytes),
                    barge_engine::human::human_duration(report.seconds)
                ),
                report: json(&report),
            })
        }
        Command::Validate => {
            let report = barge_engine::validate(&request).await;
            let failed: Vec<String> = report
                .checks
                .iter()
                .filter(|c| c.status == barge_engine::CheckStatus::Fail)
                .map(|c| match &c.hint {
                    Some(hint) => format!("{}: {} ({hint})", c.name, c.detail),
                    None => format!("{}: {}", c.name, c.detail),
                })
                .collect();
            if report.ok {
                Ok(Done { summary: format!("all {} checks passed", report.checks.len()), report: json(&report) })
            } else {
                Err(Failure {
                    stopped: false,
                    relaunched: None,
                    reason: barge_engine::redact(&format!(
                        "{} of {} checks failed: {}",
                        failed.len(),
                        report.checks.len(),
                        failed.join("; ")
                    )),
                    retryable: false,
                    report: Some(json(&report)),
                })
            }
        }
        Command::Verify => {
            lock_phase(&fold, Phase::Verifying);
            let report = barge_engine::verify(&request).await?;
            let tables: Vec<&barge_engine::verify::TableVerify> =
                report.databases.iter().flat_map(|d| d.tables.iter()).collect();
            let differing: Vec<&str> = tables.iter().filter(|t| !t.ok).map(|t| t.table.as_str()).collect();
            {
                let mut fold = fold.lock().unwrap_or_else(PoisonError::into_inner);
                for _ in &differing {
                    fold.table_failed();
                }
            }
            if report.ok {
                Ok(Done { summary: format!("{} table(s) match", tables.len()), report: json(&report) })
            } else {
                Err(Failure {
                    stopped: false,
                    relaunched: None,
                    reason: format!(
                        "source and target differ: {} of {} table(s) ({}) or sequences/objects; see the job's log for samples",
                        differing.len(),
                        tables.len(),
                        differing.join(", ")
                    ),
                    retryable: false,
                    report: Some(json(&report)),
                })
            }
        }
    }
}

fn sink_for(fold: &Arc<Mutex<JobProgress>>) -> Arc<dyn barge_engine::ProgressSink> {
    let fold = fold.clone();
    Arc::new(move |event: barge_engine::Event| {
        fold.lock().unwrap_or_else(PoisonError::into_inner).apply(&event);
    })
}

/// The changes the owner asked of a sync job, as its reports' answers bring them.
pub type Changes = tokio::sync::mpsc::UnboundedReceiver<PendingChange>;

/// Runs one change the owner asked of a streaming sync with the engine's functions, as
/// `barge sync …` does locally: what it did, for the owner.
async fn run_change(
    request: Request,
    change: SyncChange,
    sink: Arc<dyn barge_engine::ProgressSink>,
) -> Result<String, Error> {
    let tables = |t: &[String]| t.join(", ");
    match &change {
        SyncChange::Pause {} => sync::pause(&request).await.map(|r| {
            if r.changed.is_empty() { "already paused".into() } else { format!("paused {}", r.changed.join(", ")) }
        }),
        SyncChange::Resume {} => sync::resume(&request).await.map(|r| {
            if r.changed.is_empty() { "already streaming".into() } else { format!("resumed {}", r.changed.join(", ")) }
        }),
        SyncChange::AddTables { tables: patterns } => sync::add(&request, patterns, sink)
            .await
            .map(|r| format!("added {} in {:.0} s", tables(&r.added), r.seconds)),
        SyncChange::RemoveTables { tables: patterns } => sync::remove(&request, patterns)
            .await
            .map(|r| format!("removed {} (their rows stay on the target)", tables(&r.removed))),
        SyncChange::Resync { tables: patterns } => sync::resync(&request, patterns, sink)
            .await
            .map(|r| format!("copied {} again in {:.0} s", tables(&r.resynced), r.seconds)),
        SyncChange::ApplyDdl { destructive } => {
            let report = sync::apply_ddl(&request, *destructive, sink).await?;
            if !report.pending.is_empty() {
                return Err(Error::Refused(format!(
                    "applied {}; waiting: {} (apply-ddl --destructive runs them)",
                    report.applied.len(),
                    report.pending.join("; ")
                )));
            }
            Ok(match report.applied.len() {
                0 => "the target's tables are as the source's: nothing to apply".into(),
                n => format!("applied {n} schema change(s): {}", report.applied.join("; ")),
            })
        }
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn shortened(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Watches a streaming sync until a cutover or a stop, running the changes the owner asks
/// for one at a time beside it and reporting each.
async fn stream_with_changes<R: Reporter>(
    reporter: &R,
    request: &Request,
    sink: Arc<dyn barge_engine::ProgressSink>,
    control: sync::Control,
    mut changes: Changes,
) -> Result<sync::StreamEnd, Error> {
    let stream = sync::stream(request, sink.clone(), control, Duration::from_secs(2));
    tokio::pin!(stream);
    let mut running: Option<(PendingChange, tokio::task::JoinHandle<Result<String, Error>>)> = None;
    let end = loop {
        tokio::select! {
            end = &mut stream => break end,
            Some(pending) = changes.recv(), if running.is_none() => {
                tracing::info!(change = pending.id, what = %pending.change.describe(), "running a change");
                let work = run_change(request.clone(), pending.change.clone(), sink.clone());
                running = Some((pending, tokio::spawn(work)));
            }
            joined = async { match running.as_mut() { Some((_, task)) => task.await, None => std::future::pending().await } } => {
                let Some((pending, _)) = running.take() else { continue };
                let (ok, message) = match joined {
                    Ok(Ok(message)) => (true, message),
                    Ok(Err(e)) => (false, barge_engine::redact(&e.to_string())),
                    Err(e) => (false, format!("the change stopped: {e}")),
                };
                tracing::info!(change = pending.id, ok, message = %message, "change done");
                let report = ChangeReport { ok, message: shortened(message, barge_jobs::api::MAX_CHANGE_MESSAGE) };
                if let Answer::Unreachable(why) = reporter.change_finished(pending.id, &report).await {
                    tracing::warn!(%why, change = pending.id, "could not report the change");
                }
            }
        }
    };
    if let Some((pending, task)) = running {
        tracing::warn!(change = pending.id, "the sync stopped while a change ran: it is left unfinished");
        task.abort();
    }
    end
}

/// A sync job: the copy in a slot's snapshot and the subscription (or, on a later attempt,
/// the replication an earlier one left streaming), then status rounds until a cutover or a
/// cancel, running the changes its owner asks for meanwhile. Whatever fails removes the
/// replication objects on both sides.
async fn sync_job<R: Reporter>(
    run: &Attempt,
    reporter: &R,
    request: &Request,
    fold: Arc<Mutex<JobProgress>>,
    control: sync::Control,
    changes: Changes,
) -> Result<Done, Failure> {
    let attempt = run.attempt;
    let sink = sink_for(&fold);
    let streaming = attempt > 1 && sync::status(request).await.is_ok_and(|s| !s.databases.is_empty());
    if streaming {
        tracing::info!("the previous attempt left replication streaming: watching it again");
    } else {
        let plan = barge_engine::plan(request).await.map_err(|e| restart_failure(e, attempt))?;
        let resuming = plan.databases.iter().any(|db| matches!(db.action, barge_engine::plan::TargetAction::Resume));
        if resuming {
            // The copy's marks are on the target: the sync resumes from its slot.
            tracing::info!("the previous attempt stopped during the copy: resuming it");
        } else if attempt > 1 {
            // A copy that died before its first commit left at most its slot and publication.
            match sync::stop(request).await {
                Ok(report) => {
                    tracing::info!(removed = ?report.removed, "removed the previous attempt's replication objects")
                }
                Err(barge_engine::Error::NotFound(_)) => {}
                Err(e) => tracing::warn!(error = %e, "could not remove the previous attempt's replication objects"),
            }
        }
        tracing::info!(databases = plan.databases.len(), plan = %json(&plan), "plan");
        size_worker(run, reporter, &plan).await?;
        {
            let mut fold = fold.lock().unwrap_or_else(PoisonError::into_inner);
            *fold = JobProgress::new(attempt, plan.databases.len() as u64);
            fold.set_sizing(&sizing_text(&plan));
            fold.set_phase(Phase::Schema);
        }
        let report = sync::start(request, &plan, sink.clone(), control.clone())
            .await
            .map_err(|e| restart_failure(e, attempt))?;
        tracing::info!(report = %json(&report), "copied; the target streams changes");
    }
    lock_phase(&fold, Phase::Streaming);
    match stream_with_changes(reporter, request, sink.clone(), control.clone(), changes).await? {
        sync::StreamEnd::Detached => {
            return Err(Failure {
                stopped: false,
                relaunched: None,
                reason:
                    "the worker stopped while the target streamed; replication goes on and the next attempt watches it"
                        .into(),
                retryable: true,
                report: None,
            });
        }
        sync::StreamEnd::Cutover => {}
    }
    lock_phase(&fold, Phase::CuttingOver);
    fold.lock().unwrap_or_else(PoisonError::into_inner).set_message("cutting over: waiting for the target to catch up");
    // The job's own deadline bounds the wait; a cancel meanwhile removes the replication.
    let options = sync::CutoverOptions { timeout: Duration::from_secs(14 * 24 * 3600) };
    let cut = {
        let work = sync::cutover(request, &options, sink.clone());
        tokio::pin!(work);
        let mut control = control.clone();
        loop {
            tokio::select! {
                result = &mut work => break result,
                changed = control.changed() => {
                    let signal = *control.borrow_and_update();
                    if changed.is_err() || !matches!(signal, sync::Signal::Cancel | sync::Signal::Detach) {
                        continue;
                    }
                    break Err(barge_engine::Error::Stopped("stopped during the cutover".into()));
                }
            }
        }
    };
    let report = match cut {
        Ok(report) => report,
        Err(e) => {
            // Replication must not outlive the job.
            if let Err(stop) = sync::stop(request).await {
                tracing::warn!(error = %stop, "could not remove the replication objects after a failed cutover");
            }
            return Err(e.into());
        }
    };
    let tables: usize = report.verify.databases.iter().map(|d| d.tables.len()).sum();
    if !report.verify.ok {
        let differing: Vec<&str> = report
            .verify
            .databases
            .iter()
            .flat_map(|d| d.tables.iter())
            .filter(|t| !t.ok)
            .map(|t| t.table.as_str())
            .collect();
        return Err(Failure {
            stopped: false,
            relaunched: None,
            reason: format!(
                "cut over (replication removed), but source and target differ: {} table(s) ({}) or sequences/objects; writes to the source after the cutover began are not on the target",
                differing.len(),
                differing.join(", ")
            ),
            retryable: false,
            report: Some(json(&report)),
        });
    }
    Ok(Done {
        summary: format!(
            "cut over: caught up in {}, {} sequence(s) set, replication removed, {tables} table(s) verified equal",
            barge_engine::human::human_duration(report.catch_up_seconds),
            report.sequences
        ),
        report: json(&report),
    })
}

/// What the plan wants of the machine relaying it: the largest database's wish (databases
/// are copied one after another), for `POST /jobs/{id}/size`.
pub fn size_request(plan: &barge_engine::Plan) -> Option<SizeRequest> {
    let wish = plan.databases.iter().filter(|d| d.worker_cpus > 0).max_by_key(|d| d.worker_cpus)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).clamp(1, barge_jobs::sizing::MAX_VCPUS);
    let mut reason = wish.worker_cpus_reason.clone();
    if plan.databases.len() > 1 {
        reason = format!("{reason} (for database {})", wish.target);
    }
    reason.retain(|c| !c.is_control());
    let reason: String = reason.chars().take(barge_jobs::sizing::MAX_REASON_BYTES / 4).collect();
    Some(SizeRequest { cpus: clamp(cpus), vcpus: clamp(wish.worker_cpus), reason })
}

/// Asks the coordinator to size this worker from `plan`, before anything changes on the
/// servers. `Err` (with `relaunched`) when the job was relaunched on a larger type: this
/// worker stops. An answer that does not come is no reason to stop: the copy goes on here.
async fn size_worker<R: Reporter>(run: &Attempt, reporter: &R, plan: &barge_engine::Plan) -> Result<(), Failure> {
    let Some(request) = size_request(plan).filter(|_| run.sizable) else {
        return Ok(());
    };
    match reporter.size(&request).await {
        Ok(SizeAnswer { relaunched_on: Some(kind), reason }) => {
            tracing::info!(instance_type = %kind, %reason, "relaunched on a larger worker: stopping here");
            Err(Failure { reason, retryable: false, report: None, stopped: false, relaunched: Some(kind) })
        }
        Ok(SizeAnswer { relaunched_on: None, reason }) => {
            tracing::info!(%reason, "worker size");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not ask for the worker's size; the copy runs here");
            Ok(())
        }
    }
}

/// A failure to set a sync up; on a later attempt, says why starting over needs the user.
fn restart_failure(e: barge_engine::Error, attempt: u32) -> Failure {
    let refused = matches!(e, Error::TargetNotEmpty(_) | Error::Refused(_));
    let mut failure = Failure::from(e);
    if attempt > 1 && refused {
        failure.reason =
            format!("the previous attempt stopped during the copy, and it cannot resume: {}", failure.reason);
    }
    failure
}

fn lock_phase(fold: &Mutex<JobProgress>, phase: Phase) {
    fold.lock().unwrap_or_else(PoisonError::into_inner).set_phase(phase);
}

/// Before a sync job's outcome goes out: its replication objects are removed on every path
/// but a retryable failure (the next attempt watches or removes them), and the final
/// progress says whether they are gone, so the job needs no cleanup worker.
async fn finish_sync(attempt: &Attempt, outcome: &Outcome, fold: &Mutex<JobProgress>) {
    let removed = match outcome {
        // The cutover removed them.
        Outcome::Succeeded => true,
        Outcome::Failed { retryable: true, .. } => false,
        Outcome::Failed { .. } | Outcome::Cancelled | Outcome::TimedOut => match &attempt.sync_id {
            Some(id) => remove_replication(&attempt.spec, attempt.attempt, attempt.reach, id).await.is_ok(),
            None => false,
        },
    };
    if removed {
        fold.lock().unwrap_or_else(PoisonError::into_inner).set_replication_removed();
    }
}

/// Removes sync `id`'s replication objects (none left is success), within the sync's stop
/// grace.
pub async fn remove_replication(spec: &JobSpec, attempt: u32, reach: Reach, id: &str) -> Result<Vec<String>, String> {
    let mut request = request(spec, attempt, reach).map_err(|e| barge_engine::redact(&e.to_string()))?;
    request.local.sync_id = Some(id.to_owned());
    match tokio::time::timeout(SYNC_STOP_GRACE, sync::stop(&request)).await {
        Ok(Ok(report)) => {
            if !report.removed.is_empty() {
                tracing::info!(removed = ?report.removed, "removed the sync's replication objects");
            }
            Ok(report.removed)
        }
        // Nothing of this sync on either side.
        Ok(Err(Error::NotFound(_))) => Ok(Vec::new()),
        Ok(Err(e)) => {
            let reason = barge_engine::redact(&e.to_string());
            tracing::warn!(error = %reason, "could not remove the sync's replication objects");
            Err(reason)
        }
        Err(_) => {
            tracing::warn!("removing the sync's replication objects took too long");
            Err("removing the replication objects took too long".into())
        }
    }
}

/// How a supervised run ended.
#[derive(Debug, PartialEq)]
pub enum Ending {
    /// Report this outcome.
    Outcome(Outcome),
    /// The job is no longer this worker's (finished or handed to another attempt by the
    /// reaper): stop without reporting anything.
    Abandoned(String),
    /// The coordinator relaunched the job on a larger instance type, before this worker
    /// changed anything: stop without reporting anything.
    Relaunched(String),
}

/// Runs `attempt` under `reporter`: the engine, progress, heartbeats, cancel and deadline;
/// when `interrupt` resolves first (a signal), the engine stops with its outcome. Returns
/// once the engine stopped and the final progress went out; the caller reports the outcome.
pub async fn supervise<R: Reporter>(
    attempt: &Attempt,
    reporter: &R,
    timing: Timing,
    interrupt: impl Future<Output = Outcome>,
) -> Ending {
    let fold = Arc::new(Mutex::new(JobProgress::new(attempt.attempt, 0)));
    let (control, signals) = tokio::sync::watch::channel(sync::Signal::Run);
    // Changes the owner asks of a sync: each sent to the engine once, by id.
    let (changes, asked) = tokio::sync::mpsc::unbounded_channel();
    let mut forwarded = std::collections::HashSet::new();
    // A sync removes its replication objects when it stops, so it is told to stop and given
    // time for that; other commands are simply dropped.
    let syncs = attempt.spec.syncs();
    let mut stopping: Option<(Outcome, Instant)> = None;
    // Set when the job ended without this worker: once the sync has cleaned up, nothing is
    // reported (the job's outcome is already decided).
    let mut abandoned: Option<String> = None;
    // Boxed, so that dropping it below ends the engine before the last report goes out.
    let mut engine_run = Box::pin(engine(attempt, reporter, fold.clone(), signals, asked));
    let deadline = attempt.deadline.map_or_else(|| tokio::time::sleep(Duration::MAX / 4), tokio::time::sleep_until);
    tokio::pin!(deadline);
    tokio::pin!(interrupt);
    let mut tick = tokio::time::interval(timing.progress_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: Option<Progress> = None;
    let mut last_contact = Instant::now();
    let snapshot = |fold: &Mutex<JobProgress>| fold.lock().unwrap_or_else(PoisonError::into_inner).snapshot();
    let ending = loop {
        let grace = async {
            match stopping {
                Some((_, until)) => tokio::time::sleep_until(until).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut engine_run => {
                if let (Some((outcome, _)), Err(failure)) = (&stopping, &result)
                    && failure.stopped
                {
                    tracing::info!(reason = %failure.reason, "stopped");
                    break Ending::Outcome(outcome.clone());
                }
                break match result {
                    Err(Failure { relaunched: Some(kind), .. }) => Ending::Relaunched(kind),
                    Ok(done) => {
                        tracing::info!(summary = %done.summary, report = %done.report, "succeeded");
                        fold.lock().unwrap_or_else(PoisonError::into_inner).set_message(&done.summary);
                        Ending::Outcome(Outcome::Succeeded)
                    }
                    Err(failure) => {
                        match &failure.report {
                            Some(report) => tracing::error!(reason = %failure.reason, retryable = failure.retryable, %report, "failed"),
                            None => tracing::error!(reason = %failure.reason, retryable = failure.retryable, "failed"),
                        }
                        Ending::Outcome(Outcome::Failed { reason: failure.reason, retryable: failure.retryable })
                    }
                };
            }
            () = grace => {
                tracing::warn!("the sync did not stop in time; leaving it");
                break Ending::Outcome(stopping.map_or(Outcome::Cancelled, |(outcome, _)| outcome));
            }
            outcome = &mut interrupt, if stopping.is_none() => {
                tracing::warn!(?outcome, "interrupted: stopping");
                fold.lock().unwrap_or_else(PoisonError::into_inner).set_message("interrupted");
                if syncs {
                    let _ = control.send(sync::Signal::Detach);
                    stopping = Some((outcome, Instant::now() + SYNC_STOP_GRACE));
                    continue;
                }
                break Ending::Outcome(outcome);
            }
            () = &mut deadline, if stopping.is_none() => {
                tracing::warn!("max_duration reached: stopping");
                fold.lock().unwrap_or_else(PoisonError::into_inner).set_message("stopped at the job's max_duration");
                if syncs {
                    let _ = control.send(sync::Signal::Cancel);
                    stopping = Some((Outcome::TimedOut, Instant::now() + SYNC_STOP_GRACE));
                    continue;
                }
                break Ending::Outcome(Outcome::TimedOut);
            }
            _ = tick.tick() => {
                let current = snapshot(&fold);
                let answer = if sent.as_ref() != Some(&current) {
                    let answer = reporter.progress(&current).await;
                    if !matches!(answer, Answer::Unreachable(_)) {
                        sent = Some(current);
                    }
                    answer
                } else if last_contact.elapsed() >= timing.heartbeat_every {
                    reporter.heartbeat().await
                } else {
                    continue;
                };
                match answer {
                    Answer::Continue => last_contact = Instant::now(),
                    Answer::Changes(pending) => {
                        last_contact = Instant::now();
                        for change in pending {
                            if syncs && forwarded.insert(change.id) {
                                let _ = changes.send(change);
                            }
                        }
                    }
                    Answer::Cutover => {
                        last_contact = Instant::now();
                        if syncs && *control.borrow() == sync::Signal::Run {
                            tracing::info!("cutover requested");
                            let _ = control.send(sync::Signal::Cutover);
                        }
                    }
                    Answer::Cancel if stopping.is_some() => last_contact = Instant::now(),
                    Answer::Cancel => {
                        tracing::info!("cancel requested: stopping");
                        fold.lock().unwrap_or_else(PoisonError::into_inner).set_message("cancelled on request");
                        if syncs {
                            last_contact = Instant::now();
                            let _ = control.send(sync::Signal::Cancel);
                            stopping = Some((Outcome::Cancelled, Instant::now() + SYNC_STOP_GRACE));
                            continue;
                        }
                        break Ending::Outcome(Outcome::Cancelled);
                    }
                    // Another attempt has the job: it watches or removes what this one set up.
                    Answer::Lost(why) => {
                        tracing::warn!(%why, "the job is no longer this worker's: stopping");
                        break Ending::Abandoned(why);
                    }
                    // The job ended without this worker (the reaper timed it out, or gave up on
                    // it): a sync still removes its replication objects first, since an
                    // abandoned slot holds WAL on the source until its disk is full.
                    Answer::Ended(why) if syncs && stopping.is_none() => {
                        tracing::warn!(%why, "the job ended without this worker: removing the replication, then stopping");
                        let _ = control.send(sync::Signal::Cancel);
                        stopping = Some((Outcome::Cancelled, Instant::now() + SYNC_STOP_GRACE));
                        abandoned = Some(why);
                    }
                    Answer::Ended(_) if stopping.is_some() => last_contact = Instant::now(),
                    Answer::Ended(why) => {
                        tracing::warn!(%why, "the job ended without this worker: stopping");
                        break Ending::Abandoned(why);
                    }
                    Answer::Unreachable(why) => tracing::warn!(%why, "cannot report; the engine keeps going"),
                }
            }
        }
    };
    // The engine's future is dropped here (when it did not finish): its connections close,
    // its child processes are killed, and the servers roll back what was not committed.
    drop(engine_run);
    let ending = match (abandoned, ending) {
        (Some(why), Ending::Outcome(_)) => Ending::Abandoned(why),
        (_, ending) => ending,
    };
    if syncs && let Ending::Outcome(outcome) = &ending {
        finish_sync(attempt, outcome, &fold).await;
    }
    if let Ending::Outcome(_) = ending {
        let last = snapshot(&fold);
        if sent.as_ref() != Some(&last) && !matches!(reporter.progress(&last).await, Answer::Continue | Answer::Cancel)
        {
            tracing::warn!("the final progress could not be sent");
        }
    }
    ending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_report_is_cut_at_a_character_boundary() {
        assert_eq!(shortened("short".into(), 10), "short");
        let cut = shortened("ééééé".into(), 5);
        assert_eq!(cut, "éé", "5 bytes fall inside the third é");
    }
}
