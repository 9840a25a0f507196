//! One run's results: the JSON record and the terminal table line.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::cpu::{CpuDelta, MachineDelta, ThreadDelta};
use crate::run::Plan;

/// Latency percentiles of the measured window, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    /// From a histogram recorded in nanoseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// Per-thread activity of both processes over the window.
#[derive(Debug, Clone, Default)]
pub struct Threads {
    /// The server's threads, when it is measured.
    pub server: Option<Vec<ThreadDelta>>,
    /// The load generator's threads.
    pub loadgen: Vec<ThreadDelta>,
    /// The whole machine.
    pub machine: Option<MachineDelta>,
}

/// Context switches (voluntary + involuntary) of `threads` per request.
fn switches_per_req(threads: &[ThreadDelta], requests: u64) -> f64 {
    let total: u64 = threads
        .iter()
        .map(|t| t.voluntary_switches + t.involuntary_switches)
        .sum();
    total as f64 / requests.max(1) as f64
}

/// Run-queue wait (runnable, no CPU) of `threads` per request, in microseconds.
fn wait_us_per_req(threads: &[ThreadDelta], secs: f64, requests: u64) -> f64 {
    let waiting: f64 = threads.iter().map(|t| t.waiting).sum();
    waiting * secs * 1e6 / requests.max(1) as f64
}

/// The record of one run (`--json`), also the input of `turnstile-load summarize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Label of the server under test (e.g. `turnstile`, `baseline`).
    pub engine: String,
    /// Label of the scenario (e.g. `echo-serial`, `echo-64`).
    pub scenario: String,
    /// `echo` or `decide`.
    pub request: String,
    /// Server address.
    pub addr: String,
    /// QUIC connections used.
    pub connections: usize,
    /// Requests in flight (closed loop).
    pub in_flight: usize,
    /// Echo payload size.
    pub payload_bytes: usize,
    /// Decide: request body bytes in the first frame.
    #[serde(default)]
    pub body_bytes: usize,
    /// Resident set size of the server (`VmRSS`) at the end of the measured window, bytes.
    #[serde(default)]
    pub server_rss_bytes: Option<u64>,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Requested measuring time, seconds.
    pub duration_s: f64,
    /// Actual measured window, seconds.
    pub elapsed_s: f64,
    /// Requests completed correctly in the window.
    pub requests: u64,
    /// Requests failed in the window.
    pub errors: u64,
    /// Requests completed over the whole run (warm-up included).
    pub requests_total: u64,
    /// Failures over the whole run.
    pub errors_total: u64,
    /// The first failure, for diagnosis.
    pub first_error: Option<String>,
    /// Requests per second in the window.
    pub rps: f64,
    /// Latency of the window's requests.
    #[serde(flatten)]
    pub latency: Latency,
    /// Server process measured.
    pub server_pid: Option<u32>,
    /// Server CPU (utime + stime) over the window, seconds.
    pub server_cpu_s: Option<f64>,
    /// Server CPU (utime + stime) per request, microseconds.
    pub server_cpu_us_per_req: Option<f64>,
    /// Server CPU per request from the threads' schedstat (ns resolution), microseconds.
    pub server_sched_cpu_us_per_req: Option<f64>,
    /// Server CPU over the window divided by the window: cores kept busy.
    pub server_cores_busy: Option<f64>,
    /// Load generator CPU (utime + stime) over the window, seconds.
    pub loadgen_cpu_s: f64,
    /// Load generator CPU per request, microseconds.
    pub loadgen_cpu_us_per_req: f64,
    /// Load generator CPU per request from schedstat, microseconds.
    pub loadgen_sched_cpu_us_per_req: Option<f64>,
    /// Load generator cores kept busy (1.0 = its one thread saturated: it is the limit).
    pub loadgen_cores_busy: f64,
    /// Server context switches (all threads, voluntary + involuntary) per request.
    pub server_switches_per_req: Option<f64>,
    /// Load generator context switches per request.
    pub loadgen_switches_per_req: f64,
    /// Server run-queue wait (runnable threads waiting for a CPU) per request, microseconds.
    pub server_runqueue_wait_us_per_req: Option<f64>,
    /// Load generator run-queue wait per request, microseconds: time it was ready to send or
    /// receive but another thread (for example a spinning server thread) held its CPU.
    pub loadgen_runqueue_wait_us_per_req: f64,
    /// The server's threads over the window: busy cores, last CPU, switches, migrations.
    pub server_threads: Option<Vec<ThreadDelta>>,
    /// The load generator's threads over the window.
    pub loadgen_threads: Vec<ThreadDelta>,
    /// The whole machine over the window (`/proc/stat`), in cores.
    pub machine: Option<MachineDelta>,
    /// Cores used by everything except the server and the load generator over the window
    /// (other processes, interrupts): noise that competes for the same cores.
    pub other_cores_busy: Option<f64>,
    /// Clock ticks per second used to convert utime + stime.
    pub clk_tck: u64,
    /// `--mode zero-rtt`: 0-RTT and 1-RTT time to first response (then `p*_us` are the 0-RTT
    /// figures and `requests` counts the connections of both kinds that were answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_rtt: Option<crate::zero_rtt::ZeroRttFigures>,
    /// `--mode idle-streams`: the server's memory per idle stream (then `requests` counts the
    /// idle streams held and the latency figures are 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_streams: Option<crate::idle_streams::IdleStreamFigures>,
    /// Open loop (`--rate`, `--rates`): target and achieved rate, steps, the rate held; absent
    /// for a closed loop. Its members sit at the top level of the record.
    #[serde(flatten, default)]
    pub open_loop: Option<crate::open_loop::OpenLoopReport>,
}

impl RunReport {
    /// Assembles the record from a finished run.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plan: &Plan,
        connections: usize,
        elapsed: Duration,
        requests: u64,
        errors: u64,
        requests_total: u64,
        errors_total: u64,
        first_error: Option<String>,
        latency: Latency,
        server: Option<CpuDelta>,
        own: CpuDelta,
        threads: Threads,
        clk_tck: u64,
        server_rss_bytes: Option<u64>,
    ) -> RunReport {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let per_req = |d: Duration| {
            if requests == 0 {
                0.0
            } else {
                d.as_secs_f64() * 1e6 / requests as f64
            }
        };
        RunReport {
            engine: plan.engine.clone(),
            scenario: plan.scenario.clone(),
            request: format!("{:?}", plan.request).to_lowercase(),
            addr: plan.addr.to_string(),
            connections,
            in_flight: plan.in_flight,
            payload_bytes: plan.payload_bytes,
            body_bytes: plan.body_bytes,
            server_rss_bytes,
            warmup_s: plan.warmup.as_secs_f64(),
            duration_s: plan.duration.as_secs_f64(),
            elapsed_s: secs,
            requests,
            errors,
            requests_total,
            errors_total,
            first_error,
            rps: requests as f64 / secs,
            latency,
            server_pid: plan.server_pid,
            server_cpu_s: server.map(|s| s.stat.as_secs_f64()),
            server_cpu_us_per_req: server.map(|s| per_req(s.stat)),
            server_sched_cpu_us_per_req: server.and_then(|s| s.sched).map(per_req),
            server_cores_busy: server.map(|s| s.stat.as_secs_f64() / secs),
            loadgen_cpu_s: own.stat.as_secs_f64(),
            loadgen_cpu_us_per_req: per_req(own.stat),
            loadgen_sched_cpu_us_per_req: own.sched.map(per_req),
            loadgen_cores_busy: own.stat.as_secs_f64() / secs,
            server_switches_per_req: threads
                .server
                .as_deref()
                .map(|t| switches_per_req(t, requests)),
            loadgen_switches_per_req: switches_per_req(&threads.loadgen, requests),
            server_runqueue_wait_us_per_req: threads
                .server
                .as_deref()
                .map(|t| wait_us_per_req(t, secs, requests)),
            loadgen_runqueue_wait_us_per_req: wait_us_per_req(&threads.loadgen, secs, requests),
            other_cores_busy: threads.machine.map(|m| {
                let ours = server.map_or(0.0, |s| s.stat.as_secs_f64() / secs)
                    + own.stat.as_secs_f64() / secs;
                (m.busy_cores - ours).max(0.0)
            }),
            machine: threads.machine,
            server_threads: threads.server,
            loadgen_threads: threads.loadgen,
            clk_tck,
            zero_rtt: None,
            idle_streams: None,
            open_loop: None,
        }
    }

    /// Where the threads ran, compactly: `server: name@cpu busy, …; loadgen: name@cpu busy`
    /// (the CPU is the one each thread last ran on, at the end of the window; "waited" is the
    /// share of the window it was runnable but had no CPU).
    pub fn placement(&self) -> String {
        let list = |threads: &[ThreadDelta]| {
            threads
                .iter()
                .filter(|t| t.busy >= 0.01)
                .map(|t| {
                    let cpu = t.last_cpu.map_or_else(|| "?".to_owned(), |c| c.to_string());
                    if t.waiting >= 0.01 {
                        format!("{}@{cpu} {:.2} (waited {:.2})", t.name, t.busy, t.waiting)
                    } else {
                        format!("{}@{cpu} {:.2}", t.name, t.busy)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.server_threads {
            Some(s) => format!(
                "server: {}; loadgen: {}",
                list(s),
                list(&self.loadgen_threads)
            ),
            None => format!("loadgen: {}", list(&self.loadgen_threads)),
        }
    }

    /// The table header matching [`RunReport::table_line`].
    pub fn table_header() -> String {
        format!(
            "{:<20} {:<12} {:>9} {:>6} {:>9} {:>8} {:>8} {:>8} {:>11} {:>11}",
            "engine",
            "scenario",
            "requests",
            "errors",
            "rps",
            "p50_us",
            "p99_us",
            "p999_us",
            "srv_cpu/req",
            "gen_cpu/req"
        )
    }

    /// One line: engine, scenario, requests, errors, rps, p50/p99/p999 µs, server and load
    /// generator CPU µs per request.
    pub fn table_line(&self) -> String {
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        format!(
            "{:<20} {:<12} {:>9} {:>6} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>11} {:>11.1}",
            self.engine,
            self.scenario,
            self.requests,
            self.errors,
            self.rps,
            self.latency.p50_us,
            self.latency.p99_us,
            self.latency.p999_us,
            opt(self.server_cpu_us_per_req),
            self.loadgen_cpu_us_per_req
        )
    }
}
