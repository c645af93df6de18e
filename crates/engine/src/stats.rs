//! Planner statistics: a copied table is query-ready when its statistics are in place. On a
//! PostgreSQL 18+ target barge carries the statistics the source's last `ANALYZE` stored
//! (`pg_stats`) with `pg_restore_relation_stats` and `pg_restore_attribute_stats`, as
//! `pg_dump --with-statistics` does, instead of running `ANALYZE` on every table; tables the
//! source never analyzed and older targets get `ANALYZE` as they copy, and tables with
//! extended statistics (which those functions do not set) once their `CREATE STATISTICS`
//! has run. docs/schema.md ("Planner statistics") says what is
//! carried and why.

use crate::{db::Db, error::Result, ident, plan::TablePlan, rows};

/// How copied tables get their planner statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Statistics {
    /// `ANALYZE` every table.
    Analyze,
    /// The source's statistics where they serve; `version` is the source's
    /// `server_version_num`, which the target needs to read them.
    FromSource { version: i32 },
}

impl Statistics {
    /// The source's statistics when the target can take them (18+) and the user did not ask
    /// for `ANALYZE`.
    pub(crate) fn choose(source: &Db, target: &Db, analyze: bool) -> Statistics {
        if analyze || target.version_num() < 180000 {
            Statistics::Analyze
        } else {
            Statistics::FromSource { version: source.version_num() }
        }
    }

    /// Whether `table`'s statistics are read from the source: a table larger than
    /// [`rows::SMALL_TABLE`] that has rows and no extended statistics. A small table is
    /// analyzed in its COPY's transaction instead: `ANALYZE` of a 100-row table takes about
    /// 0.7 ms, while reading its statistics from the source (`pg_stats`, a view costly to
    /// plan) and setting them takes about 4 ms and a round trip to each server. For a larger
    /// table `ANALYZE` reads up to 30,000 sampled rows' pages; carrying costs the same
    /// whatever the table's size.
    pub(crate) fn carries(self, table: &TablePlan) -> bool {
        matches!(self, Statistics::FromSource { .. })
            && !table.extended_statistics
            && !table.schema_only
            && table.bytes > rows::SMALL_TABLE
    }

    /// How `table` gets its statistics when its rows and indexes are in: none then for a
    /// table with extended statistics, which pg_dump creates with the rest of post-data; it
    /// is analyzed after that ([`analyze_extended`]).
    pub(crate) fn for_table(self, table: &TablePlan) -> Option<Statistics> {
        match () {
            _ if table.extended_statistics => None,
            _ if self.carries(table) => Some(self),
            _ => Some(Statistics::Analyze),
        }
    }
}

/// `ANALYZE` of the tables with extended statistics, once their `CREATE STATISTICS` has run:
/// only `ANALYZE` computes extended statistics. Returns how many tables it analyzed.
pub(crate) async fn analyze_extended(target: &Db, tables: &[TablePlan]) -> Result<u64> {
    let mut analyzed = 0;
    for table in tables.iter().filter(|t| t.extended_statistics) {
        target.batch(&format!("analyze {}", table.display()), &analyze_sql(table)).await?;
        analyzed += 1;
    }
    Ok(analyzed)
}

/// How a table got its statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatsDone {
    /// Set from the source's.
    Carried,
    /// Computed by `ANALYZE`.
    Analyzed,
}

/// One table's statistics as the source stored them: one element per column (of the table,
/// and of its expression indexes), in the arrays `sql/restore_statistics.sql` binds.
#[derive(Debug, Default)]
pub(crate) struct TableStats {
    rel: Vec<String>,
    att: Vec<String>,
    inherited: Vec<bool>,
    null_frac: Vec<Option<f32>>,
    avg_width: Vec<Option<i32>>,
    n_distinct: Vec<Option<f32>>,
    mcv: Vec<Option<String>>,
    mcf: Vec<Option<String>>,
    hist: Vec<Option<String>>,
    corr: Vec<Option<f32>>,
    mce: Vec<Option<String>>,
    mcef: Vec<Option<String>>,
    ech: Vec<Option<String>>,
    rlh: Vec<Option<String>>,
    ref_: Vec<Option<f32>>,
    rbh: Vec<Option<String>>,
}

impl TableStats {
    /// Whether the source holds statistics of this table: it was analyzed there.
    pub(crate) fn is_empty(&self) -> bool {
        self.rel.is_empty()
    }

    fn len(&self) -> usize {
        self.rel.len()
    }
}

/// The statistics the source stores for `table`, read in the session's snapshot.
pub(crate) async fn read(source: &Db, table: &TablePlan) -> Result<TableStats> {
    let range = if source.version_num() >= 170000 {
        "s.range_length_histogram::text as rlh, s.range_empty_frac as ref, s.range_bounds_histogram::text as rbh"
    } else {
        "null::text as rlh, null::float4 as ref, null::text as rbh"
    };
    let sql = include_str!("sql/statistics.sql").replace("{range}", range);
    let what = format!("read the planner statistics of {}", table.display());
    let rows = source.query(&what, &sql, &[&table.schema, &table.name]).await?;
    let mut stats = TableStats::default();
    for row in &rows {
        stats.rel.push(row.get("rel"));
        stats.att.push(row.get("att"));
        stats.inherited.push(row.get("inherited"));
        stats.null_frac.push(row.get("null_frac"));
        stats.avg_width.push(row.get("avg_width"));
        stats.n_distinct.push(row.get("n_distinct"));
        stats.mcv.push(row.get("mcv"));
        stats.mcf.push(row.get("mcf"));
        stats.hist.push(row.get("hist"));
        stats.corr.push(row.get("correlation"));
        stats.mce.push(row.get("mce"));
        stats.mcef.push(row.get("mcef"));
        stats.ech.push(row.get("ech"));
        stats.rlh.push(row.get("rlh"));
        stats.ref_.push(row.get("ref"));
        stats.rbh.push(row.get("rbh"));
    }
    Ok(stats)
}

/// Sets `table`'s statistics on the target: its size from the target's files, `rows` as its
/// row count, and the source's column statistics. Returns whether every statistic was set;
/// when not (a column or index the target names differently, a value the target cannot
/// read), the caller runs `ANALYZE` instead.
pub(crate) async fn restore(
    target: &Db,
    table: &TablePlan,
    stats: &TableStats,
    version: i32,
    rows: u64,
) -> Result<bool> {
    let frozen = rows::freezes(table);
    let what = format!("set the planner statistics of {}", table.display());
    let row = target
        .query_one(
            &what,
            include_str!("sql/restore_statistics.sql"),
            &[
                &table.schema,
                &table.name,
                &(rows as f32),
                &version,
                &frozen,
                &stats.rel,
                &stats.att,
                &stats.inherited,
                &stats.null_frac,
                &stats.avg_width,
                &stats.n_distinct,
                &stats.mcv,
                &stats.mcf,
                &stats.hist,
                &stats.corr,
                &stats.mce,
                &stats.mcef,
                &stats.ech,
                &stats.rlh,
                &stats.ref_,
                &stats.rbh,
            ],
        )
        .await?;
    let applied: i64 = row.get(0);
    Ok(applied == stats.len() as i64 + 1)
}

/// Gives `table` its statistics `how`: the source's (`carried`, read when its rows were
/// in) when there are any and the target takes them all, else `ANALYZE`.
pub(crate) async fn set(
    target: &Db,
    table: &TablePlan,
    how: Statistics,
    carried: Option<&TableStats>,
    rows: u64,
) -> Result<StatsDone> {
    if let (Statistics::FromSource { version }, Some(carried)) = (how, carried)
        && !carried.is_empty()
    {
        match restore(target, table, carried, version, rows).await {
            Ok(true) => return Ok(StatsDone::Carried),
            Ok(false) => {
                tracing::info!(table = %table.display(), "the source's statistics did not all apply; analyzing")
            }
            Err(e) => {
                tracing::warn!(table = %table.display(), error = %e, "setting the source's statistics failed; analyzing")
            }
        }
    }
    target.batch(&format!("analyze {}", table.display()), &analyze_sql(table)).await?;
    Ok(StatsDone::Analyzed)
}

/// `ANALYZE` of one table.
pub(crate) fn analyze_sql(table: &TablePlan) -> String {
    format!("analyze {}", ident::qualified(&table.schema, &table.name))
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is the failed test, with its reason.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{
        conninfo::{ConnInfo, Side},
        plan::{Part, TableKind},
    };

    fn table() -> TablePlan {
        TablePlan {
            schema: "public".into(),
            name: "t".into(),
            bytes: 0,
            est_rows: 500,
            kind: TableKind::Table,
            schema_only: false,
            text_copy: false,
            columns: vec!["id".into(), "kind".into()],
            parts: vec![Part::Whole],
            own_autovacuum: false,
            extended_statistics: false,
        }
    }

    /// Statistics of `kind` whose most common values are `mcv` (with `mcf` as frequencies),
    /// and of `other`.
    fn stats(mcv: &str, mcf: &str, other: &str) -> TableStats {
        let text = |s: &str| Some(s.to_owned());
        TableStats {
            rel: vec!["t".into(), "t".into()],
            att: vec!["kind".into(), other.into()],
            inherited: vec![false; 2],
            null_frac: vec![Some(0.0); 2],
            avg_width: vec![Some(5); 2],
            n_distinct: vec![Some(2.0); 2],
            mcv: vec![text(mcv), None],
            mcf: vec![text(mcf), None],
            hist: vec![None; 2],
            corr: vec![None; 2],
            mce: vec![None; 2],
            mcef: vec![None; 2],
            ech: vec![None; 2],
            rlh: vec![None; 2],
            ref_: vec![None; 2],
            rbh: vec![None; 2],
        }
    }

    async fn kind_mcv(target: &Db) -> Option<String> {
        target
            .query_opt(
                "read",
                "select most_common_vals::text from pg_stats where tablename = 't' and attname = 'kind'",
                &[],
            )
            .await
            .unwrap()
            .and_then(|r| r.get(0))
    }

    #[tokio::test]
    async fn statistics_the_target_cannot_take_are_replaced_by_analyze() {
        let dst = barge_testkit::dst18();
        let db = dst.create_db("stats_fallback").await;
        dst.run_sql(
            &db,
            "create table t (id int, kind text) with (autovacuum_enabled = false);
             insert into t select g, case when g % 10 = 0 then 'rare' else 'common' end
               from generate_series(1, 500) g;",
        )
        .await;
        let target = Db::connect(&ConnInfo::parse(Side::Target, &dst.url(&db)).unwrap(), &db).await.unwrap();
        let from_source = Statistics::FromSource { version: 180000 };
        // GIVEN statistics the target takes: they are set, as given
        let good = stats("{x,y}", "{0.6,0.4}", "id");
        assert!(restore(&target, &table(), &good, 180000, 500).await.unwrap());
        assert_eq!(set(&target, &table(), from_source, Some(&good), 500).await.unwrap(), StatsDone::Carried);
        assert_eq!(kind_mcv(&target).await.as_deref(), Some("{x,y}"));
        // WHEN some name a column the target lacks, or hold a value the target cannot read
        let missing = stats("{x,y}", "{0.6,0.4}", "gone");
        assert!(!restore(&target, &table(), &missing, 180000, 500).await.unwrap());
        let unreadable = stats("{x}", "{oops}", "id");
        assert!(restore(&target, &table(), &unreadable, 180000, 500).await.is_err());
        for (case, bad) in [("missing column", &missing), ("bad value", &unreadable), ("none", &TableStats::default())]
        {
            assert!(set(&target, &table(), from_source, Some(&good), 500).await.is_ok());
            // THEN the table is analyzed instead
            assert_eq!(
                set(&target, &table(), from_source, Some(bad), 500).await.unwrap(),
                StatsDone::Analyzed,
                "{case}"
            );
            assert_eq!(kind_mcv(&target).await.as_deref(), Some("{common,rare}"), "{case}");
        }
        // AND ANALYZE is what Analyze does, whatever was carried
        restore(&target, &table(), &good, 180000, 500).await.unwrap();
        assert_eq!(set(&target, &table(), Statistics::Analyze, Some(&good), 500).await.unwrap(), StatsDone::Analyzed);
        assert_eq!(kind_mcv(&target).await.as_deref(), Some("{common,rare}"));
    }
}
