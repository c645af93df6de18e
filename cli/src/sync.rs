//! `barge init --sync` / `barge sync`, `barge sync status|stop` and `barge cutover` on this
//! machine: the engine's [`barge_engine::sync`] with Ctrl-C handling and rendering.

#![allow(clippy::print_stdout)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use barge_engine::{
    Error, Plan, ProgressSink, Request,
    sync::{self, CutoverOptions, ReplicationStatus, Signal, SyncReport},
};
use tokio::sync::watch;

use crate::{
    args::{CutoverArgs, OutputFormat, SyncApplyDdlArgs, SyncPauseArgs, SyncStatusArgs, SyncStopArgs, SyncTarget},
    exit::{FAILED, INTERRUPTED, OK},
    render,
    render::report_error,
};

/// How a local sync set-up ended.
pub(crate) enum Started {
    /// Copied; the target streams.
    Done(SyncReport),
    /// Failed (what it created was removed).
    Failed(Error),
    /// Ctrl-C: what it created was removed, unless the user pressed Ctrl-C again.
    Interrupted {
        /// Whether the removal finished.
        cleaned: bool,
    },
}

/// Copies and subscribes; a Ctrl-C asks the engine to remove what it created (a second one
/// leaves at once).
pub(crate) async fn start(request: &Request, plan: &Plan, sink: Arc<dyn ProgressSink>) -> Started {
    let (control, signals) = watch::channel(Signal::Run);
    let run = sync::start(request, plan, sink, signals);
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => return match result {
            Ok(report) => Started::Done(report),
            Err(e) => Started::Failed(e),
        },
        _ = tokio::signal::ctrl_c() => {}
    }
    errln!("interrupted: removing the replication slot, publication and subscription (Ctrl-C again leaves them)");
    let _ = control.send(Signal::Cancel);
    tokio::select! {
        _ = &mut run => Started::Interrupted { cleaned: true },
        _ = tokio::signal::ctrl_c() => Started::Interrupted { cleaned: false },
    }
}

/// Prints how a set-up ended; returns the exit code.
pub(crate) fn report_start(started: Started, output: OutputFormat) -> u8 {
    match started {
        Started::Done(report) => {
            match output {
                OutputFormat::Json => render::json_line("sync", &report),
                OutputFormat::Text => {
                    render::init_report(&report.init);
                    outln!(
                        "Replication is running: the target applies the source's changes ({}).",
                        report.names.join(", ")
                    );
                    outln!("  barge sync status --watch   lag, apply rate, schema changes");
                    outln!("  barge cutover               once writes to the source have stopped");
                    outln!("  barge sync stop             remove the replication, keep the copy");
                }
            }
            OK
        }
        Started::Failed(e) => {
            let code = report_error(&e, output);
            if output == OutputFormat::Text && !matches!(e, Error::Invalid(_) | Error::NotFound(_) | Error::Url { .. })
            {
                errln!(
                    "barge removed the replication objects it had created; the copied rows stay (run again with --drop-existing to start over)"
                );
            }
            code
        }
        Started::Interrupted { cleaned: true } => {
            errln!("interrupted: the replication objects were removed; the copied rows stay");
            INTERRUPTED
        }
        Started::Interrupted { cleaned: false } => {
            errln!(
                "interrupted: replication objects may be left on the servers; `barge sync stop` removes them (an orphaned slot keeps WAL on the source)"
            );
            INTERRUPTED
        }
    }
}

/// `barge sync status [--watch]`: exit 1 when the source's schema changed or replication is
/// not streaming.
pub(crate) async fn status(args: &SyncStatusArgs) -> u8 {
    let request = match args.sync.request(None) {
        Ok(request) => request,
        Err(e) => return report_error(&e, args.output),
    };
    let mut previous: Option<(ReplicationStatus, Instant)> = None;
    loop {
        let at = Instant::now();
        let status = match sync::status(&request).await {
            Ok(status) => status,
            Err(e) => return report_error(&e, args.output),
        };
        let status = match &previous {
            Some((earlier, when)) => status.with_rates(earlier, at.duration_since(*when).as_secs_f64()),
            None => status,
        };
        match args.output {
            OutputFormat::Json => render::json_line("sync_status", &status),
            OutputFormat::Text => {
                if previous.is_some() {
                    outln!();
                }
                render::sync_status(&status);
            }
        }
        if !status.schema_changes.is_empty() {
            if args.output == OutputFormat::Text {
                errln!(
                    "error: the source's schema changed since the copy ({}); logical replication does not carry DDL, so the target must follow: `barge sync apply-ddl` applies what adds to it, `--destructive` also runs the statements named",
                    status.schema_changes.join("; ")
                );
            }
            return FAILED;
        }
        if !status.invalidated().is_empty() {
            return FAILED;
        }
        if args.watch {
            // Watching is when the WAL guard acts (the sync's --wal-limit).
            let sink: Arc<dyn ProgressSink> = Arc::new(|event: barge_engine::Event| {
                if let barge_engine::Event::Warning { message } = event {
                    errln!("warning: {message}");
                }
            });
            if let Err(e) = sync::guard(&request, &status, sink).await {
                return report_error(&e, args.output);
            }
        } else {
            // A paused sync is as asked; a slot over the sync's limit is not.
            return if (status.streaming() || status.paused()) && !status.wal_limit_reached { OK } else { FAILED };
        }
        previous = Some((status, at));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = tokio::signal::ctrl_c() => return OK,
        }
    }
}

/// `barge sync pause` (`pause`) and `barge sync resume`.
pub(crate) async fn pause(args: &SyncPauseArgs, pause: bool) -> u8 {
    let request = match args.sync.request(None) {
        Ok(request) => request,
        Err(e) => return report_error(&e, args.output),
    };
    let result = if pause { sync::pause(&request).await } else { sync::resume(&request).await };
    match result {
        Ok(report) => {
            match args.output {
                OutputFormat::Json => render::json_line(if pause { "paused" } else { "resumed" }, &report),
                OutputFormat::Text => {
                    let (done, already) =
                        if pause { ("paused", "already paused") } else { ("resumed", "already streaming") };
                    for name in &report.changed {
                        outln!("{done} {name}");
                    }
                    for name in &report.unchanged {
                        outln!("{name}: {already}");
                    }
                    if pause {
                        outln!(
                            "The target applies nothing until `barge sync resume`; the source keeps the changes, and the WAL that holds them (`barge sync status` shows how much)."
                        );
                    }
                }
            }
            OK
        }
        Err(e) => report_error(&e, args.output),
    }
}

/// `barge sync apply-ddl`: exit 0 when nothing is left pending, 1 otherwise.
pub(crate) async fn apply_ddl(args: &SyncApplyDdlArgs) -> u8 {
    let mut request = match args.sync.request(None) {
        Ok(request) => request,
        Err(e) => return report_error(&e, args.output),
    };
    request.local.pg_bin = args.tools.pg_bin.clone();
    let output = args.output;
    let sink: Arc<dyn ProgressSink> = Arc::new(move |event: barge_engine::Event| {
        if let barge_engine::Event::Warning { message } = event
            && output == OutputFormat::Text
            && !message.starts_with("schema change applied")
        {
            errln!("{message}");
        }
    });
    let outcome = tokio::select! {
        result = sync::apply_ddl(&request, args.destructive, sink) => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    match outcome {
        Some(Ok(report)) => {
            match output {
                OutputFormat::Json => render::json_line("apply_ddl", &report),
                OutputFormat::Text => {
                    for change in &report.applied {
                        outln!("applied: {change}");
                    }
                    for change in &report.pending {
                        outln!("waiting: {change}");
                    }
                    for name in &report.resumed {
                        outln!("resumed {name}");
                    }
                    if report.applied.is_empty() && report.pending.is_empty() {
                        outln!("The target's tables are as the source's: nothing to apply.");
                    } else if !report.pending.is_empty() && !args.destructive {
                        outln!(
                            "The changes waiting drop, rename or narrow: `barge sync apply-ddl --destructive` runs the statements named, or run them on the target yourself and then `barge sync apply-ddl`."
                        );
                    }
                }
            }
            if report.pending.is_empty() { OK } else { FAILED }
        }
        Some(Err(e)) => report_error(&e, output),
        None => {
            errln!("interrupted: run `barge sync apply-ddl` again to finish (each step looks at the target first)");
            FAILED
        }
    }
}

/// Which change to a sync's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TablesOp {
    Add,
    Remove,
    Resync,
}

/// `barge sync add`, `remove` and `resync`: the target's copying shown as it goes.
pub(crate) async fn tables(
    target: &SyncTarget,
    pg_bin: Option<std::path::PathBuf>,
    patterns: &[String],
    output: OutputFormat,
    op: TablesOp,
) -> u8 {
    let mut request = match target.request(None) {
        Ok(request) => request,
        Err(e) => return report_error(&e, output),
    };
    request.local.pg_bin = pg_bin;
    let sink: Arc<dyn ProgressSink> = Arc::new(move |event: barge_engine::Event| {
        if let barge_engine::Event::Warning { message } = event
            && output == OutputFormat::Text
        {
            errln!("{message}");
        }
    });
    let work = async {
        match op {
            TablesOp::Add => sync::add(&request, patterns, sink).await,
            TablesOp::Remove => sync::remove(&request, patterns).await,
            TablesOp::Resync => sync::resync(&request, patterns, sink).await,
        }
    };
    let outcome = tokio::select! {
        result = work => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    match outcome {
        Some(Ok(report)) => {
            match output {
                OutputFormat::Json => render::json_line("sync_tables", &report),
                OutputFormat::Text => {
                    if !report.created.is_empty() {
                        outln!("created on the target: {}", report.created.join(", "));
                    }
                    for (what, tables) in
                        [("added", &report.added), ("removed", &report.removed), ("copied again", &report.resynced)]
                    {
                        if !tables.is_empty() {
                            outln!("{what}: {}", tables.join(", "));
                        }
                    }
                    match op {
                        TablesOp::Remove => {
                            outln!("Their rows stay on the target as they were; the sync no longer changes them.")
                        }
                        _ => outln!(
                            "Copied in {} and streaming with the rest.",
                            barge_engine::human::human_duration(report.seconds)
                        ),
                    }
                }
            }
            OK
        }
        Some(Err(e)) => report_error(&e, output),
        None => {
            errln!(
                "interrupted: what the target had begun copying, it goes on copying; `barge sync status` shows the tables' states, and the same command finishes the rest"
            );
            INTERRUPTED
        }
    }
}

/// `barge sync stop`.
pub(crate) async fn stop(args: &SyncStopArgs) -> u8 {
    let request = match args.sync.request(None) {
        Ok(request) => request,
        Err(e) => return report_error(&e, OutputFormat::Text),
    };
    if !args.yes {
        let question = format!(
            "Remove barge's replication between {} and {}? The target stops receiving changes; the copied data stays.",
            request.source.redacted(),
            request.target.redacted()
        );
        match crate::jobs::confirm(&question, "stopping replication") {
            Ok(true) => {}
            Ok(false) => {
                errln!("nothing removed");
                return OK;
            }
            Err(code) => return code,
        }
    }
    match sync::stop(&request).await {
        Ok(report) => {
            for removed in &report.removed {
                outln!("removed {removed}");
            }
            OK
        }
        Err(e) => report_error(&e, OutputFormat::Text),
    }
}

/// `barge cutover`.
pub(crate) async fn cutover(args: &CutoverArgs) -> u8 {
    let request = match args.sync.request(args.jobs) {
        Ok(request) => request,
        Err(e) => return report_error(&e, args.output),
    };
    let output = args.output;
    let last = Mutex::new(Instant::now() - Duration::from_secs(10));
    let sink: Arc<dyn ProgressSink> = Arc::new(move |event: barge_engine::Event| match event {
        barge_engine::Event::Replication(status) => {
            let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.elapsed() >= Duration::from_secs(2) {
                *last = Instant::now();
                match output {
                    OutputFormat::Json => render::json_line("sync_status", &status),
                    OutputFormat::Text => errln!("waiting for the target to catch up: {}", status.summary()),
                }
            }
        }
        barge_engine::Event::Warning { message } => errln!("warning: {message}"),
        _ => {}
    });
    let options = CutoverOptions { timeout: Duration::from_secs(args.timeout) };
    let outcome = tokio::select! {
        result = sync::cutover(&request, &options, sink) => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    match outcome {
        Some(Ok(report)) => {
            match output {
                OutputFormat::Json => render::json_line("cutover", &report),
                OutputFormat::Text => render::cutover_report(&report),
            }
            if report.verify.ok { OK } else { FAILED }
        }
        Some(Err(e)) => report_error(&e, output),
        None => {
            errln!(
                "interrupted: if the cutover had not begun removing the replication it keeps running; `barge sync status` tells"
            );
            INTERRUPTED
        }
    }
}
