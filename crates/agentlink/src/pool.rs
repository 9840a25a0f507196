//! A pool of connections to one agent (per shard): which slots need connecting, when to retry
//! after a failure (exponential backoff with jitter), and which ready connection takes the next
//! call (the least loaded, skipping paused ones).

use std::time::{Duration, Instant};

use crate::limits::{LINKS_PER_POOL_MAX, RECONNECT_BACKOFF_MS_MAX, RECONNECT_BACKOFF_MS_MIN};
use crate::link::Link;

/// One connection slot.
pub struct Slot {
    /// The protocol state, while a connection exists.
    pub link: Option<Link>,
    /// Earliest time to connect again, after a failure.
    retry_at: Option<Instant>,
    /// Failures in a row (reset by a completed handshake).
    failures: u32,
}

/// The connections of one agent on one shard.
pub struct Pool {
    slots: Vec<Slot>,
    rng: u64,
}

impl Pool {
    /// A pool of `size` connections (1 to [`LINKS_PER_POOL_MAX`]); `seed` varies the jitter.
    pub fn new(size: usize, seed: u64) -> Pool {
        assert!(
            (1..=LINKS_PER_POOL_MAX).contains(&size),
            "pool size out of range"
        );
        Pool {
            slots: (0..size)
                .map(|_| Slot {
                    link: None,
                    retry_at: None,
                    failures: 0,
                })
                .collect(),
            rng: seed | 1,
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Always false: a pool has at least one slot.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slot `i`.
    pub fn slot(&mut self, i: usize) -> &mut Slot {
        &mut self.slots[i]
    }

    /// The link of slot `i`, if connected.
    pub fn link(&mut self, i: usize) -> Option<&mut Link> {
        self.slots.get_mut(i).and_then(|s| s.link.as_mut())
    }

    /// The next slot to connect now (no link, backoff over), if any.
    pub fn poll_connect(&mut self, now: Instant) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.link.is_none() && s.retry_at.is_none_or(|t| now >= t))
    }

    /// Installs a new link in slot `i` (the caller started connecting).
    pub fn attach(&mut self, i: usize, link: Link) {
        let slot = &mut self.slots[i];
        assert!(slot.link.is_none(), "slot already connected");
        slot.link = Some(link);
        slot.retry_at = None;
    }

    /// The handshake on slot `i` completed: failures are forgiven.
    pub fn mark_ready(&mut self, i: usize) {
        self.slots[i].failures = 0;
    }

    /// Slot `i`'s connection ended: returns the tags of its open calls (failed) and schedules a
    /// reconnect with backoff.
    pub fn detach(&mut self, now: Instant, i: usize) -> Vec<u64> {
        let jitter = self.next_jitter();
        let slot = &mut self.slots[i];
        let failed = slot.link.take().map(|mut l| l.close()).unwrap_or_default();
        slot.failures = slot.failures.saturating_add(1);
        let base = RECONNECT_BACKOFF_MS_MIN
            .saturating_mul(1u64 << slot.failures.saturating_sub(1).min(16))
            .min(RECONNECT_BACKOFF_MS_MAX);
        // Up to +50% jitter so the shards' pools do not reconnect in lockstep.
        let delay = base + (base / 2) * jitter / 1000;
        slot.retry_at = Some(now + Duration::from_millis(delay));
        failed
    }

    /// The earliest reconnect time, for the caller's timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = self
            .slots
            .iter()
            .filter(|s| s.link.is_none())
            .filter_map(|s| s.retry_at)
            .min();
        let handshake = self
            .slots
            .iter()
            .filter_map(|s| s.link.as_ref().and_then(Link::poll_timeout))
            .min();
        match (retry, handshake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The ready, unpaused slot with room under the agent's declared concurrency and the fewest
    /// calls in flight.
    pub fn pick(&self) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.link.as_ref().map(|l| (i, l)))
            .filter(|(_, l)| l.is_ready() && !l.is_paused() && l.has_room())
            .min_by_key(|(_, l)| l.calls_in_flight())
            .map(|(i, _)| i)
    }

    /// Whether any connection is paused by its agent.
    pub fn any_paused(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.link.as_ref().is_some_and(Link::is_paused))
    }

    /// Whether a call would find room soon: a connection is still connecting or handshaking, or
    /// a ready, unpaused one is full at the agent's declared concurrency (room frees up as its
    /// calls finish).
    pub fn room_coming(&self) -> bool {
        self.slots.iter().any(|s| {
            s.link
                .as_ref()
                .is_some_and(|l| !l.is_ready() || (!l.is_paused() && !l.has_room()))
        })
    }

    /// Whether any connection is ready.
    pub fn any_ready(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.link.as_ref().is_some_and(Link::is_ready))
    }

    fn next_jitter(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % 1000
    }
}
