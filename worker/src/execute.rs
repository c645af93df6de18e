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

use barge_engine::{ConnInfo, Error, Request, Side};
use barge_jobs::{Command, JobSpec, Outcome, Phase, Progress};
use tokio::time::Instant;

use crate::{
    progress::Fold,
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
}

/// The engine request for a job spec: the same request the CLI builds from its flags.
pub fn request(spec: &JobSpec, attempt: u32) -> Result<Request, Error> {
    let defaults = barge_engine::Options::default();
    let options = &spec.options;
    let jobs = |n: Option<u32>, default: usize| n.map_or(default, |n| n.max(1) as usize);
    let request = Request {
        source: ConnInfo::parse(Side::Source, spec.source_url.expose())?,
        target: ConnInfo::parse(Side::Target, spec.target_url.expose())?,
        all_databases: options.all_databases,
        filter: barge_engine::Filter {
            include_databases: spec.filter.include_databases.clone(),
            exclude_databases: spec.filter.exclude_databases.clone(),
            include_schemas: spec.filter.include_schemas.clone(),
            exclude_schemas: spec.filter.exclude_schemas.clone(),
            include_tables: spec.filter.include_tables.clone(),
            exclude_tables: spec.filter.exclude_tables.clone(),
            schema_only_tables: spec.filter.schema_only_tables.clone(),
        },
        options: barge_engine::Options {
            jobs: jobs(options.jobs, defaults.jobs),
            index_jobs: jobs(options.index_jobs, defaults.index_jobs),
            split_tables_larger_than: options.split_tables_larger_than.unwrap_or(defaults.split_tables_larger_than),
            drop_existing: options.drop_existing,
            // A later attempt continues what an earlier one committed (its marks say what).
            resume: options.resume || (attempt > 1 && spec.command == Command::Init),
            roles: options.roles,
            no_owner: options.no_owner,
            no_acl: options.no_acl,
            no_tablespaces: options.no_tablespaces,
            skip_large_objects: options.skip_large_objects,
            maintenance_work_mem: options.maintenance_work_mem,
            // Where the machine's image (or barge serve's environment) put the client tools.
            pg_bin: std::env::var_os("BARGE_PG_BIN").filter(|dir| !dir.is_empty()).map(std::path::PathBuf::from),
            sync: options.sync,
        },
    };
    request.filter.compile()?;
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
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure { reason: barge_engine::redact(&e.to_string()), retryable: e.retryable(), report: None }
    }
}

fn json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// Runs the engine command of `spec`, folding its progress into `fold`.
pub async fn engine(spec: &JobSpec, attempt: u32, fold: Arc<Mutex<Fold>>) -> Result<Done, Failure> {
    let request = request(spec, attempt)?;
    lock_phase(&fold, Phase::Validating);
    match spec.command {
        Command::Init => {
            let plan = barge_engine::plan(&request).await?;
            tracing::info!(databases = plan.databases.len(), plan = %json(&plan), "plan");
            {
                let mut fold = fold.lock().unwrap_or_else(PoisonError::into_inner);
                *fold = Fold::new(attempt, plan.databases.len() as u64);
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
                    barge_engine::validate::human_bytes(bytes),
                    barge_engine::validate::human_duration(report.seconds)
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
        Command::Sync => Err(Failure {
            reason: "continuous replication (sync) is not in this barge version's engine; run init (with --sync to check its prerequisites)".into(),
            retryable: false,
            report: None,
        }),
    }
}

fn lock_phase(fold: &Mutex<Fold>, phase: Phase) {
    fold.lock().unwrap_or_else(PoisonError::into_inner).set_phase(phase);
}

/// How a supervised run ended.
#[derive(Debug, PartialEq)]
pub enum Ending {
    /// Report this outcome.
    Outcome(Outcome),
    /// The job is no longer this worker's (finished or handed to another attempt by the
    /// reaper): stop without reporting anything.
    Abandoned(String),
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
    let fold = Arc::new(Mutex::new(Fold::new(attempt.attempt, 0)));
    // Boxed, so that dropping it below ends the engine before the last report goes out.
    let mut engine_run = Box::pin(engine(&attempt.spec, attempt.attempt, fold.clone()));
    let deadline = attempt.deadline.map_or_else(|| tokio::time::sleep(Duration::MAX / 4), tokio::time::sleep_until);
    tokio::pin!(deadline);
    tokio::pin!(interrupt);
    let mut tick = tokio::time::interval(timing.progress_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: Option<Progress> = None;
    let mut last_contact = Instant::now();
    let snapshot = |fold: &Mutex<Fold>| fold.lock().unwrap_or_else(PoisonError::into_inner).snapshot();
    let ending = loop {
        tokio::select! {
            result = &mut engine_run => {
                break match result {
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
            outcome = &mut interrupt => {
                tracing::warn!(?outcome, "interrupted: stopping");
                fold.lock().unwrap_or_else(PoisonError::into_inner).set_message("interrupted");
                break Ending::Outcome(outcome);
            }
            () = &mut deadline => {
                tracing::warn!("max_duration reached: stopping");
                fold.lock().unwrap_or_else(PoisonError::into_inner).set_message("stopped at the job's max_duration");
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
                    Answer::Cancel => {
                        tracing::info!("cancel requested: stopping");
                        fold.lock().unwrap_or_else(PoisonError::into_inner).set_message("cancelled on request");
                        break Ending::Outcome(Outcome::Cancelled);
                    }
                    Answer::Lost(why) => {
                        tracing::warn!(%why, "the job is no longer this worker's: stopping");
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
    if let Ending::Outcome(_) = ending {
        let last = snapshot(&fold);
        if sent.as_ref() != Some(&last) && !matches!(reporter.progress(&last).await, Answer::Continue | Answer::Cancel)
        {
            tracing::warn!("the final progress could not be sent");
        }
    }
    ending
}
