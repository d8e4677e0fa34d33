//! Where data lives: the [`Storage`] trait, its backends, and the
//! [`Backend`] a service is built over.
//!
//! - [`MemTable`]: in memory, a `DashMap` of tables (lost on exit unless the
//!   write-ahead log, `crate::wal`, wraps it).
//! - [`SledDb`]: on disk, one sled database; `[storage] sync` decides when
//!   its writes are flushed, and with `always` answers to writes wait for
//!   its [`SledBarrier`] (see `sled_store.rs`).
//! - [`RedisCluster`]: in a Redis Cluster shared by many hookv servers. It
//!   talks over the network, so its API is async and batched and it does
//!   not implement [`Storage`]; [`behaviours`] holds the conformance
//!   behaviours written once for all three (see `redis_cluster/mod.rs`).
//! - [`course_sled`]: not a backend: a sled database the course's `SledDb`
//!   wrote (`"{table}:{key}"` keys), which [`SledDb`] refuses to open and
//!   `hookv-cli migrate-course-sled` moves into its layout.
//!
//! A [`Service`](crate::Service) is built over a [`Backend`]: any
//! [`Storage`] (called inline, request by request: it answers at once, so
//! the request path costs no future and no allocation for it), or the
//! [`RedisCluster`] (called once per batch of pipelined requests, awaited:
//! waiting for the network never blocks a worker thread). A connection asks
//! [`Backend::reach`] once per batch.
//!
//! A layer may wrap a backend and be a [`Storage`] itself, as the write-ahead
//! log does; what it refuses reaches the client as
//! [`StorageError::Layer`], in the words of the layer's own error.
//!
//! Every method is fallible: a backend that cannot read what it stored says so
//! with a [`StorageError`] (which reaches the client as a 500), never with a
//! default value. Reads never create tables. Tables are isolated whatever
//! their names contain, and `""` is a valid table and key name.
//!
//! The conformance suite at the bottom of this file runs once per backend.

#[doc(hidden)]
pub mod behaviours;
pub mod course_sled;
mod memory;
pub mod redis_cluster;
mod sled_store;

pub use memory::MemTable;
pub use redis_cluster::RedisCluster;
pub use sled_store::{SledBarrier, SledDb};

use std::sync::Arc;

use hookv_plugin::pb::{Kvpair, Value};

/// A failure inside a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The disk backend failed (I/O, or sled's own corruption checks).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// The Redis Cluster backend cannot answer now (timeout, node down,
    /// failover under way, too few replicas): a 503, retry later.
    #[error(transparent)]
    Cluster(#[from] redis_cluster::ClusterError),
    /// Bytes read back from disk are not a valid stored value.
    #[error("stored value of table {table:?} key {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The table the bad record belongs to (lossy if the name itself is bad).
        table: String,
        /// The key of the bad record (lossy if the key itself is bad).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The sled database holds records outside hookv's layout (e.g. the
    /// course's `SledDb` wrote them), so it is not opened rather than served
    /// as empty or corrupt; the message says what they are and what to run
    /// (see `course_sled.rs`).
    #[error("{0}")]
    ForeignLayout(Box<course_sled::ForeignRecords>),
    /// A layer wrapping this store refused or failed the operation, e.g. the
    /// write-ahead log (`crate::wal`) once it has stopped: writes are refused
    /// rather than applied unlogged. The message is the layer's own error,
    /// which converts into this one. (Its words, not a boxed `dyn Error`:
    /// that variant's drop glue runs on every storage call's success path
    /// too, and cost about 16 instructions per `hset`.)
    #[error("{0}")]
    Layer(String),
    /// A [`SledDb::new`] whose database could not be opened answers this
    /// to every call ([`SledDb::open`] returns the open's own error instead).
    #[error("sled database at {path} is not open: {reason}")]
    NotOpen {
        /// The directory given to [`SledDb::new`].
        path: String,
        /// The open's error.
        reason: String,
    },
}

/// Equal when of the same kind with the same message: what a test's
/// `assert_eq!(store.get(..), Ok(None))` needs (the course's `KvError` was
/// `PartialEq`). The errors inside (sled's, I/O, the cluster's) are not
/// comparable themselves, so their words stand for them.
impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

/// What a [`Service`](crate::Service) keeps its tables in, as the request
/// path calls it: see [`Reach`]. Every [`Storage`] is a `Backend` (the
/// course's trait stays the one to implement for a backend of your own);
/// so is [`RedisCluster`], which is not a [`Storage`].
pub trait Backend: Send + Sync + 'static {
    /// How the request path calls this store.
    fn reach(&self) -> Reach<'_>;
}

/// How the request path calls a [`Backend`].
#[derive(Clone, Copy)]
pub enum Reach<'a> {
    /// A synchronous store that answers at once (memory, sled, the log over
    /// them, your own): each request calls it in turn, inline, between its
    /// `on_received` and `on_executed` hooks.
    Inline(&'a dyn Storage),
    /// The Redis Cluster: a batch's requests go through `on_received`
    /// first, then to the cluster as one [`RedisCluster::execute`] (one
    /// pipeline per master touched), awaited, then through `on_executed`
    /// and `on_before_send` in order.
    Batched(&'a RedisCluster),
}

impl<S: Storage> Backend for S {
    #[inline]
    fn reach(&self) -> Reach<'_> {
        Reach::Inline(self)
    }
}

impl Backend for RedisCluster {
    fn reach(&self) -> Reach<'_> {
        Reach::Batched(self)
    }
}

/// A key-value store of named tables.
///
/// Implementations are shared by every connection, so they are `Send + Sync`
/// and take `&self`.
pub trait Storage: Send + Sync + 'static {
    /// The value of `key` in `table`, `None` if either is missing.
    fn get(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError>;
    /// Sets `key` to `value` in `table` (creating the table), returning the
    /// previous value. The method a backend implements; callers may use
    /// [`Storage::set`], the course's spelling.
    fn put(&self, table: &str, key: &str, value: Value) -> Result<Option<Value>, StorageError>;
    /// [`Storage::put`] as the original course spelled it: any key that
    /// converts into a `String`, any value that converts into a [`Value`]
    /// (`store.set("t", "k", "v")`). Provided, and only on sized stores
    /// (`MemTable`, `SledDb`, `Arc<dyn Storage>`, `Box<dyn Storage>`, your
    /// own): through a `&dyn Storage`, call `put`.
    fn set(
        &self,
        table: &str,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> Result<Option<Value>, StorageError>
    where
        Self: Sized,
    {
        self.put(table, &key.into(), value.into())
    }
    /// Whether `table` holds `key`.
    fn contains(&self, table: &str, key: &str) -> Result<bool, StorageError>;
    /// Removes `key` from `table`, returning what was there.
    fn del(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError>;
    /// Every pair of `table`, sorted by key (byte order); empty for a missing table.
    fn get_all(&self, table: &str) -> Result<Vec<Kvpair>, StorageError> {
        self.get_iter(table)?.collect()
    }
    /// Iterates the pairs of `table` in key order (byte order).
    fn get_iter(&self, table: &str) -> Result<StorageIter, StorageError>;
    /// One page of `table` in key order (byte order, as [`Storage::get_all`]):
    /// the first `limit` pairs whose keys come strictly after `after`
    /// (`None`: from the first key; `Some("")` skips only the key `""`).
    /// Empty for a missing table. Paging with the last key of each page
    /// returns every key present throughout exactly once.
    ///
    /// The default walks [`Storage::get_iter`] from the start: backends
    /// override it to start at `after`.
    fn scan(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Kvpair>, StorageError> {
        let mut page = Vec::new();
        if limit == 0 {
            return Ok(page);
        }
        for pair in self.get_iter(table)? {
            let pair = pair?;
            if after.is_some_and(|after| pair.key.as_str() <= after) {
                continue;
            }
            page.push(pair);
            if page.len() == limit {
                break;
            }
        }
        Ok(page)
    }
    /// The names of all tables that hold at least one key, sorted.
    fn tables(&self) -> Result<Vec<String>, StorageError>;
    /// Whether `table` holds at least one key (a table exists from its first
    /// write until its last key is deleted; reads never create one), if the
    /// backend can tell at the cost of a lookup: `None` when it cannot. Asked
    /// off the fast path, to tell a missing table from a missing key in
    /// `hget`'s 404, so it must never walk a table: a client could make every
    /// miss cost that.
    ///
    /// The default says `None`. Backends override it (memory: a map lookup;
    /// sled: a one-key prefix probe), and a backend that wraps another
    /// should forward it: one that does not (today `WalStore`, the wal
    /// hook's) leaves `hget` saying only that the key was not found. Not a
    /// one-pair [`Storage::scan`] by default: in memory that is a pass over
    /// the whole table (4.3 ms per miss at 100,000 keys, measured through
    /// the wal hook, against 0.7 µs for a hit).
    fn table_exists(&self, table: &str) -> Result<Option<bool>, StorageError> {
        let _ = table;
        Ok(None)
    }
    /// Makes everything written so far durable (a no-op in memory).
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// An iterator over the pairs of one table, adapting whatever a backend
/// yields (anything convertible into `Result<Kvpair, StorageError>`).
pub struct StorageIter {
    inner: Box<dyn Iterator<Item = Result<Kvpair, StorageError>> + Send>,
}

impl StorageIter {
    /// Wraps a backend iterator.
    pub fn new<I, T>(inner: I) -> Self
    where
        I: Iterator<Item = T> + Send + 'static,
        T: Into<Result<Kvpair, StorageError>> + 'static,
    {
        Self {
            inner: Box::new(inner.map(Into::into)),
        }
    }
}

impl Iterator for StorageIter {
    type Item = Result<Kvpair, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

/// Forwards every call to the boxed or shared backend, so `Box<dyn Storage>`
/// and `Arc<dyn Storage>` are backends too.
macro_rules! forward_storage {
    ($ptr:ident) => {
        impl<S: Storage + ?Sized> Storage for $ptr<S> {
            fn get(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
                (**self).get(table, key)
            }
            fn put(
                &self,
                table: &str,
                key: &str,
                value: Value,
            ) -> Result<Option<Value>, StorageError> {
                (**self).put(table, key, value)
            }
            fn contains(&self, table: &str, key: &str) -> Result<bool, StorageError> {
                (**self).contains(table, key)
            }
            fn del(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
                (**self).del(table, key)
            }
            fn get_all(&self, table: &str) -> Result<Vec<Kvpair>, StorageError> {
                (**self).get_all(table)
            }
            fn get_iter(&self, table: &str) -> Result<StorageIter, StorageError> {
                (**self).get_iter(table)
            }
            fn scan(
                &self,
                table: &str,
                after: Option<&str>,
                limit: usize,
            ) -> Result<Vec<Kvpair>, StorageError> {
                (**self).scan(table, after, limit)
            }
            fn tables(&self) -> Result<Vec<String>, StorageError> {
                (**self).tables()
            }
            fn table_exists(&self, table: &str) -> Result<Option<bool>, StorageError> {
                (**self).table_exists(table)
            }
            fn flush(&self) -> Result<(), StorageError> {
                (**self).flush()
            }
        }
    };
}
forward_storage!(Box);
forward_storage!(Arc);

#[cfg(test)]
mod conformance {
    //! One behaviour per function, each run against every backend.
    use super::*;
    use hookv_plugin::pb::value;

    fn backends() -> Vec<(&'static str, Box<dyn Storage>, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let sled = SledDb::open(dir.path().join("db")).expect("open sled");
        vec![
            ("memory", Box::new(MemTable::new()), None),
            ("sled", Box::new(sled), Some(dir)),
        ]
    }

    fn each(check: impl Fn(&dyn Storage)) {
        for (name, store, _dir) in backends() {
            eprintln!("backend: {name}");
            check(store.as_ref());
        }
    }

    #[test]
    fn set_returns_previous_and_get_reads_back() {
        each(|s| {
            assert_eq!(s.put("t", "k", "v1".into()).unwrap(), None);
            assert_eq!(s.put("t", "k", "v2".into()).unwrap(), Some("v1".into()));
            assert_eq!(s.get("t", "k").unwrap(), Some("v2".into()));
            assert_eq!(s.get("t", "missing").unwrap(), None);
            assert_eq!(s.get("missing", "k").unwrap(), None);
        });
    }

    #[test]
    fn contains_and_del() {
        each(|s| {
            s.put("t", "k", 1i64.into()).unwrap();
            assert!(s.contains("t", "k").unwrap());
            assert!(!s.contains("t", "x").unwrap());
            assert!(!s.contains("nope", "k").unwrap());
            assert_eq!(s.del("t", "k").unwrap(), Some(1i64.into()));
            assert_eq!(s.del("t", "k").unwrap(), None);
            assert_eq!(s.del("nope", "k").unwrap(), None);
            assert!(!s.contains("t", "k").unwrap());
        });
    }

    #[test]
    fn all_value_types_round_trip() {
        each(|s| {
            let values: Vec<Value> = vec![
                "text".into(),
                bytes::Bytes::from_static(b"\x00\xffbin").into(),
                i64::MIN.into(),
                (-0.5f64).into(),
                true.into(),
                false.into(),
                Value::from(value::Value::String(String::new())),
            ];
            for (i, v) in values.iter().enumerate() {
                s.put("types", &i.to_string(), v.clone()).unwrap();
            }
            for (i, v) in values.iter().enumerate() {
                assert_eq!(s.get("types", &i.to_string()).unwrap().as_ref(), Some(v));
            }
        });
    }

    #[test]
    fn short_and_long_keys_and_values_round_trip_in_order() {
        // Lengths around those memory keeps in place (22-byte keys, 38-byte
        // strings), in UTF-8 of several widths.
        each(|s| {
            let lengths = [0, 1, 21, 22, 23, 37, 38, 39, 100];
            let text = |n: usize, c: char| -> String { c.to_string().repeat(n) };
            let mut keys = Vec::new();
            for n in lengths {
                for c in ['k', 'é', '表'] {
                    if n == 0 && c != 'k' {
                        continue;
                    }
                    let key = text(n, c);
                    let value = key.to_uppercase();
                    assert_eq!(s.put("lengths", &key, value.clone().into()).unwrap(), None);
                    assert_eq!(
                        s.put("lengths", &key, value.clone().into()).unwrap(),
                        Some(value.into())
                    );
                    keys.push(key);
                }
            }
            keys.sort();
            keys.dedup();
            for key in &keys {
                let value = key.to_uppercase();
                assert_eq!(s.get("lengths", key).unwrap(), Some(value.as_str().into()));
                assert!(s.contains("lengths", key).unwrap());
            }
            let all: Vec<String> = s
                .get_all("lengths")
                .unwrap()
                .into_iter()
                .map(|p| p.key)
                .collect();
            assert_eq!(all, keys);
            let page: Vec<String> = s
                .scan("lengths", Some(&keys[3]), 4)
                .unwrap()
                .into_iter()
                .map(|p| p.key)
                .collect();
            assert_eq!(page, keys[4..8]);
            for key in &keys {
                assert_eq!(
                    s.del("lengths", key).unwrap(),
                    Some(key.to_uppercase().into())
                );
            }
            assert!(s.get_all("lengths").unwrap().is_empty());
        });
    }

    #[test]
    fn tables_are_isolated_whatever_their_names() {
        each(|s| {
            s.put("a", "b:c", "1".into()).unwrap();
            s.put("a:b", "c", "2".into()).unwrap();
            s.put("a\0", "x", "3".into()).unwrap();
            s.put("", "", "empty".into()).unwrap();
            s.put("ünï/cødé 表", "ключ", "4".into()).unwrap();
            assert_eq!(s.get("a", "b:c").unwrap(), Some("1".into()));
            assert_eq!(s.get("a:b", "c").unwrap(), Some("2".into()));
            assert_eq!(s.get("a", "c").unwrap(), None);
            assert_eq!(s.get("", "").unwrap(), Some("empty".into()));
            assert_eq!(s.get("ünï/cødé 表", "ключ").unwrap(), Some("4".into()));
            let keys = |t: &str| -> Vec<String> {
                s.get_all(t).unwrap().into_iter().map(|p| p.key).collect()
            };
            assert_eq!(keys("a"), vec!["b:c"]);
            assert_eq!(keys("a:b"), vec!["c"]);
            assert_eq!(keys("a\0"), vec!["x"]);
            assert_eq!(keys(""), vec![""]);
        });
    }

    #[test]
    fn get_all_is_sorted_by_key_and_reads_create_nothing() {
        each(|s| {
            for k in ["b", "a", "c", "aa"] {
                s.put("t", k, k.into()).unwrap();
            }
            let pairs = s.get_all("t").unwrap();
            let keys: Vec<_> = pairs.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys, ["a", "aa", "b", "c"]);
            assert_eq!(pairs[0].value, Some("a".into()));
            let via_iter: Vec<_> = s.get_iter("t").unwrap().collect::<Result<_, _>>().unwrap();
            assert_eq!(via_iter, pairs);

            assert!(s.get_all("ghost").unwrap().is_empty());
            s.get("ghost", "k").unwrap();
            s.contains("ghost", "k").unwrap();
            s.del("ghost", "k").unwrap();
            assert_eq!(s.tables().unwrap(), vec!["t".to_string()]);
        });
    }

    /// A backend that only has the trait's required methods, so the
    /// default `scan` runs too.
    struct Defaults(MemTable);

    impl Storage for Defaults {
        fn get(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
            self.0.get(table, key)
        }
        fn put(&self, table: &str, key: &str, value: Value) -> Result<Option<Value>, StorageError> {
            self.0.put(table, key, value)
        }
        fn contains(&self, table: &str, key: &str) -> Result<bool, StorageError> {
            self.0.contains(table, key)
        }
        fn del(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
            self.0.del(table, key)
        }
        fn get_iter(&self, table: &str) -> Result<StorageIter, StorageError> {
            self.0.get_iter(table)
        }
        fn tables(&self) -> Result<Vec<String>, StorageError> {
            self.0.tables()
        }
    }

    /// Runs `check` on every backend and on the trait's default `scan`.
    fn each_scan(check: impl Fn(&dyn Storage)) {
        each(&check);
        eprintln!("backend: trait defaults");
        check(&Defaults(MemTable::new()));
    }

    fn keys_of(pairs: &[Kvpair]) -> Vec<&str> {
        pairs.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn scan_pages_follow_get_all_order_and_cover_every_key_once() {
        each_scan(|s| {
            let keys = [
                "b", "", "a", "\0", "aa", "é", "a\0", "Z", "10", "9", "ключ", "b ",
            ];
            for (i, k) in keys.iter().enumerate() {
                s.put("t", k, (i as i64).into()).unwrap();
            }
            // Neighbouring tables whose names extend this one's.
            s.put("t\0", "a", "x".into()).unwrap();
            s.put("tt", "a", "x".into()).unwrap();
            s.put("", "t", "x".into()).unwrap();
            let all = s.get_all("t").unwrap();
            assert_eq!(all.len(), keys.len());
            for limit in [1, 2, 5, keys.len(), keys.len() + 1, 1000] {
                let mut paged = Vec::new();
                let mut after: Option<String> = None;
                // Bounded: a scan that does not advance must fail, not hang.
                for _ in 0..=keys.len() {
                    let page = s.scan("t", after.as_deref(), limit).unwrap();
                    assert!(page.len() <= limit);
                    let Some(last) = page.last() else { break };
                    after = Some(last.key.clone());
                    paged.extend(page);
                }
                assert_eq!(paged, all, "limit {limit}");
            }
        });
    }

    #[test]
    fn table_exists_while_the_table_holds_a_key() {
        each(|s| {
            let exists = |t: &str| s.table_exists(t).unwrap().expect("both backends can tell");
            assert!(!exists("t"));
            s.put("t", "k", "v".into()).unwrap();
            s.put("t", "", "v".into()).unwrap();
            assert!(exists("t"));
            // Neighbours whose names extend or prefix it are other tables.
            assert!(!exists(""));
            assert!(!exists("tt"));
            assert!(!exists("t\0"));
            s.put("tt", "k", "v".into()).unwrap();
            s.del("t", "k").unwrap();
            assert!(exists("t"), "one key is left");
            s.del("t", "").unwrap();
            assert!(!exists("t"), "the last key is gone");
            assert!(exists("tt"));
            // Asking creates nothing.
            assert_eq!(s.tables().unwrap(), vec!["tt".to_string()]);
        });
        // A backend that does not override it cannot tell.
        let s = Defaults(MemTable::new());
        s.put("t", "k", "v".into()).unwrap();
        assert_eq!(s.table_exists("t").unwrap(), None);
    }

    #[test]
    fn scan_cursor_edges() {
        each_scan(|s| {
            for k in ["", "a", "b", "c"] {
                s.put("t", k, k.into()).unwrap();
            }
            // "" is a key: after Some("") skips it alone, None includes it.
            assert_eq!(keys_of(&s.scan("t", None, 2).unwrap()), ["", "a"]);
            assert_eq!(keys_of(&s.scan("t", Some(""), 2).unwrap()), ["a", "b"]);
            // A cursor between keys, or past the end.
            assert_eq!(keys_of(&s.scan("t", Some("aa"), 10).unwrap()), ["b", "c"]);
            assert!(s.scan("t", Some("c"), 10).unwrap().is_empty());
            assert!(s.scan("t", Some("zzz"), 10).unwrap().is_empty());
            // No pairs asked, or none there; values come along.
            assert!(s.scan("t", None, 0).unwrap().is_empty());
            assert_eq!(
                s.scan("t", Some("b"), 1).unwrap(),
                vec![Kvpair::new("c", "c".into())]
            );
            assert!(s.scan("ghost", None, 10).unwrap().is_empty());
            assert_eq!(s.tables().unwrap(), vec!["t".to_string()]);
            // A key deleted between pages: the scan goes on after it.
            let first = s.scan("t", None, 3).unwrap();
            assert_eq!(keys_of(&first), ["", "a", "b"]);
            s.del("t", "b").unwrap();
            assert_eq!(keys_of(&s.scan("t", Some("b"), 3).unwrap()), ["c"]);
        });
    }
}
