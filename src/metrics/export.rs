//! `/metrics`: the figures through the `metrics` facade's Prometheus
//! recorder, served over HTTP.
//!
//! [`install`] builds `metrics-exporter-prometheus`'s recorder (every
//! histogram with the buckets of [`BUCKETS`]) and makes it the process's
//! global recorder, so anything in the process that records through the
//! facade (`metrics::counter!`) shows up in the same text. [`serve`]
//! answers `GET /metrics` on `[metrics] listen`: it hands the current
//! figures to the recorder (a counter's total with `Counter::absolute`, a
//! gauge's value with `Gauge::set`) and sends what the recorder renders;
//! each hook's and plugin's figures the same way.
//! It also runs the recorder's upkeep, which folds the histograms' samples
//! into their buckets, every [`UPKEEP`], so unscraped samples cannot pile up.
//!
//! The HTTP side is the least a Prometheus scraper needs: one `GET` per
//! connection, its head read within [`READ_TIMEOUT`] and [`MAX_HEAD`]
//! bytes, answered and closed; at most [`MAX_SCRAPES`] at once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::{
    command_name, figures, Kind, Snapshot, CELLS, CLUSTER_ERRORS, CLUSTER_ROUND_TRIPS,
    COMMAND_SLOTS, CONNECTIONS, CONNECTIONS_ACCEPTED, FRAME_ERRORS, FRAME_REASONS, HOOK_BREAKS,
    HOOK_CALLS, HOOK_PANICS, METRICS, PLUGIN_ERRORS, PLUGIN_PANICS, RELOADS, REQUESTS,
    REQUEST_DURATION, STATUS_LABELS, STATUS_SLOTS, STORAGE_ERRORS, UPTIME, WAL_BYTES,
    WAL_COMPACTIONS, WAL_FSYNCS, WAL_FSYNC_DURATION,
};

/// Bucket bounds of every histogram, in seconds: 10 µs to 10 s, about
/// three a decade (a loopback request takes tens of microseconds, an fsync
/// milliseconds).
pub const BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into buckets without a scrape.
const UPKEEP: Duration = Duration::from_secs(5);
/// A scrape's request head must arrive within this.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A scrape's answer must be taken within this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes of request head read (a scraper sends a few hundred).
const MAX_HEAD: usize = 8 * 1024;
/// Scrapes served at once; more are closed at once.
const MAX_SCRAPES: usize = 8;

/// Why the metrics endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Another recorder was installed in this process first (by a program
    /// embedding hookv), so hookv's figures would not reach the text served.
    #[error(
        "metrics.listen: another `metrics` recorder is already installed in this process; \
         hookv serves /metrics only through its own"
    )]
    RecorderTaken,
    /// The listen address cannot be bound.
    #[error("metrics.listen {addr}: cannot listen: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The installed recorder's handle, and the facade handles of the figures.
struct Export {
    prometheus: PrometheusHandle,
    /// Registered on first use, so a request kind never seen has no series.
    requests: [OnceLock<Counter>; CELLS],
    durations: [OnceLock<Histogram>; COMMAND_SLOTS],
    fsync: Histogram,
    open: Gauge,
    unauthenticated: Gauge,
    accepted: Counter,
    frame_errors: Vec<Counter>,
    audit_queue: Gauge,
    audit_dropped: Counter,
    audit_lost: Counter,
    wal_bytes: Counter,
    wal_fsyncs: Counter,
    wal_compactions: Counter,
    reloads: [Counter; 2],
    storage_errors: Counter,
    cluster_round_trips: Counter,
    cluster_errors: Counter,
    uptime: Gauge,
}

static EXPORT: OnceLock<Export> = OnceLock::new();

/// True once [`install`] has run: the histograms take samples.
#[inline]
pub(super) fn installed() -> bool {
    EXPORT.get().is_some()
}

/// Installs the Prometheus recorder as this process's global `metrics`
/// recorder, once (a second server in the process shares it).
pub fn install() -> Result<(), MetricsError> {
    if EXPORT.get().is_some() {
        return Ok(());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        // It refuses only an empty list.
        .expect("BUCKETS is a constant, not empty")
        .build_recorder();
    let prometheus = recorder.handle();
    // Racing installs: the first wins, the loser finds EXPORT set below.
    if ::metrics::set_global_recorder(recorder).is_err() {
        return match EXPORT.get() {
            Some(_) => Ok(()),
            None => Err(MetricsError::RecorderTaken),
        };
    }
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => ::metrics::describe_counter!(name, help),
            Kind::Gauge => ::metrics::describe_gauge!(name, help),
            Kind::Histogram => ::metrics::describe_histogram!(name, Unit::Seconds, help),
        }
    }
    let export = Export {
        prometheus,
        requests: [const { OnceLock::new() }; CELLS],
        durations: [const { OnceLock::new() }; COMMAND_SLOTS],
        fsync: ::metrics::histogram!(WAL_FSYNC_DURATION),
        open: ::metrics::gauge!(CONNECTIONS, "state" => "open"),
        unauthenticated: ::metrics::gauge!(CONNECTIONS, "state" => "unauthenticated"),
        accepted: ::metrics::counter!(CONNECTIONS_ACCEPTED),
        frame_errors: FRAME_REASONS
            .iter()
            .map(|&reason| ::metrics::counter!(FRAME_ERRORS, "reason" => reason))
            .collect(),
        audit_queue: ::metrics::gauge!(super::AUDIT_QUEUE),
        audit_dropped: ::metrics::counter!(super::AUDIT_DROPPED),
        audit_lost: ::metrics::counter!(super::AUDIT_LOST),
        wal_bytes: ::metrics::counter!(WAL_BYTES),
        wal_fsyncs: ::metrics::counter!(WAL_FSYNCS),
        wal_compactions: ::metrics::counter!(WAL_COMPACTIONS),
        reloads: [
            ::metrics::counter!(RELOADS, "result" => "ok"),
            ::metrics::counter!(RELOADS, "result" => "failed"),
        ],
        storage_errors: ::metrics::counter!(STORAGE_ERRORS),
        cluster_round_trips: ::metrics::counter!(CLUSTER_ROUND_TRIPS),
        cluster_errors: ::metrics::counter!(CLUSTER_ERRORS),
        uptime: ::metrics::gauge!(UPTIME),
    };
    // Only the thread that installed the recorder gets here.
    let _ = EXPORT.set(export);
    Ok(())
}

/// Records one fsync's duration, if the recorder is installed.
pub(super) fn record_fsync(took: Duration) {
    if let Some(export) = EXPORT.get() {
        export.fsync.record(took.as_secs_f64());
    }
}

/// Records `latency` `samples` times for command `slot`.
pub(super) fn record_duration(slot: usize, latency: Duration, samples: u32) {
    let Some(export) = EXPORT.get() else {
        return;
    };
    let histogram = export.durations[slot]
        .get_or_init(|| ::metrics::histogram!(REQUEST_DURATION, "command" => command_name(slot)));
    histogram.record_many(latency.as_secs_f64(), samples as usize);
}

impl Export {
    /// Hands the figures of `now` to the recorder.
    fn sync(&self, now: &Snapshot) {
        for (command, by_status) in now.requests.iter().enumerate() {
            for (status, &n) in by_status.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let counter = self.requests[command * STATUS_SLOTS + status].get_or_init(|| {
                    ::metrics::counter!(
                        REQUESTS,
                        "command" => command_name(command),
                        "status" => STATUS_LABELS[status],
                    )
                });
                counter.absolute(n);
            }
        }
        self.open.set(now.connections_open as f64);
        self.unauthenticated.set(now.unauthenticated as f64);
        self.accepted.absolute(now.connections_accepted);
        for (counter, &n) in self.frame_errors.iter().zip(&now.frame_errors) {
            counter.absolute(n);
        }
        self.audit_queue.set(now.audit_queue as f64);
        self.audit_dropped.absolute(now.audit_dropped);
        self.audit_lost.absolute(now.audit_lost);
        self.wal_bytes.absolute(now.wal_bytes);
        self.wal_fsyncs.absolute(now.wal_fsyncs);
        self.wal_compactions.absolute(now.wal_compactions);
        for (counter, &n) in self.reloads.iter().zip(&now.reloads) {
            counter.absolute(n);
        }
        self.storage_errors.absolute(now.storage_errors);
        self.cluster_round_trips.absolute(now.cluster_round_trips);
        self.cluster_errors.absolute(now.cluster_errors);
        self.uptime.set(now.uptime.as_secs_f64());
        self.sync_hooks(now);
    }

    /// Hands the figures of each hook and plugin to the recorder. Their
    /// series come and go with the config, so they are looked up by name on
    /// each scrape (a scrape is not the request path).
    fn sync_hooks(&self, now: &Snapshot) {
        let mut panics: Vec<(&str, u64)> = Vec::new();
        for row in &now.hooks {
            let hook = row.hook.to_string();
            ::metrics::counter!(HOOK_CALLS, "hook" => hook.clone(), "event" => row.event)
                .absolute(row.calls);
            for (status, &n) in row.breaks.iter().enumerate() {
                if n > 0 {
                    ::metrics::counter!(
                        HOOK_BREAKS,
                        "hook" => hook.clone(),
                        "event" => row.event,
                        "status" => STATUS_LABELS[status],
                    )
                    .absolute(n);
                }
            }
            // One series per hook, over its events.
            match panics.iter_mut().find(|(name, _)| *name == &*row.hook) {
                Some((_, n)) => *n += row.panics,
                None => panics.push((&row.hook, row.panics)),
            }
        }
        for (hook, n) in panics {
            ::metrics::counter!(HOOK_PANICS, "hook" => hook.to_owned()).absolute(n);
        }
        for row in &now.plugins {
            let plugin = row.plugin.to_string();
            ::metrics::counter!(PLUGIN_PANICS, "plugin" => plugin.clone()).absolute(row.panics);
            ::metrics::counter!(PLUGIN_ERRORS, "plugin" => plugin).absolute(row.errors);
        }
    }

    /// The Prometheus text of the figures now.
    fn render(&self) -> String {
        self.sync(&figures().snapshot());
        self.prometheus.render()
    }
}

/// Binds `addr` for [`serve`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    let listen_error = |source| MetricsError::Listen { addr, source };
    TcpListener::bind(addr).await.map_err(listen_error)
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes, and runs
/// the recorder's upkeep meanwhile. Requires [`install`] first (without it,
/// every scrape is answered 503).
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    if let Ok(addr) = listener.local_addr() {
        info!(metrics = %addr, "serving /metrics");
    }
    let scrapes = Arc::new(Semaphore::new(MAX_SCRAPES));
    let mut upkeep = tokio::time::interval(UPKEEP);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = upkeep.tick() => {
                if let Some(export) = EXPORT.get() {
                    export.prometheus.run_upkeep();
                }
            }
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors, say: do not spin on it.
                        crate::log_limited!(warn, error = %e, "metrics: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Past the limit the connection is simply closed.
                let Ok(permit) = Arc::clone(&scrapes).try_acquire_owned() else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Err(e) = scrape(stream).await {
                        crate::log_limited!(debug, error = %e, "metrics: scrape failed");
                    }
                    drop(permit);
                });
            }
        }
    }
}

/// Answers one HTTP request on `stream`.
async fn scrape(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream, &mut head)).await;
    let (status, body) = match read {
        Err(_elapsed) => (
            "408 Request Timeout",
            "request head not received in time\n".into(),
        ),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(false)) => (
            "431 Request Header Fields Too Large",
            "request head too large\n".into(),
        ),
        Ok(Ok(true)) => answer(&head),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(response.as_bytes())).await {
        Ok(written) => written,
        Err(_elapsed) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Reads up to the blank line that ends a request head; false if it is
/// longer than [`MAX_HEAD`]. EOF before it is an error.
async fn read_head(stream: &mut TcpStream, head: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut buf = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(true);
        }
        if head.len() >= MAX_HEAD {
            return Ok(false);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// The status and body for a request head.
fn answer(head: &[u8]) -> (&'static str, String) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    // A scraper may add a query string (`/metrics?...`); it is ignored.
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => match EXPORT.get() {
            Some(export) => ("200 OK", export.render()),
            None => {
                warn!("metrics: a scrape came before the recorder was installed");
                ("503 Service Unavailable", "no recorder installed\n".into())
            }
        },
        ("GET", _) => (
            "404 Not Found",
            "hookv serves its metrics at /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "only GET /metrics\n".into()),
    }
}
