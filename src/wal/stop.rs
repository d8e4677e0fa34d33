//! Whether, and why, the log stopped taking writes: held in one place.
//!
//! Three kinds of reader ask, with different needs:
//!
//! - appends and the writer, under the commit lock (`commit::Commit`): every
//!   change below is made under that lock too, so an append cannot slip
//!   past a failure;
//! - the store and the hook, on every write request, without a lock;
//! - barriers and `sync_all`, which may act on a stop only once it has
//!   *settled*: after a failure, once every write that never reached the
//!   log is undone (so no client hears of it earlier); after a close, once
//!   the last batch is written and fsync'd.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

/// Why the log no longer takes writes.
#[derive(Debug, Clone)]
pub enum Stopped {
    /// A write or fsync failed; the reason.
    Failed(Arc<str>),
    /// [`Wal::close`](super::Wal::close) ran.
    Closed,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stopped::Failed(reason) => write!(f, "failed: {reason}"),
            Stopped::Closed => f.write_str("is closed"),
        }
    }
}

const RUNNING: u8 = 0;
const CLOSED: u8 = 1;
const FAILED: u8 = 2;
/// Or'ed into `CLOSED` or `FAILED` once the stop has settled.
const SETTLED: u8 = 4;

/// The log's one record of whether it stopped (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Stop {
    /// `RUNNING`, `CLOSED` or `FAILED`, with `SETTLED` once it has.
    /// Changed only under the commit lock; read anywhere.
    state: AtomicU8,
    /// Why it failed; set (once) before `FAILED` is.
    reason: OnceLock<Arc<str>>,
}

impl Stop {
    /// Whether the log has stopped; appends are refused from the moment it
    /// has.
    pub(super) fn get(&self) -> Option<Stopped> {
        self.read(self.state.load(Ordering::Acquire))
    }

    /// Whether the log has stopped and that has settled: barriers and
    /// `sync_all` may give up now.
    pub(super) fn settled(&self) -> Option<Stopped> {
        let state = self.state.load(Ordering::Acquire);
        if state & SETTLED == 0 {
            return None;
        }
        self.read(state)
    }

    fn read(&self, state: u8) -> Option<Stopped> {
        match state & !SETTLED {
            RUNNING => None,
            CLOSED => Some(Stopped::Closed),
            _ => Some(Stopped::Failed(
                self.reason.get().cloned().unwrap_or_else(|| Arc::from("")),
            )),
        }
    }

    /// A running log closes: nothing appended from now on is written.
    /// Under the commit lock.
    pub(super) fn close(&self) {
        let _ = self
            .state
            .compare_exchange(RUNNING, CLOSED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The log fails for `reason` (even one closing: whoever waits for its
    /// last write must hear that it failed). True for the first failure,
    /// whose reason is kept; later ones change nothing. Under the commit
    /// lock.
    pub(super) fn fail(&self, reason: String) -> bool {
        if self.reason.set(reason.into()).is_err() {
            return false;
        }
        // Not settled: the undo comes first.
        self.state.store(FAILED, Ordering::Release);
        true
    }

    /// The stop has settled (see the module docs). Under the commit lock.
    pub(super) fn settle(&self) {
        let state = self.state.load(Ordering::Acquire);
        if state != RUNNING {
            self.state.store(state | SETTLED, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_is_seen_at_once_and_settles_later() {
        let stop = Stop::default();
        assert!(stop.get().is_none() && stop.settled().is_none());
        stop.settle();
        assert!(stop.get().is_none(), "nothing to settle while running");
        stop.close();
        assert!(matches!(stop.get(), Some(Stopped::Closed)));
        assert!(stop.settled().is_none());
        // A failure of the last write on close overrides the close.
        assert!(stop.fail("disk gone".into()));
        assert!(!stop.fail("again".into()), "only the first failure counts");
        assert_eq!(stop.get().unwrap().to_string(), "failed: disk gone");
        assert!(stop.settled().is_none());
        stop.settle();
        assert_eq!(stop.settled().unwrap().to_string(), "failed: disk gone");
        stop.close();
        assert!(matches!(stop.get(), Some(Stopped::Failed(_))));
    }
}
