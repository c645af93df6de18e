//! Schema changes on the source while a sync streams under writes: those that add to the
//! target are applied in order with the rows, the others pause the sync with the statement
//! named until `apply-ddl --destructive` (docs/sync.md, "Schema changes").

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use barge_engine::{Error, Event, Request, progress, sync};
use barge_testkit::{Cluster, dst18, src15, src18, unique};
use tokio::sync::watch;

use super::{barge_objects, source_db, start_writer, sync_request};
use crate::plan_ok;

async fn count(cluster: &Cluster, db: &str, sql: &str) -> i64 {
    cluster.connect(db).await.query_one(sql, &[]).await.unwrap().get(0)
}

/// A stream loop in the background, as `barge init --sync` runs it; its warnings collected.
struct Streaming {
    tx: watch::Sender<sync::Signal>,
    task: tokio::task::JoinHandle<barge_engine::Result<sync::StreamEnd>>,
    warnings: Arc<Mutex<Vec<String>>>,
}

fn stream(req: &Request) -> Streaming {
    let (tx, rx) = watch::channel(sync::Signal::Run);
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let seen = warnings.clone();
    let sink: Arc<dyn progress::ProgressSink> = Arc::new(move |event: Event| {
        if let Event::Warning { message } = event {
            seen.lock().unwrap().push(message);
        }
    });
    let req = req.clone();
    let task = tokio::spawn(async move { sync::stream(&req, sink, rx, Duration::from_millis(200)).await });
    Streaming { tx, task, warnings }
}

impl Streaming {
    async fn detach(self) -> Vec<String> {
        self.tx.send(sync::Signal::Detach).unwrap();
        let end = self.task.await.unwrap();
        assert_eq!(end.unwrap(), sync::StreamEnd::Detached);
        self.warnings.lock().unwrap().clone()
    }
}

/// Waits until `check` holds for the status; the last status.
async fn until(
    req: &Request,
    watching: Option<&Streaming>,
    what: &str,
    check: impl Fn(&sync::ReplicationStatus) -> bool,
) -> sync::ReplicationStatus {
    for _ in 0..600 {
        let status = sync::status(req).await.unwrap();
        if check(&status) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let warnings = watching.map(|w| w.warnings.lock().unwrap().clone());
    panic!("{what} never happened: {:#?}\nthe stream loop's warnings: {warnings:#?}", sync::status(req).await);
}

async fn columns(cluster: &Cluster, db: &str, table: &str) -> Vec<(String, String, bool, Option<String>)> {
    cluster
        .connect(db)
        .await
        .query(
            "select attname::text, format_type(atttypid, atttypmod), attnotnull, pg_get_expr(adbin, adrelid)
             from pg_attribute left join pg_attrdef on adrelid = attrelid and adnum = attnum
             where attrelid = $1::text::regclass and attnum > 0 and not attisdropped order by attname",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

async fn additive_ddl_under_writes(src: Cluster) {
    // GIVEN a sync streaming while the source writes, and its stream loop watching
    let src_db = source_db(&src).await;
    let dst_db = unique("sync_ddl_add");
    let req = sync_request(&src, &src_db, &dst_db);
    let plan = plan_ok(&req).await;
    let (stop, writer) = start_writer(&src, &src_db);
    sync::start(&req, &plan, progress::discard(), sync::no_control()).await.unwrap();
    let watching = stream(&req);
    // WHEN the source's schema grows while the writes go on, each change followed by rows
    // that use it
    let steps = [
        // a column with a constant default: older rows read 3
        "alter table accounts add column tier int not null default 3;
         insert into accounts (owner, tier) values ('tiered', 7);",
        // a column without a default
        "alter table events add column note text;
         update events set note = 'noted' where id between 10 and 20;",
        // a default the source computes per row: the old rows' values exist only there
        "alter table scratch add column stamp timestamptz not null default clock_timestamp();
         insert into scratch (n, note) values (424242, 'stamped');",
        // an index
        "create index accounts_owner on accounts (owner);",
        // a widened type, then a value only the wider one holds
        "alter table keyless alter column a type bigint;
         insert into keyless values (5000000000, 'wide');",
        // a new table where the sync's filters select everything
        "create table extra (id int primary key, v text);
         insert into extra select g, 'x' || g from generate_series(1, 500) g;",
        // a default whose text tries to end the statement
        "alter table accounts add column label text default 'it''s''; create table pwned (); --';
         insert into accounts (owner) values ('labelled');",
    ];
    for step in steps {
        src.run_sql(&src_db, step).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // THEN barge applies each on the target and the sync streams with nothing pending
    let status =
        until(&req, Some(&watching), "every change applied", |s| s.schema_changes.is_empty() && s.streaming()).await;
    assert_eq!(status.databases[0].tables, 5, "extra joined: {status:?}");
    src.run_sql(
        &src_db,
        "insert into extra values (501, 'after'); insert into accounts (owner, tier) values ('late', 9)",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(writer.await.unwrap() > 41);
    let warnings = watching.detach().await;
    assert!(warnings.iter().any(|w| w.contains("column \"tier\" added")), "{warnings:?}");
    // AND the target's columns are the source's, defaults included (set, never evaluated:
    // no `pwned` table anywhere)
    for table in ["accounts", "events", "scratch", "keyless", "extra"] {
        assert_eq!(columns(&dst18(), &dst_db, table).await, columns(&src, &src_db, table).await, "{table}");
    }
    assert_eq!(count(&dst18(), &dst_db, "select count(*) from pg_indexes where indexname = 'accounts_owner'").await, 1);
    for (cluster, db) in [(&src, &src_db), (&dst18(), &dst_db)] {
        assert_eq!(count(cluster, db, "select count(*) from pg_class where relname = 'pwned'").await, 0);
    }
    // AND the cutover finds every table equal, the added columns' values included
    let cut = sync::cutover(&req, &sync::CutoverOptions { timeout: Duration::from_secs(120) }, progress::discard())
        .await
        .unwrap();
    assert!(cut.verify.ok, "{:#?}", cut.verify);
    for sql in [
        "select count(*) from accounts where tier = 3",
        "select count(*) from events where note = 'noted'",
        "select count(*) from scratch where stamp is not null",
        "select count(*) from keyless where a > 4000000000",
        "select count(*) from extra",
    ] {
        assert_eq!(count(&src, &src_db, sql).await, count(&dst18(), &dst_db, sql).await, "{sql}");
    }
    assert_eq!(barge_objects(&src, &src_db, &dst_db).await, (0, 0, 0));
}

#[tokio::test]
async fn additive_ddl_is_applied_in_order_while_writing_18_to_18() {
    additive_ddl_under_writes(src18()).await;
}

#[tokio::test]
async fn additive_ddl_is_applied_in_order_while_writing_15_to_18() {
    additive_ddl_under_writes(src15()).await;
}

#[tokio::test]
async fn a_destructive_change_pauses_the_sync_with_the_statement_named() {
    // GIVEN a sync streaming while the source writes, and its stream loop watching
    let src = src18();
    let src_db = source_db(&src).await;
    let dst_db = unique("sync_ddl_pause");
    let req = sync_request(&src, &src_db, &dst_db);
    let plan = plan_ok(&req).await;
    let (stop, writer) = start_writer(&src, &src_db);
    sync::start(&req, &plan, progress::discard(), sync::no_control()).await.unwrap();
    let watching = stream(&req);
    // WHEN a column is renamed and another dropped on the source, and rows use the new name
    src.run_sql(
        &src_db,
        "alter table scratch rename column note to remark;
         insert into scratch (n, remark) values (777777, 'renamed');
         alter table events drop column at;",
    )
    .await;
    // THEN the sync pauses, and status names each change with the statement that makes the
    // target match
    let status = until(&req, Some(&watching), "the pause", |s| s.paused()).await;
    let changes = status.schema_changes.join("\n");
    assert!(changes.contains(r#"ALTER TABLE "public"."scratch" RENAME COLUMN "note" TO "remark";"#), "{changes}");
    assert!(changes.contains(r#"ALTER TABLE "public"."events" DROP COLUMN "at";"#), "{changes}");
    // AND nothing the target cannot take is applied: resuming and cutting over are refused
    match sync::resume(&req).await {
        Err(Error::Refused(message)) => assert!(message.contains("apply-ddl --destructive"), "{message}"),
        other => panic!("{other:?}"),
    }
    let cut = sync::cutover(&req, &sync::CutoverOptions { timeout: Duration::from_secs(5) }, progress::discard()).await;
    assert!(matches!(cut, Err(Error::SchemaChanged(_))), "{cut:?}");
    assert_eq!(count(&dst18(), &dst_db, "select count(*) from scratch where n = 777777").await, 0);
    // AND apply-ddl without --destructive leaves them as they are
    let kept = sync::apply_ddl(&req, false, progress::discard()).await.unwrap();
    assert!(kept.applied.is_empty() && kept.pending.len() == 2, "{kept:?}");
    assert!(sync::status(&req).await.unwrap().paused());
    // WHEN the user asks for them
    let applied = sync::apply_ddl(&req, true, progress::discard()).await.unwrap();
    // THEN they are made on the target, the sync resumes, and the renamed column's rows arrive
    assert_eq!(applied.applied.len(), 2, "{applied:?}");
    assert_eq!(applied.resumed.len(), 1, "{applied:?}");
    until(&req, Some(&watching), "streaming again", |s| s.streaming() && s.schema_changes.is_empty()).await;
    for _ in 0..100 {
        if count(&dst18(), &dst_db, "select count(*) from scratch where n = 777777").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&dst18(), &dst_db, "select count(*) from scratch where remark = 'renamed'").await, 1);
    stop.store(true, Ordering::Relaxed);
    assert!(writer.await.unwrap() > 41);
    let warnings = watching.detach().await;
    assert!(warnings.iter().any(|w| w.contains("the sync is paused")), "{warnings:?}");
    let cut = sync::cutover(&req, &sync::CutoverOptions { timeout: Duration::from_secs(120) }, progress::discard())
        .await
        .unwrap();
    assert!(cut.verify.ok, "{:#?}", cut.verify);
    assert_eq!(barge_objects(&src, &src_db, &dst_db).await, (0, 0, 0));
}
