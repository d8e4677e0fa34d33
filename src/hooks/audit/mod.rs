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
//!
//! The files: `queue.rs` (what the hook copies, bounded), `writer.rs` (the
//! thread), `json.rs` (one line per record), `sink.rs` (whole lines or
//! nothing, and the counts of what is missing), `page_cache.rs`.

mod json;
mod page_cache;
mod queue;
mod sink;
mod writer;

use std::fs::OpenOptions;
use std::io;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use hookv_plugin::pb::{CommandRequest, CommandResponse};
use serde::Deserialize;

use super::raw::RequestRef;
use super::{Events, Hook, HookCtx, RawRequest};
use queue::Queue;
use writer::write_loop;

#[doc(hidden)]
pub use json::bench_format;

/// The hook's options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditOptions {
    /// The JSON-lines file, appended to. [`AuditHook::new`] uses it as it
    /// is; in `config.toml` it is relative to the config file (the chain
    /// builder resolves it).
    pub path: PathBuf,
    /// Records that may wait to be written; past this, records are dropped
    /// and counted. Default 65536.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_queue() -> usize {
    65536
}

/// The audit hook cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// `queue = 0`.
    #[error("queue must be at least 1")]
    NoQueue,
    /// The file's directory cannot be created.
    #[error("path {}: cannot create directory: {source}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file cannot be opened for appending.
    #[error("path {}: cannot open for appending: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The writer thread cannot be started.
    #[error("cannot start the audit writer thread: {0}")]
    Thread(io::Error),
}

/// The audit hook.
pub struct AuditHook {
    queue: Arc<Queue>,
    writer: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

impl AuditHook {
    /// Opens (creating) the file at `options.path`, as given, and starts the
    /// writer thread.
    pub fn new(options: AuditOptions) -> Result<Self, AuditError> {
        if options.queue == 0 {
            return Err(AuditError::NoQueue);
        }
        let path = options.path;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| AuditError::CreateDir {
                dir: dir.to_owned(),
                source,
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| AuditError::Open {
                path: path.clone(),
                source,
            })?;
        let queue = Arc::new(Queue::new(options.queue));
        let writer = {
            let queue = Arc::clone(&queue);
            let path = path.clone();
            std::thread::Builder::new()
                .name("hookv-audit".into())
                .spawn(move || write_loop(&queue, file, &path))
                .map_err(AuditError::Thread)?
        };
        Ok(Self {
            queue,
            writer: Mutex::new(Some(writer)),
            path,
        })
    }

    /// Records dropped so far because the queue was full (and not yet reported).
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
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
        self.queue.offer(ctx, RequestRef::Decoded(req), res.status);
        ControlFlow::Continue(())
    }

    /// A record needs only the command, the table and the keys.
    fn reads_raw(&self) -> bool {
        true
    }

    fn on_after_send_raw(
        &self,
        ctx: &HookCtx,
        req: &RawRequest<'_>,
        res: &CommandResponse,
    ) -> ControlFlow<()> {
        self.queue.offer(ctx, RequestRef::Raw(req), res.status);
        ControlFlow::Continue(())
    }

    fn shutdown(&self) {
        self.queue.stop();
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
