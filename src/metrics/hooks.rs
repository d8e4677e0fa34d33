//! The figures of each hook and each plugin: calls, breaks, panics, plugin
//! errors, and the sampled time inside a hook.
//!
//! A hook's figures are kept per (hook name, event) in a process-wide list
//! that only grows: a chain finds its hooks' figures there when it is built
//! ([`hook_figures`], a lock and a short scan, never on the request path),
//! so two entries of one name add up and a reload that builds the same hook
//! again goes on counting where the old one stopped (a counter never goes
//! back). Plugins' panics and errors are kept per plugin name the same way
//! ([`plugin_figures`]).
//!
//! # Cost
//!
//! A call counter shared by every connection would be an atomic add per hook
//! per request. Instead the connection's [`Tally`](super::Tally) counts the
//! calls of the batch in a small array indexed by the hook's place in the
//! chain ([`HookCalls`]), and adds them to these figures with the batch's
//! requests, once per batch. Breaks and panics are added when they happen (a
//! break is already the slow path). Durations need two clock reads, so only
//! one call in [`HOOK_SAMPLE`], chosen at random per connection, is timed,
//! and only while the Prometheus recorder is installed (nothing else shows
//! them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use ::metrics::Histogram;

use super::{export, status_slot, HOOK_DURATION, STATUS_SLOTS};

/// One call in this many is timed for `hookv_hook_duration_seconds`.
pub const HOOK_SAMPLE: u32 = 128;

/// The figures of one hook on one event.
#[derive(Debug)]
pub struct HookFigures {
    hook: Arc<str>,
    event: &'static str,
    calls: AtomicU64,
    /// `Break`s by status slot (the slots of `hookv_requests_total`).
    breaks: [AtomicU64; STATUS_SLOTS],
    panics: AtomicU64,
    /// Resolved on the first sampled call once the recorder is installed.
    duration: OnceLock<Histogram>,
}

impl HookFigures {
    /// The hook's name.
    pub fn hook(&self) -> &str {
        &self.hook
    }

    /// The event's name (`on_received`, ...).
    pub fn event(&self) -> &'static str {
        self.event
    }

    /// Counts a `Break` answered with `status`.
    pub fn broke(&self, status: u32) {
        self.breaks[status_slot(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a panic caught around a call.
    pub fn panicked(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a sampled call's duration.
    pub fn timed(&self, took: Duration) {
        if !export::installed() {
            return;
        }
        let hook = &self.hook;
        self.duration
            .get_or_init(|| ::metrics::histogram!(HOOK_DURATION, "hook" => hook.to_string()))
            .record(took.as_secs_f64());
    }
}

/// The figures of one plugin (its failures; its calls are its hook's).
#[derive(Debug)]
pub struct PluginFigures {
    plugin: Arc<str>,
    panics: AtomicU64,
    errors: AtomicU64,
}

impl PluginFigures {
    /// Counts a panic the plugin caught and reported.
    pub fn panicked(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts any other failure of a call (an error reported, an answer
    /// that does not decode).
    pub fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

static HOOKS: Mutex<Vec<Arc<HookFigures>>> = Mutex::new(Vec::new());
static PLUGINS: Mutex<Vec<Arc<PluginFigures>>> = Mutex::new(Vec::new());

/// The figures of `hook` on `event`, made on first use.
pub fn hook_figures(hook: &str, event: &'static str) -> Arc<HookFigures> {
    // Nothing panics under this lock; a poisoned list is still whole.
    let mut all = HOOKS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = all.iter().find(|f| &*f.hook == hook && f.event == event) {
        return Arc::clone(found);
    }
    let made = Arc::new(HookFigures {
        hook: hook.into(),
        event,
        calls: AtomicU64::new(0),
        breaks: [const { AtomicU64::new(0) }; STATUS_SLOTS],
        panics: AtomicU64::new(0),
        duration: OnceLock::new(),
    });
    all.push(Arc::clone(&made));
    made
}

/// The figures of plugin `plugin`, made on first use.
pub fn plugin_figures(plugin: &str) -> Arc<PluginFigures> {
    let mut all = PLUGINS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = all.iter().find(|f| &*f.plugin == plugin) {
        return Arc::clone(found);
    }
    let made = Arc::new(PluginFigures {
        plugin: plugin.into(),
        panics: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    all.push(Arc::clone(&made));
    made
}

/// One hook on one event, read.
#[derive(Debug, Clone)]
pub(crate) struct HookRow {
    pub(crate) hook: Arc<str>,
    pub(crate) event: &'static str,
    pub(crate) calls: u64,
    pub(crate) breaks: [u64; STATUS_SLOTS],
    pub(crate) panics: u64,
}

/// One plugin, read.
#[derive(Debug, Clone)]
pub(crate) struct PluginRow {
    pub(crate) plugin: Arc<str>,
    pub(crate) panics: u64,
    pub(crate) errors: u64,
}

/// Every hook's figures, in the order first built.
pub(crate) fn hook_rows() -> Vec<HookRow> {
    let all = HOOKS.lock().unwrap_or_else(PoisonError::into_inner);
    all.iter()
        .map(|f| HookRow {
            hook: Arc::clone(&f.hook),
            event: f.event,
            calls: f.calls.load(Ordering::Relaxed),
            breaks: std::array::from_fn(|i| f.breaks[i].load(Ordering::Relaxed)),
            panics: f.panics.load(Ordering::Relaxed),
        })
        .collect()
}

/// Every plugin's figures, in the order first loaded.
pub(crate) fn plugin_rows() -> Vec<PluginRow> {
    let all = PLUGINS.lock().unwrap_or_else(PoisonError::into_inner);
    all.iter()
        .map(|f| PluginRow {
            plugin: Arc::clone(&f.plugin),
            panics: f.panics.load(Ordering::Relaxed),
            errors: f.errors.load(Ordering::Relaxed),
        })
        .collect()
}

/// One connection's hook calls of the batch, not yet added to the figures,
/// and its sampling state: the hook half of the connection's
/// [`Tally`](super::Tally).
pub struct HookCalls {
    /// The figures of the chain the pending counts belong to, one per hook
    /// and event, by place.
    figures: Option<Arc<[Arc<HookFigures>]>>,
    /// Calls per place, since the last flush.
    pending: Vec<u64>,
    /// xorshift32 state: which calls are timed. Never zero.
    rng: u32,
}

impl HookCalls {
    /// Nothing pending; `seed` varies the sampled calls between connections.
    pub(super) fn new(seed: u64) -> Self {
        // Fibonacci hashing spreads consecutive ids; `| 1`: never zero.
        let rng = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32 | 1;
        Self {
            figures: None,
            pending: Vec::new(),
            rng,
        }
    }

    /// The sampling state, to seed a fresh copy with.
    pub(super) fn seed(&self) -> u32 {
        self.rng
    }

    /// Makes the pending counts those of the chain whose figures are
    /// `figures` (a connection meets a new chain after a reload).
    #[inline]
    pub fn enter(&mut self, figures: &Arc<[Arc<HookFigures>]>) {
        match &self.figures {
            Some(current) if Arc::ptr_eq(current, figures) => {}
            _ => self.switch(figures),
        }
    }

    #[cold]
    fn switch(&mut self, figures: &Arc<[Arc<HookFigures>]>) {
        self.flush();
        self.pending.clear();
        self.pending.resize(figures.len(), 0);
        self.figures = Some(Arc::clone(figures));
    }

    /// Counts a call of the hook at `place`; true when this call is to be
    /// timed.
    #[inline]
    pub fn call(&mut self, place: usize) -> bool {
        if let Some(n) = self.pending.get_mut(place) {
            *n += 1;
        }
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x.is_multiple_of(HOOK_SAMPLE)
    }

    /// Adds the pending counts to the figures.
    pub(super) fn flush(&mut self) {
        let Some(figures) = &self.figures else {
            return;
        };
        for (n, f) in self.pending.iter_mut().zip(figures.iter()) {
            if *n > 0 {
                f.calls.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
    }
}

impl std::fmt::Debug for HookCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookCalls")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}
