//! What a sync creates, and finding it again: the names (`barge_<id>_<n>` for slot,
//! publication and subscription; `barge_<id>_login` for its login role) and the record in
//! `_barge.sync` of each target database, written in the transaction that creates the
//! subscription.

use std::{
    collections::{BTreeMap, HashSet},
    hash::{BuildHasher, Hasher},
};

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
    /// The source's schema fingerprint when the copy was taken.
    pub(super) baseline: BTreeMap<String, String>,
    /// The filters of the run that set it up (status compares the tables they select).
    pub(super) filter: crate::filter::Filter,
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
                "select source_database, fingerprint::text, filter::text from _barge.sync where name = $1",
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
        let baseline: BTreeMap<String, String> = serde_json::from_str(&record.get::<_, String>(1))
            .map_err(|e| Error::Internal(format!("the sync record of {name} is unreadable: {e}")))?;
        let filter: crate::filter::Filter = serde_json::from_str(&record.get::<_, String>(2))
            .map_err(|e| Error::Internal(format!("the sync record of {name} is unreadable: {e}")))?;
        let objects = Objects { name, source_database: record.get(0), target_database: database };
        found.push(Found { objects, baseline, filter });
    }
    Ok(found)
}
