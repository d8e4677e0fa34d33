//! [`PluginHost`]: what the server does when a plugin calls back (ABI
//! version 2): its log lines and its metrics. `ffi.rs` turns the raw C
//! calls into calls here; nothing here is `unsafe`.
//!
//! One host per plugin name, for the life of the process (a plugin may call
//! back from its own threads at any time; see `ffi.rs`): every instance of a
//! plugin, through reloads, logs and counts through the same host, so its
//! metrics carry on across a reload.
//!
//! - **Log lines** become `tracing` events at the plugin's level, target
//!   `hookv::plugin`, with `plugin` (its name) and, when the plugin passed
//!   the event's context, `conn` and `peer`. A plugin may log per request,
//!   so each host admits a burst of lines, then about one a second
//!   ([`crate::log_limit`]), and the next line written says how many were
//!   left out (`suppressed`).
//! - **Metrics** are registered by name, once (a lock and a search); the
//!   plugin then updates them by id, without a lock: the id indexes a fixed
//!   table of handles. A metric `name` is exported as `hookv_plugin_<name>`
//!   with the label `plugin="<plugin name>"` (a name that would make one of
//!   the server's own, `panics_total` or `errors_total`, is refused). They
//!   go to the Prometheus recorder directly: with no `[metrics] listen`
//!   they count nothing, and `stats` does not show them.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use hookv_plugin::abi::{
    LOG_DEBUG, LOG_ERROR, LOG_WARN, MAX_METRICS, MAX_METRIC_NAME, METRIC_COUNTER, METRIC_GAUGE,
    METRIC_HISTOGRAM,
};
use metrics::{Counter, Gauge, Histogram};

use crate::log_limit::Site;
use crate::metrics::PLUGIN_METRIC_PREFIX;

/// The server's side of one plugin's callbacks.
pub(crate) struct PluginHost {
    /// The plugin's name, from its descriptor.
    name: Arc<str>,
    /// This plugin's budget of log lines.
    site: Site,
    /// Handles by id - 1; set once, on registration.
    metrics: Box<[OnceLock<Metric>]>,
    /// Names and kinds, by id - 1: what registration searches.
    registered: Mutex<Vec<(String, i32)>>,
}

/// A registered metric's handle.
enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

/// The value updates (counters add integers).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ValueOp {
    GaugeSet,
    GaugeAdd,
    HistogramRecord,
}

impl PluginHost {
    /// The host of the plugin named `name`: made on first use, kept until
    /// the process exits.
    pub(crate) fn of(name: &str) -> &'static PluginHost {
        /// One per plugin name ever loaded (bounded by the builds a process
        /// loads, `MAX_BUILDS`): a `Vec`.
        static HOSTS: Mutex<Vec<&'static PluginHost>> = Mutex::new(Vec::new());
        // The list is whole after any panic (a push is its only change).
        let mut hosts = HOSTS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(host) = hosts.iter().find(|h| &*h.name == name) {
            return host;
        }
        let host: &'static PluginHost = Box::leak(Box::new(PluginHost {
            name: name.into(),
            site: Site::new(),
            metrics: (0..MAX_METRICS).map(|_| OnceLock::new()).collect(),
            registered: Mutex::new(Vec::new()),
        }));
        hosts.push(host);
        host
    }

    /// A line from the plugin at `level` (`hookv_plugin::abi::LOG_*`; an
    /// unknown level logs at info), about the connection `about` (id, peer)
    /// if the plugin named one. (`LOG_INFO` and anything unknown: info.)
    pub(crate) fn log(&self, level: i32, about: Option<(u64, &str)>, message: &str) {
        let Some(suppressed) = self.site.admit() else {
            return;
        };
        let plugin = &*self.name;
        let (conn, peer) = (about.map(|a| a.0), about.map(|a| a.1));
        let suppressed = (suppressed > 0).then_some(suppressed);
        macro_rules! event {
            ($level:ident) => {
                tracing::$level!(target: "hookv::plugin", plugin, conn, peer, suppressed, "{message}")
            };
        }
        match level {
            LOG_ERROR => event!(error),
            LOG_WARN => event!(warn),
            LOG_DEBUG => event!(debug),
            level if level > LOG_DEBUG => event!(trace),
            _ => event!(info),
        }
    }

    /// Registers the metric `name` of `kind` (`METRIC_*`); its id, the same
    /// for the same name and kind, or 0 when refused (logged).
    pub(crate) fn register(&self, kind: i32, name: &[u8], help: &[u8]) -> u32 {
        match self.try_register(kind, name, help) {
            Ok(id) => id,
            Err(problem) => {
                let metric = String::from_utf8_lossy(name);
                self.log(
                    LOG_WARN,
                    None,
                    &format!("metric {metric:?} not registered: {problem}; it counts nothing"),
                );
                0
            }
        }
    }

    fn try_register(&self, kind: i32, name: &[u8], help: &[u8]) -> Result<u32, String> {
        let name = std::str::from_utf8(name)
            .ok()
            .filter(|n| valid_name(n))
            .ok_or_else(|| {
                format!("a name is [a-zA-Z_][a-zA-Z0-9_]*, at most {MAX_METRIC_NAME} bytes")
            })?;
        if !(METRIC_COUNTER..=METRIC_HISTOGRAM).contains(&kind) {
            return Err(format!("unknown kind {kind}"));
        }
        let full = format!("{PLUGIN_METRIC_PREFIX}{name}");
        // `panics_total` would be the server's own hookv_plugin_panics_total.
        if crate::metrics::METRICS
            .iter()
            .any(|(own, _, _)| *own == full)
        {
            return Err(format!("{full} is a metric of the server's own"));
        }
        // A lock per registration, never per update: fine.
        let mut registered = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = registered.iter().position(|(n, _)| n == name) {
            return match registered[i].1 == kind {
                true => Ok(id_of(i)),
                false => Err("registered already as another kind".to_owned()),
            };
        }
        let i = registered.len();
        let Some(slot) = self.metrics.get(i) else {
            return Err(format!("the plugin has {MAX_METRICS} metrics already"));
        };
        let plugin = self.name.to_string();
        let help = String::from_utf8_lossy(help).into_owned();
        let metric = match kind {
            METRIC_COUNTER => {
                if !help.is_empty() {
                    metrics::describe_counter!(full.clone(), help);
                }
                Metric::Counter(metrics::counter!(full, "plugin" => plugin))
            }
            METRIC_GAUGE => {
                if !help.is_empty() {
                    metrics::describe_gauge!(full.clone(), help);
                }
                Metric::Gauge(metrics::gauge!(full, "plugin" => plugin))
            }
            _ => {
                if !help.is_empty() {
                    metrics::describe_histogram!(full.clone(), help);
                }
                Metric::Histogram(metrics::histogram!(full, "plugin" => plugin))
            }
        };
        // Set before the id is handed out, so an update never misses it.
        let _ = slot.set(metric);
        registered.push((name.to_owned(), kind));
        Ok(id_of(i))
    }

    /// The metric of `id`, if registered.
    #[inline]
    fn metric(&self, id: u32) -> Option<&Metric> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        self.metrics.get(i)?.get()
    }

    /// `counter_add`: adds `n` to counter `id`; anything else is ignored.
    pub(crate) fn counter_add(&self, id: u32, n: u64) {
        if let Some(Metric::Counter(c)) = self.metric(id) {
            c.increment(n);
        }
    }

    /// `gauge_set`, `gauge_add`, `histogram_record` on metric `id`; a
    /// mismatched kind or an unknown id is ignored.
    pub(crate) fn value(&self, op: ValueOp, id: u32, value: f64) {
        match (op, self.metric(id)) {
            (ValueOp::GaugeSet, Some(Metric::Gauge(g))) => g.set(value),
            (ValueOp::GaugeAdd, Some(Metric::Gauge(g))) => g.increment(value),
            (ValueOp::HistogramRecord, Some(Metric::Histogram(h))) => h.record(value),
            _ => {}
        }
    }
}

/// The id of the metric at index `i` (ids start at 1; 0 means refused).
fn id_of(i: usize) -> u32 {
    // `i` < MAX_METRICS, a u32.
    u32::try_from(i + 1).unwrap_or(0)
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, at most [`MAX_METRIC_NAME`] bytes.
fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= MAX_METRIC_NAME
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_gives_one_id_per_name_and_refuses_the_rest() {
        let host = PluginHost::of("host-unit-test");
        let a = host.register(METRIC_COUNTER, b"a_total", b"");
        assert_ne!(a, 0);
        assert_eq!(host.register(METRIC_COUNTER, b"a_total", b"help"), a);
        assert_eq!(host.register(METRIC_GAUGE, b"a_total", b""), 0);
        assert_eq!(host.register(METRIC_GAUGE, b"bad name", b""), 0);
        assert_eq!(host.register(7, b"b", b""), 0);
        let g = host.register(METRIC_GAUGE, b"g", b"");
        assert!(g != 0 && g != a);
        // Unknown ids and kinds are ignored, not a crash.
        host.counter_add(0, 1);
        host.counter_add(u32::MAX, 1);
        host.counter_add(g, 1);
        host.value(ValueOp::HistogramRecord, a, 1.0);
        assert!(std::ptr::eq(host, PluginHost::of("host-unit-test")));
        for i in 0..MAX_METRICS {
            host.register(METRIC_COUNTER, format!("m{i}").as_bytes(), b"");
        }
        assert_eq!(host.register(METRIC_COUNTER, b"one_too_many", b""), 0);
    }

    #[test]
    fn a_plugin_cannot_register_a_metric_of_the_servers_own() {
        let host = PluginHost::of("host-unit-test-reserved");
        // hookv_plugin_panics_total and hookv_plugin_errors_total.
        assert_eq!(host.register(METRIC_COUNTER, b"panics_total", b""), 0);
        assert_eq!(host.register(METRIC_COUNTER, b"errors_total", b""), 0);
        assert_ne!(host.register(METRIC_COUNTER, b"refused_total", b""), 0);
    }
}
