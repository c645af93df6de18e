//! What a user asks the engine for: source, target, filters and options. The CLI builds it
//! from flags; later the worker builds it from a job spec.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{conninfo::ConnInfo, filter::Filter};

/// Tables larger than this are split into parts by default (256 MiB).
pub const DEFAULT_SPLIT_BYTES: u64 = 256 << 20;

/// How a run behaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Parallel COPY streams (and verify workers).
    pub jobs: usize,
    /// Parallel index builds and constraint validations.
    pub index_jobs: usize,
    /// Tables larger than this many bytes are split into parts copied in parallel.
    pub split_tables_larger_than: u64,
    /// Drop and re-create target databases that already hold objects.
    pub drop_existing: bool,
    /// Continue an interrupted copy: what committed is not copied again.
    pub resume: bool,
    /// Create the source's roles that the target lacks (never their passwords).
    pub roles: bool,
    /// Leave ownership out (objects belong to the target user).
    pub no_owner: bool,
    /// Leave grants out.
    pub no_acl: bool,
    /// Leave tablespace assignments out.
    pub no_tablespaces: bool,
    /// Do not copy large objects.
    pub skip_large_objects: bool,
    /// `maintenance_work_mem` for index builds on the target, in bytes; sized from the
    /// target's `shared_buffers` when unset.
    pub maintenance_work_mem: Option<u64>,
    /// Directory holding pg_dump; found on PATH or in well-known places when unset.
    pub pg_bin: Option<PathBuf>,
    /// Check (validate) or set up (init) continuous replication after the copy.
    pub sync: bool,
    /// With `sync`: give source tables without a primary key or replica identity
    /// `REPLICA IDENTITY FULL` instead of refusing them.
    pub replica_identity_full: bool,
    /// With `sync`: the id in the names of the slot, publication and subscription
    /// (`barge_<id>_<n>`); random when unset. Status, cutover and stop find a sync by it.
    pub sync_id: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Options {
            jobs: cpus,
            index_jobs: cpus,
            split_tables_larger_than: DEFAULT_SPLIT_BYTES,
            drop_existing: false,
            resume: false,
            roles: false,
            no_owner: false,
            no_acl: false,
            no_tablespaces: false,
            skip_large_objects: false,
            maintenance_work_mem: None,
            pg_bin: None,
            sync: false,
            replica_identity_full: false,
            sync_id: None,
        }
    }
}

/// A copy, validate or verify request.
#[derive(Clone, Debug)]
pub struct Request {
    /// Where data comes from.
    pub source: ConnInfo,
    /// Where it goes.
    pub target: ConnInfo,
    /// Copy every database of the source (also implied by a source URL without a database).
    pub all_databases: bool,
    /// Which databases, schemas and tables.
    pub filter: Filter,
    /// How.
    pub options: Options,
}
