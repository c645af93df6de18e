//! The switch-over: the target catches up, sequences take the source's positions, the
//! replication objects go, and source and target are compared.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::*;
use crate::{
    db::Db,
    error::{Error, Result},
    human::human_bytes,
    init::{self},
    progress::{Event, ProgressSink},
    request::Request,
    verify::{self, VerifyReport},
};

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
    let lost = status.invalidated();
    if !lost.is_empty() {
        return Err(Error::Refused(format!(
            "the source invalidated the replication slot of {}: the target misses changes it can no longer receive, and a cutover would lose them. Remove the sync (`barge sync stop`) and sync again",
            lost.join(", ")
        )));
    }
    let paused: Vec<&str> = status.databases.iter().filter(|d| d.paused()).map(|d| d.name.as_str()).collect();
    if !paused.is_empty() {
        return Err(Error::Refused(format!(
            "the sync is paused ({}): the target applies nothing until `barge sync resume`, and a cutover waits for it to apply everything",
            paused.join(", ")
        )));
    }
    let started = Instant::now();
    let deadline = started + options.timeout;
    let mut report = CutoverReport::default();
    // Where each source stands now: the target must have applied at least this much.
    let mut marks = Vec::new();
    for f in &found {
        let source = Db::connect(&req.source, &f.objects.source_database).await?;
        let lsn = wal_position(&source).await?;
        marks.push((source, lsn));
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
                crate::human::human_duration(options.timeout.as_secs_f64()),
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
        let target = Db::connect(&req.target, &f.objects.target_database).await?;
        report.sequences += init::copy_sequences(source, &target).await?;
    }
    remove_found(req, &found, &sink).await?;
    report.names = found.iter().map(|f| f.objects.name.clone()).collect();
    // Verify compares what the sync covered, with the filters it was set up with.
    report.verify = VerifyReport { ok: true, databases: Vec::new() };
    for f in &found {
        let mut one = req.clone();
        one.options.all_databases = false;
        one.source = req.source.with_dbname(&f.objects.source_database);
        one.target = req.target.with_dbname(&f.objects.target_database);
        one.filter =
            crate::filter::Filter { include_databases: Vec::new(), exclude_databases: Vec::new(), ..f.filter.clone() };
        one.local.tables = Some(f.baseline.keys().cloned().collect());
        let db = verify::verify(&one).await?;
        report.verify.ok &= db.ok;
        report.verify.databases.extend(db.databases);
    }
    Ok(report)
}

/// Removes every object in `found`, reporting what could not be removed as warnings; fails
/// only when something is left behind.
pub(super) async fn remove_found(req: &Request, found: &[Found], sink: &Arc<dyn ProgressSink>) -> Result<StopReport> {
    let created: Vec<Objects> = found.iter().map(|f| f.objects.clone()).collect();
    let (removed, failures) = remove_objects(req, &created).await;
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

/// Where the source's WAL is now, in bytes since 0/0 (as a slot's confirmed position is
/// reported): the target has applied everything before it once its slot confirms this much.
pub(super) async fn wal_position(source: &Db) -> Result<u64> {
    let lsn: i64 = source
        .query_one(
            "read the source's WAL position",
            "select pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0')::int8",
            &[],
        )
        .await?
        .get(0);
    Ok(lsn.max(0) as u64)
}
