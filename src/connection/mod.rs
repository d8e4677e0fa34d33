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
//! # Layout
//!
//! The loop is `Handler::run`, below: read a batch, answer it, wait for
//! the barrier if it wrote, flush, run `on_after_send`. Beside it:
//! `stream.rs` (the `Connection`: socket, buffers, clocks), `answers.rs`
//! (a batch of answers encoded for one write), `deadlines.rs` (idle, frame
//! and auth deadlines on one timer), `limits.rs` (the limits above and the
//! [`Refusal`] that meets them), `end.rs` (why a connection ended, logged
//! once).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hookv_plugin::pb::{CommandRequest, CommandResponse};
use prost::Message;
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::error::Error;
use crate::frame::FrameError;
use crate::hooks::{HookChain, HookCtx, NotifyMut};
use crate::service::Service;
use crate::storage::Storage;

mod answers;
mod deadlines;
mod end;
mod limits;
mod stream;

use end::End;
use limits::Unauthenticated;
pub use limits::{Limits, Refusal, Shared};
use stream::{Connection, Read};

/// Serves one connection until it ends; never panics on client input.
pub async fn serve<S: Storage>(
    stream: TcpStream,
    mut ctx: HookCtx,
    service: Service<S>,
    limits: Limits,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _open = crate::metrics::connection_opened();
    // Commands that size their answers (hscan pages) read it from here.
    ctx.set_max_frame_bytes(limits.max_frame_bytes);
    // Created once: each `cancelled()` call registers a waiter under a lock.
    let stopped = shutdown.cancelled_owned();
    tokio::pin!(stopped);
    let mut handler = Handler {
        conn: Connection::new(stream, &limits, &shared.unsent, ctx.started()),
        unauthenticated: Unauthenticated::new(&shared.unauthenticated),
        auth_timeout: limits.auth_timeout,
        service,
        ctx,
    };
    let end = handler.run(stopped).await;
    // A batch executed but never answered (its write failed) still counts.
    handler.ctx.tally().unanswered();
    end.log(&handler.ctx);
}

/// One connection being served: its socket, what hooks know of it, and the
/// service that answers it.
struct Handler<'a, S> {
    conn: Connection<'a>,
    ctx: HookCtx,
    service: Service<S>,
    /// The connection's place among those that must still authenticate.
    unauthenticated: Unauthenticated<'a>,
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

impl<S: Storage> Handler<'_, S> {
    /// Answers batch after batch until the connection ends.
    async fn run(&mut self, mut stopped: Pin<&mut WaitForCancellationFutureOwned>) -> End {
        let mut after = self.admit();
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
            let batch = self.answer_batch(&chain, ending);
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

    /// Answers every whole frame buffered, in order, up to the batch cap;
    /// `ending` closes the connection after them.
    fn answer_batch(&mut self, chain: &HookChain, ending: Option<End>) -> Batch {
        let keep = chain.has_after_send();
        let mut wrote = false;
        let end = loop {
            match self.conn.next_frame() {
                Ok(Some(frame)) => {
                    let (req, res) = answer(&self.service, chain, &mut self.ctx, frame);
                    // Only a write that storage executed waits for the
                    // barrier (a write refused because the WAL failed must
                    // still get its answer), whatever hooks made of its answer.
                    wrote |= self.ctx.wrote();
                    self.ctx.tally().add(&req, res.status);
                    self.conn.push_answer(req, res, keep);
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
                Err(e) => break Some(End::Refused(e)),
            }
        };
        let Some(end) = end else {
            let after = After::Read;
            return Batch { wrote, after };
        };
        if let Some((status, message)) = self.conn.last_word(&end) {
            let (req, res) = refuse(chain, &mut self.ctx, &message, status);
            self.ctx.tally().add(&req, res.status);
            self.conn.push_answer(req, res, keep);
        }
        let after = After::Close(end);
        Batch { wrote, after }
    }

    /// Shows `on_after_send` every answer just written, as the client got it.
    fn after_send(&mut self, chain: &HookChain) {
        self.ctx.answered_at(Instant::now());
        let service = &self.service;
        self.conn.written(&mut self.ctx, |ctx, req, res| {
            service.after_send(chain, ctx, req, res)
        });
    }

    /// Counts a new connection among the unauthenticated while the chain
    /// authenticates; one past `max_unauthenticated` is answered 503.
    fn admit(&mut self) -> After {
        if !self.service.hooks().authenticates() {
            return After::Read;
        }
        match self.unauthenticated.admit() {
            Ok(()) => {
                let due = self.ctx.started() + self.auth_timeout;
                self.conn.set_auth_due(Some(due));
                After::Read
            }
            Err(refusal) => After::More(Some(End::Limit(refusal))),
        }
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

/// Decodes one frame and runs it through the service.
#[inline]
fn answer<S: Storage>(
    service: &Service<S>,
    chain: &HookChain,
    ctx: &mut HookCtx,
    frame: Bytes,
) -> (CommandRequest, CommandResponse) {
    // A cheap reference-counted clone, for plugins.
    ctx.set_request_frame(Some(frame.clone()));
    match CommandRequest::decode(frame) {
        Ok(req) => {
            let res = service.handle(chain, ctx, &req);
            ctx.set_request_frame(None);
            (req, res)
        }
        Err(e) => {
            crate::metrics::malformed_frame();
            ctx.set_request_frame(None);
            ctx.set_wrote(false);
            let e = Error::Decode(e);
            refuse(chain, ctx, &e, e.status())
        }
    }
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
