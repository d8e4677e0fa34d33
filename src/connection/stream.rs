//! [`Connection`]: one client's stream (TCP, or TLS over it: any
//! [`Transport`]), the bytes read from it, the answers waiting for it, and
//! the clocks that bound both.
//!
//! Reading: [`Connection::read_batch`] waits for the peer (or shutdown, or a
//! deadline), then [`Connection::next_frame`] hands out the frames it
//! completed. Writing: [`Connection::push_answer`] encodes answers into one
//! buffer, [`Connection::flush`] writes it (within the write timeout and the
//! server's budget for unread answers), and [`Connection::written`] shows
//! each answer to `on_after_send`.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hookv_plugin::pb::{status, CommandRequest, CommandResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::answers::{Answers, Kept};
use super::deadlines::{Alarm, Deadlines};
use super::end::End;
use super::limits::{Budget, Limits};
use super::transport::Transport;
use crate::frame::{FrameCodec, FrameError};
use crate::hooks::HookCtx;

/// Answers held for one write at most (about): a batch of pipelined
/// requests is cut into writes of this size.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// The read and write buffers' size to start with.
const BUF_BYTES: usize = 8 * 1024;

/// A buffer grown past this (by a large batch or frame) is freed before the
/// connection waits again: an idle connection holds no megabytes.
const SHRINK_ABOVE: usize = 64 * 1024;

/// How long shutdown keeps reading a connection for requests already on
/// their way (at most).
const SHUTDOWN_READ_QUIET: Duration = Duration::from_millis(100);

/// One client's stream and its buffers.
#[derive(Debug)]
pub(super) struct Connection<'a, T> {
    stream: T,
    /// Cuts frames out of `rbuf`, refusing any over `max_frame_bytes`.
    codec: FrameCodec,
    /// Bytes read and not yet cut into frames.
    rbuf: BytesMut,
    /// The answers of the batch being answered, for one write.
    answers: Answers,
    /// Idle, frame and auth deadlines, and the one timer for them.
    clock: Deadlines,
    alarm: Alarm,
    /// The server's memory for answers that peers are not reading.
    unsent: &'a Budget,
    write_timeout: Duration,
}

/// What [`Connection::read_batch`] waited for.
#[derive(Debug)]
pub(super) enum Read {
    /// Bytes arrived: answer the frames they complete.
    Frames,
    /// The read side ended (shutdown, a frame cut off at EOF, a deadline
    /// with an answer): answer what is buffered, then close with this.
    Last(End),
    /// The connection ends now; nothing is left to answer.
    Closed(End),
}

impl<'a, T: Transport> Connection<'a, T> {
    /// A connection accepted at `accepted`.
    pub(super) fn new(stream: T, limits: &Limits, unsent: &'a Budget, accepted: Instant) -> Self {
        Self {
            stream,
            codec: FrameCodec::new(limits.max_frame_bytes),
            rbuf: BytesMut::with_capacity(BUF_BYTES),
            answers: Answers::with_capacity(BUF_BYTES),
            clock: Deadlines::new(limits, accepted),
            alarm: Alarm::new(),
            unsent,
            write_timeout: limits.write_timeout,
        }
    }

    /// Waits for the peer's next bytes, for `stopped` (server shutdown), or
    /// for a deadline; marks an arrival on `ctx`. Call only once every
    /// frame buffered has been answered.
    pub(super) async fn read_batch(
        &mut self,
        ctx: &mut HookCtx,
        mut stopped: Pin<&mut WaitForCancellationFutureOwned>,
    ) -> Read {
        loop {
            self.answers.shrink(SHRINK_ABOVE, BUF_BYTES);
            if self.rbuf.is_empty() && self.rbuf.capacity() > SHRINK_ABOVE {
                self.rbuf = BytesMut::with_capacity(BUF_BYTES);
            }
            self.clock.wait(!self.codec.is_idle(&self.rbuf));
            self.alarm.set(self.clock.next());
            tokio::select! {
                () = &mut stopped => {
                    // Answer what the client already sent, then close.
                    self.read_ready().await;
                    ctx.arrive();
                    return Read::Last(End::Shutdown);
                }
                () = self.alarm.ring(), if self.alarm.is_set() => {
                    let now = Instant::now();
                    self.clock.woke(now);
                    match self.clock.expired(now, self.codec.received(&self.rbuf)) {
                        Some(End::Idle) => return Read::Closed(End::Idle),
                        Some(end) => return Read::Last(end),
                        // A deadline moved later; the alarm is set again.
                        None => {}
                    }
                }
                read = self.stream.read_buf(&mut self.rbuf) => {
                    // One clock read per batch: every request in it arrived now.
                    ctx.arrive();
                    self.clock.read(ctx.started());
                    return match read {
                        // TLS: a peer that closes without `close_notify`
                        // (many do) is an end of input like TCP's; a frame
                        // it cut off is still reported as such.
                        Ok(0) => self.eof(),
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => self.eof(),
                        Ok(_) => Read::Frames,
                        Err(e) => Read::Closed(End::Refused(FrameError::Io(e))),
                    };
                }
            }
        }
    }

    /// The peer ended its input.
    fn eof(&self) -> Read {
        match self.codec.check_eof(&self.rbuf) {
            Ok(()) => Read::Closed(End::PeerClosed),
            // Report it: the peer may still read after closing its write half.
            Err(e) => Read::Last(End::Refused(e)),
        }
    }

    /// The next whole frame buffered, if any. An error means the stream
    /// cannot be resynchronised: answer it, then close.
    #[inline]
    pub(super) fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let frame = self.codec.decode(&mut self.rbuf)?;
        if frame.is_some() {
            self.clock.frame_done();
        }
        Ok(frame)
    }

    /// How the connection ends on `e`, a frame it cannot read past. A
    /// "frame" that is a TLS ClientHello is a TLS client on a plaintext
    /// port: it is told nothing (it could not read a hookv answer) and the
    /// log says what it was.
    pub(super) fn refused(&self, e: FrameError) -> End {
        match e {
            FrameError::TooLarge { .. } if is_client_hello(&self.rbuf) => End::TlsClient,
            e => End::Refused(e),
        }
    }

    /// Appends the answer to `req` to the batch; keeps both for
    /// `on_after_send` if `keep`.
    #[inline]
    pub(super) fn push_answer(&mut self, req: CommandRequest, res: CommandResponse, keep: bool) {
        self.answers
            .push(&self.codec, Kept::Decoded(req), res, keep);
    }

    /// Appends the answer to a request answered from its bytes, `frame`;
    /// keeps both for `on_after_send` if `keep`.
    #[inline]
    pub(super) fn push_raw_answer(&mut self, frame: &Bytes, res: CommandResponse, keep: bool) {
        if keep {
            self.answers
                .push(&self.codec, Kept::Raw(frame.clone()), res, true);
        } else {
            self.answers.push_response(&self.codec, res);
        }
    }

    /// True once the batch holds as much as one write should: answers to a
    /// few kilobytes of pipelined hgetalls could be gigabytes.
    #[inline]
    pub(super) fn is_full(&self) -> bool {
        self.answers.bytes().len() >= MAX_BATCH_BYTES
    }

    /// The answer a connection ending with `end` sends before closing, if any.
    pub(super) fn last_word(&self, end: &End) -> Option<(u32, String)> {
        match end {
            End::Refused(e) => Some((e.status(), e.to_string())),
            End::Limit(refusal) => Some((refusal.status(), refusal.to_string())),
            // A request cut off by shutdown was not executed: say so, so the
            // client knows it is safe to retry elsewhere.
            End::Shutdown if !self.codec.is_idle(&self.rbuf) => Some((
                status::UNAVAILABLE,
                "server shutting down: the unfinished request at the end of the stream was not executed"
                    .to_owned(),
            )),
            _ => None,
        }
    }

    /// The connection must authenticate by `due` (`None`: it need not).
    pub(super) fn set_auth_due(&mut self, due: Option<Instant>) {
        self.clock.set_auth_due(due);
    }

    /// Writes the batch. What the kernel takes at once costs nothing; the
    /// rest waits for the peer only if the batch's memory fits in what is
    /// left of the server's budget for unread answers, and for the write
    /// timeout at most. (Over TLS, "the rest" includes records rustls made
    /// but the socket did not take yet.)
    pub(super) async fn flush(&mut self) -> Result<(), End> {
        let bytes = self.answers.bytes();
        let mut written = 0;
        while written < bytes.len() {
            match self.stream.try_write(&bytes[written..]) {
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
        if written == bytes.len() && !self.stream.holds_output() {
            return Ok(());
        }
        let held = self.answers.held();
        let Some(_reserved) = self.unsent.reserve(held) else {
            return Err(End::OverBudget { held });
        };
        let rest = &bytes[written..];
        let stream = &mut self.stream;
        let write = async move {
            stream.write_all(rest).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Refused(FrameError::Io(e))),
            Err(_elapsed) => Err(End::Stalled),
        }
    }

    /// Once the batch is flushed: shows `hook` (`on_after_send`) every
    /// request and its answer, in order, and empties the batch.
    #[inline]
    pub(super) fn written(
        &mut self,
        ctx: &mut HookCtx,
        hook: impl FnMut(&mut HookCtx, &Kept, &CommandResponse),
    ) {
        self.answers.written(ctx, hook);
    }

    /// Ends the stream's session without waiting (TLS: `close_notify`).
    pub(super) fn close(&mut self) {
        self.stream.close_now();
    }

    /// Moves the bytes that have already arrived (or arrive within
    /// [`SHUTDOWN_READ_QUIET`]) into the read buffer, stopping early at
    /// EOF. A plain `try_read` is not enough: the reactor may not have seen
    /// the socket's readiness yet.
    async fn read_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_READ_QUIET;
        while let Ok(Ok(n)) =
            tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await
        {
            if n == 0 {
                return;
            }
        }
    }
}

/// True when `bytes` begin like a TLS ClientHello: a handshake record
/// (type 22) of TLS 1.0 to 1.3 (3.1 to 3.4; SSL 3.0 is 3.0) whose message is
/// a ClientHello (type 1). As a hookv header that is a frame of some 369
/// MB, refused anyway; only what is said about it changes.
fn is_client_hello(bytes: &[u8]) -> bool {
    matches!(bytes, [0x16, 0x03, 0x00..=0x04, _, _, 0x01, ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_hello_is_told_from_a_large_frame() {
        assert!(is_client_hello(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]));
        assert!(is_client_hello(&[0x16, 0x03, 0x03, 0x00, 0x30, 0x01]));
        // Too short to tell, another record type, another handshake message.
        assert!(!is_client_hello(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!is_client_hello(&[0x17, 0x03, 0x03, 0x00, 0x30, 0x01]));
        assert!(!is_client_hello(&[0x16, 0x03, 0x03, 0x00, 0x30, 0x02]));
        assert!(!is_client_hello(&[0x16, 0x05, 0x03, 0x00, 0x30, 0x01]));
    }

    use std::net::SocketAddr;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio::net::{TcpSocket, TcpStream};

    use crate::config::{ServerConfig, TlsConfig};
    use crate::connection::limits::Shared;
    use crate::tls::{ServerTls, TlsOptions};

    type ServerSide = tokio_rustls::server::TlsStream<TcpStream>;
    type ClientSide = tokio_rustls::client::TlsStream<TcpStream>;

    /// A TLS connection over loopback whose server side has a small send
    /// buffer (set on the listening socket, inherited on accept; it also
    /// stops the kernel growing it), so a few KiB fill it.
    async fn tls_pair(dir: &std::path::Path) -> (ServerSide, ClientSide) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let file = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let server = ServerTls::load(&TlsConfig {
            cert: file("server.pem", cert.pem()),
            key: file("server.key", key.serialize_pem()),
            client_ca: None,
            plaintext_listen: None,
        })
        .unwrap();
        let client = TlsOptions {
            ca: Some(file("ca.pem", ca.pem())),
            ..TlsOptions::default()
        }
        .load()
        .unwrap();
        let listener = TcpSocket::new_v4().unwrap();
        listener.set_send_buffer_size(4096).unwrap();
        listener
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .unwrap();
        let listener = listener.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let connecting = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = client.server_name_for("localhost:1").unwrap();
            client.connector().connect(name, tcp).await.unwrap()
        };
        let accepting = async {
            let (tcp, _) = listener.accept().await.unwrap();
            server.accept(tcp).await.unwrap().stream
        };
        let (server, client) = tokio::join!(accepting, connecting);
        (server, client)
    }

    #[tokio::test]
    async fn over_tls_a_flush_waits_for_the_records_rustls_still_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (server, mut client) = tls_pair(dir.path()).await;
        let config = ServerConfig::default();
        let (limits, shared) = (Limits::new(&config), Shared::new(&config));
        let mut conn = Connection::new(server, &limits, &shared.unsent, Instant::now());
        // Taken whole at once, but not sent: over loopback the socket takes
        // one 64 KiB segment whatever its buffer size, rustls up to 64 KiB
        // more; the rest of 96 KiB waits there, encrypted (measured: 80 to
        // 128 KiB are all taken whole and partly held).
        let mut res = CommandResponse::ok();
        res.values = vec!["v".repeat(96 << 10).into()];
        conn.push_answer(CommandRequest::default(), res, false);
        let len = conn.answers.bytes().len();
        // The client reads only once the flush has had time to return early.
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut got = vec![0u8; len];
            client.read_exact(&mut got).await.map(|_| got.len())
        });
        let bound = Duration::from_secs(10);
        tokio::time::timeout(bound, conn.flush())
            .await
            .unwrap()
            .unwrap();
        let got = tokio::time::timeout(bound, reader).await;
        assert!(matches!(got, Ok(Ok(Ok(n))) if n == len), "{got:?}");
    }
}
