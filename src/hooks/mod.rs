//! Hooks: code that runs on the four events of every request.
//!
//! | event            | a hook sees                         | `Break` means                                   |
//! |------------------|-------------------------------------|-------------------------------------------------|
//! | `on_received`    | `&mut HookCtx`, the request         | answer with this response; storage not touched  |
//! | `on_executed`    | the context, request, response      | answer with this response instead               |
//! | `on_before_send` | the context, request, `&mut` response | stop the rest of this chain (the edit stays)  |
//! | `on_after_send`  | the context, request, response (sent) | stop the rest of this chain                   |
//!
//! A `Break` skips the rest of its own chain and any execution still ahead,
//! but the response always passes `on_before_send` → write → `on_after_send`,
//! so a refused request can still be rewritten and audited.
//!
//! A hook is anything implementing [`Hook`] (the built-ins, plugins), or a
//! closure given to the `ServiceInner` builder. Hooks are shared by every
//! connection and called concurrently, so state lives behind atomics or locks
//! inside the hook.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use hookv_plugin::pb::{CommandRequest, CommandResponse};

pub mod audit;
pub mod auth;
pub mod build;
pub mod pattern;
pub mod rewrite;
pub mod wal;

/// What an `on_received` or `on_executed` hook returns: continue, or answer
/// with this response now.
pub type Flow = ControlFlow<CommandResponse>;

/// What a connection knows about itself, handed to every hook.
#[derive(Debug, Clone)]
pub struct HookCtx {
    /// Unique per server process, in accept order.
    pub conn_id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// Who the connection authenticated as, if anyone (set by the auth hook).
    pub principal: Option<Arc<str>>,
    /// When the current request arrived (read from the socket); for latency.
    pub started: Instant,
    /// The same moment on the wall clock; for logs and audit records.
    pub arrived: SystemTime,
    /// When the current request's answer was written (set before
    /// `on_after_send`; equal to `started` until then).
    pub answered: Instant,
    /// The current request exactly as it arrived (its protobuf bytes),
    /// while it is being handled: plugins pass these on instead of encoding
    /// the request again. `None` outside `Service::handle` on a connection.
    pub request_frame: Option<bytes::Bytes>,
    /// Set by `Service::handle`: the current request changed storage (a
    /// write that storage executed successfully), whatever hooks did to its
    /// answer afterwards. The connection then waits for the write barrier.
    pub wrote: bool,
    /// Failed `auth` requests on this connection so far, counted by the auth
    /// hook (which closes the connection once they reach its
    /// `max_failures`). A success does not reset it: a client holding one
    /// valid token must not be able to buy unlimited guesses at another.
    pub auth_failures: u32,
    /// The largest answer this connection may send (`[server]
    /// max_frame_bytes`; the default until the connection sets it): an
    /// `hscan` cuts its page to fit.
    pub max_frame_bytes: usize,
    /// `peer` as text, formatted once per connection (plugins get it as a
    /// string on every call), with the address it was formatted from.
    peer_text: (SocketAddr, Arc<str>),
    /// Set by [`HookCtx::close_after_answer`].
    close: bool,
}

impl HookCtx {
    /// Marks the arrival of a request (or of a batch of pipelined requests:
    /// one clock read serves them all).
    pub fn arrive(&mut self) {
        self.started = Instant::now();
        self.arrived = SystemTime::now();
        self.answered = self.started;
    }

    /// Time from arrival to the answer being written, once it has been.
    pub fn latency(&self) -> std::time::Duration {
        self.answered.saturating_duration_since(self.started)
    }

    /// The client's address as text (`"127.0.0.1:5555"`, `"[::1]:5555"`):
    /// formatted once per connection, or again if a hook changed `peer`.
    pub fn peer_text(&self) -> std::borrow::Cow<'_, str> {
        if self.peer_text.0 == self.peer {
            std::borrow::Cow::Borrowed(&self.peer_text.1)
        } else {
            std::borrow::Cow::Owned(self.peer.to_string())
        }
    }

    /// Asks the connection to close once the current answer is written
    /// (e.g. the auth hook after too many failed attempts). The answers to
    /// requests already handled are still sent; nothing after is read.
    pub fn close_after_answer(&mut self) {
        self.close = true;
    }

    /// True once a hook asked for the connection to close.
    pub fn close_requested(&self) -> bool {
        self.close
    }

    /// A fresh context for a new connection.
    pub fn new(conn_id: u64, peer: SocketAddr) -> Self {
        let now = Instant::now();
        Self {
            conn_id,
            peer,
            peer_text: (peer, peer.to_string().into()),
            principal: None,
            started: now,
            arrived: SystemTime::now(),
            answered: now,
            request_frame: None,
            wrote: false,
            auth_failures: 0,
            max_frame_bytes: crate::frame::DEFAULT_MAX_FRAME_BYTES,
            close: false,
        }
    }
}

/// Which events a hook takes part in (so chains skip the rest). The same
/// type plugins declare theirs with.
pub use hookv_plugin::Events;

/// A hook with up to four event handlers; each defaults to "continue".
pub trait Hook: Send + Sync + 'static {
    /// A short name for logs, e.g. `"auth"` or a plugin's name.
    fn name(&self) -> &str;

    /// The events this hook handles. Defaults to all four.
    fn events(&self) -> Events {
        Events::ALL
    }

    /// Before execution. `Break(response)` answers with `response` and leaves
    /// storage untouched.
    fn on_received(&self, _ctx: &mut HookCtx, _req: &CommandRequest) -> Flow {
        ControlFlow::Continue(())
    }

    /// After execution, with the response storage produced. `Break(response)`
    /// replaces it (e.g. a failed WAL write turns success into a 500).
    fn on_executed(&self, _ctx: &HookCtx, _req: &CommandRequest, _res: &CommandResponse) -> Flow {
        ControlFlow::Continue(())
    }

    /// Before the response is written; may rewrite it. `Break` stops the rest
    /// of this chain.
    fn on_before_send(
        &self,
        _ctx: &HookCtx,
        _req: &CommandRequest,
        _res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    /// After the response frame is written. `Break` stops the rest of this chain.
    fn on_after_send(
        &self,
        _ctx: &HookCtx,
        _req: &CommandRequest,
        _res: &CommandResponse,
    ) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    /// True for a hook that authenticates connections (sets
    /// [`HookCtx::principal`] and refuses requests without one). While such
    /// a hook is in the chain, the server limits how many connections may
    /// stay unauthenticated, and for how long.
    fn authenticates(&self) -> bool {
        false
    }

    /// The server is stopping (or this hook left the chain on a reload):
    /// flush and release what the hook holds. Called once; requests may no
    /// longer reach the hook afterwards.
    fn shutdown(&self) {}
}

/// Makes the connection wait before it sends answers to writes: a
/// write-ahead log uses it so that no write is acknowledged before it is in
/// the log (group commit: every connection waiting on one flush).
pub trait WriteBarrier: Send + Sync + 'static {
    /// Completes when every write executed so far is as durable as the
    /// barrier promises; an error means it never will be, and the answers
    /// must not be sent.
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), BarrierError>> + Send + '_>>;
}

/// Two barriers that must both hold (the wal over sled with
/// `sync = "always"`), awaited together so their flushes overlap.
pub struct BothBarriers(pub Arc<dyn WriteBarrier>, pub Arc<dyn WriteBarrier>);

impl WriteBarrier for BothBarriers {
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), BarrierError>> + Send + '_>> {
        // Called now, so each fixes what it waits for before this returns.
        let (a, b) = (self.0.wait(), self.1.wait());
        Box::pin(async move { tokio::try_join!(a, b).map(|_| ()) })
    }
}

/// Writes could not be made durable; the connection closes without
/// acknowledging them.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BarrierError(pub String);

/// Runs an event's chain where hooks read the exchange and may answer early.
pub trait Notify<Arg: ?Sized> {
    /// Runs the chain in order; the first `Break` stops it and is returned.
    fn notify(&self, ctx: &mut HookCtx, req: &CommandRequest, arg: &Arg) -> Flow;
}

/// Runs an event's chain where hooks may change the response.
pub trait NotifyMut<Arg: ?Sized> {
    /// Runs the chain in order; the first `Break` stops it.
    fn notify(&self, ctx: &HookCtx, req: &CommandRequest, arg: &mut Arg) -> ControlFlow<()>;
}

/// The ordered hooks of a service, one list per event, in the order they were
/// added (config order).
#[derive(Clone, Default)]
pub struct HookChain {
    all: Vec<Arc<dyn Hook>>,
    pub(crate) received: Received,
    pub(crate) executed: Executed,
    pub(crate) before_send: BeforeSend,
    pub(crate) after_send: AfterSend,
}

/// The `on_received` chain.
#[derive(Clone, Default)]
pub struct Received(Vec<Arc<dyn Hook>>);
/// The `on_executed` chain.
#[derive(Clone, Default)]
pub struct Executed(Vec<Arc<dyn Hook>>);
/// The `on_before_send` chain.
#[derive(Clone, Default)]
pub struct BeforeSend(Vec<Arc<dyn Hook>>);
/// The `on_after_send` chain.
#[derive(Clone, Default)]
pub struct AfterSend(Vec<Arc<dyn Hook>>);

impl Notify<()> for Received {
    fn notify(&self, ctx: &mut HookCtx, req: &CommandRequest, _: &()) -> Flow {
        self.0.iter().try_for_each(|h| h.on_received(ctx, req))
    }
}

impl Notify<CommandResponse> for Executed {
    fn notify(&self, ctx: &mut HookCtx, req: &CommandRequest, res: &CommandResponse) -> Flow {
        self.0.iter().try_for_each(|h| h.on_executed(ctx, req, res))
    }
}

impl NotifyMut<CommandResponse> for BeforeSend {
    fn notify(
        &self,
        ctx: &HookCtx,
        req: &CommandRequest,
        res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        self.0
            .iter()
            .try_for_each(|h| h.on_before_send(ctx, req, res))
    }
}

impl Notify<CommandResponse> for AfterSend {
    fn notify(&self, ctx: &mut HookCtx, req: &CommandRequest, res: &CommandResponse) -> Flow {
        for h in &self.0 {
            if h.on_after_send(ctx, req, res).is_break() {
                break;
            }
        }
        ControlFlow::Continue(())
    }
}

impl HookChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `hook` to the chain of every event it handles.
    pub fn push(&mut self, hook: Arc<dyn Hook>) {
        let events = hook.events();
        if events.received {
            self.received.0.push(hook.clone());
        }
        if events.executed {
            self.executed.0.push(hook.clone());
        }
        if events.before_send {
            self.before_send.0.push(hook.clone());
        }
        if events.after_send {
            self.after_send.0.push(hook.clone());
        }
        self.all.push(hook);
    }

    /// Every hook, in the order added.
    pub fn hooks(&self) -> &[Arc<dyn Hook>] {
        &self.all
    }

    /// Calls [`Hook::shutdown`] on every hook, in order.
    pub fn shutdown(&self) {
        for hook in &self.all {
            hook.shutdown();
        }
    }

    /// True when some hook in the chain authenticates connections
    /// ([`Hook::authenticates`]).
    pub fn authenticates(&self) -> bool {
        self.all.iter().any(|h| h.authenticates())
    }

    /// True when some hook runs after the response is sent (so the
    /// connection must keep each request until then).
    pub fn has_after_send(&self) -> bool {
        !self.after_send.0.is_empty()
    }
}

impl std::fmt::Debug for HookChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.all.iter().map(|h| h.name()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A barrier that completes at once, with `Err` if it holds a reason.
    struct Fixed(Option<&'static str>);

    impl WriteBarrier for Fixed {
        fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), BarrierError>> + Send + '_>> {
            let outcome = self.0.map_or(Ok(()), |r| Err(BarrierError(r.into())));
            Box::pin(async move { outcome })
        }
    }

    #[tokio::test]
    async fn both_barriers_hold_only_when_each_does() {
        let ok = || Arc::new(Fixed(None)) as Arc<dyn WriteBarrier>;
        let failing = || Arc::new(Fixed(Some("disk gone"))) as Arc<dyn WriteBarrier>;
        assert!(BothBarriers(ok(), ok()).wait().await.is_ok());
        for both in [BothBarriers(ok(), failing()), BothBarriers(failing(), ok())] {
            let err = both.wait().await.unwrap_err();
            assert_eq!(err.to_string(), "disk gone");
        }
    }

    #[test]
    fn peer_text_follows_a_hook_that_changes_peer() {
        let mut ctx = HookCtx::new(1, "127.0.0.1:5555".parse().unwrap());
        assert_eq!(ctx.peer_text(), "127.0.0.1:5555");
        ctx.peer = "[::1]:80".parse().unwrap();
        assert_eq!(ctx.peer_text(), "[::1]:80");
    }
}
