//! barge's exit codes, in one place: the CLI's commands, local and remote, and the worker
//! end with these (README, "Output"; `barge-worker --help`).

use crate::{Outcome, State};

/// Succeeded.
pub const OK: u8 = 0;
/// Failed (the job, or the request).
pub const FAILED: u8 = 1;
/// Bad usage.
pub const USAGE: u8 = 2;
/// The job was cancelled.
pub const CANCELLED: u8 = 3;
/// The job timed out.
pub const TIMED_OUT: u8 = 4;
/// The API could not be reached (the worker: or the job could not be claimed).
pub const UNREACHABLE: u8 = 5;
/// Interrupted (a remote job keeps running).
pub const INTERRUPTED: u8 = 130;

/// The exit code of a finished job's state.
pub fn of_state(state: State) -> u8 {
    match state {
        State::Succeeded => OK,
        State::Cancelled => CANCELLED,
        State::TimedOut => TIMED_OUT,
        _ => FAILED,
    }
}

/// The exit code of a job's outcome (the worker's, once it has reported it).
pub fn of_outcome(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Succeeded => OK,
        Outcome::Failed { .. } => FAILED,
        Outcome::Cancelled => CANCELLED,
        Outcome::TimedOut => TIMED_OUT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ending_has_its_exit_code() {
        assert_eq!(of_state(State::Succeeded), 0);
        assert_eq!(of_state(State::Failed), 1);
        assert_eq!(of_state(State::Cancelled), 3);
        assert_eq!(of_state(State::TimedOut), 4);
        let outcomes = [
            (Outcome::Succeeded, State::Succeeded),
            (Outcome::Failed { reason: "x".into(), retryable: false }, State::Failed),
            (Outcome::Cancelled, State::Cancelled),
            (Outcome::TimedOut, State::TimedOut),
        ];
        for (outcome, state) in outcomes {
            assert_eq!(of_outcome(&outcome), of_state(state), "{outcome:?}");
        }
    }
}
