//! [`Counts`]: an array of counters that worker threads add to without
//! sharing cache lines.
//!
//! Each thread adds to one of [`SHARDS`] copies of the array (threads are
//! dealt shards in turn as they first count); a read sums the copies. With
//! no more worker threads than shards an add is an uncontended atomic add
//! on a line only its thread writes; with more, threads share a shard, and
//! the add is still exact (a `fetch_add`), only dearer.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Copies of each array: more than the cores of most machines hookv runs on.
const SHARDS: usize = 16;

/// One thread's copy, on cache lines of its own (128 bytes: adjacent-line
/// prefetching pairs 64-byte lines).
#[repr(align(128))]
struct Shard<const N: usize>([AtomicU64; N]);

/// `N` counters, sharded by thread.
pub(super) struct Counts<const N: usize> {
    shards: [Shard<N>; SHARDS],
}

impl<const N: usize> Counts<N> {
    /// All zero.
    pub(super) const fn new() -> Self {
        Self {
            shards: [const { Shard([const { AtomicU64::new(0) }; N]) }; SHARDS],
        }
    }

    /// Adds `n` to counter `i`.
    #[inline]
    pub(super) fn add(&self, i: usize, n: u64) {
        self.shards[shard()].0[i].fetch_add(n, Ordering::Relaxed);
    }

    /// Counter `i`: the sum of its copies.
    pub(super) fn get(&self, i: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0[i].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// This thread's shard.
#[inline]
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_many_threads_sum_exactly() {
        static COUNTS: Counts<3> = Counts::new();
        std::thread::scope(|s| {
            for _ in 0..(SHARDS + 3) {
                s.spawn(|| {
                    for _ in 0..1000 {
                        COUNTS.add(1, 2);
                    }
                });
            }
        });
        assert_eq!(COUNTS.get(1), (SHARDS as u64 + 3) * 2000);
        assert_eq!(COUNTS.get(0), 0);
    }
}
