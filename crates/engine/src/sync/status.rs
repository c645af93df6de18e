//! Where a sync stands: lag read from both sides, per-table states, the source's schema
//! compared with the one copied; and the stream loop that reports it until a cutover or a
//! cancel.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use super::*;
use crate::{
    catalog,
    db::Db,
    error::{Error, Result},
    filter::CompiledFilter,
    plan::{self, types::DatabasePlan},
    progress::{Event, ProgressSink},
    request::Request,
};

/// Where the replication stands: lag from both sides, per-table states, and schema changes
/// on the source since the copy.
pub async fn status(req: &Request) -> Result<ReplicationStatus> {
    let found = find(req).await?;
    status_of(req, &found).await
}

pub(super) async fn status_of(req: &Request, found: &[Found]) -> Result<ReplicationStatus> {
    let mut status = ReplicationStatus::default();
    for f in found {
        let source = Db::connect(&req.source, &f.objects.source_database).await?;
        let target = Db::connect(&req.target, &f.objects.target_database).await?;
        let slot =
            source.query_opt("read the slot", include_str!("../sql/slot_status.sql"), &[&f.objects.name]).await?;
        let Some(slot) = slot else {
            return Err(Error::Refused(format!(
                "the replication slot {} is gone from the source database \"{}\": replication cannot continue; run `barge sync stop` and copy again",
                f.objects.name, f.objects.source_database
            )));
        };
        let sub = target
            .query_opt("read the subscription", include_str!("../sql/subscription_status.sql"), &[&f.objects.name])
            .await?
            .ok_or_else(|| Error::Internal(format!("subscription {} vanished while reading it", f.objects.name)))?;
        let apply_errors = if target.version_num() >= 150000 {
            target
                .query_opt(
                    "read apply errors",
                    "select apply_error_count::int8 from pg_catalog.pg_stat_subscription_stats where subname = $1",
                    &[&f.objects.name],
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
        let now = watched(&source, f).await?;
        let changes = schema_changes(&f.baseline, &now);
        status.schema_changes.extend(changes.iter().map(|c| format!("{}: {c}", f.objects.source_database)));
        let retained_bytes = slot.get::<_, Option<i64>>("retained_bytes").unwrap_or(0).max(0) as u64;
        status.retained_bytes = status.retained_bytes.max(retained_bytes);
        status.lag_bytes = status.lag_bytes.max(lag_bytes);
        status.lag_seconds = match (status.lag_seconds, lag_seconds) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let db = DatabaseSync {
            name: f.objects.name.clone(),
            source_database: f.objects.source_database.clone(),
            target_database: f.objects.target_database.clone(),
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
            retained_bytes,
            safe_wal_bytes: slot.get::<_, Option<i64>>("safe_wal_bytes").map(|b| b.max(0) as u64),
            keep_limit_bytes: slot.get::<_, Option<i64>>("keep_limit_bytes").map(|b| b.max(0) as u64),
            failover: slot.get("failover"),
            invalidated: slot.get("invalidated"),
        };
        let alerts = guard::alerts(&db, &f.settings.wal);
        status.wal_limit_reached |= alerts.iter().any(|a| a.limit);
        status.wal_alerts.extend(alerts.into_iter().map(|a| a.message));
        status.databases.push(db);
    }
    Ok(status)
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
    let mut found = find(req).await?;
    let mut previous: Option<(ReplicationStatus, Instant)> = None;
    loop {
        // Read again each round: `add`, `remove` and `resync` change the record meanwhile.
        match find(req).await {
            Ok(now) => found = now,
            Err(e) => tracing::debug!(error = %e, "the sync's record could not be read again; using the last one"),
        }
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
        let lost = status.invalidated();
        if !lost.is_empty() {
            // The slot no longer holds what the target needs: nothing can stream again.
            remove_found(req, &found, &sink).await?;
            return Err(Error::Refused(format!(
                "the source invalidated the replication slot of {} and removed WAL the target had not received;                  barge removed the replication, the target keeps the rows it had. Sync again: barge init --sync --drop-existing",
                lost.join(", ")
            )));
        }
        enforce(req, &found, &status, &sink).await?;
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

/// The structure digests of the tables the filters select, as of the slot's snapshot.
pub(super) async fn fingerprint_in_snapshot(
    req: &Request,
    db: &DatabasePlan,
    filter: &CompiledFilter,
    snapshot: &str,
) -> Result<BTreeMap<String, String>> {
    let source = Db::connect(&req.source, &db.source).await?;
    source.enter_snapshot(snapshot).await?;
    let digests = fingerprint(&source, &db.source, filter).await;
    let _ = source.batch("close the snapshot", "commit").await;
    digests
}

/// `schema.table` → digest, for the tables the filters select in `database`.
pub(super) async fn fingerprint(
    source: &Db,
    database: &str,
    filter: &CompiledFilter,
) -> Result<BTreeMap<String, String>> {
    let selected = selected(source, database, filter).await?;
    Ok(fingerprint_all(source).await?.into_iter().filter(|(t, _)| selected.contains(t)).collect())
}

/// The digests of the tables a sync watches: those it carries, and those its filters select
/// that were not taken out of it (a new one is a change: its rows would not replicate).
pub(super) async fn watched(source: &Db, f: &Found) -> Result<BTreeMap<String, String>> {
    let selected = selected(source, &f.objects.source_database, &f.filter.compile()?).await?;
    Ok(fingerprint_all(source)
        .await?
        .into_iter()
        .filter(|(t, _)| f.baseline.contains_key(t) || (selected.contains(t) && !f.settings.removed.contains(t)))
        .collect())
}

/// `schema.table` of the relations the filters select in `database`.
async fn selected(source: &Db, database: &str, filter: &CompiledFilter) -> Result<HashSet<String>> {
    let relations = catalog::relations(source).await?;
    let schemas = catalog::schemas(source).await?;
    let selection = plan::select(database, &relations, &schemas, filter);
    Ok(relations
        .iter()
        .filter(|r| selection.selected.contains(&r.oid))
        .map(|r| format!("{}.{}", r.schema, r.name))
        .collect())
}

/// `schema.table` → digest, for every table of the source database.
pub(super) async fn fingerprint_all(source: &Db) -> Result<BTreeMap<String, String>> {
    let rows = source.query("read the schema fingerprint", include_str!("../sql/schema_fingerprint.sql"), &[]).await?;
    Ok(rows
        .iter()
        .map(|r| (format!("{}.{}", r.get::<_, String>("schema"), r.get::<_, String>("name")), r.get("digest")))
        .collect())
}

/// What changed between two fingerprints, named.
pub(super) fn schema_changes(baseline: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
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

/// The error for changed source objects: replication stops before the data diverges.
pub(super) fn schema_changed(changes: &[String]) -> Error {
    Error::SchemaChanged(format!(
        "the source's schema changed while syncing ({}); logical replication does not carry DDL, so the target would diverge. \
         Apply the same change to the target and copy again, or revert it on the source",
        changes.join("; ")
    ))
}
