//! Keeping the audit trail out of the page cache (Linux: `posix_fadvise`).

use std::fs::File;

/// Keeps the audit trail from piling up in the page cache: it is written
/// once and read rarely, and at a million records a second it would grow
/// the cache by ~200 MB/s, evicting what the machine does use (and, on a VM
/// that hands freed memory back to its host, paying a host fault for every
/// fresh page). Every [`PageCache::WINDOW`] bytes, `posix_fadvise(DONTNEED)`
/// from the previous window's start to the end of the file starts writing
/// the new window to disk (without waiting) and drops the previous one,
/// written by then, from the cache. Linux only; elsewhere the kernel decides.
pub(super) struct PageCache {
    /// Where the previous window starts: the cache before it is dropped.
    previous: u64,
    /// Where the current window starts.
    current: u64,
    /// The end of our last write.
    end: u64,
}

impl PageCache {
    const WINDOW: u64 = 32 << 20;

    pub(super) fn new(file: &File) -> Self {
        let end = file.metadata().map_or(0, |m| m.len());
        Self {
            previous: end,
            current: end,
            end,
        }
    }

    pub(super) fn wrote(&mut self, file: &File, len: usize) {
        self.end += len as u64;
        if self.end - self.current < Self::WINDOW {
            return;
        }
        // A failure only leaves pages cached: nothing to report.
        #[cfg(target_os = "linux")]
        let _ = rustix::fs::fadvise(file, self.previous, None, rustix::fs::Advice::DontNeed);
        #[cfg(not(target_os = "linux"))]
        let _ = file;
        self.previous = self.current;
        self.current = self.end;
    }
}
