//! The call slab: every agent call alive on the shard (waiting for a slot, or in flight), reused
//! through a free list, each slot stamped with a generation so that a stale [`CallId`] names
//! nothing. Calls are also linked, intrusively, into per-agent lists ordered by deadline (the wait
//! queue and the in-flight list), so that timers cost no allocation and no heap: the earliest
//! deadline of an agent is the head of its list.

use std::time::Instant;

use crate::limits::CALLS_MAX;
use crate::types::CallId;

/// "No slot" in links and indexes.
pub(crate) const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallState {
    Free,
    /// In its agent's wait queue; never sent.
    Waiting,
    /// Sent (a `Call` action was produced); in its agent's in-flight list.
    InFlight,
}

#[derive(Debug, Clone)]
pub(crate) struct Call {
    generation: u32,
    pub(crate) state: CallState,
    /// Index of the request's state.
    pub(crate) req: u32,
    /// Chain position of the call in its route.
    pub(crate) pos: u16,
    /// Agent index.
    pub(crate) agent: u16,
    /// Breaker probe cycle, 0 = not a probe.
    pub(crate) probe: u32,
    /// When the call times out (in flight) or stops waiting (waiting).
    pub(crate) deadline: Instant,
    prev: u32,
    next: u32,
}

/// A doubly linked list of calls, ordered by deadline, earliest first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct List {
    head: u32,
    tail: u32,
    len: u32,
}

impl List {
    pub(crate) const fn new() -> Self {
        List {
            head: NONE,
            tail: NONE,
            len: 0,
        }
    }

    pub(crate) fn head(&self) -> Option<u32> {
        (self.head != NONE).then_some(self.head)
    }

    pub(crate) fn len(&self) -> u32 {
        self.len
    }
}

pub(crate) struct Calls {
    slots: Vec<Call>,
    free: u32,
    live: usize,
}

impl Calls {
    pub(crate) fn new() -> Self {
        Calls {
            slots: Vec::new(),
            free: NONE,
            live: 0,
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// A new call (state `Waiting` until linked otherwise by the caller).
    pub(crate) fn alloc(&mut self, req: u32, pos: u16, agent: u16, now: Instant) -> u32 {
        let fresh = Call {
            generation: 1,
            state: CallState::Waiting,
            req,
            pos,
            agent,
            probe: 0,
            deadline: now,
            prev: NONE,
            next: NONE,
        };
        self.live += 1;
        if self.free != NONE {
            let i = self.free;
            let slot = &mut self.slots[i as usize];
            assert_eq!(slot.state, CallState::Free, "free list holds a live call");
            self.free = slot.next;
            *slot = Call {
                generation: slot.generation,
                ..fresh
            };
            return i;
        }
        // Only the current group of each live request has calls, so this holds unless a request
        // leaked its calls: a broken invariant, not traffic.
        assert!(self.slots.len() < CALLS_MAX, "call slab beyond CALLS_MAX");
        self.slots.push(fresh);
        (self.slots.len() - 1) as u32
    }

    /// Ends a call: its id turns stale.
    pub(crate) fn free(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        assert_ne!(slot.state, CallState::Free, "call freed twice");
        assert!(
            slot.prev == NONE && slot.next == NONE,
            "call freed while linked"
        );
        slot.state = CallState::Free;
        slot.generation = slot.generation.wrapping_add(1).max(1);
        slot.next = self.free;
        self.free = i;
        self.live -= 1;
    }

    pub(crate) fn id(&self, i: u32) -> CallId {
        CallId::new(i, self.slots[i as usize].generation)
    }

    /// The slot of a live call, if `id` names one.
    pub(crate) fn find(&self, id: CallId) -> Option<u32> {
        let slot = self.slots.get(id.slot() as usize)?;
        (slot.generation == id.generation() && slot.state != CallState::Free).then_some(id.slot())
    }

    pub(crate) fn get(&self, i: u32) -> &Call {
        &self.slots[i as usize]
    }

    pub(crate) fn get_mut(&mut self, i: u32) -> &mut Call {
        &mut self.slots[i as usize]
    }

    /// Links call `i` into `list` by its deadline (after every call with a deadline not later).
    /// Deadlines of one agent mostly grow with time, so this usually stops at the tail.
    pub(crate) fn link_sorted(&mut self, list: &mut List, i: u32) {
        let deadline = self.slots[i as usize].deadline;
        let mut after = list.tail;
        while after != NONE && self.slots[after as usize].deadline > deadline {
            after = self.slots[after as usize].prev;
        }
        let next = if after == NONE {
            list.head
        } else {
            self.slots[after as usize].next
        };
        {
            let s = &mut self.slots[i as usize];
            assert!(s.prev == NONE && s.next == NONE, "call linked twice");
            s.prev = after;
            s.next = next;
        }
        if after == NONE {
            list.head = i;
        } else {
            self.slots[after as usize].next = i;
        }
        if next == NONE {
            list.tail = i;
        } else {
            self.slots[next as usize].prev = i;
        }
        list.len += 1;
    }

    /// Whether call `i` is linked into `list` (a call is in at most one list at a time).
    pub(crate) fn is_linked(&self, list: &List, i: u32) -> bool {
        self.slots[i as usize].prev != NONE || list.head == i
    }

    pub(crate) fn unlink(&mut self, list: &mut List, i: u32) {
        let (prev, next) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        if prev == NONE {
            assert_eq!(list.head, i, "unlinking a call from a list it is not in");
            list.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NONE {
            assert_eq!(list.tail, i, "unlinking a call from a list it is not in");
            list.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
        let s = &mut self.slots[i as usize];
        s.prev = NONE;
        s.next = NONE;
        list.len -= 1;
    }

    #[cfg(test)]
    fn order(&self, list: &List) -> Vec<u32> {
        let mut v = Vec::new();
        let mut i = list.head;
        while i != NONE {
            v.push(i);
            i = self.slots[i as usize].next;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_go_stale_and_slots_are_reused() {
        let t = Instant::now();
        let mut c = Calls::new();
        let a = c.alloc(0, 0, 0, t);
        let id = c.id(a);
        assert_ne!(id.to_u64(), 0);
        assert_eq!(c.find(id), Some(a));
        c.free(a);
        assert_eq!(c.find(id), None);
        let b = c.alloc(0, 0, 0, t);
        assert_eq!(a, b, "slot reused");
        assert_ne!(c.id(b), id, "with a new generation");
        assert_eq!(c.find(CallId::from_u64(0)), None);
        assert_eq!(c.find(CallId::from_u64(u64::MAX)), None);
    }

    #[test]
    fn list_keeps_deadline_order() {
        let t = Instant::now();
        let mut c = Calls::new();
        let mut l = List::new();
        let ms = |n| t + Duration::from_millis(n);
        let mut idx = Vec::new();
        for d in [10, 30, 20, 30, 5] {
            let i = c.alloc(0, 0, 0, t);
            c.get_mut(i).deadline = ms(d);
            c.link_sorted(&mut l, i);
            idx.push(i);
        }
        assert_eq!(c.order(&l), vec![idx[4], idx[0], idx[2], idx[1], idx[3]]);
        assert_eq!(l.len(), 5);
        c.unlink(&mut l, idx[2]);
        c.unlink(&mut l, idx[4]);
        c.unlink(&mut l, idx[3]);
        assert_eq!(c.order(&l), vec![idx[0], idx[1]]);
        assert_eq!(l.head(), Some(idx[0]));
        c.unlink(&mut l, idx[0]);
        c.unlink(&mut l, idx[1]);
        assert_eq!(l.head(), None);
        assert_eq!(l.len(), 0);
    }
}
