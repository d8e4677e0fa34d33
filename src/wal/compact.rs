//! Compaction: a background thread writes a snapshot of the storage, and
//! only once it is complete and durable deletes the segments it replaces
//! (see the module docs of `wal`, "Compaction", for why a snapshot read
//! while writes continue is right, and why a crash at any point loses
//! nothing).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use hookv_plugin::pb::Kvpair;
use tracing::{info, warn};

use super::dir::{list, snapshot_name, snapshot_tmp_name, sync_dir};
use super::error::{io_error, WalError};
use super::record::encode_record;
use super::shared::Shared;
use crate::storage::Storage;

/// Starts the compactor for the segments below `index` (the writer just
/// rotated to segment `index`). When it ends it posts the snapshot's size
/// (or `None`) to the writer, which joins it.
pub(super) fn spawn(shared: Arc<Shared>, index: u64) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("hookv-wal-compact".into())
        .spawn(move || {
            let started = Instant::now();
            let snapshot_bytes = match compact(&shared, index) {
                Ok(bytes) => {
                    crate::metrics::wal_compacted();
                    info!(
                        snapshot = snapshot_name(index),
                        bytes,
                        took = ?started.elapsed(),
                        "write-ahead log compacted"
                    );
                    Some(bytes)
                }
                Err(WalError::Cancelled) => None,
                Err(e) => {
                    warn!(error = %e, "write-ahead log compaction failed; will retry once the log has grown by compact_bytes again");
                    None
                }
            };
            shared.commit.compaction_done(snapshot_bytes);
        })
}

/// Writes `snapshot-{index}` from `store` and deletes what it replaces.
/// Returns the snapshot's size.
fn compact(shared: &Shared, index: u64) -> Result<u64, WalError> {
    let dir = &shared.dir;
    let store = shared.store.as_ref();
    let tmp = dir.join(snapshot_tmp_name(index));
    let result = write_snapshot(shared, store, &tmp).and_then(|bytes| {
        // The snapshot may hold writes whose records are not durable yet.
        // Should the log fail before they are, they are undone, and the
        // snapshot must not bring them back: wait until every write applied
        // before the snapshot was read is durable, or drop the snapshot.
        shared.stripes.pass();
        shared.commit.sync_all().map_err(|_| WalError::Cancelled)?;
        Ok(bytes)
    });
    let bytes = match result {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // A persistent backend must not hold a key the snapshot says is gone
    // once the segments that delete it are removed.
    store.flush()?;
    let path = dir.join(snapshot_name(index));
    fs::rename(&tmp, &path).map_err(io_error(&path, "rename the finished snapshot"))?;
    sync_dir(dir)?;
    let listing = list(dir)?;
    for (_, old) in listing
        .segments
        .range(..index)
        .chain(listing.snapshots.range(..index))
    {
        fs::remove_file(old).map_err(io_error(old, "remove a log file the snapshot replaces"))?;
    }
    sync_dir(dir)?;
    Ok(bytes)
}

fn write_snapshot(shared: &Shared, store: &dyn Storage, tmp: &Path) -> Result<u64, WalError> {
    let file = File::create(tmp).map_err(io_error(tmp, "create a snapshot"))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let mut bytes = 0u64;
    for table in store.tables()? {
        for pair in store.get_iter(&table)? {
            if shared.commit.closing() {
                return Err(WalError::Cancelled);
            }
            let Kvpair { key, value } = pair?;
            let Some(value) = value else { continue };
            buf.clear();
            encode_record(&mut buf, &table, &key, Some(&value));
            out.write_all(&buf)
                .map_err(io_error(tmp, "write a snapshot"))?;
            bytes += buf.len() as u64;
        }
    }
    let file = out
        .into_inner()
        .map_err(|e| io_error(tmp, "write a snapshot")(e.into_error()))?;
    file.sync_all().map_err(io_error(tmp, "fsync a snapshot"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use hookv_plugin::pb::Value;

    use super::*;
    use crate::storage::MemTable;
    use crate::wal::options::Fsync;
    use crate::wal::testing::{dump, names, open, options};
    use crate::wal::Wal;

    #[test]
    fn concurrent_writes_during_compaction_replay_to_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mem = Arc::new(MemTable::new());
        let (wal, store) = Wal::open(
            options(d, Fsync::No, 2048),
            d,
            mem.clone() as Arc<dyn Storage>,
        )
        .unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..3000u32 {
                        let key = format!("k{}", i % 37);
                        if i % 11 == t {
                            store.del("t", &key).unwrap();
                        } else {
                            store.put("t", &key, format!("{t}:{i}").into()).unwrap();
                        }
                        if i % 500 == 0 {
                            std::thread::yield_now();
                        }
                    }
                });
            }
        });
        // Compaction runs in the background: keep writing until one finished.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut i = 0u64;
        while list(d).unwrap().snapshots.is_empty() {
            assert!(Instant::now() < deadline, "no compaction: {:?}", names(d));
            store.put("t", "extra", Value::from(i as i64)).unwrap();
            i += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        wal.sync().unwrap();
        let before = dump(mem.as_ref());
        wal.close();
        drop((wal, store));
        let (_wal, store, _) = open(d, Fsync::No);
        assert_eq!(dump(store.as_ref()), before);
    }
}
