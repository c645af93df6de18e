//! `--roles`: create the source's roles that the target lacks, with their attributes and
//! memberships but never their passwords. Roles of managed services (`rds*`, `azure_*`,
//! `cloudsql*`) and predefined `pg_*` roles are never copied; SUPERUSER, REPLICATION and
//! BYPASSRLS are copied only when the target user may grant them (docs/design-notes.md 17).

use std::collections::HashSet;

use crate::{catalog, db::Db, error::Result, ident, sqlstate};

const SOURCE_ROLES: &str = "select r.rolname::text, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, \
     r.rolcanlogin, r.rolreplication, r.rolbypassrls, r.rolconnlimit \
     from pg_catalog.pg_roles r \
     where r.rolname !~ '^pg_' and r.rolname !~ '^(rds|azure_|cloudsql|alloydb)' \
       and r.rolname not in ('rdsadmin', 'rdsrepladmin', 'rdstopmgr') \
       and r.rolname !~ '^barge_[a-z0-9]+_login$' \
     order by r.rolname";

/// Source roles missing on the target.
pub(crate) async fn missing(source: &Db, target_roles: &HashSet<String>) -> Result<Vec<String>> {
    let rows = source.query("list roles", SOURCE_ROLES, &[]).await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).filter(|name| !target_roles.contains(name)).collect())
}

/// What `--roles` did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RolesReport {
    /// Roles created.
    pub created: Vec<String>,
    /// Memberships granted (`role → member`).
    pub memberships: Vec<String>,
    /// Attributes left out, with the reason.
    pub warnings: Vec<String>,
}

/// Creates the missing roles and their memberships on the target.
pub(crate) async fn copy(source: &Db, target: &Db) -> Result<RolesReport> {
    let mut report = RolesReport::default();
    let target_roles = catalog::role_names(target).await?;
    let target_super: bool = target
        .query_one(
            "read the target user's attributes",
            "select rolsuper from pg_catalog.pg_roles where rolname = current_user",
            &[],
        )
        .await?
        .get(0);
    for row in source.query("list roles", SOURCE_ROLES, &[]).await? {
        let name: String = row.get(0);
        if target_roles.contains(&name) {
            continue;
        }
        let flag = |on: bool, yes: &str, no: &str| if on { yes.to_owned() } else { no.to_owned() };
        let mut attrs = vec![
            flag(row.get(2), "INHERIT", "NOINHERIT"),
            flag(row.get(3), "CREATEROLE", "NOCREATEROLE"),
            flag(row.get(4), "CREATEDB", "NOCREATEDB"),
            flag(row.get(5), "LOGIN", "NOLOGIN"),
            format!("CONNECTION LIMIT {}", row.get::<_, i32>(8)),
        ];
        for (idx, attr) in [(1, "SUPERUSER"), (6, "REPLICATION"), (7, "BYPASSRLS")] {
            if row.get::<_, bool>(idx) {
                if target_super {
                    attrs.push(attr.to_owned());
                } else {
                    report
                        .warnings
                        .push(format!("role {name}: {attr} left out (only a superuser can grant it on the target)"));
                }
            }
        }
        let sql = format!("create role {} with {}", ident::quote(&name), attrs.join(" "));
        match target.batch(&format!("create role {name}"), &sql).await {
            Ok(()) => report.created.push(name),
            // Created meanwhile by someone else: it exists, which is all that matters.
            Err(e) if e.sqlstate() == Some(sqlstate::DUPLICATE_OBJECT) => {}
            Err(e) => return Err(e),
        }
    }
    let target_roles = catalog::role_names(target).await?;
    let members = source
        .query(
            "list role memberships",
            "select r.rolname::text, m.rolname::text, am.admin_option \
             from pg_catalog.pg_auth_members am \
             join pg_catalog.pg_roles r on r.oid = am.roleid \
             join pg_catalog.pg_roles m on m.oid = am.member \
             where m.rolname !~ '^pg_' and m.rolname !~ '^(rds|azure_|cloudsql|alloydb)' \
               and r.rolname !~ '^(rds|azure_|cloudsql|alloydb)' \
             order by 1, 2",
            &[],
        )
        .await?;
    for row in members {
        let (role, member, admin): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        if !target_roles.contains(&role) || !target_roles.contains(&member) || !report.created.contains(&member) {
            continue;
        }
        let sql = format!(
            "grant {} to {}{}",
            ident::quote(&role),
            ident::quote(&member),
            if admin { " with admin option" } else { "" }
        );
        match target.batch(&format!("grant {role} to {member}"), &sql).await {
            Ok(()) => report.memberships.push(format!("{role} → {member}")),
            Err(e) => report.warnings.push(format!("membership {role} → {member} not granted: {e}")),
        }
    }
    Ok(report)
}
