//! A histogram for the request path: one atomic add per bucket and for the sum, no lock (the
//! crate's own histogram takes a mutex per observation); see "Monitoring" in docs/behaviour.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds in seconds (the last bucket, +Inf, is implied).
const BOUNDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

#[derive(Debug, Default)]
struct Inner {
    /// Per bucket (not cumulative), the last one for anything above the bounds.
    counts: [AtomicU64; BOUNDS.len() + 1],
    /// Sum of the observations in microseconds.
    sum_us: AtomicU64,
}

/// Time to first byte (response headers) of requests: cloning shares the counts.
#[derive(Debug, Clone, Default)]
pub struct Ttfb(Arc<Inner>);

impl Ttfb {
    /// Counts one observation (two relaxed atomic adds).
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        if let Some(c) = self.0.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.0.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

impl EncodeMetric for Ttfb {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts: Vec<u64> = self
            .0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let bounds = BOUNDS.iter().copied().chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds.zip(counts.iter().copied()).collect();
        let sum = self.0.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let count = counts.iter().sum();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl TypedMetric for Ttfb {
    const TYPE: MetricType = MetricType::Histogram;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        let h = Ttfb::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(1000));
        let counts: Vec<u64> =
            h.0.counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[5], 1);
        assert_eq!(counts[BOUNDS.len()], 1);
    }
}
