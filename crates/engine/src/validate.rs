//! `barge validate`: preflight checks, each with pass/warn/fail and a fix hint. The plan's
//! own findings (target not empty, missing extensions, roles, privileges, pg_dump) are the
//! same checks `barge init` refuses on (with `--sync`, the logical replication prerequisites);
//! validate adds connectivity and sizes.

use serde::{Deserialize, Serialize};

use crate::{
    db::Db,
    error::Error,
    plan::{self, Plan, connect_admin},
    request::Request,
};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Fine.
    Pass,
    /// Works, but the user should know.
    Warn,
    /// Stops a copy.
    Fail,
}

/// One check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked, e.g. `target database "app"`.
    pub name: String,
    /// The outcome.
    pub status: CheckStatus,
    /// What was found.
    pub detail: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Check {
    /// A passing check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { name: name.into(), status: CheckStatus::Pass, detail: detail.into(), hint: None }
    }
    /// A warning.
    pub fn warn(name: impl Into<String>, detail: impl Into<String>, hint: Option<String>) -> Check {
        Check { name: name.into(), status: CheckStatus::Warn, detail: detail.into(), hint }
    }
    /// A failure.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>, hint: Option<String>) -> Check {
        Check { name: name.into(), status: CheckStatus::Fail, detail: detail.into(), hint }
    }
}

/// The outcome of validation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidateReport {
    /// Every check, in the order run.
    pub checks: Vec<Check>,
    /// The plan, when both servers could be read.
    pub plan: Option<Plan>,
    /// Whether no check failed.
    pub ok: bool,
    /// Whether what failed is the request itself (a filter that matches nothing, a database
    /// mapping barge will not guess): `barge validate` exits 2 then, as `barge init` would.
    #[serde(default)]
    pub usage_error: bool,
}

/// Rough copy throughput for estimates, including index builds: measured on a 2-core machine
/// with both servers on it (about 1.7 GiB of heap and indexes in 22–26 s).
const ESTIMATE_BYTES_PER_SECOND: f64 = 45.0 * 1024.0 * 1024.0;

/// Runs every check. Never fails itself: what goes wrong is a failing check.
pub async fn validate(req: &Request) -> ValidateReport {
    let mut checks = Vec::new();
    let source = connection_check(&req.source, &mut checks).await;
    let target = connection_check(&req.target, &mut checks).await;
    let (Some(_source), Some(_target)) = (source, target) else {
        return ValidateReport { checks, plan: None, ok: false, usage_error: false };
    };
    let plan = match plan::plan(req).await {
        Ok(plan) => plan,
        Err(e) => {
            let usage_error = matches!(e, Error::Invalid(_) | Error::Url { .. });
            checks.push(Check::fail("plan", e.to_string(), None));
            return ValidateReport { checks, plan: None, ok: false, usage_error };
        }
    };
    for db in &plan.databases {
        let tables = db.tables.iter().filter(|t| !t.schema_only).count();
        let seconds =
            db.bytes as f64 / ESTIMATE_BYTES_PER_SECOND * (2.0 / req.options.jobs.clamp(1, 8) as f64).max(0.5);
        checks.push(Check::pass(
            format!("size of \"{}\"", db.source),
            format!(
                "{} in {tables} table(s), {} large object(s); a copy takes roughly {} (more on slow disks or networks)",
                human_bytes(db.bytes),
                db.large_objects,
                human_duration(seconds)
            ),
        ));
    }
    checks.extend(plan.findings.iter().cloned());
    for db in &plan.databases {
        checks.push(key_check(req, db).await);
    }
    let ok = checks.iter().all(|c| c.status != CheckStatus::Fail);
    ValidateReport { checks, plan: Some(plan), ok, usage_error: false }
}

async fn connection_check(info: &crate::conninfo::ConnInfo, checks: &mut Vec<Check>) -> Option<Db> {
    let name = format!("{} connection", info.side());
    match connect_admin(info).await {
        Ok((db, dbname)) => {
            let tls = if db.tls() { "TLS verified" } else { "no TLS" };
            checks.push(Check::pass(
                name,
                format!(
                    "{} as {} (database \"{dbname}\"): PostgreSQL {}, {tls}",
                    info.endpoint(),
                    info.user(),
                    plan::version_text(db.version_num())
                ),
            ));
            Some(db)
        }
        Err(e) => {
            checks.push(Check::fail(name, e.to_string(), None));
            None
        }
    }
}

/// Tables without a primary key: copied and verified fine (by whole-row hashes). Whether
/// logical replication can follow them is a `--sync` finding of the plan.
async fn key_check(req: &Request, db: &plan::DatabasePlan) -> Check {
    let name = format!("primary keys in \"{}\"", db.source);
    let rows = match Db::connect(&req.source, &db.source).await {
        Ok(source) => source.query("list tables without a primary key", include_str!("sql/without_key.sql"), &[]).await,
        Err(e) => Err(e),
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return Check::fail(name, e.to_string(), None),
    };
    let copied: std::collections::HashSet<(&str, &str)> =
        db.tables.iter().map(|t| (t.schema.as_str(), t.name.as_str())).collect();
    let mut unkeyed = Vec::new();
    for row in &rows {
        let (schema, table): (String, String) = (row.get(0), row.get(1));
        if copied.contains(&(schema.as_str(), table.as_str())) {
            unkeyed.push(format!("{schema}.{table}"));
        }
    }
    if unkeyed.is_empty() {
        return Check::pass(name, "every copied table has a primary key");
    }
    Check::pass(
        name,
        format!(
            "{} table(s) without a primary key ({}): copied whole or by block ranges, verified by whole-row hashes",
            unkeyed.len(),
            list(&unkeyed)
        ),
    )
}

/// Up to five names, then how many more: `a, b, c, d, e and 3 more`.
pub(crate) fn list(names: &[String]) -> String {
    let more = if names.len() > 5 { format!(" and {} more", names.len() - 5) } else { String::new() };
    format!("{}{more}", names.iter().take(5).cloned().collect::<Vec<_>>().join(", "))
}

/// `1.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", units[unit]) }
}

/// `2m 05s`.
pub fn human_duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humane_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_duration(5.2), "5s");
        assert_eq!(human_duration(125.0), "2m 05s");
        assert_eq!(human_duration(7300.0), "2h 01m");
    }
}
