//! Watching a remote job: polls `GET /jobs/{id}` (every second; with backoff and a visible
//! "reconnecting…" while the API cannot be reached) and renders what changed — bars on a
//! terminal (overall bytes with rate and ETA, a line per active table, phase changes, CDC
//! lag), plain lines otherwise, JSON lines with `--output json`. Ctrl-C stops watching, not
//! the job. Ends with the job's outcome and its exit code.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use barge_client::{ApiClient, Backoff, ClientError};
use barge_engine::human::human_duration;
use barge_jobs::{JobId, JobStatus, Phase, State, api::JobView};

use crate::{
    args::OutputFormat,
    display::{Display, phase_text},
    render,
};

/// How long the API may stay unreachable before watching gives up.
const UNREACHABLE_BUDGET: Duration = Duration::from_secs(600);
/// Between polls while all is well.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// What a failed API call means for the user, and the exit code.
pub fn api_error(e: &ClientError, endpoint: &str) -> (String, u8) {
    let aws = endpoint.starts_with("https://");
    match e {
        ClientError::Transport { .. } => (
            format!(
                "{e}\n  check the endpoint (`barge configure`, --api or BARGE_API) and the network{}",
                if aws { "" } else { "; is `barge serve` running?" }
            ),
            crate::exit::UNREACHABLE,
        ),
        ClientError::Api { status: 401, message, .. } => (
            format!(
                "the barge API did not accept the credentials: {message}\n  {}",
                if aws {
                    "check your AWS credentials (`aws sts get-caller-identity`); they may have expired (`aws sso login`)"
                } else {
                    "the token does not match this barge serve: set BARGE_DATA_DIR to its data directory or BARGE_TOKEN_FILE to its token"
                }
            ),
            crate::exit::FAILED,
        ),
        ClientError::Api { status: 403, message, .. } => (
            format!(
                "the barge API refused the request: {message}\n  {}",
                if aws {
                    "your AWS identity needs execute-api:Invoke on the API's user routes (arn:aws:execute-api:REGION:ACCOUNT:API_ID/*/*/jobs and /jobs/*); ask the stack's administrator for barge's user policy"
                } else {
                    "this token may only call the routes of its own job"
                }
            ),
            crate::exit::FAILED,
        ),
        ClientError::Api { status: 404, message, .. } => {
            (format!("{message}\n  `barge jobs list` shows your jobs"), crate::exit::FAILED)
        }
        ClientError::Signing(_) => (
            format!(
                "{e}\n  barge signs requests to AWS with your AWS credentials: configure them as for the AWS CLI (aws configure, aws sso login, AWS_PROFILE, or an instance role)"
            ),
            crate::exit::FAILED,
        ),
        ClientError::Api { status: 400 | 422, .. } => (e.to_string(), crate::exit::USAGE),
        ClientError::Api { status, .. } if *status >= 500 => {
            (format!("{e}\n  the barge API is failing; try again shortly"), crate::exit::UNREACHABLE)
        }
        _ => (e.to_string(), crate::exit::FAILED),
    }
}

/// Prints an API error and returns its exit code.
pub fn report_api_error(e: &ClientError, endpoint: &str, output: OutputFormat) -> u8 {
    let (message, code) = api_error(e, endpoint);
    match output {
        OutputFormat::Json => render::json_line("error", &serde_json::json!({ "message": message, "exit_code": code })),
        OutputFormat::Text => errln!("error: {message}"),
    }
    code
}

/// `running (copying rows)`, `failed`, …
pub fn status_text(status: &JobStatus) -> String {
    match status {
        JobStatus::Running { phase } => format!("running ({})", phase_text(*phase)),
        other => other.state().to_string(),
    }
}

/// What the user reads when the job has ended.
pub fn outcome_text(view: &JobView) -> String {
    let id = &view.id;
    let took = match (view.finished_at, Some(view.created_at)) {
        (Some(end), Some(start)) => {
            format!(" after {}", human_duration((end.millis() - start.millis()) as f64 / 1000.0))
        }
        _ => String::new(),
    };
    let message = view.progress.as_ref().and_then(|p| p.message.clone());
    match &view.status {
        JobStatus::Succeeded => format!(
            "job {id} ({}) succeeded{took}{}",
            view.command.as_str(),
            message.map(|m| format!(": {m}")).unwrap_or_default()
        ),
        JobStatus::Failed { reason, retryable } => {
            let next = if *retryable {
                format!(
                    "it failed on each of its {} attempt(s) in ways that may pass (lost connections, capacity); once the cause is gone, submit it again{}",
                    view.attempt,
                    if view.command == barge_jobs::Command::Init {
                        " with --resume to keep what committed"
                    } else {
                        ""
                    }
                )
            } else {
                "fix the cause, then submit it again".to_string()
            };
            format!(
                "job {id} ({}) failed{took}: {reason}\n  next: {next}; the worker's log: barge jobs logs {id}",
                view.command.as_str()
            )
        }
        JobStatus::Cancelled => format!(
            "job {id} ({}) was cancelled{took}; what committed is kept{}",
            view.command.as_str(),
            if view.command == barge_jobs::Command::Init { " (run it again with --resume to continue)" } else { "" }
        ),
        JobStatus::TimedOut => format!(
            "job {id} ({}) ran past its maximum duration ({}) and was stopped; submit it again with a longer --max-duration{}",
            view.command.as_str(),
            human_duration(view.options.max_duration_seconds() as f64),
            if view.command == barge_jobs::Command::Init { " and --resume" } else { "" }
        ),
        other => format!("job {id} is {}", status_text(other)),
    }
}

/// Renders a job's views as the output format and terminal allow.
struct Screen {
    /// `None` with `--output json`.
    display: Option<Display>,
    /// (state, phase, attempt) last shown.
    shown: Option<(State, Option<Phase>, u32)>,
    message: Option<String>,
    last_json: Option<serde_json::Value>,
    reconnecting: bool,
}

impl Screen {
    fn new(output: OutputFormat) -> Screen {
        let display = match output {
            OutputFormat::Json => None,
            OutputFormat::Text => Some(Display::new()),
        };
        Screen { display, shown: None, message: None, last_json: None, reconnecting: false }
    }

    fn line(&self, text: &str) {
        if let Some(display) = &self.display {
            display.line(text);
        }
    }

    fn show(&mut self, view: &JobView) {
        if self.display.is_none() {
            let value = serde_json::to_value(view).unwrap_or_default();
            // `updated_at` moves with every heartbeat; print only what changed otherwise.
            let mut key = value.clone();
            if let Some(map) = key.as_object_mut() {
                map.remove("updated_at");
                map.remove("heartbeat_at");
            }
            if self.last_json.as_ref() != Some(&key) {
                render::json_line("job", view);
                self.last_json = Some(key);
            }
            return;
        }
        // Names and messages in the view come from the source database: escaped for the
        // terminal (JSON escapes them itself).
        let view = &crate::render::terminal_safe(view);
        if self.reconnecting {
            self.reconnecting = false;
            self.line("reconnected");
        }
        let phase = match view.status {
            JobStatus::Running { phase } => Some(phase),
            _ => None,
        };
        let now = (view.status.state(), phase, view.attempt);
        if self.shown != Some(now) {
            if self.shown.is_some_and(|(_, _, attempt)| attempt != view.attempt) {
                self.line(&format!(
                    "attempt {} of {}{}",
                    view.attempt,
                    view.max_attempts,
                    view.last_failure.as_deref().map(|f| format!(" (the last one ended: {f})")).unwrap_or_default()
                ));
            }
            let text = match &view.status {
                JobStatus::Queued => "queued".to_string(),
                JobStatus::Launching => format!(
                    "launching a worker{}",
                    view.instance_id.as_deref().map(|i| format!(" ({i})")).unwrap_or_default()
                ),
                JobStatus::Running { phase: Phase::Streaming } => format!(
                    "{}: the target follows the source; once writes to the source have stopped, switch with `barge jobs cutover {}`",
                    phase_text(Phase::Streaming),
                    view.id
                ),
                JobStatus::Running { phase } => phase_text(*phase).to_string(),
                other => other.state().to_string(),
            };
            if !view.status.state().is_terminal() {
                self.line(&format!("[{}] {text}", view.id));
            }
            self.shown = Some(now);
        }
        let Some(progress) = &view.progress else { return };
        if progress.message.is_some() && progress.message != self.message {
            self.message = progress.message.clone();
            if let Some(message) = &self.message
                && !view.status.state().is_terminal()
            {
                self.line(message);
            }
        }
        let label = match view.status {
            JobStatus::Running { phase } => phase_text(phase).to_string(),
            _ => view.status.state().to_string(),
        };
        if let Some(display) = &mut self.display {
            display.show(&label, progress);
        }
    }

    fn reconnecting(&mut self, e: &ClientError, wait: Duration) {
        match &self.display {
            None => render::json_line(
                "reconnecting",
                &serde_json::json!({ "error": e.to_string(), "retry_in_seconds": wait.as_secs_f64() }),
            ),
            Some(display) => {
                display.status(&format!("reconnecting… ({e}); next try in {:.0}s", wait.as_secs_f64().ceil()))
            }
        }
        self.reconnecting = true;
    }

    fn clear(&self) {
        if let Some(display) = &self.display {
            display.clear();
        }
    }
}

/// Watches job `id` until it ends (its exit code), the user detaches (130) or the API stays
/// unreachable (5).
pub async fn watch(client: &ApiClient, id: &JobId, output: OutputFormat) -> u8 {
    let mut screen = Screen::new(output);
    let ended = tokio::select! {
        code = follow(client, id, &mut screen) => Some(code),
        _ = tokio::signal::ctrl_c() => None,
    };
    if let Some(code) = ended {
        return code;
    }
    screen.clear();
    match output {
        OutputFormat::Json => render::json_line("detached", &serde_json::json!({ "id": id })),
        OutputFormat::Text => errln!("stopped watching; the job keeps running: barge jobs watch {id}"),
    }
    crate::exit::INTERRUPTED
}

async fn follow(client: &ApiClient, id: &JobId, screen: &mut Screen) -> u8 {
    let backoff = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(15), budget: UNREACHABLE_BUDGET };
    let mut failing_since: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        match client.get(id).await {
            Ok(view) => {
                failing_since = None;
                failures = 0;
                screen.show(&view);
                if view.status.state().is_terminal() {
                    screen.clear();
                    match screen.display {
                        None => render::json_line("end", &view),
                        Some(_) => outln!("{}", outcome_text(&view)),
                    }
                    return crate::exit::of_state(view.status.state());
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
            Err(e) if e.retryable() && failing_since.is_none_or(|since| since.elapsed() < backoff.budget) => {
                failing_since.get_or_insert_with(Instant::now);
                failures += 1;
                let wait = backoff.wait(failures, barge_client::jitter());
                screen.reconnecting(&e, wait);
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                screen.clear();
                let output = if screen.display.is_none() { OutputFormat::Json } else { OutputFormat::Text };
                let code = report_api_error(&e, client.endpoint(), output);
                if code == crate::exit::UNREACHABLE {
                    errln!("the job may still be running: barge jobs watch {id}");
                }
                return code;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_say_what_to_do() {
        let api = |status: u16| ClientError::Api { status, code: "x".into(), message: "refused".into() };
        let aws = "https://abc.execute-api.eu-west-1.amazonaws.com/";
        let (text, code) = api_error(&api(403), aws);
        assert_eq!(code, 1);
        assert!(text.contains("execute-api:Invoke"), "{text}");
        let (text, _) = api_error(&api(401), aws);
        assert!(text.contains("aws sso login"), "{text}");
        let (text, _) = api_error(&api(401), "http://127.0.0.1:7447/");
        assert!(text.contains("BARGE_TOKEN_FILE"), "{text}");
        assert_eq!(api_error(&api(422), aws).1, 2);
        assert_eq!(api_error(&api(503), aws).1, 5);
        let unreachable = ClientError::Transport { endpoint: aws.into(), detail: "connection refused".into() };
        let (text, code) = api_error(&unreachable, aws);
        assert_eq!(code, 5);
        assert!(text.contains("barge configure"), "{text}");
    }
}
