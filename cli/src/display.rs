//! The one progress display of the CLI. What it draws is the job-level [`Progress`] snapshot:
//! the one a worker reports and `barge jobs watch` polls, and the one a run on this machine
//! folds from the engine's events with the worker's own
//! (`barge_worker::progress::JobProgress`). So a copy looks the same here and remotely: one phase
//! vocabulary, one progress line, one bar layout. Bars on a terminal (stderr), plain lines
//! otherwise; JSON output does not come here (it prints the events or views themselves).

use std::{
    collections::HashMap,
    io::IsTerminal,
    time::{Duration, Instant},
};

use barge_engine::human::{human_bytes, human_duration};
use barge_jobs::{Phase, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Between two plain progress lines.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// Human text of a phase.
pub fn phase_text(phase: Phase) -> &'static str {
    match phase {
        Phase::Validating => "checking",
        Phase::Schema => "creating the schema",
        Phase::Copying => "copying rows",
        Phase::Indexing => "indexes, foreign keys and ANALYZE",
        Phase::PostData => "rest of post-data",
        Phase::Verifying => "verifying",
        Phase::Streaming => "streaming changes",
        Phase::CuttingOver => "cutting over",
    }
}

/// One line of a progress snapshot.
pub fn progress_line(p: &Progress) -> String {
    let mut parts = Vec::new();
    if p.bytes_estimated > 0 || p.bytes_copied > 0 {
        let pct = if p.bytes_estimated > 0 { 100.0 * p.bytes_copied as f64 / p.bytes_estimated as f64 } else { 100.0 };
        parts.push(format!(
            "{} / {} ({:.0}%)",
            human_bytes(p.bytes_copied),
            human_bytes(p.bytes_estimated),
            pct.min(100.0)
        ));
    }
    if p.bytes_per_second > 0.0 {
        parts.push(format!("{}/s", human_bytes(p.bytes_per_second as u64)));
    }
    if let Some(eta) = p.eta_seconds {
        parts.push(format!("ETA {}", human_duration(eta)));
    }
    parts.extend(counts(p));
    parts.join(", ")
}

/// Tables, indexes and replication lag, as far as the snapshot has them.
fn counts(p: &Progress) -> Vec<String> {
    let mut parts = Vec::new();
    if p.tables_total > 0 {
        parts.push(format!("tables {}/{}", p.tables_done, p.tables_total));
    }
    if p.indexes_total > 0 {
        parts.push(format!("indexes {}/{}", p.indexes_done, p.indexes_total));
    }
    if let Some(lag) = lag_text(p) {
        parts.push(lag);
    }
    parts
}

fn lag_text(p: &Progress) -> Option<String> {
    match (p.cdc_lag_bytes, p.cdc_lag_seconds) {
        (None, None) => None,
        (bytes, seconds) => Some(format!(
            "lag {}{}{}",
            bytes.map(human_bytes).unwrap_or_default(),
            seconds.map(|s| format!(" / {s:.1}s")).unwrap_or_default(),
            p.cdc_apply_rows_per_second.map(|r| format!(", applying {r:.0} rows/s")).unwrap_or_default()
        )),
    }
}

/// Draws snapshots on stderr: bars on a terminal, a plain line every few seconds otherwise.
pub struct Display {
    bars: Option<Bars>,
    last_line: Instant,
}

struct Bars {
    multi: MultiProgress,
    /// The phase, with tables, indexes and lag.
    status: ProgressBar,
    /// Bytes copied of the estimate, once there is an estimate.
    overall: Option<ProgressBar>,
    /// One per running table part.
    tables: HashMap<String, ProgressBar>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Display {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Display {
        let bars = std::io::stderr().is_terminal().then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
            let status = multi.add(ProgressBar::new_spinner());
            status.set_style(style("{spinner} {prefix:.bold} {msg}"));
            status.enable_steady_tick(Duration::from_millis(200));
            Bars { multi, status, overall: None, tables: HashMap::new() }
        });
        Display { bars, last_line: Instant::now() }
    }

    /// A line of its own (above the bars on a terminal). Callers escape what came from a
    /// database (`render::terminal_safe`).
    pub fn line(&self, text: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.multi.println(barge_vocab::strip_controls(text));
            }
            None => errln!("{text}"),
        }
    }

    /// A passing state (`reconnecting…`): the spinner's message on a terminal, else a line.
    pub fn status(&self, text: &str) {
        match &self.bars {
            Some(bars) => bars.status.set_message(barge_vocab::strip_controls(text).into_owned()),
            None => errln!("{text}"),
        }
    }

    /// Shows snapshot `p` under `label` (the phase, or the job's state).
    pub fn show(&mut self, label: &str, p: &Progress) {
        match &mut self.bars {
            Some(bars) => bars.update(label, p),
            None => {
                if self.last_line.elapsed() >= PLAIN_EVERY {
                    self.last_line = Instant::now();
                    let line = progress_line(p);
                    if !line.is_empty() {
                        errln!("{line}");
                    }
                }
            }
        }
    }

    /// Removes the bars.
    pub fn clear(&self) {
        if let Some(bars) = &self.bars {
            for bar in bars.tables.values() {
                bar.finish_and_clear();
            }
            if let Some(bar) = &bars.overall {
                bar.finish_and_clear();
            }
            bars.status.finish_and_clear();
        }
    }
}

impl Bars {
    fn update(&mut self, label: &str, p: &Progress) {
        self.status.set_prefix(label.to_owned());
        self.status.set_message(counts(p).join(" · "));
        if p.bytes_estimated > 0 {
            let overall = self.overall.get_or_insert_with(|| {
                let bar = self.multi.insert_after(&self.status, ProgressBar::new(p.bytes_estimated));
                bar.set_style(style("  [{bar:30.cyan/blue}] {bytes}/{total_bytes} {msg}").progress_chars("=> "));
                bar
            });
            overall.set_length(p.bytes_estimated.max(p.bytes_copied));
            overall.set_position(p.bytes_copied);
            let eta = p.eta_seconds.map(|s| format!(", ETA {}", human_duration(s))).unwrap_or_default();
            overall.set_message(format!("{}/s{eta}", human_bytes(p.bytes_per_second as u64)));
        }
        let mut seen = Vec::new();
        for table in &p.running {
            let key = format!("{}/{}#{}", table.database, table.table, table.part);
            let bar = self.tables.entry(key.clone()).or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(table.bytes_estimated.max(1)));
                bar.set_style(style("    {msg:40} [{bar:20}] {bytes}/{total_bytes}").progress_chars("=> "));
                bar.set_message(if table.parts > 1 {
                    format!("{} ({}/{})", table.table, table.part, table.parts)
                } else {
                    table.table.clone()
                });
                bar
            });
            bar.set_length(table.bytes_estimated.max(table.bytes));
            bar.set_position(table.bytes);
            seen.push(key);
        }
        self.tables.retain(|key, bar| {
            let keep = seen.contains(key);
            if !keep {
                bar.finish_and_clear();
                self.multi.remove(bar);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_as_one_line() {
        let p = Progress {
            bytes_copied: 512 << 20,
            bytes_estimated: 1 << 30,
            bytes_per_second: 64.0 * 1048576.0,
            eta_seconds: Some(8.0),
            tables_total: 20,
            tables_done: 7,
            cdc_lag_bytes: Some(4096),
            cdc_lag_seconds: Some(0.5),
            ..Progress::default()
        };
        let line = progress_line(&p);
        for part in ["(50%)", "/s", "ETA", "tables 7/20", "lag", "0.5s"] {
            assert!(line.contains(part), "{part} missing: {line}");
        }
    }
}
