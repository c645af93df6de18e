//! PostgreSQL connection URLs: `postgres://user:password@host:port/dbname?param=value`.
//!
//! [`ConnUrl`] holds the text a user gave (it may hold a password, so it never prints);
//! [`ConnUrl::parse`] turns it into [`Params`] strictly: percent-encoding checked, libpq's
//! parameter names, only what barge can honour. The parse never reads the environment (the
//! API parses on behalf of someone else); the engine fills in libpq's defaults (`PGHOST`,
//! `~/.pgpass`, …) for local runs. Errors never hold the URL or any part of it.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::secret::Secret;

/// Longest connection URL accepted, in bytes (both URLs of a job are sealed together with
/// KMS, whose `Encrypt` takes at most 4 KiB).
pub const MAX_URL_BYTES: usize = 1800;

/// A connection URL as given. It may hold a password, so `Debug` and `Display` show it
/// redacted, and a URL that does not parse is never shown at all.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnUrl(String);

impl ConnUrl {
    /// Wraps a URL (checked by [`ConnUrl::parse`]).
    pub fn new(url: impl Into<String>) -> Self {
        ConnUrl(url.into())
    }

    /// The URL with its password, for the process that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Parses the URL; see [`Params`].
    pub fn parse(&self) -> Result<Params, UrlError> {
        Params::parse(&self.0)
    }

    /// The URL without its password, for what users, logs and stored items see; a URL that
    /// does not parse is not shown (its password could be anywhere in it).
    pub fn redacted(&self) -> String {
        match self.parse() {
            Ok(params) => params.redacted(),
            Err(_) => UNPARSABLE.to_owned(),
        }
    }
}

/// What stands for a URL that did not parse.
pub const UNPARSABLE: &str = "(a URL that does not parse; not shown)";

impl fmt::Debug for ConnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnUrl({})", self.redacted())
    }
}

impl fmt::Display for ConnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Why a URL cannot be used. The message never holds the URL nor any part of it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(pub String);

/// How TLS is used, as libpq's `sslmode`. Unlike libpq, every mode that encrypts also
/// verifies the server's certificate: `prefer` and `require` verify like `verify-full`;
/// `verify-ca` skips only the host name check. And a password is sent over an unencrypted
/// connection only when the URL says `disable` or `allow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it; a password may go unencrypted when it does not.
    Allow,
    /// TLS when the server offers it (the default); without TLS only password-less logins.
    Prefer,
    /// TLS or fail.
    Require,
    /// TLS, certificate chain verified, host name not checked.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    /// libpq's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the user accepted a connection without TLS, password included.
    pub fn allows_plaintext(self) -> bool {
        matches!(self, SslMode::Disable | SslMode::Allow)
    }
}

/// libpq's `target_session_attrs` that barge supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetSessionAttrs {
    /// Any server.
    Any,
    /// A server that accepts writes (a primary).
    ReadWrite,
    /// A server in read-only mode (a standby).
    ReadOnly,
}

/// libpq's `channel_binding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelBinding {
    /// Never.
    Disable,
    /// When the server supports it.
    Prefer,
    /// Always (SCRAM over TLS).
    Require,
}

/// libpq's `sslnegotiation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslNegotiation {
    /// Ask the server for TLS first (every version).
    Postgres,
    /// Start TLS directly (PostgreSQL 17 and later).
    Direct,
}

/// Stands in for an empty host while the URL is parsed (`postgres://u@/db?host=/socket`).
const EMPTY_HOST: &str = "barge-empty-host.invalid";

/// URL parameters barge understands (libpq's names). Everything here is honoured by the
/// engine's own connections; see the engine's conninfo module for what the pg tools get.
pub const PARAMETERS: &[&str] = &[
    "host",
    "port",
    "dbname",
    "user",
    "password",
    "sslmode",
    "sslrootcert",
    "sslnegotiation",
    "channel_binding",
    "connect_timeout",
    "application_name",
    "options",
    "target_session_attrs",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
];

/// A parsed connection URL. `None` means "not in the URL": the caller decides the default
/// (the engine applies libpq's for local runs; the API requires a host).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    /// Host name, IP address, or Unix socket directory (starts with `/`).
    pub host: Option<String>,
    /// TCP port.
    pub port: Option<u16>,
    /// User name.
    pub user: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// Database.
    pub dbname: Option<String>,
    /// TLS mode; `None` is `prefer`.
    pub sslmode: Option<SslMode>,
    /// CA certificates (a PEM file) or `system`.
    pub sslrootcert: Option<String>,
    /// How TLS is started.
    pub sslnegotiation: Option<SslNegotiation>,
    /// SCRAM channel binding.
    pub channel_binding: Option<ChannelBinding>,
    /// Connection timeout.
    pub connect_timeout: Option<Duration>,
    /// `application_name`.
    pub application_name: Option<String>,
    /// Server options (`-c name=value`).
    pub options: Option<String>,
    /// Which server of a cluster is acceptable.
    pub target_session_attrs: Option<TargetSessionAttrs>,
    /// TCP keepalives on (`None`: on).
    pub keepalives: Option<bool>,
    /// Idle time before the first keepalive.
    pub keepalives_idle: Option<Duration>,
    /// Time between keepalives.
    pub keepalives_interval: Option<Duration>,
    /// Unanswered keepalives before the connection counts as lost.
    pub keepalives_count: Option<u32>,
    /// How long sent data may stay unacknowledged.
    pub tcp_user_timeout: Option<Duration>,
}

impl Params {
    /// Parses `raw`; see the module documentation.
    pub fn parse(raw: &str) -> Result<Params, UrlError> {
        let bad = |m: String| UrlError(m);
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(bad("is empty; give postgres://user:password@host:port/dbname".into()));
        }
        if raw.len() > MAX_URL_BYTES {
            return Err(bad(format!("is longer than {MAX_URL_BYTES} bytes")));
        }
        let Some(scheme_end) = raw.find("://") else {
            return Err(bad("is not a URL; give postgres://user:password@host:port/dbname".into()));
        };
        let scheme = &raw[..scheme_end];
        if scheme != "postgres" && scheme != "postgresql" {
            let shown = if scheme.len() <= 16 && scheme.bytes().all(|b| b.is_ascii_alphanumeric()) {
                format!("{scheme}://")
            } else {
                "another scheme".to_owned()
            };
            return Err(bad(format!("must start with postgres:// or postgresql://, not {shown}")));
        }
        if raw.chars().any(char::is_control) {
            return Err(bad("holds a control character".into()));
        }
        // The authority ends at the first '/', '?' or '#'; an '@' after it means a password
        // with an unencoded special character, which would be cut in two below.
        let rest = &raw[scheme_end + 3..];
        let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_len];
        let after = &rest[authority_len..];
        let path = &after[..after.find(['?', '#']).unwrap_or(after.len())];
        // `u:pw?rest@host`: a `?` in a password starts the query early; the text up to the
        // `@` then holds no `=` (a real `?user=me@corp` does).
        let query_password = after.starts_with('?')
            && after.find('@').is_some_and(|at| !after[..at].contains('='))
            && !authority.contains('@');
        if path.contains('@')
            || query_password
            || authority.contains(' ')
            || (after.contains('#') && after.contains('@'))
        {
            return Err(bad(
                "has a character that must be percent-encoded in the user name or password (# / ? @ and spaces: write %23 %2F %3F %40 %20)"
                    .into(),
            ));
        }
        // libpq accepts `postgres://user@/db?host=/socket`; the url crate wants a host after
        // user info, so an empty one gets a placeholder that is dropped below.
        let patched;
        let for_url = if authority.ends_with('@') || authority.is_empty() {
            let split = scheme_end + 3 + authority_len;
            patched = format!("{}{EMPTY_HOST}{}", &raw[..split], &raw[split..]);
            patched.as_str()
        } else {
            raw
        };
        // The url crate's messages ("invalid port number", …) never echo the input.
        let url = Url::parse(for_url).map_err(|e| {
            bad(format!("is not a valid URL ({e}); percent-encode special characters in the user name and password"))
        })?;
        if url.fragment().is_some() {
            return Err(bad("has a '#'; percent-encode it as %23".into()));
        }
        let mut params = Params::default();
        if let Some(host) = url.host_str().filter(|h| !h.is_empty() && *h != EMPTY_HOST) {
            let host = decode(host.trim_start_matches('[').trim_end_matches(']'), "host")?;
            if host.contains(',') {
                return Err(bad("names several hosts; give one".into()));
            }
            params.host = Some(host);
        }
        params.port = url.port();
        if !url.username().is_empty() {
            params.user = Some(decode(url.username(), "user name")?);
        }
        if let Some(password) = url.password() {
            params.password = Some(Secret::new(decode(password, "password")?));
        }
        let path = url.path().trim_start_matches('/');
        if path.contains('/') {
            return Err(bad("has a path of more than one part; give a single database name".into()));
        }
        if !path.is_empty() {
            params.dbname = Some(decode(path, "database name")?);
        }
        if let Some(query) = url.query() {
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let key = decode(&key.replace('+', " "), "parameter name")?;
                let value = decode(&value.replace('+', " "), "parameter value")?;
                params.set(&key, value)?;
            }
        }
        if params.port == Some(0) {
            return Err(bad("port 0 is not a port".into()));
        }
        Ok(params)
    }

    /// One `?key=value`.
    fn set(&mut self, key: &str, value: String) -> Result<(), UrlError> {
        let bad = |m: String| Err(UrlError(m));
        let seconds = |what: &str, value: &str| -> Result<Duration, UrlError> {
            value
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| UrlError(format!("{what} must be a whole number of seconds")))
        };
        let one_of = |what: &str, choices: &str| UrlError(format!("{what} must be one of {choices}"));
        match key {
            "host" => {
                if value.contains(',') {
                    return bad("names several hosts; give one".into());
                }
                self.host = Some(value).filter(|v| !v.is_empty());
            }
            "port" => {
                self.port = Some(value.parse().map_err(|_| UrlError("port must be a number from 1 to 65535".into()))?)
            }
            "user" => self.user = Some(value),
            "password" => self.password = Some(Secret::new(value)),
            "dbname" => self.dbname = Some(value),
            "sslmode" => {
                self.sslmode = Some(match value.as_str() {
                    "disable" => SslMode::Disable,
                    "allow" => SslMode::Allow,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    _ => return Err(one_of("sslmode", "disable, allow, prefer, require, verify-ca, verify-full")),
                })
            }
            "sslrootcert" => self.sslrootcert = Some(value).filter(|v| !v.is_empty()),
            "sslnegotiation" => {
                self.sslnegotiation = Some(match value.as_str() {
                    "postgres" => SslNegotiation::Postgres,
                    "direct" => SslNegotiation::Direct,
                    _ => return Err(one_of("sslnegotiation", "postgres, direct")),
                })
            }
            "channel_binding" => {
                self.channel_binding = Some(match value.as_str() {
                    "disable" => ChannelBinding::Disable,
                    "prefer" => ChannelBinding::Prefer,
                    "require" => ChannelBinding::Require,
                    _ => return Err(one_of("channel_binding", "disable, prefer, require")),
                })
            }
            "target_session_attrs" => {
                self.target_session_attrs = Some(match value.as_str() {
                    "any" => TargetSessionAttrs::Any,
                    "read-write" => TargetSessionAttrs::ReadWrite,
                    "read-only" => TargetSessionAttrs::ReadOnly,
                    _ => return Err(one_of("target_session_attrs", "any, read-write, read-only")),
                })
            }
            "connect_timeout" => {
                self.connect_timeout = Some(seconds("connect_timeout", &value)?.max(Duration::from_secs(2)))
            }
            "application_name" => self.application_name = Some(value),
            "options" => self.options = Some(value),
            "keepalives" => {
                self.keepalives = Some(match value.as_str() {
                    "1" => true,
                    "0" => false,
                    _ => return Err(one_of("keepalives", "0, 1")),
                })
            }
            "keepalives_idle" => {
                self.keepalives_idle = Some(seconds("keepalives_idle", &value)?.max(Duration::from_secs(1)))
            }
            "keepalives_interval" => {
                self.keepalives_interval = Some(seconds("keepalives_interval", &value)?.max(Duration::from_secs(1)))
            }
            "keepalives_count" => {
                self.keepalives_count =
                    Some(value.parse().map_err(|_| UrlError("keepalives_count must be a whole number".into()))?)
            }
            "tcp_user_timeout" => {
                let ms: u64 = value
                    .parse()
                    .map_err(|_| UrlError("tcp_user_timeout must be a whole number of milliseconds".into()))?;
                self.tcp_user_timeout = Some(Duration::from_millis(ms));
            }
            "sslcert" | "sslkey" | "sslpassword" => {
                return bad(format!("{key}: client certificates are not supported; log in with a password"));
            }
            other => {
                // A name is shown only when it looks like one: text after an unencoded `?`
                // in a password would otherwise be echoed.
                let shown = if other.len() <= 32 && other.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                    format!("{other:?}")
                } else {
                    "(not shown)".to_owned()
                };
                return bad(format!("has an unknown parameter {shown}; known: {}", PARAMETERS.join(", ")));
            }
        }
        Ok(())
    }

    /// The TLS mode, `prefer` when the URL gives none.
    pub fn sslmode(&self) -> SslMode {
        self.sslmode.unwrap_or(SslMode::Prefer)
    }

    /// Whether the host is a Unix socket directory.
    pub fn is_socket(&self) -> bool {
        self.host.as_deref().is_some_and(|h| h.starts_with('/'))
    }

    /// The URL without its password (nor any parameter but the host of a socket), as users see it.
    pub fn redacted(&self) -> String {
        let user = self.user.as_deref().map(encode).unwrap_or_default();
        let secret = if self.password.is_some() { ":***" } else { "" };
        let at = if user.is_empty() && secret.is_empty() { "" } else { "@" };
        let (host, query) = match &self.host {
            Some(h) if h.starts_with('/') => (String::new(), format!("?host={}", encode(h))),
            Some(h) if h.contains(':') => (format!("[{h}]"), String::new()),
            Some(h) => (encode(h), String::new()),
            None => (String::new(), String::new()),
        };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let db = self.dbname.as_deref().map(encode).unwrap_or_default();
        format!("postgres://{user}{secret}{at}{host}{port}/{db}{query}")
    }
}

fn decode(s: &str, what: &str) -> Result<String, UrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| {
                    UrlError(format!("the {what} has a % that does not start a percent-encoded byte (write % as %25)"))
                })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // Percent-encoded control characters stay: a database may be named with a newline.
    String::from_utf8(out).map_err(|_| UrlError(format!("the {what} is not valid percent-encoded UTF-8")))
}

/// Percent-encodes everything but unreserved characters.
pub fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "p;a$s`w@r:d/x#y?z w\"q\\";

    fn url_with(pw: &str) -> String {
        format!("postgres://app:{}@db.example.com:6543/shop?sslmode=require", encode(pw))
    }

    #[test]
    fn percent_encoded_passwords_with_every_special_character() {
        let params = ConnUrl::new(url_with(PW)).parse().unwrap();
        assert_eq!(params.password.as_ref().unwrap().expose(), PW);
        assert_eq!(params.user.as_deref(), Some("app"));
        assert_eq!(params.dbname.as_deref(), Some("shop"));
        assert_eq!(params.host.as_deref(), Some("db.example.com"));
        assert_eq!(params.port, Some(6543));
        assert_eq!(params.sslmode(), SslMode::Require);
        assert_eq!(params.redacted(), "postgres://app:***@db.example.com:6543/shop");
    }

    #[test]
    fn unencoded_special_characters_are_refused_without_an_echo() {
        // An unencoded `@` is unambiguous (a host holds none): the last one ends the password.
        let at = ConnUrl::new("postgres://u:se@cr3t@db.example.com/app").parse().unwrap();
        assert_eq!(at.password.unwrap().expose(), "se@cr3t");
        for pw in ["se#cr3t", "se/cr3t", "se?cr3t", "se?cr3t&", "se cr3t", "se%cr3t", "se\ncr3t"] {
            let url = ConnUrl::new(format!("postgresql://postgres:{pw}@db.example.com:5432/app"));
            let err = url.parse().unwrap_err().to_string();
            assert!(!err.contains("cr3t") && !err.contains("db.example.com"), "{pw}: {err}");
            assert_eq!(url.redacted(), UNPARSABLE);
            assert!(!format!("{url:?}").contains("cr3t"));
        }
    }

    #[test]
    fn every_parameter_the_engine_honours_parses() {
        let params = ConnUrl::new(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=system&sslnegotiation=direct&channel_binding=require\
             &connect_timeout=5&application_name=x&options=-c%20a%3Db&target_session_attrs=read-write&keepalives=1\
             &keepalives_idle=10&keepalives_interval=3&keepalives_count=4&tcp_user_timeout=9000",
        )
        .parse()
        .unwrap();
        assert_eq!(params.target_session_attrs, Some(TargetSessionAttrs::ReadWrite));
        assert_eq!(params.channel_binding, Some(ChannelBinding::Require));
        assert_eq!(params.tcp_user_timeout, Some(Duration::from_millis(9000)));
        assert_eq!(params.options.as_deref(), Some("-c a=b"));
        for (bad, needle) in [
            ("sslcert=/x", "client certificates"),
            ("sslkey=/x", "client certificates"),
            ("sslmode=maybe", "sslmode must be"),
            ("bogus=1", "unknown parameter"),
            ("host=a,b", "several hosts"),
            ("port=0", "port 0"),
            ("keepalives=yes", "keepalives must"),
        ] {
            let err = ConnUrl::new(format!("postgres://u:topsecret@h/db?{bad}")).parse().unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
            assert!(!err.contains("topsecret"), "{err}");
        }
    }

    #[test]
    fn sockets_ipv6_and_empty_hosts() {
        let p = ConnUrl::new("postgresql://u@/db?host=/var/run/postgresql&port=5433").parse().unwrap();
        assert!(p.is_socket());
        assert_eq!(p.redacted(), "postgres://u@:5433/db?host=%2Fvar%2Frun%2Fpostgresql");
        let p = ConnUrl::new("postgres://u:x@[fd00:ec2::254]:5432/db").parse().unwrap();
        assert_eq!(p.host.as_deref(), Some("fd00:ec2::254"));
        assert_eq!(p.redacted(), "postgres://u:***@[fd00:ec2::254]:5432/db");
        let p = ConnUrl::new("postgres:///db").parse().unwrap();
        assert_eq!(p.host, None);
    }

    #[test]
    fn other_schemes_and_garbage() {
        for (raw, needle) in [
            ("mysql://u:topsecret@h/db", "mysql://"),
            ("u:topsecret@h/db", "not a URL"),
            ("", "empty"),
            ("postgres://u:topsecret@h:99999/db", "not a valid URL"),
            ("postgres://u:topsecret@h/db/extra", "single database"),
        ] {
            let err = Params::parse(raw).unwrap_err().to_string();
            assert!(err.contains(needle), "{raw}: {err}");
            assert!(!err.contains("topsecret"));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_urls_never_panic_nor_leak(url in "postgres(ql)?://[a-z%0-9]{0,6}(:[ -~]{4,12})?@[ -~]{0,20}") {
            let parsed = ConnUrl::new(url.clone());
            let password = url.split_once("://").and_then(|(_, r)| r.split_once(':')).and_then(|(_, r)| r.rsplit_once('@')).map(|(p, _)| p.to_owned());
            let shown = [parsed.redacted(), format!("{parsed:?}"), parsed.parse().err().map(|e| e.0).unwrap_or_default()];
            if let Some(password) = password.filter(|p| p.len() > 3 && !p.chars().all(|c| c.is_ascii_digit())) {
                for text in shown {
                    proptest::prop_assert!(!text.contains(&password), "{text}");
                }
            }
        }
    }
}
