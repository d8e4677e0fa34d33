//! Recovery: replaying the log into storage on start, before the server
//! accepts a connection, cutting a torn last write and refusing anything
//! else that is bad (see the module docs of `wal`, "Recovery").

use std::fs::{self, File, OpenOptions};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::dir::{list, segment_name, snapshot_name, sync_dir};
use super::error::{io_error, WalError};
use super::record::{Next, Reader, Record};
use super::scan::{rest_is_zero, Scanner};
use crate::storage::Storage;

/// How a replayed file ended.
struct Replayed {
    records: u64,
    /// Bytes of good records.
    good_len: u64,
    /// A torn last write: (offset, reason).
    torn: Option<(u64, String)>,
}

/// Applies every record of `path` to `store`. A torn tail is accepted only
/// when `last` (the last segment); any other bad record is an error.
fn replay_file(path: &Path, store: &dyn Storage, last: bool) -> Result<Replayed, WalError> {
    let file = File::open(path).map_err(io_error(path, "open the log file"))?;
    let len = file
        .metadata()
        .map_err(io_error(path, "read the log file's size"))?
        .len();
    let mut reader = Reader::new(BufReader::with_capacity(1 << 20, file), len);
    let mut records = 0;
    loop {
        match reader.next().map_err(io_error(path, "read the log file"))? {
            Next::End => {
                return Ok(Replayed {
                    records,
                    good_len: len,
                    torn: None,
                })
            }
            Next::Record { offset, record } => {
                let applied = match record {
                    Record::Set { table, key, value } => store.put(&table, &key, value),
                    Record::Del { table, key } => store.del(&table, &key),
                };
                applied.map_err(|source| WalError::Replay {
                    path: path.to_owned(),
                    offset,
                    source,
                })?;
                records += 1;
            }
            Next::Bad {
                offset,
                reason,
                tail,
            } => {
                let corrupt = |reason| WalError::Corrupt {
                    path: path.to_owned(),
                    offset,
                    reason,
                };
                if !last {
                    return Err(corrupt(reason));
                }
                if tail {
                    // It looks torn; a crash leaves only a prefix of what
                    // was written, so nothing whole may follow.
                    let damage = Scanner::open(path, len)?.damage(offset)?;
                    if let Some(damage) = damage {
                        return Err(corrupt(format!("{reason}, {damage}")));
                    }
                } else if !rest_is_zero(path, offset)? {
                    return Err(corrupt(reason));
                }
                return Ok(Replayed {
                    records,
                    good_len: offset,
                    torn: Some((offset, reason)),
                });
            }
        }
    }
}

/// What recovery found and left: the base snapshot's index and size, and
/// the segment to append to (index, its good length) if one exists.
pub(super) struct Recovered {
    pub(super) snapshot: Option<(u64, u64)>,
    pub(super) last_segment: Option<(u64, u64)>,
    pub(super) records: u64,
}

/// Replays `dir` into `store`, cuts a torn tail, and removes leftovers of an
/// interrupted compaction. See the module docs, "Recovery".
pub(super) fn recover(dir: &Path, store: &dyn Storage) -> Result<Recovered, WalError> {
    let listing = list(dir)?;
    let mut records = 0;
    let base = listing.snapshots.last_key_value().map(|(&k, p)| (k, p));
    let mut snapshot = None;
    if let Some((k, path)) = base {
        let replayed = replay_file(path, store, false)?;
        records += replayed.records;
        snapshot = Some((k, replayed.good_len));
    }
    let first_needed = snapshot.map_or(1, |(k, _)| k);
    let live: Vec<(u64, &PathBuf)> = listing
        .segments
        .range(first_needed..)
        .map(|(&i, p)| (i, p))
        .collect();
    if let Some(&(first, _)) = live.first() {
        if first != first_needed {
            let after = match snapshot {
                Some((k, _)) => format!("after {}", snapshot_name(k)),
                None => "with no snapshot".to_owned(),
            };
            return Err(WalError::Missing {
                dir: dir.to_owned(),
                problem: format!(
                    "{} is missing ({after}, replay must start there, but the oldest segment is {})",
                    segment_name(first_needed),
                    segment_name(first)
                ),
            });
        }
    }
    for pair in live.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(WalError::Missing {
                dir: dir.to_owned(),
                problem: format!(
                    "{} is missing (between {} and {})",
                    segment_name(pair[0].0 + 1),
                    segment_name(pair[0].0),
                    segment_name(pair[1].0)
                ),
            });
        }
    }
    let mut last_segment = None;
    for (n, &(index, path)) in live.iter().enumerate() {
        let last = n + 1 == live.len();
        let replayed = replay_file(path, store, last)?;
        records += replayed.records;
        if let Some((offset, reason)) = &replayed.torn {
            let size = fs::metadata(path)
                .map_err(io_error(path, "read the log file's size"))?
                .len();
            warn!(
                file = %path.display(),
                offset,
                cut_bytes = size - offset,
                reason = %reason,
                "write-ahead log: cutting off a torn last record (a write interrupted by a crash)"
            );
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_error(path, "open the log file to cut its torn tail"))?;
            file.set_len(*offset)
                .and_then(|()| file.sync_all())
                .map_err(io_error(path, "cut the torn tail of the log file"))?;
        }
        if last {
            last_segment = Some((index, replayed.good_len));
        }
    }
    // Nothing is removed before the whole log has replayed: a refused start
    // leaves every file as it was.
    for tmp in &listing.temps {
        fs::remove_file(tmp).map_err(io_error(tmp, "remove an unfinished snapshot"))?;
        info!(file = %tmp.display(), "removed a snapshot left unfinished by a crash");
    }
    // Leftovers of a compaction that made its snapshot but did not get to
    // delete what it replaces.
    let obsolete = listing
        .segments
        .range(..first_needed)
        .chain(listing.snapshots.range(..first_needed));
    let mut removed = false;
    for (_, path) in obsolete {
        fs::remove_file(path).map_err(io_error(path, "remove a log file the snapshot replaces"))?;
        removed = true;
    }
    if removed || !listing.temps.is_empty() {
        sync_dir(dir)?;
    }
    Ok(Recovered {
        snapshot,
        last_segment,
        records,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use hookv_plugin::pb::Kvpair;

    use super::*;
    use crate::storage::MemTable;
    use crate::wal::dir::snapshot_tmp_name;
    use crate::wal::options::Fsync;
    use crate::wal::record::HEADER;
    use crate::wal::scan::SCAN_WINDOW;
    use crate::wal::testing::{del, dump, names, open, open_err, set};

    #[test]
    fn leftovers_of_an_interrupted_compaction_are_handled() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Segment 1: the history before compaction; segment 2 after rotation.
        let mut seg1 = set("t", "a", "1");
        seg1.extend(set("t", "gone", "x"));
        seg1.extend(del("t", "gone"));
        seg1.extend(set("t", "b", "1"));
        fs::write(d.join(segment_name(1)), &seg1).unwrap();
        let mut seg2 = set("t", "a", "2");
        seg2.extend(del("t", "b"));
        fs::write(d.join(segment_name(2)), &seg2).unwrap();
        // The snapshot read after rotation saw a=2 already, and b before its delete.
        let mut snap = set("t", "a", "2");
        snap.extend(set("t", "b", "1"));
        // Case 1: crashed while writing the snapshot: a .tmp with half of it.
        fs::write(d.join(snapshot_tmp_name(2)), &snap[..snap.len() - 3]).unwrap();
        let want = vec![("t".to_string(), vec![Kvpair::new("a", "2".into())])];
        let (wal, store, _) = open(d, Fsync::Always);
        assert_eq!(dump(store.as_ref()), want);
        assert_eq!(names(d), vec!["wal-000001.log", "wal-000002.log"]);
        drop((wal, store));
        // Case 2: snapshot renamed, old segment not yet deleted. Make the old
        // segment unreadable to prove replay does not need it.
        fs::write(d.join(snapshot_name(2)), &snap).unwrap();
        fs::write(d.join(segment_name(1)), b"garbage that would not replay").unwrap();
        let (wal, store, _) = open(d, Fsync::Always);
        assert_eq!(dump(store.as_ref()), want);
        assert_eq!(names(d), vec!["snapshot-000002.log", "wal-000002.log"]);
        drop((wal, store));
        // And it replays the same from what is left.
        let (_wal, store, _) = open(d, Fsync::Always);
        assert_eq!(dump(store.as_ref()), want);
    }

    #[test]
    fn missing_segments_stop_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join(segment_name(1)), set("t", "a", "1")).unwrap();
        fs::write(d.join(segment_name(3)), set("t", "a", "3")).unwrap();
        let err = open_err(d);
        assert!(
            err.to_string().contains("wal-000002.log is missing"),
            "{err}"
        );
        fs::remove_file(d.join(segment_name(1))).unwrap();
        let err = open_err(d);
        assert!(
            err.to_string().contains("wal-000001.log is missing"),
            "{err}"
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_corrupt_middle_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut seg = set("t", "a", "1");
        seg.extend(set("t", "b", "2"));
        let good = seg.len() as u64;
        let path = d.join(segment_name(1));
        // A torn tail, then zeros a crashed file system may leave: both cut.
        for tail in [&set("t", "c", "3")[..10], &[0u8; 100][..]] {
            let mut torn = seg.clone();
            torn.extend_from_slice(tail);
            fs::write(&path, &torn).unwrap();
            let (wal, store, _) = open(d, Fsync::Always);
            assert_eq!(store.get_all("t").unwrap().len(), 2);
            assert_eq!(fs::metadata(&path).unwrap().len(), good);
            drop((wal, store));
        }
        // A batch of records torn anywhere: the whole records in it
        // replay, the rest is cut. One of them is larger than the window
        // the torn-tail check reads, so it reads across windows.
        let big = "v".repeat(SCAN_WINDOW + 4096);
        let mut batch = set("t", "c", "3");
        batch.extend(set("t", "big", &big));
        batch.extend(del("t", "a"));
        let ends = [
            set("t", "c", "3").len(),
            batch.len() - del("t", "a").len(),
            batch.len(),
        ];
        let step = |cut: usize| {
            if cut < 64 || batch.len() - cut < 64 {
                1
            } else {
                65_537
            }
        };
        let mut cut = 1;
        while cut < batch.len() {
            let mut torn = seg.clone();
            torn.extend_from_slice(&batch[..cut]);
            fs::write(&path, &torn).unwrap();
            let store = MemTable::new();
            recover(d, &store).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            assert_eq!(
                fs::metadata(&path).unwrap().len(),
                good + whole.checked_sub(1).map_or(0, |i| ends[i] as u64),
                "cut at {cut}"
            );
            assert_eq!(
                store.get("t", "big").unwrap().is_some(),
                whole >= 2,
                "cut at {cut}"
            );
            cut += step(cut);
        }
        // Corruption in the first record with a good one after it.
        let mut bad = seg.clone();
        bad[HEADER + 2] ^= 1;
        fs::write(&path, &bad).unwrap();
        let err = open_err(d);
        let msg = err.to_string();
        assert!(
            msg.contains("wal-000001.log: corrupt record at byte offset 0"),
            "{msg}"
        );
        assert_eq!(fs::read(&path).unwrap(), bad, "a refused log is left alone");
    }

    /// Writes `bytes` as the only segment of `d`, expects the log to refuse
    /// to start naming the record at `offset`, and the file untouched.
    fn refused_at(d: &Path, bytes: &[u8], offset: usize) -> String {
        let path = d.join(segment_name(1));
        fs::write(&path, bytes).unwrap();
        let msg = open_err(d).to_string();
        assert!(
            msg.contains(&format!(
                "wal-000001.log: corrupt record at byte offset {offset}:"
            )),
            "{msg}"
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "a refused log is left alone"
        );
        msg
    }

    #[test]
    fn a_damaged_length_is_corruption_even_when_it_runs_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut seg = Vec::new();
        let mut starts = Vec::new();
        for i in 0..50 {
            starts.push(seg.len());
            seg.extend(set("t", &format!("k{i}"), &format!("v{i}")));
        }
        // Any record but the last: whole records follow it.
        for (record, byte, flip) in [(25, 3, 0x80u8), (25, 3, 0x01), (0, 2, 0x10), (48, 3, 0x40)] {
            let mut bad = seg.clone();
            bad[starts[record] + byte] ^= flip;
            let msg = refused_at(d, &bad, starts[record]);
            assert!(msg.contains("whole record starts at byte offset"), "{msg}");
        }
        // The last record: it is whole, only its length is wrong.
        let last = starts[49];
        for (byte, flip) in [(3, 0x80u8), (3, 0x01), (0, 0x40)] {
            let mut bad = seg.clone();
            bad[last + byte] ^= flip;
            let msg = refused_at(d, &bad, last);
            assert!(msg.contains("length field is damaged"), "{msg}");
        }
        // Found after a record larger than a scan window, and itself larger.
        let big = "v".repeat(SCAN_WINDOW * 2);
        let mut log = set("t", "a", "1");
        log.extend(set("t", "big", &big));
        log.extend(set("t", "big2", &big));
        log[3] ^= 0x01;
        let msg = refused_at(d, &log, 0);
        let second = set("t", "a", "1").len();
        assert!(
            msg.contains(&format!("whole record starts at byte offset {second}")),
            "{msg}"
        );
    }

    #[test]
    fn only_the_last_segment_may_be_torn_and_never_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut torn = set("t", "a", "1");
        torn.extend_from_slice(&set("t", "b", "2")[..9]);
        fs::write(d.join(segment_name(1)), &torn).unwrap();
        fs::write(d.join(segment_name(2)), set("t", "c", "3")).unwrap();
        let msg = open_err(d).to_string();
        assert!(
            msg.contains("wal-000001.log: corrupt record at byte offset"),
            "{msg}"
        );
        // A snapshot is complete before it gets its name: a bad tail is corruption.
        fs::remove_file(d.join(segment_name(1))).unwrap();
        fs::write(d.join(snapshot_name(2)), &torn).unwrap();
        let msg = open_err(d).to_string();
        assert!(
            msg.contains("snapshot-000002.log: corrupt record at byte offset"),
            "{msg}"
        );
    }
}
