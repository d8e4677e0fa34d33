//! The safe side of a plugin: the [`Plugin`] trait, what its hooks see
//! ([`Context`], [`Request`], [`Response`]) and its configuration
//! ([`Options`]).

use std::cell::OnceCell;
use std::ops::{ControlFlow, Deref, DerefMut};
use std::time::Duration;

use prost::Message;
use serde::de::DeserializeOwned;

use crate::abi::HookvContext;
use crate::pb::{CommandRequest, CommandResponse};
use crate::view::{command_field, RawKeys, RequestView};

/// What `on_received` and `on_executed` return: go on, or answer with this
/// response now.
pub type Flow = ControlFlow<CommandResponse>;

/// A hook loaded from a shared library. Export it with
/// [`export_plugin!`](crate::export_plugin).
///
/// One value is created by [`Plugin::init`] and shared by every connection:
/// events may run on several threads at once, so keep mutable state behind
/// a `Mutex` or atomics. Every event defaults to "continue"; list the ones
/// you implement in [`Plugin::EVENTS`] so that the server does not call the
/// others at all.
///
/// A panic in any method is caught at the boundary: in `init` it refuses
/// the server's start with the panic's message, in an event it answers that
/// request with a 500 and the server carries on.
pub trait Plugin: Sized + Send + Sync + 'static {
    /// The events this plugin handles; the others are never called.
    /// Defaults to all four.
    const EVENTS: Events = Events::ALL;

    /// Builds the plugin from the options of its `[[hooks]]` table. An
    /// `Err` refuses the server's start with that message: name the option.
    fn init(options: &Options) -> Result<Self, String>;

    /// Before execution. `Break(response)` answers with `response`; storage
    /// is not touched.
    fn on_received(&self, _ctx: &Context<'_>, _req: &Request<'_>) -> Flow {
        ControlFlow::Continue(())
    }

    /// After execution, with the response storage produced. `Break(response)`
    /// replaces it.
    fn on_executed(&self, _ctx: &Context<'_>, _req: &Request<'_>, _res: &Response<'_>) -> Flow {
        ControlFlow::Continue(())
    }

    /// Before the response is written; may change it (through `&mut *res`:
    /// only a response borrowed that way is sent back to the server).
    /// `Break` stops the rest of this chain (the change stays).
    fn on_before_send(
        &self,
        _ctx: &Context<'_>,
        _req: &Request<'_>,
        _res: &mut Response<'_>,
    ) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    /// After the response was written; observe only. `Break` stops the rest
    /// of this chain.
    fn on_after_send(
        &self,
        _ctx: &Context<'_>,
        _req: &Request<'_>,
        _res: &Response<'_>,
    ) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

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
    /// True for the commands that change stored data (hset, hmset, hdel,
    /// hmdel); answered from the encoding's first bytes, without decoding.
    pub fn is_write(&self) -> bool {
        match self.peek_kind() {
            Some(name) => matches!(name, "hset" | "hmset" | "hdel" | "hmdel"),
            None => self.get_or_panic().is_write(),
        }
    }

    /// The command's name (`"hset"`), as [`CommandRequest::command_name`];
    /// answered without decoding.
    pub fn command_name(&self) -> &'static str {
        match self.peek_kind() {
            Some(name) => name,
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
        Keys(match self.view() {
            Some(view) => KeysInner::Raw(view.keys()),
            None => KeysInner::Decoded(self.get_or_panic().keys().collect::<Vec<_>>().into_iter()),
        })
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
    fn peek_kind(&self) -> Option<&'static str> {
        if self.value.get().is_some() {
            return None;
        }
        let (number, _) = command_field(self.bytes)?;
        // Field numbers of `CommandRequest.request_data` (abi.proto).
        match number {
            1 => Some("hget"),
            2 => Some("hgetall"),
            3 => Some("hmget"),
            4 => Some("hset"),
            5 => Some("hmset"),
            6 => Some("hdel"),
            7 => Some("hmdel"),
            8 => Some("hexist"),
            9 => Some("hmexist"),
            13 => Some("auth"),
            15 => Some("hscan"),
            _ => None,
        }
    }
}

/// The keys of a request ([`Lazy::keys`]).
#[derive(Debug, Clone)]
pub struct Keys<'a>(KeysInner<'a>);

#[derive(Debug, Clone)]
enum KeysInner<'a> {
    Raw(RawKeys<'a>),
    Decoded(std::vec::IntoIter<&'a str>),
}

impl<'a> Iterator for Keys<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match &mut self.0 {
            KeysInner::Raw(keys) => keys.next(),
            KeysInner::Decoded(keys) => keys.next(),
        }
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

/// Which events a plugin handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Events {
    /// `on_received`
    pub received: bool,
    /// `on_executed`
    pub executed: bool,
    /// `on_before_send`
    pub before_send: bool,
    /// `on_after_send`
    pub after_send: bool,
}

impl Events {
    /// All four.
    pub const ALL: Events = Events {
        received: true,
        executed: true,
        before_send: true,
        after_send: true,
    };
    /// None (start here: `Events { received: true, ..Events::NONE }`).
    pub const NONE: Events = Events {
        received: false,
        executed: false,
        before_send: false,
        after_send: false,
    };
    /// Only `on_received`.
    pub const RECEIVED: Events = Events {
        received: true,
        ..Events::NONE
    };
}

/// The connection and request a hook runs for.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Unique per server process, in accept order.
    pub conn_id: u64,
    /// The client's address, e.g. `127.0.0.1:5555` or `[::1]:5555`.
    pub peer: &'a str,
    /// Who the connection authenticated as, if anyone.
    pub principal: Option<&'a str>,
    /// The server's context, for [`Context::elapsed`]; NULL in tests.
    pub(crate) raw: *const HookvContext,
}

impl<'a> Context<'a> {
    /// A context for a plugin's own tests (its [`Context::elapsed`] is zero).
    pub fn new(conn_id: u64, peer: &'a str, principal: Option<&'a str>) -> Self {
        Self {
            conn_id,
            peer,
            principal,
            raw: std::ptr::null(),
        }
    }

    /// Time since the server read the request (reads the server's clock).
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(crate::export::elapsed_ns(self.raw))
    }

    /// The client's IP address as text, without the port: `127.0.0.1`, `::1`.
    pub fn peer_ip(&self) -> &'a str {
        let host = self
            .peer
            .rsplit_once(':')
            .map_or(self.peer, |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// A plugin's options: the keys of its `[[hooks]]` table except `plugin`,
/// received as a JSON object.
///
/// ```
/// # use hookv_plugin::Options;
/// let options = Options::from_json(r#"{"max_key_len": 64}"#).unwrap();
/// let max: u64 = options.get("max_key_len")?.unwrap_or(256);
/// assert_eq!(max, 64);
/// assert!(options.get::<String>("max_key_len").is_err());
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    map: serde_json::Map<String, serde_json::Value>,
}

impl Options {
    /// Parses the JSON object the server sends to `init`.
    pub fn from_json(json: &str) -> Result<Self, String> {
        match serde_json::from_str(json) {
            Ok(serde_json::Value::Object(map)) => Ok(Self { map }),
            Ok(other) => Err(format!("options must be a JSON object, got {other}")),
            Err(e) => Err(format!("options are not valid JSON: {e}")),
        }
    }

    /// The option `key` as `T`; `Ok(None)` when it is absent, an error
    /// naming the key when it has the wrong type.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        self.map
            .get(key)
            .map(|v| T::deserialize(v).map_err(|e| format!("option `{key}`: {e}")))
            .transpose()
    }

    /// The option `key` as `T`; an error naming the key when it is absent or
    /// has the wrong type.
    pub fn require<T: DeserializeOwned>(&self, key: &str) -> Result<T, String> {
        self.get(key)?
            .ok_or_else(|| format!("option `{key}` is required"))
    }

    /// Every option as one `T` (e.g. a `#[derive(Deserialize)]` struct, with
    /// `#[serde(deny_unknown_fields)]` to refuse unknown keys).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        T::deserialize(&serde_json::Value::Object(self.map.clone()))
            .map_err(|e| format!("options: {e}"))
    }

    /// Refuses any key not in `known` (catches typos in config files).
    pub fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(key) => Err(format!(
                "unknown option `{key}`; this plugin knows: {}",
                known.join(", ")
            )),
            None => Ok(()),
        }
    }

    /// The raw JSON object.
    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.map
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
            CommandRequest::new_hset("t", "k", "v"),
            CommandRequest::new_hmset("t", vec![Kvpair::new("k", 1i64)]),
            CommandRequest::new_hdel("t", "k"),
            CommandRequest::new_hmdel("t", vec!["a".into(), "b".into()]),
            CommandRequest::new_hexist("t", "k"),
            CommandRequest::new_hmexist("t", vec![]),
            CommandRequest::new_auth("secret"),
            CommandRequest::new_hscan("t", Some("k".into()), 10),
            CommandRequest::new_hset("t".repeat(300), "k".repeat(200), "v"),
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
            // Answered from the bytes (an empty request decodes to "unknown").
            assert_eq!(lazy.value.get().is_none(), !bytes.is_empty(), "{req:?}");
            assert_eq!(*lazy, req);
        }
    }

    #[test]
    fn a_second_field_is_not_hidden_by_peeking() {
        // Two oneof fields: decoding keeps the last (hset), so must we.
        let mut bytes = CommandRequest::new_hget("t", "k").encode_to_vec();
        bytes.extend(CommandRequest::new_hset("t", "k", "v").encode_to_vec());
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

    #[test]
    fn peer_ip_drops_the_port() {
        assert_eq!(Context::new(1, "127.0.0.1:80", None).peer_ip(), "127.0.0.1");
        assert_eq!(Context::new(1, "[::1]:80", None).peer_ip(), "::1");
        assert_eq!(Context::new(1, "[::1]:80", None).elapsed(), Duration::ZERO);
    }

    #[test]
    fn options_name_the_key() {
        let o = Options::from_json(r#"{"n": "x", "m": 3}"#).unwrap();
        assert!(o.get::<u32>("n").unwrap_err().contains("`n`"));
        assert_eq!(o.get::<u32>("m"), Ok(Some(3)));
        assert_eq!(o.get::<u32>("absent"), Ok(None));
        assert!(o.require::<u32>("absent").unwrap_err().contains("`absent`"));
        assert!(o.only(&["n"]).unwrap_err().contains("`m`"));
        assert!(Options::from_json("[1]").is_err());
    }
}
