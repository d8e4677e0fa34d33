//! [`Counter`], [`Gauge`], [`Histogram`]: a plugin's metrics, exported by
//! the server (ABI version 2).
//!
//! A metric named `refused_total` by the plugin `rate-limit` appears on the
//! server's `/metrics` as `hookv_plugin_refused_total{plugin="rate-limit"}`.
//! Make them in [`Plugin::init`](crate::Plugin::init) and keep them in the
//! plugin's value: making one registers it with the server (a lock and a
//! lookup), updating it is a call into the server and an atomic operation.
//! Making the same name and kind again gives the same metric.
//!
//! A name is `[a-zA-Z_][a-zA-Z0-9_]*`, at most 100 bytes: anything else
//! panics, which in `init` refuses the server's start with the message.
//! Outside a server (a plugin's own tests), or past the server's limit of
//! [`MAX_METRICS`](crate::abi::MAX_METRICS) metrics per plugin, a metric
//! counts nothing.

use crate::abi::{MAX_METRIC_NAME, METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM};
use crate::export::{host_counter_add, host_register, host_value, ValueOp};

/// Panics unless `name` is a metric name the server accepts.
fn checked(name: &str) -> &str {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    let ok = first_ok
        && name.len() <= MAX_METRIC_NAME
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    assert!(
        ok,
        "metric name {name:?}: must be [a-zA-Z_][a-zA-Z0-9_]*, at most {MAX_METRIC_NAME} bytes"
    );
    name
}

/// A number that only goes up (requests refused, bytes seen).
///
/// ```
/// # use hookv_plugin::Counter;
/// let refused = Counter::new("refused_total");
/// refused.increment(1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    id: u32,
}

impl Counter {
    /// The counter `name` (see the module docs for the rules).
    pub fn new(name: &str) -> Self {
        Self::with_help(name, "")
    }

    /// The counter `name`, with a line of help for `/metrics`.
    pub fn with_help(name: &str, help: &str) -> Self {
        Self {
            id: host_register(METRIC_COUNTER, checked(name), help),
        }
    }

    /// Adds `n`.
    #[inline]
    pub fn increment(&self, n: u64) {
        host_counter_add(self.id, n);
    }

    /// False when this counter counts nothing (no server, or refused).
    pub fn is_live(&self) -> bool {
        self.id != 0
    }
}

/// A number that goes up and down (entries in a cache, a queue's length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge {
    id: u32,
}

impl Gauge {
    /// The gauge `name` (see the module docs for the rules).
    pub fn new(name: &str) -> Self {
        Self::with_help(name, "")
    }

    /// The gauge `name`, with a line of help for `/metrics`.
    pub fn with_help(name: &str, help: &str) -> Self {
        Self {
            id: host_register(METRIC_GAUGE, checked(name), help),
        }
    }

    /// Sets it to `value`.
    #[inline]
    pub fn set(&self, value: f64) {
        host_value(ValueOp::GaugeSet, self.id, value);
    }

    /// Adds `delta` (negative to lower it).
    #[inline]
    pub fn add(&self, delta: f64) {
        host_value(ValueOp::GaugeAdd, self.id, delta);
    }

    /// False when this gauge shows nothing (no server, or refused).
    pub fn is_live(&self) -> bool {
        self.id != 0
    }
}

/// A distribution of values (sizes, durations in seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram {
    id: u32,
}

impl Histogram {
    /// The histogram `name` (see the module docs for the rules).
    pub fn new(name: &str) -> Self {
        Self::with_help(name, "")
    }

    /// The histogram `name`, with a line of help for `/metrics`.
    pub fn with_help(name: &str, help: &str) -> Self {
        Self {
            id: host_register(METRIC_HISTOGRAM, checked(name), help),
        }
    }

    /// Records one value.
    #[inline]
    pub fn record(&self, value: f64) {
        host_value(ValueOp::HistogramRecord, self.id, value);
    }

    /// False when this histogram records nothing (no server, or refused).
    pub fn is_live(&self) -> bool {
        self.id != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_server_metrics_count_nothing() {
        let c = Counter::new("refused_total");
        c.increment(3);
        assert!(!c.is_live());
        Gauge::new("g").set(1.0);
        Histogram::new("h_seconds").record(0.5);
    }

    #[test]
    fn bad_names_panic_with_the_rule() {
        for bad in ["", "1x", "with space", "dash-ed", "a:b", &"x".repeat(101)] {
            let err = std::panic::catch_unwind(|| Counter::new(bad)).unwrap_err();
            let msg = err.downcast_ref::<String>().unwrap();
            assert!(msg.contains("[a-zA-Z_][a-zA-Z0-9_]*"), "{bad}: {msg}");
        }
        Counter::new("_ok_Name_9");
    }
}
