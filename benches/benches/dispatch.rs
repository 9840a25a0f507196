//! turnstile-dispatch: the circuit breaker's "may I call" check (a plain load and compare; target
//! under 2 ns), one request through a three-agent parallel plan (handle_request → 3 `Call`
//! actions → 3 allow replies → `Done` → recycle), and the call slab's put + get + removal (what
//! every agent call costs in bookkeeping). Prints ns per check, per request and per slab round at
//! the end.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use turnstile_benches::dispatch_fixture::{SLAB_LIVE_CALLS, one_request, three_agent_dispatch};
use turnstile_dispatch::bench::CallSlab;
use turnstile_dispatch::{AgentIndex, AgentReply, CallId};

/// One call's life in the slab: put, looked up by id (as its reply is), removed.
fn slab_round(slab: &mut CallSlab, now: Instant) {
    let id = slab.put(now);
    assert!(slab.get(black_box(id)));
    assert!(slab.remove(black_box(id)));
}

fn main() {
    let now = Instant::now();
    let mut d = three_agent_dispatch();
    let mut reply = AgentReply::default();
    let mut calls = [CallId::from_u64(0); 3];
    for _ in 0..1000 {
        one_request(&mut d, now, &mut reply, &mut calls);
    }
    let mut slab = CallSlab::new();
    for _ in 0..SLAB_LIVE_CALLS {
        slab.put(now);
    }

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut group = c.benchmark_group("dispatch");
    group.bench_function("breaker_allows", |b| {
        b.iter(|| black_box(&d).breaker_allows(black_box(now), black_box(AgentIndex(1))))
    });
    group.bench_function("three_agent_parallel_plan", |b| {
        b.iter(|| one_request(&mut d, now, &mut reply, &mut calls))
    });
    group.bench_function("call_slab_put_get_remove", |b| {
        b.iter(|| slab_round(&mut slab, black_box(now)))
    });
    group.finish();

    // Best of 7 rounds, printed for the report.
    let rounds = 7;
    let (checks, requests, slab_rounds) = (10_000_000u32, 200_000u32, 10_000_000u32);
    let (mut best_check, mut best_req, mut best_slab) =
        (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..checks {
            black_box(black_box(&d).breaker_allows(black_box(now), black_box(AgentIndex(1))));
        }
        best_check = best_check.min(t.elapsed());
        let t = Instant::now();
        for _ in 0..requests {
            one_request(&mut d, now, &mut reply, &mut calls);
        }
        best_req = best_req.min(t.elapsed());
        let t = Instant::now();
        for _ in 0..slab_rounds {
            slab_round(&mut slab, black_box(now));
        }
        best_slab = best_slab.min(t.elapsed());
    }
    println!(
        "dispatch: breaker_allows {:.2} ns/check (target < 2 ns); three-agent parallel plan {:.0} ns/request; call slab put + get + remove {:.2} ns",
        best_check.as_nanos() as f64 / f64::from(checks),
        best_req.as_nanos() as f64 / f64::from(requests),
        best_slab.as_nanos() as f64 / f64::from(slab_rounds),
    );
}
