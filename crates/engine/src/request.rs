//! What a user asks the engine for: a [`JobSpec`] (command, URLs, filter, options — the
//! same type the API takes) and what the machine running the engine adds ([`Local`]).
//! [`Request::from_spec`] is the one place a spec becomes an engine request: the CLI calls it
//! for a run on the user's machine, the worker for a job, so the same flags run the same way
//! in both.

use std::path::PathBuf;

pub use barge_vocab::spec::Options;
use barge_vocab::{Command, JobSpec, reach::Reach};

use crate::{
    Error, Result,
    conninfo::{ConnInfo, Side},
    filter::Filter,
};

/// What the machine that runs the engine adds to a spec; a job's spec never carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Local {
    /// Directory holding pg_dump; found on PATH or in well-known places when unset.
    pub pg_bin: Option<PathBuf>,
    /// With a sync: the id in the names of the slot, publication and subscription
    /// (`barge_<id>_<n>`); random when unset. Status, cutover and stop find a sync by it; the
    /// sync checks it before it names anything (`sync::check_id`).
    pub sync_id: Option<String>,
    /// Verify compares exactly these tables (`schema.table`) instead of those the filters
    /// select: a sync's cutover compares the tables the sync carries, which `barge sync add`
    /// and `remove` may have changed since it started.
    pub tables: Option<std::collections::BTreeSet<String>>,
}

/// A copy, validate, verify or sync request.
#[derive(Clone, Debug)]
pub struct Request {
    /// Where data comes from.
    pub source: ConnInfo,
    /// Where it goes.
    pub target: ConnInfo,
    /// Which databases, schemas and tables.
    pub filter: Filter,
    /// How: the spec's options, `sync` set for a sync command.
    pub options: Options,
    /// What this machine adds.
    pub local: Local,
}

impl Request {
    /// The request for `spec`, run where `reach` allows (see [`ConnInfo::parse_for`]). The
    /// spec's options are checked again here (the API and the CLI check them first, with
    /// their own field names), so no caller can hand the engine a spec that was never checked.
    pub fn from_spec(spec: &JobSpec, local: Local, reach: Reach) -> Result<Request> {
        spec.validate_options().map_err(|e| Error::Invalid(e.to_string()))?;
        let mut options = spec.options.clone();
        options.sync |= spec.command == Command::Sync;
        Ok(Request {
            source: ConnInfo::parse_for(Side::Source, spec.source_url.expose(), reach)?,
            target: ConnInfo::parse_for(Side::Target, spec.target_url.expose(), reach)?,
            filter: spec.filter.clone(),
            options,
            local,
        })
    }
}
