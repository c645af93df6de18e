//! barge's exit codes, in one place: the CLI's commands, local and remote, end with these
//! (README, "Output"); the worker's own codes are documented with `barge-worker --help`.

use barge_jobs::State;

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
/// The API could not be reached.
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
