//! [`MemTable`]: the in-memory backend.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use ahash::RandomState;
use dashmap::DashMap;
use hookv_plugin::pb::{Kvpair, Value};

use super::{Storage, StorageError, StorageIter};

/// Tables in memory: a `DashMap` of table name to a `DashMap` of key to value.
///
/// Two levels of sharded maps let writers to different keys (and tables) go in
/// parallel without a global lock. Tables are separate maps, so no name can
/// leak into another table. Hashing is aHash with a per-process random seed:
/// several times faster than SipHash on short keys, and still keyed, so
/// clients cannot precompute colliding keys.
#[derive(Debug, Default)]
pub struct MemTable {
    tables: DashMap<String, Table, RandomState>,
}

type Table = DashMap<String, Value, RandomState>;

impl MemTable {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemTable {
    fn get(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        Ok(self
            .tables
            .get(table)
            .and_then(|t| t.get(key).map(|v| v.value().clone())))
    }

    fn put(&self, table: &str, key: &str, value: Value) -> Result<Option<Value>, StorageError> {
        // Look up first so the common case (table exists) allocates no name.
        if let Some(t) = self.tables.get(table) {
            return Ok(t.insert(key.to_owned(), value));
        }
        let t = self.tables.entry(table.to_owned()).or_default();
        Ok(t.insert(key.to_owned(), value))
    }

    fn contains(&self, table: &str, key: &str) -> Result<bool, StorageError> {
        Ok(self.tables.get(table).is_some_and(|t| t.contains_key(key)))
    }

    fn del(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        Ok(self
            .tables
            .get(table)
            .and_then(|t| t.remove(key).map(|(_, v)| v)))
    }

    fn get_all(&self, table: &str) -> Result<Vec<Kvpair>, StorageError> {
        // A snapshot of the table, so no shard lock outlives this call.
        let mut pairs: Vec<Kvpair> = match self.tables.get(table) {
            Some(t) => t
                .iter()
                .map(|e| Kvpair::new(e.key().clone(), e.value().clone()))
                .collect(),
            None => Vec::new(),
        };
        pairs.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(pairs)
    }

    fn get_iter(&self, table: &str) -> Result<StorageIter, StorageError> {
        Ok(StorageIter::new(self.get_all(table)?.into_iter().map(Ok)))
    }

    /// A hash map has no key order to start from, so a page is one pass
    /// over the table keeping the `limit` smallest keys after `after` in a
    /// bounded max-heap: O(n log limit) at worst, and only pairs that enter
    /// the heap are copied; nothing sorts the whole table. Paging through a
    /// table of n keys therefore costs about n / limit passes: big pages
    /// are cheaper per key.
    fn scan(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Kvpair>, StorageError> {
        let Some(t) = self.tables.get(table) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut smallest: BinaryHeap<ByKey> = BinaryHeap::with_capacity(limit.min(t.len()));
        for entry in t.iter() {
            let key = entry.key().as_str();
            if after.is_some_and(|after| key <= after) {
                continue;
            }
            let pair = || ByKey(Kvpair::new(key, entry.value().clone()));
            if smallest.len() < limit {
                smallest.push(pair());
            } else if let Some(mut largest) = smallest.peek_mut() {
                // Replacing the top sifts it down when `largest` drops.
                if key < largest.0.key.as_str() {
                    *largest = pair();
                }
            }
        }
        Ok(smallest
            .into_sorted_vec()
            .into_iter()
            .map(|p| p.0)
            .collect())
    }

    /// A lookup, whatever the table's size: a table left empty by deletes
    /// is still in the map, and counts as missing.
    fn table_exists(&self, table: &str) -> Result<Option<bool>, StorageError> {
        Ok(Some(self.tables.get(table).is_some_and(|t| !t.is_empty())))
    }

    fn tables(&self) -> Result<Vec<String>, StorageError> {
        let mut names: Vec<String> = self
            .tables
            .iter()
            .filter(|t| !t.value().is_empty())
            .map(|t| t.key().clone())
            .collect();
        names.sort_unstable();
        Ok(names)
    }
}

/// A pair ordered by its key alone (keys are unique within a table).
struct ByKey(Kvpair);

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for ByKey {}

impl PartialOrd for ByKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.key.cmp(&other.0.key)
    }
}
