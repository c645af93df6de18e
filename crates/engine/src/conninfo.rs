//! Connection URLs: parsed properly (percent-encoding, not blacklists), redacted by one helper,
//! turned into a driver config and into the environment a pg tool reads. The password is held
//! in a [`Secret`] that never prints; it reaches tools only through their environment.

use std::{fmt, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};

/// Which end of a copy a connection belongs to; every error names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The database copied from.
    Source,
    /// The database copied into.
    Target,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

/// A password. Its `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The password itself, for the driver and a tool's environment only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How TLS is used, as libpq's `sslmode`. Unlike libpq, every mode that encrypts also
/// verifies the server's certificate (docs/pitfalls.md 9): `prefer` and `require` verify like
/// `verify-full`; `verify-ca` skips only the host name check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it (the default).
    Prefer,
    /// TLS or fail.
    Require,
    /// TLS, certificate chain verified, host name not checked.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// Stands in for an empty host while the URL is parsed.
const EMPTY_HOST: &str = "barge-empty-host.invalid";

/// URL query parameters barge understands (libpq's names).
const PARAMS: &[&str] = &[
    "host",
    "port",
    "user",
    "password",
    "dbname",
    "sslmode",
    "sslrootcert",
    "connect_timeout",
    "application_name",
    "options",
    "keepalives_idle",
];

/// A parsed PostgreSQL connection URL.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    side: Side,
    host: String,
    port: u16,
    user: String,
    password: Option<Secret>,
    dbname: Option<String>,
    sslmode: SslMode,
    sslrootcert: Option<String>,
    connect_timeout: Duration,
    keepalives_idle: Duration,
    options: Option<String>,
    application_name: String,
}

impl ConnInfo {
    /// Parses `postgres://user:password@host:port/dbname?param=value`. Errors never contain
    /// the password.
    pub fn parse(side: Side, raw: &str) -> Result<Self> {
        let fail = |reason: String| Error::Url { side, redacted: redact(raw), reason };
        let raw = raw.trim();
        if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
            return Err(fail(
                "expected a URL like postgres://user@host:5432/dbname (the scheme must be postgres:// or postgresql://)".into(),
            ));
        }
        // libpq accepts `postgres://user@/db?host=/socket`; the url crate wants a host after
        // user info, so an empty one gets a placeholder that is dropped below.
        let authority_end = raw[raw.find("://").map_or(0, |i| i + 3)..]
            .find(['/', '?', '#'])
            .map_or(raw.len(), |i| i + raw.find("://").map_or(0, |j| j + 3));
        let patched;
        let raw_for_url = if raw[..authority_end].ends_with('@') {
            patched = format!("{}{EMPTY_HOST}{}", &raw[..authority_end], &raw[authority_end..]);
            patched.as_str()
        } else {
            raw
        };
        let url = Url::parse(raw_for_url).map_err(|e| fail(format!("{e}")))?;
        let decode = |s: &str, what: &str| -> Result<String> {
            percent_decode(s).ok_or_else(|| fail(format!("the {what} is not valid percent-encoded UTF-8")))
        };
        let mut host = match url.host_str() {
            Some(h) if !h.is_empty() => decode(h.trim_start_matches('[').trim_end_matches(']'), "host")?,
            _ => String::new(),
        };
        let mut port = url.port();
        let mut user = if url.username().is_empty() { None } else { Some(decode(url.username(), "user name")?) };
        let mut password = match url.password() {
            Some(p) => Some(Secret(decode(p, "password")?)),
            None => None,
        };
        let path = url.path().trim_start_matches('/');
        if path.contains('/') {
            return Err(fail("the path must be a single database name".into()));
        }
        let mut dbname = if path.is_empty() { None } else { Some(decode(path, "database name")?) };
        let mut info = ConnInfo {
            side,
            host: String::new(),
            port: 5432,
            user: String::new(),
            password: None,
            dbname: None,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            connect_timeout: Duration::from_secs(15),
            keepalives_idle: Duration::from_secs(30),
            options: None,
            application_name: "barge".into(),
        };
        for (key, value) in url.query_pairs() {
            let value = value.into_owned();
            match key.as_ref() {
                "host" => host = value,
                "port" => port = Some(value.parse().map_err(|_| fail(format!("port {value:?} is not a number")))?),
                "user" => user = Some(value),
                "password" => password = Some(Secret(value)),
                "dbname" => dbname = Some(value),
                "sslmode" => {
                    info.sslmode = SslMode::parse(&value).ok_or_else(|| {
                        fail(format!(
                            "sslmode {value:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                        ))
                    })?
                }
                "sslrootcert" => info.sslrootcert = Some(value),
                "connect_timeout" => {
                    let secs: u64 = value
                        .parse()
                        .map_err(|_| fail(format!("connect_timeout {value:?} is not a number of seconds")))?;
                    info.connect_timeout = Duration::from_secs(secs.max(1));
                }
                "keepalives_idle" => {
                    let secs: u64 = value
                        .parse()
                        .map_err(|_| fail(format!("keepalives_idle {value:?} is not a number of seconds")))?;
                    info.keepalives_idle = Duration::from_secs(secs.max(1));
                }
                "application_name" => info.application_name = value,
                "options" => info.options = Some(value),
                other => {
                    return Err(fail(format!("unknown parameter {other:?}; supported: {}", PARAMS.join(", "))));
                }
            }
        }
        info.host = if host.is_empty() { std::env::var("PGHOST").unwrap_or_else(|_| "localhost".into()) } else { host };
        info.port = match port {
            Some(p) => p,
            None => std::env::var("PGPORT").ok().and_then(|p| p.parse().ok()).unwrap_or(5432),
        };
        info.user = match user {
            Some(u) => u,
            None => std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .map_err(|_| fail("no user name: put one in the URL (postgres://USER@host/db)".into()))?,
        };
        info.dbname = dbname;
        info.password = password;
        if info.password.is_none() {
            info.password = pgpass_lookup(&info.host, info.port, info.dbname.as_deref(), &info.user)
                .or_else(|| std::env::var("PGPASSWORD").ok().map(Secret));
        }
        Ok(info)
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

    /// The URL without its password, for every message barge prints.
    pub fn redacted(&self) -> String {
        let user = utf8_percent_encode(&self.user);
        let secret = if self.password.is_some() { ":***" } else { "" };
        let host = if self.is_socket() { format!("?host={}", utf8_percent_encode(&self.host)) } else { String::new() };
        let endpoint = if self.is_socket() { String::new() } else { self.endpoint() };
        format!(
            "postgres://{user}{secret}@{endpoint}/{}{host}",
            utf8_percent_encode(self.dbname.as_deref().unwrap_or(""))
        )
    }

    /// A driver configuration for `dbname`.
    pub fn pg_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        if self.is_socket() {
            config.host_path(&self.host);
        } else {
            config.host(&self.host);
        }
        config
            .port(self.port)
            .user(&self.user)
            .dbname(dbname)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout)
            .keepalives(true)
            .keepalives_idle(self.keepalives_idle)
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(6)
            .ssl_mode(match self.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
            });
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        if let Some(options) = &self.options {
            config.options(options);
        }
        config
    }

    /// A libpq connection string for `dbname`, for a server that connects to this one
    /// itself (a subscription on the target connects to the source). The password is in it:
    /// it goes only into the statement that creates the subscription. TLS is asked for as
    /// the URL asks; a CA file on barge's machine means nothing to that server, so only
    /// `sslrootcert=system` is passed on.
    pub(crate) fn libpq_conninfo(&self, dbname: &str) -> String {
        let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut parts = vec![
            format!("host={}", quote(&self.host)),
            format!("port={}", self.port),
            format!("user={}", quote(&self.user)),
            format!("dbname={}", quote(dbname)),
            format!("connect_timeout={}", self.connect_timeout.as_secs().max(2)),
        ];
        if let Some(password) = &self.password {
            parts.push(format!("password={}", quote(password.expose())));
        }
        let mode = match self.sslmode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        };
        parts.push(format!("sslmode={mode}"));
        if self.sslrootcert.as_deref() == Some("system") {
            parts.push("sslrootcert=system".into());
        }
        parts.join(" ")
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
        if let Some(options) = &self.options {
            env.push(("PGOPTIONS", options.clone()));
        }
        let mode = match self.sslmode {
            SslMode::Disable => "disable",
            SslMode::VerifyCa => "verify-ca",
            SslMode::Prefer if !tls_in_use => "disable",
            SslMode::Prefer | SslMode::Require | SslMode::VerifyFull => "verify-full",
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
];

/// Removes the password from anything that may hold a connection string: URLs
/// (`scheme://user:password@host`), `password=` parameters and `password=` keywords.
/// Malformed input is redacted too; this is the one helper every message goes through.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or whitespace after the scheme.
        let end = tail.find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace()).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    redact_password_params(&out)
}

fn redact_password_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("password=") {
        let (head, tail) = rest.split_at(pos + "password=".len());
        out.push_str(head);
        let end = tail.find(|c: char| c == '&' || c.is_whitespace()).unwrap_or(tail.len());
        if end > 0 {
            out.push_str("***");
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn utf8_percent_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

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
            return Some(Secret(fields[4].clone()));
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
