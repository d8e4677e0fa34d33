//! [`TableRead`]: a whole table (`hgetall`) or one page of it (`hscan`),
//! gathered from `HSCAN` replies.
//!
//! A Redis hash has no key order, and hookv answers in key order (byte
//! order), so a read walks the whole hash with `HSCAN` (at most
//! [`SCAN_COUNT`] fields a reply, so no single reply holds a large table)
//! and orders what it keeps: every pair for `hgetall`, the `limit` smallest
//! keys after the cursor for a page (a bounded ordered map, as the memory
//! backend's bounded heap: nothing outside the page is kept). `HSCAN` may
//! return a field twice; the map keeps it once. Like the memory backend,
//! every page costs one pass over the table: page a big table with big
//! pages.

use std::collections::BTreeMap;

use hookv_plugin::pb::{Kvpair, Value};
use redis::Value as Reply;

use super::error::ClusterError;
use super::keyspace;
use crate::storage::StorageError;

/// Fields asked of each `HSCAN` reply (a hint to Redis, which may return a
/// few more; a small hash comes back whole in one reply).
pub(super) const SCAN_COUNT: usize = 1024;

/// The pairs gathered so far.
#[derive(Debug)]
pub(super) struct TableRead<'a> {
    table: &'a str,
    /// `None`: every pair; `Some`: the first `limit` after `after`.
    page: Option<(Option<&'a str>, usize)>,
    pairs: BTreeMap<String, Value>,
}

/// Where the walk goes on: `None` once it is complete.
pub(super) type Cursor = Option<Vec<u8>>;

impl<'a> TableRead<'a> {
    /// A read of every pair of `table`.
    pub(super) fn all(table: &'a str) -> Self {
        Self {
            table,
            page: None,
            pairs: BTreeMap::new(),
        }
    }

    /// A read of the first `limit` pairs of `table` whose keys come after
    /// `after`.
    pub(super) fn page(table: &'a str, after: Option<&'a str>, limit: usize) -> Self {
        Self {
            table,
            page: Some((after, limit)),
            pairs: BTreeMap::new(),
        }
    }

    /// Takes in one `HSCAN` reply, `[cursor, [field, value, ...]]`.
    pub(super) fn add(&mut self, reply: Reply) -> Result<Cursor, StorageError> {
        let bad = |what: &str| ClusterError::UnexpectedReply {
            command: "HSCAN",
            reply: what.to_owned(),
        };
        let Reply::Array(mut parts) = reply else {
            return Err(bad("not an array").into());
        };
        let (Some(Reply::Array(items)), Some(Reply::BulkString(cursor)), None) =
            (parts.pop(), parts.pop(), parts.pop())
        else {
            return Err(bad("not [cursor, [field, value, ...]]").into());
        };
        if !items.len().is_multiple_of(2) {
            return Err(bad("an odd number of fields and values").into());
        }
        let mut items = items.into_iter();
        while let (Some(field), Some(value)) = (items.next(), items.next()) {
            let (Reply::BulkString(field), Reply::BulkString(value)) = (field, value) else {
                return Err(bad("a field or value that is not a string").into());
            };
            self.offer(field, &value)?;
        }
        Ok((cursor != b"0").then_some(cursor))
    }

    fn offer(&mut self, field: Vec<u8>, raw: &[u8]) -> Result<(), StorageError> {
        let Some((after, limit)) = self.page else {
            let pair = keyspace::decode_pair(self.table, field, raw)?;
            self.pairs.insert(pair.key, pair.value.unwrap_or_default());
            return Ok(());
        };
        // Fields that cannot be in the page are not even decoded.
        if after.is_some_and(|after| field.as_slice() <= after.as_bytes()) {
            return Ok(());
        }
        if self.pairs.len() >= limit
            && self
                .pairs
                .last_key_value()
                .is_none_or(|(last, _)| field.as_slice() >= last.as_bytes())
        {
            return Ok(());
        }
        let pair = keyspace::decode_pair(self.table, field, raw)?;
        self.pairs.insert(pair.key, pair.value.unwrap_or_default());
        if self.pairs.len() > limit {
            self.pairs.pop_last();
        }
        Ok(())
    }

    /// The pairs, in key order.
    pub(super) fn finish(self) -> Vec<Kvpair> {
        self.pairs
            .into_iter()
            .map(|(key, value)| Kvpair::new(key, value))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(cursor: &str, pairs: &[(&str, i64)]) -> Reply {
        let items = pairs
            .iter()
            .flat_map(|(k, v)| {
                [
                    Reply::BulkString(k.as_bytes().to_vec()),
                    Reply::BulkString(keyspace::encode(&Value::from(*v))),
                ]
            })
            .collect();
        Reply::Array(vec![
            Reply::BulkString(cursor.as_bytes().to_vec()),
            Reply::Array(items),
        ])
    }

    fn keys(pairs: &[Kvpair]) -> Vec<&str> {
        pairs.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn a_page_keeps_the_smallest_keys_after_the_cursor_once_each() {
        let mut read = TableRead::page("t", Some("b"), 2);
        assert_eq!(
            read.add(reply("7", &[("d", 1), ("a", 2), ("c", 3)]))
                .unwrap(),
            Some(b"7".to_vec())
        );
        // A field returned twice (HSCAN may) and one past the page.
        assert_eq!(
            read.add(reply("0", &[("c", 3), ("e", 4), ("bb", 5)]))
                .unwrap(),
            None
        );
        assert_eq!(keys(&read.finish()), ["bb", "c"]);

        let mut read = TableRead::all("t");
        read.add(reply("0", &[("b", 1), ("", 2), ("a", 3), ("b", 1)]))
            .unwrap();
        assert_eq!(keys(&read.finish()), ["", "a", "b"]);
    }

    #[test]
    fn bad_replies_are_errors() {
        let mut read = TableRead::all("t");
        assert!(read.add(Reply::Nil).is_err());
        let odd = Reply::Array(vec![
            Reply::BulkString(b"0".to_vec()),
            Reply::Array(vec![Reply::BulkString(b"k".to_vec())]),
        ]);
        assert!(read.add(odd).is_err());
        let corrupt = Reply::Array(vec![
            Reply::BulkString(b"0".to_vec()),
            Reply::Array(vec![
                Reply::BulkString(b"k".to_vec()),
                Reply::BulkString(b"\xff\xff".to_vec()),
            ]),
        ]);
        let err = read.add(corrupt).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    }
}
