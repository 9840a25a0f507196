//! The dispatch fixture shared by `benches/dispatch.rs` and the `instructions` binary: three
//! fail-open agents in one parallel group, and one request through them with every agent
//! allowing it.

use std::hint::black_box;
use std::time::Instant;

use turnstile_dispatch::{
    Action, AgentReply, AgentSpec, CallId, Dispatch, EventKind, FailMode, RequestKey, RequestView,
    RouteSpec,
};

/// Header names of the request the dispatch looks at (interest predicates).
pub const HEADER_NAMES: &[&[u8]] = &[b"host", b"user-agent", b"accept", b"authorization"];

/// The request phase every plan sees.
pub fn view() -> RequestView<'static> {
    RequestView {
        event: EventKind::RequestHeaders,
        method: "GET",
        path: "/api/items",
        header_names: HEADER_NAMES,
        has_body: false,
    }
}

/// A dispatch with agents `waf`, `auth` and `bot` (fail open) in one parallel group on the
/// default route.
pub fn three_agent_dispatch() -> Dispatch {
    let agents = ["waf", "auth", "bot"]
        .into_iter()
        .map(|id| {
            let mut a = AgentSpec::new(id);
            a.fail_mode = FailMode::Open;
            a
        })
        .collect();
    Dispatch::new(agents, vec![RouteSpec::new("", &[&["waf", "auth", "bot"]])])
        .expect("the fixture's configuration is valid")
}

/// One request through the plan: `handle_request` → 3 `Call` actions → 3 allow replies → `Done`
/// → recycle. `now` does not move (time is an input, not read), so the work is the same on every
/// call.
pub fn one_request(
    d: &mut Dispatch,
    now: Instant,
    reply: &mut AgentReply,
    calls: &mut [CallId; 3],
) {
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

/// Calls kept live in the call slab while a put, get and removal are measured: a shard with
/// some traffic in flight, not an empty slab.
pub const SLAB_LIVE_CALLS: usize = 64;
