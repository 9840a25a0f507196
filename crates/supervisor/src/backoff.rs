//! Restart delays: exponential, with jitter that never makes a delay shorter than the previous.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::limits::{RESTART_BACKOFF_MS_MAX, RESTART_BACKOFF_MS_MIN, RESTART_JITTER_PERCENT_MAX};

/// The restart delay of one agent. Each [`Backoff::next_delay`] returns the current backoff
/// less a random share of up to [`RESTART_JITTER_PERCENT_MAX`] percent, then doubles the
/// backoff up to [`RESTART_BACKOFF_MS_MAX`].
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    current_ms: u64,
    rng: u64,
}

impl Backoff {
    /// A backoff at its minimum, its jitter seeded from the clock and `salt`.
    pub(crate) fn new(salt: u64) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = nanos ^ salt.rotate_left(32) ^ u64::from(std::process::id());
        Self {
            current_ms: RESTART_BACKOFF_MS_MIN,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// Back to the minimum (the agent stayed up long enough).
    pub(crate) fn reset(&mut self) {
        self.current_ms = RESTART_BACKOFF_MS_MIN;
    }

    /// The delay before the next restart; the one after will be about twice as long.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current_ms;
        let cut = base * (self.next_random() % (RESTART_JITTER_PERCENT_MAX + 1)) / 100;
        self.current_ms = (base * 2).min(RESTART_BACKOFF_MS_MAX);
        Duration::from_millis(base - cut)
    }

    /// xorshift64: jitter only, nothing secret.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_bounded_jitter_up_to_the_max() {
        let mut b = Backoff::new(1);
        let mut previous = Duration::ZERO;
        let mut base = RESTART_BACKOFF_MS_MIN;
        for _ in 0..12 {
            let d = b.next_delay();
            let lo = base - base * RESTART_JITTER_PERCENT_MAX / 100;
            assert!(
                d >= Duration::from_millis(lo) && d <= Duration::from_millis(base),
                "{d:?}"
            );
            if base < RESTART_BACKOFF_MS_MAX {
                assert!(d > previous, "{d:?} after {previous:?}");
            }
            previous = d;
            base = (base * 2).min(RESTART_BACKOFF_MS_MAX);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(RESTART_BACKOFF_MS_MIN));
    }
}
