//! Helpers shared by the integration tests: a fake clock, agent and reply builders, and action
//! sorting.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use turnstile_dispatch::*;

/// A clock the test moves by hand.
pub struct Clock(pub Instant);

impl Clock {
    pub fn new() -> Self {
        Clock(Instant::now())
    }
    pub fn now(&self) -> Instant {
        self.0
    }
    pub fn ms(&mut self, n: u64) -> Instant {
        self.0 += Duration::from_millis(n);
        self.0
    }
}

pub fn agent(id: &str, mode: FailMode) -> AgentSpec {
    let mut a = AgentSpec::new(id);
    a.fail_mode = mode;
    a
}

pub const HEADERS: &[&[u8]] = &[b"Host", b"User-Agent"];

pub fn view() -> RequestView<'static> {
    RequestView {
        event: EventKind::RequestHeaders,
        method: "GET",
        path: "/api/items",
        header_names: HEADERS,
        has_body: false,
    }
}

pub fn allow() -> AgentReply {
    AgentReply::default()
}

pub fn block(status: u16) -> AgentReply {
    AgentReply {
        verdict: Verdict::Block(Block {
            status,
            body: Bytes::from_static(b"no"),
            headers: vec![],
        }),
        ..AgentReply::default()
    }
}

pub fn redirect(location: &'static str, status: u16) -> AgentReply {
    AgentReply {
        verdict: Verdict::Redirect(Redirect {
            location: Bytes::from_static(location.as_bytes()),
            status,
        }),
        ..AgentReply::default()
    }
}

pub fn set(name: &'static str, value: &'static str) -> HeaderOp {
    HeaderOp::Set(Header {
        name: Bytes::from_static(name.as_bytes()),
        value: Bytes::from_static(value.as_bytes()),
    })
}

pub fn text(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// All actions queued now.
pub fn drain(d: &mut Dispatch) -> Vec<Action> {
    std::iter::from_fn(|| d.poll_action()).collect()
}

/// The `Call` actions among `actions`: (call, request, agent).
pub fn calls(actions: &[Action]) -> Vec<(CallId, RequestKey, AgentIndex)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Call {
                call, req, agent, ..
            } => Some((*call, *req, *agent)),
            _ => None,
        })
        .collect()
}

/// The `Cancel` actions: (call, agent, reason).
pub fn cancels(actions: &[Action]) -> Vec<(CallId, AgentIndex, CancelReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Cancel {
                call,
                agent,
                reason,
            } => Some((*call, *agent, *reason)),
            _ => None,
        })
        .collect()
}

/// The `Done` actions: (request, outcome).
pub fn dones(actions: Vec<Action>) -> Vec<(RequestKey, Outcome)> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Done { req, outcome } => Some((req, outcome)),
            _ => None,
        })
        .collect()
}

/// The only `Done` among `actions`.
pub fn one_done(actions: Vec<Action>) -> Outcome {
    let mut d = dones(actions);
    assert_eq!(d.len(), 1, "expected exactly one Done");
    d.pop().expect("one Done").1
}

pub fn outcomes(o: &Outcome) -> Vec<AgentOutcome> {
    o.timings.iter().map(|t| t.outcome).collect()
}

pub fn tags(o: &Outcome) -> Vec<String> {
    o.audit
        .tags
        .iter()
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect()
}

/// Index of the agent with this id (as given to `Dispatch::new`).
pub fn idx(d: &Dispatch, id: &str) -> AgentIndex {
    d.agent_index(id).expect("agent exists")
}
