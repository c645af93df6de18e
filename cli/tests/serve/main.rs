//! `barge serve` end to end, with real everything: the HTTP API, the SQLite store, workers as
//! processes, the reaper, PostgreSQL clusters started by the harness — through the job API
//! (`api`) and through the `barge` command line as users run it (`cli`).

// Test code: a failed unwrap is the failed test, with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod cli;
mod harness;
