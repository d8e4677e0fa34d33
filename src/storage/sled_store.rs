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

use std::ops::Bound;
use std::path::Path;

use hookv_plugin::pb::{Kvpair, Value};
use prost::Message;
use sled::IVec;

use super::{Storage, StorageError, StorageIter};

/// A sled database holding every table.
#[derive(Debug, Clone)]
pub struct SledDb {
    db: sled::Db,
}

impl SledDb {
    /// Opens (or creates) the database in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        Ok(Self {
            db: sled::open(path)?,
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

fn record_key(table: &str, key: &str) -> Vec<u8> {
    let mut k = table_prefix(table);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Splits a record key into table and key, or says why it cannot.
fn split_record_key(raw: &[u8]) -> Result<(&str, &str), StorageError> {
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
        decode_opt(table, key, self.db.get(record_key(table, key))?)
    }

    fn set(&self, table: &str, key: &str, value: Value) -> Result<Option<Value>, StorageError> {
        let old = self
            .db
            .insert(record_key(table, key), value.encode_to_vec())?;
        decode_opt(table, key, old)
    }

    fn contains(&self, table: &str, key: &str) -> Result<bool, StorageError> {
        Ok(self.db.contains_key(record_key(table, key))?)
    }

    fn del(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        decode_opt(table, key, self.db.remove(record_key(table, key))?)
    }

    fn get_iter(&self, table: &str) -> Result<StorageIter, StorageError> {
        let table = table.to_owned();
        let iter = self
            .db
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
        self.db
            .range((start, end))
            .take(limit)
            .map(|item| decode_pair(table, item?))
            .collect()
    }

    fn tables(&self) -> Result<Vec<String>, StorageError> {
        // Jump from table to table instead of reading every record.
        let mut names = Vec::new();
        let mut cursor: Vec<u8> = Vec::new();
        while let Some(item) = self.db.range(cursor.as_slice()..).next() {
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
        self.db.flush()?;
        Ok(())
    }
}

impl SledDb {
    /// Writes raw bytes as the stored value of `table`/`key`, bypassing
    /// encoding. Only for tests that need a corrupt record.
    #[doc(hidden)]
    pub fn insert_raw(&self, table: &str, key: &str, raw: &[u8]) -> Result<(), StorageError> {
        self.db.insert(record_key(table, key), raw)?;
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
            db.set("t", "k", 7i64.into()).unwrap();
            db.flush().unwrap();
        }
        let db = SledDb::open(dir.path()).unwrap();
        assert_eq!(db.get("t", "k").unwrap(), Some(7i64.into()));
    }

    #[test]
    fn prefix_successor_carries() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
    }
}
