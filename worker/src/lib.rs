//! barge's worker: it claims a job from the coordinator, runs the engine command the spec
//! names, and reports progress and the outcome. This crate wires the engine to the job
//! domain; [`progress`] folds the engine's events into the job's [`barge_jobs::Progress`].

pub mod progress;
