//! The storage behaviours every backend must show, written once and run
//! against each: memory and sled through [`Immediate`] (their synchronous
//! calls, awaited), the Redis Cluster backend as it is (in
//! `tests/redis_cluster.rs`, against a real cluster).
//!
//! Public (but hidden) only so that integration tests can run it; the
//! [`storage_conformance!`](crate::storage_conformance) macro writes one
//! `#[tokio::test]` per behaviour for a backend. Every behaviour gets a
//! fresh, empty store.
#![allow(missing_docs, async_fn_in_trait, clippy::unwrap_used)]

use std::any::Any;

use hookv_plugin::pb::{value, Kvpair, Value};

use super::{RedisCluster, Storage, StorageError};

/// A store the behaviours can run against: the operations the request path
/// needs, async.
pub trait Subject {
    async fn get(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError>;
    async fn get_many(
        &self,
        table: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<Value>>, StorageError>;
    async fn set(
        &self,
        table: &str,
        key: &str,
        value: Value,
    ) -> Result<Option<Value>, StorageError>;
    async fn set_many(
        &self,
        table: &str,
        pairs: &[(&str, Value)],
    ) -> Result<Vec<Option<Value>>, StorageError>;
    async fn del(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError>;
    async fn del_many(
        &self,
        table: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<Value>>, StorageError>;
    async fn contains(&self, table: &str, key: &str) -> Result<bool, StorageError>;
    async fn contains_many(&self, table: &str, keys: &[&str]) -> Result<Vec<bool>, StorageError>;
    async fn get_all(&self, table: &str) -> Result<Vec<Kvpair>, StorageError>;
    async fn scan(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Kvpair>, StorageError>;
    async fn tables(&self) -> Result<Vec<String>, StorageError>;
}

/// A synchronous [`Storage`] as a [`Subject`]; multi-key operations are its
/// single-key calls in order (what the server does with them).
pub struct Immediate<S> {
    store: S,
    /// Whatever must live as long as the store (a temporary directory).
    _guard: Option<Box<dyn Any>>,
}

impl<S: Storage> Immediate<S> {
    pub fn new(store: S) -> Self {
        Self {
            store,
            _guard: None,
        }
    }

    pub fn with_guard(store: S, guard: impl Any) -> Self {
        Self {
            store,
            _guard: Some(Box::new(guard)),
        }
    }
}

impl<S: Storage> Subject for Immediate<S> {
    async fn get(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        self.store.get(table, key)
    }
    async fn get_many(
        &self,
        table: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<Value>>, StorageError> {
        keys.iter().map(|k| self.store.get(table, k)).collect()
    }
    async fn set(
        &self,
        table: &str,
        key: &str,
        value: Value,
    ) -> Result<Option<Value>, StorageError> {
        self.store.put(table, key, value)
    }
    async fn set_many(
        &self,
        table: &str,
        pairs: &[(&str, Value)],
    ) -> Result<Vec<Option<Value>>, StorageError> {
        pairs
            .iter()
            .map(|(k, v)| self.store.put(table, k, v.clone()))
            .collect()
    }
    async fn del(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        self.store.del(table, key)
    }
    async fn del_many(
        &self,
        table: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<Value>>, StorageError> {
        keys.iter().map(|k| self.store.del(table, k)).collect()
    }
    async fn contains(&self, table: &str, key: &str) -> Result<bool, StorageError> {
        self.store.contains(table, key)
    }
    async fn contains_many(&self, table: &str, keys: &[&str]) -> Result<Vec<bool>, StorageError> {
        keys.iter().map(|k| self.store.contains(table, k)).collect()
    }
    async fn get_all(&self, table: &str) -> Result<Vec<Kvpair>, StorageError> {
        self.store.get_all(table)
    }
    async fn scan(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Kvpair>, StorageError> {
        self.store.scan(table, after, limit)
    }
    async fn tables(&self) -> Result<Vec<String>, StorageError> {
        self.store.tables()
    }
}

impl Subject for RedisCluster {
    async fn get(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        RedisCluster::get(self, table, key).await
    }
    async fn get_many(
        &self,
        table: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<Value>>, StorageError> {
        RedisCluster::get_many(self, table, keys).await
    }
    async fn set(
        &self,
        table: &str,
        key: &str,
        value: Value,
    ) -> Result<Option<Value>, StorageError> {
        RedisCluster::set(self, table, key, &value).await
    }
    async fn set_many(
        &self,
        table: &str,
        pairs: &[(&str, Value)],
    ) -> Result<Vec<Option<Value>>, StorageError> {
        let pairs: Vec<(&str, &Value)> = pairs.iter().map(|(k, v)| (*k, v)).collect();
        RedisCluster::set_many(self, table, &pairs).await
    }
    async fn del(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        RedisCluster::del(self, table, key).await
    }
    async fn del_many(
        &self,
        table: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<Value>>, StorageError> {
        RedisCluster::del_many(self, table, keys).await
    }
    async fn contains(&self, table: &str, key: &str) -> Result<bool, StorageError> {
        RedisCluster::contains(self, table, key).await
    }
    async fn contains_many(&self, table: &str, keys: &[&str]) -> Result<Vec<bool>, StorageError> {
        RedisCluster::contains_many(self, table, keys).await
    }
    async fn get_all(&self, table: &str) -> Result<Vec<Kvpair>, StorageError> {
        RedisCluster::get_all(self, table).await
    }
    async fn scan(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Kvpair>, StorageError> {
        RedisCluster::scan(self, table, after, limit).await
    }
    async fn tables(&self) -> Result<Vec<String>, StorageError> {
        RedisCluster::tables(self).await
    }
}

/// Writes one `#[tokio::test]` per behaviour of this module, each on the
/// fresh subject that `$make` (an expression giving a future) makes.
#[doc(hidden)]
#[macro_export]
macro_rules! storage_conformance {
    ($make:expr) => {
        $crate::storage_conformance!(@tests $make;
            set_returns_previous_and_get_reads_back,
            contains_and_del,
            all_value_types_round_trip,
            tables_are_isolated_whatever_their_names,
            get_all_is_sorted_by_key_and_reads_create_nothing,
            scan_pages_follow_get_all_order_and_cover_every_key_once,
            scan_cursor_edges,
            multi_key_operations_answer_in_request_order,
            big_tables_are_read_whole_and_in_pages,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let subject = $make.await;
                $crate::storage::behaviours::$name(&subject).await;
            }
        )*
    };
}

fn keys_of(pairs: &[Kvpair]) -> Vec<&str> {
    pairs.iter().map(|p| p.key.as_str()).collect()
}

pub async fn set_returns_previous_and_get_reads_back(s: &impl Subject) {
    assert_eq!(s.set("t", "k", "v1".into()).await.unwrap(), None);
    assert_eq!(
        s.set("t", "k", "v2".into()).await.unwrap(),
        Some("v1".into())
    );
    assert_eq!(s.get("t", "k").await.unwrap(), Some("v2".into()));
    assert_eq!(s.get("t", "missing").await.unwrap(), None);
    assert_eq!(s.get("missing", "k").await.unwrap(), None);
}

pub async fn contains_and_del(s: &impl Subject) {
    s.set("t", "k", 1i64.into()).await.unwrap();
    assert!(s.contains("t", "k").await.unwrap());
    assert!(!s.contains("t", "x").await.unwrap());
    assert!(!s.contains("nope", "k").await.unwrap());
    assert_eq!(s.del("t", "k").await.unwrap(), Some(1i64.into()));
    assert_eq!(s.del("t", "k").await.unwrap(), None);
    assert_eq!(s.del("nope", "k").await.unwrap(), None);
    assert!(!s.contains("t", "k").await.unwrap());
}

pub async fn all_value_types_round_trip(s: &impl Subject) {
    let values: Vec<Value> = vec![
        "text".into(),
        bytes::Bytes::from_static(b"\x00\xffbin").into(),
        i64::MIN.into(),
        (-0.5f64).into(),
        1.0f64.into(),
        true.into(),
        false.into(),
        Value::from(value::Value::String(String::new())),
        Value::from(value::Value::Binary(bytes::Bytes::new())),
        0i64.into(),
    ];
    for (i, v) in values.iter().enumerate() {
        s.set("types", &i.to_string(), v.clone()).await.unwrap();
    }
    for (i, v) in values.iter().enumerate() {
        assert_eq!(
            s.get("types", &i.to_string()).await.unwrap().as_ref(),
            Some(v)
        );
    }
    // A float stays a float: 1.0 does not come back as the integer 1.
    assert_ne!(s.get("types", "4").await.unwrap(), Some(1i64.into()));
}

pub async fn tables_are_isolated_whatever_their_names(s: &impl Subject) {
    s.set("a", "b:c", "1".into()).await.unwrap();
    s.set("a:b", "c", "2".into()).await.unwrap();
    s.set("a\0", "x", "3".into()).await.unwrap();
    s.set("", "", "empty".into()).await.unwrap();
    s.set("ünï/cødé 表", "ключ", "4".into()).await.unwrap();
    // Hash tags (Redis Cluster) and glob characters (SCAN MATCH) in names.
    s.set("{tag}1", "k", "5".into()).await.unwrap();
    s.set("{tag}2", "k", "6".into()).await.unwrap();
    s.set("*", "k", "7".into()).await.unwrap();
    assert_eq!(s.get("a", "b:c").await.unwrap(), Some("1".into()));
    assert_eq!(s.get("a:b", "c").await.unwrap(), Some("2".into()));
    assert_eq!(s.get("a", "c").await.unwrap(), None);
    assert_eq!(s.get("", "").await.unwrap(), Some("empty".into()));
    assert_eq!(
        s.get("ünï/cødé 表", "ключ").await.unwrap(),
        Some("4".into())
    );
    assert_eq!(s.get("{tag}1", "k").await.unwrap(), Some("5".into()));
    assert_eq!(s.get("{tag}2", "k").await.unwrap(), Some("6".into()));
    for (table, key) in [
        ("a", "b:c"),
        ("a:b", "c"),
        ("a\0", "x"),
        ("", ""),
        ("*", "k"),
    ] {
        let pairs = s.get_all(table).await.unwrap();
        assert_eq!(keys_of(&pairs), [key], "table {table:?}");
    }
    assert_eq!(
        s.tables().await.unwrap(),
        [
            "",
            "*",
            "a",
            "a\0",
            "a:b",
            "{tag}1",
            "{tag}2",
            "ünï/cødé 表"
        ]
    );
}

pub async fn get_all_is_sorted_by_key_and_reads_create_nothing(s: &impl Subject) {
    for k in ["b", "a", "c", "aa"] {
        s.set("t", k, k.into()).await.unwrap();
    }
    let pairs = s.get_all("t").await.unwrap();
    assert_eq!(keys_of(&pairs), ["a", "aa", "b", "c"]);
    assert_eq!(pairs[0].value, Some("a".into()));

    assert!(s.get_all("ghost").await.unwrap().is_empty());
    s.get("ghost", "k").await.unwrap();
    s.get_many("ghost", &["k", "j"]).await.unwrap();
    s.contains("ghost", "k").await.unwrap();
    s.contains_many("ghost", &["k", "j"]).await.unwrap();
    s.del("ghost", "k").await.unwrap();
    s.del_many("ghost", &["k"]).await.unwrap();
    assert!(s.scan("ghost", None, 10).await.unwrap().is_empty());
    assert_eq!(s.tables().await.unwrap(), ["t"]);
    // A table whose last key is removed is gone.
    s.del_many("t", &["a", "aa", "b", "c"]).await.unwrap();
    assert!(s.tables().await.unwrap().is_empty());
}

pub async fn scan_pages_follow_get_all_order_and_cover_every_key_once(s: &impl Subject) {
    let keys = [
        "b", "", "a", "\0", "aa", "é", "a\0", "Z", "10", "9", "ключ", "b ",
    ];
    for (i, k) in keys.iter().enumerate() {
        s.set("t", k, (i as i64).into()).await.unwrap();
    }
    // Neighbouring tables whose names extend this one's.
    s.set("t\0", "a", "x".into()).await.unwrap();
    s.set("tt", "a", "x".into()).await.unwrap();
    s.set("", "t", "x".into()).await.unwrap();
    let all = s.get_all("t").await.unwrap();
    assert_eq!(all.len(), keys.len());
    for limit in [1, 2, 5, keys.len(), keys.len() + 1, 1000] {
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        // Bounded: a scan that does not advance must fail, not hang.
        for _ in 0..=keys.len() {
            let page = s.scan("t", after.as_deref(), limit).await.unwrap();
            assert!(page.len() <= limit);
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            paged.extend(page);
        }
        assert_eq!(paged, all, "limit {limit}");
    }
}

pub async fn scan_cursor_edges(s: &impl Subject) {
    for k in ["", "a", "b", "c"] {
        s.set("t", k, k.into()).await.unwrap();
    }
    // "" is a key: after Some("") skips it alone, None includes it.
    assert_eq!(keys_of(&s.scan("t", None, 2).await.unwrap()), ["", "a"]);
    assert_eq!(
        keys_of(&s.scan("t", Some(""), 2).await.unwrap()),
        ["a", "b"]
    );
    // A cursor between keys, or past the end.
    assert_eq!(
        keys_of(&s.scan("t", Some("aa"), 10).await.unwrap()),
        ["b", "c"]
    );
    assert!(s.scan("t", Some("c"), 10).await.unwrap().is_empty());
    assert!(s.scan("t", Some("zzz"), 10).await.unwrap().is_empty());
    // No pairs asked, or none there; values come along.
    assert!(s.scan("t", None, 0).await.unwrap().is_empty());
    assert_eq!(
        s.scan("t", Some("b"), 1).await.unwrap(),
        vec![Kvpair::new("c", "c".into())]
    );
    // A key deleted between pages: the scan goes on after it.
    let first = s.scan("t", None, 3).await.unwrap();
    assert_eq!(keys_of(&first), ["", "a", "b"]);
    s.del("t", "b").await.unwrap();
    assert_eq!(keys_of(&s.scan("t", Some("b"), 3).await.unwrap()), ["c"]);
}

pub async fn multi_key_operations_answer_in_request_order(s: &impl Subject) {
    let old = s
        .set_many("t", &[("b", "1".into()), ("a", "2".into())])
        .await
        .unwrap();
    assert_eq!(old, [None, None]);
    // A key given twice: the second answer is what the first one wrote.
    let old = s
        .set_many(
            "t",
            &[("a", "3".into()), ("c", "4".into()), ("a", "5".into())],
        )
        .await
        .unwrap();
    assert_eq!(old, [Some("2".into()), None, Some("3".into())]);
    assert_eq!(
        s.get_many("t", &["c", "x", "a", "b", "a"]).await.unwrap(),
        [
            Some("4".into()),
            None,
            Some("5".into()),
            Some("1".into()),
            Some("5".into())
        ]
    );
    assert_eq!(
        s.contains_many("t", &["x", "a", "c"]).await.unwrap(),
        [false, true, true]
    );
    // Nothing asked, nothing answered (and nothing refused).
    assert!(s.get_many("t", &[]).await.unwrap().is_empty());
    assert!(s.set_many("t", &[]).await.unwrap().is_empty());
    assert!(s.contains_many("t", &[]).await.unwrap().is_empty());
    assert!(s.del_many("t", &[]).await.unwrap().is_empty());
    // A key removed twice: gone the second time.
    assert_eq!(
        s.del_many("t", &["a", "x", "a", "b"]).await.unwrap(),
        [Some("5".into()), None, None, Some("1".into())]
    );
    assert_eq!(keys_of(&s.get_all("t").await.unwrap()), ["c"]);
}

pub async fn big_tables_are_read_whole_and_in_pages(s: &impl Subject) {
    // More pairs than one HSCAN reply brings (1024), values of every kind.
    let n: usize = 3000;
    let keys: Vec<String> = (0..n).map(|i| format!("k{:05}", (i * 7919) % n)).collect();
    let pairs: Vec<(&str, Value)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let v: Value = match i % 3 {
                0 => (i as i64).into(),
                1 => format!("v{i}").into(),
                _ => (i as f64 / 2.0).into(),
            };
            (k.as_str(), v)
        })
        .collect();
    s.set_many("big", &pairs).await.unwrap();
    let all = s.get_all("big").await.unwrap();
    assert_eq!(all.len(), n);
    assert!(
        all.windows(2).all(|w| w[0].key < w[1].key),
        "sorted, once each"
    );
    let mut sorted = pairs.clone();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (got, (key, value)) in all.iter().zip(&sorted) {
        assert_eq!((got.key.as_str(), got.value.as_ref()), (*key, Some(value)));
    }
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..=n / 700 + 1 {
        let page = s.scan("big", after.as_deref(), 700).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        paged.extend(page);
    }
    assert_eq!(paged, all);
}

#[cfg(test)]
mod memory {
    use super::Immediate;
    use crate::storage::MemTable;

    crate::storage_conformance!(async { Immediate::new(MemTable::new()) });
}

#[cfg(test)]
mod sled {
    use super::Immediate;
    use crate::storage::SledDb;

    crate::storage_conformance!(async {
        let dir = tempfile::tempdir().unwrap();
        let db = SledDb::open(dir.path().join("db")).unwrap();
        Immediate::with_guard(db, dir)
    });
}
