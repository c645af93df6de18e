//! Pausing and resuming a sync: the target's subscription disabled and enabled again. While
//! paused the target applies nothing and the source's slot keeps every change (and the WAL
//! that holds them), so `status` shows how much it keeps and how fast that grows.

use super::*;
use crate::{
    db::Db,
    error::{Error, Result},
    ident,
    request::Request,
};

/// What pause or resume did, per database.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PauseReport {
    /// Subscriptions changed.
    pub changed: Vec<String>,
    /// Subscriptions that already were as asked.
    pub unchanged: Vec<String>,
}

/// Disables the sync's subscriptions: the target stops applying, the source keeps the
/// changes in the slot.
pub async fn pause(req: &Request) -> Result<PauseReport> {
    let found = find(req).await?;
    let mut report = PauseReport::default();
    for f in &found {
        if pause_one(req, f).await? {
            report.changed.push(f.objects.name.clone());
        } else {
            report.unchanged.push(f.objects.name.clone());
        }
    }
    Ok(report)
}

/// Enables the sync's subscriptions again; refused for a slot the source invalidated (it no
/// longer holds the changes the target needs), and while a schema change waits for
/// `apply-ddl --destructive`.
pub async fn resume(req: &Request) -> Result<PauseReport> {
    let found = find(req).await?;
    let status = status_of(req, &found).await?;
    let lost = status.invalidated();
    if !lost.is_empty() {
        return Err(Error::Refused(format!(
            "the source invalidated the replication slot of {}: it no longer holds the changes the target needs, so resuming would lose them. Remove the sync (`barge sync stop`) and sync again (`barge init --sync --drop-existing`)",
            lost.join(", ")
        )));
    }
    for f in &found {
        let source = Db::connect(&req.source, &f.objects.source_database).await?;
        let target = Db::connect(&req.target, &f.objects.target_database).await?;
        let waiting: Vec<String> = pending(&source, &target, f)
            .await?
            .iter()
            .filter(|c| c.waits_for_confirmation())
            .map(|c| c.describe())
            .collect();
        if !waiting.is_empty() {
            return Err(Error::Refused(format!(
                "the source's schema changed in a way the target does not follow yet: {}. Resuming would apply rows the target cannot take; `barge sync apply-ddl --destructive` makes the changes and resumes",
                waiting.join("; ")
            )));
        }
    }
    let mut report = PauseReport::default();
    for f in &found {
        if set_enabled(req, f, true).await? {
            report.changed.push(f.objects.name.clone());
        } else {
            report.unchanged.push(f.objects.name.clone());
        }
    }
    Ok(report)
}

/// Disables one database's subscription; whether it was enabled.
pub(super) async fn pause_one(req: &Request, f: &Found) -> Result<bool> {
    set_enabled(req, f, false).await
}

/// Enables or disables one database's subscription; whether that changed it.
pub(super) async fn set_enabled(req: &Request, f: &Found, enabled: bool) -> Result<bool> {
    let target = Db::connect(&req.target, &f.objects.target_database).await?;
    if subscription_enabled(&target, f).await? == enabled {
        return Ok(false);
    }
    let verb = if enabled { "enable" } else { "disable" };
    target
        .batch(
            &format!("{verb} the subscription {}", f.objects.name),
            &format!("alter subscription {} {verb}", ident::quote(&f.objects.name)),
        )
        .await?;
    Ok(true)
}
