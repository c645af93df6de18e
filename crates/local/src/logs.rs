//! [`FileLogSink`]: a worker's log in a file per job (every attempt appends), private to its
//! owner (0600), as `barge jobs logs` reads it.

use std::path::{Path, PathBuf};

use barge_jobs::{JobId, LogLine, LogSink};
use tokio::io::AsyncWriteExt;

/// Appends log lines to one file.
pub struct FileLogSink {
    path: PathBuf,
    file: tokio::fs::File,
}

impl FileLogSink {
    /// The log file of `job` in `dir`: `{dir}/{job}.log`.
    pub fn path(dir: &Path, job: &JobId) -> PathBuf {
        dir.join(format!("{job}.log"))
    }

    /// Opens (or creates, 0600) `path` for appending.
    pub async fn open(path: &Path) -> std::io::Result<FileLogSink> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).await?;
        Ok(FileLogSink { path: path.to_path_buf(), file })
    }
}

impl LogSink for FileLogSink {
    async fn ship(&mut self, lines: &[LogLine]) -> Result<(), String> {
        let mut buffer = Vec::with_capacity(lines.iter().map(|l| l.text.len() + 1).sum());
        for line in lines {
            buffer.extend_from_slice(line.text.as_bytes());
            buffer.push(b'\n');
        }
        let write = async {
            self.file.write_all(&buffer).await?;
            self.file.flush().await
        };
        write.await.map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}
