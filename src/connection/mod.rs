//! One client connection: read frames, run each through the [`Service`],
//! write the answers, run `on_after_send`.
//!
//! Requests may be pipelined: every complete frame already in the read
//! buffer is answered, in order, and the answers go out in one write (a
//! batch, cut at about 1 MiB). While a batch is being written nothing more
//! is read, so a peer that does not read its answers is not read either.
//!
//! # Limits
//!
//! No connection can keep its slot, or the server's memory, at will:
//!
//! | `[server]` key | when | then |
//! |---|---|---|
//! | `idle_timeout_secs` | nothing arrives for this long | closed |
//! | `frame_timeout_secs` | a frame has begun but is not whole after this long (counting only time spent waiting for the peer) | 408, closed |
//! | `auth_timeout_secs` | an auth hook is in the chain and the connection has not authenticated this long after it was accepted | 401, closed |
//! | `max_unauthenticated` | an auth hook is in the chain and this many connections are not authenticated yet | a new one: 503, closed at once |
//! | `write_timeout_secs` | a batch is not written within this long | closed |
//! | `max_unsent_bytes` | a batch the kernel did not take at once would hold more memory than is left of this server-wide budget | closed |
//!
//! A batch the kernel takes at once (a peer that reads) never touches the
//! budget. A batch held for a slow reader counts its write buffer and the
//! answers kept for `on_after_send`; answers over 64 KiB are kept only as
//! their bytes in the write buffer and decoded again for those hooks, so a
//! large answer is not held twice. Buffers that grew for a large batch or
//! frame are freed before the connection waits for its peer again.
//!
//! A connection also ends when the peer closes it, on a frame that cannot be
//! read past (too large, compressed header, socket error), or on server
//! shutdown (after answering what it already read).
//!
//! # TLS
//!
//! A connection from a TLS listener ([`Incoming::Tls`]) runs its handshake
//! first, in its own task, holding the connection slot its permit gave it
//! (the accept loop never waits for a handshake). Before the handshake it
//! takes its place among the unauthenticated (while an auth hook is in the
//! chain), so handshakes that never finish are bounded by
//! `max_unauthenticated` as clients that never authenticate are; past the
//! cap it is closed at once, without a handshake (a 503 would need one).
//! The handshake must finish within `frame_timeout_secs`. A handshake that
//! fails (a plaintext client on the TLS port, no client certificate or one
//! the CA did not sign) or times out closes the connection with one log
//! line saying which (rate-limited); nothing reaches the hooks. After it,
//! the connection is the same as over TCP, with the client certificate's
//! identity in [`HookCtx::identity`]. On the plaintext side, a TLS client
//! (its first bytes a ClientHello) is closed at once and logged as such.
//!
//! # Layout
//!
//! The loop is `Handler::run`, below: read a batch, answer it, wait for
//! the barrier if it wrote, flush, run `on_after_send`. A batch is answered
//! request by request for a synchronous store (`Handler::answer_batch`;
//! when no hook needs it decoded (none in the chain, all scoped to other
//! tables, or hooks that take raw requests: the built-ins, plugins), an
//! `hget` or `hset` runs from its frame's bytes, undecoded, through the
//! hooks' raw forms: `crate::command::inplace`,
//! [`crate::hooks::RawRequest`]),
//! or in three steps with one awaited storage call for the Redis Cluster
//! (`batched.rs`; see `crate::service`). Beside it:
//! `stream.rs` (the `Connection`: stream, buffers, clocks), `transport.rs`
//! (the stream: TCP or TLS, a type parameter), `answers.rs`
//! (a batch of answers encoded for one write), `deadlines.rs` (idle, frame
//! and auth deadlines on one timer), `limits.rs` (the limits above and the
//! [`Refusal`] that meets them), `end.rs` (why a connection ended, logged
//! once).

use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hookv_plugin::pb::{CommandRequest, CommandResponse};
use hookv_plugin::Command;
use prost::Message;
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::command::inplace::InPlace;
use crate::error::Error;
use crate::frame::FrameError;
use crate::hooks::{HookChain, HookCtx, NotifyMut, RawRequest};
use crate::service::Service;
use crate::storage::{Backend, Reach, Storage};
use crate::tls::{Accepted, ServerTls};

mod answers;
mod batched;
mod deadlines;
mod end;
mod limits;
mod stream;
mod transport;

use answers::Kept;
use end::End;
use limits::Unauthenticated;
pub use limits::{Limits, Refusal, Shared};
use stream::{Connection, Read};
pub use transport::Transport;

/// A connection as the accept loop hands it over.
#[derive(Debug)]
pub enum Incoming {
    /// Plain TCP: requests come at once.
    Plain(TcpStream),
    /// TCP whose TLS handshake, with this listener's config, comes first.
    Tls(TcpStream, Arc<ServerTls>),
}

/// Serves one connection until it ends; never panics on client input.
pub async fn serve<S: Backend>(
    incoming: Incoming,
    mut ctx: HookCtx,
    service: Service<S>,
    limits: Limits,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _open = crate::metrics::connection_opened();
    // Commands that size their answers (hscan pages) read it from here.
    ctx.set_max_frame_bytes(limits.max_frame_bytes);
    let tcp = match incoming {
        Incoming::Plain(tcp) => tcp,
        // On the heap: the TLS state (a stream alone is 1.2 KB) would
        // otherwise make every plaintext connection's task that much larger.
        Incoming::Tls(tcp, tls) => {
            return Box::pin(serve_tls(tcp, tls, ctx, service, limits, shared, shutdown)).await
        }
    };
    // Created once: each `cancelled()` call registers a waiter under a lock.
    let stopped = shutdown.cancelled_owned();
    tokio::pin!(stopped);
    let admission = Admission::new(&service, &shared);
    let mut handler = Handler::new(tcp, ctx, service, &limits, &shared, admission);
    handler.serve(stopped).await;
}

/// [`serve`] for a connection on the TLS port: counted among the
/// unauthenticated from accept (refused before any handshake past
/// `max_unauthenticated`), then the handshake, then served as any other.
async fn serve_tls<S: Backend>(
    tcp: TcpStream,
    tls: Arc<ServerTls>,
    mut ctx: HookCtx,
    service: Service<S>,
    limits: Limits,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let stopped = shutdown.cancelled_owned();
    tokio::pin!(stopped);
    let mut admission = Admission::new(&service, &shared);
    if let Some(refusal) = admission.refused.take() {
        return End::Limit(refusal).log(&ctx);
    }
    match handshake(tcp, &tls, limits.frame_timeout, stopped.as_mut()).await {
        Ok(Accepted { stream, identity }) => {
            ctx.set_identity(identity);
            let mut handler = Handler::new(stream, ctx, service, &limits, &shared, admission);
            handler.serve(stopped).await;
        }
        Err(end) => end.log(&ctx),
    }
}

/// Runs the server side of a TLS handshake on `tcp`, for at most
/// `timeout` (`frame_timeout_secs`) and not past shutdown.
async fn handshake(
    tcp: TcpStream,
    tls: &ServerTls,
    timeout: Duration,
    stopped: Pin<&mut WaitForCancellationFutureOwned>,
) -> Result<Accepted, End> {
    let accept = tokio::time::timeout(timeout, tls.accept(tcp));
    tokio::select! {
        // Nothing was read yet: nothing to answer.
        () = stopped => Err(End::Shutdown),
        done = accept => match done {
            Ok(accepted) => accepted.map_err(|e| End::Handshake(Box::new(e))),
            Err(_elapsed) => Err(End::HandshakeTimeout { secs: timeout.as_secs() }),
        },
    }
}

/// A new connection's place among those that must still authenticate,
/// taken at accept (before a TLS handshake).
struct Admission<'a> {
    unauthenticated: Unauthenticated<'a>,
    /// Past `max_unauthenticated`: the connection is refused.
    refused: Option<Refusal>,
}

impl<'a> Admission<'a> {
    /// Counts a new connection among the unauthenticated while the chain
    /// authenticates, unless `max_unauthenticated` are already.
    fn new<S: Backend>(service: &Service<S>, shared: &'a Shared) -> Self {
        let mut unauthenticated = Unauthenticated::new(&shared.unauthenticated);
        let refused = match service.hooks().authenticates() {
            true => unauthenticated.admit().err(),
            false => None,
        };
        Self {
            unauthenticated,
            refused,
        }
    }
}

/// One connection being served: its stream, what hooks know of it, and the
/// service that answers it.
struct Handler<'a, S, T> {
    conn: Connection<'a, T>,
    ctx: HookCtx,
    service: Service<S>,
    /// The connection's place among those that must still authenticate.
    unauthenticated: Unauthenticated<'a>,
    /// Set when `max_unauthenticated` refused it: its only answer.
    refused: Option<Refusal>,
    auth_timeout: Duration,
}

/// What answering one batch leaves to do once it is written.
#[derive(Debug)]
enum After {
    /// Wait for the peer.
    Read,
    /// The batch was cut at its size cap: answer the frames still buffered
    /// before reading, then close with this, if set.
    More(Option<End>),
    /// Close the connection (its last word, if any, ends the batch).
    Close(End),
}

impl After {
    /// Why the connection ended when writing this batch failed with
    /// `failed`: one already closing for a refusal, a limit or shutdown
    /// ended for that, not because the peer left meanwhile.
    fn or_failed(self, failed: End) -> End {
        match (self, failed) {
            (After::Close(end), End::Refused(FrameError::Io(_)))
                if !matches!(end, End::Requested) =>
            {
                end
            }
            (_, failed) => failed,
        }
    }
}

/// One batch of requests, answered and not yet written.
#[derive(Debug)]
struct Batch {
    /// Some request in it changed storage: its answer waits for the barrier.
    wrote: bool,
    after: After,
}

impl<'a, S: Backend, T: Transport> Handler<'a, S, T> {
    /// A handler for `stream`, admitted as `admission` says.
    fn new(
        stream: T,
        ctx: HookCtx,
        service: Service<S>,
        limits: &Limits,
        shared: &'a Shared,
        admission: Admission<'a>,
    ) -> Self {
        let mut conn = Connection::new(stream, limits, &shared.unsent, ctx.started());
        if admission.unauthenticated.is_counted() {
            conn.set_auth_due(Some(ctx.started() + limits.auth_timeout));
        }
        Self {
            conn,
            unauthenticated: admission.unauthenticated,
            refused: admission.refused,
            auth_timeout: limits.auth_timeout,
            service,
            ctx,
        }
    }

    /// Serves the connection until it ends, then closes it and logs why.
    async fn serve(&mut self, stopped: Pin<&mut WaitForCancellationFutureOwned>) {
        let end = self.run(stopped).await;
        self.conn.close();
        // A batch executed but never answered (its write failed) still counts.
        self.ctx.tally().unanswered();
        end.log(&self.ctx);
    }

    /// Answers batch after batch until the connection ends: first the
    /// refusal (503), if admission refused it.
    async fn run(&mut self, mut stopped: Pin<&mut WaitForCancellationFutureOwned>) -> End {
        // Its own handle, so the store can be borrowed while a batch
        // borrows the handler.
        let service = self.service.clone();
        let mut after = match self.refused.take() {
            None => After::Read,
            Some(refusal) => After::More(Some(End::Limit(refusal))),
        };
        loop {
            let ending = match after {
                After::Read => match self.conn.read_batch(&mut self.ctx, stopped.as_mut()).await {
                    Read::Frames => None,
                    Read::Last(end) => Some(end),
                    Read::Closed(end) => return end,
                },
                After::More(ending) => ending,
                After::Close(end) => return end,
            };
            // One chain per batch, even if a reload swaps it meanwhile.
            let chain = self.service.hooks();
            let batch = match service.store().reach() {
                Reach::Inline(store) => self.answer_batch(store, &chain, ending),
                Reach::Batched(cluster) => self.answer_batched(cluster, &chain, ending).await,
            };
            // No answer to a write leaves before the write is durable.
            if batch.wrote && !self.writes_durable().await {
                return End::NotDurable;
            }
            if let Err(failed) = self.conn.flush().await {
                return batch.after.or_failed(failed);
            }
            self.after_send(&chain);
            // The batch's requests and hook calls, added to the figures.
            let latency = self.ctx.latency();
            self.ctx.tally().answered(latency);
            if !matches!(batch.after, After::Close(_)) {
                self.track_auth(&chain);
            }
            after = batch.after;
        }
    }

    /// Answers every whole frame buffered, in order, up to the batch cap,
    /// each all the way through before the next; `ending` closes the
    /// connection after them.
    fn answer_batch(
        &mut self,
        store: &dyn Storage,
        chain: &HookChain,
        ending: Option<End>,
    ) -> Batch {
        let keep = chain.has_after_send();
        // No hook, or only hooks that take raw requests or are scoped to
        // tables: an hget or hset may run from its bytes.
        let in_place = chain.may_read_raw();
        let mut wrote = false;
        let end = loop {
            match self.conn.next_frame() {
                Ok(Some(frame)) => {
                    let raw = if in_place {
                        answer_in_place(store, chain, &mut self.ctx, &frame)
                    } else {
                        InPlaceAnswer::Decode
                    };
                    match raw {
                        InPlaceAnswer::Answered(command, res) => {
                            self.ctx.tally().add_command(Some(command), res.status);
                            self.conn.push_raw_answer(&frame, res, keep);
                        }
                        InPlaceAnswer::Decode | InPlaceAnswer::Received => {
                            let received = matches!(raw, InPlaceAnswer::Received);
                            let (req, res) = answer(store, chain, &mut self.ctx, frame, received);
                            self.ctx.tally().add(&req, res.status);
                            self.conn.push_answer(req, res, keep);
                        }
                    }
                    // Only a write that storage executed waits for the
                    // barrier (a write refused because the WAL failed must
                    // still get its answer), whatever hooks made of its answer.
                    wrote |= self.ctx.wrote();
                    // Nothing after this request is read: the connection ends.
                    if self.ctx.close_requested() {
                        break Some(ending.unwrap_or(End::Requested));
                    }
                    if self.conn.is_full() {
                        let after = After::More(ending);
                        return Batch { wrote, after };
                    }
                }
                Ok(None) => break ending,
                // The stream cannot be resynchronised: answer, then close.
                Err(e) => break Some(self.conn.refused(e)),
            }
        };
        self.end_batch(chain, end, wrote)
    }

    /// The batch's end: with `end`, the connection's last word (if it has
    /// one) ends the batch, and the connection closes after it.
    fn end_batch(&mut self, chain: &HookChain, end: Option<End>, wrote: bool) -> Batch {
        let Some(end) = end else {
            let after = After::Read;
            return Batch { wrote, after };
        };
        if let Some((status, message)) = self.conn.last_word(&end) {
            let (req, res) = refuse(chain, &mut self.ctx, &message, status);
            self.ctx.tally().add(&req, res.status);
            self.conn.push_answer(req, res, chain.has_after_send());
        }
        let after = After::Close(end);
        Batch { wrote, after }
    }

    /// Shows `on_after_send` every answer just written, as the client got it.
    fn after_send(&mut self, chain: &HookChain) {
        self.ctx.answered_at(Instant::now());
        let service = &self.service;
        self.conn.written(&mut self.ctx, |ctx, req, res| match req {
            Kept::Decoded(req) => service.after_send(chain, ctx, req, res),
            Kept::Raw(frame) => match RawRequest::parse(frame) {
                Some(raw) => chain.after_send.notify_raw(ctx, &raw, res),
                // Cannot happen (it parsed so once already); were it to,
                // the hooks still see the request, decoded.
                None => match CommandRequest::decode(&frame[..]) {
                    Ok(req) => service.after_send(chain, ctx, &req, res),
                    Err(e) => {
                        crate::log_limited!(error, conn = ctx.conn_id(), error = %e, "a request answered from its bytes no longer reads; on_after_send not run for it");
                    }
                },
            },
        });
    }

    /// After a batch: the connection is counted among the unauthenticated,
    /// and has an auth deadline, exactly while `chain` authenticates and it
    /// has no principal (it may have just authenticated, lost its principal,
    /// or met a reload that added or removed an auth hook).
    fn track_auth(&mut self, chain: &HookChain) {
        let must = self.ctx.principal.is_none() && chain.authenticates();
        if self.unauthenticated.track(must) {
            let due = must.then(|| Instant::now() + self.auth_timeout);
            self.conn.set_auth_due(due);
        }
    }

    /// Waits for the service's write barrier (the WAL's durability); false,
    /// logged, when the writes will never be durable.
    async fn writes_durable(&self) -> bool {
        let Some(barrier) = self.service.barrier() else {
            return true;
        };
        match barrier.wait().await {
            Ok(()) => true,
            Err(e) => {
                // A failing disk fails every connection that wrote: limited.
                crate::log_limited!(error, conn = self.ctx.conn_id(), error = %e, "writes not durable; closing without answering them");
                false
            }
        }
    }
}

/// Decodes one frame and runs it through the service (over `store`):
/// from `on_received` on, or, when its `on_received` hooks already ran on
/// its bytes (`received`, see [`InPlaceAnswer::Received`]), from storage
/// on.
#[inline]
fn answer(
    store: &dyn Storage,
    chain: &HookChain,
    ctx: &mut HookCtx,
    frame: Bytes,
    received: bool,
) -> (CommandRequest, CommandResponse) {
    // A cheap reference-counted clone, for plugins.
    ctx.set_request_frame(Some(frame.clone()));
    match CommandRequest::decode(frame) {
        Ok(req) => {
            let res = if received {
                crate::service::handle_received(store, chain, ctx, &req)
            } else {
                crate::service::handle(store, chain, ctx, &req)
            };
            ctx.set_request_frame(None);
            (req, res)
        }
        // (For a `received` frame this cannot happen: it parsed as a
        // plain request, and every such frame decodes.)
        Err(e) => {
            crate::metrics::malformed_frame();
            ctx.set_request_frame(None);
            ctx.set_wrote(false);
            let e = Error::Decode(e);
            refuse(chain, ctx, &e, e.status())
        }
    }
}

/// What [`answer_in_place`] made of a frame.
enum InPlaceAnswer {
    /// Answered from its bytes: its command and answer.
    Answered(Command, CommandResponse),
    /// Not for this path: decode it and answer it as usual.
    Decode,
    /// Its `on_received` hooks ran on its bytes and let it through, but its
    /// answer is not a 200: decode it and answer it as usual from storage
    /// on ([`answer`] with `received`): each hook sees a request once.
    Received,
}

/// Runs an `hget` or `hset` straight from its frame (see
/// `crate::command::inplace`), through the hooks it reaches, given it raw
/// ([`crate::hooks::RawRequest`]): only when every hook it reaches takes
/// raw requests (none of `chain`'s hooks that need it decoded admits its
/// table). The same steps as `crate::service::handle`.
#[inline]
fn answer_in_place(
    store: &dyn Storage,
    chain: &HookChain,
    ctx: &mut HookCtx,
    frame: &[u8],
) -> InPlaceAnswer {
    let Some(request) = InPlace::parse(frame) else {
        return InPlaceAnswer::Decode;
    };
    if chain.needs_decoded(request.table()) {
        return InPlaceAnswer::Decode;
    }
    let command = request.command();
    ctx.set_wrote(false);
    let raw = RawRequest::of(frame, &request);
    let mut res = match chain.received.notify_raw(ctx, &raw) {
        ControlFlow::Break(refusal) => refusal,
        ControlFlow::Continue(()) => {
            let Some((result, wrote)) = request.run(store) else {
                return InPlaceAnswer::Received;
            };
            ctx.set_wrote(wrote);
            let res = result.unwrap_or_else(|e| crate::service::failed(ctx, command.name(), e));
            match chain.executed.notify_raw(ctx, &raw, &res) {
                ControlFlow::Break(replacement) => replacement,
                ControlFlow::Continue(()) => res,
            }
        }
    };
    let _ = chain.before_send.notify_raw(ctx, &raw, &mut res);
    InPlaceAnswer::Answered(command, res)
}

/// The answer to a frame that never became a request: it still passes
/// on_before_send (and later on_after_send), as an unknown command.
fn refuse(
    chain: &HookChain,
    ctx: &mut HookCtx,
    e: &dyn std::fmt::Display,
    status: u32,
) -> (CommandRequest, CommandResponse) {
    let req = CommandRequest::default();
    let mut res = CommandResponse::error(status, e.to_string());
    let _ = chain.before_send.notify(ctx, &req, &mut res);
    (req, res)
}
