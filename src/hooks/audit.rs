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
//! Off the request path: the hook formats the line (a few hundred
//! nanoseconds, no allocation) into a bounded in-memory queue; a writer
//! thread appends the queued lines to the file every few milliseconds, one
//! `write` per batch. When the queue is full (`queue` lines, or 64 MiB) a record is dropped and
//! counted; the writer then logs a warning and writes a
//! `{"time":..,"event":"dropped","count":N}` line, so a gap in the trail is
//! never silent. Shutdown (and removal from the chain on reload) drains the
//! queue and fsyncs the file.

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

/// Bytes of lines that may wait, whatever `queue` says: one line holds every
/// key of its request, so a few huge requests must not queue gigabytes.
const MAX_QUEUE_BYTES: usize = 64 << 20;

/// How often the writer thread wakes to write what has queued up.
const WRITE_INTERVAL: Duration = Duration::from_millis(5);

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

struct Queue {
    /// Complete JSON lines waiting for the writer.
    lines: Vec<u8>,
    /// How many lines `lines` holds.
    count: usize,
}

struct Shared {
    /// Lines waiting for the writer. A plain mutex: a push is one short
    /// copy, and the writer swaps the whole buffer out, so it is held only
    /// briefly.
    queue: Mutex<Queue>,
    capacity: usize,
    dropped: AtomicU64,
    stopping: AtomicBool,
    /// Wakes the writer early on shutdown.
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
            queue: Mutex::new(Queue {
                lines: Vec::with_capacity(64 * 1024),
                count: 0,
            }),
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

fn write_loop(shared: &Shared, mut file: File, path: &std::path::Path) {
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut failing = false;
    loop {
        let stopping = {
            let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.count == 0 && !shared.stopping.load(Ordering::Acquire) {
                queue = shared
                    .wake
                    .wait_timeout(queue, WRITE_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            batch.clear();
            std::mem::swap(&mut queue.lines, &mut batch);
            queue.count = 0;
            shared.stopping.load(Ordering::Acquire)
        };
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, path = %path.display(), "audit queue full: records dropped");
            batch.extend_from_slice(b"{\"time\":");
            push_time(&mut batch, SystemTime::now());
            batch.extend_from_slice(b",\"event\":\"dropped\",\"count\":");
            push_u64(&mut batch, dropped);
            batch.extend_from_slice(b"}\n");
        }
        if !batch.is_empty() {
            // One write per batch of whole lines, so a concurrent writer to
            // the same file (during a reload) never splits a line.
            match file.write_all(&batch) {
                Ok(()) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::error!(path = %path.display(), error = %e, "audit write failed; records lost");
                    }
                    failing = true;
                }
            }
        }
        if stopping {
            if let Err(e) = file.sync_data() {
                tracing::error!(path = %path.display(), error = %e, "audit fsync failed");
            }
            return;
        }
    }
}

/// Appends one audit line (JSON object and newline) to `out`.
fn format_line(
    out: &mut Vec<u8>,
    time: SystemTime,
    ctx: &HookCtx,
    req: &CommandRequest,
    status: u32,
) {
    out.extend_from_slice(b"{\"time\":");
    push_time(out, time);
    out.extend_from_slice(b",\"conn\":");
    push_u64(out, ctx.conn_id);
    out.extend_from_slice(b",\"peer\":\"");
    push_addr(out, &ctx.peer);
    out.extend_from_slice(b"\",\"principal\":");
    match &ctx.principal {
        Some(p) => push_str(out, p),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"command\":\"");
    out.extend_from_slice(req.command_name().as_bytes());
    out.extend_from_slice(b"\",\"table\":");
    match req.table() {
        Some(t) => push_str(out, t),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"keys\":[");
    for (i, key) in req.keys().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, key);
    }
    out.extend_from_slice(b"],\"status\":");
    push_u64(out, status.into());
    out.extend_from_slice(b",\"latency_us\":");
    push_u64(
        out,
        u64::try_from(ctx.latency().as_micros()).unwrap_or(u64::MAX),
    );
    out.extend_from_slice(b"}\n");
}

/// A JSON string literal: quotes, and escapes for `"`, `\\` and control characters.
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
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
        if queue.count < self.shared.capacity && queue.lines.len() < MAX_QUEUE_BYTES {
            format_line(&mut queue.lines, ctx.arrived, ctx, req, res.status);
            queue.count += 1;
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
    fn strings_are_valid_json_whatever_they_hold() {
        for s in [
            "plain",
            "",
            "quote\" back\\slash",
            "nl\n cr\r tab\t nul\0 bell\x07",
            "ünï 表 🎉",
        ] {
            let mut out = Vec::new();
            push_str(&mut out, s);
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
