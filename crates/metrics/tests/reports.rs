//! Agent reports recorded from real capnp messages: copying, latest wins, limits, refusals.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{Spec, frame, record, with_report};
use turnstile_metrics::limits::{
    AGENT_ID_BYTES_MAX, AGENT_SERIES_MAX, HISTOGRAM_BUCKETS_MAX, LABEL_VALUE_BYTES_MAX,
    LABELS_PER_SERIES_MAX, METRIC_NAME_BYTES_MAX, REPORTING_AGENTS_MAX,
};
use turnstile_metrics::{AgentReports, RefuseReason};

fn standard<'a>(requests: u64) -> Spec<'a> {
    Spec::default()
        .counter("agent_requests_total", vec![], requests)
        .counter(
            "agent_requests_blocked_total",
            vec![("decision", "block"), ("agent_id", "waf")],
            requests / 10,
        )
        .gauge("agent_in_flight_requests", vec![("agent_id", "waf")], 3.0)
        .histogram(
            "agent_requests_duration_seconds",
            vec![("route_id", "r1")],
            1.5,
            requests,
            vec![(0.001, requests / 2), (0.01, requests)],
        )
}

#[test]
fn report_is_copied_and_latest_wins() {
    let reports = AgentReports::new();
    record(&reports, "waf", &standard(100)).unwrap();
    let r = reports.latest("waf").unwrap();
    assert_eq!(r.timestamp_ms, 1_700_000_000_000);
    assert_eq!(r.interval_ms, 5_000);
    assert_eq!(r.counters.len(), 2);
    assert_eq!(r.counters[0].name, "agent_requests_total");
    assert_eq!(r.counters[0].value, 100);
    // The agent's own `agent_id` label equal to turnstile's id is dropped (added on export).
    assert_eq!(
        r.counters[1].labels,
        vec![("decision".to_owned(), "block".to_owned())]
    );
    assert!(r.gauges[0].labels.is_empty());
    assert_eq!(r.gauges[0].value, 3.0);
    let h = &r.histograms[0];
    assert_eq!((h.sum, h.count), (1.5, 100));
    assert_eq!(h.buckets, vec![(0.001, 50), (0.01, 100)]);

    // The same process-wide numbers arrive on several connections: one entry, the latest.
    record(&reports, "waf", &standard(150)).unwrap();
    record(&reports, "waf", &standard(200)).unwrap();
    let r = reports.latest("waf").unwrap();
    assert_eq!(r.counters[0].value, 200);
    assert_eq!(reports.accepted("waf"), 3);
    // A report with fewer series replaces the old one whole.
    record(
        &reports,
        "waf",
        &Spec::default().counter("agent_errors_total", vec![], 1),
    )
    .unwrap();
    let r = reports.latest("waf").unwrap();
    assert_eq!(r.counters.len(), 1);
    assert!(r.gauges.is_empty() && r.histograms.is_empty());

    assert!(reports.latest("auth").is_none());
    assert!(reports.remove("waf"));
    assert!(reports.latest("waf").is_none());
    assert_eq!(reports.accepted("waf"), 0);
}

#[test]
fn foreign_agent_id_label_is_kept_as_exported_agent_id_and_labels_are_sorted() {
    let reports = AgentReports::new();
    let spec = Spec::default().counter(
        "jobs_total",
        vec![("zone", "b"), ("agent_id", "other"), ("a", "1")],
        5,
    );
    record(&reports, "waf", &spec).unwrap();
    let labels = &reports.latest("waf").unwrap().counters[0].labels;
    let names: Vec<&str> = labels.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "exported_agent_id", "zone"]);
}

/// Records `spec`, expects refusal for `reason`, and checks the previous report stayed and the
/// refusal was counted.
fn refused(spec: &Spec<'_>, reason: RefuseReason) {
    refused_as(spec, "waf", reason);
}

fn refused_as(spec: &Spec<'_>, agent: &str, reason: RefuseReason) {
    let reports = AgentReports::new();
    record(&reports, "waf", &standard(7)).unwrap();
    let err = record(&reports, agent, spec).unwrap_err();
    assert_eq!(err.refuse_reason(), Some(reason), "{err}");
    assert_eq!(reports.refused(reason), 1);
    let total: u64 = RefuseReason::ALL.iter().map(|r| reports.refused(*r)).sum();
    assert_eq!(total, 1);
    assert_eq!(reports.latest("waf").unwrap().counters[0].value, 7);
    assert_eq!(reports.accepted("waf"), 1);
}

#[test]
fn bad_names_are_refused_and_counted() {
    let c = |name: &'static str| Spec::default().counter(name, vec![], 1);
    for bad in [
        "",
        "9lives",
        "has-dash",
        "has space",
        "dotted.name",
        "ünïcode",
        "a{b}",
    ] {
        refused(&c(bad), RefuseReason::MetricName);
    }
    refused(&c("turnstile_requests_total"), RefuseReason::ReservedName);
    let long = "m".repeat(METRIC_NAME_BYTES_MAX + 1);
    refused(
        &Spec::default().gauge(&long, vec![], 1.0),
        RefuseReason::MetricName,
    );
    let l = |name: &'static str| Spec::default().counter("ok_total", vec![(name, "v")], 1);
    for bad in ["", "9x", "a:b", "a-b", "é"] {
        refused(&l(bad), RefuseReason::LabelName);
    }
    refused(&l("__name__"), RefuseReason::ReservedLabel);
    refused(
        &Spec::default().histogram("h", vec![("le", "1")], 0.0, 0, vec![]),
        RefuseReason::ReservedLabel,
    );
    // `le` is only reserved on histograms.
    record(&AgentReports::new(), "waf", &l("le")).unwrap();
    refused(
        &Spec::default().counter("ok_total", vec![("a", "1"), ("a", "2")], 1),
        RefuseReason::DuplicateLabel,
    );
    // An `agent_id` label with another value and an explicit `exported_agent_id` collide.
    refused(
        &Spec::default().counter(
            "ok_total",
            vec![("agent_id", "x"), ("exported_agent_id", "y")],
            1,
        ),
        RefuseReason::DuplicateLabel,
    );
}

#[test]
fn limits_are_enforced() {
    let long_id = "a".repeat(AGENT_ID_BYTES_MAX + 1);
    refused_as(&standard(1), &long_id, RefuseReason::AgentId);
    refused_as(&standard(1), "", RefuseReason::AgentId);

    let names: Vec<String> = (0..=AGENT_SERIES_MAX).map(|i| format!("m{i}")).collect();
    let mut spec = Spec::default();
    for n in &names {
        spec = spec.gauge(n, vec![], 1.0);
    }
    refused(&spec, RefuseReason::TooManySeries);
    // Exactly the maximum is fine.
    spec.gauges.pop();
    record(&AgentReports::new(), "waf", &spec).unwrap();

    let label_names: Vec<String> = (0..=LABELS_PER_SERIES_MAX)
        .map(|i| format!("l{i}"))
        .collect();
    let labels: Vec<(&str, &str)> = label_names.iter().map(|n| (n.as_str(), "v")).collect();
    refused(
        &Spec::default().counter("c_total", labels.clone(), 1),
        RefuseReason::TooManyLabels,
    );
    record(
        &AgentReports::new(),
        "waf",
        &Spec::default().counter("c_total", labels[1..].to_vec(), 1),
    )
    .unwrap();

    let long_value = "v".repeat(LABEL_VALUE_BYTES_MAX + 1);
    refused(
        &Spec::default().counter("c_total", vec![("k", &long_value)], 1),
        RefuseReason::LabelValue,
    );

    let buckets: Vec<(f64, u64)> = (0..=HISTOGRAM_BUCKETS_MAX).map(|i| (i as f64, 0)).collect();
    refused(
        &Spec::default().histogram("h", vec![], 0.0, 0, buckets),
        RefuseReason::Histogram,
    );

    // Agents beyond REPORTING_AGENTS_MAX are refused; known ones still update.
    let reports = AgentReports::new();
    for i in 0..REPORTING_AGENTS_MAX {
        record(&reports, &format!("agent-{i}"), &standard(1)).unwrap();
    }
    let err = record(&reports, "one-too-many", &standard(1)).unwrap_err();
    assert_eq!(err.refuse_reason(), Some(RefuseReason::TooManyAgents));
    record(&reports, "agent-0", &standard(2)).unwrap();
    assert_eq!(reports.refused(RefuseReason::TooManyAgents), 1);
}

#[test]
fn duplicate_series_and_type_conflicts_are_refused() {
    refused(
        &Spec::default()
            .counter("c_total", vec![("a", "1"), ("b", "2")], 1)
            .counter("c_total", vec![("b", "2"), ("a", "1")], 2),
        RefuseReason::DuplicateSeries,
    );
    // An agent_id label equal to the agent's id disappears, so these two are the same series.
    refused(
        &Spec::default().counter("c_total", vec![], 1).counter(
            "c_total",
            vec![("agent_id", "waf")],
            2,
        ),
        RefuseReason::DuplicateSeries,
    );
    refused(
        &Spec::default()
            .counter("x", vec![], 1)
            .gauge("x", vec![("a", "1")], 2.0),
        RefuseReason::TypeConflict,
    );
    for derived in ["lat_bucket", "lat_sum", "lat_count"] {
        refused(
            &Spec::default()
                .gauge(derived, vec![], 1.0)
                .histogram("lat", vec![], 0.0, 0, vec![]),
            RefuseReason::TypeConflict,
        );
    }
    // Same name, same type, different labels: fine.
    record(
        &AgentReports::new(),
        "waf",
        &Spec::default()
            .counter("c_total", vec![("a", "1")], 1)
            .counter("c_total", vec![("a", "2")], 2),
    )
    .unwrap();
}

#[test]
fn histogram_buckets_are_checked() {
    let h = |count: u64, buckets: Vec<(f64, u64)>| {
        Spec::default().histogram("h_seconds", vec![], 1.0, count, buckets)
    };
    refused(&h(5, vec![(1.0, 1), (1.0, 2)]), RefuseReason::Histogram);
    refused(&h(5, vec![(2.0, 1), (1.0, 2)]), RefuseReason::Histogram);
    refused(&h(5, vec![(1.0, 3), (2.0, 2)]), RefuseReason::Histogram);
    refused(&h(5, vec![(1.0, 6)]), RefuseReason::Histogram);
    refused(&h(5, vec![(f64::NAN, 1)]), RefuseReason::Histogram);
    refused(
        &h(5, vec![(1.0, 1), (f64::INFINITY, 4)]),
        RefuseReason::Histogram,
    );

    let reports = AgentReports::new();
    record(&reports, "a", &h(5, vec![(1.0, 1), (f64::INFINITY, 5)])).unwrap();
    // The +Inf bucket is implied by `count` and not stored.
    assert_eq!(
        reports.latest("a").unwrap().histograms[0].buckets,
        vec![(1.0, 1)]
    );
    record(&reports, "a", &h(0, vec![])).unwrap();
}

#[test]
fn undecodable_text_is_refused_as_decode() {
    // Build a valid report, then corrupt a name's bytes into invalid UTF-8.
    let mut bytes = frame(&Spec::default().counter("abcdefgh", vec![], 1));
    let at = bytes.windows(8).position(|w| w == b"abcdefgh").unwrap();
    bytes[at] = 0xff;
    let reports = AgentReports::new();
    let err = with_report(&bytes, |r| reports.record("waf", r)).unwrap_err();
    assert_eq!(err.refuse_reason(), Some(RefuseReason::Decode));
    assert_eq!(reports.refused(RefuseReason::Decode), 1);
    assert!(reports.latest("waf").is_none());
}
