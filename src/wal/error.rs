//! [`WalError`]: the log could not be opened, replayed or written.

use std::io;
use std::path::{Path, PathBuf};

use super::options::OptionsError;
use super::stop::Stopped;
use crate::storage::StorageError;

/// The log could not be opened, replayed or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The options are unusable.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// A file operation failed.
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. `read the log`.
        action: &'static str,
        /// Why it failed.
        source: io::Error,
    },
    /// A record that is not a torn last write is bad.
    #[error(
        "{}: corrupt record at byte offset {offset}: {reason}; refusing to start \
         (restore the file from a backup, or truncate it to {offset} bytes to drop this \
         record and everything after it)",
        path.display()
    )]
    Corrupt {
        /// The segment or snapshot.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Log files are missing, so replay would silently lose writes.
    #[error("{}: {problem}; refusing to start", dir.display())]
    Missing {
        /// The log directory.
        dir: PathBuf,
        /// Which file is missing.
        problem: String,
    },
    /// Storage refused a record during replay.
    #[error("{}: record at byte offset {offset} cannot be replayed into storage: {source}", path.display())]
    Replay {
        /// The segment or snapshot.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// The storage's error.
        source: StorageError,
    },
    /// Reading (or flushing) storage for a snapshot failed.
    #[error("storage failed during compaction: {0}")]
    Storage(#[from] StorageError),
    /// Compaction stopped because the log is closing.
    #[error("compaction cancelled: the log is closing")]
    Cancelled,
    /// The log has stopped (failed or closed).
    #[error("write-ahead log {0}")]
    Stopped(Stopped),
    /// Another process (or another log in this one) has the directory.
    #[error(
        "{}: the log directory is in use by another hookv server (it holds the lock on {file}); \
         two servers appending to one log would corrupt it",
        dir.display()
    )]
    Locked {
        /// The log directory.
        dir: PathBuf,
        /// The lock file in it.
        file: &'static str,
    },
}

/// The log is a layer over the storage: what it refuses, storage refuses,
/// in the log's words.
impl From<WalError> for StorageError {
    fn from(e: WalError) -> Self {
        StorageError::Layer(e.to_string())
    }
}

/// Makes a [`WalError::Io`] about `path`.
pub(super) fn io_error<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}
