//! Group commit: the buffer every write appends its record to, the log
//! sequence numbers (LSNs), what the writer has done with them, and who
//! waits for whom (see the module docs of `wal`, "Pieces").
//!
//! Appending copies a record into the shared buffer under a std mutex and
//! gives it the next LSN; no I/O. Whoever writes (the writer thread, or a
//! barrier writing inline) swaps the whole buffer out and, once it is
//! written (and fsync'd), publishes how far the log got on a
//! `tokio::sync::watch` channel, which barriers await without a thread
//! each. While one batch is written, the next one piles up: every
//! connection's records share the next `write` and fsync.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::error::WalError;
use super::options::Fsync;
use super::stop::{Stop, Stopped};

/// Locks `m`. A panic while holding one of the log's locks leaves nothing
/// half-done that the next holder could trip on, so poisoning is ignored.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the writer has done, as barriers see it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Progress {
    /// Records up to this LSN are in the OS (`write` returned).
    pub(super) written: u64,
    /// Records up to this LSN are fsync'd.
    pub(super) synced: u64,
}

/// How the writer thread is waiting for work.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Sleep {
    /// It is not waiting.
    #[default]
    Awake,
    /// Waiting for a kick, at most [`FLUSH_AFTER`]: appends need not wake it.
    Timed,
    /// Waiting with nothing buffered after a quiet spell: the next append
    /// wakes it.
    Deep,
}

/// How long records may sit in the buffer when no barrier asks for them
/// (a `WalStore` used without the barrier).
const FLUSH_AFTER: Duration = Duration::from_millis(20);

/// A buffer this large is written without waiting for a kick.
const KICK_BYTES: usize = 1 << 20;

/// Guarded by `Commit::state`.
#[derive(Debug, Default)]
struct State {
    /// Encoded records not yet taken for writing.
    buf: Vec<u8>,
    /// What undoes the writes whose records are in `buf`, oldest first
    /// (`undo::push_undo`): a write is not acknowledged before its record
    /// is durable, and one whose record never gets there must not stay
    /// visible.
    undo: Vec<u8>,
    /// How the writer is waiting on `Commit::work`, if it is.
    sleep: Sleep,
    /// A barrier asked for the buffer to be written now (see `Commit::kick`).
    kicked: bool,
    /// Someone blocked in `sync_all` wants an fsync now.
    sync_requested: bool,
    /// Threads blocked in `sync_all` (woken through `Commit::synced`).
    sync_waiters: usize,
    /// A barrier's inline write found the segment due for compaction; the
    /// writer thread rotates it.
    compact_due: bool,
    /// Posted by the compactor when it ends: the snapshot's size, or None
    /// if it failed. Wakes the writer, so the next compaction may start
    /// even if no more records come.
    compaction_done: Option<Option<u64>>,
}

/// What the writer took from the shared state in one go.
pub(super) struct Work {
    /// The log is closing: this is the last batch.
    pub(super) closing: bool,
    /// Someone asked for an fsync.
    pub(super) sync: bool,
    /// A compaction ended (with the snapshot's size if it succeeded).
    pub(super) compacted: Option<Option<u64>>,
}

/// The group commit state shared by the store, the barriers, the writer,
/// the fsync thread and the compactor.
pub(super) struct Commit {
    /// When records count as durable: written (`everysec`, `no`) or
    /// fsync'd (`always`).
    pub(super) policy: Fsync,
    /// A std mutex: held for a memcpy on the request path, never across I/O.
    state: Mutex<State>,
    /// Wakes the writer: records, a sync request, or closing.
    work: Condvar,
    /// Wakes threads blocked in `sync_all`.
    synced: Condvar,
    /// Published by whoever writes; barriers wait on it without a thread each.
    progress: watch::Sender<Progress>,
    /// LSN of the last record appended (records are numbered from 1).
    /// Changed only under `state`'s lock, in step with the buffer; read
    /// without it by barriers (their targets).
    appended: AtomicU64,
    /// Whether, and why, the log stopped. Every change is made under
    /// `state`'s lock.
    pub(super) stop: Stop,
    /// Set by `close`: the writer drains and exits, helpers stop.
    closing: AtomicBool,
}

impl Commit {
    pub(super) fn new(policy: Fsync) -> Self {
        Self {
            policy,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            synced: Condvar::new(),
            progress: watch::channel(Progress::default()).0,
            appended: AtomicU64::new(0),
            stop: Stop::default(),
            closing: AtomicBool::new(false),
        }
    }

    /// LSN of the last record appended.
    pub(super) fn appended(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// How far the writer got.
    pub(super) fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// A receiver of [`Progress`] updates (a barrier's).
    pub(super) fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// True once `close` began.
    pub(super) fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Adds an encoded record, and the entry that undoes its write
    /// (`undo::push_undo`), to the buffers. Returns false (and still uses
    /// up an LSN, so barriers cannot pass) when the log has stopped: the
    /// caller undoes the write.
    pub(super) fn append(&self, record: &[u8], undo: &[u8]) -> bool {
        let mut st = lock(&self.state);
        self.appended.fetch_add(1, Ordering::Release);
        if self.stop.get().is_some() {
            return false;
        }
        st.buf.extend_from_slice(record);
        st.undo.extend_from_slice(undo);
        // Not a wake per append: the barrier kicks the writer once the other
        // connections ready in this scheduler tick have appended too.
        let big = st.buf.len() >= KICK_BYTES;
        st.kicked |= big;
        if st.sleep == Sleep::Deep || (big && st.sleep == Sleep::Timed) {
            st.sleep = Sleep::Awake;
            self.work.notify_one();
        }
        true
    }

    /// Asks the writer to write what is buffered now.
    pub(super) fn kick(&self) {
        let mut st = lock(&self.state);
        if st.buf.is_empty() {
            return; // already taken
        }
        st.kicked = true;
        self.wake_writer(&mut st);
    }

    fn wake_writer(&self, st: &mut State) {
        if st.sleep != Sleep::Awake {
            st.sleep = Sleep::Awake;
            self.work.notify_one();
        }
    }

    /// Swaps the buffered records and their undo entries into `batch` and
    /// `undo` (which the caller then writes), and returns the LSN they
    /// reach. `closing`: the log closes, so nothing appended later is
    /// written. `None` when the log has stopped: nothing is taken.
    pub(super) fn take_batch(
        &self,
        batch: &mut Vec<u8>,
        undo: &mut Vec<u8>,
        closing: bool,
    ) -> Option<u64> {
        let mut st = lock(&self.state);
        // Once stopped, `appended` counts refused records too: they must
        // never look written.
        if self.stop.get().is_some() {
            return None;
        }
        std::mem::swap(&mut st.buf, batch);
        std::mem::swap(&mut st.undo, undo);
        st.kicked = false;
        if closing {
            self.stop.close();
        }
        Some(self.appended.load(Ordering::Acquire))
    }

    /// Publishes that records up to `upto` are written, and fsync'd if
    /// `synced`.
    pub(super) fn mark_written(&self, upto: u64, synced: bool) {
        self.progress.send_if_modified(|p| {
            let before = (p.written, p.synced);
            p.written = p.written.max(upto);
            if synced {
                p.synced = p.synced.max(upto);
            }
            (p.written, p.synced) != before
        });
    }

    /// Publishes that records up to `upto` are fsync'd.
    pub(super) fn mark_synced(&self, upto: u64) {
        self.progress.send_modify(|p| p.synced = p.synced.max(upto));
    }

    /// Marks the log failed for `reason`, from which moment appends are
    /// refused, and takes the records still buffered with their undo
    /// entries: with those the caller holds, all the writes left to undo.
    /// The `bool` is true for the first failure (the one to log).
    pub(super) fn fail(&self, reason: String) -> (bool, Vec<u8>, Vec<u8>) {
        let mut st = lock(&self.state);
        let first = self.stop.fail(reason);
        let buf = std::mem::take(&mut st.buf);
        let undo = std::mem::take(&mut st.undo);
        (first, buf, undo)
    }

    /// The stop has settled (the undo after a failure, or the last write
    /// before a close, is done): barriers and `sync_all` hear of it now.
    pub(super) fn settle(&self) {
        // Under the lock, so a thread about to wait in `sync_all` cannot
        // miss it.
        let _st = lock(&self.state);
        self.stop.settle();
        self.progress.send_modify(|_| {});
        self.synced.notify_all();
        self.work.notify_all();
    }

    /// Blocks until every record appended so far is fsync'd.
    pub(super) fn sync_all(&self) -> Result<(), WalError> {
        let mut st = lock(&self.state);
        let target = self.appended.load(Ordering::Acquire);
        st.sync_requested = true;
        st.sync_waiters += 1;
        self.wake_writer(&mut st);
        let result = loop {
            if self.progress.borrow().synced >= target {
                break Ok(());
            }
            // Settled only after the writer's last fsync: a closed log got
            // everything appended before it closed.
            if let Some(stopped) = self.stop.settled() {
                break Err(WalError::Stopped(stopped));
            }
            st = self.synced.wait(st).unwrap_or_else(PoisonError::into_inner);
        };
        st.sync_waiters -= 1;
        result
    }

    /// The writer thread waits here for work (then writes the buffer).
    /// `None` when the log has failed.
    pub(super) fn wait_for_work(&self) -> Option<Work> {
        // With `always` the fsync is the bottleneck: keep it busy, starting
        // the next one as soon as the last ends and there is anything to
        // write (what piles up meanwhile is the next group). Otherwise wait
        // for a barrier's kick, so one `write` covers a whole scheduler tick.
        let eager = self.policy == Fsync::Always;
        let mut st = lock(&self.state);
        let mut timed_out = false;
        loop {
            if st.sync_waiters > 0 {
                self.synced.notify_all();
            }
            if matches!(self.stop.get(), Some(Stopped::Failed(_))) {
                return None;
            }
            let closing = self.closing();
            let due = !st.buf.is_empty() && (eager || st.kicked || timed_out);
            let compact_due = std::mem::take(&mut st.compact_due);
            if due || st.sync_requested || closing || compact_due || st.compaction_done.is_some() {
                return Some(Work {
                    closing,
                    sync: std::mem::take(&mut st.sync_requested),
                    compacted: st.compaction_done.take(),
                });
            }
            if eager || (timed_out && st.buf.is_empty()) {
                // Quiet: sleep until an append comes.
                st.sleep = Sleep::Deep;
                st = self.work.wait(st).unwrap_or_else(PoisonError::into_inner);
                timed_out = false;
            } else {
                // Busy: a barrier's kick (or FLUSH_AFTER) says when to write.
                st.sleep = Sleep::Timed;
                let (guard, waited) = self
                    .work
                    .wait_timeout(st, FLUSH_AFTER)
                    .unwrap_or_else(PoisonError::into_inner);
                st = guard;
                timed_out = waited.timed_out();
            }
            st.sleep = Sleep::Awake;
        }
    }

    /// The writer thread is gone: wakes whoever still waits in `sync_all`
    /// (to see the stop).
    pub(super) fn writer_ended(&self) {
        // Under the lock, so a thread about to wait cannot miss it.
        let _st = lock(&self.state);
        self.synced.notify_all();
    }

    /// A barrier's inline write found the segment due for compaction: the
    /// writer thread rotates it.
    pub(super) fn compaction_due(&self) {
        let mut st = lock(&self.state);
        st.compact_due = true;
        self.wake_writer(&mut st);
    }

    /// The compactor ended: with the snapshot's size, or `None` if it
    /// failed. Wakes the writer, which joins it.
    pub(super) fn compaction_done(&self, snapshot_bytes: Option<u64>) {
        let mut st = lock(&self.state);
        st.compaction_done = Some(snapshot_bytes);
        self.wake_writer(&mut st);
    }

    /// `close` began: the writer drains and exits, helpers stop.
    pub(super) fn begin_close(&self) {
        self.closing.store(true, Ordering::Release);
        let _st = lock(&self.state);
        self.work.notify_all();
    }
}
