//! [`ProcessLauncher`]: `barge serve`'s workers are child processes. Each gets a one-job
//! bearer token on its standard input (never in argv or the environment), the endpoint and
//! the job id as arguments, and a log file; `terminate` kills that child (by the handle
//! the launcher holds, never by name) and revokes its token.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use barge_jobs::{Caller, Job, JobId, LaunchError, Launcher, ports::Instance};
use tokio::{io::AsyncWriteExt, sync::oneshot};

use crate::{BearerTokens, FileLogSink};

/// How workers are started.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    /// The `barge-worker` executable.
    pub program: PathBuf,
    /// Where each job's log file goes.
    pub log_dir: PathBuf,
    /// Seconds between heartbeats, when not the worker's default.
    pub heartbeat_seconds: Option<u32>,
}

/// A running worker: its job, and how to stop it (the sender answers once it exited).
struct Child {
    job: JobId,
    kill: Option<oneshot::Sender<oneshot::Sender<()>>>,
}

#[derive(Default)]
struct Children {
    by_attempt: HashMap<(JobId, u32), String>,
    running: HashMap<String, Child>,
}

/// Starts workers as child processes of `barge serve`.
pub struct ProcessLauncher {
    command: WorkerCommand,
    endpoint: RwLock<Option<String>>,
    tokens: BearerTokens,
    children: Arc<Mutex<Children>>,
}

fn lock(children: &Mutex<Children>) -> std::sync::MutexGuard<'_, Children> {
    children.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ProcessLauncher {
    /// Workers started with `command`, authenticated by tokens issued from `tokens`.
    pub fn new(command: WorkerCommand, tokens: BearerTokens) -> ProcessLauncher {
        ProcessLauncher { command, endpoint: RwLock::new(None), tokens, children: Arc::default() }
    }

    /// The API endpoint workers call (known once the server listens).
    pub fn set_endpoint(&self, endpoint: &str) {
        *self.endpoint.write().unwrap_or_else(PoisonError::into_inner) = Some(endpoint.to_string());
    }

    /// Kills every worker (on shutdown); their jobs are relaunched as new attempts later.
    pub async fn terminate_all(&self) {
        let ids: Vec<String> = lock(&self.children).running.keys().cloned().collect();
        for id in ids {
            let _ = self.terminate(&id).await;
        }
    }
}

impl Launcher for ProcessLauncher {
    async fn launch(&self, job: &Job) -> Result<String, LaunchError> {
        let endpoint = self
            .endpoint
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| LaunchError { message: "the server is not listening yet".into(), retryable: true })?;
        let failed = |what: String| LaunchError { message: what, retryable: false };
        let log = FileLogSink::path(&self.command.log_dir, &job.id);
        // Held while spawning, so a racing launch of the same attempt finds the first one.
        let mut children = lock(&self.children);
        if let Some(id) = children.by_attempt.get(&(job.id.clone(), job.attempt)) {
            return Ok(id.clone());
        }
        std::fs::create_dir_all(&self.command.log_dir)
            .map_err(|e| failed(format!("cannot create {}: {e}", self.command.log_dir.display())))?;
        let stderr = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&log)
                .map_err(|e| failed(format!("cannot open {}: {e}", log.display())))?
        };
        let mut command = tokio::process::Command::new(&self.command.program);
        command
            .arg("job")
            .arg("--endpoint")
            .arg(&endpoint)
            .arg("--job")
            .arg(job.id.to_string())
            .arg("--log-file")
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            // Its own process group: a Ctrl-C at the server's terminal is the server's to
            // handle (it stops its workers itself).
            .process_group(0)
            .kill_on_drop(true);
        if let Some(seconds) = self.command.heartbeat_seconds {
            command.arg("--heartbeat-seconds").arg(seconds.to_string());
        }
        let mut child = command.spawn().map_err(|e| {
            failed(format!(
                "cannot start the worker {}: {e}; install barge-worker next to barge or pass --worker",
                self.command.program.display()
            ))
        })?;
        let id = format!("proc-{}", child.id().unwrap_or_default());
        let token = self
            .tokens
            .issue(Caller::Worker { instance_id: id.clone() })
            .map_err(|e| failed(format!("cannot make a worker token: {e}")))?;
        let (kill, killed) = oneshot::channel::<oneshot::Sender<()>>();
        children.by_attempt.insert((job.id.clone(), job.attempt), id.clone());
        children.running.insert(id.clone(), Child { job: job.id.clone(), kill: Some(kill) });
        drop(children);
        tracing::info!(job = %job.id, attempt = job.attempt, worker = %id, "worker started");
        let stdin = child.stdin.take();
        let (children, tokens, worker) = (self.children.clone(), self.tokens.clone(), id.clone());
        tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                // A worker that died at once closed its end; its exit is seen below.
                let _ = stdin.write_all(format!("{token}\n").as_bytes()).await;
            }
            let mut done = None;
            let status = tokio::select! {
                status = child.wait() => status,
                Ok(reply) = killed => {
                    done = Some(reply);
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            lock(&children).running.remove(&worker);
            tokens.revoke_worker(&worker);
            tracing::info!(worker = %worker, status = ?status.ok(), "worker exited");
            if let Some(done) = done {
                let _ = done.send(());
            }
        });
        Ok(id)
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), LaunchError> {
        let kill = lock(&self.children).running.get_mut(instance_id).and_then(|child| child.kill.take());
        if let Some(kill) = kill {
            let (done, exited) = oneshot::channel();
            if kill.send(done).is_ok() {
                let _ = exited.await;
            }
            tracing::info!(worker = %instance_id, "worker terminated");
        }
        Ok(())
    }

    async fn instances(&self) -> Result<Vec<Instance>, LaunchError> {
        Ok(lock(&self.children)
            .running
            .iter()
            .map(|(id, child)| Instance { id: id.clone(), job: Some(child.job.clone()), launched_at: None })
            .collect())
    }
}
