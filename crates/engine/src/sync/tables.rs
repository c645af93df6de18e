//! Changing which tables a running sync carries, and copying one again, while the others
//! stream (docs/sync.md, "Adding, removing and resyncing tables").
//!
//! The rows of a table that joins a sync are copied by the target's own table
//! synchronization: the table is added to the publication, and `ALTER SUBSCRIPTION …
//! REFRESH PUBLICATION WITH (copy_data = true)` makes the target copy it in a snapshot of a
//! slot of its own and then apply the changes between that snapshot and the main stream's
//! position before handing the table to the main stream. PostgreSQL does exactly this
//! hand-off for every subscription that copies data, so there is no gap and no duplicate
//! whatever the source writes meanwhile; barge's part is the table on the target, the
//! publication, the login role's right to read the table, and waiting for the `ready` state.
//!
//! Every step looks at what is already there, so a run that died half-way is finished by
//! running the same command again.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::*;
use crate::{
    catalog::{self, Relation},
    db::Db,
    error::{Error, Result},
    human::list,
    ident, login,
    pgtools::{DumpOptions, PgTools},
    plan,
    progress::{Event, ProgressSink},
    request::Request,
    schema::{self, TargetSettings},
};

/// What `add`, `remove` or `resync` did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TablesReport {
    /// Tables now copied and streaming (`schema.table`), per target database.
    pub added: Vec<String>,
    /// Tables the sync no longer carries (their rows stay on the target).
    pub removed: Vec<String>,
    /// Tables copied again.
    pub resynced: Vec<String>,
    /// Tables created on the target.
    pub created: Vec<String>,
    /// Seconds from the request to every table `ready`.
    pub seconds: f64,
}

/// How long a table may take to reach `ready` without any progress being seen.
const STALL: Duration = Duration::from_secs(30 * 60);
/// How long the stream loop waits for the target to apply what came before a change it
/// makes; past that it tries again at its next round.
pub(super) const DDL_CATCH_UP: Duration = Duration::from_secs(20);
/// How long a table may wait for a table-sync worker before barge looks for the reason.
const WORKER_WAIT: Duration = Duration::from_secs(60);

/// Adds the source tables `patterns` select (`schema.table` globs, as `--include-table`) to
/// the sync: created on the target (structure, indexes, constraints, triggers, from a
/// pg_dump of those tables), published, and copied by the target's table synchronization.
pub async fn add(req: &Request, patterns: &[String], sink: Arc<dyn ProgressSink>) -> Result<TablesReport> {
    let started = Instant::now();
    let found = find(req).await?;
    let mut report = TablesReport::default();
    let mut any = false;
    for f in &found {
        let one = add_one(req, f, patterns, sink.clone(), true).await?;
        any |= !one.added.is_empty();
        report.added.extend(one.added);
        report.created.extend(one.created);
    }
    if !any {
        return Err(Error::Invalid(format!(
            "no source table matches {} that the sync does not carry already (the patterns are schema.table globs, as --include-table)",
            patterns.join(", ")
        )));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Stops carrying the tables `patterns` select: removed from the publication and the
/// subscription once the target has applied every change made before they left; their rows
/// stay on the target as they were at that point.
pub async fn remove(req: &Request, patterns: &[String]) -> Result<TablesReport> {
    let started = Instant::now();
    let found = find(req).await?;
    let mut report = TablesReport::default();
    for f in &found {
        let (source, target) = streaming_sides(req, f).await?;
        let published = published(&source, &f.objects.name).await?;
        let subscribed = subscribed(&target, &f.objects.name).await?;
        let carried: HashSet<&String> = published.iter().chain(subscribed.keys()).collect();
        let relations = select(&source, f, patterns).await?;
        let going: Vec<&Relation> = relations.iter().filter(|r| r.kind == 'r' && carried.contains(&key(r))).collect();
        if going.is_empty() {
            continue;
        }
        if going.len() == carried.len() {
            return Err(Error::Refused(format!(
                "that would leave the sync of \"{}\" without a table; to end it, `barge sync stop` (or `barge cutover`)",
                f.objects.source_database
            )));
        }
        if unpublish(&source, &f.objects.name, &published, &pairs(&going)).await? {
            // Changes made before that point still reach the target; once it has applied
            // them, the tables stay on the target as they were when they left.
            caught_up(req, f, &source).await?;
        }
        refresh(&target, f, false).await?;
        let names: Vec<String> = going.iter().map(|r| key(r)).collect();
        record_tables(&BTreeMap::new(), &target, f, &[], &names).await?;
        report.removed.extend(names);
    }
    if report.removed.is_empty() {
        return Err(Error::Invalid(format!("the sync carries no table that {} matches", patterns.join(", "))));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Copies the tables `patterns` select again, while the others stream: each leaves the
/// publication, and once the target has applied everything up to that point it is emptied
/// on the target and joins again, copied by the target's table synchronization.
pub async fn resync(req: &Request, patterns: &[String], sink: Arc<dyn ProgressSink>) -> Result<TablesReport> {
    let started = Instant::now();
    let found = find(req).await?;
    let mut report = TablesReport::default();
    for f in &found {
        report.resynced.extend(resync_one(req, f, patterns, sink.clone(), true).await?.resynced);
    }
    if report.resynced.is_empty() {
        return Err(Error::Invalid(format!("the sync carries no table that {} matches", patterns.join(", "))));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// [`add`] in one database of the sync; without `wait`, the target goes on copying after
/// it returns (the stream loop: `status` shows the tables not ready yet).
pub(super) async fn add_one(
    req: &Request,
    f: &Found,
    patterns: &[String],
    sink: Arc<dyn ProgressSink>,
    wait: bool,
) -> Result<TablesReport> {
    let mut report = TablesReport::default();
    let (source, target) = streaming_sides(req, f).await?;
    let wanted = select(&source, f, patterns).await?;
    let subscribed = subscribed(&target, &f.objects.name).await?;
    let new: Vec<&Relation> = wanted.iter().filter(|r| r.kind == 'r' && !subscribed.contains_key(&key(r))).collect();
    if new.is_empty() {
        return Ok(report);
    }
    check_replicable(&source, f, &new).await?;
    refuse_without_workers(&target).await?;
    // Their structure before they are created on the target: a change in between is one the
    // next status finds (and the target has).
    let structure = shapes(&source).await?;
    // The new tables, and the partitioned tables they are partitions of.
    let creating: Vec<&Relation> =
        wanted.iter().filter(|r| r.kind == 'p' || new.iter().any(|n| n.oid == r.oid)).collect();
    report.created = create_on_target(req, f, &source, &target, &creating).await?;
    publish(&source, f, &new).await?;
    refresh(&target, f, true).await?;
    let names: Vec<String> = new.iter().map(|r| key(r)).collect();
    record_tables(&structure, &target, f, &names, &[]).await?;
    if wait {
        wait_ready(&target, f, &names, &sink).await?;
    }
    report.added = names;
    Ok(report)
}

/// [`resync`] in one database of the sync; `wait` as [`add_one`].
pub(super) async fn resync_one(
    req: &Request,
    f: &Found,
    patterns: &[String],
    sink: Arc<dyn ProgressSink>,
    wait: bool,
) -> Result<TablesReport> {
    let mut report = TablesReport::default();
    let (source, target) = streaming_sides(req, f).await?;
    // The sync's tables are those its record holds: a resync that died half-way left its
    // table out of the publication, still in the record.
    let relations = select(&source, f, patterns).await?;
    let tables: Vec<&Relation> =
        relations.iter().filter(|r| r.kind == 'r' && f.baseline.contains_key(&key(r))).collect();
    if tables.is_empty() {
        return Ok(report);
    }
    refuse_without_workers(&target).await?;
    let published = published(&source, &f.objects.name).await?;
    unpublish(&source, &f.objects.name, &published, &pairs(&tables)).await?;
    // Changes made before that point may still be on their way to the target: once it has
    // applied them, no change of these tables comes any more. (Also when they were out of
    // the publication already: a resync that stopped here left them so.)
    caught_up_within(req, f, &source, if wait { STALL } else { DDL_CATCH_UP }).await?;
    refresh(&target, f, false).await?;
    empty_on_target(&target, &pairs(&tables)).await?;
    publish(&source, f, &tables).await?;
    refresh(&target, f, true).await?;
    let names: Vec<String> = tables.iter().map(|r| key(r)).collect();
    if wait {
        wait_ready(&target, f, &names, &sink).await?;
    }
    report.resynced = names;
    Ok(report)
}

/// `(schema, table)` of relations, as [`unpublish`] and [`empty_on_target`] take them.
fn pairs<'a>(relations: &[&'a Relation]) -> Vec<(&'a str, &'a str)> {
    relations.iter().map(|r| (r.schema.as_str(), r.name.as_str())).collect()
}

/// `schema.table` of a relation, as the record and the messages name it.
fn key(r: &Relation) -> String {
    format!("{}.{}", r.schema, r.name)
}

fn patterns_filter(patterns: &[String]) -> Result<barge_vocab::CompiledFilter> {
    crate::filter::Filter { include_tables: patterns.to_vec(), ..crate::filter::Filter::default() }
        .compile()
        .map_err(|e| Error::Invalid(e.to_string()))
}

/// The source relations `patterns` select in the sync's database, as a copy would: with the
/// partitions of a selected partitioned table, and the partitioned parents of a selected
/// partition.
async fn select(source: &Db, f: &Found, patterns: &[String]) -> Result<Vec<Relation>> {
    let filter = patterns_filter(patterns)?;
    let relations = catalog::relations(source).await?;
    let schemas = catalog::schemas(source).await?;
    let selection = plan::select(&f.objects.source_database, &relations, &schemas, &filter);
    Ok(relations
        .into_iter()
        .filter(|r| selection.selected.contains(&r.oid) && matches!(r.kind, 'r' | 'p'))
        .filter(|r| r.kind == 'p' || r.persistence == 'p')
        .collect())
}

/// The tables of the sync's publication, as `schema.table`.
pub(super) async fn published(source: &Db, name: &str) -> Result<HashSet<String>> {
    let rows = source
        .query(
            "list the publication's tables",
            "select schemaname::text || '.' || tablename::text from pg_catalog.pg_publication_tables where pubname = $1",
            &[&name],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The tables of the sync's subscription, `schema.table` → state letter.
async fn subscribed(target: &Db, name: &str) -> Result<HashMap<String, String>> {
    let rows = target
        .query(
            "list the subscription's tables",
            "select n.nspname::text || '.' || c.relname::text, r.srsubstate::text
             from pg_catalog.pg_subscription_rel r
             join pg_catalog.pg_class c on c.oid = r.srrelid
             join pg_catalog.pg_namespace n on n.oid = c.relnamespace
             where r.srsubid = (select oid from pg_catalog.pg_subscription where subname = $1
                                  and subdbid = (select oid from pg_catalog.pg_database where datname = pg_catalog.current_database()))",
            &[&name],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Connections to both sides of a sync that streams (refused when paused).
async fn streaming_sides(req: &Request, f: &Found) -> Result<(Db, Db)> {
    let source = Db::connect(&req.source, &f.objects.source_database).await?;
    let target = Db::connect(&req.target, &f.objects.target_database).await?;
    refuse_paused(&target, f).await?;
    Ok((source, target))
}

/// A paused subscription cannot be refreshed: say so before changing anything.
async fn refuse_paused(target: &Db, f: &Found) -> Result<()> {
    if subscription_enabled(target, f).await? {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "the sync {} is paused: the target copies tables only while it streams; `barge sync resume` first",
        f.objects.name
    )))
}

/// Tables that could not replicate their updates and deletes are refused, or given
/// `REPLICA IDENTITY FULL` when the sync was started with `--replica-identity-full`.
async fn check_replicable(source: &Db, f: &Found, tables: &[&Relation]) -> Result<()> {
    let rows = source.query("list tables without a primary key", include_str!("../sql/without_key.sql"), &[]).await?;
    let joining: HashSet<String> = tables.iter().map(|r| key(r)).collect();
    let unidentified: Vec<(String, String)> = rows
        .iter()
        .filter(|r| !r.get::<_, bool>(2))
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .filter(|(s, t)| joining.contains(&format!("{s}.{t}")))
        .collect();
    if unidentified.is_empty() {
        return Ok(());
    }
    if !f.settings.replica_identity_full {
        let names: Vec<String> = unidentified.iter().map(|(s, t)| format!("{s}.{t}")).collect();
        return Err(Error::Refused(format!(
            "{} table(s) without a primary key or replica identity: {}; their updates and deletes would not replicate. Give them a primary key on the source (or ALTER TABLE … REPLICA IDENTITY FULL there), then add them",
            names.len(),
            list(&names)
        )));
    }
    for (schema, table) in unidentified {
        identify_fully(source, &schema, &table).await?;
    }
    Ok(())
}

/// Creates on the target the tables of `wanted` it lacks (with their partitioned parents,
/// indexes, constraints and triggers), from a pg_dump of exactly those tables; a table the
/// target already has must be empty, and is kept. Returns the tables created.
async fn create_on_target(
    req: &Request,
    f: &Found,
    source: &Db,
    target: &Db,
    wanted: &[&Relation],
) -> Result<Vec<String>> {
    let existing = table_names(&[target]).await?;
    for r in wanted.iter().filter(|r| r.kind == 'r' && existing.contains_key(&key(r))) {
        let has_rows = target
            .query_opt(
                &format!("look for rows in {}", key(r)),
                &format!("select 1 from {} limit 1", ident::qualified(&r.schema, &r.name)),
                &[],
            )
            .await?
            .is_some();
        if has_rows {
            return Err(Error::Refused(format!(
                "{} already has rows on the target, and the sync would copy them again: empty it there (or drop it), then add it",
                key(r)
            )));
        }
    }
    let missing: Vec<&Relation> = wanted.iter().copied().filter(|r| !existing.contains_key(&key(r))).collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let schemas: BTreeSet<&str> = missing.iter().map(|r| r.schema.as_str()).collect();
    for schema in schemas {
        target
            .batch(&format!("create schema {schema}"), &format!("create schema if not exists {}", ident::quote(schema)))
            .await?;
    }
    let tools = PgTools::locate(req.local.pg_bin.as_deref(), (source.version_num() / 10000) as u32).await?;
    let options = DumpOptions {
        leave_out: f.settings.leave_out(),
        include_tables: missing.iter().map(|r| (r.schema.clone(), r.name.clone())).collect(),
        ..DumpOptions::default()
    };
    let dump = schema::dump(&tools, &req.source, &f.objects.source_database, source.tls(), None, &options).await?;
    let settings = TargetSettings::read(target).await?;
    for (section, entries) in [("pre-data", &dump.pre), ("post-data", &dump.post)] {
        for batch in schema::lock_batches(entries, schema::lock_weight, settings.lock_budget) {
            let refs: Vec<_> = batch.iter().collect();
            let script = if section == "pre-data" {
                dump.pre_data(&refs, &settings).await?
            } else {
                dump.post_data(&refs, &settings).await?
            };
            let what = format!("create the added tables on the target ({section})");
            target.in_transaction(&what, async || schema::run_script(target, &what, &script).await).await?;
        }
    }
    Ok(missing.iter().filter(|r| r.kind == 'r').map(|r| key(r)).collect())
}

/// Adds `tables` to the publication (those not in it yet) and lets the sync's login role
/// read them: the target's table synchronization copies them logged in as that role.
async fn publish(source: &Db, f: &Found, tables: &[&Relation]) -> Result<()> {
    let published = published(source, &f.objects.name).await?;
    let joining: Vec<String> =
        tables.iter().filter(|r| !published.contains(&key(r))).map(|r| ident::qualified(&r.schema, &r.name)).collect();
    if let Some(id) = id_of(&f.objects.name) {
        let role = login::role_name(id);
        let has_role = source
            .query_opt(
                "look for the sync's login role",
                "select 1 from pg_catalog.pg_roles where rolname = $1",
                &[&role],
            )
            .await?
            .is_some();
        if has_role && !tables.is_empty() {
            let all: Vec<String> = tables.iter().map(|r| ident::qualified(&r.schema, &r.name)).collect();
            source
                .batch(
                    "let the sync's login role read the tables it copies",
                    &format!("grant select on table {} to {}", all.join(", "), ident::quote(&role)),
                )
                .await?;
        }
    }
    if joining.is_empty() {
        return Ok(());
    }
    source
        .batch(
            &format!("add tables to the publication {}", f.objects.name),
            &format!("alter publication {} add table {}", ident::quote(&f.objects.name), joining.join(", ")),
        )
        .await
}

/// A table is copied by a table-sync worker, one of the target's logical replication
/// workers (`max_logical_replication_workers`, shared by every subscription's apply worker):
/// none free, and it would wait in state `i` for ever. Refused before anything changes.
async fn refuse_without_workers(target: &Db) -> Result<()> {
    let row = target
        .query_one(
            "count the target's logical replication workers",
            "select pg_catalog.current_setting('max_logical_replication_workers')::int8,
                    (select count(*) from pg_catalog.pg_stat_subscription where pid is not null)::int8",
            &[],
        )
        .await?;
    let (max, used): (i64, i64) = (row.get(0), row.get(1));
    if used >= max {
        return Err(Error::Refused(format!(
            "the target runs {used} of its {max} logical replication workers (max_logical_replication_workers), and copying a table needs one more: raise the setting on the target (it takes a restart; on RDS, the parameter group), or end a subscription there"
        )));
    }
    Ok(())
}

/// Takes those of `tables` still in the publication out of it; whether there were any.
pub(super) async fn unpublish(
    source: &Db,
    name: &str,
    published: &HashSet<String>,
    tables: &[(&str, &str)],
) -> Result<bool> {
    let leaving: Vec<String> = tables
        .iter()
        .filter(|(schema, table)| published.contains(&format!("{schema}.{table}")))
        .map(|(schema, table)| ident::qualified(schema, table))
        .collect();
    if leaving.is_empty() {
        return Ok(false);
    }
    source
        .batch(
            &format!("take tables out of the publication {name}"),
            &format!("alter publication {} drop table {}", ident::quote(name), leaving.join(", ")),
        )
        .await?;
    Ok(true)
}

/// `ALTER SUBSCRIPTION … REFRESH PUBLICATION`: the target takes the publication's tables
/// as they are now, copying the new ones' rows when `copy` is set.
pub(super) async fn refresh(target: &Db, f: &Found, copy: bool) -> Result<()> {
    target
        .batch(
            &format!("refresh the subscription {}", f.objects.name),
            &format!(
                "alter subscription {} refresh publication with (copy_data = {copy})",
                ident::quote(&f.objects.name)
            ),
        )
        .await
}

/// Waits until the slot has confirmed everything the source had written when this began:
/// the target has applied every change made before it.
async fn caught_up(req: &Request, f: &Found, source: &Db) -> Result<()> {
    caught_up_within(req, f, source, STALL).await
}

/// [`caught_up`], waiting at most `limit`.
pub(super) async fn caught_up_within(req: &Request, f: &Found, source: &Db, limit: Duration) -> Result<()> {
    let mark = wal_position(source).await?;
    let started = Instant::now();
    loop {
        let status = status_of(req, std::slice::from_ref(f)).await?;
        if status.databases.iter().all(|d| d.confirmed_bytes >= mark) {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(Error::Refused(format!(
                "the target has not applied the source's changes in {}: the sync is not streaming (`barge sync status`)",
                crate::human::human_duration(limit.as_secs_f64())
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Empties `tables` on the target for a fresh copy: `TRUNCATE` where no other table's
/// foreign key points at them, else `DELETE` with the target's triggers and foreign-key checks
/// off for the session (`session_replication_role = replica`, as the apply itself runs),
/// which needs a superuser.
pub(super) async fn empty_on_target(target: &Db, tables: &[(&str, &str)]) -> Result<()> {
    for (schema, table) in tables {
        let (name, sql_name) = (format!("{schema}.{table}"), ident::qualified(schema, table));
        let referenced: bool = target
            .query_one(
                &format!("look for foreign keys to {name}"),
                "select exists (select 1 from pg_catalog.pg_constraint
                                 where contype = 'f' and confrelid = $1::text::regclass and conrelid <> confrelid)",
                &[&sql_name],
            )
            .await?
            .get(0);
        let sql = if referenced {
            format!("set local session_replication_role = replica; delete from {sql_name}")
        } else {
            format!("truncate {sql_name}")
        };
        let what = format!("empty {name} on the target");
        target.in_transaction(&what, async || target.batch(&what, &sql).await).await.map_err(|e| {
            if referenced && e.sqlstate() == Some(crate::sqlstate::INSUFFICIENT_PRIVILEGE) {
                e.with_hint("other tables' foreign keys point at it: emptying it for a new copy needs a superuser on the target (session_replication_role)")
            } else {
                e
            }
        })?;
    }
    Ok(())
}

/// Waits until every table of `tables` is `ready` in the subscription, reporting the states
/// as they change; fails when the target counts table synchronization errors and nothing
/// moves for a while, or nothing moves at all for [`STALL`].
async fn wait_ready(target: &Db, f: &Found, tables: &[String], sink: &Arc<dyn ProgressSink>) -> Result<()> {
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut moved = Instant::now();
    loop {
        let states = subscribed(target, &f.objects.name).await?;
        let now: BTreeMap<String, String> =
            tables.iter().map(|t| (t.clone(), states.get(t).cloned().unwrap_or_else(|| "?".into()))).collect();
        if now.values().all(|s| s == "r") {
            return Ok(());
        }
        if now != last {
            moved = Instant::now();
            let waiting: Vec<String> =
                now.iter().filter(|(_, s)| *s != "r").map(|(t, s)| format!("{t} ({})", state_name(s))).collect();
            sink.emit(Event::Warning { message: format!("the target is copying: {}", list(&waiting)) });
            last = now;
        }
        if moved.elapsed() > WORKER_WAIT && last.values().any(|s| s == "i") {
            refuse_without_workers(target).await?;
        }
        if moved.elapsed() > STALL {
            return Err(Error::Refused(format!(
                "no table moved on for {}: {} (the target's server log says why; `barge sync status` shows the states)",
                crate::human::human_duration(STALL.as_secs_f64()),
                last.iter().map(|(t, s)| format!("{t} ({})", state_name(s))).collect::<Vec<_>>().join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A `pg_subscription_rel.srsubstate` letter in words.
fn state_name(state: &str) -> &'static str {
    match state {
        "i" => "waiting to copy",
        "d" => "copying",
        "f" => "copied, catching up",
        "s" => "caught up",
        "r" => "ready",
        _ => "not subscribed yet",
    }
}

/// Records `added` and `removed` tables in the sync's record: the fingerprint then holds
/// the structure of exactly the tables the sync carries, and a removed table that the
/// sync's filters select is not reported as a new table.
async fn record_tables(
    now: &BTreeMap<String, Shape>,
    target: &Db,
    f: &Found,
    added: &[String],
    removed: &[String],
) -> Result<()> {
    let mut baseline = f.baseline.clone();
    let mut settings = f.settings.clone();
    for table in added {
        if let Some(shape) = now.get(table) {
            baseline.insert(table.clone(), Recorded::Shape(shape.clone()));
        }
        settings.removed.remove(table);
    }
    for table in removed {
        baseline.remove(table);
        settings.removed.insert(table.clone());
    }
    update_record(target, &f.objects.name, &baseline, &settings).await
}
