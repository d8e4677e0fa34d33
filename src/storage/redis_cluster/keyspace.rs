//! [`Keyspace`]: where hookv's tables live among the cluster's keys, and how
//! their values are stored.
//!
//! A table is one Redis hash whose key is `key_prefix` followed by the
//! table's name, byte for byte; the hash's fields are the table's keys and
//! its values the protobuf encoding of `abi.Value` (as sled stores them), so
//! a float stays a float and binary stays binary. A fixed prefix makes the
//! mapping one-to-one whatever a name contains (`""` is the key
//! `key_prefix` itself), and each table is its own hash, so no table can see
//! another's keys. `redis-cli HGETALL hookv:users` shows a table (values in
//! their protobuf bytes).
//!
//! Redis Cluster places a key by the hash of its first non-empty `{...}`
//! (a hash tag) if it has one: tables whose names carry the same tag share
//! a slot. The prefix may hold no braces (the config refuses them), so a
//! tag can only come from a table's own name.

use hookv_plugin::pb::{Kvpair, Value};
use prost::Message;

use crate::storage::StorageError;

/// The prefix every key of hookv's starts with.
#[derive(Debug, Clone)]
pub(super) struct Keyspace {
    prefix: Vec<u8>,
}

impl Keyspace {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.as_bytes().to_vec(),
        }
    }

    /// The Redis key of `table`'s hash.
    pub(super) fn hash_key(&self, table: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + table.len());
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(table.as_bytes());
        key
    }

    /// The table whose hash is `key`: `None` for a key without the prefix,
    /// an error for one whose rest is not UTF-8 (not hookv's).
    pub(super) fn table_of(&self, key: &[u8]) -> Option<Result<String, StorageError>> {
        let name = key.strip_prefix(self.prefix.as_slice())?;
        Some(
            String::from_utf8(name.to_vec()).map_err(|_| StorageError::Corrupt {
                table: String::from_utf8_lossy(name).into_owned(),
                key: String::new(),
                reason: "a hash under key_prefix whose name is not UTF-8, so not a hookv table"
                    .to_owned(),
            }),
        )
    }

    /// A `SCAN ... MATCH` pattern for every key with the prefix (its glob
    /// characters escaped).
    pub(super) fn pattern(&self) -> Vec<u8> {
        let mut pattern = Vec::with_capacity(self.prefix.len() * 2 + 1);
        for &b in &self.prefix {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                pattern.push(b'\\');
            }
            pattern.push(b);
        }
        pattern.push(b'*');
        pattern
    }
}

/// The stored form of `value`.
pub(super) fn encode(value: &Value) -> Vec<u8> {
    value.encode_to_vec()
}

/// A stored value read back, or why it is not one.
pub(super) fn decode(table: &str, key: &str, raw: &[u8]) -> Result<Value, StorageError> {
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

/// A hash field and its value as a pair of `table`.
pub(super) fn decode_pair(table: &str, field: Vec<u8>, raw: &[u8]) -> Result<Kvpair, StorageError> {
    let key = String::from_utf8(field).map_err(|e| StorageError::Corrupt {
        table: table.to_owned(),
        key: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        reason: "key is not UTF-8".to_owned(),
    })?;
    let value = decode(table, &key, raw)?;
    Ok(Kvpair::new(key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_one_to_one_and_back() {
        let ks = Keyspace::new("hookv:");
        assert_eq!(ks.hash_key(""), b"hookv:");
        assert_eq!(ks.hash_key("a:b"), b"hookv:a:b");
        assert_eq!(ks.table_of(b"hookv:a:b").unwrap().unwrap(), "a:b");
        assert_eq!(ks.table_of(b"hookv:").unwrap().unwrap(), "");
        assert!(ks.table_of(b"other:x").is_none());
        assert!(ks.table_of(b"hookv:\xff").unwrap().is_err());
    }

    #[test]
    fn the_scan_pattern_escapes_glob_characters() {
        assert_eq!(
            Keyspace::new("a*b?[c]\\:").pattern(),
            b"a\\*b\\?\\[c\\]\\\\:*"
        );
    }
}
