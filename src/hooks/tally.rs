//! Per-hook metrics, and what keeps them cheap on the request path.
//!
//! | metric | labels | what it counts |
//! |---|---|---|
//! | `hookv_hook_calls_total` | `hook`, `event` | calls of the hook on the event (a hook scoped away from a request's table is not called, so not counted) |
//! | `hookv_hook_breaks_total` | `hook`, `event`, `status` | calls that answered `Break`, by the status of the response (for `on_before_send` and `on_after_send`, the response as it stood) |
//! | `hookv_hook_duration_seconds` | `hook` | time inside the hook, per call, **sampled**: one call in [`SAMPLE_EVERY`], chosen at random per connection |
//! | `hookv_hook_panics_total` | `hook` | panics caught around the hook's call (the request then follows the entry's `on_panic`) |
//!
//! `hook` is the hook's name: the built-in's kind (`auth`) or the plugin's
//! name from its descriptor; two entries of one name add up.
//!
//! # Cost
//!
//! A call counter shared by every connection would be an atomic add per
//! hook per request, a few nanoseconds each that the busiest path pays for
//! every hook. Instead each connection tallies its calls in its
//! [`HookCtx`](super::HookCtx) (a plain add into a small array indexed by
//! the hook's place in the chain) and adds them to the shared counters once
//! per batch of pipelined requests ([`Tally::flush`]), and when the
//! connection ends. The counts are exact, and current as soon as the batch
//! that made them is answered. Breaks and panics are counted when they
//! happen (a break is already the slow path). Durations need two clock
//! reads, so only sampled calls are timed.
//!
//! Handles are resolved when the chain is built (never a registry lookup
//! per call): the metrics recorder must be installed before that, or these
//! stay no-ops.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram};

/// One call in this many is timed for `hookv_hook_duration_seconds`.
pub const SAMPLE_EVERY: u32 = 128;

/// Statuses a break is usually answered with: their counters are resolved
/// once, on first use; any other status is looked up on each break.
const COMMON_STATUSES: [u32; 9] = [400, 401, 403, 404, 408, 413, 429, 500, 503];

/// The metrics of one hook on one event.
pub(crate) struct SlotStats {
    hook: Arc<str>,
    event: &'static str,
    breaks: [OnceLock<Counter>; COMMON_STATUSES.len()],
    duration: Histogram,
    panics: Counter,
}

impl SlotStats {
    /// The handles of `hook` on `event`, resolved now.
    pub(crate) fn new(hook: &str, event: &'static str) -> (Self, Counter) {
        let hook: Arc<str> = hook.into();
        let calls = metrics::counter!(
            "hookv_hook_calls_total",
            "hook" => hook.to_string(),
            "event" => event
        );
        let stats = Self {
            duration: metrics::histogram!("hookv_hook_duration_seconds", "hook" => hook.to_string()),
            panics: metrics::counter!("hookv_hook_panics_total", "hook" => hook.to_string()),
            breaks: Default::default(),
            hook,
            event,
        };
        (stats, calls)
    }

    /// The hook's name.
    pub(crate) fn hook(&self) -> &str {
        &self.hook
    }

    /// The event's name.
    pub(crate) fn event(&self) -> &'static str {
        self.event
    }

    /// Counts a `Break` answered with `status`.
    pub(crate) fn broke(&self, status: u32) {
        let resolve = || {
            metrics::counter!(
                "hookv_hook_breaks_total",
                "hook" => self.hook.to_string(),
                "event" => self.event,
                "status" => status.to_string()
            )
        };
        match COMMON_STATUSES.iter().position(|&s| s == status) {
            Some(i) => self.breaks[i].get_or_init(resolve).increment(1),
            None => resolve().increment(1),
        }
    }

    /// Records a sampled call's duration.
    pub(crate) fn timed(&self, took: Duration) {
        self.duration.record(took.as_secs_f64());
    }

    /// Counts a panic caught around a call.
    pub(crate) fn panicked(&self) {
        self.panics.increment(1);
    }
}

/// One connection's hook calls not yet added to the shared counters, and
/// its sampling state. Lives in the connection's `HookCtx`.
pub(crate) struct Tally {
    /// The call counters of the chain the pending counts belong to (one per
    /// hook and event, by place).
    counters: Option<Arc<[Counter]>>,
    /// Calls per place, since the last flush.
    pending: Vec<u64>,
    /// xorshift32 state: which calls are timed. Never zero.
    rng: u32,
}

impl Tally {
    /// An empty tally; `seed` varies the sampled calls between connections.
    pub(crate) fn new(seed: u64) -> Self {
        // Fibonacci hashing spreads consecutive ids; `| 1`: never zero.
        let rng = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32 | 1;
        Self {
            counters: None,
            pending: Vec::new(),
            rng,
        }
    }

    /// Makes the pending counts those of the chain whose counters are
    /// `counters` (a connection meets a new chain after a reload).
    #[inline]
    pub(crate) fn enter(&mut self, counters: &Arc<[Counter]>) {
        match &self.counters {
            Some(current) if Arc::ptr_eq(current, counters) => {}
            _ => self.switch(counters),
        }
    }

    #[cold]
    fn switch(&mut self, counters: &Arc<[Counter]>) {
        self.flush();
        self.pending.clear();
        self.pending.resize(counters.len(), 0);
        self.counters = Some(Arc::clone(counters));
    }

    /// Counts a call of the hook at `place`; true when this call is to be
    /// timed.
    #[inline]
    pub(crate) fn call(&mut self, place: usize) -> bool {
        if let Some(n) = self.pending.get_mut(place) {
            *n += 1;
        }
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x % SAMPLE_EVERY == 0
    }

    /// Adds the pending counts to the shared counters.
    pub(crate) fn flush(&mut self) {
        let Some(counters) = &self.counters else {
            return;
        };
        for (n, counter) in self.pending.iter_mut().zip(counters.iter()) {
            if *n > 0 {
                counter.increment(std::mem::take(n));
            }
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Clone for Tally {
    /// A fresh tally: counts belong to the context that made them, and
    /// must be added once.
    fn clone(&self) -> Self {
        Self {
            counters: None,
            pending: Vec::new(),
            rng: self.rng,
        }
    }
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}
