//! Connection URLs as the engine uses them: parsed by barge-vocab (the grammar the API checks
//! too), completed with libpq's defaults for local runs (`PGHOST`, `PGUSER`, `~/.pgpass`, …;
//! never for a remote job, whose worker's environment is not the caller's), and turned into a
//! driver config and into the environment a pg tool reads. The password is held in a
//! [`Secret`] that never prints; it reaches tools only through their environment.

use std::{net::IpAddr, path::PathBuf, time::Duration};

pub use barge_vocab::{ChannelBinding, Secret, SslMode, SslNegotiation, TargetSessionAttrs, reach::Reach, redact};
use barge_vocab::{Params, conn::encode, reach::forbidden};

pub use crate::error::Side;
use crate::error::{Error, Result};

/// A parsed PostgreSQL connection URL with every default filled in.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    side: Side,
    reach: Reach,
    host: String,
    port: u16,
    user: String,
    password: Option<Secret>,
    dbname: Option<String>,
    sslmode: SslMode,
    sslrootcert: Option<String>,
    params: Params,
    connect_timeout: Duration,
    application_name: String,
    /// The checked address a remote worker connects to ([`ConnInfo::pinned`]).
    hostaddr: Option<IpAddr>,
}

impl ConnInfo {
    /// Parses a URL for a run on this machine: what the URL leaves out comes from libpq's
    /// environment variables and `~/.pgpass`, as psql would take it. Errors never contain the
    /// URL nor its password.
    pub fn parse(side: Side, raw: &str) -> Result<Self> {
        Self::parse_for(side, raw, Reach::Anywhere)
    }

    /// Parses a URL for a worker with `reach`: a remote worker takes nothing from its own
    /// environment (no `PGPASSWORD`, no `.pgpass`, no `PGHOST`), refuses what
    /// [`barge_vocab::reach::check_remote`] refuses, and checks every address the host
    /// resolves to before connecting.
    pub fn parse_for(side: Side, raw: &str, reach: Reach) -> Result<Self> {
        let fail = |reason: String| Error::Url { side, reason };
        let params = Params::parse(raw).map_err(|e| fail(e.0))?;
        if reach == Reach::Remote {
            barge_vocab::reach::check_remote(&params).map_err(|e| fail(e.0))?;
        }
        let local = reach == Reach::Anywhere;
        let env = |name: &str| if local { std::env::var(name).ok().filter(|v| !v.is_empty()) } else { None };
        let host = params.host.clone().or_else(|| env("PGHOST")).unwrap_or_else(|| "localhost".into());
        let port = params.port.or_else(|| env("PGPORT").and_then(|p| p.parse().ok())).unwrap_or(5432);
        let user = match params.user.clone().or_else(|| env("PGUSER")).or_else(|| env("USER")) {
            Some(u) => u,
            None => return Err(fail("has no user name: give postgres://USER@host/db".into())),
        };
        let mut password = params.password.clone();
        if password.is_none() && local {
            password = pgpass_lookup(&host, port, params.dbname.as_deref(), &user)
                .or_else(|| env("PGPASSWORD").map(Secret::new));
        }
        Ok(ConnInfo {
            side,
            reach,
            host,
            port,
            user,
            password,
            dbname: params.dbname.clone(),
            sslmode: params.sslmode(),
            sslrootcert: params.sslrootcert.clone(),
            connect_timeout: params.connect_timeout.unwrap_or(Duration::from_secs(15)),
            application_name: params.application_name.clone().unwrap_or_else(|| "barge".into()),
            params,
            hostaddr: None,
        })
    }

    /// For a remote worker, this connection pinned to one address of its host, after every
    /// address the name resolves to was checked against [`barge_vocab::reach::forbidden`]: a
    /// name that points at instance metadata is refused, and the driver and the tools connect
    /// to the address checked, not to a second answer of the DNS. Called before every
    /// connection (a failover moves a name to another address). Local runs and sockets are
    /// left to the driver.
    pub(crate) async fn pinned(&self) -> Result<ConnInfo> {
        if self.reach != Reach::Remote || self.is_socket() {
            return Ok(self.clone());
        }
        let side = self.side;
        let addresses: Vec<IpAddr> = match tokio::net::lookup_host((self.host.as_str(), self.port)).await {
            Ok(found) => found.map(|a| a.ip()).collect(),
            Err(_) => Vec::new(),
        };
        if let Some(why) = addresses.iter().find_map(|ip| forbidden(*ip)) {
            return Err(Error::Refused(format!("the {side} host resolves to {why}, which a worker never connects to")));
        }
        let Some(address) = addresses.first().copied() else {
            return Err(Error::Refused(format!("the {side} host name does not resolve from the worker")));
        };
        Ok(ConnInfo { hostaddr: Some(address), ..self.clone() })
    }

    /// Which side this URL is for.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The database the URL names, if any.
    pub fn dbname(&self) -> Option<&str> {
        self.dbname.as_deref()
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// `host:port` (or the socket directory and port), for messages.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('/') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The TLS mode.
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }

    /// The CA file (or `system`) that verifies the server, if the URL names one.
    pub fn sslrootcert(&self) -> Option<&str> {
        self.sslrootcert.as_deref()
    }

    /// Whether the host is a Unix socket directory.
    pub fn is_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// The same server with another database.
    pub fn with_dbname(&self, dbname: &str) -> ConnInfo {
        ConnInfo { dbname: Some(dbname.to_owned()), ..self.clone() }
    }

    /// How far this worker may reach.
    pub fn reach(&self) -> Reach {
        self.reach
    }

    /// The host name or address (or socket directory).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether a password is known for this connection.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// Whether the connection may go on without TLS when the server offers none: when the URL
    /// says so (`sslmode=disable` or `allow`), or when there is no password to give away. A
    /// man in the middle can always refuse TLS and ask for a cleartext password, so `prefer`
    /// with a password means `require`.
    pub fn plaintext_ok(&self) -> bool {
        self.sslmode.allows_plaintext() || self.password.is_none()
    }

    /// What to say when the server offers no TLS and [`ConnInfo::plaintext_ok`] is false.
    pub(crate) fn no_tls_message(&self) -> String {
        format!(
            "the server does not offer TLS, and barge sends a password over TLS only; add sslmode=disable to the {} URL to send it unencrypted (only on a network you trust)",
            self.side
        )
    }

    /// The URL without its password, for every message barge prints.
    pub fn redacted(&self) -> String {
        let secret = if self.password.is_some() { ":***" } else { "" };
        let db = encode(self.dbname.as_deref().unwrap_or(""));
        if self.is_socket() {
            format!("postgres://{}{secret}@/{db}?host={}", encode(&self.user), encode(&self.host))
        } else {
            format!("postgres://{}{secret}@{}/{db}", encode(&self.user), self.endpoint())
        }
    }

    /// A driver configuration for `dbname`.
    pub fn pg_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        if self.is_socket() {
            config.host_path(&self.host);
        } else {
            config.host(&self.host);
        }
        if let Some(address) = self.hostaddr {
            config.hostaddr(address);
        }
        config
            .port(self.port)
            .user(&self.user)
            .dbname(dbname)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout)
            .keepalives(self.params.keepalives.unwrap_or(true))
            .keepalives_idle(self.params.keepalives_idle.unwrap_or(Duration::from_secs(30)))
            .keepalives_interval(self.params.keepalives_interval.unwrap_or(Duration::from_secs(10)))
            .keepalives_retries(self.params.keepalives_count.unwrap_or(6))
            .ssl_mode(match self.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Allow => tokio_postgres::config::SslMode::Prefer,
                SslMode::Prefer if self.plaintext_ok() => tokio_postgres::config::SslMode::Prefer,
                SslMode::Prefer | SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                    tokio_postgres::config::SslMode::Require
                }
            });
        if let Some(timeout) = self.params.tcp_user_timeout {
            config.tcp_user_timeout(timeout);
        }
        if let Some(attrs) = self.params.target_session_attrs {
            config.target_session_attrs(match attrs {
                TargetSessionAttrs::Any => tokio_postgres::config::TargetSessionAttrs::Any,
                TargetSessionAttrs::ReadWrite => tokio_postgres::config::TargetSessionAttrs::ReadWrite,
                TargetSessionAttrs::ReadOnly => tokio_postgres::config::TargetSessionAttrs::ReadOnly,
            });
        }
        if let Some(binding) = self.params.channel_binding {
            config.channel_binding(match binding {
                ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
                ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
                ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
            });
        }
        if self.params.sslnegotiation == Some(SslNegotiation::Direct) {
            config.ssl_negotiation(tokio_postgres::config::SslNegotiation::Direct);
        }

        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        if let Some(options) = &self.params.options {
            config.options(options);
        }
        config
    }

    /// A libpq connection string for `dbname`, for a server that connects to this one
    /// itself (a subscription on the target connects to the source). The password is in it:
    /// it goes only into the statement that creates the subscription. TLS is never weaker
    /// than barge's own connection (`tls_in_use`): libpq's `prefer` and `require` do not
    /// verify the certificate, so an encrypting mode becomes `verify-full` (`verify-ca` stays)
    /// with the system's certificate authorities. A CA file on barge's machine means nothing
    /// to that server: such a URL is refused rather than weakened.
    /// `login` replaces the URL's user and password (a role made for the sync).
    pub(crate) fn libpq_conninfo(
        &self,
        dbname: &str,
        tls_in_use: bool,
        login: Option<(&str, &Secret)>,
    ) -> Result<String> {
        let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let (user, password) = match login {
            Some((user, password)) => (user, Some(password)),
            None => (self.user.as_str(), self.password.as_ref()),
        };
        let mut parts = vec![
            format!("host={}", quote(&self.host)),
            format!("port={}", self.port),
            format!("user={}", quote(user)),
            format!("dbname={}", quote(dbname)),
            format!("connect_timeout={}", self.connect_timeout.as_secs().max(2)),
        ];
        if let Some(password) = password {
            parts.push(format!("password={}", quote(password.expose())));
        }
        let mode = match self.sslmode {
            SslMode::Disable => "disable",
            SslMode::Allow | SslMode::Prefer if !tls_in_use => "disable",
            SslMode::VerifyCa => "verify-ca",
            SslMode::Allow | SslMode::Prefer | SslMode::Require | SslMode::VerifyFull => "verify-full",
        };
        parts.push(format!("sslmode={mode}"));
        if mode.starts_with("verify") {
            match self.sslrootcert.as_deref() {
                None | Some("system") => parts.push("sslrootcert=system".into()),
                Some(path) => {
                    return Err(Error::Refused(format!(
                        "the subscription connects from the target server, which cannot read sslrootcert {path:?} of this machine: use sslrootcert=system in the source URL (a source certificate signed by a public authority), or sslmode=disable on a network you trust"
                    )));
                }
            }
        }
        Ok(parts.join(" "))
    }

    /// The environment a libpq tool (pg_dump) needs to reach `dbname`: the password goes here,
    /// never into argv. `tls_in_use` says whether barge's own connection negotiated TLS, so a
    /// tool verifies the server exactly when barge did.
    pub fn pg_env(&self, dbname: &str, tls_in_use: bool) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", dbname.to_owned()),
            ("PGAPPNAME", self.application_name.clone()),
            ("PGCONNECT_TIMEOUT", self.connect_timeout.as_secs().to_string()),
        ];
        if let Some(password) = &self.password {
            env.push(("PGPASSWORD", password.expose().to_owned()));
        }
        if let Some(address) = self.hostaddr {
            env.push(("PGHOSTADDR", address.to_string()));
        }
        if let Some(options) = &self.params.options {
            env.push(("PGOPTIONS", options.clone()));
        }
        if let Some(attrs) = self.params.target_session_attrs {
            let value = match attrs {
                TargetSessionAttrs::Any => "any",
                TargetSessionAttrs::ReadWrite => "read-write",
                TargetSessionAttrs::ReadOnly => "read-only",
            };
            env.push(("PGTARGETSESSIONATTRS", value.into()));
        }
        if let Some(binding) = self.params.channel_binding {
            let value = match binding {
                ChannelBinding::Disable => "disable",
                ChannelBinding::Prefer => "prefer",
                ChannelBinding::Require => "require",
            };
            env.push(("PGCHANNELBINDING", value.into()));
        }
        if self.params.sslnegotiation == Some(SslNegotiation::Direct) {
            env.push(("PGSSLNEGOTIATION", "direct".into()));
        }
        let mode = match self.sslmode {
            SslMode::Disable => "disable",
            SslMode::Allow if !tls_in_use => "disable",

            SslMode::VerifyCa => "verify-ca",
            SslMode::Prefer if !tls_in_use => "disable",
            SslMode::Allow | SslMode::Prefer | SslMode::Require | SslMode::VerifyFull => "verify-full",
        };
        env.push(("PGSSLMODE", mode.into()));
        if mode.starts_with("verify") {
            env.push(("PGSSLROOTCERT", self.sslrootcert.clone().unwrap_or_else(|| "system".into())));
        }
        env
    }
}

/// Environment variables a pg tool must not inherit from barge's own environment, because
/// they would point it somewhere other than the URL says.
pub const PG_ENV_CLEARED: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGREQUIRESSL",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
    "PGCHANNELBINDING",
    "PGSSLNEGOTIATION",
    "PGSSLCRL",
    "PGGSSENCMODE",
    "PGREQUIREAUTH",
];

/// Looks the password up in `PGPASSFILE` or `~/.pgpass`, as libpq does: the first line whose
/// host, port, database and user match (`*` matches anything; `\:` and `\\` escape).
fn pgpass_lookup(host: &str, port: u16, dbname: Option<&str>, user: &str) -> Option<Secret> {
    let path = match std::env::var_os("PGPASSFILE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let host = if host.starts_with('/') { "localhost" } else { host };
    let port = port.to_string();
    let dbname = dbname.unwrap_or(user);
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() != 5 {
            continue;
        }
        let matches = |field: &str, value: &str| field == "*" || field == value;
        if matches(&fields[0], host)
            && matches(&fields[1], &port)
            && matches(&fields[2], dbname)
            && matches(&fields[3], user)
        {
            return Some(Secret::new(fields[4].clone()));
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(field)) = (chars.next(), fields.last_mut()) {
                    field.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "p;a$s`w@r:d/x";
    const URL: &str = "postgres://app:p%3Ba%24s%60w%40r%3Ad%2Fx@db.example.com:6543/shop?sslmode=require";

    #[test]
    fn parses_percent_encoded_passwords_with_shell_characters() {
        let info = ConnInfo::parse(Side::Source, URL).unwrap();
        assert_eq!(info.password.as_ref().unwrap().expose(), PW);
        assert_eq!(info.user(), "app");
        assert_eq!(info.dbname(), Some("shop"));
        assert_eq!(info.endpoint(), "db.example.com:6543");
        assert_eq!(info.sslmode(), SslMode::Require);
    }

    #[test]
    fn redacted_forms_never_hold_the_password() {
        let info = ConnInfo::parse(Side::Source, URL).unwrap();
        for text in [info.redacted(), format!("{info:?}"), redact(URL)] {
            assert!(!text.contains("p%3Ba"), "{text}");
            assert!(!text.contains(PW), "{text}");
        }
        assert_eq!(info.redacted(), "postgres://app:***@db.example.com:6543/shop");
    }

    #[test]
    fn redact_handles_malformed_and_keyword_forms() {
        assert_eq!(redact("postgres://u:secret@h:99999999/db"), "postgres://u:***@h:99999999/db");
        assert_eq!(redact("see postgres://u:se:cr@et@h/db now"), "see postgres://u:***@h/db now");
        assert_eq!(redact("host=h password=hunter2 user=u"), "host=h password=*** user=u");
        assert_eq!(
            redact("postgres://h/db?password=x&sslmode=require"),
            "postgres://h/db?password=***&sslmode=require"
        );
        assert_eq!(redact("no url here"), "no url here");
    }

    #[test]
    fn errors_name_the_side_and_never_the_password() {
        for bad in [
            "postgres://u:topsecret@h:notaport/db",
            "mysql://u:topsecret@h/db",
            "postgres://u:topsecret@h/db?bogus=1",
            "postgres://u:topsecret@h/db/extra",
            "postgres://u:topsecret@h/db?sslmode=maybe",
        ] {
            let err = ConnInfo::parse(Side::Target, bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid target URL"), "{err}");
            assert!(!err.contains("topsecret"), "{err}");
        }
    }

    #[test]
    fn the_subscription_is_never_less_verified_than_barge() {
        let info =
            |query: &str| ConnInfo::parse(Side::Source, &format!("postgres://u:pw@db.example.com/db?{query}")).unwrap();
        let mode = |text: String| text.split(' ').find(|p| p.starts_with("sslmode=")).unwrap_or_default().to_owned();
        // libpq's prefer and require verify nothing: the subscription verifies like barge did.
        for query in ["sslmode=prefer", "sslmode=require", "sslmode=verify-full", ""] {
            let text = info(query).libpq_conninfo("db", true, None).unwrap();
            assert_eq!(mode(text.clone()), "sslmode=verify-full", "{query}");
            assert!(text.contains("sslrootcert=system"), "{text}");
        }
        assert_eq!(mode(info("sslmode=verify-ca").libpq_conninfo("db", true, None).unwrap()), "sslmode=verify-ca");
        assert_eq!(mode(info("sslmode=disable").libpq_conninfo("db", false, None).unwrap()), "sslmode=disable");
        // A CA file of this machine cannot be the target server's: refused, not weakened.
        let e = info("sslmode=verify-full&sslrootcert=/etc/ca.pem").libpq_conninfo("db", true, None).unwrap_err();
        assert!(e.to_string().contains("cannot read sslrootcert"), "{e}");
        // A sync's own login replaces the URL's user and password.
        let secret = Secret::new("r4ndom");
        let text = info("sslmode=disable").libpq_conninfo("db", false, Some(("barge_x_login", &secret))).unwrap();
        assert!(
            text.contains("user='barge_x_login'") && text.contains("password='r4ndom'") && !text.contains("'pw'"),
            "{text}"
        );
    }

    #[test]
    fn tool_environment_carries_the_password_and_verifies_tls() {
        let info = ConnInfo::parse(Side::Source, URL).unwrap();
        let env = info.pg_env("shop", true);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PGPASSWORD"), Some(PW));
        assert_eq!(get("PGSSLMODE"), Some("verify-full"));
        assert_eq!(get("PGSSLROOTCERT"), Some("system"));
        let plain = ConnInfo::parse(Side::Source, "postgres://u@h/db").unwrap();
        let env = plain.pg_env("db", false);
        assert!(env.contains(&("PGSSLMODE", "disable".into())));
    }

    #[test]
    fn unix_sockets_and_query_overrides() {
        let info = ConnInfo::parse(Side::Source, "postgresql://u@/db?host=/var/run/postgresql&port=5433").unwrap();
        assert!(info.is_socket());
        assert_eq!(info.endpoint(), "/var/run/postgresql:5433");
        assert_eq!(info.redacted(), "postgres://u@/db?host=%2Fvar%2Frun%2Fpostgresql");
    }

    #[test]
    fn pgpass_lines_split_with_escapes() {
        assert_eq!(split_pgpass(r"h:5432:*:u:pa\:ss\\w"), vec!["h", "5432", "*", "u", r"pa:ss\w"]);
    }
}
