//! `barge validate`: preflight checks, each with pass/warn/fail and a fix hint. The plan's
//! own findings (target not empty, missing extensions, roles, privileges, pg_dump) are the
//! same checks `barge init` refuses on (with `--sync`, the logical replication prerequisites);
//! validate adds connectivity and sizes.

use serde::{Deserialize, Serialize};

use crate::check::{Check, CheckStatus};
use crate::{
    db::{Db, connect_admin},
    error::Error,
    human::{human_bytes, human_duration, list},
    plan::{self, Plan},
    request::Request,
};

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
        let seconds = db.bytes as f64 / ESTIMATE_BYTES_PER_SECOND
            * (2.0 / req.options.jobs_or_cpus().clamp(1, 8) as f64).max(0.5);
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
