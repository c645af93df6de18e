//! The source's disk: a slot keeps every WAL segment from its restart position on, so a sync
//! that stops consuming (paused, a target that cannot apply, a network cut) fills the
//! source's disk, or gets its slot invalidated by `max_slot_wal_keep_size`. The guard says so
//! at the thresholds the sync was started with, and at the limit stops or pauses the sync
//! (docs/sync.md, "The source's disk").

use std::sync::Arc;

use barge_vocab::WalLimitAction;

use super::*;
use crate::{
    error::{Error, Result},
    human::human_bytes,
    progress::{Event, ProgressSink},
    request::Request,
};

/// One thing the guard says about a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Alert {
    pub(super) message: String,
    /// The sync's limit is reached: the guard acts.
    pub(super) limit: bool,
}

/// Share of `max_slot_wal_keep_size` left below which a slot is said to be close to
/// invalidation, whatever thresholds the user set.
const CLOSE_TO_LOST: f64 = 0.2;

/// What the guard says about one database's slot.
pub(super) fn alerts(db: &DatabaseSync, guard: &WalGuard) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let retained = human_bytes(db.retained_bytes);
    if let Some(reason) = &db.invalidated {
        alerts.push(Alert {
            message: format!(
                "{}: the source invalidated the slot ({reason}) and removed WAL the target had not received: \
                 the sync cannot catch up. Remove it (`barge sync stop`) and sync again (`barge init --sync --drop-existing`)",
                db.name
            ),
            limit: false,
        });
        return alerts;
    }
    if let Some(limit) = guard.limit_bytes
        && db.retained_bytes >= limit
    {
        let action = match guard.on_limit {
            WalLimitAction::Stop => "barge stops the sync: the source frees the WAL, the target keeps its copy",
            WalLimitAction::Pause => "barge pauses the sync and leaves the slot in place",
        };
        alerts.push(Alert {
            message: format!(
                "{}: the slot keeps {retained} of WAL on the source, over the sync's limit of {} ({action})",
                db.name,
                human_bytes(limit)
            ),
            limit: true,
        });
    } else if let Some(warn) = guard.warn_bytes
        && db.retained_bytes >= warn
    {
        alerts.push(Alert {
            message: format!(
                "{}: the slot keeps {retained} of WAL on the source, over the sync's warning threshold of {}",
                db.name,
                human_bytes(warn)
            ),
            limit: false,
        });
    }
    if let (Some(safe), Some(keep)) = (db.safe_wal_bytes, db.keep_limit_bytes)
        && keep > 0
        && (safe as f64) < keep as f64 * CLOSE_TO_LOST
    {
        alerts.push(Alert {
            message: format!(
                "{}: the source invalidates the slot after {} more WAL (max_slot_wal_keep_size {}): \
                 resume the sync or let the target catch up",
                db.name,
                human_bytes(safe),
                human_bytes(keep)
            ),
            limit: false,
        });
    }
    alerts
}

/// Acts on a status whose WAL limit is reached, as the sync's settings say: `Stop` removes
/// the replication and fails with what happened; `Pause` disables the subscriptions that
/// still stream and returns what it did.
pub(super) async fn enforce(
    req: &Request,
    found: &[Found],
    status: &ReplicationStatus,
    sink: &Arc<dyn ProgressSink>,
) -> Result<Option<String>> {
    if !status.wal_limit_reached {
        return Ok(None);
    }
    let over: Vec<&Found> = found
        .iter()
        .filter(|f| {
            let db = status.databases.iter().find(|d| d.name == f.objects.name);
            db.is_some_and(|d| alerts(d, &f.settings.wal).iter().any(|a| a.limit))
        })
        .collect();
    let stop = over.iter().any(|f| f.settings.wal.on_limit == WalLimitAction::Stop);
    let what = status.wal_alerts.iter().filter(|a| a.contains("over the sync's limit")).cloned().collect::<Vec<_>>();
    if stop {
        remove_found(req, found, sink).await?;
        return Err(Error::Stopped(format!(
            "{}; barge removed the replication (subscription, slot, publication); the target keeps the rows it had. \
             To follow the source again, sync anew: barge init --sync --drop-existing",
            what.join("; ")
        )));
    }
    let mut paused = Vec::new();
    for f in over {
        if pause_one(req, f).await? {
            paused.push(f.objects.name.clone());
        }
    }
    if paused.is_empty() {
        return Ok(None);
    }
    let message = format!("{}; paused {}: `barge sync resume` streams again", what.join("; "), paused.join(", "));
    sink.emit(Event::Warning { message: message.clone() });
    Ok(Some(message))
}

/// Acts on `status` as the sync's WAL limit says, for a watcher other than [`stream`]
/// (`barge sync status --watch`): what it did, or the error that stopped the sync.
pub async fn guard(req: &Request, status: &ReplicationStatus, sink: Arc<dyn ProgressSink>) -> Result<Option<String>> {
    if !status.wal_limit_reached {
        return Ok(None);
    }
    let found = find(req).await?;
    enforce(req, &found, status, &sink).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(retained: u64) -> DatabaseSync {
        DatabaseSync { retained_bytes: retained, ..streaming_database() }
    }

    #[test]
    fn thresholds_warn_then_act() {
        let guard = WalGuard { warn_bytes: Some(100), limit_bytes: Some(1000), on_limit: WalLimitAction::Pause };
        assert!(alerts(&db(99), &guard).is_empty());
        let warned = alerts(&db(100), &guard);
        assert_eq!(warned.len(), 1);
        assert!(!warned[0].limit && warned[0].message.contains("warning threshold"), "{warned:?}");
        let over = alerts(&db(5000), &guard);
        assert_eq!(over.len(), 1, "the limit says it all: {over:?}");
        assert!(over[0].limit && over[0].message.contains("pauses"), "{over:?}");
        assert!(alerts(&db(u64::MAX), &WalGuard::default()).is_empty(), "no thresholds, no alerts");
    }

    #[test]
    fn a_slot_near_the_servers_limit_or_lost_is_named_with_the_way_out() {
        let mut near = db(0);
        (near.safe_wal_bytes, near.keep_limit_bytes) = (Some(10 << 20), Some(1 << 30));
        let said = alerts(&near, &WalGuard::default());
        assert!(said[0].message.contains("invalidates the slot after 10.0 MiB"), "{said:?}");
        let mut lost = db(0);
        lost.invalidated = Some("wal_removed".into());
        let said = alerts(&lost, &WalGuard { limit_bytes: Some(1), ..WalGuard::default() });
        assert_eq!(said.len(), 1);
        assert!(said[0].message.contains("barge sync stop") && !said[0].limit, "{said:?}");
    }
}
