//! One connection's closed loop: connect (TLS if asked), authenticate if
//! asked, then write a pipeline of requests and read every answer, until
//! the run ends; with `--reconnect`, all of that for every batch.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use hookv::frame::FrameCodec;
use hookv::pb::{status, CommandRequest, CommandResponse};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Decoder;
use tokio_util::either::Either;

use crate::codec::{Codec, Op, Outcome};
use crate::histogram::Histogram;
use crate::resp::{parse_resp, resp_array, Reply};
use crate::rng::Rng;
use crate::{BoxError, Protocol, Workload, IO_TIMEOUT, MAX_RESPONSE_BYTES};

/// What one connection saw.
#[derive(Debug)]
pub(crate) struct ConnResult {
    pub(crate) connected: bool,
    /// Measured successful responses (hits, misses and sets).
    pub(crate) ops: u64,
    pub(crate) sets: u64,
    pub(crate) gets: u64,
    pub(crate) misses: u64,
    /// Measured error responses, plus requests left unanswered by a failure.
    pub(crate) errors: u64,
    /// The first error response's text, if any.
    pub(crate) first_error: Option<String>,
    /// Why the connection ended early, if it did.
    pub(crate) failure: Option<String>,
    pub(crate) hist: Histogram,
}

impl ConnResult {
    pub(crate) fn new() -> Self {
        Self {
            connected: false,
            ops: 0,
            sets: 0,
            gets: 0,
            misses: 0,
            errors: 0,
            first_error: None,
            failure: None,
            hist: Histogram::new(),
        }
    }

    pub(crate) fn failed(unanswered: usize, why: String) -> Self {
        let mut r = Self::new();
        r.errors = unanswered as u64;
        r.failure = Some(why);
        r
    }
}

/// A connection: plain TCP or TLS over it.
type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// Connects to the server (TLS handshake and `auth` included, if asked).
async fn open(w: &Workload) -> Result<Stream, BoxError> {
    let tcp = match timeout(IO_TIMEOUT, TcpStream::connect(w.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connect {}: {e}", w.addr).into()),
        Err(_) => return Err(format!("connect {}: timed out after {IO_TIMEOUT:?}", w.addr).into()),
    };
    tcp.set_nodelay(true)
        .map_err(|e| format!("set TCP_NODELAY: {e}"))?;
    let mut stream = match &w.tls {
        None => Either::Left(tcp),
        Some((tls, name)) => {
            let handshake = tls.connector().connect(name.clone(), tcp);
            match timeout(IO_TIMEOUT, handshake).await {
                Ok(Ok(s)) => Either::Right(s),
                Ok(Err(e)) => return Err(format!("TLS handshake with {}: {e}", w.addr).into()),
                Err(_) => {
                    return Err(format!("TLS handshake: timed out after {IO_TIMEOUT:?}").into())
                }
            }
        }
    };
    match (w.protocol, &w.token) {
        (Protocol::Hookv, Some(token)) => authenticate(&mut stream, token).await?,
        (Protocol::Resp, Some(token)) => authenticate_resp(&mut stream, token).await?,
        (_, None) => {}
    }
    Ok(stream)
}

/// Sends Redis's `AUTH token` (the `requirepass` password) and expects `+OK`.
async fn authenticate_resp<S>(stream: &mut S, token: &str) -> Result<(), BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    resp_array(&["AUTH", token], &mut buf);
    timeout(IO_TIMEOUT, write(stream, &buf))
        .await
        .map_err(|_| "AUTH: write timed out")??;
    let mut rbuf = BytesMut::new();
    let reply = loop {
        if let Some(reply) = parse_resp(&mut rbuf)? {
            break reply;
        }
        let n = timeout(IO_TIMEOUT, stream.read_buf(&mut rbuf))
            .await
            .map_err(|_| "AUTH: read timed out")??;
        if n == 0 {
            return Err("AUTH: server closed the connection".into());
        }
    };
    match reply {
        Reply::Simple => Ok(()),
        other => Err(format!("AUTH refused: {other:?}").into()),
    }
}

/// Sends `auth` and expects 200.
pub(crate) async fn authenticate<S>(stream: &mut S, token: &str) -> Result<(), BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let req = CommandRequest::new_auth(token);
    let mut buf = BytesMut::new();
    FrameCodec::new(MAX_RESPONSE_BYTES)
        .encode_message(&req, &mut buf)
        .map_err(|len| format!("auth request of {len} bytes is too large"))?;
    timeout(IO_TIMEOUT, write(stream, &buf))
        .await
        .map_err(|_| "auth: write timed out")??;
    let mut frames = FrameCodec::new(MAX_RESPONSE_BYTES);
    let mut rbuf = BytesMut::new();
    let frame = loop {
        if let Some(frame) = frames.decode(&mut rbuf)? {
            break frame;
        }
        let n = timeout(IO_TIMEOUT, stream.read_buf(&mut rbuf))
            .await
            .map_err(|_| "auth: read timed out")??;
        if n == 0 {
            return Err("auth: server closed the connection".into());
        }
    };
    let res = CommandResponse::decode(frame)?;
    if res.status != status::OK {
        return Err(format!("auth refused: {} {}", res.status, res.message).into());
    }
    Ok(())
}

pub(crate) async fn connection(id: usize, w: Arc<Workload>) -> ConnResult {
    let mut result = ConnResult::new();
    if let Err(e) = drive(id, &w, &mut result).await {
        result.failure = Some(format!("conn {id}: {e}"));
    }
    result
}

/// Writes `buf` and flushes it (TLS may hold bytes until flushed).
async fn write<S: AsyncWrite + Unpin>(stream: &mut S, buf: &[u8]) -> std::io::Result<()> {
    stream.write_all(buf).await?;
    stream.flush().await
}

/// Runs one connection's loop until `w.end`, recording into `r`. On error,
/// the current batch's unanswered requests have been counted as errors.
pub(crate) async fn drive(id: usize, w: &Workload, r: &mut ConnResult) -> Result<(), BoxError> {
    // With --reconnect, `None` between batches.
    let mut conn = Some(open(w).await?);
    r.connected = true;

    let mut codec = Codec::new(w);
    let mut rng = Rng::new(id as u64);
    let mut key = String::with_capacity(32);
    let mut ops = Vec::with_capacity(w.pipeline);
    let longest = w.tables.iter().map(String::len).max().unwrap_or(0);
    let mut wbuf = BytesMut::with_capacity(w.pipeline * (64 + w.value.len() + longest));
    let mut rbuf = BytesMut::with_capacity(64 * 1024);

    while Instant::now() < w.end {
        ops.clear();
        wbuf.clear();
        for _ in 0..w.pipeline {
            let op = if (rng.next() >> 11) < w.set_threshold {
                Op::Set
            } else {
                Op::Get
            };
            key.clear();
            let n = rng.below(w.keys);
            let _ = write!(key, "key:{n}");
            let table = &w.tables[(n % w.tables.len() as u64) as usize];
            codec.encode(w, op, table, &key, &mut wbuf);
            ops.push(op);
        }

        let sent = Instant::now();
        let stream = match &mut conn {
            Some(stream) => stream,
            None => match open(w).await {
                Ok(stream) => conn.insert(stream),
                Err(e) => {
                    r.errors += w.pipeline as u64;
                    return Err(e);
                }
            },
        };
        let written = timeout(IO_TIMEOUT, write(stream, &wbuf)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                r.errors += w.pipeline as u64;
                return Err(format!("write: {e}").into());
            }
            Err(_) => {
                r.errors += w.pipeline as u64;
                return Err(format!("write timed out after {IO_TIMEOUT:?}").into());
            }
        }

        let mut answered = 0;
        while answered < w.pipeline {
            let read = timeout(IO_TIMEOUT, stream.read_buf(&mut rbuf)).await;
            let failure = match read {
                Ok(Ok(0)) => Some("server closed the connection".to_owned()),
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!("read: {e}")),
                Err(_) => Some(format!("read timed out after {IO_TIMEOUT:?}")),
            };
            if let Some(why) = failure {
                r.errors += (w.pipeline - answered) as u64;
                return Err(format!(
                    "{why} ({answered} of {} responses of a batch received)",
                    w.pipeline
                )
                .into());
            }
            // Every response completed by this read arrived now.
            let arrived = Instant::now();
            let measured = arrived >= w.measure_from && arrived < w.end;
            let nanos = u64::try_from(arrived.duration_since(sent).as_nanos()).unwrap_or(u64::MAX);
            while answered < w.pipeline {
                let op = ops[answered];
                let outcome = match codec.decode(op, &mut rbuf) {
                    Ok(Some(o)) => o,
                    Ok(None) => break,
                    Err(e) => {
                        r.errors += (w.pipeline - answered) as u64;
                        return Err(e);
                    }
                };
                answered += 1;
                match outcome {
                    // Successes count only inside the window; errors always.
                    Outcome::Ok | Outcome::Miss if !measured => {}
                    Outcome::Ok | Outcome::Miss => {
                        r.ops += 1;
                        match op {
                            Op::Set => r.sets += 1,
                            Op::Get => r.gets += 1,
                        }
                        if matches!(outcome, Outcome::Miss) {
                            r.misses += 1;
                        }
                        r.hist.record(nanos);
                    }
                    Outcome::Error(e) => {
                        r.errors += 1;
                        r.first_error.get_or_insert(e);
                    }
                }
            }
        }
        if !rbuf.is_empty() {
            r.errors += 1;
            return Err(format!(
                "{} unexpected bytes from the server after a batch's responses",
                rbuf.len()
            )
            .into());
        }
        if w.reconnect {
            if let Some(mut stream) = conn.take() {
                // TLS: close_notify; both: our FIN.
                let _ = timeout(IO_TIMEOUT, stream.shutdown()).await;
            }
        }
    }
    Ok(())
}
