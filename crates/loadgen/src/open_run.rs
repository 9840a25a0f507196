//! The open loop on the real clock (`--rate`, `--rates`): the sans-IO [`OpenLoop`] decides,
//! this drives it on the same one-thread runtime as the closed loop (a current-thread tokio
//! runtime with a `LocalSet`, quinn clients, one UDP socket per connection).
//!
//! One sender task asks the open loop what to do: it sends each request when it is due, as its
//! own local task on the next connection in turn, and sleeps until the next one is due. Tokio's
//! timer has a 1 ms resolution, so the sleep ends through a [`Ticker`] thread instead (tens of
//! µs late); since latency runs from the intended time, whatever lateness is left shows in the
//! figures (and separately as `send_lag_p99_us`). Each step's measured window is sampled (server and load generator CPU,
//! threads, machine) by a window task at its edges, as in the closed loop.

use std::cell::RefCell;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;
use turnstile_wire::limits as wire_limits;

use crate::cpu::{self, CpuDelta, Pid};
use crate::limits::{CLOSE_TIMEOUT_MS, HANDSHAKE_TIMEOUT_MS, SEND_BURST_MAX};
use crate::open_loop::{
    Next, OpenLoop, OpenLoopReport, RateSearch, StepPlan, StepReport, StepStats, Ticket,
    reported_step,
};
use crate::progress;
use crate::report::{Latency, RunReport, Threads};
use crate::run::{self, Expect, Failure, Plan};
use crate::ticker::Ticker;

/// An open-loop run's settings.
#[derive(Debug, Clone)]
pub struct OpenPlan {
    /// Address, certificate, connections, warm-up and window (per step), request mix, labels.
    pub base: Plan,
    /// The steps' rates, rising (one for `--rate`).
    pub rates: Vec<f64>,
    /// `--p99-max-ms`: stop at the first step above it and report the highest rate held.
    pub p99_max: Option<Duration>,
    /// `--max-in-flight`: bound on outstanding requests.
    pub max_in_flight: usize,
}

/// Runs `plan` to completion.
pub fn run(plan: &OpenPlan) -> Result<RunReport, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run_local(plan))
}

/// One connection and what is sent and expected on it.
struct Conn {
    conn: quinn::Connection,
    frame: Bytes,
    expect: Rc<Expect>,
}

/// State shared by the sender, the request tasks and the progress line, on the one thread.
struct Shared {
    open: RefCell<OpenLoop>,
    answered: Notify,
    first_error: RefCell<Option<String>>,
    epoch: Instant,
}

impl Shared {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
}

/// Loopback targets are reached from a loopback address of the same family.
fn bind_addr(target: SocketAddr) -> SocketAddr {
    match (target.is_ipv4(), target.ip().is_loopback()) {
        (true, true) => (Ipv4Addr::LOCALHOST, 0).into(),
        (true, false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        (false, true) => (Ipv6Addr::LOCALHOST, 0).into(),
        (false, false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

async fn run_local(plan: &OpenPlan) -> Result<RunReport, String> {
    let base = &plan.base;
    if base.connections == 0 || plan.max_in_flight == 0 {
        return Err("--connections and --max-in-flight must be at least 1".into());
    }
    if plan.rates.is_empty() {
        return Err("an open loop needs a rate".into());
    }
    let client_config = run::client_config(&base.cert)?;
    let bind = bind_addr(base.addr);
    let mut endpoints = Vec::with_capacity(base.connections);
    let mut conns = Vec::with_capacity(base.connections);
    for i in 0..base.connections {
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| format!("cannot bind a client socket on {bind}: {e}"))?;
        endpoint.set_default_client_config(client_config.clone());
        let connecting = endpoint
            .connect(base.addr, &base.server_name)
            .map_err(|e| format!("cannot connect to {}: {e}", base.addr))?;
        let conn = tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), connecting)
            .await
            .map_err(|_| format!("connection {i} to {}: handshake timed out", base.addr))?
            .map_err(|e| format!("connection {i} to {}: {e}", base.addr))?;
        let id = i as u64;
        conns.push(Conn {
            conn,
            frame: run::request_frame(base.request, id, base.payload_bytes, base.body_bytes)?,
            expect: Rc::new(Expect {
                correlation_id: id,
                kind: base.request,
                payload: run::payload(base.payload_bytes),
            }),
        });
        endpoints.push(endpoint);
    }

    let shared = Rc::new(Shared {
        open: RefCell::new(OpenLoop::new(plan.max_in_flight)),
        answered: Notify::new(),
        first_error: RefCell::new(None),
        epoch: Instant::now(),
    });
    let progress = progress::spawn({
        let shared = shared.clone();
        move || shared.open.borrow().snapshot(shared.now())
    });
    let ticks_per_sec = cpu::clock_ticks_per_sec();
    let ticker = Ticker::start(shared.epoch)?;
    let mut search = RateSearch::new(plan.rates.clone(), plan.p99_max);
    let mut steps = Vec::new();
    let mut reports = Vec::new();
    let mut next_conn = 0;
    while let Some(rate_rps) = search.next_rate() {
        let step = StepPlan {
            rate_rps,
            warmup: base.warmup,
            duration: base.duration,
        };
        let (stats, report) = run_step(
            plan,
            &shared,
            &ticker,
            &conns,
            &mut next_conn,
            step,
            ticks_per_sec,
        )
        .await?;
        let held = search.judge(&stats);
        steps.push(StepReport::new(&stats, &report, held));
        reports.push(report);
    }
    drop(progress);
    drop(ticker);

    // Requests still outstanding get a bounded wait, then the connections close.
    let close_wait = Duration::from_millis(CLOSE_TIMEOUT_MS);
    let deadline = tokio::time::Instant::now() + close_wait;
    while shared.open.borrow().in_flight() > 0 {
        if tokio::time::timeout_at(deadline, shared.answered.notified())
            .await
            .is_err()
        {
            break;
        }
    }
    for c in &conns {
        c.conn.close(quinn::VarInt::from_u32(0), b"done");
    }
    for e in &endpoints {
        let _ = tokio::time::timeout(close_wait, e.wait_idle()).await;
    }

    let i = reported_step(&steps, plan.p99_max.is_some());
    let mut report = reports.swap_remove(i);
    let s = &steps[i];
    report.open_loop = Some(OpenLoopReport {
        mode: "open".into(),
        target_rps: s.rate_rps,
        achieved_rps: s.achieved_rps,
        late: s.late,
        unsent: s.unsent,
        max_in_flight: plan.max_in_flight,
        p99_max_ms: plan.p99_max.map(|d| d.as_secs_f64() * 1000.0),
        held_rps: search.held_rps(),
        steps,
    });
    Ok(report)
}

/// Runs one step: sends on schedule until the open loop says the step is over.
async fn run_step(
    plan: &OpenPlan,
    shared: &Rc<Shared>,
    ticker: &Ticker,
    conns: &[Conn],
    next_conn: &mut usize,
    step: StepPlan,
    ticks_per_sec: u64,
) -> Result<(StepStats, RunReport), String> {
    shared.open.borrow_mut().start_step(step, shared.now())?;
    let (window_start, window_end) = shared
        .open
        .borrow()
        .window()
        .ok_or("the step did not start")?;
    let window = tokio::task::spawn_local(measure_window(
        shared.epoch + window_start,
        shared.epoch + window_end,
        plan.base.server_pid,
        ticks_per_sec,
    ));
    let mut burst = 0;
    loop {
        let next = shared.open.borrow_mut().next(shared.now());
        match next {
            Next::Send(ticket) => {
                let c = &conns[*next_conn % conns.len()];
                *next_conn = next_conn.wrapping_add(1);
                tokio::task::spawn_local(request(
                    c.conn.clone(),
                    c.frame.clone(),
                    c.expect.clone(),
                    ticket,
                    shared.clone(),
                ));
                burst += 1;
                if burst >= SEND_BURST_MAX {
                    burst = 0;
                    tokio::task::yield_now().await;
                }
            }
            Next::Wait { until, or_answer } => {
                burst = 0;
                // The ticker wakes the sender on time; tokio's timer (1 ms resolution) is the
                // fallback.
                ticker.wake_at(until);
                let sleep = tokio::time::sleep_until((shared.epoch + until).into());
                if or_answer {
                    tokio::select! {
                        () = sleep => {}
                        () = ticker.woken() => {}
                        () = shared.answered.notified() => {}
                    }
                } else {
                    tokio::select! {
                        () = sleep => {}
                        () = ticker.woken() => {}
                    }
                }
            }
            Next::StepDone => break,
        }
    }
    let window = window
        .await
        .map_err(|e| format!("the window task failed: {e}"))??;
    let stats = shared
        .open
        .borrow_mut()
        .finish_step()
        .ok_or("the step did not start")?;
    let (_, ok_total, failed_total) = shared.open.borrow().totals();
    let mut step_plan = plan.base.clone();
    step_plan.in_flight = plan.max_in_flight;
    let report = RunReport::new(
        &step_plan,
        conns.len(),
        window.elapsed,
        stats.ok,
        stats.errors(),
        ok_total,
        failed_total,
        shared.first_error.borrow().clone(),
        Latency::from_histogram(&stats.latency),
        window.server,
        window.own,
        window.threads,
        ticks_per_sec,
        window.server_rss_bytes,
    );
    Ok((stats, report))
}

/// One request on its own stream; its answer (or failure) goes to the open loop.
async fn request(
    conn: quinn::Connection,
    frame: Bytes,
    expect: Rc<Expect>,
    ticket: Ticket,
    shared: Rc<Shared>,
) {
    let read_limit = wire_limits::FRAME_HEADER_BYTES + wire_limits::FRAME_BYTES_MAX as usize;
    let result = run::one_request(&conn, frame, read_limit, &expect).await;
    let now = shared.now();
    if let Err(Failure::Connection(why) | Failure::Request(why)) = &result {
        shared
            .first_error
            .borrow_mut()
            .get_or_insert_with(|| why.clone());
    }
    shared
        .open
        .borrow_mut()
        .answered(&ticket, now, result.is_ok());
    shared.answered.notify_one();
}

/// CPU and threads over one measured window.
struct Window {
    elapsed: Duration,
    server: Option<CpuDelta>,
    own: CpuDelta,
    threads: Threads,
    server_rss_bytes: Option<u64>,
}

/// Samples the server, the load generator and the machine at `start` and `end`.
async fn measure_window(
    start: Instant,
    end: Instant,
    server_pid: Option<u32>,
    ticks_per_sec: u64,
) -> Result<Window, String> {
    let server = server_pid.map(Pid::Other);
    let sample_server = || -> Result<Option<cpu::CpuSample>, String> {
        server
            .map(|p| cpu::sample(p).map_err(|e| format!("cannot read the server's CPU time: {e}")))
            .transpose()
    };
    let sample_self = || cpu::sample(Pid::OurSelf).map_err(|e| format!("/proc/self: {e}"));
    let server_threads = || server.and_then(|p| cpu::threads(p).ok());
    let own_threads = || cpu::threads(Pid::OurSelf).unwrap_or_default();

    tokio::time::sleep_until(start.into()).await;
    let server_start = sample_server()?;
    let self_start = sample_self()?;
    let server_threads_start = server_threads();
    let own_threads_start = own_threads();
    let machine_start = cpu::machine().ok();
    let started = Instant::now();

    tokio::time::sleep_until(end.into()).await;
    let elapsed = started.elapsed();
    let server_end = sample_server()?;
    let self_end = sample_self()?;
    let server_threads_end = server_threads();
    let own_threads_end = own_threads();
    let machine_end = cpu::machine().ok();
    let server_rss_bytes = server_pid.and_then(|p| cpu::rss_bytes(p).ok());
    let secs = elapsed.as_secs_f64();
    Ok(Window {
        elapsed,
        server: match (server_start, server_end) {
            (Some(a), Some(b)) => Some(CpuDelta::between(a, b, ticks_per_sec)),
            _ => None,
        },
        own: CpuDelta::between(self_start, self_end, ticks_per_sec),
        threads: Threads {
            server: match (server_threads_start, server_threads_end) {
                (Some(a), Some(b)) => Some(cpu::thread_deltas(&a, &b, secs)),
                _ => None,
            },
            loadgen: cpu::thread_deltas(&own_threads_start, &own_threads_end, secs),
            machine: match (machine_start, machine_end) {
                (Some(a), Some(b)) => Some(cpu::MachineDelta::between(a, b, secs, ticks_per_sec)),
                _ => None,
            },
        },
        server_rss_bytes,
    })
}

/// The open-loop options of a load run (`--rate`, `--rates`, `--p99-max-ms`,
/// `--max-in-flight`).
#[derive(clap::Args, Debug, Clone)]
pub struct OpenArgs {
    /// Open loop at this many requests per second in total (over all connections): requests
    /// are sent on schedule whatever the answers do, latency runs from each request's intended
    /// send time (coordinated-omission corrected). `--in-flight` is not used.
    #[arg(long, conflicts_with = "rates")]
    pub rate: Option<f64>,
    /// Rate search: open-loop steps at these rising rates (comma-separated, requests per
    /// second), each `--warmup-s` + `--duration-s`; with `--p99-max-ms`, stops after the first
    /// step above it and reports the highest rate held (`held_rps`).
    #[arg(long)]
    pub rates: Option<String>,
    /// Open loop: a step holds when the 99th percentile of its measured requests, counting
    /// failed, unanswered and unsent ones as infinitely slow, is at most this (milliseconds).
    #[arg(long)]
    pub p99_max_ms: Option<f64>,
    /// Open loop: most requests outstanding; a request due when they are all taken waits for
    /// a free one and counts as `late` (default: 10000).
    #[arg(long)]
    pub max_in_flight: Option<usize>,
}

impl OpenArgs {
    /// Whether an open loop is asked for.
    pub fn is_open(&self) -> bool {
        self.rate.is_some() || self.rates.is_some()
    }

    /// The scenario label when none is given: `<request>-open`.
    pub fn default_scenario(&self, request_name: &str) -> Option<String> {
        self.is_open().then(|| format!("{request_name}-open"))
    }

    /// The open-loop plan over `base`, or `None` for a closed loop; `other_mode` is true when
    /// another measurement mode (`--mode`) is asked for.
    pub fn plan(&self, base: &Plan, other_mode: bool) -> Result<Option<OpenPlan>, String> {
        use crate::limits::{OPEN_IN_FLIGHT_DEFAULT, OPEN_IN_FLIGHT_MAX};
        use crate::open_loop::{check_rate, p99_max, parse_rates};
        if !self.is_open() {
            if self.p99_max_ms.is_some() || self.max_in_flight.is_some() {
                return Err("--p99-max-ms and --max-in-flight need --rate or --rates".into());
            }
            return Ok(None);
        }
        if other_mode {
            return Err("--rate and --rates are a load of their own: not with --mode".into());
        }
        let rates = match (&self.rate, &self.rates) {
            (Some(rate), _) => vec![check_rate(*rate).map_err(|e| format!("--rate: {e}"))?],
            (None, Some(list)) => parse_rates(list)?,
            (None, None) => return Ok(None),
        };
        let max_in_flight = self.max_in_flight.unwrap_or(OPEN_IN_FLIGHT_DEFAULT);
        if !(1..=OPEN_IN_FLIGHT_MAX).contains(&max_in_flight) {
            return Err(format!(
                "--max-in-flight must be between 1 and {OPEN_IN_FLIGHT_MAX}"
            ));
        }
        Ok(Some(OpenPlan {
            base: base.clone(),
            rates,
            p99_max: self.p99_max_ms.map(p99_max).transpose()?,
            max_in_flight,
        }))
    }
}
