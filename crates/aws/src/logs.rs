//! [`CloudWatchLogSink`]: a worker's log in CloudWatch Logs, one stream per job attempt
//! (`{job}/{attempt}`) in the group the launcher named. Batches respect PutLogEvents' limits
//! (10,000 events, 1 MiB with 26 bytes of overhead per event, 256 KiB per event).
//! [`CloudWatchLogs`] reads those streams back for `GET /jobs/{id}/logs`, attempt after
//! attempt, with `GetLogEvents`' forward tokens (stable, in ingestion order) as the cursor.

use aws_sdk_cloudwatchlogs::{Client, types::InputLogEvent};
use barge_jobs::{JobId, LogError, LogLine, LogPage, LogSink, LogSource, Timestamp};

/// Largest message kept whole; longer lines are cut (PutLogEvents refuses larger events).
const MAX_EVENT_BYTES: usize = 256 * 1024 - 26;
/// Largest batch PutLogEvents accepts.
const MAX_BATCH_BYTES: usize = 1_048_576;
/// Most events in one batch.
const MAX_BATCH_EVENTS: usize = 10_000;

/// Ships log lines to one CloudWatch Logs stream.
pub struct CloudWatchLogSink {
    client: Client,
    group: String,
    stream: String,
    created: bool,
}

impl CloudWatchLogSink {
    /// The stream of attempt `attempt` of `job` in `group`.
    pub fn new(client: Client, group: &str, job: &JobId, attempt: u32) -> CloudWatchLogSink {
        CloudWatchLogSink { client, group: group.to_string(), stream: Self::stream(job, attempt), created: false }
    }

    /// The stream name of a job attempt.
    pub fn stream(job: &JobId, attempt: u32) -> String {
        format!("{job}/{attempt}")
    }

    async fn create_stream(&mut self) -> Result<(), String> {
        match self.client.create_log_stream().log_group_name(&self.group).log_stream_name(&self.stream).send().await {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_already_exists_exception()) => {}
            Err(e) => {
                return Err(format!(
                    "cannot create log stream {} in {}: {}",
                    self.stream,
                    self.group,
                    aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e)
                ));
            }
        }
        self.created = true;
        Ok(())
    }

    async fn put(&self, events: Vec<InputLogEvent>) -> Result<(), String> {
        self.client
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .set_log_events(Some(events))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot put log events: {}", aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e)))
    }
}

fn cut(text: &str) -> &str {
    if text.len() <= MAX_EVENT_BYTES {
        return text;
    }
    let mut end = MAX_EVENT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl LogSink for CloudWatchLogSink {
    async fn ship(&mut self, lines: &[LogLine]) -> Result<(), String> {
        if lines.is_empty() {
            return Ok(());
        }
        if !self.created {
            self.create_stream().await?;
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        for line in lines {
            let message = cut(&line.text);
            if !batch.is_empty() && (batch.len() == MAX_BATCH_EVENTS || bytes + message.len() + 26 > MAX_BATCH_BYTES) {
                self.put(std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
            bytes += message.len() + 26;
            let event = InputLogEvent::builder()
                .timestamp(line.at.millis())
                .message(message)
                .build()
                .map_err(|e| format!("cannot build a log event: {e}"))?;
            batch.push(event);
        }
        self.put(batch).await
    }
}

/// Reads job logs from the worker log group.
#[derive(Clone, Debug)]
pub struct CloudWatchLogs {
    client: Client,
    group: String,
}

impl CloudWatchLogs {
    /// The job logs in `group` (the workers' log group).
    pub fn new(client: Client, group: &str) -> CloudWatchLogs {
        CloudWatchLogs { client, group: group.to_string() }
    }

    /// The same, with a client from the shared AWS configuration.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, group: &str) -> CloudWatchLogs {
        CloudWatchLogs::new(Client::new(sdk), group)
    }
}

/// `{attempt}:{forward token}`; the token is empty at the start of the attempt's stream.
fn parse_cursor(cursor: Option<&str>) -> Result<(u32, Option<String>), LogError> {
    let Some(cursor) = cursor else { return Ok((1, None)) };
    let (attempt, token) = cursor.split_once(':').ok_or(LogError::BadCursor)?;
    let attempt: u32 = attempt.parse().map_err(|_| LogError::BadCursor)?;
    if attempt == 0 {
        return Err(LogError::BadCursor);
    }
    Ok((attempt, (!token.is_empty()).then(|| token.to_string())))
}

impl LogSource for CloudWatchLogs {
    async fn read(&self, job: &JobId, current: u32, after: Option<&str>, limit: usize) -> Result<LogPage, LogError> {
        let (mut attempt, mut token) = parse_cursor(after)?;
        if attempt > current.max(1) {
            return Err(LogError::BadCursor);
        }
        loop {
            let response = self
                .client
                .get_log_events()
                .log_group_name(&self.group)
                .log_stream_name(CloudWatchLogSink::stream(job, attempt))
                .start_from_head(true)
                .set_next_token(token.clone())
                .limit(i32::try_from(limit.min(10_000)).unwrap_or(10_000))
                .send()
                .await;
            let (lines, next) = match response {
                Ok(page) => {
                    let lines: Vec<LogLine> = page
                        .events()
                        .iter()
                        .map(|e| LogLine {
                            at: Timestamp::from_millis(e.timestamp().unwrap_or_default()),
                            text: e.message().unwrap_or_default().to_string(),
                        })
                        .collect();
                    (lines, page.next_forward_token().map(str::to_string).or(token.clone()))
                }
                // The attempt's worker has not logged yet (or never did).
                Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                    (Vec::new(), token.clone())
                }
                Err(e) => {
                    return Err(LogError::Unavailable(format!(
                        "GetLogEvents on {}: {}",
                        self.group,
                        aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e)
                    )));
                }
            };
            // An attempt read to its end hands over to the next one.
            if lines.is_empty() && attempt < current {
                attempt += 1;
                token = None;
                continue;
            }
            return Ok(LogPage { lines, next: format!("{attempt}:{}", next.unwrap_or_default()) });
        }
    }
}
