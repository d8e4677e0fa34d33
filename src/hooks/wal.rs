//! The `wal` built-in hook: a write-ahead log that makes the memory backend
//! durable (and gives sled a log with a chosen fsync policy).
//!
//! ```toml
//! [[hooks]]
//! kind = "wal"
//! path = "data/wal"          # directory of segments and snapshots (relative to config.toml)
//! fsync = "everysec"         # always | everysec | no
//! compact_bytes = 67108864   # compact once the log since the last snapshot is this large
//! ```
//!
//! # What each fsync policy promises
//!
//! Under every policy a write's record is handed to the operating system
//! (`write(2)`) before the write is answered, so a crash of the server
//! process (even `SIGKILL`) loses no acknowledged write. The policies differ
//! in what survives a crash of the machine (power loss, kernel panic):
//!
//! | `fsync`    | an answered write is on disk…                    | cost |
//! |------------|--------------------------------------------------|------|
//! | `always`   | before it is answered (`fdatasync`)              | one fsync per group of writes |
//! | `everysec` | within about a second (a background `fdatasync`) | a `write` per group of writes, no fsync |
//! | `no`       | when the OS decides (usually within ~30 s)       | the same |
//!
//! # Pieces
//!
//! - [`Wal::open`] replays the log into the configured storage, then returns
//!   the [`Wal`] and a [`WalStore`] wrapping that storage, which the service
//!   must use: every `set` or `del` goes through it.
//! - [`WalStore`] applies a write to the inner store and appends its record
//!   (and what undoes it, should the log fail: see "Failure")
//!   while holding one of [`STRIPES`] locks chosen by hashing (table, key).
//!   Two connections writing the same key are therefore logged in the order
//!   they were applied, and replay ends on the value the store ended on.
//!   (Without the lock, A applies v1, B applies v2, B logs v2, A logs v1:
//!   the store says v2, replay says v1.) Reads pass straight through.
//! - Appending copies the encoded record into a shared buffer and gives it
//!   the next log sequence number (LSN); appending does no I/O.
//! - Whoever holds the segment's lock takes the whole buffer, `write`s it
//!   to the current segment, `fdatasync`s it (`always`), and publishes the
//!   written and synced LSNs on a `tokio::sync::watch` channel: the writer
//!   thread, or with `everysec` and `no` a barrier writing inline (below).
//! - The connection awaits the [`WriteBarrier`] ([`Wal::barrier`]) before it
//!   sends answers to a batch with a successful write: it waits until the LSN appended so
//!   far is written (`everysec`, `no`) or synced (`always`). This is group
//!   commit: while one fsync runs, every connection's new records pile up in
//!   the buffer and the next fsync covers all of them, so 50 writing
//!   connections share fsyncs instead of queueing for 50 in a row.
//! - Who writes is tuned per policy. With `always` the fsync is the
//!   bottleneck, so the first append wakes the writer thread and it starts
//!   the next fsync as soon as the last one ends. With `everysec` and `no` a
//!   `write` into the page cache is cheap and handing it to another thread
//!   is the cost (a wake-up, and a runtime left idle until the answer comes
//!   back), so appends do not wake the writer: the barrier first yields to
//!   the scheduler (letting every other connection with a request ready
//!   append too), then writes the buffer itself, one `write` for all of
//!   them. If the segment's lock is taken just then (the writer thread
//!   writing or rotating the segment, or a barrier on another runtime
//!   thread writing), the barrier kicks the writer thread and waits. A
//!   store used without the barrier is written within 20 ms (`FLUSH_AFTER`).
//!   (An inline `write` can block the connection's runtime thread if the
//!   kernel throttles a machine whose disk cannot keep up; the answers to
//!   those writes would wait all the same.)
//! - With `everysec`, a second thread fsyncs the current segment once a
//!   second, so a slow fsync never holds up writes.
//! - The [`Hook`] (named `wal`) refuses writes with 500 once the log has
//!   failed (503 once it is closed); its `shutdown` flushes and fsyncs
//!   everything. The log itself closes when the last `Arc<Wal>` goes.
//!
//! Each `hset`/`hdel` is one record; `hmset`/`hmdel` write one record per
//! key, so a crash in the middle of a multi-key write may keep some of its
//! keys and not others (it was not answered, so no client was told it
//! succeeded). A `del` of a missing key changes nothing and is not logged.
//! Over sled, replay re-applies records sled may already hold: harmless,
//! since every record is a blind set or delete.
//!
//! # Files
//!
//! The log directory holds segments `wal-000001.log`, `wal-000002.log`, …
//! (appended in order, the highest is the one being written) and at most one
//! complete snapshot `snapshot-00000K.log` (a `set` record for every key that
//! existed when it was taken). A `snapshot-*.tmp` is a snapshot that was
//! still being written; other files are ignored. On Linux the server holds
//! an exclusive `flock` on the file `LOCK` while the log is open, so a second
//! server pointed at the same directory refuses to start instead of
//! interleaving its records with the first one's (the kernel drops the lock
//! when the process ends, however it ends).
//!
//! Every file is a sequence of records:
//!
//! ```text
//! record = len: u32 LE | crc: u32 LE | body (len bytes)
//!          crc = CRC-32C over the 4 len bytes followed by the body
//! body   = op: u8 (1 = set, 2 = del)
//!        | table_len: u32 LE | table (UTF-8) | key_len: u32 LE | key (UTF-8)
//!        | value: protobuf `Value` (set only; the rest of the body)
//! ```
//!
//! # Recovery
//!
//! On start, before the server accepts a connection: leftover `.tmp` files
//! are deleted; the newest snapshot `K` (if any) is replayed, then every
//! segment numbered `K` or more, in order (with no snapshot: every segment,
//! from 1). Segments must be numbered without gaps; a missing one is an
//! error. Only the last segment may end badly, and only in the way a crash
//! during a write leaves it. A crash leaves a *prefix* of what was written
//! (plus, on some file systems, zeros where data had not landed yet), so
//!
//! - a record whose header or body runs past the end of the file, or
//! - a record whose checksum fails and that ends exactly at the end of the
//!   file,
//!
//! is a torn write only if nothing whole comes after it: the bytes after
//! it are searched, at every byte offset, for a valid record (a length
//! from the smallest body to the largest, that fits in the file, an op of
//! 1 or 2, the checksum over length and body, a body that decodes), and
//! the rest of the file is checked for being the bad record itself under
//! another length. Either one means that a flipped bit in a length field
//! made good records look like a torn tail: corruption. The search reads a
//! window of 1 MiB at a time and is cheap, since almost every offset fails
//! on its length or its op before any checksum is computed; a tail crafted
//! to pass those tests everywhere gets a budget of checksummed bytes (256
//! MiB plus the tail's size), past which it is taken for corruption rather
//! than cut. Besides those,
//!
//! - zero bytes from the record to the end of the file (some file systems
//!   extend a file before its data lands)
//!
//! are torn too. A *torn* last write was never acknowledged (with
//! `always`), so it is cut off (the file is truncated) with a warning that
//! says how many bytes were cut. Anything else — a bad record with whole
//! records after it, a bad record in an older segment or a snapshot, a
//! record whose checksum is right but whose content is not — is
//! corruption: the server refuses to start with one error naming the file
//! and the byte offset of the bad record, and changes no file (leftover
//! `.tmp` snapshots are removed only once the whole log has replayed).
//!
//! What cannot be told apart: damage to the checksum or body (not the
//! length) of the very last record looks like a torn write of it, and is
//! cut with the warning. The other way round, a torn write of a record
//! whose *value* holds the bytes of a whole valid record (a client storing
//! log records), torn just after them, is taken for corruption: the start
//! is refused, nothing is lost, and truncating to the offset named is the
//! fix.
//!
//! New records are appended to the last segment (a new one is created if
//! there is none).
//!
//! # Compaction
//!
//! Once the current segment exceeds both `compact_bytes` and the size of the
//! last snapshot (so rewriting a large data set costs no more than the log
//! it replaces), the writer thread *rotates*: it fsyncs segment `N` and
//! starts `N+1`. Every record in segments up to `N` was applied to storage
//! before it was appended, so storage already holds its effect. A
//! background thread then writes every key of the current storage
//! (`Storage::tables` + `get_iter`) to `snapshot-(N+1).tmp`, fsyncs it,
//! flushes the inner storage (so a persistent backend cannot still hold a
//! key the snapshot says is gone), renames it to `snapshot-(N+1).log`,
//! fsyncs the directory, and only then deletes segments below `N+1` and
//! older snapshots. The server keeps serving throughout.
//!
//! The snapshot reads writes that are applied but whose records may not be
//! durable yet; were the log to fail now, they would be undone (see
//! "Failure"), and the snapshot must not bring them back. So before the
//! rename the compactor takes and releases every stripe lock (after which
//! every write it may have read has its record appended) and waits until
//! all that is appended is fsync'd; if the log fails first, the snapshot
//! is dropped.
//!
//! Why a snapshot read while writes continue is still right: take any key,
//! and its operations `o1 … om` in log order (= apply order, by the stripe
//! lock). Let `oj` be the first of them in a segment `≥ N+1`. Every earlier
//! one was appended before the rotation, so applied before it, so the
//! snapshot (read after the rotation) holds the key as of some `oi` with
//! `i ≥ j-1`. Replay loads the snapshot, then applies `oj … om` in order;
//! each is a blind set or delete, so the key ends as `om` left it. If no
//! operation is in a segment `≥ N+1`, the snapshot holds `om` itself.
//!
//! A crash at any point of compaction loses nothing: before the rename the
//! old snapshot and all segments are intact (the `.tmp` is deleted at the
//! next start); after it, the new snapshot is complete and durable and the
//! segments `≥ N+1` are all that replay needs (older ones left behind are
//! deleted at the next start).
//!
//! # Failure
//!
//! If a write or fsync of the log fails, the log stops for good (an fsync is
//! never retried: after a failed fsync, the kernel may have dropped the
//! data). A write applied to storage whose record is not in the log must
//! not stay visible (a restart would not have it), so before anyone hears
//! of the failure:
//!
//! - the log is marked failed: appends are refused from then on. A write
//!   that passed the "stopped" check and was applied just as the log
//!   failed finds its append refused, undoes itself before it releases its
//!   stripe lock, and is answered 500.
//! - Every write whose record is not durable yet (the batch that failed,
//!   and what was buffered behind it) is undone, newest first, each under
//!   its stripe lock. Next to each record the store keeps an *undo entry*:
//!   the key's previous value (which the inner store returns anyway), or
//!   the mark that it had none; table and key are read back from the
//!   record. Entries are dropped as soon as their batch is as durable as
//!   the policy promises (written with `everysec` and `no`, fsync'd with
//!   `always`), which is exactly when its writes may be acknowledged: an
//!   acknowledged write is never undone. (A failed `everysec` background
//!   fsync therefore undoes only what was not written yet.)
//! - Whatever part of the failed batch reached the segment is cut off (the
//!   file is truncated to the end of the last batch written whole), so
//!   records of writes nobody was told about do not come back at the next
//!   start. This is best effort on a failing disk; a cut that fails is
//!   logged.
//!
//! Then the writes waiting on the barrier get an error, so their
//! connections close without answering; from then on the hook refuses
//! writes with 500, naming the cause; reads keep working and see the
//! acknowledged writes, as a restart would. The failure is logged once. The
//! log is marked failed before the segment's lock is released, so no batch
//! after the failed one is written or acknowledged, even if the cause went
//! away; a failure of the last write on close is reported the same way.
//!
//! What the undo entries cost: each write encodes its key's previous value
//! next to its record and copies it into the buffer (about 6% more
//! instructions for an `hset` through the store, about 15 ns in a
//! single-threaded micro-benchmark), and a batch's previous values are held
//! in memory until it is durable.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hookv_plugin::pb::{status, CommandRequest, CommandResponse, Kvpair, Value};
use prost::Message;
use serde::Deserialize;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{Config, HookEntry};
use crate::hooks::build::{options, HookError};
use crate::hooks::{BarrierError, Events, Flow, Hook, HookCtx, WriteBarrier};
use crate::storage::{Storage, StorageError, StorageIter};

/// `[[hooks]] kind = "wal"`: the options of the write-ahead log.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WalOptions {
    /// Directory of the log's segments and snapshot. A relative path is
    /// relative to the config file's directory. Default `data/wal`.
    pub path: PathBuf,
    /// When the log is fsync'd. Default `everysec`.
    pub fsync: Fsync,
    /// Compact (rewrite the log as a snapshot of the current data) once the
    /// log written since the last snapshot is larger than this and than that
    /// snapshot. At least 1. Default 64 MiB.
    pub compact_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/wal"),
            fsync: Fsync::default(),
            compact_bytes: 64 << 20,
        }
    }
}

impl WalOptions {
    /// Checks values serde cannot: the message names the key.
    pub fn check(&self) -> Result<(), String> {
        if self.compact_bytes == 0 {
            return Err(
                "compact_bytes = 0: must be at least 1 (a large value compacts rarely)".into(),
            );
        }
        if self.path.as_os_str().is_empty() {
            return Err("path = \"\": the log needs a directory".into());
        }
        Ok(())
    }
}

/// `fsync = "always" | "everysec" | "no"`: see the module docs.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// fsync before answering (group commit shares it between writers).
    Always,
    /// fsync in the background once a second.
    #[default]
    Everysec,
    /// Never fsync explicitly (only on rotation and shutdown).
    No,
}

/// The one `kind = "wal"` entry of `config` with its options parsed and
/// checked, or `None` when the config has no wal hook. Two wal entries are
/// an error (they would be one log).
pub fn find_in_config(config: &Config) -> Result<Option<(&HookEntry, WalOptions)>, HookError> {
    let mut found: Option<(&HookEntry, WalOptions)> = None;
    for entry in config.hooks.iter().filter(|e| e.kind() == Some("wal")) {
        let error = |message: String| HookError::new(&config.path, entry, message);
        if let Some((first, _)) = found {
            return Err(error(format!(
                "a second wal hook; there is one log per server (the first is {})",
                first.label()
            )));
        }
        let opts: WalOptions = options(entry, "kind").map_err(&error)?;
        opts.check().map_err(error)?;
        found = Some((entry, opts));
    }
    Ok(found)
}

/// The log could not be opened, replayed or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The options are unusable.
    #[error("{0}")]
    Options(String),
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
    Stopped(String),
    /// Another process (or another log in this one) has the directory.
    #[error(
        "{}: the log directory is in use by another hookv server (it holds the lock on {LOCK_FILE}); \
         two servers appending to one log would corrupt it",
        dir.display()
    )]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },
}

/// The file in the log directory whose `flock` marks the log as in use.
pub const LOCK_FILE: &str = "LOCK";

/// Takes the directory's lock (Linux: an exclusive `flock` on
/// [`LOCK_FILE`], released when the returned file closes, even if the
/// process is killed). Elsewhere, no lock is taken.
fn lock_dir(dir: &Path) -> Result<Option<File>, WalError> {
    #[cfg(target_os = "linux")]
    {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(&path, "open the lock file"))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(file)),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(WalError::Locked {
                dir: dir.to_owned(),
            }),
            Err(e) => Err(io_error(&path, "lock the log directory")(e.into())),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        Ok(None)
    }
}

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

// ---------------------------------------------------------------------------
// Records

/// Bytes before a record's body: length and checksum.
const HEADER: usize = 8;
const OP_SET: u8 = 1;
const OP_DEL: u8 = 2;
/// No record we write is larger (a frame is at most 1 GiB); a larger length
/// inside the file is corruption, and is never allocated.
const MAX_BODY: u64 = (1 << 30) + (1 << 20);

/// One logged operation, as replay applies it.
#[derive(Debug, Clone, PartialEq)]
enum Record {
    Set {
        table: String,
        key: String,
        value: Value,
    },
    Del {
        table: String,
        key: String,
    },
}

/// The size of the body of a record for (`table`, `key`, `value`).
fn body_len(table: &str, key: &str, value: Option<&Value>) -> usize {
    1 + 4 + table.len() + 4 + key.len() + value.map_or(0, Message::encoded_len)
}

/// Appends the body of a record: a set of `value` on (`table`, `key`), or a
/// delete when `value` is `None`.
fn encode_body(buf: &mut Vec<u8>, table: &str, key: &str, value: Option<&Value>) {
    buf.push(if value.is_some() { OP_SET } else { OP_DEL });
    for s in [table, key] {
        // Frames are at most 1 GiB, so a name always fits.
        buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    if let Some(v) = value {
        v.encode_raw(buf);
    }
}

/// Appends the framed record for `op` on (`table`, `key`) to `buf`; `value`
/// is `Some` for a set.
fn encode_record(buf: &mut Vec<u8>, table: &str, key: &str, value: Option<&Value>) {
    buf.reserve(HEADER + body_len(table, key, value));
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    encode_body(buf, table, key, value);
    let len = ((buf.len() - start - HEADER) as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &buf[start + HEADER..]);
    buf[start..start + 4].copy_from_slice(&len);
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// Bytes after the value in an undo entry: whether there was one, and
/// its length.
const UNDO_TRAILER: usize = 1 + 4;

/// Appends to `undo` the entry that undoes a write whose record is
/// appended at the same time: the key's previous value `old`, or the mark
/// that it had none. The table and key are in the record, so an entry is
/// only the value (protobuf), 1 if there was one (else 0), and the
/// value's length (u32 LE); a buffer of them is read newest first, from
/// its end ([`pop_undo`]), next to the records read oldest first.
fn push_undo(undo: &mut Vec<u8>, old: Option<&Value>) {
    let start = undo.len();
    if let Some(v) = old {
        v.encode_raw(undo);
    }
    // Frames are at most 1 GiB, so a value always fits.
    let len = (undo.len() - start) as u32;
    undo.push(u8::from(old.is_some()));
    undo.extend_from_slice(&len.to_le_bytes());
}

/// Takes the newest entry off `undo`: the value to put back, or `None`
/// where the key is to be deleted.
fn pop_undo(undo: &mut Vec<u8>) -> Option<Result<Option<Value>, String>> {
    let (rest, len) = undo.split_last_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    let Some((&had, rest)) = rest.split_last() else {
        undo.clear();
        return Some(Err("an undo entry cut short".into()));
    };
    let Some(start) = rest.len().checked_sub(len) else {
        undo.clear();
        return Some(Err(format!(
            "an undo entry of {len} bytes overruns the buffer"
        )));
    };
    let entry = match had {
        0 => Ok(None),
        _ => Value::decode(&rest[start..])
            .map(Some)
            .map_err(|e| format!("a bad value in an undo entry: {e}")),
    };
    undo.truncate(start);
    Some(entry)
}

fn decode_body(body: &[u8]) -> Result<Record, String> {
    fn take_str<'a>(bytes: &'a [u8], what: &str) -> Result<(String, &'a [u8]), String> {
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| format!("{what} length cut short"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!("{what} of {len} bytes overruns the record"));
        }
        let (s, rest) = rest.split_at(len);
        let s = std::str::from_utf8(s).map_err(|_| format!("{what} is not UTF-8"))?;
        Ok((s.to_owned(), rest))
    }
    let (&op, rest) = body.split_first().ok_or("empty record")?;
    let (table, rest) = take_str(rest, "table name")?;
    let (key, rest) = take_str(rest, "key")?;
    match op {
        OP_SET => {
            let value = Value::decode(rest).map_err(|e| format!("bad value: {e}"))?;
            Ok(Record::Set { table, key, value })
        }
        OP_DEL if rest.is_empty() => Ok(Record::Del { table, key }),
        OP_DEL => Err(format!("{} stray bytes after a delete", rest.len())),
        other => Err(format!("unknown operation {other}")),
    }
}

/// What reading the next record found.
#[derive(Debug, PartialEq)]
enum Next {
    Record {
        offset: u64,
        record: Record,
    },
    End,
    /// A bad record at `offset`. `tail` when it may be a torn last write:
    /// it runs past the end of the file, or fails its checksum and ends
    /// exactly there.
    Bad {
        offset: u64,
        reason: String,
        tail: bool,
    },
}

/// Reads records from a file of known length, never allocating more than
/// the file holds.
struct Reader<R> {
    src: R,
    pos: u64,
    len: u64,
    body: Vec<u8>,
}

impl<R: Read> Reader<R> {
    fn new(src: R, len: u64) -> Self {
        Self {
            src,
            pos: 0,
            len,
            body: Vec::new(),
        }
    }

    fn next(&mut self) -> io::Result<Next> {
        let offset = self.pos;
        let left = self.len - self.pos;
        if left == 0 {
            return Ok(Next::End);
        }
        let bad = |reason: String, tail: bool| {
            Ok(Next::Bad {
                offset,
                reason,
                tail,
            })
        };
        if left < HEADER as u64 {
            return bad(format!("a {left}-byte fragment of a record header"), true);
        }
        let mut header = [0u8; HEADER];
        self.src.read_exact(&mut header)?;
        let len = u64::from(u32::from_le_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > left - HEADER as u64 {
            return bad(
                format!(
                    "a record of {len} bytes, but only {} bytes follow its header",
                    left - HEADER as u64
                ),
                true,
            );
        }
        if len > MAX_BODY {
            return bad(format!("impossible record length {len}"), false);
        }
        self.body.resize(len as usize, 0);
        self.src.read_exact(&mut self.body)?;
        self.pos += HEADER as u64 + len;
        let actual = crc32c::crc32c_append(crc32c::crc32c(&header[..4]), &self.body);
        if actual != crc {
            return bad(
                format!("checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"),
                self.pos == self.len,
            );
        }
        match decode_body(&self.body) {
            Ok(record) => Ok(Next::Record { offset, record }),
            Err(reason) => bad(format!("checksum is right but {reason}"), false),
        }
    }
}

// ---------------------------------------------------------------------------
// Files

fn segment_name(index: u64) -> String {
    format!("wal-{index:06}.log")
}

fn snapshot_name(index: u64) -> String {
    format!("snapshot-{index:06}.log")
}

fn snapshot_tmp_name(index: u64) -> String {
    format!("snapshot-{index:06}.tmp")
}

/// The log files of a directory, by kind and index.
#[derive(Debug, Default)]
struct Listing {
    segments: BTreeMap<u64, PathBuf>,
    snapshots: BTreeMap<u64, PathBuf>,
    temps: Vec<PathBuf>,
}

fn list(dir: &Path) -> Result<Listing, WalError> {
    let mut listing = Listing::default();
    let entries = fs::read_dir(dir).map_err(io_error(dir, "list the log directory"))?;
    for entry in entries {
        let entry = entry.map_err(io_error(dir, "list the log directory"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let index = |prefix: &str, suffix: &str| {
            name.strip_prefix(prefix)
                .and_then(|s| s.strip_suffix(suffix))
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
        };
        if let Some(i) = index("wal-", ".log") {
            listing.segments.insert(i, entry.path());
        } else if let Some(i) = index("snapshot-", ".log") {
            listing.snapshots.insert(i, entry.path());
        } else if index("snapshot-", ".tmp").is_some() {
            listing.temps.push(entry.path());
        }
    }
    Ok(listing)
}

/// fsyncs a directory, so that files created, renamed or removed in it stay so.
fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "fsync the log directory"))
}

/// How a replayed file ended.
struct Replayed {
    records: u64,
    /// Bytes of good records.
    good_len: u64,
    /// A torn last write: (offset, reason).
    torn: Option<(u64, String)>,
}

/// Applies every record of `path` to `store`. A torn tail is accepted only
/// when `last` (the last segment); any other bad record is an error.
fn replay_file(path: &Path, store: &dyn Storage, last: bool) -> Result<Replayed, WalError> {
    let file = File::open(path).map_err(io_error(path, "open the log file"))?;
    let len = file
        .metadata()
        .map_err(io_error(path, "read the log file's size"))?
        .len();
    let mut reader = Reader::new(BufReader::with_capacity(1 << 20, file), len);
    let mut records = 0;
    loop {
        match reader.next().map_err(io_error(path, "read the log file"))? {
            Next::End => {
                return Ok(Replayed {
                    records,
                    good_len: len,
                    torn: None,
                })
            }
            Next::Record { offset, record } => {
                let applied = match record {
                    Record::Set { table, key, value } => store.set(&table, &key, value),
                    Record::Del { table, key } => store.del(&table, &key),
                };
                applied.map_err(|source| WalError::Replay {
                    path: path.to_owned(),
                    offset,
                    source,
                })?;
                records += 1;
            }
            Next::Bad {
                offset,
                reason,
                tail,
            } => {
                let corrupt = |reason| WalError::Corrupt {
                    path: path.to_owned(),
                    offset,
                    reason,
                };
                if !last {
                    return Err(corrupt(reason));
                }
                if tail {
                    // It looks torn; a crash leaves only a prefix of what
                    // was written, so nothing whole may follow.
                    let damage = Scanner::open(path, len)?.damage(offset)?;
                    if let Some(damage) = damage {
                        return Err(corrupt(format!("{reason}, {damage}")));
                    }
                } else if !rest_is_zero(path, offset)? {
                    return Err(corrupt(reason));
                }
                return Ok(Replayed {
                    records,
                    good_len: offset,
                    torn: Some((offset, reason)),
                });
            }
        }
    }
}

/// The smallest body a record can have: its op and two empty names.
const MIN_BODY: u64 = 1 + 4 + 4;

/// How many bytes [`Scanner`] reads at a time.
const SCAN_WINDOW: usize = 1 << 20;

/// Bytes [`Scanner::damage`] may checksum besides the tail itself: enough
/// for any tail a crash leaves (most offsets fail on the length or the op
/// before any checksum is computed), far from the quadratic worst case of
/// a tail crafted to look like record headers at every offset.
const SCAN_BUDGET: u64 = 256 << 20;

/// Tells a torn last write from damage by looking for whole records after
/// the bad one, reading the file in windows of [`SCAN_WINDOW`] bytes.
struct Scanner<'a> {
    path: &'a Path,
    file: File,
    /// The file's size.
    len: u64,
    /// The file's bytes from `base` on.
    window: Vec<u8>,
    base: u64,
    /// Bytes that may still be checksummed.
    budget: u64,
}

/// A valid record where [`Scanner::record_at`] looked, or not, or the
/// scan's budget ran out.
enum Found {
    Record,
    Nothing,
    OutOfBudget,
}

impl<'a> Scanner<'a> {
    fn open(path: &'a Path, len: u64) -> Result<Self, WalError> {
        let file = File::open(path).map_err(io_error(path, "open the log file"))?;
        Ok(Self {
            path,
            file,
            len,
            window: Vec::new(),
            base: 0,
            budget: 0,
        })
    }

    /// `None` when the bad record at `offset`, which runs past the end of
    /// the file or fails its checksum right at it, may be a torn last
    /// write: nothing whole follows it, and it is not itself a whole
    /// record behind a damaged length. Otherwise why it is damage.
    fn damage(&mut self, offset: u64) -> Result<Option<String>, WalError> {
        self.budget = SCAN_BUDGET.saturating_add(self.len - offset);
        let read = |e| io_error(self.path, "read the log file")(e);
        // The bad record itself, as the whole rest of the file under
        // another length: a flipped bit in the length of the last record.
        let rest = self.len - offset;
        if rest >= HEADER as u64 + MIN_BODY {
            let header = self.header(offset).map_err(read)?;
            let body_len = rest - HEADER as u64;
            let stored = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            if u64::from(stored) != body_len && body_len <= MAX_BODY {
                let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                match self.record_at(offset, body_len, crc).map_err(read)? {
                    Found::Record => {
                        return Ok(Some(format!(
                            "yet the {rest} bytes from it to the end of the file are a whole \
                             record of {body_len} bytes: its length field is damaged"
                        )))
                    }
                    Found::OutOfBudget => return Ok(Some(self.undecided(offset))),
                    Found::Nothing => {}
                }
            }
        }
        let mut pos = offset + 1;
        while pos + HEADER as u64 + MIN_BODY <= self.len {
            let header = self.header(pos).map_err(read)?;
            let body_len = u64::from(u32::from_le_bytes([
                header[0], header[1], header[2], header[3],
            ]));
            // The cheap test that almost every offset fails.
            if (MIN_BODY..=MAX_BODY).contains(&body_len)
                && body_len <= self.len - pos - HEADER as u64
            {
                let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                match self.record_at(pos, body_len, crc).map_err(read)? {
                    Found::Record => {
                        return Ok(Some(format!(
                            "yet a whole record starts at byte offset {pos} after it: \
                             this is damage, not a torn last write"
                        )))
                    }
                    Found::OutOfBudget => return Ok(Some(self.undecided(offset))),
                    Found::Nothing => {}
                }
            }
            pos += 1;
        }
        Ok(None)
    }

    fn undecided(&self, offset: u64) -> String {
        let budget = SCAN_BUDGET.saturating_add(self.len - offset);
        format!(
            "and the bytes after it could not be searched for whole records within \
             {budget} bytes of checksums, so it is not taken for a torn last write"
        )
    }

    /// Moves the window so that it holds the header at `pos` and the op
    /// after it (the file has them); returns where `pos` is in it.
    fn fill(&mut self, pos: u64) -> io::Result<usize> {
        let end = self.base + self.window.len() as u64;
        if pos < self.base || pos + HEADER as u64 + 1 > end {
            let n = (self.len - pos).min(SCAN_WINDOW as u64) as usize;
            self.window.resize(n, 0);
            self.base = pos;
            io::Seek::seek(&mut self.file, io::SeekFrom::Start(pos))?;
            self.file.read_exact(&mut self.window)?;
        }
        Ok((pos - self.base) as usize)
    }

    /// The header at `pos`.
    fn header(&mut self, pos: u64) -> io::Result<[u8; HEADER]> {
        let at = self.fill(pos)?;
        let mut header = [0u8; HEADER];
        header.copy_from_slice(&self.window[at..at + HEADER]);
        Ok(header)
    }

    /// Whether the `body_len` bytes after the header at `pos` (which fit
    /// in the file) are a valid body under the length `body_len` and the
    /// checksum `crc`.
    fn record_at(&mut self, pos: u64, body_len: u64, crc: u32) -> io::Result<Found> {
        let start = pos + HEADER as u64;
        let at = self.fill(pos)? + HEADER;
        if ![OP_SET, OP_DEL].contains(&self.window[at]) {
            return Ok(Found::Nothing);
        }
        if body_len > self.budget {
            return Ok(Found::OutOfBudget);
        }
        self.budget -= body_len;
        // Frames are at most 1 GiB, so a plausible length fits in a u32.
        let len_bytes = (body_len as u32).to_le_bytes();
        let mut actual = crc32c::crc32c(&len_bytes);
        let in_window = at + body_len as usize <= self.window.len();
        if in_window {
            actual = crc32c::crc32c_append(actual, &self.window[at..at + body_len as usize]);
        } else {
            let mut chunk = vec![0u8; 64 << 10];
            io::Seek::seek(&mut self.file, io::SeekFrom::Start(start))?;
            let mut left = body_len;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                self.file.read_exact(&mut chunk[..n])?;
                actual = crc32c::crc32c_append(actual, &chunk[..n]);
                left -= n as u64;
            }
        }
        if actual != crc {
            return Ok(Found::Nothing);
        }
        // Almost surely a record; make sure it is one we could replay.
        let valid = if in_window {
            decode_body(&self.window[at..at + body_len as usize]).is_ok()
        } else {
            let mut body = vec![0u8; body_len as usize];
            io::Seek::seek(&mut self.file, io::SeekFrom::Start(start))?;
            self.file.read_exact(&mut body)?;
            decode_body(&body).is_ok()
        };
        Ok(if valid { Found::Record } else { Found::Nothing })
    }
}

/// True when every byte of `path` from `offset` on is zero.
fn rest_is_zero(path: &Path, offset: u64) -> Result<bool, WalError> {
    let mut file = File::open(path).map_err(io_error(path, "open the log file"))?;
    io::Seek::seek(&mut file, io::SeekFrom::Start(offset))
        .map_err(io_error(path, "read the log file"))?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io_error(path, "read the log file"))?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}

/// What recovery found and left: the base snapshot's index and size, and
/// the segment to append to (index, its good length) if one exists.
struct Recovered {
    snapshot: Option<(u64, u64)>,
    last_segment: Option<(u64, u64)>,
    records: u64,
}

/// Replays `dir` into `store`, cuts a torn tail, and removes leftovers of an
/// interrupted compaction. See the module docs, "Recovery".
fn recover(dir: &Path, store: &dyn Storage) -> Result<Recovered, WalError> {
    let listing = list(dir)?;
    let mut records = 0;
    let base = listing.snapshots.last_key_value().map(|(&k, p)| (k, p));
    let mut snapshot = None;
    if let Some((k, path)) = base {
        let replayed = replay_file(path, store, false)?;
        records += replayed.records;
        snapshot = Some((k, replayed.good_len));
    }
    let first_needed = snapshot.map_or(1, |(k, _)| k);
    let live: Vec<(u64, &PathBuf)> = listing
        .segments
        .range(first_needed..)
        .map(|(&i, p)| (i, p))
        .collect();
    if let Some(&(first, _)) = live.first() {
        if first != first_needed {
            let after = match snapshot {
                Some((k, _)) => format!("after {}", snapshot_name(k)),
                None => "with no snapshot".to_owned(),
            };
            return Err(WalError::Missing {
                dir: dir.to_owned(),
                problem: format!(
                    "{} is missing ({after}, replay must start there, but the oldest segment is {})",
                    segment_name(first_needed),
                    segment_name(first)
                ),
            });
        }
    }
    for pair in live.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(WalError::Missing {
                dir: dir.to_owned(),
                problem: format!(
                    "{} is missing (between {} and {})",
                    segment_name(pair[0].0 + 1),
                    segment_name(pair[0].0),
                    segment_name(pair[1].0)
                ),
            });
        }
    }
    let mut last_segment = None;
    for (n, &(index, path)) in live.iter().enumerate() {
        let last = n + 1 == live.len();
        let replayed = replay_file(path, store, last)?;
        records += replayed.records;
        if let Some((offset, reason)) = &replayed.torn {
            let size = fs::metadata(path)
                .map_err(io_error(path, "read the log file's size"))?
                .len();
            warn!(
                file = %path.display(),
                offset,
                cut_bytes = size - offset,
                reason = %reason,
                "write-ahead log: cutting off a torn last record (a write interrupted by a crash)"
            );
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_error(path, "open the log file to cut its torn tail"))?;
            file.set_len(*offset)
                .and_then(|()| file.sync_all())
                .map_err(io_error(path, "cut the torn tail of the log file"))?;
        }
        if last {
            last_segment = Some((index, replayed.good_len));
        }
    }
    // Nothing is removed before the whole log has replayed: a refused start
    // leaves every file as it was.
    for tmp in &listing.temps {
        fs::remove_file(tmp).map_err(io_error(tmp, "remove an unfinished snapshot"))?;
        info!(file = %tmp.display(), "removed a snapshot left unfinished by a crash");
    }
    // Leftovers of a compaction that made its snapshot but did not get to
    // delete what it replaces.
    let obsolete = listing
        .segments
        .range(..first_needed)
        .chain(listing.snapshots.range(..first_needed));
    let mut removed = false;
    for (_, path) in obsolete {
        fs::remove_file(path).map_err(io_error(path, "remove a log file the snapshot replaces"))?;
        removed = true;
    }
    if removed || !listing.temps.is_empty() {
        sync_dir(dir)?;
    }
    Ok(Recovered {
        snapshot,
        last_segment,
        records,
    })
}

// ---------------------------------------------------------------------------
// Shared state

/// Why the log no longer takes writes.
#[derive(Debug, Clone)]
enum Stopped {
    /// A write or fsync failed; the reason.
    Failed(Arc<str>),
    /// [`Wal::close`] ran.
    Closed,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stopped::Failed(reason) => write!(f, "failed: {reason}"),
            Stopped::Closed => f.write_str("is closed"),
        }
    }
}

/// What the writer has done, as barriers see it.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Records up to this LSN are in the OS (`write` returned).
    written: u64,
    /// Records up to this LSN are fsync'd.
    synced: u64,
    /// Set once; records past `written` will never be written.
    stopped: Option<Stopped>,
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

/// Guarded by `Shared::state`.
#[derive(Debug, Default)]
struct State {
    /// Encoded records not yet taken for writing.
    buf: Vec<u8>,
    /// What undoes the writes whose records are in `buf`, oldest first
    /// ([`push_undo`]): a write is not acknowledged before its record is
    /// durable, and one whose record never gets there must not stay
    /// visible.
    undo: Vec<u8>,
    /// LSN of the last record appended (records are numbered from 1).
    appended: u64,
    /// How the writer is waiting on `Shared::work`, if it is.
    sleep: Sleep,
    /// A barrier asked for the buffer to be written now (see `Shared::kick`).
    kicked: bool,
    /// Someone blocked in `sync_all` wants an fsync now.
    sync_requested: bool,
    /// Threads blocked in `sync_all` (woken through `Shared::synced`).
    sync_waiters: usize,
    /// Set once; appends are refused from then on.
    stopped: Option<Stopped>,
    /// A barrier's inline write found the segment due for compaction; the
    /// writer thread rotates it.
    compact_due: bool,
    /// Posted by the compactor when it ends: the snapshot's size, or None
    /// if it failed. Wakes the writer, so the next compaction may start
    /// even if no more records come.
    compaction_done: Option<Option<u64>>,
}

/// Everything the writer, the fsync thread, the compactor, the store, the
/// hook and the barrier share.
struct Shared {
    dir: PathBuf,
    policy: Fsync,
    /// The storage the log wraps: what [`WalStore`] applies writes to, the
    /// compactor snapshots, and a failure rolls back.
    store: Arc<dyn Storage>,
    /// Held from applying a write to appending its record (or undoing it).
    stripes: Stripes,
    /// A std mutex: held for a memcpy on the request path, never across I/O.
    state: Mutex<State>,
    /// Wakes the writer: records, a sync request, or closing.
    work: Condvar,
    /// Wakes threads blocked in `sync_all`.
    synced: Condvar,
    /// Published by whoever writes; barriers wait on it without a thread each.
    progress: watch::Sender<Progress>,
    /// Copy of `State::appended` readable without the lock (barrier targets).
    appended: AtomicU64,
    /// Fast check for "stopped" on every write request.
    stopped: AtomicBool,
    /// Set by `close`: the writer drains and exits, helpers stop.
    closing: AtomicBool,
    /// fdatasync calls on segments since open.
    fsyncs: AtomicU64,
    /// The segment being written, for the `everysec` fsync thread.
    current: Mutex<Arc<File>>,
    /// Held while taking the buffer and writing it (see [`Io`]).
    io: Mutex<Io>,
    /// The fsync thread sleeps on this between ticks (`close` wakes it).
    tick: (Mutex<()>, Condvar),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves nothing half-done
    // that the next holder could trip on, so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn stopped(&self) -> Option<Stopped> {
        if self.stopped.load(Ordering::Acquire) {
            lock(&self.state).stopped.clone()
        } else {
            None
        }
    }

    /// Adds an encoded record, and the entry that undoes its write
    /// ([`push_undo`]), to the buffers. Returns false (and still uses up an
    /// LSN, so barriers cannot pass) when the log has stopped: the caller
    /// undoes the write.
    fn append(&self, record: &[u8], undo: &[u8]) -> bool {
        let mut st = lock(&self.state);
        st.appended += 1;
        self.appended.store(st.appended, Ordering::Release);
        if st.stopped.is_some() {
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
    fn kick(&self) {
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

    /// Stops the log for good because of `reason` (logged once), undoes
    /// every write whose record is not durable, then tells the barriers. A
    /// failure of the last write, while closing, still counts: whoever
    /// waits for it must hear that it failed.
    ///
    /// Called with `io` held (so no batch can be written meanwhile); its
    /// `batch` and `undo` hold the batch that failed, if one did.
    fn fail(&self, io: &mut Io, reason: String) {
        let (records, undo) = {
            let mut st = lock(&self.state);
            if !matches!(st.stopped, Some(Stopped::Failed(_))) {
                error!(dir = %self.dir.display(), error = %reason, "write-ahead log failed; refusing writes from now on (reads still work)");
                st.stopped = Some(Stopped::Failed(reason.into()));
                self.stopped.store(true, Ordering::Release);
            }
            // From here on appends are refused (and undone by their
            // writers), so these are all the writes left to undo.
            (std::mem::take(&mut st.buf), std::mem::take(&mut st.undo))
        };
        // Newest first: the buffered writes, then the batch that failed.
        let undone = self.roll_back(&records, undo)
            + self.roll_back(&std::mem::take(&mut io.batch), std::mem::take(&mut io.undo));
        if undone > 0 {
            warn!(
                dir = %self.dir.display(),
                writes = undone,
                "write-ahead log: undid the writes that never reached the log (none of them was acknowledged)"
            );
        }
        // Only now may a client hear of the failure (its connection closes):
        // what it reads next no longer shows its unlogged writes.
        let st = lock(&self.state);
        let stopped = st.stopped.clone();
        self.progress.send_modify(|p| {
            if !matches!(p.stopped, Some(Stopped::Failed(_))) {
                p.stopped = stopped;
            }
        });
        self.synced.notify_all();
        self.work.notify_all();
    }

    /// Undoes the writes of `records` (as appended) with their entries in
    /// `undo`, newest first, each under the stripe lock of its key (so a
    /// write racing the failure cannot slip in between); returns how many
    /// were undone.
    fn roll_back(&self, records: &[u8], mut undo: Vec<u8>) -> u64 {
        // The table and key of each record, oldest first.
        let mut keys = Vec::new();
        let mut reader = Reader::new(records, records.len() as u64);
        let mut bad = None;
        loop {
            match reader.next() {
                Ok(Next::Record { record, .. }) => keys.push(match record {
                    Record::Set { table, key, .. } | Record::Del { table, key } => (table, key),
                }),
                Ok(Next::End) => break,
                Ok(Next::Bad { reason, .. }) => {
                    bad = Some(reason);
                    break;
                }
                Err(e) => {
                    bad = Some(e.to_string());
                    break;
                }
            }
        }
        let mut undone = 0;
        while let Some((table, key)) = keys.pop() {
            let entry = pop_undo(&mut undo)
                .unwrap_or_else(|| Err("fewer undo entries than records".into()));
            let _stripe = self.stripes.lock(&table, &key);
            let restored = match entry {
                Ok(Some(value)) => self.store.set(&table, &key, value).map(drop),
                Ok(None) => self.store.del(&table, &key).map(drop),
                Err(reason) => {
                    bad = Some(reason);
                    break;
                }
            };
            match restored {
                Ok(()) => undone += 1,
                Err(e) => crate::log_limited!(
                    error,
                    dir = %self.dir.display(),
                    error = %e,
                    "write-ahead log: storage refused to undo a write that never reached the log; it stays visible until a restart"
                ),
            }
        }
        // Cannot happen: both buffers are written only by `append`.
        if let Some(reason) = bad {
            error!(dir = %self.dir.display(), %reason, "write-ahead log: cannot read what undoes the writes that never reached the log; they stay visible until a restart");
        }
        undone
    }

    /// Blocks until every record appended so far is fsync'd.
    fn sync_all(&self) -> Result<(), WalError> {
        let mut st = lock(&self.state);
        let target = st.appended;
        st.sync_requested = true;
        st.sync_waiters += 1;
        self.wake_writer(&mut st);
        let result = loop {
            let p = self.progress.borrow().clone();
            if p.synced >= target {
                break Ok(());
            }
            // Published only after the writer's last fsync: a closed log got
            // everything appended before it closed.
            if let Some(stopped) = p.stopped {
                break Err(WalError::Stopped(stopped.to_string()));
            }
            st = self.synced.wait(st).unwrap_or_else(PoisonError::into_inner);
        };
        st.sync_waiters -= 1;
        result
    }

    /// Takes the buffered records, writes them to the segment, fsyncs if
    /// the policy (or `force_sync`) asks for it, and tells the barriers.
    /// `closing`: nothing appended later is written. The caller holds `io`
    /// and, on `Failed`, stops the log before releasing it.
    fn flush(&self, io: &mut Io, closing: bool, force_sync: bool) -> Result<(), WriteError> {
        let upto = {
            let mut st = lock(&self.state);
            // Once stopped, `appended` counts refused records too: they
            // must never look written.
            if st.stopped.is_some() {
                return Err(WriteError::Stopped);
            }
            std::mem::swap(&mut st.buf, &mut io.batch);
            std::mem::swap(&mut st.undo, &mut io.undo);
            st.kicked = false;
            if closing {
                st.stopped = Some(Stopped::Closed);
                self.stopped.store(true, Ordering::Release);
            }
            st.appended
        };
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
        }
        let synced = self.progress.borrow().synced;
        let sync = (force_sync || self.policy == Fsync::Always) && synced < upto;
        if sync {
            if let Err(e) = self.count_fsync(&io.segment.file) {
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
        self.progress.send_if_modified(|p| {
            let before = (p.written, p.synced);
            p.written = p.written.max(upto);
            if sync {
                p.synced = p.synced.max(upto);
            }
            (p.written, p.synced) != before
        });
        Ok(())
    }

    /// With `everysec` and `no`, a barrier writes the buffer itself: one
    /// `write` for every connection that appended in this scheduler tick,
    /// instead of waking the writer thread and waiting for it (the handoff
    /// costs more than the write). False when someone else holds the
    /// segment (the writer thread writing or rotating, another runtime
    /// thread's barrier): kick the writer instead.
    fn write_inline(&self) -> bool {
        let mut io = match self.io.try_lock() {
            Ok(io) => io,
            Err(std::sync::TryLockError::WouldBlock) => return false,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        };
        match self.flush(&mut io, false, false) {
            Ok(()) => {
                let compact_due = io.segment.bytes >= io.compact_at && io.compactor.is_none();
                drop(io);
                if compact_due {
                    let mut st = lock(&self.state);
                    st.compact_due = true;
                    self.wake_writer(&mut st);
                }
            }
            // Stop the log while still holding `io`, so that no later batch
            // can be written (and acknowledged) after the failed one.
            Err(WriteError::Failed(reason)) => self.fail(&mut io, reason),
            Err(WriteError::Stopped) => {}
        }
        true
    }

    fn count_fsync(&self, file: &File) -> io::Result<()> {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        file.sync_data()
    }
}

// ---------------------------------------------------------------------------
// The writer thread

struct Segment {
    file: Arc<File>,
    index: u64,
    path: PathBuf,
    bytes: u64,
}

impl Segment {
    /// After a failed write or fsync: cuts off whatever part of the failed
    /// batch reached the file, so that records of writes nobody was told
    /// about do not come back at the next start. Best effort (the disk is
    /// failing, so no fsync follows); a cut that fails is logged, and the
    /// records it leaves are replayed at the next start.
    fn cut_back(&self, len: u64) {
        if let Err(e) = self.file.set_len(len) {
            error!(file = %self.path.display(), len, error = %e, "write-ahead log: cannot cut the failed batch off the segment; writes that were never acknowledged may reappear at the next start");
        }
    }

    fn open(dir: &Path, index: u64, bytes: u64, create: bool) -> Result<Self, WalError> {
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
}

/// The segment being written. Whoever holds `Shared::io` takes the
/// buffered records and writes them, so batches reach the file in LSN
/// order: the writer thread, or (with `everysec` and `no`) a barrier
/// writing inline.
struct Io {
    segment: Segment,
    /// The records being written (swapped with `State::buf`), kept with
    /// `undo` until they are as durable as the policy promises.
    batch: Vec<u8>,
    /// What undoes the writes of `batch` (swapped with `State::undo`).
    undo: Vec<u8>,
    /// Segment size at which the writer thread rotates and compacts.
    compact_at: u64,
    /// The running compaction, if any (inline writes then need not ask for
    /// one).
    compactor: Option<JoinHandle<()>>,
}

/// Why [`Shared::flush`] wrote nothing (more).
#[derive(Debug)]
enum WriteError {
    /// The log had already stopped: nothing to do.
    Stopped,
    /// This write or fsync failed: the log must stop.
    Failed(String),
}

struct Writer {
    shared: Arc<Shared>,
    compact_bytes: u64,
    /// Size of the last snapshot written or replayed.
    snapshot_bytes: u64,
}

/// What the writer took from the shared state in one go.
struct Work {
    /// The log is closing: this is the last batch.
    closing: bool,
    /// Someone asked for an fsync.
    sync: bool,
    /// A compaction ended (with the snapshot's size if it succeeded).
    compacted: Option<Option<u64>>,
}

impl Writer {
    fn threshold(&self) -> u64 {
        self.compact_bytes.max(self.snapshot_bytes)
    }

    fn run(mut self) {
        // `take` returns None when the log failed (e.g. in the fsync thread).
        while let Some(work) = self.take() {
            let shared = Arc::clone(&self.shared);
            let mut io = lock(&shared.io);
            match shared.flush(&mut io, work.closing, work.closing || work.sync) {
                Ok(()) => {}
                // Under `io`, like `write_inline`.
                Err(WriteError::Failed(reason)) => {
                    self.shared.fail(&mut io, reason);
                    break;
                }
                Err(WriteError::Stopped) => break,
            }
            if work.closing {
                self.shared.progress.send_modify(|p| {
                    p.stopped.get_or_insert(Stopped::Closed);
                });
                break;
            }
            self.maybe_compact(&mut io, work.compacted);
        }
        {
            // Under the lock, so a thread about to wait in `sync_all` cannot
            // miss it.
            let _st = lock(&self.shared.state);
            self.shared.synced.notify_all();
        }
        let compactor = lock(&self.shared.io).compactor.take();
        if let Some(compactor) = compactor {
            let _ = compactor.join();
        }
    }

    /// Waits for work (the caller then writes the buffer). None when the
    /// log has failed.
    fn take(&self) -> Option<Work> {
        // With `always` the fsync is the bottleneck: keep it busy, starting
        // the next one as soon as the last ends and there is anything to
        // write (what piles up meanwhile is the next group). Otherwise wait
        // for a barrier's kick, so one `write` covers a whole scheduler tick.
        let eager = self.shared.policy == Fsync::Always;
        let mut st = lock(&self.shared.state);
        let mut timed_out = false;
        loop {
            if st.sync_waiters > 0 {
                self.shared.synced.notify_all();
            }
            if matches!(st.stopped, Some(Stopped::Failed(_))) {
                return None;
            }
            let closing = self.shared.closing.load(Ordering::Acquire);
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
                st = self
                    .shared
                    .work
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
                timed_out = false;
            } else {
                // Busy: a barrier's kick (or FLUSH_AFTER) says when to write.
                st.sleep = Sleep::Timed;
                let (guard, waited) = self
                    .shared
                    .work
                    .wait_timeout(st, FLUSH_AFTER)
                    .unwrap_or_else(PoisonError::into_inner);
                st = guard;
                timed_out = waited.timed_out();
            }
            st.sleep = Sleep::Awake;
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
        let synced = self.shared.progress.borrow().synced;
        let written = self.shared.progress.borrow().written;
        if synced < written {
            if let Err(e) = self.shared.count_fsync(&io.segment.file) {
                let reason = format!("cannot fsync {}: {e}", io.segment.path.display());
                self.shared.fail(io, reason);
                return;
            }
            self.shared
                .progress
                .send_modify(|p| p.synced = p.synced.max(written));
        }
        let next = match Segment::open(&self.shared.dir, io.segment.index + 1, 0, true)
            .and_then(|seg| sync_dir(&self.shared.dir).map(|()| seg))
        {
            Ok(seg) => seg,
            Err(e) => {
                warn!(error = %e, "write-ahead log: cannot start a new segment; compaction postponed");
                return;
            }
        };
        *lock(&self.shared.current) = Arc::clone(&next.file);
        io.segment = next;
        io.compact_at = self.threshold();
        let index = io.segment.index;
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("hookv-wal-compact".into())
            .spawn(move || {
                let started = Instant::now();
                let result = compact(&shared, index);
                let snapshot_bytes = match result {
                    Ok(bytes) => {
                        info!(
                            snapshot = snapshot_name(index),
                            bytes,
                            took = ?started.elapsed(),
                            "write-ahead log compacted"
                        );
                        Some(bytes)
                    }
                    Err(WalError::Cancelled) => None,
                    Err(e) => {
                        warn!(error = %e, "write-ahead log compaction failed; will retry once the log has grown by compact_bytes again");
                        None
                    }
                };
                let mut st = lock(&shared.state);
                st.compaction_done = Some(snapshot_bytes);
                shared.wake_writer(&mut st);
            });
        match spawned {
            Ok(handle) => io.compactor = Some(handle),
            Err(e) => warn!(error = %e, "cannot start the compaction thread"),
        }
    }
}

/// Writes `snapshot-{index}` from `store` and deletes what it replaces.
/// Returns the snapshot's size.
fn compact(shared: &Shared, index: u64) -> Result<u64, WalError> {
    let dir = &shared.dir;
    let store = shared.store.as_ref();
    let tmp = dir.join(snapshot_tmp_name(index));
    let result = write_snapshot(shared, store, &tmp).and_then(|bytes| {
        // The snapshot may hold writes whose records are not durable yet.
        // Should the log fail before they are, they are undone, and the
        // snapshot must not bring them back: wait until every write applied
        // before the snapshot was read is durable, or drop the snapshot.
        shared.stripes.pass();
        shared.sync_all().map_err(|_| WalError::Cancelled)?;
        Ok(bytes)
    });
    let bytes = match result {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // A persistent backend must not hold a key the snapshot says is gone
    // once the segments that delete it are removed.
    store.flush()?;
    let path = dir.join(snapshot_name(index));
    fs::rename(&tmp, &path).map_err(io_error(&path, "rename the finished snapshot"))?;
    sync_dir(dir)?;
    let listing = list(dir)?;
    for (_, old) in listing
        .segments
        .range(..index)
        .chain(listing.snapshots.range(..index))
    {
        fs::remove_file(old).map_err(io_error(old, "remove a log file the snapshot replaces"))?;
    }
    sync_dir(dir)?;
    Ok(bytes)
}

fn write_snapshot(shared: &Shared, store: &dyn Storage, tmp: &Path) -> Result<u64, WalError> {
    let file = File::create(tmp).map_err(io_error(tmp, "create a snapshot"))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let mut bytes = 0u64;
    for table in store.tables()? {
        for pair in store.get_iter(&table)? {
            if shared.closing.load(Ordering::Relaxed) {
                return Err(WalError::Cancelled);
            }
            let Kvpair { key, value } = pair?;
            let Some(value) = value else { continue };
            buf.clear();
            encode_record(&mut buf, &table, &key, Some(&value));
            out.write_all(&buf)
                .map_err(io_error(tmp, "write a snapshot"))?;
            bytes += buf.len() as u64;
        }
    }
    let file = out
        .into_inner()
        .map_err(|e| io_error(tmp, "write a snapshot")(e.into_error()))?;
    file.sync_all().map_err(io_error(tmp, "fsync a snapshot"))?;
    Ok(bytes)
}

/// The `everysec` thread: fsyncs the current segment once a second.
fn sync_every_second(shared: Arc<Shared>) {
    let (mutex, cv) = &shared.tick;
    let mut next = Instant::now() + Duration::from_secs(1);
    loop {
        let mut guard = lock(mutex);
        while !shared.closing.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= next {
                break;
            }
            guard = cv
                .wait_timeout(guard, next - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(guard);
        if shared.closing.load(Ordering::Acquire) || shared.stopped.load(Ordering::Acquire) {
            return;
        }
        next = Instant::now() + Duration::from_secs(1);
        let (written, synced) = {
            let p = shared.progress.borrow();
            (p.written, p.synced)
        };
        if written <= synced {
            continue;
        }
        // Records up to `written` are in this file or in an older segment,
        // which was fsync'd when it was rotated out.
        let file = Arc::clone(&lock(&shared.current));
        match shared.count_fsync(&file) {
            Ok(()) => shared
                .progress
                .send_modify(|p| p.synced = p.synced.max(written)),
            Err(e) => {
                // What was written is acknowledged and stays; what is still
                // buffered is undone.
                let mut io = lock(&shared.io);
                shared.fail(&mut io, format!("cannot fsync the log segment: {e}"));
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The public pieces

/// The write-ahead log: its writer thread, LSNs and compaction. Cheap to
/// share as `Arc<Wal>`; dropping the last one closes it.
pub struct Wal {
    shared: Arc<Shared>,
    /// Taken by `close`, which joins them.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The directory's lock, released by `close` (nothing is written after).
    dir_lock: Mutex<Option<File>>,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("fsync", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating) the log directory, replays it into `store`, and
    /// starts the writer thread. `options.path` is resolved against
    /// `dir_base` (the config file's directory) when relative.
    ///
    /// Returns the log and the store the service must use: it logs every
    /// write it applies. Add [`Wal::hook`] to the hook chain and
    /// [`Wal::barrier`] to the service.
    pub fn open(
        options: WalOptions,
        dir_base: &Path,
        store: Arc<dyn Storage>,
    ) -> Result<(Arc<Wal>, Arc<dyn Storage>), WalError> {
        options.check().map_err(WalError::Options)?;
        let dir = if options.path.is_relative() {
            dir_base.join(&options.path)
        } else {
            options.path.clone()
        };
        fs::create_dir_all(&dir).map_err(io_error(&dir, "create the log directory"))?;
        let dir_lock = lock_dir(&dir)?;
        let started = Instant::now();
        let recovered = recover(&dir, store.as_ref())?;
        let segment = match recovered.last_segment {
            Some((index, bytes)) => Segment::open(&dir, index, bytes, false)?,
            None => {
                let index = recovered.snapshot.map_or(1, |(k, _)| k);
                let segment = Segment::open(&dir, index, 0, true)?;
                sync_dir(&dir)?;
                segment
            }
        };
        info!(
            dir = %dir.display(),
            records = recovered.records,
            snapshot = ?recovered.snapshot.map(|(k, _)| snapshot_name(k)),
            segment = segment_name(segment.index),
            fsync = ?options.fsync,
            took = ?started.elapsed(),
            "write-ahead log replayed"
        );
        let (progress, _) = watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            dir,
            policy: options.fsync,
            store,
            stripes: Stripes::new(),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            synced: Condvar::new(),
            progress,
            appended: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            fsyncs: AtomicU64::new(0),
            current: Mutex::new(Arc::clone(&segment.file)),
            io: Mutex::new(Io {
                segment,
                batch: Vec::new(),
                undo: Vec::new(),
                compact_at: 0,
                compactor: None,
            }),
            tick: (Mutex::new(()), Condvar::new()),
        });
        let snapshot_bytes = recovered.snapshot.map_or(0, |(_, bytes)| bytes);
        let writer = Writer {
            shared: Arc::clone(&shared),
            compact_bytes: options.compact_bytes,
            snapshot_bytes,
        };
        lock(&shared.io).compact_at = writer.threshold();
        let spawn_error = |e| WalError::Io {
            path: shared.dir.clone(),
            action: "start the log's threads",
            source: e,
        };
        let writer = std::thread::Builder::new()
            .name("hookv-wal-writer".into())
            .spawn(move || writer.run())
            .map_err(spawn_error)?;
        // From here on, an early return drops `wal`, which stops the writer.
        let wal = Arc::new(Wal {
            shared: Arc::clone(&shared),
            threads: Mutex::new(vec![writer]),
            dir_lock: Mutex::new(dir_lock),
        });
        if options.fsync == Fsync::Everysec {
            let shared = Arc::clone(&shared);
            let syncer = std::thread::Builder::new()
                .name("hookv-wal-fsync".into())
                .spawn(move || sync_every_second(shared))
                .map_err(spawn_error)?;
            lock(&wal.threads).push(syncer);
        }
        let logged: Arc<dyn Storage> = Arc::new(WalStore { shared });
        Ok((wal, logged))
    }

    /// The hook to put in the chain (named `wal`): refuses writes once the
    /// log has failed; its `shutdown` flushes and fsyncs the log.
    pub fn hook(self: &Arc<Self>) -> Arc<dyn Hook> {
        Arc::new(WalHook {
            wal: Arc::clone(self),
        })
    }

    /// The barrier the service awaits before answering writes.
    pub fn barrier(self: &Arc<Self>) -> Arc<dyn WriteBarrier> {
        Arc::new(WalBarrier {
            shared: Arc::clone(&self.shared),
        })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// How many times a log segment was fsync'd since open (for tests and
    /// metrics: with `always`, far fewer than the writes, thanks to group
    /// commit).
    pub fn fsync_count(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
    }

    /// Writes and fsyncs every record appended so far; blocks.
    pub fn sync(&self) -> Result<(), WalError> {
        self.shared.sync_all()
    }

    /// Writes and fsyncs everything, then stops the threads; later writes
    /// are refused. Blocks; idempotent. Called on drop.
    pub fn close(&self) {
        let threads = std::mem::take(&mut *lock(&self.threads));
        if threads.is_empty() {
            return;
        }
        self.shared.closing.store(true, Ordering::Release);
        {
            let _st = lock(&self.shared.state);
            self.shared.work.notify_all();
        }
        {
            let _tick = lock(&self.shared.tick.0);
            self.shared.tick.1.notify_all();
        }
        for thread in threads {
            if thread.join().is_err() {
                error!("a write-ahead log thread panicked");
            }
        }
        // The writer and compactor are gone and writes are refused: the
        // directory may be someone else's now.
        drop(lock(&self.dir_lock).take());
        let p = self.shared.progress.borrow().clone();
        info!(
            dir = %self.shared.dir.display(),
            records = p.written,
            fsyncs = self.fsync_count(),
            "write-ahead log closed"
        );
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

/// Refuses writes once the log has stopped.
struct WalHook {
    wal: Arc<Wal>,
}

impl Hook for WalHook {
    fn name(&self) -> &str {
        "wal"
    }

    fn events(&self) -> Events {
        Events {
            received: true,
            ..Events::NONE
        }
    }

    fn on_received(&self, _ctx: &mut HookCtx, req: &CommandRequest) -> Flow {
        if !req.is_write() {
            return ControlFlow::Continue(());
        }
        match self.wal.shared.stopped() {
            None => ControlFlow::Continue(()),
            Some(Stopped::Closed) => ControlFlow::Break(CommandResponse::error(
                status::UNAVAILABLE,
                "write refused: the write-ahead log is closed (server shutting down)",
            )),
            Some(Stopped::Failed(reason)) => ControlFlow::Break(CommandResponse::error(
                status::INTERNAL,
                format!(
                    "write refused: the write-ahead log failed ({reason}); reads still work, \
                     writes need a server restart once the cause is fixed"
                ),
            )),
        }
    }

    /// Flushes and fsyncs; the log stays open (a reload may keep it), and
    /// closes when the last `Arc<Wal>` goes.
    fn shutdown(&self) {
        if let Err(e) = self.wal.sync() {
            error!(error = %e, "write-ahead log: cannot flush on shutdown");
        }
    }
}

/// Completes when the records appended so far are as durable as the policy
/// promises.
struct WalBarrier {
    shared: Arc<Shared>,
}

impl WriteBarrier for WalBarrier {
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), BarrierError>> + Send + '_>> {
        // Read now: every record this connection appended is at or below it.
        let target = self.shared.appended.load(Ordering::Acquire);
        let always = self.shared.policy == Fsync::Always;
        let done = move |p: &Progress| {
            if always {
                p.synced >= target
            } else {
                p.written >= target
            }
        };
        Box::pin(async move {
            let mut rx = self.shared.progress.subscribe();
            if done(&rx.borrow_and_update()) {
                return Ok(());
            }
            if !always {
                // Let every other connection with a request ready in this
                // scheduler tick append first (the yield lets the scheduler
                // poll the sockets and run them), then write: one `write`
                // covers them all. (With `always` the writer is already on
                // its way: it woke at the first append.)
                tokio::task::yield_now().await;
                if !self.shared.write_inline() {
                    self.shared.kick();
                }
            }
            let p = rx
                .wait_for(|p| done(p) || p.stopped.is_some())
                .await
                .map_err(|_| BarrierError("the write-ahead log is gone".into()))?;
            match &p.stopped {
                Some(stopped) if !done(&p) => {
                    Err(BarrierError(format!("the write-ahead log {stopped}")))
                }
                _ => Ok(()),
            }
        })
    }
}

/// Number of stripe locks in a [`WalStore`].
pub const STRIPES: usize = 64;

/// One stripe lock on its own cache line.
#[repr(align(64))]
#[derive(Default)]
struct Stripe(Mutex<()>);

/// Locks striped by (table, key): held from applying a write to appending
/// its record, and while undoing a write.
struct Stripes {
    locks: Box<[Stripe]>,
    hasher: ahash::RandomState,
}

impl Stripes {
    fn new() -> Self {
        Self {
            locks: (0..STRIPES).map(|_| Stripe::default()).collect(),
            hasher: ahash::RandomState::new(),
        }
    }

    fn lock(&self, table: &str, key: &str) -> MutexGuard<'_, ()> {
        let i = self.hasher.hash_one((table, key)) as usize % STRIPES;
        lock(&self.locks[i].0)
    }

    /// Takes and releases every stripe in turn: every write applied before
    /// this call has its record appended (or is undone) when it returns.
    fn pass(&self) {
        for stripe in self.locks.iter() {
            drop(lock(&stripe.0));
        }
    }
}

/// The storage wrapper [`Wal::open`] returns: applies each write to the inner
/// store and logs it under a per-key stripe lock (see the module docs).
pub struct WalStore {
    shared: Arc<Shared>,
}

impl WalStore {
    fn refuse_if_stopped(&self) -> Result<(), StorageError> {
        match self.shared.stopped() {
            Some(stopped) => Err(StorageError::WriteAheadLog(stopped.to_string())),
            None => Ok(()),
        }
    }

    /// Logs a write applied under the caller's stripe lock: `bytes` holds
    /// its record (the first `record` bytes), then gets the entry that
    /// undoes it, which puts back `old`. If the log stopped after
    /// [`WalStore::refuse_if_stopped`] passed, the record is refused: the
    /// write is undone here, before the stripe lock is released, and
    /// refused.
    fn log(
        &self,
        mut bytes: Vec<u8>,
        record: usize,
        table: &str,
        key: &str,
        old: Option<Value>,
    ) -> Result<Option<Value>, StorageError> {
        push_undo(&mut bytes, old.as_ref());
        if self.shared.append(&bytes[..record], &bytes[record..]) {
            return Ok(old);
        }
        let undone = match old {
            Some(old) => self.shared.store.set(table, key, old).map(drop),
            None => self.shared.store.del(table, key).map(drop),
        };
        if let Err(e) = undone {
            crate::log_limited!(error, error = %e, "write-ahead log: storage refused to undo a write the log refused; it stays visible until a restart");
        }
        let why = self.shared.stopped().map(|s| s.to_string());
        Err(StorageError::WriteAheadLog(why.unwrap_or_default()))
    }
}

impl Storage for WalStore {
    fn get(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        self.shared.store.get(table, key)
    }

    fn set(&self, table: &str, key: &str, value: Value) -> Result<Option<Value>, StorageError> {
        self.refuse_if_stopped()?;
        // Room for the record and for the entry that undoes it, guessing
        // that the old value is as large as the new one.
        let value_len = value.encoded_len();
        let mut bytes =
            Vec::with_capacity(HEADER + body_len(table, key, None) + 2 * value_len + UNDO_TRAILER);
        encode_record(&mut bytes, table, key, Some(&value));
        let record = bytes.len();
        let _stripe = self.shared.stripes.lock(table, key);
        let old = self.shared.store.set(table, key, value)?;
        self.log(bytes, record, table, key, old)
    }

    fn contains(&self, table: &str, key: &str) -> Result<bool, StorageError> {
        self.shared.store.contains(table, key)
    }

    fn del(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        self.refuse_if_stopped()?;
        let mut bytes = Vec::with_capacity(HEADER + body_len(table, key, None) + UNDO_TRAILER);
        encode_record(&mut bytes, table, key, None);
        let record = bytes.len();
        let _stripe = self.shared.stripes.lock(table, key);
        match self.shared.store.del(table, key)? {
            // Nothing changed: nothing to log.
            None => Ok(None),
            old => self.log(bytes, record, table, key, old),
        }
    }

    fn get_all(&self, table: &str) -> Result<Vec<Kvpair>, StorageError> {
        self.shared.store.get_all(table)
    }

    fn get_iter(&self, table: &str) -> Result<StorageIter, StorageError> {
        self.shared.store.get_iter(table)
    }

    fn scan(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Kvpair>, StorageError> {
        self.shared.store.scan(table, after, limit)
    }

    fn tables(&self) -> Result<Vec<String>, StorageError> {
        self.shared.store.tables()
    }

    /// Flushes the inner store, then writes and fsyncs the log.
    fn flush(&self) -> Result<(), StorageError> {
        self.shared.store.flush()?;
        self.shared.sync_all().map_err(|e| {
            StorageError::WriteAheadLog(match e {
                WalError::Stopped(why) => why,
                other => other.to_string(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemTable;

    fn set(table: &str, key: &str, value: &str) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_record(&mut buf, table, key, Some(&Value::from(value)));
        buf
    }

    fn del(table: &str, key: &str) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_record(&mut buf, table, key, None);
        buf
    }

    fn read_all(bytes: &[u8]) -> Vec<Next> {
        let mut reader = Reader::new(bytes, bytes.len() as u64);
        let mut out = Vec::new();
        loop {
            let next = reader.next().unwrap();
            let stop = !matches!(next, Next::Record { .. });
            out.push(next);
            if stop {
                return out;
            }
        }
    }

    #[test]
    fn records_round_trip() {
        let mut log = set("t", "k", "v");
        log.extend(del("t", "k"));
        log.extend(set("", "", ""));
        let bin = Value::from(bytes::Bytes::from_static(b"\x00\xff"));
        encode_record(&mut log, "ünï 表", "ключ", Some(&bin));
        let out = read_all(&log);
        let records: Vec<_> = out
            .iter()
            .filter_map(|n| match n {
                Next::Record { record, .. } => Some(record.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            records,
            vec![
                Record::Set {
                    table: "t".into(),
                    key: "k".into(),
                    value: "v".into()
                },
                Record::Del {
                    table: "t".into(),
                    key: "k".into()
                },
                Record::Set {
                    table: "".into(),
                    key: "".into(),
                    value: "".into()
                },
                Record::Set {
                    table: "ünï 表".into(),
                    key: "ключ".into(),
                    value: bin
                },
            ]
        );
        assert_eq!(out.last(), Some(&Next::End));
        // Offsets are where each record starts.
        let first_len = set("t", "k", "v").len() as u64;
        assert!(matches!(out[1], Next::Record { offset, .. } if offset == first_len));
    }

    fn last_bad(bytes: &[u8]) -> (u64, bool) {
        match read_all(bytes).pop() {
            Some(Next::Bad { offset, tail, .. }) => (offset, tail),
            other => panic!("expected a bad record, got {other:?}"),
        }
    }

    #[test]
    fn torn_tails_are_recognised() {
        let good = set("t", "k1", "v1");
        let next = set("t", "k2", "v2");
        let at = good.len() as u64;
        // Every strict prefix of the second record is a torn tail at its start.
        for cut in 1..next.len() {
            let mut log = good.clone();
            log.extend_from_slice(&next[..cut]);
            assert_eq!(last_bad(&log), (at, true), "cut at {cut}");
        }
        // A full last record with a bad checksum, ending at EOF: torn.
        let mut log = good.clone();
        let mut bad = next.clone();
        *bad.last_mut().unwrap() ^= 1;
        log.extend(&bad);
        assert_eq!(last_bad(&log), (at, true));
    }

    #[test]
    fn a_bad_record_followed_by_good_ones_is_corruption() {
        let mut log = set("t", "k1", "v1");
        let second = log.len() as u64;
        let mut bad = set("t", "k2", "v2");
        bad[HEADER + 3] ^= 0x40; // inside the body
        log.extend(&bad);
        log.extend(set("t", "k3", "v3"));
        assert_eq!(last_bad(&log), (second, false));
        // A flipped length that stays inside the file: checksum fails too.
        let mut log = set("t", "k1", "v1");
        log[0] -= 1;
        log.extend(set("t", "k2", "v2"));
        assert_eq!(last_bad(&log), (0, false));
    }

    #[test]
    fn a_correct_checksum_over_nonsense_is_corruption() {
        // op 9 with a valid frame around it.
        let body = [9u8, 0, 0, 0, 0, 0, 0, 0, 0];
        let len = (body.len() as u32).to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &body);
        let mut log = len.to_vec();
        log.extend(crc.to_le_bytes());
        log.extend(body);
        assert_eq!(last_bad(&log), (0, false));
    }

    #[test]
    fn absurd_lengths_allocate_nothing() {
        // Claims 4 GiB: past EOF, so a torn tail, and nothing is allocated.
        let log = [0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5];
        assert_eq!(last_bad(&log), (0, true));
    }

    fn options(dir: &Path, fsync: Fsync, compact_bytes: u64) -> WalOptions {
        WalOptions {
            path: dir.to_owned(),
            fsync,
            compact_bytes,
        }
    }

    fn open(dir: &Path, fsync: Fsync) -> (Arc<Wal>, Arc<dyn Storage>, Arc<MemTable>) {
        let mem = Arc::new(MemTable::new());
        let (wal, store) = Wal::open(
            options(dir, fsync, 1 << 30),
            Path::new("/"),
            mem.clone() as Arc<dyn Storage>,
        )
        .unwrap();
        (wal, store, mem)
    }

    fn open_err(dir: &Path) -> WalError {
        match Wal::open(
            options(dir, Fsync::No, 1 << 20),
            dir,
            Arc::new(MemTable::new()),
        ) {
            Ok(_) => panic!("the log opened"),
            Err(e) => e,
        }
    }

    fn dump(store: &dyn Storage) -> Vec<(String, Vec<Kvpair>)> {
        store
            .tables()
            .unwrap()
            .into_iter()
            .map(|t| {
                let pairs = store.get_all(&t).unwrap();
                (t, pairs)
            })
            .collect()
    }

    /// The log's files (the lock file aside).
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != LOCK_FILE)
            .collect();
        names.sort();
        names
    }

    /// Makes the segment's writes fail (EBADF) until the returned file is
    /// put back with `restore_segment`.
    fn break_segment(wal: &Wal) -> Arc<File> {
        let mut io = lock(&wal.shared.io);
        let read_only = Arc::new(File::open(&io.segment.path).unwrap());
        std::mem::replace(&mut io.segment.file, read_only)
    }

    fn restore_segment(wal: &Wal, file: Arc<File>) {
        lock(&wal.shared.io).segment.file = file;
    }

    #[test]
    fn after_a_failed_inline_write_nothing_later_is_written_or_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, store, _) = open(dir.path(), Fsync::Everysec);
        store.set("t", "ok", "0".into()).unwrap();
        assert!(wal.shared.write_inline());
        let good = wal.shared.progress.borrow().written;
        assert_eq!(good, 1);

        let file = break_segment(&wal);
        store.set("t", "lost", "1".into()).unwrap();
        assert!(wal.shared.write_inline(), "it tried, and failed");
        // The failure is known before anyone else may write: even once the
        // cause goes away, the log takes and acknowledges nothing more.
        restore_segment(&wal, file);
        assert!(store.set("t", "later", "2".into()).is_err());
        assert!(wal.shared.write_inline());
        let p = wal.shared.progress.borrow().clone();
        assert_eq!(p.written, good, "nothing after the failure looks written");
        assert!(matches!(p.stopped, Some(Stopped::Failed(_))), "{p:?}");
        drop((wal, store));
        // The file holds exactly what was acknowledged.
        let (_wal, store, _) = open(dir.path(), Fsync::Everysec);
        assert_eq!(
            dump(store.as_ref()),
            vec![("t".into(), vec![Kvpair::new("ok", "0")])]
        );
    }

    #[test]
    fn a_failed_log_undoes_every_write_not_yet_durable_newest_first() {
        for policy in [Fsync::Always, Fsync::Everysec, Fsync::No] {
            let dir = tempfile::tempdir().unwrap();
            let (wal, store, mem) = open(dir.path(), policy);
            store.set("t", "a", "0".into()).unwrap();
            store.set("t", "b", "0".into()).unwrap();
            wal.sync().unwrap();
            let durable = dump(mem.as_ref());

            let _file = break_segment(&wal);
            // Several writes to one key, deletes, a key created then
            // deleted; buffered together (the test holds the segment).
            let io = lock(&wal.shared.io);
            store.set("t", "a", "1".into()).unwrap();
            store.set("t", "a", "2".into()).unwrap();
            assert_eq!(store.del("t", "b").unwrap(), Some("0".into()));
            store.set("t", "new", "1".into()).unwrap();
            store.del("t", "new").unwrap();
            store.set("t", "new", "2".into()).unwrap();
            store.set("u", "other", "1".into()).unwrap();
            drop(io);
            assert!(wal.sync().is_err(), "{policy:?}");
            // Back to what was durable when the log failed.
            assert_eq!(dump(mem.as_ref()), durable, "{policy:?}");
            assert!(store.set("t", "a", "3".into()).is_err());
            assert_eq!(mem.get("t", "a").unwrap(), Some("0".into()));
        }
    }

    /// Stops each armed call at a point until the test opens it.
    #[derive(Default)]
    struct Gate {
        armed: AtomicBool,
        /// (a call is waiting, the gate is open)
        state: Mutex<(bool, bool)>,
        cv: Condvar,
    }

    impl Gate {
        fn pass(&self) {
            if !self.armed.load(Ordering::Acquire) {
                return;
            }
            let mut st = self.state.lock().unwrap();
            st.0 = true;
            self.cv.notify_all();
            while !st.1 {
                st = self.cv.wait(st).unwrap();
            }
        }

        fn wait_until_reached(&self) {
            let st = self.state.lock().unwrap();
            let (st, waited) = self
                .cv
                .wait_timeout_while(st, Duration::from_secs(10), |st| !st.0)
                .unwrap();
            assert!(!waited.timed_out() && st.0, "the gate was never reached");
        }

        fn open(&self) {
            self.state.lock().unwrap().1 = true;
            self.cv.notify_all();
        }
    }

    /// A memory store that stops at its armed gates: in `set` of the key
    /// `gated` after applying it, and in `get_iter` before and after
    /// reading.
    #[derive(Default)]
    struct Gated {
        mem: MemTable,
        set: Gate,
        before_read: Gate,
        after_read: Gate,
    }

    impl Storage for Gated {
        fn get(&self, t: &str, k: &str) -> Result<Option<Value>, StorageError> {
            self.mem.get(t, k)
        }
        fn set(&self, t: &str, k: &str, v: Value) -> Result<Option<Value>, StorageError> {
            let old = self.mem.set(t, k, v);
            if k == "gated" {
                self.set.pass();
            }
            old
        }
        fn contains(&self, t: &str, k: &str) -> Result<bool, StorageError> {
            self.mem.contains(t, k)
        }
        fn del(&self, t: &str, k: &str) -> Result<Option<Value>, StorageError> {
            self.mem.del(t, k)
        }
        fn get_iter(&self, t: &str) -> Result<StorageIter, StorageError> {
            self.before_read.pass();
            let iter = self.mem.get_iter(t);
            self.after_read.pass();
            iter
        }
        fn tables(&self) -> Result<Vec<String>, StorageError> {
            self.mem.tables()
        }
    }

    #[test]
    fn a_write_applied_as_the_log_fails_undoes_itself() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(Gated::default());
        let (wal, store) = Wal::open(
            options(dir.path(), Fsync::Everysec, 1 << 30),
            Path::new("/"),
            inner.clone() as Arc<dyn Storage>,
        )
        .unwrap();
        store.set("t", "gated", "old".into()).unwrap();
        wal.sync().unwrap();
        inner.set.armed.store(true, Ordering::Release);
        std::thread::scope(|s| {
            // Past the "stopped" check and applied; its record comes next.
            let racing = s.spawn(|| store.set("t", "gated", "new".into()));
            inner.set.wait_until_reached();
            wal.shared
                .fail(&mut lock(&wal.shared.io), "a test failure".into());
            inner.set.open();
            let refused = racing.join().unwrap();
            assert!(
                matches!(&refused, Err(StorageError::WriteAheadLog(why)) if why.contains("a test failure")),
                "{refused:?}"
            );
        });
        assert_eq!(inner.mem.get("t", "gated").unwrap(), Some("old".into()));
    }

    #[test]
    fn a_snapshot_never_keeps_a_write_the_failure_undid() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let inner = Arc::new(Gated::default());
        inner.before_read.armed.store(true, Ordering::Release);
        inner.after_read.armed.store(true, Ordering::Release);
        let (wal, store) = Wal::open(
            options(d, Fsync::No, 1),
            Path::new("/"),
            inner.clone() as Arc<dyn Storage>,
        )
        .unwrap();
        // The first write fills the segment past `compact_bytes`: the
        // writer rotates, and the compactor stops before reading storage.
        store.set("t", "a", "1".into()).unwrap();
        wal.sync().unwrap();
        inner.before_read.wait_until_reached();
        // A write whose record cannot be written until the snapshot has
        // read it (the test holds the segment), and then fails.
        let _file = break_segment(&wal);
        let io = lock(&wal.shared.io);
        store.set("t", "late", "x".into()).unwrap();
        inner.before_read.open();
        inner.after_read.wait_until_reached();
        drop(io);
        inner.after_read.open();
        assert!(wal.sync().is_err());
        assert_eq!(inner.mem.get("t", "late").unwrap(), None);
        wal.close();
        drop((wal, store));

        let (_wal, store, _) = open(d, Fsync::No);
        assert_eq!(
            dump(store.as_ref()),
            vec![("t".into(), vec![Kvpair::new("a", "1")])]
        );
    }

    #[test]
    fn a_failed_last_write_on_close_is_reported_to_whoever_waits() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, store, _) = open(dir.path(), Fsync::Everysec);
        let _file = break_segment(&wal);
        store.set("t", "a", "1".into()).unwrap();
        wal.close();
        let p = wal.shared.progress.borrow().clone();
        assert!(matches!(p.stopped, Some(Stopped::Failed(_))), "{p:?}");
        // `sync_all` (what the hook's shutdown calls) returns, with the error.
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = Arc::clone(&wal.shared);
        std::thread::spawn(move || tx.send(shared.sync_all().is_err()).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_log_directory_in_use_is_refused_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, store, _) = open(dir.path(), Fsync::No);
        store.set("t", "a", "1".into()).unwrap();
        let e = open_err(dir.path());
        assert!(matches!(e, WalError::Locked { .. }), "{e}");
        assert!(
            e.to_string().contains("in use by another hookv server"),
            "{e}"
        );
        // The refused open touched nothing: the first log still works.
        store.set("t", "b", "2".into()).unwrap();
        wal.close();
        let (_wal, store, _) = open(dir.path(), Fsync::No);
        assert_eq!(store.get("t", "b").unwrap(), Some("2".into()));
    }

    #[test]
    fn writes_survive_reopen_and_deletes_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        for policy in [Fsync::Always, Fsync::Everysec, Fsync::No] {
            let (wal, store, _) = open(dir.path(), policy);
            store.set("t", "a", "1".into()).unwrap();
            store.set("t", "b", "2".into()).unwrap();
            store.set("t", "a", "3".into()).unwrap();
            assert_eq!(store.del("t", "b").unwrap(), Some("2".into()));
            assert_eq!(store.del("t", "nothing").unwrap(), None);
            wal.close();
            assert!(
                store.set("t", "c", "x".into()).is_err(),
                "closed log refuses"
            );
            drop((wal, store));
            let (_wal, store, _) = open(dir.path(), policy);
            assert_eq!(
                dump(store.as_ref()),
                vec![("t".into(), vec![Kvpair::new("a", "3")])]
            );
        }
        assert_eq!(names(dir.path()), vec!["wal-000001.log"]);
    }

    #[test]
    fn leftovers_of_an_interrupted_compaction_are_handled() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Segment 1: the history before compaction; segment 2 after rotation.
        let mut seg1 = set("t", "a", "1");
        seg1.extend(set("t", "gone", "x"));
        seg1.extend(del("t", "gone"));
        seg1.extend(set("t", "b", "1"));
        fs::write(d.join(segment_name(1)), &seg1).unwrap();
        let mut seg2 = set("t", "a", "2");
        seg2.extend(del("t", "b"));
        fs::write(d.join(segment_name(2)), &seg2).unwrap();
        // The snapshot read after rotation saw a=2 already, and b before its delete.
        let mut snap = set("t", "a", "2");
        snap.extend(set("t", "b", "1"));
        // Case 1: crashed while writing the snapshot: a .tmp with half of it.
        fs::write(d.join(snapshot_tmp_name(2)), &snap[..snap.len() - 3]).unwrap();
        let want = vec![("t".to_string(), vec![Kvpair::new("a", "2")])];
        let (wal, store, _) = open(d, Fsync::Always);
        assert_eq!(dump(store.as_ref()), want);
        assert_eq!(names(d), vec!["wal-000001.log", "wal-000002.log"]);
        drop((wal, store));
        // Case 2: snapshot renamed, old segment not yet deleted. Make the old
        // segment unreadable to prove replay does not need it.
        fs::write(d.join(snapshot_name(2)), &snap).unwrap();
        fs::write(d.join(segment_name(1)), b"garbage that would not replay").unwrap();
        let (wal, store, _) = open(d, Fsync::Always);
        assert_eq!(dump(store.as_ref()), want);
        assert_eq!(names(d), vec!["snapshot-000002.log", "wal-000002.log"]);
        drop((wal, store));
        // And it replays the same from what is left.
        let (_wal, store, _) = open(d, Fsync::Always);
        assert_eq!(dump(store.as_ref()), want);
    }

    #[test]
    fn missing_segments_stop_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join(segment_name(1)), set("t", "a", "1")).unwrap();
        fs::write(d.join(segment_name(3)), set("t", "a", "3")).unwrap();
        let err = open_err(d);
        assert!(
            err.to_string().contains("wal-000002.log is missing"),
            "{err}"
        );
        fs::remove_file(d.join(segment_name(1))).unwrap();
        let err = open_err(d);
        assert!(
            err.to_string().contains("wal-000001.log is missing"),
            "{err}"
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_corrupt_middle_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut seg = set("t", "a", "1");
        seg.extend(set("t", "b", "2"));
        let good = seg.len() as u64;
        let path = d.join(segment_name(1));
        // A torn tail, then zeros a crashed file system may leave: both cut.
        for tail in [&set("t", "c", "3")[..10], &[0u8; 100][..]] {
            let mut torn = seg.clone();
            torn.extend_from_slice(tail);
            fs::write(&path, &torn).unwrap();
            let (wal, store, _) = open(d, Fsync::Always);
            assert_eq!(store.get_all("t").unwrap().len(), 2);
            assert_eq!(fs::metadata(&path).unwrap().len(), good);
            drop((wal, store));
        }
        // A batch of records torn anywhere: the whole records in it
        // replay, the rest is cut. One of them is larger than the window
        // the torn-tail check reads, so it reads across windows.
        let big = "v".repeat(SCAN_WINDOW + 4096);
        let mut batch = set("t", "c", "3");
        batch.extend(set("t", "big", &big));
        batch.extend(del("t", "a"));
        let ends = [
            set("t", "c", "3").len(),
            batch.len() - del("t", "a").len(),
            batch.len(),
        ];
        let step = |cut: usize| {
            if cut < 64 || batch.len() - cut < 64 {
                1
            } else {
                65_537
            }
        };
        let mut cut = 1;
        while cut < batch.len() {
            let mut torn = seg.clone();
            torn.extend_from_slice(&batch[..cut]);
            fs::write(&path, &torn).unwrap();
            let store = MemTable::new();
            recover(d, &store).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            assert_eq!(
                fs::metadata(&path).unwrap().len(),
                good + whole.checked_sub(1).map_or(0, |i| ends[i] as u64),
                "cut at {cut}"
            );
            assert_eq!(
                store.get("t", "big").unwrap().is_some(),
                whole >= 2,
                "cut at {cut}"
            );
            cut += step(cut);
        }
        // Corruption in the first record with a good one after it.
        let mut bad = seg.clone();
        bad[HEADER + 2] ^= 1;
        fs::write(&path, &bad).unwrap();
        let err = open_err(d);
        let msg = err.to_string();
        assert!(
            msg.contains("wal-000001.log: corrupt record at byte offset 0"),
            "{msg}"
        );
        assert_eq!(fs::read(&path).unwrap(), bad, "a refused log is left alone");
    }

    /// Writes `bytes` as the only segment of `d`, expects the log to refuse
    /// to start naming the record at `offset`, and the file untouched.
    fn refused_at(d: &Path, bytes: &[u8], offset: usize) -> String {
        let path = d.join(segment_name(1));
        fs::write(&path, bytes).unwrap();
        let msg = open_err(d).to_string();
        assert!(
            msg.contains(&format!(
                "wal-000001.log: corrupt record at byte offset {offset}:"
            )),
            "{msg}"
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "a refused log is left alone"
        );
        msg
    }

    #[test]
    fn a_damaged_length_is_corruption_even_when_it_runs_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut seg = Vec::new();
        let mut starts = Vec::new();
        for i in 0..50 {
            starts.push(seg.len());
            seg.extend(set("t", &format!("k{i}"), &format!("v{i}")));
        }
        // Any record but the last: whole records follow it.
        for (record, byte, flip) in [(25, 3, 0x80u8), (25, 3, 0x01), (0, 2, 0x10), (48, 3, 0x40)] {
            let mut bad = seg.clone();
            bad[starts[record] + byte] ^= flip;
            let msg = refused_at(d, &bad, starts[record]);
            assert!(msg.contains("whole record starts at byte offset"), "{msg}");
        }
        // The last record: it is whole, only its length is wrong.
        let last = starts[49];
        for (byte, flip) in [(3, 0x80u8), (3, 0x01), (0, 0x40)] {
            let mut bad = seg.clone();
            bad[last + byte] ^= flip;
            let msg = refused_at(d, &bad, last);
            assert!(msg.contains("length field is damaged"), "{msg}");
        }
        // Found after a record larger than a scan window, and itself larger.
        let big = "v".repeat(SCAN_WINDOW * 2);
        let mut log = set("t", "a", "1");
        log.extend(set("t", "big", &big));
        log.extend(set("t", "big2", &big));
        log[3] ^= 0x01;
        let msg = refused_at(d, &log, 0);
        let second = set("t", "a", "1").len();
        assert!(
            msg.contains(&format!("whole record starts at byte offset {second}")),
            "{msg}"
        );
    }

    #[test]
    fn only_the_last_segment_may_be_torn_and_never_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut torn = set("t", "a", "1");
        torn.extend_from_slice(&set("t", "b", "2")[..9]);
        fs::write(d.join(segment_name(1)), &torn).unwrap();
        fs::write(d.join(segment_name(2)), set("t", "c", "3")).unwrap();
        let msg = open_err(d).to_string();
        assert!(
            msg.contains("wal-000001.log: corrupt record at byte offset"),
            "{msg}"
        );
        // A snapshot is complete before it gets its name: a bad tail is corruption.
        fs::remove_file(d.join(segment_name(1))).unwrap();
        fs::write(d.join(snapshot_name(2)), &torn).unwrap();
        let msg = open_err(d).to_string();
        assert!(
            msg.contains("snapshot-000002.log: corrupt record at byte offset"),
            "{msg}"
        );
    }

    #[test]
    fn concurrent_writes_during_compaction_replay_to_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mem = Arc::new(MemTable::new());
        let (wal, store) = Wal::open(
            options(d, Fsync::No, 2048),
            d,
            mem.clone() as Arc<dyn Storage>,
        )
        .unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..3000u32 {
                        let key = format!("k{}", i % 37);
                        if i % 11 == t {
                            store.del("t", &key).unwrap();
                        } else {
                            store.set("t", &key, format!("{t}:{i}").into()).unwrap();
                        }
                        if i % 500 == 0 {
                            std::thread::yield_now();
                        }
                    }
                });
            }
        });
        // Compaction runs in the background: keep writing until one finished.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut i = 0u64;
        while list(d).unwrap().snapshots.is_empty() {
            assert!(Instant::now() < deadline, "no compaction: {:?}", names(d));
            store.set("t", "extra", Value::from(i as i64)).unwrap();
            i += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        wal.sync().unwrap();
        let before = dump(mem.as_ref());
        wal.close();
        drop((wal, store));
        let (_wal, store, _) = open(d, Fsync::No);
        assert_eq!(dump(store.as_ref()), before);
    }

    #[test]
    fn without_a_barrier_records_still_reach_the_file_soon() {
        let dir = tempfile::tempdir().unwrap();
        for policy in [Fsync::Everysec, Fsync::No, Fsync::Always] {
            let (wal, store, _) = open(dir.path(), policy);
            let path = dir.path().join(segment_name(1));
            let before = fs::metadata(&path).unwrap().len();
            store.set("t", "k", "v".into()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(2);
            while fs::metadata(&path).unwrap().len() == before {
                assert!(Instant::now() < deadline, "{policy:?}: never written");
                std::thread::sleep(Duration::from_millis(2));
            }
            drop((wal, store));
        }
    }

    /// A store that records the order it applied writes in, then dawdles
    /// a little (a different time each write), widening the window between
    /// applying a write and logging it.
    #[derive(Default)]
    struct Dawdling {
        mem: MemTable,
        applied: Mutex<Vec<(String, Option<Value>)>>,
    }

    impl Dawdling {
        fn apply(&self, k: &str, v: Option<Value>) -> Result<Option<Value>, StorageError> {
            let old = {
                let mut applied = self.applied.lock().unwrap();
                let old = match v.clone() {
                    Some(v) => self.mem.set("t", k, v),
                    None => self.mem.del("t", k),
                };
                // A delete of nothing is not logged, so not part of the order.
                if v.is_some() || matches!(old, Ok(Some(_))) {
                    applied.push((k.to_owned(), v));
                }
                old
            };
            let spin = Instant::now() + Duration::from_micros(k.len() as u64 * 3 % 17);
            while Instant::now() < spin {
                std::hint::spin_loop();
            }
            old
        }
    }

    impl Storage for Dawdling {
        fn get(&self, t: &str, k: &str) -> Result<Option<Value>, StorageError> {
            self.mem.get(t, k)
        }
        fn set(&self, _: &str, k: &str, v: Value) -> Result<Option<Value>, StorageError> {
            self.apply(k, Some(v))
        }
        fn contains(&self, t: &str, k: &str) -> Result<bool, StorageError> {
            self.mem.contains(t, k)
        }
        fn del(&self, _: &str, k: &str) -> Result<Option<Value>, StorageError> {
            self.apply(k, None)
        }
        fn get_iter(&self, t: &str) -> Result<StorageIter, StorageError> {
            self.mem.get_iter(t)
        }
        fn tables(&self) -> Result<Vec<String>, StorageError> {
            self.mem.tables()
        }
    }

    #[test]
    fn the_log_orders_each_key_as_storage_applied_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let inner = Arc::new(Dawdling::default());
        let (wal, store) = Wal::open(
            options(d, Fsync::No, 1 << 30),
            d,
            inner.clone() as Arc<dyn Storage>,
        )
        .unwrap();
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for t in 0..4 {
                let (store, start) = (&store, &start);
                s.spawn(move || {
                    start.wait();
                    for i in 0..3000 {
                        // Keys of different lengths dawdle differently.
                        let key = ["a", "bbbbb", "ccccccccc"][(i + t) % 3];
                        if i % 7 == 3 {
                            store.del("t", key).unwrap();
                        } else {
                            store.set("t", key, format!("{t}:{i}").into()).unwrap();
                        }
                    }
                });
            }
        });
        wal.sync().unwrap();
        drop((wal, store));
        // Per key, the log holds the writes in the order they were applied.
        let per_key = |ops: Vec<(String, Option<Value>)>| {
            let mut map: BTreeMap<String, Vec<Option<Value>>> = BTreeMap::new();
            for (k, v) in ops {
                map.entry(k).or_default().push(v);
            }
            map
        };
        let bytes = fs::read(d.join(segment_name(1))).unwrap();
        let logged = read_all(&bytes)
            .into_iter()
            .filter_map(|n| match n {
                Next::Record {
                    record: Record::Set { key, value, .. },
                    ..
                } => Some((key, Some(value))),
                Next::Record {
                    record: Record::Del { key, .. },
                    ..
                } => Some((key, None)),
                _ => None,
            })
            .collect();
        let applied = std::mem::take(&mut *inner.applied.lock().unwrap());
        let (logged, applied) = (per_key(logged), per_key(applied));
        assert_eq!(logged.len(), 3);
        for (key, applied) in applied {
            let logged = &logged[&key];
            assert_eq!(logged.len(), applied.len(), "{key}");
            if let Some(i) = (0..applied.len()).find(|&i| logged[i] != applied[i]) {
                panic!(
                    "key {key}: write {i} applied as {:?} but logged as {:?}",
                    applied[i], logged[i]
                );
            }
        }
    }

    #[test]
    fn options_are_checked() {
        let o: WalOptions = toml::from_str("").unwrap();
        assert_eq!(o, WalOptions::default());
        let o: WalOptions =
            toml::from_str("path = \"x\"\nfsync = \"always\"\ncompact_bytes = 4096").unwrap();
        assert_eq!((o.fsync, o.compact_bytes), (Fsync::Always, 4096));
        let e = toml::from_str::<WalOptions>("fsync = \"sometimes\"").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
        let e = toml::from_str::<WalOptions>("fsynk = \"no\"").unwrap_err();
        assert!(e.to_string().contains("fsynk"), "{e}");
        let o: WalOptions = toml::from_str("compact_bytes = 0").unwrap();
        assert!(o.check().unwrap_err().contains("compact_bytes"));
    }
}
