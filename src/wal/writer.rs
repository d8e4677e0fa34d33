//! Writing the buffer to the segment: the writer thread, the inline write
//! a barrier does itself (`everysec`, `no`), and the `everysec` fsync
//! thread (see the module docs of `wal`, "Pieces").

use std::io::Write;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use super::commit::lock;
use super::compact;
use super::dir::sync_dir;
use super::error::{io_error, WalError};
use super::options::Fsync;
use super::segment::{Io, Segment};
use super::shared::Shared;
use super::undo::fail;

/// Why [`flush`] wrote nothing (more).
#[derive(Debug)]
enum WriteError {
    /// The log had already stopped: nothing to do.
    Stopped,
    /// This write or fsync failed: the log must stop.
    Failed(String),
}

/// Takes the buffered records, writes them to the segment, fsyncs if the
/// policy (or `force_sync`) asks for it, and tells the barriers.
/// `closing`: nothing appended later is written. The caller holds `io`
/// and, on `Failed`, stops the log before releasing it.
fn flush(shared: &Shared, io: &mut Io, closing: bool, force_sync: bool) -> Result<(), WriteError> {
    let commit = &shared.commit;
    let upto = commit
        .take_batch(&mut io.batch, &mut io.undo, closing)
        .ok_or(WriteError::Stopped)?;
    let seg = &mut io.segment;
    // Where the batch starts: the end of the last one written whole.
    let start = seg.bytes;
    if !io.batch.is_empty() {
        let written = (&*seg.file).write_all(&io.batch);
        // After a failure these records are never written (the log
        // stops before `io` is released) and `fail` undoes them.
        let len = io.batch.len() as u64;
        if let Err(e) = written {
            seg.cut_back(start);
            return Err(WriteError::Failed(format!(
                "cannot write {}: {e}",
                seg.path.display()
            )));
        }
        seg.bytes += len;
        crate::metrics::wal_written(len);
    }
    let synced = commit.progress().synced;
    let sync = (force_sync || commit.policy == Fsync::Always) && synced < upto;
    if sync {
        if let Err(e) = shared.count_fsync(&io.segment.file) {
            if io.segment.bytes > start {
                io.segment.cut_back(start);
            }
            return Err(WriteError::Failed(format!(
                "cannot fsync {}: {e}",
                io.segment.path.display()
            )));
        }
    }
    // Durable as the policy promises: acknowledged from now on, so
    // never undone.
    io.batch.clear();
    io.undo.clear();
    // Keep a big batch's buffers from pinning memory forever.
    for buf in [&mut io.batch, &mut io.undo] {
        if buf.capacity() > (4 << 20) {
            buf.shrink_to(1 << 20);
        }
    }
    commit.mark_written(upto, sync);
    Ok(())
}

/// With `everysec` and `no`, a barrier writes the buffer itself: one
/// `write` for every connection that appended in this scheduler tick,
/// instead of waking the writer thread and waiting for it (the handoff
/// costs more than the write). False when someone else holds the segment
/// (the writer thread writing or rotating, another runtime thread's
/// barrier): kick the writer instead.
pub(super) fn write_inline(shared: &Shared) -> bool {
    let mut io = match shared.io.try_lock() {
        Ok(io) => io,
        Err(std::sync::TryLockError::WouldBlock) => return false,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
    };
    match flush(shared, &mut io, false, false) {
        Ok(()) => {
            let compact_due = io.segment.bytes >= io.compact_at && io.compactor.is_none();
            drop(io);
            if compact_due {
                shared.commit.compaction_due();
            }
        }
        // Stop the log while still holding `io`, so that no later batch
        // can be written (and acknowledged) after the failed one.
        Err(WriteError::Failed(reason)) => fail(shared, &mut io, reason),
        Err(WriteError::Stopped) => {}
    }
    true
}

/// The writer thread: writes the buffer when there is work, rotates the
/// segment when it is due for compaction, and starts the compactor.
pub(super) struct Writer {
    shared: Arc<Shared>,
    compact_bytes: u64,
    /// Size of the last snapshot written or replayed.
    snapshot_bytes: u64,
}

impl Writer {
    pub(super) fn new(shared: Arc<Shared>, compact_bytes: u64, snapshot_bytes: u64) -> Self {
        Self {
            shared,
            compact_bytes,
            snapshot_bytes,
        }
    }

    /// The segment size past which the log is compacted.
    pub(super) fn threshold(&self) -> u64 {
        self.compact_bytes.max(self.snapshot_bytes)
    }

    /// Starts the thread.
    pub(super) fn spawn(self) -> Result<JoinHandle<()>, WalError> {
        let dir = self.shared.dir.clone();
        std::thread::Builder::new()
            .name("hookv-wal-writer".into())
            .spawn(move || self.run())
            .map_err(io_error(&dir, "start the log's threads"))
    }

    fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        // None when the log failed (e.g. in the fsync thread).
        while let Some(work) = shared.commit.wait_for_work() {
            let mut io = lock(&shared.io);
            match flush(&shared, &mut io, work.closing, work.closing || work.sync) {
                Ok(()) => {}
                // Under `io`, like `write_inline`.
                Err(WriteError::Failed(reason)) => {
                    fail(&shared, &mut io, reason);
                    break;
                }
                Err(WriteError::Stopped) => break,
            }
            if work.closing {
                // Everything appended before the close is written and
                // fsync'd.
                shared.commit.settle();
                break;
            }
            self.maybe_compact(&mut io, work.compacted);
        }
        shared.commit.writer_ended();
        let compactor = lock(&shared.io).compactor.take();
        if let Some(compactor) = compactor {
            let _ = compactor.join();
        }
    }

    /// Starts a compaction if none runs and the segment is large enough.
    /// `compacted` reports one that just ended.
    fn maybe_compact(&mut self, io: &mut Io, compacted: Option<Option<u64>>) {
        if let Some(result) = compacted {
            if let Some(thread) = io.compactor.take() {
                // It posted its result as its last act: this returns at once.
                if thread.join().is_err() {
                    error!("the write-ahead log compaction thread panicked");
                }
            }
            if let Some(bytes) = result {
                self.snapshot_bytes = bytes;
                io.compact_at = self.threshold();
            }
            // After a failure, `compact_at` (set when it started) waits for
            // another `compact_bytes` of log before trying again.
        }
        if io.compactor.is_some() || io.segment.bytes < io.compact_at {
            return;
        }
        // Whatever happens next, do not try again on every batch.
        io.compact_at = io.segment.bytes + self.threshold();
        // Everything written so far goes to disk with the old segment: older
        // segments are complete, so only the newest may be torn.
        let shared = &self.shared;
        let progress = shared.commit.progress();
        if progress.synced < progress.written {
            if let Err(e) = shared.count_fsync(&io.segment.file) {
                let reason = format!("cannot fsync {}: {e}", io.segment.path.display());
                fail(shared, io, reason);
                return;
            }
            shared.commit.mark_synced(progress.written);
        }
        let next = match Segment::open(&shared.dir, io.segment.index + 1, 0, true)
            .and_then(|seg| sync_dir(&shared.dir).map(|()| seg))
        {
            Ok(seg) => seg,
            Err(e) => {
                warn!(error = %e, "write-ahead log: cannot start a new segment; compaction postponed");
                return;
            }
        };
        *lock(&shared.current) = Arc::clone(&next.file);
        io.segment = next;
        io.compact_at = self.threshold();
        match compact::spawn(Arc::clone(shared), io.segment.index) {
            Ok(handle) => io.compactor = Some(handle),
            Err(e) => warn!(error = %e, "cannot start the compaction thread"),
        }
    }
}

/// Starts the `everysec` thread, which fsyncs the current segment once a
/// second.
pub(super) fn spawn_syncer(shared: Arc<Shared>) -> Result<JoinHandle<()>, WalError> {
    let dir = shared.dir.clone();
    std::thread::Builder::new()
        .name("hookv-wal-fsync".into())
        .spawn(move || sync_every_second(&shared))
        .map_err(io_error(&dir, "start the log's threads"))
}

fn sync_every_second(shared: &Shared) {
    let (mutex, cv) = &shared.tick;
    let mut next = Instant::now() + Duration::from_secs(1);
    loop {
        let mut guard = lock(mutex);
        while !shared.commit.closing() {
            let now = Instant::now();
            if now >= next {
                break;
            }
            guard = cv
                .wait_timeout(guard, next - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        drop(guard);
        if shared.commit.closing() || shared.commit.stop.get().is_some() {
            return;
        }
        next = Instant::now() + Duration::from_secs(1);
        let progress = shared.commit.progress();
        if progress.written <= progress.synced {
            continue;
        }
        // Records up to `written` are in this file or in an older segment,
        // which was fsync'd when it was rotated out.
        let file = Arc::clone(&lock(&shared.current));
        match shared.count_fsync(&file) {
            Ok(()) => shared.commit.mark_synced(progress.written),
            Err(e) => {
                // What was written is acknowledged and stays; what is still
                // buffered is undone.
                let mut io = lock(&shared.io);
                fail(
                    shared,
                    &mut io,
                    format!("cannot fsync the log segment: {e}"),
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::wal::dir::segment_name;
    use crate::wal::testing::open;

    #[test]
    fn without_a_barrier_records_still_reach_the_file_soon() {
        let dir = tempfile::tempdir().unwrap();
        for policy in [Fsync::Everysec, Fsync::No, Fsync::Always] {
            let (wal, store, _) = open(dir.path(), policy);
            let path = dir.path().join(segment_name(1));
            let before = fs::metadata(&path).unwrap().len();
            store.put("t", "k", "v".into()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(2);
            while fs::metadata(&path).unwrap().len() == before {
                assert!(Instant::now() < deadline, "{policy:?}: never written");
                std::thread::sleep(Duration::from_millis(2));
            }
            drop((wal, store));
        }
    }
}
