//! The worker's log: `tracing` events as JSON lines, redacted, shipped in batches to a
//! [`LogSink`] (CloudWatch Logs on AWS, a file locally). Every line passes [`Redactor`]: URLs
//! lose their passwords and the job's own passwords are replaced wherever they appear, so a
//! credential that reached a message by any path still never reaches the log.

use std::{
    io::Write,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use barge_jobs::{LogLine, LogSink, Timestamp};
use tokio::sync::{mpsc, oneshot};
use tracing_subscriber::{EnvFilter, fmt::MakeWriter, layer::SubscriberExt, util::SubscriberInitExt};

/// Removes credentials from log lines.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    /// Replaces `secret` from now on: as given, percent-encoded (as in a URL), and escaped as
    /// JSON and Rust's `{:?}` escape it (a log line is JSON: a `"` or `\` in a password
    /// reaches the line as `\"` or `\\`).
    pub fn add(&self, secret: &str) {
        if secret.len() < 3 {
            // Too short to replace without mangling ordinary text; URL redaction still applies.
            return;
        }
        let json = serde_json::to_string(secret).unwrap_or_default();
        let debug = format!("{secret:?}");
        let forms = [
            secret.to_string(),
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
            barge_vocab::conn::encode(secret),
            json.get(1..json.len().saturating_sub(1)).unwrap_or_default().to_string(),
            debug.get(1..debug.len().saturating_sub(1)).unwrap_or_default().to_string(),
        ];
        let mut secrets = self.secrets.write().unwrap_or_else(PoisonError::into_inner);
        for form in forms {
            if form.len() >= 3 && !secrets.contains(&form) {
                secrets.push(form);
            }
        }
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// The passwords in a spec's URLs (`user:password@` and `password=` parameters), read by
    /// the same parser the API checked them with.
    pub fn add_urls<'a>(&self, urls: impl IntoIterator<Item = &'a str>) {
        for raw in urls {
            if let Ok(params) = barge_vocab::ConnUrl::new(raw).parse()
                && let Some(password) = &params.password
            {
                self.add(password.expose());
            }
            // The raw text between "user:" and the last "@", whatever it holds.
            if let Some((_, rest)) = raw.split_once("://")
                && let Some((userinfo, _)) = rest.rsplit_once('@')
                && let Some((_, password)) = userinfo.split_once(':')
            {
                self.add(password);
                if let Ok(decoded) = percent_decode(password) {
                    self.add(&decoded);
                }
            }
        }
    }

    /// `text` without credentials.
    pub fn redact(&self, text: &str) -> String {
        let mut text = barge_engine::redact(text);
        for secret in self.secrets.read().unwrap_or_else(PoisonError::into_inner).iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

fn percent_decode(text: &str) -> Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(text).decode_utf8().map(|decoded| decoded.into_owned())
}

enum Message {
    Line(LogLine),
    Flush(oneshot::Sender<()>),
}

/// Lines waiting for the sink; beyond this the newest are dropped (and counted).
const QUEUE: usize = 20_000;
/// Lines per batch.
const BATCH: usize = 1_000;
/// Longest a line waits before it is shipped.
const LINGER: Duration = Duration::from_secs(1);

/// The handle on the log pipeline: flush it before the process exits.
#[derive(Clone)]
pub struct Logs {
    sender: mpsc::Sender<Message>,
    redactor: Redactor,
}

impl Logs {
    /// Starts shipping to `sink`: every line is redacted by `redactor`.
    pub fn start<S: LogSink>(mut sink: S, redactor: Redactor) -> Logs {
        let (sender, mut receiver) = mpsc::channel::<Message>(QUEUE);
        tokio::spawn(async move {
            let mut batch: Vec<LogLine> = Vec::new();
            let mut failed_once = false;
            loop {
                let message = if batch.is_empty() {
                    receiver.recv().await
                } else {
                    match tokio::time::timeout(LINGER, receiver.recv()).await {
                        Ok(message) => message,
                        Err(_) => {
                            ship(&mut sink, &mut batch, &mut failed_once).await;
                            continue;
                        }
                    }
                };
                match message {
                    Some(Message::Line(line)) => {
                        batch.push(line);
                        if batch.len() >= BATCH {
                            ship(&mut sink, &mut batch, &mut failed_once).await;
                        }
                    }
                    Some(Message::Flush(done)) => {
                        ship(&mut sink, &mut batch, &mut failed_once).await;
                        let _ = done.send(());
                    }
                    None => {
                        ship(&mut sink, &mut batch, &mut failed_once).await;
                        break;
                    }
                }
            }
        });
        Logs { sender, redactor }
    }

    /// Ships what was logged so far (waits at most `timeout`).
    pub async fn flush(&self, timeout: Duration) {
        let (done, shipped) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(timeout, shipped).await;
        }
    }

    /// Installs the global `tracing` subscriber: JSON lines to this pipeline (and to
    /// standard error too when `also_stderr`, e.g. for the journal on an instance).
    pub fn install(&self, also_stderr: bool) {
        let filter = EnvFilter::try_from_env("BARGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
        let shipped = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(self.clone());
        let stderr = also_stderr.then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(RedactingStderr(self.redactor.clone()))
        });
        let _ = tracing_subscriber::registry().with(filter).with(shipped).with(stderr).try_init();
    }
}

async fn ship<S: LogSink>(sink: &mut S, batch: &mut Vec<LogLine>, failed_once: &mut bool) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = sink.ship(batch).await
        && !*failed_once
    {
        *failed_once = true;
        // Not through tracing: that would feed the failing sink.
        eprintln!("barge-worker: log lines were lost: {e}");
    }
    batch.clear();
}

/// Log lines on standard output (`barge-worker run`).
pub struct StdoutSink;

impl LogSink for StdoutSink {
    async fn ship(&mut self, lines: &[LogLine]) -> Result<(), String> {
        let mut out = std::io::stdout().lock();
        for line in lines {
            writeln!(out, "{}", line.text).map_err(|e| format!("cannot write to standard output: {e}"))?;
        }
        Ok(())
    }
}

/// Drops lines (an instance launched without a log group keeps its journal only).
pub struct NullSink;

impl LogSink for NullSink {
    async fn ship(&mut self, _lines: &[LogLine]) -> Result<(), String> {
        Ok(())
    }
}

/// Where one formatted event goes.
enum Destination {
    /// The sink, a line at a time.
    Shipped(Logs),
    /// Standard error.
    Stderr(Redactor),
}

/// One event's bytes, redacted and delivered when the formatter is done with it.
pub struct EventWriter {
    buffer: Vec<u8>,
    to: Destination,
}

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buffer);
        match &self.to {
            Destination::Shipped(logs) => {
                let at = Timestamp::now();
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let line = LogLine { at, text: logs.redactor.redact(line) };
                    // A full queue drops the line rather than stall the engine.
                    let _ = logs.sender.try_send(Message::Line(line));
                }
            }
            Destination::Stderr(redactor) => {
                let _ = std::io::stderr().write_all(redactor.redact(&text).as_bytes());
            }
        }
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter { buffer: Vec::with_capacity(256), to: Destination::Shipped(self.clone()) }
    }
}

/// Standard error, redacted.
struct RedactingStderr(Redactor);

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter { buffer: Vec::with_capacity(256), to: Destination::Stderr(self.0.clone()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_replaced_in_every_form() {
        let redactor = Redactor::default();
        redactor.add_urls(["postgres://app:s%3Bcr%24t%20pw@db:5432/app", "postgres://u@h/db?password=qu%C3%A9ry-pw"]);
        let line = r#"{"message":"auth failed for s;cr$t pw (s%3Bcr%24t%20pw), other quéry-pw"}"#;
        let redacted = redactor.redact(line);
        for secret in ["s;cr$t pw", "s%3Bcr%24t%20pw", "quéry-pw"] {
            assert!(!redacted.contains(secret), "{secret} in {redacted}");
        }
        assert!(redacted.contains("auth failed for ***"), "{redacted}");
        assert_eq!(redactor.redact("postgres://a:b@c/d"), barge_engine::redact("postgres://a:b@c/d"));
    }

    #[test]
    fn passwords_with_quotes_and_backslashes_never_survive_json_escaping() {
        for password in ["pa\"ss\\wo'rd", "\"\"\"", "back\\slash", "tab\there", "uni\u{7}code"] {
            let redactor = Redactor::default();
            let url = format!("postgres://app:{}@db:5432/app", barge_vocab::conn::encode(password));
            redactor.add_urls([url.as_str()]);
            // A log line as tracing's JSON formatter writes it, and a Debug rendering.
            let line = serde_json::json!({"fields": {"message": format!("login failed: {password}")}}).to_string();
            for text in [line, format!("error: {password:?}"), format!("raw {password} end")] {
                let redacted = redactor.redact(&text);
                assert!(!redacted.contains(password), "{password:?} in {redacted}");
                let escaped = serde_json::to_string(password).unwrap();
                assert!(!redacted.contains(&escaped[1..escaped.len() - 1]), "{password:?} in {redacted}");
                assert!(redacted.contains("***"), "{redacted}");
            }
        }
    }
}
