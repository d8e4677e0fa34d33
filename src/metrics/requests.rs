//! [`Tally`]: one connection's count of the batch it is answering, added to
//! the process's figures once per batch: its requests by command and
//! status, and the calls of each hook ([`HookCalls`]). It lives in the
//! connection's `HookCtx`, where the hook chain counts its calls.
//!
//! The requests of a batch arrived in one read and are answered in one
//! write, so they share one latency: the batch's count per command times
//! that latency is their exact sum. Per request, the tally finds its
//! (command, status) pair among the few the batch has, on the stack.

use std::cell::Cell;
use std::time::Duration;

use hookv_plugin::pb::CommandRequest;
use hookv_plugin::Command;

use super::hooks::HookCalls;
use super::{command_slot, export, figures, nanos, status_slot, COMMAND_SLOTS, STATUS_SLOTS};

/// Distinct (command, status) pairs a tally holds (a batch usually has one
/// to three); past them, counts go to the figures at once and only the
/// command is kept, for the latency.
const PAIRS: usize = 8;

/// The requests of one batch, by command and status, and its hook calls.
#[derive(Debug)]
pub struct Tally {
    /// (cell, count) for the first [`PAIRS`] distinct cells; a cell is
    /// `command slot × STATUS_SLOTS + status slot`.
    pairs: [(u16, u32); PAIRS],
    len: usize,
    /// Requests of cells past [`PAIRS`], by command slot (rarely used).
    spilled: [u32; COMMAND_SLOTS],
    any_spilled: bool,
    /// The batch's hook calls, counted by the chain.
    hooks: HookCalls,
}

impl Tally {
    /// An empty tally; `seed` (the connection's id) varies which hook calls
    /// are timed.
    pub fn new(seed: u64) -> Self {
        Self {
            pairs: [(0, 0); PAIRS],
            len: 0,
            spilled: [0; COMMAND_SLOTS],
            any_spilled: false,
            hooks: HookCalls::new(seed),
        }
    }

    /// The hook half, where the chain counts its calls.
    #[inline]
    pub fn hooks(&mut self) -> &mut HookCalls {
        &mut self.hooks
    }

    /// Adds the hook calls counted so far to the figures (for a caller that
    /// runs requests without a connection: `Service::execute`).
    pub fn flush_hooks(&mut self) {
        self.hooks.flush();
    }

    /// Counts `req`, answered with `status`.
    #[inline]
    pub fn add(&mut self, req: &CommandRequest, status: u32) {
        self.add_command(req.command(), status);
    }

    /// Counts a request of `command` (`None`: not a known one), answered
    /// with `status`.
    #[inline]
    pub fn add_command(&mut self, command: Option<Command>, status: u32) {
        let command = command_slot(command);
        let cell = command * STATUS_SLOTS + status_slot(status);
        for pair in &mut self.pairs[..self.len] {
            if usize::from(pair.0) == cell {
                pair.1 += 1;
                return;
            }
        }
        if self.len < PAIRS {
            self.pairs[self.len] = (cell as u16, 1);
            self.len += 1;
        } else {
            figures().requests.add(cell, 1);
            self.spilled[command] += 1;
            self.any_spilled = true;
        }
    }

    /// Adds the batch to the figures, its requests having taken `latency`
    /// from arrival to answer written, and empties the tally.
    pub fn answered(&mut self, latency: Duration) {
        self.hooks.flush();
        let ns = nanos(latency);
        let sampling = export::installed();
        let record = |command: usize, n: u32| {
            let f = figures();
            f.latency_ns.add(command, ns.saturating_mul(u64::from(n)));
            if sampling {
                sample(command, n, latency);
            }
        };
        for &(cell, n) in &self.pairs[..self.len] {
            let cell = usize::from(cell);
            figures().requests.add(cell, u64::from(n));
            record(cell / STATUS_SLOTS, n);
        }
        self.len = 0;
        if std::mem::take(&mut self.any_spilled) {
            for (command, n) in self.spilled.iter_mut().enumerate() {
                if *n > 0 {
                    record(command, std::mem::take(n));
                }
            }
        }
    }

    /// Adds the counts (not latency: the batch was never answered, e.g. its
    /// write failed) and empties the tally.
    pub fn unanswered(&mut self) {
        self.hooks.flush();
        for &(cell, n) in &self.pairs[..self.len] {
            figures().requests.add(usize::from(cell), u64::from(n));
        }
        self.len = 0;
        self.spilled = [0; COMMAND_SLOTS];
        self.any_spilled = false;
    }
}

impl Clone for Tally {
    /// A fresh tally: counts belong to the tally that made them, and are
    /// added once.
    fn clone(&self) -> Self {
        Self::new(u64::from(self.hooks.seed()))
    }
}

impl Drop for Tally {
    /// What was counted and never added (the connection ended) is added.
    fn drop(&mut self) {
        self.unanswered();
    }
}

/// Records `latency` for one in [`super::DURATION_SAMPLE`] of the `n`
/// requests of command `slot` just answered on this thread.
fn sample(slot: usize, n: u32, latency: Duration) {
    thread_local! {
        static SEEN: Cell<[u32; COMMAND_SLOTS]> = const { Cell::new([0; COMMAND_SLOTS]) };
    }
    SEEN.with(|seen| {
        let mut counts = seen.get();
        let total = counts[slot] + n;
        let samples = total / super::DURATION_SAMPLE;
        counts[slot] = total % super::DURATION_SAMPLE;
        seen.set(counts);
        if samples > 0 {
            export::record_duration(slot, latency, samples);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_with_more_pairs_than_the_tally_holds_counts_every_request() {
        let before = figures().snapshot();
        let mut tally = Tally::new(0);
        // Eleven statuses of one command, twice each: more pairs than held.
        let req = CommandRequest::new_stats();
        for status in [200, 400, 401, 403, 404, 408, 413, 429, 500, 503, 418] {
            tally.add(&req, status);
            tally.add(&req, status);
        }
        tally.answered(Duration::from_micros(3));
        let after = figures().snapshot();
        let slot = command_slot(req.command());
        let calls = |s: &super::super::Snapshot| s.requests[slot].iter().sum::<u64>();
        assert_eq!(calls(&after) - calls(&before), 22);
        assert_eq!(
            after.requests[slot][STATUS_SLOTS - 1] - before.requests[slot][STATUS_SLOTS - 1],
            2
        );
        assert_eq!(after.latency_ns[slot] - before.latency_ns[slot], 22 * 3_000);
    }
}
