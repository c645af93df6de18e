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
        let changes: Vec<String> = pending(&source, &target, f).await?.iter().map(|c| c.describe()).collect();
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
        if !status.schema_changes.is_empty() || found.iter().any(|f| f.settings.ddl_paused) {
            // Additive changes are applied now; a sync waiting for others is paused, and
            // resumed once none is left.
            for f in &found {
                if let Err(e) = reconcile(req, f, Mode::Stream, &sink).await {
                    sink.emit(Event::Warning {
                        message: format!("the source's schema changes could not be applied yet: {e}"),
                    });
                }
            }
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

/// The structure of the tables the filters select, as of the slot's snapshot (or now): what
/// the sync's record starts with.
pub(super) async fn fingerprint_in_snapshot(
    req: &Request,
    db: &DatabasePlan,
    filter: &CompiledFilter,
    snapshot: Option<&str>,
) -> Result<BTreeMap<String, Recorded>> {
    let source = Db::connect(&req.source, &db.source).await?;
    if let Some(snapshot) = snapshot {
        source.enter_snapshot(snapshot).await?;
    }
    let read = async {
        let selected = selected(&source, &db.source, filter).await?;
        Ok::<_, Error>(
            shapes(&source)
                .await?
                .into_iter()
                .filter(|(t, _)| selected.contains(t))
                .map(|(t, s)| (t, Recorded::Shape(s)))
                .collect(),
        )
    };
    let shapes = read.await;
    if snapshot.is_some() {
        let _ = source.batch("close the snapshot", "commit").await;
    }
    shapes
}

/// `schema.table` of the relations the filters select in `database`.
pub(super) async fn selected(source: &Db, database: &str, filter: &CompiledFilter) -> Result<HashSet<String>> {
    let relations = catalog::relations(source).await?;
    let schemas = catalog::schemas(source).await?;
    let selection = plan::select(database, &relations, &schemas, filter);
    Ok(relations
        .iter()
        .filter(|r| selection.selected.contains(&r.oid))
        .map(|r| format!("{}.{}", r.schema, r.name))
        .collect())
}

/// The error for changed source objects: replication stops before the data diverges.
pub(super) fn schema_changed(changes: &[String]) -> Error {
    Error::SchemaChanged(format!(
        "the source's schema changed while syncing ({}); logical replication does not carry DDL, so the target must follow first: \
         `barge sync apply-ddl` applies what only adds to the target, `--destructive` also runs the statements named",
        changes.join("; ")
    ))
}
