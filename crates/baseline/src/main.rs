//! `turnstile-baseline`: the conventional stack that turnstile's front door is measured against.
//!
//! It is what a competent team would build today for the same job: a tokio multi-thread
//! (work-stealing, epoll) runtime and quinn's high-level API, one task per connection and one
//! task per request stream, the whole request read with `read_to_end`, and a freshly allocated
//! Cap'n Proto builder and response buffer per request. It serves the *same* client protocol
//! (`docs/protocol.md`: ALPN `turnstile/1`, one framed Cap'n Proto `Request` per bidirectional
//! stream, one framed `Response` back) from the *same* configuration file, certificate and QUIC
//! transport settings as `turnstile serve`, so one load generator and one client drive both and
//! the difference measured is the runtime model alone.
//!
//! It answers `echo` (the same bytes back), `hello` (`helloAck` with the limits) and `decide`.
//! With `[agents]` and `[[routes]]` configured, a `decide` request phase runs through the route's
//! chain of *the same agent binaries* turnstile runs (started by the same supervisor), spoken to
//! in the agent protocol's JSON encoding over pooled tokio `UnixStream`s: groups in order, the
//! agents of a group concurrently, the first block wins and cancels the rest, per-agent timeouts,
//! `max_in_flight` with `queue_timeout`, health reports, fail-open / fail-closed with the same
//! audit tags (see `agents`). No circuit breakers, no WASM agents, request phase only. Without
//! agents, `decide` is allowed, as turnstile's allow-all route. Every other request gets
//! `notImplemented`.
//! `server.shards` sets the number of tokio worker threads (0 = one per core). Shard-specific
//! settings (`[shard]`, `server.cores`) have no equivalent here and are ignored. It uses the same
//! global allocator as turnstile (mimalloc), so allocation is cheap for both.
//!
//! It is a benchmark reference, not a product: `perf/bench-echo.sh` runs it side by side with
//! turnstile. SIGTERM or SIGINT stops accepting connections, lets requests in flight finish for
//! up to `server.drain_timeout_ms`, closes every connection with `SHUTTING_DOWN` and exits 0.
//!
//! 0-RTT works as in turnstile (see `early`): the same TLS configuration (stateful single-use
//! tickets, early data unless `quic.zero_rtt = false`), connections handed over before their
//! handshake completes so that 0-RTT requests are answered at once, and requests read before the
//! handshake completed answered `notReplaySafe` unless replay-safe (turnstile's own rule).
#![forbid(unsafe_code)]

mod agents;
mod answer;
mod early;
mod limits;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use quinn::ReadToEndError;
use turnstile_config::Config;
use turnstile_wire::turnstile_capnp::ErrorCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// QUIC application error codes of the client protocol (docs/protocol.md, section 8.2).
mod codes {
    use quinn::VarInt;
    /// Graceful.
    pub const NO_ERROR: VarInt = VarInt::from_u32(0x0);
    /// The server is draining.
    pub const SHUTTING_DOWN: VarInt = VarInt::from_u32(0x2);
    /// The request went over `max_request_bytes`.
    pub const REQUEST_TOO_LARGE: VarInt = VarInt::from_u32(0x4);
    /// The request was cancelled.
    pub const CANCELLED: VarInt = VarInt::from_u32(0x5);
}

/// How long a closing endpoint gets to tell its peers, once the drain is over.
const CLOSE_FLUSH: Duration = Duration::from_millis(limits::CLOSE_FLUSH_MS);
/// How often the drain checks whether requests are still in flight.
const DRAIN_POLL: Duration = Duration::from_millis(limits::DRAIN_POLL_MS);
/// Window over which new connection attempts are counted for the Retry threshold.
const INITIAL_RATE_WINDOW: Duration = Duration::from_millis(limits::INITIAL_RATE_WINDOW_MS);

/// The conventional-stack reference server (tokio + quinn) for turnstile's benchmarks.
#[derive(Parser, Debug)]
#[command(name = "turnstile-baseline", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Serve the client protocol over QUIC until SIGTERM or SIGINT.
    Serve {
        /// Configuration file (TOML, turnstile's format). Without it, the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let Command::Serve { config } = Cli::parse().command;
    let config = match Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("turnstile-baseline: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let workers = config.server.shard_count();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("baseline-worker")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("turnstile-baseline: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, workers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turnstile-baseline: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Shared between the accept loop, connection tasks and the drain.
struct Shared {
    /// Open connections (for `max_connections_per_shard` × shards).
    connections: AtomicUsize,
    /// Request streams being served.
    in_flight: AtomicUsize,
    /// Set when the drain starts: new streams get `shuttingDown`.
    draining: AtomicBool,
    /// Largest request accepted on one stream.
    max_request_bytes: usize,
    /// Reported in `HelloAck`.
    max_streams: u32,
    /// Agents and routes; `None` = `decide` is the built-in allow-all.
    plane: Option<Arc<agents::Plane>>,
}

/// Decrements a counter when dropped, however the task ends.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn run(config: Config, workers: usize) -> Result<(), String> {
    let tls = turnstile_config::server_crypto(&config.tls, &config.server.state_dir)
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    if tls.is_development() {
        println!(
            "turnstile-baseline: using {} development certificate {} (sha256 {}); clients must pin it",
            if tls.generated_now() { "a new" } else { "the" },
            tls.cert_path.display(),
            tls.sha256_fingerprint
        );
    }
    let server_config = turnstile_config::quic_server_config(&config, &tls)
        .map_err(|e| format!("QUIC setup failed: {e}"))?;
    let listen: SocketAddr = config.server.listen;
    let endpoint = quinn::Endpoint::server(server_config, listen)
        .map_err(|e| format!("cannot bind {listen}: {e}"))?;

    let plane = agents::Plane::start(&config).await?;
    let shared = Arc::new(Shared {
        connections: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        draining: AtomicBool::new(false),
        max_request_bytes: config.quic.max_request_bytes,
        max_streams: config.quic.max_concurrent_bidi_streams,
        plane,
    });
    let max_connections = (config.quic.max_connections_per_shard as usize)
        .saturating_mul(config.server.shard_count());

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;

    println!(
        "turnstile-baseline: listening on {listen} (QUIC, ALPN turnstile/1) with a tokio multi-thread runtime of {workers} worker(s) and quinn; answering echo, hello and decide ({})",
        if shared.plane.is_some() {
            "through the configured agent chains, agents over JSON"
        } else {
            "allow-all"
        }
    );

    let accept = tokio::spawn(accept_loop(
        endpoint.clone(),
        shared.clone(),
        max_connections,
        config.quic.retry_above_initials_per_sec,
    ));

    let signal = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    let drain = config.server.drain_timeout;
    println!(
        "turnstile-baseline: received {signal}; draining requests for up to {} ms",
        drain.as_millis()
    );
    shared.draining.store(true, Ordering::Relaxed);
    endpoint.set_server_config(None);
    accept.abort();
    let deadline = Instant::now() + drain;
    while shared.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::select! {
            _ = tokio::time::sleep(DRAIN_POLL) => {}
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    endpoint.close(codes::SHUTTING_DOWN, b"server shutting down");
    let _ = tokio::time::timeout(CLOSE_FLUSH, endpoint.wait_idle()).await;
    println!("turnstile-baseline: stopped cleanly");
    Ok(())
}

/// Accepts connections: refuses them at the connection limit, asks for a Retry above the rate of
/// new connection attempts (as turnstile does), and spawns one task per connection.
async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    max_connections: usize,
    retry_above_per_sec: u32,
) {
    let mut window_start: Option<Instant> = None;
    let mut in_window: u32 = 0;
    while let Some(incoming) = endpoint.accept().await {
        if shared.draining.load(Ordering::Relaxed)
            || shared.connections.load(Ordering::Relaxed) >= max_connections
        {
            incoming.refuse();
            continue;
        }
        let now = Instant::now();
        match window_start {
            Some(start) if now.saturating_duration_since(start) < INITIAL_RATE_WINDOW => {
                in_window = in_window.saturating_add(1)
            }
            _ => {
                window_start = Some(now);
                in_window = 1;
            }
        }
        if in_window > retry_above_per_sec
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let connecting = match incoming.accept() {
                Ok(c) => c,
                Err(_) => return,
            };
            // Handed over before the handshake completes, so that 0-RTT requests are answered
            // at once, as turnstile does (see `early`).
            let (connection, handshake) = match connecting.into_0rtt() {
                Ok((connection, done)) => (connection, early::Handshake::pending(done)),
                Err(connecting) => match connecting.await {
                    Ok(connection) => (connection, early::Handshake::completed()),
                    Err(_) => return,
                },
            };
            let _open = Counted::new(&shared.connections);
            serve_connection(connection, handshake, shared.clone()).await;
        });
    }
}

/// One task per connection: accepts request streams and spawns one task per stream.
async fn serve_connection(
    connection: quinn::Connection,
    handshake: Arc<early::Handshake>,
    shared: Arc<Shared>,
) {
    loop {
        let (send, recv) = match connection.accept_bi().await {
            Ok(pair) => pair,
            // Closed by the client, timed out or lost: nothing left to serve.
            Err(_) => return,
        };
        let shared = shared.clone();
        let handshake = handshake.clone();
        tokio::spawn(async move {
            let _request = Counted::new(&shared.in_flight);
            serve_stream(send, recv, &handshake, &shared).await;
        });
    }
}

/// One request: read the whole stream, answer with one frame, finish.
async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    handshake: &early::Handshake,
    shared: &Shared,
) {
    let request = match recv.read_to_end(shared.max_request_bytes).await {
        Ok(bytes) => bytes,
        Err(ReadToEndError::TooLong) => {
            let _ = recv.stop(codes::REQUEST_TOO_LARGE);
            let msg = format!(
                "request exceeds {} bytes (the server's max_request_bytes)",
                shared.max_request_bytes
            );
            respond(&mut send, answer::error_frame(0, ErrorCode::TooLarge, &msg)).await;
            return;
        }
        Err(ReadToEndError::Read(_)) => {
            // Reset by the client or connection lost: the request is cancelled.
            let _ = send.reset(codes::CANCELLED);
            return;
        }
    };
    // Read before the handshake completed: 0-RTT data, served only if replay-safe (`early`).
    let refused = if handshake.is_handshaking() {
        early::refusal(&request)
    } else {
        None
    };
    let response = if shared.draining.load(Ordering::Relaxed) {
        answer::shutting_down(&request)
    } else if let Some(refusal) = refused {
        refusal
    } else if let Some(plane) = &shared.plane {
        agents::decide(
            plane.clone(),
            request,
            shared.max_request_bytes,
            shared.max_streams,
        )
        .await
    } else {
        answer::answer(&request, shared.max_request_bytes, shared.max_streams)
    };
    respond(&mut send, response).await;
}

async fn respond(send: &mut quinn::SendStream, frame: Vec<u8>) {
    if send.write_all(&frame).await.is_ok() {
        let _ = send.finish();
    } else {
        let _ = send.reset(codes::NO_ERROR);
    }
}
