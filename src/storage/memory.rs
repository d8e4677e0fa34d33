//! [`MemTable`]: the in-memory backend.

use std::borrow::{Borrow, Cow};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::hash::{Hash, Hasher};

use ahash::RandomState;
use dashmap::DashMap;
use hookv_plugin::pb::{value, Kvpair, Value};

use super::{Storage, StorageError, StorageIter};

/// Tables in memory: a `DashMap` of table name to a `DashMap` of key to value.
///
/// Two levels of sharded maps let writers to different keys (and tables) go in
/// parallel without a global lock. Tables are separate maps, so no name can
/// leak into another table. Hashing is aHash with a per-process random seed:
/// several times faster than SipHash on short keys, and still keyed, so
/// clients cannot precompute colliding keys.
///
/// A key of up to 22 bytes (`INLINE`), and a string value of up to 38
/// (`TEXT_INLINE`), are kept inside the table's slot (`Key`, `Stored`),
/// not behind pointers: over a table larger than the caches, a lookup then
/// costs one memory access (the slot) where it cost three (measured: `cargo
/// bench --bench service -- frame`, 100k keys).
#[derive(Debug, Default)]
pub struct MemTable {
    tables: DashMap<String, Table, RandomState>,
}

type Table = DashMap<Key, Stored, RandomState>;

/// The longest key kept in place: a [`Key`] is as large as a `String`.
const INLINE: usize = 22;

/// A key as a table holds it: short keys in place, longer ones on the heap.
/// Only [`Key::new`] makes one, from a `&str`, so its bytes are UTF-8.
/// Hashed, compared and looked up as its bytes (`Borrow<[u8]>`).
#[derive(Debug, Clone)]
enum Key {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Key {
    fn new(key: &str) -> Self {
        match key.len() {
            len @ 0..=INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..len].copy_from_slice(key.as_bytes());
                // `len` is at most INLINE, which fits a u8.
                Key::Inline {
                    len: len as u8,
                    bytes,
                }
            }
            _ => Key::Heap(key.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(key) => key.as_bytes(),
        }
    }

    /// The key as text: borrowed (a key is UTF-8, being made from a `&str`;
    /// the lossy conversion never replaces anything).
    fn as_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

/// The longest string value kept in place: a [`Stored`] is as large as a `Value`.
const TEXT_INLINE: usize = 38;

/// A value as a table holds it: a short string in place, any other value
/// as it came. Only [`Stored::new`] makes a `Text`, from a `String`, so its
/// bytes are UTF-8.
#[derive(Debug, Clone)]
enum Stored {
    Text { len: u8, bytes: [u8; TEXT_INLINE] },
    Value(Value),
}

const _: () = assert!(std::mem::size_of::<Stored>() <= std::mem::size_of::<Value>());

impl Stored {
    fn new(v: Value) -> Self {
        match &v.value {
            Some(value::Value::String(text)) if text.len() <= TEXT_INLINE => {
                let mut bytes = [0; TEXT_INLINE];
                bytes[..text.len()].copy_from_slice(text.as_bytes());
                // At most TEXT_INLINE, which fits a u8.
                Stored::Text {
                    len: text.len() as u8,
                    bytes,
                }
            }
            _ => Stored::Value(v),
        }
    }

    /// The value as it was stored (a `Text` is UTF-8, being made from a
    /// `String`: the lossy conversion never replaces anything).
    fn to_value(&self) -> Value {
        match self {
            Stored::Text { len, bytes } => {
                Value::from(String::from_utf8_lossy(&bytes[..usize::from(*len)]).into_owned())
            }
            Stored::Value(v) => v.clone(),
        }
    }

    fn into_value(self) -> Value {
        match self {
            Stored::Value(v) => v,
            text => text.to_value(),
        }
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

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
            .and_then(|t| t.get(key.as_bytes()).map(|v| v.value().to_value())))
    }

    fn put(&self, table: &str, key: &str, value: Value) -> Result<Option<Value>, StorageError> {
        // Look up first so the common case (table exists) allocates no name.
        let (key, value) = (Key::new(key), Stored::new(value));
        if let Some(t) = self.tables.get(table) {
            return Ok(t.insert(key, value).map(Stored::into_value));
        }
        let t = self.tables.entry(table.to_owned()).or_default();
        Ok(t.insert(key, value).map(Stored::into_value))
    }

    fn contains(&self, table: &str, key: &str) -> Result<bool, StorageError> {
        Ok(self
            .tables
            .get(table)
            .is_some_and(|t| t.contains_key(key.as_bytes())))
    }

    fn del(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        Ok(self
            .tables
            .get(table)
            .and_then(|t| t.remove(key.as_bytes()).map(|(_, v)| v.into_value())))
    }

    fn get_all(&self, table: &str) -> Result<Vec<Kvpair>, StorageError> {
        // A snapshot of the table, so no shard lock outlives this call.
        let mut pairs: Vec<Kvpair> = match self.tables.get(table) {
            Some(t) => t
                .iter()
                .map(|e| Kvpair::new(e.key().as_str(), e.value().to_value()))
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
        // Byte order, as `str`'s: no key is made text unless it is kept.
        for entry in t.iter() {
            let key = entry.key().as_bytes();
            if after.is_some_and(|after| key <= after.as_bytes()) {
                continue;
            }
            let pair = || ByKey(Kvpair::new(entry.key().as_str(), entry.value().to_value()));
            if smallest.len() < limit {
                smallest.push(pair());
            } else if let Some(mut largest) = smallest.peek_mut() {
                // Replacing the top sifts it down when `largest` drops.
                if key < largest.0.key.as_bytes() {
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
