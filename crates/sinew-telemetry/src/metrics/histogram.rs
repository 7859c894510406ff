//! [`Histogram`]: counts of observations per bucket, updated without locks.
//!
//! Every call updates one, so an observation is two relaxed atomic
//! additions (its bucket, the sum) after a binary search over the bounds,
//! in the observing thread's shard (`shard.rs`: threads observing the same
//! method do not share cache lines); the shards, and the cumulative counts
//! Prometheus wants, are added up at scrape time. A scrape that races an
//! observation may see its bucket without its sum for that instant; the
//! next scrape sees both.

use super::shard::Cells;
use std::time::Duration;

/// Latency bucket bounds in seconds: gRPC's OpenTelemetry plugin's (A66),
/// from 10 µs to 100 s, so that dashboards made for grpc-go and grpc-java
/// read sinew's histograms unchanged.
pub const LATENCY_BOUNDS_SECONDS: [f64; 40] = [
    0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006,
    0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.16, 0.2,
    0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0,
];

/// The same bounds in nanoseconds, where observations are compared.
const LATENCY_BOUNDS_NANOS: [u64; 40] = {
    let mut nanos = [0u64; 40];
    let mut index = 0;
    while index < 40 {
        nanos[index] = (LATENCY_BOUNDS_SECONDS[index] * 1e9) as u64;
        index += 1;
    }
    nanos
};

/// The most one observation adds to a sum: a year in 100 ns units.
const MAX_SUMMAND: u64 = 365 * 24 * 3600 * 10_000_000;

/// Bounds for small counts (retries per call, as A96 has them).
pub const COUNT_BOUNDS: [u64; 6] = [1, 2, 3, 4, 5, 10];
const COUNT_BOUNDS_ENCODED: [f64; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 10.0];

/// Counts per bucket and a sum: a latency histogram (observed as
/// durations, encoded in seconds) or a count histogram.
#[derive(Debug)]
pub struct Histogram {
    /// Observations are divided by this before they are summed.
    sum_unit: u64,
    bounds: &'static [u64],
    /// The bounds as encoded (exactly as written, not through `scale`).
    encoded: &'static [f64],
    /// Multiplies a bound or the sum into the encoded unit.
    scale: f64,
    /// One per bound, then the overflow (`+Inf`) bucket (not cumulative),
    /// then the sum.
    cells: Cells,
}

impl Histogram {
    /// A latency histogram over [`LATENCY_BOUNDS_SECONDS`].
    pub fn latency() -> Histogram {
        Histogram::with_bounds(&LATENCY_BOUNDS_NANOS, &LATENCY_BOUNDS_SECONDS, 1e-9)
    }

    /// A histogram of small counts over [`COUNT_BOUNDS`].
    pub fn counts() -> Histogram {
        Histogram::with_bounds(&COUNT_BOUNDS, &COUNT_BOUNDS_ENCODED, 1.0)
    }

    fn with_bounds(bounds: &'static [u64], encoded: &'static [f64], scale: f64) -> Histogram {
        // Latencies (nanoseconds) are summed in 100 ns units.
        let sum_unit = if scale < 1.0 { 100 } else { 1 };
        Histogram {
            sum_unit,
            bounds,
            encoded,
            scale,
            // The buckets, +Inf and the sum.
            cells: Cells::new(bounds.len() + 2),
        }
    }

    /// The cell of the sum.
    fn sum_cell(&self) -> usize {
        self.bounds.len() + 1
    }

    /// Counts a duration (in a latency histogram).
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Counts a value, in the histogram's own unit (nanoseconds for a
    /// latency histogram).
    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.cells.add(bucket, 1);
        // The sum counts latencies in units of 100 ns (and one observation
        // as at most a year), so that it wraps only after some 58,000 years
        // of call time: long streams, counted for months, cannot wrap it.
        let added = (value / self.sum_unit).min(MAX_SUMMAND);
        self.cells.add(self.sum_cell(), added);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counts: (0..=self.bounds.len())
                .map(|bucket| self.cells.get(bucket))
                .collect(),
            sum: self.cells.get(self.sum_cell()),
            bounds: self.encoded,
            scale: self.scale * self.sum_unit as f64,
        }
    }
}

/// A histogram's counts at one moment: what a scrape encodes, and what the
/// dashboard subtracts two of to see a window of time.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Per bucket, not cumulative; the last is `+Inf`.
    counts: Vec<u64>,
    sum: u64,
    /// Upper bounds, in the encoded unit.
    bounds: &'static [f64],
    /// Multiplies the sum into the encoded unit.
    scale: f64,
}

impl Snapshot {
    /// How many observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their sum, in the encoded unit (seconds for latencies).
    pub fn sum(&self) -> f64 {
        self.sum as f64 * self.scale
    }

    /// Cumulative buckets as Prometheus has them: `(upper bound, count of
    /// observations at most that)`, ending with `+Inf`.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        self.counts
            .iter()
            .enumerate()
            .map(|(index, count)| {
                total += count;
                (self.bound(index), total)
            })
            .collect()
    }

    /// Buckets as `prometheus-client` takes them: `(upper bound, count of
    /// observations in that bucket alone)`, ending with `+Inf` (its encoder
    /// adds them up).
    pub(crate) fn per_bucket(&self) -> Vec<(f64, u64)> {
        (0..self.counts.len())
            .map(|index| (self.bound(index), self.counts[index]))
            .collect()
    }

    fn bound(&self, index: usize) -> f64 {
        self.bounds.get(index).copied().unwrap_or(f64::INFINITY)
    }

    /// The observations since `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            sum: self.sum.saturating_sub(earlier.sum),
            bounds: self.bounds,
            scale: self.scale,
        }
    }

    /// The observations of both (snapshots of histograms with the same
    /// bounds: the per-status histograms of one method).
    pub fn merged(&self, other: &Snapshot) -> Snapshot {
        Snapshot {
            counts: self
                .counts
                .iter()
                .zip(&other.counts)
                .map(|(a, b)| a + b)
                .collect(),
            sum: self.sum + other.sum,
            bounds: self.bounds,
            scale: self.scale,
        }
    }

    /// The `q` quantile (0 to 1), interpolated inside its bucket as
    /// Prometheus's `histogram_quantile` does; `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (index, &in_bucket) in self.counts.iter().enumerate() {
            if in_bucket > 0 && (below + in_bucket) as f64 >= rank {
                let lower = match index {
                    0 => 0.0,
                    _ => self.bounds[index - 1],
                };
                let Some(&upper) = self.bounds.get(index) else {
                    // In +Inf: the highest finite bound is all we know.
                    return Some(lower);
                };
                let within = (rank - below as f64) / in_bucket as f64;
                return Some(lower + (upper - lower) * within);
            }
            below += in_bucket;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_they_fit() {
        let histogram = Histogram::latency();
        histogram.observe_duration(Duration::from_micros(10)); // == 0.00001: first bucket
        histogram.observe_duration(Duration::from_micros(11)); // second
        histogram.observe_duration(Duration::from_millis(3)); // 0.003
        histogram.observe_duration(Duration::from_secs(1000)); // +Inf
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 4);
        let cumulative = snapshot.cumulative();
        assert_eq!(cumulative.len(), 41);
        assert_eq!(cumulative[0], (0.00001, 1));
        assert_eq!(cumulative[1].1, 2);
        assert_eq!(cumulative[8], (0.003, 3));
        assert_eq!(cumulative[39], (100.0, 3));
        assert_eq!(cumulative[40], (f64::INFINITY, 4));
        assert!((snapshot.sum() - 1000.003021).abs() < 1e-6);
    }

    #[test]
    fn a_window_is_the_difference_of_two_snapshots() {
        let histogram = Histogram::latency();
        for _ in 0..10 {
            histogram.observe_duration(Duration::from_millis(1));
        }
        let before = histogram.snapshot();
        for _ in 0..90 {
            histogram.observe_duration(Duration::from_millis(20));
        }
        for _ in 0..10 {
            histogram.observe_duration(Duration::from_millis(200));
        }
        let window = histogram.snapshot().since(&before);
        assert_eq!(window.count(), 100);
        let p50 = window.quantile(0.5).unwrap();
        assert!(p50 > 0.016 && p50 <= 0.02, "{p50}");
        let p99 = window.quantile(0.99).unwrap();
        assert!(p99 > 0.16 && p99 <= 0.2, "{p99}");
        assert_eq!(Histogram::latency().snapshot().quantile(0.5), None);
    }

    #[test]
    fn counts_have_their_own_bounds() {
        let retries = Histogram::counts();
        retries.observe(1);
        retries.observe(7);
        let snapshot = retries.snapshot();
        assert_eq!(snapshot.cumulative()[0], (1.0, 1));
        assert_eq!(snapshot.cumulative()[5], (10.0, 2));
        assert_eq!(snapshot.sum(), 8.0);
    }
}
