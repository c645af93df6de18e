//! The words barge's inputs are written in, defined once for the API, the CLI and the engine,
//! so that what the API accepts is exactly what a worker can run:
//!
//! - [`ConnUrl`] and [`Params`]: PostgreSQL connection URLs, parsed strictly (percent-encoding,
//!   libpq's parameter names), never echoed when they do not parse;
//! - [`Secret`]: a password that never prints;
//! - [`redact`]: the one helper that removes passwords from any text;
//! - [`reach`]: which addresses and files a remote worker may be pointed at;
//! - [`filter`]: the `db.schema.table` glob grammar of the filters;
//! - [`spec`]: a whole request, [`JobSpec`] (command, URLs, filter, options), validated once
//!   whether it comes from flags or from the API's JSON.
//!
//! No database driver and no AWS: this crate is a leaf.

pub mod conn;
pub mod filter;
pub mod reach;
mod redact;
mod secret;
pub mod spec;

pub use conn::{ChannelBinding, ConnUrl, Params, SslMode, SslNegotiation, TargetSessionAttrs, UrlError};
pub use filter::{CompiledFilter, Filter, FilterError, Seen};
pub use redact::{redact, strip_controls};
pub use secret::Secret;
pub use spec::{Command, Credentials, JobSpec, Options, SpecError, SyncChange, WalLimitAction};
