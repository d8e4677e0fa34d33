//! Failure: undoing the writes that never reached the log (see the module
//! docs of `wal`, "Failure").
//!
//! Next to each record in the buffer, the store keeps an *undo entry*: the
//! key's previous value, or the mark that it had none. Entries are dropped
//! as soon as their batch is as durable as the policy promises, which is
//! when its writes may be acknowledged; so when the log fails, what is left
//! undoes exactly the writes no client was told about.

use hookv_plugin::pb::Value;
use prost::Message;
use tracing::{error, warn};

use super::record::{Next, Reader, Record};
use super::segment::Io;
use super::shared::Shared;

/// Bytes after the value in an undo entry: whether there was one, and
/// its length.
pub(super) const UNDO_TRAILER: usize = 1 + 4;

/// Appends to `undo` the entry that undoes a write whose record is
/// appended at the same time: the key's previous value `old`, or the mark
/// that it had none. The table and key are in the record, so an entry is
/// only the value (protobuf), 1 if there was one (else 0), and the
/// value's length (u32 LE); a buffer of them is read newest first, from
/// its end ([`pop_undo`]), next to the records read oldest first.
pub(super) fn push_undo(undo: &mut Vec<u8>, old: Option<&Value>) {
    let start = undo.len();
    if let Some(v) = old {
        v.encode_raw(undo);
    }
    // Frames are at most 1 GiB, so a value always fits.
    let len = (undo.len() - start) as u32;
    undo.push(u8::from(old.is_some()));
    undo.extend_from_slice(&len.to_le_bytes());
}

/// Takes the newest entry off `undo`: the value to put back, or `None`
/// where the key is to be deleted.
fn pop_undo(undo: &mut Vec<u8>) -> Option<Result<Option<Value>, String>> {
    let (rest, len) = undo.split_last_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    let Some((&had, rest)) = rest.split_last() else {
        undo.clear();
        return Some(Err("an undo entry cut short".into()));
    };
    let Some(start) = rest.len().checked_sub(len) else {
        undo.clear();
        return Some(Err(format!(
            "an undo entry of {len} bytes overruns the buffer"
        )));
    };
    let entry = match had {
        0 => Ok(None),
        _ => Value::decode(&rest[start..])
            .map(Some)
            .map_err(|e| format!("a bad value in an undo entry: {e}")),
    };
    undo.truncate(start);
    Some(entry)
}

/// Stops the log for good because of `reason` (logged once), undoes
/// every write whose record is not durable, then tells the barriers. A
/// failure of the last write, while closing, still counts: whoever waits
/// for it must hear that it failed.
///
/// Called with `io` held (so no batch can be written meanwhile); its
/// `batch` and `undo` hold the batch that failed, if one did.
pub(super) fn fail(shared: &Shared, io: &mut Io, reason: String) {
    // From here on appends are refused (and undone by their writers), so
    // these are all the writes left to undo.
    let (first, records, undo) = shared.commit.fail(reason.clone());
    if first {
        error!(dir = %shared.dir.display(), error = %reason, "write-ahead log failed; refusing writes from now on (reads still work)");
    }
    // Newest first: the buffered writes, then the batch that failed.
    let undone = roll_back(shared, &records, undo)
        + roll_back(
            shared,
            &std::mem::take(&mut io.batch),
            std::mem::take(&mut io.undo),
        );
    if undone > 0 {
        warn!(
            dir = %shared.dir.display(),
            writes = undone,
            "write-ahead log: undid the writes that never reached the log (none of them was acknowledged)"
        );
    }
    // Only now may a client hear of the failure (its connection closes):
    // what it reads next no longer shows its unlogged writes.
    shared.commit.settle();
}

/// Undoes the writes of `records` (as appended) with their entries in
/// `undo`, newest first, each under the stripe lock of its key (so a
/// write racing the failure cannot slip in between); returns how many
/// were undone.
fn roll_back(shared: &Shared, records: &[u8], mut undo: Vec<u8>) -> u64 {
    // The table and key of each record, oldest first.
    let mut keys = Vec::new();
    let mut reader = Reader::new(records, records.len() as u64);
    let mut bad = None;
    loop {
        match reader.next() {
            Ok(Next::Record { record, .. }) => keys.push(match record {
                Record::Set { table, key, .. } | Record::Del { table, key } => (table, key),
            }),
            Ok(Next::End) => break,
            Ok(Next::Bad { reason, .. }) => {
                bad = Some(reason);
                break;
            }
            Err(e) => {
                bad = Some(e.to_string());
                break;
            }
        }
    }
    let mut undone = 0;
    while let Some((table, key)) = keys.pop() {
        let entry =
            pop_undo(&mut undo).unwrap_or_else(|| Err("fewer undo entries than records".into()));
        let _stripe = shared.stripes.lock(&table, &key);
        let restored = match entry {
            Ok(Some(value)) => shared.store.put(&table, &key, value).map(drop),
            Ok(None) => shared.store.del(&table, &key).map(drop),
            Err(reason) => {
                bad = Some(reason);
                break;
            }
        };
        match restored {
            Ok(()) => undone += 1,
            Err(e) => crate::log_limited!(
                error,
                dir = %shared.dir.display(),
                error = %e,
                "write-ahead log: storage refused to undo a write that never reached the log; it stays visible until a restart"
            ),
        }
    }
    // Cannot happen: both buffers are written only by `append`.
    if let Some(reason) = bad {
        error!(dir = %shared.dir.display(), %reason, "write-ahead log: cannot read what undoes the writes that never reached the log; they stay visible until a restart");
    }
    undone
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    use hookv_plugin::pb::{Kvpair, Value};

    use super::*;
    use crate::storage::{MemTable, Storage, StorageError, StorageIter};
    use crate::wal::commit::lock;
    use crate::wal::options::Fsync;
    use crate::wal::stop::Stopped;
    use crate::wal::testing::{break_segment, dump, open, options, restore_segment};
    use crate::wal::writer::write_inline;
    use crate::wal::Wal;

    #[test]
    fn after_a_failed_inline_write_nothing_later_is_written_or_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, store, _) = open(dir.path(), Fsync::Everysec);
        store.put("t", "ok", "0".into()).unwrap();
        assert!(write_inline(&wal.shared));
        let good = wal.shared.commit.progress().written;
        assert_eq!(good, 1);

        let file = break_segment(&wal);
        store.put("t", "lost", "1".into()).unwrap();
        assert!(write_inline(&wal.shared), "it tried, and failed");
        // The failure is known before anyone else may write: even once the
        // cause goes away, the log takes and acknowledges nothing more.
        restore_segment(&wal, file);
        assert!(store.put("t", "later", "2".into()).is_err());
        assert!(write_inline(&wal.shared));
        let p = wal.shared.commit.progress();
        assert_eq!(p.written, good, "nothing after the failure looks written");
        let stopped = wal.shared.commit.stop.settled();
        assert!(matches!(stopped, Some(Stopped::Failed(_))), "{stopped:?}");
        drop((wal, store));
        // The file holds exactly what was acknowledged.
        let (_wal, store, _) = open(dir.path(), Fsync::Everysec);
        assert_eq!(
            dump(store.as_ref()),
            vec![("t".into(), vec![Kvpair::new("ok", "0".into())])]
        );
    }

    #[test]
    fn a_failed_log_undoes_every_write_not_yet_durable_newest_first() {
        for policy in [Fsync::Always, Fsync::Everysec, Fsync::No] {
            let dir = tempfile::tempdir().unwrap();
            let (wal, store, mem) = open(dir.path(), policy);
            store.put("t", "a", "0".into()).unwrap();
            store.put("t", "b", "0".into()).unwrap();
            wal.sync().unwrap();
            let durable = dump(mem.as_ref());

            let _file = break_segment(&wal);
            // Several writes to one key, deletes, a key created then
            // deleted; buffered together (the test holds the segment).
            let io = lock(&wal.shared.io);
            store.put("t", "a", "1".into()).unwrap();
            store.put("t", "a", "2".into()).unwrap();
            assert_eq!(store.del("t", "b").unwrap(), Some("0".into()));
            store.put("t", "new", "1".into()).unwrap();
            store.del("t", "new").unwrap();
            store.put("t", "new", "2".into()).unwrap();
            store.put("u", "other", "1".into()).unwrap();
            drop(io);
            assert!(wal.sync().is_err(), "{policy:?}");
            // Back to what was durable when the log failed.
            assert_eq!(dump(mem.as_ref()), durable, "{policy:?}");
            assert!(store.put("t", "a", "3".into()).is_err());
            assert_eq!(mem.get("t", "a").unwrap(), Some("0".into()));
        }
    }

    /// Stops each armed call at a point until the test opens it.
    #[derive(Default)]
    struct Gate {
        armed: AtomicBool,
        /// (a call is waiting, the gate is open)
        state: Mutex<(bool, bool)>,
        cv: Condvar,
    }

    impl Gate {
        fn pass(&self) {
            if !self.armed.load(Ordering::Acquire) {
                return;
            }
            let mut st = self.state.lock().unwrap();
            st.0 = true;
            self.cv.notify_all();
            while !st.1 {
                st = self.cv.wait(st).unwrap();
            }
        }

        fn wait_until_reached(&self) {
            let st = self.state.lock().unwrap();
            let (st, waited) = self
                .cv
                .wait_timeout_while(st, Duration::from_secs(10), |st| !st.0)
                .unwrap();
            assert!(!waited.timed_out() && st.0, "the gate was never reached");
        }

        fn open(&self) {
            self.state.lock().unwrap().1 = true;
            self.cv.notify_all();
        }
    }

    /// A memory store that stops at its armed gates: in `set` of the key
    /// `gated` after applying it, and in `get_iter` before and after
    /// reading.
    #[derive(Default)]
    struct Gated {
        mem: MemTable,
        set: Gate,
        before_read: Gate,
        after_read: Gate,
    }

    impl Storage for Gated {
        fn get(&self, t: &str, k: &str) -> Result<Option<Value>, StorageError> {
            self.mem.get(t, k)
        }
        fn put(&self, t: &str, k: &str, v: Value) -> Result<Option<Value>, StorageError> {
            let old = self.mem.put(t, k, v);
            if k == "gated" {
                self.set.pass();
            }
            old
        }
        fn contains(&self, t: &str, k: &str) -> Result<bool, StorageError> {
            self.mem.contains(t, k)
        }
        fn del(&self, t: &str, k: &str) -> Result<Option<Value>, StorageError> {
            self.mem.del(t, k)
        }
        fn get_iter(&self, t: &str) -> Result<StorageIter, StorageError> {
            self.before_read.pass();
            let iter = self.mem.get_iter(t);
            self.after_read.pass();
            iter
        }
        fn tables(&self) -> Result<Vec<String>, StorageError> {
            self.mem.tables()
        }
    }

    #[test]
    fn a_write_applied_as_the_log_fails_undoes_itself() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(Gated::default());
        let (wal, store) = Wal::open(
            options(dir.path(), Fsync::Everysec, 1 << 30),
            Path::new("/"),
            inner.clone() as Arc<dyn Storage>,
        )
        .unwrap();
        store.put("t", "gated", "old".into()).unwrap();
        wal.sync().unwrap();
        inner.set.armed.store(true, Ordering::Release);
        std::thread::scope(|s| {
            // Past the "stopped" check and applied; its record comes next.
            let racing = s.spawn(|| store.put("t", "gated", "new".into()));
            inner.set.wait_until_reached();
            fail(
                &wal.shared,
                &mut lock(&wal.shared.io),
                "a test failure".into(),
            );
            inner.set.open();
            let refused = racing.join().unwrap();
            assert!(
                matches!(&refused, Err(e @ StorageError::Layer(_)) if e.to_string().contains("a test failure")),
                "{refused:?}"
            );
        });
        assert_eq!(inner.mem.get("t", "gated").unwrap(), Some("old".into()));
    }

    #[test]
    fn a_snapshot_never_keeps_a_write_the_failure_undid() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let inner = Arc::new(Gated::default());
        inner.before_read.armed.store(true, Ordering::Release);
        inner.after_read.armed.store(true, Ordering::Release);
        let (wal, store) = Wal::open(
            options(d, Fsync::No, 1),
            Path::new("/"),
            inner.clone() as Arc<dyn Storage>,
        )
        .unwrap();
        // The first write fills the segment past `compact_bytes`: the
        // writer rotates, and the compactor stops before reading storage.
        store.put("t", "a", "1".into()).unwrap();
        wal.sync().unwrap();
        inner.before_read.wait_until_reached();
        // A write whose record cannot be written until the snapshot has
        // read it (the test holds the segment), and then fails.
        let _file = break_segment(&wal);
        let io = lock(&wal.shared.io);
        store.put("t", "late", "x".into()).unwrap();
        inner.before_read.open();
        inner.after_read.wait_until_reached();
        drop(io);
        inner.after_read.open();
        assert!(wal.sync().is_err());
        assert_eq!(inner.mem.get("t", "late").unwrap(), None);
        wal.close();
        drop((wal, store));

        let (_wal, store, _) = open(d, Fsync::No);
        assert_eq!(
            dump(store.as_ref()),
            vec![("t".into(), vec![Kvpair::new("a", "1".into())])]
        );
    }

    #[test]
    fn a_failed_last_write_on_close_is_reported_to_whoever_waits() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, store, _) = open(dir.path(), Fsync::Everysec);
        let _file = break_segment(&wal);
        store.put("t", "a", "1".into()).unwrap();
        wal.close();
        let stopped = wal.shared.commit.stop.settled();
        assert!(matches!(stopped, Some(Stopped::Failed(_))), "{stopped:?}");
        // `sync_all` (what the hook's shutdown calls) returns, with the error.
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = Arc::clone(&wal.shared);
        std::thread::spawn(move || tx.send(shared.commit.sync_all().is_err()).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
    }
}
