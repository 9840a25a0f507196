//! `uds-floor`: the physical floor under turnstile's agent calls.
//!
//! A shard thread calls an external agent over a Unix domain socket, so no agent round trip can
//! be cheaper than a bare 64-byte request / 64-byte reply ping-pong over a `UnixStream` between
//! two threads that do nothing else. This binary measures that floor in the core layouts the
//! gateway can run in, all in the same run, so the gateway's own numbers can be put next to it:
//!
//! * `same-core-blocking` — client and server threads both pinned to core A, blocking reads: each
//!   round trip is two context switches on one core, no cross-core wake-up.
//! * `cross-core-blocking` — client on core A, server on core B, blocking reads: each message
//!   must wake a sleeping thread on the other core (IPI + idle-state exit), the expensive case.
//! * `cross-core-spinning` — server on core B spinning on non-blocking reads (`WouldBlock` →
//!   `std::hint::spin_loop()`), client on core A blocking: what a busy-poll agent costs when the
//!   shard still sleeps in its read.
//! * `cross-core-both-spinning` — both sides spin: no sleeps at all, only the cross-core cache
//!   line transfers and the socket code itself.
//!
//! `same-core-spinning` is deliberately absent: with both threads on one core a spinner holds the
//! core while its peer — the only thread that can make progress — waits for the scheduler to
//! preempt the spinner, so it would measure scheduler time slices, not the socket.
//!
//! Client and server are two threads of this one process (not two processes), connected by
//! `UnixStream::pair()` (a `socketpair(AF_UNIX, SOCK_STREAM)`); the kernel path is the same as for
//! a listener-accepted connection. Each layout runs `--warmup` round trips unmeasured (at most
//! `--seconds`), then stops after `--round-trips` measured round trips or `--seconds`, whichever
//! comes first.
//!
//! A core that does not exist (or cannot be pinned to) is reported with a warning and the thread
//! runs unpinned; the JSON then shows `null` for that core.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Bytes in each request and each reply.
const MSG_LEN: usize = 64;

#[derive(Parser, Debug)]
#[command(
    name = "uds-floor",
    about = "Raw UDS round-trip latency between two bare threads, per core layout (the floor under an agent call)"
)]
struct Args {
    /// Measured round trips per layout (a layout stops at this or --seconds, whichever first).
    #[arg(long, default_value_t = 200_000)]
    round_trips: u64,
    /// Time limit per layout in seconds (measured phase only).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Unmeasured warm-up round trips per layout (also bounded by --seconds).
    #[arg(long, default_value_t = 10_000)]
    warmup: u64,
    /// Core of the client (the "shard") in every layout, and of both threads in same-core layouts.
    #[arg(long, default_value_t = 0)]
    core_a: usize,
    /// Core of the server (the "agent") in cross-core layouts.
    #[arg(long, default_value_t = 1)]
    core_b: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Blocking,
    Spinning,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Blocking => "blocking",
            Mode::Spinning => "spinning",
        }
    }
}

struct Layout {
    name: &'static str,
    server_core: usize,
    client_core: usize,
    server_mode: Mode,
    client_mode: Mode,
}

struct LayoutResult {
    name: &'static str,
    server_core: Option<usize>,
    client_core: Option<usize>,
    server_mode: Mode,
    client_mode: Mode,
    hist: Histogram<u64>,
    elapsed: Duration,
    stopped_by_time: bool,
}

/// Pins the current thread to `core`; on failure warns and returns `None` (the thread stays
/// unpinned).
fn pin(core: usize, who: &str) -> Option<usize> {
    let available = core_affinity::get_core_ids().unwrap_or_default();
    if !available.iter().any(|c| c.id == core) {
        eprintln!(
            "warning: {who}: core {core} does not exist or is not usable here (usable: {:?}); running unpinned",
            available.iter().map(|c| c.id).collect::<Vec<_>>()
        );
        return None;
    }
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        Some(core)
    } else {
        eprintln!("warning: {who}: pinning to core {core} failed; running unpinned");
        None
    }
}

/// Fills `buf` completely. `Ok(false)` on a clean end of stream before the first byte.
/// In spinning mode the socket is non-blocking and `WouldBlock` spins.
fn read_full(sock: &mut UnixStream, buf: &mut [u8], mode: Mode) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match sock.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && mode == Mode::Spinning => {
                std::hint::spin_loop();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes all of `buf`; on a non-blocking socket `WouldBlock` spins (it does not happen with
/// one 64-byte message in flight, but is handled for correctness).
fn write_full(sock: &mut UnixStream, buf: &[u8]) -> io::Result<()> {
    let mut put = 0;
    while put < buf.len() {
        match sock.write(&buf[put..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => put += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The "agent": echoes every 64-byte request as a 64-byte reply until the client hangs up.
fn server(mut sock: UnixStream, mode: Mode) -> io::Result<()> {
    sock.set_nonblocking(mode == Mode::Spinning)?;
    let mut buf = [0u8; MSG_LEN];
    while read_full(&mut sock, &mut buf, mode)? {
        buf[0] = buf[0].wrapping_add(1);
        write_full(&mut sock, &buf)?;
    }
    Ok(())
}

/// The "shard": warm-up, then measured round trips until the count or the deadline.
fn client(
    mut sock: UnixStream,
    mode: Mode,
    args: &Args,
) -> io::Result<(Histogram<u64>, Duration, bool)> {
    sock.set_nonblocking(mode == Mode::Spinning)?;
    // 1 ns .. 60 s, 3 significant digits.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut req = [0u8; MSG_LEN];
    let mut rep = [0u8; MSG_LEN];
    let mut round_trip = |req: &mut [u8; MSG_LEN], seq: u64| -> io::Result<()> {
        req[..8].copy_from_slice(&seq.to_le_bytes());
        write_full(&mut sock, req)?;
        if !read_full(&mut sock, &mut rep, mode)? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if rep[1..8] != req[1..8] {
            return Err(io::Error::other("reply does not match request"));
        }
        Ok(())
    };
    let limit = Duration::from_secs_f64(args.seconds.max(0.0));
    // The warm-up is bounded by the same time limit, so a starved layout cannot hang the run.
    let warmup_deadline = Instant::now() + limit;
    for seq in 0..args.warmup {
        if Instant::now() >= warmup_deadline {
            break;
        }
        round_trip(&mut req, seq)?;
    }
    let start = Instant::now();
    let deadline = start + limit;
    let mut stopped_by_time = false;
    for seq in 0..args.round_trips {
        let t0 = Instant::now();
        if t0 >= deadline {
            stopped_by_time = true;
            break;
        }
        round_trip(&mut req, seq)?;
        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        hist.saturating_record(ns.max(1));
    }
    Ok((hist, start.elapsed(), stopped_by_time))
}

fn run_layout(layout: &Layout, args: &Args) -> io::Result<LayoutResult> {
    let (client_sock, server_sock) = UnixStream::pair()?;
    let (server_core, server_mode) = (layout.server_core, layout.server_mode);
    let server_thread = thread::Builder::new()
        .name(format!("uds-server-{}", layout.name))
        .spawn(move || {
            let pinned = pin(server_core, "server");
            server(server_sock, server_mode).map(|()| pinned)
        })?;
    let (client_core, client_mode) = (layout.client_core, layout.client_mode);
    let client_result = thread::scope(|s| {
        thread::Builder::new()
            .name(format!("uds-client-{}", layout.name))
            .spawn_scoped(s, move || {
                let pinned = pin(client_core, "client");
                client(client_sock, client_mode, args).map(|r| (pinned, r))
            })?
            .join()
            .map_err(|_| io::Error::other("client thread panicked"))?
    });
    // The client dropped its end (or failed): the server sees end of stream and exits.
    let server_result = server_thread
        .join()
        .map_err(|_| io::Error::other("server thread panicked"))?;
    let (client_pinned, (hist, elapsed, stopped_by_time)) = client_result?;
    let server_pinned = server_result?;
    Ok(LayoutResult {
        name: layout.name,
        server_core: server_pinned,
        client_core: client_pinned,
        server_mode: layout.server_mode,
        client_mode: layout.client_mode,
        hist,
        elapsed,
        stopped_by_time,
    })
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn quantile_us(h: &Histogram<u64>, q: f64) -> f64 {
    us(h.value_at_quantile(q))
}

fn machine_info() -> Value {
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let usable: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .iter()
        .map(|c| c.id)
        .collect();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    json!({
        "cores": cores,
        "usable_core_ids": usable,
        "kernel": kernel,
        "cpu": cpu,
        "arch": std::env::consts::ARCH,
    })
}

fn core_str(c: Option<usize>) -> String {
    c.map_or_else(|| "-".to_string(), |c| c.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (a, b) = (args.core_a, args.core_b);
    if a == b {
        eprintln!(
            "warning: --core-a and --core-b are both {a}: the cross-core layouts run on one core"
        );
    }
    let layouts = [
        Layout {
            name: "same-core-blocking",
            server_core: a,
            client_core: a,
            server_mode: Mode::Blocking,
            client_mode: Mode::Blocking,
        },
        Layout {
            name: "cross-core-blocking",
            server_core: b,
            client_core: a,
            server_mode: Mode::Blocking,
            client_mode: Mode::Blocking,
        },
        Layout {
            name: "cross-core-spinning",
            server_core: b,
            client_core: a,
            server_mode: Mode::Spinning,
            client_mode: Mode::Blocking,
        },
        Layout {
            name: "cross-core-both-spinning",
            server_core: b,
            client_core: a,
            server_mode: Mode::Spinning,
            client_mode: Mode::Spinning,
        },
    ];

    let machine = machine_info();
    println!(
        "uds-floor: {MSG_LEN} B request / {MSG_LEN} B reply over a UnixStream pair, two threads of one process; \
         warm-up {}, then up to {} round trips or {} s per layout",
        args.warmup, args.round_trips, args.seconds
    );
    println!(
        "machine: {} cores, kernel {}, cpu {}",
        machine["cores"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["cpu"].as_str().unwrap_or("?")
    );
    println!("(same-core-spinning skipped: a spinner on the shared core starves its peer)");
    println!();
    println!(
        "{:<26} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "layout", "client", "server", "p50 µs", "p99 µs", "p999 µs", "max µs", "mean µs", "trips"
    );

    let mut out = Vec::new();
    for layout in &layouts {
        let r = run_layout(layout, &args)?;
        let h = &r.hist;
        println!(
            "{:<26} {:>6} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>9.2} {:>9}{}",
            r.name,
            core_str(r.client_core),
            core_str(r.server_core),
            quantile_us(h, 0.50),
            quantile_us(h, 0.99),
            quantile_us(h, 0.999),
            us(h.max()),
            h.mean() / 1000.0,
            h.len(),
            if r.stopped_by_time {
                " (time limit)"
            } else {
                ""
            }
        );
        out.push(json!({
            "name": r.name,
            "p50_us": quantile_us(h, 0.50),
            "p99_us": quantile_us(h, 0.99),
            "p999_us": quantile_us(h, 0.999),
            "max_us": us(h.max()),
            "mean_us": h.mean() / 1000.0,
            "round_trips": h.len(),
            "server_core": r.server_core,
            "client_core": r.client_core,
            "server_mode": r.server_mode.name(),
            "client_mode": r.client_mode.name(),
            "seconds": r.elapsed.as_secs_f64(),
            "stopped_by_time": r.stopped_by_time,
        }));
    }

    if let Some(path) = &args.json {
        let doc = json!({
            "benchmark": "uds-floor",
            "message_bytes": MSG_LEN,
            "transport": "std UnixStream::pair (socketpair AF_UNIX SOCK_STREAM), two threads in one process",
            "warmup": args.warmup,
            "round_trips_limit": args.round_trips,
            "seconds_limit": args.seconds,
            "machine": machine,
            "layouts": out,
        });
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")?;
        println!();
        println!("wrote {}", path.display());
    }
    Ok(())
}
