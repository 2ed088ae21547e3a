//! Fixed-bucket histograms of durations, in the shape Prometheus exports.
//!
//! The live [`Recorder`] takes observations from any thread with a few
//! relaxed atomic adds; [`Histogram`] is the copy a snapshot hands out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) for queue-wait and processing times: 1 ms to 5 min.
pub const TIME_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Upper bounds (seconds) for backlog episodes: 100 ms to 1 h.
pub const EPISODE_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// A histogram being recorded.
#[derive(Debug)]
pub(crate) struct Recorder {
    bounds: &'static [f64],
    /// One count per bound, then the overflow (`+Inf`) bucket.
    counts: Box<[AtomicU64]>,
    /// Sum of observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Recorder {
    pub(crate) fn new(bounds: &'static [f64]) -> Self {
        Recorder {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.partition_point(|b| *b < secs);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Histogram {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        Histogram {
            bounds: self.bounds,
            count: counts.iter().sum(),
            counts,
            sum: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// A copy of a histogram of durations.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Upper bounds of the buckets, in seconds, ascending.
    pub bounds: &'static [f64],
    /// Observations per bucket (not cumulative): `counts[i]` fell in
    /// `(bounds[i-1], bounds[i]]`; the last entry counts those above every
    /// bound. One longer than `bounds`.
    pub counts: Vec<u64>,
    /// Number of observations.
    pub count: u64,
    /// Sum of observations.
    pub sum: Duration,
}

impl Histogram {
    /// Cumulative counts per bound (`le` buckets, as Prometheus exports
    /// them), ending with the `+Inf` bucket, which equals `count`.
    pub fn cumulative(&self) -> Vec<u64> {
        self.counts
            .iter()
            .scan(0, |acc, c| {
                *acc += c;
                Some(*acc)
            })
            .collect()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1): an
    /// upper estimate, exact to a bucket. `None` when empty; `f64::INFINITY`
    /// when it falls above every bound.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let i = self.cumulative().iter().position(|c| *c >= rank)?;
        Some(self.bounds.get(i).copied().unwrap_or(f64::INFINITY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_whose_bound_is_at_or_above() {
        let r = Recorder::new(&[0.01, 0.1, 1.0]);
        r.observe(Duration::from_millis(10)); // on the bound: le="0.01"
        r.observe(Duration::from_millis(11));
        r.observe(Duration::from_millis(500));
        r.observe(Duration::from_secs(7));
        let h = r.snapshot();
        assert_eq!(h.counts, [1, 1, 1, 1]);
        assert_eq!(h.cumulative(), [1, 2, 3, 4]);
        assert_eq!(h.count, 4);
        assert_eq!(h.sum, Duration::from_millis(7521));
        assert_eq!(h.quantile_bound(0.5), Some(0.1));
        assert_eq!(h.quantile_bound(1.0), Some(f64::INFINITY));
    }
}
