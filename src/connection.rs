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

use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hookv_plugin::pb::{status, CommandRequest, CommandResponse};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::ServerConfig;
use crate::error::Error;
use crate::frame::{FrameCodec, FrameError, HEADER_LEN};
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
    /// A frame, once begun, must be whole within this much waiting for it.
    pub frame_timeout: Duration,
    /// While the chain authenticates: how long after accept a connection
    /// may stay unauthenticated.
    pub auth_timeout: Duration,
    /// A batch of answers must be written within this.
    pub write_timeout: Duration,
}

impl Limits {
    /// The limits `config` sets.
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            max_frame_bytes: config.max_frame_bytes,
            idle_timeout: (config.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(config.idle_timeout_secs)),
            frame_timeout: Duration::from_secs(config.frame_timeout_secs),
            auth_timeout: Duration::from_secs(config.auth_timeout_secs),
            write_timeout: Duration::from_secs(config.write_timeout_secs),
        }
    }
}

/// The server-wide limits every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// Connections that must still authenticate (counted while an auth hook
    /// is in the chain), so they cannot take every slot.
    unauthenticated: Gauge,
    /// Memory for answers whose peers are not reading them.
    unsent: Budget,
}

impl Shared {
    /// The shared limits `config` sets.
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            unauthenticated: Gauge {
                count: AtomicUsize::new(0),
                max: config.max_unauthenticated(),
            },
            unsent: Budget {
                left: AtomicUsize::new(config.max_unsent_bytes),
            },
        }
    }
}

/// A count of connections with a cap on admitting more. An atomic: touched
/// when a connection starts, authenticates or ends, not per request.
#[derive(Debug)]
struct Gauge {
    count: AtomicUsize,
    max: usize,
}

impl Gauge {
    /// A place, if fewer than `max` are taken.
    fn admit(&self) -> Option<Place<'_>> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        Some(Place(self))
    }

    /// A place whatever the count, for a connection already being served
    /// that must authenticate again (it lost its principal, or a reload
    /// added an auth hook): the cap is for new connections.
    fn enter(&self) -> Place<'_> {
        self.count.fetch_add(1, Ordering::AcqRel);
        Place(self)
    }
}

/// One connection counted by a [`Gauge`]; dropping it gives the place back.
#[derive(Debug)]
struct Place<'a>(&'a Gauge);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes the server may hold for peers that are not reading.
#[derive(Debug)]
struct Budget {
    left: AtomicUsize,
}

impl Budget {
    /// Takes `n` bytes of the budget, if that many are left.
    fn reserve(&self, n: usize) -> Option<Reserved<'_>> {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .ok()?;
        Some(Reserved { budget: self, n })
    }
}

/// Bytes taken from a [`Budget`]; dropping this gives them back.
#[derive(Debug)]
struct Reserved<'a> {
    budget: &'a Budget,
    n: usize,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.budget.left.fetch_add(self.n, Ordering::AcqRel);
    }
}

/// Why a connection ended, for the log.
#[derive(Debug)]
enum End {
    PeerClosed,
    Idle,
    Shutdown,
    /// A frame that cannot be read past (or not in time): answered, closed.
    Refused(FrameError),
    /// A limit of the server: answered, closed.
    Limit(Refusal),
    NotDurable,
    /// The peer did not read its answers within the write timeout.
    Stalled,
    /// The peer is not reading and its answers would need more of
    /// `max_unsent_bytes` than is left.
    OverBudget {
        /// Bytes the connection would have held.
        held: usize,
    },
    /// A hook asked for the connection to close ([`HookCtx::close_after_answer`]).
    Requested,
}

/// A connection closed for a limit of the server, with a last answer.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not authenticated within `auth_timeout_secs` of being accepted.
    #[error(
        "not authenticated within auth_timeout_secs ({secs} s) of connecting; closing the connection"
    )]
    AuthTimeout {
        /// The configured limit.
        secs: u64,
    },
    /// `max_unauthenticated` connections are already waiting to authenticate.
    #[error(
        "too many unauthenticated connections (max_unauthenticated = {max}); authenticate right \
         after connecting, or retry later"
    )]
    TooManyUnauthenticated {
        /// The configured limit.
        max: usize,
    },
}

impl Refusal {
    /// The status a client sees.
    pub fn status(&self) -> u32 {
        match self {
            Refusal::AuthTimeout { .. } => status::UNAUTHENTICATED,
            Refusal::TooManyUnauthenticated { .. } => status::UNAVAILABLE,
        }
    }
}

/// Serves one connection until it ends; never panics on client input.
pub async fn serve<S: Storage>(
    mut stream: TcpStream,
    mut ctx: HookCtx,
    service: Service<S>,
    limits: Limits,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut codec = FrameCodec::new(limits.max_frame_bytes);
    // Commands that size their answers (hscan pages) read it from here.
    ctx.set_max_frame_bytes(limits.max_frame_bytes);
    let mut rbuf = BytesMut::with_capacity(BUF_BYTES);
    let mut batch = Batch::new();
    let mut deadlines = Deadlines::new(&limits, ctx.started());

    // Created once: each `cancelled()` call registers a waiter under a lock.
    let stopped = shutdown.cancelled_owned();
    tokio::pin!(stopped);
    let mut alarm = Alarm::new();
    // Set when the next pass must be the last: the read side has ended
    // (shutdown, a truncated frame at EOF to report, a deadline missed).
    let mut last_pass: Option<End> = None;
    let mut unauthenticated = Unauthenticated::new(&shared.unauthenticated);
    if service.hooks().authenticates() {
        match unauthenticated.admit() {
            Ok(()) => deadlines.auth_due = Some(ctx.started() + limits.auth_timeout),
            Err(refusal) => last_pass = Some(End::Limit(refusal)),
        }
    }
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
                    deadlines.frame_done();
                    let (req, res) = answer(&service, &chain, &mut ctx, frame);
                    // Only a write that storage executed waits for the
                    // barrier (a write refused because the WAL failed must
                    // still get its answer), whatever hooks made of its answer.
                    wrote |= ctx.wrote();
                    batch.push(&codec, req, res, keep);
                    // Nothing after this request is read: the connection ends.
                    if ctx.close_requested() {
                        break;
                    }
                    // Bound what one batch can make us hold: answers to a
                    // few kilobytes of pipelined hgetalls could be gigabytes.
                    if batch.len() >= MAX_BATCH_BYTES {
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
        if let Some((status, message)) = end.as_ref().and_then(|e| last_word(e, &codec, &rbuf)) {
            let (req, res) = refuse(&chain, &mut ctx, &message, status);
            batch.push(&codec, req, res, keep);
        }
        // No answer to a write leaves before the write is durable.
        if let (true, Some(barrier)) = (wrote, service.barrier()) {
            if let Err(e) = barrier.wait().await {
                tracing::error!(conn = ctx.conn_id(), error = %e, "writes not durable; closing without answering them");
                break End::NotDurable;
            }
        }
        if !batch.is_empty() {
            if let Err(failed) =
                write_batch(&mut stream, &batch, &shared.unsent, limits.write_timeout).await
            {
                // A peer gone while we answered a refusal: the refusal is the story.
                break match (end, failed) {
                    (Some(end), End::Refused(FrameError::Io(_))) => end,
                    (_, failed) => failed,
                };
            }
            ctx.answered_at(Instant::now());
            batch.after_send(&service, &chain, &mut ctx);
            batch.clear();
        }
        if let Some(end) = end {
            break end;
        }
        if ctx.close_requested() {
            break End::Requested;
        }
        let must = ctx.principal.is_none() && chain.authenticates();
        drop(chain);
        if unauthenticated.track(must) {
            deadlines.auth_due = must.then(|| Instant::now() + limits.auth_timeout);
        }
        if capped {
            continue;
        }

        // Wait for more bytes, shutdown, or a deadline.
        batch.shrink();
        shrink(&mut rbuf);
        deadlines.wait(!codec.is_idle(&rbuf));
        alarm.set(deadlines.next());
        tokio::select! {
            () = &mut stopped => {
                // Answer what the client already sent, then close.
                read_ready(&mut stream, &mut rbuf).await;
                ctx.arrive();
                last_pass = Some(End::Shutdown);
            }
            () = alarm.ring(), if alarm.is_set() => {
                let now = Instant::now();
                deadlines.woke(now);
                match deadlines.expired(now, codec.received(&rbuf)) {
                    Some(End::Idle) => break End::Idle,
                    // Answered on the last pass.
                    Some(end) => last_pass = Some(end),
                    // A deadline moved later; the alarm is set again.
                    None => {}
                }
            }
            read = stream.read_buf(&mut rbuf) => {
                // One clock read per batch: every request in it arrived now.
                ctx.arrive();
                deadlines.read(ctx.started());
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
    log_end(&ctx, &end);
}

/// Logs why a connection ended. Anything a client can cause at will (one
/// connection after another) is rate-limited.
fn log_end(ctx: &HookCtx, end: &End) {
    let (conn, peer) = (ctx.conn_id(), &ctx.peer);
    match end {
        End::Refused(e) => {
            crate::log_limited!(warn, conn, %peer, error = %e, "connection closed")
        }
        End::Limit(refusal) => {
            crate::log_limited!(warn, conn, %peer, reason = %refusal, "connection refused")
        }
        End::OverBudget { held } => crate::log_limited!(
            warn,
            conn,
            %peer,
            held,
            "peer is not reading its answers and max_unsent_bytes is used up; closed"
        ),
        End::Stalled => crate::log_limited!(
            info,
            conn,
            %peer,
            "peer did not read its answers within write_timeout_secs; closed"
        ),
        End::Idle => {
            crate::log_limited!(info, conn, %peer, "connection idle too long, closed")
        }
        End::Requested => debug!(conn, %peer, "a hook closed the connection"),
        End::Shutdown | End::PeerClosed | End::NotDurable => {
            debug!(conn, %peer, reason = ?end, "connection closed")
        }
    }
}

/// The answer a connection ending with `end` sends before closing, if any.
fn last_word(end: &End, codec: &FrameCodec, rbuf: &BytesMut) -> Option<(u32, String)> {
    match end {
        End::Refused(e) => Some((e.status(), e.to_string())),
        End::Limit(refusal) => Some((refusal.status(), refusal.to_string())),
        // A request cut off by shutdown was not executed: say so, so the
        // client knows it is safe to retry elsewhere.
        End::Shutdown if !codec.is_idle(rbuf) => Some((
            status::UNAVAILABLE,
            "server shutting down: the unfinished request at the end of the stream was not executed"
                .to_owned(),
        )),
        _ => None,
    }
}

/// The connection's clocks: idle, the frame being received, authentication.
#[derive(Debug)]
struct Deadlines {
    idle: Option<Duration>,
    frame_timeout: Duration,
    auth_timeout: Duration,
    /// When bytes last arrived.
    last_read: Instant,
    /// When the connection last stopped waiting for its peer.
    woke: Instant,
    /// When the frame partly received must be whole; `None` when no frame
    /// is partly received.
    frame_due: Option<Instant>,
    /// When the connection must have authenticated; `None` when it need not.
    auth_due: Option<Instant>,
}

impl Deadlines {
    fn new(limits: &Limits, accepted: Instant) -> Self {
        Self {
            idle: limits.idle_timeout,
            frame_timeout: limits.frame_timeout,
            auth_timeout: limits.auth_timeout,
            last_read: accepted,
            woke: accepted,
            frame_due: None,
            auth_due: None,
        }
    }

    /// Bytes arrived at `now`.
    fn read(&mut self, now: Instant) {
        self.last_read = now;
        self.woke = now;
    }

    /// The connection stopped waiting at `now` (without bytes).
    fn woke(&mut self, now: Instant) {
        self.woke = now;
    }

    /// A frame arrived whole.
    fn frame_done(&mut self) {
        self.frame_due = None;
    }

    /// About to wait for the peer, with a frame partly received or not.
    /// A frame's clock starts now; one already running is pushed back by
    /// the time since the last wait (answering, writing: the server's time,
    /// not the peer's; the peer may well have been blocked by us not reading).
    fn wait(&mut self, partial: bool) {
        self.frame_due = match (partial, self.frame_due) {
            (false, _) => None,
            (true, None) => Some(Instant::now() + self.frame_timeout),
            (true, Some(due)) => Some(due + self.woke.elapsed()),
        };
    }

    /// The earliest deadline.
    fn next(&self) -> Option<Instant> {
        let idle = self.idle.map(|limit| self.last_read + limit);
        [self.frame_due, self.auth_due, idle]
            .into_iter()
            .flatten()
            .min()
    }

    /// How the connection ends if a deadline passed at `now` (those with
    /// an answer first); `received` is what arrived of a partial frame.
    fn expired(&self, now: Instant, received: usize) -> Option<End> {
        let passed = |due: Option<Instant>| due.is_some_and(|due| due <= now);
        if passed(self.frame_due) {
            Some(End::Refused(FrameError::Timeout {
                secs: self.frame_timeout.as_secs(),
                have: received,
            }))
        } else if passed(self.auth_due) {
            Some(End::Limit(Refusal::AuthTimeout {
                secs: self.auth_timeout.as_secs(),
            }))
        } else if passed(self.idle.map(|limit| self.last_read + limit)) {
            Some(End::Idle)
        } else {
            None
        }
    }
}

/// One timer for all of a connection's deadlines, set for the earliest.
#[derive(Debug)]
struct Alarm {
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// When it rings; `None` when it is not set.
    at: Option<Instant>,
}

impl Alarm {
    fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            at: None,
        }
    }

    /// Makes the alarm ring by `due`. One timer, moved only to an earlier
    /// time: a deadline that moved later (idle, on every read) leaves it
    /// early, to be checked and set again when it rings. Re-arming on every
    /// read would cost a timer-wheel update per request.
    fn set(&mut self, due: Option<Instant>) {
        if let Some(due) = due {
            if self.at.is_none_or(|at| due < at) {
                self.sleep.as_mut().reset(due.into());
                self.at = Some(due);
            }
        }
    }

    fn is_set(&self) -> bool {
        self.at.is_some()
    }

    /// Completes at the time set; poll only while [`Alarm::is_set`].
    async fn ring(&mut self) {
        self.sleep.as_mut().await;
        self.at = None;
    }
}

/// A connection's place among the unauthenticated, held exactly while an
/// auth hook is in the chain and the connection has no principal.
#[derive(Debug)]
struct Unauthenticated<'a> {
    gauge: &'a Gauge,
    place: Option<Place<'a>>,
}

impl<'a> Unauthenticated<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        Self { gauge, place: None }
    }

    /// Counts a new connection, unless `max_unauthenticated` already are.
    fn admit(&mut self) -> Result<(), Refusal> {
        self.place = Some(self.gauge.admit().ok_or(Refusal::TooManyUnauthenticated {
            max: self.gauge.max,
        })?);
        Ok(())
    }

    /// Counted exactly while the connection `must` authenticate; true when
    /// that changed.
    fn track(&mut self, must: bool) -> bool {
        if must == self.place.is_some() {
            return false;
        }
        self.place = must.then(|| self.gauge.enter());
        true
    }
}

/// Answers of one batch encoded for one write, and what `on_after_send`
/// hooks will be shown of them once it is written.
#[derive(Debug)]
struct Batch {
    buf: BytesMut,
    /// Each request and its answer; kept only while the chain has
    /// `on_after_send` hooks.
    sent: Vec<(CommandRequest, Sent)>,
    /// Encoded size of the answers in `sent` kept decoded: about the memory
    /// they hold.
    decoded: usize,
}

/// An answer as `on_after_send` will see it.
#[derive(Debug)]
enum Sent {
    /// A small answer stays decoded: decoding it again would cost more.
    Decoded(CommandResponse),
    /// A large answer is kept only as its bytes in the write buffer (the
    /// message, after the frame header), and decoded again once written.
    Encoded(Range<usize>),
}

impl Batch {
    fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(BUF_BYTES),
            sent: Vec::new(),
            decoded: 0,
        }
    }

    fn len(&self) -> usize {
        self.buf.len()
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends the answer to `req`; keeps both for `on_after_send` if `keep`.
    fn push(&mut self, codec: &FrameCodec, req: CommandRequest, res: CommandResponse, keep: bool) {
        let start = self.buf.len();
        let res = encode(codec, res, &mut self.buf);
        if !keep {
            return;
        }
        let len = self.buf.len() - start;
        let sent = if len > KEEP_DECODED_MAX {
            Sent::Encoded(start + HEADER_LEN..self.buf.len())
        } else {
            self.decoded += len;
            Sent::Decoded(res)
        };
        self.sent.push((req, sent));
    }

    /// The memory the batch holds while it waits for its peer.
    fn held(&self) -> usize {
        self.buf.capacity() + self.decoded
    }

    /// Runs `on_after_send` for every answer, once the batch is written.
    fn after_send<S: Storage>(
        &mut self,
        service: &Service<S>,
        chain: &HookChain,
        ctx: &mut HookCtx,
    ) {
        for (req, sent) in self.sent.drain(..) {
            let res = match sent {
                Sent::Decoded(res) => res,
                Sent::Encoded(range) => match CommandResponse::decode(&self.buf[range]) {
                    Ok(res) => res,
                    // Cannot happen: these bytes were encoded from a response.
                    Err(e) => {
                        crate::log_limited!(error, conn = ctx.conn_id(), error = %e, "an answer written could not be decoded for on_after_send");
                        CommandResponse::error(
                            status::INTERNAL,
                            format!("answer not decodable: {e}"),
                        )
                    }
                },
            };
            service.after_send(chain, ctx, &req, &res);
        }
        self.decoded = 0;
    }

    /// Empties the batch for the next one.
    fn clear(&mut self) {
        self.buf.clear();
        self.sent.clear();
        self.decoded = 0;
    }

    /// Frees buffers a large batch made grow (call when empty).
    fn shrink(&mut self) {
        if self.buf.capacity() > SHRINK_ABOVE {
            self.buf = BytesMut::with_capacity(BUF_BYTES);
        }
        if self.sent.capacity() > SHRINK_ABOVE / 64 {
            self.sent = Vec::new();
        }
    }
}

/// Frees the read buffer if a large frame made it grow and it is empty.
fn shrink(rbuf: &mut BytesMut) {
    if rbuf.is_empty() && rbuf.capacity() > SHRINK_ABOVE {
        *rbuf = BytesMut::with_capacity(BUF_BYTES);
    }
}

/// Writes `batch`. What the kernel takes at once costs nothing; the rest
/// waits for the peer only if the batch's memory fits in what is left of
/// `budget`, and for `limit` at most.
async fn write_batch(
    stream: &mut TcpStream,
    batch: &Batch,
    budget: &Budget,
    limit: Duration,
) -> Result<(), End> {
    let bytes = &batch.buf[..];
    let mut written = 0;
    while written < bytes.len() {
        match stream.try_write(&bytes[written..]) {
            Ok(0) => {
                return Err(End::Refused(FrameError::Io(
                    std::io::ErrorKind::WriteZero.into(),
                )))
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(End::Refused(FrameError::Io(e))),
        }
    }
    if written == bytes.len() {
        return Ok(());
    }
    let held = batch.held();
    let Some(_reserved) = budget.reserve(held) else {
        return Err(End::OverBudget { held });
    };
    match tokio::time::timeout(limit, stream.write_all(&bytes[written..])).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(End::Refused(FrameError::Io(e))),
        Err(_elapsed) => Err(End::Stalled),
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
    ctx.set_request_frame(Some(frame.clone()));
    match CommandRequest::decode(frame) {
        Ok(req) => {
            let res = service.handle(chain, ctx, &req);
            ctx.set_request_frame(None);
            (req, res)
        }
        Err(e) => {
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

/// Answers held for one write at most (about): a batch of pipelined
/// requests is cut into writes of this size.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// An answer larger than this, kept for `on_after_send`, is kept only as its
/// bytes (see [`Sent`]).
const KEEP_DECODED_MAX: usize = 64 * 1024;

/// The read and write buffers' size to start with.
const BUF_BYTES: usize = 8 * 1024;

/// A buffer grown past this (by a large batch or frame) is freed before the
/// connection waits again: an idle connection holds no megabytes.
const SHRINK_ABOVE: usize = 64 * 1024;

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

/// Appends `res` to `wbuf` and returns the answer sent: `res`, or a 413 in
/// its place when it is too large for a frame (`on_after_send` hooks see
/// what the client got).
fn encode(codec: &FrameCodec, res: CommandResponse, wbuf: &mut BytesMut) -> CommandResponse {
    let Err(len) = codec.encode_message(&res, wbuf) else {
        return res;
    };
    let too_large = CommandResponse::from(Error::ResponseTooLarge {
        len,
        max: codec.max_frame_bytes(),
    });
    // A bare error message fits any accepted maximum (256 bytes at least);
    // were it not to, the peer would get nothing rather than a broken frame.
    let _ = codec.encode_message(&too_large, wbuf);
    too_large
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(&ServerConfig {
            idle_timeout_secs: 300,
            frame_timeout_secs: 10,
            ..ServerConfig::default()
        })
    }

    #[test]
    fn the_frame_clock_runs_only_while_waiting_for_the_peer() {
        let ago = |secs| {
            Instant::now()
                .checked_sub(Duration::from_secs(secs))
                .unwrap()
        };
        let t0 = ago(60);
        let mut d = Deadlines::new(&limits(), t0);
        d.read(t0);
        // A frame begins: its clock starts when the server starts waiting.
        d.wait(true);
        let due = d.frame_due.unwrap();
        assert!(due >= t0 + Duration::from_secs(70));
        assert_eq!(d.next(), Some(due));
        assert!(d.expired(due - Duration::from_millis(1), 9).is_none());
        assert!(matches!(
            d.expired(due, 9),
            Some(End::Refused(FrameError::Timeout { secs: 10, have: 9 }))
        ));
        // More of it arrived 30 s ago, and the server has been busy since
        // (answering, writing): that time is not the peer's.
        d.read(ago(30));
        d.wait(true);
        assert!(d.frame_due.unwrap() >= due + Duration::from_secs(30));
        // A whole frame stops the clock; idle counts from the last read.
        d.frame_done();
        d.wait(false);
        assert_eq!(d.frame_due, None);
        assert_eq!(d.next(), Some(d.last_read + Duration::from_secs(300)));
        d.auth_due = Some(t0);
        assert!(matches!(
            d.expired(Instant::now(), 0),
            Some(End::Limit(Refusal::AuthTimeout { secs: 10 }))
        ));
    }

    #[test]
    fn gauge_and_budget_give_back_what_is_dropped() {
        let gauge = Gauge {
            count: AtomicUsize::new(0),
            max: 2,
        };
        let a = gauge.admit().unwrap();
        let b = gauge.admit().unwrap();
        assert!(gauge.admit().is_none());
        // Connections already served are counted past the cap.
        let c = gauge.enter();
        drop(a);
        assert!(gauge.admit().is_none());
        drop((b, c));
        let d = gauge.admit().unwrap();
        drop(d);
        assert_eq!(gauge.count.load(Ordering::Relaxed), 0);

        let budget = Budget {
            left: AtomicUsize::new(10),
        };
        let r = budget.reserve(7).unwrap();
        assert!(budget.reserve(4).is_none());
        let s = budget.reserve(3).unwrap();
        drop((r, s));
        assert_eq!(budget.left.load(Ordering::Relaxed), 10);
    }
}
