//! Who a sync's subscription logs in to the source as, and how its password is kept out of
//! what servers log (docs/connections.md, "The subscription of a sync").
//!
//! Logical replication is the target server connecting to the source, so the target must
//! be given a password. When the source user may create roles (a superuser, or on
//! PostgreSQL 16+ a user with CREATEROLE and REPLICATION), each sync gets its own login role,
//! `barge_<id>_login`, with REPLICATION and a random password; the source learns only its
//! SCRAM verifier, and the role is dropped with the sync (cutover, stop, cancel, failure).
//! The source URL's password then never reaches the target. Otherwise the subscription logs
//! in as the URL's user, and `validate --sync` says so.
//!
//! On the target, barge turns statement logging off for its own session before the
//! statement that carries a password, where the server lets it (superusers): otherwise a
//! failing `CREATE SUBSCRIPTION` is logged in full (`log_min_error_statement`), on RDS
//! straight into CloudWatch.

use crate::{
    conninfo::{ConnInfo, Secret},
    db::Db,
    error::{Error, Result},
    ident, sqlstate,
};

/// The subscription's login to the source.
#[derive(Clone, Debug)]
pub(crate) enum Login {
    /// A role made for this sync.
    Own {
        /// Its name.
        role: String,
        /// Its random password.
        password: Secret,
    },
    /// The source URL's user and password.
    Url,
}

/// The login role of sync `id`.
pub(crate) fn role_name(id: &str) -> String {
    format!("barge_{id}_login")
}

impl Login {
    /// Makes sync `id`'s own login role on the source when the source user may;
    /// [`Login::Url`] otherwise (and why, for the user). The role is granted nothing: it
    /// connects as PUBLIC may (a database that revoked CONNECT from PUBLIC refuses it, and the
    /// subscription says so), and a grant would be copied with the database's grants.
    pub(crate) async fn make(source: &ConnInfo, id: &str) -> Result<(Login, Option<String>)> {
        let (admin, _) = crate::db::connect_admin(source).await?;
        let row = admin
            .query_one(
                "read the source user's role attributes",
                "select rolsuper, rolcreaterole, rolreplication from pg_catalog.pg_roles where rolname = current_user",
                &[],
            )
            .await?;
        let (superuser, createrole, replication): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
        // Before 16 only a superuser creates a REPLICATION role; from 16 a CREATEROLE user
        // that has REPLICATION itself may.
        let may = superuser || (admin.version_num() >= 160000 && createrole && replication);
        if !may {
            return Ok((
                Login::Url,
                Some(format!(
                    "the source user {} may not create a login role for the sync (that needs superuser, or CREATEROLE and REPLICATION on PostgreSQL 16+)",
                    source.user()
                )),
            ));
        }
        let role = role_name(id);
        let password = Secret::new(random_password()?);
        // The source stores, and may log, the SCRAM verifier only: not a password.
        let verifier = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
        let quoted = ident::quote(&role);
        let created = admin
            .batch(
                "create the sync's login role",
                &format!("create role {quoted} login replication password {}", ident::literal(&verifier)),
            )
            .await;
        match created {
            Ok(()) => {}
            // A role of an earlier attempt of the same sync: give it the new password.
            Err(e) if e.sqlstate() == Some(sqlstate::DUPLICATE_OBJECT) => {
                admin
                    .batch(
                        "reset the sync's login role",
                        &format!("alter role {quoted} login replication password {}", ident::literal(&verifier)),
                    )
                    .await?;
            }
            Err(e) if e.sqlstate() == Some(sqlstate::INSUFFICIENT_PRIVILEGE) => {
                return Ok((Login::Url, Some(format!("the source refused to create a login role for the sync: {e}"))));
            }
            Err(e) => return Err(e),
        }
        Ok((Login::Own { role, password }, None))
    }

    /// The user and password the subscription logs in with, when not the URL's.
    pub(crate) fn credentials(&self) -> Option<(&str, &Secret)> {
        match self {
            Login::Own { role, password } => Some((role, password)),
            Login::Url => None,
        }
    }
}

/// Drops sync `id`'s login role on the source, if there is one: whether it was there.
pub(crate) async fn drop_role(source: &ConnInfo, id: &str) -> Result<bool> {
    let (admin, _) = crate::db::connect_admin(source).await?;
    let role = role_name(id);
    let exists = admin
        .query_opt("look for the sync's login role", "select 1 from pg_catalog.pg_roles where rolname = $1", &[&role])
        .await?;
    if exists.is_none() {
        return Ok(false);
    }
    let quoted = ident::quote(&role);
    admin.batch("drop the sync's login role", &format!("drop role {quoted}")).await?;
    Ok(true)
}

/// Revokes what sync `id`'s login role was granted on the tables of source database
/// `dbname` (SELECT on the tables a sync added later, which the target copies logged in as
/// that role): a role that holds privileges cannot be dropped. The number of tables.
pub(crate) async fn revoke_reads(source: &ConnInfo, dbname: &str, id: &str) -> Result<usize> {
    let db = match Db::connect(source, dbname).await {
        Ok(db) => db,
        Err(e) if e.sqlstate() == Some(sqlstate::INVALID_CATALOG_NAME) => return Ok(0),
        Err(e) => return Err(e),
    };
    let role = role_name(id);
    let rows = db
        .query(
            "list what the sync's login role may read",
            "select distinct c.oid::pg_catalog.regclass::text
             from pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
             where a.grantee = (select oid from pg_catalog.pg_roles where rolname = $1)",
            &[&role],
        )
        .await?;
    for row in &rows {
        let table: String = row.get(0);
        db.batch(
            "revoke what the sync's login role may read",
            &format!("revoke all on table {table} from {}", ident::quote(&role)),
        )
        .await?;
    }
    Ok(rows.len())
}

/// 32 random bytes as 64 hex digits: nothing a connection string would need to quote.
fn random_password() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("no randomness for a password: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Session settings that keep a statement's text out of the server log; each is set on its
/// own, since a server may refuse some (they are superuser settings).
const QUIET: &[&str] = &[
    "set log_statement = 'none'",
    "set log_min_error_statement = 'panic'",
    "set log_min_duration_statement = -1",
    "set log_min_duration_sample = -1",
    "set log_parameter_max_length_on_error = 0",
];

/// Turns statement logging off for `db`'s session as far as the server lets it: whether
/// every setting took (a failing statement is then not logged with its text).
pub(crate) async fn quiet(db: &Db) -> bool {
    let mut all = true;
    for setting in QUIET {
        if db.batch("quiet the statement log", setting).await.is_err() {
            all = false;
        }
    }
    // pgaudit logs statements on its own, when loaded.
    let audited = db
        .query_opt("look for pgaudit", "select 1 from pg_catalog.pg_settings where name = 'pgaudit.log'", &[])
        .await
        .ok()
        .flatten()
        .is_some();
    if audited && db.batch("quiet pgaudit", "set pgaudit.log = 'none'").await.is_err() {
        all = false;
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_plain() {
        let (a, b) = (random_password().unwrap(), random_password().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(role_name("abc123"), "barge_abc123_login");
    }
}
