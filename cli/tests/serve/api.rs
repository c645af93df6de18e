//! The job API through `barge serve`: a job runs to `succeeded`; a worker killed with SIGKILL
//! is replaced and its successor resumes; a cancel ends a copy within 10 s; bad credentials
//! fail at once, without a retry or a leak; a sync streams and cuts over on request, and a
//! cancelled one leaves no slot; a sync whose worker dies while streaming is watched again by
//! the next attempt, and one whose worker dies mid-copy is cleaned up and refused.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use barge_jobs::{Command as JobCommand, JobStatus, Options, Phase, State, api::JobView};
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
    let slots = format!("select count(*) from pg_replication_slots where database = '{src_db}'");
    assert_eq!(count(&src, "postgres", &slots).await, 0);
}

/// What barge's replication left for `src_db` → `dst_db`: (slots, publications, subscriptions).
async fn replication_objects(src_db: &str, dst_db: &str) -> (i64, i64, i64) {
    let (src, dst) = (src18(), dst18());
    let slots = format!("select count(*) from pg_replication_slots where database = '{src_db}'");
    let subscriptions = format!(
        "select count(*) from pg_subscription s join pg_database d on d.oid = s.subdbid where d.datname = '{dst_db}'"
    );
    (
        count(&src, "postgres", &slots).await,
        count(&src, src_db, "select count(*) from pg_publication").await,
        count(&dst, "postgres", &subscriptions).await,
    )
}

/// A sync job of a new slow source, watched until its copy has written something; its slot
/// exists by then.
async fn sync_under_way(serve: &Serve, prefix: &str) -> (String, String, JobView) {
    let (src, dst) = (src18(), dst18());
    let src_db = slow_source(&src, prefix).await;
    let dst_db = unique(&format!("{prefix}_copy"));
    let job = serve.submit(JobCommand::Sync, &src.url(&src_db), &dst.url(&dst_db), copy_options()).await;
    let copying =
        |v: &JobView| v.status.state().is_terminal() || v.progress.as_ref().is_some_and(|p| p.bytes_copied > 0);
    let running = serve.watch(&job.id, Duration::from_secs(120), copying).await.pop().unwrap();
    assert!(matches!(running.status, JobStatus::Running { .. }), "{running:#?}");
    assert_eq!(replication_objects(&src_db, &dst_db).await.0, 1, "the slot exists while copying");
    (src_db, dst_db, running)
}

/// Waits (at most 30 s) until the target's `notes` has the row `id`.
async fn reaches_target(dst_db: &str, id: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&dst18(), dst_db, &format!("select count(*) from notes where id = {id}")).await == 0 {
        assert!(Instant::now() < deadline, "the change never reached the target");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_remote_sync_streams_with_live_lag_and_cuts_over_on_request() {
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    let src_db = slow_source(&src, "rsync").await;
    let dst_db = unique("rsync_copy");
    // WHEN a sync job is submitted
    let job = serve.submit(JobCommand::Sync, &src.url(&src_db), &dst.url(&dst_db), copy_options()).await;
    // THEN it copies, then streams, reporting the lag in its progress
    let streaming = |v: &JobView| {
        v.status.state().is_terminal()
            || (v.status == JobStatus::Running { phase: Phase::Streaming }
                && v.progress.as_ref().is_some_and(|p| p.cdc_lag_bytes.is_some()))
    };
    let seen = serve.watch(&job.id, Duration::from_secs(180), streaming).await;
    let view = seen.last().unwrap();
    assert_eq!(view.status, JobStatus::Running { phase: Phase::Streaming }, "{view:#?}");
    assert!(seen.iter().any(|v| v.status == JobStatus::Running { phase: Phase::Copying }), "no copying phase seen");
    assert_eq!(replication_objects(&src_db, &dst_db).await, (1, 1, 1));
    // AND changes written to the source reach the target while it streams
    src.run_sql(&src_db, "insert into notes values (900001, 'written while syncing'); delete from notes where id <= 5")
        .await;
    reaches_target(&dst_db, 900001).await;
    // WHEN the owner asks for the cutover
    let asked = serve.client.cutover(&job.id).await.unwrap();
    assert!(asked.cutover_requested);
    // THEN the job cuts over, verifies and succeeds, leaving no replication behind
    let last = serve.finish(&job.id).await.pop().unwrap();
    succeeded(&last);
    let message = last.progress.as_ref().and_then(|p| p.message.clone()).unwrap_or_default();
    assert!(message.contains("cut over"), "{message}");
    assert_eq!(replication_objects(&src_db, &dst_db).await, (0, 0, 0));
    assert_eq!(count(&dst, &dst_db, "select count(*) from notes").await, 4996);
    assert!(serve.log(&job.id).contains("cutover requested"));
    // AND a cutover of a job that is not a sync is refused
    let verify = serve.submit(JobCommand::Verify, &src.url(&src_db), &dst.url(&dst_db), Options::default()).await;
    let refused = serve.client.cutover(&verify.id).await.unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");
    succeeded(serve.finish(&verify.id).await.last().unwrap());
    let written = serve.everything_written();
    assert!(!written.contains(PASSWORD) && !written.contains(PASSWORD_ENCODED), "a password was written");
}

/// Runs `barge jobs ARGS` next to `serve`: (exit code, stdout and stderr).
fn jobs_cli(serve: &Serve, args: &[&str]) -> (i32, String) {
    let out = serve.barge().arg("jobs").args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn a_remote_sync_is_paused_resumed_and_changes_its_tables_on_request() {
    // GIVEN a streaming sync job that leaves one table out
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    let src_db = src.create_db("rchanges").await;
    src.run_sql(
        &src_db,
        "create table notes (id int primary key, body text); insert into notes select g, 'n' from generate_series(1, 2000) g;
         create table extra (id int primary key, v text); insert into extra select g, 'e' from generate_series(1, 300) g;",
    )
    .await;
    let dst_db = unique("rchanges_copy");
    let spec = barge_jobs::JobSpec {
        command: JobCommand::Sync,
        source_url: barge_jobs::ConnUrl::new(src.url(&src_db)),
        target_url: barge_jobs::ConnUrl::new(dst.url(&dst_db)),
        filter: barge_jobs::Filter { exclude_tables: vec!["extra".into()], ..barge_jobs::Filter::default() },
        options: copy_options(),
    };
    let job = serve.client.create(&spec, None).await.unwrap();
    let streaming =
        |v: &JobView| v.status.state().is_terminal() || v.status == JobStatus::Running { phase: Phase::Streaming };
    let view = serve.watch(&job.id, Duration::from_secs(180), streaming).await.pop().unwrap();
    assert_eq!(view.status, JobStatus::Running { phase: Phase::Streaming }, "{view:#?}");
    let id = job.id.to_string();
    // WHEN its owner pauses it, THEN changes wait on the source, and arrive after the resume
    let (code, text) = jobs_cli(&serve, &["pause", &id]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("paused barge_"), "{text}");
    src.run_sql(&src_db, "insert into notes values (900001, 'written while paused')").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&dst, &dst_db, "select count(*) from notes where id = 900001").await, 0);
    let (code, text) = jobs_cli(&serve, &["resume", &id, "--output", "json"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(r#""state":"succeeded""#), "{text}");
    reaches_target(&dst_db, 900001).await;
    // WHEN it adds the table it left out, copies one again and removes one
    let (code, text) = jobs_cli(&serve, &["add-tables", &id, "--include-table", "public.extra"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("added public.extra"), "{text}");
    assert_eq!(count(&dst, &dst_db, "select count(*) from extra").await, 300);
    dst.run_sql(&dst_db, "delete from notes where id > 1000").await;
    let (code, text) = jobs_cli(&serve, &["resync", &id, "public.notes"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(count(&dst, &dst_db, "select count(*) from notes").await, 2001);
    // AND a change that cannot apply fails with its reason, and the sync goes on
    let (code, text) = jobs_cli(&serve, &["remove-tables", &id, "--include-table", "nosuch"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("carries no table"), "{text}");
    let (code, text) = jobs_cli(&serve, &["add-tables", &id, "--include-table", "a.b.c.d"]);
    assert_eq!(code, 2, "refused before asking: {text}");
    let (code, text) = jobs_cli(&serve, &["remove-tables", &id, "--include-table", "extra"]);
    assert_eq!(code, 0, "{text}");
    // WHEN the source's schema changes: the worker applies an added column by itself, and
    // pauses the sync for a renamed one until the owner asks for it
    src.run_sql(
        &src_db,
        "alter table notes add column tag text default 'x'; insert into notes values (900002, 'n', 'y')",
    )
    .await;
    reaches_target(&dst_db, 900002).await;
    src.run_sql(
        &src_db,
        "alter table notes rename column body to text_body; insert into notes (id, text_body) values (900003, 'renamed')",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&dst, &dst_db, "select count(*) from pg_subscription where not subenabled").await == 0 {
        assert!(Instant::now() < deadline, "the sync was never paused for the rename");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, text) = jobs_cli(&serve, &["apply-ddl", &id]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(r#"RENAME COLUMN "body" TO "text_body""#), "{text}");
    let (code, text) = jobs_cli(&serve, &["apply-ddl", &id, "--destructive"]);
    assert_eq!(code, 0, "{text}");
    reaches_target(&dst_db, 900003).await;
    // (2001 rows older than the column, and the one written after the rename)
    assert_eq!(count(&dst, &dst_db, "select count(*) from notes where tag = 'x'").await, 2002);
    // THEN the job lists what it was asked and what became of it, and cuts over
    let shown = serve.client.get(&job.id).await.unwrap();
    let states: Vec<_> = shown.changes.iter().map(|c| c.state).collect();
    use barge_jobs::ChangeState::{Failed, Succeeded};
    assert_eq!(
        states,
        [Succeeded, Succeeded, Succeeded, Succeeded, Failed, Succeeded, Failed, Succeeded],
        "{:#?}",
        shown.changes
    );
    serve.client.cutover(&job.id).await.unwrap();
    succeeded(serve.finish(&job.id).await.last().unwrap());
    assert_eq!(replication_objects(&src_db, &dst_db).await, (0, 0, 0));
    let written = serve.everything_written();
    assert!(!written.contains(PASSWORD) && !written.contains(PASSWORD_ENCODED), "a password was written");
}

#[tokio::test]
async fn a_remote_syncs_wal_guard_pauses_it_at_its_limit() {
    // GIVEN a sync job whose WAL limit the slot passes at once, set to pause
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    let src_db = src.create_db("rwal").await;
    src.run_sql(&src_db, "create table notes (id int primary key, body text); insert into notes values (1, 'n')").await;
    let dst_db = unique("rwal_copy");
    let options = Options {
        wal_warn: Some(1),
        wal_limit: Some(2),
        on_wal_limit: Some(barge_jobs::WalLimitAction::Pause),
        ..copy_options()
    };
    let job = serve.submit(JobCommand::Sync, &src.url(&src_db), &dst.url(&dst_db), options).await;
    let streaming =
        |v: &JobView| v.status.state().is_terminal() || v.status == JobStatus::Running { phase: Phase::Streaming };
    let view = serve.watch(&job.id, Duration::from_secs(180), streaming).await.pop().unwrap();
    assert_eq!(view.status, JobStatus::Running { phase: Phase::Streaming }, "{view:#?}");
    // THEN its worker pauses the sync, saying why in the job's log, and the job runs on
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&dst, &dst_db, "select count(*) from pg_subscription where not subenabled").await == 0 {
        assert!(Instant::now() < deadline, "the WAL guard never paused the sync: {}", serve.log(&job.id));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let said = |v: &JobView| {
        v.status.state().is_terminal()
            || v.progress
                .as_ref()
                .and_then(|p| p.message.as_deref())
                .is_some_and(|m| m.contains("over the sync's limit"))
    };
    let view = serve.watch(&job.id, Duration::from_secs(30), said).await.pop().unwrap();
    assert_eq!(view.status, JobStatus::Running { phase: Phase::Streaming }, "{view:#?}");
    let message = view.progress.and_then(|p| p.message).unwrap_or_default();
    assert!(message.contains("paused barge_"), "{message}");
    // AND a cancel removes the replication
    serve.client.cancel(&job.id).await.unwrap();
    assert_eq!(serve.finish(&job.id).await.pop().unwrap().status, JobStatus::Cancelled);
    assert_eq!(replication_objects(&src_db, &dst_db).await, (0, 0, 0));
}

#[tokio::test]
async fn a_remote_sync_cancelled_during_its_copy_leaves_no_slot() {
    let serve = Serve::start();
    let (src_db, dst_db, job) = sync_under_way(&serve, "rsync_cancel").await;
    // WHEN the owner cancels mid-copy
    serve.client.cancel(&job.id).await.unwrap();
    // THEN the job ends cancelled and its slot and publication are gone
    let last = serve.finish(&job.id).await.pop().unwrap();
    assert_eq!(last.status, JobStatus::Cancelled, "{last:#?}");
    assert_eq!(replication_objects(&src_db, &dst_db).await, (0, 0, 0));
}

#[tokio::test]
async fn a_sync_whose_worker_dies_while_streaming_is_watched_again_and_cuts_over() {
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    let src_db = slow_source(&src, "rsync_kill").await;
    let dst_db = unique("rsync_kill_copy");
    let job = serve.submit(JobCommand::Sync, &src.url(&src_db), &dst.url(&dst_db), copy_options()).await;
    let streaming_on = |attempt: u32| {
        move |v: &JobView| {
            v.status.state().is_terminal()
                || (v.attempt == attempt && v.status == JobStatus::Running { phase: Phase::Streaming })
        }
    };
    let first = serve.watch(&job.id, Duration::from_secs(180), streaming_on(1)).await.pop().unwrap();
    assert_eq!(first.status, JobStatus::Running { phase: Phase::Streaming }, "{first:#?}");
    // WHEN its worker is killed while the target streams
    let pid = pid_of(&first);
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    // THEN replication goes on without it: a change still reaches the target
    assert_eq!(replication_objects(&src_db, &dst_db).await, (1, 1, 1));
    src.run_sql(&src_db, "insert into notes values (900002, 'written while no worker watched')").await;
    reaches_target(&dst_db, 900002).await;
    // AND the next attempt watches the same replication rather than copying again
    let second = serve.watch(&job.id, Duration::from_secs(180), streaming_on(2)).await.pop().unwrap();
    assert_eq!(second.status, JobStatus::Running { phase: Phase::Streaming }, "{second:#?}");
    assert!(second.progress.as_ref().is_some_and(|p| p.cdc_lag_bytes.is_some()), "{second:#?}");
    assert_eq!(replication_objects(&src_db, &dst_db).await, (1, 1, 1));
    assert!(serve.log(&job.id).contains("watching it again"));
    // AND a cutover then ends the job succeeded on attempt 2, with nothing left behind
    serve.client.cutover(&job.id).await.unwrap();
    let last = serve.finish(&job.id).await.pop().unwrap();
    succeeded(&last);
    assert_eq!(last.attempt, 2, "{last:#?}");
    assert_eq!(replication_objects(&src_db, &dst_db).await, (0, 0, 0));
    assert_eq!(count(&dst, &dst_db, "select count(*) from notes").await, 5001);
    assert_eq!(count(&dst, &dst_db, "select count(*) from items").await, 150_000);
}

#[tokio::test]
async fn a_sync_whose_worker_dies_during_its_copy_is_resumed_by_the_next_attempt() {
    let serve = Serve::start();
    let (src_db, dst_db, running) = sync_under_way(&serve, "rsync_kill_copy").await;
    // WHEN its worker is killed mid-copy, leaving its slot, publication and marks
    assert!(Command::new("kill").args(["-KILL", &pid_of(&running).to_string()]).status().unwrap().success());
    src18().run_sql(&src_db, "insert into notes values (900004, 'written while no worker ran')").await;
    // THEN the next attempt resumes the copy from the same slot and streams
    let streaming = |v: &JobView| {
        v.status.state().is_terminal() || (v.attempt == 2 && v.status == JobStatus::Running { phase: Phase::Streaming })
    };
    let second = serve.watch(&running.id, Duration::from_secs(180), streaming).await.pop().unwrap();
    assert_eq!(second.status, JobStatus::Running { phase: Phase::Streaming }, "{second:#?}");
    assert!(serve.log(&running.id).contains("resuming it"));
    assert_eq!(replication_objects(&src_db, &dst_db).await, (1, 1, 1));
    reaches_target(&dst_db, 900004).await;
    // AND a cutover ends it succeeded with every row once
    serve.client.cutover(&running.id).await.unwrap();
    let last = serve.finish(&running.id).await.pop().unwrap();
    succeeded(&last);
    assert_eq!(last.attempt, 2, "{last:#?}");
    assert_eq!(replication_objects(&src_db, &dst_db).await, (0, 0, 0));
    assert_eq!(count(&dst18(), &dst_db, "select count(*) from notes").await, 5001);
    assert_eq!(count(&dst18(), &dst_db, "select count(*) from items").await, 150_000);
}

#[tokio::test]
async fn a_sync_out_of_attempts_has_what_it_left_removed_by_a_cleanup_worker() {
    // GIVEN a sync job with one attempt, copying
    let serve = Serve::start_with(&["--max-attempts", "1"]);
    let (src_db, dst_db, running) = sync_under_way(&serve, "rsync_last").await;
    // WHEN its worker dies, leaving its slot and publication, and no attempt remains
    assert!(Command::new("kill").args(["-KILL", &pid_of(&running).to_string()]).status().unwrap().success());
    let last = serve.finish(&running.id).await.pop().unwrap();
    assert_eq!(last.status.state(), State::Failed, "{last:#?}");
    // THEN a cleanup worker removes them, and the job says nothing is left
    let done = serve.watch(&running.id, Duration::from_secs(120), |v| !v.cleaning_up).await.pop().unwrap();
    assert_eq!(done.leftover, None, "{done:#?}");
    assert_eq!(replication_objects(&src_db, &dst_db).await, (0, 0, 0));
    let login: i64 = count(
        &src18(),
        "postgres",
        &format!("select count(*) from pg_roles where rolname = 'barge_{}_login'", running.id),
    )
    .await;
    assert_eq!(login, 0, "the sync's login role is gone too");
    assert!(serve.log(&running.id).contains("removing the replication objects the sync left"));
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
