//! The harness: a `barge serve` on a free port with its own data directory, the CLI pointed
//! at it, and helpers over the job API and the clusters.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use barge_client::{ApiClient, Auth};
use barge_jobs::{Command as JobCommand, ConnUrl, Filter, JobId, JobSpec, JobStatus, Options, api::JobView};
use barge_testkit::{Cluster, src18, unique};

/// A `barge serve` on a free port with its own data directory; stopped (SIGTERM) on drop.
pub struct Serve {
    child: Child,
    pub client: ApiClient,
    pub data: tempfile::TempDir,
    pub endpoint: String,
    /// Home of the CLI runs: its config, state (last job) and nothing else.
    pub home: tempfile::TempDir,
    output: std::sync::Arc<std::sync::Mutex<String>>,
}

pub fn worker_program() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_barge")).with_file_name("barge-worker");
    assert!(path.is_file(), "{} is missing: run the tests with `cargo test --workspace` (make test)", path.display());
    path
}

impl Serve {
    pub fn start() -> Serve {
        Serve::start_in(tempfile::tempdir().unwrap())
    }

    /// A barge serve over an existing data directory (jobs, key, token, logs).
    pub fn start_in(data: tempfile::TempDir) -> Serve {
        Serve::start_on(data, 0)
    }

    /// A barge serve with extra `serve` flags.
    pub fn start_with(flags: &[&str]) -> Serve {
        Serve::start_full(tempfile::tempdir().unwrap(), 0, flags)
    }

    /// A barge serve over `data` listening on `port` (0: a free one).
    pub fn start_on(data: tempfile::TempDir, port: u16) -> Serve {
        Serve::start_full(data, port, &[])
    }

    fn start_full(data: tempfile::TempDir, port: u16, flags: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_barge"))
            .args(["serve", "--port", &port.to_string(), "--reap-every", "1", "--heartbeat-timeout", "6"])
            .args(flags)
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
        Serve { child, client, data, endpoint, home: tempfile::tempdir().unwrap(), output }
    }

    /// The `barge` command line as a user next to this barge serve runs it: the serve's data
    /// directory (where the CLI finds its token and endpoint), a private HOME (config, last
    /// job), no URLs or endpoint in the environment, no colours, no terminal.
    pub fn barge(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_barge"));
        self.user_env(&mut cmd);
        cmd
    }

    /// The environment of [`Serve::barge`], for a command that runs barge (`script`).
    pub fn user_env(&self, cmd: &mut Command) {
        cmd.env("HOME", self.home.path()).env("BARGE_DATA_DIR", self.data.path()).env("NO_COLOR", "1");
        for name in [
            "XDG_CONFIG_HOME",
            "XDG_STATE_HOME",
            "XDG_DATA_HOME",
            "BARGE_API",
            "BARGE_PROFILE",
            "BARGE_TOKEN_FILE",
            "BARGE_SOURCE",
            "BARGE_TARGET",
            "BARGE_PG_BIN",
        ] {
            cmd.env_remove(name);
        }
        cmd.stdin(Stdio::null());
    }

    pub async fn submit(&self, command: JobCommand, source: &str, target: &str, options: Options) -> JobView {
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
    pub async fn watch(&self, id: &JobId, limit: Duration, done: impl Fn(&JobView) -> bool) -> Vec<JobView> {
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

    pub async fn finish(&self, id: &JobId) -> Vec<JobView> {
        self.watch(id, Duration::from_secs(240), |view| view.status.state().is_terminal()).await
    }

    /// Submits an init of a slow source and waits until rows are moving: (source database,
    /// target database, the running job).
    pub async fn copy_under_way(&self, src: &Cluster, dst: &Cluster, prefix: &str) -> (String, String, JobView) {
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

    pub fn log(&self, id: &JobId) -> String {
        std::fs::read_to_string(self.data.path().join("logs").join(format!("{id}.log"))).unwrap_or_default()
    }

    /// Everything a password could have leaked into: the store, the logs, the server's output.
    pub fn everything_written(&self) -> String {
        let mut text = self.output.lock().unwrap().clone();
        for entry in walk(self.data.path()) {
            if entry.file_name().is_some_and(|name| name != "key" && name != "token") {
                text.push_str(&String::from_utf8_lossy(&std::fs::read(&entry).unwrap_or_default()));
            }
        }
        text
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

impl Serve {
    /// Stops it as Ctrl-C would (SIGINT) and hands back its data directory and what it printed.
    pub fn stop(mut self) -> (tempfile::TempDir, String) {
        let _ = Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "barge serve stopped with {status}");
        // The reader threads end with the pipes.
        std::thread::sleep(Duration::from_millis(200));
        let output = self.output.lock().unwrap().clone();
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().unwrap());
        (data, output)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

pub fn pid_of(view: &JobView) -> u32 {
    let instance = view.instance_id.as_deref().unwrap_or_else(|| panic!("no worker: {view:#?}"));
    instance.strip_prefix("proc-").unwrap().parse().unwrap()
}

pub fn alive(pid: u32) -> bool {
    // A zombie counts as gone: its exit was seen.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

pub fn succeeded(view: &JobView) {
    assert_eq!(view.status, JobStatus::Succeeded, "{view:#?}");
}

pub async fn count(cluster: &Cluster, db: &str, sql: &str) -> i64 {
    cluster.connect(db).await.query_one(sql, &[]).await.unwrap().get(0)
}

/// A source whose copy takes a few seconds whatever the machine: a CHECK constraint that
/// sleeps 40 ms every 1,000 rows, on any database but the source (so on the target).
pub async fn slow_source(src: &Cluster, prefix: &str) -> String {
    let db = src.create_db(prefix).await;
    src.run_sql(
        &db,
        &format!(
            "{}
             create table items (id bigint primary key, payload text, check (slow(id)));
             insert into items select g, md5(g::text) from generate_series(1, 150000) g;
             create table notes (id int primary key, body text);
             insert into notes select g, repeat('n', 50) from generate_series(1, 5000) g;
             analyze;",
            barge_testkit::slow_function(&db, 0.04)
        ),
    )
    .await;
    db
}

pub fn copy_options() -> Options {
    Options { jobs: Some(1), index_jobs: Some(1), split_tables_larger_than: Some(256 << 10), ..Options::default() }
}
