//! Plugins: hooks loaded from shared libraries.
//!
//! A `[[hooks]]` table with `plugin = "path/to/libname.so"` (relative to the
//! config file's directory) loads that library; every other key of the table
//! is the plugin's options, passed to its `init` as one UTF-8 JSON object
//! (TOML dates become strings):
//!
//! ```toml
//! [[hooks]]
//! plugin = "target/release/librate_limit.so"
//! per_second = 100.0
//! burst = 20
//! ```
//!
//! Writing one: the README's "Write your own plugin" and the `hookv-plugin` crate. The
//! ABI is a small C ABI (`plugins/hookv_plugin.h`, `hookv_plugin::abi`):
//! one exported `hookv_plugin_descriptor` with the ABI version, the plugin's
//! name and its entry points; requests and responses cross as protobuf bytes.
//! This server loads versions 1 and 2; a version 2 plugin may call back into
//! the server (log lines, metrics: `host.rs`).
//!
//! # Loading
//!
//! [`PluginHook::load`] checks before any request can reach the plugin:
//! the file exists and loads, it exports the descriptor, the ABI version is
//! 1 or [`ABI_VERSION`], the required entry points are there and `init` accepts
//! the options. Any failure is a [`PluginError`] naming the file, which
//! stops the server's start.
//!
//! # Builds: loaded once, bounded
//!
//! A build is the file's bytes, identified by their SHA-256 ([`BuildId`]).
//! A process loads each build once and keeps it: a later load of the same
//! bytes (options-only changes on reload, a touched file, an identical
//! rebuild or copy) makes a new plugin instance from the library already
//! loaded. Only a build not seen before maps a new library, from a fresh
//! private copy of the bytes that were hashed (in a fresh private directory
//! under `$TMPDIR`, randomly named, mode 0700, removed right after loading:
//! the mapping stays valid). The dynamic loader hands back the already-open
//! library for a path (or file) it has seen, so without the copy a plugin
//! rebuilt at the same path would keep running its old code.
//!
//! Libraries are never unloaded (see below), so each new build costs the
//! process its mapping until exit. At most [`MAX_BUILDS`] builds are loaded
//! per process; past that, loading a new build is refused with a
//! [`PluginError::TooManyBuilds`] that says to restart (builds already
//! loaded still load, so the config the server started with still reloads).
//!
//! One library may thus serve several instances at once (two `[[hooks]]`
//! entries naming the same file, or an old and a new instance during a
//! reload): a plugin keeps per-instance state in the value its `init`
//! returns, not in globals.
//!
//! # Lifetime
//!
//! A [`PluginHook`] owns its plugin instance; the instance holds an `Arc`
//! to its library, so the code stays loaded while any hook from it can run.
//! Dropping the last `Arc<PluginHook>` (after the chain holding it is gone)
//! calls the plugin's teardown. Libraries themselves are never unloaded
//! (the list of loaded builds keeps them): see the module docs of
//! `src/plugin/ffi.rs` for why.
//!
//! # Calls
//!
//! Events the plugin does not export are not in its [`Events`], so chains
//! never call them. An event that is called passes the request's bytes as
//! they arrived (`HookCtx::request_frame`; encoded into a reused per-thread
//! buffer only when there are none), the response encoded the same way, the connection's
//! context, and decodes what comes back. Plugins take raw requests
//! ([`crate::hooks::RawRequest`]): an `hget` or `hset` that reaches only
//! such hooks is never decoded. A plugin that fails (a caught
//! panic, an error verdict, bytes that do not decode) is logged with its
//! name and counted (`hookv_plugin_panics_total{plugin}` for panics,
//! `hookv_plugin_errors_total{plugin}` for the rest), and then follows its
//! entry's `on_panic`: `fail_closed` (the default) turns that request into
//! a 500, `fail_open` goes on as if the plugin had said continue. The server
//! carries on either way.

mod ffi;
mod file;
mod host;

use std::cell::RefCell;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use hookv_plugin::abi::ABI_VERSION;
use hookv_plugin::abi::{BREAK, CONTINUE, ERROR};
use hookv_plugin::pb::{status, CommandRequest, CommandResponse};
use hookv_plugin::OptionValue;
use prost::Message;

use crate::config::HookEntry;
use crate::hooks::build::PLACEMENT_KEYS;
use crate::hooks::{Events, Flow, Hook, HookCtx, OnPanic, RawRequest};
use crate::metrics::{plugin_figures, PluginFigures};
use ffi::{Args, Event, Instance, LoadError};
use file::library;
pub use file::{BuildId, PluginFile, MAX_BUILDS};
use hookv_plugin::abi::PANIC;

/// A plugin that cannot be used; the server refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// `plugin = ` is not a string.
    #[error("`plugin` must be a string: the path of a shared library")]
    PathNotString,
    /// The file cannot be read (missing, unreadable).
    #[error("{}: cannot read the plugin: {source}", path.display())]
    Read {
        /// The library.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The private copy cannot be made.
    #[error("{}: cannot copy the plugin to {}: {source}", path.display(), copy.display())]
    Copy {
        /// The library.
        path: PathBuf,
        /// Where the copy was to go.
        copy: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Loading this build would map more than [`MAX_BUILDS`] builds.
    #[error(
        "{}: not loaded: this server has loaded {MAX_BUILDS} different plugin builds \
         already and keeps each until it exits (libraries are never unloaded); restart \
         the server to load this one",
        path.display()
    )]
    TooManyBuilds {
        /// The library.
        path: PathBuf,
    },
    /// The file is not a loadable library.
    #[error("{}: cannot load the library: {reason}", path.display())]
    Open {
        /// The library.
        path: PathBuf,
        /// The dynamic loader's words.
        reason: String,
    },
    /// The library does not export `hookv_plugin_descriptor`.
    #[error("{}: not a hookv plugin: it exports no `hookv_plugin_descriptor` (a Rust plugin gets it from hookv_plugin::export_plugin!)", path.display())]
    NoDescriptor {
        /// The library.
        path: PathBuf,
    },
    /// Built for another ABI version.
    #[error("{}: plugin ABI version {found}, but this server speaks versions 1 and {ABI_VERSION}; rebuild the plugin against this hookv's hookv-plugin crate", path.display())]
    AbiVersion {
        /// The library.
        path: PathBuf,
        /// The version the plugin reports.
        found: u32,
    },
    /// The descriptor is unusable.
    #[error("{}: bad plugin descriptor: {reason}", path.display())]
    Descriptor {
        /// The library.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The options cannot be put into JSON.
    #[error("options: {0}")]
    Options(String),
    /// The plugin's `init` refused (bad options, or it panicked).
    #[error("plugin {name:?} ({}) failed to start: {message}", path.display())]
    Init {
        /// The plugin's name.
        name: String,
        /// The library.
        path: PathBuf,
        /// The plugin's own message.
        message: String,
    },
}

/// Builds the plugin hook of a `[[hooks]]` entry from its file, read
/// already; every key of the entry but `plugin` and the placement keys
/// (`tables`, `on_panic`: the server's) is the plugin's options. A failure
/// of the plugin on a request follows `on_panic`.
pub fn build(
    entry: &HookEntry,
    file: &PluginFile,
    on_panic: OnPanic,
) -> Result<Arc<dyn Hook>, PluginError> {
    let mut options = entry.table.clone();
    options.remove("plugin");
    for key in PLACEMENT_KEYS {
        options.remove(key);
    }
    let json = options_json(options)?;
    Ok(Arc::new(
        PluginHook::from_file(file, &json)?.on_panic(on_panic),
    ))
}

/// The options table as the JSON object a plugin's `init` receives
/// (written by the SDK's [`OptionValue`], which its `Options` parses).
pub fn options_json(options: toml::Table) -> Result<String, PluginError> {
    fn convert(value: toml::Value) -> Result<OptionValue, PluginError> {
        Ok(match value {
            toml::Value::String(s) => OptionValue::String(s),
            toml::Value::Integer(i) => match u64::try_from(i) {
                Ok(n) => OptionValue::Unsigned(n),
                Err(_) => OptionValue::Signed(i),
            },
            toml::Value::Float(f) if f.is_finite() => OptionValue::Float(f),
            toml::Value::Float(f) => {
                return Err(PluginError::Options(format!("{f} has no JSON form")))
            }
            toml::Value::Boolean(b) => OptionValue::Bool(b),
            toml::Value::Datetime(d) => OptionValue::String(d.to_string()),
            toml::Value::Array(a) => {
                OptionValue::Array(a.into_iter().map(convert).collect::<Result<_, _>>()?)
            }
            toml::Value::Table(t) => table(t)?,
        })
    }
    fn table(t: toml::Table) -> Result<OptionValue, PluginError> {
        t.into_iter()
            .map(|(k, v)| Ok((k, convert(v)?)))
            .collect::<Result<_, _>>()
            .map(OptionValue::Object)
    }
    Ok(table(options)?.to_string())
}

/// A loaded, initialised plugin, used as a [`Hook`].
pub struct PluginHook {
    instance: Instance,
    events: Events,
    /// What a failure does to the request (the entry's `on_panic`).
    on_panic: OnPanic,
    /// `hookv_plugin_panics_total{plugin}`, `hookv_plugin_errors_total{plugin}`.
    figures: Arc<PluginFigures>,
}

impl std::fmt::Debug for PluginHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHook")
            .field("name", &self.instance.name())
            .field("events", &self.events)
            .finish()
    }
}

impl PluginHook {
    /// Loads the library at `path` (unless this build is loaded already),
    /// checks it, and initialises the plugin with `options_json` (a JSON
    /// object).
    pub fn load(path: &Path, options_json: &str) -> Result<Self, PluginError> {
        Self::from_file(&PluginFile::read(path)?, options_json)
    }

    /// [`PluginHook::load`] of a file read already.
    pub fn from_file(file: &PluginFile, options_json: &str) -> Result<Self, PluginError> {
        let path = file.path();
        let library = library(file)?;
        let instance = Instance::init(library, options_json).map_err(|e| match e {
            Ok(LoadError::NoSymbol) => PluginError::NoDescriptor {
                path: path.to_owned(),
            },
            Ok(LoadError::Version(found)) => PluginError::AbiVersion {
                path: path.to_owned(),
                found,
            },
            Ok(other) => PluginError::Descriptor {
                path: path.to_owned(),
                reason: other.to_string(),
            },
            Err((name, message)) => PluginError::Init {
                name,
                path: path.to_owned(),
                message,
            },
        })?;
        let events = Events {
            received: instance.handles(Event::Received),
            executed: instance.handles(Event::Executed),
            before_send: instance.handles(Event::BeforeSend),
            after_send: instance.handles(Event::AfterSend),
        };
        let figures = plugin_figures(instance.name());
        Ok(Self {
            figures,
            instance,
            events,
            on_panic: OnPanic::default(),
        })
    }

    /// The same plugin with failures handled as `on_panic` says.
    pub fn on_panic(mut self, on_panic: OnPanic) -> Self {
        self.on_panic = on_panic;
        self
    }

    /// The ABI version the plugin was built for (1 or 2).
    pub fn abi_version(&self) -> u32 {
        self.instance.version()
    }

    /// Calls `event` with the request, `res` (if any) and the context, and
    /// reads the answer. `decode` says whether a response in `out` matters.
    fn call(
        &self,
        event: Event,
        ctx: &HookCtx,
        req: Request<'_>,
        res: Option<&CommandResponse>,
        decode: bool,
    ) -> Verdict {
        // The call, once the request's and the response's bytes are at hand.
        let call = |request: &[u8], response: &[u8]| {
            let peer = ctx.peer_text();
            let args = Args {
                conn_id: ctx.conn_id(),
                started: ctx.started(),
                peer: &peer,
                principal: ctx.principal.as_deref(),
                request,
                response,
            };
            self.instance.call(event, &args)
        };
        let answer = match (req, res) {
            // Nothing to encode: the per-thread buffers are not needed.
            (Request::Raw(frame), None) => Ok(call(frame, &[])),
            _ => with_buffers(|buffer, response| -> Result<_, String> {
                // The bytes as received, when the connection has them.
                let request: &[u8] = match (req, ctx.request_frame().map(|f| &f[..])) {
                    (Request::Raw(frame), _) | (Request::Decoded(_), Some(frame)) => frame,
                    (Request::Decoded(req), None) => {
                        req.encode(buffer).map_err(|e| e.to_string())?;
                        buffer
                    }
                };
                if let Some(res) = res {
                    res.encode(response).map_err(|e| e.to_string())?;
                }
                Ok(call(request, response))
            }),
        };
        let answer = match answer {
            Ok(Some(answer)) => answer,
            Ok(None) => return Verdict::Continue(None),
            Err(e) => {
                let problem = format!("cannot encode the message: {e}");
                return self.failed(ctx, event, Failure::Error, &problem);
            }
        };
        let out = match (&answer.out, decode, answer.verdict) {
            (Some(buf), true, CONTINUE | BREAK) => match CommandResponse::decode(buf.bytes()) {
                Ok(res) => Some(res),
                Err(e) => {
                    let problem = format!("returned a response that does not decode: {e}");
                    return self.failed(ctx, event, Failure::Error, &problem);
                }
            },
            _ => None,
        };
        match answer.verdict {
            CONTINUE => Verdict::Continue(out),
            BREAK => Verdict::Break(out),
            ERROR | PANIC => {
                let message = answer.out.as_ref().map_or_else(
                    || "reported an error".into(),
                    |buf| String::from_utf8_lossy(buf.bytes()),
                );
                // The version 1 SDK reported a caught panic as an error
                // whose message starts so (its format is fixed).
                let panicked = answer.verdict == PANIC
                    || (self.instance.version() == 1 && message.starts_with("panicked"));
                let failure = if panicked {
                    Failure::Panic
                } else {
                    Failure::Error
                };
                self.failed(ctx, event, failure, &message)
            }
            other => {
                let problem = format!("returned an unknown verdict {other}");
                self.failed(ctx, event, Failure::Error, &problem)
            }
        }
    }

    /// Logs and counts a failure of this plugin; then, per `on_panic`, the
    /// 500 the client gets instead, or "continue".
    #[cold]
    fn failed(&self, ctx: &HookCtx, event: Event, failure: Failure, problem: &str) -> Verdict {
        let name = self.instance.name();
        match failure {
            Failure::Panic => self.figures.panicked(),
            Failure::Error => self.figures.failed(),
        }
        let on_panic = self.on_panic.describe();
        // A client may trigger it on every request: limited.
        crate::log_limited!(
            error,
            plugin = name,
            event = event.name(),
            conn = ctx.conn_id(),
            problem,
            on_panic,
            "plugin failed"
        );
        match self.on_panic {
            OnPanic::FailOpen => Verdict::Continue(None),
            OnPanic::FailClosed => Verdict::Failed(CommandResponse::error(
                status::INTERNAL,
                format!("plugin {name:?} failed on this request (see the server log)"),
            )),
        }
    }

    /// `on_received` and `on_executed`: go on, or answer now.
    fn flow(&self, ctx: &HookCtx, event: Event, verdict: Verdict) -> Flow {
        let verdict = match verdict {
            Verdict::Break(None) => {
                self.failed(ctx, event, Failure::Error, "broke without a response")
            }
            other => other,
        };
        match verdict {
            Verdict::Continue(_) => ControlFlow::Continue(()),
            Verdict::Break(Some(res)) | Verdict::Failed(res) => ControlFlow::Break(res),
            // Made a failure just above.
            Verdict::Break(None) => ControlFlow::Continue(()),
        }
    }
}

/// How a plugin failed, for the metrics.
#[derive(Clone, Copy)]
enum Failure {
    /// A panic its SDK caught.
    Panic,
    /// An error verdict, an unknown verdict, an answer that does not decode.
    Error,
}

/// The request a plugin is called with.
#[derive(Clone, Copy)]
enum Request<'a> {
    /// Decoded (the connection may still have its bytes).
    Decoded(&'a CommandRequest),
    /// Still in its frame's bytes.
    Raw(&'a [u8]),
}

/// A plugin's answer, read.
enum Verdict {
    /// Go on (with a replacement response, for `on_before_send`).
    Continue(Option<CommandResponse>),
    /// Answer now / stop the chain (with the response, if it sent one).
    Break(Option<CommandResponse>),
    /// The plugin failed; this 500 replaces the response.
    Failed(CommandResponse),
}

impl Hook for PluginHook {
    fn name(&self) -> &str {
        self.instance.name()
    }

    fn events(&self) -> Events {
        self.events
    }

    fn on_received(&self, ctx: &mut HookCtx, req: &CommandRequest) -> Flow {
        self.received(ctx, Request::Decoded(req))
    }

    fn on_executed(&self, ctx: &HookCtx, req: &CommandRequest, res: &CommandResponse) -> Flow {
        self.executed(ctx, Request::Decoded(req), res)
    }

    fn on_before_send(
        &self,
        ctx: &HookCtx,
        req: &CommandRequest,
        res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        self.before_send(ctx, Request::Decoded(req), res)
    }

    fn on_after_send(
        &self,
        ctx: &HookCtx,
        req: &CommandRequest,
        res: &CommandResponse,
    ) -> ControlFlow<()> {
        self.after_send(ctx, Request::Decoded(req), res)
    }

    /// A plugin is handed the request's bytes either way.
    fn reads_raw(&self) -> bool {
        true
    }

    fn on_received_raw(&self, ctx: &mut HookCtx, req: &RawRequest<'_>) -> Flow {
        self.received(ctx, Request::Raw(req.frame()))
    }

    fn on_executed_raw(&self, ctx: &HookCtx, req: &RawRequest<'_>, res: &CommandResponse) -> Flow {
        self.executed(ctx, Request::Raw(req.frame()), res)
    }

    fn on_before_send_raw(
        &self,
        ctx: &HookCtx,
        req: &RawRequest<'_>,
        res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        self.before_send(ctx, Request::Raw(req.frame()), res)
    }

    fn on_after_send_raw(
        &self,
        ctx: &HookCtx,
        req: &RawRequest<'_>,
        res: &CommandResponse,
    ) -> ControlFlow<()> {
        self.after_send(ctx, Request::Raw(req.frame()), res)
    }
}

/// The four events, on a request decoded or raw.
impl PluginHook {
    fn received(&self, ctx: &HookCtx, req: Request<'_>) -> Flow {
        let verdict = self.call(Event::Received, ctx, req, None, true);
        self.flow(ctx, Event::Received, verdict)
    }

    fn executed(&self, ctx: &HookCtx, req: Request<'_>, res: &CommandResponse) -> Flow {
        let verdict = self.call(Event::Executed, ctx, req, Some(res), true);
        self.flow(ctx, Event::Executed, verdict)
    }

    fn before_send(
        &self,
        ctx: &HookCtx,
        req: Request<'_>,
        res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        match self.call(Event::BeforeSend, ctx, req, Some(res), true) {
            Verdict::Continue(new) => {
                if let Some(new) = new {
                    *res = new;
                }
                ControlFlow::Continue(())
            }
            Verdict::Break(new) => {
                if let Some(new) = new {
                    *res = new;
                }
                ControlFlow::Break(())
            }
            Verdict::Failed(error) => {
                *res = error;
                ControlFlow::Continue(())
            }
        }
    }

    fn after_send(
        &self,
        ctx: &HookCtx,
        req: Request<'_>,
        res: &CommandResponse,
    ) -> ControlFlow<()> {
        match self.call(Event::AfterSend, ctx, req, Some(res), false) {
            Verdict::Break(_) => ControlFlow::Break(()),
            // A failure is logged; the response is already sent.
            Verdict::Continue(_) | Verdict::Failed(_) => ControlFlow::Continue(()),
        }
    }
}

thread_local! {
    /// Encoding buffers reused by every plugin call on this thread.
    static BUFFERS: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with two empty buffers, reusing this thread's if free.
fn with_buffers<T>(f: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> T) -> T {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (request, response) = &mut *bufs;
            request.clear();
            response.clear();
            f(request, response)
        }
        // Only if a plugin call re-entered this thread's plugin code.
        Err(_) => f(&mut Vec::new(), &mut Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_cross_as_one_json_object() {
        let table: toml::Table = toml::from_str(
            "n = 3\nf = 0.5\ns = \"x\"\nb = true\nd = 1979-05-27\na = [1, \"two\"]\n[t]\nk = \"v\"\n",
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&options_json(table).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "n": 3, "f": 0.5, "s": "x", "b": true, "d": "1979-05-27",
                "a": [1, "two"], "t": {"k": "v"}
            })
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = PluginHook::load(Path::new("/nonexistent/libx.so"), "{}").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("/nonexistent/libx.so: cannot read"),
            "{msg}"
        );
    }
}
