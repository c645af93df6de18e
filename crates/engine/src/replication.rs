//! A replication-protocol connection to the source, for one statement: creating a logical
//! replication slot whose exported snapshot the copy then reads in (docs/design-notes.md 12), so the
//! copy and the changes the slot streams meet without a gap and without an overlap.
//!
//! Why a small connection of barge's own: tokio-postgres cannot open a connection in
//! replication mode (its `Config` has no `replication` startup parameter), and the forks
//! that add it would replace the driver under all of barge for this one statement. What is
//! needed is small — startup with `replication=database`, TLS set up exactly like barge's
//! other connections, password authentication and the simple query protocol — and the
//! risky parts come from maintained crates: the wire format, SCRAM-SHA-256 and MD5 from
//! `postgres-protocol` (the crate tokio-postgres is built on), TLS from rustls with the
//! same verifier as every other connection.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::{
    authentication::{md5_hash, sasl},
    message::{
        backend::{ErrorFields, Message},
        frontend,
    },
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{
    conninfo::{ConnInfo, SslMode},
    error::{ConnectFailure, Error, Result},
    sqlstate, tls,
};

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A slot as `CREATE_REPLICATION_SLOT` reported it.
#[derive(Clone, Debug)]
pub(crate) struct CreatedSlot {
    /// The WAL position from which the slot streams changes.
    pub consistent_point: String,
    /// The exported snapshot: valid while this connection stays open and idle.
    pub snapshot: String,
}

/// An open replication connection (`replication=database`).
pub(crate) struct ReplicationConn {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    info: ConnInfo,
    database: String,
    version_num: i32,
}

impl ReplicationConn {
    /// Connects to `dbname` on the source in logical replication mode, within the URL's
    /// connect timeout.
    pub(crate) async fn connect(info: &ConnInfo, dbname: &str) -> Result<ReplicationConn> {
        let info = &info.pinned().await?;
        let config = info.pg_config(dbname);
        let limit = config.get_connect_timeout().copied().unwrap_or(Duration::from_secs(30));
        match tokio::time::timeout(limit, Self::open(info, dbname, &config)).await {
            Ok(result) => result,
            Err(_) => Err(failure(info, dbname, "timed out opening a replication connection".into(), None)),
        }
    }

    async fn open(info: &ConnInfo, dbname: &str, config: &tokio_postgres::Config) -> Result<ReplicationConn> {
        let fail = |detail: String| failure(info, dbname, detail, None);
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let (stream, host): (Box<dyn Stream>, Option<String>) = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => {
                let tcp = match config.get_hostaddrs().first() {
                    Some(address) => tokio::net::TcpStream::connect((*address, port)).await,
                    None => tokio::net::TcpStream::connect((host.as_str(), port)).await,
                }
                .map_err(|e| fail(e.to_string()))?;
                let _ = tcp.set_nodelay(true);
                (Box::new(tcp), Some(host.clone()))
            }
            Some(tokio_postgres::config::Host::Unix(dir)) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                (Box::new(tokio::net::UnixStream::connect(path).await.map_err(|e| fail(e.to_string()))?), None)
            }
            None => return Err(fail("the URL names no host".into())),
        };
        let stream = negotiate_tls(info, dbname, stream, host.as_deref()).await?;
        let mut conn = ReplicationConn {
            stream,
            buf: BytesMut::new(),
            info: info.clone(),
            database: dbname.into(),
            version_num: 0,
        };
        let user = config.get_user().unwrap_or_default().to_owned();
        let application = config.get_application_name().unwrap_or("barge").to_owned();
        let mut out = BytesMut::new();
        let params = [
            ("user", user.as_str()),
            ("database", dbname),
            ("replication", "database"),
            ("application_name", application.as_str()),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(params.iter().copied(), &mut out).map_err(|e| fail(e.to_string()))?;
        conn.send(&out).await?;
        conn.authenticate(&user, config.get_password()).await?;
        let parameters = conn.until_ready().await?;
        conn.version_num = parameters
            .get("server_version")
            .and_then(|v| version_num(v))
            .ok_or_else(|| fail("the server did not report its version".into()))?;
        Ok(conn)
    }

    /// Creates a permanent logical slot for `pgoutput` and exports its snapshot. On
    /// PostgreSQL 17+ it is a failover slot: a source whose standbys synchronize slots
    /// (`sync_replication_slots`) keeps it through a failover, so the sync goes on from the
    /// promoted standby.
    pub(crate) async fn create_slot(&mut self, name: &str) -> Result<CreatedSlot> {
        // PostgreSQL 15 introduced the option list; the older keyword form still works on 15+
        // but the list is the documented one.
        let sql = if self.version_num >= 170000 {
            format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER)",
                crate::ident::quote(name)
            )
        } else if self.version_num >= 150000 {
            format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')", crate::ident::quote(name))
        } else {
            format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT", crate::ident::quote(name))
        };
        let rows = self.simple_query(&format!("create replication slot \"{name}\""), &sql).await?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal(format!("CREATE_REPLICATION_SLOT {name} returned no row on the source")))?;
        match (row.get(1).cloned().flatten(), row.get(2).cloned().flatten()) {
            (Some(consistent_point), Some(snapshot)) => Ok(CreatedSlot { consistent_point, snapshot }),
            _ => Err(Error::Internal(format!("CREATE_REPLICATION_SLOT {name} exported no snapshot"))),
        }
    }

    /// Ends the session (which also ends the exported snapshot).
    pub(crate) async fn close(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.stream.write_all(&out).await;
        let _ = self.stream.shutdown().await;
    }

    /// Runs one statement with the simple query protocol; rows as text.
    async fn simple_query(&mut self, context: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(|e| self.io(context, e))?;
        self.send(&out).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read().await? {
                Message::DataRow(body) => {
                    let buf = body.buffer();
                    let mut row = Vec::new();
                    let mut ranges = body.ranges();
                    while let Some(range) = ranges.next().map_err(|e| self.io(context, e))? {
                        row.push(range.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(row);
                }
                Message::ErrorResponse(body) => error = Some(fields(&mut body.fields())),
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(fields) => Err(self.server_error(context, fields)),
            None => Ok(rows),
        }
    }

    async fn authenticate(&mut self, user: &str, password: Option<&[u8]>) -> Result<()> {
        let (info, database) = (self.info.clone(), self.database.clone());
        let missing = move || {
            failure(
                &info,
                &database,
                "the server asks for a password and the URL gives none".into(),
                Some(sqlstate::INVALID_PASSWORD.into()),
            )
        };
        loop {
            let mut out = BytesMut::new();
            match self.read().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    let password = password.ok_or_else(&missing)?;
                    frontend::password_message(password, &mut out).map_err(|e| self.io("authenticate", e))?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let password = password.ok_or_else(&missing)?;
                    let hashed = md5_hash(user.as_bytes(), password, body.salt());
                    frontend::password_message(hashed.as_bytes(), &mut out).map_err(|e| self.io("authenticate", e))?;
                }
                Message::AuthenticationSasl(body) => {
                    let password = password.ok_or_else(&missing)?;
                    let mut mechanisms = body.mechanisms();
                    let mut scram = false;
                    while let Some(mechanism) = mechanisms.next().map_err(|e| self.io("authenticate", e))? {
                        scram |= mechanism == sasl::SCRAM_SHA_256;
                    }
                    if !scram {
                        return Err(failure(
                            &self.info,
                            &self.database,
                            "the server offers no SASL mechanism barge supports (SCRAM-SHA-256)".into(),
                            None,
                        ));
                    }
                    let mut exchange = sasl::ScramSha256::new(password, sasl::ChannelBinding::unrequested());
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, exchange.message(), &mut out)
                        .map_err(|e| self.io("authenticate", e))?;
                    self.send(&out).await?;
                    let Message::AuthenticationSaslContinue(body) = self.read_auth().await? else {
                        return Err(self.protocol("expected a SASL continuation"));
                    };
                    exchange.update(body.data()).map_err(|e| self.io("authenticate", e))?;
                    let mut out = BytesMut::new();
                    frontend::sasl_response(exchange.message(), &mut out).map_err(|e| self.io("authenticate", e))?;
                    self.send(&out).await?;
                    let Message::AuthenticationSaslFinal(body) = self.read_auth().await? else {
                        return Err(self.protocol("expected the SASL outcome"));
                    };
                    exchange.finish(body.data()).map_err(|e| self.io("authenticate", e))?;
                    continue;
                }
                Message::ErrorResponse(body) => {
                    let fields = fields(&mut body.fields());
                    let code = fields.get(&b'C').cloned();
                    let detail = describe(&fields);
                    let hint = if code.as_deref() == Some(sqlstate::INVALID_AUTHORIZATION_SPECIFICATION) {
                        " — the source's pg_hba.conf must allow replication connections (a `replication` or database line for this user and address), and the user needs REPLICATION"
                    } else {
                        ""
                    };
                    return Err(failure(&self.info, &self.database, format!("{detail}{hint}"), code));
                }
                Message::NoticeResponse(_) => continue,
                _ => return Err(self.protocol("unsupported authentication request")),
            }
            self.send(&out).await?;
        }
    }

    /// The next message of a SASL exchange; an error response fails it.
    async fn read_auth(&mut self) -> Result<Message> {
        match self.read().await? {
            Message::ErrorResponse(body) => {
                let fields = fields(&mut body.fields());
                let code = fields.get(&b'C').cloned();
                Err(failure(&self.info, &self.database, describe(&fields), code))
            }
            other => Ok(other),
        }
    }

    /// Reads until ReadyForQuery after authentication; returns the parameters reported.
    async fn until_ready(&mut self) -> Result<HashMap<String, String>> {
        let mut parameters = HashMap::new();
        loop {
            match self.read().await? {
                Message::ParameterStatus(body) => {
                    let (name, value) = (
                        body.name().map_err(|e| self.io("start up", e))?.to_owned(),
                        body.value().map_err(|e| self.io("start up", e))?.to_owned(),
                    );
                    parameters.insert(name, value);
                }
                Message::ReadyForQuery(_) => return Ok(parameters),
                Message::ErrorResponse(body) => {
                    let fields = fields(&mut body.fields());
                    let code = fields.get(&b'C').cloned();
                    return Err(failure(&self.info, &self.database, describe(&fields), code));
                }
                _ => {}
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await.map_err(|e| self.lost(e))?;
        self.stream.flush().await.map_err(|e| self.lost(e))
    }

    async fn read(&mut self) -> Result<Message> {
        loop {
            if let Some(message) = Message::parse(&mut self.buf).map_err(|e| self.io("read", e))? {
                return Ok(message);
            }
            let n = self.stream.read_buf(&mut self.buf).await.map_err(|e| self.lost(e))?;
            if n == 0 {
                return Err(self.lost(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
            }
        }
    }

    fn lost(&self, e: std::io::Error) -> Error {
        Error::Query {
            side: self.info.side(),
            database: self.database.clone(),
            context: "replication connection".into(),
            detail: format!("the connection was lost: {e}"),
            code: None,
        }
    }

    fn io(&self, context: &str, e: std::io::Error) -> Error {
        Error::Internal(format!(
            "{} database \"{}\": {context}: malformed replication protocol message: {e}",
            self.info.side(),
            self.database
        ))
    }

    fn protocol(&self, what: &str) -> Error {
        Error::Internal(format!("{} database \"{}\": replication connection: {what}", self.info.side(), self.database))
    }

    fn server_error(&self, context: &str, fields: HashMap<u8, String>) -> Error {
        Error::Query {
            side: self.info.side(),
            database: self.database.clone(),
            context: context.into(),
            detail: describe(&fields),
            code: fields.get(&b'C').cloned(),
        }
    }
}

/// SSLRequest and the TLS handshake, as `sslmode` says (sockets never use TLS, as libpq).
async fn negotiate_tls(
    info: &ConnInfo,
    dbname: &str,
    mut stream: Box<dyn Stream>,
    host: Option<&str>,
) -> Result<Box<dyn Stream>> {
    let Some(host) = host else { return Ok(stream) };
    let Some(config) = tls::client_config(info)? else { return Ok(stream) };
    let fail = |detail: String| failure(info, dbname, detail, None);
    let mut out = BytesMut::new();
    frontend::ssl_request(&mut out);
    stream.write_all(&out).await.map_err(|e| fail(e.to_string()))?;
    stream.flush().await.map_err(|e| fail(e.to_string()))?;
    let answer = stream.read_u8().await.map_err(|e| fail(e.to_string()))?;
    if answer != b'S' {
        if matches!(info.sslmode(), SslMode::Allow | SslMode::Prefer) && info.plaintext_ok() {
            return Ok(stream);
        }
        if info.sslmode() == SslMode::Prefer {
            return Err(fail(info.no_tls_message()));
        }
        return Err(fail("server does not support TLS; use sslmode=disable in the source URL".into()));
    }
    let name = ServerName::try_from(host.to_owned()).map_err(|e| fail(format!("invalid host name for TLS: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| fail(format!("TLS handshake failed: {e}; check sslrootcert and sslmode in the source URL")))?;
    Ok(Box::new(tls))
}

fn failure(info: &ConnInfo, dbname: &str, detail: String, code: Option<String>) -> Error {
    Error::Connect(Box::new(ConnectFailure {
        side: info.side(),
        endpoint: info.endpoint(),
        database: dbname.to_owned(),
        detail: format!("replication connection: {detail}"),
        hint: String::new(),
        code,
    }))
}

fn fields(iter: &mut ErrorFields<'_>) -> HashMap<u8, String> {
    let mut out = HashMap::new();
    while let Ok(Some(field)) = iter.next() {
        out.insert(field.type_(), String::from_utf8_lossy(field.value_bytes()).into_owned());
    }
    out
}

/// "message (SQLSTATE x); detail: …; hint: …", like the driver's errors.
fn describe(fields: &HashMap<u8, String>) -> String {
    let mut s = format!(
        "{} (SQLSTATE {})",
        fields.get(&b'M').map_or("unknown error", String::as_str),
        fields.get(&b'C').map_or("?", String::as_str)
    );
    if let Some(detail) = fields.get(&b'D') {
        s.push_str(&format!("; detail: {detail}"));
    }
    if let Some(hint) = fields.get(&b'H') {
        s.push_str(&format!("; hint: {hint}"));
    }
    s
}

/// `18.1` → 180001, `15.18 (Debian 15.18-0+deb12u1)` → 150018, `9.6.24` → 90624.
fn version_num(text: &str) -> Option<i32> {
    let numeric: String = text.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let mut parts = numeric.split('.').map(|p| p.parse::<i32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    if major >= 10 {
        Some(major * 10000 + minor)
    } else {
        let patch = parts.next().flatten().unwrap_or(0);
        Some(major * 10000 + minor * 100 + patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_parse_like_server_version_num() {
        assert_eq!(version_num("18.1"), Some(180001));
        assert_eq!(version_num("15.18 (Debian 15.18-0+deb12u1)"), Some(150018));
        assert_eq!(version_num("18devel"), Some(180000));
        assert_eq!(version_num("9.6.24"), Some(90624));
        assert_eq!(version_num("x"), None);
    }

    #[test]
    fn server_errors_read_like_driver_errors() {
        let fields: HashMap<u8, String> =
            [(b'M', "slot exists".to_string()), (b'C', "42710".into()), (b'H', "drop it".into())].into();
        assert_eq!(describe(&fields), "slot exists (SQLSTATE 42710); hint: drop it");
    }
}
