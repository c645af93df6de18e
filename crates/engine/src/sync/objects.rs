//! What a sync creates, and finding it again: the names (`barge_<id>_<n>` for slot,
//! publication and subscription; `barge_<id>_login` for its login role) and the record in
//! `_barge.sync` of each target database, written in the transaction that creates the
//! subscription.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    hash::{BuildHasher, Hasher},
};

use barge_vocab::WalLimitAction;
use serde::{Deserialize, Serialize};

use super::Recorded;
use crate::{
    db::Db,
    error::{Error, Result},
    request::Request,
    sqlstate,
};

/// The prefix of everything a sync with `id` creates.
pub(super) fn prefix(id: &str) -> String {
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

/// `barge_<id>_<n>` → `<id>`.
pub(super) fn id_of(name: &str) -> Option<&str> {
    name.strip_prefix("barge_").and_then(|rest| rest.rsplit_once('_')).map(|(id, _)| id)
}

/// One database's replication objects: the slot and publication on the source and the
/// subscription on the target, all named `name` (`barge_<id>_<n>`). What a sync created so
/// far (for removal on failure), and what `find` finds again.
#[derive(Clone, Debug)]
pub(super) struct Objects {
    pub(super) name: String,
    pub(super) source_database: String,
    pub(super) target_database: String,
}

/// A database's objects as recorded on the target, with what the copy covered.
#[derive(Clone, Debug)]
pub(super) struct Found {
    pub(super) objects: Objects,
    /// The structure of the tables the sync carries, as the target has it (docs/sync.md,
    /// "Schema changes").
    pub(super) baseline: BTreeMap<String, Recorded>,
    /// The filters of the run that set it up (status compares the tables they select).
    pub(super) filter: crate::filter::Filter,
    /// What the sync was started with that later runs act on.
    pub(super) settings: Settings,
}

/// What a sync keeps in its record for the runs after the one that started it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Settings {
    /// The WAL guard's thresholds.
    #[serde(default)]
    pub(super) wal: WalGuard,
    /// Tables added later without a key get `REPLICA IDENTITY FULL`, as at the start.
    #[serde(default)]
    pub(super) replica_identity_full: bool,
    /// Ownership, grants and tablespaces left out of the copy: left out of tables added later.
    #[serde(default)]
    pub(super) no_owner: bool,
    #[serde(default)]
    pub(super) no_acl: bool,
    #[serde(default)]
    pub(super) no_tablespaces: bool,
    /// Tables taken out of the sync (`barge sync remove`): not reported as new tables when
    /// the sync's filters select them.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) removed: BTreeSet<String>,
    /// Paused by barge for a schema change it does not apply unasked: `apply-ddl` resumes it.
    #[serde(default)]
    pub(super) ddl_paused: bool,
}

impl Settings {
    pub(super) fn from_options(options: &crate::request::Options) -> Settings {
        Settings {
            wal: WalGuard {
                warn_bytes: options.wal_warn,
                limit_bytes: options.wal_limit,
                on_limit: options.on_wal_limit.unwrap_or_default(),
            },
            replica_identity_full: options.replica_identity_full,
            no_owner: options.no_owner,
            no_acl: options.no_acl,
            no_tablespaces: options.no_tablespaces,
            removed: BTreeSet::new(),
            ddl_paused: false,
        }
    }

    /// What the copy left out, for the tables added later.
    pub(super) fn leave_out(&self) -> crate::pgtools::LeaveOut {
        crate::pgtools::LeaveOut { owner: self.no_owner, acl: self.no_acl, tablespaces: self.no_tablespaces }
    }
}

/// Writes a sync's tables (their structure as the sync expects it) and settings back to its
/// record.
pub(super) async fn update_record(
    target: &Db,
    name: &str,
    baseline: &BTreeMap<String, Recorded>,
    settings: &Settings,
) -> Result<()> {
    let fingerprint = serde_json::to_string(baseline).map_err(|e| Error::Internal(e.to_string()))?;
    let settings = serde_json::to_string(settings).map_err(|e| Error::Internal(e.to_string()))?;
    let tables = baseline.len() as i64;
    target.batch("bring the sync record up to date", include_str!("../sql/sync_record.sql")).await?;
    target
        .execute(
            "update the sync record",
            "update _barge.sync set fingerprint = $2::text::jsonb, settings = $3::text::jsonb, tables = $4 where name = $1",
            &[&name, &fingerprint, &settings, &tables],
        )
        .await?;
    Ok(())
}

/// Whether the sync's subscription in the target database `target` is enabled; an error
/// naming it when it is gone.
pub(super) async fn subscription_enabled(target: &Db, f: &Found) -> Result<bool> {
    Ok(target
        .query_opt(
            "read the subscription",
            "select subenabled from pg_catalog.pg_subscription where subname = $1 \
               and subdbid = (select oid from pg_catalog.pg_database where datname = pg_catalog.current_database())",
            &[&f.objects.name],
        )
        .await?
        .ok_or_else(|| Error::NotFound(format!("the subscription {} is gone from the target", f.objects.name)))?
        .get(0))
}

/// When the WAL a slot keeps on the source calls for a warning, and for action
/// (docs/sync.md, "The source's disk").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WalGuard {
    /// Warn above this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_bytes: Option<u64>,
    /// Act above this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    /// What acting means.
    #[serde(default)]
    pub on_limit: WalLimitAction,
}

/// Finds the barge subscriptions on the target (the target URL's database only, when it
/// names one and not every database is asked for), narrowed to `id` when given: one sync, or
/// an error that says there is none or several.
pub(super) async fn find(req: &Request) -> Result<Vec<Found>> {
    let found = find_all(req).await?;
    if found.is_empty() {
        return Err(Error::NotFound(format!(
            "no barge replication on the target {}{}: start one with `barge init --sync`",
            req.target.endpoint(),
            if req.local.sync_id.is_some() { " with that sync id" } else { "" }
        )));
    }
    one_sync(&found)?;
    Ok(found)
}

/// Refuses subscriptions of more than one sync.
pub(super) fn one_sync(found: &[Found]) -> Result<()> {
    let ids: HashSet<&str> = found.iter().filter_map(|f| id_of(&f.objects.name)).collect();
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
pub(super) async fn find_all(req: &Request) -> Result<Vec<Found>> {
    let (admin, _) = crate::db::connect_admin(&req.target).await?;
    let only_db = req.target.dbname().map(str::to_owned);
    let pattern = match &req.local.sync_id {
        Some(id) => {
            check_id(id)?;
            format!("{}%", prefix(id).replace('_', "\\_"))
        }
        None => "barge\\_%".to_owned(),
    };
    let rows =
        admin.query("list barge subscriptions", include_str!("../sql/sync_subscriptions.sql"), &[&pattern]).await?;
    // The target URL's database narrows the search, unless every database is asked for
    // (the URL then names only the database to connect to): another database's sync on the
    // same server is not this one's.
    let only_db = only_db.filter(|_| !req.options.all_databases);
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
                // `settings` came later: read so that a record without it still reads.
                "select source_database, fingerprint::text, filter::text, \
                        coalesce(pg_catalog.to_jsonb(s) -> 'settings', '{}')::text \
                 from _barge.sync s where name = $1",
                &[&name],
            )
            .await;
        let record = match record {
            Ok(Some(row)) => row,
            // A subscription named like barge's without its record is not barge's.
            Ok(None) => continue,
            Err(e)
                if e.sqlstate() == Some(sqlstate::UNDEFINED_TABLE)
                    || e.sqlstate() == Some(sqlstate::INVALID_SCHEMA_NAME) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let baseline: BTreeMap<String, Recorded> = serde_json::from_str(&record.get::<_, String>(1))
            .map_err(|e| Error::Internal(format!("the sync record of {name} is unreadable: {e}")))?;
        let filter: crate::filter::Filter = serde_json::from_str(&record.get::<_, String>(2))
            .map_err(|e| Error::Internal(format!("the sync record of {name} is unreadable: {e}")))?;
        let settings: Settings = serde_json::from_str(&record.get::<_, String>(3))
            .map_err(|e| Error::Internal(format!("the sync record of {name} is unreadable: {e}")))?;
        let objects = Objects { name, source_database: record.get(0), target_database: database };
        found.push(Found { objects, baseline, filter, settings });
    }
    Ok(found)
}
