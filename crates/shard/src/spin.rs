//! How a shard waits: spin (poll without sleeping) for a while, then sleep in the kernel.
//!
//! On machines where waking a sleeping core costs tens of microseconds, a shard that sleeps as
//! soon as it is idle adds that cost to every request that arrives after a pause. Spinning
//! briefly first catches the next packet of a busy client for the price of some CPU.

use std::time::{Duration, Instant};

use crate::limits::SPIN_US_MAX;

/// The waiting policy of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpinPolicy {
    /// Spin this many microseconds, then sleep.
    Fixed(u32),
    /// Spin up to `max_us`: the budget doubles when spinning found work, halves when it did not.
    Adaptive {
        /// Ceiling of the budget.
        max_us: u32,
    },
    /// Never sleep (dedicated cores only).
    BusyPoll,
}

/// The spin state of one shard.
#[derive(Debug)]
pub struct Spinner {
    policy: SpinPolicy,
    budget_us: u32,
    idle_since: Option<Instant>,
}

/// What to do after an iteration without work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Poll again without sleeping.
    Spin,
    /// Sleep in the kernel until a completion, a wake-up or the deadline.
    Sleep,
}

impl Spinner {
    /// A spinner with `policy`.
    pub fn new(policy: SpinPolicy) -> Self {
        let budget_us = match policy {
            SpinPolicy::Fixed(us) => us.min(SPIN_US_MAX),
            SpinPolicy::Adaptive { max_us } => max_us.min(SPIN_US_MAX),
            SpinPolicy::BusyPoll => 0,
        };
        Spinner {
            policy,
            budget_us,
            idle_since: None,
        }
    }

    /// The loop did work: reset the idle clock (and, adaptively, reward spinning).
    pub fn worked(&mut self) {
        if self.idle_since.take().is_some()
            && let SpinPolicy::Adaptive { max_us } = self.policy
        {
            self.budget_us = (self.budget_us.saturating_mul(2).max(1)).min(max_us.min(SPIN_US_MAX));
        }
    }

    /// The loop found nothing to do at `now`.
    pub fn idle(&mut self, now: Instant) -> Idle {
        if self.policy == SpinPolicy::BusyPoll {
            return Idle::Spin;
        }
        let since = *self.idle_since.get_or_insert(now);
        if now.saturating_duration_since(since) < Duration::from_micros(u64::from(self.budget_us)) {
            return Idle::Spin;
        }
        self.idle_since = None;
        if let SpinPolicy::Adaptive { .. } = self.policy {
            self.budget_us /= 2;
        }
        Idle::Sleep
    }

    /// The current spin budget in microseconds.
    pub fn budget_us(&self) -> u32 {
        self.budget_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_spins_then_sleeps() {
        let t0 = Instant::now();
        let mut s = Spinner::new(SpinPolicy::Fixed(50));
        assert_eq!(s.idle(t0), Idle::Spin);
        assert_eq!(s.idle(t0 + Duration::from_micros(49)), Idle::Spin);
        assert_eq!(s.idle(t0 + Duration::from_micros(50)), Idle::Sleep);
        // A fresh idle period starts over.
        assert_eq!(s.idle(t0 + Duration::from_micros(60)), Idle::Spin);
    }

    #[test]
    fn zero_spin_sleeps_at_once() {
        let mut s = Spinner::new(SpinPolicy::Fixed(0));
        assert_eq!(s.idle(Instant::now()), Idle::Sleep);
    }

    #[test]
    fn adaptive_halves_when_idle_doubles_when_busy() {
        let t0 = Instant::now();
        let mut s = Spinner::new(SpinPolicy::Adaptive { max_us: 64 });
        assert_eq!(s.budget_us(), 64);
        s.idle(t0);
        assert_eq!(s.idle(t0 + Duration::from_micros(64)), Idle::Sleep);
        assert_eq!(s.budget_us(), 32);
        s.idle(t0);
        s.worked(); // work arrived while spinning
        assert_eq!(s.budget_us(), 64);
    }

    #[test]
    fn busy_poll_never_sleeps() {
        let mut s = Spinner::new(SpinPolicy::BusyPoll);
        let t0 = Instant::now();
        assert_eq!(s.idle(t0 + Duration::from_secs(10)), Idle::Spin);
    }
}
