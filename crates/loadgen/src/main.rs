//! `turnstile-load`: turnstile's load generator.
//!
//! A QUIC client of the client protocol (`docs/protocol.md`): ALPN `turnstile/1`, one
//! bidirectional stream per request carrying one framed Cap'n Proto `Request`, one framed
//! `Response` back, which is checked. It drives any server that speaks the protocol (turnstile
//! itself, or `turnstile-baseline`) in a closed loop: `--in-flight` requests outstanding at all
//! times over `--connections` connections, `--warmup-s` seconds of load, then `--duration-s`
//! seconds measured. Latencies go into an HdrHistogram; the *server's* CPU time (utime + stime
//! of `--server-pid` from `/proc`) and the load generator's own are taken at both edges of the
//! measured window and divided by the requests completed in it. On a 2-core machine the load
//! generator often saturates first, so CPU per request is the honest figure of server cost.
//!
//! Open loop (`--rate RPS`, or a rate search with `--rates R1,R2,… --p99-max-ms MS`): requests
//! are sent on a fixed schedule whatever the answers do, at most `--max-in-flight` outstanding,
//! and latency runs from each request's intended send time (coordinated-omission corrected, as
//! wrk2 does); a search stops at the first step whose p99 is above the threshold and reports the
//! highest rate held (`held_rps`). See `open_loop.rs`. On a terminal, stderr shows a progress
//! line every second.
//!
//! Output: one table line (and its header) on stdout, and the full record as JSON (`--json`).
//! `turnstile-load summarize` turns many records into the medians, ratios and Markdown page
//! that `perf/bench-echo.sh` publishes.
//!
//! Request mixes (`--mix`): `echo` (`--payload-bytes`), and `decide`: a realistic request phase
//! (`POST`/`GET /api/v1/orders?…`, 20 headers, optionally `--body-bytes` of body in the first
//! frame) on the default route, whose answer must be `allow`. `perf/bench.sh` (`make bench`)
//! drives the scenario matrix with it.
//!
//! Cost: by default (`--driver quinn`) the client is quinn's high-level API on a current-thread
//! tokio runtime, so the whole load generator is one thread. That is cheap enough to keep a
//! server busy on a small machine, but not free (see `loadgen_cpu_us_per_req`). `--driver proto`
//! runs the closed loop through quinn-proto directly (`proto_run`): one thread, pinned with
//! `--cpu N`, every waiting datagram received and every pending one sent before it sleeps, the
//! same sans-IO shape as turnstile's shards. The open loop and the measurement modes use quinn.
//!
//! Two measurement modes replace the load loop: `--mode zero-rtt` (time to first response of a
//! resumed connection whose request rides in 0-RTT vs a first, full-handshake one; `zero_rtt`)
//! and `--mode idle-streams` (the server's RSS per open idle stream; `idle_streams`).
#![forbid(unsafe_code)]

mod cpu;
mod extra_figures;
mod idle_streams;
mod limits;
mod open_loop;
mod open_run;
mod open_summary;
mod probe;
mod progress;
mod proto_run;
mod report;
mod run;
mod summarize;
mod ticker;
mod zero_rtt;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use report::RunReport;
use run::{Plan, RequestKind};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for turnstile's client protocol (QUIC + Cap'n Proto), closed or open loop.
#[derive(Parser, Debug)]
#[command(
    name = "turnstile-load",
    version,
    about,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Combine run records (`--json` files) into medians, ratios and a Markdown page.
    Summarize(summarize::SummarizeArgs),
}

/// Options of a load run.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Server address (UDP).
    #[arg(long, default_value = "127.0.0.1:4433")]
    addr: SocketAddr,
    /// PEM file of the server certificate to pin (e.g. `<state_dir>/dev-cert.pem`).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// TLS server name sent (the pin does not check it).
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Process id of the server, to measure its CPU time over the window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Requests outstanding at all times (closed loop).
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// QUIC connections, each from its own UDP socket; requests are spread evenly.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup_s: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Bytes of the echo payload.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Request mix: `echo`, or `decide` (20 headers, `--body-bytes` of body in the first frame).
    #[arg(long, visible_alias = "mix", value_enum, default_value_t = RequestKind::Echo)]
    request: RequestKind,
    /// `decide`: bytes of request body sent in the first frame (0 = no body).
    #[arg(long, default_value_t = 0)]
    body_bytes: usize,
    /// Label of the server under test, for the report.
    #[arg(long, default_value = "server")]
    engine: String,
    /// Label of the scenario; default `<request>-serial` or `<request>-<in-flight>`.
    #[arg(long)]
    scenario: Option<String>,
    /// Write the run record (JSON) to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Do not print the table header.
    #[arg(long)]
    no_header: bool,
    /// Open loop (`--rate`, `--rates`, `--p99-max-ms`, `--max-in-flight`).
    #[command(flatten)]
    open: open_run::OpenArgs,
    /// What to measure: `closed` (the closed loop above), `zero-rtt` (time to first response of
    /// a resumed connection with its request in 0-RTT vs a first, full-handshake connection) or
    /// `idle-streams` (the server's RSS per open idle stream; needs `--server-pid`). The last two
    /// send echo requests and ignore the load options (in flight, connections, durations).
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    mode: Mode,
    /// `--mode zero-rtt`: measured iterations, each one 1-RTT and one 0-RTT connection.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// `--mode idle-streams`: bidirectional streams to open and keep idle.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// `--mode idle-streams`: streams the server allows open per connection (its
    /// `quic.max_concurrent_bidi_streams`); one per connection stays free for a probe request.
    #[arg(long, default_value_t = 1024)]
    streams_per_connection: usize,
    /// Closed loop engine: `quinn` (quinn's high-level API on a current-thread tokio runtime)
    /// or `proto` (quinn-proto driven directly by one thread, cheaper per request; `proto_run`).
    #[arg(long, value_enum, default_value_t = Driver::Quinn)]
    driver: Driver,
    /// `--driver proto`: pin the load generator's thread to this core.
    #[arg(long)]
    cpu: Option<usize>,
}

/// The closed loop's engine (`--driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Driver {
    /// quinn's high-level API, one task per in-flight request (`run`).
    Quinn,
    /// quinn-proto driven directly, one thread, batched socket I/O (`proto_run`).
    Proto,
}

/// What a load run measures (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Closed-loop requests: latency, throughput, CPU per request.
    Closed,
    /// 0-RTT vs 1-RTT time to first response (`zero_rtt`).
    ZeroRtt,
    /// Server memory per idle stream (`idle_streams`).
    IdleStreams,
}

fn seconds(name: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("--{name} must be a non-negative number"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Summarize(args)) => summarize::summarize(&args).map(|md| {
            if args.out_md.is_none() {
                print!("{md}");
            }
        }),
        None => load(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turnstile-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: RunArgs) -> Result<(), String> {
    let cert = args
        .cert
        .ok_or("--cert <pem> is required: the server certificate to pin")?;
    let request_name = format!("{:?}", args.request).to_lowercase();
    let mode_scenario = match args.mode {
        Mode::Closed => None,
        Mode::ZeroRtt => Some("zero-rtt".to_owned()),
        Mode::IdleStreams => Some(format!("streams-{}", args.streams)),
    };
    let open_scenario = args.open.default_scenario(&request_name);
    let scenario = args
        .scenario
        .or(mode_scenario)
        .or(open_scenario)
        .unwrap_or_else(|| {
            if args.in_flight == 1 {
                format!("{request_name}-serial")
            } else {
                format!("{request_name}-{}", args.in_flight)
            }
        });
    let plan = Plan {
        addr: args.addr,
        server_name: args.server_name,
        cert,
        server_pid: args.server_pid,
        in_flight: args.in_flight,
        connections: args.connections,
        warmup: seconds("warmup-s", args.warmup_s)?,
        duration: seconds("duration-s", args.duration_s)?,
        payload_bytes: args.payload_bytes,
        body_bytes: args.body_bytes,
        request: args.request,
        engine: args.engine,
        scenario,
    };
    if plan.duration.is_zero() {
        return Err("--duration-s must be above 0".into());
    }
    if args.mode != Mode::Closed {
        args.open.plan(&plan, true)?; // refuses open-loop options with another mode
    }
    let open_plan = match args.mode {
        Mode::Closed => args.open.plan(&plan, false)?,
        _ => None,
    };
    if args.driver == Driver::Proto && (args.mode != Mode::Closed || open_plan.is_some()) {
        return Err(
            "--driver proto drives the closed loop only (no --mode, --rate or --rates)".into(),
        );
    }
    if args.cpu.is_some() && args.driver != Driver::Proto {
        return Err("--cpu needs --driver proto".into());
    }
    let report = match args.mode {
        Mode::Closed => match (open_plan, args.driver) {
            (Some(open), _) => open_run::run(&open)?,
            (None, Driver::Quinn) => run::run(&plan)?,
            (None, Driver::Proto) => proto_run::run(&plan, args.cpu)?,
        },
        Mode::ZeroRtt => zero_rtt::run(&plan, args.iterations)?,
        Mode::IdleStreams => idle_streams::run(&plan, args.streams, args.streams_per_connection)?,
    };
    if !args.no_header {
        println!("{}", RunReport::table_header());
    }
    println!("{}", report.table_line());
    eprintln!("  {}", report.placement());
    if let Some(open) = &report.open_loop {
        eprint!("{}", open_loop::steps_table(open));
    }
    if let Some(e) = &report.first_error {
        eprintln!(
            "turnstile-load: {} request(s) failed; the first: {e}",
            report.errors_total
        );
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if report.requests == 0 {
        return Err("no request completed in the measured window".into());
    }
    Ok(())
}
