//! turnstile-dispatch: the circuit breaker's "may I call" check (a plain load and compare; target
//! under 2 ns), and one request through a three-agent parallel plan (handle_request → 3 `Call`
//! actions → 3 allow replies → `Done` → recycle). Prints ns per check and per request at the end.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use turnstile_dispatch::{
    Action, AgentIndex, AgentReply, AgentSpec, CallId, Dispatch, EventKind, FailMode, RequestKey,
    RequestView, RouteSpec,
};

const HEADERS: &[&[u8]] = &[b"host", b"user-agent", b"accept", b"authorization"];

fn view() -> RequestView<'static> {
    RequestView {
        event: EventKind::RequestHeaders,
        method: "GET",
        path: "/api/items",
        header_names: HEADERS,
        has_body: false,
    }
}

fn dispatch() -> Dispatch {
    let agents = ["waf", "auth", "bot"]
        .into_iter()
        .map(|id| {
            let mut a = AgentSpec::new(id);
            a.fail_mode = FailMode::Open;
            a
        })
        .collect();
    Dispatch::new(agents, vec![RouteSpec::new("", &[&["waf", "auth", "bot"]])]).expect("config")
}

/// One request through the plan; `now` does not move (time is an input, not read).
fn one_request(d: &mut Dispatch, now: Instant, reply: &mut AgentReply, calls: &mut [CallId; 3]) {
    d.handle_request(now, RequestKey(0), "", &view())
        .expect("accepted");
    let mut n = 0;
    while let Some(a) = d.poll_action() {
        if let Action::Call { call, .. } = a {
            calls[n] = call;
            n += 1;
        }
    }
    assert_eq!(n, 3);
    for &call in calls.iter() {
        d.handle_reply(now, call, reply);
    }
    match d.poll_action() {
        Some(Action::Done { outcome, .. }) => {
            black_box(&outcome);
            d.recycle(outcome);
        }
        other => panic!("expected Done, got {other:?}"),
    }
}

fn main() {
    let now = Instant::now();
    let mut d = dispatch();
    let mut reply = AgentReply::default();
    let mut calls = [CallId::from_u64(0); 3];
    for _ in 0..1000 {
        one_request(&mut d, now, &mut reply, &mut calls);
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
    group.finish();

    // Best of 7 rounds, printed for the report.
    let rounds = 7;
    let (checks, requests) = (10_000_000u32, 200_000u32);
    let (mut best_check, mut best_req) = (Duration::MAX, Duration::MAX);
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
    }
    println!(
        "dispatch: breaker_allows {:.2} ns/check (target < 2 ns); three-agent parallel plan {:.0} ns/request",
        best_check.as_nanos() as f64 / f64::from(checks),
        best_req.as_nanos() as f64 / f64::from(requests),
    );
}
