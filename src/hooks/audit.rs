//! `kind = "audit"`: one JSON line per request, refused ones included.
//!
//! ```toml
//! [[hooks]]
//! kind = "audit"
//! path = "logs/audit.jsonl"   # relative to the config file; directories are created
//! queue = 65536               # records waiting to be written before new ones are dropped
//! ```
//!
//! A record:
//!
//! ```json
//! {"time":"2026-11-24T17:03:17.759497Z","conn":3,"peer":"127.0.0.1:50712",
//!  "principal":"admin","command":"hset","table":"users","keys":["alice"],
//!  "status":200,"latency_us":41}
//! ```
//!
//! Event: `on_after_send`, so it sees every answer as sent: refusals by
//! earlier hooks, rewrites by `on_before_send` hooks, malformed frames
//! (command `"unknown"`). `time` is when the request arrived; `latency_us`
//! runs from then to the moment its answer was written. Pipelined requests
//! read together share one arrival time.
//!
//! Off the request path: the hook copies the record's facts (a fixed-size
//! entry, and the principal, table and key strings) into a bounded
//! in-memory queue, which costs tens of nanoseconds (and no allocation once
//! the queue's buffers have grown). A writer thread turns queued records
//! into JSON and appends them to the file, one `write` per batch (per 4 MiB
//! of lines, for a big one): when a batch of records has queued up (while
//! its bytes are still in the CPU's cache) or every few
//! milliseconds. When the queue is full (`queue` records, or 64 MiB) a
//! record is dropped and counted; the writer then logs a warning and writes
//! a `{"time":..,"event":"dropped","count":N}` line, so a gap in the trail
//! is never silent. Shutdown (and removal from the chain on reload) drains
//! the queue and fsyncs the file.
//!
//! A write that fails (a full disk, a file-size limit, an I/O error) loses
//! its records: they are counted, the failure is logged (once until writes
//! succeed again), and the first write that succeeds afterwards is a
//! `{"time":..,"event":"lost","count":N}` line. The records in the file
//! plus the `dropped` and `lost` counts are therefore every request audited.
//! A write that failed part way is cut back off the file (`ftruncate` to
//! where it started), so no half record is glued to the next line; if that
//! cannot be done safely (the file is not as the failed write left it, or
//! the truncate fails), the next write starts on a new line. Counts that
//! still cannot be written at shutdown are logged as an error.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookv_plugin::pb::{CommandRequest, CommandResponse};
use serde::Deserialize;

use super::build::BuildEnv;
use super::{Events, Hook, HookCtx};

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

/// The hook's options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditOptions {
    /// The JSON-lines file, appended to.
    pub path: PathBuf,
    /// Records that may wait to be written; past this, records are dropped
    /// and counted. Default 65536.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_queue() -> usize {
    65536
}

/// The facts of one audit record that are not strings; its strings follow
/// in [`Queue::text`].
struct Record {
    arrived: SystemTime,
    conn: u64,
    peer: SocketAddr,
    latency_us: u64,
    status: u32,
    command: &'static str,
    /// Length of the principal in `text`, `None` for no principal.
    principal: Option<u32>,
    /// Length of the table in `text`, `None` for a request without one.
    table: Option<u32>,
    /// How many keys follow the table in `text`, each as a little-endian
    /// `u32` length and its bytes.
    keys: u32,
}

/// Records waiting for the writer.
#[derive(Default)]
struct Queue {
    records: Vec<Record>,
    /// The records' strings, back to back, in record order.
    text: Vec<u8>,
}

impl Queue {
    /// Copies what the record of this exchange needs (no formatting).
    fn push(&mut self, ctx: &HookCtx, req: &CommandRequest, status: u32) {
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
}

struct Shared {
    /// Records waiting for the writer. A plain mutex: a push is a few
    /// short copies, and the writer swaps the whole queue out, so it is held
    /// only briefly.
    queue: Mutex<Queue>,
    capacity: usize,
    dropped: AtomicU64,
    stopping: AtomicBool,
    /// Wakes the writer early: a batch has queued up, or shutdown.
    wake: Condvar,
}

/// The audit hook.
pub struct AuditHook {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

impl AuditHook {
    /// Opens (creating) the file and starts the writer thread.
    pub fn new(options: AuditOptions, env: &BuildEnv<'_>) -> Result<Self, String> {
        if options.queue == 0 {
            return Err("queue must be at least 1".into());
        }
        let path = env.resolve(&options.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("path {}: cannot create directory: {e}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("path {}: cannot open for appending: {e}", path.display()))?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            capacity: options.queue,
            dropped: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            wake: Condvar::new(),
        });
        let writer = {
            let shared = shared.clone();
            let path = path.clone();
            std::thread::Builder::new()
                .name("hookv-audit".into())
                .spawn(move || write_loop(&shared, file, &path))
                .map_err(|e| format!("cannot start the audit writer thread: {e}"))?
        };
        Ok(Self {
            shared,
            writer: Mutex::new(Some(writer)),
            path,
        })
    }

    /// Records dropped so far because the queue was full (and not yet reported).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

fn write_loop(shared: &Shared, file: File, path: &std::path::Path) {
    // Swapped with the shared queue each round, so both keep their capacity.
    let mut batch = Queue::default();
    let mut out = Vec::with_capacity(512 * 1024);
    let mut sink = Sink {
        cache: PageCache::new(&file),
        file,
        path,
        dropped: 0,
        lost: 0,
        failing: false,
        broken_line: false,
    };
    loop {
        let stopping = {
            let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.records.len() < WAKE_RECORDS && !shared.stopping.load(Ordering::Acquire) {
                queue = shared
                    .wake
                    .wait_timeout(queue, WRITE_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut *queue, &mut batch);
            shared.stopping.load(Ordering::Acquire)
        };
        // `out` is empty here: `sink.write` empties it.
        format_batch(&mut out, &batch, |chunk| sink.write(chunk));
        batch.records.clear();
        batch.text.clear();
        sink.write(&mut out);
        // Dropped while these records waited: reported after them.
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            crate::log_limited!(warn, dropped, path = %path.display(), "audit queue full: records dropped");
            sink.dropped += dropped;
        }
        sink.report();
        // A burst of huge records must not pin its formatted size forever.
        if out.capacity() > 2 * CHUNK_BYTES {
            out.shrink_to(CHUNK_BYTES);
        }
        if stopping {
            if sink.dropped + sink.lost > 0 {
                tracing::error!(
                    dropped = sink.dropped,
                    lost = sink.lost,
                    path = %path.display(),
                    "audit records missing from the file, and the count of them could not be written"
                );
            }
            if let Err(e) = sink.file.sync_data() {
                tracing::error!(path = %path.display(), error = %e, "audit fsync failed");
            }
            return;
        }
    }
}

/// Formatted lines are written once about this many bytes are ready, so
/// the writer never holds much more than this (escaping can make a line
/// six times its request's size).
const CHUNK_BYTES: usize = 4 << 20;

/// Where formatted lines go.
///
/// Every write is of whole lines, and lands whole or not at all: a write
/// that fails part way (a full disk, a file-size limit) is cut back off the
/// file, so no half record is ever glued to the next one. The records of a
/// failed write are counted as lost, and once a write succeeds again a
/// `{"time":..,"event":"lost","count":N}` line says how many, so a gap in
/// the trail is never silent (nor is a full queue: `"event":"dropped"`).
struct Sink<'a> {
    file: File,
    path: &'a std::path::Path,
    cache: PageCache,
    /// Records dropped by a full queue, not yet reported in the file.
    dropped: u64,
    /// Records whose write failed, not yet reported in the file.
    lost: u64,
    /// The last write failed (logged once until a write succeeds).
    failing: bool,
    /// A failed write left part of a line that could not be cut off: the
    /// next write starts on a new line.
    broken_line: bool,
}

impl Sink<'_> {
    /// Writes `out` (whole record lines) and empties it; if that fails, its
    /// records count as lost.
    fn write(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            return;
        }
        // The gap comes before these records.
        self.report();
        if !self.append(out) {
            // Every record is one line: escaping leaves no raw newline in one.
            self.lost += out.iter().filter(|&&b| b == b'\n').count() as u64;
        }
        out.clear();
    }

    /// Writes a line for each count of records missing from the file, if
    /// any; keeps the counts for a later try if it cannot.
    fn report(&mut self) {
        if self.dropped == 0 && self.lost == 0 {
            return;
        }
        let mut lines = Vec::with_capacity(128);
        for (event, count) in [("dropped", self.dropped), ("lost", self.lost)] {
            if count > 0 {
                lines.extend_from_slice(b"{\"time\":");
                push_time(&mut lines, SystemTime::now());
                lines.extend_from_slice(b",\"event\":\"");
                lines.extend_from_slice(event.as_bytes());
                lines.extend_from_slice(b"\",\"count\":");
                push_u64(&mut lines, count);
                lines.extend_from_slice(b"}\n");
            }
        }
        if self.append(&lines) {
            if self.lost > 0 {
                crate::log_limited!(warn, lost = self.lost, path = %self.path.display(), "audit writes resumed; the records lost meanwhile are counted in the file");
            }
            self.dropped = 0;
            self.lost = 0;
        }
    }

    /// Appends `bytes` (whole lines) entirely, or leaves the file as it was
    /// (as far as it can: see `cut`). True if written. One `write` per call
    /// unless the kernel takes less, so a concurrent writer to the same file
    /// (during a reload) never splits a line.
    fn append(&mut self, bytes: &[u8]) -> bool {
        if self.broken_line {
            if !self.put(b"\n") {
                return false;
            }
            self.broken_line = false;
        }
        self.put(bytes)
    }

    fn put(&mut self, bytes: &[u8]) -> bool {
        // Where this write starts, to cut a partial write back off.
        let start = self.file.metadata().map(|m| m.len());
        let mut written = 0;
        let failure = loop {
            match self.file.write(&bytes[written..]) {
                Ok(0) => break std::io::Error::from(std::io::ErrorKind::WriteZero),
                Ok(n) => {
                    written += n;
                    if written == bytes.len() {
                        if self.failing {
                            crate::log_limited!(info, path = %self.path.display(), "audit writes succeed again");
                        }
                        self.failing = false;
                        self.cache.wrote(&self.file, written);
                        return true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break e,
            }
        };
        if !self.failing {
            crate::log_limited!(error, path = %self.path.display(), error = %failure, "audit write failed; records lost until writes succeed, then counted in an \"event\":\"lost\" line");
        }
        self.failing = true;
        if written > 0 {
            self.cut(start.ok(), written as u64);
        }
        false
    }

    /// Cuts the `partial` bytes of a failed write off the end of the file,
    /// if the file is exactly as long as this write left it (no one else
    /// appended meanwhile); otherwise the next write starts a new line.
    fn cut(&mut self, start: Option<u64>, partial: u64) {
        let now = self.file.metadata().map(|m| m.len()).ok();
        let cut = match (start, now) {
            (Some(start), Some(now)) if now == start + partial => self.file.set_len(start).is_ok(),
            _ => false,
        };
        if !cut {
            self.broken_line = true;
        }
    }
}

/// Keeps the audit trail from piling up in the page cache: it is written
/// once and read rarely, and at a million records a second it would grow
/// the cache by ~200 MB/s, evicting what the machine does use (and, on a VM
/// that hands freed memory back to its host, paying a host fault for every
/// fresh page). Every [`PageCache::WINDOW`] bytes, `posix_fadvise(DONTNEED)`
/// from the previous window's start to the end of the file starts writing
/// the new window to disk (without waiting) and drops the previous one,
/// written by then, from the cache. Linux only; elsewhere the kernel decides.
struct PageCache {
    /// Where the previous window starts: the cache before it is dropped.
    previous: u64,
    /// Where the current window starts.
    current: u64,
    /// The end of our last write.
    end: u64,
}

impl PageCache {
    const WINDOW: u64 = 32 << 20;

    fn new(file: &File) -> Self {
        let end = file.metadata().map_or(0, |m| m.len());
        Self {
            previous: end,
            current: end,
            end,
        }
    }

    fn wrote(&mut self, file: &File, len: usize) {
        self.end += len as u64;
        if self.end - self.current < Self::WINDOW {
            return;
        }
        // A failure only leaves pages cached: nothing to report.
        #[cfg(target_os = "linux")]
        let _ = rustix::fs::fadvise(file, self.previous, None, rustix::fs::Advice::DontNeed);
        #[cfg(not(target_os = "linux"))]
        let _ = file;
        self.previous = self.current;
        self.current = self.end;
    }
}

/// Appends the JSON line of every record in `batch` to `out`, handing `out`
/// to `full` whenever it holds [`CHUNK_BYTES`] or more.
fn format_batch(out: &mut Vec<u8>, batch: &Queue, mut full: impl FnMut(&mut Vec<u8>)) {
    let mut text = batch.text.as_slice();
    // Takes the next `len` bytes of the records' strings.
    let mut take = |len: usize| -> &[u8] {
        let (head, rest) = text.split_at(len.min(text.len()));
        text = rest;
        head
    };
    for record in &batch.records {
        out.extend_from_slice(b"{\"time\":");
        push_time(out, record.arrived);
        out.extend_from_slice(b",\"conn\":");
        push_u64(out, record.conn);
        out.extend_from_slice(b",\"peer\":\"");
        push_addr(out, &record.peer);
        out.extend_from_slice(b"\",\"principal\":");
        match record.principal {
            Some(len) => push_str(out, take(len as usize)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"command\":\"");
        out.extend_from_slice(record.command.as_bytes());
        out.extend_from_slice(b"\",\"table\":");
        match record.table {
            Some(len) => push_str(out, take(len as usize)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"keys\":[");
        for i in 0..record.keys {
            if i > 0 {
                out.push(b',');
            }
            let len = take(4);
            let len = u32::from_le_bytes(len.try_into().unwrap_or([0; 4]));
            push_str(out, take(len as usize));
        }
        out.extend_from_slice(b"],\"status\":");
        push_u64(out, record.status.into());
        out.extend_from_slice(b",\"latency_us\":");
        push_u64(out, record.latency_us);
        out.extend_from_slice(b"}\n");
        if out.len() >= CHUNK_BYTES {
            full(out);
        }
    }
}

/// A JSON string literal: quotes, and escapes for `"`, `\\` and control characters.
fn push_str(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(*octet));
            }
            out.push(b':');
            push_u64(out, u64::from(v4.port()));
        }
        // Rare enough on the hot path to use the standard formatter.
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

thread_local! {
    /// The last second formatted as `"YYYY-MM-DDTHH:MM:SS`, per thread:
    /// calendar arithmetic once a second instead of once a record.
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// RFC 3339 UTC with microseconds, quoted: `"2026-11-24T17:03:17.759497Z"`.
fn push_time(out: &mut Vec<u8>, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
                .to_string();
            // "YYYY-MM-DDTHH:MM:SSZ" without the Z.
            cached.1 = text.trim_end_matches('Z').to_owned();
            cached.0 = secs;
        }
        out.push(b'"');
        out.extend_from_slice(cached.1.as_bytes());
    });
    let micros = since.subsec_micros();
    out.push(b'.');
    let mut digits = [b'0'; 6];
    let mut n = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits);
    out.extend_from_slice(b"Z\"");
}

impl Hook for AuditHook {
    fn name(&self) -> &str {
        "audit"
    }

    fn events(&self) -> Events {
        Events {
            after_send: true,
            ..Events::NONE
        }
    }

    fn on_after_send(
        &self,
        ctx: &HookCtx,
        req: &CommandRequest,
        res: &CommandResponse,
    ) -> ControlFlow<()> {
        let mut queue = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if queue.records.len() < self.shared.capacity && queue.text.len() < MAX_QUEUE_BYTES {
            queue.push(ctx, req, res.status);
            if queue.records.len() == WAKE_RECORDS {
                self.shared.wake.notify_one();
            }
        } else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ControlFlow::Continue(())
    }

    fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            if writer.join().is_err() {
                tracing::error!(path = %self.path.display(), "audit writer thread panicked");
            }
        }
    }
}

impl Drop for AuditHook {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_records_format_to_one_json_line_each() {
        let mut queue = Queue::default();
        let mut ctx = HookCtx::new(7, "10.1.2.3:4567".parse().unwrap());
        ctx.arrive_at(
            ctx.started(),
            UNIX_EPOCH + Duration::from_micros(1_764_003_797_759_497),
        );
        ctx.answered_at(ctx.started() + Duration::from_micros(41));
        queue.push(&ctx, &CommandRequest::new_hget("t\"1", "k"), 404);
        ctx.principal = Some("admin".into());
        queue.push(
            &ctx,
            &CommandRequest::new_hmget("users", vec!["a".into(), String::new(), "ünï\n".into()]),
            200,
        );
        queue.push(&ctx, &CommandRequest::new_auth("secret"), 401);
        queue.push(&ctx, &CommandRequest::default(), 400);
        let mut out = Vec::new();
        format_batch(&mut out, &queue, |_| panic!("a small batch is one chunk"));
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            serde_json::json!({"time": "2025-11-24T17:03:17.759497Z", "conn": 7,
                "peer": "10.1.2.3:4567", "principal": null, "command": "hget",
                "table": "t\"1", "keys": ["k"], "status": 404, "latency_us": 41})
        );
        assert_eq!(lines[1]["principal"], "admin");
        assert_eq!(lines[1]["keys"], serde_json::json!(["a", "", "ünï\n"]));
        assert_eq!(lines[1]["table"], "users");
        // No token in the trail, and no table for an auth request.
        assert_eq!(lines[2]["command"], "auth");
        assert_eq!(lines[2]["table"], serde_json::Value::Null);
        assert_eq!(lines[2]["keys"], serde_json::json!([]));
        assert_eq!(lines[3]["command"], "unknown");
        assert_eq!(lines[3]["status"], 400);
    }

    #[test]
    fn a_large_batch_goes_out_in_chunks_of_whole_lines() {
        let mut queue = Queue::default();
        let ctx = HookCtx::new(1, "10.0.0.1:1".parse().unwrap());
        // Control bytes escape to six bytes each: 8 x 1 MiB of them is 48 MiB of JSON.
        let key = "\u{1}".repeat(1 << 20);
        for _ in 0..8 {
            queue.push(&ctx, &CommandRequest::new_hget("t", key.clone()), 404);
        }
        let mut out = Vec::new();
        let mut chunks = Vec::new();
        format_batch(&mut out, &queue, |chunk| {
            chunks.push(std::mem::take(chunk));
        });
        chunks.push(out);
        let mut lines = 0;
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            assert!(chunk.len() < CHUNK_BYTES + (7 << 20), "{}", chunk.len());
            assert_eq!(chunk.last(), Some(&b'\n'), "a chunk ends on a line");
            for line in chunk.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                assert_eq!(v["keys"][0].as_str().unwrap().len(), 1 << 20);
                lines += 1;
            }
        }
        assert_eq!(lines, 8);
        assert!(chunks.len() >= 8, "written as it was formatted");
    }

    #[test]
    fn strings_are_valid_json_whatever_they_hold() {
        for s in [
            "plain",
            "",
            "quote\" back\\slash",
            "nl\n cr\r tab\t nul\0 bell\x07",
            "ünï 表 🎉",
        ] {
            let mut out = Vec::new();
            push_str(&mut out, s.as_bytes());
            let parsed: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(parsed, s);
        }
    }

    #[test]
    fn time_is_rfc3339_with_micros() {
        let t = UNIX_EPOCH + Duration::from_micros(1_764_003_797_759_497);
        let mut out = Vec::new();
        push_time(&mut out, t);
        assert_eq!(out, b"\"2025-11-24T17:03:17.759497Z\"");
        let mut out = Vec::new();
        push_time(
            &mut out,
            UNIX_EPOCH + Duration::from_micros(1_764_003_798_000_001),
        );
        assert_eq!(out, b"\"2025-11-24T17:03:18.000001Z\"");
    }

    #[test]
    fn numbers_and_addresses() {
        let mut out = Vec::new();
        push_u64(&mut out, 0);
        out.push(b' ');
        push_u64(&mut out, u64::MAX);
        out.push(b' ');
        push_addr(&mut out, &"10.0.0.255:65535".parse().unwrap());
        out.push(b' ');
        push_addr(&mut out, &"[::1]:80".parse().unwrap());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0 18446744073709551615 10.0.0.255:65535 [::1]:80"
        );
    }
}
