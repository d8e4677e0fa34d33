//! Reading a request's table and keys straight from its protobuf bytes,
//! without decoding it: no allocation, no copy.
//!
//! Hooks that only look at keys (a key-length guard, a per-table policy)
//! are the common case, and decoding a whole request (every string and
//! value copied into a fresh `CommandRequest`) costs them several times what
//! their own logic does. [`RequestView::parse`] accepts only requests laid
//! out as the server sends them (every field known, of the right wire
//! type, singular fields once); anything else is `None` and the caller
//! decodes as usual, so a view never disagrees with the decoded message.

use std::str;

use crate::catalogue::{Command, Shape, STATS_TABLE};

/// The table and keys of a request, borrowed from its bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestView<'a> {
    kind: Shape,
    table: &'a str,
    /// A `Key` command's field 2 is there (absent, the key is "").
    has_key: bool,
    /// The command message's own fields (inside the request's oneof).
    body: &'a [u8],
}

impl<'a> RequestView<'a> {
    /// The view of an encoded `CommandRequest`, or `None` when the bytes
    /// are anything but the plain layout (decode them instead).
    pub(crate) fn parse(bytes: &'a [u8]) -> Option<Self> {
        let (number, body) = command_field(bytes)?;
        let kind = Command::from_tag(number)?.shape();
        let (table, has_key) = check_body(kind, body)?;
        Some(Self {
            kind,
            table,
            has_key,
            body,
        })
    }

    /// As [`crate::pb::CommandRequest::table`].
    pub(crate) fn table(&self) -> Option<&'a str> {
        (self.kind != Shape::Token).then_some(self.table)
    }

    /// As [`crate::pb::CommandRequest::keys`], in the same order.
    pub(crate) fn keys(&self) -> RawKeys<'a> {
        RawKeys {
            kind: self.kind,
            fields: Fields(self.body),
            // A singular key that is absent is "" all the same.
            pending_default: self.kind == Shape::Key && !self.has_key,
        }
    }
}

/// The keys of a [`RequestView`].
#[derive(Debug, Clone)]
pub(crate) struct RawKeys<'a> {
    kind: Shape,
    fields: Fields<'a>,
    pending_default: bool,
}

impl<'a> Iterator for RawKeys<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if std::mem::take(&mut self.pending_default) {
            return Some("");
        }
        if matches!(
            self.kind,
            Shape::Token | Shape::Table | Shape::Scan | Shape::Stats
        ) {
            return None;
        }
        // Checked by `parse`: every field is well-formed and of the
        // expected type, every string UTF-8.
        for field in self.fields.by_ref() {
            let Ok(Field::Bytes(2, bytes)) = field else {
                continue;
            };
            return Some(key_in(self.kind, bytes).unwrap_or_default());
        }
        None
    }
}

/// Checks a command message's fields for `kind`; its table ("" when
/// absent), and whether it has a field 2.
fn check_body(kind: Shape, body: &[u8]) -> Option<(&str, bool)> {
    // `stats` has no fields; its table is the reserved name.
    if kind == Shape::Stats {
        return body.is_empty().then_some((STATS_TABLE, false));
    }
    let mut table = None;
    let mut seen_two = false;
    let mut seen_count = false;
    for field in Fields(body) {
        match (kind, field.ok()?) {
            // `auth`'s token: never looked at here.
            (Shape::Token, Field::Bytes(1, _)) => {}
            (Shape::Token, _) => return None,
            (_, Field::Bytes(1, bytes)) if table.is_none() => {
                table = Some(str::from_utf8(bytes).ok()?)
            }
            (Shape::Key | Shape::Pair, Field::Bytes(2, bytes)) if !seen_two => {
                seen_two = true;
                key_in(kind, bytes)?;
            }
            (Shape::Keys | Shape::Pairs, Field::Bytes(2, bytes)) => {
                seen_two = true;
                key_in(kind, bytes)?;
            }
            // hscan's cursor: a string (decoding checks it is UTF-8).
            (Shape::Scan, Field::Bytes(2, bytes)) if !seen_two => {
                seen_two = true;
                str::from_utf8(bytes).ok()?;
            }
            (Shape::Scan, Field::Varint(3)) if !seen_count => seen_count = true,
            _ => return None,
        }
    }
    Some((table.unwrap_or_default(), seen_two))
}

/// The field number and bytes of an encoded request's command, if the
/// request is exactly one well-formed length-delimited field (as the
/// server sends it): nothing after it could override it ("last one wins"
/// for a oneof).
pub(crate) fn command_field(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut outer = Fields(bytes);
    let Field::Bytes(number, body) = outer.next()?.ok()? else {
        return None;
    };
    if outer.next().is_some() {
        return None;
    }
    Some((number, body))
}

/// The key that a field 2 of a `kind` command holds, if well-formed: the
/// field itself, or a pair's key.
fn key_in(kind: Shape, bytes: &[u8]) -> Option<&str> {
    match kind {
        Shape::Pair | Shape::Pairs => pair_key(bytes),
        _ => str::from_utf8(bytes).ok(),
    }
}

/// The key of an encoded `Kvpair` ("" when absent), if it has the plain
/// layout (its value is left for whoever decodes it).
fn pair_key(pair: &[u8]) -> Option<&str> {
    let (mut key, mut value) = (None, false);
    for field in Fields(pair) {
        match field.ok()? {
            Field::Bytes(1, bytes) if key.is_none() => key = Some(str::from_utf8(bytes).ok()?),
            Field::Bytes(2, _) if !value => value = true,
            _ => return None,
        }
    }
    Some(key.unwrap_or_default())
}

/// One field of a message, by number. Commands' fields are length-delimited
/// but for hscan's `count`, a varint; any other wire type is an `Err`.
#[derive(Debug, Clone, Copy)]
enum Field<'a> {
    /// Wire type 2 (strings, embedded messages): the field's bytes.
    Bytes(u32, &'a [u8]),
    /// Wire type 0: a well-formed varint (its value is never needed here).
    Varint(u32),
}

/// The fields of an encoded message, in order; an `Err` ends it.
#[derive(Debug, Clone)]
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.read();
        if field.is_err() {
            self.0 = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    fn read(&mut self) -> Result<Field<'a>, ()> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| ())?;
        if number == 0 {
            return Err(());
        }
        match key & 7 {
            0 => {
                self.varint()?;
                Ok(Field::Varint(number))
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| ())?;
                if len > self.0.len() {
                    return Err(());
                }
                let (bytes, rest) = self.0.split_at(len);
                self.0 = rest;
                Ok(Field::Bytes(number, bytes))
            }
            _ => Err(()),
        }
    }

    fn varint(&mut self) -> Result<u64, ()> {
        let mut value: u64 = 0;
        for (i, &byte) in self.0.iter().enumerate().take(10) {
            // A tenth byte carries only the top bit of a u64; prost refuses
            // anything more, so the view must too.
            if i == 9 && byte > 1 {
                return Err(());
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        Err(())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb::{CommandRequest, Kvpair, Value};

    fn requests() -> Vec<CommandRequest> {
        let pair = |k: &str| Kvpair::new(k, Value::from("v"));
        vec![
            CommandRequest::new_hget("t", "k"),
            CommandRequest::new_hget("", ""),
            CommandRequest::new_hgetall("table"),
            CommandRequest::new_hmget("t", vec!["a".into(), "".into(), "ü表".into()]),
            CommandRequest::new_hmget("t", vec![]),
            CommandRequest::new_hset("t", "key", Value::from(7)),
            CommandRequest::new_hset("t", "", Value::default()),
            CommandRequest::new_hmset("t", vec![pair("x"), pair(""), pair("z")]),
            CommandRequest::new_hdel("t", "k"),
            CommandRequest::new_hmdel("t", vec!["a".into(), "b".into()]),
            CommandRequest::new_hexist("t", "k"),
            CommandRequest::new_hmexist("t", vec!["a".into()]),
            CommandRequest::new_auth("token"),
            CommandRequest::new_stats(),
            CommandRequest::new_hscan("t", None, 0),
            CommandRequest::new_hscan("t", Some(String::new()), 7),
            CommandRequest::new_hscan("", Some("ü表".into()), 100_000),
            CommandRequest::default(),
        ]
    }

    /// Whenever a view exists, it says what the decoded message says.
    fn agrees(bytes: &[u8]) -> bool {
        let Some(view) = RequestView::parse(bytes) else {
            return false;
        };
        // A pair's value is left for whoever decodes the message (the
        // server sends only requests it decoded itself): bytes whose value
        // is broken may have a view and still not decode.
        let Ok(decoded) = CommandRequest::decode(bytes) else {
            assert!(
                matches!(view.kind, Shape::Pair | Shape::Pairs | Shape::Token),
                "{bytes:?}"
            );
            return true;
        };
        assert_eq!(view.table(), decoded.table(), "{bytes:?}");
        assert_eq!(
            view.keys().collect::<Vec<_>>(),
            decoded.keys().collect::<Vec<_>>(),
            "{bytes:?}"
        );
        true
    }

    #[test]
    fn every_command_as_the_server_encodes_it_has_a_view_that_agrees() {
        for req in requests() {
            let bytes = req.encode_to_vec();
            // The empty request (no command) decodes; it just has no view.
            assert_eq!(agrees(&bytes), req.request_data.is_some(), "{req:?}");
        }
    }

    #[test]
    fn a_pair_without_a_key_or_value_and_a_missing_key_read_as_decoded() {
        use crate::pb::command_request::RequestData;
        use crate::pb::{Hget, Hset};
        let odd = [
            CommandRequest {
                request_data: Some(RequestData::Hset(Hset {
                    table: "t".into(),
                    pair: Some(Kvpair::default()),
                })),
            },
            CommandRequest {
                request_data: Some(RequestData::Hset(Hset {
                    table: "t".into(),
                    pair: None,
                })),
            },
            CommandRequest {
                request_data: Some(RequestData::Hget(Hget::default())),
            },
        ];
        for req in odd {
            assert!(agrees(&req.encode_to_vec()), "{req:?}");
        }
    }

    #[test]
    fn an_hscan_has_a_table_and_no_keys_and_odd_hscan_layouts_have_no_view() {
        let bytes = CommandRequest::new_hscan("t", Some("k".into()), 5).encode_to_vec();
        let view = RequestView::parse(&bytes).unwrap();
        assert_eq!(view.table(), Some("t"));
        assert_eq!(view.keys().count(), 0);
        // Field bodies of an hscan: table "t", cursor "k", count 5 (a varint).
        let scan = |body: &[u8]| {
            let mut req = vec![15 << 3 | 2, body.len() as u8];
            req.extend(body);
            req
        };
        let plain = scan(&[0x0a, 1, b't', 0x12, 1, b'k', 0x18, 5]);
        assert!(RequestView::parse(&plain).is_some());
        assert!(agrees(&plain));
        for odd in [
            // The count twice, or the cursor twice: the last one wins when decoded.
            scan(&[0x0a, 1, b't', 0x18, 5, 0x18, 6]),
            scan(&[0x0a, 1, b't', 0x12, 1, b'a', 0x12, 1, b'b']),
            // The count as bytes, the cursor as a varint: not what hscan is.
            scan(&[0x0a, 1, b't', 0x1a, 1, 5]),
            scan(&[0x0a, 1, b't', 0x10, 5]),
            // A cursor that is not UTF-8.
            scan(&[0x0a, 1, b't', 0x12, 1, 0xff]),
        ] {
            assert!(RequestView::parse(&odd).is_none(), "{odd:?}");
        }
        // A varint field in any other command is not its plain layout either.
        let mut hget = CommandRequest::new_hget("t", "k").encode_to_vec();
        hget[1] += 2;
        hget.extend([0x18, 5]);
        assert!(RequestView::parse(&hget).is_none());
        assert!(CommandRequest::decode(&hget[..]).is_ok());
    }

    #[test]
    fn unusual_layouts_have_no_view_and_mangled_bytes_never_disagree() {
        // Two commands back to back: the last one wins when decoded.
        let mut two = CommandRequest::new_hget("t", "a").encode_to_vec();
        two.extend(CommandRequest::new_hdel("t", "b").encode_to_vec());
        assert!(RequestView::parse(&two).is_none());
        // A key repeated inside one command: the last one wins when decoded.
        let mut body = Vec::new();
        for (n, s) in [(1u8, "t"), (2, "a"), (2, "b")] {
            body.extend([n << 3 | 2, s.len() as u8]);
            body.extend(s.as_bytes());
        }
        let mut repeated = vec![1 << 3 | 2, body.len() as u8];
        repeated.extend(&body);
        assert!(RequestView::parse(&repeated).is_none());
        assert_eq!(
            CommandRequest::decode(&repeated[..]).unwrap().keys().next(),
            Some("b")
        );
        // A tag whose tenth varint byte is too big, which prost refuses.
        let mut overlong = vec![1 << 3 | 2, 15, 0x0a, 1, b't'];
        overlong.extend([0x92, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02]);
        overlong.extend([1, b'k']);
        assert!(CommandRequest::decode(&overlong[..]).is_err());
        assert!(RequestView::parse(&overlong).is_none());
        // The same for the command's length (is_write and command_name read it).
        let body = [0x0a, 1, b't', 0x12, 1, b'k'];
        let mut long_len = vec![
            1 << 3 | 2,
            0x86,
            0x80,
            0x80,
            0x80,
            0x80,
            0x80,
            0x80,
            0x80,
            0x80,
        ];
        long_len.push(0x02);
        long_len.extend(body);
        assert!(CommandRequest::decode(&long_len[..]).is_err());
        assert!(command_field(&long_len).is_none());
        // Every truncation and every single-byte change of every request.
        for req in requests() {
            let bytes = req.encode_to_vec();
            for cut in 0..bytes.len() {
                agrees(&bytes[..cut]);
            }
            for i in 0..bytes.len() {
                for b in [0x00, 0x01, 0x02, 0x0a, 0x12, 0x7f, 0x80, 0xff] {
                    let mut mangled = bytes.clone();
                    mangled[i] = b;
                    agrees(&mangled);
                }
            }
        }
    }
}
