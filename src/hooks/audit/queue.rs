//! The bounded queue between the hook (on the request path) and the writer
//! thread: the hook copies a record's facts into it, the writer swaps the
//! whole queue out and formats it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use crate::hooks::raw::RequestRef;
use crate::hooks::HookCtx;

/// Bytes of queued strings that may wait, whatever `queue` says: one record
/// holds every key of its request, so a few huge requests must not queue
/// gigabytes.
const MAX_QUEUE_BYTES: usize = 64 << 20;

/// How often the writer thread wakes to write what has queued up.
const WRITE_INTERVAL: Duration = Duration::from_millis(5);

/// Queued records that wake the writer before [`WRITE_INTERVAL`] is up: a
/// few hundred kilobytes of JSON, written while the queue is still in the
/// CPU's cache. (Waiting for a whole interval's worth at a million requests
/// a second made the writer's copy several times dearer.)
const WAKE_RECORDS: usize = 2048;

/// The facts of one audit record that are not strings; its strings follow
/// in [`Batch::text`].
pub(super) struct Record {
    pub(super) arrived: SystemTime,
    pub(super) conn: u64,
    pub(super) peer: SocketAddr,
    pub(super) latency_us: u64,
    pub(super) status: u32,
    pub(super) command: &'static str,
    /// Length of the principal in `text`, `None` for no principal.
    pub(super) principal: Option<u32>,
    /// Length of the table in `text`, `None` for a request without one.
    pub(super) table: Option<u32>,
    /// How many keys follow the table in `text`, each as a little-endian
    /// `u32` length and its bytes.
    pub(super) keys: u32,
}

/// Records waiting for the writer, or taken by it.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) records: Vec<Record>,
    /// The records' strings, back to back, in record order.
    pub(super) text: Vec<u8>,
}

impl Batch {
    /// Copies what the record of this exchange needs (no formatting).
    pub(super) fn push(&mut self, ctx: &HookCtx, req: RequestRef<'_>, status: u32) {
        let principal = ctx.principal.as_deref().map(|p| self.push_text(p));
        let table = req.table().map(|t| self.push_text(t));
        let mut keys = 0;
        for key in req.keys() {
            let len = u32::try_from(key.len()).unwrap_or(u32::MAX);
            self.text.extend_from_slice(&len.to_le_bytes());
            self.push_text(key);
            keys += 1;
        }
        self.records.push(Record {
            arrived: ctx.arrived(),
            conn: ctx.conn_id(),
            peer: ctx.peer,
            latency_us: u64::try_from(ctx.latency().as_micros()).unwrap_or(u64::MAX),
            status,
            command: req.command_name(),
            principal,
            table,
            keys,
        });
    }

    /// Appends `s` (at most `u32::MAX` bytes of it; frames are far smaller)
    /// and returns the length appended.
    fn push_text(&mut self, s: &str) -> u32 {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        self.text.extend_from_slice(&s.as_bytes()[..len as usize]);
        len
    }

    /// Empties the batch, keeping its capacity.
    pub(super) fn clear(&mut self) {
        self.records.clear();
        self.text.clear();
    }
}

/// Shared by the hook and the writer thread.
pub(super) struct Queue {
    /// Records waiting for the writer. A plain mutex: a push is a few
    /// short copies, and the writer swaps the whole queue out, so it is held
    /// only briefly.
    waiting: Mutex<Batch>,
    /// Records that may wait (`queue` in the options).
    capacity: usize,
    /// Records dropped because the queue was full, not yet reported.
    dropped: AtomicU64,
    /// Set by the hook's shutdown: the writer drains the queue and ends.
    stopping: AtomicBool,
    /// Wakes the writer early: a batch has queued up, or shutdown.
    wake: Condvar,
}

impl Queue {
    /// An empty queue holding at most `capacity` records.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            waiting: Mutex::new(Batch::default()),
            capacity,
            dropped: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Batch> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the record of this exchange, or counts it as dropped when the
    /// queue is full.
    pub(super) fn offer(&self, ctx: &HookCtx, req: RequestRef<'_>, status: u32) {
        let mut waiting = self.lock();
        if waiting.records.len() < self.capacity && waiting.text.len() < MAX_QUEUE_BYTES {
            waiting.push(ctx, req, status);
            if waiting.records.len() == WAKE_RECORDS {
                self.wake.notify_one();
            }
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::audit_dropped(1);
        }
    }

    /// The writer's wait: until a batch has queued up, shutdown, or
    /// [`WRITE_INTERVAL`] is up. Swaps what waits into `batch` (empty; so
    /// both keep their capacity) and returns true once stopping: this is
    /// then the last batch.
    pub(super) fn take(&self, batch: &mut Batch) -> bool {
        let mut waiting = self.lock();
        if waiting.records.len() < WAKE_RECORDS && !self.stopping.load(Ordering::Acquire) {
            waiting = self
                .wake
                .wait_timeout(waiting, WRITE_INTERVAL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut *waiting, batch);
        self.stopping.load(Ordering::Acquire)
    }

    /// Records dropped so far and not yet taken for reporting.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Takes the count of records dropped since the last call.
    pub(super) fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Tells the writer to drain the queue and end.
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_all();
    }
}
