//! The segment being written, and the batch on its way into it.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use tracing::error;

use super::dir::segment_name;
use super::error::{io_error, WalError};

/// One open segment file, `wal-{index}.log`.
pub(super) struct Segment {
    /// Shared with the `everysec` fsync thread (`Shared::current`).
    pub(super) file: Arc<File>,
    pub(super) index: u64,
    pub(super) path: PathBuf,
    /// Bytes written to it whole: where the next batch starts.
    pub(super) bytes: u64,
}

impl Segment {
    /// Opens segment `index` of `dir` for appending (creating it when
    /// `create`; it must not exist then), `bytes` long.
    pub(super) fn open(dir: &Path, index: u64, bytes: u64, create: bool) -> Result<Self, WalError> {
        let path = dir.join(segment_name(index));
        let file = OpenOptions::new()
            .create_new(create)
            .append(true)
            .open(&path)
            .map_err(io_error(&path, "open the log segment for appending"))?;
        Ok(Self {
            file: Arc::new(file),
            index,
            path,
            bytes,
        })
    }

    /// After a failed write or fsync: cuts off whatever part of the failed
    /// batch reached the file, so that records of writes nobody was told
    /// about do not come back at the next start. Best effort (the disk is
    /// failing, so no fsync follows); a cut that fails is logged, and the
    /// records it leaves are replayed at the next start.
    pub(super) fn cut_back(&self, len: u64) {
        if let Err(e) = self.file.set_len(len) {
            error!(file = %self.path.display(), len, error = %e, "write-ahead log: cannot cut the failed batch off the segment; writes that were never acknowledged may reappear at the next start");
        }
    }
}

/// The segment being written. Whoever holds `Shared::io` takes the
/// buffered records and writes them, so batches reach the file in LSN
/// order: the writer thread, or (with `everysec` and `no`) a barrier
/// writing inline.
pub(super) struct Io {
    pub(super) segment: Segment,
    /// The records being written (swapped with the commit buffer), kept
    /// with `undo` until they are as durable as the policy promises.
    pub(super) batch: Vec<u8>,
    /// What undoes the writes of `batch`.
    pub(super) undo: Vec<u8>,
    /// Segment size at which the writer thread rotates and compacts.
    pub(super) compact_at: u64,
    /// The running compaction, if any (inline writes then need not ask for
    /// one).
    pub(super) compactor: Option<JoinHandle<()>>,
}

impl Io {
    /// Writing starts at the end of `segment`; no compaction runs yet.
    pub(super) fn new(segment: Segment, compact_at: u64) -> Self {
        Self {
            segment,
            batch: Vec::new(),
            undo: Vec::new(),
            compact_at,
            compactor: None,
        }
    }
}
