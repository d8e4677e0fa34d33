//! [`RawRequest`]: a request still in its frame's bytes, for the hooks
//! that can decide from them ([`Hook::reads_raw`]).
//!
//! The connection answers a plain `hget` or string `hset` without decoding
//! it (`crate::command::inplace`) when every hook the request reaches
//! handles `on_received` only and reads raw requests: the write-ahead
//! log's hook (it needs only "is this a write") and plugins (they are
//! handed the frame's bytes either way). Such a hook is then called with
//! [`Hook::on_received_raw`] instead of [`Hook::on_received`]: one call per
//! request, in chain order, with the same scoping, panic policy and
//! figures. Any other hook in reach (one that needs the decoded request, or
//! handles a later event) sends the request down the usual path, where
//! every hook gets the decoded request.
//!
//! [`Hook::reads_raw`]: super::Hook::reads_raw
//! [`Hook::on_received_raw`]: super::Hook::on_received_raw
//! [`Hook::on_received`]: super::Hook::on_received

use hookv_plugin::Command;

/// A request still in its frame's bytes: an `hget` or an `hset` of a
/// string value, laid out as every client sends it. The frame decodes to
/// the request the accessors describe.
#[derive(Debug, Clone, Copy)]
pub struct RawRequest<'a> {
    frame: &'a [u8],
    command: Command,
    table: &'a str,
    key: &'a str,
}

impl<'a> RawRequest<'a> {
    /// The request `frame` holds, which is a `command` on `table` naming
    /// `key` (the connection parsed it so).
    pub(crate) fn new(frame: &'a [u8], command: Command, table: &'a str, key: &'a str) -> Self {
        Self {
            frame,
            command,
            table,
            key,
        }
    }

    /// The request in `frame` (an encoded `CommandRequest`), if it is one
    /// that the connection answers undecoded: an `hget` or a string
    /// `hset`, laid out plainly. For tests and benches that call
    /// [`Hook::on_received_raw`](super::Hook::on_received_raw) directly.
    pub fn parse(frame: &'a [u8]) -> Option<Self> {
        let request = crate::command::inplace::InPlace::parse(frame)?;
        Some(Self::new(
            frame,
            request.command(),
            request.table(),
            request.key(),
        ))
    }

    /// The frame's bytes: an encoded `CommandRequest`.
    #[inline]
    pub fn frame(&self) -> &'a [u8] {
        self.frame
    }

    /// Which command it is (`Hget` or `Hset`).
    #[inline]
    pub fn command(&self) -> Command {
        self.command
    }

    /// Whether it changes stored data.
    #[inline]
    pub fn is_write(&self) -> bool {
        self.command.is_write()
    }

    /// The table it names.
    #[inline]
    pub fn table(&self) -> &'a str {
        self.table
    }

    /// The key it names.
    #[inline]
    pub fn key(&self) -> &'a str {
        self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookv_plugin::pb::CommandRequest;
    use prost::Message;

    #[test]
    fn parse_reads_what_the_frame_decodes_to_and_only_plain_hget_and_hset() {
        let frame = CommandRequest::new_hset("users", "alice", "v".into()).encode_to_vec();
        let raw = RawRequest::parse(&frame).unwrap();
        assert_eq!(
            (raw.command(), raw.table(), raw.key(), raw.is_write()),
            (Command::Hset, "users", "alice", true)
        );
        assert_eq!(raw.frame(), &frame[..]);
        let frame = CommandRequest::new_hget("", "k").encode_to_vec();
        let raw = RawRequest::parse(&frame).unwrap();
        assert_eq!(
            (raw.command(), raw.table(), raw.key(), raw.is_write()),
            (Command::Hget, "", "k", false)
        );
        for other in [
            CommandRequest::new_hgetall("users"),
            CommandRequest::new_hset("users", "alice", 7i64.into()),
            CommandRequest::new_hmget("users", vec!["a".into()]),
        ] {
            assert!(
                RawRequest::parse(&other.encode_to_vec()).is_none(),
                "{other:?}"
            );
        }
    }
}
