//! The checks a sync needs before it changes anything (docs/design-notes.md 13): the source's
//! settings and privileges, what logical replication cannot follow, whether the target may
//! subscribe and reach the source, and what happens to passwords.

use std::collections::HashSet;

use super::*;
use crate::{
    check::Check,
    db::Db,
    error::Result,
    human::list,
    ident,
    login::{self, Login},
    plan::types::DatabasePlan,
    request::Request,
    sqlstate,
};

/// Logical replication prerequisites, as plan findings: they stop `init --sync` before it
/// changes anything, and `validate --sync` lists them. docs/design-notes.md 13: `wal_level` is the
/// source's.
pub(crate) async fn preflight(req: &Request, databases: &[DatabasePlan], source: &Db, target: &Db) -> Vec<Check> {
    let mut checks = Vec::new();
    match source_settings(source).await {
        Ok((wal_level, replication, free_slots, free_senders)) => {
            checks.push(if wal_level == "logical" {
                Check::pass("source wal_level", "logical")
            } else {
                Check::fail(
                    "source wal_level",
                    format!("wal_level is {wal_level}; logical replication needs logical"),
                    Some("set wal_level = logical on the source and restart it (RDS/Aurora: rds.logical_replication = 1 in the parameter group)".into()),
                )
            });
            checks.push(if replication {
                Check::pass("source REPLICATION privilege", "the source user may replicate")
            } else {
                Check::fail(
                    "source REPLICATION privilege",
                    "the source user has neither REPLICATION nor rds_replication",
                    Some("ALTER ROLE <user> REPLICATION (RDS: GRANT rds_replication TO <user>)".into()),
                )
            });
            let needed = databases.len().max(1) as i32;
            let free = |n: i32, what: &str, setting: &str| {
                if n >= needed {
                    Check::pass(format!("source {what}"), format!("{n} free, {needed} needed"))
                } else {
                    Check::fail(
                        format!("source {what}"),
                        format!("{n} free, {needed} needed (one per database)"),
                        Some(format!("raise {setting} on the source (a restart), or drop unused ones")),
                    )
                }
            };
            checks.push(free(free_slots, "replication slots", "max_replication_slots"));
            checks.push(free(free_senders, "WAL senders", "max_wal_senders"));
        }
        Err(e) => checks.push(Check::fail("logical replication", e.to_string(), None)),
    }
    for db in databases {
        checks.extend(database_checks(req, db).await);
    }
    let probe_database = databases.first().map_or("postgres", |d| d.source.as_str());
    checks.extend(subscription_probe(req, target, probe_database).await);
    checks
}

pub(super) async fn source_settings(source: &Db) -> Result<(String, bool, i32, i32)> {
    let has_rds_role = source
        .query_opt(
            "look for rds_replication",
            "select 1 from pg_catalog.pg_roles where rolname = 'rds_replication'",
            &[],
        )
        .await?
        .is_some();
    let rds = if has_rds_role { " or pg_catalog.pg_has_role(current_user, 'rds_replication', 'member')" } else { "" };
    let sql = format!(
        "select current_setting('wal_level'), \
           coalesce((select rolreplication or rolsuper from pg_catalog.pg_roles where rolname = current_user){rds}, false), \
           current_setting('max_replication_slots')::int - (select count(*) from pg_catalog.pg_replication_slots)::int, \
           current_setting('max_wal_senders')::int - (select count(*) from pg_catalog.pg_stat_replication)::int"
    );
    let row = source.query_one("read replication settings", &sql, &[]).await?;
    Ok((row.get(0), row.get(1), row.get(2), row.get(3)))
}

/// Per database: tables logical replication cannot follow, and whether the source user may
/// publish the tables.
pub(super) async fn database_checks(req: &Request, db: &DatabasePlan) -> Vec<Check> {
    let mut checks = Vec::new();
    let source = match Db::connect(&req.source, &db.source).await {
        Ok(source) => source,
        Err(e) => return vec![Check::fail(format!("replication of \"{}\"", db.source), e.to_string(), None)],
    };
    let published: HashSet<(&str, &str)> =
        published_tables(db).iter().map(|t| (t.schema.as_str(), t.name.as_str())).collect();
    match source.query("list tables without a primary key", include_str!("../sql/without_key.sql"), &[]).await {
        Ok(rows) => {
            let unidentified: Vec<String> = rows
                .iter()
                .filter(|r| !r.get::<_, bool>(2))
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                .filter(|(s, t)| published.contains(&(s.as_str(), t.as_str())))
                .map(|(s, t)| format!("{s}.{t}"))
                .collect();
            let name = format!("replica identity in \"{}\"", db.source);
            checks.push(if unidentified.is_empty() {
                Check::pass(name, "every replicated table has a primary key or a replica identity")
            } else if req.options.replica_identity_full {
                Check::warn(
                    name,
                    format!(
                        "{} table(s) without a primary key get REPLICA IDENTITY FULL on the source: {}",
                        unidentified.len(),
                        list(&unidentified)
                    ),
                    Some("their updates and deletes log the whole old row (more WAL) and are applied by scanning the target table".into()),
                )
            } else {
                Check::fail(
                    name,
                    format!(
                        "{} table(s) without a primary key or replica identity: {}",
                        unidentified.len(),
                        list(&unidentified)
                    ),
                    Some("their updates and deletes would not replicate: add primary keys, or run with --replica-identity-full (barge then sets REPLICA IDENTITY FULL on those source tables)".into()),
                )
            });
        }
        Err(e) => checks.push(Check::fail(format!("replica identity in \"{}\"", db.source), e.to_string(), None)),
    }
    let unlogged: Vec<String> =
        db.tables.iter().filter(|t| t.kind == TableKind::Unlogged).map(|t| t.display()).collect();
    if !unlogged.is_empty() {
        checks.push(Check::warn(
            format!("unlogged tables in \"{}\"", db.source),
            format!("copied once, not replicated (they write no WAL): {}", list(&unlogged)),
            None,
        ));
    }
    if db.large_objects > 0 {
        checks.push(Check::warn(
            format!("large objects in \"{}\"", db.source),
            format!(
                "{} large object(s) are copied once; logical replication does not carry later changes to them",
                db.large_objects
            ),
            None,
        ));
    }
    let owned = include_str!("../sql/publication_privileges.sql");
    let qualified: Vec<String> = published_tables(db).iter().map(|t| t.qualified()).collect();
    match source.query_one("check publication privileges", owned, &[&qualified]).await {
        Ok(row) => {
            let (not_owned, create): (i64, bool) = (row.get(0), row.get(1));
            let name = format!("publication in \"{}\"", db.source);
            checks.push(if not_owned > 0 || !create {
                Check::fail(
                    name,
                    format!(
                        "the source user cannot publish the tables: {}",
                        if create {
                            format!("it does not own {not_owned} of them")
                        } else {
                            "it lacks CREATE on the database".into()
                        }
                    ),
                    Some("a publication needs CREATE on the database and ownership of its tables: run as the tables' owner (or a member of its role)".into()),
                )
            } else {
                Check::pass(name, format!("{} table(s) to publish", qualified.len()))
            });
        }
        Err(e) => checks.push(Check::fail(format!("publication in \"{}\"", db.source), e.to_string(), None)),
    }
    checks
}

/// Whether the target may create a subscription and reach the source with it: a
/// subscription that makes no slot is created and rolled back. Creating it connects from
/// the target server to the source in replication mode, exactly as the real one will, with
/// the login the real one will use (a role made for the probe, dropped after it). And what
/// happens to passwords, said plainly.
pub(super) async fn subscription_probe(req: &Request, target: &Db, database: &str) -> Vec<Check> {
    let name = "target reaches the source";
    // A statement that would fail for want of privilege is not sent with a password in it.
    let allowed = target
        .query_one("read the target user's privileges", include_str!("../sql/may_subscribe.sql"), &[])
        .await
        .map(|row| row.get::<_, bool>(0));
    match allowed {
        Ok(true) => {}
        Ok(false) => {
            return vec![Check::fail(
                name,
                "the target user may not create subscriptions",
                Some("the target user needs superuser or (PostgreSQL 16+) membership in pg_create_subscription and CREATE on the database".into()),
            )];
        }
        Err(e) => return vec![Check::fail(name, e.to_string(), None)],
    }
    let probe_id = format!("probe{}", new_id());
    let (mut login, why) = match Login::make(&req.source, &probe_id).await {
        Ok(made) => made,
        Err(e) => (Login::Url, Some(format!("the source could not create a login role for the sync: {e}"))),
    };
    let quiet = login::quiet(target).await;
    let mut result = probe_subscription(req, target, database, &login).await;
    let mut fell_back = false;
    if let Err(e) = &result
        && login.credentials().is_some()
        && refused_login(e)
    {
        login = Login::Url;
        fell_back = true;
        result = probe_subscription(req, target, database, &login).await;
    }
    let dropped = login::drop_role(&req.source, &probe_id).await;
    let mut checks = vec![match result {
        Ok(()) => Check::pass(
            name,
            format!(
                "the target server connected to {} in replication mode and may create subscriptions",
                req.source.endpoint()
            ),
        ),
        Err(e) => {
            let replication_role = e.to_string().contains("replication role");
            let hint = match e.sqlstate() {
                _ if replication_role => "the source user in the URL needs the REPLICATION attribute (ALTER ROLE <user> REPLICATION; RDS: GRANT rds_replication TO <user>): the subscription connects as that user".into(),
                Some(sqlstate::INSUFFICIENT_PRIVILEGE) => "the target user needs superuser or (PostgreSQL 16+) membership in pg_create_subscription and CREATE on the database".into(),
                Some(sqlstate::CONNECTION_FAILURE) | Some(sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION) | None => format!(
                    "the target server itself connects to the source ({}) for replication: it must resolve and reach that host and port, and the source's pg_hba.conf must allow a replication connection from the target's address",
                    req.source.endpoint()
                ),
                _ => "see the message".into(),
            };
            Check::fail(name, crate::conninfo::redact(&e.to_string()), Some(hint))
        }
    }];
    if let Err(e) = dropped {
        checks.push(Check::warn(
            "probe login role",
            format!("{} could not be dropped: {e}", login::role_name(&probe_id)),
            Some(format!("drop role {} on the source", login::role_name(&probe_id))),
        ));
    }
    checks.push(password_check(req, &login, why.as_deref(), fell_back, quiet));
    checks
}

/// What happens to passwords during the sync, plainly.
pub(super) fn password_check(req: &Request, login: &Login, why: Option<&str>, fell_back: bool, quiet: bool) -> Check {
    let name = "source password";
    let logged = if quiet {
        String::new()
    } else {
        "; and the target user cannot turn statement logging off for its session (a superuser setting), so the target may log the statement that creates the subscription, password included (log_statement, log_min_error_statement)".into()
    };
    match login {
        Login::Own { .. } if quiet => Check::pass(
            name,
            "the subscription logs in as a role made for the sync (barge_<id>_login) with a random password, dropped at the cutover, stop or cancel: the source URL's password never reaches the target",
        ),
        Login::Own { .. } => Check::warn(
            name,
            format!(
                "the subscription logs in as a role made for the sync with a random password, dropped at the cutover, stop or cancel; the source URL's password never reaches the target{logged}"
            ),
            Some("connect to the target as a superuser to keep the sync's password out of its log too".into()),
        ),
        Login::Url => {
            let reason = if fell_back {
                "the source's pg_hba.conf does not admit a role made for the sync".to_owned()
            } else {
                why.unwrap_or("the sync cannot have its own login role").to_owned()
            };
            Check::warn(
                name,
                format!(
                    "{reason}: the subscription logs in as {} with the source URL's password, which the target stores in pg_subscription (readable by superusers, and in the target's backups) until the cutover or stop{logged}",
                    req.source.user()
                ),
                Some("let the source user create roles (superuser, or CREATEROLE and REPLICATION on PostgreSQL 16+) and pg_hba.conf admit them for replication, or use a source user and password made for this migration".into()),
            )
        }
    }
}

/// One probe subscription, created and rolled back.
pub(super) async fn probe_subscription(req: &Request, target: &Db, database: &str, login: &Login) -> Result<()> {
    let probe = format!("barge_probe_{}", new_id());
    let conninfo = subscription_conninfo(req, database, login).await?;
    target.batch("probe a subscription", "begin").await?;
    let quoted = ident::quote(&probe);
    let sql = format!(
        "create subscription {quoted} connection {} publication {quoted} \
         with (connect = true, enabled = false, create_slot = false, slot_name = none, copy_data = false)",
        ident::literal(&conninfo)
    );
    let result = target.batch("create a probe subscription", &sql).await;
    let _ = target.batch("roll the probe back", "rollback").await;
    result
}
