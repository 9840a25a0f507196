//! The latest metrics report of each agent, copied out of the capnp reader into owned values.
//!
//! Reports arrive every few seconds per agent connection, off the request path, so a `Mutex` is
//! fine here. Each report replaces the agent's previous one whole: an agent that sends the same
//! process-wide numbers on every one of its connections is exported once, not once per
//! connection. A report that fails any check is refused whole (the previous one stays) and
//! counted by reason.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use turnstile_wire::turnstile_capnp::{label, metrics_report};

use crate::error::{MetricsError, RefuseReason, refused};
use crate::expo::{HISTOGRAM_SUFFIXES, Kind, is_label_name, is_metric_name};
use crate::limits::{
    AGENT_ID_BYTES_MAX, AGENT_REPORT_BYTES_MAX, AGENT_SERIES_MAX, HISTOGRAM_BUCKETS_MAX,
    LABEL_NAME_BYTES_MAX, LABEL_VALUE_BYTES_MAX, LABELS_PER_SERIES_MAX, METRIC_NAME_BYTES_MAX,
    REPORTING_AGENTS_MAX,
};

/// The label turnstile adds to every agent-reported series.
pub const AGENT_ID_LABEL: &str = "agent_id";
/// Where an agent's own `agent_id` label goes when its value differs from turnstile's.
pub const EXPORTED_AGENT_ID_LABEL: &str = "exported_agent_id";
/// Metric-name prefix reserved for turnstile's own metrics.
pub const RESERVED_PREFIX: &str = "turnstile_";

/// Labels of one series, sorted by name, without `agent_id` (added on export).
pub type Labels = Vec<(String, String)>;

/// A reported counter.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedCounter {
    /// Metric name, as reported.
    pub name: String,
    /// Labels, sorted by name.
    pub labels: Labels,
    /// Value.
    pub value: u64,
}

/// A reported gauge.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedGauge {
    /// Metric name, as reported.
    pub name: String,
    /// Labels, sorted by name.
    pub labels: Labels,
    /// Value.
    pub value: f64,
}

/// A reported histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedHistogram {
    /// Metric name, as reported (the family name, without `_bucket`).
    pub name: String,
    /// Labels, sorted by name (never `le`).
    pub labels: Labels,
    /// Sum of all observations.
    pub sum: f64,
    /// Number of observations (the `+Inf` bucket).
    pub count: u64,
    /// Finite `(upper bound, cumulative count)` pairs, bounds strictly increasing.
    pub buckets: Vec<(f64, u64)>,
}

/// One agent's latest accepted report.
#[derive(Debug, Clone)]
pub struct AgentReport {
    /// The agent's timestamp of the report (Unix ms), as sent.
    pub timestamp_ms: u64,
    /// The agent's reporting interval (ms), as sent.
    pub interval_ms: u64,
    /// When turnstile accepted it.
    pub received_at: Instant,
    /// Counters, in report order.
    pub counters: Vec<ReportedCounter>,
    /// Gauges, in report order.
    pub gauges: Vec<ReportedGauge>,
    /// Histograms, in report order.
    pub histograms: Vec<ReportedHistogram>,
}

impl AgentReport {
    /// Every `(family name, type)` of this report, one entry per series.
    pub(crate) fn families(&self) -> impl Iterator<Item = (&str, Kind)> {
        let c = self
            .counters
            .iter()
            .map(|s| (s.name.as_str(), Kind::Counter));
        let g = self.gauges.iter().map(|s| (s.name.as_str(), Kind::Gauge));
        let h = self
            .histograms
            .iter()
            .map(|s| (s.name.as_str(), Kind::Histogram));
        c.chain(g).chain(h)
    }
}

/// An agent's entry: its latest report and how many were accepted.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) report: Arc<AgentReport>,
    pub(crate) accepted: u64,
}

/// The latest metrics report of each agent.
#[derive(Debug, Default)]
pub struct AgentReports {
    agents: Mutex<BTreeMap<String, Entry>>,
    refused: [AtomicU64; RefuseReason::ALL.len()],
}

impl AgentReports {
    /// No reports yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies `report` and makes it `agent_id`'s latest, replacing the previous one.
    ///
    /// `agent_id` is turnstile's name for the agent (the link the report came on); the report's
    /// own `agentId` field is not trusted. On error nothing changes and the refusal is counted
    /// under [`MetricsError::refuse_reason`].
    pub fn record(
        &self,
        agent_id: &str,
        report: metrics_report::Reader<'_>,
    ) -> Result<(), MetricsError> {
        let result = self.try_record(agent_id, report);
        if let Err(MetricsError::Refused { reason, .. }) = &result {
            self.refused[*reason as usize].fetch_add(1, Relaxed);
        }
        result
    }

    fn try_record(
        &self,
        agent_id: &str,
        report: metrics_report::Reader<'_>,
    ) -> Result<(), MetricsError> {
        if agent_id.is_empty() || agent_id.len() > AGENT_ID_BYTES_MAX {
            return Err(refused(RefuseReason::AgentId, "agent id", agent_id));
        }
        let owned = Copier::new(agent_id).report(report)?;
        check_families(owned.families())?;
        check_duplicates(&owned)?;
        let mut agents = self.lock();
        if !agents.contains_key(agent_id) && agents.len() >= REPORTING_AGENTS_MAX {
            return Err(refused(RefuseReason::TooManyAgents, "agent", agent_id));
        }
        let owned = Arc::new(owned);
        match agents.get_mut(agent_id) {
            Some(entry) => {
                entry.report = owned;
                entry.accepted += 1;
            }
            None => {
                agents.insert(
                    agent_id.to_owned(),
                    Entry {
                        report: owned,
                        accepted: 1,
                    },
                );
            }
        }
        Ok(())
    }

    /// The latest report of `agent_id`.
    pub fn latest(&self, agent_id: &str) -> Option<Arc<AgentReport>> {
        self.lock().get(agent_id).map(|e| Arc::clone(&e.report))
    }

    /// Forgets `agent_id`'s report (an agent removed from the configuration).
    pub fn remove(&self, agent_id: &str) -> bool {
        self.lock().remove(agent_id).is_some()
    }

    /// Reports accepted from `agent_id` so far (0 once removed).
    pub fn accepted(&self, agent_id: &str) -> u64 {
        self.lock().get(agent_id).map_or(0, |e| e.accepted)
    }

    /// Reports refused for `reason` so far (all agents).
    pub fn refused(&self, reason: RefuseReason) -> u64 {
        self.refused[reason as usize].load(Relaxed)
    }

    /// `(agent id, accepted count, latest report)` of every agent, sorted by id; the lock is held
    /// only while copying the `Arc`s.
    pub(crate) fn snapshot(&self) -> Vec<(String, u64, Arc<AgentReport>)> {
        self.lock()
            .iter()
            .map(|(id, e)| (id.clone(), e.accepted, Arc::clone(&e.report)))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // Entries are replaced whole, so a panic elsewhere cannot leave one half-written.
        self.agents.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether adding family `name` of type `kind` clashes with the families `lookup` knows: the
/// same name with another type, or a histogram `h` and a family named `h_bucket`, `h_sum` or
/// `h_count` (either way round).
pub(crate) fn clashes(name: &str, kind: Kind, lookup: impl Fn(&str) -> Option<Kind>) -> bool {
    if lookup(name).is_some_and(|k| k != kind) {
        return true;
    }
    let derived_of_histogram = HISTOGRAM_SUFFIXES.iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|stem| lookup(stem) == Some(Kind::Histogram))
    });
    if derived_of_histogram {
        return true;
    }
    kind == Kind::Histogram
        && HISTOGRAM_SUFFIXES.iter().any(|suffix| {
            let mut derived = String::with_capacity(name.len() + suffix.len());
            derived.push_str(name);
            derived.push_str(suffix);
            lookup(&derived).is_some()
        })
}

fn check_families<'a>(families: impl Iterator<Item = (&'a str, Kind)>) -> Result<(), MetricsError> {
    let mut kinds: HashMap<&str, Kind> = HashMap::new();
    for (name, kind) in families {
        if clashes(name, kind, |n| kinds.get(n).copied()) {
            return Err(refused(RefuseReason::TypeConflict, "metric", name));
        }
        kinds.insert(name, kind);
    }
    Ok(())
}

fn check_duplicates(r: &AgentReport) -> Result<(), MetricsError> {
    let mut seen: HashSet<(&str, &Labels)> = HashSet::new();
    let series = r
        .counters
        .iter()
        .map(|s| (s.name.as_str(), &s.labels))
        .chain(r.gauges.iter().map(|s| (s.name.as_str(), &s.labels)))
        .chain(r.histograms.iter().map(|s| (s.name.as_str(), &s.labels)));
    for key in series {
        if !seen.insert(key) {
            return Err(refused(RefuseReason::DuplicateSeries, "metric", key.0));
        }
    }
    Ok(())
}

fn decode(e: impl std::fmt::Display) -> MetricsError {
    MetricsError::Refused {
        reason: RefuseReason::Decode,
        detail: e.to_string(),
    }
}

/// Copies one report out of capnp, checking every bound before allocating for it.
struct Copier<'a> {
    agent_id: &'a str,
    /// Text bytes still allowed ([`AGENT_REPORT_BYTES_MAX`]).
    budget: usize,
}

impl<'a> Copier<'a> {
    fn new(agent_id: &'a str) -> Self {
        Copier {
            agent_id,
            budget: AGENT_REPORT_BYTES_MAX,
        }
    }

    fn report(&mut self, r: metrics_report::Reader<'_>) -> Result<AgentReport, MetricsError> {
        let counters = r.get_counters().map_err(decode)?;
        let gauges = r.get_gauges().map_err(decode)?;
        let histograms = r.get_histograms().map_err(decode)?;
        let total = counters.len() as usize + gauges.len() as usize + histograms.len() as usize;
        if total > AGENT_SERIES_MAX {
            return Err(MetricsError::Refused {
                reason: RefuseReason::TooManySeries,
                detail: format!("{total} series, at most {AGENT_SERIES_MAX}"),
            });
        }
        let mut out = AgentReport {
            timestamp_ms: r.get_timestamp_ms(),
            interval_ms: r.get_interval_ms(),
            received_at: Instant::now(),
            counters: Vec::with_capacity(counters.len() as usize),
            gauges: Vec::with_capacity(gauges.len() as usize),
            histograms: Vec::with_capacity(histograms.len() as usize),
        };
        for c in counters.iter() {
            out.counters.push(ReportedCounter {
                name: self.metric_name(c.get_name())?,
                labels: self.labels(c.get_labels(), false)?,
                value: c.get_value(),
            });
        }
        for g in gauges.iter() {
            out.gauges.push(ReportedGauge {
                name: self.metric_name(g.get_name())?,
                labels: self.labels(g.get_labels(), false)?,
                value: g.get_value(),
            });
        }
        for h in histograms.iter() {
            let name = self.metric_name(h.get_name())?;
            let labels = self.labels(h.get_labels(), true)?;
            let count = h.get_count();
            let buckets = buckets(&name, count, h.get_buckets().map_err(decode)?)?;
            out.histograms.push(ReportedHistogram {
                name,
                labels,
                sum: h.get_sum(),
                count,
                buckets,
            });
        }
        Ok(out)
    }

    /// Reads a text field of at most `max` bytes, charging it to the report's byte budget.
    fn text<'r>(
        &mut self,
        t: capnp::Result<capnp::text::Reader<'r>>,
        max: usize,
        reason: RefuseReason,
        what: &str,
    ) -> Result<&'r str, MetricsError> {
        let t = t.map_err(decode)?;
        let s = t.to_str().map_err(decode)?;
        if s.len() > max {
            return Err(refused(reason, what, s));
        }
        self.budget = self
            .budget
            .checked_sub(s.len())
            .ok_or_else(|| MetricsError::Refused {
                reason: RefuseReason::TooLarge,
                detail: format!("more than {AGENT_REPORT_BYTES_MAX} bytes of text"),
            })?;
        Ok(s)
    }

    fn metric_name(
        &mut self,
        t: capnp::Result<capnp::text::Reader<'_>>,
    ) -> Result<String, MetricsError> {
        let name = self.text(t, METRIC_NAME_BYTES_MAX, RefuseReason::MetricName, "metric")?;
        if !is_metric_name(name) {
            return Err(refused(RefuseReason::MetricName, "metric", name));
        }
        if name.starts_with(RESERVED_PREFIX) {
            return Err(refused(RefuseReason::ReservedName, "metric", name));
        }
        Ok(name.to_owned())
    }

    /// Copies labels, sorted by name. The agent's own `agent_id` label is dropped when it equals
    /// turnstile's id for the agent and renamed `exported_agent_id` otherwise.
    fn labels(
        &mut self,
        list: capnp::Result<capnp::struct_list::Reader<'_, label::Owned>>,
        histogram: bool,
    ) -> Result<Labels, MetricsError> {
        let list = list.map_err(decode)?;
        if list.len() as usize > LABELS_PER_SERIES_MAX {
            return Err(MetricsError::Refused {
                reason: RefuseReason::TooManyLabels,
                detail: format!("{} labels, at most {LABELS_PER_SERIES_MAX}", list.len()),
            });
        }
        let mut labels = Labels::with_capacity(list.len() as usize);
        for l in list.iter() {
            let name = self.text(
                l.get_name(),
                LABEL_NAME_BYTES_MAX,
                RefuseReason::LabelName,
                "label",
            )?;
            let value = self.text(
                l.get_value(),
                LABEL_VALUE_BYTES_MAX,
                RefuseReason::LabelValue,
                "label value",
            )?;
            if !is_label_name(name) {
                return Err(refused(RefuseReason::LabelName, "label", name));
            }
            if name.starts_with("__") || (histogram && name == "le") {
                return Err(refused(RefuseReason::ReservedLabel, "label", name));
            }
            let name = match name {
                AGENT_ID_LABEL if value == self.agent_id => continue,
                AGENT_ID_LABEL => EXPORTED_AGENT_ID_LABEL,
                other => other,
            };
            labels.push((name.to_owned(), value.to_owned()));
        }
        labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = labels.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(refused(RefuseReason::DuplicateLabel, "label", &w[0].0));
        }
        Ok(labels)
    }
}

/// Checks and copies histogram buckets: bounds strictly increasing and not NaN, counts
/// cumulative and at most `count`; a final `+Inf` bucket must equal `count` and is not kept.
fn buckets(
    name: &str,
    count: u64,
    list: capnp::struct_list::Reader<'_, turnstile_wire::turnstile_capnp::histogram_bucket::Owned>,
) -> Result<Vec<(f64, u64)>, MetricsError> {
    let bad = |why: &str| MetricsError::Refused {
        reason: RefuseReason::Histogram,
        detail: format!("histogram {:?}: {why}", name),
    };
    if list.len() as usize > HISTOGRAM_BUCKETS_MAX {
        return Err(bad("too many buckets"));
    }
    let mut out: Vec<(f64, u64)> = Vec::with_capacity(list.len() as usize);
    for b in list.iter() {
        let (le, n) = (b.get_le(), b.get_count());
        if le.is_nan() {
            return Err(bad("NaN bucket bound"));
        }
        if let Some(&(prev_le, prev_n)) = out.last() {
            if le <= prev_le {
                return Err(bad("bucket bounds not increasing"));
            }
            if n < prev_n {
                return Err(bad("bucket counts not cumulative"));
            }
        }
        if le == f64::INFINITY {
            if n != count {
                return Err(bad("+Inf bucket differs from count"));
            }
        } else if n > count {
            return Err(bad("bucket count above total count"));
        }
        out.push((le, n));
    }
    if out.last().is_some_and(|&(le, _)| le == f64::INFINITY) {
        out.pop();
    }
    Ok(out)
}
