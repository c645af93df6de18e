//! Runs a command: builds the request, calls the engine, renders, and decides the exit code.

#![allow(clippy::print_stdout)]

use std::sync::Arc;

use barge_engine::{Error, Request};

use crate::sync::TablesOp;

use crate::{
    args::{Cli, Command, InitArgs, Lower, OutputFormat, Run, SyncAction, ValidateArgs, VerifyArgs},
    config::{self, Origin},
    exit::{FAILED, INTERRUPTED, OK, USAGE},
    render::{self, report_error},
};

/// Runs the command line and returns the process exit code.
pub async fn run(cli: Cli) -> u8 {
    let api = cli.api.as_deref();
    let profile = cli.profile.as_str();
    match &cli.command {
        Command::Init(args) => copy(api, profile, args, args).await,
        Command::Validate(args) => match remote(api, profile, &args.run, false, args) {
            Ok(Some((spec, endpoint))) => submit(&spec, &endpoint, &args.run).await,
            Ok(None) => validate(args).await,
            Err(code) => code,
        },
        Command::Verify(args) => match remote(api, profile, &args.run, false, args) {
            Ok(Some((spec, endpoint))) => submit(&spec, &endpoint, &args.run).await,
            Ok(None) => verify(args).await,
            Err(code) => code,
        },
        Command::Sync(action) => match action {
            SyncAction::Status(status) => crate::sync::status(status).await,
            SyncAction::Stop(stop) => crate::sync::stop(stop).await,
            SyncAction::Pause(args) => crate::sync::pause(args, true).await,
            SyncAction::Resume(args) => crate::sync::pause(args, false).await,
            SyncAction::Add(args) => {
                crate::sync::tables(&args.sync, args.tools.pg_bin.clone(), &args.tables, args.output, TablesOp::Add)
                    .await
            }
            SyncAction::Remove(args) => {
                crate::sync::tables(&args.sync, None, &args.tables, args.output, TablesOp::Remove).await
            }
            SyncAction::Resync(args) => {
                crate::sync::tables(&args.sync, None, &args.tables, args.output, TablesOp::Resync).await
            }
            SyncAction::ApplyDdl(args) => crate::sync::apply_ddl(args).await,
            SyncAction::Start(args) => copy(api, profile, &args.init, args.as_ref()).await,
        },
        Command::Cutover(args) => crate::sync::cutover(args).await,
        Command::Serve(args) => crate::serve::serve(args).await,
        Command::Jobs(command) => match config::require_endpoint(api, &cli.profile) {
            Ok(endpoint) => crate::jobs::run(command, &endpoint).await,
            Err(message) => {
                errln!("error: {message}");
                USAGE
            }
        },
        Command::Configure(args) => crate::configure::configure(args, &cli.profile).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(*shell, &mut Cli::command(), "barge", &mut std::io::stdout());
            OK
        }
    }
}

/// `barge init` and `barge sync start` (`args`, with the init flags `init`): submitted as a
/// job (after asking before it drops databases), or run here.
async fn copy(api: Option<&str>, profile: &str, init: &InitArgs, args: &impl Lower) -> u8 {
    match remote(api, profile, &init.run, init.dry_run, args) {
        Ok(Some((spec, endpoint))) => match confirm_remote_drops(init) {
            Some(code) => code,
            None => submit(&spec, &endpoint, &init.run).await,
        },
        Ok(None) => match args.local_request() {
            Ok(request) => self::init(init, request).await,
            Err(e) => report_error(&e, init.run.output),
        },
        Err(code) => code,
    }
}

/// Submits `spec` and watches it, unless `--detach`.
async fn submit(spec: &barge_jobs::JobSpec, endpoint: &config::Endpoint, run: &Run) -> u8 {
    crate::jobs::submit(spec, endpoint, run.placement.detach, run.output).await
}

/// Decides where a command runs: `Some` (the spec and the endpoint) to submit it as a job,
/// `None` to run it here, or the exit code of a usage error. Remote when asked (`--remote`),
/// or by default when an endpoint is configured (`--api`, `BARGE_API`, the profile) unless
/// `--local` (or `--dry-run`, which plans from here).
fn remote(
    api: Option<&str>,
    profile: &str,
    run: &Run,
    dry_run: bool,
    args: &impl Lower,
) -> Result<Option<(barge_jobs::JobSpec, config::Endpoint)>, u8> {
    let (placement, output) = (&run.placement, run.output);
    let usage = |message: String| {
        match output {
            OutputFormat::Json => render::json_line("error", &serde_json::json!({ "message": message })),
            OutputFormat::Text => errln!("error: {message}"),
        }
        USAGE
    };
    let endpoint = if placement.local || (dry_run && !placement.remote) {
        None
    } else {
        config::endpoint(api, profile).map_err(usage)?
    };
    let remote = placement.remote || endpoint.as_ref().is_some_and(|e| e.origin != Origin::Serve);
    if !remote {
        let remote_only = [
            (placement.detach, "--detach"),
            (placement.max_duration.is_some(), "--max-duration"),
            (placement.instance_type.is_some(), "--instance-type"),
        ];
        if let Some((_, flag)) = remote_only.iter().find(|(set, _)| *set) {
            return Err(usage(format!(
                "{flag} applies to remote jobs: add --remote (and --api, or `barge configure`)"
            )));
        }
        return Ok(None);
    }
    let endpoint = endpoint.ok_or_else(|| {
        usage(config::require_endpoint(api, profile).err().unwrap_or_else(|| "no barge API is configured".into()))
    })?;
    let spec = args.remote_spec().map_err(|message| usage(barge_engine::redact(&message)))?;
    Ok(Some((spec, endpoint)))
}

async fn init(args: &InitArgs, request: Request) -> u8 {
    let plan = match barge_engine::plan(&request).await {
        Ok(p) => p,
        Err(e) => return report_error(&e, args.run.output),
    };
    match args.run.output {
        OutputFormat::Json => render::json_line("plan", &plan),
        OutputFormat::Text => render::plan(&plan, args.dry_run),
    }
    if args.dry_run {
        let problems = plan.problems().count();
        if args.run.output == OutputFormat::Text {
            outln!(
                "dry run: nothing was changed{}",
                if problems > 0 { "; a copy would stop on the problems above" } else { "" }
            );
        }
        return if problems > 0 { FAILED } else { OK };
    }
    if let Some(code) = confirm_drops(args, &plan) {
        return code;
    }
    let progress = Arc::new(render::Progress::new(args.run.output, plan.databases.len()));
    let sink = progress.clone();
    let sink: Arc<dyn barge_engine::ProgressSink> = Arc::new(move |event| sink.event(event));
    if request.options.sync {
        let started = crate::sync::start(&request, &plan, sink).await;
        progress.finish();
        return crate::sync::report_start(started, args.run.output);
    }
    let outcome = tokio::select! {
        result = barge_engine::init(&request, &plan, sink) => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    progress.finish();
    match outcome {
        Some(Ok(report)) => {
            match args.run.output {
                OutputFormat::Json => render::json_line("report", &report),
                OutputFormat::Text => render::init_report(&report),
            }
            OK
        }
        Some(Err(e)) => {
            let code = report_error(&e, args.run.output);
            if args.run.output == OutputFormat::Text
                && !matches!(e, Error::TargetNotEmpty(_) | Error::Invalid(_) | Error::NotFound(_) | Error::Url { .. })
            {
                errln!("What committed is kept: fix the cause and run the same command with --resume to continue.");
            }
            code
        }
        None => {
            errln!("interrupted: what committed is kept; run the same command with --resume to continue");
            INTERRUPTED
        }
    }
}

/// Before a remote job with `--drop-existing` (it plans where the databases are, so the
/// databases it would drop are not known here): asks, naming the target, unless `--yes`.
fn confirm_remote_drops(args: &InitArgs) -> Option<u8> {
    if !args.policy.drop_existing || args.yes || args.dry_run {
        return None;
    }
    let which = match barge_engine::ConnInfo::parse(barge_engine::Side::Target, &args.scope.endpoints.target) {
        Ok(info) => match info.dbname() {
            Some(db) => format!("target database \"{db}\" on {}", info.endpoint()),
            None => format!("every target database on {} that the source also has", info.endpoint()),
        },
        Err(_) => "target databases".into(),
    };
    let question = format!("--drop-existing: the job will drop and re-create {which} if it holds objects; continue?");
    ask_before_dropping(&question, "nothing was submitted")
}

/// Asks before a copy drops target databases (`--drop-existing`), naming each, unless
/// `--yes`; without a terminal it refuses. `Some(code)` stops the command.
fn confirm_drops(args: &InitArgs, plan: &barge_engine::Plan) -> Option<u8> {
    let dropped: Vec<String> = plan
        .databases
        .iter()
        .filter(|d| matches!(d.action, barge_engine::plan::TargetAction::DropAndCreate { .. }))
        .map(|d| format!("\"{}\"", d.target))
        .collect();
    if dropped.is_empty() || args.yes || plan.problems().next().is_some() {
        return None;
    }
    let question = format!(
        "--drop-existing will drop target database(s) {} on {} and re-create them; continue?",
        dropped.join(", "),
        plan.target
    );
    ask_before_dropping(&question, "nothing was changed")
}

/// `None` when the answer is yes; else the exit code, after saying `declined` on a no.
fn ask_before_dropping(question: &str, declined: &str) -> Option<u8> {
    match crate::jobs::confirm(question, "--drop-existing") {
        Ok(true) => None,
        Ok(false) => {
            errln!("{declined}");
            Some(FAILED)
        }
        Err(code) => Some(code),
    }
}

async fn validate(args: &ValidateArgs) -> u8 {
    let request = match args.local_request() {
        Ok(r) => r,
        Err(e) => return report_error(&e, args.run.output),
    };
    let report = barge_engine::validate(&request).await;
    match args.run.output {
        OutputFormat::Json => render::json_line("validate", &report),
        OutputFormat::Text => render::validate_report(&report),
    }
    if report.usage_error {
        USAGE
    } else if report.ok {
        OK
    } else {
        FAILED
    }
}

async fn verify(args: &VerifyArgs) -> u8 {
    let request = match args.local_request() {
        Ok(r) => r,
        Err(e) => return report_error(&e, args.run.output),
    };
    let outcome = tokio::select! {
        result = barge_engine::verify(&request) => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    match outcome {
        Some(Ok(report)) => {
            match args.run.output {
                OutputFormat::Json => render::json_line("verify", &report),
                OutputFormat::Text => render::verify_report(&report),
            }
            if report.ok { OK } else { FAILED }
        }
        Some(Err(e)) => report_error(&e, args.run.output),
        None => {
            errln!("interrupted");
            INTERRUPTED
        }
    }
}
