//! `hget` and `hset` run straight from their frame's bytes, when no hook
//! needs the decoded request (none in the chain, each scoped by `tables`
//! to tables the request does not name, or hooks that take the bytes:
//! [`crate::hooks::RawRequest`]): the connection's fast path (see
//! `connection::Handler::answer_batch`).
//!
//! Decoding a request copies its table, key and value into fresh
//! `String`s, and `hset` copies its value once more for storage: per
//! request, more than the storage work of a short pair. Here the table and
//! key are borrowed from the frame, and the value is copied once, into what
//! storage keeps. [`InPlace::parse`] accepts only the layout every client
//! sends (fields in order, each once, nothing unknown, strings UTF-8); for
//! any other frame it says `None` and the request is decoded as usual, so
//! the fast path never reads a request differently from prost. It also
//! leaves to the usual path every answer but a 200 (a missing key, a
//! missing value): the errors' wording lives in one place, `dispatch`.

use hookv_plugin::pb::{value, CommandResponse, Value};
use hookv_plugin::Command;

use crate::error::Error;
use crate::storage::Storage;

/// An `hget` or `hset` borrowed from its frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InPlace<'a> {
    Hget {
        table: &'a str,
        key: &'a str,
    },
    /// An `hset` of a string value (other kinds take the usual path).
    Hset {
        table: &'a str,
        key: &'a str,
        value: &'a str,
    },
}

/// Field 1 and field 2 of a message, length-delimited (wire type 2).
const FIELD_1: u8 = 1 << 3 | 2;
const FIELD_2: u8 = 2 << 3 | 2;
/// `CommandRequest`'s oneof: `hget = 1`, `hset = 4`.
const HGET: u8 = FIELD_1;
const HSET: u8 = 4 << 3 | 2;

impl<'a> InPlace<'a> {
    /// The request in `frame`, if it is an `hget` or a string `hset` laid
    /// out plainly; `None` for anything else (decode it).
    pub(crate) fn parse(frame: &'a [u8]) -> Option<Self> {
        let (&command, rest) = frame.split_first()?;
        let (body, rest) = delimited(rest)?;
        if !rest.is_empty() {
            return None;
        }
        // proto3 leaves out an empty string: table and key may be absent.
        let (table, body) = text_field(body, FIELD_1)?;
        match command {
            HGET => {
                let (key, body) = text_field(body, FIELD_2)?;
                body.is_empty().then_some(InPlace::Hget { table, key })
            }
            HSET => {
                let (pair, body) = field(body, FIELD_2)?;
                let (key, pair) = text_field(pair, FIELD_1)?;
                let (value, pair) = field(pair, FIELD_2)?;
                // `Value`'s oneof: `string = 1`, always written when set.
                let (text, value) = field(value, FIELD_1)?;
                let text = std::str::from_utf8(text).ok()?;
                (body.is_empty() && pair.is_empty() && value.is_empty()).then_some(InPlace::Hset {
                    table,
                    key,
                    value: text,
                })
            }
            _ => None,
        }
    }

    /// The table it names.
    pub(crate) fn table(&self) -> &'a str {
        match *self {
            InPlace::Hget { table, .. } | InPlace::Hset { table, .. } => table,
        }
    }

    /// The key it names.
    pub(crate) fn key(&self) -> &'a str {
        match *self {
            InPlace::Hget { key, .. } | InPlace::Hset { key, .. } => key,
        }
    }

    /// Which command it is.
    pub(crate) fn command(&self) -> Command {
        match self {
            InPlace::Hget { .. } => Command::Hget,
            InPlace::Hset { .. } => Command::Hset,
        }
    }

    /// Runs the request on `store`: its answer and whether it wrote, or
    /// `None` when it is not a 200 (a missing key: ask `dispatch`, which
    /// says which of table and key is missing). An `hget` that failed is
    /// left to `dispatch` too (reading again changes nothing); an `hset`
    /// that failed is answered here, as `dispatch` would have.
    pub(crate) fn run(
        &self,
        store: &dyn Storage,
    ) -> Option<(Result<CommandResponse, Error>, bool)> {
        match *self {
            InPlace::Hget { table, key } => match store.get(table, key) {
                Ok(Some(v)) => Some((Ok(vec![v].into()), false)),
                Ok(None) | Err(_) => None,
            },
            InPlace::Hset { table, key, value } => {
                let value = Value::from(value::Value::String(value.to_owned()));
                Some(match store.put(table, key, value) {
                    Ok(old) => (Ok(vec![old.unwrap_or_default()].into()), true),
                    Err(e) => (Err(e.into()), false),
                })
            }
        }
    }
}

/// The bytes of field `tag` at the front of `bytes` and what follows them,
/// or `None` when another field is there.
fn field(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match bytes.split_first() {
        Some((&t, rest)) if t == tag => delimited(rest),
        _ => None,
    }
}

/// [`field`] for a string that proto3 leaves out when empty: `""` when
/// the next field is not `tag`.
fn text_field(bytes: &[u8], tag: u8) -> Option<(&str, &[u8])> {
    match bytes.first() {
        Some(&t) if t == tag => {
            let (text, rest) = field(bytes, tag)?;
            Some((std::str::from_utf8(text).ok()?, rest))
        }
        _ => Some(("", bytes)),
    }
}

/// A varint length and that many bytes, then the rest.
fn delimited(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len = 0usize;
    // Frames are at most a few MiB: a length takes at most 4 bytes.
    for (i, &b) in bytes.iter().enumerate().take(4) {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let rest = &bytes[i + 1..];
            return (len <= rest.len()).then(|| rest.split_at(len));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use hookv_plugin::pb::{CommandRequest, Kvpair};
    use prost::Message;

    use super::*;

    /// Every frame the fast path takes, it reads as prost does.
    #[test]
    fn reads_what_prost_reads_and_nothing_else() {
        let long = "k".repeat(200);
        for (table, key) in [
            ("t", "k"),
            ("", ""),
            ("", "k"),
            ("t", ""),
            ("表", long.as_str()),
        ] {
            let get = CommandRequest::new_hget(table, key).encode_to_vec();
            assert_eq!(InPlace::parse(&get), Some(InPlace::Hget { table, key }));
            for value in ["v", "", long.as_str()] {
                let set = CommandRequest::new_hset(table, key, value.into()).encode_to_vec();
                assert_eq!(
                    InPlace::parse(&set),
                    Some(InPlace::Hset { table, key, value })
                );
            }
        }
        // Left to prost: other commands and kinds, missing parts, trailing
        // or unknown fields, bad UTF-8, a length past the end.
        let others = [
            CommandRequest::new_hdel("t", "k").encode_to_vec(),
            CommandRequest::new_hset("t", "k", 7i64.into()).encode_to_vec(),
            CommandRequest::new_hmset("t", vec![Kvpair::new("k", "v".into())]).encode_to_vec(),
            CommandRequest::new_hset("t", "k", Value::default()).encode_to_vec(),
            CommandRequest {
                request_data: Some(hookv_plugin::pb::command_request::RequestData::Hset(
                    hookv_plugin::pb::Hset {
                        table: "t".into(),
                        pair: None,
                    },
                )),
            }
            .encode_to_vec(),
            CommandRequest::default().encode_to_vec(),
        ];
        for frame in &others {
            assert_eq!(InPlace::parse(frame), None, "{frame:?}");
        }
        let get = CommandRequest::new_hget("t", "k").encode_to_vec();
        let mut trailing = get.clone();
        trailing.extend_from_slice(&[0x1a, 0]);
        let mut inner = get.clone();
        inner[1] += 2;
        inner.extend_from_slice(&[0x1a, 0]);
        let mut bad_utf8 = get.clone();
        *bad_utf8.last_mut().unwrap() = 0xff;
        let mut past_end = get.clone();
        past_end[1] += 1;
        for frame in [trailing, inner, bad_utf8, past_end, vec![], vec![HGET]] {
            assert_eq!(InPlace::parse(&frame), None, "{frame:?}");
        }
    }
}
