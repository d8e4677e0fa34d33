//! Telling a torn last write from damage (see the module docs of `wal`,
//! "Recovery"): a crash leaves only a *prefix* of what was written, so a bad
//! record at the end of the last segment is torn only if nothing whole
//! follows it, and it is not itself a whole record behind a damaged length.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::error::{io_error, WalError};
use super::record::{decode_body, HEADER, MAX_BODY, MIN_BODY, OP_DEL, OP_SET};

/// How many bytes [`Scanner`] reads at a time.
pub(super) const SCAN_WINDOW: usize = 1 << 20;

/// Bytes [`Scanner::damage`] may checksum besides the tail itself: enough
/// for any tail a crash leaves (most offsets fail on the length or the op
/// before any checksum is computed), far from the quadratic worst case of
/// a tail crafted to look like record headers at every offset.
const SCAN_BUDGET: u64 = 256 << 20;

/// Tells a torn last write from damage by looking for whole records after
/// the bad one, reading the file in windows of [`SCAN_WINDOW`] bytes.
pub(super) struct Scanner<'a> {
    path: &'a Path,
    file: File,
    /// The file's size.
    len: u64,
    /// The file's bytes from `base` on.
    window: Vec<u8>,
    base: u64,
    /// Bytes that may still be checksummed.
    budget: u64,
}

/// A valid record where [`Scanner::record_at`] looked, or not, or the
/// scan's budget ran out.
enum Found {
    Record,
    Nothing,
    OutOfBudget,
}

impl<'a> Scanner<'a> {
    pub(super) fn open(path: &'a Path, len: u64) -> Result<Self, WalError> {
        let file = File::open(path).map_err(io_error(path, "open the log file"))?;
        Ok(Self {
            path,
            file,
            len,
            window: Vec::new(),
            base: 0,
            budget: 0,
        })
    }

    /// `None` when the bad record at `offset`, which runs past the end of
    /// the file or fails its checksum right at it, may be a torn last
    /// write: nothing whole follows it, and it is not itself a whole
    /// record behind a damaged length. Otherwise why it is damage.
    pub(super) fn damage(&mut self, offset: u64) -> Result<Option<String>, WalError> {
        self.budget = SCAN_BUDGET.saturating_add(self.len - offset);
        let read = |e| io_error(self.path, "read the log file")(e);
        // The bad record itself, as the whole rest of the file under
        // another length: a flipped bit in the length of the last record.
        let rest = self.len - offset;
        if rest >= HEADER as u64 + MIN_BODY {
            let header = self.header(offset).map_err(read)?;
            let body_len = rest - HEADER as u64;
            let stored = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            if u64::from(stored) != body_len && body_len <= MAX_BODY {
                let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                match self.record_at(offset, body_len, crc).map_err(read)? {
                    Found::Record => {
                        return Ok(Some(format!(
                            "yet the {rest} bytes from it to the end of the file are a whole \
                             record of {body_len} bytes: its length field is damaged"
                        )))
                    }
                    Found::OutOfBudget => return Ok(Some(self.undecided(offset))),
                    Found::Nothing => {}
                }
            }
        }
        let mut pos = offset + 1;
        while pos + HEADER as u64 + MIN_BODY <= self.len {
            let header = self.header(pos).map_err(read)?;
            let body_len = u64::from(u32::from_le_bytes([
                header[0], header[1], header[2], header[3],
            ]));
            // The cheap test that almost every offset fails.
            if (MIN_BODY..=MAX_BODY).contains(&body_len)
                && body_len <= self.len - pos - HEADER as u64
            {
                let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                match self.record_at(pos, body_len, crc).map_err(read)? {
                    Found::Record => {
                        return Ok(Some(format!(
                            "yet a whole record starts at byte offset {pos} after it: \
                             this is damage, not a torn last write"
                        )))
                    }
                    Found::OutOfBudget => return Ok(Some(self.undecided(offset))),
                    Found::Nothing => {}
                }
            }
            pos += 1;
        }
        Ok(None)
    }

    fn undecided(&self, offset: u64) -> String {
        let budget = SCAN_BUDGET.saturating_add(self.len - offset);
        format!(
            "and the bytes after it could not be searched for whole records within \
             {budget} bytes of checksums, so it is not taken for a torn last write"
        )
    }

    /// Moves the window so that it holds the header at `pos` and the op
    /// after it (the file has them); returns where `pos` is in it.
    fn fill(&mut self, pos: u64) -> io::Result<usize> {
        let end = self.base + self.window.len() as u64;
        if pos < self.base || pos + HEADER as u64 + 1 > end {
            let n = (self.len - pos).min(SCAN_WINDOW as u64) as usize;
            self.window.resize(n, 0);
            self.base = pos;
            io::Seek::seek(&mut self.file, io::SeekFrom::Start(pos))?;
            self.file.read_exact(&mut self.window)?;
        }
        Ok((pos - self.base) as usize)
    }

    /// The header at `pos`.
    fn header(&mut self, pos: u64) -> io::Result<[u8; HEADER]> {
        let at = self.fill(pos)?;
        let mut header = [0u8; HEADER];
        header.copy_from_slice(&self.window[at..at + HEADER]);
        Ok(header)
    }

    /// Whether the `body_len` bytes after the header at `pos` (which fit
    /// in the file) are a valid body under the length `body_len` and the
    /// checksum `crc`.
    fn record_at(&mut self, pos: u64, body_len: u64, crc: u32) -> io::Result<Found> {
        let start = pos + HEADER as u64;
        let at = self.fill(pos)? + HEADER;
        if ![OP_SET, OP_DEL].contains(&self.window[at]) {
            return Ok(Found::Nothing);
        }
        if body_len > self.budget {
            return Ok(Found::OutOfBudget);
        }
        self.budget -= body_len;
        // Frames are at most 1 GiB, so a plausible length fits in a u32.
        let len_bytes = (body_len as u32).to_le_bytes();
        let mut actual = crc32c::crc32c(&len_bytes);
        let in_window = at + body_len as usize <= self.window.len();
        if in_window {
            actual = crc32c::crc32c_append(actual, &self.window[at..at + body_len as usize]);
        } else {
            let mut chunk = vec![0u8; 64 << 10];
            io::Seek::seek(&mut self.file, io::SeekFrom::Start(start))?;
            let mut left = body_len;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                self.file.read_exact(&mut chunk[..n])?;
                actual = crc32c::crc32c_append(actual, &chunk[..n]);
                left -= n as u64;
            }
        }
        if actual != crc {
            return Ok(Found::Nothing);
        }
        // Almost surely a record; make sure it is one we could replay.
        let valid = if in_window {
            decode_body(&self.window[at..at + body_len as usize]).is_ok()
        } else {
            let mut body = vec![0u8; body_len as usize];
            io::Seek::seek(&mut self.file, io::SeekFrom::Start(start))?;
            self.file.read_exact(&mut body)?;
            decode_body(&body).is_ok()
        };
        Ok(if valid { Found::Record } else { Found::Nothing })
    }
}

/// True when every byte of `path` from `offset` on is zero.
pub(super) fn rest_is_zero(path: &Path, offset: u64) -> Result<bool, WalError> {
    let mut file = File::open(path).map_err(io_error(path, "open the log file"))?;
    io::Seek::seek(&mut file, io::SeekFrom::Start(offset))
        .map_err(io_error(path, "read the log file"))?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io_error(path, "read the log file"))?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}
