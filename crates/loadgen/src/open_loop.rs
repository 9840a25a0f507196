//! The open loop, sans I/O: requests are due at fixed intervals from the start of a step,
//! whatever the answers do, and every latency is measured from the request's *intended* send
//! time (the coordinated-omission correction of wrk2): a server that stalls shows as latency of
//! every request due during the stall, not as fewer samples.
//!
//! Times are offsets from the start of the run, so the same code runs on the real clock
//! (`open_run.rs`) and on virtual time (the tests below).
//!
//! A step runs at one rate: `warmup` of load, then the measured window of `duration`; the
//! requests *due* in the window are the measured ones, and each gets exactly one outcome:
//! answered (latency recorded), failed, not answered within [`DRAIN`] after the window
//! (`timed_out`), or never sent because the in-flight bound held it back until then (`unsent`).
//! Load keeps coming while the measured requests drain. Outstanding requests are bounded
//! (`max_in_flight`); a request due while the bound is reached waits for a free slot and is
//! counted `late` (its latency still runs from its intended time).
//!
//! A rate search ([`RateSearch`]) runs steps at rising rates and stops at the first step that
//! does not hold: a step holds when the 99th percentile of its measured requests, counting
//! failed, unanswered and unsent ones as infinitely slow, is at most `--p99-max-ms`.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::limits::{
    DRAIN, LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS, P99_MAX_MS_MAX, RATE_RPS_MAX, RATE_RPS_MIN,
    RATE_STEPS_MAX,
};
use crate::progress::Snapshot;
use crate::report::{Latency, RunReport};

/// Checks a rate in requests per second against the named bounds.
pub fn check_rate(rate_rps: f64) -> Result<f64, String> {
    if rate_rps.is_finite() && (RATE_RPS_MIN..=RATE_RPS_MAX).contains(&rate_rps) {
        Ok(rate_rps)
    } else {
        Err(format!(
            "a rate is {RATE_RPS_MIN} to {RATE_RPS_MAX} requests per second, not {rate_rps}"
        ))
    }
}

/// Parses `--rates`: comma-separated rates in requests per second, rising, at most
/// [`RATE_STEPS_MAX`] of them.
pub fn parse_rates(text: &str) -> Result<Vec<f64>, String> {
    let mut rates = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let rate: f64 = part
            .parse()
            .map_err(|_| format!("--rates: {part:?} is not a number"))?;
        let rate = check_rate(rate).map_err(|e| format!("--rates: {e}"))?;
        if rates.last().is_some_and(|&last| rate <= last) {
            return Err(format!(
                "--rates must rise: {rate} after {}",
                rates[rates.len() - 1]
            ));
        }
        rates.push(rate);
    }
    if rates.is_empty() {
        return Err("--rates needs at least one rate".into());
    }
    if rates.len() > RATE_STEPS_MAX {
        return Err(format!("--rates: at most {RATE_STEPS_MAX} steps"));
    }
    Ok(rates)
}

/// Checks `--p99-max-ms` and turns it into a duration.
pub fn p99_max(ms: f64) -> Result<Duration, String> {
    if ms.is_finite() && ms > 0.0 && ms <= P99_MAX_MS_MAX {
        Ok(Duration::from_secs_f64(ms / 1000.0))
    } else {
        Err(format!(
            "--p99-max-ms is above 0 and at most {P99_MAX_MS_MAX}"
        ))
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A latency histogram in nanoseconds, 1 ns to [`LATENCY_NS_MAX`].
pub fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .map_err(|e| format!("histogram: {e}"))
}

/// Intended send times at a constant rate: request `i` of a step is due at
/// `start + i / rate`, computed from `i` (not by adding up intervals), so rounding never
/// accumulates.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Duration,
    rate_rps: f64,
}

impl Schedule {
    /// Requests at `rate_rps` from `start` on.
    pub fn new(start: Duration, rate_rps: f64) -> Result<Schedule, String> {
        Ok(Schedule {
            start,
            rate_rps: check_rate(rate_rps)?,
        })
    }

    /// When request `index` is due.
    pub fn due(&self, index: u64) -> Duration {
        let ns = (index as f64 * 1e9 / self.rate_rps).round();
        self.start + Duration::from_nanos(ns as u64)
    }

    /// The first request due at or after `t`.
    pub fn first_due_at_or_after(&self, t: Duration) -> u64 {
        let Some(offset) = t.checked_sub(self.start) else {
            return 0;
        };
        let mut i = (offset.as_secs_f64() * self.rate_rps).floor() as u64;
        while i > 0 && self.due(i - 1) >= t {
            i -= 1;
        }
        while self.due(i) < t {
            i += 1;
        }
        i
    }
}

/// One request sent by the open loop: what its answer is measured against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ticket {
    /// The step it belongs to.
    pub step: u32,
    /// When it was due.
    pub intended: Duration,
    /// Whether it was due in its step's measured window.
    pub measured: bool,
    /// Whether it waited for a free slot (the in-flight bound) past its intended time.
    pub late: bool,
}

/// What the open loop does next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Send this request now.
    Send(Ticket),
    /// Nothing to do until `until`, or (when `or_answer`) until an answer comes.
    Wait {
        /// When to ask again at the latest.
        until: Duration,
        /// Whether an answer may change what to do before then.
        or_answer: bool,
    },
    /// The step is over: call [`OpenLoop::finish_step`].
    StepDone,
}

/// One step's settings.
#[derive(Debug, Clone, Copy)]
pub struct StepPlan {
    /// Requests per second.
    pub rate_rps: f64,
    /// Load before the measured window.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
}

struct Step {
    id: u32,
    rate_rps: f64,
    schedule: Schedule,
    window_start: Duration,
    window_end: Duration,
    drain_end: Duration,
    /// Next request to send.
    next: u64,
    /// Whether `next` has waited for a slot.
    blocked: bool,
    /// Measured requests: `first_measured..end_measured`.
    first_measured: u64,
    end_measured: u64,
    measured_sent: u64,
    ok: u64,
    failed: u64,
    late: u64,
    latency: Histogram<u64>,
    send_lag: Histogram<u64>,
}

/// The outcome of one step's measured requests.
#[derive(Debug, Clone)]
pub struct StepStats {
    /// Target rate, requests per second.
    pub rate_rps: f64,
    /// The measured window.
    pub duration: Duration,
    /// Requests due in the window (each has exactly one of the outcomes below).
    pub due: u64,
    /// Answered correctly.
    pub ok: u64,
    /// Failed (an error, a wrong answer, a lost connection).
    pub failed: u64,
    /// Sent but not answered within [`DRAIN`] after the window.
    pub timed_out: u64,
    /// Never sent: held back by the in-flight bound until the step ended.
    pub unsent: u64,
    /// Sent after waiting for a free slot (included in `ok` / `failed` / `timed_out`).
    pub late: u64,
    /// Latency of the answered requests, from their intended send time, ns.
    pub latency: Histogram<u64>,
    /// How late each measured request was actually sent (timer granularity, a busy load
    /// generator, the in-flight bound), ns.
    pub send_lag: Histogram<u64>,
}

impl StepStats {
    /// Measured requests without a correct answer: failed, unanswered or never sent.
    pub fn errors(&self) -> u64 {
        self.failed + self.timed_out + self.unsent
    }

    /// The 99th percentile over all measured requests, counting those without a correct answer
    /// as infinitely slow (`None` when more than 1% of them had none, or none were due), ns.
    pub fn p99_all_ns(&self) -> Option<u64> {
        let n = self.ok + self.errors();
        if n == 0 {
            return None;
        }
        let rank = ((n as f64 * 0.99).ceil() as u64).max(1);
        if rank > self.ok {
            return None;
        }
        Some(self.latency.value_at_quantile(rank as f64 / self.ok as f64))
    }

    /// Whether the step holds `p99_max` (see [`StepStats::p99_all_ns`]).
    pub fn holds(&self, p99_max: Duration) -> bool {
        self.p99_all_ns()
            .is_some_and(|ns| ns <= duration_ns(p99_max))
    }

    /// Answered requests per second of the window.
    pub fn achieved_rps(&self) -> f64 {
        self.ok as f64 / self.duration.as_secs_f64().max(1e-9)
    }
}

/// The open loop's state: the current step, the in-flight bound, totals over the run.
pub struct OpenLoop {
    max_in_flight: usize,
    in_flight: usize,
    steps_started: u32,
    step: Option<Step>,
    sent_total: u64,
    ok_total: u64,
    failed_total: u64,
}

impl OpenLoop {
    /// An open loop keeping at most `max_in_flight` requests outstanding.
    pub fn new(max_in_flight: usize) -> OpenLoop {
        OpenLoop {
            max_in_flight: max_in_flight.max(1),
            in_flight: 0,
            steps_started: 0,
            step: None,
            sent_total: 0,
            ok_total: 0,
            failed_total: 0,
        }
    }

    /// Starts a step at `now` (requests of earlier steps still outstanding keep their slots).
    pub fn start_step(&mut self, plan: StepPlan, now: Duration) -> Result<(), String> {
        let schedule = Schedule::new(now, plan.rate_rps)?;
        let window_start = now + plan.warmup;
        let window_end = window_start + plan.duration;
        self.step = Some(Step {
            id: self.steps_started,
            rate_rps: plan.rate_rps,
            schedule,
            window_start,
            window_end,
            drain_end: window_end + DRAIN,
            next: 0,
            blocked: false,
            first_measured: schedule.first_due_at_or_after(window_start),
            end_measured: schedule.first_due_at_or_after(window_end),
            measured_sent: 0,
            ok: 0,
            failed: 0,
            late: 0,
            latency: histogram()?,
            send_lag: histogram()?,
        });
        self.steps_started += 1;
        Ok(())
    }

    /// The measured window of the current step.
    pub fn window(&self) -> Option<(Duration, Duration)> {
        self.step.as_ref().map(|s| (s.window_start, s.window_end))
    }

    /// What to do at `now`.
    pub fn next(&mut self, now: Duration) -> Next {
        let Some(step) = self.step.as_mut() else {
            return Next::StepDone;
        };
        let all_measured_sent = step.next >= step.end_measured;
        let measured_answered = step.ok + step.failed;
        if now >= step.drain_end
            || (now >= step.window_end
                && all_measured_sent
                && step.measured_sent == measured_answered)
        {
            return Next::StepDone;
        }
        let draining = now >= step.window_end;
        let due = step.schedule.due(step.next);
        if due > now {
            return Next::Wait {
                until: due.min(step.drain_end),
                or_answer: draining,
            };
        }
        if self.in_flight >= self.max_in_flight {
            step.blocked = true;
            return Next::Wait {
                until: step.drain_end,
                or_answer: true,
            };
        }
        let index = step.next;
        let measured = (step.first_measured..step.end_measured).contains(&index);
        let ticket = Ticket {
            step: step.id,
            intended: due,
            measured,
            late: step.blocked,
        };
        step.next += 1;
        step.blocked = false;
        if measured {
            step.measured_sent += 1;
            step.late += u64::from(ticket.late);
            step.send_lag
                .saturating_record(duration_ns(now.saturating_sub(due)).max(1));
        }
        self.in_flight += 1;
        self.sent_total += 1;
        Next::Send(ticket)
    }

    /// The answer to `ticket` came at `now`: correct (`ok`) or not.
    pub fn answered(&mut self, ticket: &Ticket, now: Duration, ok: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if ok {
            self.ok_total += 1;
        } else {
            self.failed_total += 1;
        }
        let Some(step) = self.step.as_mut().filter(|s| s.id == ticket.step) else {
            return;
        };
        if !ticket.measured {
            return;
        }
        if ok {
            step.ok += 1;
            let latency = now.saturating_sub(ticket.intended);
            step.latency.saturating_record(duration_ns(latency).max(1));
        } else {
            step.failed += 1;
        }
    }

    /// Ends the current step: every measured request gets its outcome.
    pub fn finish_step(&mut self) -> Option<StepStats> {
        let step = self.step.take()?;
        let due = step.end_measured - step.first_measured;
        Some(StepStats {
            rate_rps: step.rate_rps,
            duration: step.window_end - step.window_start,
            due,
            ok: step.ok,
            failed: step.failed,
            timed_out: step.measured_sent - step.ok - step.failed,
            unsent: due - step.measured_sent,
            late: step.late,
            latency: step.latency,
            send_lag: step.send_lag,
        })
    }

    /// Requests outstanding now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Requests sent, answered correctly and failed over the whole run.
    pub fn totals(&self) -> (u64, u64, u64) {
        (self.sent_total, self.ok_total, self.failed_total)
    }

    /// What the progress line shows: the step's rate and phase, answers over the run, and the
    /// percentiles of the current step's measured requests so far.
    pub fn snapshot(&self, now: Duration) -> Snapshot {
        let (phase, latency) = match &self.step {
            Some(s) => {
                let phase = if now < s.window_start {
                    "warm-up"
                } else if now < s.window_end {
                    "measure"
                } else {
                    "drain"
                };
                (format!("{:.0} rps {phase}", s.rate_rps), Some(&s.latency))
            }
            None => ("done".to_owned(), None),
        };
        let latency = latency
            .filter(|h| !h.is_empty())
            .map(Latency::from_histogram);
        Snapshot {
            phase,
            requests: self.ok_total,
            errors: self.failed_total,
            in_flight: Some(self.in_flight),
            p50_us: latency.map(|l| l.p50_us),
            p99_us: latency.map(|l| l.p99_us),
        }
    }
}

/// The steps of a rate search and its answer.
#[derive(Debug, Clone)]
pub struct RateSearch {
    rates: Vec<f64>,
    p99_max: Option<Duration>,
    next: usize,
    stopped: bool,
    held: Option<f64>,
}

impl RateSearch {
    /// Steps at `rates` (rising); with `p99_max`, stops at the first step that does not hold it.
    pub fn new(rates: Vec<f64>, p99_max: Option<Duration>) -> RateSearch {
        RateSearch {
            rates,
            p99_max,
            next: 0,
            stopped: false,
            held: None,
        }
    }

    /// The rate of the next step, if any.
    pub fn next_rate(&mut self) -> Option<f64> {
        if self.stopped {
            return None;
        }
        let rate = self.rates.get(self.next).copied();
        self.next += 1;
        rate
    }

    /// Judges a finished step: whether it held (`None` without a threshold).
    pub fn judge(&mut self, stats: &StepStats) -> Option<bool> {
        let held = self.p99_max.map(|max| stats.holds(max));
        match held {
            Some(true) => self.held = Some(stats.rate_rps),
            Some(false) => self.stopped = true,
            None => {}
        }
        held
    }

    /// The highest rate held (0 when none was), or `None` without a threshold.
    pub fn held_rps(&self) -> Option<f64> {
        self.p99_max.map(|_| self.held.unwrap_or(0.0))
    }
}

/// One step of an open-loop run in the run record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    /// Target rate, requests per second.
    pub rate_rps: f64,
    /// Answered requests per second of the measured window.
    pub achieved_rps: f64,
    /// Requests due in the window.
    pub due: u64,
    /// Answered correctly.
    pub requests: u64,
    /// Without a correct answer: failed + timed_out + unsent.
    pub errors: u64,
    /// Sent but not answered within the drain time after the window.
    pub timed_out: u64,
    /// Never sent (held back by the in-flight bound).
    pub unsent: u64,
    /// Sent late after waiting for a free slot under the in-flight bound.
    pub late: u64,
    /// Latency percentiles of the answered requests from their intended send time, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Largest, µs.
    pub max_us: f64,
    /// 99th percentile with the errors counted as infinitely slow (`null`: more than 1%
    /// errors), µs; what `held` is judged on.
    pub p99_all_us: Option<f64>,
    /// 99th percentile of how late the load generator sent the requests, µs.
    pub send_lag_p99_us: f64,
    /// Server CPU per answered request, µs.
    pub server_cpu_us_per_req: Option<f64>,
    /// Server cores busy in the window.
    pub server_cores_busy: Option<f64>,
    /// Load generator cores busy in the window (1.0: its one thread was saturated).
    pub loadgen_cores_busy: f64,
    /// Other processes' cores busy in the window (agents, other work).
    pub other_cores_busy: Option<f64>,
    /// Whether p99 (errors included) stayed at most `p99_max_ms`; `null` without a threshold.
    pub held: Option<bool>,
}

impl StepReport {
    /// The record of one step from its outcome and its run report (CPU over its window).
    pub fn new(stats: &StepStats, report: &RunReport, held: Option<bool>) -> StepReport {
        let us = |ns: u64| ns as f64 / 1000.0;
        StepReport {
            rate_rps: stats.rate_rps,
            achieved_rps: stats.achieved_rps(),
            due: stats.due,
            requests: stats.ok,
            errors: stats.errors(),
            timed_out: stats.timed_out,
            unsent: stats.unsent,
            late: stats.late,
            p50_us: report.latency.p50_us,
            p99_us: report.latency.p99_us,
            p999_us: report.latency.p999_us,
            max_us: report.latency.max_us,
            p99_all_us: stats.p99_all_ns().map(us),
            send_lag_p99_us: if stats.send_lag.is_empty() {
                0.0
            } else {
                us(stats.send_lag.value_at_quantile(0.99))
            },
            server_cpu_us_per_req: report.server_cpu_us_per_req,
            server_cores_busy: report.server_cores_busy,
            loadgen_cores_busy: report.loadgen_cores_busy,
            other_cores_busy: report.other_cores_busy,
            held,
        }
    }
}

/// The open-loop members of a run record (absent for a closed loop). The record's own figures
/// (requests, rps, percentiles, CPU) are those of one step: the highest step held with
/// `--p99-max-ms`, the first step when none held, the last step without a threshold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenLoopReport {
    /// `"open"`.
    pub mode: String,
    /// Target rate of the step the record's figures are from, requests per second.
    pub target_rps: f64,
    /// Its answered requests per second.
    pub achieved_rps: f64,
    /// Its requests sent late after waiting under the in-flight bound.
    pub late: u64,
    /// Its requests never sent.
    pub unsent: u64,
    /// Bound on outstanding requests (`--max-in-flight`).
    pub max_in_flight: usize,
    /// Threshold of the rate search (`--p99-max-ms`).
    pub p99_max_ms: Option<f64>,
    /// The highest rate whose p99 (errors counted as infinitely slow) stayed at most
    /// `p99_max_ms`; 0 when none did; `null` without a threshold.
    pub held_rps: Option<f64>,
    /// Every step run, in order (a search stops after the first step that does not hold).
    pub steps: Vec<StepReport>,
}

/// Which step's figures a record carries: the last held one, else the first (with a
/// threshold), the last one without.
pub fn reported_step(steps: &[StepReport], thresholded: bool) -> usize {
    if !thresholded {
        return steps.len().saturating_sub(1);
    }
    steps
        .iter()
        .rposition(|s| s.held == Some(true))
        .unwrap_or(0)
}

/// The steps as a small table for the terminal (stderr), with the rate held.
pub fn steps_table(open: &OpenLoopReport) -> String {
    use std::fmt::Write as _;
    let ms = |us: f64| us / 1000.0;
    let mut out = format!(
        "  {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>6} {:>6} {:>9} {:>7} {:>7} {:>5}\n",
        "rate",
        "achieved",
        "p50_ms",
        "p99_ms",
        "p99all",
        "errors",
        "late",
        "unsent",
        "lag99_ms",
        "gen_cpu",
        "srv_cpu",
        "held"
    );
    for s in &open.steps {
        let _ = writeln!(
            out,
            "  {:>9.0} {:>9.0} {:>8.2} {:>8.2} {:>8} {:>7} {:>6} {:>6} {:>9.2} {:>7.2} {:>7} {:>5}",
            s.rate_rps,
            s.achieved_rps,
            ms(s.p50_us),
            ms(s.p99_us),
            s.p99_all_us
                .map_or_else(|| "inf".to_owned(), |v| format!("{:.2}", ms(v))),
            s.errors,
            s.late,
            s.unsent,
            ms(s.send_lag_p99_us),
            s.loadgen_cores_busy,
            s.server_cores_busy
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}")),
            match s.held {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            }
        );
    }
    if let (Some(held), Some(max)) = (open.held_rps, open.p99_max_ms) {
        let _ = writeln!(out, "  held: {held:.0} rps with p99 <= {max} ms");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn schedule_is_exact_and_does_not_drift() {
        let s = Schedule::new(Duration::from_secs(1), 3.0).unwrap();
        assert_eq!(s.due(0), Duration::from_secs(1));
        assert_eq!(
            s.due(1),
            Duration::from_secs(1) + Duration::from_nanos(333_333_333)
        );
        assert_eq!(s.due(3), Duration::from_secs(2));
        assert_eq!(s.due(3_000_000), Duration::from_secs(1_000_001));
        let s = Schedule::new(Duration::ZERO, 50_000.0).unwrap();
        assert_eq!(s.due(50_000), Duration::from_secs(1));
        assert_eq!(s.due(1), Duration::from_micros(20));
        assert_eq!(s.first_due_at_or_after(Duration::ZERO), 0);
        assert_eq!(s.first_due_at_or_after(Duration::from_micros(20)), 1);
        assert_eq!(s.first_due_at_or_after(Duration::from_micros(21)), 2);
        assert_eq!(s.first_due_at_or_after(Duration::from_secs(1)), 50_000);
        assert!(Schedule::new(Duration::ZERO, 0.0).is_err());
        assert!(Schedule::new(Duration::ZERO, f64::NAN).is_err());
    }

    #[test]
    fn rates_parse_rising_only() {
        assert_eq!(
            parse_rates("1000, 2000,5e3").unwrap(),
            vec![1000.0, 2000.0, 5000.0]
        );
        assert!(parse_rates("2000,1000").is_err());
        assert!(parse_rates("1000,1000").is_err());
        assert!(parse_rates("").is_err());
        assert!(parse_rates("x").is_err());
        assert!(parse_rates("0").is_err());
        assert!(p99_max(0.0).is_err());
        assert_eq!(p99_max(52.0).unwrap(), 52 * MS);
    }

    /// A simulated server: `latency(sent_at)` is when the answer to a request sent at `sent_at`
    /// comes back. Runs the open loop on virtual time and returns each step's outcome.
    fn simulate(
        max_in_flight: usize,
        steps: &[StepPlan],
        latency: impl Fn(Duration) -> Duration,
    ) -> Vec<StepStats> {
        let mut open = OpenLoop::new(max_in_flight);
        let mut now = Duration::ZERO;
        // answer time → tickets answered then (in send order)
        let mut answers: BTreeMap<(Duration, u64), Ticket> = BTreeMap::new();
        let mut seq = 0u64;
        let mut out = Vec::new();
        for plan in steps {
            open.start_step(*plan, now).unwrap();
            loop {
                match open.next(now) {
                    Next::Send(ticket) => {
                        seq += 1;
                        answers.insert((now + latency(now), seq), ticket);
                    }
                    Next::Wait { until, .. } => {
                        // Deliver answers due by `until` one at a time (each may free a slot).
                        match answers.first_key_value() {
                            Some((&(at, s), _)) if at <= until => {
                                let ticket = answers.remove(&(at, s)).unwrap();
                                now = now.max(at);
                                open.answered(&ticket, now, true);
                            }
                            _ => now = until,
                        }
                    }
                    Next::StepDone => break,
                }
            }
            out.push(open.finish_step().unwrap());
        }
        out
    }

    fn plan(rate_rps: f64) -> StepPlan {
        StepPlan {
            rate_rps,
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs(1),
        }
    }

    fn p(stats: &StepStats, q: f64) -> Duration {
        Duration::from_nanos(stats.latency.value_at_quantile(q))
    }

    #[test]
    fn a_steady_server_gives_every_due_request_its_latency() {
        let stats = simulate(100, &[plan(1000.0)], |_| 5 * MS);
        let s = &stats[0];
        assert_eq!(s.due, 1000);
        assert_eq!((s.ok, s.errors(), s.late), (1000, 0, 0));
        assert!(p(s, 0.99).abs_diff(5 * MS) < MS / 100, "{:?}", p(s, 0.99));
        assert_eq!(s.achieved_rps(), 1000.0);
        assert!(s.holds(6 * MS) && !s.holds(4 * MS));
    }

    #[test]
    fn a_stall_shows_as_latency_of_every_request_due_during_it() {
        // Answers take 1 ms, except that nothing is answered from 500 ms to 600 ms (in the
        // window): everything sent then is answered at 600 ms.
        let stall = (Duration::from_millis(500), Duration::from_millis(600));
        let stats = simulate(1000, &[plan(1000.0)], |sent| {
            if sent >= stall.0 && sent < stall.1 {
                stall.1 - sent
            } else {
                MS
            }
        });
        let s = &stats[0];
        // No request is lost: 100 of the 1000 waited for the stall to end.
        assert_eq!((s.due, s.ok, s.errors()), (1000, 1000, 0));
        assert!(p(s, 0.5) <= MS + MS / 100);
        assert!(p(s, 0.95) >= 45 * MS, "p95 {:?}", p(s, 0.95));
        assert!(p(s, 0.99) >= 89 * MS, "p99 {:?}", p(s, 0.99));
        assert!(Duration::from_nanos(s.latency.max()) >= 99 * MS);
        assert!(!s.holds(52 * MS));
    }

    #[test]
    fn the_in_flight_bound_makes_requests_late_and_still_counts_them() {
        // 10 slots, 100 ms answers: at most 100 rps get through, 1000 rps are asked.
        let stats = simulate(10, &[plan(1000.0)], |_| 100 * MS);
        let s = &stats[0];
        assert_eq!(s.due, 1000);
        assert!(s.late > 0);
        assert!(
            s.unsent > 0,
            "requests held back past the drain are counted"
        );
        assert_eq!(s.ok + s.errors(), s.due);
        assert!(s.achieved_rps() < 150.0);
        // Latency runs from the intended time: far above the 100 ms the server takes.
        assert!(Duration::from_nanos(s.latency.max()) > Duration::from_secs(1));
        assert_eq!(s.p99_all_ns(), None);
        assert!(!s.holds(Duration::from_secs(60)));
    }

    #[test]
    fn p99_counts_errors_as_infinitely_slow() {
        let mut s = simulate(100, &[plan(100.0)], |_| MS).remove(0);
        assert_eq!(s.due, 100);
        assert!(s.p99_all_ns().is_some());
        s.ok -= 1;
        s.failed += 1; // 1% errors: p99 is still the slowest answer
        assert!(s.holds(2 * MS));
        s.ok -= 1;
        s.unsent += 1; // 2% errors: p99 is infinite
        assert_eq!(s.p99_all_ns(), None);
        assert!(!s.holds(Duration::from_secs(1)));
    }

    #[test]
    fn rate_search_reports_the_highest_rate_held_and_stops_at_the_first_failure() {
        // A server that answers in 50 ms up to 300 rps and queues beyond: the answer to a
        // request waits behind the ones before it at 300 rps.
        let capacity_rps = 300.0;
        let service = Duration::from_secs_f64(1.0 / capacity_rps);
        let rates = vec![100.0, 200.0, 280.0, 400.0, 800.0];
        let mut search = RateSearch::new(rates, Some(52 * MS));
        let mut held_flags = Vec::new();
        while let Some(rate) = search.next_rate() {
            // Each step on its own simulated server (a queue at `capacity_rps`).
            let free = std::cell::Cell::new(Duration::ZERO);
            let stats = simulate(10_000, &[plan(rate)], |sent| {
                let start = free.get().max(sent);
                free.set(start + service);
                start - sent + 50 * MS
            })
            .remove(0);
            held_flags.push(search.judge(&stats));
        }
        assert_eq!(
            held_flags,
            vec![Some(true), Some(true), Some(true), Some(false)]
        );
        assert_eq!(search.held_rps(), Some(280.0));
        assert_eq!(RateSearch::new(vec![1.0], None).held_rps(), None);
        let mut none = RateSearch::new(vec![1.0, 2.0], Some(MS));
        none.next_rate();
        let slow = simulate(10, &[plan(10.0)], |_| 10 * MS).remove(0);
        assert_eq!(none.judge(&slow), Some(false));
        assert_eq!(none.next_rate(), None);
        assert_eq!(none.held_rps(), Some(0.0));
    }

    fn closed_loop_record() -> RunReport {
        let plan = crate::run::Plan {
            addr: "127.0.0.1:4433".parse().unwrap(),
            server_name: "localhost".into(),
            cert: "cert.pem".into(),
            server_pid: None,
            in_flight: 1,
            connections: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            payload_bytes: 64,
            body_bytes: 0,
            request: crate::run::RequestKind::Echo,
            engine: "turnstile".into(),
            scenario: "echo-serial".into(),
        };
        let cpu = crate::cpu::CpuDelta {
            stat: Duration::ZERO,
            sched: None,
        };
        RunReport::new(
            &plan,
            1,
            Duration::from_secs(1),
            10,
            0,
            10,
            0,
            None,
            Latency::default(),
            None,
            cpu,
            crate::report::Threads::default(),
            100,
            None,
        )
    }

    #[test]
    fn open_loop_members_sit_at_the_top_of_the_record_and_closed_records_still_read() {
        let closed = closed_loop_record();
        let text = serde_json::to_string(&closed).unwrap();
        assert!(!text.contains("held_rps"));
        let back: RunReport = serde_json::from_str(&text).unwrap();
        assert!(back.open_loop.is_none());

        let mut open = closed;
        open.open_loop = Some(OpenLoopReport {
            mode: "open".into(),
            target_rps: 20_000.0,
            achieved_rps: 19_990.0,
            late: 0,
            unsent: 0,
            max_in_flight: 8192,
            p99_max_ms: Some(52.0),
            held_rps: Some(20_000.0),
            steps: vec![],
        });
        let value = serde_json::to_value(&open).unwrap();
        assert_eq!(value["held_rps"], 20_000.0);
        assert_eq!(value["mode"], "open");
        assert_eq!(value["p99_max_ms"], 52.0);
        let back: RunReport = serde_json::from_value(value).unwrap();
        let o = back.open_loop.expect("open-loop members read back");
        assert_eq!((o.held_rps, o.max_in_flight), (Some(20_000.0), 8192));
    }

    #[test]
    fn the_reported_step_is_the_highest_held() {
        let step = |held| StepReport {
            rate_rps: 1.0,
            achieved_rps: 1.0,
            due: 1,
            requests: 1,
            errors: 0,
            timed_out: 0,
            unsent: 0,
            late: 0,
            p50_us: 1.0,
            p99_us: 1.0,
            p999_us: 1.0,
            max_us: 1.0,
            p99_all_us: Some(1.0),
            send_lag_p99_us: 0.0,
            server_cpu_us_per_req: None,
            server_cores_busy: None,
            loadgen_cores_busy: 0.0,
            other_cores_busy: None,
            held,
        };
        let steps = vec![step(Some(true)), step(Some(true)), step(Some(false))];
        assert_eq!(reported_step(&steps, true), 1);
        assert_eq!(reported_step(&steps[2..], true), 0);
        assert_eq!(reported_step(&[step(None), step(None)], false), 1);
    }

    #[test]
    fn steps_share_the_in_flight_bound_and_ignore_late_answers_of_earlier_steps() {
        let mut open = OpenLoop::new(1);
        let quick = StepPlan {
            rate_rps: 10.0,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(100),
        };
        open.start_step(quick, Duration::ZERO).unwrap();
        let Next::Send(first) = open.next(Duration::ZERO) else {
            panic!("the first request is due at once");
        };
        assert!(first.measured);
        // Never answered: the step ends at its drain deadline with it timed out.
        let end = Duration::from_millis(100) + DRAIN;
        assert_eq!(open.next(end), Next::StepDone);
        let stats = open.finish_step().unwrap();
        assert_eq!((stats.due, stats.timed_out, stats.ok), (1, 1, 0));
        // The next step finds the slot still taken until that answer comes.
        open.start_step(quick, end).unwrap();
        assert!(matches!(
            open.next(end),
            Next::Wait {
                or_answer: true,
                ..
            }
        ));
        open.answered(&first, end + MS, true);
        let Next::Send(second) = open.next(end + MS) else {
            panic!("a slot is free");
        };
        assert!(second.late && second.intended == end);
        open.answered(&second, end + 2 * MS, true);
        assert_eq!(open.next(end + Duration::from_millis(100)), Next::StepDone);
        let stats = open.finish_step().unwrap();
        assert_eq!((stats.ok, stats.late, stats.errors()), (1, 1, 0));
        assert!(
            p(&stats, 1.0).abs_diff(2 * MS) < MS / 100,
            "from the intended time"
        );
    }
}
