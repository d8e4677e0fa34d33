//! [`HookCtx`]: what a connection knows about itself, handed to every hook.
//!
//! Hooks get `&mut HookCtx` in `on_received` and `&HookCtx` elsewhere. What
//! they may change is a public field or a method that says so; the rest is
//! the transport's bookkeeping, which hooks read through accessors:
//!
//! | part | set by | hooks may |
//! |---|---|---|
//! | [`conn_id`](HookCtx::conn_id) | the server, at accept | read |
//! | [`peer`](HookCtx::peer) | the server, at accept | set it (a hook behind a trusted proxy may put the client's own address here); audit and plugins see the change |
//! | [`principal`](HookCtx::principal) | hooks that authenticate (the auth hook) | set it, or clear it to make the connection authenticate again |
//! | [`identity`](HookCtx::identity) | the connection, after a TLS handshake that verified a client certificate (`[server.tls] client_ca`) | read (the auth hook grants `cert_subject` users by it) |
//! | [`auth_failures`](HookCtx::auth_failures) | hooks that authenticate | count one more ([`HookCtx::add_auth_failure`]); never lower it, so a client cannot buy unlimited guesses |
//! | [`close_requested`](HookCtx::close_requested) | any hook ([`HookCtx::close_after_answer`]) | ask for the close; never cancel it |
//! | [`started`](HookCtx::started), [`arrived`](HookCtx::arrived), [`answered`](HookCtx::answered), [`latency`](HookCtx::latency) | the connection | read |
//! | [`request_frame`](HookCtx::request_frame) | the connection, while it handles a request | read |
//! | [`wrote`](HookCtx::wrote) | `Service::handle`, once storage executed the request | read |
//! | [`max_frame_bytes`](HookCtx::max_frame_bytes) | the connection (`[server] max_frame_bytes`) | read |

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::metrics::Tally;
use crate::tls::PeerIdentity;

/// What a connection knows about itself, handed to every hook.
#[derive(Debug, Clone)]
pub struct HookCtx {
    /// Unique per server process, in accept order.
    conn_id: u64,
    /// The client's address. Set by the server at accept; a hook may set it
    /// (say, to the address a trusted proxy reports), and everything after
    /// it (later hooks, audit, plugins) sees the new address.
    pub peer: SocketAddr,
    /// Who the connection authenticated as, if anyone. Set (or cleared) by
    /// hooks that authenticate; while such a hook is in the chain, a
    /// connection without a principal counts as unauthenticated (and is
    /// bounded by `[server] auth_timeout_secs` and `max_unauthenticated`).
    pub principal: Option<Arc<str>>,
    /// What the client's certificate says it is, when a TLS handshake
    /// verified one; `None` on plain TCP and on TLS without `client_ca`.
    /// Shared: a context is cloned, an identity never changes.
    identity: Option<Arc<PeerIdentity>>,
    /// Failed `auth` requests on this connection so far; see
    /// [`HookCtx::add_auth_failure`].
    auth_failures: u32,
    /// When the current request arrived (read from the socket).
    started: Instant,
    /// The same moment on the wall clock.
    arrived: SystemTime,
    /// When the current request's answer was written.
    answered: Instant,
    /// The current request as it arrived, while it is handled.
    request_frame: Option<Bytes>,
    /// The current request changed storage.
    wrote: bool,
    /// The largest answer this connection may send.
    max_frame_bytes: usize,
    /// `peer` as text, formatted once per connection (plugins get it as a
    /// string on every call), with the address it was formatted from.
    peer_text: (SocketAddr, Arc<str>),
    /// Set by [`HookCtx::close_after_answer`].
    close: bool,
    /// The batch's requests and hook calls, not yet added to the figures
    /// (`crate::metrics`): one tally per connection, added once per batch.
    tally: Tally,
}

impl HookCtx {
    /// A fresh context for a new connection.
    pub fn new(conn_id: u64, peer: SocketAddr) -> Self {
        let now = Instant::now();
        Self {
            conn_id,
            peer,
            peer_text: (peer, peer.to_string().into()),
            principal: None,
            identity: None,
            started: now,
            arrived: SystemTime::now(),
            answered: now,
            request_frame: None,
            wrote: false,
            auth_failures: 0,
            max_frame_bytes: crate::frame::DEFAULT_MAX_FRAME_BYTES,
            close: false,
            tally: Tally::new(conn_id),
        }
    }

    /// The context with `frame` as the current request's bytes, as a
    /// connection's is while it handles that request: for benches and
    /// tests that call hooks directly (a plugin then passes these bytes on
    /// instead of encoding the request).
    pub fn with_request_frame(mut self, frame: Bytes) -> Self {
        self.request_frame = Some(frame);
        self
    }

    /// Unique per server process, in accept order.
    #[inline]
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// The client's address as text (`"127.0.0.1:5555"`, `"[::1]:5555"`):
    /// formatted once per connection, or again if a hook changed `peer`.
    pub fn peer_text(&self) -> Cow<'_, str> {
        if self.peer_text.0 == self.peer {
            Cow::Borrowed(&self.peer_text.1)
        } else {
            Cow::Owned(self.peer.to_string())
        }
    }

    /// The verified client certificate's identity (its names: `CN=`,
    /// `DNS:`, `URI:`), on a TLS connection whose handshake required one
    /// (`[server.tls] client_ca`); `None` otherwise. A connection without a
    /// valid certificate on such a listener never reaches the hooks.
    #[inline]
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_deref()
    }

    /// The context with `identity` as its client certificate's, as a TLS
    /// connection's is after its handshake: for tests and benches that
    /// call hooks directly.
    pub fn with_identity(mut self, identity: PeerIdentity) -> Self {
        self.identity = Some(Arc::new(identity));
        self
    }

    /// Failed `auth` requests on this connection so far. A success does not
    /// reset it: a client holding one valid token must not be able to buy
    /// unlimited guesses at another.
    #[inline]
    pub fn auth_failures(&self) -> u32 {
        self.auth_failures
    }

    /// Counts one more failed `auth` request; returns the count. The auth
    /// hook closes the connection once it reaches its `max_failures`.
    pub fn add_auth_failure(&mut self) -> u32 {
        self.auth_failures = self.auth_failures.saturating_add(1);
        self.auth_failures
    }

    /// Asks the connection to close once the current answer is written
    /// (e.g. the auth hook after too many failed attempts). The answers to
    /// requests already handled are still sent; nothing after is read.
    pub fn close_after_answer(&mut self) {
        self.close = true;
    }

    /// True once a hook asked for the connection to close.
    #[inline]
    pub fn close_requested(&self) -> bool {
        self.close
    }

    /// When the current request arrived (read from the socket; one read
    /// may carry several pipelined requests). For latency.
    #[inline]
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The same moment as [`HookCtx::started`] on the wall clock; for logs
    /// and audit records.
    #[inline]
    pub fn arrived(&self) -> SystemTime {
        self.arrived
    }

    /// When the current request's answer was written: known in
    /// `on_after_send`; equal to [`HookCtx::started`] until then.
    #[inline]
    pub fn answered(&self) -> Instant {
        self.answered
    }

    /// Time from arrival to the answer being written, once it has been.
    pub fn latency(&self) -> Duration {
        self.answered.saturating_duration_since(self.started)
    }

    /// The current request exactly as it arrived (its protobuf bytes),
    /// while a connection handles it: plugins pass these on instead of
    /// encoding the request again. `None` outside a connection's handling.
    #[inline]
    pub fn request_frame(&self) -> Option<&Bytes> {
        self.request_frame.as_ref()
    }

    /// True when the current request changed storage (a write that storage
    /// executed successfully), whatever hooks made of its answer
    /// afterwards; the connection then waits for the write barrier.
    #[inline]
    pub fn wrote(&self) -> bool {
        self.wrote
    }

    /// The largest answer this connection may send (`[server]
    /// max_frame_bytes`; the default outside a connection): an `hscan` cuts
    /// its page to fit.
    #[inline]
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    // The transport's side: the connection and the service set these.

    /// Marks the arrival of a request (or of a batch of pipelined requests:
    /// one clock read serves them all).
    #[inline]
    pub(crate) fn arrive(&mut self) {
        self.arrive_at(Instant::now(), SystemTime::now());
    }

    /// Marks an arrival at `started` (`arrived` on the wall clock).
    pub(crate) fn arrive_at(&mut self, started: Instant, arrived: SystemTime) {
        self.started = started;
        self.arrived = arrived;
        self.answered = started;
    }

    /// Marks the current answer as written at `at`.
    #[inline]
    pub(crate) fn answered_at(&mut self, at: Instant) {
        self.answered = at;
    }

    /// Sets (or clears) the bytes of the request being handled.
    #[inline]
    pub(crate) fn set_request_frame(&mut self, frame: Option<Bytes>) {
        self.request_frame = frame;
    }

    /// Sets whether the current request changed storage.
    #[inline]
    pub(crate) fn set_wrote(&mut self, wrote: bool) {
        self.wrote = wrote;
    }

    /// Sets the largest answer the connection may send.
    pub(crate) fn set_max_frame_bytes(&mut self, max: usize) {
        self.max_frame_bytes = max;
    }

    /// Sets the identity the TLS handshake verified.
    pub(crate) fn set_identity(&mut self, identity: Option<PeerIdentity>) {
        self.identity = identity.map(Arc::new);
    }

    /// The connection's tally of the batch: its requests (counted by the
    /// connection) and its hook calls (counted by the chain).
    #[inline]
    pub(crate) fn tally(&mut self) -> &mut Tally {
        &mut self.tally
    }

    /// Adds the hook calls this context counted to the figures
    /// (`hookv_hook_calls_total`) without a batch: for callers that run
    /// requests without a connection. A connection adds them with each
    /// batch, and dropping the context adds what is left.
    pub fn flush_hook_calls(&mut self) {
        self.tally.flush_hooks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_follows_a_hook_that_changes_peer() {
        let mut ctx = HookCtx::new(1, "127.0.0.1:5555".parse().unwrap());
        assert_eq!(ctx.peer_text(), "127.0.0.1:5555");
        ctx.peer = "[::1]:80".parse().unwrap();
        assert_eq!(ctx.peer_text(), "[::1]:80");
    }
}
