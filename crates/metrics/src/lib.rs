//! turnstile's metrics: per-shard counters, the latest metrics report of each agent, the
//! Prometheus text exposition of both, and a small admin HTTP endpoint serving it.
//!
//! Only the relaxed atomic adds of [`ShardCounters`] are on the request path: each shard thread
//! owns one `ShardCounters` (shared with the admin thread through an `Arc`) and is its only
//! writer, so an increment is one relaxed `fetch_add` on a field it reaches without a lookup,
//! a lock or an allocation (`metrics.agent_calls(agent_index).inc()`). Everything else runs on
//! the admin thread or on the agent connection's control path:
//!
//! - [`AgentReports`] keeps the latest `MetricsReport` of each agent, copied out of the capnp
//!   reader into owned values behind a `Mutex` (reports come every few seconds, not per request).
//!   The latest report wins, so an agent that reports its process-wide numbers on each of its
//!   connections is exported once. Reports are bounded ([`limits`]) and validated (metric names
//!   `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names `[a-zA-Z_][a-zA-Z0-9_]*`, no duplicate series, one
//!   type per name, sane histogram buckets); a report that fails any check is refused whole, the
//!   previous one stays, and the refusal is counted (`turnstile_agent_reports_refused_total`).
//! - [`Registry::render`] writes the text exposition format 0.0.4.
//! - [`AdminServer`] serves `GET /metrics` and `GET /healthz` from one thread.
//!
//! # Naming
//!
//! turnstile's own metrics are named `turnstile_*` and carry a `shard` label (the shard index);
//! per-agent ones add `agent` (the agent's configured id). Only per-shard series are exported,
//! no pre-summed totals: a total in the same family would make `sum(...)` count everything
//! twice, and `sum without (shard) (...)` gives it in PromQL.
//!
//! Agent-reported series keep the agent's own metric name (so the standard names such as
//! `agent_requests_total` aggregate across agents as they are) and get an `agent_id` label with
//! turnstile's id for the agent, in front of their own labels. If the agent already sent an
//! `agent_id` label with that same value it is dropped; with another value it is kept as
//! `exported_agent_id` (what Prometheus does on a clash). The `turnstile_` prefix is reserved:
//! agents cannot report names that would collide with turnstile's. Agents send no help text, so
//! their families get a generic `# HELP`. If two agents use one name with different types, the
//! agent whose id sorts first keeps it and the other's series are left out of the scrape
//! (counted by `turnstile_agent_series_skipped`).
//!
//! # Why the text format is written by hand
//!
//! The `prometheus-client` crate (0.25) only encodes OpenMetrics text: a `# EOF` trailer, and
//! counter samples forced to `<family>_total` with the `# TYPE` line on the bare family name.
//! That is a different format from the 0.0.4 `text/plain` asked for here, and it would rename
//! agent counters (an agent's `requests_processed_total` family would be exported as
//! `requests_processed_total_total`, or need its suffix stripped). Its `Collector` interface
//! also wants a registry of typed metric objects, while agent series are plain values that change
//! shape with every report. The 0.0.4 format is small and fully specified (HELP/TYPE lines,
//! samples, three label-value escapes, float spelling), so this crate writes it in `expo.rs`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod counters;
mod error;
mod expo;
mod http;
pub mod limits;
mod registry;
mod reports;

pub use admin::{AdminHandle, AdminServer, HealthFn, HealthSnapshot};
pub use counters::{
    AgentCounters, Counter, FailureReason, Gauge, HISTOGRAM_BUCKETS, Histogram, HistogramSnapshot,
    ShardCounters, Verdict,
};
pub use error::{MetricsError, RefuseReason};
pub use expo::{Kind, is_label_name, is_metric_name};
pub use registry::{BuildInfo, Registry};
pub use reports::{
    AGENT_ID_LABEL, AgentReport, AgentReports, EXPORTED_AGENT_ID_LABEL, Labels, RESERVED_PREFIX,
    ReportedCounter, ReportedGauge, ReportedHistogram,
};
