//! The closed loop: `in_flight` workers spread over `connections` QUIC connections, each sending
//! one request per stream and waiting for its response before sending the next.
//!
//! Everything runs on one thread (a current-thread tokio runtime with a `LocalSet`), so the
//! shared state is plain `Cell`s and one `RefCell`'d histogram. A window controller task moves
//! the phase from warm-up to measuring to done and samples CPU times at both edges: a request
//! counts (and its latency is recorded) when it completes inside the measured window.
//!
//! Every connection gets its own UDP socket (its own client endpoint), so that connections have
//! distinct 4-tuples and the server's SO_REUSEPORT hash spreads them over its shards as it would
//! spread real clients.

use std::cell::{Cell, RefCell};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use turnstile_wire::turnstile_capnp::{request, response, verdict};
use turnstile_wire::{FrameWriter, Message, limits};

use crate::cpu::{self, CpuDelta, CpuSample, Pid};
use crate::report::{Latency, RunReport, Threads};

/// What each request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    /// `echo` with `payload_bytes` bytes; the response must hold the same bytes.
    Echo,
    /// `decide` of a realistic request phase (`POST /api/v1/orders?…` with 20 headers, and
    /// `body_bytes` bytes of body in the first frame when above 0), default route; the response
    /// must allow it.
    Decide,
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Server address.
    pub addr: SocketAddr,
    /// Server name for TLS (the pin ignores it, but it is sent as SNI).
    pub server_name: String,
    /// PEM file of the server's certificate, trusted alone (pinned).
    pub cert: std::path::PathBuf,
    /// Server process to measure, if any.
    pub server_pid: Option<u32>,
    /// Requests in flight at once (closed loop).
    pub in_flight: usize,
    /// QUIC connections the requests are spread over.
    pub connections: usize,
    /// Seconds of load before measuring.
    pub warmup: Duration,
    /// Seconds measured.
    pub duration: Duration,
    /// Echo payload size.
    pub payload_bytes: usize,
    /// Decide: request body bytes sent in the first frame (0 = no body).
    pub body_bytes: usize,
    /// Request type.
    pub request: RequestKind,
    /// Label of the server under test.
    pub engine: String,
    /// Label of the scenario.
    pub scenario: String,
}

/// Phase of the run, set by the window controller and read by workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Warmup,
    Measure,
    Done,
}

/// State shared by the workers on the one thread.
struct Shared {
    phase: Cell<Phase>,
    histogram: RefCell<Histogram<u64>>,
    measured_ok: Cell<u64>,
    measured_errors: Cell<u64>,
    total_ok: Cell<u64>,
    total_errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
}

/// Why one request failed.
pub(crate) enum Failure {
    /// The connection is gone: this worker stops.
    Connection(String),
    /// This request failed; the next one may succeed.
    Request(String),
}

/// Runs `plan` to completion.
pub fn run(plan: &Plan) -> Result<RunReport, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run_local(plan))
}

async fn run_local(plan: &Plan) -> Result<RunReport, String> {
    if plan.in_flight == 0 || plan.connections == 0 {
        return Err("--in-flight and --connections must be at least 1".into());
    }
    let connections = plan.connections.min(plan.in_flight);
    let client_config = client_config(&plan.cert)?;
    // Loopback targets are reached from a loopback address of the same family.
    let bind: SocketAddr = match (plan.addr.is_ipv4(), plan.addr.ip().is_loopback()) {
        (true, true) => (Ipv4Addr::LOCALHOST, 0).into(),
        (true, false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        (false, true) => (Ipv6Addr::LOCALHOST, 0).into(),
        (false, false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };

    let mut endpoints = Vec::with_capacity(connections);
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| format!("cannot bind a client socket on {bind}: {e}"))?;
        endpoint.set_default_client_config(client_config.clone());
        let connecting = endpoint
            .connect(plan.addr, &plan.server_name)
            .map_err(|e| format!("cannot connect to {}: {e}", plan.addr))?;
        let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .map_err(|_| format!("connection {i} to {}: handshake timed out", plan.addr))?
            .map_err(|e| format!("connection {i} to {}: {e}", plan.addr))?;
        endpoints.push(endpoint);
        conns.push(conn);
    }

    let shared = Rc::new(Shared {
        phase: Cell::new(Phase::Warmup),
        histogram: RefCell::new(
            Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .map_err(|e| format!("histogram: {e}"))?,
        ),
        measured_ok: Cell::new(0),
        measured_errors: Cell::new(0),
        total_ok: Cell::new(0),
        total_errors: Cell::new(0),
        first_error: RefCell::new(None),
    });

    let mut workers = Vec::with_capacity(plan.in_flight);
    for slot in 0..plan.in_flight {
        let conn = conns[slot % connections].clone();
        let frame = request_frame(
            plan.request,
            slot as u64,
            plan.payload_bytes,
            plan.body_bytes,
        )?;
        let expect = Expect {
            correlation_id: slot as u64,
            kind: plan.request,
            payload: payload(plan.payload_bytes),
        };
        workers.push(tokio::task::spawn_local(worker(
            conn,
            frame,
            expect,
            shared.clone(),
        )));
    }

    let ticks_per_sec = cpu::clock_ticks_per_sec();
    let server_pid = plan.server_pid.map(Pid::Other);
    let sample_server = || -> Result<Option<CpuSample>, String> {
        server_pid
            .map(|p| cpu::sample(p).map_err(|e| format!("cannot read the server's CPU time: {e}")))
            .transpose()
    };

    let server_threads = || server_pid.and_then(|p| cpu::threads(p).ok());
    let own_threads = || cpu::threads(Pid::OurSelf).unwrap_or_default();

    // The live progress line (stderr on a terminal only): answers over the run, percentiles of
    // the measured window so far.
    let progress = crate::progress::spawn({
        let shared = shared.clone();
        move || {
            let h = shared.histogram.borrow();
            let l = (!h.is_empty()).then(|| Latency::from_histogram(&h));
            crate::progress::Snapshot {
                phase: format!("{:?}", shared.phase.get()).to_lowercase(),
                requests: shared.total_ok.get(),
                errors: shared.total_errors.get(),
                in_flight: None,
                p50_us: l.map(|l| l.p50_us),
                p99_us: l.map(|l| l.p99_us),
            }
        }
    });
    tokio::time::sleep(plan.warmup).await;
    let server_start = sample_server()?;
    let self_start = cpu::sample(Pid::OurSelf).map_err(|e| format!("/proc/self: {e}"))?;
    let server_threads_start = server_threads();
    let own_threads_start = own_threads();
    let machine_start = cpu::machine().ok();
    let started = Instant::now();
    shared.phase.set(Phase::Measure);

    tokio::time::sleep(plan.duration).await;
    shared.phase.set(Phase::Done);
    drop(progress);
    let elapsed = started.elapsed();
    let server_end = sample_server()?;
    let self_end = cpu::sample(Pid::OurSelf).map_err(|e| format!("/proc/self: {e}"))?;
    let server_threads_end = server_threads();
    let server_rss_bytes = plan.server_pid.and_then(|p| cpu::rss_bytes(p).ok());
    let own_threads_end = own_threads();
    let machine_end = cpu::machine().ok();
    let secs = elapsed.as_secs_f64();
    let threads = Threads {
        server: match (server_threads_start, server_threads_end) {
            (Some(a), Some(b)) => Some(cpu::thread_deltas(&a, &b, secs)),
            _ => None,
        },
        loadgen: cpu::thread_deltas(&own_threads_start, &own_threads_end, secs),
        machine: match (machine_start, machine_end) {
            (Some(a), Some(b)) => Some(cpu::MachineDelta::between(a, b, secs, ticks_per_sec)),
            _ => None,
        },
    };

    // Workers finish the request they are waiting for; a stuck one is abandoned.
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
    }
    for c in &conns {
        c.close(quinn::VarInt::from_u32(0), b"done");
    }
    for e in &endpoints {
        let _ = tokio::time::timeout(Duration::from_secs(1), e.wait_idle()).await;
    }

    let server = match (server_start, server_end) {
        (Some(a), Some(b)) => Some(CpuDelta::between(a, b, ticks_per_sec)),
        _ => None,
    };
    let own = CpuDelta::between(self_start, self_end, ticks_per_sec);
    let histogram = shared.histogram.borrow();
    let first_error = shared.first_error.borrow().clone();
    Ok(RunReport::new(
        plan,
        connections,
        elapsed,
        shared.measured_ok.get(),
        shared.measured_errors.get(),
        shared.total_ok.get(),
        shared.total_errors.get(),
        first_error,
        Latency::from_histogram(&histogram),
        server,
        own,
        threads,
        ticks_per_sec,
        server_rss_bytes,
    ))
}

/// The rustls configuration pinning the certificate in `cert`, wrapped for quinn.
pub(crate) fn client_config(cert: &Path) -> Result<quinn::ClientConfig, String> {
    let cert = CertificateDer::from_pem_file(cert)
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?;
    let crypto = turnstile_config::dev_client_crypto(&cert).map_err(|e| e.to_string())?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(crypto))
        .map_err(|e| format!("TLS configuration unusable for QUIC: {e}"))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    // The server's transport settings of the embedded default configuration: same windows and
    // congestion controller on both sides. No keep-alives are needed within a run.
    let defaults = turnstile_config::Config::load(None).map_err(|e| e.to_string())?;
    let mut transport =
        turnstile_config::transport_config(&defaults.quic).map_err(|e| e.to_string())?;
    transport.keep_alive_interval(None);
    config.transport_config(Arc::new(transport));
    Ok(config)
}

pub(crate) fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The 20 headers of the `decide` mix: what a browser-ish API client behind a CDN sends.
pub const DECIDE_HEADERS: [(&str, &str); 20] = [
    ("host", "api.example.com"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    ("accept", "application/json, text/plain, */*"),
    ("accept-language", "en-US,en;q=0.9"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("content-type", "application/json"),
    (
        "authorization",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsb2FkZ2VuIn0.c2lnbmF0dXJl",
    ),
    ("cookie", "session=3f2a9c1e7b; theme=dark; consent=1"),
    ("origin", "https://www.example.com"),
    ("referer", "https://www.example.com/checkout"),
    ("x-request-id", "7d6c5b4a-3928-4716-a5b4-c3d2e1f00918"),
    ("x-forwarded-for", "203.0.113.7, 198.51.100.23"),
    ("x-forwarded-proto", "https"),
    ("x-real-ip", "203.0.113.7"),
    ("cache-control", "no-cache"),
    ("pragma", "no-cache"),
    ("sec-fetch-mode", "cors"),
    ("sec-fetch-site", "same-site"),
    (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
    ("x-api-version", "2026-11-01"),
];

/// The request frame a worker sends again and again (its correlation id is its slot).
pub(crate) fn request_frame(
    kind: RequestKind,
    correlation_id: u64,
    payload_bytes: usize,
    body_bytes: usize,
) -> Result<Bytes, String> {
    let data = payload(payload_bytes);
    let body = payload(body_bytes);
    let mut scratch = vec![0u8; payload_bytes + body_bytes + 4096];
    let mut writer = FrameWriter::new(&mut scratch);
    let mut out = Vec::new();
    writer
        .write::<request::Owned, _>(&mut out, |mut r| {
            r.set_correlation_id(correlation_id);
            match kind {
                RequestKind::Echo => r.set_echo(&data),
                RequestKind::Decide => {
                    let mut d = r.init_decide();
                    d.set_route_id("");
                    d.set_request_id("loadgen");
                    let mut dr = d.init_phase().init_request();
                    {
                        let mut http = dr.reborrow().init_request();
                        http.set_method(if body_bytes > 0 { "POST" } else { "GET" });
                        http.set_authority("api.example.com");
                        http.set_path("/api/v1/orders");
                        http.set_query("page=2&sort=created_at&limit=50");
                        http.set_scheme("https");
                        http.set_protocol("HTTP/2");
                        http.set_client_address("203.0.113.7:53124");
                        let mut headers = http.init_headers(DECIDE_HEADERS.len() as u32);
                        for (i, (name, value)) in DECIDE_HEADERS.iter().enumerate() {
                            let mut h = headers.reborrow().get(i as u32);
                            h.set_name(name.as_bytes());
                            h.set_value(value.as_bytes());
                        }
                    }
                    if body_bytes > 0 {
                        let mut chunk = dr.init_body();
                        chunk.set_chunk_index(0);
                        chunk.set_data(&body);
                        chunk.set_is_last(true);
                        chunk.set_total_bytes(body_bytes as u64);
                        chunk.set_bytes_transferred(body_bytes as u64);
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| format!("request does not encode: {e}"))?;
    Ok(Bytes::from(out))
}

/// What a correct response looks like.
pub(crate) struct Expect {
    pub(crate) correlation_id: u64,
    pub(crate) kind: RequestKind,
    pub(crate) payload: Vec<u8>,
}

impl Expect {
    pub(crate) fn check(&self, frame: &[u8]) -> Result<(), String> {
        let message = Message::from_frame_bytes(frame).map_err(|e| format!("bad frame: {e}"))?;
        let r = message
            .root::<response::Owned>()
            .map_err(|e| format!("bad response: {e}"))?;
        if r.get_correlation_id() != self.correlation_id {
            return Err(format!(
                "correlation id {} instead of {}",
                r.get_correlation_id(),
                self.correlation_id
            ));
        }
        match (self.kind, r.which().map_err(|e| e.to_string())?) {
            (RequestKind::Echo, response::Echo(Ok(bytes))) if bytes == &self.payload[..] => Ok(()),
            (RequestKind::Echo, response::Echo(_)) => Err("echo with different bytes".into()),
            (RequestKind::Decide, response::Decision(Ok(d))) => match d.get_verdict() {
                Ok(v) if matches!(v.which(), Ok(verdict::Allow(()))) => Ok(()),
                _ => Err("decision is not allow".into()),
            },
            (_, response::Error(Ok(e))) => Err(format!(
                "error response {:?}: {}",
                e.get_code().ok(),
                e.get_message()
                    .ok()
                    .and_then(|m| m.to_str().ok())
                    .unwrap_or("")
            )),
            _ => Err("unexpected response member".into()),
        }
    }
}

async fn worker(conn: quinn::Connection, frame: Bytes, expect: Expect, shared: Rc<Shared>) {
    let read_limit = limits::FRAME_HEADER_BYTES + limits::FRAME_BYTES_MAX as usize;
    while shared.phase.get() != Phase::Done {
        let start = Instant::now();
        let result = one_request(&conn, frame.clone(), read_limit, &expect).await;
        let latency = start.elapsed();
        let measuring = shared.phase.get() == Phase::Measure;
        match result {
            Ok(()) => {
                shared.total_ok.set(shared.total_ok.get() + 1);
                if measuring {
                    shared.measured_ok.set(shared.measured_ok.get() + 1);
                    let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                    shared.histogram.borrow_mut().saturating_record(ns.max(1));
                }
            }
            Err(failure) => {
                shared.total_errors.set(shared.total_errors.get() + 1);
                if measuring {
                    shared.measured_errors.set(shared.measured_errors.get() + 1);
                }
                let (stop, why) = match failure {
                    Failure::Connection(why) => (true, why),
                    Failure::Request(why) => (false, why),
                };
                shared.first_error.borrow_mut().get_or_insert(why);
                if stop {
                    return;
                }
            }
        }
    }
}

pub(crate) async fn one_request(
    conn: &quinn::Connection,
    frame: Bytes,
    read_limit: usize,
    expect: &Expect,
) -> Result<(), Failure> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| Failure::Connection(format!("open stream: {e}")))?;
    send.write_chunk(frame).await.map_err(|e| match e {
        quinn::WriteError::ConnectionLost(e) => Failure::Connection(format!("write: {e}")),
        e => Failure::Request(format!("write: {e}")),
    })?;
    let _ = send.finish();
    let response = recv.read_to_end(read_limit).await.map_err(|e| match e {
        quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e)) => {
            Failure::Connection(format!("read: {e}"))
        }
        e => Failure::Request(format!("read: {e}")),
    })?;
    expect.check(&response).map_err(Failure::Request)
}
