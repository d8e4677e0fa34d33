//! [`Summary`]: every connection's results merged, and the report: a
//! block for people, then one `key=value` line for scripts.

use std::net::SocketAddr;

use crate::driver::ConnResult;
use crate::histogram::Histogram;
use crate::Args;

/// Every connection's results, merged.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) connected: usize,
    pub(crate) ops: u64,
    pub(crate) sets: u64,
    pub(crate) gets: u64,
    pub(crate) misses: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) failures: Vec<String>,
    pub(crate) hist: Histogram,
}

impl Summary {
    pub(crate) fn merge(results: Vec<ConnResult>) -> Self {
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

pub(crate) fn report(args: &Args, addr: SocketAddr, s: &Summary) {
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
        "loadgen: protocol={} addr={addr} tls={} reconnect={} conns={} pipeline={} threads={}",
        args.protocol.name(),
        args.tls,
        args.reconnect,
        args.conns,
        args.pipeline,
        args.threads
    );
    println!(
        "  workload:   set_ratio={} keys={} value_size={} table={}",
        args.set_ratio,
        args.keys,
        args.value_size,
        match args.tables.is_empty() {
            true => args.table.clone(),
            false => args.tables.join(","),
        }
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
        "protocol={} tls={} reconnect={} conns={} pipeline={} threads={} set_ratio={} keys={} \
         value_size={} duration={}s ops={} ops_per_sec={ops_per_sec:.0} errors={} failed_conns={} misses={} \
         p50_us={p50:.1} p90_us={p90:.1} p99_us={p99:.1} p999_us={p999:.1} max_us={max:.1} \
         mean_us={mean:.1}",
        args.protocol.name(),
        args.tls,
        args.reconnect,
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
