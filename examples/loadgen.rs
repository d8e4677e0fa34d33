//! `loadgen`: a closed-loop load generator for hookv (and, for comparison,
//! for Redis over RESP2).
//!
//! # What it measures
//!
//! `--conns` connections each run the same loop: write `--pipeline` requests
//! (a random mix of `hset` and `hget`, `--set-ratio` of them `hset`) in one
//! write, then read exactly that many responses. A request's latency is the
//! time from the batch's write to the read that delivered its response, so at
//! `--pipeline 1` it is the round trip and at higher depths it includes the
//! wait behind the requests ahead of it in the batch. Throughput is the
//! number of responses that arrive inside the measured window divided by
//! `--duration`; the first `--warmup` seconds (connecting, first allocations,
//! table growth) are not counted.
//!
//! Keys are `key:N` with N uniform in `0..--keys`, drawn by a xorshift PRNG
//! seeded per connection, so a run is repeatable. Nothing is pre-populated:
//! an `hget` of a key not yet set is a miss (404, or `$-1` in RESP) and counts
//! as a success; any other non-200 status, or a RESP `-ERR`, is an error
//! (errors are counted during the warmup too; successes only in the window).
//! Every write and read is bounded by a 5 s timeout; a timeout or any I/O or
//! protocol failure counts the batch's unanswered requests as errors and ends
//! that connection. The run ends by itself after warmup + duration (plus at
//! most that timeout for the last batch).
//!
//! Latencies go into a per-connection log-linear histogram of nanoseconds
//! (exact below 256 ns, then 128 buckets per power of two: at most 0.8% off),
//! merged at the end; percentiles are reported in microseconds.
//!
//! # Threads
//!
//! `--threads` (default 1) sets the runtime's worker count. One thread is the
//! default so that on a two-core machine the server (whose runtime uses every
//! core) keeps the other core mostly to itself. With 1 the connections run
//! on a current-thread runtime; with more, on a multi-threaded one. If the
//! generator's thread is saturated the numbers measure the generator, not the
//! server: check with `top` and raise `--threads` on a bigger machine.
//!
//! # Safety
//!
//! `--addr` must resolve only to loopback addresses, otherwise the tool
//! refuses to start: it must never send load to another host.
//!
//! # Running
//!
//! ```text
//! cargo run --release --bin hookv-server -- --listen 127.0.0.1:9527 --log warn &
//! cargo run --release --example loadgen -- --conns 50 --pipeline 16 --duration 10
//! ```
//!
//! The same load against Redis (RESP2: `HSET table key value` and
//! `HGET table key`, all in the one hash named by `--table`):
//!
//! ```text
//! redis-server --port 6379 --save '' --appendonly no --daemonize yes
//! cargo run --release --example loadgen -- --protocol resp --addr 127.0.0.1:6379 \
//!     --conns 50 --pipeline 16 --duration 10
//! redis-cli -p 6379 shutdown nosave
//! ```
//!
//! # Output
//!
//! A human-readable block, then one line of `key=value` pairs for scripts:
//!
//! ```text
//! protocol=hookv conns=50 pipeline=16 threads=1 set_ratio=0.5 keys=100000 value_size=16
//! duration=10s ops=... ops_per_sec=... errors=... failed_conns=... misses=...
//! p50_us=... p90_us=... p99_us=... p999_us=... max_us=... mean_us=...
//! ```
//!
//! (one line in the real output). Exit status: 0 after a clean run, 2 when
//! the run finished but saw errors or a connection ended early (the results
//! are still printed, failures on stderr), 1 when it could not run at all
//! (bad flags, non-loopback address, no connection succeeded).

use std::error::Error;
use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use clap::{Parser, ValueEnum};
use hookv::frame::FrameCodec;
use hookv::pb::command_request::RequestData;
use hookv::pb::{status, CommandRequest, CommandResponse};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::Decoder;

/// Bound on every connect, write and read.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response frame or RESP bulk string accepted (responses here are tiny).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Largest accepted `--pipeline`.
const MAX_PIPELINE: usize = 65_536;

type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// hookv frames: 4-byte big-endian length + protobuf.
    Hookv,
    /// Redis RESP2: `HSET`/`HGET` as arrays of bulk strings.
    Resp,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Hookv => "hookv",
            Protocol::Resp => "resp",
        }
    }
}

#[derive(Debug, Parser)]
#[command(about = "Closed-loop load generator for hookv (or Redis over RESP2), loopback only")]
struct Args {
    /// Server address; must resolve to loopback addresses only.
    #[arg(long, default_value = "127.0.0.1:9527")]
    addr: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Requests in flight per connection (written in one write, then all read).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Measured seconds, after the warmup.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of load before measuring starts (not counted).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Fraction of requests that are hset; the rest are hget.
    #[arg(long, default_value_t = 0.5)]
    set_ratio: f64,
    /// Key space size: keys are `key:0` .. `key:{keys-1}`.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes of the string value each hset stores.
    #[arg(long, default_value_t = 16)]
    value_size: usize,
    /// Table (hookv) or hash key (Redis) every request addresses.
    #[arg(long, default_value = "bench")]
    table: String,
    /// Wire protocol to speak.
    #[arg(long, value_enum, default_value_t = Protocol::Hookv)]
    protocol: Protocol,
    /// Runtime worker threads for the generator (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// hookv only: send `auth` with this token on each connection before the load.
    #[arg(long)]
    token: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(summary) => {
            if summary.errors > 0 || !summary.failures.is_empty() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The validated workload every connection runs.
#[derive(Debug)]
struct Workload {
    protocol: Protocol,
    addr: SocketAddr,
    pipeline: usize,
    /// `hset` when a uniform 53-bit draw is below this.
    set_threshold: u64,
    keys: u64,
    value: String,
    table: String,
    /// Token to authenticate each hookv connection with.
    token: Option<String>,
    /// Responses arriving at or after this instant are measured...
    measure_from: Instant,
    /// ...and those arriving before this one; no batch starts after it.
    end: Instant,
}

fn run(args: Args) -> Result<Summary, BoxError> {
    if args.conns == 0 {
        return Err("--conns must be at least 1".into());
    }
    if args.pipeline == 0 || args.pipeline > MAX_PIPELINE {
        return Err(format!("--pipeline must be between 1 and {MAX_PIPELINE}").into());
    }
    if args.duration == 0 {
        return Err("--duration must be at least 1 second".into());
    }
    if !(0.0..=1.0).contains(&args.set_ratio) {
        return Err(format!("--set-ratio {} must be between 0 and 1", args.set_ratio).into());
    }
    if args.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    if args.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    let addr = resolve_loopback(&args.addr)?;

    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;

    let warmup = Duration::from_secs(args.warmup);
    let duration = Duration::from_secs(args.duration);
    let start = Instant::now();
    let workload = Arc::new(Workload {
        protocol: args.protocol,
        addr,
        pipeline: args.pipeline,
        // 1.0 maps to 2^53, above every 53-bit draw: always hset.
        set_threshold: (args.set_ratio * (1u64 << 53) as f64) as u64,
        keys: args.keys,
        value: "v".repeat(args.value_size),
        table: args.table.clone(),
        token: args.token.clone(),
        measure_from: start + warmup,
        end: start + warmup + duration,
    });

    let results = runtime.block_on(async {
        let handles: Vec<_> = (0..args.conns)
            .map(|id| tokio::spawn(connection(id, Arc::clone(&workload))))
            .collect();
        let mut results = Vec::with_capacity(handles.len());
        for (id, handle) in handles.into_iter().enumerate() {
            match handle.await {
                Ok(r) => results.push(r),
                Err(e) => results.push(ConnResult::failed(
                    workload.pipeline,
                    format!("conn {id}: task failed: {e}"),
                )),
            }
        }
        results
    });

    let summary = Summary::merge(results);
    if summary.connected == 0 {
        return Err(format!(
            "no connection to {addr} succeeded; first failure: {}",
            summary.failures.first().map_or("unknown", String::as_str)
        )
        .into());
    }
    report(&args, addr, &summary);
    Ok(summary)
}

/// Resolves `addr` and refuses unless every address it names is loopback.
fn resolve_loopback(addr: &str) -> Result<SocketAddr, BoxError> {
    let resolved: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("--addr {addr}: cannot resolve: {e}"))?
        .collect();
    if resolved.is_empty() {
        return Err(format!("--addr {addr}: resolves to no address").into());
    }
    if let Some(bad) = resolved
        .iter()
        .find(|a| !a.ip().to_canonical().is_loopback())
    {
        return Err(format!(
            "--addr {addr} resolves to {bad}, which is not a loopback address; \
             loadgen only sends load to this machine"
        )
        .into());
    }
    // Connect to this resolved address, never re-resolving the name.
    Ok(resolved[0])
}

/// What one request was, to judge its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Set,
    Get,
}

/// How a response went.
#[derive(Debug)]
enum Outcome {
    Ok,
    /// An `hget` of a key not set (yet): a success.
    Miss,
    /// Anything else: the status or error text.
    Error(String),
}

/// Per-connection request encoding and response parsing. One per connection,
/// never moved in the hot loop, so the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Codec {
    Hookv {
        frames: FrameCodec,
        /// Templates whose key is overwritten in place, so nothing is
        /// allocated per request.
        hset: CommandRequest,
        hget: CommandRequest,
    },
    Resp,
}

impl Codec {
    fn new(w: &Workload) -> Self {
        match w.protocol {
            Protocol::Hookv => Codec::Hookv {
                frames: FrameCodec::new(MAX_RESPONSE_BYTES),
                hset: CommandRequest::new_hset(w.table.as_str(), "", w.value.as_str()),
                hget: CommandRequest::new_hget(w.table.as_str(), ""),
            },
            Protocol::Resp => Codec::Resp,
        }
    }

    /// Appends one request for `op` on `key` to `out`.
    fn encode(&mut self, w: &Workload, op: Op, key: &str, out: &mut BytesMut) {
        match self {
            Codec::Hookv { hset, hget, .. } => {
                let req = match op {
                    Op::Set => hset,
                    Op::Get => hget,
                };
                set_key(req, key);
                let len = req.encoded_len();
                out.reserve(4 + len);
                // Requests here are a few dozen bytes plus --value-size.
                out.extend_from_slice(&(len as u32).to_be_bytes());
                req.encode_raw(out);
            }
            Codec::Resp => match op {
                Op::Set => resp_array(&["HSET", &w.table, key, &w.value], out),
                Op::Get => resp_array(&["HGET", &w.table, key], out),
            },
        }
    }

    /// Parses the next complete response in `buf`, if there is one.
    fn decode(&mut self, op: Op, buf: &mut BytesMut) -> Result<Option<Outcome>, BoxError> {
        match self {
            Codec::Hookv { frames, .. } => {
                let Some(frame) = frames
                    .decode(buf)
                    .map_err(|e| format!("bad frame from server: {e}"))?
                else {
                    return Ok(None);
                };
                let res = CommandResponse::decode(frame)
                    .map_err(|e| format!("bad CommandResponse from server: {e}"))?;
                Ok(Some(match (res.status, op) {
                    (status::OK, _) => Outcome::Ok,
                    (status::NOT_FOUND, Op::Get) => Outcome::Miss,
                    (s, _) => Outcome::Error(format!("status {s}: {}", res.message)),
                }))
            }
            Codec::Resp => {
                let Some(reply) = parse_resp(buf)? else {
                    return Ok(None);
                };
                Ok(Some(match (reply, op) {
                    (Reply::Error(e), _) => Outcome::Error(e),
                    (Reply::Nil, Op::Get) => Outcome::Miss,
                    (Reply::Nil, Op::Set) => Outcome::Error("nil reply to HSET".into()),
                    (Reply::Integer | Reply::Simple | Reply::Bulk, _) => Outcome::Ok,
                }))
            }
        }
    }
}

/// Overwrites the key of an `hset`/`hget` template.
fn set_key(req: &mut CommandRequest, key: &str) {
    let slot = match &mut req.request_data {
        Some(RequestData::Hset(h)) => h.pair.as_mut().map(|p| &mut p.key),
        Some(RequestData::Hget(h)) => Some(&mut h.key),
        _ => None,
    };
    if let Some(slot) = slot {
        slot.clear();
        slot.push_str(key);
    }
}

/// Appends a RESP array of bulk strings.
fn resp_array(args: &[&str], out: &mut BytesMut) {
    let mut head = String::with_capacity(16);
    let _ = write!(head, "*{}\r\n", args.len());
    out.extend_from_slice(head.as_bytes());
    for arg in args {
        head.clear();
        let _ = write!(head, "${}\r\n", arg.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The RESP2 replies HSET and HGET can produce (contents are not needed).
#[derive(Debug)]
enum Reply {
    /// `:n`
    Integer,
    /// `+OK`
    Simple,
    /// `$n\r\n...`
    Bulk,
    /// `$-1`
    Nil,
    /// `-ERR ...`
    Error(String),
}

/// Parses one reply from the front of `buf`, consuming it; `None` if
/// incomplete (nothing consumed).
fn parse_resp(buf: &mut BytesMut) -> Result<Option<Reply>, BoxError> {
    let Some(nl) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_RESPONSE_BYTES {
            return Err("RESP line without CRLF longer than 16 MiB".into());
        }
        return Ok(None);
    };
    let Some((&kind, rest)) = buf[..nl].split_first() else {
        return Err("empty RESP line from server".into());
    };
    let line = std::str::from_utf8(rest)
        .map_err(|_| "RESP reply line is not UTF-8".to_owned())?
        .to_owned();
    let line_len = nl + 2;
    let reply = match kind {
        b'+' => Reply::Simple,
        b'-' => Reply::Error(line),
        b':' => {
            line.parse::<i64>()
                .map_err(|e| format!("RESP integer {line:?}: {e}"))?;
            Reply::Integer
        }
        b'$' => {
            let n: i64 = line
                .parse()
                .map_err(|e| format!("RESP bulk length {line:?}: {e}"))?;
            if n == -1 {
                Reply::Nil
            } else {
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= MAX_RESPONSE_BYTES)
                    .ok_or_else(|| format!("RESP bulk length {n} out of range"))?;
                let total = line_len + n + 2;
                if buf.len() < total {
                    return Ok(None);
                }
                if &buf[total - 2..total] != b"\r\n" {
                    return Err("RESP bulk string not followed by CRLF".into());
                }
                buf.advance(total);
                return Ok(Some(Reply::Bulk));
            }
        }
        other => {
            return Err(format!(
                "unexpected RESP reply type {:?} (line {line:?})",
                char::from(other)
            )
            .into())
        }
    };
    buf.advance(line_len);
    Ok(Some(reply))
}

/// xorshift64*, seeded through splitmix64 so neighbouring ids diverge.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(z | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// Log-linear histogram of nanoseconds: exact below `2 * SUB`, then `SUB`
/// buckets per power of two.
#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
}

const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;

impl Histogram {
    fn new() -> Self {
        Self {
            counts: vec![0; SUB + (64 - SUB_BITS as usize) * SUB],
            total: 0,
            sum: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() - SUB_BITS;
        SUB + shift as usize * SUB + ((v >> shift) as usize - SUB)
    }

    /// The highest value that lands in bucket `i`.
    fn upper(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let shift = (i - SUB) / SUB;
        let sub = ((i - SUB) % SUB + SUB) as u64;
        (sub << shift) + ((1u64 << shift) - 1)
    }

    fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
        self.sum += u128::from(nanos);
        self.max = self.max.max(nanos);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1), in nanoseconds.
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }

    fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }
}

/// What one connection saw.
#[derive(Debug)]
struct ConnResult {
    connected: bool,
    /// Measured successful responses (hits, misses and sets).
    ops: u64,
    sets: u64,
    gets: u64,
    misses: u64,
    /// Measured error responses, plus requests left unanswered by a failure.
    errors: u64,
    /// The first error response's text, if any.
    first_error: Option<String>,
    /// Why the connection ended early, if it did.
    failure: Option<String>,
    hist: Histogram,
}

impl ConnResult {
    fn new() -> Self {
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

    fn failed(unanswered: usize, why: String) -> Self {
        let mut r = Self::new();
        r.errors = unanswered as u64;
        r.failure = Some(why);
        r
    }
}

/// Sends `auth` and expects 200.
async fn authenticate(stream: &mut TcpStream, token: &str) -> Result<(), BoxError> {
    let req = CommandRequest::new_auth(token);
    let mut buf = BytesMut::new();
    FrameCodec::new(MAX_RESPONSE_BYTES)
        .encode_message(&req, &mut buf)
        .map_err(|len| format!("auth request of {len} bytes is too large"))?;
    timeout(IO_TIMEOUT, stream.write_all(&buf))
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

async fn connection(id: usize, w: Arc<Workload>) -> ConnResult {
    let mut result = ConnResult::new();
    if let Err(e) = drive(id, &w, &mut result).await {
        result.failure = Some(format!("conn {id}: {e}"));
    }
    result
}

/// Runs one connection's loop until `w.end`, recording into `r`. On error,
/// the current batch's unanswered requests have been counted as errors.
async fn drive(id: usize, w: &Workload, r: &mut ConnResult) -> Result<(), BoxError> {
    let mut stream = match timeout(IO_TIMEOUT, TcpStream::connect(w.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connect {}: {e}", w.addr).into()),
        Err(_) => return Err(format!("connect {}: timed out after {IO_TIMEOUT:?}", w.addr).into()),
    };
    stream
        .set_nodelay(true)
        .map_err(|e| format!("set TCP_NODELAY: {e}"))?;
    r.connected = true;
    if let (Protocol::Hookv, Some(token)) = (w.protocol, &w.token) {
        authenticate(&mut stream, token).await?;
    }

    let mut codec = Codec::new(w);
    let mut rng = Rng::new(id as u64);
    let mut key = String::with_capacity(32);
    let mut ops = Vec::with_capacity(w.pipeline);
    let mut wbuf = BytesMut::with_capacity(w.pipeline * (64 + w.value.len() + w.table.len()));
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
            let _ = write!(key, "key:{}", rng.below(w.keys));
            codec.encode(w, op, &key, &mut wbuf);
            ops.push(op);
        }

        let sent = Instant::now();
        let written = timeout(IO_TIMEOUT, stream.write_all(&wbuf)).await;
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
    }
    Ok(())
}

/// Every connection's results, merged.
#[derive(Debug)]
struct Summary {
    connected: usize,
    ops: u64,
    sets: u64,
    gets: u64,
    misses: u64,
    errors: u64,
    first_error: Option<String>,
    failures: Vec<String>,
    hist: Histogram,
}

impl Summary {
    fn merge(results: Vec<ConnResult>) -> Self {
        let mut s = Summary {
            connected: 0,
            ops: 0,
            sets: 0,
            gets: 0,
            misses: 0,
            errors: 0,
            first_error: None,
            failures: Vec::new(),
            hist: Histogram::new(),
        };
        for r in results {
            s.connected += usize::from(r.connected);
            s.ops += r.ops;
            s.sets += r.sets;
            s.gets += r.gets;
            s.misses += r.misses;
            s.errors += r.errors;
            if s.first_error.is_none() {
                s.first_error = r.first_error;
            }
            s.failures.extend(r.failure);
            s.hist.merge(&r.hist);
        }
        s
    }
}

fn us(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

fn report(args: &Args, addr: SocketAddr, s: &Summary) {
    let secs = args.duration as f64;
    let ops_per_sec = s.ops as f64 / secs;
    let h = &s.hist;
    let (p50, p90, p99, p999) = (
        us(h.quantile(0.50)),
        us(h.quantile(0.90)),
        us(h.quantile(0.99)),
        us(h.quantile(0.999)),
    );
    let (max, mean) = (us(h.max), h.mean() / 1000.0);

    const SHOWN: usize = 5;
    for f in s.failures.iter().take(SHOWN) {
        eprintln!("loadgen: {f}");
    }
    if s.failures.len() > SHOWN {
        eprintln!(
            "loadgen: ... and {} more connection failures",
            s.failures.len() - SHOWN
        );
    }

    println!(
        "loadgen: protocol={} addr={addr} conns={} pipeline={} threads={}",
        args.protocol.name(),
        args.conns,
        args.pipeline,
        args.threads
    );
    println!(
        "  workload:   set_ratio={} keys={} value_size={} table={}",
        args.set_ratio, args.keys, args.value_size, args.table
    );
    println!(
        "  window:     {}s warmup (not counted), {}s measured",
        args.warmup, args.duration
    );
    println!(
        "  throughput: {} ops, {ops_per_sec:.0} ops/s ({} hset, {} hget of which {} missed)",
        s.ops, s.sets, s.gets, s.misses
    );
    println!(
        "  errors:     {} ({} of {} connections ended early){}",
        s.errors,
        s.failures.len(),
        args.conns,
        s.first_error
            .as_deref()
            .map(|e| format!("; first error response: {e}"))
            .unwrap_or_default()
    );
    println!(
        "  latency us: p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  p99.9 {p999:.1}  \
         max {max:.1}  mean {mean:.1}"
    );
    println!(
        "protocol={} conns={} pipeline={} threads={} set_ratio={} keys={} value_size={} \
         duration={}s ops={} ops_per_sec={ops_per_sec:.0} errors={} failed_conns={} misses={} \
         p50_us={p50:.1} p90_us={p90:.1} p99_us={p99:.1} p999_us={p999:.1} max_us={max:.1} \
         mean_us={mean:.1}",
        args.protocol.name(),
        args.conns,
        args.pipeline,
        args.threads,
        args.set_ratio,
        args.keys,
        args.value_size,
        args.duration,
        s.ops,
        s.errors,
        s.failures.len(),
        s.misses
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut prev = 0;
        for v in (0..2_000_000u64).step_by(7).chain([u64::MAX / 3, u64::MAX]) {
            let i = Histogram::index(v);
            assert!(i >= prev, "index not monotonic at {v}");
            prev = i;
            let up = Histogram::upper(i);
            assert!(up >= v, "upper({i}) = {up} < {v}");
            assert!((up - v) as f64 <= v as f64 / SUB as f64 + 1.0);
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.01, "{p50}");
        assert_eq!(h.quantile(1.0), 1_000_000);
    }

    #[test]
    fn resp_replies() {
        let mut buf = BytesMut::from(&b":1\r\n$3\r\nabc\r\n$-1\r\n+OK\r\n-ERR x\r\n$5\r\nab"[..]);
        assert!(matches!(parse_resp(&mut buf), Ok(Some(Reply::Integer))));
        assert!(matches!(parse_resp(&mut buf), Ok(Some(Reply::Bulk))));
        assert!(matches!(parse_resp(&mut buf), Ok(Some(Reply::Nil))));
        assert!(matches!(parse_resp(&mut buf), Ok(Some(Reply::Simple))));
        assert!(matches!(parse_resp(&mut buf), Ok(Some(Reply::Error(e))) if e == "ERR x"));
        assert!(matches!(parse_resp(&mut buf), Ok(None)));
        buf.extend_from_slice(b"cde\r\n");
        assert!(matches!(parse_resp(&mut buf), Ok(Some(Reply::Bulk))));
        assert!(buf.is_empty());
        let mut bad = BytesMut::from(&b"*2\r\n"[..]);
        assert!(parse_resp(&mut bad).is_err());
    }

    #[test]
    fn refuses_non_loopback() {
        assert!(resolve_loopback("127.0.0.1:1").is_ok());
        assert!(resolve_loopback("[::1]:1").is_ok());
        assert!(resolve_loopback("10.0.0.1:1").is_err());
        assert!(resolve_loopback("[::ffff:10.0.0.1]:1").is_err());
    }
}
