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
//! Output: one table line (and its header) on stdout, and the full record as JSON (`--json`).
//! `turnstile-load summarize` turns many records into the medians, ratios and Markdown page
//! that `perf/bench-echo.sh` publishes.
//!
//! Request mixes (`--mix`): `echo` (`--payload-bytes`), and `decide`: a realistic request phase
//! (`POST`/`GET /api/v1/orders?…`, 20 headers, optionally `--body-bytes` of body in the first
//! frame) on the default route, whose answer must be `allow`. `perf/bench.sh` (`make bench`)
//! drives the scenario matrix with it.
//!
//! Cost: the client is quinn's high-level API on a current-thread tokio runtime, so the whole
//! load generator is one thread. That is cheap enough to keep a server busy on a small machine,
//! but not free (see `loadgen_cpu_us_per_req`). The planned next step, for the full scenario
//! matrix (open loop, request mixes, SVG output), is a quinn-proto-direct loop on a pinned core
//! with batched UDP I/O, the same sans-IO shape as turnstile's shards.
#![forbid(unsafe_code)]

mod cpu;
mod report;
mod run;
mod summarize;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use report::RunReport;
use run::{Plan, RequestKind};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for turnstile's client protocol (QUIC + Cap'n Proto), closed loop.
#[derive(Parser, Debug)]
#[command(
    name = "turnstile-load",
    version,
    about,
    args_conflicts_with_subcommands = true
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
    let scenario = args.scenario.unwrap_or_else(|| {
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
    let report = run::run(&plan)?;
    if !args.no_header {
        println!("{}", RunReport::table_header());
    }
    println!("{}", report.table_line());
    eprintln!("  {}", report.placement());
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
