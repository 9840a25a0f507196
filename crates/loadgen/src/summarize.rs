//! `turnstile-load summarize`: many runs' JSON records → one JSON summary and one Markdown page.
//!
//! Runs are grouped by (scenario, engine) in the order first seen; each figure of a group is
//! the median over its rounds. Every engine is compared with the baseline engine of the same
//! scenario (engine ÷ baseline), against the front door's targets: server CPU per request at
//! most 0.4×, serial p50 at most 0.5×, requests per second at least 2× where the load generator
//! is not the limit.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::extra_figures::{self, ExtraFigures};
use crate::open_summary::{self, OpenFigures};
use crate::report::RunReport;

/// Largest server CPU per request ratio (engine ÷ baseline) that meets the target.
pub const TARGET_CPU_RATIO_MAX: f64 = 0.4;
/// Largest serial p50 ratio that meets the target.
pub const TARGET_SERIAL_P50_RATIO_MAX: f64 = 0.5;
/// Smallest requests-per-second ratio that meets the target.
pub const TARGET_RPS_RATIO_MIN: f64 = 2.0;
/// Load generator cores busy from which it is taken to be the limit (its one thread is full).
pub const LOADGEN_BOUND_CORES: f64 = 0.9;

/// Options of `summarize`.
#[derive(Debug, Clone, clap::Args)]
pub struct SummarizeArgs {
    /// Run records written by `turnstile-load --json`.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Engine every other engine is compared with.
    #[arg(long, default_value = "baseline")]
    pub baseline: String,
    /// Where to write the JSON summary.
    #[arg(long)]
    pub out_json: Option<PathBuf>,
    /// Where to write the Markdown summary.
    #[arg(long)]
    pub out_md: Option<PathBuf>,
    /// Title of the Markdown page.
    #[arg(long, default_value = "Echo benchmark")]
    pub title: String,
    /// A line for the notes section (machine, core layout, settings); repeatable.
    #[arg(long)]
    pub note: Vec<String>,
    /// Cores of the machine, to tell when it is saturated.
    #[arg(long, default_value_t = 0)]
    pub cores: usize,
    /// Leave runs during which other processes kept more than this many cores busy out of the
    /// medians, as long as a group keeps at least two runs (they stay in the list of runs).
    #[arg(long)]
    pub max_other_cores: Option<f64>,
    /// Also write the scenario-matrix JSON of `make bench` (format in `benches/README.md`).
    #[arg(long)]
    pub out_bench_json: Option<PathBuf>,
    /// Also write an SVG plot of the latency percentiles (p50 … p99.9) of every group.
    #[arg(long)]
    pub out_svg: Option<PathBuf>,
    /// A (scenario, engine) not measured, as `scenario:engine:why`; it is listed with null
    /// figures (never made up). Repeatable.
    #[arg(long)]
    pub missing: Vec<String>,
}

/// Medians of one (scenario, engine) group.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario label.
    pub scenario: String,
    /// Engine label.
    pub engine: String,
    /// Requests in flight.
    pub in_flight: usize,
    /// Connections.
    pub connections: usize,
    /// Rounds (runs) in the group.
    pub rounds: usize,
    /// Runs the medians are taken over (rounds less those left out for competing load).
    pub rounds_used: usize,
    /// Median measured requests.
    pub requests: f64,
    /// Errors summed over the rounds.
    pub errors: u64,
    /// Median requests per second.
    pub rps: f64,
    /// Median p50, µs.
    pub p50_us: f64,
    /// Median p90, µs.
    pub p90_us: f64,
    /// Median p99, µs.
    pub p99_us: f64,
    /// Median p99.9, µs.
    pub p999_us: f64,
    /// Median server CPU per request (utime + stime), µs.
    pub server_cpu_us_per_req: Option<f64>,
    /// Median server CPU per request (schedstat), µs.
    pub server_sched_cpu_us_per_req: Option<f64>,
    /// Median load generator CPU per request, µs.
    pub loadgen_cpu_us_per_req: f64,
    /// Median server cores busy.
    pub server_cores_busy: Option<f64>,
    /// Median load generator cores busy.
    pub loadgen_cores_busy: f64,
    /// Median server context switches per request.
    pub server_switches_per_req: Option<f64>,
    /// Median load generator context switches per request.
    pub loadgen_switches_per_req: f64,
    /// Median load generator run-queue wait per request, µs.
    pub loadgen_runqueue_wait_us_per_req: f64,
    /// Median cores used by other processes during the window.
    pub other_cores_busy: Option<f64>,
    /// Median server resident set size at the end of the window, bytes.
    pub server_rss_bytes: Option<f64>,
    /// `--mode zero-rtt` / `--mode idle-streams` figures (absent for the closed loop).
    #[serde(flatten)]
    pub extra: ExtraFigures,
    /// Open-loop figures: the rate held (absent for the closed loop).
    #[serde(flatten)]
    pub open: OpenFigures,
}

/// One engine against the baseline in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Scenario label.
    pub scenario: String,
    /// Engine compared with the baseline.
    pub engine: String,
    /// p50 engine ÷ baseline (lower is better).
    pub p50: f64,
    /// p99 engine ÷ baseline (lower is better).
    pub p99: f64,
    /// rps engine ÷ baseline (higher is better).
    pub rps: f64,
    /// Server CPU per request engine ÷ baseline (lower is better).
    pub server_cpu_per_req: Option<f64>,
    /// The same from schedstat.
    pub server_sched_cpu_per_req: Option<f64>,
    /// Whether the load generator was the limit in either run (so rps compares nothing).
    pub loadgen_bound: bool,
    /// Verdicts on the targets that apply: (target, met, detail).
    pub targets: Vec<(String, Option<bool>, String)>,
}

/// The whole summary.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Page title.
    pub title: String,
    /// Notes (machine, layout, settings).
    pub notes: Vec<String>,
    /// Baseline engine label.
    pub baseline: String,
    /// Competing load above which runs were left out of the medians.
    pub max_other_cores: Option<f64>,
    /// Medians per group.
    pub rows: Vec<Row>,
    /// Ratios against the baseline.
    pub ratios: Vec<Ratio>,
    /// Every run, in order.
    pub runs: Vec<RunReport>,
}

/// Reads the runs, writes the outputs, and returns the Markdown page.
pub fn summarize(args: &SummarizeArgs) -> Result<String, String> {
    let mut runs = Vec::with_capacity(args.runs.len());
    for path in &args.runs {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let run: RunReport = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a run record: {e}", path.display()))?;
        runs.push(run);
    }
    let summary = build(args, runs);
    let missing = parse_missing(&args.missing)?;
    let mut md = markdown(&summary, args.cores);
    if args.out_bench_json.is_some() || !missing.is_empty() {
        let at = md.find("## Results").unwrap_or(md.len());
        md.insert_str(at, &bench_markdown(&summary, &missing));
    }
    if let Some(path) = &args.out_svg {
        std::fs::write(path, svg(&summary))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.out_bench_json {
        let json = bench_json(&summary, &missing, args.cores);
        let json = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.out_json {
        let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.out_md {
        std::fs::write(path, &md).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(md)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn median_opt(v: Vec<Option<f64>>) -> Option<f64> {
    let v: Option<Vec<f64>> = v.into_iter().collect();
    v.filter(|v| !v.is_empty()).map(median)
}

fn build(args: &SummarizeArgs, runs: Vec<RunReport>) -> Summary {
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in &runs {
        let key = (r.scenario.clone(), r.engine.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    // Scenarios in first-seen order, each with its engines in first-seen order.
    let mut scenarios: Vec<String> = Vec::new();
    for (s, _) in &keys {
        if !scenarios.contains(s) {
            scenarios.push(s.clone());
        }
    }
    let mut rows = Vec::new();
    for scenario in &scenarios {
        for (_, engine) in keys.iter().filter(|(s, _)| s == scenario) {
            let all: Vec<&RunReport> = runs
                .iter()
                .filter(|r| &r.scenario == scenario && &r.engine == engine)
                .collect();
            let quiet: Vec<&RunReport> = match args.max_other_cores {
                Some(max) => all
                    .iter()
                    .copied()
                    .filter(|r| r.other_cores_busy.is_none_or(|o| o <= max))
                    .collect(),
                None => all.clone(),
            };
            let group = if quiet.len() >= 2 { quiet } else { all.clone() };
            let m = |f: &dyn Fn(&RunReport) -> f64| median(group.iter().map(|r| f(r)).collect());
            let mo = |f: &dyn Fn(&RunReport) -> Option<f64>| {
                median_opt(group.iter().map(|r| f(r)).collect())
            };
            rows.push(Row {
                scenario: scenario.clone(),
                engine: engine.clone(),
                in_flight: group[0].in_flight,
                connections: group[0].connections,
                rounds: all.len(),
                rounds_used: group.len(),
                requests: m(&|r| r.requests as f64),
                errors: group.iter().map(|r| r.errors).sum(),
                rps: m(&|r| r.rps),
                p50_us: m(&|r| r.latency.p50_us),
                p90_us: m(&|r| r.latency.p90_us),
                p99_us: m(&|r| r.latency.p99_us),
                p999_us: m(&|r| r.latency.p999_us),
                server_cpu_us_per_req: mo(&|r| r.server_cpu_us_per_req),
                server_sched_cpu_us_per_req: mo(&|r| r.server_sched_cpu_us_per_req),
                loadgen_cpu_us_per_req: m(&|r| r.loadgen_cpu_us_per_req),
                server_cores_busy: mo(&|r| r.server_cores_busy),
                loadgen_cores_busy: m(&|r| r.loadgen_cores_busy),
                server_switches_per_req: mo(&|r| r.server_switches_per_req),
                loadgen_switches_per_req: m(&|r| r.loadgen_switches_per_req),
                loadgen_runqueue_wait_us_per_req: m(&|r| r.loadgen_runqueue_wait_us_per_req),
                other_cores_busy: mo(&|r| r.other_cores_busy),
                server_rss_bytes: mo(&|r| r.server_rss_bytes.map(|b| b as f64)),
                extra: ExtraFigures::of(&group),
                open: OpenFigures::of(&group),
            });
        }
    }
    let mut ratios = Vec::new();
    for scenario in &scenarios {
        let Some(base) = rows
            .iter()
            .find(|r| &r.scenario == scenario && r.engine == args.baseline)
        else {
            continue;
        };
        for row in rows
            .iter()
            .filter(|r| &r.scenario == scenario && r.engine != args.baseline)
        {
            ratios.push(ratio(row, base));
        }
    }
    Summary {
        title: args.title.clone(),
        notes: args.note.clone(),
        baseline: args.baseline.clone(),
        max_other_cores: args.max_other_cores,
        rows,
        ratios,
        runs,
    }
}

fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn ratio(row: &Row, base: &Row) -> Ratio {
    let p50 = row.p50_us / base.p50_us;
    let p99 = row.p99_us / base.p99_us;
    let rps = row.rps / base.rps;
    let cpu = div(row.server_cpu_us_per_req, base.server_cpu_us_per_req);
    let sched = div(
        row.server_sched_cpu_us_per_req,
        base.server_sched_cpu_us_per_req,
    );
    let loadgen_bound = row.loadgen_cores_busy >= LOADGEN_BOUND_CORES
        || base.loadgen_cores_busy >= LOADGEN_BOUND_CORES;
    let mut targets = Vec::new();
    targets.push(match cpu {
        Some(c) => (
            format!("server CPU/req ≤ {TARGET_CPU_RATIO_MAX}×"),
            Some(c <= TARGET_CPU_RATIO_MAX),
            format!("{c:.2}×"),
        ),
        None => (
            format!("server CPU/req ≤ {TARGET_CPU_RATIO_MAX}×"),
            None,
            "not measured".into(),
        ),
    });
    if row.in_flight == 1 {
        targets.push((
            format!("serial p50 ≤ {TARGET_SERIAL_P50_RATIO_MAX}×"),
            Some(p50 <= TARGET_SERIAL_P50_RATIO_MAX),
            format!("{p50:.2}×"),
        ));
    }
    targets.push(if loadgen_bound {
        (
            format!("rps ≥ {TARGET_RPS_RATIO_MIN}×"),
            None,
            format!("{rps:.2}×, but the load generator is the limit"),
        )
    } else {
        (
            format!("rps ≥ {TARGET_RPS_RATIO_MIN}×"),
            Some(rps >= TARGET_RPS_RATIO_MIN),
            format!("{rps:.2}×"),
        )
    });
    // Request latency and throughput targets mean nothing for connection set-up or idle
    // streams: the mode's own targets replace them, and rps is not compared.
    let rps = if row.extra.is_mode_run() {
        targets = row.extra.targets();
        f64::NAN
    } else {
        rps
    };
    if row.open.target_rps.is_some() {
        // Open loop: both engines are sent the same rates, so rps compares nothing; the rate
        // held does.
        targets.retain(|(t, _, _)| !t.starts_with("rps"));
        targets.extend(open_summary::targets(&row.scenario, &row.open, &base.open));
    }
    Ratio {
        scenario: row.scenario.clone(),
        engine: row.engine.clone(),
        p50,
        p99,
        rps,
        server_cpu_per_req: cpu,
        server_sched_cpu_per_req: sched,
        loadgen_bound,
        targets,
    }
}

fn f1(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
}

fn f2(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"))
}

fn markdown(s: &Summary, cores: usize) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", s.title);
    for note in &s.notes {
        let _ = writeln!(md, "- {note}");
    }
    if !s.notes.is_empty() {
        md.push('\n');
    }
    if let Some(max) = s.max_other_cores {
        let _ = writeln!(
            md,
            "Runs during which other processes kept more than {max} cores busy are left out of \
             the medians (marked `noisy` below) while a group keeps at least two runs.\n"
        );
    }
    let _ = writeln!(
        md,
        "## Results (median over rounds)\n\n\
         CPU figures are the server's utime + stime over the measured window divided by the \
         requests completed in it; `sched` is the same from the threads' schedstat (ns \
         resolution). `cores busy` is CPU time over the window: 1.0 for the load generator means \
         its one thread was saturated. `other processes` is the rest of the machine's busy time \
         (`/proc/stat`) over the window: work that competed for the same cores.\n"
    );
    let _ = writeln!(
        md,
        "| scenario | engine | in flight / conns | rounds used / run | requests | errors | rps | p50 µs | p99 µs | p99.9 µs | server CPU µs/req | (sched) | loadgen CPU µs/req | server cores busy | loadgen cores busy | server / loadgen ctx switches per req | loadgen run-queue wait µs/req | other processes, cores busy |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &s.rows {
        let saturated = cores > 0
            && r.server_cores_busy.unwrap_or(0.0)
                + r.loadgen_cores_busy
                + r.other_cores_busy.unwrap_or(0.0)
                >= 0.9 * cores as f64;
        let _ = writeln!(
            md,
            "| {} | {} | {} / {} | {} / {} | {:.0} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {:.1} | {}{} | {:.2} | {} / {:.2} | {:.1} | {} |",
            r.scenario,
            r.engine,
            r.in_flight,
            r.connections,
            r.rounds_used,
            r.rounds,
            r.requests,
            r.errors,
            r.rps,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            f1(r.server_cpu_us_per_req),
            f1(r.server_sched_cpu_us_per_req),
            r.loadgen_cpu_us_per_req,
            f2(r.server_cores_busy),
            if saturated { " (machine full)" } else { "" },
            r.loadgen_cores_busy,
            f2(r.server_switches_per_req),
            r.loadgen_switches_per_req,
            r.loadgen_runqueue_wait_us_per_req,
            f2(r.other_cores_busy),
        );
    }
    let _ = writeln!(
        md,
        "\n## Ratios: engine ÷ {} (medians)\n\n\
         Lower is better for latency and CPU, higher for rps. Targets: server CPU/req ≤ \
         {TARGET_CPU_RATIO_MAX}×, serial p50 ≤ {TARGET_SERIAL_P50_RATIO_MAX}×, rps ≥ \
         {TARGET_RPS_RATIO_MIN}× where the load generator is not the limit.\n",
        s.baseline
    );
    let _ = writeln!(
        md,
        "| scenario | engine | p50 | p99 | rps | server CPU/req | (sched) | targets |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---|");
    for r in &s.ratios {
        let targets: Vec<String> = r
            .targets
            .iter()
            .map(|(name, met, detail)| {
                let mark = match met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "n/a",
                };
                format!("{name}: {mark} ({detail})")
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.engine,
            f2(Some(r.p50)),
            f2(Some(r.p99)),
            f2(Some(r.rps)),
            f2(r.server_cpu_per_req),
            f2(r.server_sched_cpu_per_req),
            targets.join("; ")
        );
    }
    let _ = writeln!(md, "\n## Every run, in the order run\n");
    let _ = writeln!(
        md,
        "| # | scenario | engine | requests | errors | rps | p50 µs | p99 µs | p99.9 µs | server CPU µs/req | (sched) | loadgen CPU µs/req | server / loadgen ctx switches per req | loadgen run-queue wait µs/req | other processes, cores busy | threads: name@last CPU, cores busy |"
    );
    let _ = writeln!(
        md,
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for (i, r) in s.runs.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {:.1} | {} / {:.2} | {:.1} | {}{} | {} |",
            i + 1,
            r.scenario,
            r.engine,
            r.requests,
            r.errors,
            r.rps,
            r.latency.p50_us,
            r.latency.p99_us,
            r.latency.p999_us,
            f1(r.server_cpu_us_per_req),
            f1(r.server_sched_cpu_us_per_req),
            r.loadgen_cpu_us_per_req,
            f2(r.server_switches_per_req),
            r.loadgen_switches_per_req,
            r.loadgen_runqueue_wait_us_per_req,
            f2(r.other_cores_busy),
            match (s.max_other_cores, r.other_cores_busy) {
                (Some(max), Some(o)) if o > max => " noisy",
                _ => "",
            },
            r.placement()
        );
    }
    md
}

/// A (scenario, engine) pair that was not measured, and why.
#[derive(Debug, Clone)]
pub struct Missing {
    /// Scenario label.
    pub scenario: String,
    /// Engine label.
    pub engine: String,
    /// Why it is missing.
    pub why: String,
}

fn parse_missing(list: &[String]) -> Result<Vec<Missing>, String> {
    list.iter()
        .map(|m| {
            let mut parts = m.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(s), Some(e), why) if !s.is_empty() && !e.is_empty() => Ok(Missing {
                    scenario: s.to_owned(),
                    engine: e.to_owned(),
                    why: why.unwrap_or("not measured").to_owned(),
                }),
                _ => Err(format!("--missing {m:?}: expected scenario:engine:why")),
            }
        })
        .collect()
}

fn row<'a>(s: &'a Summary, scenario: &str, engine: &str) -> Option<&'a Row> {
    s.rows
        .iter()
        .find(|r| r.scenario == scenario && r.engine == engine)
}

/// `a - b` of two optional figures.
fn minus(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? - b?)
}

/// Added latency per agent (`agent1-serial` − `echo-serial`) and added server CPU per request
/// at 64 in flight (`agent1-64` − `echo-64`) of one engine.
fn added_per_agent(s: &Summary, engine: &str) -> (Option<f64>, Option<f64>, Option<f64>) {
    let a1 = row(s, "agent1-serial", engine);
    let e1 = row(s, "echo-serial", engine);
    let a64 = row(s, "agent1-64", engine);
    let e64 = row(s, "echo-64", engine);
    (
        minus(a1.map(|r| r.p50_us), e1.map(|r| r.p50_us)),
        minus(a1.map(|r| r.p99_us), e1.map(|r| r.p99_us)),
        minus(
            a64.and_then(|r| r.server_cpu_us_per_req),
            e64.and_then(|r| r.server_cpu_us_per_req),
        ),
    )
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    serde_json::json!({ "cpu": cpu, "kernel": kernel })
}

/// The scenario-matrix JSON (`benches/results/latest.json`).
fn bench_json(s: &Summary, missing: &[Missing], cores: usize) -> serde_json::Value {
    use serde_json::{Value, json};
    let mut m = machine();
    let cores = if cores > 0 {
        cores
    } else {
        std::thread::available_parallelism().map_or(0, |n| n.get())
    };
    m["cores"] = json!(cores);
    let mut scenarios: Vec<Value> = s
        .rows
        .iter()
        .map(|r| {
            let mut entry = json!({
                "name": r.scenario, "engine": r.engine,
                "p50_us": r.p50_us, "p99_us": r.p99_us, "p999_us": r.p999_us, "rps": r.rps,
                "rss_bytes": r.server_rss_bytes.map(|b| b.round() as u64),
                "requests": r.requests.round() as u64, "errors": r.errors,
                "server_cpu_us_per_req": r.server_cpu_us_per_req,
                "loadgen_cpu_us_per_req": r.loadgen_cpu_us_per_req,
                "in_flight": r.in_flight, "connections": r.connections,
                "rounds_used": r.rounds_used, "rounds": r.rounds,
            });
            if let Value::Object(map) = &mut entry {
                map.extend(r.extra.json());
                map.extend(r.open.json());
            }
            entry
        })
        .collect();
    for x in missing {
        scenarios.push(json!({
            "name": x.scenario, "engine": x.engine,
            "p50_us": null, "p99_us": null, "p999_us": null, "rps": null, "rss_bytes": null,
            "requests": null, "errors": null, "server_cpu_us_per_req": null,
            "loadgen_cpu_us_per_req": null, "missing": x.why,
        }));
    }
    let mut ratios = serde_json::Map::new();
    let mut names: Vec<&str> = s.rows.iter().map(|r| r.scenario.as_str()).collect();
    names.extend(missing.iter().map(|x| x.scenario.as_str()));
    for name in names {
        if ratios.contains_key(name) {
            continue;
        }
        let r = s
            .ratios
            .iter()
            .find(|r| r.scenario == name && r.engine == "turnstile");
        ratios.insert(
            name.to_owned(),
            match r {
                Some(r) => {
                    let mut entry = json!({
                        "p50": r.p50, "p99": r.p99, "rps": r.rps,
                        "server_cpu_us_per_req": r.server_cpu_per_req,
                    });
                    if let (Value::Object(map), Some(t), Some(b)) = (
                        &mut entry,
                        row(s, name, "turnstile"),
                        row(s, name, &s.baseline),
                    ) {
                        map.extend(extra_figures::ratio_json(&t.extra, &b.extra));
                        map.extend(open_summary::ratio_json(&t.open, &b.open));
                    }
                    entry
                }
                None => Value::Null,
            },
        );
    }
    let mut added = serde_json::Map::new();
    let mut added_cpu = serde_json::Map::new();
    for engine in ["turnstile", s.baseline.as_str()] {
        let (p50, p99, cpu) = added_per_agent(s, engine);
        added.insert(engine.to_owned(), json!({ "p50": p50, "p99": p99 }));
        added_cpu.insert(engine.to_owned(), json!(cpu));
    }
    json!({
        "machine": m,
        "scenarios": scenarios,
        "ratios": ratios,
        "added_per_agent_us": added,
        "added_per_agent_server_cpu_us_per_req_at_64": added_cpu,
    })
}

/// The compact matrix at the top of `latest.md`: both engines side by side and their ratios.
fn bench_markdown(s: &Summary, missing: &[Missing]) -> String {
    let mut md = String::new();
    let mut names: Vec<&str> = Vec::new();
    for n in s
        .rows
        .iter()
        .map(|r| r.scenario.as_str())
        .chain(missing.iter().map(|x| x.scenario.as_str()))
    {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let _ = writeln!(
        md,
        "## Scenario matrix: turnstile vs {} (medians; ratio = turnstile ÷ {})\n",
        s.baseline, s.baseline
    );
    let _ = writeln!(
        md,
        "| scenario | turnstile p50 / p99 µs | {b} p50 / p99 µs | turnstile rps | {b} rps | turnstile CPU µs/req | {b} CPU µs/req | ratio p50 | ratio p99 | ratio rps | ratio CPU/req |",
        b = s.baseline
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let cell = |r: Option<&Row>, scenario: &str, engine: &str, f: &dyn Fn(&Row) -> String| match r {
        Some(r) => f(r),
        None if missing
            .iter()
            .any(|x| x.scenario == scenario && x.engine == engine) =>
        {
            "missing".to_owned()
        }
        None => "–".to_owned(),
    };
    for name in &names {
        let t = row(s, name, "turnstile");
        let b = row(s, name, &s.baseline);
        let lat = |r: &Row| match r.extra.is_idle_streams() {
            true => "–".to_owned(),
            false => format!("{:.1} / {:.1}", r.p50_us, r.p99_us),
        };
        let rps = |r: &Row| match r.extra.is_mode_run() {
            true => "–".to_owned(),
            false => format!("{:.0}", r.rps),
        };
        let cpu = |r: &Row| f1(r.server_cpu_us_per_req);
        let ratio = s
            .ratios
            .iter()
            .find(|r| &r.scenario == name && r.engine == "turnstile");
        let rr =
            |f: &dyn Fn(&Ratio) -> Option<f64>| ratio.map_or_else(|| "–".to_owned(), |r| f2(f(r)));
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(t, name, "turnstile", &lat),
            cell(b, name, &s.baseline, &lat),
            cell(t, name, "turnstile", &rps),
            cell(b, name, &s.baseline, &rps),
            cell(t, name, "turnstile", &cpu),
            cell(b, name, &s.baseline, &cpu),
            rr(&|r| Some(r.p50)),
            rr(&|r| Some(r.p99)),
            rr(&|r| Some(r.rps)),
            rr(&|r| r.server_cpu_per_req),
        );
    }
    md.push('\n');
    let modes: Vec<(&str, &str, &ExtraFigures)> = s
        .rows
        .iter()
        .map(|r| (r.scenario.as_str(), r.engine.as_str(), &r.extra))
        .collect();
    md.push_str(&extra_figures::markdown(&modes, &s.baseline));
    let open: Vec<(&str, &str, &OpenFigures)> = s
        .rows
        .iter()
        .map(|r| (r.scenario.as_str(), r.engine.as_str(), &r.open))
        .collect();
    md.push_str(&open_summary::markdown(&open, &s.baseline));
    for engine in ["turnstile", s.baseline.as_str()] {
        let (p50, p99, cpu) = added_per_agent(s, engine);
        if p50.is_some() || cpu.is_some() {
            let _ = writeln!(
                md,
                "- Added per agent, {engine}: p50 {} µs, p99 {} µs (`agent1-serial` − `echo-serial`); server CPU {} µs/req at 64 in flight (`agent1-64` − `echo-64`).",
                f1(p50),
                f1(p99),
                f1(cpu)
            );
        }
    }
    if !missing.is_empty() {
        let _ = writeln!(md, "\nNot measured (null in the JSON, never estimated):\n");
        for x in missing {
            let _ = writeln!(md, "- `{}` on {}: {}", x.scenario, x.engine, x.why);
        }
    }
    md.push('\n');
    md
}

/// Latency percentiles of every (scenario, engine) group as one SVG: x = percentile on a
/// "nines" scale (p50, p90, p99, p99.9), y = latency on a log scale; one line per group, one
/// colour per scenario, solid for turnstile and dashed for the baseline.
fn svg(s: &Summary) -> String {
    const W: f64 = 900.0;
    const H: f64 = 520.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 260.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    const COLOURS: [&str; 8] = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    ];
    let points = |r: &Row| [r.p50_us, r.p90_us, r.p99_us, r.p999_us];
    let all: Vec<f64> = s
        .rows
        .iter()
        .flat_map(points)
        .filter(|v| *v > 0.0)
        .collect();
    let lo = all
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::INFINITY, f64::min);
    let lo = if lo.is_finite() { lo.max(1.0) } else { 1.0 };
    let hi = all
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(lo * 10.0);
    // Whole decades, at most 12 of them (1 µs … 1000 s).
    let lo_e = lo.log10().floor().clamp(0.0, 11.0);
    let hi_e = hi.log10().ceil().clamp(lo_e + 1.0, 12.0);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |i: usize| LEFT + plot_w * i as f64 / 3.0;
    let y = |v: f64| TOP + plot_h * (1.0 - (v.max(lo).log10() - lo_e) / (hi_e - lo_e));
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="22" font-size="15">{} — latency percentiles (µs, log scale)</text>"#,
        escape(&s.title)
    );
    let mut e = lo_e;
    while e <= hi_e {
        let v = 10f64.powf(e);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"##,
            LEFT + plot_w,
            y(v),
            y(v),
            LEFT - 6.0,
            y(v) + 4.0
        );
        e += 1.0;
    }
    for (i, label) in ["p50", "p90", "p99", "p99.9"].iter().enumerate() {
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{TOP}" y2="{:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            x(i),
            x(i),
            TOP + plot_h,
            x(i),
            TOP + plot_h + 18.0
        );
    }
    let mut scenarios: Vec<&str> = Vec::new();
    for r in &s.rows {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    for (n, r) in s.rows.iter().enumerate() {
        if r.extra.is_idle_streams() {
            continue; // no latency to plot
        }
        let colour =
            COLOURS[scenarios.iter().position(|x| *x == r.scenario).unwrap_or(0) % COLOURS.len()];
        let dash = if r.engine == s.baseline {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let pts: Vec<String> = points(r)
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
            pts.join(" ")
        );
        let ly = TOP + 10.0 + 18.0 * n as f64;
        let lx = W - RIGHT + 20.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{} · {}</text>"#,
            lx + 28.0,
            lx + 34.0,
            ly + 4.0,
            escape(&r.scenario),
            escape(&r.engine)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        assert_eq!(median_opt(vec![Some(1.0), None]), None);
    }

    #[test]
    fn missing_entries_are_null_never_estimated() {
        let missing = parse_missing(&["agent1-serial:baseline:no agent path".to_owned()]).unwrap();
        assert!(parse_missing(&["nope".to_owned()]).is_err());
        let summary = Summary {
            title: "t".into(),
            notes: vec![],
            baseline: "baseline".into(),
            max_other_cores: None,
            rows: vec![],
            ratios: vec![],
            runs: vec![],
        };
        let json = bench_json(&summary, &missing, 2);
        assert_eq!(json["machine"]["cores"], 2);
        let entry = &json["scenarios"][0];
        assert_eq!(entry["name"], "agent1-serial");
        assert!(entry["p50_us"].is_null() && entry["rps"].is_null());
        assert_eq!(entry["missing"], "no agent path");
        assert!(json["ratios"]["agent1-serial"].is_null());
        assert!(json["added_per_agent_us"]["baseline"]["p50"].is_null());
        let md = bench_markdown(&summary, &missing);
        assert!(md.contains("| agent1-serial | – | missing |"));
        assert!(svg(&summary).starts_with("<svg"));
    }

    #[test]
    fn mode_figures_reach_the_matrix_json_and_page() {
        use crate::extra_figures::test_run;
        use crate::idle_streams::IdleStreamFigures;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: SummarizeArgs,
        }
        let args = <Cli as clap::Parser>::parse_from(["summarize", "x.json"]).args;
        let idle = |engine: &str, bytes: f64| {
            let mut r = test_run("streams-10k", engine);
            r.latency = Default::default();
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
        let runs = vec![
            idle("turnstile", 3000.0),
            idle("baseline", 1500.0),
            idle("turnstile", 3000.0),
            idle("baseline", 1500.0),
        ];
        let summary = build(&args, runs);
        let json = bench_json(&summary, &[], 2);
        let entry = &json["scenarios"][0];
        assert_eq!(entry["bytes_per_idle_stream"], 3000.0);
        assert!(entry["p50_us"].is_null() && entry["rps"].is_null());
        assert_eq!(json["ratios"]["streams-10k"]["bytes_per_idle_stream"], 2.0);
        assert!(json["ratios"]["streams-10k"]["rps"].is_null());
        let ratio = &summary.ratios[0];
        assert_eq!(ratio.targets.len(), 1, "{:?}", ratio.targets);
        assert_eq!(
            ratio.targets[0].1,
            Some(false),
            "3000 B misses the 1 KB target"
        );
        let md = bench_markdown(&summary, &[]);
        assert!(md.contains("| streams-10k | – | – | – | – |"), "{md}");
        assert!(md.contains("### Idle streams"), "{md}");
        let page = markdown(&summary, 2);
        assert!(!page.contains("NaN"), "{page}");
    }
}
