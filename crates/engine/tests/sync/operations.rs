//! What a sync that runs for weeks needs besides streaming: pause and resume, and the WAL
//! guard on the source's disk; each under writes, ending equal.

use std::{sync::atomic::Ordering, time::Duration};

use barge_engine::{Error, Request, WalLimitAction, progress, sync};
use barge_testkit::{Cluster, dst18, src15, src18, unique};

use super::{barge_objects, source_db, start_writer, sync_request};
use crate::{assert_same_data, plan_ok};

/// Waits until every subscription streams; the last status.
async fn streaming(req: &Request) -> sync::ReplicationStatus {
    for _ in 0..200 {
        let status = sync::status(req).await.unwrap();
        if status.streaming() && status.databases.iter().all(|d| d.workers > 0) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the sync never streamed: {:?}", sync::status(req).await);
}

/// Waits until the target's apply workers have stopped (a paused subscription).
async fn applying_nothing(req: &Request) -> sync::ReplicationStatus {
    for _ in 0..200 {
        let status = sync::status(req).await.unwrap();
        if status.databases.iter().all(|d| d.workers == 0) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the apply workers kept running: {:?}", sync::status(req).await);
}

async fn count(cluster: &Cluster, db: &str, sql: &str) -> i64 {
    cluster.connect(db).await.query_one(sql, &[]).await.unwrap().get(0)
}

async fn source_version(src: &Cluster) -> i32 {
    let v: String = src.connect("postgres").await.query_one("show server_version_num", &[]).await.unwrap().get(0);
    v.parse().unwrap()
}

async fn cut_over(req: &Request) -> sync::CutoverReport {
    sync::cutover(req, &sync::CutoverOptions { timeout: Duration::from_secs(120) }, progress::discard()).await.unwrap()
}

async fn pause_and_resume_under_writes(src: Cluster) {
    // GIVEN a streaming sync of a source under a steady write load
    let src_db = source_db(&src).await;
    let dst_db = unique("sync_pause");
    let req = sync_request(&src, &src_db, &dst_db);
    let plan = plan_ok(&req).await;
    let (stop, writer) = start_writer(&src, &src_db);
    sync::start(&req, &plan, progress::discard(), sync::no_control()).await.unwrap();
    let status = streaming(&req).await;
    // (a failover slot where the source can keep it through a failover: 17+)
    let failover = (source_version(&src).await >= 170000).then_some(true);
    assert_eq!(status.databases[0].failover, failover, "{status:?}");
    // WHEN the user pauses it
    let paused = sync::pause(&req).await.unwrap();
    assert_eq!(paused.changed.len(), 1, "{paused:?}");
    assert_eq!(sync::pause(&req).await.unwrap().unchanged.len(), 1, "pausing twice changes nothing");
    // THEN the target applies nothing while the source goes on writing, and status shows the
    // WAL the source keeps for the slot, growing
    let first = applying_nothing(&req).await;
    assert!(first.paused() && !first.streaming(), "{first:?}");
    let rows = count(&dst18(), &dst_db, "select count(*) from accounts").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = sync::status(&req).await.unwrap().with_rates(&first, 1.5);
    assert_eq!(count(&dst18(), &dst_db, "select count(*) from accounts").await, rows, "applied while paused");
    assert!(second.retained_bytes > first.retained_bytes, "{first:?} then {second:?}");
    assert!(second.retained_bytes_per_second.unwrap() > 0.0, "{second:?}");
    // AND a cutover is refused while paused, changing nothing
    let cut = sync::cutover(&req, &sync::CutoverOptions { timeout: Duration::from_secs(5) }, progress::discard()).await;
    match cut {
        Err(Error::Refused(message)) => assert!(message.contains("barge sync resume"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(barge_objects(&src, &src_db, &dst_db).await, (1, 1, 1));
    // WHEN it resumes
    assert_eq!(sync::resume(&req).await.unwrap().changed.len(), 1);
    streaming(&req).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    // THEN the target catches up with every write made while paused: equal at the cutover
    let cut = cut_over(&req).await;
    assert!(cut.verify.ok, "{:#?}", cut.verify);
    assert_same_data(&src, &src_db, &dst18(), &dst_db).await;
    assert_eq!(barge_objects(&src, &src_db, &dst_db).await, (0, 0, 0));
}

#[tokio::test]
async fn pause_and_resume_lose_nothing_18_to_18() {
    pause_and_resume_under_writes(src18()).await;
}

#[tokio::test]
async fn pause_and_resume_lose_nothing_15_to_18() {
    pause_and_resume_under_writes(src15()).await;
}

/// A schema the sync leaves out, where [`write_wal`] writes.
async fn outside_the_sync(src: &Cluster, db: &str, req: &mut Request) {
    src.run_sql(db, "create schema outside").await;
    req.filter.exclude_schemas = vec!["outside".into()];
}

/// Writes about `mib` MiB of WAL on the source, in a schema the sync leaves out.
async fn write_wal(src: &Cluster, db: &str, mib: u64) {
    src.run_sql(
        db,
        &format!(
            "create table if not exists outside.ballast (id bigserial primary key, pad text);
             insert into outside.ballast (pad) select repeat(md5(g::text), 32) from generate_series(1, {}) g",
            mib * 1024
        ),
    )
    .await;
}

#[tokio::test]
async fn the_wal_guard_warns_then_stops_the_sync_at_its_limit() {
    // GIVEN a sync started with a warning threshold and a limit, paused so that its slot
    // keeps the WAL the source writes (a source of its own: other tests' writes would count,
    // WAL being the whole server's)
    let src = barge_testkit::cluster("walstop18", 18);
    let src_db = source_db(&src).await;
    let dst_db = unique("sync_guard");
    let mut req = sync_request(&src, &src_db, &dst_db);
    outside_the_sync(&src, &src_db, &mut req).await;
    req.options.wal_warn = Some(8 << 20);
    req.options.wal_limit = Some(48 << 20);
    let plan = plan_ok(&req).await;
    sync::start(&req, &plan, progress::discard(), sync::no_control()).await.unwrap();
    streaming(&req).await;
    sync::pause(&req).await.unwrap();
    // WHEN the slot keeps more than the warning threshold
    write_wal(&src, &src_db, 12).await;
    let status = sync::status(&req).await.unwrap();
    // THEN status warns, naming the threshold, and nothing acts yet
    assert!(status.retained_bytes >= 8 << 20, "{status:?}");
    assert!(!status.wal_limit_reached, "{status:?}");
    assert!(status.wal_alerts.iter().any(|a| a.contains("warning threshold of 8.0 MiB")), "{status:?}");
    assert!(sync::guard(&req, &status, progress::discard()).await.unwrap().is_none());
    // WHEN it keeps more than the limit
    write_wal(&src, &src_db, 48).await;
    let status = sync::status(&req).await.unwrap();
    assert!(status.wal_limit_reached, "{status:?}");
    // THEN the watching stream stops the sync: replication removed on both sides, so the
    // source frees the WAL, and the target keeps its rows
    let result = sync::stream(&req, progress::discard(), sync::no_control(), Duration::from_millis(100)).await;
    match result {
        Err(Error::Stopped(message)) => {
            assert!(message.contains("over the sync's limit of 48.0 MiB") && message.contains("--sync"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(barge_objects(&src, &src_db, &dst_db).await, (0, 0, 0));
    assert_eq!(count(&dst18(), &dst_db, "select count(*) from accounts").await, 60000);
}

#[tokio::test]
async fn a_target_that_cannot_apply_is_paused_at_the_wal_limit() {
    // GIVEN a sync whose limit pauses it, and a target table locked so that the apply waits
    let src = barge_testkit::cluster("walpause18", 18);
    let src_db = source_db(&src).await;
    let dst_db = unique("sync_guard_pause");
    let mut req = sync_request(&src, &src_db, &dst_db);
    outside_the_sync(&src, &src_db, &mut req).await;
    req.options.wal_limit = Some(24 << 20);
    req.options.on_wal_limit = Some(WalLimitAction::Pause);
    let plan = plan_ok(&req).await;
    sync::start(&req, &plan, progress::discard(), sync::no_control()).await.unwrap();
    streaming(&req).await;
    let blocker = dst18().connect(&dst_db).await;
    blocker.batch_execute("begin; lock table scratch in access exclusive mode").await.unwrap();
    // WHEN the source writes to that table past the limit
    src.run_sql(&src_db, "insert into scratch values (900001, 'blocked')").await;
    write_wal(&src, &src_db, 32).await;
    let mut status = sync::status(&req).await.unwrap();
    for _ in 0..100 {
        if status.wal_limit_reached {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = sync::status(&req).await.unwrap();
    }
    assert!(status.wal_limit_reached, "{status:?}");
    // THEN the guard pauses the sync and says so; everything stays in place
    let said = sync::guard(&req, &status, progress::discard()).await.unwrap();
    assert!(said.is_some_and(|s| s.contains("sync resume")));
    blocker.batch_execute("rollback").await.unwrap();
    let status = applying_nothing(&req).await;
    assert!(status.paused(), "{status:?}");
    assert_eq!(barge_objects(&src, &src_db, &dst_db).await, (1, 1, 1));
    // AND once resumed, the blocked change arrives
    sync::resume(&req).await.unwrap();
    let mut arrived = 0;
    for _ in 0..200 {
        arrived = count(&dst18(), &dst_db, "select count(*) from scratch where n = 900001").await;
        if arrived == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(arrived, 1);
    sync::stop(&req).await.unwrap();
}

/// Writes to `ledger` until stopped: inserts, updates and deletes in small transactions.
fn start_ledger_writer(
    src: &Cluster,
    db: &str,
) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (src, db, flag) = (src.clone(), db.to_owned(), stop.clone());
    let handle = tokio::spawn(async move {
        let client = src.connect(&db).await;
        let mut n: u64 = 0;
        while !flag.load(Ordering::Relaxed) {
            let i = n as i64;
            client
                .batch_execute(&format!(
                    "begin;
                     insert into ledger (account, amount, note) values ({}, {i}, 'live {i}');
                     update ledger set amount = amount + 1 where id = {};
                     delete from ledger where id = {};
                     commit;",
                    1 + i % 60000,
                    1 + i * 7 % 20000,
                    1 + i * 11 % 20000
                ))
                .await
                .unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        n
    });
    (stop, handle)
}

async fn tables_join_leave_and_copy_again_under_writes(src: Cluster) {
    // GIVEN a sync of every table but `ledger`, which the source also writes to all along
    let src_db = source_db(&src).await;
    src.run_sql(
        &src_db,
        "create table ledger (id bigint generated by default as identity primary key,
                              account bigint not null references accounts(id), amount numeric not null,
                              note text, check (amount > -1000000));
         create index ledger_account on ledger (account);
         insert into ledger (account, amount) select 1 + g % 60000, g from generate_series(1, 20000) g;",
    )
    .await;
    let dst_db = unique("sync_tables");
    let mut req = sync_request(&src, &src_db, &dst_db);
    req.filter.exclude_tables = vec!["ledger".into()];
    let plan = plan_ok(&req).await;
    let (stop, writer) = start_writer(&src, &src_db);
    let (stop_ledger, ledger_writer) = start_ledger_writer(&src, &src_db);
    sync::start(&req, &plan, progress::discard(), sync::no_control()).await.unwrap();
    streaming(&req).await;
    // WHEN `ledger` is added while both writers run
    let added = sync::add(&req, &["public.led*".into()], progress::discard()).await.unwrap();
    // THEN it is created on the target with its index, check and key, copied, and streams
    assert_eq!(added.added, ["public.ledger"], "{added:?}");
    assert_eq!(added.created, ["public.ledger"], "{added:?}");
    let status = streaming(&req).await;
    assert_eq!(status.databases[0].tables, 5, "{status:?}");
    assert!(status.schema_changes.is_empty(), "{:?}", status.schema_changes);
    let index: i64 =
        count(&dst18(), &dst_db, "select count(*) from pg_indexes where indexname = 'ledger_account'").await;
    assert_eq!(index, 1);
    // AND adding it again is refused, naming the pattern
    let again = sync::add(&req, &["public.ledger".into()], progress::discard()).await.unwrap_err();
    assert!(again.to_string().contains("public.ledger"), "{again}");
    // WHEN a table referenced by foreign keys is damaged on the target, then copied again
    dst18()
        .run_sql(
            &dst_db,
            "update accounts set balance = -1, owner = 'broken' where id < 500;
             insert into accounts (id, owner) values (999999999, 'stray')",
        )
        .await;
    let resynced = sync::resync(&req, &["accounts".into()], progress::discard()).await.unwrap();
    assert_eq!(resynced.resynced, ["public.accounts"], "{resynced:?}");
    streaming(&req).await;
    // WHEN `keyless` is removed from the sync
    let removed = sync::remove(&req, &["keyless".into()]).await.unwrap();
    assert_eq!(removed.removed, ["public.keyless"], "{removed:?}");
    let status = sync::status(&req).await.unwrap();
    assert_eq!(status.databases[0].tables, 4, "{status:?}");
    assert!(status.schema_changes.is_empty(), "a removed table is not a new one: {:?}", status.schema_changes);
    let kept = count(&dst18(), &dst_db, "select count(*) from keyless").await;
    // AND removing every table is refused
    let all = sync::remove(&req, &["*".into()]).await.unwrap_err();
    assert!(all.to_string().contains("barge sync stop"), "{all}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    stop_ledger.store(true, Ordering::Relaxed);
    assert!(writer.await.unwrap() > 41);
    assert!(ledger_writer.await.unwrap() > 10);
    // THEN the cutover compares the tables the sync carries: equal, `ledger` included, and
    // `keyless` kept as it was when it left (the source wrote on)
    let cut = cut_over(&req).await;
    assert!(cut.verify.ok, "{:#?}", cut.verify);
    let compared: Vec<&str> = cut.verify.databases[0].tables.iter().map(|t| t.table.as_str()).collect();
    assert!(compared.contains(&"public.ledger") && !compared.contains(&"public.keyless"), "{compared:?}");
    for table in ["accounts", "events", "scratch", "ledger"] {
        let sql = format!("select count(*) from {table}");
        assert_eq!(count(&src, &src_db, &sql).await, count(&dst18(), &dst_db, &sql).await, "{table}");
    }
    assert_eq!(count(&dst18(), &dst_db, "select count(*) from keyless").await, kept);
    assert!(count(&src, &src_db, "select count(*) from keyless").await > kept);
    assert_eq!(barge_objects(&src, &src_db, &dst_db).await, (0, 0, 0));
}

#[tokio::test]
async fn tables_join_leave_and_copy_again_18_to_18() {
    tables_join_leave_and_copy_again_under_writes(src18()).await;
}

#[tokio::test]
async fn tables_join_leave_and_copy_again_15_to_18() {
    tables_join_leave_and_copy_again_under_writes(src15()).await;
}

/// Whether every table in `tables` has all its parts marked done in the target's progress
/// marks (`data:<table>:<k>/<n>`), and `events` has not.
async fn copied_all_but_events(dst_db: &str, tables: &[&str]) -> bool {
    let admin = dst18().connect("postgres").await;
    if admin.query_opt("select 1 from pg_database where datname = $1", &[&dst_db]).await.unwrap().is_none() {
        return false;
    }
    let client = dst18().connect(dst_db).await;
    let Ok(rows) = client.query("select step from _barge.done where step like 'data:%'", &[]).await else {
        return false;
    };
    let steps: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let complete = |table: &str| {
        let parts: Vec<&String> = steps.iter().filter(|s| s.starts_with(&format!("data:public.{table}:"))).collect();
        parts.first().is_some_and(|s| {
            let total: usize = s.rsplit('/').next().unwrap().parse().unwrap();
            parts.len() == total
        })
    };
    tables.iter().all(|t| complete(t)) && !complete("events")
}

/// How a sync's copy stops half-way.
enum Death {
    /// Its process is gone: nothing cleans up.
    Killed,
    /// A worker being stopped detaches it.
    Interrupted,
}

async fn a_copy_that_died_resumes(src: Cluster, death: Death) {
    // GIVEN a sync of a source under writes whose `events` copies slowly into the target,
    // and a table nothing writes to
    let src_db = source_db(&src).await;
    src.run_sql(
        &src_db,
        &format!(
            "{}
             alter table events add constraint events_slowly check (slow(id));
             create table archive (id int primary key, v text);
             insert into archive select g, 'a' || g from generate_series(1, 20000) g;",
            barge_testkit::slow_function(&src_db, 0.05)
        ),
    )
    .await;
    let dst_db = unique("sync_resume");
    let mut req = sync_request(&src, &src_db, &dst_db);
    req.local.sync_id = Some(format!("resume{}", std::process::id()));
    req.options.jobs = Some(2);
    let plan = plan_ok(&req).await;
    let (stop, writer) = start_writer(&src, &src_db);
    let (signal, control) = tokio::sync::watch::channel(sync::Signal::Run);
    let copy = {
        let req = req.clone();
        tokio::spawn(async move { sync::start(&req, &plan, progress::discard(), control).await })
    };
    // WHEN the copy dies (its process gone: nothing cleans up) once the other tables are in
    let mut waited = 0;
    while !copied_all_but_events(&dst_db, &["accounts", "archive", "scratch", "keyless"]).await {
        assert!(waited < 600 && !copy.is_finished(), "the copy never reached the point to kill it");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    match death {
        Death::Killed => {
            copy.abort();
            assert!(copy.await.unwrap_err().is_cancelled());
        }
        Death::Interrupted => {
            signal.send(sync::Signal::Detach).unwrap();
            match copy.await.unwrap() {
                Err(Error::Stopped(message)) => assert!(message.contains("--resume"), "{message}"),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(barge_objects(&src, &src_db, &dst_db).await, (1, 1, 0), "the slot and publication stay");
    let untouched = "select min(xmin::text::int8) * 1000000 + max(xmin::text::int8) from archive";
    let before = count(&dst18(), &dst_db, untouched).await;
    // AND it is started again with --resume (the sync id found from the source)
    let mut again = req.clone();
    again.local.sync_id = None;
    again.options.resume = true;
    let plan = plan_ok(&again).await;
    let report = sync::start(&again, &plan, progress::discard(), sync::no_control()).await.unwrap();
    // THEN it streams under the same name, the finished tables were not copied again, and
    // the unfinished one was
    assert_eq!(report.names, [format!("barge_resume{}_0", std::process::id())]);
    streaming(&req).await;
    assert_eq!(count(&dst18(), &dst_db, untouched).await, before, "archive was copied again");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(writer.await.unwrap() > 41);
    // AND the cutover finds every table equal: no gap, no duplicate
    let cut = cut_over(&req).await;
    assert!(cut.verify.ok, "{:#?}", cut.verify);
    for table in ["accounts", "events", "scratch", "keyless", "archive"] {
        let sql = format!("select count(*) from {table}");
        assert_eq!(count(&src, &src_db, &sql).await, count(&dst18(), &dst_db, &sql).await, "{table}");
    }
    assert_eq!(barge_objects(&src, &src_db, &dst_db).await, (0, 0, 0));
}

#[tokio::test]
async fn a_sync_whose_copy_died_resumes_without_copying_finished_tables_again_18_to_18() {
    // (killed: its process gone)
    a_copy_that_died_resumes(src18(), Death::Killed).await;
}

#[tokio::test]
async fn a_sync_whose_copy_died_resumes_without_copying_finished_tables_again_15_to_18() {
    // (interrupted: a worker being stopped detaches it)
    a_copy_that_died_resumes(src15(), Death::Interrupted).await;
}
