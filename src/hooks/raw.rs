//! [`RawRequest`]: a request still in its frame's bytes, for the hooks
//! that can decide from them ([`Hook::reads_raw`]).
//!
//! The connection answers a plain `hget` or string `hset` without decoding
//! it (`crate::command::inplace`) when every hook the request reaches
//! reads raw requests: the built-in hooks (auth, audit, wal, rewrite: they
//! need only the command, the table and the key) and plugins (they are
//! handed the frame's bytes either way). Such a hook is then called with
//! the raw form of each event it handles ([`Hook::on_received_raw`] ...
//! [`Hook::on_after_send_raw`]) instead of the decoded one: one call per
//! request and event, in chain order, with the same scoping, panic policy
//! and figures. A hook in reach that needs the decoded request (a closure
//! given to the builder, a hook of your own that does not say
//! [`Hook::reads_raw`]) sends the request down the usual path, where every
//! hook gets it decoded. An `hget` that finds nothing (or fails) switches
//! to the usual path after its `on_received` hooks, which already ran on
//! its bytes and are not run again: the wording of a missing table or key
//! lives in one place, `dispatch`.
//!
//! [`Hook::reads_raw`]: super::Hook::reads_raw
//! [`Hook::on_received_raw`]: super::Hook::on_received_raw
//! [`Hook::on_after_send_raw`]: super::Hook::on_after_send_raw

use hookv_plugin::pb::CommandRequest;
use hookv_plugin::Command;

use crate::command::inplace::InPlace;

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
    /// The request `frame` holds, as the connection parsed it.
    pub(crate) fn of(frame: &'a [u8], request: &InPlace<'a>) -> Self {
        Self {
            frame,
            command: request.command(),
            table: request.table(),
            key: request.key(),
        }
    }

    /// The request in `frame` (an encoded `CommandRequest`), if it is one
    /// that the connection answers undecoded: an `hget` or a string
    /// `hset`, laid out plainly. (The connection reads a frame it kept for
    /// `on_after_send` so; tests and benches that call
    /// [`Hook::on_received_raw`](super::Hook::on_received_raw) may too.)
    pub fn parse(frame: &'a [u8]) -> Option<Self> {
        Some(Self::of(frame, &InPlace::parse(frame)?))
    }

    /// The request decoded (what the default raw forms of the [`Hook`]
    /// methods hand the decoded ones). Always `Some` for a request the
    /// connection parsed: `None`, logged, only were prost to disagree.
    ///
    /// [`Hook`]: super::Hook
    pub fn decode(&self) -> Option<CommandRequest> {
        match <CommandRequest as prost::Message>::decode(self.frame) {
            Ok(req) => Some(req),
            Err(e) => {
                crate::log_limited!(error, error = %e, "a request parsed undecoded does not decode");
                None
            }
        }
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

/// A request as a hook is shown it: decoded, or still in its bytes. What
/// the built-in hooks read of either (their raw and decoded handlers share
/// one body).
#[derive(Debug, Clone, Copy)]
pub(crate) enum RequestRef<'a> {
    Decoded(&'a CommandRequest),
    Raw(&'a RawRequest<'a>),
}

impl<'a> RequestRef<'a> {
    /// Its command, `None` for a request without one.
    #[inline]
    pub(crate) fn command(self) -> Option<Command> {
        match self {
            RequestRef::Decoded(req) => req.command(),
            RequestRef::Raw(req) => Some(req.command()),
        }
    }

    /// The command's name, `"unknown"` for none.
    #[inline]
    pub(crate) fn command_name(self) -> &'static str {
        match self {
            RequestRef::Decoded(req) => req.command_name(),
            RequestRef::Raw(req) => req.command().name(),
        }
    }

    /// Whether it changes stored data.
    #[inline]
    pub(crate) fn is_write(self) -> bool {
        self.command().is_some_and(Command::is_write)
    }

    /// The table it names, if its command names one.
    #[inline]
    pub(crate) fn table(self) -> Option<&'a str> {
        match self {
            RequestRef::Decoded(req) => req.table(),
            RequestRef::Raw(req) => Some(req.table()),
        }
    }

    /// The keys it names, in order.
    #[inline]
    pub(crate) fn keys(self) -> impl Iterator<Item = &'a str> {
        let (decoded, raw) = match self {
            RequestRef::Decoded(req) => (Some(req.keys()), None),
            RequestRef::Raw(req) => (None, Some(req.key())),
        };
        decoded.into_iter().flatten().chain(raw)
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
