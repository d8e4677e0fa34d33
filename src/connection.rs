//! One client connection: read frames, run each through the [`Service`],
//! write the answers, run `on_after_send`.
//!
//! Requests may be pipelined: every complete frame already in the read
//! buffer is answered, in order, and the answers go out in one write. A
//! connection ends when the peer closes it, when it sends nothing for
//! `idle_timeout`, on a frame that cannot be read past (too large, compressed
//! header, socket error), or on server shutdown (after answering what it
//! already read).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hookv_plugin::pb::{status, CommandRequest, CommandResponse};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::error::Error;
use crate::frame::{FrameCodec, FrameError};
use crate::hooks::{HookChain, HookCtx, NotifyMut};
use crate::service::Service;
use crate::storage::Storage;

/// Per-connection limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame accepted or sent.
    pub max_frame_bytes: usize,
    /// Close after this long without a request; `None` = never.
    pub idle_timeout: Option<Duration>,
}

/// Why a connection ended, for the log.
#[derive(Debug)]
enum End {
    PeerClosed,
    Idle,
    Shutdown,
    Refused(FrameError),
    NotDurable,
    /// The peer did not read its answers within the idle timeout.
    Stalled,
    /// A hook asked for the connection to close ([`HookCtx::close_after_answer`]).
    Requested,
}

/// Serves one connection until it ends; never panics on client input.
pub async fn serve<S: Storage>(
    mut stream: TcpStream,
    mut ctx: HookCtx,
    service: Service<S>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let mut codec = FrameCodec::new(limits.max_frame_bytes);
    // Commands that size their answers (hscan pages) read it from here.
    ctx.max_frame_bytes = limits.max_frame_bytes;
    let mut rbuf = BytesMut::with_capacity(8 * 1024);
    let mut wbuf = BytesMut::with_capacity(8 * 1024);
    // Answered requests waiting for on_after_send, kept only if a hook needs them.
    let mut sent: Vec<(CommandRequest, CommandResponse)> = Vec::new();

    // Created once: each `cancelled()` call registers a waiter under a lock.
    let stopped = shutdown.cancelled_owned();
    tokio::pin!(stopped);
    // Fires when the connection may have been idle too long; see below.
    // (Disabled by the select's guard when there is no idle timeout.)
    let idle = tokio::time::sleep(limits.idle_timeout.unwrap_or(Duration::ZERO));
    tokio::pin!(idle);
    // Set when the next pass must be the last: the read side has ended
    // (shutdown, or a truncated frame at EOF to report).
    let mut last_pass: Option<End> = None;
    let end = loop {
        let chain = service.hooks();
        let keep = chain.has_after_send();
        // Answer every complete frame already buffered, in order.
        let mut end = None;
        let mut wrote = false;
        let mut capped = false;
        loop {
            match codec.decode(&mut rbuf) {
                Ok(Some(frame)) => {
                    let (req, res) = answer(&service, &chain, &mut ctx, frame);
                    // Only a write that storage executed waits for the
                    // barrier (a write refused because the WAL failed must
                    // still get its answer), whatever hooks made of its answer.
                    wrote |= ctx.wrote;
                    encode(&codec, &res, &mut wbuf);
                    if keep {
                        sent.push((req, res));
                    }
                    // Nothing after this request is read: the connection ends.
                    if ctx.close_requested() {
                        break;
                    }
                    // Bound what one batch can make us hold: answers to a
                    // few kilobytes of pipelined hgetalls could be gigabytes.
                    if wbuf.len() >= MAX_BATCH_BYTES {
                        capped = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // The stream cannot be resynchronised: answer, then close.
                    end = Some(End::Refused(e));
                    break;
                }
            }
        }
        // A capped batch leaves frames buffered: answer them before ending.
        let end = if capped {
            end
        } else {
            end.or(last_pass.take())
        };
        let last_words = match &end {
            Some(End::Refused(e)) => Some(refuse(&chain, &mut ctx, e, e.status())),
            // A request cut off by shutdown was not executed: say so, so the
            // client knows it is safe to retry elsewhere.
            Some(End::Shutdown) if !codec.is_idle(&rbuf) => Some(refuse(
                &chain,
                &mut ctx,
                &"server shutting down: the unfinished request at the end of the stream was not executed",
                status::UNAVAILABLE,
            )),
            _ => None,
        };
        if let Some((req, res)) = last_words {
            encode(&codec, &res, &mut wbuf);
            if keep {
                sent.push((req, res));
            }
        }
        // No answer to a write leaves before the write is durable.
        if let (true, Some(barrier)) = (wrote, service.barrier()) {
            if let Err(e) = barrier.wait().await {
                error!(conn = ctx.conn_id, error = %e, "writes not durable; closing without answering them");
                break End::NotDurable;
            }
        }
        if !wbuf.is_empty() {
            // A peer that stops reading must not hold its answers (and its
            // connection slot) forever: writes time out like reads do.
            let written = match limits.idle_timeout {
                Some(limit) => tokio::time::timeout(limit, stream.write_all(&wbuf)).await,
                None => Ok(stream.write_all(&wbuf).await),
            };
            wbuf.clear();
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break end.unwrap_or(End::Refused(FrameError::Io(e))),
                Err(_elapsed) => break End::Stalled,
            }
            ctx.answered = Instant::now();
            after_send(&service, &chain, &mut ctx, &mut sent);
        }
        if let Some(end) = end {
            break end;
        }
        if ctx.close_requested() {
            break End::Requested;
        }
        drop(chain);
        if capped {
            continue;
        }

        // Wait for more bytes, shutdown, or the idle timeout.
        tokio::select! {
            () = &mut stopped => {
                // Answer what the client already sent, then close.
                read_ready(&mut stream, &mut rbuf).await;
                ctx.arrive();
                last_pass = Some(End::Shutdown);
            }
            () = &mut idle, if limits.idle_timeout.is_some() => {
                // One timer per connection, pushed forward lazily: re-arming a
                // timeout on every read costs a timer-wheel update per request.
                let limit = limits.idle_timeout.unwrap_or(Duration::ZERO);
                let quiet_since = ctx.started;
                if quiet_since.elapsed() >= limit {
                    break End::Idle;
                }
                idle.as_mut().reset((quiet_since + limit).into());
            }
            read = stream.read_buf(&mut rbuf) => {
                // One clock read per batch: every request in it arrived now.
                ctx.arrive();
                match read {
                    Ok(0) => match codec.check_eof(&rbuf) {
                        Ok(()) => break End::PeerClosed,
                        // Report it: the peer may still read after closing its write half.
                        Err(e) => last_pass = Some(End::Refused(e)),
                    },
                    Ok(_) => {}
                    Err(e) => break End::Refused(FrameError::Io(e)),
                }
            }
        }
    };
    match end {
        End::Refused(e) => {
            // A client can cause this at will (garbage, a flood of bad
            // frames): limited.
            crate::log_limited!(warn, conn = ctx.conn_id, peer = %ctx.peer, error = %e, "connection closed")
        }
        End::Requested => {
            debug!(conn = ctx.conn_id, peer = %ctx.peer, "a hook closed the connection")
        }
        End::Stalled => {
            info!(conn = ctx.conn_id, peer = %ctx.peer, "peer stopped reading its answers; closed")
        }
        End::Idle => {
            info!(conn = ctx.conn_id, peer = %ctx.peer, "connection idle too long, closed")
        }
        End::Shutdown | End::PeerClosed | End::NotDurable => {
            debug!(conn = ctx.conn_id, peer = %ctx.peer, reason = ?end, "connection closed")
        }
    }
}

/// Decodes one frame and runs it through the service.
fn answer<S: Storage>(
    service: &Service<S>,
    chain: &HookChain,
    ctx: &mut HookCtx,
    frame: Bytes,
) -> (CommandRequest, CommandResponse) {
    // A cheap reference-counted clone, for plugins.
    ctx.request_frame = Some(frame.clone());
    match CommandRequest::decode(frame) {
        Ok(req) => {
            let res = service.handle(chain, ctx, &req);
            ctx.request_frame = None;
            (req, res)
        }
        Err(e) => {
            ctx.request_frame = None;
            ctx.wrote = false;
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

/// Answers held for one write at most (about): a batch of pipelined
/// requests is cut into writes of this size.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// How long shutdown keeps reading a connection for requests already on
/// their way (at most).
const SHUTDOWN_READ_QUIET: Duration = Duration::from_millis(100);

/// Moves the bytes that have already arrived (or arrive within
/// [`SHUTDOWN_READ_QUIET`]) into `rbuf`, stopping early at EOF. A plain `try_read` is not enough:
/// the reactor may not have seen the socket's readiness yet.
async fn read_ready(stream: &mut TcpStream, rbuf: &mut BytesMut) {
    let deadline = tokio::time::Instant::now() + SHUTDOWN_READ_QUIET;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read_buf(rbuf)).await {
        if n == 0 {
            return;
        }
    }
}

/// Appends `res` to `wbuf`; a response too large for a frame becomes a 413.
fn encode(codec: &FrameCodec, res: &CommandResponse, wbuf: &mut BytesMut) {
    if let Err(len) = codec.encode_message(res, wbuf) {
        let too_large = CommandResponse::from(Error::ResponseTooLarge {
            len,
            max: codec.max_frame_bytes(),
        });
        // A bare error message always fits any sane maximum; if the maximum
        // is absurdly small, the peer gets nothing rather than a broken frame.
        let _ = codec.encode_message(&too_large, wbuf);
    }
}

fn after_send<S: Storage>(
    service: &Service<S>,
    chain: &HookChain,
    ctx: &mut HookCtx,
    sent: &mut Vec<(CommandRequest, CommandResponse)>,
) {
    for (req, res) in sent.drain(..) {
        service.after_send(chain, ctx, &req, &res);
    }
}
