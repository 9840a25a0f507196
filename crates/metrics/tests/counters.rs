//! Per-shard counters: sums across threads, histogram buckets, agent and verdict slots.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use turnstile_metrics::{FailureReason, HISTOGRAM_BUCKETS, Histogram, ShardCounters, Verdict};

#[test]
fn counters_from_several_threads_sum_correctly() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 100_000;
    let shard = Arc::new(ShardCounters::new(3));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let s = Arc::clone(&shard);
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    s.requests_total.inc();
                    s.datagrams_received.add(2);
                    s.agent_calls((t % 3) as usize).inc();
                    s.agent_failures(1, FailureReason::Saturated).inc();
                    s.decisions(Verdict::Block).inc();
                    s.agent_call_duration(2).observe_us(i % 5);
                    s.streams_open.inc();
                    s.streams_open.dec();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let total = THREADS * PER_THREAD;
    assert_eq!(shard.requests_total.get(), total);
    assert_eq!(shard.datagrams_received.get(), 2 * total);
    let calls: u64 = (0..3).map(|a| shard.agent_calls(a).get()).sum();
    assert_eq!(calls, total);
    assert_eq!(shard.agent_calls(0).get(), 3 * PER_THREAD);
    assert_eq!(
        shard.agent_failures(1, FailureReason::Saturated).get(),
        total
    );
    assert_eq!(shard.agent_failures(1, FailureReason::Timeout).get(), 0);
    assert_eq!(shard.decisions(Verdict::Block).get(), total);
    assert_eq!(shard.decisions(Verdict::Allow).get(), 0);
    assert_eq!(shard.streams_open.get(), 0);
    let snap = shard.agent_call_duration(2).snapshot();
    assert_eq!(snap.count, total);
    // 0,1,2,3,4 µs per 5 observations: sum 10.
    assert_eq!(snap.sum_us, total / 5 * 10);
}

#[test]
fn histogram_buckets_are_log2_microseconds() {
    assert_eq!(HISTOGRAM_BUCKETS, 22);
    assert_eq!(Histogram::bound_us(0), Some(1));
    assert_eq!(Histogram::bound_us(20), Some(1 << 20));
    assert_eq!(Histogram::bound_us(21), None);
    for (us, bucket) in [
        (0, 0),
        (1, 0),
        (2, 1),
        (3, 2),
        (4, 2),
        (5, 3),
        (1000, 10),
        (1024, 10),
        (1025, 11),
        (1 << 20, 20),
        ((1 << 20) + 1, 21),
        (u64::MAX, 21),
    ] {
        assert_eq!(Histogram::bucket_index(us), bucket, "{us} µs");
        // Every value is within its bucket's bound and above the previous one.
        if let Some(bound) = Histogram::bound_us(bucket) {
            assert!(us <= bound);
        }
        if bucket > 0 {
            assert!(us > Histogram::bound_us(bucket - 1).unwrap());
        }
    }

    let h = Histogram::new();
    h.observe_us(1);
    h.observe_us(3);
    h.observe_us(3);
    h.observe(Duration::from_millis(2)); // 2000 µs → bound 2048
    h.observe(Duration::from_secs(10)); // +Inf
    let s = h.snapshot();
    assert_eq!(s.count, 5);
    assert_eq!(s.sum_us, 1 + 3 + 3 + 2_000 + 10_000_000);
    assert_eq!(s.cumulative[0], 1);
    assert_eq!(s.cumulative[1], 1);
    assert_eq!(s.cumulative[2], 3);
    assert_eq!(s.cumulative[10], 3);
    assert_eq!(s.cumulative[11], 4);
    assert_eq!(s.cumulative[20], 4);
    assert_eq!(s.cumulative[21], 5);
    assert!(s.cumulative.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn gauges_and_agent_slots() {
    let s = ShardCounters::new(2);
    assert_eq!(s.agent_count(), 2);
    s.connections_open.set(7);
    s.connections_open.dec();
    s.connections_open.add(-10);
    assert_eq!(s.connections_open.get(), -4);
    for r in FailureReason::ALL {
        s.agent(1).failures(r).inc();
    }
    assert!(
        FailureReason::ALL
            .iter()
            .all(|r| s.agent_failures(1, *r).get() == 1 && s.agent_failures(0, *r).get() == 0)
    );
    let none = ShardCounters::new(0);
    assert_eq!(none.agent_count(), 0);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "out of range")]
fn out_of_range_agent_index_panics_in_debug_builds() {
    ShardCounters::new(2).agent_calls(2).inc();
}
