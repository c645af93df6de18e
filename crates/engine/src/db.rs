//! Connections: connect with TLS and actionable errors, set the session up the same way on
//! both sides, and wrap every statement's error with the side, database and what barge was doing.

use std::{collections::HashMap, io::ErrorKind, sync::Mutex};

use tokio_postgres::{Client, NoTls, Row, Statement, types::ToSql};

use crate::{
    conninfo::{ConnInfo, Side},
    error::{ConnectFailure, Error, Result, describe_pg_error},
    sqlstate, tls,
};

/// One open connection and what is known about its server.
pub(crate) struct Db {
    client: Client,
    side: Side,
    database: String,
    version_num: i32,
    tls: bool,
    /// Statements prepared on this connection ([`Db::prepared`]).
    prepared: Mutex<HashMap<&'static str, Statement>>,
}

/// Settings every session gets: no timeouts that would kill a long COPY or an idle snapshot
/// holder, a fixed text format for dates, intervals, floats and bytea (so text COPY and
/// checksums agree between servers), an empty search_path (so every name prints qualified),
/// and row security off (so a policy makes a read fail instead of silently dropping rows).
const SESSION: &str = "set statement_timeout = 0; set lock_timeout = 0; \
    set idle_in_transaction_session_timeout = 0; set client_encoding = 'UTF8'; \
    set standard_conforming_strings = on; select pg_catalog.set_config('search_path', '', false); \
    set datestyle = 'ISO'; set intervalstyle = 'postgres'; set timezone = 'UTC'; \
    set extra_float_digits = 3; set bytea_output = 'hex'; set xmloption = content; \
    set row_security = off";

/// Tables a session reads in one transaction of an exported snapshot before it leaves and
/// re-enters it: every table read keeps its lock until the transaction ends, and thousands
/// of them would fill the server's lock table (the snapshot stays valid while the exporting
/// transaction is open).
const RELEASE_LOCKS_EVERY: usize = 100;

/// Counts the tables a session reads in an exported snapshot: [`LockRelease::due`] says
/// when to leave and re-enter it ([`Db::reenter_snapshot`]), every
/// `RELEASE_LOCKS_EVERY` tables.
#[derive(Default)]
pub(crate) struct LockRelease(usize);

impl LockRelease {
    /// Called before each table read: whether the session must re-enter the snapshot first.
    pub(crate) fn due(&mut self) -> bool {
        let due = self.0 == RELEASE_LOCKS_EVERY;
        self.0 = if due { 1 } else { self.0 + 1 };
        due
    }
}

impl Db {
    /// Opens a transaction in the exported snapshot `snapshot`.
    pub(crate) async fn enter_snapshot(&self, snapshot: &str) -> Result<()> {
        // The id comes from pg_export_snapshot(); check its shape before it goes into SQL.
        if snapshot.is_empty() || !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(Error::Internal(format!("unexpected snapshot id {snapshot:?}")));
        }
        self.batch(
            "enter the copy snapshot",
            &format!("begin isolation level repeatable read read only; set transaction snapshot '{snapshot}'"),
        )
        .await
    }

    /// Ends the snapshot's transaction and opens a new one in it, releasing the locks taken.
    pub(crate) async fn reenter_snapshot(&self, snapshot: &str) -> Result<()> {
        self.batch("leave the snapshot", "commit").await?;
        self.enter_snapshot(snapshot).await
    }

    /// Connects to `dbname` on the server `info` names.
    pub(crate) async fn connect(info: &ConnInfo, dbname: &str) -> Result<Db> {
        let info = &info.pinned().await?;
        let config = info.pg_config(dbname);
        let fail = |detail: String, hint: &str, code: Option<String>| {
            Error::Connect(Box::new(ConnectFailure {
                side: info.side(),
                endpoint: info.endpoint(),
                database: dbname.to_owned(),
                detail,
                hint: hint.to_owned(),
                code,
            }))
        };
        let connected = match tls::connector(info)? {
            Some(tls) => config.connect(tls).await.map(|(client, conn)| {
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection closed");
                    }
                });
                client
            }),
            None => config.connect(NoTls).await.map(|(client, conn)| {
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection closed");
                    }
                });
                client
            }),
        };
        let client = connected.map_err(|e| {
            if info.reach() == crate::conninfo::Reach::Remote && network_level(&e) {
                // A worker runs on a caller's URL inside someone's network: refused, timed
                // out and "not PostgreSQL" read the same, so a job maps no ports.
                return fail(
                    "no PostgreSQL server answered (the connection was refused, timed out or reached something else)".into(),
                    ". Check the host and port, and that the worker's security group and the network let it reach the server",
                    None,
                );
            }
            let (detail, hint) = connect_hint(info, &e);
            fail(detail, &hint, e.code().map(|c| c.code().to_owned()))
        })?;
        let mut db = Db {
            client,
            side: info.side(),
            database: dbname.to_owned(),
            version_num: 0,
            tls: false,
            prepared: Mutex::new(HashMap::new()),
        };
        let row = db
            .query_one(
                "read the server version",
                "select current_setting('server_version_num')::int, \
                 coalesce((select ssl from pg_catalog.pg_stat_ssl where pid = pg_catalog.pg_backend_pid()), false)",
                &[],
            )
            .await?;
        db.version_num = row.get(0);
        db.tls = row.get(1);
        db.batch("set up the session", SESSION).await?;
        if db.version_num >= 170000 {
            db.batch("set up the session", "set transaction_timeout = 0").await?;
        }
        Ok(db)
    }

    /// The driver client, for COPY streams.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The database this connection is in.
    pub(crate) fn database(&self) -> &str {
        &self.database
    }

    /// `server_version_num`, e.g. 180006.
    pub(crate) fn version_num(&self) -> i32 {
        self.version_num
    }

    /// Whether this connection negotiated TLS.
    pub(crate) fn tls(&self) -> bool {
        self.tls
    }

    /// Wraps a driver error with this connection's context.
    pub(crate) fn err(&self, context: &str, e: &tokio_postgres::Error) -> Error {
        Error::query(self.side, &self.database, context, e)
    }

    /// `sql` prepared on this connection, once. Executing a prepared statement sends it at
    /// once, so statements run concurrently (pipelined) keep the order they were started in;
    /// a statement given as text is prepared first, a round trip that lets later ones ahead.
    pub(crate) async fn prepared(&self, context: &str, sql: &'static str) -> Result<Statement> {
        let known = self.prepared.lock().unwrap_or_else(|e| e.into_inner()).get(sql).cloned();
        if let Some(statement) = known {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await.map_err(|e| self.err(context, &e))?;
        self.prepared.lock().unwrap_or_else(|e| e.into_inner()).insert(sql, statement.clone());
        Ok(statement)
    }

    /// Executes a statement from [`Db::prepared`].
    pub(crate) async fn execute_prepared(
        &self,
        context: &str,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64> {
        self.client.execute(statement, params).await.map_err(|e| self.err(context, &e))
    }

    pub(crate) async fn query(&self, context: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        self.client.query(sql, params).await.map_err(|e| self.err(context, &e))
    }

    pub(crate) async fn query_one(&self, context: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        self.client.query_one(sql, params).await.map_err(|e| self.err(context, &e))
    }

    pub(crate) async fn query_opt(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        self.client.query_opt(sql, params).await.map_err(|e| self.err(context, &e))
    }

    pub(crate) async fn execute(&self, context: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.client.execute(sql, params).await.map_err(|e| self.err(context, &e))
    }

    /// Runs `body` in a transaction: commits when it succeeds, rolls back when it fails.
    pub(crate) async fn in_transaction<T>(&self, context: &str, body: impl AsyncFnOnce() -> Result<T>) -> Result<T> {
        self.batch(context, "begin").await?;
        match body().await {
            Ok(value) => {
                self.batch(context, "commit").await?;
                Ok(value)
            }
            Err(e) => {
                // The error that matters is the body's; a failed rollback only means the
                // connection is gone, which ends the transaction too.
                let _ = self.batch("roll back", "rollback").await;
                Err(e)
            }
        }
    }

    /// Runs statements with the simple protocol (no parameters).
    pub(crate) async fn batch(&self, context: &str, sql: &str) -> Result<()> {
        self.client.batch_execute(sql).await.map_err(|e| self.err(context, &e))
    }
}

/// Opens a connection to a server's maintenance database: the one the URL names, else
/// `postgres`, else `template1`.
pub(crate) async fn connect_admin(info: &ConnInfo) -> Result<(Db, String)> {
    let mut last = None;
    let mut tried = Vec::new();
    if let Some(db) = info.dbname() {
        tried.push(db.to_owned());
    }
    for db in ["postgres", "template1"] {
        if !tried.iter().any(|t| t == db) {
            tried.push(db.to_owned());
        }
    }
    for db in &tried {
        match Db::connect(info, db).await {
            Ok(conn) => return Ok((conn, db.clone())),
            // Only a missing database moves on to the next candidate.
            Err(e) if e.sqlstate() == Some(sqlstate::INVALID_CATALOG_NAME) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Refused(format!("no database to connect to on the {} server", info.side()))))
}

/// Whether a failed connection never got a PostgreSQL answer (no server error, no TLS
/// verdict, no authentication step).
fn network_level(e: &tokio_postgres::Error) -> bool {
    if e.as_db_error().is_some() {
        return false;
    }
    let text = describe_pg_error(e).to_lowercase();
    !(text.contains("certificate")
        || text.contains("tls")
        || text.contains("password")
        || text.contains("authentication"))
}

/// The message and what to check for a failed connection attempt.
fn connect_hint(info: &ConnInfo, e: &tokio_postgres::Error) -> (String, String) {
    let detail = describe_pg_error(e);
    let side = info.side();
    if let Some(db) = e.as_db_error() {
        let hint = match db.code().code() {
            sqlstate::INVALID_PASSWORD => format!(". Check the user name and password in the {side} URL"),
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION => format!(
                ". The server refused this user from this address (pg_hba.conf) or the role may not log in; check the {side} server's access rules"
            ),
            sqlstate::INVALID_CATALOG_NAME => format!(". Check the database name in the {side} URL"),
            sqlstate::TOO_MANY_CONNECTIONS => {
                ". The server has no free connection slots; lower --jobs or raise max_connections".into()
            }
            sqlstate::INSUFFICIENT_PRIVILEGE => {
                format!(". The {side} user lacks the CONNECT privilege on this database")
            }
            _ => String::new(),
        };
        return (detail, hint);
    }
    let lower = detail.to_lowercase();
    let io_kind =
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>()).map(std::io::Error::kind);
    let hint = if lower.contains("certificate") || lower.contains("tls") && lower.contains("invalid") {
        format!(
            ". The server's TLS certificate could not be verified: add sslrootcert=/path/to/ca.pem to the {side} URL, or sslmode=disable to connect without TLS"
        )
    } else if lower.contains("server does not support tls") && info.sslmode() == crate::conninfo::SslMode::Prefer {
        format!(": {}", info.no_tls_message())
    } else if lower.contains("server does not support tls") {
        format!(". The server does not accept TLS; use sslmode=disable in the {side} URL")
    } else if io_kind == Some(ErrorKind::ConnectionRefused) || lower.contains("connection refused") {
        ". Is the server running and listening on that host and port? Check firewalls and security groups".into()
    } else if lower.contains("timed out") || lower.contains("timeout") {
        ". No answer in time: check the host, the port and the network path (security groups, routes); connect_timeout in the URL sets the limit".into()
    } else if lower.contains("lookup") || lower.contains("resolve") || lower.contains("name or service") {
        format!(". The host name in the {side} URL does not resolve")
    } else {
        String::new()
    };
    (detail, hint)
}
