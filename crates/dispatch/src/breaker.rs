//! One agent's circuit breaker, owned by one shard: no locks and no atomics.
//!
//! The "may I call" check ([`Breaker::allows`]) reads two fields and compares; every state change
//! happens on the `&mut` paths (issuing a call, recording its result), which keep those two fields
//! in a form the check can read directly:
//!
//! | state     | `open_until`        | `permits`          |
//! |-----------|---------------------|--------------------|
//! | closed    | `None`              | `u32::MAX`         |
//! | open      | `Some(cool-down end)` | probes to admit  |
//! | half-open | `None`              | probes left        |
//!
//! Open turns into half-open lazily, when the first call after the cool-down is issued.

use std::time::Instant;

use crate::config::BreakerSpec;
use crate::limits::BREAKER_WINDOW_BUCKETS;

/// Where an agent's breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// No calls until the cool-down ends.
    Open,
    /// A few probe calls decide between closed and open.
    HalfOpen,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    tick: u64,
    calls: u32,
    failures: u32,
}

/// A circuit breaker (see [`BreakerSpec`] for the rules).
#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    // The two fields the hot check reads, first.
    open_until: Option<Instant>,
    permits: u32,
    state: BreakerState,
    spec: BreakerSpec,
    consecutive_failures: u32,
    probe_successes: u32,
    /// Number of the current half-open period (never 0): a probe remembers it, so that a probe of
    /// an older period that ends late does not count for the current one.
    cycle: u32,
    epoch: Option<Instant>,
    bucket_nanos: u128,
    buckets: [Bucket; BREAKER_WINDOW_BUCKETS],
}

impl Breaker {
    pub(crate) fn new(spec: BreakerSpec) -> Self {
        Breaker {
            open_until: None,
            permits: u32::MAX,
            state: BreakerState::Closed,
            spec,
            consecutive_failures: 0,
            probe_successes: 0,
            cycle: 0,
            epoch: None,
            bucket_nanos: (spec.window.as_nanos() / BREAKER_WINDOW_BUCKETS as u128).max(1),
            buckets: [Bucket::default(); BREAKER_WINDOW_BUCKETS],
        }
    }

    /// Whether a call may be made now: a plain load and compare.
    #[inline(always)]
    pub(crate) fn allows(&self, now: Instant) -> bool {
        self.permits != 0
            && match self.open_until {
                None => true,
                Some(until) => now >= until,
            }
    }

    pub(crate) fn state(&self) -> BreakerState {
        self.state
    }

    /// A call is being issued now. `None`: refused. `Some(0)`: an ordinary call. `Some(cycle)`:
    /// a probe of half-open period `cycle`, to be passed back to the `on_*` methods.
    pub(crate) fn acquire(&mut self, now: Instant) -> Option<u32> {
        if !self.allows(now) {
            return None;
        }
        match self.state {
            BreakerState::Closed => Some(0),
            BreakerState::Open => {
                self.state = BreakerState::HalfOpen;
                self.open_until = None;
                self.permits = self.spec.half_open_probes;
                self.probe_successes = 0;
                self.cycle = self.cycle.wrapping_add(1).max(1);
                self.take_permit()
            }
            BreakerState::HalfOpen => self.take_permit(),
        }
    }

    fn take_permit(&mut self) -> Option<u32> {
        assert!(self.permits > 0, "allows() checked permits");
        self.permits -= 1;
        Some(self.cycle)
    }

    fn is_current_probe(&self, probe: u32) -> bool {
        self.state == BreakerState::HalfOpen && probe != 0 && probe == self.cycle
    }

    /// The call answered (any verdict).
    pub(crate) fn on_success(&mut self, now: Instant, probe: u32) {
        match self.state {
            BreakerState::Closed => {
                self.consecutive_failures = 0;
                self.record(now, false);
            }
            BreakerState::HalfOpen if self.is_current_probe(probe) => {
                self.probe_successes += 1;
                if self.probe_successes >= self.spec.half_open_probes {
                    self.close();
                }
            }
            // Results of calls issued before the breaker opened say nothing about now.
            BreakerState::HalfOpen | BreakerState::Open => {}
        }
    }

    /// The call timed out or failed. Returns whether the breaker opened.
    pub(crate) fn on_failure(&mut self, now: Instant, probe: u32) -> bool {
        match self.state {
            BreakerState::Closed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.record(now, true);
                let by_count = self.spec.consecutive_failures != 0
                    && self.consecutive_failures >= self.spec.consecutive_failures;
                if by_count || self.rate_tripped(now) {
                    self.open(now);
                    return true;
                }
                false
            }
            BreakerState::HalfOpen if self.is_current_probe(probe) => {
                self.open(now);
                true
            }
            BreakerState::HalfOpen | BreakerState::Open => false,
        }
    }

    /// The call ended without a result (cancelled, or never sent): a probe gives its permit back.
    pub(crate) fn on_neutral(&mut self, probe: u32) {
        if self.is_current_probe(probe) {
            self.permits += 1;
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open;
        // cool_down <= AGENT_TIMEOUT_MAX (validated): no overflow for any real Instant.
        self.open_until = Some(now + self.spec.cool_down);
        self.permits = self.spec.half_open_probes;
        self.consecutive_failures = 0;
        self.probe_successes = 0;
        self.buckets = [Bucket::default(); BREAKER_WINDOW_BUCKETS];
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.open_until = None;
        self.permits = u32::MAX;
        self.consecutive_failures = 0;
        self.buckets = [Bucket::default(); BREAKER_WINDOW_BUCKETS];
    }

    fn tick(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        (now.saturating_duration_since(epoch).as_nanos() / self.bucket_nanos) as u64
    }

    fn record(&mut self, now: Instant, failed: bool) {
        let tick = self.tick(now);
        let b = &mut self.buckets[(tick % BREAKER_WINDOW_BUCKETS as u64) as usize];
        if b.tick != tick || b.calls == 0 {
            *b = Bucket {
                tick,
                calls: 0,
                failures: 0,
            };
        }
        b.calls = b.calls.saturating_add(1);
        if failed {
            b.failures = b.failures.saturating_add(1);
        }
    }

    fn rate_tripped(&mut self, now: Instant) -> bool {
        if self.spec.error_rate <= 0.0 {
            return false;
        }
        let tick = self.tick(now);
        let (mut calls, mut failures) = (0u64, 0u64);
        for b in &self.buckets {
            if b.calls > 0 && b.tick <= tick && tick - b.tick < BREAKER_WINDOW_BUCKETS as u64 {
                calls += u64::from(b.calls);
                failures += u64::from(b.failures);
            }
        }
        calls >= u64::from(self.spec.min_calls.max(1))
            && failures as f64 >= f64::from(self.spec.error_rate) * calls as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec() -> BreakerSpec {
        BreakerSpec {
            consecutive_failures: 3,
            error_rate: 0.0,
            window: Duration::from_secs(10),
            min_calls: 10,
            cool_down: Duration::from_secs(1),
            half_open_probes: 1,
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let t = Instant::now();
        let mut b = Breaker::new(spec());
        assert!(!b.on_failure(t, 0));
        assert!(!b.on_failure(t, 0));
        b.on_success(t, 0);
        assert!(!b.on_failure(t, 0));
        assert!(!b.on_failure(t, 0));
        assert!(b.allows(t));
        assert!(b.on_failure(t, 0));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allows(t));
        assert!(!b.allows(t + Duration::from_millis(999)));
        assert_eq!(b.acquire(t), None);
    }

    #[test]
    fn half_open_probe_success_closes_failure_reopens() {
        let t = Instant::now();
        let mut b = Breaker::new(spec());
        for _ in 0..3 {
            b.on_failure(t, 0);
        }
        let t1 = t + Duration::from_secs(1);
        assert!(b.allows(t1));
        let probe = b.acquire(t1).expect("probe admitted");
        assert_ne!(probe, 0);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allows(t1), "one probe at a time");
        assert!(b.on_failure(t1, probe));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allows(t1 + Duration::from_millis(500)));
        let t2 = t1 + Duration::from_secs(1);
        let probe2 = b.acquire(t2).expect("second probe");
        assert_ne!(probe2, probe);
        // The old probe ending late counts for nothing.
        b.on_success(t2, probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.on_success(t2, probe2);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allows(t2));
        assert_eq!(b.acquire(t2), Some(0));
    }

    #[test]
    fn cancelled_probe_gives_its_permit_back() {
        let t = Instant::now();
        let mut b = Breaker::new(spec());
        for _ in 0..3 {
            b.on_failure(t, 0);
        }
        let t1 = t + Duration::from_secs(2);
        let p = b.acquire(t1).expect("probe");
        assert!(!b.allows(t1));
        b.on_neutral(p);
        assert!(b.allows(t1));
    }

    #[test]
    fn several_probes_must_all_succeed() {
        let t = Instant::now();
        let mut b = Breaker::new(BreakerSpec {
            half_open_probes: 3,
            ..spec()
        });
        for _ in 0..3 {
            b.on_failure(t, 0);
        }
        let t1 = t + Duration::from_secs(1);
        let probes: Vec<u32> = (0..3).map(|_| b.acquire(t1).expect("probe")).collect();
        assert!(!b.allows(t1));
        b.on_success(t1, probes[0]);
        b.on_success(t1, probes[1]);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.on_success(t1, probes[2]);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn error_rate_trips_only_with_enough_calls_in_the_window() {
        let t = Instant::now();
        let mut b = Breaker::new(BreakerSpec {
            consecutive_failures: 0,
            error_rate: 0.5,
            min_calls: 10,
            ..spec()
        });
        // Alternate: 50% failures, never 2 in a row. Trips on the 10th call.
        for i in 0..9 {
            if i % 2 == 0 {
                assert!(!b.on_failure(t, 0), "call {i}");
            } else {
                b.on_success(t, 0);
            }
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_success(t, 0);
        assert!(b.on_failure(t, 0));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn old_calls_slide_out_of_the_window() {
        let t = Instant::now();
        let rate = BreakerSpec {
            consecutive_failures: 0,
            error_rate: 0.5,
            min_calls: 4,
            ..spec()
        };
        // Six successes, then f f s f: within the window they dilute the failures (3 of 10);
        // eleven seconds later they have slid out (3 of 4 trips).
        for (gap, trips) in [
            (Duration::from_secs(5), false),
            (Duration::from_secs(11), true),
        ] {
            let mut b = Breaker::new(rate);
            for _ in 0..6 {
                b.on_success(t, 0);
            }
            let later = t + gap;
            assert!(!b.on_failure(later, 0));
            assert!(!b.on_failure(later, 0));
            b.on_success(later, 0);
            assert_eq!(b.on_failure(later, 0), trips, "gap {gap:?}");
        }
    }

    #[test]
    fn open_breaker_ignores_late_results() {
        let t = Instant::now();
        let mut b = Breaker::new(spec());
        for _ in 0..3 {
            b.on_failure(t, 0);
        }
        b.on_success(t, 0);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.on_failure(t, 0));
        assert_eq!(b.open_until, Some(t + Duration::from_secs(1)));
    }
}
