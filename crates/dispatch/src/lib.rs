//! The sans-IO agent dispatch of one shard: decides which agents a request visits, in what order,
//! with which policy, and merges their answers into one decision.
//!
//! It owns: routes (a route id maps to an ordered list of agent groups; the agents of a group run
//! in parallel, groups run one after the other), agent interest (a request an agent does not care
//! about never costs a call), per-agent policy (timeout, in-flight limit with a bounded FIFO wait
//! queue, circuit breaker, fail-open / fail-closed with per-route overrides), the agent state
//! inputs (health, flow control, lost connection), and the merge (first block or redirect wins and
//! cancels the calls still in flight; header mutations and audit in chain order whatever order
//! replies arrive in; confidence = max; one timing per agent of the chain).
//!
//! It must not do I/O, read clocks or spawn threads, and knows nothing of capnp: time comes in
//! as `now: Instant`, agent answers as plain Rust values ([`AgentReply`]) the shard builds from
//! capnp readers (byte strings as [`bytes::Bytes`] slices of its receive buffers), and work goes
//! out as [`Action`]s.
//!
//! Data flow, like quinn-proto: `handle_request` → [`Action::Call`] per agent of the first group →
//! the shard sends the event with the call's id as `correlationId` → `handle_reply` /
//! `handle_call_failed` / `handle_timeout` → next group, or [`Action::Cancel`]s and
//! [`Action::Done`] with the merged [`Outcome`] → the shard writes the capnp `Decision` and gives
//! the outcome back with [`Dispatch::recycle`].
//!
//! Everything is bounded ([`limits`]); per-request state, calls and outcomes live in slabs and
//! pools reused across requests, so that after warm-up the allow path allocates nothing
//! (`tests/alloc.rs` proves it with a counting allocator).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent;
#[cfg(feature = "bench")]
pub mod bench;
mod breaker;
mod calls;
mod config;
mod dispatch;
mod flow;
pub mod limits;
mod request;
mod types;

pub use breaker::BreakerState;
pub use config::{AgentSpec, BreakerSpec, ConfigError, Interest, RouteSpec};
pub use dispatch::{Dispatch, DispatchError};
pub use types::{
    Action, AgentIndex, AgentOutcome, AgentReply, AgentTiming, Audit, Block, CallFailure, CallId,
    CancelReason, DispatchStats, EventKind, FailMode, Header, HeaderOp, Health, Outcome, Redirect,
    RequestKey, RequestView, Verdict,
};
