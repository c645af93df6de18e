//! `barge init`: copy databases. Per database: one exported snapshot; pg_dump reads the schema
//! in it; pre-data goes in transactions that fit the target's lock table; then the [pipeline](crate::pipeline) moves rows
//! and builds indexes, key constraints, foreign keys and statistics table by table; then the
//! rest of post-data in pg_dump's order; sequences last. Every step commits with its progress
//! mark, so `--resume` continues where a run died.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::future::try_join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    catalog::{self, RelationName},
    conninfo::ConnInfo,
    database::{self, DatabaseSql},
    db::Db,
    error::{Error, Result},
    gates, ident,
    marks::{self, Marks},
    pgtools::{DumpOptions, LeaveOut, PgTools},
    pipeline::Pipeline,
    plan::{DatabasePlan, Plan, TargetAction},
    postdata::{self, Rest, Step},
    progress::{Phase, ProgressSink, Timings, Tracker},
    request::Request,
    roles::{self, RolesReport},
    schema::{self, SchemaDump, TargetSettings},
    sqlstate,
    stats::{self, Statistics},
    toc::{Kind, TocEntry},
};

/// What a copy did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct InitReport {
    /// One report per database.
    pub databases: Vec<DatabaseReport>,
    /// What `--roles` did.
    pub roles: Option<RolesReport>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

/// What one database copy did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DatabaseReport {
    /// Source database.
    pub source: String,
    /// Target database.
    pub target: String,
    /// Tables whose rows were copied in this run.
    pub tables: u64,
    /// Rows copied in this run.
    pub rows: u64,
    /// COPY bytes relayed in this run.
    pub bytes: u64,
    /// Indexes and key constraints built in this run.
    pub indexes: u64,
    /// Large objects copied in this run.
    pub large_objects: u64,
    /// Sequences whose position was set.
    pub sequences: u64,
    /// Steps an earlier, interrupted run had committed (skipped now).
    pub resumed_steps: u64,
    /// Tables whose planner statistics were carried from the source (a PostgreSQL 18+
    /// target).
    #[serde(default)]
    pub statistics_carried: u64,
    /// Tables analyzed.
    #[serde(default)]
    pub analyzed: u64,
    /// Where the time went.
    pub timings: Timings,
}

/// Runs the plan. Refuses, before changing anything, when the plan has problems.
pub async fn init(req: &Request, plan: &Plan, sink: Arc<dyn ProgressSink>) -> Result<InitReport> {
    refuse_problems(plan)?;
    let started = Instant::now();
    let (tools, roles) = prepare(req, &sink).await?;
    let mut report = InitReport { roles, ..InitReport::default() };
    for db in &plan.databases {
        let tracker = Tracker::new(sink.clone(), &db.target);
        report.databases.push(copy_database(req, &tools, db, tracker, None).await?);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Fails, naming every problem, when the plan has any: nothing was changed yet.
pub(crate) fn refuse_problems(plan: &Plan) -> Result<()> {
    let problems: Vec<String> = plan
        .problems()
        .map(|c| match &c.hint {
            Some(hint) => format!("{}: {} ({hint})", c.name, c.detail),
            None => format!("{}: {}", c.name, c.detail),
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    let refused = plan.databases.iter().any(|d| matches!(d.action, TargetAction::Refuse { .. }));
    let text = format!("nothing was changed; fix these first:\n  {}", problems.join("\n  "));
    Err(if refused { Error::TargetNotEmpty(text) } else { Error::Refused(text) })
}

/// What every copy needs before its first database: the client tools for the source's
/// version, and the roles `--roles` asks for.
pub(crate) async fn prepare(req: &Request, sink: &Arc<dyn ProgressSink>) -> Result<(PgTools, Option<RolesReport>)> {
    let (source_admin, _) = crate::db::connect_admin(&req.source).await?;
    let tools = PgTools::locate(req.local.pg_bin.as_deref(), (source_admin.version_num() / 10000) as u32).await?;
    let mut report = None;
    if req.options.roles {
        let (target_admin, _) = crate::db::connect_admin(&req.target).await?;
        let roles = roles::copy(&source_admin, &target_admin).await?;
        for warning in &roles.warnings {
            sink.emit(crate::progress::Event::Warning { message: warning.clone() });
        }
        report = Some(roles);
    }
    Ok((tools, report))
}

/// Connects to a maintenance database other than `avoid` (it may be dropped).
async fn connect_admin_except(info: &ConnInfo, avoid: &str) -> Result<Db> {
    let mut last = None;
    for db in ["postgres", "template1"] {
        if db == avoid {
            continue;
        }
        match Db::connect(info, db).await {
            Ok(conn) => return Ok(conn),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        Error::Refused("no maintenance database (postgres, template1) to connect to on the target".into())
    }))
}

async fn drop_database(admin: &Db, name: &str) -> Result<()> {
    let sql = format!("drop database if exists {}", ident::quote(name));
    // Connections barge itself just closed may take a moment to go away.
    for attempt in 0..20 {
        match admin.batch(&format!("drop database \"{name}\""), &sql).await {
            Err(e) if e.sqlstate() == Some(sqlstate::OBJECT_IN_USE) && attempt < 19 => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) if e.sqlstate() == Some(sqlstate::OBJECT_IN_USE) => {
                return Err(Error::TargetNotEmpty(format!(
                    "--drop-existing cannot drop target database \"{name}\": other sessions are connected to it; close them and run again ({e})"
                )));
            }
            other => return other,
        }
    }
    Ok(())
}

/// Creates (or re-creates) the target database as the plan says; returns a connection to it.
/// `admin` is a maintenance database when the database is to be created.
async fn prepare_target(req: &Request, admin: &Db, db: &DatabasePlan, sql: &DatabaseSql) -> Result<Db> {
    match &db.action {
        TargetAction::Create | TargetAction::DropAndCreate { .. } => {
            if matches!(db.action, TargetAction::DropAndCreate { .. }) {
                drop_database(admin, &db.target).await?;
            }
            admin.batch(&format!("create target database \"{}\"", db.target), &sql.create).await.map_err(|e| {
                match e.sqlstate() {
                    Some(sqlstate::INSUFFICIENT_PRIVILEGE) => e.with_hint(&format!(
                        "the target user needs the CREATEDB privilege, or create an empty database \"{}\" yourself and run again",
                        db.target
                    )),
                    Some(sqlstate::INVALID_PARAMETER_VALUE) | Some(sqlstate::WRONG_OBJECT_TYPE) | Some(sqlstate::UNDEFINED_OBJECT) => {
                        e.with_hint("the target server lacks the source database's encoding, locale or tablespace")
                    }
                    _ => e,
                }
            })?;
        }
        TargetAction::UseEmpty | TargetAction::Resume => {}
        TargetAction::Refuse { reason } => return Err(Error::TargetNotEmpty(reason.clone())),
    }
    Db::connect(&req.target, &db.target).await
}

/// The target's `maintenance_work_mem` for index builds: the flag's value, else sized from
/// the memory at hand — this machine's when the target runs here, else a share of the
/// target's shared_buffers (a stand-in for its memory).
async fn maintenance_work_mem(req: &Request, target: &Db) -> Result<u64> {
    if let Some(bytes) = req.options.maintenance_work_mem {
        return Ok(bytes.max(1 << 20));
    }
    let jobs = req.options.index_jobs_or_cpus() as u64;
    let local = req.target.is_socket() || {
        let endpoint = req.target.endpoint();
        endpoint.starts_with("127.") || endpoint.starts_with("localhost:") || endpoint.starts_with("[::1]")
    };
    if local && let Some(available) = available_memory() {
        return Ok((available / 4 / jobs).clamp(64 << 20, 2 << 30));
    }
    let shared: i64 = target
        .query_one(
            "read shared_buffers",
            "select setting::int8 * pg_catalog.current_setting('block_size')::int8 from pg_catalog.pg_settings where name = 'shared_buffers'",
            &[],
        )
        .await?
        .get(0);
    Ok((shared.max(0) as u64 / jobs).clamp(64 << 20, 1 << 30))
}

fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn rest_weight(item: &Rest<'_>) -> usize {
    match item {
        Rest::Entry(e) => schema::lock_weight(e),
        Rest::Step(_) => 1,
    }
}

/// Runs the rest of post-data in pg_dump's order, in transactions within the target's lock
/// budget (materialized view refreshes and late foreign keys alone), each with its mark.
async fn run_post_data(
    target: &Db,
    dump: &SchemaDump,
    settings: &TargetSettings,
    rest: &[Rest<'_>],
    marks: &Marks,
    tracker: &Tracker,
) -> Result<()> {
    // Materialized view refreshes and late foreign keys go alone; the rest in runs that stay
    // within the target's lock budget.
    let mut batches: Vec<&[Rest<'_>]> = Vec::new();
    let mut start = 0;
    for (i, item) in rest.iter().enumerate() {
        let alone = match item {
            Rest::Step(_) => true,
            Rest::Entry(e) => e.kind == Kind::MatviewData,
        };
        if alone {
            batches.extend(schema::lock_batches(&rest[start..i], rest_weight, settings.lock_budget));
            batches.push(&rest[i..=i]);
            start = i + 1;
        }
    }
    batches.extend(schema::lock_batches(&rest[start..], rest_weight, settings.lock_budget));
    tracker.add_constraints_total(batches.len() as u64);
    for batch in batches {
        let (step, sql, what) = match batch {
            [Rest::Step(add)] => (add.step.clone(), add.sql.clone(), format!("add foreign key {} not valid", add.name)),
            _ => {
                let entries: Vec<_> =
                    batch.iter().filter_map(|item| if let Rest::Entry(e) = item { Some(*e) } else { None }).collect();
                let script = dump.post_data(&entries, settings).await?;
                let what = match entries.as_slice() {
                    [one] => format!("apply post-data entry {}", one.label),
                    _ => format!("apply {} post-data entries", entries.len()),
                };
                (format!("post:{}", marks::fingerprint(&script)), script, what)
            }
        };
        if marks.is_done(&step) {
            tracker.constraint_done();
            continue;
        }
        target
            .in_transaction(&what, async || {
                schema::run_script(target, &what, &sql).await?;
                marks::record(target, &step, 0, 0).await
            })
            .await?;
        tracker.constraint_done();
    }
    Ok(())
}

/// Validates the late foreign keys (those referencing partitioned tables) in parallel.
async fn validate_late(
    req: &Request,
    plan: &DatabasePlan,
    validations: &[Step],
    marks: &Marks,
    tracker: &Tracker,
) -> Result<()> {
    let queue: Mutex<VecDeque<&Step>> = Mutex::new(validations.iter().filter(|v| !marks.is_done(&v.step)).collect());
    tracker.add_constraints_total(validations.len() as u64);
    let workers = (0..req.options.index_jobs_or_cpus().min(validations.len().max(1))).map(|_| async {
        let target = Db::connect(&req.target, &plan.target).await?;
        loop {
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            let Some(step) = next else { return Ok::<(), Error>(()) };
            marks::run_step(&target, &step.step, &format!("validate foreign key {}", step.name), &step.sql).await?;
            tracker.constraint_done();
        }
    });
    try_join_all(workers).await?;
    Ok(())
}

/// Autovacuum would vacuum and analyze tables while they load, competing with the copy for
/// CPU and doing again what barge does at the end; it is paused on the copied tables (unless
/// a table sets autovacuum_enabled itself) and restored when the copy is complete. A copy
/// that dies leaves it paused until `--resume` completes it.
///
/// Not on small tables ([`gates::early`]): one transaction loads, indexes and analyzes each,
/// so autovacuum never sees one half loaded, and it analyzes each once more whether paused
/// or not (the load's inserts reach the server's statistics at commit, after the ANALYZE).
/// Pausing them cost two `ALTER TABLE`s per table, the second at the very end of the copy.
fn pauses_autovacuum(table: &crate::plan::TablePlan) -> bool {
    !table.own_autovacuum && !gates::early(table)
}

async fn set_autovacuum(
    target: &Db,
    tables: &[&crate::plan::TablePlan],
    paused: bool,
    lock_budget: usize,
) -> Result<()> {
    let tables: Vec<&crate::plan::TablePlan> = tables.iter().copied().filter(|t| pauses_autovacuum(t)).collect();
    let what = if paused { "pause autovacuum on the copied tables" } else { "restore autovacuum on the copied tables" };
    // One statement string runs as one transaction: batches keep it within the lock table.
    for batch in schema::lock_batches(&tables, |_| 2, lock_budget) {
        let sql: String = batch
            .iter()
            .map(|t| {
                if paused {
                    format!("alter table only {} set (autovacuum_enabled = false);\n", t.qualified())
                } else {
                    format!("alter table only {} reset (autovacuum_enabled);\n", t.qualified())
                }
            })
            .collect();
        target.batch(what, &sql).await?;
    }
    Ok(())
}

/// The target's side of applying pre-data: what each batch pauses autovacuum on, and where
/// it says how far it got.
struct PreData<'a> {
    database_sql: &'a DatabaseSql,
    marks: &'a Marks,
    /// Per batch, the copied tables it creates, whose autovacuum is paused in its transaction.
    pause: Vec<Vec<&'a crate::plan::TablePlan>>,
    /// Batches committed (or committed by an earlier run) so far, in order.
    committed: &'a watch::Sender<usize>,
}

/// Applies pre-data in pg_dump's order, in the transactions `batches` (each within the
/// target's lock budget), each with its mark (named after the objects it creates, so a
/// `--resume` that dumps the same schema again skips exactly the batches that committed).
/// The database's owner, comment and grants go with the first; the last also marks
/// `pre-data` done. The pipeline copies early tables meanwhile ([`crate::gates`]): a batch
/// that collides with it (a deadlock, or a catalog row both changed) is run again.
/// Returns which batches this run applied (the others an earlier run had committed).
async fn apply_pre_data(
    target: &Db,
    dump: &SchemaDump,
    settings: &TargetSettings,
    batches: &[&[TocEntry]],
    pre: &PreData<'_>,
) -> Result<Vec<bool>> {
    let count = batches.len();
    let mut applied = vec![false; count];
    let step_of = |batch: &[TocEntry]| {
        let names: String = batch.iter().map(|e| format!("{} {} {}\n", e.class, e.oid, e.label)).collect();
        format!("pre-data:{}", marks::fingerprint(&names))
    };
    // pg_restore renders batch i + 1 while the target applies batch i.
    let render = async |i: usize| -> Result<Option<String>> {
        let batch = batches[i];
        if pre.marks.is_done(&step_of(batch)) {
            return Ok(None);
        }
        let entries: Vec<&TocEntry> = batch.iter().collect();
        Ok(Some(if entries.is_empty() { String::new() } else { dump.pre_data(&entries, settings).await? }))
    };
    let mut next = render(0).await?;
    for (i, batch) in batches.iter().enumerate() {
        let script = next.take();
        applied[i] = script.is_some();
        let apply = async {
            let Some(script) = script else { return Ok(()) };
            let step = step_of(batch);
            let what = if count == 1 {
                "apply the pre-data schema".to_owned()
            } else {
                format!("apply the pre-data schema, part {} of {count}", i + 1)
            };
            let pause: String = pre.pause[i]
                .iter()
                .map(|t| format!("alter table only {} set (autovacuum_enabled = false);\n", t.qualified()))
                .collect();
            let mut attempt = 1;
            loop {
                let result = target
                    .in_transaction(&what, async || {
                        if i == 0 {
                            for sql in &pre.database_sql.properties {
                                target.batch("apply the database's owner, comment, grants and labels", sql).await?;
                            }
                        }
                        schema::run_script(target, &what, &script).await?;
                        if !pause.is_empty() {
                            target.batch("pause autovacuum on the copied tables", &pause).await?;
                        }
                        marks::record(target, &step, 0, 0).await?;
                        if i + 1 == count {
                            marks::record(target, "pre-data", 0, 0).await?;
                        }
                        Ok(())
                    })
                    .await;
                match result {
                    Err(e) if attempt < PRE_DATA_ATTEMPTS && collided(&e) => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => return other,
                }
            }
        };
        if i + 1 < count {
            (_, next) = tokio::try_join!(apply, render(i + 1))?;
            pre.committed.send_replace(i + 1);
        } else {
            apply.await?;
        }
    }
    Ok(applied)
}

/// Attempts at a pre-data batch that collides with the copy running beside it.
const PRE_DATA_ATTEMPTS: u32 = 5;

/// Whether a pre-data batch failed on a collision with another session, not on its own
/// content: it rolled back, and runs again.
fn collided(e: &Error) -> bool {
    match e.sqlstate() {
        Some(sqlstate::DEADLOCK_DETECTED) | Some(sqlstate::SERIALIZATION_FAILURE) => true,
        Some(sqlstate::INTERNAL_ERROR) => e.to_string().contains("concurrently"),
        _ => false,
    }
}

/// Sets every target sequence to its source position: `setval(value, is_called)`, so the
/// next `nextval` on the target returns what it would have returned on the source. One
/// statement sets a batch of sequences (one round trip, not one per sequence); a batch stays
/// within the target's lock budget, since each `setval` locks its sequence until the end.
pub(crate) async fn copy_sequences(source: &Db, target: &Db) -> Result<u64> {
    let on_target: HashSet<(String, String)> =
        catalog::sequence_positions(target, None).await?.into_iter().map(|s| (s.schema, s.name)).collect();
    let mut positions = Vec::new();
    for sequence in catalog::sequence_positions(source, None).await? {
        let (schema, name) = (&sequence.schema, &sequence.name);
        if !on_target.contains(&(schema.clone(), name.clone())) {
            continue;
        }
        let Some((value, called)) = sequence.position else {
            return Err(Error::Refused(format!(
                "the source user cannot read sequence {schema}.{name}: grant it SELECT on the sequence, or its position would be lost"
            )));
        };
        positions.push((ident::qualified(schema, name), value, called));
    }
    let budget = TargetSettings::read(target).await?.lock_budget;
    for batch in schema::lock_batches(&positions, |_| 1, budget) {
        let names: Vec<&str> = batch.iter().map(|(name, _, _)| name.as_str()).collect();
        let values: Vec<i64> = batch.iter().map(|(_, value, _)| *value).collect();
        let called: Vec<bool> = batch.iter().map(|(_, _, called)| *called).collect();
        target
            .execute(
                &format!("set {} sequence position(s)", batch.len()),
                "select pg_catalog.setval(s::pg_catalog.regclass, v, c) \
                   from rows from (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::int8[]), \
                                   pg_catalog.unnest($3::bool[])) as u(s, v, c)",
                &[&names, &values, &called],
            )
            .await?;
    }
    Ok(positions.len() as u64)
}

/// Copies one database. `snapshot` is an exported snapshot to read in (a replication
/// slot's, for a sync); without one the copy exports its own.
pub(crate) async fn copy_database(
    req: &Request,
    tools: &PgTools,
    db: &DatabasePlan,
    tracker: Arc<Tracker>,
    snapshot: Option<&str>,
) -> Result<DatabaseReport> {
    let started = Instant::now();
    let mut timings = Timings::default();
    tracker.phase(Phase::Schema);
    // One snapshot for pg_dump and every COPY; held open until the rows are in.
    let holder = Db::connect(&req.source, &db.source).await?;
    let snapshot: String = match snapshot {
        Some(id) => {
            holder.enter_snapshot(id).await?;
            id.to_owned()
        }
        None => {
            holder.batch("open the copy snapshot", "begin isolation level repeatable read read only").await?;
            holder.query_one("export the copy snapshot", "select pg_catalog.pg_export_snapshot()", &[]).await?.get(0)
        }
    };
    let leave_out =
        LeaveOut { owner: req.options.no_owner, acl: req.options.no_acl, tablespaces: req.options.no_tablespaces };
    let dump_options = DumpOptions {
        leave_out,
        exclude_schemas: db.excluded_schemas.clone(),
        exclude_tables: db.excluded_relations.clone(),
        include_tables: Vec::new(),
    };
    let dump = schema::dump(tools, &req.source, &db.source, holder.tls(), Some(&snapshot), &dump_options).await?;
    let admin = match db.action {
        TargetAction::Create | TargetAction::DropAndCreate { .. } => {
            connect_admin_except(&req.target, &db.target).await?
        }
        _ => Db::connect(&req.target, &db.target).await?,
    };
    let database_sql = database::statements(&holder, &admin, &db.target, leave_out).await?;
    let target = prepare_target(req, &admin, db, &database_sql).await?;
    drop(admin);
    let resume = matches!(db.action, TargetAction::Resume);
    let (marks, stored) = Marks::open(&target, db, resume).await?;
    let db = &stored;
    let settings = TargetSettings::read(&target).await?;
    let relations: HashMap<u32, RelationName> =
        catalog::relation_names(&holder).await?.into_iter().map(|r| (r.oid, r)).collect();
    let mut batches = schema::lock_batches(&dump.pre, schema::lock_weight, settings.lock_budget);
    if batches.is_empty() {
        batches.push(&[]);
    }
    let all = batches.len();
    let gates = gates::gates(db, &batches, &relations);
    // Batches committed so far: the copy of small tables starts while later ones go in.
    let (committed, committed_rx) = watch::channel(0);
    let schema = async {
        // Each batch pauses autovacuum on the copied tables it creates.
        let created = gates::created(db, &batches, &relations);
        let mut paused = vec![false; db.tables.len()];
        if !marks.is_done("pre-data") {
            let pause = created
                .iter()
                .map(|tables| tables.iter().map(|&t| &db.tables[t]).filter(|t| pauses_autovacuum(t)).collect())
                .collect();
            let pre = PreData { database_sql: &database_sql, marks: &marks, pause, committed: &committed };
            let applied = apply_pre_data(&target, &dump, &settings, &batches, &pre).await?;
            for (tables, _) in created.iter().zip(applied).filter(|(_, applied)| *applied) {
                for &t in tables {
                    paused[t] = true;
                }
            }
        }
        // Tables no batch of this run created: paused here.
        let rest: Vec<&crate::plan::TablePlan> =
            db.tables.iter().zip(&paused).filter(|(_, p)| !**p).map(|(t, _)| t).collect();
        set_autovacuum(&target, &rest, true, settings.lock_budget).await?;
        committed.send_replace(all);
        Ok::<f64, Error>(started.elapsed().as_secs_f64())
    };
    // The source's catalog is read while the target applies the schema.
    let classify = async {
        // Which tables are schema-only materialized views is a filter question.
        let filter = req.filter.compile()?;
        let schema_only_matviews: HashSet<u32> = relations
            .values()
            .filter(|r| r.kind == 'm' && filter.schema_only(&db.source, &r.schema, &r.name))
            .map(|r| r.oid)
            .collect();
        postdata::classify(&holder, db, &dump.post, &relations, &schema_only_matviews).await
    };
    let maintenance_work_mem = maintenance_work_mem(req, &target).await?;
    let copy = async {
        let post = classify.await?;
        let pipeline = Pipeline {
            req,
            plan: db,
            snapshot: &snapshot,
            tracker: tracker.clone(),
            marks: &marks,
            work: &post.tables,
            fks: &post.foreign_keys,
            maintenance_work_mem,
            statistics: Statistics::choose(&holder, &target, req.options.analyze),
            gates: &gates,
            schema: committed_rx,
            batches: all,
        };
        tracker.phase(Phase::Copying);
        let data_started = Instant::now();
        let outcome = {
            let _ticks = tracker.tick(Duration::from_secs(1));
            pipeline.run().await?
        };
        Ok::<_, Error>((post, outcome, data_started))
    };
    let (schema_seconds, (post, outcome, data_started)) = tokio::try_join!(schema, copy)?;
    timings.schema = schema_seconds;
    timings.data = outcome.data_done_at.duration_since(data_started).as_secs_f64();
    timings.after_data = outcome.data_done_at.elapsed().as_secs_f64();
    timings.index_builds = outcome.build_seconds;
    timings.foreign_keys = outcome.fk_seconds;
    timings.analyze = outcome.analyze_seconds;
    let mut report = DatabaseReport {
        source: db.source.clone(),
        target: db.target.clone(),
        resumed_steps: marks.count() as u64,
        statistics_carried: outcome.statistics_carried,
        analyzed: outcome.analyzed,
        ..DatabaseReport::default()
    };
    let progress = tracker.snapshot();
    report.rows = progress.rows_copied;
    let (tables_resumed, builds_resumed, bytes_resumed) = outcome.resumed;
    report.bytes = progress.bytes_copied.saturating_sub(bytes_resumed);
    report.tables = progress.tables_done.saturating_sub(tables_resumed);
    report.indexes = progress.indexes_done.saturating_sub(builds_resumed);
    report.large_objects = db.large_objects;
    // The rows are in: release the snapshot.
    holder.batch("close the copy snapshot", "commit").await?;

    tracker.phase(Phase::Constraints);
    let post_started = Instant::now();
    let rest = async {
        run_post_data(&target, &dump, &settings, &post.rest, &marks, &tracker).await?;
        validate_late(req, db, &post.late_validations, &marks, &tracker).await?;
        let analyzed = stats::analyze_extended(&target, &db.tables).await?;
        Ok::<_, Error>((analyzed, post_started.elapsed().as_secs_f64()))
    };
    // Sequences meanwhile, in a session of their own: setval locks nothing post-data uses.
    let sequences = async {
        let own = Db::connect(&req.target, &db.target).await?;
        let started = Instant::now();
        let count = copy_sequences(&holder, &own).await?;
        Ok::<_, Error>((count, started.elapsed().as_secs_f64()))
    };
    let ((analyzed, post_seconds), (sequences, sequence_seconds)) = tokio::try_join!(rest, sequences)?;
    report.analyzed += analyzed;
    report.sequences = sequences;
    timings.post_data = post_seconds;
    timings.sequences = sequence_seconds;
    set_autovacuum(&target, &db.tables.iter().collect::<Vec<_>>(), false, settings.lock_budget).await?;
    if !database_sql.finish.is_empty() && !marks.is_done("database-settings") {
        target
            .in_transaction("apply the database's settings", async || {
                for sql in &database_sql.finish {
                    target.batch("apply the database's settings, connection limit and template flag", sql).await?;
                }
                marks::record(&target, "database-settings", 0, 0).await
            })
            .await?;
    }
    marks::drop_all(&target).await?;
    timings.total = started.elapsed().as_secs_f64();
    tracker.phase(Phase::Done);
    tracker.emit(crate::progress::Event::DatabaseFinished { database: db.target.clone(), timings: timings.clone() });
    report.timings = timings;
    Ok(report)
}
