//! `barge init`: copy databases. Per database: one exported snapshot; pg_dump reads the schema
//! in it; pre-data goes in one transaction; rows move as parallel COPY streams; each table's
//! indexes start the moment its rows are in (primary keys and unique constraints as
//! `CREATE UNIQUE INDEX` + `ADD CONSTRAINT … USING INDEX`); then the rest of post-data with
//! foreign keys `NOT VALID`, validated in parallel with `ANALYZE`; sequences last. Every
//! step commits with its progress mark, so `--resume` continues where a run died.

use std::{
    collections::{BinaryHeap, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use futures_util::future::try_join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{
    catalog,
    conninfo::ConnInfo,
    copy,
    db::Db,
    error::{Error, Result},
    ident,
    marks::{self, Marks},
    pgtools::{DumpOptions, PgTools},
    plan::{DatabasePlan, Plan, TargetAction},
    progress::{Phase, ProgressSink, Timings, Tracker},
    request::Request,
    roles::{self, RolesReport},
    schema::{self, Session},
    script::Entry,
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
    /// Where the time went.
    pub timings: Timings,
}

/// Runs the plan. Refuses, before changing anything, when the plan has problems.
pub async fn init(req: &Request, plan: &Plan, sink: Arc<dyn ProgressSink>) -> Result<InitReport> {
    let problems: Vec<String> = plan
        .problems()
        .map(|c| match &c.hint {
            Some(hint) => format!("{}: {} ({hint})", c.name, c.detail),
            None => format!("{}: {}", c.name, c.detail),
        })
        .collect();
    if !problems.is_empty() {
        let refused = plan.databases.iter().any(|d| matches!(d.action, TargetAction::Refuse { .. }));
        let text = format!("nothing was changed; fix these first:\n  {}", problems.join("\n  "));
        return Err(if refused { Error::TargetNotEmpty(text) } else { Error::Invalid(text) });
    }
    let started = Instant::now();
    let (source_admin, _) = crate::plan::connect_admin(&req.source).await?;
    let tools = PgTools::locate(req.options.pg_bin.as_deref(), (source_admin.version_num() / 10000) as u32).await?;
    let mut report = InitReport::default();
    if req.options.roles {
        let (target_admin, _) = crate::plan::connect_admin(&req.target).await?;
        let roles = roles::copy(&source_admin, &target_admin).await?;
        for warning in &roles.warnings {
            sink.emit(crate::progress::Event::Warning { message: warning.clone() });
        }
        report.roles = Some(roles);
    }
    drop(source_admin);
    for db in &plan.databases {
        let tracker = Tracker::new(sink.clone(), &db.target);
        report.databases.push(copy_database(req, &tools, db, tracker).await?);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
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
    Err(last.unwrap_or_else(|| Error::Invalid("no maintenance database to connect to on the target".into())))
}

async fn drop_database(admin: &Db, name: &str) -> Result<()> {
    let sql = format!("drop database if exists {}", ident::quote(name));
    // Connections barge itself just closed may take a moment to go away.
    for attempt in 0..20 {
        match admin.batch(&format!("drop database \"{name}\""), &sql).await {
            Err(e) if e.sqlstate() == Some("55006") && attempt < 19 => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) if e.sqlstate() == Some("55006") => {
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
async fn prepare_target(req: &Request, db: &DatabasePlan, pre: &crate::script::Script, source: &Db) -> Result<Db> {
    match &db.action {
        TargetAction::Create | TargetAction::DropAndCreate { .. } => {
            let admin = connect_admin_except(&req.target, &db.target).await?;
            if matches!(db.action, TargetAction::DropAndCreate { .. }) {
                drop_database(&admin, &db.target).await?;
            }
            let entry = schema::create_database_entry(pre)
                .ok_or_else(|| Error::Tool("pg_dump --create printed no CREATE DATABASE".into()))?;
            let quoted = schema::quote_like_pg_dump(source, &db.source).await?;
            let sql = schema::rename_database(&entry.sql, &quoted, &db.target);
            for statement in schema::statements(&sql) {
                admin.batch(&format!("create target database \"{}\"", db.target), &statement).await.map_err(|e| {
                    match e.sqlstate() {
                        Some("42501") => Error::Invalid(format!(
                            "{e} — the target user needs the CREATEDB privilege, or create an empty database \"{}\" yourself and run again",
                            db.target
                        )),
                        Some("22023") | Some("42809") => Error::Invalid(format!(
                            "{e} — the target server lacks the source database's encoding or locale"
                        )),
                        _ => e,
                    }
                })?;
            }
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
    let jobs = req.options.index_jobs.max(1) as u64;
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

/// An index (or exclusion constraint) build, or the constraints attached once a table's
/// builds are done.
#[derive(Clone, Debug)]
enum IndexWork {
    Build { table: usize, name: String, sql: String, step: String },
    Attach { table: usize },
}

/// A heap entry: the largest table's work first, attachments before anything.
struct Queued {
    weight: u64,
    seq: u64,
    work: IndexWork,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.weight, self.seq) == (other.weight, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.weight.cmp(&other.weight).then_with(|| other.seq.cmp(&self.seq))
    }
}

/// A key constraint attached to its prebuilt unique index.
#[derive(Clone, Debug)]
struct Attach {
    name: String,
    sql: String,
    step: String,
}

#[derive(Debug, Default)]
struct TableState {
    parts_left: usize,
    builds: Vec<IndexWork>,
    builds_left: usize,
    attach: Vec<Attach>,
}

enum DataTask {
    Part { table: usize, part: usize },
    LargeObjects { first: u32, last: u32 },
}

struct Sched {
    data: VecDeque<DataTask>,
    heap: BinaryHeap<Queued>,
    tables: Vec<TableState>,
    /// Builds and attachments not finished, including those of tables still copying.
    index_pending: usize,
    seq: u64,
    first_index_at: Option<Instant>,
    data_done_at: Option<Instant>,
    index_seconds: f64,
}

impl Sched {
    fn push(&mut self, weight: u64, work: IndexWork) {
        self.seq += 1;
        self.heap.push(Queued { weight, seq: self.seq, work });
    }

    /// Queues a table's builds once its rows are in (or its attachments when no build is left).
    fn release(&mut self, table: usize, weight: u64) {
        let builds = std::mem::take(&mut self.tables[table].builds);
        if builds.is_empty() {
            if !self.tables[table].attach.is_empty() {
                self.push(u64::MAX, IndexWork::Attach { table });
            }
            return;
        }
        for work in builds {
            self.push(weight, work);
        }
    }
}

/// Everything the copy and index workers share.
struct Ctx<'a> {
    req: &'a Request,
    plan: &'a DatabasePlan,
    snapshot: &'a str,
    tracker: Arc<Tracker>,
    sched: Mutex<Sched>,
    notify: Notify,
    maintenance_work_mem: u64,
}

impl Ctx<'_> {
    fn sched(&self) -> MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn part_step(table: &crate::plan::TablePlan, part: usize) -> String {
    format!("data:{}:{}/{}", table.display(), part + 1, table.parts.len())
}

async fn copy_worker(ctx: &Ctx<'_>) -> Result<()> {
    let source = Db::connect(&ctx.req.source, &ctx.plan.source).await?;
    copy::enter_snapshot(&source, ctx.snapshot).await?;
    let target = Db::connect(&ctx.req.target, &ctx.plan.target).await?;
    target.batch("tune the copy session", "set synchronous_commit = off").await?;
    loop {
        let task = ctx.sched().data.pop_front();
        let Some(task) = task else { break };
        match task {
            DataTask::Part { table, part } => {
                let t = &ctx.plan.tables[table];
                let display = t.display();
                let started = Instant::now();
                let estimate = t.bytes / t.parts.len().max(1) as u64;
                let counter = ctx.tracker.part_started(&display, part + 1, t.parts.len(), estimate);
                let result = copy::copy_part(&source, &target, t, &t.parts[part], &part_step(t, part), &counter).await;
                let rows = result.as_ref().ok().copied();
                ctx.tracker.part_finished(&display, part + 1, t.parts.len(), rows, started.elapsed().as_secs_f64());
                result?;
                let mut sched = ctx.sched();
                sched.tables[table].parts_left -= 1;
                if sched.tables[table].parts_left == 0 {
                    ctx.tracker.table_done();
                    sched.release(table, t.bytes);
                    drop(sched);
                    ctx.notify.notify_waiters();
                }
            }
            DataTask::LargeObjects { first, last } => {
                let label = "large objects".to_owned();
                let started = Instant::now();
                let counter = ctx.tracker.part_started(&label, 1, 1, 0);
                let step = format!("lo:{first}-{last}");
                let result = copy::copy_large_objects(
                    &source,
                    &target,
                    first,
                    last,
                    ctx.req.options.no_owner,
                    ctx.req.options.no_acl,
                    &step,
                    &counter,
                )
                .await;
                ctx.tracker.part_finished(&label, 1, 1, None, started.elapsed().as_secs_f64());
                result?;
            }
        }
    }
    source.batch("leave the copy snapshot", "commit").await
}

async fn index_worker(ctx: &Ctx<'_>) -> Result<()> {
    let target = Db::connect(&ctx.req.target, &ctx.plan.target).await?;
    target
        .batch(
            "tune the index session",
            &format!(
                "set maintenance_work_mem = '{}kB'; set max_parallel_maintenance_workers = 0; set synchronous_commit = off",
                ctx.maintenance_work_mem / 1024
            ),
        )
        .await?;
    loop {
        let notified = ctx.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = {
            let mut sched = ctx.sched();
            match sched.heap.pop() {
                Some(q) => {
                    sched.first_index_at.get_or_insert_with(Instant::now);
                    Some(q.work)
                }
                None if sched.index_pending == 0 => return Ok(()),
                None => None,
            }
        };
        let Some(work) = next else {
            notified.await;
            continue;
        };
        match work {
            IndexWork::Build { table, name, sql, step } => {
                let started = Instant::now();
                let t = &ctx.plan.tables[table];
                marks::run_step(&target, &step, &format!("build {name} on {}", t.display()), &sql).await?;
                let seconds = started.elapsed().as_secs_f64();
                ctx.tracker.index_done(&t.display(), &name, seconds);
                let mut sched = ctx.sched();
                sched.index_seconds += seconds;
                sched.index_pending -= 1;
                sched.tables[table].builds_left -= 1;
                if sched.tables[table].builds_left == 0 && !sched.tables[table].attach.is_empty() {
                    sched.push(u64::MAX, IndexWork::Attach { table });
                }
            }
            IndexWork::Attach { table } => {
                let attach = std::mem::take(&mut ctx.sched().tables[table].attach);
                let t = &ctx.plan.tables[table];
                for a in &attach {
                    marks::run_step(&target, &a.step, &format!("add constraint {} on {}", a.name, t.display()), &a.sql)
                        .await?;
                }
                ctx.sched().index_pending -= 1;
            }
        }
        ctx.notify.notify_waiters();
    }
}

/// Post-data split in two: what barge schedules itself and the rest, in pg_dump's order.
struct PostData<'a> {
    /// Per plan table: index builds and key constraints.
    tables: Vec<(Vec<IndexWork>, Vec<Attach>)>,
    /// Entries to run in order, with their SQL (foreign keys rewritten NOT VALID).
    rest: Vec<(&'a Entry, String)>,
    /// Foreign keys to validate afterwards: (step, sql, label).
    validations: Vec<(String, String, String)>,
}

async fn classify<'a>(
    source: &Db,
    plan: &DatabasePlan,
    post: &'a crate::script::Script,
    schema_only_matviews: &HashSet<(String, String)>,
) -> Result<PostData<'a>> {
    let table_index: HashMap<(String, String), usize> =
        plan.tables.iter().enumerate().map(|(i, t)| ((t.schema.clone(), t.name.clone()), i)).collect();
    let headers: HashSet<(&str, &str, &str)> =
        post.entries.iter().map(|e| (e.kind.as_str(), e.schema.as_str(), e.name.as_str())).collect();
    let mut taken: HashSet<(String, String, String)> = HashSet::new();
    let mut tables: Vec<(Vec<IndexWork>, Vec<Attach>)> = vec![(Vec::new(), Vec::new()); plan.tables.len()];
    for index in catalog::indexes(source).await? {
        let Some(&t) = table_index.get(&(index.schema.clone(), index.table_name.clone())) else {
            continue;
        };
        let table = &plan.tables[t];
        match (index.contype, &index.conname) {
            (None, _) => {
                if !headers.contains(&("INDEX", index.schema.as_str(), index.name.as_str())) {
                    continue;
                }
                taken.insert(("INDEX".into(), index.schema.clone(), index.name.clone()));
                tables[t].0.push(IndexWork::Build {
                    table: t,
                    name: index.name.clone(),
                    step: format!("index:{}.{}", index.schema, index.name),
                    sql: index.indexdef.clone(),
                });
            }
            (Some(kind), Some(conname)) => {
                let tag = format!("{} {}", index.table_name, conname);
                if !headers.contains(&("CONSTRAINT", index.schema.as_str(), tag.as_str())) {
                    continue;
                }
                taken.insert(("CONSTRAINT".into(), index.schema.clone(), tag));
                let step = format!("constraint:{}.{}.{}", index.schema, index.table_name, conname);
                if kind == 'x' {
                    let condef = index.condef.clone().unwrap_or_default();
                    tables[t].0.push(IndexWork::Build {
                        table: t,
                        name: conname.clone(),
                        step,
                        sql: format!(
                            "alter table only {} add constraint {} {condef}",
                            table.qualified(),
                            ident::quote(conname)
                        ),
                    });
                } else {
                    tables[t].0.push(IndexWork::Build {
                        table: t,
                        name: conname.clone(),
                        step: format!("index:{}.{}", index.schema, index.name),
                        sql: index.indexdef.clone(),
                    });
                    let deferral = match (index.deferrable, index.deferred) {
                        (false, _) => "",
                        (true, false) => " deferrable initially immediate",
                        (true, true) => " deferrable initially deferred",
                    };
                    tables[t].1.push(Attach {
                        name: conname.clone(),
                        step,
                        sql: format!(
                            "alter table only {} add constraint {} {} using index {}{deferral}",
                            table.qualified(),
                            ident::quote(conname),
                            if kind == 'p' { "primary key" } else { "unique" },
                            ident::quote(&index.name)
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    let relations: HashMap<u32, catalog::Relation> =
        catalog::relations(source).await?.into_iter().map(|r| (r.oid, r)).collect();
    let excluded: HashSet<(&str, &str)> =
        plan.excluded_relations.iter().map(|(s, n)| (s.as_str(), n.as_str())).collect();
    let excluded_schemas: HashSet<&str> = plan.excluded_schemas.iter().map(String::as_str).collect();
    let mut fk_sql: HashMap<(String, String), Option<(String, Option<String>)>> = HashMap::new();
    let mut validations = Vec::new();
    for fk in catalog::foreign_keys(source).await? {
        let (Some(table), Some(referenced)) = (relations.get(&fk.table_oid), relations.get(&fk.ref_oid)) else {
            continue;
        };
        let tag = format!("{} {}", fk.table_name, fk.name);
        let ref_left_out = excluded.contains(&(referenced.schema.as_str(), referenced.name.as_str()))
            || excluded_schemas.contains(referenced.schema.as_str());
        if ref_left_out {
            fk_sql.insert((fk.schema.clone(), tag), None);
            continue;
        }
        if table.kind != 'r' || !fk.validated {
            continue;
        }
        let qualified = ident::qualified(&fk.schema, &fk.table_name);
        let add =
            format!("alter table only {qualified} add constraint {} {} not valid;", ident::quote(&fk.name), fk.def);
        let validate = format!("alter table {qualified} validate constraint {}", ident::quote(&fk.name));
        let step = format!("validate:{}.{}.{}", fk.schema, fk.table_name, fk.name);
        validations.push((step, validate.clone(), format!("{}.{}", fk.schema, fk.name)));
        fk_sql.insert((fk.schema.clone(), tag), Some((add, Some(validate))));
    }
    let mut rest = Vec::new();
    for entry in &post.entries {
        if taken.contains(&(entry.kind.clone(), entry.schema.clone(), entry.name.clone())) {
            continue;
        }
        if entry.kind == "MATERIALIZED VIEW DATA"
            && schema_only_matviews.contains(&(entry.schema.clone(), entry.name.clone()))
        {
            continue;
        }
        if entry.kind == "FK CONSTRAINT" {
            match fk_sql.get(&(entry.schema.clone(), entry.name.clone())) {
                Some(None) => continue,
                Some(Some((add, _))) => {
                    rest.push((entry, add.clone()));
                    continue;
                }
                None => {}
            }
        }
        rest.push((entry, entry.sql.clone()));
    }
    Ok(PostData { tables, rest, validations })
}

/// Runs the rest of post-data in pg_dump's order, in transactions of up to 50 statements
/// (materialized view refreshes alone), each with its mark.
async fn run_post_data(
    target: &Db,
    session: &mut Session,
    rest: &[(&Entry, String)],
    marks: &Marks,
    tracker: &Tracker,
) -> Result<()> {
    let mut batches: Vec<&[(&Entry, String)]> = Vec::new();
    let mut start = 0;
    for (i, (entry, _)) in rest.iter().enumerate() {
        let heavy = entry.kind == "MATERIALIZED VIEW DATA";
        if heavy || i - start == 50 {
            if i > start {
                batches.push(&rest[start..i]);
            }
            start = i;
        }
        if heavy {
            batches.push(&rest[i..=i]);
            start = i + 1;
        }
    }
    if start < rest.len() {
        batches.push(&rest[start..]);
    }
    tracker.add_constraints_total(batches.len() as u64);
    for batch in batches {
        let text: String = batch.iter().map(|(_, sql)| sql.as_str()).collect::<Vec<_>>().join("\n");
        let step = format!("post:{}", marks::fingerprint(&text));
        if marks.is_done(&step) {
            tracker.constraint_done();
            continue;
        }
        target.batch("apply post-data", "begin").await?;
        let result = async {
            for (entry, sql) in batch {
                schema::run_entry(target, session, entry, sql).await?;
            }
            marks::record(target, &step, 0, 0).await?;
            target.batch("apply post-data", "commit").await
        }
        .await;
        if result.is_err() {
            let _ = target.batch("roll back", "rollback").await;
        }
        result?;
        tracker.constraint_done();
    }
    Ok(())
}

/// Validates foreign keys and analyzes tables on `jobs` connections.
async fn finish_in_parallel(
    req: &Request,
    plan: &DatabasePlan,
    validations: Vec<(String, String, String)>,
    marks: &Marks,
    tracker: &Tracker,
) -> Result<()> {
    let mut tasks: VecDeque<(Option<String>, String, String)> = VecDeque::new();
    for (step, sql, label) in validations {
        if !marks.is_done(&step) {
            tasks.push_back((Some(step), sql, format!("validate foreign key {label}")));
        }
    }
    for table in plan.tables.iter().filter(|t| !t.schema_only) {
        tasks.push_back((None, format!("analyze {}", table.qualified()), format!("analyze {}", table.display())));
    }
    tracker.add_constraints_total(tasks.len() as u64);
    let queue = Mutex::new(tasks);
    let workers = (0..req.options.index_jobs.max(1)).map(|_| async {
        let target = Db::connect(&req.target, &plan.target).await?;
        target
            .batch("tune the session", "set max_parallel_maintenance_workers = 0; set synchronous_commit = off")
            .await?;
        loop {
            let task = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            let Some((step, sql, label)) = task else {
                return Ok::<(), Error>(());
            };
            match step {
                Some(step) => marks::run_step(&target, &step, &label, &sql).await?,
                None => target.batch(&label, &sql).await?,
            }
            tracker.constraint_done();
        }
    });
    try_join_all(workers).await?;
    Ok(())
}

/// Sets every target sequence to its source position.
async fn copy_sequences(source: &Db, target: &Db) -> Result<u64> {
    let on_target: HashSet<(String, String)> = target
        .query(
            "list target sequences",
            "select n.nspname::text, c.relname::text from pg_catalog.pg_class c \
             join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
             where c.relkind = 'S' and n.nspname <> '_barge'",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut count = 0;
    for row in source.query("read sequence positions", include_str!("sql/sequences.sql"), &[]).await? {
        let (schema, name): (String, String) = (row.get("schema"), row.get("name"));
        if !on_target.contains(&(schema.clone(), name.clone())) {
            continue;
        }
        if !row.get::<_, bool>("readable") {
            return Err(Error::Invalid(format!(
                "the source user cannot read sequence {schema}.{name}: grant it SELECT on the sequence, or its position would be lost"
            )));
        }
        let qualified = ident::qualified(&schema, &name);
        let (value, called) = match row.get::<_, Option<i64>>("last_value") {
            Some(v) => (v, true),
            None => (row.get::<_, i64>("start_value"), false),
        };
        target
            .query_one(
                &format!("set sequence {schema}.{name}"),
                "select pg_catalog.setval($1::text::pg_catalog.regclass, $2, $3)",
                &[&qualified, &value, &called],
            )
            .await?;
        count += 1;
    }
    Ok(count)
}

async fn copy_database(
    req: &Request,
    tools: &PgTools,
    db: &DatabasePlan,
    tracker: Arc<Tracker>,
) -> Result<DatabaseReport> {
    let started = Instant::now();
    let mut timings = Timings::default();
    tracker.phase(Phase::Schema);
    // One snapshot for pg_dump and every COPY; held open until the rows are in.
    let holder = Db::connect(&req.source, &db.source).await?;
    holder.batch("open the copy snapshot", "begin isolation level repeatable read read only").await?;
    let snapshot: String =
        holder.query_one("export the copy snapshot", "select pg_catalog.pg_export_snapshot()", &[]).await?.get(0);
    let dump_options = DumpOptions {
        no_owner: req.options.no_owner,
        no_acl: req.options.no_acl,
        no_tablespaces: req.options.no_tablespaces,
        exclude_schemas: db.excluded_schemas.clone(),
        exclude_tables: db.excluded_relations.clone(),
    };
    let dump = schema::dump(tools, &req.source, &db.source, holder.tls(), &snapshot, &dump_options).await?;
    let target = prepare_target(req, db, &dump.pre, &holder).await?;
    let resume = matches!(db.action, TargetAction::Resume);
    let (marks, stored) = Marks::open(&target, db, resume).await?;
    let db = &stored;
    let mut session = Session::new(&target).await?;
    if !marks.is_done("pre-data") {
        let quoted = schema::quote_like_pg_dump(&holder, &db.source).await?;
        target.batch("apply pre-data", "begin").await?;
        let result = async {
            for entry in schema::database_property_entries(&dump.pre) {
                let sql = schema::rename_database(&entry.sql, &quoted, &db.target);
                schema::run_entry(&target, &mut session, entry, &sql).await?;
            }
            for entry in schema::object_entries(&dump.pre) {
                schema::run_entry(&target, &mut session, entry, &entry.sql).await?;
            }
            marks::record(&target, "pre-data", 0, 0).await?;
            target.batch("apply pre-data", "commit").await
        }
        .await;
        if result.is_err() {
            let _ = target.batch("roll back", "rollback").await;
        }
        result?;
    }
    timings.schema = started.elapsed().as_secs_f64();

    // Which tables are schema-only materialized views is a filter question.
    let filter = req.filter.compile()?;
    let schema_only_matviews: HashSet<(String, String)> = catalog::relations(&holder)
        .await?
        .into_iter()
        .filter(|r| r.kind == 'm' && filter.schema_only(&db.source, &r.schema, &r.name))
        .map(|r| (r.schema, r.name))
        .collect();
    let post = classify(&holder, db, &dump.post, &schema_only_matviews).await?;

    // Queue the work that is not done yet.
    let mut tables: Vec<TableState> = Vec::with_capacity(db.tables.len());
    let mut data = Vec::new();
    let (mut parts_total, mut parts_done, mut tables_done, mut indexes_total, mut indexes_done, mut bytes_done) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for (t, table) in db.tables.iter().enumerate() {
        let (builds, attach) = &post.tables[t];
        let builds: Vec<IndexWork> = builds
            .iter()
            .filter(|w| match w {
                IndexWork::Build { step, .. } => !marks.is_done(step),
                IndexWork::Attach { .. } => true,
            })
            .cloned()
            .collect();
        indexes_total += post.tables[t].0.len() as u64;
        indexes_done += (post.tables[t].0.len() - builds.len()) as u64;
        let attach: Vec<Attach> = attach.iter().filter(|a| !marks.is_done(&a.step)).cloned().collect();
        let mut parts_left = 0;
        for part in 0..table.parts.len() {
            parts_total += 1;
            if marks.is_done(&part_step(table, part)) {
                parts_done += 1;
                bytes_done += table.bytes / table.parts.len() as u64;
            } else {
                parts_left += 1;
                data.push((table.bytes / table.parts.len() as u64, t, part));
            }
        }
        if parts_left == 0 && !table.schema_only {
            tables_done += 1;
        }
        tables.push(TableState { parts_left, builds_left: builds.len(), builds, attach });
    }
    // Largest parts first, parts of a table together: one big table keeps every stream busy.
    data.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut queue: VecDeque<DataTask> =
        data.into_iter().map(|(_, table, part)| DataTask::Part { table, part }).collect();
    for &(first, last) in &db.large_object_batches {
        if !marks.is_done(&format!("lo:{first}-{last}")) {
            queue.push_back(DataTask::LargeObjects { first, last });
        }
    }
    let index_pending = tables.iter().map(|t| t.builds_left + usize::from(!t.attach.is_empty())).sum();
    let mut sched = Sched {
        data: queue,
        heap: BinaryHeap::new(),
        tables,
        index_pending,
        seq: 0,
        first_index_at: None,
        data_done_at: None,
        index_seconds: 0.0,
    };
    for (t, table) in db.tables.iter().enumerate() {
        if sched.tables[t].parts_left == 0 {
            sched.release(t, table.bytes);
        }
    }
    tracker.set_totals(
        db.tables.iter().filter(|t| !t.schema_only).map(|t| t.bytes).sum(),
        parts_total,
        db.tables.iter().filter(|t| !t.schema_only).count() as u64,
        indexes_total,
    );
    tracker.already_done(parts_done, tables_done, indexes_done, bytes_done);
    let ctx = Ctx {
        req,
        plan: db,
        snapshot: &snapshot,
        tracker: tracker.clone(),
        sched: Mutex::new(sched),
        notify: Notify::new(),
        maintenance_work_mem: maintenance_work_mem(req, &target).await?,
    };
    tracker.phase(Phase::Copying);
    let data_started = Instant::now();
    {
        let _ticks = tracker.tick(Duration::from_secs(1));
        let copiers = async {
            try_join_all((0..req.options.jobs.max(1)).map(|_| copy_worker(&ctx))).await?;
            ctx.sched().data_done_at = Some(Instant::now());
            // The rows are in; what remains are index builds.
            tracker.phase(Phase::Indexing);
            Ok::<(), Error>(())
        };
        let builders = try_join_all((0..req.options.index_jobs.max(1)).map(|_| index_worker(&ctx)));
        tokio::try_join!(copiers, builders)?;
    }
    let sched = ctx.sched.into_inner().unwrap_or_else(|e| e.into_inner());
    let data_done = sched.data_done_at.unwrap_or_else(Instant::now);
    timings.data = data_done.duration_since(data_started).as_secs_f64();
    timings.indexes_after_data = data_done.elapsed().as_secs_f64();
    timings.index_builds = sched.index_seconds;
    let mut report = DatabaseReport {
        source: db.source.clone(),
        target: db.target.clone(),
        resumed_steps: marks.count() as u64,
        ..DatabaseReport::default()
    };
    let progress = tracker.snapshot();
    report.rows = progress.rows_copied;
    report.bytes = progress.bytes_copied.saturating_sub(bytes_done);
    report.tables = progress.tables_done.saturating_sub(tables_done);
    report.indexes = progress.indexes_done.saturating_sub(indexes_done);
    report.large_objects = db.large_objects;
    // The rows are in: release the snapshot.
    holder.batch("close the copy snapshot", "commit").await?;

    tracker.phase(Phase::Constraints);
    let post_started = Instant::now();
    run_post_data(&target, &mut session, &post.rest, &marks, &tracker).await?;
    timings.post_data = post_started.elapsed().as_secs_f64();
    let other_started = Instant::now();
    report.sequences = copy_sequences(&holder, &target).await?;
    timings.other = other_started.elapsed().as_secs_f64();
    let constraints_started = Instant::now();
    finish_in_parallel(req, db, post.validations, &marks, &tracker).await?;
    timings.constraints = constraints_started.elapsed().as_secs_f64();
    marks::drop_all(&target).await?;
    timings.total = started.elapsed().as_secs_f64();
    tracker.phase(Phase::Done);
    tracker.emit(crate::progress::Event::DatabaseFinished { database: db.target.clone(), timings: timings.clone() });
    report.timings = timings;
    Ok(report)
}
