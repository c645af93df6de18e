//! barge's job domain: what a user asks for ([`JobSpec`]), the status machine with its one
//! transition function ([`Job::apply`]), the [`Progress`] snapshot, the API's bodies, and
//! the ports ([`JobStore`], [`Launcher`], [`Sealer`], [`Authenticator`]) adapters implement.
//!
//! Depends only on barge-vocab (the input vocabulary), and on no AWS SDK or database driver: the CLI, the
//! coordinator, the worker and every adapter share these types, so they cannot drift.

pub mod api;
pub mod exit;
pub mod job;
pub mod lifecycle;
pub mod ports;
pub mod progress;
pub mod reaper;
pub mod sizing;
/// What a user asks for: defined in barge-vocab, where the CLI and the engine read it too.
pub mod spec {
    pub use barge_vocab::spec::*;
}

pub use job::{
    ChangeRecord, ChangeState, Deadlines, Event, Job, JobId, JobStatus, Outcome, Phase, Rejection, Replication, State,
    Timestamp,
};
pub use ports::{
    AuthError, Authenticator, Caller, Created, JobStore, LaunchError, Launcher, LogError, LogLine, LogPage, LogSink,
    LogSource, Page, SealError, Sealer, StoreError,
};
pub use progress::Progress;
pub use spec::{Command, ConnUrl, Credentials, Filter, JobSpec, Options, Reach, SpecError, SyncChange, WalLimitAction};
