//! [`JobProgress`]: the engine's progress events (per database) folded into the one job-level
//! [`Progress`] snapshot that the worker sends to the coordinator and users see.

use std::collections::{BTreeMap, BTreeSet};

use barge_engine::{
    progress::{Event, Phase as EnginePhase, Progress as DatabaseProgress},
    sync::ReplicationStatus,
};
use barge_jobs::{
    Phase, Progress,
    progress::{MAX_RUNNING, MAX_TEXT_BYTES, TableProgress},
};

/// The job's progress so far.
#[derive(Debug, Default)]
pub struct JobProgress {
    attempt: u32,
    databases_total: u64,
    databases: BTreeMap<String, DatabaseProgress>,
    finished: BTreeSet<String>,
    estimates: BTreeMap<(String, String, usize), u64>,
    tables_failed: u64,
    phase: Option<Phase>,
    message: Option<String>,
    sizing: Option<String>,
    replication: Option<ReplicationStatus>,
    replication_removed: bool,
}

/// The job phase an engine phase belongs to (`Done` leaves the job phase as it was).
pub fn job_phase(phase: EnginePhase) -> Option<Phase> {
    match phase {
        EnginePhase::Schema => Some(Phase::Schema),
        EnginePhase::Copying => Some(Phase::Copying),
        EnginePhase::Indexing => Some(Phase::Indexing),
        EnginePhase::Constraints => Some(Phase::PostData),
        EnginePhase::Done => None,
    }
}

fn bounded(text: &str) -> String {
    if text.len() <= MAX_TEXT_BYTES {
        return text.to_string();
    }
    let mut end = MAX_TEXT_BYTES - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

impl JobProgress {
    /// The progress of attempt `attempt` of a job whose plan holds `databases` databases.
    pub fn new(attempt: u32, databases: u64) -> JobProgress {
        JobProgress { attempt, databases_total: databases, ..JobProgress::default() }
    }

    /// Takes one engine event in.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Phase { database, phase } => {
                self.databases
                    .entry(database.clone())
                    .or_insert_with(|| DatabaseProgress { database: database.clone(), ..DatabaseProgress::default() });
                if let Some(phase) = job_phase(*phase) {
                    self.phase = Some(phase);
                }
            }
            Event::TableStarted { database, table, part, bytes_estimated, .. } => {
                self.estimates.insert((database.clone(), table.clone(), *part), *bytes_estimated);
            }
            Event::TableFinished { database, table, part, .. } => {
                self.estimates.remove(&(database.clone(), table.clone(), *part));
            }
            Event::IndexFinished { .. } => {}
            Event::Progress(snapshot) => {
                if let Some(phase) = snapshot.phase.and_then(job_phase) {
                    self.phase = Some(phase);
                }
                self.databases.insert(snapshot.database.clone(), snapshot.clone());
            }
            Event::Warning { message } => self.message = Some(bounded(message)),
            Event::Replication(status) => {
                if self.phase != Some(Phase::CuttingOver) {
                    self.phase = Some(Phase::Streaming);
                }
                self.replication = Some(status.clone());
            }
            Event::DatabaseFinished { database, .. } => {
                self.finished.insert(database.clone());
            }
        }
    }

    /// Counts a table that failed (verify: differs).
    pub fn table_failed(&mut self) {
        self.tables_failed += 1;
    }

    /// Sets the message users see with the progress (bounded).
    pub fn set_message(&mut self, message: &str) {
        self.message = Some(bounded(message));
    }

    /// Sets how the job is sized (bounded).
    pub fn set_sizing(&mut self, sizing: &str) {
        self.sizing = Some(bounded(sizing));
    }

    /// Says that a sync's replication objects are gone (nothing is left for a cleanup).
    pub fn set_replication_removed(&mut self) {
        self.replication_removed = true;
    }

    /// Moves the job to a phase the engine does not report (validating, verifying, …).
    pub fn set_phase(&mut self, phase: Phase) {
        self.phase = Some(phase);
    }

    /// The job-level snapshot: counters summed over databases, the largest running parts.
    pub fn snapshot(&self) -> Progress {
        let mut progress = Progress {
            phase: self.phase,
            attempt: self.attempt,
            databases_total: self.databases_total.max(self.databases.len() as u64),
            databases_done: self.finished.len() as u64,
            tables_failed: self.tables_failed,
            message: self.message.clone(),
            sizing: self.sizing.clone(),
            replication_removed: self.replication_removed,
            ..Progress::default()
        };
        let mut running = Vec::new();
        for (name, db) in &self.databases {
            progress.tables_total += db.tables_total;
            progress.tables_done += db.tables_done;
            progress.bytes_copied += db.bytes_copied;
            progress.bytes_estimated += db.bytes_estimated;
            progress.rows_copied += db.rows_copied;
            progress.indexes_done += db.indexes_done;
            progress.indexes_total += db.indexes_total;
            if self.finished.contains(name) {
                continue;
            }
            progress.bytes_per_second += db.bytes_per_second;
            let tables: BTreeSet<&str> = db.running.iter().map(|p| p.table.as_str()).collect();
            progress.tables_running += tables.len() as u64;
            running.extend(db.running.iter().map(|part| TableProgress {
                database: bounded(name),
                table: bounded(&part.table),
                part: u32::try_from(part.part).unwrap_or(u32::MAX),
                parts: u32::try_from(part.parts).unwrap_or(u32::MAX),
                bytes: part.bytes,
                bytes_estimated:
                    self.estimates.get(&(name.clone(), part.table.clone(), part.part)).copied().unwrap_or(0),
            }));
        }
        running.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.table.cmp(&b.table)));
        running.truncate(MAX_RUNNING);
        progress.running = running;
        if let Some(status) = &self.replication {
            progress.cdc_lag_bytes = Some(status.lag_bytes);
            progress.cdc_lag_seconds = status.lag_seconds.filter(|s| s.is_finite());
            progress.cdc_apply_rows_per_second = status.apply_rows_per_second.filter(|r| r.is_finite() && *r >= 0.0);
        }
        let left = progress.bytes_estimated.saturating_sub(progress.bytes_copied);
        if progress.bytes_per_second > 0.0 && progress.bytes_per_second.is_finite() {
            progress.eta_seconds = Some(left as f64 / progress.bytes_per_second);
        } else {
            progress.bytes_per_second = 0.0;
        }
        progress
    }
}

#[cfg(test)]
mod tests {
    use barge_engine::progress::{RunningPart, Timings};

    use super::*;

    fn snapshot(database: &str, copied: u64, running: Vec<RunningPart>) -> Event {
        Event::Progress(DatabaseProgress {
            database: database.into(),
            phase: Some(EnginePhase::Copying),
            bytes_copied: copied,
            bytes_estimated: 1000,
            rows_copied: copied / 10,
            tables_total: 4,
            tables_done: 1,
            indexes_total: 6,
            indexes_done: 2,
            bytes_per_second: 100.0,
            running,
            ..DatabaseProgress::default()
        })
    }

    #[test]
    fn databases_sum_into_one_job_snapshot() {
        let mut fold = JobProgress::new(2, 3);
        fold.set_phase(Phase::Validating);
        assert_eq!(fold.snapshot().phase, Some(Phase::Validating));
        fold.apply(&Event::Phase { database: "shop".into(), phase: EnginePhase::Schema });
        assert_eq!(fold.snapshot().phase, Some(Phase::Schema));
        fold.apply(&Event::TableStarted {
            database: "shop".into(),
            table: "public.orders".into(),
            part: 1,
            parts: 2,
            bytes_estimated: 600,
        });
        let part = |table: &str, bytes| RunningPart { table: table.into(), part: 1, parts: 2, bytes };
        fold.apply(&snapshot("shop", 400, vec![part("public.orders", 300), part("public.items", 50)]));
        fold.apply(&snapshot("crm", 100, vec![part("public.people", 90)]));
        let progress = fold.snapshot();
        assert_eq!(progress.phase, Some(Phase::Copying));
        assert_eq!((progress.attempt, progress.databases_total, progress.databases_done), (2, 3, 0));
        assert_eq!((progress.bytes_copied, progress.bytes_estimated, progress.rows_copied), (500, 2000, 50));
        assert_eq!((progress.tables_total, progress.tables_done, progress.tables_running), (8, 2, 3));
        assert_eq!((progress.indexes_total, progress.indexes_done), (12, 4));
        assert_eq!(progress.running[0].table, "public.orders", "largest first");
        assert_eq!(progress.running[0].bytes_estimated, 600);
        assert_eq!(progress.eta_seconds, Some(1500.0 / 200.0));
        assert_eq!(progress.check(), Ok(()));
        // A finished database keeps its counters but no longer runs or adds to the rate.
        fold.apply(&Event::DatabaseFinished { database: "crm".into(), timings: Timings::default() });
        fold.apply(&Event::Warning { message: "x".repeat(5000) });
        fold.apply(&Event::Phase { database: "crm".into(), phase: EnginePhase::Done });
        let progress = fold.snapshot();
        assert_eq!(progress.databases_done, 1);
        assert_eq!(progress.bytes_copied, 500);
        assert_eq!(progress.bytes_per_second, 100.0);
        assert_eq!(progress.running.len(), 2);
        assert_eq!(progress.phase, Some(Phase::Copying), "Done does not move the job's phase");
        assert_eq!(progress.check(), Ok(()), "a long warning is shortened");
        // The snapshot is what the API takes.
        let json = serde_json::to_value(&progress).unwrap();
        assert_eq!(serde_json::from_value::<Progress>(json).unwrap(), progress);
    }

    #[test]
    fn replication_status_becomes_lag_and_rate() {
        let mut fold = JobProgress::new(1, 1);
        fold.apply(&snapshot("shop", 1000, vec![]));
        assert_eq!(fold.snapshot().cdc_lag_bytes, None);
        let status = ReplicationStatus {
            lag_bytes: 8192,
            lag_seconds: Some(0.4),
            apply_rows_per_second: Some(12_000.0),
            ..ReplicationStatus::default()
        };
        fold.apply(&Event::Replication(status.clone()));
        let progress = fold.snapshot();
        assert_eq!(progress.phase, Some(Phase::Streaming));
        assert_eq!((progress.cdc_lag_bytes, progress.cdc_lag_seconds), (Some(8192), Some(0.4)));
        assert_eq!(progress.cdc_apply_rows_per_second, Some(12_000.0));
        assert_eq!(progress.check(), Ok(()));
        // Statuses while cutting over keep the phase.
        fold.set_phase(Phase::CuttingOver);
        fold.apply(&Event::Replication(ReplicationStatus { lag_seconds: Some(f64::NAN), ..status }));
        let progress = fold.snapshot();
        assert_eq!(progress.phase, Some(Phase::CuttingOver));
        assert_eq!(progress.cdc_lag_seconds, None, "a measurement that is not a number is left out");
        assert_eq!(progress.check(), Ok(()));
    }

    #[test]
    fn many_running_parts_are_capped() {
        let mut fold = JobProgress::new(1, 1);
        let parts = (0..200).map(|i| RunningPart { table: format!("s.t{i}"), part: 1, parts: 1, bytes: i }).collect();
        fold.apply(&snapshot("db", 0, parts));
        let progress = fold.snapshot();
        assert_eq!(progress.running.len(), MAX_RUNNING);
        assert_eq!(progress.running[0].bytes, 199);
        assert_eq!(progress.check(), Ok(()));
    }
}
