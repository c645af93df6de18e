//! Continuous replication after the copy (docs/design-notes.md 12–13).
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
//!
//! One module per concern: `preflight` (the checks before anything changes), `setup`
//! ([`start`]), `resume` (a copy that died, continued by [`start`] with `--resume`),
//! `status` ([`status`] and the [`stream`] loop), `cutover` ([`cutover`]), `teardown`
//! ([`stop`] and the removal every failure path uses), `objects` (the names and finding them
//! again), `pause` ([`pause`], [`resume`]), `guard` (the WAL a slot keeps on the source),
//! `tables` ([`add`], [`remove`], [`resync`]) and `ddl` (the source's schema changes,
//! [`apply_ddl`]). The types callers see are here.

mod cutover;
mod ddl;
mod guard;
mod objects;
mod pause;
mod preflight;
mod resume;
mod setup;
mod status;
mod tables;
mod teardown;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    db::Db,
    error::Result,
    init::InitReport,
    login::Login,
    plan::types::{DatabasePlan, TableKind},
    request::Request,
    verify::VerifyReport,
};

// Siblings share what each defines (they `use super::*`).
#[allow(unused_imports)]
use self::{
    cutover::*, ddl::*, guard::*, objects::*, pause::*, preflight::*, setup::*, status::*, tables::*, teardown::*,
};

pub use crate::progress::{DatabaseSync, ReplicationStatus};
pub use cutover::cutover;
pub use ddl::{DdlReport, apply_ddl};
pub use guard::guard;
pub use objects::{WalGuard, check_id, new_id};
pub use pause::{PauseReport, pause, resume};
pub(crate) use preflight::preflight;
pub use setup::start;
pub use status::{status, stream};
pub use tables::{TablesReport, add, remove, resync};
pub use teardown::stop;

/// What the one who started a sync asks of it while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Keep going.
    Run,
    /// Cut over as soon as the target streams (remote jobs).
    Cutover,
    /// Stop and remove everything barge created on both sides.
    Cancel,
    /// Stop watching: during the copy the slot, publication and progress marks stay for a
    /// later `--resume`; once streaming, replication goes on for a later run to find.
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

/// How a [`stream`] ended without an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// A cutover was asked for.
    Cutover,
    /// The caller detached; replication goes on.
    Detached,
}

/// Options of a cutover.
#[derive(Clone, Debug)]
pub struct CutoverOptions {
    /// Longest wait for the target to catch up; replication stays as it was when it passes.
    pub timeout: Duration,
}

/// How the target's subscription reaches the source's `database`: with TLS exactly when
/// barge's own connection to it has TLS (and then verified).
pub(super) async fn subscription_conninfo(req: &Request, database: &str, login: &Login) -> Result<String> {
    let source = Db::connect(&req.source, database).await?;
    req.source.libpq_conninfo(database, source.tls(), login.credentials())
}

/// The tables whose rows replicate: copied with rows, and logged.
pub(super) fn published_tables(db: &DatabasePlan) -> Vec<&crate::plan::types::TablePlan> {
    db.tables.iter().filter(|t| !t.schema_only && t.kind != TableKind::Unlogged).collect()
}

/// One database's replication streaming with nothing to do: for unit tests to change.
#[cfg(test)]
pub(super) fn streaming_database() -> DatabaseSync {
    DatabaseSync {
        name: "barge_x_0".into(),
        source_database: "s".into(),
        target_database: "t".into(),
        slot_active: true,
        wal_status: Some("reserved".into()),
        enabled: true,
        workers: 1,
        lag_bytes: 0,
        lag_seconds: Some(0.0),
        tables: 1,
        tables_not_ready: vec![],
        apply_errors: Some(0),
        schema_changes: vec![],
        applied_rows: 0,
        confirmed_bytes: 0,
        retained_bytes: 0,
        safe_wal_bytes: None,
        keep_limit_bytes: None,
        failover: None,
        invalidated: None,
    }
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
    fn rates_come_from_two_statuses() {
        let db = |rows, bytes| DatabaseSync {
            applied_rows: rows,
            confirmed_bytes: bytes,
            retained_bytes: bytes,
            ..streaming_database()
        };
        let earlier =
            ReplicationStatus { databases: vec![db(100, 1000)], retained_bytes: 1000, ..ReplicationStatus::default() };
        let later =
            ReplicationStatus { databases: vec![db(300, 5000)], retained_bytes: 5000, ..ReplicationStatus::default() };
        let rated = later.with_rates(&earlier, 2.0);
        assert_eq!(rated.apply_rows_per_second, Some(100.0));
        assert_eq!(rated.apply_bytes_per_second, Some(2000.0));
        assert_eq!(rated.retained_bytes_per_second, Some(2000.0));
        assert!(rated.streaming());
        assert!(rated.summary().contains("100 rows/s"), "{}", rated.summary());
    }
}
