//! Per-request state, kept in a slab and reused: lists are cleared, never dropped, so that after
//! warm-up a request costs no allocation. Mutations and audit items are collected as they arrive,
//! tagged with the chain position of the agent that sent them; finishing sorts them by that tag
//! (in place) so that the merged lists come out in chain order whatever order replies came in.

use std::time::Instant;

use bytes::Bytes;

use crate::calls::NONE;
use crate::config::Position;
use crate::limits::{AUDIT_ITEMS_MAX, MUTATIONS_PER_REQUEST_MAX};
use crate::types::{AgentOutcome, AgentReply, AgentTiming, Audit, Outcome, RequestKey};

/// One chain position of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// `None` while not decided (not reached yet, or call pending).
    pub(crate) outcome: Option<AgentOutcome>,
    /// The call slot while one exists, else `NONE`.
    pub(crate) call: u32,
    pub(crate) elapsed_us: u32,
}

#[derive(Debug)]
enum Item {
    RequestOp(crate::types::HeaderOp),
    ResponseOp(crate::types::HeaderOp),
    Tag(Bytes),
    RuleId(Bytes),
    ReasonCode(Bytes),
}

type MakeItem = fn(Bytes) -> Item;

/// An item and its sort key: chain position in the top 8 bits, arrival sequence below (limits.rs
/// asserts both fit).
#[derive(Debug)]
struct Tagged {
    key: u32,
    item: Item,
}

#[derive(Debug)]
pub(crate) struct ReqState {
    pub(crate) key: RequestKey,
    pub(crate) live: bool,
    pub(crate) route: u16,
    /// Current group.
    pub(crate) group: u16,
    /// Calls of the current group not yet over.
    pub(crate) pending: u16,
    /// Set while the current group is being started: call ends then do not advance the chain
    /// (the starter does, once every call of the group is placed).
    pub(crate) starting: bool,
    pub(crate) group_started: Instant,
    pub(crate) entries: Vec<Entry>,
    items: Vec<Tagged>,
    seq: u32,
    mutations: usize,
    audit_items: usize,
    confidence: Option<f32>,
}

impl ReqState {
    pub(crate) fn new(now: Instant) -> Self {
        ReqState {
            key: RequestKey(0),
            live: false,
            route: 0,
            group: 0,
            pending: 0,
            starting: false,
            group_started: now,
            entries: Vec::new(),
            items: Vec::new(),
            seq: 0,
            mutations: 0,
            audit_items: 0,
            confidence: None,
        }
    }

    /// Makes the state ready for a new request with `positions` chain positions.
    pub(crate) fn reset(&mut self, key: RequestKey, route: u16, positions: usize, now: Instant) {
        assert!(!self.live, "resetting a live request");
        assert!(
            self.items.is_empty(),
            "items left over from the previous request"
        );
        self.key = key;
        self.live = true;
        self.route = route;
        self.group = 0;
        self.pending = 0;
        self.starting = false;
        self.group_started = now;
        self.entries.clear();
        self.entries.resize(
            positions,
            Entry {
                outcome: None,
                call: NONE,
                elapsed_us: 0,
            },
        );
        self.seq = 0;
        self.mutations = 0;
        self.audit_items = 0;
        self.confidence = None;
    }

    fn key_for(&mut self, pos: usize) -> u32 {
        let key = ((pos as u32) << 24) | self.seq;
        self.seq += 1;
        key
    }

    /// Moves the reply's header mutations in, if they fit the request's bound; `Err` (nothing
    /// moved) if they do not.
    pub(crate) fn take_mutations(&mut self, pos: usize, reply: &mut AgentReply) -> Result<(), ()> {
        let n = reply.request_headers.len() + reply.response_headers.len();
        if n == 0 {
            return Ok(());
        }
        if self.mutations + n > MUTATIONS_PER_REQUEST_MAX {
            return Err(());
        }
        self.mutations += n;
        for op in reply.request_headers.drain(..) {
            let key = self.key_for(pos);
            self.items.push(Tagged {
                key,
                item: Item::RequestOp(op),
            });
        }
        for op in reply.response_headers.drain(..) {
            let key = self.key_for(pos);
            self.items.push(Tagged {
                key,
                item: Item::ResponseOp(op),
            });
        }
        Ok(())
    }

    /// Moves the reply's audit in; returns how many items were dropped beyond the bound.
    pub(crate) fn take_audit(&mut self, pos: usize, audit: &mut Audit) -> usize {
        if audit.confidence.is_none() && audit.items() == 0 {
            return 0; // the common case: nothing to merge
        }
        if let Some(c) = audit.confidence.filter(|c| c.is_finite()) {
            let c = c.clamp(0.0, 1.0);
            self.confidence = Some(self.confidence.map_or(c, |m| m.max(c)));
        }
        let room = AUDIT_ITEMS_MAX - self.audit_items;
        let total = audit.items();
        let mut kept = 0;
        let lists: [(&mut Vec<Bytes>, MakeItem); 3] = [
            (&mut audit.tags, Item::Tag),
            (&mut audit.rule_ids, Item::RuleId),
            (&mut audit.reason_codes, Item::ReasonCode),
        ];
        for (list, make) in lists {
            for text in list.drain(..) {
                if kept == room {
                    continue;
                }
                kept += 1;
                let key = self.key_for(pos);
                self.items.push(Tagged {
                    key,
                    item: make(text),
                });
            }
        }
        self.audit_items += kept;
        total - kept
    }

    /// Adds a fail-mode tag for `pos`. Not counted against the audit bound: there is at most one
    /// per chain position, and an operator must always see why a request was let through or not.
    pub(crate) fn add_fail_tag(&mut self, pos: usize, tag: Bytes) {
        let key = self.key_for(pos);
        self.items.push(Tagged {
            key,
            item: Item::Tag(tag),
        });
    }

    /// Fills `out` (verdict and decider already set by the caller) with the merged lists and the
    /// timings, and leaves this state empty, not live.
    pub(crate) fn finish_into(&mut self, out: &mut Outcome, positions: &[Position]) {
        assert!(self.live, "finishing a request that is not live");
        assert_eq!(positions.len(), self.entries.len());
        // Keys are unique (sequence numbers), so the unstable, in-place sort is deterministic.
        self.items.sort_unstable_by_key(|t| t.key);
        for t in self.items.drain(..) {
            match t.item {
                Item::RequestOp(op) => out.request_headers.push(op),
                Item::ResponseOp(op) => out.response_headers.push(op),
                Item::Tag(b) => out.audit.tags.push(b),
                Item::RuleId(b) => out.audit.rule_ids.push(b),
                Item::ReasonCode(b) => out.audit.reason_codes.push(b),
            }
        }
        out.audit.confidence = self.confidence;
        for (e, p) in self.entries.iter().zip(positions) {
            assert_eq!(e.call, NONE, "finishing with a call still attached");
            out.timings.push(AgentTiming {
                agent: p.agent,
                // Every position is decided before a request finishes (see Dispatch::finish).
                outcome: e.outcome.unwrap_or(AgentOutcome::Cancelled),
                elapsed_us: e.elapsed_us,
                fail_mode: p.fail_mode,
            });
        }
        self.live = false;
    }

    /// Drops what was collected (the request was cancelled) and leaves the state not live.
    pub(crate) fn discard(&mut self) {
        self.items.clear();
        self.live = false;
    }
}

/// Microseconds from `since` to `now`, saturating.
pub(crate) fn elapsed_us(now: Instant, since: Instant) -> u32 {
    u32::try_from(now.saturating_duration_since(since).as_micros()).unwrap_or(u32::MAX)
}
