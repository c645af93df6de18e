//! The job API through `barge serve`: a job runs to `succeeded`; a worker killed with SIGKILL
//! is replaced and its successor resumes; a cancel ends a copy within 10 s; bad credentials
//! fail at once, without a retry or a leak.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use barge_jobs::{Command as JobCommand, JobStatus, Options, State};
use barge_testkit::{PASSWORD, PASSWORD_ENCODED, dst18, src18, unique};

use crate::harness::{Serve, alive, copy_options, count, pid_of, slow_source, succeeded};

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
async fn jobs_running_when_barge_serve_stops_resume_when_it_starts_again() {
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    let (_, dst_db, running) = serve.copy_under_way(&src, &dst, "restart").await;
    // WHEN barge serve is stopped mid-copy (Ctrl-C)
    let (data, output) = serve.stop();
    // THEN its worker stopped with it and the job waits as its next attempt
    assert!(!alive(pid_of(&running)));
    assert!(output.contains(&format!("job {} is queued (attempt 2)", running.id)), "{output}");
    // AND when it starts again the job resumes and completes without duplicates
    let serve = Serve::start_in(data);
    let seen = serve.finish(&running.id).await;
    let last = seen.last().unwrap();
    succeeded(last);
    assert_eq!(last.attempt, 2, "{last:#?}");
    let why = "the worker was lost: barge serve stopped while the job ran";
    assert!(seen.iter().any(|v| v.last_failure.as_deref() == Some(why)), "{seen:#?}");
    assert_eq!(count(&dst, &dst_db, "select count(*) from items").await, 150_000);
    assert_eq!(count(&dst, &dst_db, "select count(distinct id) from items").await, 150_000);
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
