//! Adapters for running barge's control plane on one machine (`barge serve`): jobs in
//! SQLite ([`SqliteStore`]), credentials sealed with a key file ([`KeyFileSealer`]), callers
//! recognised by bearer tokens ([`BearerTokens`]), workers run as child processes
//! ([`ProcessLauncher`]) logging to a file per job ([`FileLogSink`], read back by [`FileLogs`]). Depends on `barge-jobs` only.

mod launcher;
mod logs;
mod sealer;
mod store;
mod tokens;

pub use launcher::{ProcessLauncher, WorkerCommand};
pub use logs::{FileLogSink, FileLogs};
pub use sealer::KeyFileSealer;
pub use store::SqliteStore;
pub use tokens::BearerTokens;

/// Creates `path` readable and writable by its owner only (0600) with `contents`; fails if
/// it exists.
pub(crate) fn create_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Reads a file that must be private to its owner (no group or other permissions).
pub(crate) fn read_private(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} is readable by others (mode {:o}); run chmod 600 on it", path.display(), mode & 0o777),
        ));
    }
    std::fs::read(path)
}
