//! `barge verify`: compare source and target table by table, in key-range chunks computed on
//! both servers in parallel (never one whole-table aggregate), then sequences and schema
//! objects. A mismatching chunk is drilled into to name sample keys. Memory stays flat:
//! servers aggregate, and drill-downs stream both sides in key order.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Mutex,
};

use futures_util::{StreamExt, future::try_join_all, pin_mut};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::ToSql;

use crate::{
    catalog,
    db::Db,
    error::{Error, Result},
    ident,
    plan::{self, Part, key_parts},
    request::Request,
};

/// Rows per chunk, roughly.
const CHUNK_ROWS: u64 = 100_000;
/// Sample keys reported per table.
const SAMPLES: usize = 5;

/// The outcome of a verification.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    /// One entry per database pair.
    pub databases: Vec<DatabaseVerify>,
    /// Whether everything matched.
    pub ok: bool,
}

/// One database pair.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DatabaseVerify {
    /// Source database.
    pub source: String,
    /// Target database.
    pub target: String,
    /// Per table.
    pub tables: Vec<TableVerify>,
    /// Sequences whose positions differ or that are missing.
    pub sequences: Vec<SequenceMismatch>,
    /// Sequences compared.
    pub sequences_checked: u64,
    /// Object kinds whose objects differ.
    pub objects: Vec<ObjectMismatch>,
    /// Objects compared.
    pub objects_checked: u64,
    /// Large objects on each side.
    pub large_objects: (i64, i64),
    /// Whether everything matched.
    pub ok: bool,
}

/// One table's comparison.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableVerify {
    /// `schema.table`.
    pub table: String,
    /// Rows on the source.
    pub source_rows: u64,
    /// Rows on the target.
    pub target_rows: u64,
    /// Chunks compared.
    pub chunks: u64,
    /// Chunks whose count or checksum differ.
    pub mismatched_chunks: u64,
    /// Keys of rows that differ: `missing on target`, `extra on target`, `differs`.
    pub samples: Vec<String>,
    /// Whether the table matched.
    pub ok: bool,
    /// Why it did not, when the reason is not a row difference (missing table, no key).
    pub note: Option<String>,
}

/// A sequence whose position differs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SequenceMismatch {
    /// `schema.sequence`.
    pub sequence: String,
    /// Source last_value (None: unreadable).
    pub source: Option<i64>,
    /// Target last_value (None: unreadable or missing).
    pub target: Option<i64>,
    /// Source is_called: whether last_value was handed out (the next value follows it).
    pub source_called: bool,
    /// Target is_called.
    pub target_called: bool,
    /// Whether the sequence exists on the target.
    pub exists_on_target: bool,
}

/// Objects of one kind that differ.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectMismatch {
    /// `index`, `trigger`, `function`, …
    pub kind: String,
    /// How many on the source.
    pub source: u64,
    /// How many on the target.
    pub target: u64,
    /// Up to five names missing on the target.
    pub missing: Vec<String>,
    /// Up to five names only on the target.
    pub extra: Vec<String>,
}

/// How a table is chunked.
#[derive(Clone, Debug)]
enum Chunking {
    /// Integer key ranges, each compared by its own pair of queries.
    Ranges { key: String, parts: Vec<Part> },
    /// Buckets of a hash of the primary key (or of the whole row, without one), computed in
    /// one grouped scan per side.
    Buckets { key: Option<Vec<String>>, buckets: u64 },
}

#[derive(Clone, Debug)]
struct TableJob {
    display: String,
    qualified: String,
    columns: Vec<String>,
    chunking: Chunking,
}

enum Task {
    Range { table: usize, part: usize },
    Buckets { table: usize },
}

/// Per-chunk aggregates: (count, checksum as exact text).
type Aggregates = BTreeMap<i64, (i64, String)>;

fn row_expr(columns: &[String]) -> String {
    if columns.is_empty() {
        return "''".into();
    }
    format!("row({})::text", columns.iter().map(|c| format!("t.{}", ident::quote(c))).collect::<Vec<_>>().join(", "))
}

fn select_list(columns: &[String]) -> String {
    if columns.is_empty() {
        "1 as one".into()
    } else {
        columns.iter().map(|c| ident::quote(c)).collect::<Vec<_>>().join(", ")
    }
}

fn key_expr(key: &Option<Vec<String>>, columns: &[String]) -> String {
    match key {
        Some(cols) => row_expr(cols),
        None => row_expr(columns),
    }
}

impl TableJob {
    fn range_sql(&self, part: &Part) -> String {
        let predicate = part.predicate().unwrap_or_else(|| "true".into());
        format!(
            "select count(*)::int8, coalesce(sum(pg_catalog.hashtextextended({}, 0)), 0)::text from (select {} from only {} where {predicate}) t",
            row_expr(&self.columns),
            select_list(&self.columns),
            self.qualified
        )
    }

    fn bucket_sql(&self, key: &Option<Vec<String>>, buckets: u64) -> String {
        format!(
            "select (pg_catalog.hashtextextended({}, 1) & {}) as b, count(*)::int8, sum(pg_catalog.hashtextextended({}, 0))::text \
             from (select {} from only {}) t group by 1",
            key_expr(key, &self.columns),
            buckets - 1,
            row_expr(&self.columns),
            select_list(&self.columns),
            self.qualified
        )
    }

    /// Rows of a chunk as (key text, row hash), ordered by the key's text in byte order
    /// (`COLLATE "C"`, the order Rust compares strings in), or by hash without a key.
    fn detail_sql(&self, filter: &str, key: &Option<Vec<String>>) -> String {
        let key_text = match key {
            Some(cols) => row_expr(cols),
            None => "''".into(),
        };
        let order = match key {
            Some(_) => format!("{key_text} collate \"C\""),
            None => "2".into(),
        };
        format!(
            "select {key_text}, pg_catalog.hashtextextended({}, 0) from (select {} from only {}) t where {filter} order by {order}",
            row_expr(&self.columns),
            select_list(&self.columns),
            self.qualified
        )
    }
}

/// Compares source and target for every database the request covers.
pub async fn verify(req: &Request) -> Result<VerifyReport> {
    let filter = req.filter.compile()?;
    let (source_admin, _) = crate::db::connect_admin(&req.source).await?;
    let mapping = plan::mapping(req, &source_admin, &filter).await?;
    drop(source_admin);
    let mut report = VerifyReport { ok: true, ..VerifyReport::default() };
    for (source_db, target_db) in &mapping.pairs {
        let db = verify_database(req, &filter, source_db, target_db).await?;
        report.ok &= db.ok;
        report.databases.push(db);
    }
    Ok(report)
}

async fn snapshot_of(db: &Db) -> Result<String> {
    db.batch("open the verify snapshot", "begin isolation level repeatable read read only").await?;
    Ok(db.query_one("export the verify snapshot", "select pg_catalog.pg_export_snapshot()", &[]).await?.get(0))
}

async fn verify_database(
    req: &Request,
    filter: &crate::filter::CompiledFilter,
    source_db: &str,
    target_db: &str,
) -> Result<DatabaseVerify> {
    let source = Db::connect(&req.source, source_db).await?;
    let target = Db::connect(&req.target, target_db).await?;
    let source_snapshot = snapshot_of(&source).await?;
    let target_snapshot = snapshot_of(&target).await?;
    let relations = catalog::relations(&source).await?;
    let schemas = catalog::schemas(&source).await?;
    let selection = plan::select(source_db, &relations, &schemas, filter);
    let target_tables: BTreeSet<(String, String)> =
        catalog::relations(&target).await?.into_iter().filter(|r| r.kind == 'r').map(|r| (r.schema, r.name)).collect();
    let pkeys: HashMap<u32, Vec<String>> = source
        .query("list primary keys", include_str!("sql/primary_keys.sql"), &[])
        .await?
        .iter()
        .map(|r| (u32::try_from(r.get::<_, i64>(0)).unwrap_or_default(), r.get(1)))
        .collect();
    let mut result = DatabaseVerify { source: source_db.into(), target: target_db.into(), ..DatabaseVerify::default() };
    let mut jobs = Vec::new();
    let mut tables = Vec::new();
    // Key ranges are read in the snapshot by a session that leaves it every so often: the
    // exporting transaction must not keep a lock on every table (and key index) it measured.
    let ranges = Db::connect(&req.source, source_db).await?;
    ranges.enter_snapshot(&source_snapshot).await?;
    let mut measured = crate::db::LockRelease::default();
    let compared = |r: &&catalog::Relation| match &req.local.tables {
        Some(only) => only.contains(&format!("{}.{}", r.schema, r.name)),
        None => selection.selected.contains(&r.oid),
    };
    for r in relations.iter().filter(|r| r.kind == 'r').filter(compared) {
        if filter.schema_only(source_db, &r.schema, &r.name) {
            continue;
        }
        let display = format!("{}.{}", r.schema, r.name);
        if !target_tables.contains(&(r.schema.clone(), r.name.clone())) {
            tables.push(TableVerify {
                table: display,
                note: Some("missing on the target".into()),
                ..TableVerify::default()
            });
            continue;
        }
        let chunks = (r.est_rows / CHUNK_ROWS).clamp(1, 1024);
        let chunking = match &r.int_key {
            Some(key) => {
                let sql = format!(
                    "select min({c})::int8, max({c})::int8 from only {t}",
                    c = ident::quote(key),
                    t = ident::qualified(&r.schema, &r.name)
                );
                if measured.due() {
                    ranges.reenter_snapshot(&source_snapshot).await?;
                }
                let row = ranges.query_one(&format!("find the key range of {display}"), &sql, &[]).await?;
                let parts = match (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) {
                    (Some(min), Some(max)) => key_parts(key, min, max, chunks.min(256)),
                    _ => vec![Part::Whole],
                };
                Chunking::Ranges { key: key.clone(), parts }
            }
            None => Chunking::Buckets { key: pkeys.get(&r.oid).cloned(), buckets: chunks.next_power_of_two() },
        };
        tables.push(TableVerify { table: display.clone(), ok: true, ..TableVerify::default() });
        jobs.push((
            tables.len() - 1,
            TableJob { display, qualified: ident::qualified(&r.schema, &r.name), columns: r.columns.clone(), chunking },
        ));
    }
    let mut queue = VecDeque::new();
    for (j, (_, job)) in jobs.iter().enumerate() {
        match &job.chunking {
            Chunking::Ranges { parts, .. } => {
                queue.extend((0..parts.len()).map(|part| Task::Range { table: j, part }));
            }
            Chunking::Buckets { .. } => queue.push_back(Task::Buckets { table: j }),
        }
    }
    let queue = Mutex::new(queue);
    let outcomes: Mutex<Vec<TableVerify>> = Mutex::new(jobs.iter().map(|(i, _)| tables[*i].clone()).collect());
    let workers = (0..req.options.jobs_or_cpus()).map(|_| async {
        let src = Db::connect(&req.source, source_db).await?;
        src.enter_snapshot(&source_snapshot).await?;
        let dst = Db::connect(&req.target, target_db).await?;
        dst.enter_snapshot(&target_snapshot).await?;
        let mut in_snapshot = crate::db::LockRelease::default();
        loop {
            let task = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            let Some(task) = task else {
                return Ok::<(), Error>(());
            };
            if in_snapshot.due() {
                src.reenter_snapshot(&source_snapshot).await?;
                dst.reenter_snapshot(&target_snapshot).await?;
            }
            let (j, outcome) = run_task(&src, &dst, &jobs, task).await?;
            let mut all = outcomes.lock().unwrap_or_else(|e| e.into_inner());
            let t = &mut all[j];
            t.source_rows += outcome.source_rows;
            t.target_rows += outcome.target_rows;
            t.chunks += outcome.chunks;
            t.mismatched_chunks += outcome.mismatched_chunks;
            for s in outcome.samples {
                if t.samples.len() < SAMPLES {
                    t.samples.push(s);
                }
            }
            if outcome.note.is_some() {
                t.note = outcome.note;
            }
        }
    });
    try_join_all(workers).await?;
    let outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    for ((i, _), mut outcome) in jobs.iter().zip(outcomes) {
        outcome.ok = outcome.mismatched_chunks == 0 && outcome.source_rows == outcome.target_rows;
        tables[*i] = outcome;
    }
    result.tables = tables;
    // Sequences are read in the snapshots too, by sessions of their own: a batch per transaction.
    let sequences = (
        (Db::connect(&req.source, source_db).await?, source_snapshot.as_str()),
        (Db::connect(&req.target, target_db).await?, target_snapshot.as_str()),
    );
    compare_sequences(sequences, &relations, &selection, &mut result).await?;
    compare_objects(&source, &target, source_db, filter, &selection, &relations, &mut result).await?;
    let count = "select count(*) from pg_catalog.pg_largeobject_metadata";
    result.large_objects = (
        source.query_one("count large objects", count, &[]).await?.get(0),
        target.query_one("count large objects", count, &[]).await?.get(0),
    );
    let lobs_ok = result.large_objects.0 == result.large_objects.1
        || !(req.filter.include_schemas.is_empty() && req.filter.include_tables.is_empty());
    result.ok =
        result.tables.iter().all(|t| t.ok) && result.sequences.is_empty() && result.objects.is_empty() && lobs_ok;
    Ok(result)
}

async fn run_task(src: &Db, dst: &Db, jobs: &[(usize, TableJob)], task: Task) -> Result<(usize, TableVerify)> {
    let mut outcome = TableVerify::default();
    match task {
        Task::Range { table, part } => {
            let job = &jobs[table].1;
            let Chunking::Ranges { key, parts } = &job.chunking else {
                return Ok((table, outcome));
            };
            let sql = job.range_sql(&parts[part]);
            let what = format!("checksum {}", job.display);
            let (s, t) = tokio::try_join!(src.query_one(&what, &sql, &[]), dst.query_one(&what, &sql, &[]))?;
            let (sc, ss): (i64, String) = (s.get(0), s.get(1));
            let (tc, ts): (i64, String) = (t.get(0), t.get(1));
            outcome.source_rows = sc as u64;
            outcome.target_rows = tc as u64;
            outcome.chunks = 1;
            if sc != tc || ss != ts {
                outcome.mismatched_chunks = 1;
                let filter = parts[part].predicate().unwrap_or_else(|| "true".into());
                let key = Some(vec![key.clone()]);
                outcome.samples = diff_rows(src, dst, job, &filter, &key, &[]).await?;
            }
            Ok((table, outcome))
        }
        Task::Buckets { table } => {
            let job = &jobs[table].1;
            let Chunking::Buckets { key, buckets } = &job.chunking else {
                return Ok((table, outcome));
            };
            let sql = job.bucket_sql(key, *buckets);
            let what = format!("checksum {}", job.display);
            let (s, t) = tokio::try_join!(src.query(&what, &sql, &[]), dst.query(&what, &sql, &[]))?;
            let collect = |rows: Vec<tokio_postgres::Row>| -> Aggregates {
                rows.iter().map(|r| (r.get::<_, i64>(0), (r.get::<_, i64>(1), r.get::<_, String>(2)))).collect()
            };
            let (s, t) = (collect(s), collect(t));
            outcome.source_rows = s.values().map(|v| v.0 as u64).sum();
            outcome.target_rows = t.values().map(|v| v.0 as u64).sum();
            outcome.chunks = *buckets;
            let keys: BTreeSet<i64> = s.keys().chain(t.keys()).copied().collect();
            for b in keys {
                if s.get(&b) != t.get(&b) {
                    outcome.mismatched_chunks += 1;
                    if outcome.samples.len() < SAMPLES {
                        let filter = format!(
                            "(pg_catalog.hashtextextended({}, 1) & {}) = $1",
                            key_expr(key, &job.columns),
                            buckets - 1
                        );
                        let more = diff_rows(src, dst, job, &filter, key, &[&b]).await?;
                        outcome.samples.extend(more);
                    }
                }
            }
            outcome.samples.truncate(SAMPLES);
            if key.is_none() && outcome.mismatched_chunks > 0 {
                outcome.note = Some("no primary key: differing rows are shown by their position in hash order".into());
            }
            Ok((table, outcome))
        }
    }
}

/// Streams both sides of a chunk in key order and names up to five differing keys.
async fn diff_rows(
    src: &Db,
    dst: &Db,
    job: &TableJob,
    filter: &str,
    key: &Option<Vec<String>>,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<String>> {
    let sql = job.detail_sql(filter, key);
    let what = format!("find differing rows of {}", job.display);
    let s = src.client().query_raw(&sql, params.iter().copied()).await.map_err(|e| src.err(&what, &e))?;
    let t = dst.client().query_raw(&sql, params.iter().copied()).await.map_err(|e| dst.err(&what, &e))?;
    pin_mut!(s, t);
    let next = |row: Option<std::result::Result<tokio_postgres::Row, tokio_postgres::Error>>,
                db: &Db|
     -> Result<Option<(String, i64)>> {
        match row {
            None => Ok(None),
            Some(Ok(r)) => Ok(Some((r.get(0), r.get(1)))),
            Some(Err(e)) => Err(db.err(&what, &e)),
        }
    };
    let mut a = next(s.next().await, src)?;
    let mut b = next(t.next().await, dst)?;
    let mut samples = Vec::new();
    let has_key = key.is_some();
    let mut position = 0u64;
    while samples.len() < SAMPLES {
        let order = match (&a, &b) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if has_key => x.0.as_bytes().cmp(y.0.as_bytes()),
            (Some(x), Some(y)) => x.1.cmp(&y.1),
        };
        position += 1;
        let label = |k: &str| {
            if has_key { k.to_owned() } else { format!("row #{position} (hash order)") }
        };
        match order {
            std::cmp::Ordering::Equal => {
                if let (Some(x), Some(y)) = (&a, &b)
                    && x.1 != y.1
                {
                    samples.push(format!("{} differs", label(&x.0)));
                }
                a = next(s.next().await, src)?;
                b = next(t.next().await, dst)?;
            }
            std::cmp::Ordering::Less => {
                if let Some(x) = &a {
                    samples.push(format!("{} missing on target", label(&x.0)));
                }
                a = next(s.next().await, src)?;
            }
            std::cmp::Ordering::Greater => {
                if let Some(y) = &b {
                    samples.push(format!("{} extra on target", label(&y.0)));
                }
                b = next(t.next().await, dst)?;
            }
        }
    }
    Ok(samples)
}

async fn compare_sequences(
    ((source, source_snapshot), (target, target_snapshot)): ((Db, &str), (Db, &str)),
    relations: &[catalog::Relation],
    selection: &plan::RelationSet,
    result: &mut DatabaseVerify,
) -> Result<()> {
    let selected: BTreeSet<(String, String)> = relations
        .iter()
        .filter(|r| r.kind == 'S' && selection.selected.contains(&r.oid))
        .map(|r| (r.schema.clone(), r.name.clone()))
        .collect();
    let read = |positions: Vec<catalog::SequencePosition>| -> BTreeMap<(String, String), Option<(i64, bool)>> {
        positions.into_iter().map(|s| ((s.schema, s.name), s.position)).collect()
    };
    let s = read(catalog::sequence_positions(&source, Some(source_snapshot)).await?);
    let t = read(catalog::sequence_positions(&target, Some(target_snapshot)).await?);
    for ((schema, name), position) in &s {
        if !selected.contains(&(schema.clone(), name.clone())) {
            continue;
        }
        result.sequences_checked += 1;
        let other = t.get(&(schema.clone(), name.clone()));
        if other != Some(position) {
            let target = other.copied().flatten();
            result.sequences.push(SequenceMismatch {
                sequence: format!("{schema}.{name}"),
                source: position.map(|p| p.0),
                target: target.map(|p| p.0),
                source_called: position.is_some_and(|p| p.1),
                target_called: target.is_some_and(|p| p.1),
                exists_on_target: other.is_some(),
            });
        }
    }
    Ok(())
}

async fn compare_objects(
    source: &Db,
    target: &Db,
    db: &str,
    filter: &crate::filter::CompiledFilter,
    selection: &plan::RelationSet,
    relations: &[catalog::Relation],
    result: &mut DatabaseVerify,
) -> Result<()> {
    let selected_names: BTreeSet<(String, String)> = relations
        .iter()
        .filter(|r| selection.selected.contains(&r.oid))
        .map(|r| (r.schema.clone(), r.name.clone()))
        .collect();
    let keep = |schema: &str, relation: &Option<String>| -> bool {
        if schema == "-" {
            return true;
        }
        if !filter.schema(db, schema) {
            return false;
        }
        match relation {
            Some(rel) => selected_names.contains(&(schema.to_owned(), rel.clone())),
            None => true,
        }
    };
    let sql = include_str!("sql/objects.sql");
    let read = |rows: Vec<tokio_postgres::Row>| -> BTreeMap<String, BTreeSet<String>> {
        let mut by_kind: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in rows {
            let (kind, schema, relation, name): (String, String, Option<String>, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            if !keep(&schema, &relation) {
                continue;
            }
            let label = match &relation {
                Some(rel) if rel != &name => format!("{schema}.{rel}.{name}"),
                _ if schema == "-" => name,
                _ => format!("{schema}.{name}"),
            };
            by_kind.entry(kind).or_default().insert(label);
        }
        by_kind
    };
    let s = read(source.query("list schema objects", sql, &[]).await?);
    let t = read(target.query("list schema objects", sql, &[]).await?);
    let kinds: BTreeSet<&String> = s.keys().chain(t.keys()).collect();
    let empty = BTreeSet::new();
    for kind in kinds {
        let (a, b) = (s.get(kind).unwrap_or(&empty), t.get(kind).unwrap_or(&empty));
        result.objects_checked += a.len() as u64;
        if a != b {
            result.objects.push(ObjectMismatch {
                kind: kind.clone(),
                source: a.len() as u64,
                target: b.len() as u64,
                missing: a.difference(b).take(SAMPLES).cloned().collect(),
                extra: b.difference(a).take(SAMPLES).cloned().collect(),
            });
        }
    }
    Ok(())
}
