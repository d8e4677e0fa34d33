//! [`Lazy`]: a message the server sent as bytes, decoded on first use; the
//! [`Request`] and [`Response`] a plugin's hooks see.

use std::cell::OnceCell;
use std::ops::{Deref, DerefMut};

use prost::Message;

use super::keys::Keys;
use crate::catalogue::Command;
use crate::pb::{CommandRequest, CommandResponse};
use crate::view::{command_field, RequestView};

/// The request a hook runs for: derefs to [`CommandRequest`]. Its
/// `is_write()`, `command_name()`, `table()` and `keys()` read the bytes in
/// place, without decoding the request.
pub type Request<'a> = Lazy<'a, CommandRequest>;

/// The response a hook sees: derefs to [`CommandResponse`]; in
/// `on_before_send`, `&mut *res` is a response you may change.
pub type Response<'a> = Lazy<'a, CommandResponse>;

/// A message the server sent as protobuf bytes, decoded on first use: a
/// hook that never looks at it (say, a rate limit keyed on the peer) does
/// not pay for decoding it.
///
/// Bytes that do not decode make the first use panic, which the boundary
/// turns into a 500 for that request (the server encodes every message it
/// sends, so this means a server and plugin built from clashing schemas).
/// A request's `table()` and `keys()` read the bytes in place and may
/// answer even if a part they do not read (a pair's value) is broken.
#[derive(Debug)]
pub struct Lazy<'a, T> {
    bytes: &'a [u8],
    value: OnceCell<T>,
    changed: bool,
}

impl<'a, T: Message + Default> Lazy<'a, T> {
    /// A message to decode from `bytes` when first used.
    pub fn from_bytes(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            value: OnceCell::new(),
            changed: false,
        }
    }

    /// The message, decoding it if this is the first use.
    pub fn try_get(&self) -> Result<&T, prost::DecodeError> {
        if let Some(value) = self.value.get() {
            return Ok(value);
        }
        let value = T::decode(self.bytes)?;
        Ok(self.value.get_or_init(|| value))
    }

    /// True once the message was borrowed mutably (`&mut *res`).
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    /// The message, if it was borrowed mutably.
    pub(crate) fn into_changed(self) -> Option<T> {
        if self.changed {
            self.value.into_inner()
        } else {
            None
        }
    }

    fn get_or_panic(&self) -> &T {
        match self.try_get() {
            Ok(value) => value,
            Err(e) => panic!("cannot decode the message from the server: {e}"),
        }
    }
}

/// Cheap questions about a request that do not decode it.
impl Lazy<'_, CommandRequest> {
    /// The request's command, as [`CommandRequest::command`]; answered
    /// from the encoding's first bytes, without decoding.
    pub fn command(&self) -> Option<Command> {
        match self.peek_command() {
            Some(command) => Some(command),
            None => self.get_or_panic().command(),
        }
    }

    /// True for the commands that change stored data (hset, hmset, hdel,
    /// hmdel); answered from the encoding's first bytes, without decoding.
    pub fn is_write(&self) -> bool {
        match self.peek_command() {
            Some(command) => command.is_write(),
            None => self.get_or_panic().is_write(),
        }
    }

    /// The command's name (`"hset"`), as [`CommandRequest::command_name`];
    /// answered without decoding.
    pub fn command_name(&self) -> &'static str {
        match self.peek_command() {
            Some(command) => command.name(),
            None => self.get_or_panic().command_name(),
        }
    }

    /// The table the request names, as [`CommandRequest::table`]; read
    /// from the bytes, without decoding the request.
    pub fn table(&self) -> Option<&str> {
        match self.view() {
            Some(view) => view.table(),
            None => self.get_or_panic().table(),
        }
    }

    /// The keys the request names, in order, as [`CommandRequest::keys`];
    /// read from the bytes, without decoding the request or allocating.
    pub fn keys(&self) -> Keys<'_> {
        match self.view() {
            Some(view) => Keys::raw(view.keys()),
            None => Keys::decoded(self.get_or_panic().keys().collect()),
        }
    }

    /// The request read in place, unless it is decoded already (then that
    /// is the truth) or laid out unusually (then decoding is).
    fn view(&self) -> Option<RequestView<'_>> {
        if self.value.get().is_some() {
            return None;
        }
        RequestView::parse(self.bytes)
    }

    /// The command, from the field number of the request's oneof, if the
    /// bytes are exactly one length-delimited field of a known command
    /// (what the server sends) and nothing is decoded yet; otherwise
    /// `None`: decode instead.
    fn peek_command(&self) -> Option<Command> {
        if self.value.get().is_some() {
            return None;
        }
        let (number, _) = command_field(self.bytes)?;
        Command::from_tag(number)
    }
}

impl<T> From<T> for Lazy<'static, T> {
    /// An already decoded message (for a plugin's own tests).
    fn from(value: T) -> Self {
        Self {
            bytes: &[],
            value: OnceCell::from(value),
            changed: false,
        }
    }
}

impl<T: Message + Default> Deref for Lazy<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.get_or_panic()
    }
}

impl<T: Message + Default> DerefMut for Lazy<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.get_or_panic();
        self.changed = true;
        match self.value.get_mut() {
            Some(value) => value,
            None => unreachable!("decoded just above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::Kvpair;

    fn every_request() -> Vec<CommandRequest> {
        vec![
            CommandRequest::new_hget("t", "k"),
            CommandRequest::new_hgetall("t"),
            CommandRequest::new_hmget("t", vec!["a".into()]),
            CommandRequest::new_hset("t", "k", "v".into()),
            CommandRequest::new_hmset("t", vec![Kvpair::new("k", 1i64.into())]),
            CommandRequest::new_hdel("t", "k"),
            CommandRequest::new_hmdel("t", vec!["a".into(), "b".into()]),
            CommandRequest::new_hexist("t", "k"),
            CommandRequest::new_hmexist("t", vec![]),
            CommandRequest::new_auth("secret"),
            CommandRequest::new_hscan("t", Some("k".into()), 10),
            CommandRequest::new_hset("t".repeat(300), "k".repeat(200), "v".into()),
            CommandRequest::default(),
        ]
    }

    #[test]
    fn peeking_agrees_with_decoding() {
        for req in every_request() {
            let bytes = req.encode_to_vec();
            let lazy = Request::from_bytes(&bytes);
            assert_eq!(lazy.command_name(), req.command_name(), "{req:?}");
            assert_eq!(lazy.is_write(), req.is_write(), "{req:?}");
            assert_eq!(lazy.command(), req.command(), "{req:?}");
            // Answered from the bytes (an empty request decodes to "unknown").
            assert_eq!(lazy.value.get().is_none(), !bytes.is_empty(), "{req:?}");
            assert_eq!(*lazy, req);
        }
    }

    #[test]
    fn a_second_field_is_not_hidden_by_peeking() {
        // Two oneof fields: decoding keeps the last (hset), so must we.
        let mut bytes = CommandRequest::new_hget("t", "k").encode_to_vec();
        bytes.extend(CommandRequest::new_hset("t", "k", "v".into()).encode_to_vec());
        let lazy = Request::from_bytes(&bytes);
        assert!(lazy.is_write());
        assert_eq!(lazy.command_name(), "hset");
    }

    #[test]
    fn only_a_mutable_borrow_counts_as_a_change() {
        let bytes = CommandResponse::ok().encode_to_vec();
        let mut res = Response::from_bytes(&bytes);
        assert_eq!(res.status, 200);
        assert!(!res.is_changed());
        res.message = "hello".into();
        assert!(res.is_changed());
        assert_eq!(res.into_changed().map(|r| r.message), Some("hello".into()));
    }

    #[test]
    fn bad_bytes_panic_on_first_use() {
        let res = Response::from_bytes(&[0xff; 4]);
        assert!(res.try_get().is_err());
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| res.status)).is_err());
    }
}
