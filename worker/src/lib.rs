//! barge's worker: it claims a job from the coordinator, runs the engine command the spec
//! names, and reports progress and the outcome. [`execute`] runs and supervises one job
//! attempt, [`report`] is where it reports (the API, or standard output), [`progress`] folds
//! the engine's events into the job's [`barge_jobs::Progress`], [`logs`] ships its redacted
//! JSON log to a sink, [`imds`] reads what launched it on EC2.

pub mod execute;
pub mod imds;
pub mod logs;
pub mod progress;
pub mod report;
