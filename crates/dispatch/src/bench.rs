//! Pieces of the dispatch exposed for micro-benchmarks only (`turnstile-benches`, feature
//! `bench`). Not an API: nothing else may depend on them.

use std::time::Instant;

use crate::calls::Calls;
use crate::types::CallId;

/// The slab the dispatch keeps its agent calls in (free list, generation-stamped ids), with just
/// what a benchmark of a put, a get and a removal needs.
pub struct CallSlab {
    calls: Calls,
}

impl CallSlab {
    /// An empty slab.
    pub fn new() -> Self {
        CallSlab {
            calls: Calls::new(),
        }
    }

    /// Puts a new call (request 0, agent 0, deadline `now`) into a free slot; returns its id.
    pub fn put(&mut self, now: Instant) -> CallId {
        let slot = self.calls.alloc(0, 0, 0, now);
        self.calls.id(slot)
    }

    /// Whether `id` names a live call: the lookup every agent reply goes through.
    pub fn get(&self, id: CallId) -> bool {
        self.calls.find(id).is_some()
    }

    /// Ends the call `id` names (its id turns stale); `false` if it names none.
    pub fn remove(&mut self, id: CallId) -> bool {
        match self.calls.find(id) {
            Some(slot) => {
                self.calls.free(slot);
                true
            }
            None => false,
        }
    }

    /// Live calls.
    pub fn len(&self) -> usize {
        self.calls.live()
    }

    /// Whether no call is live.
    pub fn is_empty(&self) -> bool {
        self.calls.live() == 0
    }
}

impl Default for CallSlab {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_remove() {
        let now = Instant::now();
        let mut slab = CallSlab::new();
        let id = slab.put(now);
        assert!(slab.get(id));
        assert_eq!(slab.len(), 1);
        assert!(slab.remove(id));
        assert!(!slab.get(id), "a removed call's id is stale");
        assert!(!slab.remove(id));
        assert!(slab.is_empty());
    }
}
