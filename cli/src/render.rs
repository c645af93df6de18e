//! What the user sees: the plan, a run's live progress (through [`Display`], or JSON lines
//! with `--output json`), and reports. Everything printed goes through the
//! engine's types, whose URLs are already redacted.

#![allow(clippy::print_stdout)]

use std::sync::Mutex;

use barge_engine::{
    CheckStatus, Error, Event, InitReport, Plan, ValidateReport, VerifyReport,
    human::{human_bytes, human_duration},
    plan::{Part, TargetAction},
    sync::{CutoverReport, ReplicationStatus},
};
use barge_worker::progress::{JobProgress, job_phase};
use serde::Serialize;

use crate::{
    args::OutputFormat,
    display::{Display, phase_text},
    exit::{FAILED, USAGE},
};

/// Prints an engine error (already redacted at its source, redacted again for safety) and
/// returns its exit code.
pub(crate) fn report_error(e: &Error, format: OutputFormat) -> u8 {
    let message = barge_engine::redact(&e.to_string());
    match format {
        OutputFormat::Json => json_line("error", &serde_json::json!({ "message": message })),
        OutputFormat::Text => errln!("error: {message}"),
    }
    match e {
        Error::Url { .. } | Error::Invalid(_) | Error::NotFound(_) => USAGE,
        _ => FAILED,
    }
}

/// Prints one JSON line.
pub fn json_line<T: Serialize>(kind: &str, value: &T) {
    let mut object = serde_json::json!({ "event": kind });
    if let (Some(map), Ok(serde_json::Value::Object(fields))) = (object.as_object_mut(), serde_json::to_value(value)) {
        map.extend(fields);
    }
    outln!("{object}");
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn action_text(action: &TargetAction) -> String {
    match action {
        TargetAction::Create => "create".into(),
        TargetAction::UseEmpty => "use (empty)".into(),
        TargetAction::DropAndCreate { .. } => "DROP and re-create".into(),
        TargetAction::Resume => "resume".into(),
        TargetAction::Refuse { .. } => "REFUSED (not empty)".into(),
    }
}

/// Prints the plan: always the database mapping; with `details` every table and part.
pub fn plan(plan: &Plan, details: bool) {
    outln!("source   {}  (PostgreSQL {})", plan.source, plan.source_version);
    outln!("target   {}  (PostgreSQL {})", plan.target, plan.target_version);
    outln!("pg_dump  {}", plan.pg_dump);
    outln!();
    outln!(
        "Databases ({}):",
        if plan.all_databases { "every database of the source" } else { "the source URL's database" }
    );
    for db in &plan.databases {
        let tables = db.tables.iter().filter(|t| !t.schema_only).count();
        outln!(
            "  {} → {}   {}   {} table(s), {}{}",
            db.source,
            db.target,
            action_text(&db.action),
            tables,
            human_bytes(db.bytes),
            if db.large_objects > 0 { format!(", {} large object(s)", db.large_objects) } else { String::new() }
        );
        if !db.streams_reason.is_empty() {
            outln!("    {}", db.streams_reason);
        }
        if !db.worker_cpus_reason.is_empty() {
            outln!("    a remote worker would want {}", db.worker_cpus_reason);
        }
    }
    if details {
        for db in &plan.databases {
            outln!();
            outln!("{} → {}:", db.source, db.target);
            if let TargetAction::DropAndCreate { contents } = &db.action {
                outln!("  would drop target database \"{}\", which holds {contents}", db.target);
            }
            let o = &db.objects;
            outln!(
                "  would create: {} schema(s), {} table(s), {} partitioned table(s), {} view(s), {} materialized view(s), {} sequence(s), {} foreign table(s), {} index(es), {} foreign key(s)",
                o.schemas,
                o.tables,
                o.partitioned_tables,
                o.views,
                o.materialized_views,
                o.sequences,
                o.foreign_tables,
                o.indexes,
                o.foreign_keys
            );
            if !db.excluded_schemas.is_empty() {
                outln!("  left out: schema(s) {}", db.excluded_schemas.join(", "));
            }
            if !db.excluded_relations.is_empty() {
                let names: Vec<String> = db.excluded_relations.iter().map(|(s, n)| format!("{s}.{n}")).collect();
                outln!("  left out: {}", names.join(", "));
            }
            for t in &db.tables {
                let how = if t.schema_only {
                    "structure only".to_owned()
                } else {
                    let parts = match t.parts.first() {
                        Some(Part::Key { column, .. }) => {
                            format!("{} parts by {column}", t.parts.len())
                        }
                        Some(Part::Blocks { .. }) => {
                            format!("{} parts by block range", t.parts.len())
                        }
                        _ => "1 part".into(),
                    };
                    format!("{parts}{}", if t.text_copy { ", text COPY" } else { "" })
                };
                outln!(
                    "    {:<40} {:>10}  ~{:>12} rows  {:<14} {how}",
                    t.display(),
                    human_bytes(t.bytes),
                    thousands(t.est_rows),
                    t.kind
                );
            }
            if db.large_objects > 0 {
                outln!("    {} large object(s) in {} batch(es)", db.large_objects, db.large_object_batches.len());
            }
        }
        if !plan.roles_to_create.is_empty() {
            outln!();
            outln!("Roles to create (without passwords): {}", plan.roles_to_create.join(", "));
        }
    }
    let warnings: Vec<_> = plan.warnings().collect();
    if !warnings.is_empty() {
        outln!();
        for w in warnings {
            outln!("warning: {}: {}", w.name, w.detail);
        }
    }
    let problems: Vec<_> = plan.problems().collect();
    if !problems.is_empty() {
        outln!();
        for p in problems {
            outln!("problem: {}: {}", p.name, p.detail);
            if let Some(hint) = &p.hint {
                outln!("         {hint}");
            }
        }
    }
    outln!();
}

/// Renders a run's engine events: as they are with `--output json`, else folded into the
/// job-level snapshot a worker reports and drawn by the one [`Display`], with a line for each
/// phase, finished table and warning.
pub struct Progress {
    text: Option<Mutex<Text>>,
}

struct Text {
    fold: JobProgress,
    display: Display,
}

impl Progress {
    /// For a run over `databases` databases.
    pub fn new(format: OutputFormat, databases: usize) -> Progress {
        let text = match format {
            OutputFormat::Json => None,
            OutputFormat::Text => {
                Some(Mutex::new(Text { fold: JobProgress::new(1, databases as u64), display: Display::new() }))
            }
        };
        Progress { text }
    }

    /// Handles one engine event.
    pub fn event(&self, event: Event) {
        let Some(text) = &self.text else {
            // Engine events carry their own "event" tag: phase, table_started, progress, …
            if let Ok(line) = serde_json::to_string(&event) {
                outln!("{line}");
            }
            return;
        };
        let mut text = text.lock().unwrap_or_else(|e| e.into_inner());
        let event = terminal_safe(&event);
        text.fold.apply(&event);
        match &event {
            Event::Phase { database, phase } => {
                let phase = job_phase(*phase).map_or("done", phase_text);
                text.display.line(&format!("[{database}] {phase}"));
            }
            Event::TableFinished { database, table, part, parts, rows, bytes, seconds } => {
                let part = if *parts > 1 { format!(" part {part}/{parts}") } else { String::new() };
                text.display.line(&format!(
                    "[{database}] copied {table}{part}: {} rows, {} in {:.1}s",
                    thousands(*rows),
                    human_bytes(*bytes),
                    seconds
                ));
            }
            Event::Warning { message } => text.display.line(&format!("warning: {message}")),
            _ => {}
        }
        let snapshot = text.fold.snapshot();
        let label = snapshot.phase.map_or("starting", phase_text);
        text.display.show(label, &snapshot);
    }

    /// Clears the bars.
    pub fn finish(&self) {
        if let Some(text) = &self.text {
            text.lock().unwrap_or_else(|e| e.into_inner()).display.clear();
        }
    }
}

/// `value` (an engine event, a job's view) with control characters escaped in every string:
/// table and database names come from the source, and the bars print them past the macros of
/// `main.rs`.
pub(crate) fn terminal_safe<T: Serialize + serde::de::DeserializeOwned + Clone>(event: &T) -> T {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => {
                if let std::borrow::Cow::Owned(safe) = barge_vocab::strip_controls(text) {
                    *text = safe;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            serde_json::Value::Object(fields) => fields.values_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = match serde_json::to_value(event) {
        Ok(value) => value,
        Err(_) => return event.clone(),
    };
    walk(&mut value);
    serde_json::from_value(value).unwrap_or_else(|_| event.clone())
}

/// Prints what a copy did and where its time went.
pub fn init_report(report: &InitReport) {
    let rows: u64 = report.databases.iter().map(|d| d.rows).sum();
    let bytes: u64 = report.databases.iter().map(|d| d.bytes).sum();
    let tables: u64 = report.databases.iter().map(|d| d.tables).sum();
    outln!(
        "Done in {}: {} database(s), {} table(s), {} rows, {} copied ({}/s)",
        human_duration(report.seconds),
        report.databases.len(),
        tables,
        thousands(rows),
        human_bytes(bytes),
        human_bytes((bytes as f64 / report.seconds.max(0.001)) as u64)
    );
    if let Some(roles) = &report.roles
        && !roles.created.is_empty()
    {
        outln!("  roles created: {}", roles.created.join(", "));
    }
    for db in &report.databases {
        let t = &db.timings;
        outln!(
            "  {} → {}: {} rows, {} index(es), {} sequence(s), {} large object(s){}",
            db.source,
            db.target,
            thousands(db.rows),
            db.indexes,
            db.sequences,
            db.large_objects,
            if db.resumed_steps > 0 {
                format!(", {} step(s) resumed from the earlier run", db.resumed_steps)
            } else {
                String::new()
            }
        );
        outln!(
            "    wall time: schema {:.1}s · data {:.1}s · indexes, foreign keys and ANALYZE after the data {:.1}s · rest of post-data {:.1}s · sequences {:.1}s · total {:.1}s",
            t.schema,
            t.data,
            t.after_data,
            t.post_data,
            t.sequences,
            t.total
        );
        outln!(
            "    busy time (overlapping): index builds {:.1}s · foreign keys {:.1}s · statistics {:.1}s ({} table(s) carried from the source, {} analyzed)",
            t.index_builds,
            t.foreign_keys,
            t.analyze,
            db.statistics_carried,
            db.analyzed
        );
    }
}

/// Prints validate's checks as a table with hints.
pub fn validate_report(report: &ValidateReport) {
    let width = report.checks.iter().map(|c| c.name.chars().count()).max().unwrap_or(10).min(48);
    for check in &report.checks {
        let status = match check.status {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "WARN",
            CheckStatus::Fail => "FAIL",
        };
        outln!("{status}  {:<width$}  {}", check.name, check.detail);
        if let Some(hint) = &check.hint {
            outln!("      {:<width$}  fix: {hint}", "");
        }
    }
    let failed = report.checks.iter().filter(|c| c.status == CheckStatus::Fail).count();
    let warned = report.checks.iter().filter(|c| c.status == CheckStatus::Warn).count();
    outln!();
    if failed == 0 {
        outln!("validate: ready to copy ({} checks, {warned} warning(s))", report.checks.len());
    } else {
        outln!("validate: {failed} check(s) failed, {warned} warning(s)");
    }
}

/// Prints verify's findings.
pub fn verify_report(report: &VerifyReport) {
    let mut problems = 0;
    for db in &report.databases {
        outln!("{} → {}", db.source, db.target);
        let matching: Vec<_> = db.tables.iter().filter(|t| t.ok).collect();
        let rows: u64 = matching.iter().map(|t| t.source_rows).sum();
        let chunks: u64 = matching.iter().map(|t| t.chunks).sum();
        outln!("  ok   {} table(s) match: {} rows in {} chunk(s)", matching.len(), thousands(rows), chunks);
        for t in db.tables.iter().filter(|t| !t.ok) {
            problems += 1;
            let mut line = format!(
                "  DIFF {}: source {} rows, target {} rows; {} of {} chunk(s) differ",
                t.table,
                thousands(t.source_rows),
                thousands(t.target_rows),
                t.mismatched_chunks,
                t.chunks
            );
            if let Some(note) = &t.note {
                line.push_str(&format!(" ({note})"));
            }
            outln!("{line}");
            for sample in &t.samples {
                outln!("         {sample}");
            }
        }
        outln!(
            "  {}   {} sequence(s) compared",
            if db.sequences.is_empty() { "ok" } else { "DIFF" },
            db.sequences_checked
        );
        for s in &db.sequences {
            problems += 1;
            // What the next nextval starts from: the value itself when not yet called.
            let show = |v: Option<i64>, called: bool| match v {
                Some(v) if called => format!("last value {v}"),
                Some(v) => format!("next value {v}"),
                None => "unreadable".into(),
            };
            if s.exists_on_target {
                outln!(
                    "         {}: source {}, target {}",
                    s.sequence,
                    show(s.source, s.source_called),
                    show(s.target, s.target_called)
                );
            } else {
                outln!("         {}: missing on the target", s.sequence);
            }
        }
        outln!(
            "  {}   {} schema object(s) compared",
            if db.objects.is_empty() { "ok" } else { "DIFF" },
            db.objects_checked
        );
        for o in &db.objects {
            problems += 1;
            outln!("         {}: source {}, target {}", o.kind, o.source, o.target);
            if !o.missing.is_empty() {
                outln!("           missing on target: {}", o.missing.join(", "));
            }
            if !o.extra.is_empty() {
                outln!("           only on target: {}", o.extra.join(", "));
            }
        }
        let (s, t) = db.large_objects;
        outln!("  {}   large objects: source {s}, target {t}", if s == t { "ok" } else { "DIFF" });
    }
    outln!();
    if report.ok {
        outln!("verify: source and target match");
    } else {
        outln!("verify: {} difference(s) found", problems.max(1));
    }
}

/// Prints where a sync stands, per database.
pub fn sync_status(status: &ReplicationStatus) {
    for db in &status.databases {
        let state = match (db.invalidated.is_some(), db.enabled, db.slot_active, db.workers) {
            (true, ..) => "SLOT INVALIDATED",
            (false, false, _, _) => "paused",
            (false, true, true, w) if w > 0 => "streaming",
            _ => "connecting",
        };
        outln!("{} → {}  {}  ({state})", db.source_database, db.target_database, db.name);
        outln!(
            "  lag {} / {}{}",
            human_bytes(db.lag_bytes),
            db.lag_seconds.map_or("–".into(), |s| format!("{s:.1} s")),
            db.wal_status.as_deref().filter(|w| *w != "reserved").map_or(String::new(), |w| format!(
                " · slot WAL {w} (the source is close to dropping WAL the target still needs)"
            ))
        );
        let limit = match (db.safe_wal_bytes, db.keep_limit_bytes) {
            (Some(safe), Some(keep)) => {
                format!(
                    "; {} more before the source invalidates the slot (max_slot_wal_keep_size {})",
                    human_bytes(safe),
                    human_bytes(keep)
                )
            }
            _ => "; the source keeps it without limit (max_slot_wal_keep_size -1)".into(),
        };
        outln!(
            "  source WAL kept for the slot {}{limit}{}",
            human_bytes(db.retained_bytes),
            match db.failover {
                Some(true) => " · failover slot",
                Some(false) => " · not a failover slot",
                None => "",
            }
        );
        outln!(
            "  tables {}/{} ready{}{}",
            db.tables - db.tables_not_ready.len() as u64,
            db.tables,
            if db.tables_not_ready.is_empty() {
                String::new()
            } else {
                format!(" (not ready: {})", db.tables_not_ready.join(", "))
            },
            db.apply_errors
                .filter(|n| *n > 0)
                .map_or(String::new(), |n| format!(" · {n} apply error(s): see the target server's log"))
        );
        for change in &db.schema_changes {
            outln!("  SCHEMA CHANGED {change}");
        }
    }
    if let Some(rate) = status.apply_rows_per_second {
        outln!(
            "applying {rate:.0} rows/s ({}/s of WAL)",
            human_bytes(status.apply_bytes_per_second.unwrap_or(0.0) as u64)
        );
    }
    if let Some(growth) = status.retained_bytes_per_second {
        let sign = if growth < 0.0 { "-" } else { "+" };
        outln!("WAL kept on the source: {sign}{}/s", human_bytes(growth.abs() as u64));
    }
    for alert in &status.wal_alerts {
        outln!("WARNING {alert}");
    }
}

/// Prints what a cutover did.
pub fn cutover_report(report: &CutoverReport) {
    outln!(
        "cut over {} in {}: caught up, {} sequence(s) set, subscription, slot and publication removed",
        report.names.join(", "),
        human_duration(report.catch_up_seconds),
        report.sequences
    );
    verify_report(&report.verify);
}
