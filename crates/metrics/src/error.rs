//! Errors of this crate.

use std::fmt;

/// Why an agent's metrics report was refused (the `reason` label of
/// `turnstile_agent_reports_refused_total`). A refused report changes nothing: the agent's
/// previous report, if any, stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// The capnp message could not be read (bad pointer, invalid UTF-8, limits).
    Decode,
    /// The agent id is empty or longer than [`crate::limits::AGENT_ID_BYTES_MAX`].
    AgentId,
    /// [`crate::limits::REPORTING_AGENTS_MAX`] other agents already have a report.
    TooManyAgents,
    /// More than [`crate::limits::AGENT_SERIES_MAX`] series.
    TooManySeries,
    /// More than [`crate::limits::AGENT_REPORT_BYTES_MAX`] bytes of names and label values.
    TooLarge,
    /// A metric name is not `[a-zA-Z_:][a-zA-Z0-9_:]*` or is too long.
    MetricName,
    /// A metric name uses the `turnstile_` prefix reserved for turnstile's own metrics.
    ReservedName,
    /// A label name is not `[a-zA-Z_][a-zA-Z0-9_]*` or is too long.
    LabelName,
    /// A label name starts with `__` or is `le` on a histogram.
    ReservedLabel,
    /// A label value is longer than [`crate::limits::LABEL_VALUE_BYTES_MAX`].
    LabelValue,
    /// More than [`crate::limits::LABELS_PER_SERIES_MAX`] labels on one series.
    TooManyLabels,
    /// The same label name twice on one series.
    DuplicateLabel,
    /// The same name and labels twice in one report.
    DuplicateSeries,
    /// One name used with two types (including a histogram's `_bucket`/`_sum`/`_count`).
    TypeConflict,
    /// Histogram buckets not increasing, counts not cumulative, or more than
    /// [`crate::limits::HISTOGRAM_BUCKETS_MAX`].
    Histogram,
}

impl RefuseReason {
    /// Every reason, in label order.
    pub const ALL: [RefuseReason; 15] = [
        RefuseReason::Decode,
        RefuseReason::AgentId,
        RefuseReason::TooManyAgents,
        RefuseReason::TooManySeries,
        RefuseReason::TooLarge,
        RefuseReason::MetricName,
        RefuseReason::ReservedName,
        RefuseReason::LabelName,
        RefuseReason::ReservedLabel,
        RefuseReason::LabelValue,
        RefuseReason::TooManyLabels,
        RefuseReason::DuplicateLabel,
        RefuseReason::DuplicateSeries,
        RefuseReason::TypeConflict,
        RefuseReason::Histogram,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefuseReason::Decode => "decode",
            RefuseReason::AgentId => "agent_id",
            RefuseReason::TooManyAgents => "too_many_agents",
            RefuseReason::TooManySeries => "too_many_series",
            RefuseReason::TooLarge => "too_large",
            RefuseReason::MetricName => "metric_name",
            RefuseReason::ReservedName => "reserved_name",
            RefuseReason::LabelName => "label_name",
            RefuseReason::ReservedLabel => "reserved_label",
            RefuseReason::LabelValue => "label_value",
            RefuseReason::TooManyLabels => "too_many_labels",
            RefuseReason::DuplicateLabel => "duplicate_label",
            RefuseReason::DuplicateSeries => "duplicate_series",
            RefuseReason::TypeConflict => "type_conflict",
            RefuseReason::Histogram => "histogram",
        }
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// An agent's metrics report was refused; nothing was stored.
    #[error("metrics report refused ({reason}): {detail}")]
    Refused {
        /// Which check failed.
        reason: RefuseReason,
        /// What failed it (peer text shortened and escaped).
        detail: String,
    },
    /// Binding the admin listener or starting its thread failed.
    #[error("admin endpoint: {0}")]
    Io(#[from] std::io::Error),
}

impl MetricsError {
    /// The refusal reason, if this is a refused report.
    pub fn refuse_reason(&self) -> Option<RefuseReason> {
        match self {
            MetricsError::Refused { reason, .. } => Some(*reason),
            MetricsError::Io(_) => None,
        }
    }
}

/// Longest piece of peer text quoted in an error.
const DETAIL_CHARS_MAX: usize = 64;

/// A refusal, quoting (shortened, escaped) the offending peer text.
pub(crate) fn refused(reason: RefuseReason, what: &str, text: &str) -> MetricsError {
    let mut shown: String = text.chars().take(DETAIL_CHARS_MAX).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    MetricsError::Refused {
        reason,
        detail: format!("{what} {shown:?}"),
    }
}
