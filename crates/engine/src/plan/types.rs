//! What a plan is: the databases, tables and parts a run covers and what happens to the
//! target. The types only (the sync preflight and the CLI read them); `plan/mod.rs` builds
//! them.

use serde::{Deserialize, Serialize};

use crate::{
    check::{Check, CheckStatus},
    ident,
};

/// What a run will do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// The source URL, redacted.
    pub source: String,
    /// The target URL, redacted.
    pub target: String,
    /// Source server version.
    pub source_version: String,
    /// Target server version.
    pub target_version: String,
    /// The pg_dump that will read the schema.
    pub pg_dump: String,
    /// Whether every database of the source is copied.
    pub all_databases: bool,
    /// One entry per database, in copy order.
    pub databases: Vec<DatabasePlan>,
    /// Roles that `--roles` will create on the target.
    pub roles_to_create: Vec<String>,
    /// What planning checked: failures stop the run before it changes anything, warnings
    /// are for the user to know.
    pub findings: Vec<Check>,
}

impl Plan {
    /// Findings that stop the run.
    pub fn problems(&self) -> impl Iterator<Item = &Check> {
        self.findings.iter().filter(|c| c.status == CheckStatus::Fail)
    }

    /// Findings the user should know about.
    pub fn warnings(&self) -> impl Iterator<Item = &Check> {
        self.findings.iter().filter(|c| c.status == CheckStatus::Warn)
    }
}

/// One database's copy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatabasePlan {
    /// Source database name.
    pub source: String,
    /// Target database name.
    pub target: String,
    /// What happens to the target database.
    pub action: TargetAction,
    /// Tables whose rows (or only structure) are copied.
    pub tables: Vec<TablePlan>,
    /// Schemas the filters leave out.
    pub excluded_schemas: Vec<String>,
    /// Relations (schema, name) the filters leave out.
    pub excluded_relations: Vec<(String, String)>,
    /// Foreign keys that cannot be created because they reference a table left out.
    pub skipped_foreign_keys: Vec<String>,
    /// Large objects copied, in batches of OID ranges (first, last).
    pub large_object_batches: Vec<(u32, u32)>,
    /// Number of large objects.
    pub large_objects: u64,
    /// Counts of what will be created.
    pub objects: ObjectCounts,
    /// Estimated bytes of table data to copy.
    pub bytes: u64,
    /// COPY streams the copy runs (`--jobs`, else chosen from the data and the machines:
    /// `plan/sizing.rs`); 0 in a plan stored by an earlier version.
    #[serde(default)]
    pub streams: usize,
    /// Why that many.
    #[serde(default)]
    pub streams_reason: String,
    /// vCPUs a remote worker relaying this copy should have (`plan/sizing.rs`): a remote
    /// job's coordinator picks the instance type from it; 0 in a plan stored by an earlier
    /// version.
    #[serde(default)]
    pub worker_cpus: usize,
    /// Why that many.
    #[serde(default)]
    pub worker_cpus_reason: String,
}

impl DatabasePlan {
    /// The COPY streams to run: `--jobs` when given, else the plan's choice.
    pub fn copy_streams(&self, options: &crate::request::Options) -> usize {
        match (options.jobs, self.streams) {
            (None, n) if n > 0 => n,
            _ => options.jobs_or_cpus(),
        }
    }
}

/// Counts of objects a database copy creates.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectCounts {
    /// Schemas (besides public).
    pub schemas: usize,
    /// Ordinary tables and partitions.
    pub tables: usize,
    /// Partitioned tables.
    pub partitioned_tables: usize,
    /// Views.
    pub views: usize,
    /// Materialized views.
    pub materialized_views: usize,
    /// Sequences.
    pub sequences: usize,
    /// Foreign tables.
    pub foreign_tables: usize,
    /// Indexes on ordinary tables.
    pub indexes: usize,
    /// Foreign keys.
    pub foreign_keys: usize,
}

/// What happens to a target database.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum TargetAction {
    /// It does not exist and is created.
    Create,
    /// It exists and is empty: it is used as is.
    UseEmpty,
    /// It holds objects and `--drop-existing` was given: dropped and re-created.
    DropAndCreate {
        /// What it holds now.
        contents: String,
    },
    /// An interrupted copy left its marks and `--resume` was given.
    Resume,
    /// It holds objects and nothing allows touching it.
    Refuse {
        /// Why, and what to do.
        reason: String,
    },
}

/// What kind of table a [`TablePlan`] copies; in JSON and text `table`, `partition` or
/// `unlogged table`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum TableKind {
    /// A plain table.
    #[serde(rename = "table")]
    Table,
    /// A partition of a partitioned table.
    #[serde(rename = "partition")]
    Partition,
    /// An unlogged table: its changes are not in the WAL, so replication cannot follow it.
    #[serde(rename = "unlogged table")]
    Unlogged,
}

impl TableKind {
    /// Its name as the plan shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Table => "table",
            TableKind::Partition => "partition",
            TableKind::Unlogged => "unlogged table",
        }
    }
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One table's copy.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TablePlan {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// Size on the source (heap and TOAST).
    pub bytes: u64,
    /// Estimated rows.
    pub est_rows: u64,
    /// Table, partition or unlogged table.
    pub kind: TableKind,
    /// Structure only, no rows.
    pub schema_only: bool,
    /// Rows travel as text COPY (reg* columns or types without a binary form).
    pub text_copy: bool,
    /// Columns COPY moves, in order.
    pub columns: Vec<String>,
    /// The parts copied in parallel.
    pub parts: Vec<Part>,
    /// The table sets `autovacuum_enabled` itself (barge then leaves autovacuum alone;
    /// otherwise it pauses autovacuum on the table while copying).
    #[serde(default)]
    pub own_autovacuum: bool,
    /// The table has extended statistics (`CREATE STATISTICS`): only `ANALYZE` computes
    /// them, so its statistics are not carried from the source ([`crate::stats`]).
    #[serde(default)]
    pub extended_statistics: bool,
}

impl TablePlan {
    /// `"schema"."name"`.
    pub fn qualified(&self) -> String {
        ident::qualified(&self.schema, &self.name)
    }

    /// `schema.name` for messages.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// A slice of a table copied by one COPY stream, in one transaction.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Part {
    /// The whole table.
    Whole,
    /// Rows whose integer key is in `[from, to)`; an open end is unbounded.
    Key {
        /// Key column.
        column: String,
        /// Inclusive lower bound.
        from: Option<i64>,
        /// Exclusive upper bound.
        to: Option<i64>,
    },
    /// Rows in heap blocks `[from, to)`; an open end is unbounded.
    Blocks {
        /// First block.
        from: Option<u32>,
        /// Block after the last.
        to: Option<u32>,
    },
}

impl Part {
    /// The WHERE clause selecting this part, or None for the whole table. Bounds are integers
    /// barge computed, never user input.
    pub(crate) fn predicate(&self) -> Option<String> {
        match self {
            Part::Whole => None,
            Part::Key { column, from, to } => {
                let col = ident::quote(column);
                let mut conds = Vec::new();
                if let Some(from) = from {
                    conds.push(format!("{col} >= {from}"));
                }
                if let Some(to) = to {
                    conds.push(format!("{col} < {to}"));
                }
                Some(if conds.is_empty() { "true".into() } else { conds.join(" and ") })
            }
            Part::Blocks { from, to } => {
                let mut conds = Vec::new();
                if let Some(from) = from {
                    conds.push(format!("ctid >= '({from},0)'::pg_catalog.tid"));
                }
                if let Some(to) = to {
                    conds.push(format!("ctid < '({to},0)'::pg_catalog.tid"));
                }
                Some(if conds.is_empty() { "true".into() } else { conds.join(" and ") })
            }
        }
    }
}

/// Splits `[min, max]` into `n` key ranges, the first and last open-ended.
pub(crate) fn key_parts(column: &str, min: i64, max: i64, n: u64) -> Vec<Part> {
    let span = (max as i128 - min as i128 + 1).max(1);
    let n = (n as i128).min(span).max(1);
    let step = (span + n - 1) / n;
    (0..n)
        .map(|i| {
            let from = (i > 0).then(|| (min as i128 + i * step) as i64);
            let to = (i < n - 1).then(|| (min as i128 + (i + 1) * step) as i64);
            Part::Key { column: column.to_owned(), from, to }
        })
        .collect()
}

/// Splits `pages` heap blocks into `n` block ranges, the first and last open-ended (rows
/// added past the planned size land in the last part).
pub(crate) fn block_parts(pages: u64, n: u64) -> Vec<Part> {
    let n = n.min(pages.max(1)).max(1);
    let step = pages.div_ceil(n).max(1);
    (0..n)
        .map(|i| {
            let from = (i > 0).then(|| (i * step) as u32);
            let to = (i < n - 1).then(|| ((i + 1) * step) as u32);
            Part::Blocks { from, to }
        })
        .collect()
}

/// Source database → target database, in copy order.
pub(crate) struct Mapping {
    pub pairs: Vec<(String, String)>,
}

#[cfg(test)]
impl TablePlan {
    /// A plain table of `bytes`, copied whole: a fixture for tests.
    pub(crate) fn for_tests(schema: &str, name: &str, bytes: u64) -> TablePlan {
        TablePlan {
            schema: schema.into(),
            name: name.into(),
            bytes,
            est_rows: 0,
            kind: TableKind::Table,
            schema_only: false,
            text_copy: false,
            columns: Vec::new(),
            parts: vec![Part::Whole],
            own_autovacuum: false,
            extended_statistics: false,
        }
    }
}

#[cfg(test)]
impl DatabasePlan {
    /// A plan creating database `t` from `s` with `tables`: a fixture for tests.
    pub(crate) fn for_tests(tables: Vec<TablePlan>) -> DatabasePlan {
        DatabasePlan {
            source: "s".into(),
            target: "t".into(),
            action: TargetAction::Create,
            tables,
            excluded_schemas: Vec::new(),
            excluded_relations: Vec::new(),
            skipped_foreign_keys: Vec::new(),
            large_object_batches: Vec::new(),
            large_objects: 0,
            objects: ObjectCounts::default(),
            bytes: 0,
            streams: 0,
            streams_reason: String::new(),
            worker_cpus: 0,
            worker_cpus_reason: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TableKind;

    #[test]
    fn table_kinds_read_as_the_plan_always_showed_them() {
        for (kind, text) in
            [(TableKind::Table, "table"), (TableKind::Partition, "partition"), (TableKind::Unlogged, "unlogged table")]
        {
            assert_eq!(serde_json::to_value(kind).ok(), Some(serde_json::Value::from(text)));
            assert_eq!(serde_json::from_value::<TableKind>(text.into()).ok(), Some(kind));
            assert_eq!(format!("{kind:<16}|"), format!("{text:<16}|"), "padded like text");
        }
    }
}
