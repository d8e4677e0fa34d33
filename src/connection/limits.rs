//! The limits a connection lives under: its own ([`Limits`], from
//! `[server]`) and the server-wide ones every connection shares
//! ([`Shared`]: how many may wait unauthenticated, how much memory answers
//! to peers that do not read may hold), and the [`Refusal`] a connection
//! gets when it meets one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookv_plugin::pb::status;

use crate::config::ServerConfig;

/// Per-connection limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame accepted or sent.
    pub max_frame_bytes: usize,
    /// Close after this long without a request; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// A frame, once begun, must be whole within this much waiting for it.
    pub frame_timeout: Duration,
    /// While the chain authenticates: how long after accept a connection
    /// may stay unauthenticated.
    pub auth_timeout: Duration,
    /// A batch of answers must be written within this.
    pub write_timeout: Duration,
}

impl Limits {
    /// The limits `config` sets.
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            max_frame_bytes: config.max_frame_bytes,
            idle_timeout: (config.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(config.idle_timeout_secs)),
            frame_timeout: Duration::from_secs(config.frame_timeout_secs),
            auth_timeout: Duration::from_secs(config.auth_timeout_secs),
            write_timeout: Duration::from_secs(config.write_timeout_secs),
        }
    }
}

/// The server-wide limits every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// Connections that must still authenticate (counted while an auth hook
    /// is in the chain), so they cannot take every slot.
    pub(super) unauthenticated: Gauge,
    /// Memory for answers whose peers are not reading them.
    pub(super) unsent: Budget,
}

impl Shared {
    /// The shared limits `config` sets.
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            unauthenticated: Gauge {
                count: AtomicUsize::new(0),
                max: config.max_unauthenticated(),
            },
            unsent: Budget {
                left: AtomicUsize::new(config.max_unsent_bytes),
            },
        }
    }
}

/// A count of connections with a cap on admitting more. An atomic: touched
/// when a connection starts, authenticates or ends, not per request.
#[derive(Debug)]
pub(super) struct Gauge {
    count: AtomicUsize,
    max: usize,
}

impl Gauge {
    /// A place, if fewer than `max` are taken.
    fn admit(&self) -> Option<Place<'_>> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        crate::metrics::unauthenticated(1);
        Some(Place(self))
    }

    /// A place whatever the count, for a connection already being served
    /// that must authenticate again (it lost its principal, or a reload
    /// added an auth hook): the cap is for new connections.
    fn enter(&self) -> Place<'_> {
        self.count.fetch_add(1, Ordering::AcqRel);
        crate::metrics::unauthenticated(1);
        Place(self)
    }
}

/// One connection counted by a [`Gauge`]; dropping it gives the place back.
#[derive(Debug)]
struct Place<'a>(&'a Gauge);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::unauthenticated(-1);
    }
}

/// Bytes the server may hold for peers that are not reading.
#[derive(Debug)]
pub(super) struct Budget {
    left: AtomicUsize,
}

impl Budget {
    /// Takes `n` bytes of the budget, if that many are left.
    pub(super) fn reserve(&self, n: usize) -> Option<Reserved<'_>> {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .ok()?;
        Some(Reserved { budget: self, n })
    }
}

/// Bytes taken from a [`Budget`]; dropping this gives them back.
#[derive(Debug)]
pub(super) struct Reserved<'a> {
    budget: &'a Budget,
    n: usize,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.budget.left.fetch_add(self.n, Ordering::AcqRel);
    }
}

/// A connection closed for a limit of the server, with a last answer.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not authenticated within `auth_timeout_secs` of being accepted.
    #[error(
        "not authenticated within auth_timeout_secs ({secs} s) of connecting; closing the connection"
    )]
    AuthTimeout {
        /// The configured limit.
        secs: u64,
    },
    /// `max_unauthenticated` connections are already waiting to authenticate.
    #[error(
        "too many unauthenticated connections (max_unauthenticated = {max}); authenticate right \
         after connecting, or retry later"
    )]
    TooManyUnauthenticated {
        /// The configured limit.
        max: usize,
    },
}

impl Refusal {
    /// The status a client sees.
    pub fn status(&self) -> u32 {
        match self {
            Refusal::AuthTimeout { .. } => status::UNAUTHENTICATED,
            Refusal::TooManyUnauthenticated { .. } => status::UNAVAILABLE,
        }
    }
}

/// A connection's place among the unauthenticated, held exactly while an
/// auth hook is in the chain and the connection has no principal.
#[derive(Debug)]
pub(super) struct Unauthenticated<'a> {
    gauge: &'a Gauge,
    place: Option<Place<'a>>,
}

impl<'a> Unauthenticated<'a> {
    pub(super) fn new(gauge: &'a Gauge) -> Self {
        Self { gauge, place: None }
    }

    /// Counts a new connection, unless `max_unauthenticated` already are.
    pub(super) fn admit(&mut self) -> Result<(), Refusal> {
        self.place = Some(self.gauge.admit().ok_or(Refusal::TooManyUnauthenticated {
            max: self.gauge.max,
        })?);
        Ok(())
    }

    /// Counted exactly while the connection `must` authenticate; true when
    /// that changed.
    pub(super) fn track(&mut self, must: bool) -> bool {
        if must == self.place.is_some() {
            return false;
        }
        self.place = must.then(|| self.gauge.enter());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_and_budget_give_back_what_is_dropped() {
        let gauge = Gauge {
            count: AtomicUsize::new(0),
            max: 2,
        };
        let a = gauge.admit().unwrap();
        let b = gauge.admit().unwrap();
        assert!(gauge.admit().is_none());
        // Connections already served are counted past the cap.
        let c = gauge.enter();
        drop(a);
        assert!(gauge.admit().is_none());
        drop((b, c));
        let d = gauge.admit().unwrap();
        drop(d);
        assert_eq!(gauge.count.load(Ordering::Relaxed), 0);

        let budget = Budget {
            left: AtomicUsize::new(10),
        };
        let r = budget.reserve(7).unwrap();
        assert!(budget.reserve(4).is_none());
        let s = budget.reserve(3).unwrap();
        drop((r, s));
        assert_eq!(budget.left.load(Ordering::Relaxed), 10);
    }
}
