//! Engine tests against real PostgreSQL 18 and 15 clusters started by the harness
//! (`barge-testkit`, `scripts/pg`). Each test works in databases of its own.

// Test code: a failed unwrap is the failed test, with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use barge_engine::{
    CheckStatus, ConnInfo, Filter, InitReport, Local, Options, Plan, Request, Side,
    conninfo::Reach,
    plan::{Part, TargetAction},
    progress::{self, Event},
};
use barge_testkit::{Cluster, dst18, src15, src18, unique};
use std::sync::{Arc, Mutex};

mod hostile;
mod statistics;
mod sync;

fn request(src: &Cluster, src_db: &str, dst: &Cluster, dst_db: &str) -> Request {
    request_urls(&src.url(src_db), &dst.url(dst_db))
}

fn request_urls(source: &str, target: &str) -> Request {
    Request {
        source: ConnInfo::parse(Side::Source, source).unwrap(),
        target: ConnInfo::parse(Side::Target, target).unwrap(),
        filter: Filter::default(),
        options: Options { jobs: Some(2), index_jobs: Some(2), ..Options::default() },
        local: Local { pg_bin: Some(src18().bin()), ..Local::default() },
    }
}

async fn plan_ok(req: &Request) -> Plan {
    let plan = barge_engine::plan(req).await.unwrap();
    let problems: Vec<_> = plan.problems().collect();
    assert!(problems.is_empty(), "unexpected problems: {problems:#?}");
    plan
}

async fn copy(req: &Request) -> InitReport {
    let plan = plan_ok(req).await;
    barge_engine::init(req, &plan, progress::discard()).await.unwrap()
}

async fn assert_same_data(src: &Cluster, src_db: &str, dst: &Cluster, dst_db: &str) {
    let a = src.table_fingerprints(src_db).await;
    let b = dst.table_fingerprints(dst_db).await;
    assert_eq!(a, b, "table contents differ");
}

async fn assert_verify_ok(req: &Request) {
    let report = barge_engine::verify(req).await.unwrap();
    assert!(report.ok, "verify found differences: {report:#?}");
}

async fn fidelity(src: Cluster) {
    // GIVEN a database holding every object kind barge must carry
    src.ensure_fixture_roles().await;
    let dst = dst18();
    dst.ensure_fixture_roles().await;
    let src_db = src.fidelity_db("fid").await;
    let dst_db = unique("fid_copy");
    let req = request(&src, &src_db, &dst, &dst_db);
    // WHEN barge copies it into a database that does not exist yet
    let report = copy(&req).await;
    // THEN schema, rows, sequences and large objects are the same on both sides
    assert_eq!(report.databases.len(), 1);
    assert_eq!(report.databases[0].large_objects, 2);
    if src.version == dst.version {
        assert_eq!(src.schema_dump(&src_db), dst.schema_dump(&dst_db), "schemas differ");
    } else {
        // Servers of different versions print some definitions differently (PostgreSQL 16+
        // leaves single-table view columns unqualified): compare with the same fixture loaded
        // natively into the target's version. PostgreSQL 15 has no named NOT NULL
        // constraints, so a partition's get its own name where a native one inherits its
        // parent's; pg_restore does the same, and the names are left out of the comparison.
        let native = dst.fidelity_db("fid_native").await;
        let unnamed = |dump: String| {
            dump.lines()
                .map(|line| match (line.find(" CONSTRAINT "), line.find("_not_null NOT NULL")) {
                    (Some(a), Some(b)) if a < b => format!("{}{}", &line[..a], &line[b + "_not_null".len()..]),
                    _ => line.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(unnamed(dst.schema_dump(&native)), unnamed(dst.schema_dump(&dst_db)), "schemas differ");
    }
    assert_same_data(&src, &src_db, &dst, &dst_db).await;
    assert_verify_ok(&req).await;
    let lo = "select oid::int8, lomowner::regrole::text, coalesce(lomacl::text, ''), \
              coalesce(obj_description(oid, 'pg_largeobject'), ''), md5(lo_get(oid)) from pg_largeobject_metadata order by 1";
    let read = |rows: Vec<tokio_postgres::Row>| -> Vec<(i64, String, String, String, String)> {
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect()
    };
    let a = read(src.connect(&src_db).await.query(lo, &[]).await.unwrap());
    let b = read(dst.connect(&dst_db).await.query(lo, &[]).await.unwrap());
    assert_eq!(a, b, "large objects differ");
    assert!(a[0].2.contains("barge_lo_reader=r"), "the fixture's ACL is in place: {a:?}");
    // reg* columns name the same objects (docs/design-notes.md 25), not the same OIDs.
    let reg = "select rel::text, typ::text, fn::text, rels::text from public.registry order by id";
    let read = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, String, String, Option<String>)> {
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect()
    };
    let a = read(src.connect(&src_db).await.query(reg, &[]).await.unwrap());
    let b = read(dst.connect(&dst_db).await.query(reg, &[]).await.unwrap());
    assert_eq!(a, b);
    // Database properties travel too.
    let props = "select coalesce((select array_to_string(setconfig, ',') from pg_db_role_setting \
                 where setdatabase = d.oid and setrole = 0), ''), coalesce(shobj_description(d.oid, 'pg_database'), '') \
                 from pg_database d where datname = current_database()";
    src.run_sql(
        &src_db,
        &format!("alter database {src_db} set work_mem = '8MB'; comment on database {src_db} is 'fidelity'"),
    )
    .await;
    let dst_db2 = unique("fid_copy");
    let req2 = request(&src, &src_db, &dst, &dst_db2);
    copy(&req2).await;
    let a = src.connect(&src_db).await.query_one(props, &[]).await.unwrap();
    let b = dst.connect(&dst_db2).await.query_one(props, &[]).await.unwrap();
    assert_eq!((a.get::<_, String>(0), a.get::<_, String>(1)), (b.get::<_, String>(0), b.get::<_, String>(1)));
}

#[tokio::test]
async fn fidelity_18_to_18() {
    fidelity(src18()).await;
}

#[tokio::test]
async fn fidelity_15_to_18() {
    fidelity(src15()).await;
}

#[tokio::test]
async fn filters_select_schemas_and_tables() {
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("filt").await;
    src.run_sql(
        &src_db,
        "create schema sales; create schema tmp; create schema hr;
         create table sales.orders (id int primary key, v text);
         create table sales.order_archive (id int primary key);
         create table sales.big (id int primary key, payload text);
         create table hr.people (id int primary key);
         create table tmp.scratch (id int);
         create table public.logs (id int);
         create view sales.recent as select * from sales.orders;
         insert into sales.orders select g, 'v' || g from generate_series(1, 50) g;
         insert into sales.order_archive select generate_series(1, 10);
         insert into sales.big select g, repeat('x', 100) from generate_series(1, 20) g;
         insert into hr.people select generate_series(1, 5);",
    )
    .await;
    let dst_db = unique("filt_copy");
    let mut req = request(&src, &src_db, &dst, &dst_db);
    req.filter = Filter {
        include_tables: vec!["sales.*".into(), "hr.people".into()],
        exclude_tables: vec![format!("{src_db}.sales.order_arch*")],
        schema_only_tables: vec!["sales.big".into()],
        exclude_schemas: vec!["tmp".into()],
        ..Filter::default()
    };
    let plan = plan_ok(&req).await;
    let names: Vec<String> = plan.databases[0].tables.iter().map(|t| t.display()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(plan.databases[0].excluded_schemas.contains(&"tmp".to_owned()));
    barge_engine::init(&req, &plan, progress::discard()).await.unwrap();
    let client = dst.connect(&dst_db).await;
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("select count(*) from sales.orders").await, 50);
    assert_eq!(count("select count(*) from hr.people").await, 5);
    assert_eq!(count("select count(*) from sales.big").await, 0, "schema-only table got rows");
    assert_eq!(count("select count(*) from sales.recent").await, 50);
    assert_eq!(
        count("select count(*) from pg_class where relname in ('order_archive', 'scratch', 'logs')").await,
        0,
        "excluded tables were created"
    );
    assert_eq!(count("select count(*) from pg_namespace where nspname = 'tmp'").await, 0);
    assert_verify_ok(&req).await;
}

#[tokio::test]
async fn a_view_on_a_left_out_table_is_a_problem() {
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("viewdep").await;
    src.run_sql(&src_db, "create table a (id int); create view v as select * from a;").await;
    let mut req = request(&src, &src_db, &dst, &unique("viewdep_copy"));
    req.filter.exclude_tables = vec!["public.a".into()];
    let plan = barge_engine::plan(&req).await.unwrap();
    let problems: Vec<_> = plan.problems().collect();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].detail.contains("public.a"));
    let err = barge_engine::init(&req, &plan, progress::discard()).await.unwrap_err().to_string();
    assert!(err.contains("nothing was changed"), "{err}");
}

#[tokio::test]
async fn big_tables_are_split_by_key_and_by_blocks() {
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("split").await;
    src.run_sql(
        &src_db,
        "create table keyed (id bigint primary key, payload text);
         insert into keyed select g, repeat(md5(g::text), 4) from generate_series(-5000, 15000) g;
         create table heap (a int, payload text);
         insert into heap select g % 100, repeat(md5(g::text), 4) from generate_series(1, 20000) g;
         insert into heap select * from heap limit 500;
         create index heap_a on heap (a);
         analyze;",
    )
    .await;
    let dst_db = unique("split_copy");
    let mut req = request(&src, &src_db, &dst, &dst_db);
    req.options.split_tables_larger_than = Some(512 << 10);
    req.options.jobs = Some(3);
    let plan = plan_ok(&req).await;
    let table = |name: &str| plan.databases[0].tables.iter().find(|t| t.name == name).unwrap().clone();
    let keyed = table("keyed");
    assert!(keyed.parts.len() >= 4, "{:?}", keyed.parts);
    assert!(matches!(keyed.parts[0], Part::Key { from: None, .. }));
    let heap = table("heap");
    assert!(heap.parts.len() >= 4, "{:?}", heap.parts);
    assert!(matches!(heap.parts.last(), Some(Part::Blocks { to: None, .. })));
    let report = barge_engine::init(&req, &plan, progress::discard()).await.unwrap();
    assert_eq!(report.databases[0].rows, 20001 + 20500);
    assert_same_data(&src, &src_db, &dst, &dst_db).await;
    assert_verify_ok(&req).await;
}

#[tokio::test]
async fn a_schema_larger_than_the_targets_lock_table_is_applied_in_batches() {
    // GIVEN a source with 500 tables, each with an identity key, a serial column, a check, a
    // comment, a trigger and two rows, and a target whose lock table holds 400 locked objects
    // for all sessions (with PostgreSQL's slack, about 1,500): creating them in one
    // transaction locks 2,500 (table, two sequences, TOAST table and index)
    let src = src18();
    let src_db = src.create_db("locks").await;
    src.run_sql(&src_db, &barge_testkit::small_tables_sql(500)).await;
    let dst = barge_testkit::small_lock_table();
    let dst_db = unique("locks_copy");
    let req = request(&src, &src_db, &dst, &dst_db);
    // WHEN it is copied
    let report = copy(&req).await;
    // THEN everything arrived: the schema went in transactions that fit the lock table
    assert_eq!(report.databases[0].rows, 1000);
    assert_same_data(&src, &src_db, &dst, &dst_db).await;
    assert_verify_ok(&req).await;
}

#[tokio::test]
async fn verify_reads_a_source_whose_lock_table_cannot_hold_a_lock_per_table() {
    // GIVEN 1,200 tables with an integer key (one row each) on a server whose lock table holds
    // about 1,500 locked objects, and the same tables on another server
    let (small, dst) = (barge_testkit::small_lock_table(), dst18());
    let tables = "do $$ begin
                    for i in 1..1200 loop
                      execute format('create table t%s (id int primary key)', i);
                      execute format('insert into t%s values (%s)', i, i);
                      if i % 100 = 0 then commit; end if;
                    end loop;
                  end $$";
    let src_db = small.create_db("verify_locks").await;
    small.run_sql(&src_db, tables).await;
    let dst_db = dst.create_db("verify_locks_copy").await;
    dst.run_sql(&dst_db, tables).await;
    // WHEN verify compares them, measuring each table's key range on the source
    // THEN it finds them equal: it released the locks of the tables it had measured
    assert_verify_ok(&request(&small, &src_db, &dst, &dst_db)).await;
}

#[tokio::test]
async fn small_tables_copied_while_later_schema_batches_change_them_arrive_whole() {
    // GIVEN 200 small tables referencing a parent, each with an identity key, a comment on a
    // column, grants on the table and on a column, and a view; every other one with an
    // inheriting child, which pg_dump creates after all the tables and views, so later
    // pre-data batches change tables whose rows the copy may already be moving; and a
    // target whose lock table makes pre-data many batches
    let src = src18();
    src.ensure_fixture_roles().await;
    let src_db = src.create_db("overlap").await;
    src.run_sql(
        &src_db,
        "create table parent (id int primary key);
         insert into parent select generate_series(1, 10);
         do $$ begin
           for i in 1..200 loop
             execute format('create table t%s (id int generated always as identity primary key, p int references parent, v text)', i);
             execute format('comment on column t%s.v is ''v of %s''', i, i);
             execute format('grant select on t%s to barge_lo_reader', i);
             execute format('grant update (v) on t%s to barge_lo_reader', i);
             execute format('insert into t%s (p, v) select 1 + g %% 10, g::text from generate_series(1, 20) g', i);
             execute format('create view v%s as select id, v from t%s', i, i);
             continue when i % 2 = 0;
             execute format('create table zz_child%s (extra int) inherits (t%s)', i, i);
             execute format('insert into zz_child%s (id, p, v, extra) values (%s, 1, ''c'', %s)', i, 1000 + i, i);
           end loop;
         end $$;",
    )
    .await;
    let dst = barge_testkit::small_lock_table();
    dst.ensure_fixture_roles().await;
    let dst_db = unique("overlap_copy");
    let req = request(&src, &src_db, &dst, &dst_db);
    // WHEN it is copied
    let report = copy(&req).await;
    // THEN every row, grant, comment, key and inheritance arrived, as pg_dump sees them
    assert_eq!(report.databases[0].rows, 10 + 200 * 20 + 100);
    assert_same_data(&src, &src_db, &dst, &dst_db).await;
    assert_eq!(src.schema_dump(&src_db), dst.schema_dump(&dst_db));
    assert_verify_ok(&req).await;
}

#[tokio::test]
async fn a_source_whose_lock_table_cannot_hold_pg_dumps_locks_is_named_with_the_setting() {
    // GIVEN a source whose lock table holds 400 locked objects, with 250 tables
    let src = barge_testkit::small_lock_table();
    let src_db = src.create_db("few_locks").await;
    src.run_sql(
        &src_db,
        "do $$ begin
           for i in 1..250 loop
             execute format('create table t%s (id int primary key)', i);
             commit;
           end loop;
         end $$",
    )
    .await;
    let dst = dst18();
    let req = request(&src, &src_db, &dst, &unique("few_locks_copy"));
    // WHEN barge validates a copy
    let report = barge_engine::validate(&req).await;
    // THEN it fails, saying what pg_dump needs and which setting gives it (a restart)
    let check = report.checks.iter().find(|c| c.name.starts_with("source lock table")).expect("a lock table check");
    assert_eq!(check.status, CheckStatus::Fail, "{check:?}");
    assert!(check.detail.contains("250 tables") && check.detail.contains("400"), "{check:?}");
    let hint = check.hint.as_deref().unwrap_or_default();
    assert!(hint.contains("max_locks_per_transaction to at least 12"), "{hint}");
    // AND a copy refuses before changing anything
    let plan = barge_engine::plan(&req).await.unwrap();
    assert!(barge_engine::init(&req, &plan, progress::discard()).await.is_err());
    let exists = dst
        .connect("postgres")
        .await
        .query_one("select count(*) from pg_database where datname = $1", &[&plan.databases[0].target])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(exists, 0, "nothing was created on the target");
}

#[tokio::test]
async fn estimates_follow_what_copy_moves_and_count_tables_never_analyzed() {
    // GIVEN 20 small vacuumed tables (their free-space and visibility maps outweigh their
    // rows on disk) and a 4,000-row table no VACUUM or ANALYZE has seen
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("estimates").await;
    src.run_sql(
        &src_db,
        "do $$ begin
           for i in 1..20 loop
             execute format('create table small%s (id int primary key, note text)', i);
             execute format('insert into small%s select g, md5(g::text) from generate_series(1, 100) g', i);
           end loop;
         end $$;
         create table fresh (id int primary key, note text) with (autovacuum_enabled = false);
         insert into fresh select g, md5(g::text) from generate_series(1, 4000) g;",
    )
    .await;
    for i in 1..=20 {
        src.run_sql(&src_db, &format!("vacuum small{i}")).await;
    }
    let dst_db = unique("estimates_copy");
    let req = request(&src, &src_db, &dst, &dst_db);
    // WHEN barge plans and copies
    let plan = plan_ok(&req).await;
    let fresh = plan.databases[0].tables.iter().find(|t| t.name == "fresh").unwrap();
    // THEN the never-analyzed table's rows are counted, not shown as 0
    assert_eq!(fresh.est_rows, 4000);
    // AND the bytes estimated are near the bytes COPY moved (not the files' size)
    let report = barge_engine::init(&req, &plan, progress::discard()).await.unwrap();
    let (estimated, copied) = (plan.databases[0].bytes as f64, report.databases[0].bytes as f64);
    assert!(estimated <= copied * 2.0 && estimated >= copied / 2.0, "estimated {estimated} B, copied {copied} B");
}

#[tokio::test]
async fn a_non_empty_target_is_refused_until_drop_existing() {
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("nonempty").await;
    src.run_sql(&src_db, "create table t (id int primary key); insert into t values (1), (2);").await;
    let dst_db = dst.create_db("nonempty_copy").await;
    dst.run_sql(&dst_db, "create table precious (id int); insert into precious values (42);").await;
    let req = request(&src, &src_db, &dst, &dst_db);
    let plan = barge_engine::plan(&req).await.unwrap();
    assert!(matches!(plan.databases[0].action, TargetAction::Refuse { .. }));
    let err = barge_engine::init(&req, &plan, progress::discard()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, barge_engine::Error::TargetNotEmpty(_)), "{text}");
    assert!(text.contains(&dst_db) && text.contains("public.precious") && text.contains("--drop-existing"), "{text}");
    // Nothing was touched.
    let n: i64 = dst.connect(&dst_db).await.query_one("select count(*) from precious", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    // --drop-existing replaces it.
    let mut req = req;
    req.options.drop_existing = true;
    let plan = plan_ok(&req).await;
    assert!(matches!(plan.databases[0].action, TargetAction::DropAndCreate { .. }));
    barge_engine::init(&req, &plan, progress::discard()).await.unwrap();
    let gone: i64 = dst
        .connect(&dst_db)
        .await
        .query_one("select count(*) from pg_class where relname = 'precious'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(gone, 0);
    assert_verify_ok(&req).await;
}

#[tokio::test]
async fn verify_names_changed_and_missing_rows_and_sequences() {
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("verify").await;
    src.run_sql(
        &src_db,
        "create table items (id int primary key, name text);
         insert into items select g, 'item ' || g from generate_series(1, 3000) g;
         create table pairs (a text, b int, v text, primary key (a, b));
         insert into pairs select 'k' || (g % 7), g, 'v' || g from generate_series(1, 500) g;
         create table loose (v text);
         insert into loose select 'x' || g from generate_series(1, 100) g;
         create sequence counter; select setval('counter', 77);",
    )
    .await;
    let dst_db = unique("verify_copy");
    let req = request(&src, &src_db, &dst, &dst_db);
    copy(&req).await;
    assert_verify_ok(&req).await;
    // WHEN rows change, vanish and appear on the target and a sequence moves
    dst.run_sql(
        &dst_db,
        "update items set name = 'changed' where id = 1234;
         delete from items where id = 2500;
         delete from pairs where a = 'k3' and b = 10;
         insert into loose values ('intruder');
         select setval('counter', 78);",
    )
    .await;
    let report = barge_engine::verify(&req).await.unwrap();
    // THEN verify names each difference
    assert!(!report.ok);
    let db = &report.databases[0];
    let table = |name: &str| db.tables.iter().find(|t| t.table == name).unwrap();
    let items = table("public.items");
    assert!(!items.ok);
    assert_eq!((items.source_rows, items.target_rows), (3000, 2999));
    assert!(items.samples.contains(&"(1234) differs".to_owned()), "{:?}", items.samples);
    assert!(items.samples.contains(&"(2500) missing on target".to_owned()), "{:?}", items.samples);
    let pairs = table("public.pairs");
    assert!(pairs.samples.iter().any(|s| s == "(k3,10) missing on target"), "{:?}", pairs.samples);
    let loose = table("public.loose");
    assert_eq!((loose.source_rows, loose.target_rows), (100, 101));
    assert!(!loose.ok);
    assert_eq!(db.sequences.len(), 1);
    assert_eq!((db.sequences[0].source, db.sequences[0].target), (Some(77), Some(78)));
    // Missing objects are named too.
    dst.run_sql(&dst_db, "alter table items drop constraint items_pkey").await;
    let report = barge_engine::verify(&req).await.unwrap();
    let pk = report.databases[0].objects.iter().find(|o| o.kind == "primary key").unwrap();
    assert_eq!(pk.missing, vec!["public.items.items_pkey".to_owned()]);
}

#[tokio::test]
async fn validate_reports_what_would_stop_a_copy() {
    let (src15, dst) = (src15(), dst18());
    let src_db = src15.create_db("val").await;
    let reader = unique("reader");
    src15
        .run_sql(
            &src_db,
            &format!(
                "create extension adminpack;
                 create table open_t (id int primary key);
                 create table secret (id int);
                 create role {reader} login password 'r3ader;pw';
                 grant select on open_t to {reader};"
            ),
        )
        .await;
    let dst_db = dst.create_db("val_copy").await;
    dst.run_sql(&dst_db, "create table occupied (id int)").await;
    let mut req = request(&src15, &src_db, &dst, &dst_db);
    req.source = ConnInfo::parse(Side::Source, &src15.url_as(&reader, "r3ader;pw", &src_db)).unwrap();
    req.options.sync = true;
    let report = barge_engine::validate(&req).await;
    assert!(!report.ok);
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    let has = |needle: &str| failed.iter().any(|f| f.contains(needle));
    assert!(has("extension adminpack"), "{failed:#?}");
    assert!(has("cannot read public.secret"), "{failed:#?}");
    assert!(has(&format!("target database \"{dst_db}\"")), "{failed:#?}");
    assert!(has("REPLICATION"), "{failed:#?}");
    assert!(
        report
            .checks
            .iter()
            .filter(|c| c.status == CheckStatus::Fail)
            .all(|c| c.hint.is_some() || c.detail.contains("--")),
        "every failing check says what to do: {:#?}",
        report.checks
    );
    // Tables without a key stop a sync: their updates and deletes would not replicate.
    assert!(has("replica identity") && has("public.secret"), "{failed:#?}");
    assert!(
        report.checks.iter().any(|c| c.name.starts_with("replica identity")
            && c.hint.as_deref().is_some_and(|h| h.contains("--replica-identity-full"))),
        "{:#?}",
        report.checks
    );
    // The target's subscription would connect as a user without REPLICATION: said so.
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.name == "target reaches the source"
                && c.hint.as_deref().is_some_and(|h| h.contains("REPLICATION"))),
        "{:#?}",
        report.checks
    );
    // The passing parts are reported too.
    assert!(report.checks.iter().any(|c| c.name == "source connection" && c.status == CheckStatus::Pass));
    assert!(report.checks.iter().any(|c| c.name == "source wal_level" && c.status == CheckStatus::Pass));
}

#[tokio::test]
async fn an_old_pg_dump_is_refused_with_both_versions() {
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("olddump").await;
    let mut req = request(&src, &src_db, &dst, &unique("olddump_copy"));
    req.local.pg_bin = Some(src15().bin());
    let plan = barge_engine::plan(&req).await.unwrap();
    let problem = plan.problems().find(|c| c.name == "pg_dump").expect("a pg_dump problem");
    assert!(problem.detail.contains("pg_dump 18 or newer") && problem.detail.contains("15."), "{}", problem.detail);
}

#[tokio::test]
async fn all_databases_map_to_same_names_postgres_included() {
    // A cluster pair of its own: --all-databases sees every database of the source.
    let src = barge_testkit::cluster("alls18", 18);
    let dst = barge_testkit::cluster("alld18", 18);
    for cluster in [&src, &dst] {
        // Earlier runs' databases would be copied too.
        let client = cluster.connect("postgres").await;
        let rows = client
            .query(
                "select datname::text from pg_database where datname not in ('postgres', 'template0', 'template1')",
                &[],
            )
            .await
            .unwrap();
        for row in rows {
            let name: String = row.get(0);
            client.batch_execute(&format!("drop database \"{name}\" with (force)")).await.unwrap();
        }
    }
    let a = unique("alla");
    let b = unique("allb");
    let skip = unique("skip");
    for db in [&a, &b, &skip] {
        src.run_sql("postgres", &format!("create database {db}")).await;
        src.run_sql(db, &format!("create table t (id int primary key, db text); insert into t values (1, '{db}');"))
            .await;
    }
    src.run_sql(
        "postgres",
        "create table if not exists in_postgres (id int); truncate in_postgres; insert into in_postgres values (7);",
    )
    .await;
    dst.run_sql("postgres", "drop table if exists in_postgres").await;
    let mut req = request(&src, "postgres", &dst, "postgres");
    req.options.all_databases = true;
    req.filter.exclude_databases = vec!["skip_*".into()];
    let plan = plan_ok(&req).await;
    let pairs: Vec<(String, String)> = plan.databases.iter().map(|d| (d.source.clone(), d.target.clone())).collect();
    assert!(pairs.contains(&(a.clone(), a.clone())) && pairs.contains(&(b.clone(), b.clone())), "{pairs:?}");
    assert!(pairs.contains(&("postgres".into(), "postgres".into())), "postgres is copied too: {pairs:?}");
    assert!(!pairs.iter().any(|(s, _)| s == &skip));
    barge_engine::init(&req, &plan, progress::discard()).await.unwrap();
    for db in [&a, &b] {
        let v: String = dst.connect(db).await.query_one("select db from t", &[]).await.unwrap().get(0);
        assert_eq!(&v, db);
    }
    let n: i32 = dst.connect("postgres").await.query_one("select id from in_postgres", &[]).await.unwrap().get(0);
    assert_eq!(n, 7);
}

#[tokio::test]
async fn a_database_copied_under_another_name_keeps_its_properties() {
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("rename").await;
    src.run_sql(&src_db, &format!("create table t (id int); alter database {src_db} set work_mem = '7MB';")).await;
    let dst_db = format!("Renamed {}", unique("db"));
    let req = request(&src, &src_db, &dst, &dst_db);
    copy(&req).await;
    let setting: Vec<String> = dst
        .connect(&dst_db)
        .await
        .query_one(
            "select setconfig from pg_db_role_setting where setdatabase = (select oid from pg_database where datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(setting, vec!["work_mem=7MB".to_owned()]);
}

#[tokio::test]
async fn roles_are_created_without_passwords() {
    let (src, dst) = (src18(), dst18());
    let owner = unique("owner");
    let member = unique("member");
    let src_db = src.create_db("roles").await;
    src.run_sql(
        "postgres",
        &format!("create role {owner} login password 'owner-secret' createdb; create role {member} nologin; grant {owner} to {member};"),
    )
    .await;
    src.run_sql(&src_db, &format!("create table t (id int); alter table t owner to {owner};")).await;
    let dst_db = unique("roles_copy");
    let mut req = request(&src, &src_db, &dst, &dst_db);
    // Without --roles the missing owner stops the copy before anything changes.
    let plan = barge_engine::plan(&req).await.unwrap();
    assert!(plan.problems().any(|c| c.name == "roles" && c.detail.contains(&owner)));
    req.options.roles = true;
    let report = copy(&req).await;
    let created = report.roles.unwrap().created;
    assert!(created.contains(&owner) && created.contains(&member), "{created:?}");
    let client = dst.connect(&dst_db).await;
    let row = client
        .query_one("select rolcanlogin, rolcreatedb, rolpassword is null from pg_authid where rolname = $1", &[&owner])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1));
    assert!(row.get::<_, bool>(2), "a password was copied");
    let table_owner: String =
        client.query_one("select tableowner::text from pg_tables where tablename = 't'", &[]).await.unwrap().get(0);
    assert_eq!(table_owner, owner);
    let is_member: bool =
        client.query_one("select pg_has_role($1, $2, 'member')", &[&member, &owner]).await.unwrap().get(0);
    assert!(is_member);
}

#[tokio::test]
async fn progress_events_cover_the_copy_and_serialise() {
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("events").await;
    src.run_sql(
        &src_db,
        "create table a (id int primary key, v text); insert into a select g, 'x' from generate_series(1, 1000) g;
         create table b (id int primary key); insert into b select generate_series(1, 10); create index b_idx on b (id);",
    )
    .await;
    let req = request(&src, &src_db, &dst, &unique("events_copy"));
    let plan = plan_ok(&req).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    barge_engine::init(&req, &plan, Arc::new(move |e: Event| sink.lock().unwrap().push(e))).await.unwrap();
    let events = events.lock().unwrap();
    let finished: Vec<&Event> = events.iter().filter(|e| matches!(e, Event::TableFinished { .. })).collect();
    assert_eq!(finished.len(), 2);
    assert!(events.iter().any(|e| matches!(e, Event::IndexFinished { .. })));
    let last =
        events.iter().rev().find_map(|e| if let Event::Progress(p) = e { Some(p.clone()) } else { None }).unwrap();
    assert_eq!((last.tables_done, last.tables_total, last.rows_copied), (2, 2, 1010));
    assert_eq!(last.indexes_done, last.indexes_total);
    for e in events.iter() {
        let text = serde_json::to_string(e).unwrap();
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, e);
    }
}

#[tokio::test]
async fn tls_is_verified_by_default() {
    let tls = barge_testkit::tls_cluster("tls18");
    let dst = dst18();
    let db = tls.create_db("tls").await;
    tls.run_sql(&db, "create table t (id int primary key); insert into t select generate_series(1, 100);").await;
    let ca = tls.tls_ca();
    let ca = ca.to_str().unwrap();
    let target = dst.url("postgres");
    let connects = |url: String| {
        let req = request_urls(&url, &target);
        async move {
            let report = barge_engine::validate(&req).await;
            let check = report.checks.iter().find(|c| c.name == "source connection").unwrap().clone();
            (check.status == CheckStatus::Pass, check.detail)
        }
    };
    // An untrusted certificate fails even with the default sslmode, and says what to do.
    let (ok, detail) = connects(tls.url_via("127.0.0.1", &db, "connect_timeout=5")).await;
    assert!(!ok && detail.contains("sslrootcert"), "{detail}");
    let (ok, detail) = connects(tls.url_via("127.0.0.1", &db, "sslmode=require")).await;
    assert!(!ok && detail.contains("sslrootcert"), "{detail}");
    // The right CA but a name the certificate does not carry: verify-full fails, verify-ca passes.
    let (ok, detail) = connects(tls.url_via("127.0.0.1", &db, &format!("sslmode=verify-full&sslrootcert={ca}"))).await;
    assert!(!ok, "{detail}");
    let (ok, detail) = connects(tls.url_via("127.0.0.1", &db, &format!("sslmode=verify-ca&sslrootcert={ca}"))).await;
    assert!(ok && detail.contains("TLS verified"), "{detail}");
    // Fully verified end to end: barge's connections and pg_dump's.
    let source = tls.url_via("localhost", &db, &format!("sslmode=verify-full&sslrootcert={ca}"));
    let req = request_urls(&source, &dst.url(&unique("tls_copy")));
    copy(&req).await;
    assert_verify_ok(&req).await;
}

#[tokio::test]
async fn a_password_never_travels_unencrypted_unless_the_url_says_so() {
    // GIVEN a server that offers no TLS, as a man in the middle refusing it would
    let (src, dst) = (src18(), dst18());
    let db = src.create_db("plaintext").await;
    let validate = |source: String| {
        let req = request_urls(&source, &dst.url("postgres"));
        async move {
            let report = barge_engine::validate(&req).await;
            let check = report.checks.iter().find(|c| c.name == "source connection").unwrap().clone();
            (check.status == CheckStatus::Pass, check.detail)
        }
    };
    // WHEN the URL leaves sslmode at its default (prefer) or asks for require
    for query in ["connect_timeout=5", "sslmode=prefer", "sslmode=require"] {
        let (ok, detail) = validate(src.url_via("127.0.0.1", &db, query)).await;
        // THEN barge does not log in, and says how to allow it
        assert!(!ok && detail.contains("sslmode=disable"), "{query}: {detail}");
    }
    let (_, detail) = validate(src.url_via("127.0.0.1", &db, "sslmode=prefer")).await;
    assert!(detail.contains("over TLS only"), "{detail}");
    // AND it logs in when the URL accepts an unencrypted connection explicitly
    for query in ["sslmode=disable", "sslmode=allow"] {
        let (ok, detail) = validate(src.url_via("127.0.0.1", &db, query)).await;
        assert!(ok && detail.contains("no TLS"), "{query}: {detail}");
    }
}

#[tokio::test]
async fn a_remote_worker_connects_to_no_loopback_metadata_or_local_file() {
    let (src, dst) = (src18(), dst18());
    // A name that resolves to loopback passes the URL check and is refused once resolved,
    // before any packet reaches it.
    let by_name = src.url_via("localhost", "postgres", "sslmode=disable");
    let mut req = request_urls(&by_name, &dst.url("postgres"));
    req.source = ConnInfo::parse_for(Side::Source, &by_name, Reach::Remote).unwrap();
    let report = barge_engine::validate(&req).await;
    let check = report.checks.iter().find(|c| c.name == "source connection").unwrap();
    assert_eq!(check.status, CheckStatus::Fail);
    assert!(check.detail.contains("resolves to the worker itself"), "{}", check.detail);
    // Literal addresses and certificate files are refused when the URL is read, with
    // messages that say nothing of whether a file exists.
    for url in [
        src.url("postgres"),
        "postgres://u:pw@169.254.169.254/db".to_string(),
        "postgres://u:pw@[fd00:ec2::254]/db".to_string(),
    ] {
        let e = ConnInfo::parse_for(Side::Source, &url, Reach::Remote).unwrap_err().to_string();
        assert!(e.contains("never connects"), "{e}");
    }
    let file = |path: &str| {
        ConnInfo::parse_for(
            Side::Source,
            &format!("postgres://u:pw@db.example.com/db?sslrootcert={path}"),
            Reach::Remote,
        )
        .unwrap_err()
        .to_string()
    };
    assert_eq!(file("/etc/hostname"), file("/no/such/file"));
}

#[tokio::test]
async fn a_remote_worker_is_no_port_scanner() {
    // GIVEN this machine's own non-loopback address (what a worker may reach), a port where
    // something that is not PostgreSQL answers, and a closed port
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    probe.connect("10.255.255.255:9").unwrap();
    let ip = probe.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "this machine needs a non-loopback address for this test");
    let http = std::net::TcpListener::bind((ip, 0)).unwrap();
    let http_port = http.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in http.incoming().flatten() {
            let mut stream = stream;
            let _ = std::io::Write::write_all(&mut stream, b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let closed_port = std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port();
    let dst = dst18();
    let detail = |port: u16| {
        let url = format!("postgres://u:pw@{ip}:{port}/db?sslmode=disable&connect_timeout=3");
        let mut req = request_urls(&url, &dst.url("postgres"));
        req.source = ConnInfo::parse_for(Side::Source, &url, Reach::Remote).unwrap();
        async move {
            let report = barge_engine::validate(&req).await;
            let check = report.checks.iter().find(|c| c.name == "source connection").unwrap().clone();
            assert_eq!(check.status, CheckStatus::Fail);
            check.detail.replace(&port.to_string(), "PORT")
        }
    };
    // WHEN a remote worker is pointed at each
    let (other, closed) = (detail(http_port).await, detail(closed_port).await);
    // THEN both failures read the same
    assert_eq!(other, closed);
    assert!(other.contains("no PostgreSQL server answered"), "{other}");
}

#[tokio::test]
async fn whole_tables_arrive_frozen_and_autovacuum_settings_survive() {
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("frozen").await;
    src.run_sql(
        &src_db,
        "create table plain (id int primary key, v text);
         insert into plain select g, repeat('x', 50) from generate_series(1, 20000) g;
         create table tuned (id int primary key) with (autovacuum_enabled = false, fillfactor = 70);
         insert into tuned select generate_series(1, 100);",
    )
    .await;
    let dst_db = unique("frozen_copy");
    copy(&request(&src, &src_db, &dst, &dst_db)).await;
    let client = dst.connect(&dst_db).await;
    // GIVEN a table copied whole: COPY FREEZE left its pages all-visible (ANALYZE counted them;
    // a page that two insert batches shared is the exception)
    let row =
        client.query_one("select relpages, relallvisible from pg_class where relname = 'plain'", &[]).await.unwrap();
    let (pages, visible): (i32, i32) = (row.get(0), row.get(1));
    assert!(pages > 10 && visible * 10 >= pages * 9, "{visible} of {pages} pages all-visible");
    // AND autovacuum, paused during the copy, is back: reset where barge paused it, the
    // source's own setting kept where the table had one.
    let options = |name: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    "select coalesce(array_to_string(reloptions, ','), '') from pg_class where relname = $1",
                    &[&name],
                )
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(options("plain").await, "");
    assert_eq!(options("tuned").await, "autovacuum_enabled=false,fillfactor=70");
}
