//! The measurement modes' figures in `summarize`: 0-RTT vs 1-RTT time to first response
//! (`--mode zero-rtt`) and server memory per idle stream (`--mode idle-streams`): medians over a
//! group's runs, their members in the matrix JSON, their targets and their Markdown section.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::report::RunReport;

/// Most server memory per open idle stream that meets the target (issue #7), bytes.
pub const TARGET_BYTES_PER_IDLE_STREAM_MAX: f64 = 1024.0;

/// Medians (and sums of counts) of the mode figures of one (scenario, engine) group; every
/// member is `None` for groups of closed-loop runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExtraFigures {
    /// Median 0-RTT time to first response, p50, µs (runs where 0-RTT was accepted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_rtt_p50_us: Option<f64>,
    /// Median 0-RTT time to first response, p99, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_rtt_p99_us: Option<f64>,
    /// Median 1-RTT (first connection) time to first response, p50, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_rtt_p50_us: Option<f64>,
    /// Median 1-RTT time to first response, p99, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_rtt_p99_us: Option<f64>,
    /// `zero_rtt_p50_us ÷ one_rtt_p50_us`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_rtt_vs_one_rtt_p50: Option<f64>,
    /// 0-RTT attempts accepted, summed over the runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_rtt_accepted: Option<u64>,
    /// 0-RTT attempts rejected, summed over the runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_rtt_rejected: Option<u64>,
    /// Iterations with no ticket allowing early data, summed over the runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_rtt_unavailable: Option<u64>,
    /// Median idle streams held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_streams: Option<f64>,
    /// Median server RSS added per idle stream, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_idle_stream: Option<f64>,
    /// Median server RSS per idle stream counting the connections' memory too, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_idle_stream_all_in: Option<f64>,
    /// Median server RSS per (idle) connection, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_connection: Option<f64>,
    /// Connections the idle streams were spread over (first run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_connections: Option<usize>,
    /// Whether the server's RSS settled in every run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_settled: Option<bool>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

impl ExtraFigures {
    /// The figures of `group` (runs of one scenario and engine).
    pub fn of(group: &[&RunReport]) -> ExtraFigures {
        let mut f = ExtraFigures::default();
        let zero: Vec<_> = group.iter().filter_map(|r| r.zero_rtt.as_ref()).collect();
        if !zero.is_empty() {
            let accepted: Vec<_> = zero.iter().filter(|z| z.zero_rtt_samples > 0).collect();
            let one: Vec<_> = zero.iter().filter(|z| z.one_rtt_samples > 0).collect();
            f.zero_rtt_p50_us = median(accepted.iter().map(|z| z.zero_rtt.p50_us).collect());
            f.zero_rtt_p99_us = median(accepted.iter().map(|z| z.zero_rtt.p99_us).collect());
            f.one_rtt_p50_us = median(one.iter().map(|z| z.one_rtt.p50_us).collect());
            f.one_rtt_p99_us = median(one.iter().map(|z| z.one_rtt.p99_us).collect());
            f.zero_rtt_vs_one_rtt_p50 = div(f.zero_rtt_p50_us, f.one_rtt_p50_us);
            f.zero_rtt_accepted = Some(zero.iter().map(|z| z.zero_rtt_accepted).sum());
            f.zero_rtt_rejected = Some(zero.iter().map(|z| z.zero_rtt_rejected).sum());
            f.zero_rtt_unavailable = Some(zero.iter().map(|z| z.zero_rtt_unavailable).sum());
        }
        let idle: Vec<_> = group
            .iter()
            .filter_map(|r| r.idle_streams.as_ref())
            .filter(|i| i.opened > 0)
            .collect();
        if !idle.is_empty() {
            f.idle_streams = median(idle.iter().map(|i| i.opened as f64).collect());
            f.bytes_per_idle_stream =
                median(idle.iter().map(|i| i.bytes_per_idle_stream).collect());
            f.bytes_per_idle_stream_all_in = median(
                idle.iter()
                    .map(|i| i.bytes_per_idle_stream_all_in)
                    .collect(),
            );
            f.bytes_per_connection = median(idle.iter().map(|i| i.bytes_per_connection).collect());
            f.idle_connections = Some(idle[0].connections);
            f.idle_settled = Some(idle.iter().all(|i| i.settled));
        }
        f
    }

    /// Whether these are `--mode zero-rtt` figures.
    pub fn is_zero_rtt(&self) -> bool {
        self.zero_rtt_accepted.is_some()
    }

    /// Whether these are `--mode idle-streams` figures (their latency and rps mean nothing).
    pub fn is_idle_streams(&self) -> bool {
        self.idle_streams.is_some()
    }

    /// Whether a mode other than the closed loop produced the group.
    pub fn is_mode_run(&self) -> bool {
        self.is_zero_rtt() || self.is_idle_streams()
    }

    /// The members of the scenario entry in the matrix JSON (none for closed-loop groups). For
    /// mode groups they also null the closed loop's figures that mean nothing there: `rps`
    /// (connections or streams opened per second), and for idle streams the latencies.
    pub fn json(&self) -> Map<String, Value> {
        let mut map = match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        if self.is_mode_run() {
            map.insert("rps".to_owned(), Value::Null);
        }
        if self.is_idle_streams() {
            for name in ["p50_us", "p99_us", "p999_us"] {
                map.insert(name.to_owned(), Value::Null);
            }
        }
        map
    }

    /// The targets of a mode group, replacing the closed loop's (which compare request
    /// latency and throughput): (target, met, detail).
    pub fn targets(&self) -> Vec<(String, Option<bool>, String)> {
        let mut t = Vec::new();
        if self.is_zero_rtt() {
            t.push(match self.zero_rtt_vs_one_rtt_p50 {
                Some(r) => (
                    "0-RTT p50 below 1-RTT p50".to_owned(),
                    Some(r < 1.0),
                    format!("{r:.2}×"),
                ),
                None => (
                    "0-RTT p50 below 1-RTT p50".to_owned(),
                    None,
                    "0-RTT not measured".to_owned(),
                ),
            });
            let refused =
                self.zero_rtt_rejected.unwrap_or(0) + self.zero_rtt_unavailable.unwrap_or(0);
            t.push((
                "every 0-RTT attempt accepted".to_owned(),
                Some(refused == 0 && self.zero_rtt_accepted.unwrap_or(0) > 0),
                format!(
                    "{} accepted, {} rejected, {} unavailable",
                    self.zero_rtt_accepted.unwrap_or(0),
                    self.zero_rtt_rejected.unwrap_or(0),
                    self.zero_rtt_unavailable.unwrap_or(0)
                ),
            ));
        }
        if let Some(b) = self.bytes_per_idle_stream {
            t.push((
                format!("≤ {TARGET_BYTES_PER_IDLE_STREAM_MAX:.0} B per idle stream"),
                Some(b <= TARGET_BYTES_PER_IDLE_STREAM_MAX),
                format!("{b:.0} B"),
            ));
        }
        t
    }
}

/// The mode members of a scenario's `ratios` entry (engine ÷ baseline): `zero_rtt_p50`,
/// `zero_rtt_p99`, `one_rtt_p50`, `one_rtt_p99`, `bytes_per_idle_stream`, where both sides have
/// them.
pub fn ratio_json(engine: &ExtraFigures, base: &ExtraFigures) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |name: &str, a: Option<f64>, b: Option<f64>| {
        if a.is_some() || b.is_some() {
            m.insert(name.to_owned(), json!(div(a, b)));
        }
    };
    put("zero_rtt_p50", engine.zero_rtt_p50_us, base.zero_rtt_p50_us);
    put("zero_rtt_p99", engine.zero_rtt_p99_us, base.zero_rtt_p99_us);
    put("one_rtt_p50", engine.one_rtt_p50_us, base.one_rtt_p50_us);
    put("one_rtt_p99", engine.one_rtt_p99_us, base.one_rtt_p99_us);
    put(
        "bytes_per_idle_stream",
        engine.bytes_per_idle_stream,
        base.bytes_per_idle_stream,
    );
    m
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

/// The Markdown section of the mode groups (empty when there are none): one table for 0-RTT,
/// one for idle streams, each engine beside the baseline. `rows` are (scenario, engine,
/// figures) in order.
pub fn markdown(rows: &[(&str, &str, &ExtraFigures)], baseline: &str) -> String {
    let mut md = String::new();
    let find = |scenario: &str, engine: &str| {
        rows.iter()
            .find(|(s, e, _)| *s == scenario && *e == engine)
            .map(|(_, _, f)| *f)
    };
    let zero: Vec<_> = rows.iter().filter(|(_, _, f)| f.is_zero_rtt()).collect();
    if !zero.is_empty() {
        let _ = writeln!(
            md,
            "### 0-RTT: time to first response (connect → checked echo response)\n\n\
             1-RTT: a first connection, full handshake, no ticket. 0-RTT: a resumed connection \
             whose request rode in early data; rejected or impossible 0-RTT attempts are counted, \
             never timed as 0-RTT. Ratios against {baseline} are turnstile ÷ {baseline}.\n"
        );
        let _ = writeln!(
            md,
            "| scenario | engine | 0-RTT p50 / p99 µs | 1-RTT p50 / p99 µs | 0-RTT ÷ 1-RTT p50 | 0-RTT accepted / rejected / unavailable | ÷ {baseline}: 0-RTT p50 | ÷ {baseline}: 1-RTT p50 |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
        for (s, e, f) in zero {
            let base = find(s, baseline).filter(|_| *e != baseline);
            let _ = writeln!(
                md,
                "| {s} | {e} | {} / {} | {} / {} | {} | {} / {} / {} | {} | {} |",
                opt(f.zero_rtt_p50_us, 1),
                opt(f.zero_rtt_p99_us, 1),
                opt(f.one_rtt_p50_us, 1),
                opt(f.one_rtt_p99_us, 1),
                opt(f.zero_rtt_vs_one_rtt_p50, 2),
                f.zero_rtt_accepted.unwrap_or(0),
                f.zero_rtt_rejected.unwrap_or(0),
                f.zero_rtt_unavailable.unwrap_or(0),
                opt(
                    base.and_then(|b| div(f.zero_rtt_p50_us, b.zero_rtt_p50_us)),
                    2
                ),
                opt(
                    base.and_then(|b| div(f.one_rtt_p50_us, b.one_rtt_p50_us)),
                    2
                ),
            );
        }
        md.push('\n');
    }
    let idle: Vec<_> = rows
        .iter()
        .filter(|(_, _, f)| f.is_idle_streams())
        .collect();
    if !idle.is_empty() {
        let _ = writeln!(
            md,
            "### Idle streams: server memory (VmRSS) per open idle stream\n\n\
             Each stream carries the 5-byte header of a request frame that never completes. Per \
             stream: RSS added by opening the streams on established connections; \"with \
             connections\" also counts the connections' own memory. Target: ≤ \
             {TARGET_BYTES_PER_IDLE_STREAM_MAX:.0} B per idle stream.\n"
        );
        let _ = writeln!(
            md,
            "| scenario | engine | streams / connections | bytes per idle stream | with connections | bytes per connection | ÷ {baseline} | settled |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---|");
        for (s, e, f) in idle {
            let base = find(s, baseline).filter(|_| *e != baseline);
            let _ = writeln!(
                md,
                "| {s} | {e} | {} / {} | {} | {} | {} | {} | {} |",
                opt(f.idle_streams, 0),
                f.idle_connections.unwrap_or(0),
                opt(f.bytes_per_idle_stream, 0),
                opt(f.bytes_per_idle_stream_all_in, 0),
                opt(f.bytes_per_connection, 0),
                opt(
                    base.and_then(|b| div(f.bytes_per_idle_stream, b.bytes_per_idle_stream)),
                    2
                ),
                if f.idle_settled == Some(true) {
                    "yes"
                } else {
                    "no"
                },
            );
        }
        md.push('\n');
    }
    md
}

/// A closed-loop run record of `scenario` on `engine`, for tests to add mode figures to.
#[cfg(test)]
pub(crate) fn test_run(scenario: &str, engine: &str) -> RunReport {
    let mut r: RunReport = serde_json::from_str(TEST_RUN).expect("a run record");
    r.scenario = scenario.to_owned();
    r.engine = engine.to_owned();
    r
}

#[cfg(test)]
const TEST_RUN: &str = r#"{"engine":"turnstile","scenario":"s","request":"echo","addr":"x",
    "connections":1,"in_flight":1,"payload_bytes":64,"warmup_s":0,"duration_s":1,
    "elapsed_s":1,"requests":1,"errors":0,"requests_total":1,"errors_total":0,
    "first_error":null,"rps":1,"p50_us":1,"p90_us":1,"p99_us":1,"p999_us":1,"max_us":1,
    "mean_us":1,"server_pid":null,"server_cpu_s":null,"server_cpu_us_per_req":null,
    "server_sched_cpu_us_per_req":null,"server_cores_busy":null,"loadgen_cpu_s":0,
    "loadgen_cpu_us_per_req":0,"loadgen_sched_cpu_us_per_req":null,"loadgen_cores_busy":0,
    "server_switches_per_req":null,"loadgen_switches_per_req":0,
    "server_runqueue_wait_us_per_req":null,"loadgen_runqueue_wait_us_per_req":0,
    "server_threads":null,"loadgen_threads":[],"machine":null,"other_cores_busy":null,
    "clk_tck":100}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idle_streams::IdleStreamFigures;
    use crate::report::Latency;
    use crate::zero_rtt::ZeroRttFigures;

    fn zero(p50_0: f64, p50_1: f64, accepted: u64, rejected: u64) -> RunReport {
        let mut r = test_run("s", "turnstile");
        r.zero_rtt = Some(ZeroRttFigures {
            iterations: (accepted + rejected) as usize,
            zero_rtt: Latency {
                p50_us: p50_0,
                p99_us: p50_0 * 2.0,
                ..Latency::default()
            },
            one_rtt: Latency {
                p50_us: p50_1,
                p99_us: p50_1 * 2.0,
                ..Latency::default()
            },
            zero_rtt_samples: accepted,
            one_rtt_samples: accepted + rejected,
            zero_rtt_accepted: accepted,
            zero_rtt_rejected: rejected,
            ..ZeroRttFigures::default()
        });
        r
    }

    #[test]
    fn closed_loop_runs_have_no_mode_figures() {
        let r = test_run("s", "turnstile");
        let f = ExtraFigures::of(&[&r]);
        assert!(!f.is_mode_run());
        assert!(f.json().is_empty());
        assert!(f.targets().is_empty());
        assert!(markdown(&[("s", "turnstile", &f)], "baseline").is_empty());
    }

    #[test]
    fn zero_rtt_medians_leave_out_runs_without_accepted_0rtt() {
        let a = zero(100.0, 300.0, 10, 0);
        let b = zero(200.0, 500.0, 10, 0);
        let never = zero(0.0, 400.0, 0, 10);
        let f = ExtraFigures::of(&[&a, &b, &never]);
        assert_eq!(f.zero_rtt_p50_us, Some(150.0));
        assert_eq!(f.one_rtt_p50_us, Some(400.0));
        assert_eq!(f.zero_rtt_vs_one_rtt_p50, Some(0.375));
        assert_eq!(
            (f.zero_rtt_accepted, f.zero_rtt_rejected),
            (Some(20), Some(10))
        );
        let json = f.json();
        assert_eq!(json["zero_rtt_p50_us"], 150.0);
        assert!(
            json["rps"].is_null(),
            "connections per second compare nothing"
        );
        assert!(
            !json.contains_key("p50_us"),
            "the 0-RTT p50 stays the entry's p50"
        );
        assert!(!json.contains_key("bytes_per_idle_stream"));
        let targets = f.targets();
        assert_eq!(targets[0].1, Some(true));
        assert_eq!(targets[1].1, Some(false), "a rejection misses the target");

        let none = ExtraFigures::of(&[&never]);
        assert_eq!(
            none.zero_rtt_p50_us, None,
            "rejected 0-RTT is never a 0-RTT time"
        );
        assert_eq!(none.targets()[0].1, None);
    }

    #[test]
    fn idle_stream_figures_ratios_and_markdown() {
        let idle = |bytes: f64| {
            let mut r = test_run("s", "turnstile");
            r.idle_streams = Some(IdleStreamFigures {
                streams: 10,
                opened: 10,
                connections: 1,
                bytes_per_idle_stream: bytes,
                settled: true,
                ..IdleStreamFigures::default()
            });
            r
        };
        let (t1, t2, b1) = (idle(800.0), idle(900.0), idle(2000.0));
        let t = ExtraFigures::of(&[&t1, &t2]);
        let b = ExtraFigures::of(&[&b1]);
        assert_eq!(t.bytes_per_idle_stream, Some(850.0));
        assert!(t.json()["p50_us"].is_null(), "idle streams have no latency");
        assert_eq!(t.targets()[0].1, Some(true));
        assert_eq!(b.targets()[0].1, Some(false));
        let ratios = ratio_json(&t, &b);
        assert_eq!(ratios["bytes_per_idle_stream"], 0.425);
        assert!(!ratios.contains_key("zero_rtt_p50"));
        let md = markdown(
            &[
                ("streams-10", "turnstile", &t),
                ("streams-10", "baseline", &b),
            ],
            "baseline",
        );
        assert!(
            md.contains("| streams-10 | turnstile | 10 / 1 | 850 |"),
            "{md}"
        );
        assert!(md.contains("| 0.42 | yes |"), "{md}");
    }
}
