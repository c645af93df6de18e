//! Where a running job reports: the coordinator ([`ApiReporter`]) or, with no control plane,
//! standard output ([`StdoutReporter`], for `barge-worker run --spec`).

use std::{future::Future, time::Duration};

use barge_client::{ApiClient, Backoff, ClientError, retry};
use barge_jobs::{
    JobId, JobStatus, Outcome, Progress,
    api::{ChangeReport, Heartbeat, PendingChange},
    sizing::{SizeAnswer, SizeRequest},
};

/// What a report's answer means for the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Keep going.
    Continue,
    /// The owner asked to stop.
    Cancel,
    /// The owner asked a sync job to cut over.
    Cutover,
    /// The owner asked a sync job for changes (pause, resume, tables) that wait to run.
    Changes(Vec<PendingChange>),
    /// The job is no longer this worker's: another attempt has it.
    Lost(String),
    /// The job ended (timed out, cancelled, failed) without this worker's outcome.
    Ended(String),
    /// The report could not be delivered (after retries); the engine keeps going.
    Unreachable(String),
}

/// Where a job's progress, heartbeats and outcome go.
pub trait Reporter: Send + Sync {
    /// The latest progress (also a heartbeat).
    fn progress(&self, progress: &Progress) -> impl Future<Output = Answer> + Send;
    /// A sign of life.
    fn heartbeat(&self) -> impl Future<Output = Answer> + Send;
    /// The outcome; `Err` when it could not be delivered.
    fn finish(&self, outcome: &Outcome) -> impl Future<Output = Result<(), String>> + Send;
    /// What became of change `id` (also a heartbeat). Without a control plane nobody asks
    /// for changes: nothing to report.
    fn change_finished(&self, id: u32, report: &ChangeReport) -> impl Future<Output = Answer> + Send {
        let _ = (id, report);
        async { Answer::Continue }
    }
    /// What the plan wants of this machine; the answer may say the job was relaunched on a
    /// larger one. Without a control plane, nobody decides: `Err`.
    fn size(&self, request: &SizeRequest) -> impl Future<Output = Result<SizeAnswer, String>> + Send {
        let _ = request;
        async { Err("no coordinator to ask".to_string()) }
    }
}

/// Reports to the coordinator, retrying transient failures.
pub struct ApiReporter {
    client: ApiClient,
    job: JobId,
    /// Retries of progress and heartbeats: short, since the next tick tries again.
    pub report_backoff: Backoff,
    /// Retries of the outcome: long, since nothing else will report it.
    pub finish_backoff: Backoff,
}

impl ApiReporter {
    /// Reports job `job` through `client`.
    pub fn new(client: ApiClient, job: JobId) -> ApiReporter {
        ApiReporter {
            client,
            job,
            report_backoff: Backoff { budget: Duration::from_secs(10), ..Backoff::default() },
            finish_backoff: Backoff { budget: Duration::from_secs(600), ..Backoff::default() },
        }
    }

    fn answer(result: Result<Heartbeat, ClientError>) -> Answer {
        match result {
            Ok(heartbeat) if heartbeat.cancel_requested => Answer::Cancel,
            Ok(Heartbeat { cutover_requested: true, status: JobStatus::Running { .. }, .. }) => Answer::Cutover,
            Ok(Heartbeat { status: JobStatus::Running { .. }, changes, .. }) if !changes.is_empty() => {
                Answer::Changes(changes)
            }
            Ok(Heartbeat { status: JobStatus::Running { .. }, .. }) => Answer::Continue,
            Ok(heartbeat) => Answer::Ended(format!("the job is {}", heartbeat.status.state())),
            // 403: another instance has the job; 404: gone; 409: it is no longer running.
            Err(e) if e.status() == Some(403) => Answer::Lost(e.to_string()),
            Err(e) if matches!(e.status(), Some(404 | 409)) => Answer::Ended(e.to_string()),
            Err(e) => Answer::Unreachable(e.to_string()),
        }
    }
}

impl Reporter for ApiReporter {
    async fn progress(&self, progress: &Progress) -> Answer {
        Self::answer(retry("progress", self.report_backoff, || self.client.progress(&self.job, progress)).await)
    }

    async fn heartbeat(&self) -> Answer {
        Self::answer(retry("heartbeat", self.report_backoff, || self.client.heartbeat(&self.job)).await)
    }

    async fn size(&self, request: &SizeRequest) -> Result<SizeAnswer, String> {
        retry("size", self.report_backoff, || self.client.size(&self.job, request)).await.map_err(|e| e.to_string())
    }

    async fn change_finished(&self, id: u32, report: &ChangeReport) -> Answer {
        // Long retries: nothing else reports it, and the owner waits for it.
        Self::answer(retry("change", self.finish_backoff, || self.client.change_finished(&self.job, id, report)).await)
    }

    async fn finish(&self, outcome: &Outcome) -> Result<(), String> {
        match retry("finish", self.finish_backoff, || self.client.finish(&self.job, outcome)).await {
            Ok(view) => {
                tracing::info!(state = %view.status.state(), attempt = view.attempt, "outcome reported");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Prints progress and the outcome as JSON lines on standard output.
pub struct StdoutReporter;

#[allow(clippy::print_stdout)]
fn line(kind: &str, value: &impl serde::Serialize) {
    println!("{}", serde_json::json!({ "type": kind, "data": value }));
}

impl Reporter for StdoutReporter {
    async fn progress(&self, progress: &Progress) -> Answer {
        line("progress", progress);
        Answer::Continue
    }

    async fn heartbeat(&self) -> Answer {
        Answer::Continue
    }

    async fn finish(&self, outcome: &Outcome) -> Result<(), String> {
        line("outcome", outcome);
        Ok(())
    }

    async fn change_finished(&self, id: u32, report: &ChangeReport) -> Answer {
        line("change", &serde_json::json!({ "id": id, "ok": report.ok, "message": report.message }));
        Answer::Continue
    }
}
