//! Resuming a sync whose copy died (docs/sync.md, "A copy that died"): the slot and the
//! publication survive on the source, the tables whose rows committed in full stay as they
//! are on the target, and the others join the subscription through the target's table
//! synchronization, as tables added to a running sync do.
//!
//! The rows that committed were read in the slot's exported snapshot, so streaming from the
//! slot's start carries those tables on without a gap. That snapshot died with the copy:
//! the unfinished tables cannot be copied in it any more. They are emptied, taken out of the
//! publication before the subscription is created (so the changes the slot holds for them are
//! not applied), and added back with `copy_data = true`: the target copies each in a
//! snapshot of its own and hands it to the stream at that point. A finished table whose
//! foreign key points at an unfinished one is copied again too: the copy validates that
//! key, which its emptied parent would fail.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::*;
use crate::{
    catalog,
    db::Db,
    error::{Error, Result},
    ident,
    pipeline::part_step,
    plan::types::{DatabasePlan, TableKind},
    request::Request,
};

/// What the interrupted copy of one database left: the tables to copy again.
pub(super) struct Interrupted {
    /// `schema.table` of the tables whose rows did not all commit, with those whose keys
    /// point at them.
    pub(super) unfinished: BTreeSet<(String, String)>,
}

/// Checks that the slot and publication `name` of an interrupted sync are on the source,
/// and the slot still holds the changes since its snapshot.
pub(super) async fn check_slot(source: &Db, name: &str) -> Result<()> {
    let slot = source
        .query_opt(
            "look for the interrupted sync's slot",
            "select coalesce(wal_status, '') <> 'lost', slot_type = 'logical'
             from pg_catalog.pg_replication_slots where slot_name = $1 and database = pg_catalog.current_database()",
            &[&name],
        )
        .await?;
    let publication = source
        .query_opt(
            "look for the interrupted sync's publication",
            "select 1 from pg_catalog.pg_publication where pubname = $1",
            &[&name],
        )
        .await?;
    match (slot, publication) {
        (Some(row), Some(_)) if row.get::<_, bool>(0) && row.get::<_, bool>(1) => Ok(()),
        (Some(_), Some(_)) => Err(Error::Refused(format!(
            "the interrupted sync's slot {name} no longer holds the changes since its copy (the source invalidated it): start over with --drop-existing"
        ))),
        _ => Err(Error::Refused(format!(
            "the interrupted sync's slot and publication {name} are not on the source database \"{}\" (removed, or another sync id): its copy cannot resume; start over with --drop-existing, or give the sync id it was started with (--sync-id)",
            source.database()
        ))),
    }
}

/// Reads what the copy left on the target, empties the unfinished tables there and marks
/// them structure-only in the stored plan, so that resuming the copy builds their indexes
/// and keys without rows.
pub(super) async fn prepare(source: &Db, target: &Db) -> Result<Interrupted> {
    let stored: String =
        target.query_one("read the stored plan", "select plan from _barge.plan where id = 1", &[]).await?.get(0);
    let mut plan: DatabasePlan = serde_json::from_str(&stored).map_err(|e| {
        Error::Refused(format!(
            "the progress marks on the target are unreadable ({e}): start over with --drop-existing"
        ))
    })?;
    let done: HashSet<String> = target
        .query("read the progress marks", "select step from _barge.done", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let replicated = |t: &crate::plan::types::TablePlan| !t.schema_only && t.kind != TableKind::Unlogged;
    let mut unfinished: BTreeSet<(String, String)> = plan
        .tables
        .iter()
        .filter(|t| replicated(t) && (0..t.parts.len()).any(|p| !done.contains(&part_step(t, p))))
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    // A finished table whose key points at an unfinished one goes with it (and so on).
    let names: HashMap<u32, (String, String)> =
        catalog::relation_names(source).await?.into_iter().map(|r| (r.oid, (r.schema, r.name))).collect();
    let keys: Vec<((String, String), (String, String))> = catalog::foreign_keys(source)
        .await?
        .into_iter()
        .filter_map(|fk| Some(((fk.schema, fk.table_name), names.get(&fk.ref_oid)?.clone())))
        .collect();
    let in_plan: HashSet<(String, String)> =
        plan.tables.iter().filter(|t| replicated(t)).map(|t| (t.schema.clone(), t.name.clone())).collect();
    loop {
        let more: Vec<(String, String)> = keys
            .iter()
            .filter(|(child, parent)| {
                unfinished.contains(parent) && in_plan.contains(child) && !unfinished.contains(child)
            })
            .map(|(child, _)| child.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        unfinished.extend(more);
    }
    let existing: HashSet<(String, String)> = table_names(&[target]).await?.into_values().collect();
    let emptied: Vec<(&str, &str)> =
        unfinished.iter().filter(|t| existing.contains(*t)).map(|(s, t)| (s.as_str(), t.as_str())).collect();
    empty_on_target(target, &emptied).await?;
    for table in plan.tables.iter_mut().filter(|t| unfinished.contains(&(t.schema.clone(), t.name.clone()))) {
        table.schema_only = true;
        table.parts.clear();
    }
    let text = serde_json::to_string(&plan).map_err(|e| Error::Internal(format!("cannot store the plan: {e}")))?;
    target.execute("store the plan", "update _barge.plan set plan = $1 where id = 1", &[&text]).await?;
    Ok(Interrupted { unfinished })
}

/// Takes the unfinished tables out of the publication `name`: the subscription created next
/// starts without them, so the changes the slot holds for them are not applied.
pub(super) async fn unpublish_unfinished(source: &Db, name: &str, interrupted: &Interrupted) -> Result<()> {
    let tables: Vec<(&str, &str)> = interrupted.unfinished.iter().map(|(s, t)| (s.as_str(), t.as_str())).collect();
    unpublish(source, name, &published(source, name).await?, &tables).await?;
    Ok(())
}

/// The pattern that selects exactly `table` (quoted parts are literal).
pub(super) fn exact_pattern((schema, table): &(String, String)) -> String {
    format!("{}.{}", ident::quote(schema), ident::quote(table))
}

/// The id of the one interrupted sync whose publication is on the source database:
/// `barge_<id>_<n>`. None when there is none; refused when there are several.
pub(super) async fn interrupted_id(req: &Request, database: &str) -> Result<Option<String>> {
    let source = Db::connect(&req.source, database).await?;
    let rows = source
        .query(
            "look for barge publications",
            "select pubname::text from pg_catalog.pg_publication where pubname like 'barge\\_%'",
            &[],
        )
        .await?;
    let ids: BTreeSet<String> = rows.iter().filter_map(|r| id_of(&r.get::<_, String>(0)).map(str::to_owned)).collect();
    match ids.len() {
        0 => Ok(None),
        1 => Ok(ids.into_iter().next()),
        _ => Err(Error::Invalid(format!(
            "the source database \"{database}\" has the publications of more than one barge sync ({}): give the one to resume with --sync-id",
            ids.into_iter().collect::<Vec<_>>().join(", ")
        ))),
    }
}
