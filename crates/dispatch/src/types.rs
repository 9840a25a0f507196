//! Plain Rust mirrors of the agent-protocol v2 values the dispatch reads and produces (verdicts,
//! header operations, audit, timings, health, cancel reasons) and its handles. The shard converts
//! capnp readers into these and back; byte strings are [`Bytes`] so that it can hand over slices
//! of its receive buffers without copying.

use std::fmt;
use std::time::Instant;

use bytes::Bytes;

/// An agent, by its position in the `agents` list given to [`crate::Dispatch::new`]. Methods
/// that take one panic on an index the dispatch never gave out (a bug in the caller), except
/// [`crate::Dispatch::breaker_allows`], which answers `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentIndex(pub u16);

/// The shard's handle for a request being decided: the index of the request's slot in the shard's
/// own request slab, below [`crate::limits::REQUESTS_IN_FLIGHT_MAX`]. A key is busy from a
/// successful `handle_request` until its `Done` action is polled or `handle_cancel` is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestKey(pub u32);

/// One agent call. Its `u64` form ([`CallId::to_u64`]) is meant to be the agent protocol's
/// `correlationId`: unique among the calls alive on a shard and never 0. Once a call is over
/// (answered, failed, timed out, cancelled) its id is stale: replies to it are ignored and
/// counted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(u64);

impl CallId {
    pub(crate) fn new(slot: u32, generation: u32) -> Self {
        assert!(
            generation != 0,
            "call generations start at 1 so that an id is never 0"
        );
        CallId((u64::from(generation) << 32) | u64::from(slot))
    }

    pub(crate) fn slot(self) -> u32 {
        self.0 as u32
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The id as the agent protocol's `correlationId` (never 0).
    pub fn to_u64(self) -> u64 {
        self.0
    }

    /// An id read back from a `correlationId`. Any value is accepted: ids that name no live call
    /// are ignored by the `handle_*` methods.
    pub fn from_u64(v: u64) -> Self {
        CallId(v)
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({}#{})", self.slot(), self.generation())
    }
}

/// One HTTP header field, bytes as on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// Field name.
    pub name: Bytes,
    /// Field value.
    pub value: Bytes,
}

/// One header mutation (capnp `HeaderOp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Append a field, keeping existing ones with the same name.
    Add(Header),
    /// Replace every field with this name by this one.
    Set(Header),
    /// Remove every field with this name (case-insensitive).
    Remove(Bytes),
}

/// A refusal (capnp `Block`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Block {
    /// HTTP status; 0 in an agent's reply is read as 403.
    pub status: u16,
    /// Response body, may be empty.
    pub body: Bytes,
    /// Extra response headers (at most [`crate::limits::BLOCK_HEADERS_MAX`]).
    pub headers: Vec<Header>,
}

/// A redirect (capnp `Redirect`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Redirect {
    /// URL for the Location header (UTF-8 text).
    pub location: Bytes,
    /// 301, 302, 303, 307 or 308; 0 in an agent's reply is read as 302.
    pub status: u16,
}

/// What should happen to the request (capnp `Verdict`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Let it through.
    #[default]
    Allow,
    /// Refuse it.
    Block(Block),
    /// Send the client elsewhere.
    Redirect(Redirect),
}

impl Verdict {
    /// Whether this is `Allow`.
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow)
    }
}

/// Why a verdict was reached (capnp `Audit`). Texts are UTF-8 as bytes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Audit {
    /// Free-form tags.
    pub tags: Vec<Bytes>,
    /// Ids of the rules that matched.
    pub rule_ids: Vec<Bytes>,
    /// Machine-readable reason codes.
    pub reason_codes: Vec<Bytes>,
    /// 0.0 ..= 1.0 when known. Merged as the maximum over agents.
    pub confidence: Option<f32>,
}

impl Audit {
    /// Empties every list, keeping their capacity.
    pub fn clear(&mut self) {
        self.tags.clear();
        self.rule_ids.clear();
        self.reason_codes.clear();
        self.confidence = None;
    }

    /// Number of items in the three lists.
    pub fn items(&self) -> usize {
        self.tags.len() + self.rule_ids.len() + self.reason_codes.len()
    }
}

/// One agent's answer to one call (capnp `AgentResponse`). The shard keeps one as scratch, fills
/// it from the agent's frame and lends it to [`crate::Dispatch::handle_reply`], which moves the
/// contents out and leaves it cleared, capacities kept, for the next frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentReply {
    /// The agent's verdict.
    pub verdict: Verdict,
    /// Mutations of the request headers.
    pub request_headers: Vec<HeaderOp>,
    /// Mutations of the response headers.
    pub response_headers: Vec<HeaderOp>,
    /// Why.
    pub audit: Audit,
    /// No decision yet (a streaming agent wants more body): the call stays open and the dispatch
    /// keeps waiting for the final reply on the same call id; the rest of this reply is dropped.
    pub need_more: bool,
}

impl AgentReply {
    /// Empties the reply, keeping the capacity of its lists.
    pub fn clear(&mut self) {
        self.verdict = Verdict::Allow;
        self.request_headers.clear();
        self.response_headers.clear();
        self.audit.clear();
        self.need_more = false;
    }
}

/// How one agent call ended (capnp `AgentOutcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentOutcome {
    /// Answered allow.
    Allowed,
    /// Answered block.
    Blocked,
    /// Answered redirect.
    Redirected,
    /// The agent's interest did not match: no call made.
    Skipped,
    /// No answer within the timeout.
    Timeout,
    /// Transport or protocol error (including a garbage reply or a lost connection).
    Error,
    /// Circuit breaker open: no call made.
    BreakerOpen,
    /// The agent reported Unhealthy or Draining: no call made.
    Unhealthy,
    /// Max in flight reached, or agent paused by flow control, past the wait bound.
    Saturated,
    /// Cancelled (or never reached) because another agent's verdict decided the request first.
    Cancelled,
}

impl AgentOutcome {
    /// Whether the outcome is a failure, to which the agent's fail mode was applied.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            AgentOutcome::Timeout
                | AgentOutcome::Error
                | AgentOutcome::BreakerOpen
                | AgentOutcome::Unhealthy
                | AgentOutcome::Saturated
        )
    }
}

/// What a failed call turns into (capnp `FailMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FailMode {
    /// Treat as allow, with the audit tag `fail-open:<agent>:<reason>`.
    Open,
    /// Block with the agent's configured status (default 503), with the audit tag
    /// `fail-closed:<agent>:<reason>`.
    #[default]
    Closed,
}

/// Per-agent cost of one request (capnp `AgentTiming`). The agent's id is
/// [`crate::Dispatch::agent_id`]`(agent)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTiming {
    /// The agent.
    pub agent: AgentIndex,
    /// How its call ended.
    pub outcome: AgentOutcome,
    /// From the start of the agent's group (including time waiting for a slot) to its verdict or
    /// failure; 0 when no call was made.
    pub elapsed_us: u32,
    /// The fail mode in force for this agent on this route (meaningful for failures).
    pub fail_mode: FailMode,
}

/// The decision of one request: everything the shard needs to write a capnp `Decision`.
/// Give it back with [`crate::Dispatch::recycle`] once written, so that its lists are reused.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// Allow, or the block / redirect that won.
    pub verdict: Verdict,
    /// The agent whose block or redirect (or fail-closed failure) decided; `None` for allow.
    pub decided_by: Option<AgentIndex>,
    /// Request header mutations, in chain order (group order, then agent order in the group).
    pub request_headers: Vec<HeaderOp>,
    /// Response header mutations, in chain order.
    pub response_headers: Vec<HeaderOp>,
    /// Merged audit: lists in chain order, confidence = maximum.
    pub audit: Audit,
    /// One per agent of the route's chain, in chain order.
    pub timings: Vec<AgentTiming>,
}

impl Outcome {
    /// Empties the outcome, keeping the capacity of its lists.
    pub fn clear(&mut self) {
        self.verdict = Verdict::Allow;
        self.decided_by = None;
        self.request_headers.clear();
        self.response_headers.clear();
        self.audit.clear();
        self.timings.clear();
    }
}

/// Why a call is cancelled (capnp `CancelReason`, the variants the dispatch produces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The client went away (`handle_cancel`).
    ClientDisconnect,
    /// The call's timeout passed; the agent may stop working on it.
    Timeout,
    /// Another agent's block or redirect (or fail-closed failure) decided the request; the
    /// winner's id is [`crate::Dispatch::agent_id`]`(agent)`.
    BlockedByAgent {
        /// The winner.
        agent: AgentIndex,
    },
}

/// Something for the I/O layer to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send the request's current event to `agent`, with correlation id `call`.
    Call {
        /// The call (its correlation id).
        call: CallId,
        /// The request.
        req: RequestKey,
        /// The agent.
        agent: AgentIndex,
        /// When the dispatch will give up on it (for the event's `deadlineMs`).
        deadline: Instant,
    },
    /// Send a `CancelRequest` for `call` to `agent`; no reply is expected (one that still arrives
    /// is ignored).
    Cancel {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentIndex,
        /// Why.
        reason: CancelReason,
    },
    /// The request is decided: answer the client.
    Done {
        /// The request; its key is free again.
        req: RequestKey,
        /// The decision.
        outcome: Outcome,
    },
}

/// An action as queued inside the dispatch: small, so that the queue moves little memory; a
/// `Done`'s outcome waits in a side queue until `poll_action` builds the [`Action`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Queued {
    Call {
        call: CallId,
        req: RequestKey,
        agent: AgentIndex,
        deadline: Instant,
    },
    Cancel {
        call: CallId,
        agent: AgentIndex,
        reason: CancelReason,
    },
    Done(RequestKey),
}

/// An agent's health, as last reported (capnp `HealthStatus.state`).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Health {
    /// Fully operational.
    #[default]
    Healthy,
    /// Operational but slower: call timeouts are multiplied by `timeout_multiplier` (clamped to
    /// 1.0 ..= [`crate::limits::TIMEOUT_MULTIPLIER_MAX`]).
    Degraded {
        /// E.g. 1.5 = allow 50% longer.
        timeout_multiplier: f32,
        /// Features currently unavailable (kept for reporting, not used to route).
        disabled_features: Vec<String>,
    },
    /// Finishing in-flight calls, taking no new ones: new calls get the fail mode (outcome
    /// `Unhealthy`, reason `draining`).
    Draining,
    /// Unavailable: new calls get the fail mode (outcome `Unhealthy`).
    Unhealthy,
}

/// Why a call failed, as seen by the I/O layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// Writing or reading the agent connection failed.
    Transport,
    /// The agent answered something that is not a valid `AgentResponse`.
    Garbage,
    /// The agent's connection is gone (see also `Dispatch::handle_agent_lost`).
    AgentGone,
}

/// The event a request is being decided for (capnp `EventType`), matched against each agent's
/// subscribed events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Request headers (plus the first body chunk).
    RequestHeaders,
    /// A further request body chunk.
    RequestBody,
    /// Response headers (plus the first body chunk).
    ResponseHeaders,
    /// A further response body chunk.
    ResponseBody,
    /// A WebSocket frame.
    WebsocketFrame,
    /// Guardrail content.
    GuardrailInspect,
    /// The request finished.
    RequestComplete,
}

/// What the dispatch may look at to decide which agents care about a request. Borrowed from the
/// shard's receive buffers; `H` is any byte-string type (`&[u8]`, `Bytes`, ...).
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a, H: AsRef<[u8]> = &'a [u8]> {
    /// The event being decided.
    pub event: EventKind,
    /// HTTP method, e.g. "GET".
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// Names of the request's header fields (any case, repeats allowed).
    pub header_names: &'a [H],
    /// Whether a body follows the headers.
    pub has_body: bool,
}

/// Counters of one dispatch since it was created (and two gauges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DispatchStats {
    /// Requests accepted by `handle_request`.
    pub requests_started: u64,
    /// Requests refused by `handle_request` (unknown route, bad or busy key).
    pub requests_refused: u64,
    /// `Done` actions produced.
    pub requests_done: u64,
    /// Requests cancelled by `handle_cancel` before their `Done`.
    pub requests_cancelled: u64,
    /// `Call` actions produced.
    pub calls_issued: u64,
    /// Calls that had to wait in an agent's queue.
    pub calls_queued: u64,
    /// Final replies accepted.
    pub replies: u64,
    /// `need_more` replies (the call stayed open).
    pub replies_need_more: u64,
    /// Replies refused as invalid (bad status, too many mutations or block headers): an error.
    pub replies_invalid: u64,
    /// Replies and failures for calls that are over or unknown, ignored.
    pub replies_stale: u64,
    /// Calls failed by the I/O layer (`handle_call_failed`, `handle_agent_lost`).
    pub calls_failed: u64,
    /// Calls that timed out.
    pub calls_timed_out: u64,
    /// Calls cancelled (block won elsewhere, client gone, or waiting call dropped).
    pub calls_cancelled: u64,
    /// Agents skipped by interest.
    pub calls_skipped: u64,
    /// Calls refused because the breaker was open.
    pub calls_breaker_open: u64,
    /// Calls refused because the agent was Unhealthy or Draining.
    pub calls_unhealthy: u64,
    /// Calls that waited past the bound, or found the wait queue full.
    pub calls_saturated: u64,
    /// Failures turned into allow.
    pub fail_open: u64,
    /// Failures turned into block.
    pub fail_closed: u64,
    /// Times a breaker opened (closed → open, or half-open → open).
    pub breakers_opened: u64,
    /// Audit items dropped beyond [`crate::limits::AUDIT_ITEMS_MAX`].
    pub audit_items_dropped: u64,
    /// Gauge: requests being decided now.
    pub requests_in_flight: u64,
    /// Gauge: calls issued and not yet over.
    pub calls_in_flight: u64,
}
