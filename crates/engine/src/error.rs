//! The engine's error type. Every message names the side (source/target), the database and
//! what to check; none ever contains a password or an unredacted URL.

use crate::sqlstate;
use std::fmt;

use serde::{Deserialize, Serialize};

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

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with enough context for a user to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A connection URL could not be used.
    #[error("invalid {side} URL: {reason}")]
    Url {
        /// Which URL.
        side: Side,
        /// What is wrong with it; never the URL nor a part of it.
        reason: String,
    },
    /// Connecting to a server failed.
    #[error("{0}")]
    Connect(Box<ConnectFailure>),
    /// A statement failed on a server.
    #[error("{side} database \"{database}\": {context}: {detail}")]
    Query {
        /// Which server.
        side: Side,
        /// The database the statement ran in.
        database: String,
        /// What barge was doing.
        context: String,
        /// The server's message with its SQLSTATE, detail and hint.
        detail: String,
        /// SQLSTATE, when the server sent one.
        code: Option<String>,
    },
    /// A PostgreSQL client tool could not be found, is too old or failed.
    #[error("{0}")]
    Tool(String),
    /// The target holds data that barge must not overwrite.
    #[error("{0}")]
    TargetNotEmpty(String),
    /// The request itself is wrong (filters, options, database mapping): a usage error.
    #[error("{0}")]
    Invalid(String),
    /// What the request names does not exist (no sync on the target, none with that id):
    /// callers that clean up take it as "nothing to do".
    #[error("{0}")]
    NotFound(String),
    /// The servers are not ready for what was asked (privileges, missing roles or
    /// extensions, unreadable objects); nothing was changed by the check that says so.
    #[error("{0}")]
    Refused(String),
    /// Something barge relies on is not as expected (an internal or environment failure).
    #[error("{0}")]
    Internal(String),
    /// A sync was stopped (cancelled or interrupted) and cleaned up after.
    #[error("{0}")]
    Stopped(String),
    /// The source's schema changed while syncing.
    #[error("{0}")]
    SchemaChanged(String),
    /// TLS could not be set up.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// A local I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What barge was doing.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Why a connection failed, and what to check.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the {side} server at {endpoint} (database \"{database}\"): {detail}{hint}")]
pub struct ConnectFailure {
    /// Which server.
    pub side: Side,
    /// host:port or socket directory.
    pub endpoint: String,
    /// The database barge tried.
    pub database: String,
    /// The driver's or server's message.
    pub detail: String,
    /// What to check, starting with ". ".
    pub hint: String,
    /// SQLSTATE, when the server sent one.
    pub code: Option<String>,
}

impl From<barge_vocab::FilterError> for Error {
    fn from(e: barge_vocab::FilterError) -> Self {
        Error::Invalid(e.to_string())
    }
}

impl Error {
    /// Wraps a driver error from a statement with its context.
    pub(crate) fn query(side: Side, database: &str, context: impl Into<String>, err: &tokio_postgres::Error) -> Self {
        Error::Query {
            side,
            database: database.to_owned(),
            context: context.into(),
            detail: describe_pg_error(err),
            code: err.code().map(|c| c.code().to_owned()),
        }
    }

    /// Wraps an I/O error with its context.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// Appends what to do to a server error's message.
    pub(crate) fn with_hint(mut self, hint: &str) -> Error {
        if let Error::Query { detail, .. } = &mut self {
            detail.push_str(" — ");
            detail.push_str(hint);
        }
        self
    }

    /// Whether running the same request again may succeed without anyone changing anything:
    /// lost connections, servers restarting or out of resources, serialization failures and
    /// local I/O are; bad credentials, refused checks, schema conflicts and usage errors are
    /// not (retrying them only repeats the failure).
    pub fn retryable(&self) -> bool {
        match self {
            Error::Connect(failure) => failure.code.as_deref().is_none_or(transient_sqlstate),
            // No SQLSTATE: the driver lost the connection mid-statement.
            Error::Query { code, .. } => code.as_deref().is_none_or(transient_sqlstate),
            Error::Io { .. } => true,
            Error::Url { .. }
            | Error::Tool(_)
            | Error::TargetNotEmpty(_)
            | Error::Invalid(_)
            | Error::NotFound(_)
            | Error::Refused(_)
            | Error::Internal(_)
            | Error::Stopped(_)
            | Error::SchemaChanged(_)
            | Error::Tls(_) => false,
        }
    }

    /// The SQLSTATE of a failed statement, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Query { code, .. } => code.as_deref(),
            Error::Connect(failure) => failure.code.as_deref(),
            _ => None,
        }
    }
}

/// SQLSTATEs of conditions that pass: connection exceptions (08), serialization failures and
/// deadlocks (40001, 40P01), insufficient resources (53), operator intervention (57: shutdown,
/// crash recovery, "cannot connect now") except a cancelled query (57014), system errors (58).
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code == sqlstate::SERIALIZATION_FAILURE
        || code == sqlstate::DEADLOCK_DETECTED
        || code.starts_with("53")
        || (code.starts_with("57") && code != sqlstate::QUERY_CANCELED)
        || code.starts_with("58")
}

/// Formats a driver error as "message (SQLSTATE xxxxx) detail: … hint: …", never the query text.
pub(crate) fn describe_pg_error(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            s.push_str(&format!("; detail: {detail}"));
        }
        if let Some(hint) = db.hint() {
            s.push_str(&format!("; hint: {hint}"));
        }
        if let Some(w) = db.where_() {
            s.push_str(&format!("; context: {}", w.lines().next().unwrap_or_default()));
        }
        return s;
    }
    let mut s = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(code: Option<&str>) -> Error {
        Error::Connect(Box::new(ConnectFailure {
            side: Side::Source,
            endpoint: "db:5432".into(),
            database: "app".into(),
            detail: "d".into(),
            hint: String::new(),
            code: code.map(str::to_owned),
        }))
    }

    fn query(code: Option<&str>) -> Error {
        Error::Query {
            side: Side::Target,
            database: "app".into(),
            context: "c".into(),
            detail: "d".into(),
            code: code.map(str::to_owned),
        }
    }

    #[test]
    fn what_may_pass_on_a_retry() {
        // Lost connections, restarts, resources.
        assert!(connect(None).retryable());
        assert!(connect(Some("57P03")).retryable());
        assert!(connect(Some("53300")).retryable());
        assert!(query(None).retryable());
        assert!(query(Some("08006")).retryable());
        assert!(query(Some("57P01")).retryable());
        assert!(query(Some("40001")).retryable());
        assert!(Error::io("write", std::io::Error::other("x")).retryable());
        // Credentials, missing databases, schema conflicts, usage.
        assert!(!connect(Some("28P01")).retryable());
        assert!(!connect(Some("28000")).retryable());
        assert!(!connect(Some("3D000")).retryable());
        assert!(!query(Some("42P07")).retryable());
        assert!(!query(Some("57014")).retryable());
        assert!(!Error::TargetNotEmpty("t".into()).retryable());
        assert!(!Error::Invalid("i".into()).retryable());
        assert!(!Error::Refused("r".into()).retryable());
    }
}
