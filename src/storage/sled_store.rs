//! [`SledDb`]: the disk backend.
//!
//! On-disk format (stable: existing databases depend on it). All pairs live in
//! sled's default tree. A record's key is
//!
//! ```text
//! u32 big-endian length of the table name | table name (UTF-8) | key (UTF-8)
//! ```
//!
//! and its value is the protobuf encoding of `abi.Value`. The length prefix
//! makes the encoding injective: table `a` with key `b:c` and table `a:b` with
//! key `c` are different records, and a prefix scan of one table can never
//! reach another, whatever bytes the names contain.
//!
//! A database written by the course's `SledDb` (`"{table}:{key}"` keys) is
//! refused at open with a line that says so; `hookv-cli migrate-course-sled`
//! moves it into this layout (see `course_sled.rs`).
//!
//! # Durability (`[storage] sync`)
//!
//! sled applies a write in memory and appends it to an I/O buffer of its
//! own, in the server's memory; a *flush* writes the buffers to its log file
//! and syncs them (`sync_file_range`). Until then a write exists only in the
//! process, so even a `kill -9` loses it (unlike a `write(2)`, which the
//! kernel keeps whatever happens to the process). [`SyncPolicy`] chooses
//! when flushes happen:
//!
//! | `sync`     | an answered write is flushed…                    | a crash (even `kill -9`) loses   |
//! |------------|---------------------------------------------------|----------------------------------|
//! | `always`   | before it is answered ([`SledBarrier`])           | nothing answered                 |
//! | `everysec` | within a second (sled's `flush_every_ms = 1000`)  | up to a second of answered writes |
//! | `no`       | when sled's own flusher runs (500 ms in sled 0.34) | the answered writes since then  |
//!
//! (A crash of the machine is covered as far as sled's flush promises: it
//! syncs what it writes.)
//!
//! `always` is the default: it is what a user of a disk store expects. Its
//! cost is one flush per *group* of writes: the connection awaits the
//! [`SledBarrier`] once per batch of pipelined requests that wrote, and
//! every connection waiting while a flush runs is covered by the next one,
//! whoever runs it (group commit; see [`SledBarrier`]).

use std::future::Future;
use std::ops::Bound;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hookv_plugin::pb::{Kvpair, Value};
use prost::Message;
use sled::IVec;

use super::{course_sled, Storage, StorageError, StorageIter};
use crate::config::SyncPolicy;
use crate::hooks::{BarrierError, WriteBarrier};

/// A sled database holding every table.
#[derive(Debug, Clone)]
pub struct SledDb {
    /// The database, or why it could not be opened ([`SledDb::new`] only:
    /// every call then answers that error).
    db: Result<sled::Db, NotOpen>,
    sync: SyncPolicy,
}

/// Why a [`SledDb::new`] has no database: the path and the open error's words.
#[derive(Debug, Clone)]
struct NotOpen {
    path: String,
    reason: String,
}

impl SledDb {
    /// The course's constructor: opens (or creates) the database in `path`,
    /// as [`SledDb::open`] does, but cannot fail. If the open fails, the
    /// `SledDb` it returns holds no database: every call answers
    /// [`StorageError::NotOpen`] with the open's error (a 500 to a client),
    /// and [`SledDb::open_error`] says so at once. Nothing panics on a path
    /// a user gave. [`SledDb::open`] is the constructor to prefer: it says
    /// why at the one place that can act on it.
    pub fn new(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        Self::open(path).unwrap_or_else(|e| Self {
            db: Err(NotOpen {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
            sync: SyncPolicy::default(),
        })
    }

    /// Why this `SledDb` (made by [`SledDb::new`]) has no database, if so.
    pub fn open_error(&self) -> Option<StorageError> {
        self.db().err()
    }

    /// The database, or the error every call answers when it could not be opened.
    #[inline]
    fn db(&self) -> Result<&sled::Db, StorageError> {
        match &self.db {
            Ok(db) => Ok(db),
            Err(NotOpen { path, reason }) => Err(StorageError::NotOpen {
                path: path.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// Opens (or creates) the database in directory `path`, with the default
    /// policy (`always`: answers to writes wait for [`SledDb::barrier`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with(path, SyncPolicy::default())
    }

    /// Opens (or creates) the database in directory `path`, flushing as
    /// `sync` says (see the module docs).
    ///
    /// A database holding records outside hookv's layout (one the course's
    /// `SledDb` wrote, say) is refused with [`StorageError::ForeignLayout`],
    /// which says what they are and what to run: it is never served as
    /// empty or corrupt (see `course_sled.rs`).
    pub fn open_with(path: impl AsRef<Path>, sync: SyncPolicy) -> Result<Self, StorageError> {
        let path = path.as_ref();
        let config = sled::Config::new().path(path);
        let config = match sync {
            SyncPolicy::Everysec => config.flush_every_ms(Some(1000)),
            // sled's own background flush, as it comes.
            SyncPolicy::Always | SyncPolicy::No => config,
        };
        let db = config.open()?;
        course_sled::check_layout(&db, path)?;
        Ok(Self { db: Ok(db), sync })
    }

    /// The barrier the service must await before answering writes, when the
    /// policy needs one (`always`); `None` otherwise. Call it once and share
    /// the result: waiters share flushes within one barrier.
    /// (None either for a [`SledDb::new`] that could not open: its writes
    /// all fail, so there is nothing to flush.)
    pub fn barrier(&self) -> Option<Arc<SledBarrier>> {
        let db = self.db.as_ref().ok()?;
        (self.sync == SyncPolicy::Always).then(|| {
            Arc::new(SledBarrier {
                db: db.clone(),
                issued: AtomicU64::new(0),
                flushed: AtomicU64::new(0),
                flushes: AtomicU64::new(0),
                leader: tokio::sync::Mutex::new(None),
            })
        })
    }
}

/// `sync = "always"`: completes once a flush that started after the call
/// has finished, so every write executed before the call is on disk.
///
/// Group commit: each [`wait`](WriteBarrier::wait) takes a ticket (after its
/// writes). Waiters queue on one async mutex; the holder flushes (on a
/// blocking thread) on behalf of every ticket issued when it starts, then
/// publishes that ticket as flushed. A waiter that gets the mutex and finds
/// its ticket flushed returns at once. So while one flush runs, every
/// connection arriving meanwhile waits for the *next* flush, and one flush
/// answers them all: 50 connections writing cost a couple of flushes, not 50
/// in a row.
///
/// A failed flush is never retried (after a failed sync the kernel may have
/// dropped the data): this wait and every later one fail, and their
/// connections close without answering the writes.
pub struct SledBarrier {
    db: sled::Db,
    /// Tickets handed out, one per `wait`.
    issued: AtomicU64,
    /// Every ticket up to this one is covered by a finished flush.
    flushed: AtomicU64,
    /// Flushes run (for tests and metrics).
    flushes: AtomicU64,
    /// Held by the waiter running a flush (an async mutex: it is held
    /// across the flush); holds the error once a flush has failed.
    leader: tokio::sync::Mutex<Option<String>>,
}

impl SledBarrier {
    /// Flushes run by this barrier so far: with many concurrent writers,
    /// far fewer than their waits.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for SledBarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledBarrier")
            .field("issued", &self.issued)
            .field("flushed", &self.flushed)
            .finish_non_exhaustive()
    }
}

impl WriteBarrier for SledBarrier {
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), BarrierError>> + Send + '_>> {
        // Taken now, after the caller's writes: any flush that starts after
        // it covers them.
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            let mut failed = self.leader.lock().await;
            if self.flushed.load(Ordering::Acquire) >= ticket {
                return Ok(());
            }
            if let Some(reason) = failed.as_deref() {
                return Err(BarrierError(format!("sled cannot flush: {reason}")));
            }
            // Every ticket issued so far; their writes precede this flush.
            let target = self.issued.load(Ordering::SeqCst);
            let db = self.db.clone();
            let outcome = match tokio::task::spawn_blocking(move || db.flush()).await {
                Ok(Ok(_bytes)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("the flush task failed: {e}")),
            };
            self.flushes.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Ok(()) => {
                    self.flushed.store(target, Ordering::Release);
                    Ok(())
                }
                Err(reason) => {
                    tracing::error!(error = %reason, "sled flush failed; writes are no longer acknowledged");
                    let err = BarrierError(format!("sled cannot flush: {reason}"));
                    *failed = Some(reason);
                    Err(err)
                }
            }
        })
    }
}

/// The prefix shared by every record of `table`.
fn table_prefix(table: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(4 + table.len());
    // Names longer than u32::MAX bytes cannot arrive: frames are far smaller.
    let len = u32::try_from(table.len()).unwrap_or(u32::MAX);
    prefix.extend_from_slice(&len.to_be_bytes());
    prefix.extend_from_slice(table.as_bytes());
    prefix
}

pub(super) fn record_key(table: &str, key: &str) -> Vec<u8> {
    let mut k = table_prefix(table);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Splits a record key into table and key, or says why it cannot.
pub(super) fn split_record_key(raw: &[u8]) -> Result<(&str, &str), StorageError> {
    let corrupt = |reason: &str| StorageError::Corrupt {
        table: String::from_utf8_lossy(raw).into_owned(),
        key: String::new(),
        reason: format!("bad record key: {reason}"),
    };
    let (len, rest) = raw
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("shorter than its length prefix"))?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(corrupt("table name runs past the end"));
    }
    let (table, key) = rest.split_at(len);
    let table = std::str::from_utf8(table).map_err(|_| corrupt("table name is not UTF-8"))?;
    let key = std::str::from_utf8(key).map_err(|_| corrupt("key is not UTF-8"))?;
    Ok((table, key))
}

fn decode_value(table: &str, key: &str, raw: &[u8]) -> Result<Value, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        table: table.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let value = Value::decode(raw).map_err(|e| corrupt(e.to_string()))?;
    if value.is_empty() {
        return Err(corrupt("no value in record".to_owned()));
    }
    Ok(value)
}

/// A record of `table` (its key starts with the table's prefix) as a pair.
fn decode_pair(table: &str, (raw_key, raw_value): (IVec, IVec)) -> Result<Kvpair, StorageError> {
    let raw = &raw_key[4 + table.len()..];
    let key = std::str::from_utf8(raw).map_err(|_| StorageError::Corrupt {
        table: table.to_owned(),
        key: String::from_utf8_lossy(raw).into_owned(),
        reason: "key is not UTF-8".to_owned(),
    })?;
    let value = decode_value(table, key, &raw_value)?;
    Ok(Kvpair::new(key, value))
}

fn decode_opt(table: &str, key: &str, raw: Option<IVec>) -> Result<Option<Value>, StorageError> {
    raw.map(|raw| decode_value(table, key, &raw)).transpose()
}

/// The smallest byte string greater than every string starting with `prefix`,
/// or `None` when there is none (all bytes 0xFF).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

impl Storage for SledDb {
    fn get(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        decode_opt(table, key, self.db()?.get(record_key(table, key))?)
    }

    fn put(&self, table: &str, key: &str, value: Value) -> Result<Option<Value>, StorageError> {
        let old = self
            .db()?
            .insert(record_key(table, key), value.encode_to_vec())?;
        decode_opt(table, key, old)
    }

    fn contains(&self, table: &str, key: &str) -> Result<bool, StorageError> {
        Ok(self.db()?.contains_key(record_key(table, key))?)
    }

    fn del(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        decode_opt(table, key, self.db()?.remove(record_key(table, key))?)
    }

    fn get_iter(&self, table: &str) -> Result<StorageIter, StorageError> {
        let table = table.to_owned();
        let iter = self
            .db()?
            .scan_prefix(table_prefix(&table))
            .map(move |item| decode_pair(&table, item?));
        Ok(StorageIter::new(iter))
    }

    /// A range scan from the first record after `after`'s, so a page costs
    /// what it returns, wherever it starts.
    fn scan(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Kvpair>, StorageError> {
        let prefix = table_prefix(table);
        let end = match prefix_successor(&prefix) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let start = match after {
            Some(after) => Bound::Excluded(record_key(table, after)),
            None => Bound::Included(prefix),
        };
        self.db()?
            .range((start, end))
            .take(limit)
            .map(|item| decode_pair(table, item?))
            .collect()
    }

    /// One seek: the first record with the table's prefix, if any.
    fn table_exists(&self, table: &str) -> Result<Option<bool>, StorageError> {
        match self.db()?.scan_prefix(table_prefix(table)).keys().next() {
            Some(key) => Ok(Some(key.map(|_| true)?)),
            None => Ok(Some(false)),
        }
    }

    fn tables(&self) -> Result<Vec<String>, StorageError> {
        // Jump from table to table instead of reading every record.
        let mut names = Vec::new();
        let mut cursor: Vec<u8> = Vec::new();
        let db = self.db()?;
        while let Some(item) = db.range(cursor.as_slice()..).next() {
            let (raw_key, _) = item?;
            let (table, _) = split_record_key(&raw_key)?;
            names.push(table.to_owned());
            match prefix_successor(&table_prefix(table)) {
                Some(next) => cursor = next,
                None => break,
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db()?.flush()?;
        Ok(())
    }
}

impl SledDb {
    /// Writes raw bytes as the stored value of `table`/`key`, bypassing
    /// encoding. Only for tests that need a corrupt record.
    #[doc(hidden)]
    pub fn insert_raw(&self, table: &str, key: &str, raw: &[u8]) -> Result<(), StorageError> {
        self.db()?.insert(record_key(table, key), raw)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_values_are_errors_not_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let db = SledDb::open(dir.path()).unwrap();
        db.insert_raw("t", "bad", b"\xff\xff\xff").unwrap();
        db.insert_raw("t", "empty", b"").unwrap();
        for key in ["bad", "empty"] {
            let err = db.get("t", key).unwrap_err();
            assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains(key), "{err}");
        }
        assert!(db.get_all("t").is_err());
        assert!(db.del("t", "bad").is_err());
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = SledDb::open(dir.path()).unwrap();
            db.put("t", "k", 7i64.into()).unwrap();
            db.flush().unwrap();
        }
        let db = SledDb::open(dir.path()).unwrap();
        assert_eq!(db.get("t", "k").unwrap(), Some(7i64.into()));
    }

    #[test]
    fn new_that_cannot_open_answers_why_on_every_call() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the database directory should be.
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let db = SledDb::new(&file);
        let why = db.open_error().expect("the open failed");
        assert!(matches!(why, StorageError::NotOpen { .. }), "{why:?}");
        assert!(why.to_string().contains("not-a-dir"), "{why}");
        // Every call answers it (StorageError is PartialEq, as the course's KvError).
        assert_eq!(db.get("t", "k"), Err(db.open_error().unwrap()));
        assert_eq!(db.set("t", "k", "v"), Err(why));
        assert!(db.get_iter("t").is_err() && db.tables().is_err() && db.flush().is_err());
        assert!(db.barrier().is_none());
        // And one that opens is as `open`'s.
        let db = SledDb::new(dir.path().join("db"));
        assert!(db.open_error().is_none());
        assert_eq!(db.set("t", "k", "v"), Ok(None));
        assert_eq!(db.get("t", "k"), Ok(Some("v".into())));
    }

    /// Polls every future until all are done, together (no spawning: they
    /// borrow the barrier).
    async fn all<F>(mut waits: Vec<F>)
    where
        F: Future<Output = Result<(), BarrierError>> + Unpin,
    {
        std::future::poll_fn(|cx| {
            waits.retain_mut(|w| match Pin::new(w).poll(cx) {
                std::task::Poll::Ready(done) => {
                    done.unwrap();
                    false
                }
                std::task::Poll::Pending => true,
            });
            if waits.is_empty() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }

    #[tokio::test]
    async fn concurrent_waiters_share_one_flush() {
        let dir = tempfile::tempdir().unwrap();
        let db = SledDb::open_with(dir.path(), SyncPolicy::Always).unwrap();
        let barrier = db.barrier().expect("always has a barrier");
        // 50 connections wrote, then wait at the same moment.
        for i in 0..50 {
            db.put("t", &format!("k{i}"), i.into()).unwrap();
        }
        all((0..50).map(|_| barrier.wait()).collect()).await;
        assert_eq!(barrier.flushes(), 1, "one flush covers every waiter");
        // A wait after that flush needs a flush of its own.
        db.put("t", "late", 1i64.into()).unwrap();
        barrier.wait().await.unwrap();
        assert_eq!(barrier.flushes(), 2);
    }

    #[test]
    fn only_always_has_a_barrier() {
        let dir = tempfile::tempdir().unwrap();
        for (i, sync) in [SyncPolicy::Everysec, SyncPolicy::No]
            .into_iter()
            .enumerate()
        {
            let db = SledDb::open_with(dir.path().join(i.to_string()), sync).unwrap();
            assert!(db.barrier().is_none(), "{sync:?}");
        }
    }

    #[test]
    fn prefix_successor_carries() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
    }
}
