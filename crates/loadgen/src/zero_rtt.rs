//! `--mode zero-rtt`: time to the first response of a resumed connection whose request rides in
//! 0-RTT early data, against a first connection's (full 1-RTT handshake, no ticket).
//!
//! Every iteration makes two connections, each carrying one echo request (echo is replay-safe, so a server may answer it from 0-RTT data):
//!
//! 1. **1-RTT**: a TLS configuration with resumption disabled, so no ticket is offered. Timed
//!    from `connect` to the checked response; the request is sent once the handshake completes.
//! 2. **0-RTT**: a TLS configuration whose session store holds the tickets earlier connections
//!    received. The request is written right after `connect`, as early data (quinn's
//!    `into_0rtt`), and timed to the checked response. Whether the server accepted the early
//!    data is known once the handshake completes: only accepted iterations are recorded as 0-RTT
//!    times; rejected ones (the request fails with `ZeroRttRejected`) and unavailable ones (no
//!    ticket allowing early data was stored) are counted instead.
//!
//! Tickets are single-use (turnstile's are stateful: the server *takes* the session when it
//! resumes, see `crates/config/src/tls.rs`; rustls' client store hands each ticket out once),
//! so each 0-RTT connection stays open until the handshake completes and its own new ticket has
//! arrived ([`TICKET_TIMEOUT_MS`]); the next iteration resumes with that one. A priming
//! connection and [`ZERO_RTT_WARMUP_ITERATIONS`] unrecorded iterations come first.
//!
//! Connections take turns over [`ZERO_RTT_ENDPOINTS`] client endpoints, each its own UDP socket
//! made once at the start (a new quinn endpoint per connection would cost the load generator
//! milliseconds of fresh buffers each): consecutive connections come from different ports, so
//! SO_REUSEPORT spreads them over the server's shards and a ticket issued by one shard is often
//! used on another. Closed connections drain in the background; the endpoints are waited for
//! (bounded) at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rustls::NamedGroup;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue,
    Tls13ClientSessionValue,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};

use crate::limits::{
    HANDSHAKE_TIMEOUT_MS, TICKET_TIMEOUT_MS, ZERO_RTT_ENDPOINTS, ZERO_RTT_ITERATIONS_MAX,
    ZERO_RTT_WARMUP_ITERATIONS,
};
use crate::probe::{self, Echo, EchoError, Window};
use crate::report::{Latency, RunReport};
use crate::run::Plan;

/// Sessions the 0-RTT client's store keeps (it holds a handful of tickets at any time).
const SESSION_STORE_ENTRIES: usize = 64;

/// Figures of a `--mode zero-rtt` run (the `zero_rtt` member of the run record).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ZeroRttFigures {
    /// Measured iterations (each one 1-RTT and one 0-RTT attempt).
    pub iterations: usize,
    /// Time from `connect` to the checked response of a first connection (full handshake).
    pub one_rtt: Latency,
    /// 1-RTT connections whose echo succeeded (the samples of `one_rtt`).
    pub one_rtt_samples: u64,
    /// Time from `connect` to the checked response of a resumed connection whose request was
    /// sent and accepted as 0-RTT early data.
    pub zero_rtt: Latency,
    /// 0-RTT connections whose early data the server accepted and whose echo succeeded (the
    /// samples of `zero_rtt`).
    pub zero_rtt_samples: u64,
    /// 0-RTT attempts the server accepted (handshake says so).
    pub zero_rtt_accepted: u64,
    /// 0-RTT attempts the server rejected (the request was not served from early data; not
    /// recorded as a 0-RTT time).
    pub zero_rtt_rejected: u64,
    /// Iterations where no stored ticket allowed early data, so no 0-RTT was attempted.
    pub zero_rtt_unavailable: u64,
    /// Session tickets received over the whole run.
    pub tickets_received: u64,
    /// `zero_rtt.p50_us ÷ one_rtt.p50_us`, when both were measured.
    pub p50_ratio: Option<f64>,
    /// `zero_rtt.p99_us ÷ one_rtt.p99_us`, when both were measured.
    pub p99_ratio: Option<f64>,
}

/// A session store that counts the TLS 1.3 tickets it is given (so the load generator can wait
/// for the ticket the next resumption needs) and otherwise is rustls' in-memory cache.
#[derive(Debug)]
struct CountingStore {
    inner: ClientSessionMemoryCache,
    tickets: AtomicU64,
}

impl ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(server_name, group)
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(server_name, value)
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name)
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.inner.insert_tls13_ticket(server_name, value);
        self.tickets.fetch_add(1, Ordering::Release);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(server_name)
    }
}

/// The two client configurations and what the run counts.
struct Client {
    plan: Plan,
    /// No resumption: every connection is a full handshake.
    fresh: quinn::ClientConfig,
    /// Resumption through `store`, early data enabled.
    resuming: quinn::ClientConfig,
    store: Arc<CountingStore>,
    /// Client endpoints, used in turn.
    endpoints: Vec<quinn::Endpoint>,
    next_endpoint: usize,
}

/// What one 0-RTT attempt came to.
enum Attempt {
    /// Accepted and answered: the time to the response.
    Accepted(Duration),
    /// Accepted, but the request failed.
    AcceptedFailed(String),
    /// Rejected by the server.
    Rejected,
    /// No ticket allowing early data.
    Unavailable,
}

impl Client {
    fn new(plan: &Plan) -> Result<Client, String> {
        let cert = CertificateDer::from_pem_file(&plan.cert)
            .map_err(|e| format!("cannot read the certificate {}: {e}", plan.cert.display()))?;
        let mut fresh = turnstile_config::dev_client_crypto(&cert).map_err(|e| e.to_string())?;
        fresh.resumption = Resumption::disabled();
        fresh.enable_early_data = false;
        let store = Arc::new(CountingStore {
            inner: ClientSessionMemoryCache::new(SESSION_STORE_ENTRIES),
            tickets: AtomicU64::new(0),
        });
        let mut resuming = turnstile_config::dev_client_crypto(&cert).map_err(|e| e.to_string())?;
        resuming.resumption = Resumption::store(store.clone());
        resuming.enable_early_data = true;
        let endpoints = (0..ZERO_RTT_ENDPOINTS)
            .map(|_| probe::endpoint(plan.addr))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Client {
            plan: plan.clone(),
            fresh: probe::quic_client_config(fresh)?,
            resuming: probe::quic_client_config(resuming)?,
            store,
            endpoints,
            next_endpoint: 0,
        })
    }

    fn tickets(&self) -> u64 {
        self.store.tickets.load(Ordering::Acquire)
    }

    /// Starts a connection with `config` from the next endpoint.
    fn connect(&mut self, config: &quinn::ClientConfig) -> Result<quinn::Connecting, String> {
        let endpoint = &self.endpoints[self.next_endpoint % self.endpoints.len()];
        self.next_endpoint = self.next_endpoint.wrapping_add(1);
        endpoint
            .connect_with(config.clone(), self.plan.addr, &self.plan.server_name)
            .map_err(|e| format!("cannot connect to {}: {e}", self.plan.addr))
    }

    /// Closes `conn`; it drains in the background.
    fn retire(conn: quinn::Connection) {
        conn.close(quinn::VarInt::from_u32(0), b"done");
    }

    async fn handshake(&self, connecting: quinn::Connecting) -> Result<quinn::Connection, String> {
        tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), connecting)
            .await
            .map_err(|_| format!("handshake timed out after {HANDSHAKE_TIMEOUT_MS} ms"))?
            .map_err(|e| format!("handshake: {e}"))
    }

    /// Waits (bounded) until the store has received more than `before` tickets.
    async fn await_ticket(&self, before: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_millis(TICKET_TIMEOUT_MS);
        while self.tickets() <= before {
            if Instant::now() >= deadline {
                return Err(format!(
                    "no session ticket arrived within {TICKET_TIMEOUT_MS} ms"
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// One first connection, no ticket: time from `connect` to the checked response.
    async fn one_rtt(&mut self, echo: &Echo) -> Result<Duration, String> {
        let config = self.fresh.clone();
        let start = Instant::now();
        let connecting = self.connect(&config)?;
        let conn = self.handshake(connecting).await?;
        let result = echo.call(&conn).await;
        let elapsed = start.elapsed();
        Client::retire(conn);
        result.map(|()| elapsed).map_err(|e| e.to_string())
    }

    /// One resumed connection with the request in 0-RTT. Also waits for the connection's new
    /// ticket, which the next attempt needs.
    async fn zero_rtt(&mut self, echo: &Echo) -> Result<Attempt, String> {
        let config = self.resuming.clone();
        let tickets_before = self.tickets();
        let start = Instant::now();
        let connecting = self.connect(&config)?;
        let (conn, attempt) = match connecting.into_0rtt() {
            Ok((conn, accepted)) => {
                let result = echo.call(&conn).await;
                let elapsed = start.elapsed();
                let accepted =
                    tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), accepted)
                        .await;
                let attempt = match (accepted, result) {
                    (Err(_), _) => {
                        Client::retire(conn);
                        return Err(format!(
                            "0-RTT handshake did not complete within {HANDSHAKE_TIMEOUT_MS} ms"
                        ));
                    }
                    (Ok(true), Ok(())) => Attempt::Accepted(elapsed),
                    (Ok(true), Err(e)) => Attempt::AcceptedFailed(e.to_string()),
                    (Ok(false), Ok(())) | (Ok(false), Err(EchoError::ZeroRttRejected)) => {
                        Attempt::Rejected
                    }
                    (Ok(false), Err(e)) => {
                        Attempt::AcceptedFailed(format!("after a 0-RTT rejection: {e}"))
                    }
                };
                (conn, attempt)
            }
            Err(connecting) => (self.handshake(connecting).await?, Attempt::Unavailable),
        };
        let ticket = self.await_ticket(tickets_before).await;
        Client::retire(conn);
        ticket.map(|()| attempt)
    }
}

/// Runs `--mode zero-rtt` for `iterations` measured iterations.
pub fn run(plan: &Plan, iterations: usize) -> Result<RunReport, String> {
    if iterations == 0 || iterations > ZERO_RTT_ITERATIONS_MAX {
        return Err(format!(
            "--iterations must be between 1 and {ZERO_RTT_ITERATIONS_MAX}"
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run_local(plan, iterations))
}

fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| format!("histogram: {e}"))
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    h.saturating_record(ns.max(1));
}

async fn run_local(plan: &Plan, iterations: usize) -> Result<RunReport, String> {
    let mut client = Client::new(plan)?;
    let echo = Echo::new(0, plan.payload_bytes)?;

    // Priming: a full handshake on the resuming configuration brings the first ticket.
    let before = client.tickets();
    let config = client.resuming.clone();
    let connecting = client.connect(&config)?;
    let conn = client.handshake(connecting).await?;
    let primed = echo.call(&conn).await;
    let ticket = client.await_ticket(before).await;
    Client::retire(conn);
    primed.map_err(|e| format!("the priming request failed: {e}"))?;
    ticket.map_err(|e| format!("priming connection: {e} (does the server resume sessions?)"))?;

    for _ in 0..ZERO_RTT_WARMUP_ITERATIONS {
        client.one_rtt(&echo).await?;
        client.zero_rtt(&echo).await?;
    }

    let mut one = histogram()?;
    let mut zero = histogram()?;
    let mut figures = ZeroRttFigures {
        iterations,
        ..ZeroRttFigures::default()
    };
    let mut errors = 0u64;
    let mut first_error: Option<String> = None;
    let mut fail = |why: String, first: &mut Option<String>| {
        errors += 1;
        first.get_or_insert(why);
    };
    let tickets_start = client.tickets();
    let window = Window::start(plan.server_pid)?;
    for _ in 0..iterations {
        match client.one_rtt(&echo).await {
            Ok(d) => {
                record(&mut one, d);
                figures.one_rtt_samples += 1;
            }
            Err(e) => fail(format!("1-RTT: {e}"), &mut first_error),
        }
        match client.zero_rtt(&echo).await {
            Ok(Attempt::Accepted(d)) => {
                record(&mut zero, d);
                figures.zero_rtt_accepted += 1;
                figures.zero_rtt_samples += 1;
            }
            Ok(Attempt::AcceptedFailed(e)) => {
                figures.zero_rtt_accepted += 1;
                fail(format!("0-RTT: {e}"), &mut first_error);
            }
            Ok(Attempt::Rejected) => figures.zero_rtt_rejected += 1,
            Ok(Attempt::Unavailable) => figures.zero_rtt_unavailable += 1,
            Err(e) => fail(format!("0-RTT: {e}"), &mut first_error),
        }
    }
    let delta = window.finish()?;
    let server_rss_bytes = plan.server_pid.and_then(|p| crate::cpu::rss_bytes(p).ok());
    figures.tickets_received = client.tickets() - tickets_start;
    figures.one_rtt = Latency::from_histogram(&one);
    figures.zero_rtt = Latency::from_histogram(&zero);
    let ratio = |a: f64, b: f64, n: u64, m: u64| (n > 0 && m > 0 && b > 0.0).then(|| a / b);
    figures.p50_ratio = ratio(
        figures.zero_rtt.p50_us,
        figures.one_rtt.p50_us,
        figures.zero_rtt_samples,
        figures.one_rtt_samples,
    );
    figures.p99_ratio = ratio(
        figures.zero_rtt.p99_us,
        figures.one_rtt.p99_us,
        figures.zero_rtt_samples,
        figures.one_rtt_samples,
    );
    if figures.zero_rtt_samples == 0 && first_error.is_none() {
        first_error = Some(format!(
            "0-RTT was never accepted: {} rejected, {} without a ticket allowing early data",
            figures.zero_rtt_rejected, figures.zero_rtt_unavailable
        ));
    }
    probe::close_all(&[], &client.endpoints).await;

    // Every connection served one request: `requests` counts both kinds, so the server CPU per
    // request is the cost of a connection (handshake included) plus its request.
    let requests = figures.one_rtt_samples + figures.zero_rtt_samples;
    let mut report = RunReport::new(
        plan,
        1,
        delta.elapsed,
        requests,
        errors,
        requests,
        errors,
        first_error,
        figures.zero_rtt,
        delta.server,
        delta.own,
        delta.threads,
        delta.ticks_per_sec,
        server_rss_bytes,
    );
    eprintln!(
        "  zero-rtt: 0-RTT p50 {:.1} µs p99 {:.1} µs ({} samples; {} accepted, {} rejected, {} unavailable); 1-RTT p50 {:.1} µs p99 {:.1} µs ({} samples); p50 ratio {}",
        figures.zero_rtt.p50_us,
        figures.zero_rtt.p99_us,
        figures.zero_rtt_samples,
        figures.zero_rtt_accepted,
        figures.zero_rtt_rejected,
        figures.zero_rtt_unavailable,
        figures.one_rtt.p50_us,
        figures.one_rtt.p99_us,
        figures.one_rtt_samples,
        figures
            .p50_ratio
            .map_or_else(|| "–".to_owned(), |r| format!("{r:.2}")),
    );
    report.zero_rtt = Some(figures);
    Ok(report)
}
