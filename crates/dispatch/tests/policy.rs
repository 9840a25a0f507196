//! Per-agent policy and agent state: timeouts and fail modes, the circuit breaker, health, flow
//! control, max in flight and the wait queue.

mod common;

use std::time::Duration;

use common::*;
use turnstile_dispatch::*;

fn one(spec: AgentSpec) -> Dispatch {
    let id = spec.id.clone();
    Dispatch::new(vec![spec], vec![RouteSpec::new("", &[&[id.as_str()]])]).expect("config")
}

/// Starts request `key` and returns its single call.
fn start(d: &mut Dispatch, clock: &Clock, key: u32) -> CallId {
    d.handle_request(clock.now(), RequestKey(key), "", &view())
        .expect("accepted");
    let c = calls(&drain(d));
    assert_eq!(c.len(), 1, "one call");
    c[0].0
}

#[test]
fn timeout_fail_open_allows_with_an_audit_tag() {
    let mut clock = Clock::new();
    let mut d = one(agent("waf", FailMode::Open));
    let call = start(&mut d, &clock, 0);
    assert_eq!(
        d.poll_timeout(),
        Some(clock.now() + Duration::from_millis(100))
    );
    d.handle_timeout(clock.ms(99));
    assert!(drain(&mut d).is_empty(), "not yet");
    d.handle_timeout(clock.ms(1));
    let acts = drain(&mut d);
    assert_eq!(
        cancels(&acts),
        vec![(call, idx(&d, "waf"), CancelReason::Timeout)]
    );
    let o = one_done(acts);
    assert_eq!(o.verdict, Verdict::Allow);
    assert_eq!(tags(&o), ["fail-open:waf:timeout"]);
    assert_eq!(o.timings[0].outcome, AgentOutcome::Timeout);
    assert_eq!(o.timings[0].fail_mode, FailMode::Open);
    assert_eq!(o.timings[0].elapsed_us, 100_000);
    // A reply after the timeout is stale.
    d.handle_reply(clock.ms(1), call, &mut allow());
    assert!(drain(&mut d).is_empty());
    let s = d.stats();
    assert_eq!((s.calls_timed_out, s.replies_stale, s.fail_open), (1, 1, 1));
    d.assert_invariants();
}

#[test]
fn timeout_fail_closed_blocks_with_the_configured_status() {
    let mut clock = Clock::new();
    let mut spec = agent("auth", FailMode::Closed);
    spec.fail_closed_status = 502;
    let mut d = one(spec);
    start(&mut d, &clock, 0);
    d.handle_timeout(clock.ms(100));
    let o = one_done(drain(&mut d));
    match &o.verdict {
        Verdict::Block(b) => assert_eq!(b.status, 502),
        v => panic!("expected a block, got {v:?}"),
    }
    assert_eq!(o.decided_by, Some(idx(&d, "auth")));
    assert_eq!(tags(&o), ["fail-closed:auth:timeout"]);
    assert_eq!(o.timings[0].fail_mode, FailMode::Closed);
    // Default status is 503.
    let mut d = one(agent("auth", FailMode::Closed));
    start(&mut d, &clock, 0);
    d.handle_timeout(clock.ms(100));
    assert!(matches!(
        one_done(drain(&mut d)).verdict,
        Verdict::Block(Block { status: 503, .. })
    ));
}

#[test]
fn route_overrides_the_fail_mode() {
    let mut clock = Clock::new();
    let mut d = Dispatch::new(
        vec![agent("a", FailMode::Closed)],
        vec![
            RouteSpec::new("strict", &[&["a"]]),
            RouteSpec::new("lenient", &[&["a"]]).with_fail_mode("a", FailMode::Open),
        ],
    )
    .expect("config");
    d.handle_request(clock.now(), RequestKey(0), "strict", &view())
        .expect("ok");
    d.handle_request(clock.now(), RequestKey(1), "lenient", &view())
        .expect("ok");
    d.handle_timeout(clock.ms(100));
    let done = dones(drain(&mut d));
    assert_eq!(done.len(), 2);
    for (req, o) in done {
        if req == RequestKey(0) {
            assert!(matches!(o.verdict, Verdict::Block(_)));
        } else {
            assert_eq!(o.verdict, Verdict::Allow);
            assert_eq!(o.timings[0].fail_mode, FailMode::Open);
        }
    }
}

fn breaker_agent(n: u32) -> AgentSpec {
    let mut a = agent("flaky", FailMode::Open);
    a.breaker = BreakerSpec {
        consecutive_failures: n,
        error_rate: 0.0,
        window: Duration::from_secs(10),
        min_calls: 10,
        cool_down: Duration::from_secs(1),
        half_open_probes: 1,
    };
    a
}

/// Runs one request whose call times out.
fn fail_once(d: &mut Dispatch, clock: &mut Clock, key: u32) {
    start(d, clock, key);
    d.handle_timeout(clock.ms(100));
    drain(d);
}

#[test]
fn breaker_opens_after_consecutive_failures_and_refuses_calls() {
    let mut clock = Clock::new();
    let mut d = one(breaker_agent(3));
    let a = idx(&d, "flaky");
    for k in 0..3 {
        assert_eq!(d.breaker_state(a), BreakerState::Closed);
        fail_once(&mut d, &mut clock, k);
    }
    assert_eq!(d.breaker_state(a), BreakerState::Open);
    assert!(!d.breaker_allows(clock.now(), a));
    assert_eq!(d.stats().breakers_opened, 1);
    // Open: no call, outcome breakerOpen, fail mode applied.
    d.handle_request(clock.now(), RequestKey(9), "", &view())
        .expect("ok");
    let acts = drain(&mut d);
    assert!(calls(&acts).is_empty());
    let o = one_done(acts);
    assert_eq!(outcomes(&o), [AgentOutcome::BreakerOpen]);
    assert_eq!(tags(&o), ["fail-open:flaky:breaker-open"]);
    assert!(
        !d.breaker_allows(clock.now(), AgentIndex(99)),
        "unknown agent"
    );
}

#[test]
fn half_open_probe_success_closes() {
    let mut clock = Clock::new();
    let mut d = one(breaker_agent(2));
    let a = idx(&d, "flaky");
    fail_once(&mut d, &mut clock, 0);
    fail_once(&mut d, &mut clock, 1);
    assert_eq!(d.breaker_state(a), BreakerState::Open);
    clock.ms(1000);
    assert!(
        d.breaker_allows(clock.now(), a),
        "cool-down over: a probe may go"
    );
    let probe = start(&mut d, &clock, 2);
    assert_eq!(d.breaker_state(a), BreakerState::HalfOpen);
    // One probe only: a second request meanwhile is refused.
    d.handle_request(clock.now(), RequestKey(3), "", &view())
        .expect("ok");
    assert_eq!(
        outcomes(&one_done(drain(&mut d))),
        [AgentOutcome::BreakerOpen]
    );
    d.handle_reply(clock.ms(5), probe, &mut allow());
    assert_eq!(outcomes(&one_done(drain(&mut d))), [AgentOutcome::Allowed]);
    assert_eq!(d.breaker_state(a), BreakerState::Closed);
    start(&mut d, &clock, 4);
}

#[test]
fn half_open_probe_failure_reopens() {
    let mut clock = Clock::new();
    let mut d = one(breaker_agent(2));
    let a = idx(&d, "flaky");
    fail_once(&mut d, &mut clock, 0);
    fail_once(&mut d, &mut clock, 1);
    clock.ms(1000);
    let probe = start(&mut d, &clock, 2);
    d.handle_call_failed(clock.ms(1), probe, CallFailure::Transport);
    drain(&mut d);
    assert_eq!(d.breaker_state(a), BreakerState::Open);
    assert!(!d.breaker_allows(clock.ms(999), a), "a fresh cool-down");
    assert!(d.breaker_allows(clock.ms(1), a));
    assert_eq!(d.stats().breakers_opened, 2);
}

#[test]
fn cancelled_probe_does_not_wedge_the_breaker() {
    let mut clock = Clock::new();
    let mut d = one(breaker_agent(1));
    let a = idx(&d, "flaky");
    fail_once(&mut d, &mut clock, 0);
    clock.ms(1000);
    start(&mut d, &clock, 1);
    assert!(!d.breaker_allows(clock.now(), a));
    d.handle_cancel(clock.ms(1), RequestKey(1));
    assert!(
        d.breaker_allows(clock.now(), a),
        "the probe permit came back"
    );
}

#[test]
fn breaker_trips_on_error_rate() {
    let mut clock = Clock::new();
    let mut spec = breaker_agent(0);
    spec.breaker.error_rate = 0.5;
    spec.breaker.min_calls = 6;
    let mut d = one(spec);
    let a = idx(&d, "flaky");
    // Alternate success and failure: never two failures in a row, 50% of calls fail.
    for k in 0..6 {
        let call = start(&mut d, &clock, k);
        if k % 2 == 0 {
            d.handle_reply(clock.ms(1), call, &mut allow());
        } else {
            d.handle_call_failed(clock.ms(1), call, CallFailure::Garbage);
        }
        drain(&mut d);
        let expect = if k == 5 {
            BreakerState::Open
        } else {
            BreakerState::Closed
        };
        assert_eq!(d.breaker_state(a), expect, "after call {k}");
    }
}

#[test]
fn draining_agent_gets_no_new_calls_but_finishes_in_flight_ones() {
    let mut clock = Clock::new();
    let mut d = one(agent("a", FailMode::Open));
    let a = idx(&d, "a");
    let call = start(&mut d, &clock, 0);
    d.handle_health(clock.ms(1), a, Health::Draining);
    d.handle_request(clock.now(), RequestKey(1), "", &view())
        .expect("ok");
    let acts = drain(&mut d);
    assert!(calls(&acts).is_empty(), "draining: no new calls");
    let o = one_done(acts);
    assert_eq!(outcomes(&o), [AgentOutcome::Unhealthy]);
    assert_eq!(tags(&o), ["fail-open:a:draining"]);
    d.handle_reply(clock.ms(1), call, &mut allow());
    assert_eq!(outcomes(&one_done(drain(&mut d))), [AgentOutcome::Allowed]);
    d.handle_health(clock.ms(1), a, Health::Healthy);
    start(&mut d, &clock, 2);
}

#[test]
fn unhealthy_agent_gets_the_fail_mode_and_waiting_calls_end() {
    let mut clock = Clock::new();
    let mut spec = agent("a", FailMode::Closed);
    spec.max_in_flight = 1;
    let mut d = one(spec);
    let a = idx(&d, "a");
    start(&mut d, &clock, 0);
    d.handle_request(clock.now(), RequestKey(1), "", &view())
        .expect("ok");
    assert!(drain(&mut d).is_empty(), "request 1 waits for a slot");
    d.handle_health(clock.ms(1), a, Health::Unhealthy);
    let o = one_done(drain(&mut d));
    assert_eq!(outcomes(&o), [AgentOutcome::Unhealthy]);
    assert!(matches!(
        o.verdict,
        Verdict::Block(Block { status: 503, .. })
    ));
    d.handle_request(clock.now(), RequestKey(2), "", &view())
        .expect("ok");
    let o = one_done(drain(&mut d));
    assert_eq!(tags(&o), ["fail-closed:a:unhealthy"]);
    assert_eq!(d.stats().calls_unhealthy, 2);
    d.assert_invariants();
}

#[test]
fn degraded_multiplies_the_timeout() {
    let mut clock = Clock::new();
    let mut d = one(agent("a", FailMode::Open));
    let a = idx(&d, "a");
    let degraded = |m: f32| Health::Degraded {
        timeout_multiplier: m,
        disabled_features: vec!["body".into()],
    };
    d.handle_health(clock.now(), a, degraded(1.5));
    d.handle_request(clock.now(), RequestKey(0), "", &view())
        .expect("ok");
    match drain(&mut d).as_slice() {
        [Action::Call { deadline, .. }] => {
            assert_eq!(*deadline, clock.now() + Duration::from_millis(150));
        }
        other => panic!("expected one call, got {other:?}"),
    }
    d.handle_timeout(clock.ms(100));
    assert!(drain(&mut d).is_empty(), "the plain timeout has not fired");
    d.handle_timeout(clock.ms(50));
    assert_eq!(outcomes(&one_done(drain(&mut d))), [AgentOutcome::Timeout]);
    // Out-of-range multipliers are clamped: below 1 never shortens, NaN means 1.
    for (m, ms) in [(0.1, 100), (f32::NAN, 100), (1000.0, 1000)] {
        d.handle_health(clock.now(), a, degraded(m));
        d.handle_request(clock.now(), RequestKey(1), "", &view())
            .expect("ok");
        match drain(&mut d).as_slice() {
            [Action::Call { deadline, .. }] => {
                assert_eq!(
                    *deadline,
                    clock.now() + Duration::from_millis(ms),
                    "multiplier {m}"
                );
            }
            other => panic!("expected one call, got {other:?}"),
        }
        d.handle_cancel(clock.now(), RequestKey(1));
        drain(&mut d);
    }
}

#[test]
fn pause_holds_calls_and_resume_releases_them_in_order() {
    let mut clock = Clock::new();
    let mut d = one(agent("a", FailMode::Open));
    let a = idx(&d, "a");
    d.handle_flow(clock.now(), a, true);
    assert!(d.is_paused(a));
    for k in 0..3 {
        d.handle_request(clock.ms(1), RequestKey(k), "", &view())
            .expect("ok");
    }
    assert!(drain(&mut d).is_empty(), "paused: no calls");
    assert_eq!(d.calls_waiting(a), 3);
    assert_eq!(
        d.poll_timeout(),
        Some(clock.now() + Duration::from_millis(48))
    );
    d.handle_flow(clock.ms(1), a, false);
    let c = calls(&drain(&mut d));
    let order: Vec<_> = c.iter().map(|(_, r, _)| r.0).collect();
    assert_eq!(order, [0, 1, 2], "FIFO");
    d.assert_invariants();
}

#[test]
fn paused_too_long_gets_the_fail_mode() {
    let mut clock = Clock::new();
    let mut d = one(agent("a", FailMode::Open));
    let a = idx(&d, "a");
    d.handle_flow(clock.now(), a, true);
    d.handle_request(clock.now(), RequestKey(0), "", &view())
        .expect("ok");
    d.handle_timeout(clock.ms(49));
    assert!(drain(&mut d).is_empty());
    d.handle_timeout(clock.ms(1));
    let acts = drain(&mut d);
    assert!(
        cancels(&acts).is_empty(),
        "a waiting call was never sent: nothing to cancel"
    );
    let o = one_done(acts);
    assert_eq!(outcomes(&o), [AgentOutcome::Saturated]);
    assert_eq!(tags(&o), ["fail-open:a:paused"]);
    assert_eq!(o.timings[0].elapsed_us, 50_000);
    assert_eq!(d.stats().calls_saturated, 1);
}

#[test]
fn max_in_flight_queues_then_saturates() {
    let mut clock = Clock::new();
    let mut spec = agent("a", FailMode::Open);
    spec.max_in_flight = 1;
    spec.queue_max = 1;
    spec.queue_timeout = Duration::from_millis(20);
    let mut d = one(spec);
    let a = idx(&d, "a");
    let first = start(&mut d, &clock, 0);
    d.handle_request(clock.now(), RequestKey(1), "", &view())
        .expect("ok");
    assert!(drain(&mut d).is_empty(), "request 1 waits");
    d.handle_request(clock.now(), RequestKey(2), "", &view())
        .expect("ok");
    let o = one_done(drain(&mut d));
    assert_eq!(
        outcomes(&o),
        [AgentOutcome::Saturated],
        "queue full: refused at once"
    );
    assert_eq!(tags(&o), ["fail-open:a:saturated"]);
    assert_eq!(d.calls_in_flight(a), 1);
    // The slot frees: request 1's call goes out.
    d.handle_reply(clock.ms(5), first, &mut allow());
    let acts = drain(&mut d);
    let c = calls(&acts);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].1, RequestKey(1));
    assert_eq!(dones(acts).len(), 1, "request 0 done");
    // Request 3 waits behind request 1 and times out in the queue.
    d.handle_request(clock.now(), RequestKey(3), "", &view())
        .expect("ok");
    d.handle_timeout(clock.ms(20));
    let o = one_done(drain(&mut d));
    assert_eq!(outcomes(&o), [AgentOutcome::Saturated]);
    assert_eq!(o.timings[0].elapsed_us, 20_000);
    d.handle_reply(clock.ms(1), c[0].0, &mut allow());
    assert_eq!(outcomes(&one_done(drain(&mut d))), [AgentOutcome::Allowed]);
    d.assert_invariants();
    assert_eq!(d.stats().requests_in_flight, 0);
}

#[test]
fn queue_of_zero_refuses_at_once() {
    let clock = Clock::new();
    let mut spec = agent("a", FailMode::Closed);
    spec.max_in_flight = 1;
    spec.queue_max = 0;
    let mut d = one(spec);
    start(&mut d, &clock, 0);
    d.handle_request(clock.now(), RequestKey(1), "", &view())
        .expect("ok");
    let o = one_done(drain(&mut d));
    assert_eq!(outcomes(&o), [AgentOutcome::Saturated]);
    assert!(matches!(o.verdict, Verdict::Block(_)));
}

#[test]
fn fail_closed_refusal_in_a_group_sends_no_call_of_that_group() {
    let clock = Clock::new();
    let mut d = Dispatch::new(
        vec![agent("a", FailMode::Open), agent("b", FailMode::Closed)],
        vec![RouteSpec::new("", &[&["a", "b"]])],
    )
    .expect("config");
    d.handle_health(clock.now(), idx(&d, "b"), Health::Unhealthy);
    d.handle_request(clock.now(), RequestKey(0), "", &view())
        .expect("ok");
    let acts = drain(&mut d);
    assert!(calls(&acts).is_empty() && cancels(&acts).is_empty());
    let o = one_done(acts);
    assert_eq!(
        outcomes(&o),
        [AgentOutcome::Cancelled, AgentOutcome::Unhealthy]
    );
}

#[test]
fn set_interest_replaces_the_declared_interest() {
    let clock = Clock::new();
    let mut d = one(agent("a", FailMode::Open));
    let a = idx(&d, "a");
    let interest = Interest {
        methods: vec!["POST".into()],
        ..Interest::default()
    };
    d.set_interest(a, interest).expect("valid");
    d.handle_request(clock.now(), RequestKey(0), "", &view())
        .expect("ok");
    assert_eq!(outcomes(&one_done(drain(&mut d))), [AgentOutcome::Skipped]);
    assert!(d.set_interest(AgentIndex(7), Interest::default()).is_err());
}
