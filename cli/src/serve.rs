//! `barge serve`: the coordinator's router on loopback over the embedded adapters (SQLite,
//! a key file, bearer tokens, workers as child processes) plus the reaper on a timer. The
//! CLI and workers talk to it exactly as they talk to the AWS deployment.

#![allow(clippy::print_stdout)]

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use barge_coordinator::{App, Config, Ports};
use barge_jobs::{Deadlines, Event, JobStatus, JobStore, lifecycle, reaper::Policy};
use barge_local::{BearerTokens, FileLogs, KeyFileSealer, ProcessLauncher, SqliteStore, WorkerCommand};

use crate::args::ServeArgs;

/// The embedded adapters.
struct Local;

impl Ports for Local {
    type Store = SqliteStore;
    type Launcher = ProcessLauncher;
    type Sealer = KeyFileSealer;
    type Auth = BearerTokens;
    type Logs = FileLogs;
}

/// `barge-worker` next to this executable, else the name (found on PATH).
fn default_worker() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("barge-worker"))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("barge-worker"))
}

/// What `barge serve` writes for clients to find it: `DATA_DIR/serve.json`.
#[derive(serde::Serialize)]
struct Discovery<'a> {
    endpoint: &'a str,
    token_file: &'a Path,
    pid: u32,
}

fn fail(message: impl std::fmt::Display) -> u8 {
    errln!("error: {message}");
    1
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

async fn shutdown() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Runs the server until Ctrl-C or SIGTERM; returns the exit code.
pub async fn serve(args: &ServeArgs) -> u8 {
    let Some(data) = args.data_dir.clone().or_else(crate::config::default_data_dir) else {
        return fail("no data directory: pass --data-dir or set HOME");
    };
    if let Err(e) = private_dir(&data) {
        return fail(format!("cannot create the data directory {}: {e}", data.display()));
    }
    let store = match SqliteStore::open(&data.join("jobs.db")) {
        Ok(store) => store,
        Err(e) => return fail(format!("cannot open the job store in {}: {e}", data.display())),
    };
    let sealer = match KeyFileSealer::open(&data.join("key")) {
        Ok(sealer) => sealer,
        Err(e) => return fail(format!("cannot open the sealing key in {}: {e}", data.display())),
    };
    let tokens = BearerTokens::new();
    let token_file = data.join("token");
    let owner = format!("local:{}", std::env::var("USER").unwrap_or_else(|_| "user".into()));
    if let Err(e) = tokens.user_token_file(&token_file, &owner) {
        return fail(format!("cannot read or create the token {}: {e}", token_file.display()));
    }
    let program = args.worker.clone().unwrap_or_else(default_worker);
    let launcher = ProcessLauncher::new(
        WorkerCommand {
            program: program.clone(),
            log_dir: data.join("logs"),
            heartbeat_seconds: Some(args.worker_heartbeat),
        },
        tokens.clone(),
    );
    let deadlines = Deadlines { max_attempts: args.max_attempts, ..Deadlines::default() };
    // Jobs run as processes of this machine, for its user: they reach what the user reaches
    // (loopback clusters, certificate files), as a local run does.
    let config = Config {
        max_active_jobs: args.max_active_jobs,
        deadlines,
        reach: barge_jobs::Reach::Anywhere,
        instance_types: Vec::new(),
    };
    let policy = Policy {
        heartbeat_timeout: i64::from(args.heartbeat_timeout),
        cancel_grace: i64::from(args.cancel_grace),
        deadlines,
        ..Policy::default()
    };
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await {
        Ok(listener) => listener,
        Err(e) => {
            return fail(format!(
                "cannot listen on 127.0.0.1:{}: {e}; is another barge serve running? pass --port",
                args.port
            ));
        }
    };
    let endpoint = match listener.local_addr() {
        Ok(address) => format!("http://{address}"),
        Err(e) => return fail(format!("cannot read the listening address: {e}")),
    };
    let app = App::<Local>::new(store, launcher, sealer, tokens, FileLogs::new(data.join("logs")), config);
    app.launcher.set_endpoint(&endpoint);
    let discovery = data.join("serve.json");
    let body =
        serde_json::to_vec_pretty(&Discovery { endpoint: &endpoint, token_file: &token_file, pid: std::process::id() })
            .unwrap_or_default();
    if let Err(e) = std::fs::write(&discovery, body) {
        return fail(format!("cannot write {}: {e}", discovery.display()));
    }
    outln!("barge serve: listening on {endpoint}");
    outln!("  token:   {}", token_file.display());
    outln!("  data:    {}", data.display());
    outln!("  workers: {}", program.display());
    outln!("Stop with Ctrl-C.");
    tracing::info!(%endpoint, data = %data.display(), "serving");
    let reaper = tokio::spawn(reap(app.clone(), policy, Duration::from_secs(args.reap_every)));
    let served = axum::serve(listener, barge_coordinator::router(app.clone())).with_graceful_shutdown(shutdown()).await;
    reaper.abort();
    // Workers stop with the server; their jobs become their next attempt now, which the
    // reaper launches as soon as barge serve starts again (resuming what committed).
    app.launcher.terminate_all().await;
    requeue_stopped(&app, deadlines).await;
    let _ = std::fs::remove_file(&discovery);
    match served {
        Ok(()) => {
            outln!("barge serve: stopped");
            0
        }
        Err(e) => fail(format!("the server failed: {e}")),
    }
}

/// Hands every job whose worker stopped with the server to its next attempt.
async fn requeue_stopped(app: &App<Local>, deadlines: Deadlines) {
    let active = match app.store.active().await {
        Ok(active) => active,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the active jobs to requeue them");
            return;
        }
    };
    let event = Event::WorkerLost { reason: "barge serve stopped while the job ran".into() };
    for job in active.iter().filter(|j| matches!(j.status, JobStatus::Launching | JobStatus::Running { .. })) {
        match lifecycle::apply(&app.store, &job.id, &event, deadlines, |_| Ok(())).await {
            Ok(next) => outln!("barge serve: job {} is {} (attempt {})", next.id, next.state(), next.attempt),
            Err(e) => tracing::warn!(job = %job.id, error = %e, "cannot requeue the job"),
        }
    }
}

/// The reaper on a timer: the same sweep the scheduled Lambda runs.
async fn reap(app: Arc<App<Local>>, policy: Policy, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match barge_jobs::reaper::sweep(&app.store, &app.launcher, &policy).await {
            Ok(sweep) => tracing::debug!(?sweep, "reaper swept"),
            Err(e) => tracing::warn!(error = %e, "reaper sweep failed"),
        }
    }
}
