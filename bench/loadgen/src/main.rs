//! `loadgen`: a closed-loop load generator for hookv (and, for comparison,
//! for Redis over RESP2). A tool of this repository, not a teaching example:
//! `scripts/loadtest.sh` and `scripts/cpu-per-request.sh` drive it.
//!
//! Its parts: `main.rs` (flags, the run), `driver.rs` (one connection's
//! closed loop), `report.rs` (results merged and printed), `codec.rs` (requests out, responses judged,
//! for either protocol), `resp.rs` (the RESP2 client side), `histogram.rs`
//! (latencies), `rng.rs` (keys and the set/get mix). The crate's second
//! binary, `floor` (`src/bin/floor.rs`), is the server side of a benchmark
//! floor: frames answered with a canned answer, nothing decoded or stored.
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
//! seeded per connection, so a run is repeatable. They all live in the table
//! `--table`, or, with `--tables a,b,c`, key N lives in table number
//! N mod 3 (so its hset and hget meet), spreading the load over tables: over
//! the masters of a Redis Cluster behind hookv, say. Nothing is pre-populated:
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
//! cargo run --release -p loadgen -- --conns 50 --pipeline 16 --duration 10
//! ```
//!
//! # TLS and new connections
//!
//! `--tls` speaks TLS (hookv's `[server.tls]`, or redis-server's
//! `--tls-port`), trusting the CA in `--ca FILE` (`--cert`/`--key` present a
//! client certificate); the server's certificate must name the host of
//! `--addr` (an IP SAN for `127.0.0.1`). The generator encrypts too, so
//! compare TLS with plaintext, and one server with another, measured by
//! this tool in the same run. `--reconnect` makes every batch a new
//! connection: connect (TLS handshake, `auth` if `--token`), one pipeline,
//! close; its latency runs from the connect, and at `--pipeline 1` the
//! ops/s are connections a second.
//!
//! The same load against Redis (RESP2: `HSET table key value` and
//! `HGET table key`, all in the one hash named by `--table`):
//!
//! ```text
//! redis-server --port 6379 --save '' --appendonly no --daemonize yes
//! cargo run --release -p loadgen -- --protocol resp --addr 127.0.0.1:6379 \
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
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hookv::tls::{ClientCertFiles, ClientTls, TlsOptions};
use tokio_rustls::rustls::pki_types::ServerName;

mod codec;
mod driver;
mod histogram;
mod report;
mod resp;
mod rng;

use driver::{connection, ConnResult};
use report::{report, Summary};

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
    /// Tables (comma-separated) to spread the keys over instead of
    /// `--table`: key N lives in the (N mod count)th.
    #[arg(long, value_delimiter = ',')]
    tables: Vec<String>,
    /// Wire protocol to speak.
    #[arg(long, value_enum, default_value_t = Protocol::Hookv)]
    protocol: Protocol,
    /// Runtime worker threads for the generator (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Send `auth` with this token on each connection before the load
    /// (RESP: `AUTH token`, redis-server's `requirepass`).
    #[arg(long)]
    token: Option<String>,
    /// Speak TLS.
    #[arg(long)]
    tls: bool,
    /// With --tls: the CA (PEM) that signed the server's certificate
    /// (default: the system's trust store).
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// With --tls: a client certificate to present (PEM); needs --key.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
    key: Option<PathBuf>,
    /// A new connection for every batch: connect, one pipeline, close.
    #[arg(long)]
    reconnect: bool,
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
    /// The tables keys live in (key N in `tables[N % len]`); at least one.
    tables: Vec<String>,
    /// Token to authenticate each hookv connection with.
    token: Option<String>,
    /// TLS settings and the name the server's certificate must carry.
    tls: Option<(ClientTls, ServerName<'static>)>,
    /// Every batch on a new connection.
    reconnect: bool,
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
    if args.tables.iter().any(String::is_empty) {
        return Err("--tables: a table name is empty".into());
    }
    if args.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    let addr = resolve_loopback(&args.addr)?;
    let tls = match args.tls {
        false => None,
        true => {
            let tls = TlsOptions {
                ca: args.ca.clone(),
                client_cert: args
                    .cert
                    .clone()
                    .zip(args.key.clone())
                    .map(|(cert, key)| ClientCertFiles { cert, key }),
                server_name: None,
            }
            .load()?;
            let name = tls.server_name_for(&args.addr)?;
            Some((tls, name))
        }
    };

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
        tables: match args.tables.is_empty() {
            true => vec![args.table.clone()],
            false => args.tables.clone(),
        },
        token: args.token.clone(),
        tls,
        reconnect: args.reconnect,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_loopback() {
        assert!(resolve_loopback("127.0.0.1:1").is_ok());
        assert!(resolve_loopback("[::1]:1").is_ok());
        assert!(resolve_loopback("10.0.0.1:1").is_err());
        assert!(resolve_loopback("[::ffff:10.0.0.1]:1").is_err());
    }
}
