//! [`Deadlines`]: a connection's clocks (idle, the frame being received,
//! authentication), and the one [`Alarm`] that rings for the earliest.

use std::pin::Pin;
use std::time::{Duration, Instant};

use super::end::End;
use super::limits::{Limits, Refusal};
use crate::frame::FrameError;

/// The connection's clocks: idle, the frame being received, authentication.
#[derive(Debug)]
pub(super) struct Deadlines {
    idle: Option<Duration>,
    frame_timeout: Duration,
    auth_timeout: Duration,
    /// When bytes last arrived.
    last_read: Instant,
    /// When the connection last stopped waiting for its peer.
    woke: Instant,
    /// When the frame partly received must be whole; `None` when no frame
    /// is partly received.
    frame_due: Option<Instant>,
    /// When the connection must have authenticated; `None` when it need not.
    auth_due: Option<Instant>,
}

impl Deadlines {
    pub(super) fn new(limits: &Limits, accepted: Instant) -> Self {
        Self {
            idle: limits.idle_timeout,
            frame_timeout: limits.frame_timeout,
            auth_timeout: limits.auth_timeout,
            last_read: accepted,
            woke: accepted,
            frame_due: None,
            auth_due: None,
        }
    }

    /// Bytes arrived at `now`.
    pub(super) fn read(&mut self, now: Instant) {
        self.last_read = now;
        self.woke = now;
    }

    /// The connection stopped waiting at `now` (without bytes).
    pub(super) fn woke(&mut self, now: Instant) {
        self.woke = now;
    }

    /// A frame arrived whole.
    #[inline]
    pub(super) fn frame_done(&mut self) {
        self.frame_due = None;
    }

    /// The connection must authenticate by `due` (`None`: it need not).
    pub(super) fn set_auth_due(&mut self, due: Option<Instant>) {
        self.auth_due = due;
    }

    /// About to wait for the peer, with a frame partly received or not.
    /// A frame's clock starts now; one already running is pushed back by
    /// the time since the last wait (answering, writing: the server's time,
    /// not the peer's; the peer may well have been blocked by us not reading).
    pub(super) fn wait(&mut self, partial: bool) {
        self.frame_due = match (partial, self.frame_due) {
            (false, _) => None,
            (true, None) => Some(Instant::now() + self.frame_timeout),
            (true, Some(due)) => Some(due + self.woke.elapsed()),
        };
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        let idle = self.idle.map(|limit| self.last_read + limit);
        [self.frame_due, self.auth_due, idle]
            .into_iter()
            .flatten()
            .min()
    }

    /// How the connection ends if a deadline passed at `now` (those with
    /// an answer first); `received` is what arrived of a partial frame.
    pub(super) fn expired(&self, now: Instant, received: usize) -> Option<End> {
        let passed = |due: Option<Instant>| due.is_some_and(|due| due <= now);
        if passed(self.frame_due) {
            Some(End::Refused(FrameError::Timeout {
                secs: self.frame_timeout.as_secs(),
                have: received,
            }))
        } else if passed(self.auth_due) {
            Some(End::Limit(Refusal::AuthTimeout {
                secs: self.auth_timeout.as_secs(),
            }))
        } else if passed(self.idle.map(|limit| self.last_read + limit)) {
            Some(End::Idle)
        } else {
            None
        }
    }
}

/// One timer for all of a connection's deadlines, set for the earliest.
#[derive(Debug)]
pub(super) struct Alarm {
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// When it rings; `None` when it is not set.
    at: Option<Instant>,
}

impl Alarm {
    pub(super) fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            at: None,
        }
    }

    /// Makes the alarm ring by `due`. One timer, moved only to an earlier
    /// time: a deadline that moved later (idle, on every read) leaves it
    /// early, to be checked and set again when it rings. Re-arming on every
    /// read would cost a timer-wheel update per request.
    pub(super) fn set(&mut self, due: Option<Instant>) {
        if let Some(due) = due {
            if self.at.is_none_or(|at| due < at) {
                self.sleep.as_mut().reset(due.into());
                self.at = Some(due);
            }
        }
    }

    pub(super) fn is_set(&self) -> bool {
        self.at.is_some()
    }

    /// Completes at the time set; poll only while [`Alarm::is_set`].
    pub(super) async fn ring(&mut self) {
        self.sleep.as_mut().await;
        self.at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;

    fn limits() -> Limits {
        Limits::new(&ServerConfig {
            idle_timeout_secs: 300,
            frame_timeout_secs: 10,
            ..ServerConfig::default()
        })
    }

    #[test]
    fn the_frame_clock_runs_only_while_waiting_for_the_peer() {
        let ago = |secs| {
            Instant::now()
                .checked_sub(Duration::from_secs(secs))
                .unwrap()
        };
        let t0 = ago(60);
        let mut d = Deadlines::new(&limits(), t0);
        d.read(t0);
        // A frame begins: its clock starts when the server starts waiting.
        d.wait(true);
        let due = d.frame_due.unwrap();
        assert!(due >= t0 + Duration::from_secs(70));
        assert_eq!(d.next(), Some(due));
        assert!(d.expired(due - Duration::from_millis(1), 9).is_none());
        assert!(matches!(
            d.expired(due, 9),
            Some(End::Refused(FrameError::Timeout { secs: 10, have: 9 }))
        ));
        // More of it arrived 30 s ago, and the server has been busy since
        // (answering, writing): that time is not the peer's.
        d.read(ago(30));
        d.wait(true);
        assert!(d.frame_due.unwrap() >= due + Duration::from_secs(30));
        // A whole frame stops the clock; idle counts from the last read.
        d.frame_done();
        d.wait(false);
        assert_eq!(d.frame_due, None);
        assert_eq!(d.next(), Some(d.last_read + Duration::from_secs(300)));
        d.auth_due = Some(t0);
        assert!(matches!(
            d.expired(Instant::now(), 0),
            Some(End::Limit(Refusal::AuthTimeout { secs: 10 }))
        ));
    }
}
