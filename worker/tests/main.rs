//! `barge-worker` as it runs: on an "instance" (a fake IMDSv2 that hands out user data only
//! with a session token, the coordinator's real router checking SigV4 signatures' scope,
//! CloudWatch Logs on moto), and standalone with `run --spec`.

// Test code: a failed unwrap is the failed test, with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    http::{HeaderMap, StatusCode},
    routing::{get, put},
};
use barge_coordinator::{App, Config, Ports};
use barge_jobs::{AuthError, Authenticator, Caller, JobStatus};
use barge_jobs_testkit::memory::{MemoryLauncher, MemoryLogs, MemorySealer, MemoryStore};
use barge_testkit::{PASSWORD, PASSWORD_ENCODED, aws_local, src18, unique};

const WORKER: &str = env!("CARGO_BIN_EXE_barge-worker");

/// Users send `Bearer user`; the worker must send a SigV4 signature for execute-api in
/// eu-west-1 made with its instance credentials (API Gateway checks the signature itself).
struct Signed;

impl Authenticator for Signed {
    fn authenticate(&self, request: &axum::http::request::Parts) -> Result<Caller, AuthError> {
        let header = request.headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or(AuthError::Invalid)?;
        if header == "Bearer user" {
            return Ok(Caller::User { owner: "alice".into() });
        }
        let signed = header.starts_with("AWS4-HMAC-SHA256 Credential=AKIDWORKER/")
            && header.contains("/eu-west-1/execute-api/aws4_request")
            && request.headers.get("x-amz-security-token").is_some_and(|t| t == "session-token");
        if signed { Ok(Caller::Worker { instance_id: "i-00000000000000001".into() }) } else { Err(AuthError::Invalid) }
    }
}

struct Fake;

impl Ports for Fake {
    type Store = MemoryStore;
    type Launcher = MemoryLauncher;
    type Sealer = MemorySealer;
    type Auth = Signed;
    type Logs = MemoryLogs;
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

/// IMDSv2: a token from `PUT /latest/api/token`, required by every read; `None` is an
/// instance without user data (404).
async fn imds(user_data: Option<String>) -> (String, Arc<Mutex<Vec<String>>>) {
    let reads = Arc::new(Mutex::new(Vec::new()));
    let seen = reads.clone();
    let router = Router::new()
        .route(
            "/latest/api/token",
            put(|headers: HeaderMap| async move {
                match headers.get("x-aws-ec2-metadata-token-ttl-seconds") {
                    Some(ttl) => {
                        (StatusCode::OK, [("x-aws-ec2-metadata-token-ttl-seconds", ttl.clone())], "imds-session")
                    }
                    None => (StatusCode::BAD_REQUEST, [("x-aws-ec2-metadata-token-ttl-seconds", 0.into())], ""),
                }
            }),
        )
        .route(
            "/latest/user-data",
            get(move |headers: HeaderMap| async move {
                let token = headers.get("x-aws-ec2-metadata-token").and_then(|v| v.to_str().ok()).unwrap_or("");
                seen.lock().unwrap().push(token.to_string());
                match (token == "imds-session", user_data) {
                    (true, Some(user_data)) => (StatusCode::OK, user_data),
                    (true, None) => (StatusCode::NOT_FOUND, String::new()),
                    (false, _) => (StatusCode::UNAUTHORIZED, String::new()),
                }
            }),
        );
    (serve(router).await, reads)
}

#[tokio::test]
async fn on_an_instance_the_worker_reads_user_data_signs_its_calls_and_logs_to_cloudwatch() {
    // GIVEN a coordinator with a validate job launched on instance i-00000000000000001
    let src = src18();
    let db = src.create_db("ec2").await;
    let app = App::<Fake>::new(
        MemoryStore::new(),
        MemoryLauncher::new(),
        MemorySealer::new(),
        Signed,
        MemoryLogs::new(),
        Config { reach: barge_jobs::Reach::Anywhere, ..Config::default() },
    );
    let endpoint = serve(barge_coordinator::router(app.clone())).await;
    let user = barge_client::ApiClient::new(&endpoint, barge_client::Auth::Bearer("user".into())).unwrap();
    let spec = barge_jobs::JobSpec::from_json(
        serde_json::json!({
            "command": "validate",
            "source_url": src.url(&db),
            "target_url": src.url(&unique("ec2_target")),
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let job = user.create(&spec, None).await.unwrap();
    assert_eq!(job.instance_id.as_deref(), Some("i-00000000000000001"));
    // AND an instance whose user data names the job, and a log group on moto
    let moto = aws_local("moto");
    let group = format!("/barge/workers-{}", unique("g"));
    let sdk = barge_aws::local_config_in(&moto, "eu-west-1").await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    logs.create_log_group().log_group_name(&group).send().await.unwrap();
    let mut launched = barge_jobs_testkit::conformance::job("alice", None, barge_jobs::Timestamp::now());
    launched.id = job.id.clone();
    launched.options.max_duration = Some(3600);
    let user_data = barge_aws::user_data(&launched, &endpoint, Some(&group));
    let (metadata, reads) = imds(Some(user_data)).await;
    // WHEN the boot unit sizes the worker's runtime limit from the job
    let dropin = tempfile::tempdir().unwrap();
    let (dir, imds_endpoint) = (dropin.path().to_path_buf(), metadata.clone());
    let status = tokio::task::spawn_blocking(move || {
        Command::new(WORKER)
            .args(["limits", "--dropin-dir"])
            .arg(dir)
            .env("BARGE_IMDS_ENDPOINT", imds_endpoint)
            .status()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success());
    let conf = std::fs::read_to_string(dropin.path().join("50-runtime.conf")).unwrap();
    assert!(conf.contains("[Service]\nRuntimeMaxSec=4200\n"), "{conf}");
    // AND barge-worker ec2 runs there
    let output = tokio::task::spawn_blocking(move || {
        Command::new(WORKER)
            .arg("ec2")
            .env("BARGE_IMDS_ENDPOINT", &metadata)
            // The clusters listen on loopback, which a worker on EC2 never connects to.
            .env("BARGE_WORKER_REACH", "anywhere")
            .env("BARGE_PG_BIN", src18().bin())
            .env("AWS_ACCESS_KEY_ID", "AKIDWORKER")
            .env("AWS_SECRET_ACCESS_KEY", "worker-secret")
            .env("AWS_SESSION_TOKEN", "session-token")
            .env("AWS_REGION", "eu-west-1")
            .env("AWS_ENDPOINT_URL", &moto)
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // THEN it read user data with an IMDSv2 session, claimed, ran and reported the job
    assert!(reads.lock().unwrap().iter().all(|token| token == "imds-session"));
    let done = user.get(&job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Succeeded, "{done:#?}\n{stderr}");
    // AND its log is in the job attempt's stream, without the password
    let events = logs
        .get_log_events()
        .log_group_name(&group)
        .log_stream_name(format!("{}/1", job.id))
        .start_from_head(true)
        .send()
        .await
        .unwrap();
    let text: String = events.events().iter().filter_map(|e| e.message()).collect::<Vec<_>>().join("\n");
    assert!(text.contains("\"claimed\"") && text.contains("\"succeeded\""), "{text}");
    for written in [&text, &stderr] {
        assert!(!written.contains(PASSWORD) && !written.contains(PASSWORD_ENCODED), "a password was logged");
        assert!(!written.contains("worker-secret") && !written.contains("session-token"));
    }
}

#[tokio::test]
async fn launched_says_whether_user_data_holds_a_barge_job() {
    let job = barge_jobs_testkit::conformance::job("alice", None, barge_jobs::Timestamp::now());
    let cases = [
        (Some(barge_aws::user_data(&job, "https://api.example.com", None)), None),
        (None, Some("it has none")),
        (Some("#!/bin/bash\necho debug instance\n".to_string()), Some("it is not JSON")),
        (Some(r#"{"other": {"job_id": "x"}}"#.to_string()), Some("it has no barge object")),
    ];
    for (user_data, refused) in cases {
        // GIVEN an instance with this user data
        let (metadata, reads) = imds(user_data.clone()).await;
        // WHEN the units' condition runs
        let output = tokio::task::spawn_blocking(move || {
            Command::new(WORKER).arg("launched").env("BARGE_IMDS_ENDPOINT", metadata).stdin(Stdio::null()).output()
        })
        .await
        .unwrap()
        .unwrap();
        // THEN it lets them start only with a barge job, and says why not on one line
        let stderr = String::from_utf8_lossy(&output.stderr);
        match refused {
            None => assert_eq!(output.status.code(), Some(0), "{user_data:?}: {stderr}"),
            Some(why) => {
                assert_eq!(output.status.code(), Some(1), "{user_data:?}: {stderr}");
                assert_eq!(
                    stderr,
                    format!("barge-worker: no barge job in this instance's user data ({why}): not starting\n")
                );
            }
        }
        assert_eq!(reads.lock().unwrap().as_slice(), ["imds-session"], "one read, with a session, no retries");
    }
    // A barge object this worker cannot parse (a newer launcher) still starts the worker:
    // `ec2` fails on it and the machine powers off, rather than idling without a job.
    assert_eq!(barge_worker::imds::launched(Some(r#"{"barge": {"job_id": "x", "new": 1}}"#)), Ok(()));
    assert!(barge_worker::imds::launched(Some(r#"{"barge": "x"}"#)).is_err());
}

#[tokio::test]
async fn run_spec_needs_no_control_plane() {
    let src = src18();
    let db = src.create_db("standalone").await;
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.json");
    let target = unique("standalone_copy");
    std::fs::write(
        &spec,
        serde_json::json!({
            "command": "init",
            "source_url": src.url(&db),
            "target_url": src.url(&target),
            "options": {"jobs": 1},
        })
        .to_string(),
    )
    .unwrap();
    src.run_sql(&db, "create table t (id int primary key); insert into t select generate_series(1, 1000);").await;
    let output =
        Command::new(WORKER).args(["run", "--spec"]).arg(&spec).env("BARGE_PG_BIN", src.bin()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().any(|l| l["type"] == "progress"), "{stdout}");
    let outcome = |lines: &[serde_json::Value]| lines.iter().find(|l| l["type"] == "outcome").cloned().unwrap();
    assert_eq!(outcome(&lines)["data"], serde_json::json!({"outcome": "succeeded"}));
    assert!(!stdout.contains(PASSWORD_ENCODED) && !stdout.contains(PASSWORD));
    assert_eq!(
        src.connect(&target).await.query_one("select count(*) from t", &[]).await.unwrap().get::<_, i64>(0),
        1000
    );
    // A second run refuses the now non-empty target: failed, exit code 1, no retry.
    let output =
        Command::new(WORKER).args(["run", "--spec"]).arg(&spec).env("BARGE_PG_BIN", src.bin()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let last = outcome(&lines);
    assert_eq!(last["data"]["outcome"], "failed");
    assert_eq!(last["data"]["retryable"], false);
    // A spec with a mistake: usage error, no password in the message.
    std::fs::write(&spec, format!(r#"{{"command": "init", "source_url": "{}", "target_url": "x"}}"#, src.url(&db)))
        .unwrap();
    let output = Command::new(WORKER).args(["run", "--spec"]).arg(&spec).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("target_url"), "{stderr}");
    assert!(!stderr.contains(PASSWORD_ENCODED));
}

#[test]
fn the_worker_unit_powers_off_either_way_and_bounds_the_longest_job() {
    let unit = std::fs::read_to_string(barge_testkit::repo_root().join("ami/barge-worker.service")).unwrap();
    let value = |key: &str| {
        unit.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("no {key}= in the unit"))
    };
    assert_eq!(value("Type"), "exec");
    assert_eq!(value("SuccessAction"), "poweroff");
    assert_eq!(value("FailureAction"), "poweroff");
    assert_eq!(value("ExecStart"), "/usr/local/bin/barge-worker ec2");
    let runtime: u64 = value("RuntimeMaxSec").parse().unwrap();
    let longest = barge_jobs::spec::MAX_DURATION_RANGE.1 + barge_worker::imds::RUNTIME_GRACE_SECONDS;
    assert_eq!(runtime, longest, "the backstop is the longest max_duration a spec may ask for, plus grace");
    let limits = std::fs::read_to_string(barge_testkit::repo_root().join("ami/barge-worker-limits.service")).unwrap();
    assert!(
        limits.contains("Before=barge-worker.service")
            && limits.contains("ExecStart=/usr/local/bin/barge-worker limits")
    );
    // An image booted without a job stays up. The worker unit needs a Condition: a unit that
    // ExecCondition= skips still triggers SuccessAction=poweroff (systemd issue 42035).
    let gate = "ExecCondition=/usr/local/bin/barge-worker launched";
    assert!(limits.lines().any(|l| l == gate));
    assert!(!unit.lines().any(|l| l.starts_with("ExecCondition=")), "it would not keep the machine up");
    assert_eq!(value("ConditionPathExists"), "/run/barge-worker.launched");
    assert!(limits.lines().any(|l| l == "ExecStartPre=/usr/bin/touch /run/barge-worker.launched"));
    let position = |line: &str| limits.lines().position(|l| l.starts_with(line)).unwrap();
    assert!(position("ExecCondition=") < position("ExecStartPre="), "the mark only once a job is found");
}

/// A reporter that answers from a script and records what it was sent.
struct Scripted {
    answers: Mutex<std::collections::VecDeque<barge_worker::report::Answer>>,
    sent: Mutex<Vec<barge_jobs::Progress>>,
}

impl Scripted {
    fn new(answers: Vec<barge_worker::report::Answer>) -> Scripted {
        Scripted { answers: Mutex::new(answers.into()), sent: Mutex::default() }
    }

    fn next(&self) -> barge_worker::report::Answer {
        self.answers.lock().unwrap().pop_front().unwrap_or(barge_worker::report::Answer::Continue)
    }
}

impl barge_worker::report::Reporter for Scripted {
    async fn progress(&self, progress: &barge_jobs::Progress) -> barge_worker::report::Answer {
        self.sent.lock().unwrap().push(progress.clone());
        self.next()
    }

    async fn heartbeat(&self) -> barge_worker::report::Answer {
        self.next()
    }

    async fn finish(&self, _: &barge_jobs::Outcome) -> Result<(), String> {
        Ok(())
    }
}

/// A job whose source never answers (a listener that accepts and stays silent), so only the
/// supervisor can end it.
async fn stuck_attempt(
    deadline: Option<std::time::Duration>,
) -> (barge_worker::execute::Attempt, std::net::TcpListener) {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let spec = barge_jobs::JobSpec::from_json(
        serde_json::json!({
            "command": "verify",
            "source_url": format!("postgres://u:pw-stuck@127.0.0.1:{port}/db"),
            "target_url": format!("postgres://u:pw-stuck@127.0.0.1:{port}/other"),
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let deadline = deadline.map(|after| tokio::time::Instant::now() + after);
    (
        barge_worker::execute::Attempt {
            spec,
            attempt: 1,
            deadline,
            sync_id: None,
            reach: barge_jobs::Reach::Anywhere,
            sizable: false,
        },
        silent,
    )
}

fn fast() -> barge_worker::execute::Timing {
    barge_worker::execute::Timing {
        progress_every: std::time::Duration::from_millis(50),
        heartbeat_every: std::time::Duration::from_millis(100),
    }
}

#[tokio::test]
async fn the_supervisor_stops_the_engine_on_cancel_deadline_loss_and_signal() {
    use barge_jobs::Outcome;
    use barge_worker::{
        execute::{Ending, supervise},
        report::Answer,
    };
    let never = std::future::pending::<Outcome>;
    let started = std::time::Instant::now();
    // Past max_duration: timed out.
    let (attempt, _silent) = stuck_attempt(Some(std::time::Duration::from_millis(300))).await;
    let reporter = Scripted::new(vec![]);
    assert_eq!(supervise(&attempt, &reporter, fast(), never()).await, Ending::Outcome(Outcome::TimedOut));
    let last = reporter.sent.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.message.as_deref(), Some("stopped at the job's max_duration"), "the final progress went out");
    // A cancel answer: cancelled.
    let (attempt, _silent) = stuck_attempt(None).await;
    let reporter = Scripted::new(vec![Answer::Continue, Answer::Cancel]);
    assert_eq!(supervise(&attempt, &reporter, fast(), never()).await, Ending::Outcome(Outcome::Cancelled));
    // Unreachable answers keep the engine going; "the job is not yours" stops it unreported.
    let reporter = Scripted::new(vec![Answer::Unreachable("down".into()), Answer::Lost("the job is failed".into())]);
    assert_eq!(supervise(&attempt, &reporter, fast(), never()).await, Ending::Abandoned("the job is failed".into()));
    // A signal: its outcome.
    let reporter = Scripted::new(vec![]);
    let signal = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        Outcome::Failed { reason: "stopped".into(), retryable: true }
    };
    assert_eq!(
        supervise(&attempt, &reporter, fast(), signal).await,
        Ending::Outcome(Outcome::Failed { reason: "stopped".into(), retryable: true })
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
}

/// Answers `Continue` until the worker reports `phase`, then `Ended` (the reaper ended the
/// job meanwhile).
struct EndAt {
    phase: barge_jobs::Phase,
    reached: std::sync::atomic::AtomicBool,
}

impl EndAt {
    fn answer(&self) -> barge_worker::report::Answer {
        if self.reached.load(std::sync::atomic::Ordering::Relaxed) {
            barge_worker::report::Answer::Ended("the job is timed_out".into())
        } else {
            barge_worker::report::Answer::Continue
        }
    }
}

impl barge_worker::report::Reporter for EndAt {
    async fn progress(&self, progress: &barge_jobs::Progress) -> barge_worker::report::Answer {
        if progress.phase == Some(self.phase) {
            self.reached.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.answer()
    }

    async fn heartbeat(&self) -> barge_worker::report::Answer {
        self.answer()
    }

    async fn finish(&self, _: &barge_jobs::Outcome) -> Result<(), String> {
        Ok(())
    }
}

/// Slots on the source, publications in its database, subscriptions on the target.
async fn replication_left(src: &barge_testkit::Cluster, src_db: &str, dst_db: &str) -> (i64, i64, i64) {
    let count = |cluster: barge_testkit::Cluster, db: String, sql: &'static str, arg: Option<String>| async move {
        let client = cluster.connect(&db).await;
        match arg {
            Some(arg) => client.query_one(sql, &[&arg]).await.unwrap().get::<_, i64>(0),
            None => client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0),
        }
    };
    (
        count(
            src.clone(),
            "postgres".into(),
            "select count(*) from pg_replication_slots where database = $1",
            Some(src_db.into()),
        )
        .await,
        count(src.clone(), src_db.into(), "select count(*) from pg_publication", None).await,
        count(
            barge_testkit::dst18(),
            "postgres".into(),
            "select count(*) from pg_subscription s join pg_database d on d.oid = s.subdbid where d.datname = $1",
            Some(dst_db.into()),
        )
        .await,
    )
}

#[tokio::test]
async fn a_sync_job_that_hits_its_deadline_or_loses_its_job_leaves_no_slot() {
    // PostgreSQL 15: the client tools the worker finds on its own are Debian's 15.
    let src = barge_testkit::src15();
    for (case, deadline) in [("deadline", Some(std::time::Duration::from_secs(4))), ("ended", None)] {
        // GIVEN a sync job
        let src_db = src.create_db("sync_end").await;
        src.run_sql(
            &src_db,
            "create table t (id int primary key, v text); insert into t select g, 'v' from generate_series(1, 1000) g",
        )
        .await;
        let dst_db = unique("sync_end_copy");
        let spec = barge_jobs::JobSpec::from_json(
            serde_json::json!({
                "command": "sync",
                "source_url": src.url(&src_db),
                "target_url": barge_testkit::dst18().url(&dst_db),
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let attempt = barge_worker::execute::Attempt {
            spec,
            attempt: 1,
            deadline: deadline.map(|after| tokio::time::Instant::now() + after),
            sync_id: Some(format!("end{}{}", case.len(), std::process::id())),
            reach: barge_jobs::Reach::Anywhere,
            sizable: false,
        };
        // WHEN its max_duration passes, or the reaper ends the job once it streams
        let reporter = EndAt { phase: barge_jobs::Phase::Streaming, reached: Default::default() };
        let reporter_for_deadline = Scripted::new(vec![]);
        let ending = match deadline {
            Some(_) => {
                barge_worker::execute::supervise(&attempt, &reporter_for_deadline, fast(), std::future::pending()).await
            }
            None => barge_worker::execute::supervise(&attempt, &reporter, fast(), std::future::pending()).await,
        };
        // THEN the worker removed the slot, the publication and the subscription first
        match deadline {
            Some(_) => {
                assert_eq!(ending, barge_worker::execute::Ending::Outcome(barge_jobs::Outcome::TimedOut), "{case}")
            }
            None => assert!(matches!(ending, barge_worker::execute::Ending::Abandoned(_)), "{case}: {ending:?}"),
        }
        assert_eq!(replication_left(&src, &src_db, &dst_db).await, (0, 0, 0), "{case}");
    }
}
