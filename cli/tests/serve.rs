//! `barge serve` end to end, with real everything: the HTTP API, the SQLite store, workers as
//! processes, the reaper, and PostgreSQL clusters started by the harness. A job runs to
//! `succeeded`; a worker killed with SIGKILL is replaced and its successor resumes; a cancel
//! ends a copy within 10 s; bad credentials fail at once, without a retry or a leak.

// Test code: a failed unwrap is the failed test, with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use barge_client::{ApiClient, Auth};
use barge_jobs::{Command as JobCommand, ConnUrl, Filter, JobId, JobSpec, JobStatus, Options, State, api::JobView};
use barge_testkit::{Cluster, PASSWORD, PASSWORD_ENCODED, dst18, src18, unique};

/// A `barge serve` on a free port with its own data directory; stopped (SIGTERM) on drop.
struct Serve {
    child: Child,
    client: ApiClient,
    data: tempfile::TempDir,
    output: std::sync::Arc<std::sync::Mutex<String>>,
}

fn worker_program() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_barge")).with_file_name("barge-worker");
    assert!(path.is_file(), "{} is missing: run the tests with `cargo test --workspace` (make test)", path.display());
    path
}

impl Serve {
    fn start() -> Serve {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_barge"))
            .args(["serve", "--port", "0", "--reap-every", "1", "--heartbeat-timeout", "6"])
            .args(["--worker-heartbeat", "2", "--cancel-grace", "5"])
            .arg("--data-dir")
            .arg(data.path())
            .arg("--worker")
            .arg(worker_program())
            .env("BARGE_PG_BIN", src18().bin())
            .env("BARGE_LOG", "barge=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let endpoint =
            first.strip_prefix("barge serve: listening on ").unwrap_or_else(|| panic!("{first}")).to_string();
        for stream in [Box::new(lines.map_while(Result::ok)) as Box<dyn Iterator<Item = String> + Send>, {
            let stderr = BufReader::new(child.stderr.take().unwrap());
            Box::new(stderr.lines().map_while(Result::ok))
        }] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in stream {
                    output.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        let token = std::fs::read_to_string(data.path().join("token")).unwrap();
        let client = ApiClient::new(&endpoint, Auth::Bearer(token.trim().to_string())).unwrap();
        Serve { child, client, data, output }
    }

    async fn submit(&self, command: JobCommand, source: &str, target: &str, options: Options) -> JobView {
        let spec = JobSpec {
            command,
            source_url: ConnUrl::new(source),
            target_url: ConnUrl::new(target),
            filter: Filter::default(),
            options,
        };
        self.client.create(&spec, None).await.unwrap()
    }

    /// Polls the job until `done` says so (every 100 ms), returning every view seen.
    async fn watch(&self, id: &JobId, limit: Duration, done: impl Fn(&JobView) -> bool) -> Vec<JobView> {
        let started = Instant::now();
        let mut seen = Vec::new();
        loop {
            let view = self.client.get(id).await.unwrap();
            let finished = done(&view);
            seen.push(view);
            if finished {
                return seen;
            }
            assert!(started.elapsed() < limit, "job {id} not done in {limit:?}: {:#?}", seen.last());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn finish(&self, id: &JobId) -> Vec<JobView> {
        self.watch(id, Duration::from_secs(240), |view| view.status.state().is_terminal()).await
    }

    /// Submits an init of a slow source and waits until rows are moving: (source database,
    /// target database, the running job).
    async fn copy_under_way(&self, src: &Cluster, dst: &Cluster, prefix: &str) -> (String, String, JobView) {
        let src_db = slow_source(src, prefix).await;
        let dst_db = unique(&format!("{prefix}_copy"));
        let job = self.submit(JobCommand::Init, &src.url(&src_db), &dst.url(&dst_db), copy_options()).await;
        let seen = self
            .watch(&job.id, Duration::from_secs(120), |v| {
                v.status.state().is_terminal() || v.progress.as_ref().is_some_and(|p| p.bytes_copied > 0)
            })
            .await;
        let running = seen.last().unwrap().clone();
        assert!(matches!(running.status, JobStatus::Running { .. }), "{running:#?}");
        (src_db, dst_db, running)
    }

    fn log(&self, id: &JobId) -> String {
        std::fs::read_to_string(self.data.path().join("logs").join(format!("{id}.log"))).unwrap_or_default()
    }

    /// Everything a password could have leaked into: the store, the logs, the server's output.
    fn everything_written(&self) -> String {
        let mut text = self.output.lock().unwrap().clone();
        for entry in walk(self.data.path()) {
            if entry.file_name().is_some_and(|name| name != "key" && name != "token") {
                text.push_str(&String::from_utf8_lossy(&std::fs::read(&entry).unwrap_or_default()));
            }
        }
        text
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn pid_of(view: &JobView) -> u32 {
    let instance = view.instance_id.as_deref().unwrap_or_else(|| panic!("no worker: {view:#?}"));
    instance.strip_prefix("proc-").unwrap().parse().unwrap()
}

fn alive(pid: u32) -> bool {
    // A zombie counts as gone: its exit was seen.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

fn succeeded(view: &JobView) {
    assert_eq!(view.status, JobStatus::Succeeded, "{view:#?}");
}

async fn count(cluster: &Cluster, db: &str, sql: &str) -> i64 {
    cluster.connect(db).await.query_one(sql, &[]).await.unwrap().get(0)
}

/// A source whose copy takes a few seconds whatever the machine: a CHECK constraint that
/// sleeps 40 ms every 1,000 rows, on any database but the source (so on the target).
async fn slow_source(src: &Cluster, prefix: &str) -> String {
    let db = src.create_db(prefix).await;
    src.run_sql(
        &db,
        &format!(
            "create function slow(n bigint) returns boolean language plpgsql as $$
             begin
               if n % 1000 = 0 and current_database() <> '{db}' then perform pg_sleep(0.04); end if;
               return true;
             end $$;
             create table items (id bigint primary key, payload text, check (slow(id)));
             insert into items select g, md5(g::text) from generate_series(1, 150000) g;
             create table notes (id int primary key, body text);
             insert into notes select g, repeat('n', 50) from generate_series(1, 5000) g;
             analyze;"
        ),
    )
    .await;
    db
}

fn copy_options() -> Options {
    Options { jobs: Some(1), index_jobs: Some(1), split_tables_larger_than: Some(256 << 10), ..Options::default() }
}

#[tokio::test]
async fn remote_jobs_run_to_the_end_with_live_progress() {
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    let src_db = slow_source(&src, "remote").await;
    let dst_db = unique("remote_copy");
    // WHEN an init job is submitted
    let job = serve.submit(JobCommand::Init, &src.url(&src_db), &dst.url(&dst_db), copy_options()).await;
    assert!(matches!(job.status, JobStatus::Launching | JobStatus::Queued), "{job:#?}");
    let seen = serve.finish(&job.id).await;
    // THEN it succeeded on its first attempt, and its progress moved while it ran
    let last = seen.last().unwrap();
    succeeded(last);
    assert_eq!(last.attempt, 1);
    let copied: Vec<u64> = seen
        .iter()
        .filter(|v| matches!(v.status, JobStatus::Running { .. }))
        .filter_map(|v| v.progress.as_ref().map(|p| p.bytes_copied))
        .collect();
    let final_bytes = last.progress.as_ref().unwrap().bytes_copied;
    assert!(copied.iter().any(|&b| b > 0 && b < final_bytes), "no progress seen mid-copy: {copied:?} of {final_bytes}");
    assert_eq!(count(&dst, &dst_db, "select count(*) from items").await, 150_000);
    let log = serve.log(&job.id);
    assert!(log.contains("\"claimed\"") && log.contains("\"succeeded\""), "{log}");
    // AND verify, validate run remotely too
    let verify = serve.submit(JobCommand::Verify, &src.url(&src_db), &dst.url(&dst_db), Options::default()).await;
    succeeded(serve.finish(&verify.id).await.last().unwrap());
    let other = unique("remote_validate");
    let validate = serve.submit(JobCommand::Validate, &src.url(&src_db), &dst.url(&other), Options::default()).await;
    succeeded(serve.finish(&validate.id).await.last().unwrap());
    // AND a failing verify says what differs
    dst.run_sql(&dst_db, "delete from notes where id <= 10").await;
    let verify = serve.submit(JobCommand::Verify, &src.url(&src_db), &dst.url(&dst_db), Options::default()).await;
    let last = serve.finish(&verify.id).await.pop().unwrap();
    match &last.status {
        JobStatus::Failed { reason, retryable: false } => assert!(reason.contains("notes"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // AND a sync job is refused by this engine with what to do instead
    let sync = serve.submit(JobCommand::Sync, &src.url(&src_db), &dst.url(&dst_db), Options::default()).await;
    let last = serve.finish(&sync.id).await.pop().unwrap();
    assert!(matches!(&last.status, JobStatus::Failed { retryable: false, .. }), "{last:#?}");
    let written = serve.everything_written();
    assert!(!written.contains(PASSWORD) && !written.contains(PASSWORD_ENCODED), "a password was written");
}

#[tokio::test]
async fn a_killed_worker_is_replaced_and_the_copy_resumes_without_duplicates() {
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    // GIVEN a copy under way with some parts committed
    let (src_db, dst_db, job) = serve.copy_under_way(&src, &dst, "killed").await;
    // WHEN its worker is killed with SIGKILL
    let pid = pid_of(&job);
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    // THEN the reaper notices the silence, relaunches, and attempt 2 finishes the copy
    let seen = serve.finish(&job.id).await;
    let last = seen.last().unwrap();
    succeeded(last);
    assert_eq!(last.attempt, 2, "{last:#?}");
    assert!(seen.iter().any(|v| v.last_failure.as_deref().is_some_and(|f| f.contains("heartbeat"))), "{seen:#?}");
    assert!(!alive(pid));
    assert_eq!(count(&dst, &dst_db, "select count(*) from items").await, 150_000, "rows duplicated or lost");
    assert_eq!(count(&dst, &dst_db, "select count(distinct id) from items").await, 150_000);
    let log = serve.log(&job.id);
    assert!(log.contains("\"attempt\":2"), "{log}");
    let verify = serve.submit(JobCommand::Verify, &src.url(&src_db), &dst.url(&dst_db), Options::default()).await;
    succeeded(serve.finish(&verify.id).await.last().unwrap());
}

#[tokio::test]
async fn a_cancel_stops_a_copy_within_ten_seconds_and_leaves_nothing_running() {
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    let (src_db, dst_db, running) = serve.copy_under_way(&src, &dst, "cancel").await;
    let job = running.clone();
    // WHEN the owner cancels mid-copy
    let asked = Instant::now();
    let answer = serve.client.cancel(&job.id).await.unwrap();
    assert!(answer.cancel_requested);
    // THEN the job is cancelled within 10 s and its worker is gone
    let last = serve.finish(&job.id).await.pop().unwrap();
    let took = asked.elapsed();
    assert_eq!(last.status, JobStatus::Cancelled, "{last:#?}");
    assert!(took <= Duration::from_secs(10), "cancel took {took:?}");
    let pid = pid_of(&running);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(pid), "worker {pid} still runs");
    assert!(serve.log(&job.id).contains("cancel requested"));
    // AND nothing of it stays on the servers: no session, slot or publication
    let sessions = format!(
        "select count(*) from pg_stat_activity where datname in ('{src_db}', '{dst_db}') and pid <> pg_backend_pid()"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while count(&src, "postgres", &sessions).await + count(&dst, "postgres", &sessions).await > 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&src, "postgres", &sessions).await + count(&dst, "postgres", &sessions).await, 0);
    assert_eq!(count(&src, &src_db, "select count(*) from pg_publication").await, 0);
    assert_eq!(count(&src, "postgres", "select count(*) from pg_replication_slots").await, 0);
}

#[tokio::test]
async fn bad_source_credentials_fail_at_once_and_leak_nowhere() {
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    let wrong = "Wr0ng;pa$$-4-barge";
    let source = src.url_as("postgres", wrong, "postgres");
    let job = serve.submit(JobCommand::Init, &source, &dst.url(&unique("never")), Options::default()).await;
    let last = serve.finish(&job.id).await.pop().unwrap();
    match &last.status {
        JobStatus::Failed { reason, retryable } => {
            assert!(!retryable, "{reason}");
            assert!(reason.contains("source") && reason.contains("password authentication failed"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((last.attempt, last.status.state()), (1, State::Failed));
    let written = serve.everything_written();
    assert!(written.contains(&job.id.to_string()), "the job's traces are in what was searched");
    let encoded: String = wrong.bytes().map(|b| format!("%{b:02X}")).collect();
    for secret in [wrong, &encoded, PASSWORD, PASSWORD_ENCODED] {
        assert!(!written.contains(secret), "{secret} was written somewhere");
    }
}
