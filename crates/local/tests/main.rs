//! The SQLite store against the conformance suite, plus what only an embedded store has to
//! prove: it survives a restart, keeps no secret in the clear, and its key and token files
//! are private.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use barge_jobs::{AuthError, Authenticator, Caller, Created, Deadlines, Event, JobId, JobStore, Sealer, Timestamp};
use barge_jobs_testkit::conformance;
use barge_local::{BearerTokens, KeyFileSealer, SqliteStore};

async fn fresh_store() -> SqliteStore {
    let dir = tempfile::tempdir().unwrap().keep();
    SqliteStore::open(&dir.join("jobs.db")).unwrap()
}

barge_jobs_testkit::store_conformance!(crate::fresh_store());

#[tokio::test]
async fn jobs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/jobs.db");
    let job = conformance::job("alice", Some("k"), Timestamp::now());
    {
        let store = SqliteStore::open(&path).unwrap();
        store.create(&job, 5).await.unwrap();
        let cancelled = job.apply(&Event::CancelRequested, Deadlines::default(), Timestamp::now()).unwrap();
        store.replace(&job, &cancelled).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let read = store.get(&job.id).await.unwrap().unwrap();
    assert_eq!(read.state(), barge_jobs::State::Cancelled);
    assert_eq!(store.active_count().await.unwrap(), 0);
    assert!(matches!(store.create(&job, 5).await.unwrap(), Created::Existing(_)));
}

#[tokio::test]
async fn sealed_credentials_open_only_for_their_job() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("keys/seal.key");
    let sealer = KeyFileSealer::open(&key).unwrap();
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let credentials = conformance::spec().credentials();
    let (a, b) = (JobId::random(), JobId::random());
    let sealed = sealer.seal(&a, &credentials).await.unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("s3cr"));
    assert_eq!(sealer.unseal(&a, &sealed).await.unwrap(), credentials);
    assert!(sealer.unseal(&b, &sealed).await.is_err(), "bound to the job");
    let mut tampered = sealed.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(sealer.unseal(&a, &tampered).await.is_err());
    assert_ne!(sealer.seal(&a, &credentials).await.unwrap(), sealed, "a fresh nonce each time");
    // The same key file opens again (a restart); another key does not open it.
    assert_eq!(KeyFileSealer::open(&key).unwrap().unseal(&a, &sealed).await.unwrap(), credentials);
    let other = KeyFileSealer::open(&dir.path().join("other.key")).unwrap();
    let e = other.unseal(&a, &sealed).await.unwrap_err();
    assert!(!e.to_string().contains("s3cr"));
    // A key others can read is refused, with the fix.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = KeyFileSealer::open(&key).err().unwrap();
    assert!(e.to_string().contains("chmod 600"), "{e}");
}

#[tokio::test]
async fn the_store_file_holds_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = SqliteStore::open(&path).unwrap();
    let sealer = KeyFileSealer::open(&dir.path().join("seal.key")).unwrap();
    let spec = conformance::spec();
    let id = JobId::random();
    let sealed = sealer.seal(&id, &spec.credentials()).await.unwrap();
    let job = barge_jobs::Job::new(id, "alice", &spec, sealed, None, Deadlines::default(), Timestamp::now());
    store.create(&job, 5).await.unwrap();
    let rows = store.dump().await.unwrap().join("\n");
    assert!(rows.contains("source.example.com"), "the redacted URL is stored");
    for needle in [conformance::PASSWORD, "s3cr%3Bet", "s3cr"] {
        assert!(!rows.contains(needle), "{needle} in a stored row");
    }
    drop(store);
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("s3cr"), "no file holds the password");
    }
}

#[test]
fn bearer_tokens_recognise_users_and_workers() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = BearerTokens::new();
    let user = tokens.user_token_file(&dir.path().join("token"), "local").unwrap();
    assert_eq!(std::fs::metadata(dir.path().join("token")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(tokens.user_token_file(&dir.path().join("token"), "local").unwrap(), user, "stable across restarts");
    let worker = tokens.issue(Caller::Worker { instance_id: "local-1".into() }).unwrap();
    let request = |value: Option<&str>| {
        let mut builder = http::Request::builder();
        if let Some(value) = value {
            builder = builder.header("authorization", value);
        }
        builder.body(()).unwrap().into_parts().0
    };
    assert_eq!(
        tokens.authenticate(&request(Some(&format!("Bearer {user}")))),
        Ok(Caller::User { owner: "local".into() })
    );
    assert_eq!(
        tokens.authenticate(&request(Some(&format!("Bearer {worker}")))),
        Ok(Caller::Worker { instance_id: "local-1".into() })
    );
    assert!(matches!(tokens.authenticate(&request(None)), Err(AuthError::Missing(_))));
    assert_eq!(tokens.authenticate(&request(Some("Bearer nope"))), Err(AuthError::Invalid));
    assert_eq!(tokens.authenticate(&request(Some(&user))), Err(AuthError::Invalid), "the scheme is required");
    tokens.revoke_worker("local-1");
    assert_eq!(tokens.authenticate(&request(Some(&format!("Bearer {worker}")))), Err(AuthError::Invalid));
}

/// A stand-in for barge-worker: records its arguments and the token it read from standard
/// input, then waits to be killed.
fn fake_worker(dir: &std::path::Path) -> std::path::PathBuf {
    let program = dir.join("fake-worker");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\necho \"$@\" > {dir}/argv.$$\nread token\necho \"$token\" > {dir}/token.$$\nexec sleep 600\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    program
}

fn bearer(token: &str) -> http::request::Parts {
    http::Request::builder().header("authorization", format!("Bearer {token}")).body(()).unwrap().into_parts().0
}

#[tokio::test]
async fn the_process_launcher_hands_a_one_job_token_on_stdin_and_kills_by_handle() {
    use barge_jobs::Launcher;
    use barge_local::{ProcessLauncher, WorkerCommand};
    let dir = tempfile::tempdir().unwrap();
    let tokens = BearerTokens::new();
    let command = WorkerCommand {
        program: fake_worker(dir.path()),
        log_dir: dir.path().join("logs"),
        heartbeat_seconds: Some(3),
    };
    let launcher = ProcessLauncher::new(command, tokens.clone());
    let job = conformance::job("alice", None, Timestamp::now());
    // Not listening yet: a retryable failure.
    assert!(launcher.launch(&job).await.unwrap_err().retryable);
    launcher.set_endpoint("http://127.0.0.1:9");
    let id = launcher.launch(&job).await.unwrap();
    assert_eq!(launcher.launch(&job).await.unwrap(), id, "one worker per job attempt");
    let pid = id.strip_prefix("proc-").unwrap();
    let token_file = dir.path().join(format!("token.{pid}"));
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&token_file).map_or(true, |t| t.trim().is_empty()) {
        assert!(started.elapsed().as_secs() < 10, "the worker never read its token");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
    let argv = std::fs::read_to_string(dir.path().join(format!("argv.{pid}"))).unwrap();
    assert!(argv.contains(&job.id.to_string()) && argv.contains("--heartbeat-seconds 3"), "{argv}");
    assert!(!argv.contains(&token), "the token is not in argv");
    assert_eq!(tokens.authenticate(&bearer(&token)), Ok(Caller::Worker { instance_id: id.clone() }));
    let listed = launcher.instances().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id.as_str(), listed[0].job.as_ref()), (id.as_str(), Some(&job.id)));
    // WHEN it is terminated THEN the process is gone and its token no longer works
    launcher.terminate(&id).await.unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the worker still runs");
    assert!(launcher.instances().await.unwrap().is_empty());
    assert_eq!(tokens.authenticate(&bearer(&token)), Err(AuthError::Invalid));
    launcher.terminate(&id).await.unwrap();
    // A missing program is a clear, final launch failure.
    let missing =
        WorkerCommand { program: dir.path().join("nope"), log_dir: dir.path().into(), heartbeat_seconds: None };
    let launcher = ProcessLauncher::new(missing, BearerTokens::new());
    launcher.set_endpoint("http://127.0.0.1:9");
    let e = launcher.launch(&job).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("barge-worker"), "{e}");
}

#[tokio::test]
async fn job_log_files_read_back_in_whole_lines_with_a_cursor() {
    use barge_jobs::{LogError, LogLine, LogSink, LogSource};
    use barge_local::{FileLogSink, FileLogs};
    let dir = tempfile::tempdir().unwrap();
    let job = JobId::random();
    let reader = FileLogs::new(dir.path());
    // No file yet: empty
    let page = reader.read(&job, 1, None, 10).await.unwrap();
    assert!(page.lines.is_empty());
    assert_eq!(page.next, "0");
    // GIVEN a worker's JSON lines and a line of plain text (a panic message, say)
    let mut sink = FileLogSink::open(&FileLogSink::path(dir.path(), &job)).await.unwrap();
    let json = r#"{"timestamp":"2026-11-23T10:00:00.123Z","level":"INFO","fields":{"message":"claimed"}}"#;
    sink.ship(&[
        LogLine { at: Timestamp::now(), text: json.into() },
        LogLine { at: Timestamp::now(), text: "plain".into() },
    ])
    .await
    .unwrap();
    // WHEN read one line at a time
    let first = reader.read(&job, 1, None, 1).await.unwrap();
    let second = reader.read(&job, 1, Some(&first.next), 1).await.unwrap();
    let end = reader.read(&job, 1, Some(&second.next), 1).await.unwrap();
    // THEN each line comes once, with the time the worker wrote it
    assert_eq!(first.lines[0].text, json);
    assert_eq!(first.lines[0].at.rfc3339(), "2026-11-23T10:00:00.123Z");
    assert_eq!(second.lines[0].text, "plain");
    assert!(second.lines[0].at >= first.lines[0].at, "a line without a time is dated by the file's last write");
    assert!(end.lines.is_empty());
    assert_eq!(end.next, second.next);
    // AND a line still being written waits for its newline
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(FileLogSink::path(dir.path(), &job)).unwrap();
    file.write_all(b"half").unwrap();
    assert!(reader.read(&job, 1, Some(&end.next), 10).await.unwrap().lines.is_empty());
    file.write_all(b" done\n").unwrap();
    let page = reader.read(&job, 1, Some(&end.next), 10).await.unwrap();
    assert_eq!(page.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["half done"]);
    // AND cursors it did not make are refused
    for bad in ["x", "-1", "999999"] {
        assert!(matches!(reader.read(&job, 1, Some(bad), 10).await, Err(LogError::BadCursor)), "{bad:?}");
    }
}
