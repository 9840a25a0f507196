//! Counters behind health load metrics and metrics reports. Atomics only: replies on any thread
//! count without a lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Log2 latency buckets in microseconds: bucket `i` counts latencies below `2^i` µs; the last
/// one counts everything above.
pub(crate) const LATENCY_BUCKETS: usize = 24;

/// A latency histogram with power-of-two bucket bounds.
#[derive(Default)]
pub(crate) struct Latency {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A copy of a [`Latency`].
pub(crate) struct LatencySnapshot {
    pub buckets: [u64; LATENCY_BUCKETS],
    pub sum_us: u64,
    pub count: u64,
}

/// Upper bound of bucket `i` in µs.
pub(crate) fn bucket_le_us(i: usize) -> f64 {
    if i + 1 >= LATENCY_BUCKETS {
        f64::INFINITY
    } else {
        (1u64 << i) as f64
    }
}

impl Latency {
    pub fn record(&self, us: u64) {
        let i = (u64::BITS - us.leading_zeros()) as usize;
        self.buckets[i.min(LATENCY_BUCKETS - 1)].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// The current values; with `reset`, starts a new window (values recorded concurrently may
    /// land in either window, which is fine for load reports).
    pub fn snapshot(&self, reset: bool) -> LatencySnapshot {
        let get = |a: &AtomicU64| {
            if reset {
                a.swap(0, Relaxed)
            } else {
                a.load(Relaxed)
            }
        };
        LatencySnapshot {
            buckets: std::array::from_fn(|i| get(&self.buckets[i])),
            sum_us: get(&self.sum_us),
            count: get(&self.count),
        }
    }
}

impl LatencySnapshot {
    /// Average in ms, 0 when empty.
    pub fn avg_ms(&self) -> f32 {
        if self.count == 0 {
            0.0
        } else {
            (self.sum_us as f64 / self.count as f64 / 1000.0) as f32
        }
    }

    /// Upper bound of the bucket holding the 99th percentile, in ms; 0 when empty.
    pub fn p99_ms(&self) -> f32 {
        let target = self.count - self.count / 100;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target && *n > 0 {
                let le = bucket_le_us(i);
                let le = if le.is_finite() {
                    le
                } else {
                    bucket_le_us(i - 1) * 2.0
                };
                return (le / 1000.0) as f32;
            }
        }
        0.0
    }
}

/// Counters of the whole agent process.
#[derive(Default)]
pub(crate) struct Stats {
    pub requests: AtomicU64,
    pub allowed: AtomicU64,
    pub blocked: AtomicU64,
    pub redirected: AtomicU64,
    pub need_more: AtomicU64,
    pub cancelled: AtomicU64,
    pub dropped_replies: AtomicU64,
    pub errors: AtomicU64,
    pub config_errors: AtomicU64,
    pub in_flight: AtomicU64,
    pub connections: AtomicU64,
    pub latency: Latency,
}

/// Load of one connection over the current report interval.
#[derive(Default)]
pub(crate) struct LoadWindow {
    pub processed: AtomicU64,
    pub rejected: AtomicU64,
    pub latency: Latency,
}

/// Adds one to a counter.
pub(crate) fn inc(a: &AtomicU64) {
    a.fetch_add(1, Relaxed);
}

/// Subtracts `n` from a gauge without wrapping below 0.
pub(crate) fn sub(a: &AtomicU64, n: u64) {
    let _ = a.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_and_percentiles() {
        let l = Latency::default();
        for _ in 0..99 {
            l.record(3); // bucket 2 (< 4 µs)
        }
        l.record(5_000); // bucket 13 (< 8192 µs)
        let s = l.snapshot(true);
        assert_eq!(s.count, 100);
        assert_eq!(s.buckets[2], 99);
        assert!((s.avg_ms() - 0.05297).abs() < 1e-3, "{}", s.avg_ms());
        assert!((s.p99_ms() - 0.004).abs() < 1e-6, "{}", s.p99_ms());
        assert_eq!(l.snapshot(false).count, 0);
        l.record(u64::MAX);
        assert_eq!(l.snapshot(false).buckets[LATENCY_BUCKETS - 1], 1);
        assert_eq!(
            LatencySnapshot {
                buckets: [0; LATENCY_BUCKETS],
                sum_us: 0,
                count: 0
            }
            .p99_ms(),
            0.0
        );
    }
}
