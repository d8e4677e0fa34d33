//! The log directory: its files by name, listing them, fsyncing the
//! directory, and the lock that keeps a second server out (see the module
//! docs of `wal`, "Files").

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::error::{io_error, WalError};

/// The file in the log directory whose `flock` marks the log as in use.
pub const LOCK_FILE: &str = "LOCK";

/// Takes the directory's lock (Linux: an exclusive `flock` on
/// [`LOCK_FILE`], released when the returned file closes, even if the
/// process is killed). Elsewhere, no lock is taken.
pub(super) fn lock_dir(dir: &Path) -> Result<Option<File>, WalError> {
    #[cfg(target_os = "linux")]
    {
        let path = dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(&path, "open the lock file"))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(file)),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(WalError::Locked {
                dir: dir.to_owned(),
                file: LOCK_FILE,
            }),
            Err(e) => Err(io_error(&path, "lock the log directory")(e.into())),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        Ok(None)
    }
}

pub(super) fn segment_name(index: u64) -> String {
    format!("wal-{index:06}.log")
}

pub(super) fn snapshot_name(index: u64) -> String {
    format!("snapshot-{index:06}.log")
}

pub(super) fn snapshot_tmp_name(index: u64) -> String {
    format!("snapshot-{index:06}.tmp")
}

/// The log files of a directory, by kind and index.
#[derive(Debug, Default)]
pub(super) struct Listing {
    pub(super) segments: BTreeMap<u64, PathBuf>,
    pub(super) snapshots: BTreeMap<u64, PathBuf>,
    pub(super) temps: Vec<PathBuf>,
}

pub(super) fn list(dir: &Path) -> Result<Listing, WalError> {
    let mut listing = Listing::default();
    let entries = fs::read_dir(dir).map_err(io_error(dir, "list the log directory"))?;
    for entry in entries {
        let entry = entry.map_err(io_error(dir, "list the log directory"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let index = |prefix: &str, suffix: &str| {
            name.strip_prefix(prefix)
                .and_then(|s| s.strip_suffix(suffix))
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
        };
        if let Some(i) = index("wal-", ".log") {
            listing.segments.insert(i, entry.path());
        } else if let Some(i) = index("snapshot-", ".log") {
            listing.snapshots.insert(i, entry.path());
        } else if index("snapshot-", ".tmp").is_some() {
            listing.temps.push(entry.path());
        }
    }
    Ok(listing)
}

/// fsyncs a directory, so that files created, renamed or removed in it stay so.
pub(super) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "fsync the log directory"))
}

#[cfg(test)]
mod tests {
    use crate::wal::options::Fsync;
    use crate::wal::testing::{open, open_err};
    use crate::wal::WalError;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_log_directory_in_use_is_refused_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, store, _) = open(dir.path(), Fsync::No);
        store.put("t", "a", "1".into()).unwrap();
        let e = open_err(dir.path());
        assert!(matches!(e, WalError::Locked { .. }), "{e}");
        assert!(
            e.to_string().contains("in use by another hookv server"),
            "{e}"
        );
        // The refused open touched nothing: the first log still works.
        store.put("t", "b", "2".into()).unwrap();
        wal.close();
        let (_wal, store, _) = open(dir.path(), Fsync::No);
        assert_eq!(store.get("t", "b").unwrap(), Some("2".into()));
    }
}
