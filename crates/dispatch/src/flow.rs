//! How a request moves along its chain: starting a group (refusals first, then calls placed in
//! flight or in a wait queue), ending a call (breaker accounting, verdict or fail mode), finishing
//! a request (cancelling what is left, merging, `Done`), and releasing waiting calls when an agent
//! can take them.
//!
//! Recursion is bounded: ending a call may start the next group, whose placements may end calls
//! at once (breaker, saturation), but those never start a group themselves (`ReqState::starting`);
//! the group starter loops instead.

use std::time::Instant;

use crate::agent::FailReason;
use crate::calls::{CallState, NONE};
use crate::dispatch::{DONE_QUEUED, Dispatch};
use crate::request::elapsed_us;
use crate::types::{AgentIndex, AgentOutcome, Block, CancelReason, FailMode, Queued, Verdict};

impl Dispatch {
    /// Starts groups of request `ri`, from its current one, until a group has calls pending or
    /// the request is finished.
    pub(crate) fn advance(&mut self, now: Instant, ri: u32) {
        let r = ri as usize;
        loop {
            let st = &self.reqs[r];
            let route = &self.routes.routes[usize::from(st.route)];
            let g = usize::from(st.group);
            if g >= route.groups() {
                self.finish(now, ri, Verdict::Allow, None);
                return;
            }
            let range = route.group(g);
            self.reqs[r].group_started = now;

            // Refusals that need no call first: a fail-closed one decides the request before any
            // call of the group is sent (nothing to cancel).
            for pos in range.clone() {
                if self.reqs[r].entries[pos].outcome.is_some() {
                    continue; // skipped by interest
                }
                let a = self.agent_at(ri, pos);
                let agent = &self.agents[a];
                let refusal = agent.refusal();
                let reason = match refusal {
                    Some(reason) => {
                        self.stats.calls_unhealthy += 1;
                        reason
                    }
                    None if !agent.breaker.allows(now) => {
                        self.stats.calls_breaker_open += 1;
                        FailReason::BreakerOpen
                    }
                    None => continue,
                };
                if self.fail(now, ri, pos, reason) {
                    return;
                }
            }

            self.reqs[r].starting = true;
            for pos in range {
                if self.reqs[r].entries[pos].outcome.is_some() {
                    continue;
                }
                self.place(now, ri, pos);
                if !self.reqs[r].live {
                    return; // a fail-closed placement finished it
                }
            }
            let st = &mut self.reqs[r];
            st.starting = false;
            if st.pending > 0 {
                return;
            }
            st.group += 1;
        }
    }

    fn agent_at(&self, ri: u32, pos: usize) -> usize {
        let st = &self.reqs[ri as usize];
        usize::from(
            self.routes.routes[usize::from(st.route)].positions[pos]
                .agent
                .0,
        )
    }

    /// Creates the call of chain position `pos`: in flight if the agent has a free slot and nobody
    /// waits before it, else in the agent's wait queue, else (queue full) a `Saturated` failure.
    fn place(&mut self, now: Instant, ri: u32, pos: usize) {
        let a = self.agent_at(ri, pos);
        let agent = &self.agents[a];
        let direct = agent.has_slot() && agent.waiting.len() == 0;
        if !direct && agent.waiting.len() >= agent.spec.queue_max {
            self.stats.calls_saturated += 1;
            let reason = if agent.paused {
                FailReason::Paused
            } else {
                FailReason::Saturated
            };
            self.fail(now, ri, pos, reason);
            return;
        }
        let queue_deadline = now + agent.spec.queue_timeout;
        // pos < AGENTS_PER_ROUTE_MAX and a < AGENTS_MAX, both below u16::MAX.
        let ci = self.calls.alloc(ri, pos as u16, a as u16, now);
        let st = &mut self.reqs[ri as usize];
        st.entries[pos].call = ci;
        st.pending += 1;
        if direct {
            self.issue(now, ci);
        } else {
            self.calls.get_mut(ci).deadline = queue_deadline;
            self.calls.link_sorted(&mut self.agents[a].waiting, ci);
            self.stats.calls_queued += 1;
        }
    }

    /// Sends a call that is not linked anywhere: breaker permit, deadline, in-flight list, `Call`.
    fn issue(&mut self, now: Instant, ci: u32) {
        let a = usize::from(self.calls.get(ci).agent);
        let agent = &mut self.agents[a];
        let Some(probe) = agent.breaker.acquire(now) else {
            self.stats.calls_breaker_open += 1;
            self.end_call(now, ci, Err(FailReason::BreakerOpen));
            return;
        };
        // timeout <= AGENT_TIMEOUT_MAX * TIMEOUT_MULTIPLIER_MAX: no overflow for a real Instant.
        let deadline = now + agent.timeout;
        let c = self.calls.get_mut(ci);
        c.probe = probe;
        c.state = CallState::InFlight;
        c.deadline = deadline;
        let req = self.reqs[c.req as usize].key;
        self.calls.link_sorted(&mut agent.in_flight, ci);
        self.stats.calls_issued += 1;
        self.actions.push_back(Queued::Call {
            call: self.calls.id(ci),
            req,
            agent: AgentIndex(a as u16),
            deadline,
        });
    }

    /// Ends call `ci` with a verdict or a failure: unlinks and frees it, accounts it to the
    /// breaker, records the outcome, and moves the request on (finish, or next group).
    pub(crate) fn end_call(&mut self, now: Instant, ci: u32, result: Result<Verdict, FailReason>) {
        let c = self.calls.get(ci).clone();
        let a = usize::from(c.agent);
        let agent = &mut self.agents[a];
        match c.state {
            CallState::InFlight => {
                self.calls.unlink(&mut agent.in_flight, ci);
                match &result {
                    Ok(_) => agent.breaker.on_success(now, c.probe),
                    Err(reason) if reason.is_agent_fault() => {
                        if agent.breaker.on_failure(now, c.probe) {
                            self.stats.breakers_opened += 1;
                        }
                    }
                    Err(_) => agent.breaker.on_neutral(c.probe),
                }
                self.mark_dirty(a);
            }
            CallState::Waiting => {
                if self.calls.is_linked(&agent.waiting, ci) {
                    self.calls.unlink(&mut agent.waiting, ci);
                }
                assert!(result.is_err(), "a waiting call cannot have a verdict");
            }
            CallState::Free => panic!("ending a free call"),
        }
        self.calls.free(ci);
        let ri = c.req;
        let pos = usize::from(c.pos);
        let st = &mut self.reqs[ri as usize];
        assert!(st.live, "call of a request that is not live");
        assert_eq!(
            st.entries[pos].call, ci,
            "call not attached to its position"
        );
        st.entries[pos].call = NONE;
        st.entries[pos].elapsed_us = elapsed_us(now, st.group_started);
        st.pending -= 1;
        let finished = match result {
            Ok(Verdict::Allow) => {
                st.entries[pos].outcome = Some(AgentOutcome::Allowed);
                false
            }
            Ok(v) => {
                st.entries[pos].outcome = Some(if matches!(v, Verdict::Block(_)) {
                    AgentOutcome::Blocked
                } else {
                    AgentOutcome::Redirected
                });
                self.finish(now, ri, v, Some(AgentIndex(c.agent)));
                true
            }
            Err(reason) => self.fail(now, ri, pos, reason),
        };
        if !finished {
            let st = &mut self.reqs[ri as usize];
            if st.pending == 0 && !st.starting {
                st.group += 1;
                self.advance(now, ri);
            }
        }
    }

    /// Applies the fail mode of chain position `pos` for `reason`. Returns whether that finished
    /// the request (fail-closed).
    fn fail(&mut self, now: Instant, ri: u32, pos: usize, reason: FailReason) -> bool {
        let st = &mut self.reqs[ri as usize];
        let p = self.routes.routes[usize::from(st.route)].positions[pos];
        let agent = &self.agents[usize::from(p.agent.0)];
        st.add_fail_tag(pos, agent.fail_tag(p.fail_mode, reason));
        st.entries[pos].outcome = Some(reason.outcome());
        st.entries[pos].elapsed_us = elapsed_us(now, st.group_started);
        match p.fail_mode {
            FailMode::Open => {
                self.stats.fail_open += 1;
                false
            }
            FailMode::Closed => {
                self.stats.fail_closed += 1;
                let block = Block {
                    status: agent.spec.fail_closed_status,
                    ..Block::default()
                };
                self.finish(now, ri, Verdict::Block(block), Some(p.agent));
                true
            }
        }
    }

    /// The request is decided: cancels what is left of its group, merges, queues `Done`, frees it.
    fn finish(&mut self, now: Instant, ri: u32, verdict: Verdict, decided_by: Option<AgentIndex>) {
        if let Some(winner) = decided_by {
            self.cancel_group(now, ri, CancelReason::BlockedByAgent { agent: winner });
        }
        let st = &mut self.reqs[ri as usize];
        assert_eq!(st.pending, 0, "finishing with calls pending");
        for e in &mut st.entries {
            // Positions of groups never reached.
            e.outcome.get_or_insert(AgentOutcome::Cancelled);
        }
        let mut outcome = self.outcomes.pop().unwrap_or_default();
        outcome.verdict = verdict;
        outcome.decided_by = decided_by;
        let positions = &self.routes.routes[usize::from(st.route)].positions;
        st.finish_into(&mut outcome, positions);
        let req = st.key;
        self.actions.push_back(Queued::Done(req));
        self.done.push_back((req, outcome));
        self.stats.requests_done += 1;
        self.free_request(ri, DONE_QUEUED);
    }

    /// Ends every call of the request's current group without a result: `Cancel` for those in
    /// flight, silently for those still waiting (never sent).
    pub(crate) fn cancel_group(&mut self, now: Instant, ri: u32, reason: CancelReason) {
        let st = &self.reqs[ri as usize];
        let route = &self.routes.routes[usize::from(st.route)];
        let g = usize::from(st.group);
        if g >= route.groups() {
            return;
        }
        for pos in route.group(g) {
            let ci = self.reqs[ri as usize].entries[pos].call;
            if ci == NONE {
                continue;
            }
            let c = self.calls.get(ci).clone();
            let a = usize::from(c.agent);
            let agent = &mut self.agents[a];
            match c.state {
                CallState::InFlight => {
                    self.actions.push_back(Queued::Cancel {
                        call: self.calls.id(ci),
                        agent: AgentIndex(c.agent),
                        reason,
                    });
                    self.calls.unlink(&mut agent.in_flight, ci);
                    agent.breaker.on_neutral(c.probe);
                    self.mark_dirty(a);
                }
                CallState::Waiting => {
                    if self.calls.is_linked(&agent.waiting, ci) {
                        self.calls.unlink(&mut agent.waiting, ci);
                    }
                }
                CallState::Free => panic!("request holds a free call"),
            }
            self.calls.free(ci);
            self.stats.calls_cancelled += 1;
            let st = &mut self.reqs[ri as usize];
            let e = &mut st.entries[pos];
            e.call = NONE;
            e.outcome = Some(AgentOutcome::Cancelled);
            e.elapsed_us = elapsed_us(now, st.group_started);
            st.pending -= 1;
        }
        assert_eq!(self.reqs[ri as usize].pending, 0, "calls left after cancel");
    }

    /// Returns the request's state to the slab; its key becomes `key_state` (`NONE`: free;
    /// `DONE_QUEUED`: busy until its `Done` is polled).
    pub(crate) fn free_request(&mut self, ri: u32, key_state: u32) {
        let st = &self.reqs[ri as usize];
        assert!(!st.live, "freeing a live request");
        let k = st.key.0 as usize;
        assert_eq!(self.keys[k], ri, "key map out of step");
        self.keys[k] = key_state;
        self.reqs_free.push(ri);
    }

    pub(crate) fn mark_dirty(&mut self, a: usize) {
        self.dirty[a / 64] |= 1 << (a % 64);
    }

    fn take_dirty(&mut self) -> Option<usize> {
        for (w, word) in self.dirty.iter_mut().enumerate() {
            if *word != 0 {
                let bit = word.trailing_zeros() as usize;
                *word &= !(1 << bit);
                return Some(w * 64 + bit);
            }
        }
        None
    }

    /// Releases waiting calls of every agent that may take them now, in FIFO order.
    pub(crate) fn pump_dirty(&mut self, now: Instant) {
        while let Some(a) = self.take_dirty() {
            loop {
                let agent = &mut self.agents[a];
                if agent.refusal().is_some() || !agent.has_slot() {
                    break;
                }
                let Some(ci) = agent.waiting.head() else {
                    break;
                };
                self.calls.unlink(&mut agent.waiting, ci);
                self.issue(now, ci);
            }
        }
    }
}
