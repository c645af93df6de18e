//! What a source's owners store as text never runs on the target, and every object and
//! sequence position arrives exact (fixtures/hostile.sql), from PostgreSQL 18 and 15.

use barge_testkit::{Cluster, dst18, src15, src18, unique};

use crate::{assert_same_data, assert_verify_ok, copy, request_urls};

/// A forged pg_dump entry header, then a statement without a single quote.
fn forged(n: usize) -> String {
    format!(
        "\n--\n-- Name: forged{n}; Type: TABLE; Schema: public; Owner: postgres\n--\n\nCREATE TABLE public.pwned_{n} ();\n\n--\n-- Name: forged{n}b; Type: COMMENT; Schema: public; Owner: postgres\n--\n\nSELECT 1 AS x; --"
    )
}

fn hostile_sql() -> String {
    let mut sql = std::fs::read_to_string(barge_testkit::repo_root().join("crates/engine/tests/fixtures/hostile.sql"))
        .expect("read hostile.sql");
    for n in (1..=40).rev() {
        sql = sql.replace(&format!("@{n}@"), &forged(n));
    }
    assert!(!(0..10).any(|d| sql.contains(&format!("@{d}"))), "every placeholder replaced");
    sql
}

/// Every byte percent-encoded, for database names in URLs.
fn encode(name: &str) -> String {
    name.bytes().map(|b| format!("%{b:02X}")).collect()
}

async fn pwned(cluster: &Cluster, db: &str) -> Vec<String> {
    let rows = cluster
        .connect(db)
        .await
        .query("select relname::text from pg_class where relname like 'pwned%' order by 1", &[])
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

async fn corpus(src: Cluster) {
    // GIVEN a source database whose name, comment, settings and objects hold forged pg_dump
    // entry headers, copied into a target database whose name has quotes and a comment marker
    let dst = dst18();
    let src_db = format!("{}\n--\n-- Name: d; Type: DATABASE\n'\"", unique("hs"));
    let dst_db = format!("{}'; \"-- x", unique("ht"));
    src.connect("postgres")
        .await
        .batch_execute(&format!("create database \"{}\"", src_db.replace('"', "\"\"")))
        .await
        .unwrap();
    src.run_sql(&src_db, &hostile_sql()).await;
    let quoted = format!("\"{}\"", src_db.replace('"', "\"\""));
    src.run_sql(
        &src_db,
        &format!(
            "comment on database {quoted} is '{c}';
             alter database {quoted} set application_name = '{c}';
             alter database {quoted} set search_path = \"x\ny\", public, \"a,\"\"b\";",
            c = forged(38)
        ),
    )
    .await;
    let req = request_urls(&src.url(&encode(&src_db)), &dst.url(&encode(&dst_db)));
    // WHEN barge copies it
    let report = copy(&req).await;
    assert_eq!(report.databases.len(), 1);
    // THEN no forged statement ran, on either side
    assert_eq!(pwned(&dst, &dst_db).await, Vec::<String>::new());
    assert_eq!(pwned(&src, &src_db).await, Vec::<String>::new());
    // AND every object is there with its exact text
    if src.version == dst.version {
        assert_eq!(src.schema_dump(&src_db), dst.schema_dump(&dst_db), "schemas differ");
    } else {
        let native = unique("hs_native");
        dst.connect("postgres").await.batch_execute(&format!("create database {native}")).await.unwrap();
        dst.run_sql(&native, &hostile_sql()).await;
        assert_eq!(dst.schema_dump(&native), dst.schema_dump(&dst_db), "schemas differ");
    }
    assert_same_data(&src, &src_db, &dst, &dst_db).await;
    assert_verify_ok(&req).await;
    // AND the database's comment and settings arrived under the target's name
    let props = "select coalesce((select array_to_string(setconfig, '|') from pg_db_role_setting \
                 where setdatabase = d.oid and setrole = 0), ''), coalesce(shobj_description(d.oid, 'pg_database'), '') \
                 from pg_database d where datname = current_database()";
    let read = |row: tokio_postgres::Row| (row.get::<_, String>(0), row.get::<_, String>(1));
    let a = read(src.connect(&src_db).await.query_one(props, &[]).await.unwrap());
    let b = read(dst.connect(&dst_db).await.query_one(props, &[]).await.unwrap());
    assert_eq!(a, b);
    assert!(a.1.contains("pwned_38") && a.0.contains("search_path=\"x\ny\", public, \"a,\"\"b\""), "{a:?}");
}

#[tokio::test]
async fn forged_text_from_18_runs_nothing_and_arrives_exact() {
    corpus(src18()).await;
}

#[tokio::test]
async fn forged_text_from_15_runs_nothing_and_arrives_exact() {
    corpus(src15()).await;
}

/// Every sequence's (last_value, is_called), by name.
pub(crate) async fn positions(cluster: &Cluster, db: &str) -> Vec<(String, i64, bool)> {
    let client = cluster.connect(db).await;
    let names: Vec<String> = client
        .query(
            "select format('%I.%I', schemaname, sequencename) from pg_sequences where schemaname <> '_barge' order by 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for name in names {
        let row = client.query_one(&format!("select last_value, is_called from {name}"), &[]).await.unwrap();
        out.push((name, row.get(0), row.get(1)));
    }
    out
}

/// Sequences in every state a position can be in.
pub(crate) const SEQUENCES: &str = "
    create sequence up;                                   select setval('up', 500, false);
    create sequence up_called;                            select setval('up_called', 41);
    create sequence down increment -3 maxvalue -1 start -1; select nextval('down'), nextval('down');
    create sequence down_uncalled increment -1 maxvalue -1; select setval('down_uncalled', -70, false);
    create sequence round maxvalue 3 cycle;               select nextval('round') from generate_series(1, 5);
    create sequence never;
    create table ident (id int generated always as identity, v text);
    insert into ident (v) values ('a'), ('b');
    create table restarted (id int generated by default as identity (start 10), v text);
    insert into restarted (v) values ('a');
    alter table restarted alter column id restart with 9000;
    create table serial_t (id bigserial primary key);
    insert into serial_t default values;";

async fn sequences_from(src: Cluster) {
    let dst = dst18();
    let src_db = src.create_db("seqs").await;
    src.run_sql(&src_db, SEQUENCES).await;
    let dst_db = unique("seqs_copy");
    let req = request_urls(&src.url(&src_db), &dst.url(&dst_db));
    let report = copy(&req).await;
    assert_eq!(report.databases[0].sequences, 9);
    let want = positions(&src, &src_db).await;
    assert_eq!(want.len(), 9);
    assert!(want.contains(&("public.up".into(), 500, false)), "{want:?}");
    assert_eq!(positions(&dst, &dst_db).await, want);
    assert_verify_ok(&req).await;
    // The next values agree too.
    let next = "select nextval('up'), nextval('down'), nextval('down_uncalled'), nextval('round'), nextval('never')";
    let a = src.connect(&src_db).await.query_one(next, &[]).await.unwrap();
    let b = dst.connect(&dst_db).await.query_one(next, &[]).await.unwrap();
    for i in 0..5 {
        assert_eq!(a.get::<_, i64>(i), b.get::<_, i64>(i), "column {i}");
    }
    let insert = "insert into restarted (v) values ('x') returning id";
    for (cluster, db) in [(&src, &src_db), (&dst, &dst_db)] {
        let id: i32 = cluster.connect(db).await.query_one(insert, &[]).await.unwrap().get(0);
        assert_eq!(id, 9000);
    }
    // The same last_value with another is_called is a difference: the next values differ.
    dst.run_sql(&dst_db, "select setval('down_uncalled', -70, false)").await;
    let report = barge_engine::verify(&req).await.unwrap();
    let diff = &report.databases[0].sequences;
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert_eq!(
        (diff[0].sequence.as_str(), diff[0].source, diff[0].target, diff[0].source_called, diff[0].target_called),
        ("public.down_uncalled", Some(-70), Some(-70), true, false)
    );
}

#[tokio::test]
async fn sequences_arrive_exact_from_18() {
    sequences_from(src18()).await;
}

#[tokio::test]
async fn sequences_arrive_exact_from_15() {
    sequences_from(src15()).await;
}
