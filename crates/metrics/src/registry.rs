//! [`Registry`]: everything the admin endpoint exports, and [`Registry::render`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::counters::{FailureReason, Histogram, HistogramSnapshot, ShardCounters, Verdict};
use crate::error::RefuseReason;
use crate::expo::{HISTOGRAM_SUFFIXES, Kind, Sample, header};
use crate::reports::{AGENT_ID_LABEL, AgentReport, AgentReports, Labels, clashes};

/// What `turnstile_build_info` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildInfo {
    /// Package version, e.g. `env!("CARGO_PKG_VERSION")`.
    pub version: String,
    /// Source revision, or empty when unknown.
    pub revision: String,
}

/// Everything exported: per-shard counters, agent reports, agent names, build info.
#[derive(Debug)]
pub struct Registry {
    /// One entry per shard, in shard order (the `shard` label is the index).
    pub shards: Vec<Arc<ShardCounters>>,
    /// The latest report of each agent.
    pub agents: Arc<AgentReports>,
    /// Agent names by index, as used by [`ShardCounters::agent`] (the `agent` label).
    pub agent_ids: Vec<String>,
    /// Build information.
    pub build: BuildInfo,
}

impl Registry {
    /// A registry with fresh counters for `shards` shards, each sized for `agent_ids`.
    pub fn new(shards: usize, agent_ids: Vec<String>, build: BuildInfo) -> Self {
        Registry {
            shards: (0..shards)
                .map(|_| Arc::new(ShardCounters::new(agent_ids.len())))
                .collect(),
            agents: Arc::new(AgentReports::new()),
            agent_ids,
            build,
        }
    }

    /// The counters of shard `index`, to hand to its thread.
    pub fn shard(&self, index: usize) -> Option<Arc<ShardCounters>> {
        self.shards.get(index).map(Arc::clone)
    }

    /// Appends the Prometheus text exposition (format 0.0.4) of everything to `out`.
    pub fn render(&self, out: &mut String) {
        let shard_labels: Vec<String> = (0..self.shards.len()).map(|i| i.to_string()).collect();
        let shards: Vec<(&str, &ShardCounters)> = shard_labels
            .iter()
            .map(String::as_str)
            .zip(self.shards.iter().map(|s| &**s))
            .collect();

        header(
            out,
            "turnstile_build_info",
            Kind::Gauge,
            "Build information; always 1.",
        );
        Sample::start(out, "turnstile_build_info", "")
            .label("version", &self.build.version)
            .label("revision", &self.build.revision)
            .u64(1);

        for m in SHARD_COUNTERS {
            header(out, m.name, Kind::Counter, m.help);
            for &(label, s) in &shards {
                Sample::start(out, m.name, "")
                    .label("shard", label)
                    .u64((m.get)(s));
            }
        }
        for m in SHARD_GAUGES {
            header(out, m.name, Kind::Gauge, m.help);
            for &(label, s) in &shards {
                Sample::start(out, m.name, "")
                    .label("shard", label)
                    .i64((m.get)(s));
            }
        }

        const DECISIONS: &str = "turnstile_decisions_total";
        header(
            out,
            DECISIONS,
            Kind::Counter,
            "Merged decisions by verdict.",
        );
        for &(label, s) in &shards {
            for v in Verdict::ALL {
                Sample::start(out, DECISIONS, "")
                    .label("shard", label)
                    .label("verdict", v.as_str())
                    .u64(s.decisions(v).get());
            }
        }
        self.render_agent_calls(out, &shards);
        self.render_reports(out);
    }

    /// Name of agent `index` (its index as text if [`Self::agent_ids`] is shorter).
    fn agent_name(&self, index: usize) -> String {
        self.agent_ids
            .get(index)
            .cloned()
            .unwrap_or_else(|| index.to_string())
    }

    fn render_agent_calls(&self, out: &mut String, shards: &[(&str, &ShardCounters)]) {
        const CALLS: &str = "turnstile_agent_calls_total";
        const FAILURES: &str = "turnstile_agent_call_failures_total";
        const DURATION: &str = "turnstile_agent_call_duration_seconds";
        let names: Vec<String> = (0..shards.iter().map(|s| s.1.agent_count()).max().unwrap_or(0))
            .map(|i| self.agent_name(i))
            .collect();

        header(out, CALLS, Kind::Counter, "Calls sent to each agent.");
        for &(label, s) in shards {
            for (a, name) in s.agents().iter().zip(&names) {
                Sample::start(out, CALLS, "")
                    .label("shard", label)
                    .label("agent", name)
                    .u64(a.calls.get());
            }
        }
        header(
            out,
            FAILURES,
            Kind::Counter,
            "Agent calls that failed or were not sent, by reason.",
        );
        for &(label, s) in shards {
            for (a, name) in s.agents().iter().zip(&names) {
                for r in FailureReason::ALL {
                    Sample::start(out, FAILURES, "")
                        .label("shard", label)
                        .label("agent", name)
                        .label("reason", r.as_str())
                        .u64(a.failures(r).get());
                }
            }
        }
        header(
            out,
            DURATION,
            Kind::Histogram,
            "Time from sending an agent call to its reply.",
        );
        let bounds: Vec<String> = (0..crate::counters::HISTOGRAM_BUCKETS)
            .map(|i| match Histogram::bound_us(i) {
                Some(us) => {
                    let mut s = String::new();
                    crate::expo::write_f64(&mut s, us as f64 / 1e6);
                    s
                }
                None => "+Inf".to_owned(),
            })
            .collect();
        for &(label, s) in shards {
            for (a, name) in s.agents().iter().zip(&names) {
                let HistogramSnapshot {
                    cumulative,
                    sum_us,
                    count,
                } = a.duration.snapshot();
                for (n, le) in cumulative.iter().zip(&bounds) {
                    Sample::start(out, DURATION, "_bucket")
                        .label("shard", label)
                        .label("agent", name)
                        .label("le", le)
                        .u64(*n);
                }
                Sample::start(out, DURATION, "_sum")
                    .label("shard", label)
                    .label("agent", name)
                    .f64(sum_us as f64 / 1e6);
                Sample::start(out, DURATION, "_count")
                    .label("shard", label)
                    .label("agent", name)
                    .u64(count);
            }
        }
    }

    fn render_reports(&self, out: &mut String) {
        const ACCEPTED: &str = "turnstile_agent_reports_total";
        const REFUSED: &str = "turnstile_agent_reports_refused_total";
        const AGE: &str = "turnstile_agent_report_age_seconds";
        const SKIPPED: &str = "turnstile_agent_series_skipped";
        let reports = self.agents.snapshot();
        let now = Instant::now();

        header(
            out,
            ACCEPTED,
            Kind::Counter,
            "Agent metrics reports accepted.",
        );
        for (id, accepted, _) in &reports {
            Sample::start(out, ACCEPTED, "")
                .label("agent", id)
                .u64(*accepted);
        }
        header(
            out,
            REFUSED,
            Kind::Counter,
            "Agent metrics reports refused (nothing stored), by reason.",
        );
        for r in RefuseReason::ALL {
            Sample::start(out, REFUSED, "")
                .label("reason", r.as_str())
                .u64(self.agents.refused(r));
        }
        header(
            out,
            AGE,
            Kind::Gauge,
            "Seconds since the agent's latest metrics report was accepted.",
        );
        for (id, _, report) in &reports {
            let age = now.saturating_duration_since(report.received_at);
            Sample::start(out, AGE, "")
                .label("agent", id)
                .f64(age.as_secs_f64());
        }

        let (families, skipped) = group(&reports);
        header(
            out,
            SKIPPED,
            Kind::Gauge,
            "Agent-reported series left out of this scrape: their name has another type in an \
             earlier agent's report.",
        );
        Sample::start(out, SKIPPED, "").u64(skipped);
        for (name, family) in &families {
            render_family(out, name, family);
        }
    }
}

/// A `(metric name, getter, help)` row of the per-shard table.
struct ShardMetric<T> {
    name: &'static str,
    get: fn(&ShardCounters) -> T,
    help: &'static str,
}

const SHARD_COUNTERS: &[ShardMetric<u64>] = &[
    ShardMetric {
        name: "turnstile_datagrams_received_total",
        get: |s| s.datagrams_received.get(),
        help: "UDP datagrams received.",
    },
    ShardMetric {
        name: "turnstile_datagrams_sent_total",
        get: |s| s.datagrams_sent.get(),
        help: "UDP datagrams sent.",
    },
    ShardMetric {
        name: "turnstile_datagrams_steered_out_total",
        get: |s| s.datagrams_steered_out.get(),
        help: "Datagrams handed to the shard owning their connection.",
    },
    ShardMetric {
        name: "turnstile_datagrams_steered_in_total",
        get: |s| s.datagrams_steered_in.get(),
        help: "Datagrams received from another shard.",
    },
    ShardMetric {
        name: "turnstile_datagrams_steered_dropped_total",
        get: |s| s.datagrams_steered_dropped.get(),
        help: "Datagrams dropped because the owning shard's queue was full.",
    },
    ShardMetric {
        name: "turnstile_connections_accepted_total",
        get: |s| s.connections_accepted.get(),
        help: "QUIC connections accepted.",
    },
    ShardMetric {
        name: "turnstile_connections_refused_total",
        get: |s| s.connections_refused.get(),
        help: "QUIC connection attempts refused.",
    },
    ShardMetric {
        name: "turnstile_retries_sent_total",
        get: |s| s.retries_sent.get(),
        help: "QUIC Retry packets sent.",
    },
    ShardMetric {
        name: "turnstile_requests_total",
        get: |s| s.requests_total.get(),
        help: "Client requests received.",
    },
    ShardMetric {
        name: "turnstile_requests_rejected_total",
        get: |s| s.requests_rejected.get(),
        help: "Client requests rejected before dispatch.",
    },
    ShardMetric {
        name: "turnstile_requests_cancelled_total",
        get: |s| s.requests_cancelled.get(),
        help: "Client requests cancelled.",
    },
    ShardMetric {
        name: "turnstile_ring_sleeps_total",
        get: |s| s.ring_sleeps.get(),
        help: "Times the shard loop slept waiting for io_uring completions.",
    },
    ShardMetric {
        name: "turnstile_loop_iterations_total",
        get: |s| s.loop_iterations.get(),
        help: "Shard event loop iterations.",
    },
];

const SHARD_GAUGES: &[ShardMetric<i64>] = &[
    ShardMetric {
        name: "turnstile_connections_open",
        get: |s| s.connections_open.get(),
        help: "QUIC connections open.",
    },
    ShardMetric {
        name: "turnstile_streams_open",
        get: |s| s.streams_open.get(),
        help: "Request streams open.",
    },
];

/// The series of one agent-reported family, across agents.
struct Family<'r> {
    kind: Kind,
    series: Vec<(&'r str, Series<'r>)>,
}

enum Series<'r> {
    Counter(&'r Labels, u64),
    Gauge(&'r Labels, f64),
    Histogram(&'r crate::reports::ReportedHistogram),
}

type Snapshot = Vec<(String, u64, Arc<AgentReport>)>;

/// Groups every agent's series by family name (agents in id order). A family whose name an
/// earlier agent uses with another type is skipped for the later agent; the number of series
/// skipped that way is returned too.
fn group(reports: &Snapshot) -> (BTreeMap<&str, Family<'_>>, u64) {
    let mut families: BTreeMap<&str, Family<'_>> = BTreeMap::new();
    let mut skipped = 0u64;
    for (id, _, report) in reports {
        let id = id.as_str();
        let mut series: Vec<(&str, Kind, Series<'_>)> = Vec::new();
        series.extend(report.counters.iter().map(|c| {
            (
                c.name.as_str(),
                Kind::Counter,
                Series::Counter(&c.labels, c.value),
            )
        }));
        series.extend(report.gauges.iter().map(|g| {
            (
                g.name.as_str(),
                Kind::Gauge,
                Series::Gauge(&g.labels, g.value),
            )
        }));
        series.extend(
            report
                .histograms
                .iter()
                .map(|h| (h.name.as_str(), Kind::Histogram, Series::Histogram(h))),
        );
        for (name, kind, s) in series {
            let existing = families.get(name).map(|f| f.kind);
            if existing == Some(kind) {
                if let Some(f) = families.get_mut(name) {
                    f.series.push((id, s));
                }
            } else if existing.is_some() || clashes(name, kind, |n| families.get(n).map(|f| f.kind))
            {
                skipped += 1;
            } else {
                families.insert(
                    name,
                    Family {
                        kind,
                        series: vec![(id, s)],
                    },
                );
            }
        }
    }
    (families, skipped)
}

fn render_family(out: &mut String, name: &str, family: &Family<'_>) {
    header(out, name, family.kind, "Reported by agents.");
    for (id, series) in &family.series {
        match series {
            Series::Counter(labels, v) => Sample::start(out, name, "")
                .label(AGENT_ID_LABEL, id)
                .labels(labels.iter())
                .u64(*v),
            Series::Gauge(labels, v) => Sample::start(out, name, "")
                .label(AGENT_ID_LABEL, id)
                .labels(labels.iter())
                .f64(*v),
            Series::Histogram(h) => {
                let mut le = String::new();
                for &(bound, n) in &h.buckets {
                    le.clear();
                    crate::expo::write_f64(&mut le, bound);
                    Sample::start(out, name, HISTOGRAM_SUFFIXES[0])
                        .label(AGENT_ID_LABEL, id)
                        .labels(h.labels.iter())
                        .label("le", &le)
                        .u64(n);
                }
                Sample::start(out, name, HISTOGRAM_SUFFIXES[0])
                    .label(AGENT_ID_LABEL, id)
                    .labels(h.labels.iter())
                    .label("le", "+Inf")
                    .u64(h.count);
                Sample::start(out, name, HISTOGRAM_SUFFIXES[1])
                    .label(AGENT_ID_LABEL, id)
                    .labels(h.labels.iter())
                    .f64(h.sum);
                Sample::start(out, name, HISTOGRAM_SUFFIXES[2])
                    .label(AGENT_ID_LABEL, id)
                    .labels(h.labels.iter())
                    .u64(h.count);
            }
        }
    }
}
