//! [`Histogram`]: latencies in nanoseconds, log-linear buckets.

/// Log-linear histogram of nanoseconds: exact below `2 * SUB`, then `SUB`
/// buckets per power of two.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    pub(crate) counts: Vec<u64>,
    pub(crate) total: u64,
    pub(crate) sum: u128,
    pub(crate) max: u64,
}

const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;

impl Histogram {
    pub(crate) fn new() -> Self {
        Self {
            counts: vec![0; SUB + (64 - SUB_BITS as usize) * SUB],
            total: 0,
            sum: 0,
            max: 0,
        }
    }

    pub(crate) fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() - SUB_BITS;
        SUB + shift as usize * SUB + ((v >> shift) as usize - SUB)
    }

    /// The highest value that lands in bucket `i`.
    pub(crate) fn upper(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let shift = (i - SUB) / SUB;
        let sub = ((i - SUB) % SUB + SUB) as u64;
        (sub << shift) + ((1u64 << shift) - 1)
    }

    pub(crate) fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
        self.sum += u128::from(nanos);
        self.max = self.max.max(nanos);
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1), in nanoseconds.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }

    pub(crate) fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut prev = 0;
        for v in (0..2_000_000u64).step_by(7).chain([u64::MAX / 3, u64::MAX]) {
            let i = Histogram::index(v);
            assert!(i >= prev, "index not monotonic at {v}");
            prev = i;
            let up = Histogram::upper(i);
            assert!(up >= v, "upper({i}) = {up} < {v}");
            assert!((up - v) as f64 <= v as f64 / SUB as f64 + 1.0);
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.01, "{p50}");
        assert_eq!(h.quantile(1.0), 1_000_000);
    }
}
