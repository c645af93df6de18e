//! Removing a sync's replication objects without a cutover (`sync stop`, a cancel, a
//! failure): each object attempted even when another fails; never another sync's.

use std::time::{Duration, Instant};

use super::*;
use crate::{
    conninfo::ConnInfo,
    db::Db,
    error::{Error, Result},
    ident,
    login::{self},
    request::Request,
    sqlstate,
};

/// Removes one sync's replication without cutting over; the copied data stays. The sync is
/// the one `--sync-id` names, or the one whose subscriptions the target holds; the source's
/// slots and publications of that sync go too (also those whose subscription never came to
/// be: a copy that died). Nothing of another sync is touched: the source may feed other
/// targets, whose slots look the same from there.
pub async fn stop(req: &Request) -> Result<StopReport> {
    let found = find_all(req).await?;
    one_sync(&found)?;
    let id = match (&req.local.sync_id, found.first().and_then(|f| id_of(&f.objects.name))) {
        (Some(id), _) => id.clone(),
        (None, Some(id)) => id.to_owned(),
        (None, None) => return Err(no_sync_here(req).await),
    };
    let mut created: Vec<Objects> = found.into_iter().map(|f| f.objects).collect();
    let (source_admin, _) = crate::db::connect_admin(&req.source).await?;
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
            let target_database = req
                .target
                .dbname()
                .filter(|_| !req.options.all_databases)
                .map_or_else(|| database.clone(), str::to_owned);
            created.push(Objects { name, source_database: database, target_database });
        }
    }
    if created.is_empty() {
        // What a sync that died before its first publication left.
        if login::drop_role(&req.source, &id).await? {
            return Ok(StopReport { removed: vec![format!("login role {}", login::role_name(&id))] });
        }
        return Err(Error::NotFound(format!(
            "no barge replication found on the source {} or the target {}",
            req.source.endpoint(),
            req.target.endpoint()
        )));
    }
    let (removed, failures) = remove_objects(req, &created).await;
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
pub(super) async fn no_sync_here(req: &Request) -> Error {
    let slots = async {
        let (source, _) = crate::db::connect_admin(&req.source).await?;
        source.query("list barge slots", include_str!("../sql/barge_slots.sql"), &[]).await
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
        Error::NotFound(format!(
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
pub(super) async fn remove_objects(req: &Request, created: &[Objects]) -> (Vec<String>, Vec<String>) {
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
    for c in created {
        if let Some(id) = id_of(&c.name)
            && let Err(e) = login::revoke_reads(&req.source, &c.source_database, id).await
        {
            failures.push(format!("privileges of login role {}: {e}", login::role_name(id)));
        }
    }
    for id in ids {
        match login::drop_role(&req.source, id).await {
            Ok(true) => removed.push(format!("login role {}", login::role_name(id))),
            Ok(false) => {}
            Err(e) => failures.push(format!("login role {}: {e}", login::role_name(id))),
        }
    }
    (removed, failures.into_iter().map(|f| crate::conninfo::redact(&f)).collect())
}

pub(super) async fn drop_subscription(target: &ConnInfo, c: &Objects) -> Result<bool> {
    let db = match Db::connect(target, &c.target_database).await {
        Ok(db) => db,
        // The copy failed before the target database existed.
        Err(e) if e.sqlstate() == Some(sqlstate::INVALID_CATALOG_NAME) => return Ok(false),
        Err(e) => return Err(e),
    };
    let exists = db
        .query_opt("look for the subscription", include_str!("../sql/subscription_exists.sql"), &[&c.name])
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
        Err(e)
            if e.sqlstate() == Some(sqlstate::UNDEFINED_TABLE)
                || e.sqlstate() == Some(sqlstate::INVALID_SCHEMA_NAME) => {}
        Err(e) => return Err(e),
    }
    Ok(exists)
}

pub(super) async fn drop_slot(source: &ConnInfo, c: &Objects) -> Result<bool> {
    let (admin, _) = crate::db::connect_admin(source).await?;
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
                    Err(e)
                        if e.sqlstate() == Some(sqlstate::OBJECT_IN_USE)
                            && started.elapsed() < Duration::from_secs(60) => {}
                    Err(e) if e.sqlstate() == Some(sqlstate::UNDEFINED_OBJECT) => return Ok(false),
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

pub(super) async fn drop_publication(source: &ConnInfo, c: &Objects) -> Result<bool> {
    let db = match Db::connect(source, &c.source_database).await {
        Ok(db) => db,
        Err(e) if e.sqlstate() == Some(sqlstate::INVALID_CATALOG_NAME) => return Ok(false),
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
