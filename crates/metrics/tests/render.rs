//! The text exposition, parsed back line by line.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use common::{Spec, named, parse_exposition, record};
use turnstile_metrics::{BuildInfo, FailureReason, RefuseReason, Registry, Verdict};

fn registry() -> Registry {
    Registry::new(
        2,
        vec!["waf".to_owned(), "auth \"v2\"\n\\x".to_owned()],
        BuildInfo {
            version: "0.1.0".to_owned(),
            revision: "abc123".to_owned(),
        },
    )
}

fn render(r: &Registry) -> String {
    let mut out = String::new();
    r.render(&mut out);
    out
}

#[test]
fn empty_registry_renders_valid_exposition() {
    let r = Registry::new(0, vec![], BuildInfo::default());
    let samples = parse_exposition(&render(&r));
    assert_eq!(named(&samples, "turnstile_build_info").len(), 1);
    assert_eq!(
        named(&samples, "turnstile_agent_reports_refused_total").len(),
        RefuseReason::ALL.len()
    );
}

#[test]
fn own_metrics_per_shard_with_labels() {
    let r = registry();
    let s0 = r.shard(0).unwrap();
    let s1 = r.shard(1).unwrap();
    assert!(r.shard(2).is_none());
    s0.requests_total.add(5);
    s1.requests_total.add(7);
    s1.connections_open.set(3);
    s0.agent_calls(1).add(4);
    s0.agent_failures(1, FailureReason::BreakerOpen).add(2);
    s1.decisions(Verdict::Redirect).inc();
    s0.agent_call_duration(0).observe_us(3); // ≤ 4 µs
    s0.agent_call_duration(0).observe_us(1_500_000); // +Inf

    let text = render(&r);
    let samples = parse_exposition(&text);
    assert!(text.contains("# TYPE turnstile_requests_total counter\n"));
    assert!(text.contains("# TYPE turnstile_connections_open gauge\n"));
    assert!(text.contains("# TYPE turnstile_agent_call_duration_seconds histogram\n"));
    assert!(text.contains("turnstile_build_info{version=\"0.1.0\",revision=\"abc123\"} 1\n"));

    let req = named(&samples, "turnstile_requests_total");
    assert_eq!(req.len(), 2);
    assert_eq!(
        (req[0].label("shard"), req[0].value.as_str()),
        (Some("0"), "5")
    );
    assert_eq!(
        (req[1].label("shard"), req[1].value.as_str()),
        (Some("1"), "7")
    );
    let open = named(&samples, "turnstile_connections_open");
    assert_eq!(open[1].value, "3");

    // Label values with quotes, newlines and backslashes survive the round trip.
    let weird = "auth \"v2\"\n\\x";
    let calls = named(&samples, "turnstile_agent_calls_total");
    assert_eq!(calls.len(), 4);
    let c = calls
        .iter()
        .find(|s| s.label("shard") == Some("0") && s.label("agent") == Some(weird))
        .unwrap();
    assert_eq!(c.value, "4");
    let failures = named(&samples, "turnstile_agent_call_failures_total");
    assert_eq!(failures.len(), 2 * 2 * FailureReason::ALL.len());
    let f = failures
        .iter()
        .find(|s| {
            s.label("shard") == Some("0")
                && s.label("agent") == Some(weird)
                && s.label("reason") == Some("breaker_open")
        })
        .unwrap();
    assert_eq!(f.value, "2");
    let d = named(&samples, "turnstile_decisions_total");
    assert_eq!(d.len(), 2 * 3);
    assert!(d.iter().any(|s| s.label("shard") == Some("1")
        && s.label("verdict") == Some("redirect")
        && s.value == "1"));

    // Histogram: 22 buckets per (shard, agent), cumulative, le in seconds, +Inf last = count.
    let buckets: Vec<_> = named(&samples, "turnstile_agent_call_duration_seconds_bucket")
        .into_iter()
        .filter(|s| s.label("shard") == Some("0") && s.label("agent") == Some("waf"))
        .collect();
    assert_eq!(buckets.len(), 22);
    assert_eq!(buckets[0].label("le"), Some("0.000001"));
    assert_eq!(buckets[2].label("le"), Some("0.000004"));
    assert_eq!(buckets[20].label("le"), Some("1.048576"));
    assert_eq!(buckets[21].label("le"), Some("+Inf"));
    let counts: Vec<f64> = buckets.iter().map(|s| s.f64()).collect();
    assert_eq!(counts[1], 0.0);
    assert_eq!(counts[2], 1.0);
    assert_eq!(counts[20], 1.0);
    assert_eq!(counts[21], 2.0);
    let les: Vec<f64> = buckets
        .iter()
        .map(|s| match s.label("le").unwrap() {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap(),
        })
        .collect();
    assert!(les.windows(2).all(|w| w[0] < w[1]));
    let sum = named(&samples, "turnstile_agent_call_duration_seconds_sum")[0].f64();
    assert!((sum - 1.500003).abs() < 1e-9, "{sum}");
    assert_eq!(
        named(&samples, "turnstile_agent_call_duration_seconds_count")[0].value,
        "2"
    );
}

#[test]
fn agent_series_get_agent_id_and_render_valid() {
    let r = registry();
    let spec = Spec::default()
        .counter("agent_requests_total", vec![("agent_id", "waf")], 100)
        .counter(
            "agent_requests_blocked_total",
            vec![("decision", "block"), ("rule_id", "942100 \"sqli\"")],
            9,
        )
        .gauge("agent_queue_depth", vec![], f64::NAN)
        .gauge("agent_in_flight_requests", vec![], 2.5)
        .histogram(
            "agent_requests_duration_seconds",
            vec![("route_id", "r1")],
            0.75,
            10,
            vec![(0.005, 4), (0.05, 9), (f64::INFINITY, 10)],
        );
    record(&r.agents, "waf", &spec).unwrap();
    record(
        &r.agents,
        "auth",
        &Spec::default().counter("agent_requests_total", vec![], 3),
    )
    .unwrap();
    // Refused reports show up by reason.
    record(
        &r.agents,
        "auth",
        &Spec::default().counter("bad-name", vec![], 3),
    )
    .unwrap_err();

    let text = render(&r);
    let samples = parse_exposition(&text);
    let req = named(&samples, "agent_requests_total");
    assert_eq!(req.len(), 2);
    // Agents in id order; agent_id first; the agent's own equal agent_id label merged.
    assert_eq!(req[0].labels, vec![("agent_id".into(), "auth".into())]);
    assert_eq!(req[1].labels, vec![("agent_id".into(), "waf".into())]);
    assert_eq!(req[1].value, "100");
    assert!(text.contains("# TYPE agent_requests_total counter\n"));
    assert!(text.contains("# TYPE agent_requests_duration_seconds histogram\n"));
    assert!(text.contains("# TYPE agent_queue_depth gauge\n"));
    let blocked = named(&samples, "agent_requests_blocked_total")[0];
    assert_eq!(blocked.label("rule_id"), Some("942100 \"sqli\""));
    assert_eq!(named(&samples, "agent_queue_depth")[0].value, "NaN");
    assert_eq!(named(&samples, "agent_in_flight_requests")[0].value, "2.5");
    let b = named(&samples, "agent_requests_duration_seconds_bucket");
    let les: Vec<&str> = b.iter().map(|s| s.label("le").unwrap()).collect();
    assert_eq!(les, ["0.005", "0.05", "+Inf"]);
    assert_eq!(b[2].value, "10");
    assert_eq!(b[0].label("route_id"), Some("r1"));
    assert_eq!(b[0].label("agent_id"), Some("waf"));
    assert_eq!(
        named(&samples, "agent_requests_duration_seconds_sum")[0].value,
        "0.75"
    );
    assert_eq!(
        named(&samples, "agent_requests_duration_seconds_count")[0].value,
        "10"
    );

    let accepted = named(&samples, "turnstile_agent_reports_total");
    assert_eq!(accepted.len(), 2);
    assert!(accepted.iter().all(|s| s.value == "1"));
    let refused = named(&samples, "turnstile_agent_reports_refused_total");
    let metric_name = refused
        .iter()
        .find(|s| s.label("reason") == Some("metric_name"))
        .unwrap();
    assert_eq!(metric_name.value, "1");
    let age = named(&samples, "turnstile_agent_report_age_seconds");
    assert_eq!(age.len(), 2);
    assert!(age.iter().all(|s| (0.0..60.0).contains(&s.f64())));
    assert_eq!(
        named(&samples, "turnstile_agent_series_skipped")[0].value,
        "0"
    );
}

#[test]
fn type_conflicts_between_agents_skip_the_later_agent() {
    let r = Arc::new(registry());
    record(
        &r.agents,
        "a",
        &Spec::default().counter("shared", vec![], 1),
    )
    .unwrap();
    record(
        &r.agents,
        "b",
        &Spec::default().gauge("shared", vec![], 2.0),
    )
    .unwrap();
    record(
        &r.agents,
        "c",
        &Spec::default()
            .histogram("shared_hist", vec![], 1.0, 1, vec![])
            .counter("shared", vec![], 5),
    )
    .unwrap();
    record(
        &r.agents,
        "d",
        &Spec::default().gauge("shared_hist_count", vec![], 1.0),
    )
    .unwrap();
    record(
        &r.agents,
        "e",
        &Spec::default().histogram("shared", vec![], 1.0, 1, vec![]),
    )
    .unwrap();
    let text = render(&r);
    let samples = parse_exposition(&text);
    let shared = named(&samples, "shared");
    let ids: Vec<_> = shared
        .iter()
        .map(|s| s.label("agent_id").unwrap())
        .collect();
    assert_eq!(ids, ["a", "c"]);
    assert!(named(&samples, "shared_hist_count").len() == 1);
    assert_eq!(
        named(&samples, "turnstile_agent_series_skipped")[0].value,
        "3"
    );
}
