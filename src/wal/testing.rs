//! Helpers for the log's unit tests: records, opening a log on a temp
//! dir, reading back what it holds, and making its segment fail.

use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use hookv_plugin::pb::{Kvpair, Value};

use super::commit::lock;
use super::dir::LOCK_FILE;
use super::options::{Fsync, WalOptions};
use super::record::{encode_record, Next, Reader};
use super::{Wal, WalError};
use crate::storage::{MemTable, Storage};

pub(super) fn set(table: &str, key: &str, value: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_record(&mut buf, table, key, Some(&Value::from(value)));
    buf
}

pub(super) fn del(table: &str, key: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_record(&mut buf, table, key, None);
    buf
}

pub(super) fn read_all(bytes: &[u8]) -> Vec<Next> {
    let mut reader = Reader::new(bytes, bytes.len() as u64);
    let mut out = Vec::new();
    loop {
        let next = reader.next().unwrap();
        let stop = !matches!(next, Next::Record { .. });
        out.push(next);
        if stop {
            return out;
        }
    }
}

pub(super) fn options(dir: &Path, fsync: Fsync, compact_bytes: u64) -> WalOptions {
    WalOptions {
        path: dir.to_owned(),
        fsync,
        compact_bytes,
    }
}

pub(super) fn open(dir: &Path, fsync: Fsync) -> (Arc<Wal>, Arc<dyn Storage>, Arc<MemTable>) {
    let mem = Arc::new(MemTable::new());
    let (wal, store) = Wal::open(
        options(dir, fsync, 1 << 30),
        Path::new("/"),
        mem.clone() as Arc<dyn Storage>,
    )
    .unwrap();
    (wal, Arc::new(store), mem)
}

pub(super) fn open_err(dir: &Path) -> WalError {
    match Wal::open(
        options(dir, Fsync::No, 1 << 20),
        dir,
        Arc::new(MemTable::new()),
    ) {
        Ok(_) => panic!("the log opened"),
        Err(e) => e,
    }
}

pub(super) fn dump(store: &dyn Storage) -> Vec<(String, Vec<Kvpair>)> {
    store
        .tables()
        .unwrap()
        .into_iter()
        .map(|t| {
            let pairs = store.get_all(&t).unwrap();
            (t, pairs)
        })
        .collect()
}

/// The log's files (the lock file aside).
pub(super) fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != LOCK_FILE)
        .collect();
    names.sort();
    names
}

/// Makes the segment's writes fail (EBADF) until the returned file is
/// put back with `restore_segment`.
pub(super) fn break_segment(wal: &Wal) -> Arc<File> {
    let mut io = lock(&wal.shared.io);
    let read_only = Arc::new(File::open(&io.segment.path).unwrap());
    std::mem::replace(&mut io.segment.file, read_only)
}

pub(super) fn restore_segment(wal: &Wal, file: Arc<File>) {
    lock(&wal.shared.io).segment.file = file;
}
