//! The live progress line: when stderr is a terminal, one line rewritten in place (`\r`) every
//! [`PROGRESS_INTERVAL`]: elapsed time, phase, answers and their rate over the last interval,
//! p50 / p99 so far, errors, requests in flight and the load generator's own CPU. Nothing when
//! stderr is not a terminal (a log file, `perf/bench.sh` piped somewhere).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::cpu::{self, Pid};
use crate::limits::PROGRESS_INTERVAL;

/// What the run reports at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Phase, e.g. `warm-up`, `measure`, `20000 rps drain`.
    pub phase: String,
    /// Requests answered correctly so far (warm-up included).
    pub requests: u64,
    /// Requests failed so far.
    pub errors: u64,
    /// Requests outstanding, when known.
    pub in_flight: Option<usize>,
    /// Median latency of the measured requests so far, µs.
    pub p50_us: Option<f64>,
    /// 99th percentile so far, µs.
    pub p99_us: Option<f64>,
}

/// Turns successive snapshots into lines, with the rates since the previous one.
#[derive(Debug, Default)]
pub struct Meter {
    last: Option<(Duration, u64, f64)>,
}

fn latency(us: Option<f64>) -> String {
    match us {
        None => "-".to_owned(),
        Some(us) if us >= 1000.0 => format!("{:.1} ms", us / 1000.0),
        Some(us) => format!("{us:.0} µs"),
    }
}

impl Meter {
    /// The line for `snapshot` taken `elapsed` after the start, when the load generator had
    /// used `cpu_s` seconds of CPU.
    pub fn line(&mut self, elapsed: Duration, cpu_s: f64, snapshot: &Snapshot) -> String {
        let (rps, cpu_pct) = match self.last {
            Some((t, requests, cpu)) if elapsed > t => {
                let dt = (elapsed - t).as_secs_f64();
                (
                    snapshot.requests.saturating_sub(requests) as f64 / dt,
                    (cpu_s - cpu).max(0.0) / dt * 100.0,
                )
            }
            _ => (0.0, 0.0),
        };
        self.last = Some((elapsed, snapshot.requests, cpu_s));
        let in_flight = snapshot
            .in_flight
            .map_or_else(String::new, |n| format!(" | in flight {n}"));
        format!(
            "{:>6.1} s {} | {} answered, {rps:.0}/s | p50 {} p99 {} | errors {}{in_flight} | loadgen CPU {cpu_pct:.0}%",
            elapsed.as_secs_f64(),
            snapshot.phase,
            snapshot.requests,
            latency(snapshot.p50_us),
            latency(snapshot.p99_us),
            snapshot.errors,
        )
    }
}

/// A running progress line; dropping it stops it and clears the line.
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        eprint!("\r\x1b[K");
        let _ = std::io::stderr().flush();
    }
}

/// Starts the progress line on the current `LocalSet` when stderr is a terminal; `source` is
/// asked for a snapshot every interval.
pub fn spawn(source: impl Fn() -> Snapshot + 'static) -> Option<Progress> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let ticks_per_sec = cpu::clock_ticks_per_sec().max(1) as f64;
    let task = tokio::task::spawn_local(async move {
        let start = Instant::now();
        let cpu_s = || cpu::sample(Pid::OurSelf).map_or(0.0, |s| s.ticks as f64 / ticks_per_sec);
        let mut meter = Meter::default();
        // The first line's rates run from here.
        meter.line(Duration::ZERO, cpu_s(), &Snapshot::default());
        let mut interval = tokio::time::interval_at(
            tokio::time::Instant::from_std(start + PROGRESS_INTERVAL),
            PROGRESS_INTERVAL,
        );
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let line = meter.line(start.elapsed(), cpu_s(), &source());
            eprint!("\r{line}\x1b[K");
            let _ = std::io::stderr().flush();
        }
    });
    Some(Progress { task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_rates_over_the_last_interval() {
        let mut meter = Meter::default();
        let mut s = Snapshot {
            phase: "measure".into(),
            requests: 1000,
            errors: 0,
            in_flight: Some(64),
            p50_us: Some(52.4),
            p99_us: Some(51_234.0),
        };
        let first = meter.line(Duration::from_secs(1), 0.5, &s);
        assert!(first.contains("1000 answered, 0/s"), "{first}");
        s.requests = 21_000;
        s.errors = 3;
        let second = meter.line(Duration::from_secs(3), 1.5, &s);
        assert!(second.contains("21000 answered, 10000/s"), "{second}");
        assert!(second.contains("p50 52 µs p99 51.2 ms"), "{second}");
        assert!(second.contains("errors 3 | in flight 64"), "{second}");
        assert!(second.ends_with("loadgen CPU 50%"), "{second}");
        assert!(second.starts_with("   3.0 s measure"), "{second}");
        let empty = Meter::default().line(Duration::ZERO, 0.0, &Snapshot::default());
        assert!(empty.contains("p50 - p99 -"), "{empty}");
    }
}
