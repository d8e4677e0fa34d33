//! [`WalStore`]: the log as a storage layer. It wraps the configured
//! storage the way a tower `Layer` wraps a service: every write is applied
//! to the inner store and its record appended under the key's stripe lock;
//! reads pass straight through (see the module docs of `wal`, "Pieces").

use std::sync::Arc;

use hookv_plugin::pb::{Kvpair, Value};
use prost::Message;

use super::error::WalError;
use super::record::{body_len, encode_record, HEADER};
use super::shared::Shared;
use super::stop::Stopped;
use super::undo::{push_undo, UNDO_TRAILER};
use crate::storage::{Storage, StorageError, StorageIter};

/// The storage wrapper [`Wal::open`](super::Wal::open) returns: applies
/// each write to the inner store and logs it under a per-key stripe lock
/// (see the module docs of `wal`).
pub struct WalStore {
    shared: Arc<Shared>,
}

impl WalStore {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn refuse_if_stopped(&self) -> Result<(), StorageError> {
        match self.shared.commit.stop.get() {
            Some(stopped) => Err(WalError::Stopped(stopped).into()),
            None => Ok(()),
        }
    }

    /// Logs a write applied under the caller's stripe lock: `bytes` holds
    /// its record (the first `record` bytes), then gets the entry that
    /// undoes it, which puts back `old`. If the log stopped after
    /// [`WalStore::refuse_if_stopped`] passed, the record is refused: the
    /// write is undone here, before the stripe lock is released, and
    /// refused.
    fn log(
        &self,
        mut bytes: Vec<u8>,
        record: usize,
        table: &str,
        key: &str,
        old: Option<Value>,
    ) -> Result<Option<Value>, StorageError> {
        push_undo(&mut bytes, old.as_ref());
        if self
            .shared
            .commit
            .append(&bytes[..record], &bytes[record..])
        {
            return Ok(old);
        }
        let undone = match old {
            Some(old) => self.shared.store.put(table, key, old).map(drop),
            None => self.shared.store.del(table, key).map(drop),
        };
        if let Err(e) = undone {
            crate::log_limited!(error, error = %e, "write-ahead log: storage refused to undo a write the log refused; it stays visible until a restart");
        }
        // The append was refused, so the log has stopped.
        let stopped = self.shared.commit.stop.get().unwrap_or(Stopped::Closed);
        Err(WalError::Stopped(stopped).into())
    }
}

impl Storage for WalStore {
    fn get(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        self.shared.store.get(table, key)
    }

    fn put(&self, table: &str, key: &str, value: Value) -> Result<Option<Value>, StorageError> {
        self.refuse_if_stopped()?;
        // Room for the record and for the entry that undoes it, guessing
        // that the old value is as large as the new one.
        let value_len = value.encoded_len();
        let mut bytes =
            Vec::with_capacity(HEADER + body_len(table, key, None) + 2 * value_len + UNDO_TRAILER);
        encode_record(&mut bytes, table, key, Some(&value));
        let record = bytes.len();
        let _stripe = self.shared.stripes.lock(table, key);
        let old = self.shared.store.put(table, key, value)?;
        self.log(bytes, record, table, key, old)
    }

    fn contains(&self, table: &str, key: &str) -> Result<bool, StorageError> {
        self.shared.store.contains(table, key)
    }

    fn del(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        self.refuse_if_stopped()?;
        let mut bytes = Vec::with_capacity(HEADER + body_len(table, key, None) + UNDO_TRAILER);
        encode_record(&mut bytes, table, key, None);
        let record = bytes.len();
        let _stripe = self.shared.stripes.lock(table, key);
        match self.shared.store.del(table, key)? {
            // Nothing changed: nothing to log.
            None => Ok(None),
            old => self.log(bytes, record, table, key, old),
        }
    }

    fn get_all(&self, table: &str) -> Result<Vec<Kvpair>, StorageError> {
        self.shared.store.get_all(table)
    }

    fn get_iter(&self, table: &str) -> Result<StorageIter, StorageError> {
        self.shared.store.get_iter(table)
    }

    fn scan(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Kvpair>, StorageError> {
        self.shared.store.scan(table, after, limit)
    }

    fn tables(&self) -> Result<Vec<String>, StorageError> {
        self.shared.store.tables()
    }

    fn table_exists(&self, table: &str) -> Result<Option<bool>, StorageError> {
        self.shared.store.table_exists(table)
    }

    /// Flushes the inner store, then writes and fsyncs the log.
    fn flush(&self) -> Result<(), StorageError> {
        self.shared.store.flush()?;
        self.shared.commit.sync_all().map_err(StorageError::from)
    }
}

#[cfg(test)]
mod tests {
    use hookv_plugin::pb::Kvpair;

    use crate::wal::options::Fsync;
    use crate::wal::testing::{dump, names, open};

    #[test]
    fn writes_survive_reopen_and_deletes_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        for policy in [Fsync::Always, Fsync::Everysec, Fsync::No] {
            let (wal, store, _) = open(dir.path(), policy);
            store.put("t", "a", "1".into()).unwrap();
            store.put("t", "b", "2".into()).unwrap();
            store.put("t", "a", "3".into()).unwrap();
            assert_eq!(store.del("t", "b").unwrap(), Some("2".into()));
            assert_eq!(store.del("t", "nothing").unwrap(), None);
            wal.close();
            assert!(
                store.put("t", "c", "x".into()).is_err(),
                "closed log refuses"
            );
            drop((wal, store));
            let (_wal, store, _) = open(dir.path(), policy);
            assert_eq!(
                dump(store.as_ref()),
                vec![("t".into(), vec![Kvpair::new("a", "3".into())])]
            );
        }
        assert_eq!(names(dir.path()), vec!["wal-000001.log"]);
    }
}
