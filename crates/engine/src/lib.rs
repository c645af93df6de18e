//! barge's replication engine: plan a copy, read the schema with pg_dump in one exported
//! snapshot, move rows as parallel binary COPY streams, build indexes and constraints in
//! parallel, verify and validate, and keep the target in sync by logical replication until a
//! cutover. It emits structured progress events.
//!
//! It depends only on barge-vocab (URLs, secrets, filters) and knows nothing of AWS or HTTP: the CLI runs it
//! directly, the worker runs it for a job.

mod catalog;
pub mod check;
pub mod conninfo;
mod database;
mod db;
pub mod error;
mod gates;
pub mod human;
mod ident;
mod init;
mod login;
mod marks;
pub mod pgtools;
mod pipeline;
pub mod plan;
mod postdata;
pub mod progress;
mod replication;
pub mod request;
mod roles;
mod rows;
mod schema;
pub mod sqlstate;
mod stats;
pub mod sync;
mod tls;
mod toc;
pub mod validate;
pub mod verify;

pub use barge_vocab::WalLimitAction;
pub use barge_vocab::filter::{self, Filter};
pub use catalog::Contents;
pub use check::{Check, CheckStatus};
pub use conninfo::{ConnInfo, Side, redact};
pub use error::{Error, Result};
pub use init::{DatabaseReport, InitReport, init};
pub use plan::{Plan, plan};
pub use progress::{Event, Phase, Progress, ProgressSink};
pub use request::{Local, Options, Request};
pub use roles::RolesReport;
pub use validate::{ValidateReport, validate};
pub use verify::{VerifyReport, verify};
