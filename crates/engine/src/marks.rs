//! Progress marks on the target: schema `_barge` holds the plan of the run and one row per
//! step that committed, written in the same transaction as the step's own changes. A run
//! that dies leaves exactly the committed steps marked; `--resume` skips them. The schema is
//! dropped when the copy finishes.

use std::collections::HashSet;

use crate::{
    db::Db,
    error::{Error, Result},
    plan::DatabasePlan,
};

const CREATE: &str = "create schema if not exists _barge; \
    create table if not exists _barge.plan (id int primary key, plan text not null, created_at timestamptz not null default now()); \
    create table if not exists _barge.done (step text primary key, rows int8, bytes int8, done_at timestamptz not null default now())";

/// Steps done, loaded once per run.
pub(crate) struct Marks {
    done: HashSet<String>,
}

impl Marks {
    /// Creates the marks schema and records `plan`, or, resuming, loads the plan and the steps
    /// an earlier run committed. Returns the plan to follow.
    pub(crate) async fn open(target: &Db, plan: &DatabasePlan, resume: bool) -> Result<(Marks, DatabasePlan)> {
        target.batch("create the progress marks (schema _barge)", CREATE).await?;
        let stored = target.query_opt("read the stored plan", "select plan from _barge.plan where id = 1", &[]).await?;
        let plan = match stored {
            Some(row) if resume => {
                let text: String = row.get(0);
                serde_json::from_str(&text).map_err(|e| {
                    Error::Refused(format!(
                        "the progress marks in target database \"{}\" are unreadable ({e}): start over with --drop-existing",
                        target.database()
                    ))
                })?
            }
            _ => {
                let text =
                    serde_json::to_string(plan).map_err(|e| Error::Internal(format!("cannot store the plan: {e}")))?;
                target
                    .execute(
                        "store the plan",
                        "insert into _barge.plan (id, plan) values (1, $1) on conflict (id) do update set plan = excluded.plan",
                        &[&text],
                    )
                    .await?;
                plan.clone()
            }
        };
        let rows = target.query("read the progress marks", "select step from _barge.done", &[]).await?;
        Ok((Marks { done: rows.iter().map(|r| r.get(0)).collect() }, plan))
    }

    /// Whether a step committed earlier.
    pub(crate) fn is_done(&self, step: &str) -> bool {
        self.done.contains(step)
    }

    /// How many steps committed earlier.
    pub(crate) fn count(&self) -> usize {
        self.done.len()
    }
}

/// Records a step inside the caller's open transaction.
pub(crate) async fn record(target: &Db, step: &str, rows: i64, bytes: i64) -> Result<()> {
    let insert = target.prepared("record progress", RECORD).await?;
    target.execute_prepared("record progress", &insert, &[&step, &rows, &bytes]).await.map(|_| ())
}

const RECORD: &str = "insert into _barge.done (step, rows, bytes) values ($1, $2, $3)";

/// Records `step` (with the rows and bytes it moved) and the steps `also` inside the
/// caller's open transaction, in one statement.
pub(crate) async fn record_with(target: &Db, step: &str, rows: i64, bytes: i64, also: &[&str]) -> Result<()> {
    if also.is_empty() {
        return record(target, step, rows, bytes).await;
    }
    let steps: Vec<&str> = std::iter::once(step).chain(also.iter().copied()).collect();
    let insert = target.prepared("record progress", RECORD_WITH).await?;
    target.execute_prepared("record progress", &insert, &[&steps, &rows, &bytes]).await.map(|_| ())
}

const RECORD_WITH: &str = "insert into _barge.done (step, rows, bytes) \
    select s, case when n = 1 then $2::int8 else 0 end, case when n = 1 then $3::int8 else 0 end \
    from pg_catalog.unnest($1::text[]) with ordinality as u(s, n)";

/// Runs `sql` and records `step` in one transaction, in one round trip: the statements, the
/// mark and the commit are sent together (the client pipelines them). When a statement
/// fails the transaction is aborted, so the mark fails too and the commit rolls back; the
/// statement's error is the one returned.
pub(crate) async fn run_step(target: &Db, step: &str, context: &str, sql: &str) -> Result<()> {
    // Prepared first: executing it then keeps its place between the statements and the commit.
    let insert = target.prepared("record progress", RECORD).await?;
    let statements = format!("begin;\n{sql}");
    let zero = 0i64;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&step, &zero, &zero];
    let (ran, marked, ended) = tokio::join!(
        target.batch(context, &statements),
        target.execute_prepared("record progress", &insert, &params),
        target.batch(context, "commit"),
    );
    // After a failure the commit, a query of its own, ends the aborted transaction (as a
    // rollback).
    ran?;
    marked?;
    ended
}

/// Drops the marks once the copy is complete.
pub(crate) async fn drop_all(target: &Db) -> Result<()> {
    target.batch("drop the progress marks", "drop schema if exists _barge cascade").await
}

/// A short, stable fingerprint of a text (FNV-1a, 64 bit), for step names.
pub(crate) fn fingerprint(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is the failed test, with its reason.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::conninfo::{ConnInfo, Side};

    #[tokio::test]
    async fn a_step_and_its_mark_commit_together_or_not_at_all() {
        let dst = barge_testkit::dst18();
        let db = dst.create_db("marks").await;
        let target = Db::connect(&ConnInfo::parse(Side::Target, &dst.url(&db)).unwrap(), &db).await.unwrap();
        target.batch("create the marks", CREATE).await.unwrap();
        let state = async || {
            let marks: Vec<String> = target
                .query("read", "select step from _barge.done order by step", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let tables: Vec<String> = target
                .query("read", "select relname::text from pg_class where relname like 't_' order by 1", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            (marks, tables)
        };
        // GIVEN a step that works: its change and its mark are in
        run_step(&target, "one", "first", "create table public.t1 (i int)").await.unwrap();
        assert_eq!(state().await, (vec!["one".into()], vec!["t1".into()]));
        // WHEN a step's statements fail half-way, or its mark cannot be written
        let err = run_step(&target, "two", "second", "create table public.t2 (i int); select 1 / 0").await.unwrap_err();
        assert!(err.to_string().contains("division by zero"), "{err}");
        let err = run_step(&target, "one", "again", "create table public.t3 (i int)").await.unwrap_err();
        assert!(err.to_string().contains("duplicate key"), "{err}");
        // THEN neither left anything, and the session goes on
        assert_eq!(state().await, (vec!["one".into()], vec!["t1".into()]));
        run_step(&target, "four", "fourth", "create table public.t4 (i int)").await.unwrap();
        assert_eq!(state().await, (vec!["four".into(), "one".into()], vec!["t1".into(), "t4".into()]));
    }
}
