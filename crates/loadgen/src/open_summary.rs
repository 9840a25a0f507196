//! The open loop's figures in `summarize`: the rate held under the p99 threshold of a rate
//! search (`held_rps`, e.g. `delay50-open`) as a median over a group's runs, its member in the
//! matrix JSON and its ratio, and its lines in the Markdown page.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::report::RunReport;

/// Scenario whose held rate has an absolute target (issue #7).
pub const DELAY50_SCENARIO: &str = "delay50-open";
/// Smallest rate `delay50-open` must hold with p99 at most its threshold, requests per second.
pub const TARGET_DELAY50_HELD_RPS_MIN: f64 = 50_000.0;

/// Medians of the open-loop figures of one (scenario, engine) group; `None` for closed-loop
/// groups (and `held_rps` also without a threshold).
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpenFigures {
    /// Median target rate of the steps the runs report, requests per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rps: Option<f64>,
    /// Lower median of the highest rate held over the runs, requests per second (0: none held):
    /// with an even number of runs the lower of the two middle ones, so it is a rate that was
    /// run and held, never an average of two steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_rps: Option<f64>,
    /// The p99 threshold of the search, milliseconds (first run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_max_ms: Option<f64>,
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

fn lower_median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len().checked_sub(1)? / 2).copied()
}

/// `f` over `group` when every run has a figure.
fn all(group: &[&RunReport], f: impl Fn(&RunReport) -> Option<f64>) -> Option<Vec<f64>> {
    group.iter().map(|r| f(r)).collect()
}

impl OpenFigures {
    /// The figures of a group of runs.
    pub fn of(group: &[&RunReport]) -> OpenFigures {
        OpenFigures {
            target_rps: all(group, |r| r.open_loop.as_ref().map(|o| o.target_rps)).and_then(median),
            held_rps: all(group, |r| r.open_loop.as_ref().and_then(|o| o.held_rps))
                .and_then(lower_median),
            p99_max_ms: group
                .first()
                .and_then(|r| r.open_loop.as_ref())
                .and_then(|o| o.p99_max_ms),
        }
    }

    /// Members for the group's entry in the matrix JSON.
    pub fn json(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }
}

/// Members for a scenario's ratio entry: `held_rps` engine ÷ baseline, when both held a rate.
pub fn ratio_json(engine: &OpenFigures, base: &OpenFigures) -> Map<String, Value> {
    let mut map = Map::new();
    if let (Some(e), Some(b)) = (engine.held_rps, base.held_rps) {
        map.insert(
            "held_rps".into(),
            if b > 0.0 { json!(e / b) } else { Value::Null },
        );
    }
    map
}

/// Targets of an open-loop scenario in the ratio table: the rate held against the baseline's,
/// and for `delay50-open` the absolute target. Entries are (target, met, detail).
pub fn targets(
    scenario: &str,
    engine: &OpenFigures,
    base: &OpenFigures,
) -> Vec<(String, Option<bool>, String)> {
    let mut out = Vec::new();
    if let (Some(e), Some(b)) = (engine.held_rps, base.held_rps) {
        let detail = if b > 0.0 {
            format!("{e:.0} vs {b:.0} rps ({:.2}×)", e / b)
        } else {
            format!("{e:.0} vs {b:.0} rps")
        };
        out.push(("rate held vs baseline".to_owned(), None, detail));
    }
    if scenario == DELAY50_SCENARIO {
        let target = format!("held ≥ {TARGET_DELAY50_HELD_RPS_MIN:.0} rps");
        out.push(match engine.held_rps {
            Some(h) => (
                target,
                Some(h >= TARGET_DELAY50_HELD_RPS_MIN),
                format!("{h:.0} rps"),
            ),
            None => (target, None, "no threshold given".to_owned()),
        });
    }
    out
}

/// Lines for the matrix section: the rate each engine held, the ratio, and the target of
/// `delay50-open`. `rows` are (scenario, engine, figures) in order; nothing without a held rate.
pub fn markdown(rows: &[(&str, &str, &OpenFigures)], baseline: &str) -> String {
    let mut md = String::new();
    let mut scenarios: Vec<&str> = Vec::new();
    for (s, _, f) in rows {
        if f.held_rps.is_some() && !scenarios.contains(s) {
            scenarios.push(s);
        }
    }
    for scenario in scenarios {
        let of = |engine: &str| {
            rows.iter()
                .find(|(s, e, _)| *s == scenario && *e == engine)
                .map(|(_, _, f)| *f)
        };
        let held = |f: Option<&OpenFigures>| {
            f.and_then(|f| f.held_rps)
                .map_or_else(|| "not measured".to_owned(), |h| format!("{h:.0} rps"))
        };
        let t = of("turnstile");
        let b = of(baseline);
        let max = rows
            .iter()
            .find_map(|(s, _, f)| (*s == scenario).then_some(f.p99_max_ms).flatten())
            .map_or_else(String::new, |m| format!(" with p99 ≤ {m} ms"));
        let _ = write!(
            md,
            "- Highest rate held{max}, `{scenario}`: turnstile {}, {baseline} {}",
            held(t),
            held(b)
        );
        if let Some(Value::Number(r)) = t
            .zip(b)
            .and_then(|(t, b)| ratio_json(t, b).remove("held_rps"))
        {
            let _ = write!(md, " (ratio {:.2})", r.as_f64().unwrap_or(f64::NAN));
        }
        if scenario == DELAY50_SCENARIO
            && let Some(h) = t.and_then(|f| f.held_rps)
        {
            let met = if h >= TARGET_DELAY50_HELD_RPS_MIN {
                "met"
            } else {
                "not met"
            };
            let _ = write!(
                md,
                "; target ≥ {TARGET_DELAY50_HELD_RPS_MIN:.0} rps held: {met}"
            );
        }
        md.push_str(".\n");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(held: f64) -> OpenFigures {
        OpenFigures {
            target_rps: Some(held),
            held_rps: Some(held),
            p99_max_ms: Some(52.0),
        }
    }

    #[test]
    fn held_rates_go_to_the_json_the_ratio_and_the_page() {
        let t = figures(20_000.0);
        let b = figures(10_000.0);
        assert_eq!(t.json()["held_rps"], 20_000.0);
        assert!(OpenFigures::default().json().is_empty());
        assert_eq!(ratio_json(&t, &b)["held_rps"], 2.0);
        assert!(ratio_json(&t, &figures(0.0))["held_rps"].is_null());
        assert!(ratio_json(&t, &OpenFigures::default()).is_empty());
        let md = markdown(
            &[
                ("delay50-open", "turnstile", &t),
                ("delay50-open", "baseline", &b),
                ("echo-64", "turnstile", &OpenFigures::default()),
            ],
            "baseline",
        );
        assert_eq!(
            md,
            "- Highest rate held with p99 ≤ 52 ms, `delay50-open`: turnstile 20000 rps, \
             baseline 10000 rps (ratio 2.00); target ≥ 50000 rps held: not met.\n"
        );
        let t_targets = targets("delay50-open", &t, &b);
        assert_eq!(t_targets[0].2, "20000 vs 10000 rps (2.00×)");
        assert_eq!(t_targets[1].1, Some(false));
        assert_eq!(
            targets("delay50-open", &figures(50_000.0), &b)[1].1,
            Some(true)
        );
        assert!(targets("other-open", &OpenFigures::default(), &b).is_empty());
        let alone = markdown(
            &[("delay50-open", "turnstile", &figures(60_000.0))],
            "baseline",
        );
        assert!(alone.contains("baseline not measured; target ≥ 50000 rps held: met."));
    }

    #[test]
    fn a_group_needs_every_run_to_have_the_figure() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
        assert_eq!(lower_median(vec![5000.0, 0.0]), Some(0.0));
        assert_eq!(lower_median(vec![5000.0, 2000.0, 10000.0]), Some(5000.0));
        assert_eq!(lower_median(vec![]), None);
        assert!(OpenFigures::of(&[]).held_rps.is_none());
    }
}
