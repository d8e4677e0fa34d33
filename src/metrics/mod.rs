//! What the server counts, and the two ways it shows the figures: the
//! Prometheus text at `[metrics] listen` (`/metrics`) and the `stats`
//! request (tag 14, `hookv-cli stats`).
//!
//! ```text
//! request path ── Tally (per batch, in HookCtx) ────┐
//! accept, frames, audit, wal, reload, storage ──────┼─▶ Figures (process-wide atomics)
//!                                                   │      ├─▶ stats: pairs, read on request
//!                                                   │      └─▶ /metrics: synced into the
//! sampled durations ─────────────────────────────────┴────────▶ Prometheus recorder, rendered
//! ```
//!
//! One set of figures, counted always (like Redis `INFO`): `stats` works
//! with or without `[metrics]`. Counts are exact and cheap: a connection
//! tallies its batch on the stack (a batch is the pipelined requests
//! answered in one write) and adds the tally to `Figures` once per batch;
//! the counters are sharded by thread so worker threads do not share cache
//! lines. The same tally counts the calls of each hook, added to the hook's
//! figures with the batch (`hooks.rs`). Rare events (a connection, a frame
//! error, an fsync, a hook's break or panic) add to a plain atomic.
//!
//! `/metrics` is the `metrics` facade's Prometheus recorder
//! (`metrics-exporter-prometheus`), installed as the process's global
//! recorder when `[metrics] listen` is set: before each scrape the figures
//! are handed to it (`Counter::absolute`, `Gauge::set`) and it renders
//! them. Its histograms take samples, not figures; to keep them cheap,
//! [`REQUEST_DURATION`] records one request in [`DURATION_SAMPLE`] (per
//! command, per worker thread), [`HOOK_DURATION`] one hook call in
//! [`HOOK_SAMPLE`] (at random, per connection), and [`WAL_FSYNC_DURATION`]
//! every fsync. Metrics a plugin registers (ABI v2) are the one exception
//! to "figures first": they go to the recorder directly, as
//! `hookv_plugin_<name>{plugin}` (see `plugin::host`), so they exist only
//! with `[metrics] listen`.
//! Rates come from the exact counters ([`REQUESTS`]), not from a
//! histogram's `_count`.
//!
//! The figures are per process: a second server in the same process (as in
//! tests) adds to the same ones.
//!
//! Layout: `counts.rs` the sharded counters, `requests.rs` the per-batch
//! [`Tally`], `hooks.rs` the figures of each hook and plugin, `export.rs`
//! the recorder and the HTTP listener, `stats.rs` the `stats` answer.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hookv_plugin::Command;

mod counts;
mod export;
mod hooks;
mod requests;
mod stats;

use counts::Counts;
pub use export::{bind, install, serve, MetricsError, BUCKETS};
pub use hooks::{hook_figures, plugin_figures, HookCalls, HookFigures, PluginFigures, HOOK_SAMPLE};
pub use requests::Tally;
pub use stats::{answer as stats_answer, human as stats_for_a_person, STATS_TABLE};

use crate::frame::FrameError;

/// `hookv_requests_total{command,status}`: requests answered.
pub const REQUESTS: &str = "hookv_requests_total";
/// `hookv_request_duration_seconds{command}`: arrival to answer written, sampled.
pub const REQUEST_DURATION: &str = "hookv_request_duration_seconds";
/// `hookv_connections{state}`: connections now open / not yet authenticated.
pub const CONNECTIONS: &str = "hookv_connections";
/// `hookv_connections_accepted_total`: connections accepted since start.
pub const CONNECTIONS_ACCEPTED: &str = "hookv_connections_accepted_total";
/// `hookv_frame_errors_total{reason}`: frames refused.
pub const FRAME_ERRORS: &str = "hookv_frame_errors_total";
/// `hookv_audit_queue_records`: audit records waiting for the writer.
pub const AUDIT_QUEUE: &str = "hookv_audit_queue_records";
/// `hookv_audit_dropped_total`: audit records dropped by a full queue.
pub const AUDIT_DROPPED: &str = "hookv_audit_dropped_total";
/// `hookv_audit_lost_total`: audit records whose write failed.
pub const AUDIT_LOST: &str = "hookv_audit_lost_total";
/// `hookv_wal_bytes_total`: bytes written to the log's segments.
pub const WAL_BYTES: &str = "hookv_wal_bytes_total";
/// `hookv_wal_fsyncs_total`: fsyncs of the log's segments.
pub const WAL_FSYNCS: &str = "hookv_wal_fsyncs_total";
/// `hookv_wal_fsync_duration_seconds`: how long each fsync took.
pub const WAL_FSYNC_DURATION: &str = "hookv_wal_fsync_duration_seconds";
/// `hookv_wal_compactions_total`: snapshots completed.
pub const WAL_COMPACTIONS: &str = "hookv_wal_compactions_total";
/// `hookv_reloads_total{result}`: SIGHUP reloads, `ok` or `failed`.
pub const RELOADS: &str = "hookv_reloads_total";
/// `hookv_storage_errors_total`: requests the storage backend failed.
pub const STORAGE_ERRORS: &str = "hookv_storage_errors_total";
/// `hookv_cluster_round_trips_total`: pipelines sent to Redis Cluster masters.
pub const CLUSTER_ROUND_TRIPS: &str = "hookv_cluster_round_trips_total";
/// `hookv_cluster_errors_total`: those that failed (no answer, an error reply).
pub const CLUSTER_ERRORS: &str = "hookv_cluster_errors_total";
/// `hookv_hook_calls_total{hook,event}`: calls of a hook on an event.
pub const HOOK_CALLS: &str = "hookv_hook_calls_total";
/// `hookv_hook_breaks_total{hook,event,status}`: calls that answered `Break`.
pub const HOOK_BREAKS: &str = "hookv_hook_breaks_total";
/// `hookv_hook_duration_seconds{hook}`: time inside a hook, sampled.
pub const HOOK_DURATION: &str = "hookv_hook_duration_seconds";
/// `hookv_hook_panics_total{hook}`: panics caught around a hook's call.
pub const HOOK_PANICS: &str = "hookv_hook_panics_total";
/// `hookv_plugin_panics_total{plugin}`: panics a plugin caught and reported.
pub const PLUGIN_PANICS: &str = "hookv_plugin_panics_total";
/// `hookv_plugin_errors_total{plugin}`: other failed plugin calls.
pub const PLUGIN_ERRORS: &str = "hookv_plugin_errors_total";
/// The prefix of a metric a plugin registers: `hookv_plugin_<name>{plugin}`.
pub const PLUGIN_METRIC_PREFIX: &str = "hookv_plugin_";
/// `hookv_uptime_seconds`: seconds since the server started.
pub const UPTIME: &str = "hookv_uptime_seconds";

/// One request in this many (per command, per worker thread) is recorded
/// in [`REQUEST_DURATION`].
pub const DURATION_SAMPLE: u32 = 16;

/// What a metric is, for the exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Samples in buckets (seconds).
    Histogram,
}

/// Every metric this module exports: name, kind, help (the `# HELP` line;
/// the README's "Observing hookv" says the same at more length).
pub const METRICS: &[(&str, Kind, &str)] = &[
    (REQUESTS, Kind::Counter, "Requests answered, by command and status (a status outside the usual set is \"other\")."),
    (REQUEST_DURATION, Kind::Histogram, "Seconds from a request's arrival to its answer being written; one request in 16 per command and worker thread."),
    (CONNECTIONS, Kind::Gauge, "Connections now open (state=\"open\"), and of those the ones an auth hook still waits on (state=\"unauthenticated\")."),
    (CONNECTIONS_ACCEPTED, Kind::Counter, "Connections accepted since the server started."),
    (FRAME_ERRORS, Kind::Counter, "Frames refused, by reason: too_large, compressed, truncated, timeout, malformed (not a request), io (socket error)."),
    (AUDIT_QUEUE, Kind::Gauge, "Audit records the writer thread found waiting at its last pass (every 5 ms at most)."),
    (AUDIT_DROPPED, Kind::Counter, "Audit records dropped because the queue was full."),
    (AUDIT_LOST, Kind::Counter, "Audit records whose write to the file failed."),
    (WAL_BYTES, Kind::Counter, "Bytes written to the write-ahead log's segments."),
    (WAL_FSYNCS, Kind::Counter, "fsyncs of the write-ahead log's segments."),
    (WAL_FSYNC_DURATION, Kind::Histogram, "Seconds each fsync of the write-ahead log took."),
    (WAL_COMPACTIONS, Kind::Counter, "Write-ahead log compactions (snapshots) completed."),
    (RELOADS, Kind::Counter, "Hook chain reloads (SIGHUP), by result: ok or failed."),
    (STORAGE_ERRORS, Kind::Counter, "Requests the storage backend failed (each also logged, rate-limited)."),
    (CLUSTER_ROUND_TRIPS, Kind::Counter, "Pipelines sent to a Redis Cluster master (one per master per batch)."),
    (CLUSTER_ERRORS, Kind::Counter, "Redis Cluster pipelines that failed (no answer in time, a connection or Redis error)."),
    (UPTIME, Kind::Gauge, "Seconds since the server started."),
    (HOOK_CALLS, Kind::Counter, "Calls of a hook on an event (a hook scoped away from a request's table is not called)."),
    (HOOK_BREAKS, Kind::Counter, "Hook calls that answered Break, by the status of the response (\"other\" outside the usual set)."),
    (HOOK_DURATION, Kind::Histogram, "Seconds inside a hook per call; one call in 128, chosen at random per connection."),
    (HOOK_PANICS, Kind::Counter, "Panics caught around a hook's call (the request then follows the entry's on_panic)."),
    (PLUGIN_PANICS, Kind::Counter, "Panics a plugin caught at its edge and reported (counted whatever its on_panic)."),
    (PLUGIN_ERRORS, Kind::Counter, "Other failed plugin calls: an error reported, an answer that does not decode."),
];

/// Why a frame was refused: the `reason` label of [`FRAME_ERRORS`].
pub const FRAME_REASONS: [&str; 6] = [
    "too_large",
    "compressed",
    "truncated",
    "timeout",
    "malformed",
    "io",
];
const MALFORMED: usize = 4;

/// The statuses [`REQUESTS`] names; any other is counted as `"other"`.
pub const STATUSES: [u32; 10] = [200, 400, 401, 403, 404, 408, 413, 429, 500, 503];
/// The `status` label of each slot: [`STATUSES`], then `"other"`.
const STATUS_LABELS: [&str; STATUS_SLOTS] = [
    "200", "400", "401", "403", "404", "408", "413", "429", "500", "503", "other",
];
const STATUS_SLOTS: usize = STATUSES.len() + 1;

/// Commands have slots `0..Command::ALL.len()` (in catalogue order), and a
/// request that names none (`"unknown"`) the last one.
const COMMAND_SLOTS: usize = Command::ALL.len() + 1;
const CELLS: usize = COMMAND_SLOTS * STATUS_SLOTS;

/// The slot of a request's command.
#[inline]
fn command_slot(command: Option<Command>) -> usize {
    // The enum is declared in catalogue order (a test checks it).
    command.map_or(COMMAND_SLOTS - 1, |c| c as usize)
}

/// The name of a command slot.
fn command_name(slot: usize) -> &'static str {
    Command::ALL
        .get(slot)
        .map_or(hookv_plugin::catalogue::UNKNOWN, |c| c.name())
}

/// The slot of a status.
#[inline]
fn status_slot(status: u32) -> usize {
    /// Slot by `status - 200`, for 200..=503: one load instead of a chain
    /// of comparisons.
    const BY_STATUS: [u8; 304] = {
        let mut table = [(STATUS_SLOTS - 1) as u8; 304];
        let mut slot = 0;
        while slot < STATUSES.len() {
            table[(STATUSES[slot] - 200) as usize] = slot as u8;
            slot += 1;
        }
        table
    };
    match BY_STATUS.get(status.wrapping_sub(200) as usize) {
        Some(&slot) => usize::from(slot),
        None => STATUS_SLOTS - 1,
    }
}

/// Every figure the server keeps. One per process: [`figures`].
pub(crate) struct Figures {
    /// Requests by (command slot × status slot).
    requests: Counts<CELLS>,
    /// Nanoseconds from arrival to answer written, summed, by command slot.
    latency_ns: Counts<COMMAND_SLOTS>,
    connections_open: AtomicI64,
    unauthenticated: AtomicI64,
    connections_accepted: AtomicU64,
    frame_errors: [AtomicU64; FRAME_REASONS.len()],
    audit_queue: AtomicI64,
    audit_dropped: AtomicU64,
    audit_lost: AtomicU64,
    wal_bytes: AtomicU64,
    wal_fsyncs: AtomicU64,
    wal_fsync_ns: AtomicU64,
    wal_compactions: AtomicU64,
    /// `ok`, `failed`.
    reloads: [AtomicU64; 2],
    storage_errors: AtomicU64,
    cluster_round_trips: AtomicU64,
    cluster_errors: AtomicU64,
}

static FIGURES: Figures = Figures {
    requests: Counts::new(),
    latency_ns: Counts::new(),
    connections_open: AtomicI64::new(0),
    unauthenticated: AtomicI64::new(0),
    connections_accepted: AtomicU64::new(0),
    frame_errors: [const { AtomicU64::new(0) }; FRAME_REASONS.len()],
    audit_queue: AtomicI64::new(0),
    audit_dropped: AtomicU64::new(0),
    audit_lost: AtomicU64::new(0),
    wal_bytes: AtomicU64::new(0),
    wal_fsyncs: AtomicU64::new(0),
    wal_fsync_ns: AtomicU64::new(0),
    wal_compactions: AtomicU64::new(0),
    reloads: [const { AtomicU64::new(0) }; 2],
    storage_errors: AtomicU64::new(0),
    cluster_round_trips: AtomicU64::new(0),
    cluster_errors: AtomicU64::new(0),
};

/// When the server (the first in this process) started.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// The figures of this process.
#[inline]
pub(crate) fn figures() -> &'static Figures {
    &FIGURES
}

/// Marks the server's start (for uptime); later calls change nothing.
pub fn mark_start() {
    STARTED.get_or_init(Instant::now);
}

/// Time since [`mark_start`] (or since the figures were first read).
pub fn uptime() -> Duration {
    STARTED.get_or_init(Instant::now).elapsed()
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A connection being served: counted open until this is dropped.
#[derive(Debug)]
#[must_use = "the connection counts as open while this lives"]
pub struct OpenConnection(());

/// Counts a connection accepted and open, until the guard is dropped.
pub fn connection_opened() -> OpenConnection {
    add(&FIGURES.connections_accepted, 1);
    FIGURES.connections_open.fetch_add(1, Ordering::Relaxed);
    OpenConnection(())
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        FIGURES.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection more (`1`) or fewer (`-1`) waiting to authenticate.
pub fn unauthenticated(delta: i64) {
    FIGURES.unauthenticated.fetch_add(delta, Ordering::Relaxed);
}

/// Counts a frame the connection could not read past.
pub fn frame_error(e: &FrameError) {
    let reason = match e {
        FrameError::TooLarge { .. } => 0,
        FrameError::Compressed { .. } => 1,
        FrameError::Truncated { .. } => 2,
        FrameError::Timeout { .. } => 3,
        FrameError::Io(_) => 5,
    };
    add(&FIGURES.frame_errors[reason], 1);
}

/// Counts a frame whose bytes are not a request (answered 400).
pub fn malformed_frame() {
    add(&FIGURES.frame_errors[MALFORMED], 1);
}

/// Counts audit records dropped because the queue was full.
pub fn audit_dropped(n: u64) {
    add(&FIGURES.audit_dropped, n);
}

/// Counts audit records whose write failed.
pub fn audit_lost(n: u64) {
    add(&FIGURES.audit_lost, n);
}

/// One audit queue's depth, as its writer last saw it; the gauge is the sum
/// over every audit hook's queue (two run side by side during a reload).
/// Dropping it (the writer ends) takes its share back out.
#[derive(Debug, Default)]
pub struct QueueDepth(u64);

impl QueueDepth {
    /// The writer found `records` waiting.
    pub fn set(&mut self, records: usize) {
        let records = records as u64;
        let delta = records.wrapping_sub(self.0) as i64;
        FIGURES.audit_queue.fetch_add(delta, Ordering::Relaxed);
        self.0 = records;
    }
}

impl Drop for QueueDepth {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Counts bytes written to the log's segments.
pub fn wal_written(bytes: u64) {
    add(&FIGURES.wal_bytes, bytes);
}

/// Counts one fsync of a log segment that took `took`.
pub fn wal_fsynced(took: Duration) {
    add(&FIGURES.wal_fsyncs, 1);
    add(&FIGURES.wal_fsync_ns, nanos(took));
    export::record_fsync(took);
}

/// Counts a completed compaction of the log.
pub fn wal_compacted() {
    add(&FIGURES.wal_compactions, 1);
}

/// Counts a reload of the hook chain: applied (`ok`) or not.
pub fn reloaded(ok: bool) {
    add(&FIGURES.reloads[usize::from(!ok)], 1);
}

/// Counts a request the storage backend failed.
pub fn storage_error() {
    add(&FIGURES.storage_errors, 1);
}

/// Counts a pipeline sent to a Redis Cluster master, and whether it failed.
pub fn cluster_round_trip(failed: bool) {
    add(&FIGURES.cluster_round_trips, 1);
    if failed {
        add(&FIGURES.cluster_errors, 1);
    }
}

/// The figures at one moment, as plain numbers: what `stats` answers and
/// `/metrics` is synced from.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Requests by command slot, then status slot.
    requests: Vec<[u64; STATUS_SLOTS]>,
    latency_ns: Vec<u64>,
    connections_open: u64,
    unauthenticated: u64,
    connections_accepted: u64,
    frame_errors: [u64; FRAME_REASONS.len()],
    audit_queue: u64,
    audit_dropped: u64,
    audit_lost: u64,
    wal_bytes: u64,
    wal_fsyncs: u64,
    wal_fsync_ns: u64,
    wal_compactions: u64,
    reloads: [u64; 2],
    storage_errors: u64,
    cluster_round_trips: u64,
    cluster_errors: u64,
    uptime: Duration,
    hooks: Vec<hooks::HookRow>,
    plugins: Vec<hooks::PluginRow>,
}

impl Figures {
    /// Reads every figure (each exactly; together, not one instant).
    pub(crate) fn snapshot(&self) -> Snapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // A gauge's fetch_sub may land before its fetch_add on another thread.
        let gauge = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0) as u64;
        let requests = (0..COMMAND_SLOTS)
            .map(|c| std::array::from_fn(|s| self.requests.get(c * STATUS_SLOTS + s)))
            .collect();
        Snapshot {
            requests,
            latency_ns: (0..COMMAND_SLOTS).map(|c| self.latency_ns.get(c)).collect(),
            connections_open: gauge(&self.connections_open),
            unauthenticated: gauge(&self.unauthenticated),
            connections_accepted: load(&self.connections_accepted),
            frame_errors: std::array::from_fn(|i| load(&self.frame_errors[i])),
            audit_queue: gauge(&self.audit_queue),
            audit_dropped: load(&self.audit_dropped),
            audit_lost: load(&self.audit_lost),
            wal_bytes: load(&self.wal_bytes),
            wal_fsyncs: load(&self.wal_fsyncs),
            wal_fsync_ns: load(&self.wal_fsync_ns),
            wal_compactions: load(&self.wal_compactions),
            reloads: std::array::from_fn(|i| load(&self.reloads[i])),
            storage_errors: load(&self.storage_errors),
            cluster_round_trips: load(&self.cluster_round_trips),
            cluster_errors: load(&self.cluster_errors),
            uptime: uptime(),
            hooks: hooks::hook_rows(),
            plugins: hooks::plugin_rows(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_slots_follow_the_catalogue() {
        for (i, c) in Command::ALL.iter().enumerate() {
            assert_eq!(command_slot(Some(*c)), i, "{c}");
            assert_eq!(command_name(i), c.name());
        }
        assert_eq!(command_name(command_slot(None)), "unknown");
    }

    #[test]
    fn status_slots_name_their_status() {
        for (i, status) in STATUSES.iter().enumerate() {
            assert_eq!(status_slot(*status), i);
            assert_eq!(STATUS_LABELS[i], status.to_string());
        }
        assert_eq!(STATUS_LABELS[status_slot(418)], "other");
    }

    #[test]
    fn every_metric_is_in_the_readme() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("## Observing hookv")
            .nth(1)
            .expect("README has an \"Observing hookv\" section");
        for (name, _, _) in METRICS {
            assert!(section.contains(name), "README does not describe {name}");
        }
    }
}
