//! What the dispatch knows about one agent at run time: its policy, its health and flow-control
//! state as last reported, its breaker, and its two call lists (waiting, in flight).

use std::time::Duration;

use bytes::Bytes;

use crate::breaker::Breaker;
use crate::calls::List;
use crate::config::{AgentSpec, Interest};
use crate::limits::{DISABLED_FEATURES_MAX, TIMEOUT_MULTIPLIER_MAX};
use crate::types::{AgentOutcome, FailMode, Health};

/// Why a call failed, which decides its timing outcome and its audit tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailReason {
    Timeout,
    Error,
    BreakerOpen,
    Unhealthy,
    Draining,
    Saturated,
    Paused,
}

impl FailReason {
    const ALL: [FailReason; 7] = [
        FailReason::Timeout,
        FailReason::Error,
        FailReason::BreakerOpen,
        FailReason::Unhealthy,
        FailReason::Draining,
        FailReason::Saturated,
        FailReason::Paused,
    ];

    fn text(self) -> &'static str {
        match self {
            FailReason::Timeout => "timeout",
            FailReason::Error => "error",
            FailReason::BreakerOpen => "breaker-open",
            FailReason::Unhealthy => "unhealthy",
            FailReason::Draining => "draining",
            FailReason::Saturated => "saturated",
            FailReason::Paused => "paused",
        }
    }

    pub(crate) fn outcome(self) -> AgentOutcome {
        match self {
            FailReason::Timeout => AgentOutcome::Timeout,
            FailReason::Error => AgentOutcome::Error,
            FailReason::BreakerOpen => AgentOutcome::BreakerOpen,
            FailReason::Unhealthy | FailReason::Draining => AgentOutcome::Unhealthy,
            FailReason::Saturated | FailReason::Paused => AgentOutcome::Saturated,
        }
    }

    /// Whether the failure is the agent's doing (counts against its breaker).
    pub(crate) fn is_agent_fault(self) -> bool {
        matches!(self, FailReason::Timeout | FailReason::Error)
    }
}

pub(crate) struct Agent {
    pub(crate) id: String,
    pub(crate) spec: AgentSpec,
    pub(crate) breaker: Breaker,
    pub(crate) health: Health,
    /// `spec.timeout` times the Degraded multiplier.
    pub(crate) timeout: Duration,
    pub(crate) paused: bool,
    pub(crate) in_flight: List,
    pub(crate) waiting: List,
    /// `fail-open:<id>:<reason>` and `fail-closed:<id>:<reason>`, built once.
    fail_tags: [[Bytes; FailReason::ALL.len()]; 2],
}

impl Agent {
    pub(crate) fn new(spec: AgentSpec) -> Self {
        let tag = |mode: &str, r: FailReason| {
            let b = Bytes::from(format!("{mode}:{}:{}", spec.id, r.text()));
            // Cloning a Bytes made from a Vec promotes it to shared storage, which allocates
            // once; do it now rather than on the first failure.
            drop(b.clone());
            b
        };
        let fail_tags = [
            FailReason::ALL.map(|r| tag("fail-open", r)),
            FailReason::ALL.map(|r| tag("fail-closed", r)),
        ];
        Agent {
            id: spec.id.clone(),
            breaker: Breaker::new(spec.breaker),
            health: Health::Healthy,
            timeout: spec.timeout,
            paused: false,
            in_flight: List::new(),
            waiting: List::new(),
            fail_tags,
            spec,
        }
    }

    pub(crate) fn fail_tag(&self, mode: FailMode, reason: FailReason) -> Bytes {
        let m = match mode {
            FailMode::Open => 0,
            FailMode::Closed => 1,
        };
        let r = FailReason::ALL
            .iter()
            .position(|x| *x == reason)
            .unwrap_or_default();
        self.fail_tags[m][r].clone()
    }

    pub(crate) fn interest(&self) -> &Interest {
        &self.spec.interest
    }

    /// Takes a health report (a Degraded multiplier is clamped, its feature list bounded).
    pub(crate) fn set_health(&mut self, mut health: Health) {
        let multiplier = match &mut health {
            Health::Degraded {
                timeout_multiplier,
                disabled_features,
            } => {
                disabled_features.truncate(DISABLED_FEATURES_MAX);
                if timeout_multiplier.is_finite() {
                    timeout_multiplier.clamp(1.0, TIMEOUT_MULTIPLIER_MAX)
                } else {
                    1.0
                }
            }
            _ => 1.0,
        };
        // In whole nanoseconds, rounded (Duration::mul_f32 is off by a few ns for 1.5).
        // timeout <= AGENT_TIMEOUT_MAX and multiplier <= TIMEOUT_MULTIPLIER_MAX: fits u64.
        let nanos = self.spec.timeout.as_nanos() as f64 * f64::from(multiplier);
        self.timeout = Duration::from_nanos(nanos.round() as u64);
        self.health = health;
    }

    /// Why new calls are refused now, by health.
    pub(crate) fn refusal(&self) -> Option<FailReason> {
        match self.health {
            Health::Healthy | Health::Degraded { .. } => None,
            Health::Draining => Some(FailReason::Draining),
            Health::Unhealthy => Some(FailReason::Unhealthy),
        }
    }

    /// Whether one more call may be sent now (not counting health and breaker).
    pub(crate) fn has_slot(&self) -> bool {
        !self.paused && self.in_flight.len() < self.spec.max_in_flight
    }
}
