//! Structured progress: the engine emits [`Event`]s (serialisable, so the same events can
//! travel to the remote API later) to a [`ProgressSink`]; a [`Tracker`] keeps the counters
//! and emits a [`Progress`] snapshot every second with throughput and ETA.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// The phase a database copy is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Creating the database and the pre-data schema.
    Schema,
    /// Copying rows; each table's indexes, foreign keys and ANALYZE start as soon as the
    /// table is ready.
    Copying,
    /// Rows are in; the last indexes, foreign keys and ANALYZE are running.
    Indexing,
    /// The rest of post-data in pg_dump's order (triggers, rules, policies, materialized
    /// view refreshes, foreign keys to partitioned tables), then sequences.
    Constraints,
    /// Finished.
    Done,
}

/// One thing that happened.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A database copy entered a phase.
    Phase {
        /// Target database.
        database: String,
        /// The new phase.
        phase: Phase,
    },
    /// A table part started copying.
    TableStarted {
        /// Target database.
        database: String,
        /// `schema.table`.
        table: String,
        /// 1-based part number.
        part: usize,
        /// Parts of this table.
        parts: usize,
        /// Estimated bytes of the table.
        bytes_estimated: u64,
    },
    /// A table part committed on the target.
    TableFinished {
        /// Target database.
        database: String,
        /// `schema.table`.
        table: String,
        /// 1-based part number.
        part: usize,
        /// Parts of this table.
        parts: usize,
        /// Rows copied.
        rows: u64,
        /// COPY bytes relayed.
        bytes: u64,
        /// Wall time.
        seconds: f64,
    },
    /// An index or constraint build committed on the target.
    IndexFinished {
        /// Target database.
        database: String,
        /// `schema.table`.
        table: String,
        /// Index or constraint name.
        name: String,
        /// Wall time.
        seconds: f64,
    },
    /// A periodic snapshot of the counters.
    Progress(Progress),
    /// Something the user should know.
    Warning {
        /// What.
        message: String,
    },
    /// Where continuous replication stands (sync), every status round.
    Replication(ReplicationStatus),
    /// A database copy finished.
    DatabaseFinished {
        /// Target database.
        database: String,
        /// Where the time went.
        timings: Timings,
    },
}

/// A snapshot of a database copy's counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// Target database.
    pub database: String,
    /// Current phase.
    pub phase: Option<Phase>,
    /// COPY bytes relayed.
    pub bytes_copied: u64,
    /// Estimated bytes to copy (grows when a table turns out larger).
    pub bytes_estimated: u64,
    /// Rows committed.
    pub rows_copied: u64,
    /// Table parts committed.
    pub parts_done: u64,
    /// Table parts in the plan.
    pub parts_total: u64,
    /// Tables whose rows are all in.
    pub tables_done: u64,
    /// Tables with rows to copy.
    pub tables_total: u64,
    /// Indexes and key constraints built.
    pub indexes_done: u64,
    /// Indexes and key constraints to build.
    pub indexes_total: u64,
    /// Post-data steps and foreign key validations done.
    pub constraints_done: u64,
    /// Post-data steps and foreign key validations to do.
    pub constraints_total: u64,
    /// Recent COPY throughput.
    pub bytes_per_second: f64,
    /// Estimated seconds until the rows are in.
    pub eta_seconds: Option<f64>,
    /// Seconds since this database's copy started.
    pub elapsed_seconds: f64,
    /// Parts copying now.
    pub running: Vec<RunningPart>,
}

/// A part being copied.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunningPart {
    /// `schema.table`.
    pub table: String,
    /// 1-based part number.
    pub part: usize,
    /// Parts of this table.
    pub parts: usize,
    /// Bytes relayed so far.
    pub bytes: u64,
}

/// Where a database copy's wall time went, in seconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Timings {
    /// From the start until the pre-data schema is in (the database created, pg_dump read,
    /// every pre-data batch committed). Small tables' rows are copied meanwhile, so this
    /// overlaps `data`.
    pub schema: f64,
    /// From the first COPY to the last committed part (index builds, foreign keys and
    /// ANALYZE of finished tables run meanwhile).
    pub data: f64,
    /// From the last committed part until the last index, key constraint, foreign key and
    /// ANALYZE finished.
    pub after_data: f64,
    /// Busy time of index and key constraint builds, summed over the parallel builders.
    pub index_builds: f64,
    /// Busy time of adding and validating foreign keys, summed.
    pub foreign_keys: f64,
    /// Busy time of setting planner statistics (carried from the source, or ANALYZE) of
    /// tables copied in parts, summed; a small table's are in its COPY's transaction.
    pub analyze: f64,
    /// The rest of post-data in pg_dump's order (triggers, rules, policies, refreshes, …)
    /// and foreign keys to partitioned tables.
    pub post_data: f64,
    /// Setting the sequences, beside the rest of post-data.
    pub sequences: f64,
    /// The whole database copy.
    pub total: f64,
}

/// Receives events. Implemented for any `Fn(Event)`.
pub trait ProgressSink: Send + Sync {
    /// Called for each event, from any task; must not block for long.
    fn emit(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> ProgressSink for F {
    fn emit(&self, event: Event) {
        self(event)
    }
}

/// A sink that drops everything.
pub fn discard() -> Arc<dyn ProgressSink> {
    Arc::new(|_event: Event| {})
}

/// Counters of one database copy, shared by its workers.
pub(crate) struct Tracker {
    sink: Arc<dyn ProgressSink>,
    database: String,
    started: Instant,
    bytes_copied: AtomicU64,
    bytes_estimated: AtomicU64,
    rows_copied: AtomicU64,
    parts_done: AtomicU64,
    parts_total: AtomicU64,
    tables_done: AtomicU64,
    tables_total: AtomicU64,
    indexes_done: AtomicU64,
    indexes_total: AtomicU64,
    constraints_done: AtomicU64,
    constraints_total: AtomicU64,
    state: Mutex<TrackerState>,
}

#[derive(Default)]
struct TrackerState {
    phase: Option<Phase>,
    running: BTreeMap<(String, usize), RunningSlot>,
    rate: f64,
    last: Option<(Instant, u64)>,
}

struct RunningSlot {
    parts: usize,
    bytes: Arc<AtomicU64>,
}

impl Tracker {
    pub(crate) fn new(sink: Arc<dyn ProgressSink>, database: &str) -> Arc<Tracker> {
        Arc::new(Tracker {
            sink,
            database: database.to_owned(),
            started: Instant::now(),
            bytes_copied: AtomicU64::new(0),
            bytes_estimated: AtomicU64::new(0),
            rows_copied: AtomicU64::new(0),
            parts_done: AtomicU64::new(0),
            parts_total: AtomicU64::new(0),
            tables_done: AtomicU64::new(0),
            tables_total: AtomicU64::new(0),
            indexes_done: AtomicU64::new(0),
            indexes_total: AtomicU64::new(0),
            constraints_done: AtomicU64::new(0),
            constraints_total: AtomicU64::new(0),
            state: Mutex::new(TrackerState::default()),
        })
    }

    pub(crate) fn emit(&self, event: Event) {
        self.sink.emit(event);
    }

    pub(crate) fn phase(&self, phase: Phase) {
        if let Ok(mut state) = self.state.lock() {
            state.phase = Some(phase);
        }
        self.sink.emit(Event::Phase { database: self.database.clone(), phase });
    }

    pub(crate) fn set_totals(&self, bytes: u64, parts: u64, tables: u64, indexes: u64) {
        self.bytes_estimated.store(bytes, Ordering::Relaxed);
        self.parts_total.store(parts, Ordering::Relaxed);
        self.tables_total.store(tables, Ordering::Relaxed);
        self.indexes_total.store(indexes, Ordering::Relaxed);
    }

    pub(crate) fn add_constraints_total(&self, n: u64) {
        self.constraints_total.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn constraint_done(&self) {
        self.constraints_done.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn index_done(&self, table: &str, name: &str, seconds: f64) {
        self.indexes_done.fetch_add(1, Ordering::Relaxed);
        self.sink.emit(Event::IndexFinished {
            database: self.database.clone(),
            table: table.to_owned(),
            name: name.to_owned(),
            seconds,
        });
    }

    pub(crate) fn table_done(&self) {
        self.tables_done.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts work finished by an earlier, interrupted run.
    pub(crate) fn already_done(&self, parts: u64, tables: u64, indexes: u64, bytes: u64) {
        self.parts_done.fetch_add(parts, Ordering::Relaxed);
        self.tables_done.fetch_add(tables, Ordering::Relaxed);
        self.indexes_done.fetch_add(indexes, Ordering::Relaxed);
        self.bytes_copied.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Registers a part that starts copying; the returned counter takes its bytes.
    pub(crate) fn part_started(&self, table: &str, part: usize, parts: usize, bytes_estimated: u64) -> PartCounter<'_> {
        let bytes = Arc::new(AtomicU64::new(0));
        if let Ok(mut state) = self.state.lock() {
            state.running.insert((table.to_owned(), part), RunningSlot { parts, bytes: bytes.clone() });
        }
        self.sink.emit(Event::TableStarted {
            database: self.database.clone(),
            table: table.to_owned(),
            part,
            parts,
            bytes_estimated,
        });
        PartCounter { part: bytes, total: &self.bytes_copied }
    }

    /// A batch that is not a table part (large objects) committed or failed; reported like
    /// a part, with `objects` as its rows, but not counted as rows or parts.
    pub(crate) fn batch_finished(&self, label: &str, objects: Option<u64>, seconds: f64) {
        let bytes = self
            .state
            .lock()
            .ok()
            .and_then(|mut s| s.running.remove(&(label.to_owned(), 1)))
            .map(|slot| slot.bytes.load(Ordering::Relaxed))
            .unwrap_or(0);
        if let Some(rows) = objects {
            self.sink.emit(Event::TableFinished {
                database: self.database.clone(),
                table: label.to_owned(),
                part: 1,
                parts: 1,
                rows,
                bytes,
                seconds,
            });
        }
    }

    /// A part committed (or failed: `rows` is None).
    /// A part given up before its end, to be copied again later: its bytes leave the count.
    pub(crate) fn part_abandoned(&self, table: &str, part: usize) {
        let bytes = self.part_ended(table, part);
        self.bytes_copied.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Removes a running part; the bytes it relayed.
    fn part_ended(&self, table: &str, part: usize) -> u64 {
        self.state
            .lock()
            .ok()
            .and_then(|mut s| s.running.remove(&(table.to_owned(), part)))
            .map(|slot| slot.bytes.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    pub(crate) fn part_finished(&self, table: &str, part: usize, parts: usize, rows: Option<u64>, seconds: f64) {
        let bytes = self.part_ended(table, part);
        if let Some(rows) = rows {
            self.rows_copied.fetch_add(rows, Ordering::Relaxed);
            self.parts_done.fetch_add(1, Ordering::Relaxed);
            self.sink.emit(Event::TableFinished {
                database: self.database.clone(),
                table: table.to_owned(),
                part,
                parts,
                rows,
                bytes,
                seconds,
            });
        }
    }

    pub(crate) fn snapshot(&self) -> Progress {
        let copied = self.bytes_copied.load(Ordering::Relaxed);
        let mut estimated = self.bytes_estimated.load(Ordering::Relaxed);
        let parts_total = self.parts_total.load(Ordering::Relaxed);
        if copied > estimated || (parts_total > 0 && self.parts_done.load(Ordering::Relaxed) == parts_total) {
            // The estimate (on-disk size) was low: grow it rather than pass 100 %.
            estimated = copied;
            self.bytes_estimated.store(estimated, Ordering::Relaxed);
        }
        let now = Instant::now();
        let (phase, running, rate) = match self.state.lock() {
            Ok(mut state) => {
                if let Some((at, bytes)) = state.last {
                    let dt = now.duration_since(at).as_secs_f64();
                    if dt >= 0.5 {
                        let instant = copied.saturating_sub(bytes) as f64 / dt;
                        state.rate = if state.rate == 0.0 { instant } else { 0.7 * state.rate + 0.3 * instant };
                        state.last = Some((now, copied));
                    }
                } else {
                    state.last = Some((now, copied));
                }
                let running = state
                    .running
                    .iter()
                    .map(|((table, part), slot)| RunningPart {
                        table: table.clone(),
                        part: *part,
                        parts: slot.parts,
                        bytes: slot.bytes.load(Ordering::Relaxed),
                    })
                    .collect();
                (state.phase, running, state.rate)
            }
            Err(_) => (None, Vec::new(), 0.0),
        };
        let copying = matches!(phase, Some(Phase::Copying));
        let eta = (copying && rate > 0.0).then(|| estimated.saturating_sub(copied) as f64 / rate);
        Progress {
            database: self.database.clone(),
            phase,
            bytes_copied: copied,
            bytes_estimated: estimated,
            rows_copied: self.rows_copied.load(Ordering::Relaxed),
            parts_done: self.parts_done.load(Ordering::Relaxed),
            parts_total: self.parts_total.load(Ordering::Relaxed),
            tables_done: self.tables_done.load(Ordering::Relaxed),
            tables_total: self.tables_total.load(Ordering::Relaxed),
            indexes_done: self.indexes_done.load(Ordering::Relaxed),
            indexes_total: self.indexes_total.load(Ordering::Relaxed),
            constraints_done: self.constraints_done.load(Ordering::Relaxed),
            constraints_total: self.constraints_total.load(Ordering::Relaxed),
            bytes_per_second: rate,
            eta_seconds: eta,
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
            running,
        }
    }

    /// Emits a snapshot every `every` until the returned guard is dropped, and a last one then.
    pub(crate) fn tick(self: &Arc<Self>, every: Duration) -> TickGuard {
        let tracker = self.clone();
        let handle = tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                tracker.sink.emit(Event::Progress(tracker.snapshot()));
            }
        });
        TickGuard { handle, tracker: self.clone() }
    }
}

/// Adds relayed bytes to a part's and the database's counters.
pub(crate) struct PartCounter<'a> {
    part: Arc<AtomicU64>,
    total: &'a AtomicU64,
}

impl PartCounter<'_> {
    pub(crate) fn add(&self, n: u64) {
        self.part.fetch_add(n, Ordering::Relaxed);
        self.total.fetch_add(n, Ordering::Relaxed);
    }
}

/// Stops the periodic snapshots when dropped, after emitting a final one.
pub(crate) struct TickGuard {
    handle: tokio::task::JoinHandle<()>,
    tracker: Arc<Tracker>,
}

impl Drop for TickGuard {
    fn drop(&mut self) {
        self.handle.abort();
        self.tracker.sink.emit(Event::Progress(self.tracker.snapshot()));
    }
}

/// One database's replication, as found on the target.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DatabaseSync {
    /// Slot, publication and subscription name.
    pub name: String,
    /// Source database.
    pub source_database: String,
    /// Target database.
    pub target_database: String,
    /// Whether a subscriber is streaming from the slot now.
    pub slot_active: bool,
    /// The slot's WAL retention state (`reserved`, `extended`, `unreserved`, `lost`).
    pub wal_status: Option<String>,
    /// Whether the subscription is enabled.
    pub enabled: bool,
    /// Apply workers running for it on the target.
    pub workers: u64,
    /// WAL the target has not confirmed yet, in bytes.
    pub lag_bytes: u64,
    /// Replay lag the source measured, in seconds (0 when caught up).
    pub lag_seconds: Option<f64>,
    /// Tables in the subscription.
    pub tables: u64,
    /// Tables not in the `ready` state, with their state letter.
    pub tables_not_ready: Vec<String>,
    /// Apply errors the target counted (PostgreSQL 15+).
    pub apply_errors: Option<u64>,
    /// Source objects whose structure changed since the copy's snapshot.
    pub schema_changes: Vec<String>,
    /// Rows inserted, updated or deleted in the target database so far (for rates).
    pub applied_rows: u64,
    /// The slot's confirmed position, in bytes since 0/0 (for rates).
    pub confirmed_bytes: u64,
    /// WAL the slot keeps on the source's disk (from its restart position to the source's
    /// current one), in bytes.
    #[serde(default)]
    pub retained_bytes: u64,
    /// WAL the source may still write before it invalidates the slot
    /// (`max_slot_wal_keep_size`); none when it keeps WAL for slots without limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_wal_bytes: Option<u64>,
    /// The source's `max_slot_wal_keep_size`, in bytes; none when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_limit_bytes: Option<u64>,
    /// Whether the slot survives a failover of the source to a standby that synchronizes
    /// slots (PostgreSQL 17+; none on older sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<bool>,
    /// Why the source invalidated the slot (`wal_removed`, …): the target can no longer
    /// catch up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalidated: Option<String>,
}

impl DatabaseSync {
    /// Whether the subscription was paused (disabled) on purpose or by `barge sync pause`.
    pub fn paused(&self) -> bool {
        !self.enabled
    }
}

/// Where replication stands, over every database.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReplicationStatus {
    /// Per database.
    pub databases: Vec<DatabaseSync>,
    /// The largest lag, in bytes.
    pub lag_bytes: u64,
    /// The largest lag, in seconds, when measured.
    pub lag_seconds: Option<f64>,
    /// Rows applied per second on the target since the previous status.
    pub apply_rows_per_second: Option<f64>,
    /// WAL confirmed per second since the previous status.
    pub apply_bytes_per_second: Option<f64>,
    /// Changed source objects over every database (`db: schema.table (what)`).
    pub schema_changes: Vec<String>,
    /// The most WAL any of the slots keeps on the source, in bytes.
    #[serde(default)]
    pub retained_bytes: u64,
    /// How fast that grows, in bytes per second since the previous status (negative when
    /// the target caught up and the source recycled WAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_bytes_per_second: Option<f64>,
    /// What the WAL guard says (the thresholds the sync was started with): empty when
    /// retention is below them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wal_alerts: Vec<String>,
    /// Whether a slot keeps more WAL than the sync's `--wal-limit`: the guard acts on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wal_limit_reached: bool,
}

impl ReplicationStatus {
    /// Rates from an earlier status of the same replication, `seconds` ago.
    pub fn with_rates(mut self, earlier: &ReplicationStatus, seconds: f64) -> ReplicationStatus {
        if seconds > 0.0 && earlier.databases.len() == self.databases.len() {
            let sum = |s: &ReplicationStatus, f: fn(&DatabaseSync) -> u64| s.databases.iter().map(f).sum::<u64>();
            let rows = sum(&self, |d| d.applied_rows).saturating_sub(sum(earlier, |d| d.applied_rows));
            let bytes = sum(&self, |d| d.confirmed_bytes).saturating_sub(sum(earlier, |d| d.confirmed_bytes));
            self.apply_rows_per_second = Some(rows as f64 / seconds);
            self.apply_bytes_per_second = Some(bytes as f64 / seconds);
            self.retained_bytes_per_second =
                Some((self.retained_bytes as f64 - earlier.retained_bytes as f64) / seconds);
        }
        self
    }

    /// Whether every subscription is enabled with its worker and its slot streams.
    pub fn streaming(&self) -> bool {
        !self.databases.is_empty() && self.databases.iter().all(|d| d.enabled && d.slot_active)
    }

    /// Whether every subscription was paused (`barge sync pause`).
    pub fn paused(&self) -> bool {
        !self.databases.is_empty() && self.databases.iter().all(DatabaseSync::paused)
    }

    /// The slots the source invalidated, named with the reason.
    pub fn invalidated(&self) -> Vec<String> {
        self.databases.iter().filter_map(|d| d.invalidated.as_ref().map(|why| format!("{} ({why})", d.name))).collect()
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let seconds = self.lag_seconds.map_or("–".into(), |s| format!("{s:.1} s"));
        let rate = self.apply_rows_per_second.map_or(String::new(), |r| format!(", applying {r:.0} rows/s"));
        let tables: u64 = self.databases.iter().map(|d| d.tables).sum();
        let state = if self.paused() { "paused" } else { "streaming" };
        format!(
            "{} database(s), {tables} table(s) {state}; lag {} / {seconds}{rate}; the source keeps {} of WAL for it",
            self.databases.len(),
            crate::human::human_bytes(self.lag_bytes),
            crate::human::human_bytes(self.retained_bytes)
        )
    }
}
