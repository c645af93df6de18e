//! [`FileLogSink`]: a worker's log in a file per job (every attempt appends), private to its
//! owner (0600); [`FileLogs`] reads it back for `GET /jobs/{id}/logs` (the cursor is a byte
//! offset in the file).

use std::path::{Path, PathBuf};

use barge_jobs::{JobId, LogError, LogLine, LogPage, LogSink, LogSource, Timestamp};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Most bytes one read returns (whole lines only, unless one line is longer).
const MAX_PAGE_BYTES: u64 = 1 << 20;

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

/// Reads the log files [`FileLogSink`] wrote in one directory.
#[derive(Clone, Debug)]
pub struct FileLogs {
    dir: PathBuf,
}

impl FileLogs {
    /// The logs in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> FileLogs {
        FileLogs { dir: dir.into() }
    }
}

/// When a line was written: its JSON `timestamp`, else `fallback`.
fn written_at(text: &str, fallback: Timestamp) -> Timestamp {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("timestamp").cloned())
        .and_then(|t| serde_json::from_value::<Timestamp>(t).ok())
        .unwrap_or(fallback)
}

impl LogSource for FileLogs {
    async fn read(&self, job: &JobId, _attempt: u32, after: Option<&str>, limit: usize) -> Result<LogPage, LogError> {
        let start: u64 = match after {
            None => 0,
            Some(text) => text.parse().map_err(|_| LogError::BadCursor)?,
        };
        let path = FileLogSink::path(&self.dir, job);
        let unavailable = |e: std::io::Error| LogError::Unavailable(format!("{}: {e}", path.display()));
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && start == 0 => {
                return Ok(LogPage { lines: Vec::new(), next: "0".into() });
            }
            Err(e) => return Err(unavailable(e)),
        };
        let metadata = file.metadata().await.map_err(unavailable)?;
        let len = metadata.len();
        if start > len {
            return Err(LogError::BadCursor);
        }
        file.seek(std::io::SeekFrom::Start(start)).await.map_err(unavailable)?;
        let mut bytes = Vec::new();
        file.take(MAX_PAGE_BYTES.min(len - start)).read_to_end(&mut bytes).await.map_err(unavailable)?;
        // Whole lines only: a line still being written is read next time.
        let mut end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if end == 0 && bytes.len() as u64 == MAX_PAGE_BYTES {
            end = bytes.len();
        }
        let mut lines = Vec::new();
        let mut used = 0;
        // A line without its own time (a worker's panic message) is dated by the line before
        // it, or the file's last write.
        let modified = metadata.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        let mut at = modified.map_or_else(Timestamp::now, |d| Timestamp::from_millis(d.as_millis() as i64));
        for raw in bytes[..end].split_inclusive(|&b| b == b'\n') {
            if lines.len() == limit {
                break;
            }
            used += raw.len();
            let text = String::from_utf8_lossy(raw).trim_end_matches(['\n', '\r']).to_string();
            at = written_at(&text, at);
            lines.push(LogLine { at, text });
        }
        Ok(LogPage { lines, next: (start + used as u64).to_string() })
    }
}
