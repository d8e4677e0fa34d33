//! Rate-limited logging: a client must not be able to fill the disk through
//! the server's log.
//!
//! Every log call that a client (or a failing disk) can trigger once per
//! request goes through [`log_limited!`](crate::log_limited): each call site
//! has its own token bucket of [`BURST`] lines, refilled at one line per
//! [`REFILL`]. Lines past the budget are not written but counted; the next
//! line that is written carries `suppressed = N`, the number of lines of that
//! call site left out since the previous one. A flood of a million bad frames
//! therefore writes a few dozen lines a minute, and says how many it stands
//! for.
//!
//! ```
//! # let peer = "127.0.0.1:1";
//! hookv::log_limited!(warn, %peer, "connection closed");
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines a call site may write at once before it is limited.
pub const BURST: u32 = 20;
/// A limited call site earns one more line this often.
pub const REFILL: Duration = Duration::from_secs(1);

/// The budget of one log call site (a `static` per [`log_limited!`](crate::log_limited) use).
#[derive(Debug)]
pub struct Site {
    /// A std mutex: taken only on a path that logs, for a few arithmetic
    /// operations.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Lines that may still be written now.
    tokens: u32,
    /// When `tokens` was last topped up; `None` before the first line.
    refilled: Option<Instant>,
    /// Lines left out since the last one written.
    suppressed: u64,
}

impl Site {
    /// A call site with a full budget.
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(State {
                tokens: BURST,
                refilled: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when this line may be written (`n` lines were left out
    /// since the last one written), `None` when it must be left out.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = *st.refilled.get_or_insert(now);
        let earned = now.saturating_duration_since(since).as_nanos() / REFILL.as_nanos();
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            st.tokens = st.tokens.saturating_add(earned).min(BURST);
            // Keep the remainder, so a steady trickle earns its lines.
            st.refilled = Some(since + REFILL * earned);
        }
        if st.tokens == 0 {
            st.suppressed += 1;
            return None;
        }
        st.tokens -= 1;
        Some(std::mem::take(&mut st.suppressed))
    }
}

impl Default for Site {
    fn default() -> Self {
        Self::new()
    }
}

/// A `tracing` event at `level` (`error`, `warn`, `info`, `debug`), written
/// only while its call site is within its budget (see the [module
/// docs](crate::log_limit)). A written line that stands for left-out ones
/// carries `suppressed = N`.
///
/// The arguments are those of the `tracing` macro of that level: fields,
/// then the message.
#[macro_export]
macro_rules! log_limited {
    ($level:ident, $($arg:tt)+) => {{
        static SITE: $crate::log_limit::Site = $crate::log_limit::Site::new();
        if let Some(suppressed) = SITE.admit() {
            if suppressed > 0 {
                ::tracing::$level!(suppressed, $($arg)+);
            } else {
                ::tracing::$level!($($arg)+);
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_one_line_per_refill_carrying_the_count() {
        let site = Site::new();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(site.admit_at(t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(site.admit_at(t0), None);
        }
        // Half a refill later: still nothing.
        assert_eq!(site.admit_at(t0 + REFILL / 2), None);
        // One refill later: one line, standing for the 1001 left out.
        assert_eq!(site.admit_at(t0 + REFILL), Some(1001));
        assert_eq!(site.admit_at(t0 + REFILL), None);
        // A long quiet spell refills the burst, no more.
        let later = t0 + REFILL * 1000;
        assert_eq!(site.admit_at(later), Some(1));
        for _ in 1..BURST {
            assert_eq!(site.admit_at(later), Some(0));
        }
        assert_eq!(site.admit_at(later), None);
    }

    #[test]
    fn the_macro_compiles_with_fields_and_a_message() {
        let peer = "127.0.0.1:1";
        for _ in 0..50 {
            crate::log_limited!(warn, %peer, n = 3, "limited line");
            crate::log_limited!(error, "plain line");
        }
    }
}
