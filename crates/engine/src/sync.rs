//! Continuous replication after the copy (docs/pitfalls.md 12–13).
//!
//! Per database: a publication on the source for exactly the copied tables, then a logical
//! slot created over a replication connection with an exported snapshot, and the copy reads
//! in that snapshot; then a subscription on the target with `copy_data = false,
//! create_slot = false, slot_name = <the slot>`. The target's own apply worker streams the
//! changes from there, so barge is not in the data path: [`status`] reads lag from both
//! sides and compares the source's schema with the one copied, [`cutover`] waits for the
//! target to catch up, copies sequence positions, removes slot, subscription and
//! publication and verifies, [`stop`] removes them without cutting over. Anything that
//! fails or is cancelled on the way removes what it created on both sides: an orphaned
//! slot keeps WAL on the source until its disk is full.
//!
//! What barge created is named `barge_<id>_<n>` (slot, publication and subscription alike;
//! `<n>` counts the databases) and recorded in `_barge.sync` in each target database, in
//! the transaction that creates the subscription.

use std::{
    collections::{BTreeMap, HashSet},
    hash::{BuildHasher, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    catalog,
    conninfo::ConnInfo,
    db::Db,
    error::{Error, Result},
    filter::CompiledFilter,
    ident,
    init::{self, InitReport},
    login::{self, Login},
    plan::{self, DatabasePlan, Plan},
    progress::{Event, ProgressSink, Tracker},
    replication::ReplicationConn,
    request::Request,
    validate::{Check, human_bytes, list},
    verify::{self, VerifyReport},
};

/// What the one who started a sync asks of it while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Keep going.
    Run,
    /// Cut over as soon as the target streams (remote jobs).
    Cutover,
    /// Stop and remove everything barge created on both sides.
    Cancel,
    /// Stop watching: during the copy this removes what was created (a copy cannot resume
    /// without its snapshot); once streaming, replication goes on for a later run to find.
    Detach,
}

/// The receiving end of [`Signal`]s.
pub type Control = watch::Receiver<Signal>;

/// A control that never signals (the local CLI, which stops on Ctrl-C by dropping).
pub fn no_control() -> Control {
    let (tx, rx) = watch::channel(Signal::Run);
    // The receiver keeps the last value once the sender is gone.
    drop(tx);
    rx
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
        }
        self
    }

    /// Whether every subscription is enabled with its worker and its slot streams.
    pub fn streaming(&self) -> bool {
        !self.databases.is_empty() && self.databases.iter().all(|d| d.enabled && d.slot_active)
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let seconds = self.lag_seconds.map_or("–".into(), |s| format!("{s:.1} s"));
        let rate = self.apply_rows_per_second.map_or(String::new(), |r| format!(", applying {r:.0} rows/s"));
        let tables: u64 = self.databases.iter().map(|d| d.tables).sum();
        format!(
            "{} database(s), {tables} table(s) streaming; lag {} / {seconds}{rate}",
            self.databases.len(),
            human_bytes(self.lag_bytes)
        )
    }
}

/// What `init --sync` did: the copy, then replication set up.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SyncReport {
    /// The copy.
    pub init: InitReport,
    /// The replication created, one name per database.
    pub names: Vec<String>,
}

/// What a cutover did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CutoverReport {
    /// Per database: the name of the replication removed.
    pub names: Vec<String>,
    /// Sequences set from the source.
    pub sequences: u64,
    /// Seconds spent waiting for the target to catch up.
    pub catch_up_seconds: f64,
    /// The comparison after the switch.
    pub verify: VerifyReport,
}

/// What [`stop`] removed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StopReport {
    /// Each object removed (`subscription barge_x_0 in "shop"`).
    pub removed: Vec<String>,
}

/// The prefix of everything a sync with `id` creates.
fn prefix(id: &str) -> String {
    format!("barge_{id}_")
}

/// A fresh id: 10 random hex digits.
pub fn new_id() -> String {
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{:010x}", random & 0xff_ffff_ffff)
}

/// Checks a user-given id: it becomes part of object names.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty() && id.len() <= 40 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok { Ok(()) } else { Err(Error::Invalid(format!("sync id {id:?}: use 1 to 40 lower-case letters and digits"))) }
}

/// Logical replication prerequisites, as plan findings: they stop `init --sync` before it
/// changes anything, and `validate --sync` lists them. docs/pitfalls.md 13: `wal_level` is the
/// source's.
pub(crate) async fn preflight(req: &Request, databases: &[DatabasePlan], source: &Db, target: &Db) -> Vec<Check> {
    let mut checks = Vec::new();
    match source_settings(source).await {
        Ok((wal_level, replication, free_slots, free_senders)) => {
            checks.push(if wal_level == "logical" {
                Check::pass("source wal_level", "logical")
            } else {
                Check::fail(
                    "source wal_level",
                    format!("wal_level is {wal_level}; logical replication needs logical"),
                    Some("set wal_level = logical on the source and restart it (RDS/Aurora: rds.logical_replication = 1 in the parameter group)".into()),
                )
            });
            checks.push(if replication {
                Check::pass("source REPLICATION privilege", "the source user may replicate")
            } else {
                Check::fail(
                    "source REPLICATION privilege",
                    "the source user has neither REPLICATION nor rds_replication",
                    Some("ALTER ROLE <user> REPLICATION (RDS: GRANT rds_replication TO <user>)".into()),
                )
            });
            let needed = databases.len().max(1) as i32;
            let free = |n: i32, what: &str, setting: &str| {
                if n >= needed {
                    Check::pass(format!("source {what}"), format!("{n} free, {needed} needed"))
                } else {
                    Check::fail(
                        format!("source {what}"),
                        format!("{n} free, {needed} needed (one per database)"),
                        Some(format!("raise {setting} on the source (a restart), or drop unused ones")),
                    )
                }
            };
            checks.push(free(free_slots, "replication slots", "max_replication_slots"));
            checks.push(free(free_senders, "WAL senders", "max_wal_senders"));
        }
        Err(e) => checks.push(Check::fail("logical replication", e.to_string(), None)),
    }
    for db in databases {
        checks.extend(database_checks(req, db).await);
    }
    let probe_database = databases.first().map_or("postgres", |d| d.source.as_str());
    checks.extend(subscription_probe(req, target, probe_database).await);
    checks
}

async fn source_settings(source: &Db) -> Result<(String, bool, i32, i32)> {
    let has_rds_role = source
        .query_opt(
            "look for rds_replication",
            "select 1 from pg_catalog.pg_roles where rolname = 'rds_replication'",
            &[],
        )
        .await?
        .is_some();
    let rds = if has_rds_role { " or pg_catalog.pg_has_role(current_user, 'rds_replication', 'member')" } else { "" };
    let sql = format!(
        "select current_setting('wal_level'), \
           coalesce((select rolreplication or rolsuper from pg_catalog.pg_roles where rolname = current_user){rds}, false), \
           current_setting('max_replication_slots')::int - (select count(*) from pg_catalog.pg_replication_slots)::int, \
           current_setting('max_wal_senders')::int - (select count(*) from pg_catalog.pg_stat_replication)::int"
    );
    let row = source.query_one("read replication settings", &sql, &[]).await?;
    Ok((row.get(0), row.get(1), row.get(2), row.get(3)))
}

/// Per database: tables logical replication cannot follow, and whether the source user may
/// publish the tables.
async fn database_checks(req: &Request, db: &DatabasePlan) -> Vec<Check> {
    let mut checks = Vec::new();
    let source = match Db::connect(&req.source, &db.source).await {
        Ok(source) => source,
        Err(e) => return vec![Check::fail(format!("replication of \"{}\"", db.source), e.to_string(), None)],
    };
    let published: HashSet<(&str, &str)> =
        published_tables(db).iter().map(|t| (t.schema.as_str(), t.name.as_str())).collect();
    match source.query("list tables without a primary key", include_str!("sql/without_key.sql"), &[]).await {
        Ok(rows) => {
            let unidentified: Vec<String> = rows
                .iter()
                .filter(|r| !r.get::<_, bool>(2))
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                .filter(|(s, t)| published.contains(&(s.as_str(), t.as_str())))
                .map(|(s, t)| format!("{s}.{t}"))
                .collect();
            let name = format!("replica identity in \"{}\"", db.source);
            checks.push(if unidentified.is_empty() {
                Check::pass(name, "every replicated table has a primary key or a replica identity")
            } else if req.options.replica_identity_full {
                Check::warn(
                    name,
                    format!(
                        "{} table(s) without a primary key get REPLICA IDENTITY FULL on the source: {}",
                        unidentified.len(),
                        list(&unidentified)
                    ),
                    Some("their updates and deletes log the whole old row (more WAL) and are applied by scanning the target table".into()),
                )
            } else {
                Check::fail(
                    name,
                    format!(
                        "{} table(s) without a primary key or replica identity: {}",
                        unidentified.len(),
                        list(&unidentified)
                    ),
                    Some("their updates and deletes would not replicate: add primary keys, or run with --replica-identity-full (barge then sets REPLICA IDENTITY FULL on those source tables)".into()),
                )
            });
        }
        Err(e) => checks.push(Check::fail(format!("replica identity in \"{}\"", db.source), e.to_string(), None)),
    }
    let unlogged: Vec<String> = db.tables.iter().filter(|t| t.kind == "unlogged table").map(|t| t.display()).collect();
    if !unlogged.is_empty() {
        checks.push(Check::warn(
            format!("unlogged tables in \"{}\"", db.source),
            format!("copied once, not replicated (they write no WAL): {}", list(&unlogged)),
            None,
        ));
    }
    if db.large_objects > 0 {
        checks.push(Check::warn(
            format!("large objects in \"{}\"", db.source),
            format!(
                "{} large object(s) are copied once; logical replication does not carry later changes to them",
                db.large_objects
            ),
            None,
        ));
    }
    let owned = "select count(*) filter (where not pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE'))::int8, \
                 pg_catalog.has_database_privilege(current_user, pg_catalog.current_database(), 'CREATE') \
                 from pg_catalog.pg_class c where c.oid = any($1::text[]::pg_catalog.regclass[])";
    let qualified: Vec<String> = published_tables(db).iter().map(|t| t.qualified()).collect();
    match source.query_one("check publication privileges", owned, &[&qualified]).await {
        Ok(row) => {
            let (not_owned, create): (i64, bool) = (row.get(0), row.get(1));
            let name = format!("publication in \"{}\"", db.source);
            checks.push(if not_owned > 0 || !create {
                Check::fail(
                    name,
                    format!(
                        "the source user cannot publish the tables: {}",
                        if create {
                            format!("it does not own {not_owned} of them")
                        } else {
                            "it lacks CREATE on the database".into()
                        }
                    ),
                    Some("a publication needs CREATE on the database and ownership of its tables: run as the tables' owner (or a member of its role)".into()),
                )
            } else {
                Check::pass(name, format!("{} table(s) to publish", qualified.len()))
            });
        }
        Err(e) => checks.push(Check::fail(format!("publication in \"{}\"", db.source), e.to_string(), None)),
    }
    checks
}

/// Whether the target may create a subscription and reach the source with it: a
/// subscription that makes no slot is created and rolled back. Creating it connects from
/// the target server to the source in replication mode, exactly as the real one will, with
/// the login the real one will use (a role made for the probe, dropped after it). And what
/// happens to passwords, said plainly.
async fn subscription_probe(req: &Request, target: &Db, database: &str) -> Vec<Check> {
    let name = "target reaches the source";
    // A statement that would fail for want of privilege is not sent with a password in it.
    let allowed = target
        .query_one(
            "read the target user's privileges",
            "select r.rolsuper or (pg_catalog.current_setting('server_version_num')::int >= 160000 \
               and pg_catalog.pg_has_role(current_user, 'pg_create_subscription', 'member') \
               and pg_catalog.has_database_privilege(current_user, pg_catalog.current_database(), 'CREATE')) \
             from pg_catalog.pg_roles r where r.rolname = current_user",
            &[],
        )
        .await
        .map(|row| row.get::<_, bool>(0));
    match allowed {
        Ok(true) => {}
        Ok(false) => {
            return vec![Check::fail(
                name,
                "the target user may not create subscriptions",
                Some("the target user needs superuser or (PostgreSQL 16+) membership in pg_create_subscription and CREATE on the database".into()),
            )];
        }
        Err(e) => return vec![Check::fail(name, e.to_string(), None)],
    }
    let probe_id = format!("probe{}", new_id());
    let (mut login, why) = match Login::make(&req.source, &probe_id).await {
        Ok(made) => made,
        Err(e) => (Login::Url, Some(format!("the source could not create a login role for the sync: {e}"))),
    };
    let quiet = login::quiet(target).await;
    let mut result = probe_subscription(req, target, database, &login).await;
    let mut fell_back = false;
    if let Err(e) = &result
        && login.credentials().is_some()
        && refused_login(e)
    {
        login = Login::Url;
        fell_back = true;
        result = probe_subscription(req, target, database, &login).await;
    }
    let dropped = login::drop_role(&req.source, &probe_id).await;
    let mut checks = vec![match result {
        Ok(()) => Check::pass(
            name,
            format!(
                "the target server connected to {} in replication mode and may create subscriptions",
                req.source.endpoint()
            ),
        ),
        Err(e) => {
            let replication_role = e.to_string().contains("replication role");
            let hint = match e.sqlstate() {
                _ if replication_role => "the source user in the URL needs the REPLICATION attribute (ALTER ROLE <user> REPLICATION; RDS: GRANT rds_replication TO <user>): the subscription connects as that user".into(),
                Some("42501") => "the target user needs superuser or (PostgreSQL 16+) membership in pg_create_subscription and CREATE on the database".into(),
                Some("08006") | Some("08001") | None => format!(
                    "the target server itself connects to the source ({}) for replication: it must resolve and reach that host and port, and the source's pg_hba.conf must allow a replication connection from the target's address",
                    req.source.endpoint()
                ),
                _ => "see the message".into(),
            };
            Check::fail(name, crate::conninfo::redact(&e.to_string()), Some(hint))
        }
    }];
    if let Err(e) = dropped {
        checks.push(Check::warn(
            "probe login role",
            format!("{} could not be dropped: {e}", login::role_name(&probe_id)),
            Some(format!("drop role {} on the source", login::role_name(&probe_id))),
        ));
    }
    checks.push(password_check(req, &login, why.as_deref(), fell_back, quiet));
    checks
}

/// What happens to passwords during the sync, plainly.
fn password_check(req: &Request, login: &Login, why: Option<&str>, fell_back: bool, quiet: bool) -> Check {
    let name = "source password";
    let logged = if quiet {
        String::new()
    } else {
        "; and the target user cannot turn statement logging off for its session (a superuser setting), so the target may log the statement that creates the subscription, password included (log_statement, log_min_error_statement)".into()
    };
    match login {
        Login::Own { .. } if quiet => Check::pass(
            name,
            "the subscription logs in as a role made for the sync (barge_<id>_login) with a random password, dropped at the cutover, stop or cancel: the source URL's password never reaches the target",
        ),
        Login::Own { .. } => Check::warn(
            name,
            format!(
                "the subscription logs in as a role made for the sync with a random password, dropped at the cutover, stop or cancel; the source URL's password never reaches the target{logged}"
            ),
            Some("connect to the target as a superuser to keep the sync's password out of its log too".into()),
        ),
        Login::Url => {
            let reason = if fell_back {
                "the source's pg_hba.conf does not admit a role made for the sync".to_owned()
            } else {
                why.unwrap_or("the sync cannot have its own login role").to_owned()
            };
            Check::warn(
                name,
                format!(
                    "{reason}: the subscription logs in as {} with the source URL's password, which the target stores in pg_subscription (readable by superusers, and in the target's backups) until the cutover or stop{logged}",
                    req.source.user()
                ),
                Some("let the source user create roles (superuser, or CREATEROLE and REPLICATION on PostgreSQL 16+) and pg_hba.conf admit them for replication, or use a source user and password made for this migration".into()),
            )
        }
    }
}

/// One probe subscription, created and rolled back.
async fn probe_subscription(req: &Request, target: &Db, database: &str, login: &Login) -> Result<()> {
    let probe = format!("barge_probe_{}", new_id());
    let conninfo = subscription_conninfo(req, database, login).await?;
    target.batch("probe a subscription", "begin").await?;
    let quoted = ident::quote(&probe);
    let sql = format!(
        "create subscription {quoted} connection {} publication {quoted} \
         with (connect = true, enabled = false, create_slot = false, slot_name = none, copy_data = false)",
        ident::literal(&conninfo)
    );
    let result = target.batch("create a probe subscription", &sql).await;
    let _ = target.batch("roll the probe back", "rollback").await;
    result
}

/// How the target's subscription reaches the source's `database`: with TLS exactly when
/// barge's own connection to it has TLS (and then verified).
async fn subscription_conninfo(req: &Request, database: &str, login: &Login) -> Result<String> {
    let source = Db::connect(&req.source, database).await?;
    req.source.libpq_conninfo(database, source.tls(), login.credentials())
}

/// The tables whose rows replicate: copied with rows, and logged.
fn published_tables(db: &DatabasePlan) -> Vec<&crate::plan::TablePlan> {
    db.tables.iter().filter(|t| !t.schema_only && t.kind != "unlogged table").collect()
}

/// What one database's sync created so far, for removal on failure.
#[derive(Clone, Debug)]
struct Created {
    name: String,
    source_database: String,
    target_database: String,
}

/// Copies every database of `plan` in the snapshot of its own new slot, then subscribes the
/// target to it. Returns once every database streams; on a failure, a `Cancel` or a
/// `Detach` it removes what it created on both sides first.
pub async fn start(req: &Request, plan: &Plan, sink: Arc<dyn ProgressSink>, control: Control) -> Result<SyncReport> {
    init::refuse_problems(plan)?;
    let id = match &req.options.sync_id {
        Some(id) => {
            check_id(id)?;
            id.clone()
        }
        None => new_id(),
    };
    let started = Instant::now();
    let (tools, roles) = init::prepare(req, &sink).await?;
    let mut report = SyncReport { init: InitReport { roles, ..InitReport::default() }, names: Vec::new() };
    let mut created: Vec<Created> = Vec::new();
    let filter = req.filter.compile()?;
    let (login, why) = Login::make(&req.source, &id).await?;
    if let Some(why) = why {
        sink.emit(Event::Warning {
            message: format!(
                "{why}: the subscription logs in as {}, whose password the target stores (pg_subscription) until the cutover or stop",
                req.source.user()
            ),
        });
    }
    for (n, db) in plan.databases.iter().enumerate() {
        let name = format!("{}{n}", prefix(&id));
        let tracker = Tracker::new(sink.clone(), &db.target);
        let work = async {
            let source = Db::connect(&req.source, &db.source).await?;
            if req.options.replica_identity_full {
                set_replica_identity_full(&source, db).await?;
            }
            let tables: Vec<String> = published_tables(db).iter().map(|t| t.qualified()).collect();
            if tables.is_empty() {
                return Err(Error::Refused(format!(
                    "database \"{}\" has no table whose rows replicate: leave it out of a sync (--exclude-database) or copy it with init",
                    db.source
                )));
            }
            created.push(Created {
                name: name.clone(),
                source_database: db.source.clone(),
                target_database: db.target.clone(),
            });
            source
                .batch(
                    &format!("create publication {name}"),
                    &format!("create publication {} for table {}", ident::quote(&name), tables.join(", ")),
                )
                .await?;
            let mut replication = ReplicationConn::connect(&req.source, &db.source).await?;
            let slot = replication.create_slot(&name).await?;
            tracing::info!(slot = %name, consistent_point = %slot.consistent_point, "replication slot created");
            let baseline = fingerprint_in_snapshot(req, db, &filter, &slot.snapshot).await?;
            let copied = init::copy_database(req, &tools, db, tracker.clone(), Some(&slot.snapshot)).await;
            // The snapshot is no longer needed; the subscriber needs the slot free.
            replication.close().await;
            let copied = copied?;
            subscribe(req, db, &name, &baseline, published_tables(db).len(), &login, &sink).await?;
            Ok::<_, Error>(copied)
        };
        let copied = run_controlled(work, control.clone()).await;
        match copied {
            Ok(copied) => {
                report.init.databases.push(copied);
                report.names.push(name);
            }
            Err(e) => {
                let cleanup = remove(req, &created).await;
                for failure in cleanup.1 {
                    sink.emit(Event::Warning { message: failure });
                }
                // Also when nothing else was created yet.
                if let Err(role) = login::drop_role(&req.source, &id).await {
                    sink.emit(Event::Warning { message: format!("the sync's login role: {role}") });
                }
                return Err(e);
            }
        }
    }
    report.init.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Runs `work` until it ends or a `Cancel`/`Detach` arrives (then `work` is dropped, which
/// closes its connections, and the answer is [`Error::Stopped`]).
async fn run_controlled<T>(work: impl Future<Output = Result<T>>, mut control: Control) -> Result<T> {
    tokio::pin!(work);
    loop {
        if let Some(stop) = stop_reason(*control.borrow_and_update()) {
            return Err(Error::Stopped(stop.into()));
        }
        tokio::select! {
            result = &mut work => return result,
            changed = control.changed() => {
                if changed.is_err() {
                    // Nobody can signal any more: just finish.
                    return work.await;
                }
            }
        }
    }
}

fn stop_reason(signal: Signal) -> Option<&'static str> {
    match signal {
        Signal::Cancel => {
            Some("cancelled during the copy; barge removed the slot, publication and subscription it had created")
        }
        Signal::Detach => Some(
            "interrupted during the copy; barge removed the slot, publication and subscription it had created (a copy cannot resume without its snapshot)",
        ),
        Signal::Run | Signal::Cutover => None,
    }
}

async fn set_replica_identity_full(source: &Db, db: &DatabasePlan) -> Result<()> {
    let rows = source.query("list tables without a primary key", include_str!("sql/without_key.sql"), &[]).await?;
    let published: HashSet<(String, String)> =
        published_tables(db).iter().map(|t| (t.schema.clone(), t.name.clone())).collect();
    for row in rows {
        let (schema, table, identified): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        if identified || !published.contains(&(schema.clone(), table.clone())) {
            continue;
        }
        source
            .batch(
                &format!("set REPLICA IDENTITY FULL on {schema}.{table}"),
                &format!("alter table {} replica identity full", ident::qualified(&schema, &table)),
            )
            .await?;
    }
    Ok(())
}

/// The structure digests of the tables the filters select, as of the slot's snapshot.
async fn fingerprint_in_snapshot(
    req: &Request,
    db: &DatabasePlan,
    filter: &CompiledFilter,
    snapshot: &str,
) -> Result<BTreeMap<String, String>> {
    let source = Db::connect(&req.source, &db.source).await?;
    crate::copy::enter_snapshot(&source, snapshot).await?;
    let digests = fingerprint(&source, &db.source, filter).await;
    let _ = source.batch("close the snapshot", "commit").await;
    digests
}

/// `schema.table` → digest, for the tables the filters select in `database`.
async fn fingerprint(source: &Db, database: &str, filter: &CompiledFilter) -> Result<BTreeMap<String, String>> {
    let relations = catalog::relations(source).await?;
    let schemas = catalog::schemas(source).await?;
    let selection = plan::select(database, &relations, &schemas, filter);
    let selected: HashSet<(&str, &str)> = relations
        .iter()
        .filter(|r| selection.selected.contains(&r.oid))
        .map(|r| (r.schema.as_str(), r.name.as_str()))
        .collect();
    let rows = source.query("read the schema fingerprint", include_str!("sql/schema_fingerprint.sql"), &[]).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>("schema"), r.get::<_, String>("name"), r.get::<_, String>("digest")))
        .filter(|(s, n, _)| selected.contains(&(s.as_str(), n.as_str())))
        .map(|(s, n, d)| (format!("{s}.{n}"), d))
        .collect())
}

/// What changed between two fingerprints, named.
fn schema_changes(baseline: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let mut changes = Vec::new();
    for (table, digest) in baseline {
        match now.get(table) {
            None => changes.push(format!("{table} (dropped or renamed)")),
            Some(d) if d != digest => changes.push(format!("{table} (columns, types or replica identity changed)")),
            Some(_) => {}
        }
    }
    for table in now.keys().filter(|t| !baseline.contains_key(*t)) {
        changes.push(format!("{table} (created; its rows would not replicate)"));
    }
    changes
}

/// Creates the subscription and its record in one transaction on the target, logging in to
/// the source with `login`. A role made for the sync that the source's pg_hba.conf does not
/// admit falls back to the URL's user (said in a warning).
async fn subscribe(
    req: &Request,
    db: &DatabasePlan,
    name: &str,
    baseline: &BTreeMap<String, String>,
    tables: usize,
    login: &Login,
    sink: &Arc<dyn ProgressSink>,
) -> Result<()> {
    match create_subscription(req, db, name, baseline, tables, login).await {
        Err(e) if login.credentials().is_some() && refused_login(&e) => {
            sink.emit(Event::Warning {
                message: format!(
                    "the source refused the sync's own login role ({}); the subscription logs in as {} instead, whose password the target stores until the cutover",
                    e,
                    req.source.user()
                ),
            });
            create_subscription(req, db, name, baseline, tables, &Login::Url).await
        }
        result => result,
    }
}

/// Whether the source refused a login (pg_hba.conf, authentication), as the target reports it.
fn refused_login(e: &Error) -> bool {
    let text = e.to_string();
    text.contains("pg_hba.conf") || text.contains("authentication failed")
}

async fn create_subscription(
    req: &Request,
    db: &DatabasePlan,
    name: &str,
    baseline: &BTreeMap<String, String>,
    tables: usize,
    login: &Login,
) -> Result<()> {
    let target = Db::connect(&req.target, &db.target).await?;
    // The statement carries a password: keep it out of the target's server log where the
    // session may decide that (superusers only).
    if !login::quiet(&target).await {
        tracing::debug!("statement logging stays as configured on the target");
    }
    let conninfo = subscription_conninfo(req, &db.source, login).await?;
    let fingerprint = serde_json::to_string(baseline).map_err(|e| Error::Internal(e.to_string()))?;
    let filter = serde_json::to_string(&req.filter).map_err(|e| Error::Internal(e.to_string()))?;
    let table_count = tables as i64;
    target
        .in_transaction(&format!("create subscription {name}"), async || {
            target
                .batch(
                    "record the sync",
                    "create schema if not exists _barge; \
                     create table if not exists _barge.sync (name text primary key, source_database text not null, \
                       tables int8 not null, fingerprint jsonb not null, filter jsonb not null, \
                       created_at timestamptz not null default now())",
                )
                .await?;
            target
                .execute(
                    "record the sync",
                    "insert into _barge.sync (name, source_database, tables, fingerprint, filter) \
                     values ($1, $2, $3, $4::text::jsonb, $5::text::jsonb)",
                    &[&name, &db.source, &table_count, &fingerprint, &filter],
                )
                .await?;
            // Built here, not by the server's format(): the connection string travels in this
            // one statement only.
            let quoted = ident::quote(name);
            let sql = format!(
                "create subscription {quoted} connection {} publication {quoted} \
                 with (copy_data = false, create_slot = false, slot_name = {}, enabled = true)",
                ident::literal(&conninfo),
                ident::literal(name)
            );
            target.batch(&format!("create subscription {name}"), &sql).await.map_err(|e| match e.sqlstate() {
                Some("42501") => e.with_hint("the target user needs superuser or (PostgreSQL 16+) pg_create_subscription and CREATE on the database"),
                _ => e.with_hint(&format!("the target server connects to the source ({}) itself", req.source.endpoint())),
            })
        })
        .await
}

/// A barge sync recorded in a target database.
#[derive(Clone, Debug)]
struct Found {
    name: String,
    source_database: String,
    target_database: String,
    baseline: BTreeMap<String, String>,
    /// The filters of the run that set it up (status compares the tables they select).
    filter: crate::filter::Filter,
}

/// Finds the barge subscriptions on the target (the target URL's database only, when it
/// names one and not every database is asked for), narrowed to `id` when given: one sync, or
/// an error that says there is none or several.
async fn find(req: &Request) -> Result<Vec<Found>> {
    let found = find_all(req).await?;
    if found.is_empty() {
        return Err(Error::Invalid(format!(
            "no barge replication on the target {}{}: start one with `barge init --sync`",
            req.target.endpoint(),
            if req.options.sync_id.is_some() { " with that sync id" } else { "" }
        )));
    }
    one_sync(&found)?;
    Ok(found)
}

/// Refuses subscriptions of more than one sync.
fn one_sync(found: &[Found]) -> Result<()> {
    let ids: HashSet<&str> = found.iter().filter_map(|f| id_of(&f.name)).collect();
    if ids.len() > 1 {
        let mut ids: Vec<&str> = ids.into_iter().collect();
        ids.sort();
        return Err(Error::Invalid(format!(
            "the target has more than one barge replication ({}): choose one with --sync-id",
            ids.join(", ")
        )));
    }
    Ok(())
}

/// Every barge subscription [`find`] looks at, however many syncs they belong to.
async fn find_all(req: &Request) -> Result<Vec<Found>> {
    let (admin, _) = plan::connect_admin(&req.target).await?;
    let only_db = req.target.dbname().map(str::to_owned);
    let pattern = match &req.options.sync_id {
        Some(id) => {
            check_id(id)?;
            format!("{}%", prefix(id).replace('_', "\\_"))
        }
        None => "barge\\_%".to_owned(),
    };
    let rows = admin
        .query(
            "list barge subscriptions",
            "select d.datname::text, s.subname::text from pg_catalog.pg_subscription s \
             join pg_catalog.pg_database d on d.oid = s.subdbid where s.subname like $1 order by 1, 2",
            &[&pattern],
        )
        .await?;
    // The target URL's database narrows the search, unless every database is asked for
    // (the URL then names only the database to connect to): another database's sync on the
    // same server is not this one's.
    let only_db = only_db.filter(|_| !req.all_databases);
    let mut found = Vec::new();
    for row in rows {
        let (database, name): (String, String) = (row.get(0), row.get(1));
        if only_db.as_deref().is_some_and(|only| only != database) {
            continue;
        }
        let target = Db::connect(&req.target, &database).await?;
        let record = target
            .query_opt(
                "read the sync record",
                "select source_database, fingerprint::text, filter::text from _barge.sync where name = $1",
                &[&name],
            )
            .await;
        let record = match record {
            Ok(Some(row)) => row,
            // A subscription named like barge's without its record is not barge's.
            Ok(None) => continue,
            Err(e) if e.sqlstate() == Some("42P01") || e.sqlstate() == Some("3F000") => continue,
            Err(e) => return Err(e),
        };
        let baseline: BTreeMap<String, String> = serde_json::from_str(&record.get::<_, String>(1))
            .map_err(|e| Error::Internal(format!("the sync record of {name} is unreadable: {e}")))?;
        let filter: crate::filter::Filter = serde_json::from_str(&record.get::<_, String>(2))
            .map_err(|e| Error::Internal(format!("the sync record of {name} is unreadable: {e}")))?;
        found.push(Found { name, source_database: record.get(0), target_database: database, baseline, filter });
    }
    Ok(found)
}

/// `barge_<id>_<n>` → `<id>`.
fn id_of(name: &str) -> Option<&str> {
    name.strip_prefix("barge_").and_then(|rest| rest.rsplit_once('_')).map(|(id, _)| id)
}

/// Where the replication stands: lag from both sides, per-table states, and schema changes
/// on the source since the copy.
pub async fn status(req: &Request) -> Result<ReplicationStatus> {
    let found = find(req).await?;
    status_of(req, &found).await
}

async fn status_of(req: &Request, found: &[Found]) -> Result<ReplicationStatus> {
    let mut status = ReplicationStatus::default();
    for f in found {
        let source = Db::connect(&req.source, &f.source_database).await?;
        let target = Db::connect(&req.target, &f.target_database).await?;
        let slot = source.query_opt("read the slot", include_str!("sql/slot_status.sql"), &[&f.name]).await?;
        let Some(slot) = slot else {
            return Err(Error::Refused(format!(
                "the replication slot {} is gone from the source database \"{}\": replication cannot continue; run `barge sync stop` and copy again",
                f.name, f.source_database
            )));
        };
        let sub = target
            .query_opt("read the subscription", include_str!("sql/subscription_status.sql"), &[&f.name])
            .await?
            .ok_or_else(|| Error::Internal(format!("subscription {} vanished while reading it", f.name)))?;
        let apply_errors = if target.version_num() >= 150000 {
            target
                .query_opt(
                    "read apply errors",
                    "select apply_error_count::int8 from pg_catalog.pg_stat_subscription_stats where subname = $1",
                    &[&f.name],
                )
                .await?
                .map(|r| r.get::<_, i64>(0).max(0) as u64)
        } else {
            None
        };
        let lag_bytes = slot.get::<_, Option<i64>>("lag_bytes").unwrap_or(0).max(0) as u64;
        let measured = slot.get::<_, Option<f64>>("lag_seconds");
        let lag_seconds = match measured {
            Some(s) => Some(s.max(0.0)),
            None if lag_bytes == 0 => Some(0.0),
            None => None,
        };
        let now = fingerprint(&source, &f.source_database, &f.filter.compile()?).await?;
        let changes = schema_changes(&f.baseline, &now);
        status.schema_changes.extend(changes.iter().map(|c| format!("{}: {c}", f.source_database)));
        status.lag_bytes = status.lag_bytes.max(lag_bytes);
        status.lag_seconds = match (status.lag_seconds, lag_seconds) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        status.databases.push(DatabaseSync {
            name: f.name.clone(),
            source_database: f.source_database.clone(),
            target_database: f.target_database.clone(),
            slot_active: slot.get("active"),
            wal_status: slot.get("wal_status"),
            enabled: sub.get("enabled"),
            workers: sub.get::<_, i64>("workers").max(0) as u64,
            lag_bytes,
            lag_seconds,
            tables: sub.get::<_, i64>("tables").max(0) as u64,
            tables_not_ready: sub.get("not_ready"),
            apply_errors,
            schema_changes: changes,
            applied_rows: sub.get::<_, i64>("applied_rows").max(0) as u64,
            confirmed_bytes: slot.get::<_, Option<i64>>("confirmed").unwrap_or(0).max(0) as u64,
        });
    }
    Ok(status)
}

/// The error for changed source objects: replication stops before the data diverges.
fn schema_changed(changes: &[String]) -> Error {
    Error::SchemaChanged(format!(
        "the source's schema changed while syncing ({}); logical replication does not carry DDL, so the target would diverge. \
         Apply the same change to the target and copy again, or revert it on the source",
        changes.join("; ")
    ))
}

/// How a [`stream`] ended without an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// A cutover was asked for.
    Cutover,
    /// The caller detached; replication goes on.
    Detached,
}

/// Watches a running sync: a status every `every` (emitted as
/// [`Event::Replication`]), until a signal. A schema change on the source, a `Cancel` or a
/// lost slot removes the replication and fails.
pub async fn stream(
    req: &Request,
    sink: Arc<dyn ProgressSink>,
    mut control: Control,
    every: Duration,
) -> Result<StreamEnd> {
    let found = find(req).await?;
    let mut previous: Option<(ReplicationStatus, Instant)> = None;
    loop {
        let signal = *control.borrow_and_update();
        match signal {
            Signal::Cutover => return Ok(StreamEnd::Cutover),
            Signal::Detach => return Ok(StreamEnd::Detached),
            Signal::Cancel => {
                remove_found(req, &found, &sink).await?;
                return Err(Error::Stopped(
                    "cancelled while streaming; barge removed the slot, publication and subscription".into(),
                ));
            }
            Signal::Run => {}
        }
        let at = Instant::now();
        let status = match status_of(req, &found).await {
            Ok(status) => status,
            Err(e) if !e.retryable() => {
                remove_found(req, &found, &sink).await?;
                return Err(e);
            }
            Err(e) => {
                sink.emit(Event::Warning { message: format!("could not read the replication status: {e}") });
                ReplicationStatus::default()
            }
        };
        if !status.schema_changes.is_empty() {
            let error = schema_changed(&status.schema_changes);
            remove_found(req, &found, &sink).await?;
            return Err(error);
        }
        if !status.databases.is_empty() {
            let status = match &previous {
                Some((earlier, when)) => status.with_rates(earlier, at.duration_since(*when).as_secs_f64()),
                None => status,
            };
            sink.emit(Event::Replication(status.clone()));
            previous = Some((status, at));
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            changed = control.changed() => {
                if changed.is_err() {
                    // Nobody can signal any more: watch until the sink's owner drops us.
                    tokio::time::sleep(every).await;
                }
            }
        }
    }
}

/// Removes every object in `found`, reporting what could not be removed as warnings; fails
/// only when something is left behind.
async fn remove_found(req: &Request, found: &[Found], sink: &Arc<dyn ProgressSink>) -> Result<StopReport> {
    let created: Vec<Created> = found
        .iter()
        .map(|f| Created {
            name: f.name.clone(),
            source_database: f.source_database.clone(),
            target_database: f.target_database.clone(),
        })
        .collect();
    let (removed, failures) = remove(req, &created).await;
    for failure in &failures {
        sink.emit(Event::Warning { message: failure.clone() });
    }
    if failures.is_empty() {
        Ok(StopReport { removed })
    } else {
        Err(Error::Refused(format!(
            "some replication objects could not be removed: {}; remove them by hand (an orphaned slot keeps WAL on the source)",
            failures.join("; ")
        )))
    }
}

/// Options of a cutover.
#[derive(Clone, Debug)]
pub struct CutoverOptions {
    /// Longest wait for the target to catch up; replication stays as it was when it passes.
    pub timeout: Duration,
}

/// Switches over: the target catches up with everything the source had written when the
/// cutover began (zero lag once writes have stopped), sequences take the source's
/// positions, subscription, slot and publication are removed, and source and target are
/// compared. `progress` sees the lag while waiting.
pub async fn cutover(req: &Request, options: &CutoverOptions, sink: Arc<dyn ProgressSink>) -> Result<CutoverReport> {
    let found = find(req).await?;
    let status = status_of(req, &found).await?;
    if !status.schema_changes.is_empty() {
        return Err(schema_changed(&status.schema_changes));
    }
    let started = Instant::now();
    let deadline = started + options.timeout;
    let mut report = CutoverReport::default();
    // Where each source stands now: the target must have applied at least this much.
    let mut marks = Vec::new();
    for f in &found {
        let source = Db::connect(&req.source, &f.source_database).await?;
        let lsn: i64 = source
            .query_one(
                "read the source's WAL position",
                "select pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0')::int8",
                &[],
            )
            .await?
            .get(0);
        marks.push((source, lsn.max(0) as u64));
    }
    loop {
        let status = status_of(req, &found).await?;
        let behind: Vec<&DatabaseSync> = status
            .databases
            .iter()
            .zip(&marks)
            .filter(|(d, (_, lsn))| d.confirmed_bytes < *lsn)
            .map(|(d, _)| d)
            .collect();
        if behind.is_empty() {
            break;
        }
        sink.emit(Event::Replication(status.clone()));
        if Instant::now() >= deadline {
            return Err(Error::Refused(format!(
                "the target did not catch up within {} (lag {}); replication is still running: stop writes to the source and cut over again",
                crate::validate::human_duration(options.timeout.as_secs_f64()),
                human_bytes(status.lag_bytes)
            )));
        }
        if behind.iter().any(|d| !d.enabled || !d.slot_active) {
            let d = behind[0];
            tracing::info!(name = %d.name, enabled = d.enabled, slot_active = d.slot_active, "waiting for the subscriber");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report.catch_up_seconds = started.elapsed().as_secs_f64();
    for (f, (source, _)) in found.iter().zip(&marks) {
        let target = Db::connect(&req.target, &f.target_database).await?;
        report.sequences += init::copy_sequences(source, &target).await?;
    }
    remove_found(req, &found, &sink).await?;
    report.names = found.iter().map(|f| f.name.clone()).collect();
    // Verify compares what the sync covered, with the filters it was set up with.
    report.verify = VerifyReport { ok: true, databases: Vec::new() };
    for f in &found {
        let mut one = req.clone();
        one.all_databases = false;
        one.source = req.source.with_dbname(&f.source_database);
        one.target = req.target.with_dbname(&f.target_database);
        one.filter =
            crate::filter::Filter { include_databases: Vec::new(), exclude_databases: Vec::new(), ..f.filter.clone() };
        let db = verify::verify(&one).await?;
        report.verify.ok &= db.ok;
        report.verify.databases.extend(db.databases);
    }
    Ok(report)
}

/// Removes one sync's replication without cutting over; the copied data stays. The sync is
/// the one `--sync-id` names, or the one whose subscriptions the target holds; the source's
/// slots and publications of that sync go too (also those whose subscription never came to
/// be: a copy that died). Nothing of another sync is touched: the source may feed other
/// targets, whose slots look the same from there.
pub async fn stop(req: &Request) -> Result<StopReport> {
    let found = find_all(req).await?;
    one_sync(&found)?;
    let id = match (&req.options.sync_id, found.first().and_then(|f| id_of(&f.name))) {
        (Some(id), _) => id.clone(),
        (None, Some(id)) => id.to_owned(),
        (None, None) => return Err(no_sync_here(req).await),
    };
    let mut created: Vec<Created> = found
        .into_iter()
        .map(|f| Created { name: f.name, source_database: f.source_database, target_database: f.target_database })
        .collect();
    let (source_admin, _) = plan::connect_admin(&req.source).await?;
    let pattern = format!("{}%", prefix(&id).replace('_', "\\_"));
    let slots = source_admin
        .query(
            "list the sync's slots",
            "select slot_name::text, database::text from pg_catalog.pg_replication_slots where slot_name like $1 and slot_type = 'logical'",
            &[&pattern],
        )
        .await?;
    for row in slots {
        let (name, database): (String, String) = (row.get(0), row.get(1));
        if !created.iter().any(|c| c.name == name) {
            let target_database =
                req.target.dbname().filter(|_| !req.all_databases).map_or_else(|| database.clone(), str::to_owned);
            created.push(Created { name, source_database: database, target_database });
        }
    }
    if created.is_empty() {
        // What a sync that died before its first publication left.
        if login::drop_role(&req.source, &id).await? {
            return Ok(StopReport { removed: vec![format!("login role {}", login::role_name(&id))] });
        }
        return Err(Error::Invalid(format!(
            "no barge replication found on the source {} or the target {}",
            req.source.endpoint(),
            req.target.endpoint()
        )));
    }
    let (removed, failures) = remove(req, &created).await;
    if failures.is_empty() {
        Ok(StopReport { removed })
    } else {
        Err(Error::Refused(format!(
            "removed {}, but not: {}",
            if removed.is_empty() { "nothing".into() } else { removed.join(", ") },
            failures.join("; ")
        )))
    }
}

/// Why `stop` without `--sync-id` found nothing to stop on the target: the source's barge
/// slots, if any, are named with their ids and states, and none is removed.
async fn no_sync_here(req: &Request) -> Error {
    let slots = async {
        let (source, _) = plan::connect_admin(&req.source).await?;
        source
            .query(
                "list barge slots",
                "select slot_name::text, active from pg_catalog.pg_replication_slots \
                 where slot_name like 'barge\\_%' and slot_type = 'logical' order by 1",
                &[],
            )
            .await
    }
    .await;
    let listed: Vec<String> = match slots {
        Ok(rows) => rows
            .iter()
            .map(|r| {
                let name: String = r.get(0);
                let state = if r.get::<_, bool>(1) { "active" } else { "inactive" };
                format!("{name} (sync id {}, {state})", id_of(&name).unwrap_or("?"))
            })
            .collect(),
        Err(e) => return e,
    };
    if listed.is_empty() {
        Error::Invalid(format!(
            "no barge replication found on the source {} or the target {}",
            req.source.endpoint(),
            req.target.endpoint()
        ))
    } else {
        Error::Invalid(format!(
            "no barge replication on the target {}; the source has barge replication slots, which may feed other targets: {}. Remove one sync's with --sync-id <id>",
            req.target.endpoint(),
            listed.join(", ")
        ))
    }
}

/// Removes subscriptions, slots and publications, each attempted even when another fails.
/// Returns what was removed and what could not be.
async fn remove(req: &Request, created: &[Created]) -> (Vec<String>, Vec<String>) {
    let mut removed = Vec::new();
    let mut failures = Vec::new();
    for c in created {
        match drop_subscription(&req.target, c).await {
            Ok(true) => removed.push(format!("subscription {} in \"{}\"", c.name, c.target_database)),
            Ok(false) => {}
            Err(e) => failures.push(format!("subscription {}: {e}", c.name)),
        }
        match drop_slot(&req.source, c).await {
            Ok(true) => removed.push(format!("replication slot {}", c.name)),
            Ok(false) => {}
            Err(e) => failures.push(format!("replication slot {}: {e}", c.name)),
        }
        match drop_publication(&req.source, c).await {
            Ok(true) => removed.push(format!("publication {} in \"{}\"", c.name, c.source_database)),
            Ok(false) => {}
            Err(e) => failures.push(format!("publication {}: {e}", c.name)),
        }
    }
    let mut ids: Vec<&str> = created.iter().filter_map(|c| id_of(&c.name)).collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        match login::drop_role(&req.source, id).await {
            Ok(true) => removed.push(format!("login role {}", login::role_name(id))),
            Ok(false) => {}
            Err(e) => failures.push(format!("login role {}: {e}", login::role_name(id))),
        }
    }
    (removed, failures.into_iter().map(|f| crate::conninfo::redact(&f)).collect())
}

async fn drop_subscription(target: &ConnInfo, c: &Created) -> Result<bool> {
    let db = match Db::connect(target, &c.target_database).await {
        Ok(db) => db,
        // The copy failed before the target database existed.
        Err(e) if e.sqlstate() == Some("3D000") => return Ok(false),
        Err(e) => return Err(e),
    };
    let exists = db
        .query_opt(
            "look for the subscription",
            "select 1 from pg_catalog.pg_subscription where subname = $1 \
             and subdbid = (select oid from pg_catalog.pg_database where datname = pg_catalog.current_database())",
            &[&c.name],
        )
        .await?
        .is_some();
    if exists {
        let quoted = ident::quote(&c.name);
        // Detached from its slot first, so dropping it never depends on reaching the source;
        // the slot is dropped on the source below.
        db.batch("disable the subscription", &format!("alter subscription {quoted} disable")).await?;
        db.batch(
            "detach the subscription from its slot",
            &format!("alter subscription {quoted} set (slot_name = none)"),
        )
        .await?;
        db.batch("drop the subscription", &format!("drop subscription {quoted}")).await?;
    }
    let record = db.execute("remove the sync record", "delete from _barge.sync where name = $1", &[&c.name]).await;
    match record {
        Ok(_) => {
            let left: i64 = db.query_one("count sync records", "select count(*) from _barge.sync", &[]).await?.get(0);
            if left == 0 {
                db.batch("drop barge's schema", "drop schema if exists _barge cascade").await?;
            }
        }
        Err(e) if e.sqlstate() == Some("42P01") || e.sqlstate() == Some("3F000") => {}
        Err(e) => return Err(e),
    }
    Ok(exists)
}

async fn drop_slot(source: &ConnInfo, c: &Created) -> Result<bool> {
    let (admin, _) = plan::connect_admin(source).await?;
    let started = Instant::now();
    loop {
        let row = admin
            .query_opt(
                "look for the slot",
                "select active_pid from pg_catalog.pg_replication_slots where slot_name = $1",
                &[&c.name],
            )
            .await?;
        let Some(row) = row else { return Ok(false) };
        match row.get::<_, Option<i32>>(0) {
            None => {
                match admin
                    .execute("drop the replication slot", "select pg_catalog.pg_drop_replication_slot($1)", &[&c.name])
                    .await
                {
                    Ok(_) => return Ok(true),
                    // Taken again between the look and the drop: look again.
                    Err(e) if e.sqlstate() == Some("55006") && started.elapsed() < Duration::from_secs(60) => {}
                    Err(e) if e.sqlstate() == Some("42704") => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            // The subscriber's WAL sender lets go once its subscription is disabled; one
            // that hangs on (a subscription barge could not reach) is ended.
            Some(pid) if started.elapsed() > Duration::from_secs(10) => {
                admin
                    .query_one(
                        "end the WAL sender holding the slot",
                        "select pg_catalog.pg_terminate_backend($1)",
                        &[&pid],
                    )
                    .await?;
            }
            Some(_) => {}
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(Error::Refused(format!(
                "replication slot {} is still in use after a minute; drop it with pg_drop_replication_slot('{}') once its subscriber is gone",
                c.name, c.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn drop_publication(source: &ConnInfo, c: &Created) -> Result<bool> {
    let db = match Db::connect(source, &c.source_database).await {
        Ok(db) => db,
        Err(e) if e.sqlstate() == Some("3D000") => return Ok(false),
        Err(e) => return Err(e),
    };
    let exists = db
        .query_opt("look for the publication", "select 1 from pg_catalog.pg_publication where pubname = $1", &[&c.name])
        .await?
        .is_some();
    if exists {
        db.batch("drop the publication", &format!("drop publication {}", ident::quote(&c.name))).await?;
    }
    Ok(exists)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_objects_safely() {
        assert!(check_id(&new_id()).is_ok());
        assert_eq!(new_id().len(), 10);
        assert!(check_id("job42").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("Robert'); drop").is_err());
        assert_eq!(id_of("barge_ab12_3"), Some("ab12"));
        assert_eq!(id_of("other"), None);
    }

    #[test]
    fn schema_changes_are_named() {
        let baseline: BTreeMap<String, String> =
            [("public.a".to_string(), "1".to_string()), ("public.b".into(), "2".into())].into();
        let now: BTreeMap<String, String> =
            [("public.a".to_string(), "9".to_string()), ("public.c".into(), "3".into())].into();
        assert_eq!(
            schema_changes(&baseline, &now),
            vec![
                "public.a (columns, types or replica identity changed)",
                "public.b (dropped or renamed)",
                "public.c (created; its rows would not replicate)"
            ]
        );
        assert!(schema_changes(&baseline, &baseline).is_empty());
    }

    #[test]
    fn rates_come_from_two_statuses() {
        let db = |rows, bytes| DatabaseSync {
            name: "barge_x_0".into(),
            source_database: "s".into(),
            target_database: "t".into(),
            slot_active: true,
            wal_status: None,
            enabled: true,
            workers: 1,
            lag_bytes: 0,
            lag_seconds: Some(0.0),
            tables: 1,
            tables_not_ready: vec![],
            apply_errors: Some(0),
            schema_changes: vec![],
            applied_rows: rows,
            confirmed_bytes: bytes,
        };
        let earlier = ReplicationStatus { databases: vec![db(100, 1000)], ..ReplicationStatus::default() };
        let later = ReplicationStatus { databases: vec![db(300, 5000)], ..ReplicationStatus::default() };
        let rated = later.with_rates(&earlier, 2.0);
        assert_eq!(rated.apply_rows_per_second, Some(100.0));
        assert_eq!(rated.apply_bytes_per_second, Some(2000.0));
        assert!(rated.streaming());
        assert!(rated.summary().contains("100 rows/s"), "{}", rated.summary());
    }
}
