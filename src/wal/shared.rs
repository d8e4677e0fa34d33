//! What the log's parts share: the store, the barriers, the writer and
//! fsync threads, and the compactor each hold an `Arc<Shared>`.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::commit::Commit;
use super::segment::Io;
use super::stripes::Stripes;
use crate::storage::Storage;

/// Everything the writer, the fsync thread, the compactor, the store and
/// the barrier share.
pub(super) struct Shared {
    /// The log directory.
    pub(super) dir: PathBuf,
    /// The storage the log wraps: what `WalStore` applies writes to, the
    /// compactor snapshots, and a failure rolls back.
    pub(super) store: Arc<dyn Storage>,
    /// Held from applying a write to appending its record (or undoing it).
    pub(super) stripes: Stripes,
    /// The buffer, the LSNs, the progress barriers wait on, and whether the
    /// log stopped.
    pub(super) commit: Commit,
    /// fdatasync calls on segments since open.
    pub(super) fsyncs: AtomicU64,
    /// The segment being written, for the `everysec` fsync thread.
    pub(super) current: Mutex<Arc<File>>,
    /// Held while taking the buffer and writing it (see [`Io`]).
    pub(super) io: Mutex<Io>,
    /// The fsync thread sleeps on this between ticks (`close` wakes it).
    pub(super) tick: (Mutex<()>, Condvar),
}

impl Shared {
    /// fdatasyncs `file` (a segment), counting it.
    pub(super) fn count_fsync(&self, file: &File) -> io::Result<()> {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let synced = file.sync_data();
        crate::metrics::wal_fsynced(started.elapsed());
        synced
    }
}
