//! [`Tally`]: one connection's count of the batch it is answering, added to
//! the process's figures once per batch.
//!
//! The requests of a batch arrived in one read and are answered in one
//! write, so they share one latency: the batch's count per command times
//! that latency is their exact sum. Per request, the tally only bumps two
//! small counters on the stack.

use std::cell::Cell;
use std::time::Duration;

use hookv_plugin::pb::CommandRequest;

use super::{command_slot, export, figures, nanos, status_slot, COMMAND_SLOTS, STATUS_SLOTS};

/// Distinct (command, status) pairs a tally holds before it adds them to
/// the figures early (a batch usually has one to three).
const PAIRS: usize = 8;

/// The requests of one batch, by command and status.
#[derive(Debug)]
pub struct Tally {
    /// (cell, count) for the first [`PAIRS`] distinct cells.
    pairs: [(u16, u32); PAIRS],
    len: usize,
    /// Requests by command slot, for their latency.
    by_command: [u32; COMMAND_SLOTS],
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            pairs: [(0, 0); PAIRS],
            len: 0,
            by_command: [0; COMMAND_SLOTS],
        }
    }
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `req`, answered with `status`.
    #[inline]
    pub fn add(&mut self, req: &CommandRequest, status: u32) {
        let command = command_slot(req.command());
        self.by_command[command] += 1;
        let cell = (command * STATUS_SLOTS + status_slot(status)) as u16;
        for pair in &mut self.pairs[..self.len] {
            if pair.0 == cell {
                pair.1 += 1;
                return;
            }
        }
        if self.len == PAIRS {
            self.add_pairs();
        }
        self.pairs[self.len] = (cell, 1);
        self.len += 1;
    }

    /// Adds the batch to the figures, its requests having taken `latency`
    /// from arrival to answer written, and empties the tally.
    pub fn answered(&mut self, latency: Duration) {
        self.add_pairs();
        let ns = nanos(latency);
        let sampling = export::installed();
        for (slot, n) in self.by_command.iter_mut().enumerate() {
            if *n == 0 {
                continue;
            }
            figures()
                .latency_ns
                .add(slot, ns.saturating_mul(u64::from(*n)));
            if sampling {
                sample(slot, *n, latency);
            }
            *n = 0;
        }
    }

    /// Adds the counts (not latency: the batch was never answered, e.g. its
    /// write failed) and empties the tally.
    pub fn unanswered(&mut self) {
        self.add_pairs();
        self.by_command = [0; COMMAND_SLOTS];
    }

    fn add_pairs(&mut self) {
        for &(cell, n) in &self.pairs[..self.len] {
            figures().requests.add(usize::from(cell), u64::from(n));
        }
        self.len = 0;
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
