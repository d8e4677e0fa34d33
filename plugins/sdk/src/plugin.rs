//! The safe side of a plugin: the [`Plugin`] trait, what its hooks see
//! ([`Context`]) and its configuration ([`Options`]).

use std::ops::ControlFlow;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::pb::{CommandRequest, CommandResponse};

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
    fn on_received(&self, _ctx: &Context<'_>, _req: &CommandRequest) -> Flow {
        ControlFlow::Continue(())
    }

    /// After execution, with the response storage produced. `Break(response)`
    /// replaces it.
    fn on_executed(
        &self,
        _ctx: &Context<'_>,
        _req: &CommandRequest,
        _res: &CommandResponse,
    ) -> Flow {
        ControlFlow::Continue(())
    }

    /// Before the response is written; may change it. `Break` stops the rest
    /// of this chain (the change stays).
    fn on_before_send(
        &self,
        _ctx: &Context<'_>,
        _req: &CommandRequest,
        _res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    /// After the response was written; observe only. `Break` stops the rest
    /// of this chain.
    fn on_after_send(
        &self,
        _ctx: &Context<'_>,
        _req: &CommandRequest,
        _res: &CommandResponse,
    ) -> ControlFlow<()> {
        ControlFlow::Continue(())
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
    /// Time since the server read the request.
    pub elapsed: Duration,
}

impl<'a> Context<'a> {
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
