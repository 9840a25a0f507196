//! Routes and chains: parallel groups, group order, short-circuit on block, merge order, cancel,
//! interest, refusals, stale replies.

mod common;

use bytes::Bytes;
use common::*;
use turnstile_dispatch::limits::{
    AUDIT_ITEMS_MAX, MUTATIONS_PER_REQUEST_MAX, REQUESTS_IN_FLIGHT_MAX,
};
use turnstile_dispatch::*;

fn three_then_one() -> Dispatch {
    Dispatch::new(
        vec![
            agent("a", FailMode::Closed),
            agent("b", FailMode::Closed),
            agent("c", FailMode::Closed),
            agent("d", FailMode::Closed),
        ],
        vec![RouteSpec::new("", &[&["a", "b", "c"], &["d"]])],
    )
    .expect("config")
}

#[test]
fn all_calls_of_a_parallel_group_are_issued_before_any_reply() {
    let clock = Clock::new();
    let mut d = three_then_one();
    d.handle_request(clock.now(), RequestKey(7), "", &view())
        .expect("accepted");
    let acts = drain(&mut d);
    let c = calls(&acts);
    assert_eq!(acts.len(), 3, "three calls, nothing else: {acts:?}");
    let agents: Vec<_> = c
        .iter()
        .map(|(_, _, a)| d.agent_id(*a).to_string())
        .collect();
    assert_eq!(agents, ["a", "b", "c"]);
    assert!(c.iter().all(|(_, r, _)| *r == RequestKey(7)));
    let mut ids: Vec<u64> = c.iter().map(|(id, ..)| id.to_u64()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct correlation ids");
    assert!(ids.iter().all(|&id| id != 0), "correlation ids are never 0");
    assert_eq!(d.stats().calls_in_flight, 3);
    d.assert_invariants();
}

#[test]
fn groups_run_in_order() {
    let mut clock = Clock::new();
    let mut d = three_then_one();
    d.handle_request(clock.now(), RequestKey(0), "", &view())
        .expect("accepted");
    let c = calls(&drain(&mut d));
    d.handle_reply(clock.ms(1), c[2].0, &mut allow());
    d.handle_reply(clock.ms(1), c[0].0, &mut allow());
    assert!(drain(&mut d).is_empty(), "group 2 waits for all of group 1");
    d.handle_reply(clock.ms(1), c[1].0, &mut allow());
    let next = calls(&drain(&mut d));
    assert_eq!(next.len(), 1);
    assert_eq!(d.agent_id(next[0].2), "d");
    d.handle_reply(clock.ms(2), next[0].0, &mut allow());
    let o = one_done(drain(&mut d));
    assert_eq!(o.verdict, Verdict::Allow);
    assert_eq!(o.decided_by, None);
    assert_eq!(outcomes(&o), [AgentOutcome::Allowed; 4]);
    let order: Vec<_> = o
        .timings
        .iter()
        .map(|t| d.agent_id(t.agent).to_string())
        .collect();
    assert_eq!(order, ["a", "b", "c", "d"], "timings in chain order");
    assert_eq!(
        o.timings[0].elapsed_us, 2000,
        "a answered 2 ms after its group started"
    );
    assert_eq!(o.timings[3].elapsed_us, 2000);
    d.assert_invariants();
    assert_eq!(d.stats().requests_in_flight, 0);
}

#[test]
fn first_block_wins_and_cancels_the_rest() {
    let mut clock = Clock::new();
    let mut d = three_then_one();
    d.handle_request(clock.now(), RequestKey(1), "", &view())
        .expect("accepted");
    let c = calls(&drain(&mut d));
    d.handle_reply(clock.ms(1), c[0].0, &mut allow());
    d.handle_reply(clock.ms(1), c[1].0, &mut block(0));
    let acts = drain(&mut d);
    let b = idx(&d, "b");
    let cancelled = cancels(&acts);
    assert_eq!(
        cancelled,
        vec![(c[2].0, c[2].2, CancelReason::BlockedByAgent { agent: b })]
    );
    assert_eq!(d.agent_id(b), "b", "the reason names the winner");
    assert!(calls(&acts).is_empty(), "group 2 is never called");
    let o = one_done(acts);
    match &o.verdict {
        Verdict::Block(bl) => {
            assert_eq!(bl.status, 403, "status 0 reads as 403");
            assert_eq!(bl.body, Bytes::from_static(b"no"));
        }
        v => panic!("expected a block, got {v:?}"),
    }
    assert_eq!(o.decided_by, Some(b));
    use AgentOutcome::*;
    assert_eq!(outcomes(&o), [Allowed, Blocked, Cancelled, Cancelled]);
    // The cancelled call's late reply is stale.
    d.handle_reply(clock.ms(1), c[2].0, &mut allow());
    assert!(drain(&mut d).is_empty());
    assert_eq!(d.stats().replies_stale, 1);
    d.assert_invariants();
}

#[test]
fn redirect_wins_like_a_block() {
    let mut clock = Clock::new();
    let mut d = three_then_one();
    d.handle_request(clock.now(), RequestKey(1), "", &view())
        .expect("accepted");
    let c = calls(&drain(&mut d));
    d.handle_reply(clock.ms(1), c[2].0, &mut redirect("/login", 0));
    let acts = drain(&mut d);
    assert_eq!(cancels(&acts).len(), 2);
    let o = one_done(acts);
    assert_eq!(
        o.verdict,
        Verdict::Redirect(Redirect {
            location: text("/login"),
            status: 302
        })
    );
    assert_eq!(o.timings[2].outcome, AgentOutcome::Redirected);
}

fn reply_with(agent: &'static str, confidence: f32) -> AgentReply {
    let (t, r) = match agent {
        "a" => ("tag-a", "rule-a"),
        "b" => ("tag-b", "rule-b"),
        _ => ("tag-c", "rule-c"),
    };
    let v = match agent {
        "a" => "1",
        "b" => "2",
        _ => "3",
    };
    AgentReply {
        request_headers: vec![
            set("x-by", v),
            set(if agent == "b" { "x-b" } else { "x-other" }, v),
        ],
        response_headers: vec![HeaderOp::Remove(text(t))],
        audit: Audit {
            tags: vec![text(t)],
            rule_ids: vec![text(r)],
            reason_codes: vec![],
            confidence: Some(confidence),
        },
        ..AgentReply::default()
    }
}

#[test]
fn merge_order_does_not_depend_on_reply_order() {
    let perms: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let mut first: Option<Outcome> = None;
    for perm in perms {
        let mut clock = Clock::new();
        let mut d = Dispatch::new(
            vec![
                agent("a", FailMode::Open),
                agent("b", FailMode::Open),
                agent("c", FailMode::Open),
            ],
            vec![RouteSpec::new("", &[&["a", "b", "c"]])],
        )
        .expect("config");
        d.handle_request(clock.now(), RequestKey(0), "", &view())
            .expect("accepted");
        let c = calls(&drain(&mut d));
        let names = ["a", "b", "c"];
        let conf = [0.2, 0.9, 0.5];
        for &i in &perm {
            d.handle_reply(clock.ms(1), c[i].0, &mut reply_with(names[i], conf[i]));
        }
        let mut o = one_done(drain(&mut d));
        let by: Vec<_> = o
            .request_headers
            .iter()
            .filter_map(|op| match op {
                HeaderOp::Set(h) if h.name == "x-by" => Some(h.value.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(by, [text("1"), text("2"), text("3")], "perm {perm:?}");
        assert_eq!(tags(&o), ["tag-a", "tag-b", "tag-c"]);
        assert_eq!(
            o.audit.rule_ids,
            [text("rule-a"), text("rule-b"), text("rule-c")]
        );
        assert_eq!(o.audit.confidence, Some(0.9));
        assert_eq!(o.response_headers.len(), 3);
        // Timings differ with arrival order; everything else must be identical.
        o.timings.clear();
        match &first {
            None => first = Some(o),
            Some(f) => assert_eq!(&o, f, "perm {perm:?}"),
        }
    }
}

#[test]
fn client_cancel_cancels_calls_in_flight_and_produces_no_done() {
    let mut clock = Clock::new();
    let mut spec_b = agent("b", FailMode::Closed);
    spec_b.max_in_flight = 1;
    let mut d = Dispatch::new(
        vec![agent("a", FailMode::Closed), spec_b],
        vec![RouteSpec::new("", &[&["a", "b"]])],
    )
    .expect("config");
    // Request 0 occupies b's only slot, so request 1's call to b waits.
    d.handle_request(clock.now(), RequestKey(0), "", &view())
        .expect("accepted");
    d.handle_request(clock.now(), RequestKey(1), "", &view())
        .expect("accepted");
    let c = calls(&drain(&mut d));
    assert_eq!(c.len(), 3, "a, b for request 0; a for request 1 (b waits)");
    assert_eq!(d.calls_waiting(idx(&d, "b")), 1);
    d.handle_cancel(clock.ms(1), RequestKey(1));
    let acts = drain(&mut d);
    assert_eq!(
        cancels(&acts),
        vec![(c[2].0, idx(&d, "a"), CancelReason::ClientDisconnect)],
        "only the call in flight needs a Cancel; the waiting one was never sent"
    );
    assert!(dones(acts).is_empty(), "no Done after a cancel");
    assert_eq!(d.calls_waiting(idx(&d, "b")), 0);
    d.handle_reply(clock.ms(1), c[2].0, &mut allow());
    assert_eq!(d.stats().replies_stale, 1);
    // Cancel everything of request 0 as well: two Cancels.
    d.handle_cancel(clock.ms(1), RequestKey(0));
    let acts = drain(&mut d);
    assert_eq!(cancels(&acts).len(), 2);
    assert!(dones(acts).is_empty());
    assert_eq!(d.stats().requests_cancelled, 2);
    assert_eq!(d.stats().requests_in_flight, 0);
    assert_eq!(d.poll_timeout(), None);
    d.assert_invariants();
    // The key is free again.
    d.handle_request(clock.ms(1), RequestKey(1), "", &view())
        .expect("key reusable");
}

#[test]
fn cancel_after_the_decision_withdraws_the_queued_done() {
    let mut clock = Clock::new();
    let mut d = three_then_one();
    d.handle_request(clock.now(), RequestKey(3), "", &view())
        .expect("accepted");
    let c = calls(&drain(&mut d));
    d.handle_reply(clock.ms(1), c[0].0, &mut block(403));
    assert_eq!(
        d.handle_request(clock.now(), RequestKey(3), "", &view()),
        Err(DispatchError::KeyInUse(3)),
        "busy until its Done is polled"
    );
    d.handle_cancel(clock.ms(1), RequestKey(3));
    let acts = drain(&mut d);
    assert_eq!(cancels(&acts).len(), 2, "the block's cancels stay");
    assert!(dones(acts).is_empty(), "the Done is withdrawn");
    let s = d.stats();
    assert_eq!((s.requests_done, s.requests_cancelled), (0, 1));
    d.assert_invariants();
    d.handle_request(clock.now(), RequestKey(3), "", &view())
        .expect("free after the withdrawal");
}

#[test]
fn key_is_free_once_its_done_is_polled() {
    let mut clock = Clock::new();
    let mut d = three_then_one();
    d.handle_request(clock.now(), RequestKey(4), "", &view())
        .expect("accepted");
    let c = calls(&drain(&mut d));
    d.handle_reply(clock.ms(1), c[1].0, &mut block(403));
    d.assert_invariants();
    let acts = drain(&mut d);
    assert_eq!(dones(acts).len(), 1);
    d.handle_cancel(clock.ms(1), RequestKey(4)); // too late: ignored
    assert_eq!(d.stats().requests_cancelled, 0);
    d.handle_request(clock.now(), RequestKey(4), "", &view())
        .expect("free again");
    d.assert_invariants();
}

#[test]
fn interest_skips_agents_without_a_call() {
    let clock = Clock::new();
    let mut api_only = agent("api", FailMode::Closed);
    api_only.interest.path_prefixes = vec!["/api/".into()];
    let mut needs_auth = agent("auth", FailMode::Closed);
    needs_auth.interest.required_headers = vec![text("authorization")];
    let mut posts = agent("posts", FailMode::Closed);
    posts.interest.methods = vec!["POST".into()];
    let mut bodies = agent("bodies", FailMode::Closed);
    bodies.interest.events = vec![EventKind::RequestBody];
    let mut d = Dispatch::new(
        vec![api_only, needs_auth, posts, bodies],
        vec![RouteSpec::new(
            "",
            &[&["api", "auth"], &["posts", "bodies"]],
        )],
    )
    .expect("config");
    // GET /static without Authorization: nobody cares, decided at once.
    let headers: &[&[u8]] = &[b"Host"];
    let v = RequestView {
        event: EventKind::RequestHeaders,
        method: "GET",
        path: "/static/x.css",
        header_names: headers,
        has_body: false,
    };
    d.handle_request(clock.now(), RequestKey(0), "", &v)
        .expect("accepted");
    let acts = drain(&mut d);
    assert!(calls(&acts).is_empty());
    let o = one_done(acts);
    assert_eq!(outcomes(&o), [AgentOutcome::Skipped; 4]);
    assert_eq!(o.verdict, Verdict::Allow);
    assert_eq!(d.stats().calls_skipped, 4);
    // POST /api/x with AUTHORIZATION and a body: everybody is called.
    let headers: Vec<Bytes> = vec![text("Host"), text("AUTHORIZATION")];
    let v = RequestView {
        event: EventKind::RequestHeaders,
        method: "POST",
        path: "/api/x",
        header_names: &headers,
        has_body: true,
    };
    d.handle_request(clock.now(), RequestKey(1), "", &v)
        .expect("accepted");
    assert_eq!(calls(&drain(&mut d)).len(), 2);
}

#[test]
fn refusals_of_handle_request() {
    let clock = Clock::new();
    let mut d = Dispatch::new(
        vec![agent("a", FailMode::Open)],
        vec![RouteSpec::new("api", &[&["a"]])],
    )
    .expect("config");
    assert_eq!(
        d.handle_request(clock.now(), RequestKey(0), "", &view()),
        Err(DispatchError::UnknownRoute),
        "no default route configured"
    );
    assert_eq!(
        d.handle_request(clock.now(), RequestKey(0), "nope", &view()),
        Err(DispatchError::UnknownRoute)
    );
    assert!(matches!(
        d.handle_request(
            clock.now(),
            RequestKey(REQUESTS_IN_FLIGHT_MAX as u32),
            "api",
            &view()
        ),
        Err(DispatchError::KeyOutOfRange { .. })
    ));
    d.handle_request(clock.now(), RequestKey(5), "api", &view())
        .expect("accepted");
    assert_eq!(
        d.handle_request(clock.now(), RequestKey(5), "api", &view()),
        Err(DispatchError::KeyInUse(5))
    );
    assert_eq!(d.stats().requests_refused, 4);
    assert_eq!(
        calls(&drain(&mut d)).len(),
        1,
        "refusals cost no call and no Done"
    );
}

#[test]
fn empty_route_allows_at_once() {
    let clock = Clock::new();
    let mut d = Dispatch::new(vec![], vec![RouteSpec::new("", &[])]).expect("config");
    d.handle_request(clock.now(), RequestKey(0), "", &view())
        .expect("accepted");
    let o = one_done(drain(&mut d));
    assert_eq!(o.verdict, Verdict::Allow);
    assert!(o.timings.is_empty());
}

#[test]
fn need_more_keeps_the_call_open() {
    let mut clock = Clock::new();
    let mut d = Dispatch::new(
        vec![agent("a", FailMode::Closed)],
        vec![RouteSpec::new("", &[&["a"]])],
    )
    .expect("config");
    d.handle_request(clock.now(), RequestKey(0), "", &view())
        .expect("accepted");
    let c = calls(&drain(&mut d));
    let mut more = AgentReply {
        need_more: true,
        request_headers: vec![set("x-partial", "1")],
        ..AgentReply::default()
    };
    d.handle_reply(clock.ms(1), c[0].0, &mut more);
    assert_eq!(more, AgentReply::default(), "the reply is left cleared");
    assert!(drain(&mut d).is_empty());
    assert_eq!(d.stats().replies_need_more, 1);
    let mut fin = AgentReply {
        request_headers: vec![set("x-final", "1")],
        ..AgentReply::default()
    };
    d.handle_reply(clock.ms(1), c[0].0, &mut fin);
    let o = one_done(drain(&mut d));
    assert_eq!(o.request_headers, vec![set("x-final", "1")]);
}

#[test]
fn invalid_replies_are_agent_errors() {
    let mut clock = Clock::new();
    let mut d = Dispatch::new(
        vec![agent("a", FailMode::Open)],
        vec![RouteSpec::new("", &[&["a"]])],
    )
    .expect("config");
    let cases = vec![
        block(999),
        redirect("/x", 200),
        AgentReply {
            request_headers: vec![set("x", "y"); MUTATIONS_PER_REQUEST_MAX + 1],
            ..AgentReply::default()
        },
    ];
    for (i, mut reply) in cases.into_iter().enumerate() {
        d.handle_request(clock.now(), RequestKey(i as u32), "", &view())
            .expect("accepted");
        let c = calls(&drain(&mut d));
        d.handle_reply(clock.ms(1), c[0].0, &mut reply);
        let o = one_done(drain(&mut d));
        assert_eq!(o.verdict, Verdict::Allow, "fail-open");
        assert!(
            o.request_headers.is_empty(),
            "nothing of an invalid reply is applied"
        );
        assert_eq!(outcomes(&o), [AgentOutcome::Error]);
        assert_eq!(tags(&o), ["fail-open:a:error"]);
    }
    assert_eq!(d.stats().replies_invalid, 3);
}

#[test]
fn audit_beyond_the_bound_is_dropped_and_counted() {
    let mut clock = Clock::new();
    let mut d = Dispatch::new(
        vec![agent("a", FailMode::Open)],
        vec![RouteSpec::new("", &[&["a"]])],
    )
    .expect("config");
    d.handle_request(clock.now(), RequestKey(0), "", &view())
        .expect("accepted");
    let c = calls(&drain(&mut d));
    let mut r = AgentReply::default();
    r.audit.tags = vec![text("t"); AUDIT_ITEMS_MAX + 5];
    d.handle_reply(clock.ms(1), c[0].0, &mut r);
    let o = one_done(drain(&mut d));
    assert_eq!(o.audit.tags.len(), AUDIT_ITEMS_MAX);
    assert_eq!(d.stats().audit_items_dropped, 5);
}

#[test]
fn call_failures_and_lost_agents_are_errors() {
    let mut clock = Clock::new();
    let mut d = Dispatch::new(
        vec![agent("a", FailMode::Open), agent("b", FailMode::Open)],
        vec![RouteSpec::new("", &[&["a", "b"]])],
    )
    .expect("config");
    d.handle_request(clock.now(), RequestKey(0), "", &view())
        .expect("accepted");
    d.handle_request(clock.now(), RequestKey(1), "", &view())
        .expect("accepted");
    let c = calls(&drain(&mut d));
    assert_eq!(c.len(), 4);
    d.handle_call_failed(clock.ms(1), c[0].0, CallFailure::Garbage);
    // b's connection drops: both its calls fail.
    d.handle_agent_lost(clock.ms(1), idx(&d, "b"));
    let mut done = dones(drain(&mut d));
    assert_eq!(
        done.len(),
        1,
        "request 0 is decided; request 1 still waits for a"
    );
    let (req, o) = done.pop().expect("one");
    assert_eq!(req, RequestKey(0));
    assert_eq!(outcomes(&o), [AgentOutcome::Error, AgentOutcome::Error]);
    assert_eq!(tags(&o), ["fail-open:a:error", "fail-open:b:error"]);
    d.handle_call_failed(clock.ms(1), c[0].0, CallFailure::Transport);
    assert_eq!(
        d.stats().replies_stale,
        1,
        "a failure for a finished call is stale"
    );
    d.handle_reply(clock.ms(1), c[2].0, &mut allow());
    let o = one_done(drain(&mut d));
    assert_eq!(outcomes(&o), [AgentOutcome::Allowed, AgentOutcome::Error]);
    assert_eq!(d.stats().calls_failed, 3);
    d.assert_invariants();
}

#[test]
fn unknown_call_ids_are_ignored() {
    let clock = Clock::new();
    let mut d = three_then_one();
    d.handle_reply(clock.now(), CallId::from_u64(0), &mut allow());
    d.handle_reply(clock.now(), CallId::from_u64(u64::MAX), &mut allow());
    d.handle_call_failed(clock.now(), CallId::from_u64(42), CallFailure::AgentGone);
    assert_eq!(d.stats().replies_stale, 3);
    assert!(drain(&mut d).is_empty());
}
