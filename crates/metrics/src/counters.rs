//! Per-shard counters: one writer (the shard thread), relaxed atomics, no allocation after
//! construction. The admin thread reads them with relaxed loads while rendering; a scrape may see
//! one counter a few increments ahead of another, which Prometheus tolerates.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::limits::DURATION_BUCKETS_LOG2_COUNT;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds one (one relaxed `fetch_add`).
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    /// Adds `n` (one relaxed `fetch_add`).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A point-in-time value that goes up and down (signed, so a stray extra `dec` shows as `-1`
/// rather than as 2^64 - 1).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// A gauge at zero.
    pub const fn new() -> Self {
        Gauge(AtomicI64::new(0))
    }

    /// Sets the value (one relaxed store).
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }

    /// Adds `n` (may be negative).
    #[inline]
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Number of buckets of a [`Histogram`]: the log2 bounds plus `+Inf`.
pub const HISTOGRAM_BUCKETS: usize = DURATION_BUCKETS_LOG2_COUNT + 1;

/// A duration histogram with fixed log2 buckets in microseconds: bucket `i` counts observations
/// `<= 2^i` µs (and above the previous bound), the last bucket everything above `2^20` µs.
/// Buckets are stored non-cumulative, so an observation is two relaxed `fetch_add`s (bucket and
/// sum); the count is the sum of the buckets.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; HISTOGRAM_BUCKETS],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// A consistent-enough copy of a [`Histogram`] (buckets cumulative, as exposed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Cumulative count per bucket; the last entry is `+Inf`, equal to [`Self::count`].
    pub cumulative: [u64; HISTOGRAM_BUCKETS],
    /// Sum of all observations in microseconds.
    pub sum_us: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; HISTOGRAM_BUCKETS],
            sum_us: AtomicU64::new(0),
        }
    }

    /// Upper bound of bucket `i` in microseconds; `None` for the `+Inf` bucket.
    pub const fn bound_us(i: usize) -> Option<u64> {
        if i < DURATION_BUCKETS_LOG2_COUNT {
            Some(1 << i)
        } else {
            None
        }
    }

    /// Index of the bucket that counts `us`.
    #[inline]
    pub const fn bucket_index(us: u64) -> usize {
        if us <= 1 {
            return 0;
        }
        let i = (u64::BITS - (us - 1).leading_zeros()) as usize;
        if i < DURATION_BUCKETS_LOG2_COUNT {
            i
        } else {
            DURATION_BUCKETS_LOG2_COUNT
        }
    }

    /// Records one observation of `us` microseconds.
    #[inline]
    pub fn observe_us(&self, us: u64) {
        self.buckets[Self::bucket_index(us)].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Records one observation (saturating at `u64::MAX` µs).
    #[inline]
    pub fn observe(&self, d: Duration) {
        self.observe_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Reads the buckets (relaxed) into cumulative form.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0u64; HISTOGRAM_BUCKETS];
        let mut running = 0u64;
        for (c, b) in cumulative.iter_mut().zip(&self.buckets) {
            running = running.wrapping_add(b.load(Relaxed));
            *c = running;
        }
        HistogramSnapshot {
            cumulative,
            sum_us: self.sum_us.load(Relaxed),
            count: running,
        }
    }
}

/// Why an agent call failed (the `reason` label of `turnstile_agent_call_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// No reply within the call's timeout.
    Timeout,
    /// The agent answered with an error, or the connection failed.
    Error,
    /// Not sent: the agent's circuit breaker is open.
    BreakerOpen,
    /// Not sent: the agent reported itself unhealthy.
    Unhealthy,
    /// Not sent: the agent's in-flight limit and wait queue were full.
    Saturated,
}

impl FailureReason {
    /// Every reason, in label order.
    pub const ALL: [FailureReason; 5] = [
        FailureReason::Timeout,
        FailureReason::Error,
        FailureReason::BreakerOpen,
        FailureReason::Unhealthy,
        FailureReason::Saturated,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::Error => "error",
            FailureReason::BreakerOpen => "breaker_open",
            FailureReason::Unhealthy => "unhealthy",
            FailureReason::Saturated => "saturated",
        }
    }
}

/// A merged decision (the `verdict` label of `turnstile_decisions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The request goes on.
    Allow,
    /// The request was blocked.
    Block,
    /// The client was redirected.
    Redirect,
}

impl Verdict {
    /// Every verdict, in label order.
    pub const ALL: [Verdict; 3] = [Verdict::Allow, Verdict::Block, Verdict::Redirect];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Block => "block",
            Verdict::Redirect => "redirect",
        }
    }
}

/// The counters of one agent on one shard.
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Calls sent to the agent.
    pub calls: Counter,
    /// Failed or not-sent calls, indexed by [`FailureReason`] (see [`Self::failures`]).
    failures: [Counter; FailureReason::ALL.len()],
    /// Time from sending a call to its reply.
    pub duration: Histogram,
}

impl AgentCounters {
    /// The failure counter for `reason`.
    #[inline]
    pub fn failures(&self, reason: FailureReason) -> &Counter {
        &self.failures[reason as usize]
    }
}

/// The counters of one shard. Created once per shard at start (agents known then), shared with
/// the admin thread through an `Arc`, written only by its shard thread.
#[derive(Debug)]
pub struct ShardCounters {
    /// UDP datagrams received from the network.
    pub datagrams_received: Counter,
    /// UDP datagrams sent (transmits, counting each GSO segment).
    pub datagrams_sent: Counter,
    /// Datagrams handed to another shard (connection owned elsewhere).
    pub datagrams_steered_out: Counter,
    /// Datagrams received from another shard.
    pub datagrams_steered_in: Counter,
    /// Datagrams that could not be steered (peer queue full) and were dropped.
    pub datagrams_steered_dropped: Counter,
    /// QUIC connections accepted.
    pub connections_accepted: Counter,
    /// QUIC connection attempts refused.
    pub connections_refused: Counter,
    /// QUIC connections open now.
    pub connections_open: Gauge,
    /// QUIC Retry packets sent (address validation).
    pub retries_sent: Counter,
    /// Client requests received.
    pub requests_total: Counter,
    /// Client requests rejected before dispatch (limits, bad frames).
    pub requests_rejected: Counter,
    /// Client requests cancelled (stream reset, connection lost).
    pub requests_cancelled: Counter,
    /// Request streams open now.
    pub streams_open: Gauge,
    /// Times the shard's event loop slept in the ring waiting for completions.
    pub ring_sleeps: Counter,
    /// Event loop iterations.
    pub loop_iterations: Counter,
    decisions: [Counter; Verdict::ALL.len()],
    /// One entry per agent known at start, then one slot for out-of-range indices.
    agents: Box<[AgentCounters]>,
}

impl ShardCounters {
    /// Counters for a shard that calls `agents` agents (indices `0..agents`, in the order of
    /// [`crate::Registry::agent_ids`]). Allocates once, here.
    pub fn new(agents: usize) -> Self {
        ShardCounters {
            datagrams_received: Counter::new(),
            datagrams_sent: Counter::new(),
            datagrams_steered_out: Counter::new(),
            datagrams_steered_in: Counter::new(),
            datagrams_steered_dropped: Counter::new(),
            connections_accepted: Counter::new(),
            connections_refused: Counter::new(),
            connections_open: Gauge::new(),
            retries_sent: Counter::new(),
            requests_total: Counter::new(),
            requests_rejected: Counter::new(),
            requests_cancelled: Counter::new(),
            streams_open: Gauge::new(),
            ring_sleeps: Counter::new(),
            loop_iterations: Counter::new(),
            decisions: Default::default(),
            agents: (0..=agents).map(|_| AgentCounters::default()).collect(),
        }
    }

    /// Number of agents these counters were created for.
    pub fn agent_count(&self) -> usize {
        self.agents.len() - 1
    }

    /// The counters of agent `index`.
    ///
    /// An index past the agents known at start is a caller bug: debug builds panic; release
    /// builds count into a spare slot that is never exported, so the shard never branches on it.
    #[inline]
    pub fn agent(&self, index: usize) -> &AgentCounters {
        debug_assert!(
            index < self.agent_count(),
            "agent index {index} out of range"
        );
        let last = self.agents.len() - 1;
        &self.agents[index.min(last)]
    }

    /// Calls sent to agent `index` (`turnstile_agent_calls_total`).
    #[inline]
    pub fn agent_calls(&self, index: usize) -> &Counter {
        &self.agent(index).calls
    }

    /// Failed or not-sent calls to agent `index` for `reason`
    /// (`turnstile_agent_call_failures_total`).
    #[inline]
    pub fn agent_failures(&self, index: usize, reason: FailureReason) -> &Counter {
        self.agent(index).failures(reason)
    }

    /// Call duration histogram of agent `index` (`turnstile_agent_call_duration_seconds`).
    #[inline]
    pub fn agent_call_duration(&self, index: usize) -> &Histogram {
        &self.agent(index).duration
    }

    /// Merged decisions with `verdict` (`turnstile_decisions_total`).
    #[inline]
    pub fn decisions(&self, verdict: Verdict) -> &Counter {
        &self.decisions[verdict as usize]
    }

    /// The exported agents' counters (without the spare slot).
    pub(crate) fn agents(&self) -> &[AgentCounters] {
        &self.agents[..self.agent_count()]
    }
}
