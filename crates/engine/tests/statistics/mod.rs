//! Planner statistics: carried from the source to a PostgreSQL 18 target instead of an
//! `ANALYZE` of every table; `ANALYZE` where they cannot be (extended statistics, tables the
//! source never analyzed) or when asked (`--analyze`).

use barge_testkit::{Cluster, dst18, src15, src18, unique};

use super::{assert_same_data, copy, request};

/// Every planner statistic pg_stats shows of the database's user tables and indexes, as
/// text, in a stable order.
async fn pg_stats(cluster: &Cluster, db: &str) -> Vec<Vec<Option<String>>> {
    let client = cluster.connect(db).await;
    let range = if cluster.version >= 17 {
        "range_length_histogram::text, range_empty_frac::text, range_bounds_histogram::text"
    } else {
        "null, null, null"
    };
    let sql = format!(
        "select tablename::text, attname::text, inherited::text, null_frac::text, avg_width::text,
                n_distinct::text, most_common_vals::text, most_common_freqs::text,
                histogram_bounds::text, correlation::text, most_common_elems::text,
                most_common_elem_freqs::text, elem_count_histogram::text, {range}
           from pg_stats where schemaname = 'app'
          order by tablename, attname, inherited"
    );
    let rows = client.query(&sql, &[]).await.unwrap();
    rows.iter().map(|r| (0..r.len()).map(|i| r.get::<_, Option<String>>(i)).collect()).collect()
}

/// A schema `app` with statistics of every kind, on `big` (about 5 MiB, copied in parts):
/// most common values with quotes, commas, braces and SQL in them, a column named to break
/// quoting, array elements, ranges, an expression index. `small` (analyzed in its COPY's
/// transaction, cheaper for a table this size), a table with extended statistics, a table
/// never analyzed. Autovacuum is off where the test compares statistics: an autovacuum
/// ANALYZE on the target would replace them.
const SOURCE: &str = r#"
create schema app;
create table app.big (id int primary key, "we""ird; col" text, tags text[], during int4range, kind text,
                      payload text)
    with (autovacuum_enabled = false);
insert into app.big
select g,
       case g % 4 when 0 then $$'); drop table app.big; --$$ when 1 then 'a,b {c} "d" \e'
                  when 2 then 'plain' else null end,
       array['t' || (g % 5), 't' || (g % 7)],
       int4range(g, g + g % 10),
       'k' || (g % 3),
       repeat(md5(g::text), 3)
from generate_series(1, 30000) g;
create index big_lower on app.big (lower("we""ird; col"));
create table app.small (id int primary key, kind text) with (autovacuum_enabled = false);
insert into app.small select g, 'k' || (g % 3) from generate_series(1, 400) g;
create table app.extended (a int, b int);
insert into app.extended select g % 10, g % 10 from generate_series(1, 1000) g;
create statistics app.extended_ab (dependencies) on a, b from app.extended;
analyze;
create table app.fresh (id int, v text);
insert into app.fresh select g, 'v' || (g % 3) from generate_series(1, 300) g;
"#;

#[tokio::test]
async fn the_sources_statistics_are_carried_and_the_rest_analyzed() {
    for src in [src18(), src15()] {
        let dst = dst18();
        let src_db = src.create_db("stats").await;
        src.run_sql(&src_db, SOURCE).await;
        if src.version >= 18 {
            // GIVEN statistics no ANALYZE of these rows would produce: the target holding
            // them proves they were carried, not recomputed
            src.run_sql(
                &src_db,
                "select pg_restore_attribute_stats('schemaname', 'app', 'relname', 'big',
                     'attname', 'kind', 'inherited', false, 'most_common_vals', '{planted}'::text,
                     'most_common_freqs', '{0.75}'::real[]);",
            )
            .await;
        }
        let dst_db = unique("stats_copy");
        let mut req = request(&src, &src_db, &dst, &dst_db);
        // big in parts: statistics are read when its last part is in
        req.options.split_tables_larger_than = Some(1 << 20);
        let report = copy(&req).await;
        assert_same_data(&src, &src_db, &dst, &dst_db).await;

        // THEN big (and its expression index) holds the source's statistics; small was
        // analyzed with its rows, extended for its extended statistics, fresh because the
        // source never was
        let db = &report.databases[0];
        assert_eq!((db.statistics_carried, db.analyzed), (1, 3), "{src:?}: {db:?}");
        let (theirs, ours) = (pg_stats(&src, &src_db).await, pg_stats(&dst, &dst_db).await);
        let of = |stats: &[Vec<Option<String>>], table: &str| -> Vec<Vec<Option<String>>> {
            stats.iter().filter(|r| r[0].as_deref() == Some(table)).cloned().collect()
        };
        for table in ["big", "big_lower"] {
            assert!(!of(&theirs, table).is_empty(), "{table}");
            assert_eq!(of(&theirs, table), of(&ours, table), "{src:?}: statistics of {table}");
        }
        if src.version >= 18 {
            let planted = of(&ours, "big").into_iter().find(|r| r[1].as_deref() == Some("kind")).unwrap();
            assert_eq!(planted[6].as_deref(), Some("{planted}"));
        }
        for table in ["small", "fresh"] {
            assert!(!of(&ours, table).is_empty(), "{table} was analyzed");
        }
        let client = dst.connect(&dst_db).await;
        let extended: i64 = client
            .query_one("select count(*) from pg_stats_ext where schemaname = 'app' and dependencies is not null", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(extended, 1, "extended statistics computed on the target");

        // AND the tables' own sizes are the target's, their row counts those copied
        for (table, rows) in [("small", 400.0), ("big", 30000.0)] {
            let row = client
                .query_one(
                    "select relpages, reltuples,
                            (pg_relation_size(oid) / current_setting('block_size')::int8)::int4
                       from pg_class where oid = ('app.' || $1)::regclass",
                    &[&table],
                )
                .await
                .unwrap();
            let (pages, tuples, actual): (i32, f32, i32) = (row.get(0), row.get(1), row.get(2));
            assert_eq!((pages, tuples), (actual, rows), "{table}");
        }
    }
}

#[tokio::test]
async fn analyze_recomputes_every_tables_statistics_when_asked() {
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("stats_analyze").await;
    src.run_sql(
        &src_db,
        "create schema app;
         create table app.t (id int primary key, kind text, payload text);
         insert into app.t select g, 'k' || (g % 3), repeat(md5(g::text), 3) from generate_series(1, 30000) g;
         analyze;
         select pg_restore_attribute_stats('schemaname', 'app', 'relname', 't', 'attname', 'kind',
             'inherited', false, 'most_common_vals', '{planted}'::text, 'most_common_freqs', '{0.75}'::real[]);",
    )
    .await;
    let dst_db = unique("stats_analyze_copy");
    let mut req = request(&src, &src_db, &dst, &dst_db);
    req.options.analyze = true;
    let report = copy(&req).await;
    let db = &report.databases[0];
    assert_eq!((db.statistics_carried, db.analyzed), (0, 1));
    let mcv: String = dst
        .connect(&dst_db)
        .await
        .query_one("select most_common_vals::text from pg_stats where tablename = 't' and attname = 'kind'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(mcv, "{k0,k1,k2}", "the target's own ANALYZE, not the planted statistics");
}
