//! Log records: how one write is framed on disk, and how a file of them is
//! read back (see the module docs of `wal`, "Files").
//!
//! ```text
//! record = len: u32 LE | crc: u32 LE | body (len bytes)
//!          crc = CRC-32C over the 4 len bytes followed by the body
//! body   = op: u8 (1 = set, 2 = del)
//!        | table_len: u32 LE | table (UTF-8) | key_len: u32 LE | key (UTF-8)
//!        | value: protobuf `Value` (set only; the rest of the body)
//! ```

use std::io::{self, Read};

use hookv_plugin::pb::Value;
use prost::Message;

/// Bytes before a record's body: length and checksum.
pub(super) const HEADER: usize = 8;
pub(super) const OP_SET: u8 = 1;
pub(super) const OP_DEL: u8 = 2;
/// The smallest body a record can have: its op and two empty names.
pub(super) const MIN_BODY: u64 = 1 + 4 + 4;
/// No record we write is larger (a frame is at most 1 GiB); a larger length
/// inside the file is corruption, and is never allocated.
pub(super) const MAX_BODY: u64 = (1 << 30) + (1 << 20);

/// One logged operation, as replay applies it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Record {
    Set {
        table: String,
        key: String,
        value: Value,
    },
    Del {
        table: String,
        key: String,
    },
}

/// The size of the body of a record for (`table`, `key`, `value`).
pub(super) fn body_len(table: &str, key: &str, value: Option<&Value>) -> usize {
    1 + 4 + table.len() + 4 + key.len() + value.map_or(0, Message::encoded_len)
}

/// Appends the body of a record: a set of `value` on (`table`, `key`), or a
/// delete when `value` is `None`.
fn encode_body(buf: &mut Vec<u8>, table: &str, key: &str, value: Option<&Value>) {
    buf.push(if value.is_some() { OP_SET } else { OP_DEL });
    for s in [table, key] {
        // Frames are at most 1 GiB, so a name always fits.
        buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    if let Some(v) = value {
        v.encode_raw(buf);
    }
}

/// Appends the framed record for `op` on (`table`, `key`) to `buf`; `value`
/// is `Some` for a set.
pub(super) fn encode_record(buf: &mut Vec<u8>, table: &str, key: &str, value: Option<&Value>) {
    buf.reserve(HEADER + body_len(table, key, value));
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    encode_body(buf, table, key, value);
    let len = ((buf.len() - start - HEADER) as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &buf[start + HEADER..]);
    buf[start..start + 4].copy_from_slice(&len);
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

pub(super) fn decode_body(body: &[u8]) -> Result<Record, String> {
    fn take_str<'a>(bytes: &'a [u8], what: &str) -> Result<(String, &'a [u8]), String> {
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| format!("{what} length cut short"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!("{what} of {len} bytes overruns the record"));
        }
        let (s, rest) = rest.split_at(len);
        let s = std::str::from_utf8(s).map_err(|_| format!("{what} is not UTF-8"))?;
        Ok((s.to_owned(), rest))
    }
    let (&op, rest) = body.split_first().ok_or("empty record")?;
    let (table, rest) = take_str(rest, "table name")?;
    let (key, rest) = take_str(rest, "key")?;
    match op {
        OP_SET => {
            let value = Value::decode(rest).map_err(|e| format!("bad value: {e}"))?;
            Ok(Record::Set { table, key, value })
        }
        OP_DEL if rest.is_empty() => Ok(Record::Del { table, key }),
        OP_DEL => Err(format!("{} stray bytes after a delete", rest.len())),
        other => Err(format!("unknown operation {other}")),
    }
}

/// What reading the next record found.
#[derive(Debug, PartialEq)]
pub(super) enum Next {
    Record {
        offset: u64,
        record: Record,
    },
    End,
    /// A bad record at `offset`. `tail` when it may be a torn last write:
    /// it runs past the end of the file, or fails its checksum and ends
    /// exactly there.
    Bad {
        offset: u64,
        reason: String,
        tail: bool,
    },
}

/// Reads records from a file of known length, never allocating more than
/// the file holds.
pub(super) struct Reader<R> {
    src: R,
    pos: u64,
    len: u64,
    body: Vec<u8>,
}

impl<R: Read> Reader<R> {
    pub(super) fn new(src: R, len: u64) -> Self {
        Self {
            src,
            pos: 0,
            len,
            body: Vec::new(),
        }
    }

    pub(super) fn next(&mut self) -> io::Result<Next> {
        let offset = self.pos;
        let left = self.len - self.pos;
        if left == 0 {
            return Ok(Next::End);
        }
        let bad = |reason: String, tail: bool| {
            Ok(Next::Bad {
                offset,
                reason,
                tail,
            })
        };
        if left < HEADER as u64 {
            return bad(format!("a {left}-byte fragment of a record header"), true);
        }
        let mut header = [0u8; HEADER];
        self.src.read_exact(&mut header)?;
        let len = u64::from(u32::from_le_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > left - HEADER as u64 {
            return bad(
                format!(
                    "a record of {len} bytes, but only {} bytes follow its header",
                    left - HEADER as u64
                ),
                true,
            );
        }
        if len > MAX_BODY {
            return bad(format!("impossible record length {len}"), false);
        }
        self.body.resize(len as usize, 0);
        self.src.read_exact(&mut self.body)?;
        self.pos += HEADER as u64 + len;
        let actual = crc32c::crc32c_append(crc32c::crc32c(&header[..4]), &self.body);
        if actual != crc {
            return bad(
                format!("checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"),
                self.pos == self.len,
            );
        }
        match decode_body(&self.body) {
            Ok(record) => Ok(Next::Record { offset, record }),
            Err(reason) => bad(format!("checksum is right but {reason}"), false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::testing::{del, read_all, set};

    #[test]
    fn records_round_trip() {
        let mut log = set("t", "k", "v");
        log.extend(del("t", "k"));
        log.extend(set("", "", ""));
        let bin = Value::from(bytes::Bytes::from_static(b"\x00\xff"));
        encode_record(&mut log, "ünï 表", "ключ", Some(&bin));
        let out = read_all(&log);
        let records: Vec<_> = out
            .iter()
            .filter_map(|n| match n {
                Next::Record { record, .. } => Some(record.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            records,
            vec![
                Record::Set {
                    table: "t".into(),
                    key: "k".into(),
                    value: "v".into()
                },
                Record::Del {
                    table: "t".into(),
                    key: "k".into()
                },
                Record::Set {
                    table: "".into(),
                    key: "".into(),
                    value: "".into()
                },
                Record::Set {
                    table: "ünï 表".into(),
                    key: "ключ".into(),
                    value: bin
                },
            ]
        );
        assert_eq!(out.last(), Some(&Next::End));
        // Offsets are where each record starts.
        let first_len = set("t", "k", "v").len() as u64;
        assert!(matches!(out[1], Next::Record { offset, .. } if offset == first_len));
    }

    fn last_bad(bytes: &[u8]) -> (u64, bool) {
        match read_all(bytes).pop() {
            Some(Next::Bad { offset, tail, .. }) => (offset, tail),
            other => panic!("expected a bad record, got {other:?}"),
        }
    }

    #[test]
    fn torn_tails_are_recognised() {
        let good = set("t", "k1", "v1");
        let next = set("t", "k2", "v2");
        let at = good.len() as u64;
        // Every strict prefix of the second record is a torn tail at its start.
        for cut in 1..next.len() {
            let mut log = good.clone();
            log.extend_from_slice(&next[..cut]);
            assert_eq!(last_bad(&log), (at, true), "cut at {cut}");
        }
        // A full last record with a bad checksum, ending at EOF: torn.
        let mut log = good.clone();
        let mut bad = next.clone();
        *bad.last_mut().unwrap() ^= 1;
        log.extend(&bad);
        assert_eq!(last_bad(&log), (at, true));
    }

    #[test]
    fn a_bad_record_followed_by_good_ones_is_corruption() {
        let mut log = set("t", "k1", "v1");
        let second = log.len() as u64;
        let mut bad = set("t", "k2", "v2");
        bad[HEADER + 3] ^= 0x40; // inside the body
        log.extend(&bad);
        log.extend(set("t", "k3", "v3"));
        assert_eq!(last_bad(&log), (second, false));
        // A flipped length that stays inside the file: checksum fails too.
        let mut log = set("t", "k1", "v1");
        log[0] -= 1;
        log.extend(set("t", "k2", "v2"));
        assert_eq!(last_bad(&log), (0, false));
    }

    #[test]
    fn a_correct_checksum_over_nonsense_is_corruption() {
        // op 9 with a valid frame around it.
        let body = [9u8, 0, 0, 0, 0, 0, 0, 0, 0];
        let len = (body.len() as u32).to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &body);
        let mut log = len.to_vec();
        log.extend(crc.to_le_bytes());
        log.extend(body);
        assert_eq!(last_bad(&log), (0, false));
    }

    #[test]
    fn absurd_lengths_allocate_nothing() {
        // Claims 4 GiB: past EOF, so a torn tail, and nothing is allocated.
        let log = [0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5];
        assert_eq!(last_bad(&log), (0, true));
    }
}
