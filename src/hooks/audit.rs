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
//! (command `"unknown"`). `latency_us` runs from the request's arrival to
//! the moment its answer was written.
//!
//! Off the request path: the hook only appends the record to a bounded
//! in-memory queue; a writer thread formats and appends batches to the file
//! every few milliseconds. When the queue is full the record is dropped and
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
use std::time::{Duration, SystemTime};

use hookv_plugin::pb::{CommandRequest, CommandResponse};
use serde::{Deserialize, Serialize};

use super::build::BuildEnv;
use super::{Events, Hook, HookCtx};

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

/// What the request path hands to the writer: plain data, formatted later.
struct Record {
    time: SystemTime,
    conn: u64,
    peer: SocketAddr,
    principal: Option<Arc<str>>,
    command: &'static str,
    table: Option<String>,
    keys: Vec<String>,
    status: u32,
    latency_us: u64,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    conn: u64,
    peer: String,
    principal: Option<&'a str>,
    command: &'a str,
    table: Option<&'a str>,
    keys: &'a [String],
    status: u32,
    latency_us: u64,
}

struct Shared {
    /// Records waiting for the writer. A plain mutex: pushes are short and
    /// the writer swaps the whole vector out, so it is held only briefly.
    queue: Mutex<Vec<Record>>,
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
            queue: Mutex::new(Vec::with_capacity(options.queue.min(65536))),
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
    let mut batch = Vec::new();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut failing = false;
    loop {
        let stopping = {
            let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.is_empty() && !shared.stopping.load(Ordering::Acquire) {
                queue = shared
                    .wake
                    .wait_timeout(queue, WRITE_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut *queue, &mut batch);
            shared.stopping.load(Ordering::Acquire)
        };
        out.clear();
        for record in batch.drain(..) {
            format_record(&record, &mut out);
        }
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, path = %path.display(), "audit queue full: records dropped");
            let line = serde_json::json!({
                "time": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                "event": "dropped",
                "count": dropped,
            });
            out.extend_from_slice(line.to_string().as_bytes());
            out.push(b'\n');
        }
        if !out.is_empty() {
            // One write per batch: whole lines, so a concurrent writer to the
            // same file (during a reload) never splits a line.
            match file.write_all(&out) {
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

fn format_record(r: &Record, out: &mut Vec<u8>) {
    let line = Line {
        time: humantime::format_rfc3339_micros(r.time).to_string(),
        conn: r.conn,
        peer: r.peer.to_string(),
        principal: r.principal.as_deref(),
        command: r.command,
        table: r.table.as_deref(),
        keys: &r.keys,
        status: r.status,
        latency_us: r.latency_us,
    };
    // Serialising plain strings and numbers into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
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
        let record = Record {
            time: SystemTime::now(),
            conn: ctx.conn_id,
            peer: ctx.peer,
            principal: ctx.principal.clone(),
            command: req.command_name(),
            table: req.table().map(str::to_owned),
            keys: req.keys().into_iter().map(str::to_owned).collect(),
            status: res.status,
            latency_us: u64::try_from(ctx.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        };
        let mut queue = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if queue.len() < self.shared.capacity {
            queue.push(record);
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
