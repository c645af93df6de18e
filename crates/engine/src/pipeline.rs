//! The copy pipeline of one database: COPY streams take table parts (largest first, a split
//! table's parts together, so one huge table keeps every stream busy) and large-object
//! batches; index workers take whatever is ready, largest first:
//!
//! - a table's index builds, as soon as its last part committed;
//! - its key constraints, attached once its builds are done (then the table is *indexed*);
//! - its `ANALYZE`, once indexed;
//! - its foreign keys, one at a time, once it is analyzed and the referenced table indexed:
//!   `ADD CONSTRAINT … NOT VALID`, then `VALIDATE CONSTRAINT` (a lighter lock, so several
//!   validations against the same referenced table run side by side).
//!
//! Every step commits with its progress mark; steps marked by an earlier run are skipped.
//!
//! The pipeline starts while pre-data is still going in: a table part waits in its *gate*
//! until the pre-data batches that create and change its table have committed
//! ([`crate::gates`]). Until all of pre-data is in, the sessions wait at most
//! [`gates::LOCK_WAIT`] for a lock; a step that gives up is taken again after pre-data.

use std::{
    collections::BinaryHeap,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use futures_util::future::try_join_all;
use tokio::sync::{Notify, watch};

use crate::{
    db::Db,
    error::{Error, Result},
    gates,
    marks::{self, Marks},
    plan::{DatabasePlan, TablePlan},
    postdata::{ForeignKey, TableWork},
    progress::{Phase, Tracker},
    request::Request,
    rows, sqlstate,
    stats::{self, Statistics, StatsDone, TableStats},
};

/// Something an index worker can do.
#[derive(Clone, Copy, Debug)]
enum Work {
    Build { table: usize, build: usize },
    Attach { table: usize },
    Analyze { table: usize },
    ForeignKey { fk: usize },
}

/// A heap entry: larger work first (longest-first keeps the tail short); ties in queue order.
struct Queued {
    weight: u64,
    seq: u64,
    work: Work,
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

#[derive(Debug, Default)]
struct TableState {
    parts_left: usize,
    /// Builds not done yet, queued when the rows are in.
    builds: Vec<usize>,
    builds_left: usize,
    /// Key constraints not attached yet.
    attach: Vec<usize>,
    indexed: bool,
    analyzed: bool,
    /// Foreign keys of this table not started yet.
    fks: Vec<usize>,
    fk_running: bool,
    /// Rows copied in this run, and whether that is all of them (no part was copied before).
    rows: u64,
    rows_known: bool,
    /// The source's statistics of a table copied in parts, read when its last part is in,
    /// waiting for its `ANALYZE` step.
    carried: Option<TableStats>,
}

enum DataTask {
    Part { table: usize, part: usize },
    LargeObjects { first: u32, last: u32 },
}

/// The copy tasks: ready ones in the order they are taken, the others behind their gates.
#[derive(Default)]
struct DataQueue {
    /// Every task, in the order the streams take them.
    tasks: Vec<Option<DataTask>>,
    /// Positions of the ready tasks, first taken first.
    ready: BinaryHeap<std::cmp::Reverse<usize>>,
    /// Per gate (pre-data batches committed), the positions of the tasks it holds.
    gated: Vec<Vec<usize>>,
    /// Gates opened so far.
    open: usize,
}

impl DataQueue {
    /// Queues `task`, to be taken once `gate` batches have committed.
    fn push(&mut self, task: DataTask, gate: usize) {
        let at = self.tasks.len();
        self.tasks.push(Some(task));
        if gate <= self.open {
            self.ready.push(std::cmp::Reverse(at));
        } else {
            if self.gated.len() <= gate {
                self.gated.resize_with(gate + 1, Vec::new);
            }
            self.gated[gate].push(at);
        }
    }

    /// Makes ready what `committed` batches release.
    fn open_to(&mut self, committed: usize) {
        while self.open < committed {
            self.open += 1;
            if let Some(released) = self.gated.get_mut(self.open) {
                self.ready.extend(std::mem::take(released).into_iter().map(std::cmp::Reverse));
            }
        }
    }

    fn pop(&mut self) -> Option<DataTask> {
        let std::cmp::Reverse(at) = self.ready.pop()?;
        self.tasks[at].take()
    }
}

/// What the COPY streams and index workers of one database take from, and what they did:
/// the table parts and large-object batches to copy, the index work ready (a heap, heaviest
/// first), each table's state, and the foreign keys waiting for a referenced table.
struct WorkQueues {
    data: DataQueue,
    /// Pre-data batches there are, and whether all have committed.
    batches: usize,
    schema_done: bool,
    /// Index work that gave up a lock while pre-data ran, queued again when it is done.
    deferred: Vec<Work>,
    /// Per gate, the tables with no rows to copy (schema-only, or copied by an earlier run)
    /// whose index work starts when it opens; and the gates opened for them so far.
    waiting_tables: Vec<Vec<usize>>,
    tables_open: usize,
    heap: BinaryHeap<Queued>,
    tables: Vec<TableState>,
    /// Referenced table → foreign keys waiting for it.
    waiting_on: Vec<Vec<usize>>,
    /// Index-worker work not finished, including work of tables still copying.
    pending: usize,
    seq: u64,
    data_done_at: Option<Instant>,
    build_seconds: f64,
    fk_seconds: f64,
    analyze_seconds: f64,
    statistics_carried: u64,
    analyzed: u64,
}

/// Weights: attachments unblock the most and take no time; then long work first.
fn weight(plan: &DatabasePlan, work: Work, fks: &[ForeignKey]) -> u64 {
    match work {
        Work::Attach { .. } => u64::MAX,
        Work::Build { table, .. } => plan.tables[table].bytes,
        Work::ForeignKey { fk } => plan.tables[fks[fk].child].bytes,
        Work::Analyze { table } => plan.tables[table].bytes / 8,
    }
}

impl WorkQueues {
    /// Queues with `data` to copy and `tables`' states, `pending` index work to do, before
    /// any of `batches` pre-data batches has committed.
    fn new(data: DataQueue, tables: Vec<TableState>, pending: usize, batches: usize) -> WorkQueues {
        WorkQueues {
            data,
            batches,
            schema_done: false,
            deferred: Vec::new(),
            waiting_tables: vec![Vec::new(); batches + 1],
            tables_open: 0,
            heap: BinaryHeap::new(),
            waiting_on: vec![Vec::new(); tables.len()],
            tables,
            pending,
            seq: 0,
            data_done_at: None,
            build_seconds: 0.0,
            fk_seconds: 0.0,
            analyze_seconds: 0.0,
            statistics_carried: 0,
            analyzed: 0,
        }
    }

    /// Opens the gates `committed` pre-data batches release; once all have, the deferred
    /// index work is queued again.
    /// Whether index work was queued.
    fn schema_progress(&mut self, plan: &DatabasePlan, fks: &[ForeignKey], committed: usize) -> bool {
        let committed = committed.min(self.batches);
        self.data.open_to(committed);
        let mut queued = false;
        while self.tables_open < committed {
            self.tables_open += 1;
            let tables = self.waiting_tables.get_mut(self.tables_open).map(std::mem::take).unwrap_or_default();
            queued |= !tables.is_empty();
            for table in tables {
                self.release(plan, fks, table);
            }
        }
        if committed < self.batches || self.schema_done {
            return queued;
        }
        self.schema_done = true;
        let deferred = std::mem::take(&mut self.deferred);
        queued |= !deferred.is_empty();
        for work in deferred {
            self.push(plan, fks, work);
        }
        queued
    }

    fn push(&mut self, plan: &DatabasePlan, fks: &[ForeignKey], work: Work) {
        self.seq += 1;
        self.heap.push(Queued { weight: weight(plan, work, fks), seq: self.seq, work });
    }

    /// A table's rows are all in: queue its builds.
    fn release(&mut self, plan: &DatabasePlan, fks: &[ForeignKey], table: usize) {
        let builds = std::mem::take(&mut self.tables[table].builds);
        if builds.is_empty() {
            self.builds_finished(plan, fks, table);
        }
        for build in builds {
            self.push(plan, fks, Work::Build { table, build });
        }
    }

    fn builds_finished(&mut self, plan: &DatabasePlan, fks: &[ForeignKey], table: usize) {
        if self.tables[table].attach.is_empty() {
            self.indexed(plan, fks, table);
        } else {
            self.push(plan, fks, Work::Attach { table });
        }
    }

    fn build_done(&mut self, plan: &DatabasePlan, fks: &[ForeignKey], table: usize) {
        self.pending -= 1;
        self.tables[table].builds_left -= 1;
        if self.tables[table].builds_left == 0 {
            self.builds_finished(plan, fks, table);
        }
    }

    /// A small table copied, indexed and analyzed in one transaction: only foreign keys are
    /// left, its own and those waiting for it.
    fn finished_whole(&mut self, plan: &DatabasePlan, fks: &[ForeignKey], table: usize) {
        let state = &mut self.tables[table];
        self.pending -= state.builds_left + usize::from(!state.attach.is_empty()) + 1;
        state.builds.clear();
        state.builds_left = 0;
        state.attach.clear();
        state.indexed = true;
        state.analyzed = true;
        for fk in std::mem::take(&mut self.waiting_on[table]) {
            self.try_fk(plan, fks, fks[fk].child);
        }
        self.try_fk(plan, fks, table);
    }

    fn indexed(&mut self, plan: &DatabasePlan, fks: &[ForeignKey], table: usize) {
        self.tables[table].indexed = true;
        self.push(plan, fks, Work::Analyze { table });
        for fk in std::mem::take(&mut self.waiting_on[table]) {
            self.try_fk(plan, fks, fks[fk].child);
        }
    }

    fn analyzed(&mut self, plan: &DatabasePlan, fks: &[ForeignKey], table: usize) {
        self.pending -= 1;
        self.tables[table].analyzed = true;
        self.try_fk(plan, fks, table);
    }

    fn fk_done(&mut self, plan: &DatabasePlan, fks: &[ForeignKey], child: usize) {
        self.pending -= 1;
        self.tables[child].fk_running = false;
        self.try_fk(plan, fks, child);
    }

    /// Starts the child's next foreign key whose referenced table is indexed; one at a time
    /// per child, since validations of one table would wait on each other's locks.
    fn try_fk(&mut self, plan: &DatabasePlan, fks: &[ForeignKey], child: usize) {
        let state = &self.tables[child];
        if state.fk_running || !state.analyzed {
            return;
        }
        let ready = state.fks.iter().position(|&fk| self.tables[fks[fk].parent].indexed);
        match ready {
            Some(i) => {
                let fk = self.tables[child].fks.remove(i);
                self.tables[child].fk_running = true;
                self.push(plan, fks, Work::ForeignKey { fk });
            }
            None => {
                for &fk in &self.tables[child].fks {
                    let parent = fks[fk].parent;
                    if !self.waiting_on[parent].contains(&fk) {
                        self.waiting_on[parent].push(fk);
                    }
                }
            }
        }
    }
}

/// What the pipeline measured.
pub(crate) struct Outcome {
    /// When the last part committed.
    pub data_done_at: Instant,
    /// Busy time of index builds, foreign keys and ANALYZE.
    pub build_seconds: f64,
    pub fk_seconds: f64,
    pub analyze_seconds: f64,
    /// Tables whose statistics came from the source, and tables analyzed.
    pub statistics_carried: u64,
    pub analyzed: u64,
    /// Tables, index builds and bytes an earlier run had finished.
    pub resumed: (u64, u64, u64),
}

/// Everything the workers share.
pub(crate) struct Pipeline<'a> {
    pub req: &'a Request,
    pub plan: &'a DatabasePlan,
    pub snapshot: &'a str,
    pub tracker: Arc<Tracker>,
    pub marks: &'a Marks,
    pub work: &'a [TableWork],
    pub fks: &'a [ForeignKey],
    pub maintenance_work_mem: u64,
    pub statistics: Statistics,
    /// Per plan table, the pre-data batches that must commit before it is copied.
    pub gates: &'a [usize],
    /// Pre-data batches committed so far, `batches` once all of pre-data is in.
    pub schema: watch::Receiver<usize>,
    pub batches: usize,
}

/// The progress mark of one part of a table's rows.
pub(crate) fn part_step(table: &TablePlan, part: usize) -> String {
    format!("data:{}:{}/{}", table.display(), part + 1, table.parts.len())
}

struct Running<'a> {
    p: &'a Pipeline<'a>,
    queues: Mutex<WorkQueues>,
    notify: Notify,
}

impl Running<'_> {
    fn queues(&self) -> MutexGuard<'_, WorkQueues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Pipeline<'_> {
    /// Runs the copy and the index work to the end.
    pub(crate) async fn run(&self) -> Result<Outcome> {
        let (plan, marks, fks) = (self.plan, self.marks, self.fks);
        let mut data = Vec::new();
        let mut tables = Vec::with_capacity(plan.tables.len());
        let (mut parts_total, mut parts_done, mut tables_done, mut builds_total, mut builds_done, mut bytes_done) =
            (0, 0, 0, 0, 0, 0);
        for (t, table) in plan.tables.iter().enumerate() {
            let work = &self.work[t];
            let builds: Vec<usize> = (0..work.builds.len()).filter(|&b| !marks.is_done(&work.builds[b].step)).collect();
            builds_total += work.builds.len() as u64;
            builds_done += (work.builds.len() - builds.len()) as u64;
            let attach: Vec<usize> = (0..work.attach.len()).filter(|&a| !marks.is_done(&work.attach[a].step)).collect();
            let mut parts_left = 0;
            for part in 0..table.parts.len() {
                parts_total += 1;
                let share = table.bytes / table.parts.len() as u64;
                if marks.is_done(&part_step(table, part)) {
                    parts_done += 1;
                    bytes_done += share;
                } else {
                    parts_left += 1;
                    data.push((share, t, part));
                }
            }
            if parts_left == 0 && !table.schema_only {
                tables_done += 1;
            }
            let fks: Vec<usize> =
                (0..fks.len()).filter(|&f| fks[f].child == t && !marks.is_done(&fks[f].validate.step)).collect();
            tables.push(TableState {
                parts_left,
                builds_left: builds.len(),
                builds,
                attach,
                fks,
                rows_known: parts_left == table.parts.len(),
                ..TableState::default()
            });
        }
        // Small tables that foreign keys reference first, so their children's keys can be
        // added while the rest copies instead of piling up after it; then the largest parts
        // first, a table's parts together.
        let mut small_parent = vec![false; plan.tables.len()];
        for fk in fks {
            small_parent[fk.parent] = plan.tables[fk.parent].bytes <= rows::SMALL_TABLE;
        }
        data.sort_by(|a, b| {
            (small_parent[b.1].cmp(&small_parent[a.1])).then(b.0.cmp(&a.0)).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
        });
        let batches = self.batches;
        let mut queue = DataQueue::default();
        for (_, table, part) in data {
            queue.push(DataTask::Part { table, part }, self.gates[table]);
        }
        for &(first, last) in &plan.large_object_batches {
            if !marks.is_done(&format!("lo:{first}-{last}")) {
                queue.push(DataTask::LargeObjects { first, last }, batches);
            }
        }
        let fk_count: usize = tables.iter().map(|t| t.fks.len()).sum();
        let pending =
            tables.iter().map(|t| t.builds_left + usize::from(!t.attach.is_empty()) + 1).sum::<usize>() + fk_count;
        let mut queues = WorkQueues::new(queue, tables, pending, batches);
        // A table with no rows left to copy gets its index work once its gate opens.
        for t in 0..plan.tables.len() {
            if queues.tables[t].parts_left == 0 {
                match self.gates[t] {
                    0 => queues.release(plan, fks, t),
                    gate => queues.waiting_tables[gate.min(batches)].push(t),
                }
            }
        }
        self.tracker.set_totals(
            plan.tables.iter().filter(|t| !t.schema_only).map(|t| t.bytes).sum(),
            parts_total,
            plan.tables.iter().filter(|t| !t.schema_only).count() as u64,
            builds_total,
        );
        self.tracker.add_constraints_total((plan.tables.len() + fk_count) as u64);
        self.tracker.already_done(parts_done, tables_done, builds_done, bytes_done);
        let running = Running { p: self, queues: Mutex::new(queues), notify: Notify::new() };
        let copiers = async {
            try_join_all((0..plan.copy_streams(&self.req.options)).map(|_| copy_worker(&running))).await?;
            running.queues().data_done_at = Some(Instant::now());
            self.tracker.phase(Phase::Indexing);
            Ok::<(), Error>(())
        };
        let builders = try_join_all((0..self.req.options.index_jobs_or_cpus()).map(|_| index_worker(&running)));
        tokio::try_join!(copiers, builders)?;
        let queues = running.queues.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok(Outcome {
            data_done_at: queues.data_done_at.unwrap_or_else(Instant::now),
            build_seconds: queues.build_seconds,
            fk_seconds: queues.fk_seconds,
            analyze_seconds: queues.analyze_seconds,
            statistics_carried: queues.statistics_carried,
            analyzed: queues.analyzed,
            resumed: (tables_done, builds_done, bytes_done),
        })
    }
}

/// The builds and key constraints of small table `table` not done yet, and its statistics.
fn small_table_steps<'a>(r: &Running<'a>, table: usize) -> rows::Then<'a> {
    let (work, display) = (&r.p.work[table], r.p.plan.tables[table].display());
    let queues = r.queues();
    let state = &queues.tables[table];
    let builds = state.builds.iter().map(|&b| (format!("build {} on {display}", work.builds[b].name), &work.builds[b]));
    let attach =
        state.attach.iter().map(|&a| (format!("add constraint {} on {display}", work.attach[a].name), &work.attach[a]));
    rows::Then {
        steps: builds.chain(attach).map(|(what, step)| (what, step.step.as_str(), step.sql.as_str())).collect(),
        analyze: r.p.statistics.for_table(&r.p.plan.tables[table]).is_some(),
    }
}

/// A pipeline session's lock waits: bounded by [`gates::LOCK_WAIT`] until all of pre-data
/// is in, so that a step colliding with the schema gives way to it.
struct LockWait {
    bounded: bool,
}

impl LockWait {
    async fn start(target: &Db, schema_done: bool) -> Result<LockWait> {
        if !schema_done {
            let sql = format!("set lock_timeout = '{}'", gates::LOCK_WAIT);
            target.batch("bound lock waits while the schema goes in", &sql).await?;
        }
        Ok(LockWait { bounded: !schema_done })
    }

    /// Before a step: lock waits unbounded again once pre-data is in. Whether the step runs
    /// bounded.
    async fn before(&mut self, target: &Db, schema_done: bool) -> Result<bool> {
        if self.bounded && schema_done {
            target.batch("unbound lock waits", "set lock_timeout = 0").await?;
            self.bounded = false;
        }
        Ok(self.bounded)
    }
}

/// Whether a step failed giving way to pre-data: it rolled back and can run again.
fn gave_way(e: &Error) -> bool {
    matches!(e.sqlstate(), Some(sqlstate::LOCK_NOT_AVAILABLE) | Some(sqlstate::DEADLOCK_DETECTED))
}

async fn copy_worker(r: &Running<'_>) -> Result<()> {
    let (p, plan) = (r.p, r.p.plan);
    let source = Db::connect(&p.req.source, &plan.source).await?;
    source.enter_snapshot(p.snapshot).await?;
    let target = Db::connect(&p.req.target, &plan.target).await?;
    target.batch("tune the copy session", "set synchronous_commit = off").await?;
    let mut schema = p.schema.clone();
    let done = *schema.borrow() >= p.batches;
    let mut wait = LockWait::start(&target, done).await?;
    let mut in_snapshot = crate::db::LockRelease::default();
    loop {
        let committed = *schema.borrow_and_update();
        let (task, schema_done, requeued) = {
            let mut queues = r.queues();
            let requeued = queues.schema_progress(plan, p.fks, committed);
            (queues.data.pop(), queues.schema_done, requeued)
        };
        if requeued {
            r.notify.notify_waiters();
        }
        let Some(task) = task else {
            // Nothing ready: done when the schema is, else wait for its next batch (a
            // schema that failed ends the copy with its error).
            if schema_done || schema.changed().await.is_err() {
                break;
            }
            continue;
        };
        let bounded = wait.before(&target, schema_done).await?;
        // Each COPY keeps its table's lock until the transaction ends.
        if in_snapshot.due() {
            source.reenter_snapshot(p.snapshot).await?;
        }
        match task {
            DataTask::Part { table, part } => {
                let t = &plan.tables[table];
                let display = t.display();
                let started = Instant::now();
                let counter = p.tracker.part_started(&display, part + 1, t.parts.len(), t.bytes / t.parts.len() as u64);
                // A small table copied whole gets its indexes, keys and statistics in the
                // same transaction: for it, separate steps cost more in round trips and
                // commits than the work itself.
                let whole = t.parts.len() == 1 && t.bytes <= rows::SMALL_TABLE;
                let then = if whole { small_table_steps(r, table) } else { rows::Then::default() };
                let then_analyzed = then.analyze;
                let result =
                    rows::copy_part(&source, &target, t, &t.parts[part], &part_step(t, part), &counter, &then).await;
                if let Err(e) = &result
                    && bounded
                    && gave_way(e)
                {
                    drop(counter);
                    p.tracker.part_abandoned(&display, part + 1);
                    let mut queues = r.queues();
                    let gate = queues.batches;
                    queues.data.push(DataTask::Part { table, part }, gate);
                    continue;
                }
                let rows = result.as_ref().ok().copied();
                p.tracker.part_finished(&display, part + 1, t.parts.len(), rows, started.elapsed().as_secs_f64());
                let copied = result?;
                let last = {
                    let mut queues = r.queues();
                    let state = &mut queues.tables[table];
                    state.parts_left -= 1;
                    state.rows += copied;
                    let last = state.parts_left == 0;
                    let read_stats = last && !whole && state.rows_known && p.statistics.carries(t);
                    if whole && then_analyzed {
                        queues.analyzed += 1;
                    }
                    last.then_some(read_stats)
                };
                let Some(read_stats) = last else { continue };
                p.tracker.table_done();
                // Read now, in the copy's snapshot, for the table's statistics step.
                let carried = if read_stats { Some(stats::read(&source, t).await?) } else { None };
                let mut queues = r.queues();
                queues.tables[table].carried = carried;
                if whole {
                    let builds = std::mem::take(&mut queues.tables[table].builds);
                    for &build in &builds {
                        p.tracker.index_done(&display, &p.work[table].builds[build].name, 0.0);
                    }
                    p.tracker.constraint_done();
                    queues.finished_whole(plan, p.fks, table);
                } else {
                    queues.release(plan, p.fks, table);
                }
                drop(queues);
                r.notify.notify_waiters();
            }
            DataTask::LargeObjects { first, last } => {
                let label = format!("large objects {first}..{last}");
                let started = Instant::now();
                let counter = p.tracker.part_started(&label, 1, 1, 0);
                let step = format!("lo:{first}-{last}");
                let result =
                    rows::copy_large_objects(&source, &target, (first, last), &p.req.options, &step, &counter).await;
                let objects = result.as_ref().ok().map(|c| c.objects);
                p.tracker.batch_finished(&label, objects, started.elapsed().as_secs_f64());
                result?;
            }
        }
    }
    source.batch("leave the copy snapshot", "commit").await
}

async fn index_worker(r: &Running<'_>) -> Result<()> {
    let (p, plan, fks) = (r.p, r.p.plan, r.p.fks);
    let target = Db::connect(&p.req.target, &plan.target).await?;
    // Parallelism comes from running builds, validations and ANALYZE side by side; parallel
    // workers inside one of them only add CPU on a machine the copy keeps busy (a foreign key
    // check with two parallel workers costs about three times the CPU for the same time).
    target
        .batch(
            "tune the index session",
            &format!(
                "set maintenance_work_mem = '{}kB'; set max_parallel_maintenance_workers = 0; \
                 set max_parallel_workers_per_gather = 0; set synchronous_commit = off",
                p.maintenance_work_mem / 1024
            ),
        )
        .await?;
    let done = r.queues().schema_done;
    let mut wait = LockWait::start(&target, done).await?;
    loop {
        let notified = r.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = {
            let mut queues = r.queues();
            match queues.heap.pop() {
                Some(q) => Some((q.work, queues.schema_done)),
                None if queues.pending == 0 => return Ok(()),
                None => None,
            }
        };
        let Some((work, schema_done)) = next else {
            notified.await;
            continue;
        };
        let bounded = wait.before(&target, schema_done).await?;
        match index_step(r, &target, work).await {
            Err(e) if bounded && gave_way(&e) && retryable(p, work) => {
                // Taken again once pre-data is in.
                let mut queues = r.queues();
                if queues.schema_done {
                    queues.push(plan, fks, work);
                } else {
                    queues.deferred.push(work);
                }
            }
            other => other?,
        }
        r.notify.notify_waiters();
    }
}

/// Whether `work` that failed can simply run again: a build, or a small table's foreign key
/// (added and checked in one step). Each commits alone with its mark, and leaves its table's
/// state as it was when it fails. Only these run beside pre-data: other work belongs to
/// tables that wait for all of it.
fn retryable(p: &Pipeline<'_>, work: Work) -> bool {
    match work {
        Work::Build { .. } => true,
        Work::ForeignKey { fk } => {
            let key = &p.fks[fk];
            p.plan.tables[key.child].bytes <= rows::SMALL_TABLE && !p.marks.is_done(&key.add.step)
        }
        Work::Attach { .. } | Work::Analyze { .. } => false,
    }
}

/// Runs one step of index work and records what it unblocks. A step that fails changed
/// nothing (each commits alone with its mark).
async fn index_step(r: &Running<'_>, target: &Db, work: Work) -> Result<()> {
    let (p, plan, fks) = (r.p, r.p.plan, r.p.fks);
    {
        let started = Instant::now();
        match work {
            Work::Build { table, build } => {
                let t = &plan.tables[table];
                let step = &p.work[table].builds[build];
                marks::run_step(target, &step.step, &format!("build {} on {}", step.name, t.display()), &step.sql)
                    .await?;
                let seconds = started.elapsed().as_secs_f64();
                p.tracker.index_done(&t.display(), &step.name, seconds);
                let mut queues = r.queues();
                queues.build_seconds += seconds;
                queues.build_done(plan, fks, table);
            }
            Work::Attach { table } => {
                let attach = std::mem::take(&mut r.queues().tables[table].attach);
                let t = &plan.tables[table];
                for a in attach {
                    let step = &p.work[table].attach[a];
                    let what = format!("add constraint {} on {}", step.name, t.display());
                    marks::run_step(target, &step.step, &what, &step.sql).await?;
                }
                let mut queues = r.queues();
                queues.pending -= 1;
                queues.indexed(plan, fks, table);
            }
            Work::Analyze { table } => {
                let t = &plan.tables[table];
                let (carried, rows) = {
                    let mut queues = r.queues();
                    (queues.tables[table].carried.take(), queues.tables[table].rows)
                };
                let done = match p.statistics.for_table(t) {
                    Some(how) => Some(stats::set(target, t, how, carried.as_ref(), rows).await?),
                    None => None,
                };
                p.tracker.constraint_done();
                let mut queues = r.queues();
                queues.analyze_seconds += started.elapsed().as_secs_f64();
                match done {
                    Some(StatsDone::Carried) => queues.statistics_carried += 1,
                    Some(StatsDone::Analyzed) => queues.analyzed += 1,
                    None => {}
                }
                queues.analyzed(plan, fks, table);
            }
            Work::ForeignKey { fk } => {
                let key = &fks[fk];
                let child = plan.tables[key.child].display();
                if plan.tables[key.child].bytes <= rows::SMALL_TABLE && !p.marks.is_done(&key.add.step) {
                    // A small table's key is checked as it is added: one step, not two.
                    let what = format!("add foreign key {} on {child}", key.add.name);
                    marks::run_step(target, &key.validate.step, &what, &key.add_valid).await?;
                } else {
                    if !p.marks.is_done(&key.add.step) {
                        let what = format!("add foreign key {} on {child}", key.add.name);
                        marks::run_step(target, &key.add.step, &what, &key.add.sql).await?;
                    }
                    let what = format!("validate foreign key {} on {child}", key.validate.name);
                    marks::run_step(target, &key.validate.step, &what, &key.validate.sql).await?;
                }
                p.tracker.constraint_done();
                let mut queues = r.queues();
                queues.fk_seconds += started.elapsed().as_secs_f64();
                queues.fk_done(plan, fks, key.child);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postdata::Step;
    use std::collections::VecDeque;

    fn step(name: &str) -> Step {
        Step { name: name.into(), sql: String::new(), step: name.into() }
    }

    fn plan(tables: usize) -> DatabasePlan {
        DatabasePlan::for_tests(
            (0..tables).map(|i| TablePlan::for_tests("public", &format!("t{i}"), 1000 * (i as u64 + 1))).collect(),
        )
    }

    #[test]
    fn work_waits_behind_its_gate_until_pre_data_commits_it() {
        // GIVEN two tables: t0's part behind gate 1, t1 (schema-only: no part) behind gate 2,
        // of 2 pre-data batches; and a foreign key's retry deferred while pre-data runs
        let plan = plan(2);
        let mut data = DataQueue::default();
        data.push(DataTask::Part { table: 0, part: 0 }, 1);
        let tables = (0..2).map(|_| TableState { builds: vec![0], builds_left: 1, ..TableState::default() }).collect();
        let mut queues = WorkQueues::new(data, tables, 10, 2);
        queues.deferred.push(Work::ForeignKey { fk: 0 });
        queues.waiting_tables[2].push(1);
        let fks = [ForeignKey { child: 0, parent: 1, add: step("a"), validate: step("a"), add_valid: String::new() }];
        // WHEN no batch has committed, nothing is ready
        assert!(!queues.schema_progress(&plan, &fks, 0));
        assert!(queues.data.pop().is_none() && queues.heap.is_empty());
        // WHEN the first commits, t0's part is ready, t1's builds and the key still wait
        assert!(!queues.schema_progress(&plan, &fks, 1));
        assert!(matches!(queues.data.pop(), Some(DataTask::Part { table: 0, .. })));
        assert!(queues.heap.is_empty() && !queues.schema_done);
        // THEN the second releases t1's index build and the deferred key
        assert!(queues.schema_progress(&plan, &fks, 2));
        assert!(queues.schema_done);
        let queued: Vec<Work> = queues.heap.iter().map(|q| q.work).collect();
        assert!(queued.iter().any(|w| matches!(w, Work::Build { table: 1, .. })), "{}", queued.len());
        assert!(queued.iter().any(|w| matches!(w, Work::ForeignKey { fk: 0 })));
    }

    #[test]
    fn a_small_table_finished_whole_leaves_only_foreign_keys() {
        // GIVEN t1 and t2 referencing t0; t0 and t1 copied whole with their index work, t2 not
        let plan = plan(3);
        let fk = |child, parent, name: &str| ForeignKey {
            child,
            parent,
            add: step(name),
            validate: step(name),
            add_valid: String::new(),
        };
        let fks = vec![fk(1, 0, "a"), fk(2, 0, "b")];
        let tables = (0..3)
            .map(|t| TableState {
                parts_left: 0,
                builds: vec![0, 1],
                builds_left: 2,
                attach: vec![0],
                fks: (0..fks.len()).filter(|&f| fks[f].child == t).collect(),
                ..TableState::default()
            })
            .collect();
        // per table: two builds, one attach, one ANALYZE; and two keys; no pre-data to wait for
        let mut queues = WorkQueues::new(DataQueue::default(), tables, 3 * 4 + 2, 0);
        queues.schema_progress(&plan, &fks, 0);
        // WHEN the child t1 finishes whole first: its key waits for t0
        queues.finished_whole(&plan, &fks, 1);
        assert!(queues.heap.is_empty() && queues.waiting_on[0] == [0]);
        // AND t0 finishes whole: t1's key is queued, nothing else
        queues.finished_whole(&plan, &fks, 0);
        let queued: Vec<Work> = queues.heap.iter().map(|q| q.work).collect();
        assert!(matches!(queued.as_slice(), [Work::ForeignKey { fk: 0 }]), "{}", queued.len());
        assert_eq!(queues.pending, 4 + 2, "t2's index work and both keys are left");
        // THEN t2, released the usual way, still goes through builds, attach and ANALYZE
        queues.release(&plan, &fks, 2);
        assert_eq!(queues.heap.iter().filter(|q| matches!(q.work, Work::Build { table: 2, .. })).count(), 2);
    }

    #[test]
    fn foreign_keys_wait_for_both_tables_and_run_one_at_a_time_per_table() {
        // GIVEN t0 referenced by two keys of t1 and one of t2; each table has one index build
        let plan = plan(3);
        let fk = |child, parent, name: &str| ForeignKey {
            child,
            parent,
            add: step(name),
            validate: step(name),
            add_valid: String::new(),
        };
        let fks = vec![fk(1, 0, "a"), fk(1, 0, "b"), fk(2, 0, "c")];
        let tables = (0..3)
            .map(|t| TableState {
                parts_left: 1,
                builds: vec![0],
                builds_left: 1,
                fks: (0..fks.len()).filter(|&f| fks[f].child == t).collect(),
                ..TableState::default()
            })
            .collect();
        let mut queues = WorkQueues::new(DataQueue::default(), tables, 3 + 3 + 3, 0);
        queues.schema_progress(&plan, &fks, 0);
        // WHEN the children's rows land first and the referenced table's last
        let mut order = Vec::new();
        let mut arrivals = VecDeque::from([1, 2, 0]);
        loop {
            let Some(q) = queues.heap.pop() else {
                match arrivals.pop_front() {
                    Some(t) => {
                        queues.tables[t].parts_left = 0;
                        queues.release(&plan, &fks, t);
                        continue;
                    }
                    None => break,
                }
            };
            // THEN at most one key per child is ever queued or running
            let queued_keys =
                queues.heap.iter().filter(|q| matches!(q.work, Work::ForeignKey { fk } if fks[fk].child == 1)).count();
            assert!(queued_keys <= 1);
            match q.work {
                Work::Build { table, .. } => {
                    order.push(format!("build t{table}"));
                    queues.build_done(&plan, &fks, table);
                }
                Work::Attach { table } => {
                    queues.pending -= 1;
                    queues.indexed(&plan, &fks, table);
                }
                Work::Analyze { table } => {
                    order.push(format!("analyze t{table}"));
                    queues.analyzed(&plan, &fks, table);
                }
                Work::ForeignKey { fk } => {
                    // AND a key runs only once its table is analyzed and the referenced one indexed
                    assert!(queues.tables[fks[fk].child].analyzed && queues.tables[fks[fk].parent].indexed);
                    order.push(format!("fk {}", fks[fk].add.name));
                    queues.fk_done(&plan, &fks, fks[fk].child);
                }
            }
        }
        assert_eq!(queues.pending, 0, "{order:?}");
        for key in ["fk a", "fk b", "fk c"] {
            assert!(order.contains(&key.to_owned()), "{order:?}");
        }
        let position = |s: &str| order.iter().position(|o| o == s).unwrap();
        assert!(position("build t0") < position("fk a"));
        assert!(position("analyze t1") < position("fk a"));
    }
}
