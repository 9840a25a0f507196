//! Counting-allocator test: after warm-up, requests through a three-agent parallel plan with
//! allow replies must not allocate at all: request state, calls, actions and outcomes come from
//! slabs and pools reused across requests, and the shard's scratch reply keeps its capacity.

mod common;

use bytes::Bytes;
use common::{Clock, set, text, view};
use turnstile_dispatch::*;
use turnstile_uring::counting::{self, CountingAlloc};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc::new();

const REQUESTS: u64 = 10_000;
/// Requests in flight at once (their replies arrive in an order unlike the calls').
const BATCH: usize = 32;

fn dispatch() -> Dispatch {
    let agents = ["waf", "auth", "bot"]
        .into_iter()
        .map(|id| {
            let mut a = AgentSpec::new(id);
            a.fail_mode = FailMode::Open;
            a.max_in_flight = 64;
            a
        })
        .collect();
    Dispatch::new(agents, vec![RouteSpec::new("", &[&["waf", "auth", "bot"]])]).expect("config")
}

/// Runs `n` requests in batches; `fill` fills the scratch reply of each call. Returns the
/// number of `Done` actions seen.
fn run(
    d: &mut Dispatch,
    clock: &mut Clock,
    n: u64,
    reply: &mut AgentReply,
    calls: &mut Vec<CallId>,
    fill: fn(&mut AgentReply),
) -> u64 {
    let mut done = 0;
    let mut sent = 0;
    while sent < n {
        let batch = (n - sent).min(BATCH as u64) as u32;
        for k in 0..batch {
            d.handle_request(clock.now(), RequestKey(k), "", &view())
                .expect("accepted");
        }
        sent += u64::from(batch);
        while let Some(a) = d.poll_action() {
            match a {
                Action::Call { call, .. } => calls.push(call),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(calls.len(), batch as usize * 3);
        let now = clock.ms(1);
        // Replies in reverse order of the calls.
        while let Some(call) = calls.pop() {
            fill(reply);
            d.handle_reply(now, call, reply);
        }
        let _ = d.poll_timeout();
        d.handle_timeout(now);
        while let Some(a) = d.poll_action() {
            match a {
                Action::Done { outcome, .. } => {
                    assert_eq!(outcome.verdict, Verdict::Allow);
                    assert_eq!(outcome.timings.len(), 3);
                    done += 1;
                    d.recycle(outcome);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    done
}

fn plain_allow(_: &mut AgentReply) {}

fn allow_with_mutations(r: &mut AgentReply) {
    r.request_headers.push(set("x-checked", "1"));
    r.response_headers.push(HeaderOp::Remove(text("server")));
    r.audit.tags.push(Bytes::from_static(b"seen"));
    r.audit.confidence = Some(0.25);
}

fn measure(fill: fn(&mut AgentReply)) -> (u64, u64) {
    let mut clock = Clock::new();
    let mut d = dispatch();
    let mut reply = AgentReply::default();
    let mut calls = Vec::with_capacity(BATCH * 3);
    // Warm-up: slabs, pools and queues reach their steady size.
    run(&mut d, &mut clock, 2_000, &mut reply, &mut calls, fill);
    clock.ms(1000);
    counting::reset();
    counting::set_counting(true);
    let done = run(&mut d, &mut clock, REQUESTS, &mut reply, &mut calls, fill);
    counting::set_counting(false);
    let allocations = counting::count();
    assert_eq!(done, REQUESTS);
    d.assert_invariants();
    assert_eq!(d.stats().requests_in_flight, 0);
    (done, allocations)
}

#[test]
fn allow_path_allocates_nothing_after_warm_up() {
    let (done, plain) = measure(plain_allow);
    println!("{done} requests x 3 agents, allow replies: {plain} allocations");
    let (done, merged) = measure(allow_with_mutations);
    println!(
        "{done} requests x 3 agents, allow + 2 mutations + 1 audit tag each: {merged} allocations"
    );
    assert_eq!(plain, 0, "the allow path allocated");
    assert_eq!(merged, 0, "merging mutations and audit allocated");
}
