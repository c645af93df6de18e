//! Runs a command: builds the request, calls the engine, renders, and decides the exit code.

#![allow(clippy::print_stdout)]

use std::sync::Arc;

use barge_engine::{Error, Request};

use crate::{
    args::{Command, InitArgs, OutputFormat, ValidateArgs, VerifyArgs},
    render,
};

/// Exit codes, documented in `--help`.
const OK: u8 = 0;
const FAILED: u8 = 1;
const USAGE: u8 = 2;
const INTERRUPTED: u8 = 130;

/// Prints an engine error (already redacted at its source, redacted again for safety) and
/// returns its exit code.
fn report_error(e: &Error, format: OutputFormat) -> u8 {
    let message = barge_engine::redact(&e.to_string());
    match format {
        OutputFormat::Json => render::json_line("error", &serde_json::json!({ "message": message })),
        OutputFormat::Text => eprintln!("error: {message}"),
    }
    match e {
        Error::Url { .. } | Error::Invalid(_) => USAGE,
        _ => FAILED,
    }
}

/// Runs `command` and returns the process exit code.
pub async fn run(command: Command) -> u8 {
    match command {
        Command::Init(args) => init(&args).await,
        Command::Validate(args) => validate(&args).await,
        Command::Verify(args) => verify(&args).await,
        Command::Serve(args) => crate::serve::serve(&args).await,
    }
}

async fn init(args: &InitArgs) -> u8 {
    let request = match Request::try_from(args) {
        Ok(r) => r,
        Err(e) => return report_error(&e, args.output),
    };
    let plan = match barge_engine::plan(&request).await {
        Ok(p) => p,
        Err(e) => return report_error(&e, args.output),
    };
    match args.output {
        OutputFormat::Json => render::json_line("plan", &plan),
        OutputFormat::Text => render::plan(&plan, args.dry_run),
    }
    if args.dry_run {
        let problems = plan.problems().count();
        if args.output == OutputFormat::Text {
            println!(
                "dry run: nothing was changed{}",
                if problems > 0 { "; a copy would stop on the problems above" } else { "" }
            );
        }
        return if problems > 0 { FAILED } else { OK };
    }
    let progress = Arc::new(render::Progress::new(args.output));
    let sink = progress.clone();
    let sink: Arc<dyn barge_engine::ProgressSink> = Arc::new(move |event| sink.event(event));
    let outcome = tokio::select! {
        result = barge_engine::init(&request, &plan, sink) => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    progress.finish();
    match outcome {
        Some(Ok(report)) => {
            match args.output {
                OutputFormat::Json => render::json_line("report", &report),
                OutputFormat::Text => render::init_report(&report),
            }
            OK
        }
        Some(Err(e)) => {
            let code = report_error(&e, args.output);
            if args.output == OutputFormat::Text
                && !matches!(e, Error::TargetNotEmpty(_) | Error::Invalid(_) | Error::Url { .. })
            {
                eprintln!("What committed is kept: fix the cause and run the same command with --resume to continue.");
            }
            code
        }
        None => {
            eprintln!("interrupted: what committed is kept; run the same command with --resume to continue");
            INTERRUPTED
        }
    }
}

async fn validate(args: &ValidateArgs) -> u8 {
    let request = match Request::try_from(args) {
        Ok(r) => r,
        Err(e) => return report_error(&e, args.output),
    };
    let report = barge_engine::validate(&request).await;
    match args.output {
        OutputFormat::Json => render::json_line("validate", &report),
        OutputFormat::Text => render::validate_report(&report),
    }
    if report.ok { OK } else { FAILED }
}

async fn verify(args: &VerifyArgs) -> u8 {
    let request = match Request::try_from(args) {
        Ok(r) => r,
        Err(e) => return report_error(&e, args.output),
    };
    let outcome = tokio::select! {
        result = barge_engine::verify(&request) => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    match outcome {
        Some(Ok(report)) => {
            match args.output {
                OutputFormat::Json => render::json_line("verify", &report),
                OutputFormat::Text => render::verify_report(&report),
            }
            if report.ok { OK } else { FAILED }
        }
        Some(Err(e)) => report_error(&e, args.output),
        None => {
            eprintln!("interrupted");
            INTERRUPTED
        }
    }
}
