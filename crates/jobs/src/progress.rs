//! [`Progress`]: one snapshot of a job, shared by the worker (which folds the engine's
//! events into it), the store and the API. Bounded in size, so a stored job stays small.

use serde::{Deserialize, Serialize};

/// Where a running job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Preflight checks.
    Validating,
    /// Creating databases and the pre-data schema.
    Schema,
    /// Copying rows (indexes build as tables finish).
    Copying,
    /// Rows are in; the last indexes, foreign keys and ANALYZE.
    Indexing,
    /// Triggers, rules, policies, materialized views, sequences.
    PostData,
    /// Comparing source and target.
    Verifying,
    /// Applying changes by logical replication.
    Streaming,
    /// Waiting for zero lag, syncing sequences, removing replication objects.
    CuttingOver,
}

/// Most running tables a snapshot lists.
pub const MAX_RUNNING: usize = 64;
/// Longest name or message in a snapshot, in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;

/// Where a job is, as numbers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Progress {
    /// The current phase.
    pub phase: Option<Phase>,
    /// Databases in the plan.
    pub databases_total: u64,
    /// Databases finished.
    pub databases_done: u64,
    /// Tables with rows to copy (or to verify).
    pub tables_total: u64,
    /// Tables whose rows are all in (or verified).
    pub tables_done: u64,
    /// Tables being copied now.
    pub tables_running: u64,
    /// Tables that failed (verify: differ).
    pub tables_failed: u64,
    /// COPY bytes relayed.
    pub bytes_copied: u64,
    /// Estimated bytes to copy.
    pub bytes_estimated: u64,
    /// Rows committed.
    pub rows_copied: u64,
    /// Indexes and key constraints built.
    pub indexes_done: u64,
    /// Indexes and key constraints to build.
    pub indexes_total: u64,
    /// Recent throughput.
    pub bytes_per_second: f64,
    /// Estimated seconds until the rows are in.
    pub eta_seconds: Option<f64>,
    /// Replication lag in bytes of WAL (sync).
    pub cdc_lag_bytes: Option<u64>,
    /// Replication lag in seconds (sync).
    pub cdc_lag_seconds: Option<f64>,
    /// Rows the target applies per second (sync).
    pub cdc_apply_rows_per_second: Option<f64>,
    /// Tables being copied now, largest first, at most [`MAX_RUNNING`].
    pub running: Vec<TableProgress>,
    /// The latest thing a user should know.
    pub message: Option<String>,
    /// How the job is sized: the COPY streams the plan chose and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sizing: Option<String>,
    /// The attempt that reported this.
    pub attempt: u32,
    /// A sync job's worker removed its replication objects (or found none): nothing is left
    /// for a cleanup.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replication_removed: bool,
}

/// A table (part) being copied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableProgress {
    /// Target database.
    pub database: String,
    /// `schema.table`.
    pub table: String,
    /// 1-based part number.
    pub part: u32,
    /// Parts of the table.
    pub parts: u32,
    /// Bytes relayed so far.
    pub bytes: u64,
    /// Estimated bytes of the part.
    pub bytes_estimated: u64,
}

impl Progress {
    /// Refuses a snapshot a store should not hold: too many entries, too long texts,
    /// numbers that are not numbers.
    pub fn check(&self) -> Result<(), String> {
        if self.running.len() > MAX_RUNNING {
            return Err(format!("running: at most {MAX_RUNNING} entries"));
        }
        let texts = self
            .running
            .iter()
            .flat_map(|t| [("running[].database", &t.database), ("running[].table", &t.table)])
            .chain(self.message.iter().map(|m| ("message", m)))
            .chain(self.sizing.iter().map(|m| ("sizing", m)));
        for (field, text) in texts {
            if text.len() > MAX_TEXT_BYTES {
                return Err(format!("{field}: longer than {MAX_TEXT_BYTES} bytes"));
            }
        }
        let numbers =
            [Some(self.bytes_per_second), self.eta_seconds, self.cdc_lag_seconds, self.cdc_apply_rows_per_second];
        if numbers.into_iter().flatten().any(|n| !n.is_finite() || n < 0.0) {
            return Err(
                "bytes_per_second, eta_seconds, cdc_lag_seconds and cdc_apply_rows_per_second must be finite and not negative"
                    .into(),
            );
        }
        Ok(())
    }

    /// Fraction of the estimated bytes copied, 0 to 1.
    pub fn fraction(&self) -> f64 {
        if self.bytes_estimated == 0 {
            return 0.0;
        }
        (self.bytes_copied as f64 / self.bytes_estimated as f64).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_bounded() {
        let mut progress = Progress { bytes_copied: 5, bytes_estimated: 10, ..Progress::default() };
        assert_eq!(progress.check(), Ok(()));
        assert!((progress.fraction() - 0.5).abs() < 1e-9);
        progress.running = vec![TableProgress::default(); MAX_RUNNING + 1];
        assert!(progress.check().unwrap_err().contains("running"));
        progress.running.clear();
        progress.message = Some("x".repeat(MAX_TEXT_BYTES + 1));
        assert!(progress.check().unwrap_err().contains("message"));
        progress.message = None;
        progress.eta_seconds = Some(f64::NAN);
        assert!(progress.check().is_err());
        let json = serde_json::json!({"phase": "copying", "bytes_copied": 1, "running": [{"table": "public.t"}]});
        let parsed: Progress = serde_json::from_value(json).unwrap();
        assert_eq!(parsed.running[0].table, "public.t");
        assert!(serde_json::from_value::<Progress>(serde_json::json!({"bytes": 1})).is_err());
    }
}
