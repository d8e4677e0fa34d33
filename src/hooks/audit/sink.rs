//! Where formatted audit lines go: whole lines or nothing, and the counts
//! of records that never made it (dropped by a full queue, lost to a
//! failed write) written into the trail once a write succeeds.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use super::json::{push_time, push_u64};
use super::page_cache::PageCache;

/// Where formatted lines go.
///
/// Every write is of whole lines, and lands whole or not at all: a write
/// that fails part way (a full disk, a file-size limit) is cut back off the
/// file, so no half record is ever glued to the next one. The records of a
/// failed write are counted as lost, and once a write succeeds again a
/// `{"time":..,"event":"lost","count":N}` line says how many, so a gap in
/// the trail is never silent (nor is a full queue: `"event":"dropped"`).
pub(super) struct Sink<'a> {
    file: File,
    path: &'a Path,
    cache: PageCache,
    /// Records dropped by a full queue, not yet reported in the file.
    pub(super) dropped: u64,
    /// Records whose write failed, not yet reported in the file.
    pub(super) lost: u64,
    /// The last write failed (logged once until a write succeeds).
    failing: bool,
    /// A failed write left part of a line that could not be cut off: the
    /// next write starts on a new line.
    broken_line: bool,
}

impl<'a> Sink<'a> {
    /// Lines go to the end of `file` (opened for appending), at `path`.
    pub(super) fn new(file: File, path: &'a Path) -> Self {
        Self {
            cache: PageCache::new(&file),
            file,
            path,
            dropped: 0,
            lost: 0,
            failing: false,
            broken_line: false,
        }
    }

    /// fsyncs the file's data.
    pub(super) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Writes `out` (whole record lines) and empties it; if that fails, its
    /// records count as lost.
    pub(super) fn write(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            return;
        }
        // The gap comes before these records.
        self.report();
        if !self.append(out) {
            // Every record is one line: escaping leaves no raw newline in one.
            let lost = out.iter().filter(|&&b| b == b'\n').count() as u64;
            self.lost += lost;
            crate::metrics::audit_lost(lost);
        }
        out.clear();
    }

    /// Writes a line for each count of records missing from the file, if
    /// any; keeps the counts for a later try if it cannot.
    pub(super) fn report(&mut self) {
        if self.dropped == 0 && self.lost == 0 {
            return;
        }
        let mut lines = Vec::with_capacity(128);
        for (event, count) in [("dropped", self.dropped), ("lost", self.lost)] {
            if count > 0 {
                lines.extend_from_slice(b"{\"time\":");
                push_time(&mut lines, SystemTime::now());
                lines.extend_from_slice(b",\"event\":\"");
                lines.extend_from_slice(event.as_bytes());
                lines.extend_from_slice(b"\",\"count\":");
                push_u64(&mut lines, count);
                lines.extend_from_slice(b"}\n");
            }
        }
        if self.append(&lines) {
            if self.lost > 0 {
                crate::log_limited!(warn, lost = self.lost, path = %self.path.display(), "audit writes resumed; the records lost meanwhile are counted in the file");
            }
            self.dropped = 0;
            self.lost = 0;
        }
    }

    /// Appends `bytes` (whole lines) entirely, or leaves the file as it was
    /// (as far as it can: see `cut`). True if written. One `write` per call
    /// unless the kernel takes less, so a concurrent writer to the same file
    /// (during a reload) never splits a line.
    fn append(&mut self, bytes: &[u8]) -> bool {
        if self.broken_line {
            if !self.put(b"\n") {
                return false;
            }
            self.broken_line = false;
        }
        self.put(bytes)
    }

    fn put(&mut self, bytes: &[u8]) -> bool {
        // Where this write starts, to cut a partial write back off.
        let start = self.file.metadata().map(|m| m.len());
        let mut written = 0;
        let failure = loop {
            match self.file.write(&bytes[written..]) {
                Ok(0) => break std::io::Error::from(std::io::ErrorKind::WriteZero),
                Ok(n) => {
                    written += n;
                    if written == bytes.len() {
                        if self.failing {
                            crate::log_limited!(info, path = %self.path.display(), "audit writes succeed again");
                        }
                        self.failing = false;
                        self.cache.wrote(&self.file, written);
                        return true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break e,
            }
        };
        if !self.failing {
            crate::log_limited!(error, path = %self.path.display(), error = %failure, "audit write failed; records lost until writes succeed, then counted in an \"event\":\"lost\" line");
        }
        self.failing = true;
        if written > 0 {
            self.cut(start.ok(), written as u64);
        }
        false
    }

    /// Cuts the `partial` bytes of a failed write off the end of the file,
    /// if the file is exactly as long as this write left it (no one else
    /// appended meanwhile); otherwise the next write starts a new line.
    fn cut(&mut self, start: Option<u64>, partial: u64) {
        let now = self.file.metadata().map(|m| m.len()).ok();
        let cut = match (start, now) {
            (Some(start), Some(now)) if now == start + partial => self.file.set_len(start).is_ok(),
            _ => false,
        };
        if !cut {
            self.broken_line = true;
        }
    }
}
