//! [`Dispatch`]: the public face (events in through `handle_*`, work out through `poll_*`). The
//! chain mechanics behind it live in `flow.rs`.

use std::collections::VecDeque;
use std::mem;
use std::time::Instant;

use crate::agent::{Agent, FailReason};
use crate::breaker::BreakerState;
use crate::calls::{CallState, Calls, NONE};
use crate::config::{self, AgentSpec, ConfigError, Interest, RouteSpec, Routes};
use crate::limits::*;
use crate::request::ReqState;
use crate::types::*;

/// Why `handle_request` refused a request. No `Done` follows a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// No route has this id (and "" names the default route only if one is configured).
    #[error("unknown route")]
    UnknownRoute,
    /// The key is not below [`REQUESTS_IN_FLIGHT_MAX`].
    #[error("request key {key} out of range (below {max})")]
    KeyOutOfRange {
        /// The key.
        key: u32,
        /// The bound.
        max: usize,
    },
    /// The key names a request still being decided.
    #[error("request key {0} is in use")]
    KeyInUse(u32),
}

/// In the key map: the request is decided and its `Done` waits in the queue; the key stays busy
/// until the `Done` is polled (or withdrawn by `handle_cancel`).
pub(crate) const DONE_QUEUED: u32 = NONE - 1;

/// The sans-IO agent dispatch of one shard. See the crate documentation.
pub struct Dispatch {
    pub(crate) agents: Vec<Agent>,
    pub(crate) routes: Routes,
    /// `RequestKey` → index into `reqs`; `NONE` when free, `DONE_QUEUED` while its `Done` waits.
    pub(crate) keys: Vec<u32>,
    pub(crate) reqs: Vec<ReqState>,
    pub(crate) reqs_free: Vec<u32>,
    pub(crate) calls: Calls,
    pub(crate) actions: VecDeque<Queued>,
    /// Outcomes of the `Queued::Done` entries of `actions`, in the same order.
    pub(crate) done: VecDeque<(RequestKey, Outcome)>,
    pub(crate) outcomes: Vec<Outcome>,
    /// Agents whose wait queue may be able to move (a slot freed, resumed, healthy again).
    pub(crate) dirty: [u64; AGENTS_MAX / 64],
    pub(crate) stats: DispatchStats,
}

impl Dispatch {
    /// Validates the configuration and builds the dispatch. Agents start Healthy and not paused;
    /// the shard reports otherwise (e.g. Unhealthy until an agent's handshake is done) through
    /// `handle_health` / `handle_flow`.
    pub fn new(agents: Vec<AgentSpec>, routes: Vec<RouteSpec>) -> Result<Self, ConfigError> {
        let routes = config::compile(&agents, &routes)?;
        Ok(Dispatch {
            agents: agents.into_iter().map(Agent::new).collect(),
            routes,
            keys: Vec::new(),
            reqs: Vec::new(),
            reqs_free: Vec::new(),
            calls: Calls::new(),
            actions: VecDeque::new(),
            done: VecDeque::new(),
            outcomes: Vec::new(),
            dirty: [0; AGENTS_MAX / 64],
            stats: DispatchStats::default(),
        })
    }

    /// Starts deciding a request on `route` ("" = the default route). The agents of the first
    /// group whose interest matches `view` get a `Call` action each (all before any reply can
    /// arrive); agents that do not care are skipped without a call. Exactly one `Done` follows,
    /// unless `handle_cancel` comes first.
    pub fn handle_request<H: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        req: RequestKey,
        route: &str,
        view: &RequestView<'_, H>,
    ) -> Result<(), DispatchError> {
        let k = req.0 as usize;
        if k >= REQUESTS_IN_FLIGHT_MAX {
            self.stats.requests_refused += 1;
            return Err(DispatchError::KeyOutOfRange {
                key: req.0,
                max: REQUESTS_IN_FLIGHT_MAX,
            });
        }
        if self.keys.get(k).is_some_and(|&ri| ri != NONE) {
            self.stats.requests_refused += 1;
            return Err(DispatchError::KeyInUse(req.0));
        }
        let Some(route_idx) = self.routes.lookup(route) else {
            self.stats.requests_refused += 1;
            return Err(DispatchError::UnknownRoute);
        };
        if self.keys.len() <= k {
            // Bounded by REQUESTS_IN_FLIGHT_MAX, checked above.
            self.keys.resize(k + 1, NONE);
        }
        let ri = match self.reqs_free.pop() {
            Some(ri) => ri,
            None => {
                // At most one state per key, and keys are bounded: so is this slab.
                self.reqs.push(ReqState::new(now));
                (self.reqs.len() - 1) as u32
            }
        };
        let r = &self.routes.routes[route_idx];
        let st = &mut self.reqs[ri as usize];
        // route_idx < ROUTES_MAX <= u16::MAX.
        st.reset(req, route_idx as u16, r.positions.len(), now);
        for (e, p) in st.entries.iter_mut().zip(&r.positions) {
            if !self.agents[usize::from(p.agent.0)].interest().matches(view) {
                e.outcome = Some(AgentOutcome::Skipped);
                self.stats.calls_skipped += 1;
            }
        }
        self.keys[k] = ri;
        self.stats.requests_started += 1;
        self.advance(now, ri);
        self.pump_dirty(now);
        Ok(())
    }

    /// An agent answered `call`. The reply's contents are moved out; it is left cleared (lists
    /// keep their capacity) for the shard to refill. Replies to calls that are over (timed out,
    /// cancelled, answered) or unknown are ignored and counted (`replies_stale`). A reply with
    /// `need_more` keeps the call open. An invalid reply (status out of range, too many
    /// mutations or block headers) counts as an error of the agent.
    pub fn handle_reply(&mut self, now: Instant, call: CallId, reply: &mut AgentReply) {
        let Some(ci) = self.live_call(call) else {
            self.stats.replies_stale += 1;
            reply.clear();
            return;
        };
        if reply.need_more {
            self.stats.replies_need_more += 1;
            reply.clear();
            return;
        }
        let (ri, pos) = {
            let c = self.calls.get(ci);
            (c.req, usize::from(c.pos))
        };
        let valid =
            validate(reply).is_ok() && self.reqs[ri as usize].take_mutations(pos, reply).is_ok();
        if !valid {
            self.stats.replies_invalid += 1;
            reply.clear();
            self.end_call(now, ci, Err(FailReason::Error));
            self.pump_dirty(now);
            return;
        }
        let dropped = self.reqs[ri as usize].take_audit(pos, &mut reply.audit);
        self.stats.audit_items_dropped += dropped as u64;
        let verdict = mem::take(&mut reply.verdict);
        reply.clear();
        self.stats.replies += 1;
        self.end_call(now, ci, Ok(verdict));
        self.pump_dirty(now);
    }

    /// The I/O layer could not complete `call` (transport error, garbage, agent gone): the call
    /// ends with outcome `Error`, counts against the agent's breaker, and the fail mode applies.
    /// Unknown or finished calls are ignored and counted (`replies_stale`).
    pub fn handle_call_failed(&mut self, now: Instant, call: CallId, why: CallFailure) {
        let _ = why; // every kind of failure is an `Error` outcome; the kind is for the shard's logs
        let Some(ci) = self.live_call(call) else {
            self.stats.replies_stale += 1;
            return;
        };
        self.stats.calls_failed += 1;
        self.end_call(now, ci, Err(FailReason::Error));
        self.pump_dirty(now);
    }

    /// The connection to `agent` is lost: every call in flight on it ends with outcome `Error`.
    /// Calls waiting for it keep waiting (until their bound) for a reconnect; report the agent
    /// Unhealthy with `handle_health` if it is not coming back soon.
    pub fn handle_agent_lost(&mut self, now: Instant, agent: AgentIndex) {
        let a = usize::from(agent.0);
        assert!(a < self.agents.len(), "no agent {}", agent.0);
        while let Some(ci) = self.agents[a].in_flight.head() {
            self.stats.calls_failed += 1;
            self.end_call(now, ci, Err(FailReason::Error));
        }
        self.pump_dirty(now);
    }

    /// The client went away: every call of the request in flight gets a `Cancel` action (reason
    /// `ClientDisconnect`), waiting calls are dropped, and no `Done` is produced (one already
    /// queued is withdrawn). Unknown keys are ignored.
    pub fn handle_cancel(&mut self, now: Instant, req: RequestKey) {
        let ri = self.keys.get(req.0 as usize).copied().unwrap_or(NONE);
        if ri == DONE_QUEUED {
            self.withdraw_done(req);
            return;
        }
        if ri == NONE {
            return;
        }
        self.cancel_group(now, ri, CancelReason::ClientDisconnect);
        for e in &mut self.reqs[ri as usize].entries {
            e.outcome.get_or_insert(AgentOutcome::Cancelled);
        }
        self.reqs[ri as usize].discard();
        self.free_request(ri, NONE);
        self.stats.requests_cancelled += 1;
        self.pump_dirty(now);
    }

    /// An agent's health report. Degraded multiplies the timeout of calls issued from now on;
    /// Draining and Unhealthy refuse new calls (the fail mode applies, outcome `Unhealthy`) and
    /// end the calls waiting for the agent the same way; calls in flight continue.
    pub fn handle_health(&mut self, now: Instant, agent: AgentIndex, health: Health) {
        let a = usize::from(agent.0);
        assert!(a < self.agents.len(), "no agent {}", agent.0);
        self.agents[a].set_health(health);
        if let Some(reason) = self.agents[a].refusal() {
            while let Some(ci) = self.agents[a].waiting.head() {
                self.stats.calls_unhealthy += 1;
                self.end_call(now, ci, Err(reason));
            }
        } else {
            self.mark_dirty(a);
        }
        self.pump_dirty(now);
    }

    /// Flow control for the whole agent connection: a paused agent gets no new calls (they wait,
    /// up to the agent's `queue_timeout`, then fail with outcome `Saturated`, reason `paused`);
    /// resuming releases the waiting calls in order.
    pub fn handle_flow(&mut self, now: Instant, agent: AgentIndex, paused: bool) {
        let a = usize::from(agent.0);
        assert!(a < self.agents.len(), "no agent {}", agent.0);
        self.agents[a].paused = paused;
        if !paused {
            self.mark_dirty(a);
        }
        self.pump_dirty(now);
    }

    /// Time passed: calls past their deadline time out (a `Cancel` action with reason `Timeout`
    /// tells the agent to stop; the fail mode applies), and waiting calls past the wait bound
    /// fail with outcome `Saturated`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for a in 0..self.agents.len() {
            while let Some(ci) = self.agents[a].waiting.head() {
                if self.calls.get(ci).deadline > now {
                    break;
                }
                let reason = if self.agents[a].paused {
                    FailReason::Paused
                } else {
                    FailReason::Saturated
                };
                self.stats.calls_saturated += 1;
                self.end_call(now, ci, Err(reason));
            }
            while let Some(ci) = self.agents[a].in_flight.head() {
                if self.calls.get(ci).deadline > now {
                    break;
                }
                self.stats.calls_timed_out += 1;
                self.actions.push_back(Queued::Cancel {
                    call: self.calls.id(ci),
                    agent: AgentIndex(a as u16),
                    reason: CancelReason::Timeout,
                });
                self.end_call(now, ci, Err(FailReason::Timeout));
            }
        }
        self.pump_dirty(now);
    }

    /// The next thing for the I/O layer to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        Some(match self.actions.pop_front()? {
            Queued::Call {
                call,
                req,
                agent,
                deadline,
            } => Action::Call {
                call,
                req,
                agent,
                deadline,
            },
            Queued::Cancel {
                call,
                agent,
                reason,
            } => Action::Cancel {
                call,
                agent,
                reason,
            },
            Queued::Done(req) => {
                // Every Done marker has its outcome queued at the same time, in the same order.
                let (key, outcome) = self.done.pop_front().expect("outcome queued with its Done");
                assert_eq!(key, req, "Done markers and outcomes out of step");
                let k = &mut self.keys[req.0 as usize];
                assert_eq!(*k, DONE_QUEUED, "key of a queued Done");
                *k = NONE;
                Action::Done { req, outcome }
            }
        })
    }

    /// When `handle_timeout` should be called next (the earliest call deadline or wait bound).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for a in &self.agents {
            for head in [a.waiting.head(), a.in_flight.head()].into_iter().flatten() {
                let d = self.calls.get(head).deadline;
                earliest = Some(earliest.map_or(d, |e| e.min(d)));
            }
        }
        earliest
    }

    /// Whether `agent`'s breaker lets a call through now: a plain load and compare, no locks, no
    /// atomics (one shard owns the breaker). False for an unknown agent.
    #[inline]
    pub fn breaker_allows(&self, now: Instant, agent: AgentIndex) -> bool {
        match self.agents.get(usize::from(agent.0)) {
            Some(a) => a.breaker.allows(now),
            None => false,
        }
    }

    /// Gives a polled outcome back so that its lists are reused by a later request (this is what
    /// keeps the allow path free of allocation). Optional: an outcome simply dropped is freed.
    pub fn recycle(&mut self, mut outcome: Outcome) {
        if self.outcomes.len() < OUTCOMES_POOLED_MAX {
            outcome.clear();
            self.outcomes.push(outcome);
        }
    }

    /// Replaces an agent's interest (as declared at its handshake).
    pub fn set_interest(
        &mut self,
        agent: AgentIndex,
        interest: Interest,
    ) -> Result<(), ConfigError> {
        let a = self
            .agents
            .get_mut(usize::from(agent.0))
            .ok_or(ConfigError::NoSuchAgent(agent.0))?;
        let mut spec = a.spec.clone();
        spec.interest = interest;
        spec.validate()?;
        a.spec.interest = spec.interest;
        Ok(())
    }

    /// Counters and gauges.
    pub fn stats(&self) -> DispatchStats {
        let mut s = self.stats;
        s.requests_in_flight = s.requests_started - s.requests_done - s.requests_cancelled;
        s.calls_in_flight = self
            .agents
            .iter()
            .map(|a| u64::from(a.in_flight.len()))
            .sum();
        s
    }

    /// Number of agents.
    pub fn agents(&self) -> usize {
        self.agents.len()
    }

    /// An agent's id.
    pub fn agent_id(&self, agent: AgentIndex) -> &str {
        &self.agents[usize::from(agent.0)].id
    }

    /// The agent with this id.
    pub fn agent_index(&self, id: &str) -> Option<AgentIndex> {
        // Position < AGENTS_MAX <= u16::MAX.
        self.agents
            .iter()
            .position(|a| a.id == id)
            .map(|i| AgentIndex(i as u16))
    }

    /// An agent's health as last reported.
    pub fn health(&self, agent: AgentIndex) -> &Health {
        &self.agents[usize::from(agent.0)].health
    }

    /// An agent's breaker state.
    pub fn breaker_state(&self, agent: AgentIndex) -> BreakerState {
        self.agents[usize::from(agent.0)].breaker.state()
    }

    /// Calls in flight on an agent.
    pub fn calls_in_flight(&self, agent: AgentIndex) -> u32 {
        self.agents[usize::from(agent.0)].in_flight.len()
    }

    /// Calls waiting for an agent.
    pub fn calls_waiting(&self, agent: AgentIndex) -> u32 {
        self.agents[usize::from(agent.0)].waiting.len()
    }

    /// Whether an agent is paused by flow control.
    pub fn is_paused(&self, agent: AgentIndex) -> bool {
        self.agents[usize::from(agent.0)].paused
    }

    /// Checks the internal bookkeeping (for tests and fuzzing; costs a walk over every live
    /// request). Panics if an invariant is broken.
    pub fn assert_invariants(&self) {
        let listed: usize = self
            .agents
            .iter()
            .map(|a| (a.waiting.len() + a.in_flight.len()) as usize)
            .sum();
        assert_eq!(
            self.calls.live(),
            listed,
            "every live call is in exactly one list"
        );
        let mut attached = 0;
        let mut live = 0;
        let queued = self.keys.iter().filter(|&&ri| ri == DONE_QUEUED).count();
        assert_eq!(queued, self.done.len(), "keys busy with a queued Done");
        for (k, &ri) in self.keys.iter().enumerate() {
            if ri == NONE || ri == DONE_QUEUED {
                continue;
            }
            live += 1;
            let st = &self.reqs[ri as usize];
            assert!(st.live && st.key.0 as usize == k, "key map out of step");
            assert!(!st.starting, "a group start did not complete");
            let calls = st.entries.iter().filter(|e| e.call != NONE).count();
            assert_eq!(calls, usize::from(st.pending), "pending = calls attached");
            assert!(
                st.pending > 0,
                "a live request between events waits for calls"
            );
            attached += calls;
        }
        assert_eq!(
            attached,
            self.calls.live(),
            "every live call belongs to a live request"
        );
        assert_eq!(
            live + self.reqs_free.len(),
            self.reqs.len(),
            "request slab leak"
        );
        for a in &self.agents {
            assert!(
                a.in_flight.len() <= a.spec.max_in_flight,
                "over max_in_flight"
            );
            assert!(a.waiting.len() <= a.spec.queue_max, "over queue_max");
            // Liveness: nobody waits for an agent that could take the call now.
            if a.waiting.len() > 0 {
                assert!(
                    !a.has_slot(),
                    "agent {} has a free slot and calls waiting",
                    a.id
                );
                assert!(
                    a.refusal().is_none(),
                    "agent {} refuses calls yet some wait",
                    a.id
                );
            }
        }
        assert_eq!(
            self.dirty,
            [0; AGENTS_MAX / 64],
            "wait queues left unpumped"
        );
        let s = self.stats();
        assert_eq!(
            s.requests_in_flight, live as u64,
            "request counters out of step"
        );
    }

    /// The slot of a call the I/O layer knows about (sent, not over).
    fn live_call(&self, call: CallId) -> Option<u32> {
        self.calls
            .find(call)
            .filter(|&ci| self.calls.get(ci).state == CallState::InFlight)
    }

    /// Removes a queued, not yet polled `Done` for `req` (the client went away meanwhile).
    fn withdraw_done(&mut self, req: RequestKey) {
        let Some(i) = self
            .actions
            .iter()
            .position(|a| matches!(a, Queued::Done(r) if *r == req))
        else {
            return;
        };
        self.actions.remove(i);
        self.keys[req.0 as usize] = NONE;
        // The marker was queued, so its outcome is too (they are queued together), and the index
        // `position` found is in range for `remove`.
        let j = self.done.iter().position(|(r, _)| *r == req);
        let (_, outcome) = self
            .done
            .remove(j.expect("outcome of a queued Done"))
            .expect("index from position()");
        self.stats.requests_done -= 1;
        self.stats.requests_cancelled += 1;
        self.recycle(outcome);
    }
}

/// Checks and normalizes a reply's verdict (status 0 → the protocol's default).
fn validate(reply: &mut AgentReply) -> Result<(), ()> {
    match &mut reply.verdict {
        Verdict::Allow => Ok(()),
        Verdict::Block(b) => {
            if b.status == 0 {
                b.status = 403;
            }
            if (100..=599).contains(&b.status) && b.headers.len() <= BLOCK_HEADERS_MAX {
                Ok(())
            } else {
                Err(())
            }
        }
        Verdict::Redirect(r) => {
            if r.status == 0 {
                r.status = 302;
            }
            if matches!(r.status, 301 | 302 | 303 | 307 | 308) {
                Ok(())
            } else {
                Err(())
            }
        }
    }
}
