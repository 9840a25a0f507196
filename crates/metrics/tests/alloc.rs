//! The request-path operations (`inc`, `add`, `observe`, gauge updates, agent lookups) allocate
//! nothing.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use turnstile_metrics::{FailureReason, ShardCounters, Verdict};
use turnstile_uring::counting::{self, CountingAlloc};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc::new();

#[test]
fn shard_counter_updates_do_not_allocate() {
    let s = ShardCounters::new(4);
    counting::reset();
    counting::set_counting(true);
    for i in 0..10_000u64 {
        let agent = (i % 4) as usize;
        s.datagrams_received.inc();
        s.datagrams_sent.add(3);
        s.requests_total.inc();
        s.connections_open.inc();
        s.streams_open.set(i as i64);
        s.agent_calls(agent).inc();
        s.agent_failures(agent, FailureReason::ALL[(i % 5) as usize])
            .inc();
        s.agent_call_duration(agent).observe_us(i);
        s.agent(agent).duration.observe(Duration::from_micros(i));
        s.decisions(Verdict::ALL[(i % 3) as usize]).inc();
        s.ring_sleeps.inc();
        s.loop_iterations.inc();
    }
    counting::set_counting(false);
    let allocations = counting::count();
    assert_eq!(
        allocations, 0,
        "counter updates allocated {allocations} times"
    );
    assert_eq!(s.requests_total.get(), 10_000);
    assert_eq!(s.agent_calls(0).get(), 2_500);
}
