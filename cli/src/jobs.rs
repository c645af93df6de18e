//! Remote jobs: submitting a command as a job, and `barge jobs list|show|watch|cancel|logs`.

#![allow(clippy::print_stdout)]

use std::{
    io::{BufRead, IsTerminal, Write},
    time::Duration,
};

use barge_client::{ApiClient, Backoff, ClientError, retry};
use barge_engine::human::human_duration;
use barge_jobs::{JobId, JobSpec, JobStatus, Timestamp, api::JobView};

use crate::{
    args::{JobsCommand, OutputFormat},
    config::{self, Endpoint},
    exit as code, render, watch,
};

/// Retries of one call (submit, list, show, …): transient failures are retried for a few
/// seconds; a user at a prompt is not kept waiting longer (watching retries far longer).
const CALL: Backoff =
    Backoff { first: Duration::from_millis(250), max: Duration::from_secs(2), budget: Duration::from_secs(8) };

/// A client of the configured endpoint, or the exit code after saying why not.
async fn connect(endpoint: &Endpoint, output: OutputFormat) -> Result<ApiClient, u8> {
    config::client(endpoint).await.map_err(|message| {
        error(&message, output);
        code::USAGE
    })
}

fn error(message: &str, output: OutputFormat) {
    match output {
        OutputFormat::Json => render::json_line("error", &serde_json::json!({ "message": message })),
        OutputFormat::Text => errln!("error: {message}"),
    }
}

fn parse_id(text: &str) -> Result<JobId, String> {
    JobId::parse(text.trim())
        .ok_or_else(|| format!("{text:?} is not a job id (they look like the ids `barge jobs list` prints)"))
}

/// Submits `spec` to `endpoint`, remembers the job, then watches it (or returns at once
/// with `detach`).
pub async fn submit(spec: &JobSpec, endpoint: &Endpoint, detach: bool, output: OutputFormat) -> u8 {
    let client = match connect(endpoint, output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    // One key for every try: a retried submit never makes a second job.
    let key = JobId::random().to_string();
    let created = retry("submitting the job", CALL, || client.create(spec, Some(&key))).await;
    let view = match created {
        Ok(view) => view,
        Err(e) => return watch::report_api_error(&e, &endpoint.url, output),
    };
    config::remember(&endpoint.url, view.id.as_str());
    match output {
        OutputFormat::Json => render::json_line("submitted", &view),
        OutputFormat::Text if detach => {
            outln!("{}", view.id);
            errln!(
                "submitted job {} ({}); follow it with: barge jobs watch {}",
                view.id,
                view.command.as_str(),
                view.id
            );
        }
        OutputFormat::Text => {
            errln!("submitted job {} ({}) to {}", view.id, view.command.as_str(), endpoint.url);
            errln!("Ctrl-C stops watching; the job keeps running (barge jobs watch {})", view.id);
        }
    }
    if detach {
        return code::OK;
    }
    watch::watch(&client, &view.id, output).await
}

/// Runs a `barge jobs` command against `endpoint`.
pub async fn run(command: &JobsCommand, endpoint: &Endpoint) -> u8 {
    let output = match command {
        JobsCommand::List { output, .. }
        | JobsCommand::Show { output, .. }
        | JobsCommand::Watch { output, .. }
        | JobsCommand::Cutover { output, .. } => *output,
        JobsCommand::Cancel { .. } | JobsCommand::Logs { .. } => OutputFormat::Text,
        JobsCommand::Pause { wait, .. }
        | JobsCommand::Resume { wait, .. }
        | JobsCommand::AddTables { wait, .. }
        | JobsCommand::RemoveTables { wait, .. }
        | JobsCommand::Resync { wait, .. }
        | JobsCommand::ApplyDdl { wait, .. } => wait.output,
    };
    if let Some((_, change, _)) = command.change()
        && let Err(e) = change.check()
    {
        error(&format!("{}: {}", e.field.replace("tables", "--include-table"), e.message), output);
        return code::USAGE;
    }
    let client = match connect(endpoint, output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let id = |given: Option<&str>| -> Result<JobId, u8> {
        config::job_id(given, &endpoint.url).and_then(|text| parse_id(&text)).map_err(|message| {
            error(&message, output);
            code::USAGE
        })
    };
    let result = match command {
        JobsCommand::List { all, status, output } => list(&client, *all, status.as_deref(), *output).await,
        JobsCommand::Show { id: given, output } => match id(given.as_deref()) {
            Ok(id) => show(&client, &id, *output).await,
            Err(code) => return code,
        },
        JobsCommand::Watch { id: given, output } => match id(given.as_deref()) {
            Ok(id) => return watch::watch(&client, &id, *output).await,
            Err(code) => return code,
        },
        JobsCommand::Cancel { id: given, yes } => match id(Some(given.as_str())) {
            Ok(id) => match cancel(&client, &id, *yes).await {
                Ok(code) => return code,
                Err(e) => Err(e),
            },
            Err(code) => return code,
        },
        JobsCommand::Cutover { id: given, yes, detach, output } => match id(Some(given.as_str())) {
            Ok(id) => match cutover(&client, &id, *yes, *detach, *output).await {
                Ok(code) => return code,
                Err(e) => Err(e),
            },
            Err(code) => return code,
        },
        JobsCommand::Logs { id: given, follow, raw } => match id(given.as_deref()) {
            Ok(id) => logs(&client, &id, *follow, *raw).await,
            Err(code) => return code,
        },
        JobsCommand::Pause { .. }
        | JobsCommand::Resume { .. }
        | JobsCommand::AddTables { .. }
        | JobsCommand::RemoveTables { .. }
        | JobsCommand::Resync { .. }
        | JobsCommand::ApplyDdl { .. } => {
            let Some((given, change, wait)) = command.change() else { return code::USAGE };
            match id(Some(given)) {
                Ok(id) => match ask_change(&client, &id, change, wait.detach, wait.output).await {
                    Ok(code) => return code,
                    Err(e) => Err(e),
                },
                Err(code) => return code,
            }
        }
    };
    match result {
        Ok(()) => code::OK,
        Err(e) => watch::report_api_error(&e, &endpoint.url, output),
    }
}

/// Asks a sync job for `change`, then follows it until its worker reports it (unless
/// `detach`): exit 0 when it worked, 1 when it failed or the job ended first.
async fn ask_change(
    client: &ApiClient,
    id: &JobId,
    change: barge_jobs::SyncChange,
    detach: bool,
    output: OutputFormat,
) -> Result<u8, ClientError> {
    let view = retry("asking for the change", CALL, || client.change(id, &change)).await?;
    let Some(asked) = view.changes.iter().filter(|c| c.change == change).map(|c| c.id).max() else {
        error("the job took the change but does not list it", output);
        return Ok(code::FAILED);
    };
    if detach {
        match output {
            OutputFormat::Json => {
                render::json_line("change_requested", &serde_json::json!({ "job": id, "change": asked }))
            }
            OutputFormat::Text => {
                outln!(
                    "change {asked} requested ({}): `barge jobs show {id}` says what became of it",
                    change.describe()
                )
            }
        }
        return Ok(code::OK);
    }
    if output == OutputFormat::Text {
        errln!(
            "change {asked} requested ({}); waiting for the job's worker (Ctrl-C stops waiting, not the change)",
            change.describe()
        );
    }
    loop {
        let view = retry("reading the job", CALL, || client.get(id)).await?;
        if let Some(record) = view.changes.iter().find(|c| c.id == asked)
            && record.state.is_final()
        {
            let ok = record.state == barge_jobs::ChangeState::Succeeded;
            let message = record.message.clone().unwrap_or_default();
            match output {
                OutputFormat::Json => render::json_line("change", record),
                OutputFormat::Text if ok => outln!("{message}"),
                OutputFormat::Text => errln!("error: {} failed: {message}", change.describe()),
            }
            return Ok(if ok { code::OK } else { code::FAILED });
        }
        if view.status.state().is_terminal() {
            error(&format!("job {id} ended ({}) before its worker ran the change", view.status.state()), output);
            return Ok(code::FAILED);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => {
                errln!("stopped waiting; the change runs on: `barge jobs show {id}`");
                return Ok(code::INTERRUPTED);
            }
        }
    }
}

/// `3m`, `2h`, `5d`: how long ago.
fn age(at: Timestamp, now: Timestamp) -> String {
    let seconds = (now.millis() - at.millis()).max(0) / 1000;
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `42%` of the bytes, else tables done, else `-`.
fn progress_cell(view: &JobView) -> String {
    let Some(p) = &view.progress else { return "-".into() };
    if p.bytes_estimated > 0 {
        format!("{:.0}%", (100.0 * p.bytes_copied as f64 / p.bytes_estimated as f64).min(100.0))
    } else if p.tables_total > 0 {
        format!("{}/{} tables", p.tables_done, p.tables_total)
    } else {
        "-".into()
    }
}

async fn list(client: &ApiClient, all: bool, status: Option<&str>, output: OutputFormat) -> Result<(), ClientError> {
    let mut jobs: Vec<JobView> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page =
            retry("listing jobs", CALL, || client.list(status, if all { 100 } else { 20 }, cursor.as_deref())).await?;
        jobs.extend(page.jobs);
        cursor = page.next_cursor;
        if !all || cursor.is_none() {
            break;
        }
    }
    if output == OutputFormat::Json {
        for job in &jobs {
            render::json_line("job", job);
        }
        return Ok(());
    }
    if jobs.is_empty() {
        errln!("no jobs{}", status.map(|s| format!(" in state {s}")).unwrap_or_default());
        return Ok(());
    }
    let now = Timestamp::now();
    let rows: Vec<[String; 6]> = jobs
        .iter()
        .map(|j| {
            let phase = match j.status {
                JobStatus::Running { phase } => crate::display::phase_text(phase).to_string(),
                _ => "-".into(),
            };
            [
                j.id.to_string(),
                j.command.as_str().to_string(),
                j.status.state().to_string(),
                phase,
                progress_cell(j),
                age(j.created_at, now),
            ]
        })
        .collect();
    let header = ["ID", "COMMAND", "STATUS", "PHASE", "PROGRESS", "AGE"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let text: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        outln!("{}", text.join("  ").trim_end());
    };
    line(&header.map(String::from));
    for row in &rows {
        line(row);
    }
    if !all && cursor.is_some() {
        errln!("(the 20 most recent; --all lists every job)");
    }
    Ok(())
}

async fn show(client: &ApiClient, id: &JobId, output: OutputFormat) -> Result<(), ClientError> {
    let view = retry("reading the job", CALL, || client.get(id)).await?;
    if output == OutputFormat::Json {
        render::json_line("job", &view);
        return Ok(());
    }
    let now = Timestamp::now();
    let when = |t: Option<Timestamp>| t.map(|t| format!("{} ({} ago)", t.rfc3339(), age(t, now))).unwrap_or("-".into());
    outln!("job       {}", view.id);
    outln!("command   {}", view.command.as_str());
    outln!(
        "status    {}{}",
        watch::status_text(&view.status),
        if view.cancel_requested { " (cancel requested)" } else { "" }
    );
    outln!("source    {}", view.source);
    outln!("target    {}", view.target);
    let filter = serde_json::to_value(&view.filter).unwrap_or_default();
    if filter.as_object().is_some_and(|m| !m.is_empty()) {
        outln!("filter    {filter}");
    }
    let options = serde_json::to_value(&view.options).unwrap_or_default();
    if options.as_object().is_some_and(|m| !m.is_empty()) {
        outln!("options   {options}");
    }
    outln!("attempt   {} of {}", view.attempt, view.max_attempts);
    if let Some(failure) = &view.last_failure {
        outln!("          the previous attempt ended: {failure}");
    }
    outln!("worker    {}", view.instance_id.as_deref().unwrap_or("-"));
    for change in &view.changes {
        let state = match change.state {
            barge_jobs::ChangeState::Requested => "waiting",
            barge_jobs::ChangeState::Succeeded => "done",
            barge_jobs::ChangeState::Failed => "FAILED",
        };
        outln!(
            "change {}  {} ({state}, asked {}){}",
            change.id,
            change.change.describe(),
            age(change.requested_at, now),
            change.message.as_deref().map_or(String::new(), |m| format!(": {m}"))
        );
    }
    if let Some(sizing) = &view.sizing {
        outln!("size      {}", sizing.reason);
    }
    if view.cleaning_up {
        outln!("cleanup   a worker is removing the replication objects the sync left");
    }
    if let Some(leftover) = &view.leftover {
        outln!("left      {leftover}");
    }
    outln!("created   {}", when(Some(view.created_at)));
    outln!("started   {}", when(view.started_at));
    outln!("heartbeat {}", when(view.heartbeat_at));
    outln!("finished  {}", when(view.finished_at));
    if let (Some(end), Some(start)) = (view.finished_at.or(Some(now)), view.started_at) {
        outln!("ran for   {}", human_duration((end.millis() - start.millis()).max(0) as f64 / 1000.0));
    }
    if let Some(p) = &view.progress {
        let line = crate::display::progress_line(p);
        if !line.is_empty() {
            outln!("progress  {line}");
        }
        if let Some(message) = &p.message {
            outln!("message   {message}");
        }
        if let Some(sizing) = &p.sizing {
            outln!("sizing    {sizing}");
        }
    }
    if view.status.state().is_terminal() {
        outln!();
        outln!("{}", watch::outcome_text(&view));
    }
    Ok(())
}

/// Asks (unless `yes`), then requests the cancel; returns the exit code.
async fn cancel(client: &ApiClient, id: &JobId, yes: bool) -> Result<u8, ClientError> {
    if !yes {
        let view = retry("reading the job", CALL, || client.get(id)).await?;
        if view.status.state().is_terminal() {
            errln!("job {id} already ended: {}", view.status.state());
            return Ok(code::OK);
        }
        let question = format!(
            "Cancel job {id} ({}, {})? What committed is kept.",
            view.command.as_str(),
            watch::status_text(&view.status)
        );
        match confirm(&question, &format!("cancelling job {id}")) {
            Ok(true) => {}
            Ok(false) => {
                errln!("not cancelled");
                return Ok(code::OK);
            }
            Err(code) => return Ok(code),
        }
    }
    let view = retry("cancelling the job", CALL, || client.cancel(id)).await?;
    if view.status.state().is_terminal() {
        outln!("job {id} is {}", view.status.state());
    } else {
        outln!("cancel requested: the worker stops at its next heartbeat; follow it with barge jobs watch {id}");
    }
    Ok(code::OK)
}

async fn cutover(
    client: &ApiClient,
    id: &JobId,
    yes: bool,
    detach: bool,
    output: OutputFormat,
) -> Result<u8, ClientError> {
    if !yes {
        let view = retry("reading the job", CALL, || client.get(id)).await?;
        if view.status.state().is_terminal() {
            errln!("job {id} already ended: {}", view.status.state());
            return Ok(code::FAILED);
        }
        let lag = view
            .progress
            .as_ref()
            .and_then(|p| p.cdc_lag_bytes)
            .map_or(String::new(), |b| format!(", lag {}", barge_engine::human::human_bytes(b)));
        let question = format!(
            "Cut job {id} over ({}{lag})? Stop writes to the source first: writes after the cutover begins are not copied.",
            watch::status_text(&view.status)
        );
        match confirm(&question, &format!("cutting job {id} over")) {
            Ok(true) => {}
            Ok(false) => {
                errln!("not cut over");
                return Ok(code::OK);
            }
            Err(code) => return Ok(code),
        }
    }
    let view = retry("asking for the cutover", CALL, || client.cutover(id)).await?;
    if detach {
        match output {
            OutputFormat::Json => render::json_line("cutover_requested", &view),
            OutputFormat::Text => {
                outln!(
                    "cutover requested: the worker cuts over at its next report; follow it with barge jobs watch {id}"
                )
            }
        }
        return Ok(code::OK);
    }
    if output == OutputFormat::Text {
        errln!("cutover requested; watching (Ctrl-C stops watching, not the cutover)");
    }
    Ok(watch::watch(client, id, output).await)
}

/// Asks `question` on the terminal: whether the answer is yes, or the usage exit code when
/// there is no terminal to ask (`what` needs confirmation: pass --yes).
pub(crate) fn confirm(question: &str, what: &str) -> Result<bool, u8> {
    if !std::io::stdin().is_terminal() {
        errln!("error: {what} needs confirmation: pass --yes");
        return Err(code::USAGE);
    }
    err!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

/// Longest field value a readable log line shows.
const MAX_FIELD_CHARS: usize = 160;

/// One log line for people: `time LEVEL message key=value …`, or the line as it is. The
/// worker's lines are tracing JSON, fields at the top level (or under `fields`).
fn human_line(text: &str) -> String {
    let Ok(serde_json::Value::Object(line)) = serde_json::from_str::<serde_json::Value>(text) else {
        return text.to_string();
    };
    let time = line.get("timestamp").and_then(|t| t.as_str()).unwrap_or_default();
    let level = line.get("level").and_then(|l| l.as_str()).unwrap_or_default();
    let mut fields: Vec<(&String, &serde_json::Value)> = line.iter().collect();
    if let Some(serde_json::Value::Object(nested)) = line.get("fields") {
        fields.extend(nested.iter());
    }
    let mut out = format!("{time} {level:>5}");
    if let Some(message) = fields.iter().find(|(name, _)| name.as_str() == "message").and_then(|(_, m)| m.as_str()) {
        out.push(' ');
        out.push_str(message);
    }
    const FRAME: [&str; 7] = ["timestamp", "level", "message", "target", "fields", "span", "spans"];
    for (name, value) in fields.iter().filter(|(name, _)| !FRAME.contains(&name.as_str())) {
        let value = value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
        // Whole reports (a plan, a verify report) are for --raw.
        let value = match value.char_indices().nth(MAX_FIELD_CHARS) {
            Some((cut, _)) => format!("{}… (--raw shows all)", &value[..cut]),
            None => value,
        };
        out.push_str(&format!(" {name}={value}"));
    }
    out
}

async fn logs(client: &ApiClient, id: &JobId, follow: bool, raw: bool) -> Result<(), ClientError> {
    let mut after: Option<String> = None;
    // Set once the job has ended: one more read then takes what its worker wrote last.
    let mut ended = false;
    let stdout = std::io::stdout();
    loop {
        let page = retry("reading the job's log", CALL, || client.logs(id, after.as_deref(), None)).await?;
        for line in &page.lines {
            let text = if raw { std::borrow::Cow::Borrowed(line.text.as_str()) } else { human_line(&line.text).into() };
            if writeln!(stdout.lock(), "{}", barge_vocab::strip_controls(&text)).is_err() {
                return Ok(()); // The reader went away (`| head`).
            }
        }
        let _ = stdout.lock().flush();
        after = Some(page.next);
        if !page.lines.is_empty() {
            continue;
        }
        if !follow || ended {
            return Ok(());
        }
        if retry("reading the job", CALL, || client.get(id)).await?.status.state().is_terminal() {
            ended = true;
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_read_as_time_level_message_fields() {
        let flat = r#"{"timestamp":"2026-11-23T10:00:00.123Z","level":"INFO","message":"claimed","attempt":2,"command":"init","target":"barge_worker"}"#;
        assert_eq!(human_line(flat), "2026-11-23T10:00:00.123Z  INFO claimed attempt=2 command=init");
        let nested =
            r#"{"timestamp":"2026-11-23T10:00:00.123Z","level":"WARN","fields":{"message":"slow","table":"a.b"}}"#;
        assert_eq!(human_line(nested), "2026-11-23T10:00:00.123Z  WARN slow table=a.b");
        assert_eq!(human_line("thread 'main' panicked"), "thread 'main' panicked");
        let long = format!(r#"{{"level":"INFO","message":"plan","plan":"{}"}}"#, "x".repeat(500));
        let shown = human_line(&long);
        assert!(shown.len() < 250 && shown.ends_with("(--raw shows all)"), "{shown}");
    }

    #[test]
    fn ages_are_short() {
        let now = Timestamp::from_millis(10_000_000_000);
        let ago = |s: i64| age(Timestamp::from_millis(now.millis() - s * 1000), now);
        assert_eq!([ago(5), ago(300), ago(7200), ago(3 * 86_400)], ["5s", "5m", "2h", "3d"]);
    }
}
