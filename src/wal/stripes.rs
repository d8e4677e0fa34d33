//! Stripe locks: a write holds the lock of its (table, key) from applying
//! it to appending its record (or undoing it), so each key is logged in the
//! order it was applied (see the module docs of `wal`, "Pieces").

use std::sync::{Mutex, MutexGuard};

use super::commit::lock;

/// Number of stripe locks in a `WalStore`.
pub const STRIPES: usize = 64;

/// One stripe lock on its own cache line.
#[repr(align(64))]
#[derive(Default)]
struct Stripe(Mutex<()>);

/// Locks striped by (table, key): held from applying a write to appending
/// its record, and while undoing a write.
pub(super) struct Stripes {
    locks: Box<[Stripe]>,
    hasher: ahash::RandomState,
}

impl Stripes {
    pub(super) fn new() -> Self {
        Self {
            locks: (0..STRIPES).map(|_| Stripe::default()).collect(),
            hasher: ahash::RandomState::new(),
        }
    }

    pub(super) fn lock(&self, table: &str, key: &str) -> MutexGuard<'_, ()> {
        let i = self.hasher.hash_one((table, key)) as usize % STRIPES;
        lock(&self.locks[i].0)
    }

    /// Takes and releases every stripe in turn: every write applied before
    /// this call has its record appended (or is undone) when it returns.
    pub(super) fn pass(&self) {
        for stripe in self.locks.iter() {
            drop(lock(&stripe.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use hookv_plugin::pb::Value;

    use crate::storage::{MemTable, Storage, StorageError, StorageIter};
    use crate::wal::dir::segment_name;
    use crate::wal::options::Fsync;
    use crate::wal::record::{Next, Record};
    use crate::wal::testing::{options, read_all};
    use crate::wal::Wal;

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
                    Some(v) => self.mem.put("t", k, v),
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
        fn put(&self, _: &str, k: &str, v: Value) -> Result<Option<Value>, StorageError> {
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
                            store.put("t", key, format!("{t}:{i}").into()).unwrap();
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
}
