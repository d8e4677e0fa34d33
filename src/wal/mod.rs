//! The write-ahead log: a storage layer that makes the memory backend
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
//! The log wraps a [`Storage`] the way a tower `Layer` wraps a service:
//! [`Wal::open`] takes the configured storage and returns a [`WalStore`],
//! itself a [`Storage`], which logs every write it applies. The service
//! runs on that store, awaits the log's [`WriteBarrier`] before answering
//! writes, and the hook chain holds the thin `[[hooks]] kind = "wal"` entry
//! ([`WalHook`](crate::hooks::wal::WalHook)), which refuses writes once the
//! log has stopped. `crate::bootstrap` wires the three together.
//!
//! ```text
//! service ─ WalStore ─┬─ inner Storage (memory, sled)          store.rs
//!                     └─ record ─ commit buffer ─ segment file  record.rs, commit.rs, writer.rs
//! barrier: until the records are written / fsync'd              barrier.rs
//! ```
//!
//! The files of this module follow the sections below: `options.rs` (the
//! options), `record.rs` and `dir.rs` (Files), `recover.rs` and `scan.rs`
//! (Recovery), `commit.rs`, `stripes.rs`, `store.rs`, `writer.rs`,
//! `segment.rs` and `barrier.rs` (Pieces), `compact.rs` (Compaction),
//! `undo.rs` and `stop.rs` (Failure), `shared.rs` (what the threads share)
//! and `error.rs`.
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
//! - The hook ([`WalHook`](crate::hooks::wal::WalHook), named `wal`)
//!   refuses writes with 500 once the log has failed (503 once it is
//!   closed); its `shutdown` flushes and fsyncs everything. The log itself
//!   closes on [`Wal::close`] (the server calls it once it has stopped), or
//!   when the last `Arc<Wal>` goes.
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

mod barrier;
mod commit;
mod compact;
mod dir;
mod error;
mod options;
mod record;
mod recover;
mod scan;
mod segment;
mod shared;
mod stop;
mod store;
mod stripes;
mod undo;
mod writer;

#[cfg(test)]
mod testing;

use std::fmt;
use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tracing::{error, info};

use crate::hooks::WriteBarrier;
use crate::storage::Storage;
use barrier::WalBarrier;
use commit::{lock, Commit};
use dir::{lock_dir, segment_name, snapshot_name, sync_dir};
use error::io_error;
use recover::recover;
use segment::{Io, Segment};
use shared::Shared;
use stripes::Stripes;
use writer::{spawn_syncer, Writer};

pub use dir::LOCK_FILE;
pub use error::WalError;
pub use options::{Fsync, OptionsError, WalOptions};
pub use stop::Stopped;
pub use store::WalStore;
pub use stripes::STRIPES;

/// The write-ahead log: its writer thread, LSNs and compaction. Cheap to
/// share as `Arc<Wal>`; [`Wal::close`] closes it, and so does dropping the
/// last one.
pub struct Wal {
    shared: Arc<Shared>,
    /// The options it was opened with, as given: a reload compares a wal
    /// entry with them.
    options: WalOptions,
    /// Taken by `close`, which joins them.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The directory's lock, released by `close` (nothing is written after).
    dir_lock: Mutex<Option<File>>,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("fsync", &self.shared.commit.policy)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating) the log directory, replays it into `store`, and
    /// starts the writer thread. `options.path` is resolved against
    /// `dir_base` (the config file's directory) when relative.
    ///
    /// Returns the log and the store the service must use: it logs every
    /// write it applies. Give the service [`Wal::barrier`] too, and the
    /// hook chain the log's hook (`hooks::wal::WalHook`).
    pub fn open(
        options: WalOptions,
        dir_base: &Path,
        store: Arc<dyn Storage>,
    ) -> Result<(Arc<Wal>, WalStore), WalError> {
        options.check()?;
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
        let shared = Arc::new(Shared {
            dir,
            store,
            stripes: Stripes::new(),
            commit: Commit::new(options.fsync),
            fsyncs: AtomicU64::new(0),
            current: Mutex::new(Arc::clone(&segment.file)),
            io: Mutex::new(Io::new(segment, 0)),
            tick: (Mutex::new(()), Condvar::new()),
        });
        let snapshot_bytes = recovered.snapshot.map_or(0, |(_, bytes)| bytes);
        let writer = Writer::new(Arc::clone(&shared), options.compact_bytes, snapshot_bytes);
        lock(&shared.io).compact_at = writer.threshold();
        let writer = writer.spawn()?;
        // From here on, an early return drops `wal`, which stops the writer.
        let wal = Arc::new(Wal {
            shared: Arc::clone(&shared),
            options,
            threads: Mutex::new(vec![writer]),
            dir_lock: Mutex::new(dir_lock),
        });
        if wal.options.fsync == Fsync::Everysec {
            let syncer = spawn_syncer(Arc::clone(&shared))?;
            lock(&wal.threads).push(syncer);
        }
        Ok((wal, WalStore::new(shared)))
    }

    /// The barrier the service awaits before answering writes.
    pub fn barrier(self: &Arc<Self>) -> Arc<dyn WriteBarrier> {
        Arc::new(WalBarrier::new(Arc::clone(&self.shared)))
    }

    /// Whether, and why, the log stopped taking writes.
    pub fn stopped(&self) -> Option<Stopped> {
        self.shared.commit.stop.get()
    }

    /// The options the log was opened with, as given to [`Wal::open`].
    pub fn options(&self) -> &WalOptions {
        &self.options
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
        self.shared.commit.sync_all()
    }

    /// Writes and fsyncs everything, then stops the threads; later writes
    /// are refused. Blocks; idempotent. Called on drop.
    pub fn close(&self) {
        let threads = std::mem::take(&mut *lock(&self.threads));
        if threads.is_empty() {
            return;
        }
        self.shared.commit.begin_close();
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
        info!(
            dir = %self.shared.dir.display(),
            records = self.shared.commit.progress().written,
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
