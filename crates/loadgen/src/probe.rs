//! What the measurement modes (`--mode zero-rtt`, `--mode idle-streams`) share: the QUIC client
//! configuration around a given rustls configuration, one echo request on its own stream with
//! its response checked, the CPU window, and closing connections within a bound.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use turnstile_wire::turnstile_capnp::{ErrorCode, request, response};
use turnstile_wire::{FrameWriter, Message, limits as wire_limits};

use crate::cpu::{self, CpuDelta, CpuSample, Pid};
use crate::limits::{CLOSE_TIMEOUT_MS, REQUEST_TIMEOUT_MS};
use crate::report::Threads;

/// The local address to bind for `target`: loopback targets are reached from a loopback address
/// of the same family.
pub fn bind_addr(target: SocketAddr) -> SocketAddr {
    match (target.is_ipv4(), target.ip().is_loopback()) {
        (true, true) => (Ipv4Addr::LOCALHOST, 0).into(),
        (true, false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        (false, true) => (Ipv6Addr::LOCALHOST, 0).into(),
        (false, false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Wraps `crypto` for quinn with the transport settings of the embedded default configuration
/// (the same windows and congestion controller as the server's), without keep-alives.
pub fn quic_client_config(crypto: rustls::ClientConfig) -> Result<quinn::ClientConfig, String> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(crypto))
        .map_err(|e| format!("TLS configuration unusable for QUIC: {e}"))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let defaults = turnstile_config::Config::load(None).map_err(|e| e.to_string())?;
    let mut transport =
        turnstile_config::transport_config(&defaults.quic).map_err(|e| e.to_string())?;
    transport.keep_alive_interval(None);
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A new client endpoint (its own UDP socket) for connections to `target`.
pub fn endpoint(target: SocketAddr) -> Result<quinn::Endpoint, String> {
    let bind = bind_addr(target);
    quinn::Endpoint::client(bind).map_err(|e| format!("cannot bind a client socket on {bind}: {e}"))
}

/// An echo request and the response that proves it was served.
#[derive(Debug, Clone)]
pub struct Echo {
    frame: Bytes,
    correlation_id: u64,
    payload: Vec<u8>,
}

/// Why an echo failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EchoError {
    /// The server rejected the 0-RTT data (quinn's `ZeroRttRejected` on the stream).
    ZeroRttRejected,
    /// The server answered with an error response of this code.
    Refused(ErrorCode, String),
    /// Anything else: stream or connection failure, timeout, wrong answer.
    Failed(String),
}

impl std::fmt::Display for EchoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EchoError::ZeroRttRejected => write!(f, "the server rejected the 0-RTT data"),
            EchoError::Refused(code, msg) => write!(f, "error response {code:?}: {msg}"),
            EchoError::Failed(why) => f.write_str(why),
        }
    }
}

impl Echo {
    /// An echo of `payload_bytes` bytes with this correlation id.
    pub fn new(correlation_id: u64, payload_bytes: usize) -> Result<Echo, String> {
        let payload: Vec<u8> = (0..payload_bytes).map(|i| (i % 251) as u8).collect();
        let mut scratch = vec![0u8; payload_bytes + 1024];
        let mut writer = FrameWriter::new(&mut scratch);
        let mut out = Vec::new();
        writer
            .write::<request::Owned, _>(&mut out, |mut r| {
                r.set_correlation_id(correlation_id);
                r.set_echo(&payload);
                Ok(())
            })
            .map_err(|e| format!("echo request does not encode: {e}"))?;
        Ok(Echo {
            frame: Bytes::from(out),
            correlation_id,
            payload,
        })
    }

    /// Sends the request on a new stream of `conn` and checks the response, within
    /// [`REQUEST_TIMEOUT_MS`].
    pub async fn call(&self, conn: &quinn::Connection) -> Result<(), EchoError> {
        let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
        match tokio::time::timeout(timeout, self.call_unbounded(conn)).await {
            Ok(result) => result,
            Err(_) => Err(EchoError::Failed(format!(
                "no response within {REQUEST_TIMEOUT_MS} ms"
            ))),
        }
    }

    async fn call_unbounded(&self, conn: &quinn::Connection) -> Result<(), EchoError> {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| EchoError::Failed(format!("open stream: {e}")))?;
        send.write_chunk(self.frame.clone())
            .await
            .map_err(|e| match e {
                quinn::WriteError::ZeroRttRejected => EchoError::ZeroRttRejected,
                e => EchoError::Failed(format!("write: {e}")),
            })?;
        let _ = send.finish();
        let limit = wire_limits::FRAME_HEADER_BYTES + wire_limits::FRAME_BYTES_MAX as usize;
        let bytes = recv.read_to_end(limit).await.map_err(|e| match e {
            quinn::ReadToEndError::Read(quinn::ReadError::ZeroRttRejected) => {
                EchoError::ZeroRttRejected
            }
            e => EchoError::Failed(format!("read: {e}")),
        })?;
        self.check(&bytes)
    }

    /// Checks a response frame: same correlation id, same bytes back.
    pub fn check(&self, frame: &[u8]) -> Result<(), EchoError> {
        let failed = |why: String| EchoError::Failed(why);
        let message =
            Message::from_frame_bytes(frame).map_err(|e| failed(format!("bad frame: {e}")))?;
        let r = message
            .root::<response::Owned>()
            .map_err(|e| failed(format!("bad response: {e}")))?;
        if r.get_correlation_id() != self.correlation_id {
            return Err(failed(format!(
                "correlation id {} instead of {}",
                r.get_correlation_id(),
                self.correlation_id
            )));
        }
        match r.which().map_err(|e| failed(e.to_string()))? {
            response::Echo(Ok(bytes)) if bytes == &self.payload[..] => Ok(()),
            response::Echo(_) => Err(failed("echo with different bytes".into())),
            response::Error(Ok(e)) => Err(EchoError::Refused(
                e.get_code().unwrap_or(ErrorCode::Unspecified),
                e.get_message()
                    .ok()
                    .and_then(|m| m.to_str().ok())
                    .unwrap_or("")
                    .to_owned(),
            )),
            _ => Err(failed("unexpected response member".into())),
        }
    }
}

/// Server and load generator CPU over a window, as the closed loop measures it.
pub struct Window {
    ticks_per_sec: u64,
    server_pid: Option<Pid>,
    server: Option<CpuSample>,
    own: CpuSample,
    server_threads: Option<Vec<cpu::ThreadSample>>,
    own_threads: Vec<cpu::ThreadSample>,
    machine: Option<cpu::MachineSample>,
    started: Instant,
}

/// What a [`Window`] measured.
pub struct WindowDelta {
    /// Length of the window.
    pub elapsed: Duration,
    /// The server's CPU, when measured.
    pub server: Option<CpuDelta>,
    /// The load generator's CPU.
    pub own: CpuDelta,
    /// Per-thread and machine activity.
    pub threads: Threads,
    /// Clock ticks per second used.
    pub ticks_per_sec: u64,
}

impl Window {
    /// Starts the window now.
    pub fn start(server_pid: Option<u32>) -> Result<Window, String> {
        let server_pid = server_pid.map(Pid::Other);
        let server = server_pid
            .map(|p| cpu::sample(p).map_err(|e| format!("cannot read the server's CPU time: {e}")))
            .transpose()?;
        Ok(Window {
            ticks_per_sec: cpu::clock_ticks_per_sec(),
            server_pid,
            server,
            own: cpu::sample(Pid::OurSelf).map_err(|e| format!("/proc/self: {e}"))?,
            server_threads: server_pid.and_then(|p| cpu::threads(p).ok()),
            own_threads: cpu::threads(Pid::OurSelf).unwrap_or_default(),
            machine: cpu::machine().ok(),
            started: Instant::now(),
        })
    }

    /// Ends the window now.
    pub fn finish(self) -> Result<WindowDelta, String> {
        let elapsed = self.started.elapsed();
        let secs = elapsed.as_secs_f64();
        let server_end = self
            .server_pid
            .map(|p| cpu::sample(p).map_err(|e| format!("cannot read the server's CPU time: {e}")))
            .transpose()?;
        let own_end = cpu::sample(Pid::OurSelf).map_err(|e| format!("/proc/self: {e}"))?;
        let server_threads_end = self.server_pid.and_then(|p| cpu::threads(p).ok());
        let own_threads_end = cpu::threads(Pid::OurSelf).unwrap_or_default();
        let machine_end = cpu::machine().ok();
        Ok(WindowDelta {
            elapsed,
            server: match (self.server, server_end) {
                (Some(a), Some(b)) => Some(CpuDelta::between(a, b, self.ticks_per_sec)),
                _ => None,
            },
            own: CpuDelta::between(self.own, own_end, self.ticks_per_sec),
            threads: Threads {
                server: match (self.server_threads, server_threads_end) {
                    (Some(a), Some(b)) => Some(cpu::thread_deltas(&a, &b, secs)),
                    _ => None,
                },
                loadgen: cpu::thread_deltas(&self.own_threads, &own_threads_end, secs),
                machine: match (self.machine, machine_end) {
                    (Some(a), Some(b)) => {
                        Some(cpu::MachineDelta::between(a, b, secs, self.ticks_per_sec))
                    }
                    _ => None,
                },
            },
            ticks_per_sec: self.ticks_per_sec,
        })
    }
}

/// Closes `conns` (application code 0) and waits, all together and at most
/// [`CLOSE_TIMEOUT_MS`], for `endpoints` to drain.
pub async fn close_all(conns: &[quinn::Connection], endpoints: &[quinn::Endpoint]) {
    for c in conns {
        c.close(quinn::VarInt::from_u32(0), b"done");
    }
    let deadline = Duration::from_millis(CLOSE_TIMEOUT_MS);
    let waits = endpoints.iter().map(|e| {
        let e = e.clone();
        tokio::task::spawn_local(async move { e.wait_idle().await })
    });
    let waits: Vec<_> = waits.collect();
    let _ = tokio::time::timeout(deadline, async {
        for w in waits {
            let _ = w.await;
        }
    })
    .await;
}

#[cfg(test)]
pub(crate) mod tests {
    //! The measurement modes against an in-process quinn server built from turnstile's own
    //! configuration (TLS, session cache, transport), answering echo.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use turnstile_config::Config;

    use super::*;
    use crate::run::{Plan, RequestKind};

    /// Streams the test server holds open now, and the most it held at once.
    #[derive(Default)]
    struct Counts {
        open: AtomicUsize,
        most: AtomicUsize,
    }

    /// An in-process echo server on loopback, stopped when dropped.
    pub(crate) struct Server {
        addr: SocketAddr,
        cert: std::path::PathBuf,
        counts: Arc<Counts>,
        state: std::path::PathBuf,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
            let _ = std::fs::remove_dir_all(&self.state);
        }
    }

    fn echo_response(request: &[u8]) -> Vec<u8> {
        let message = Message::from_frame_bytes(request).expect("a request frame");
        let r = message.root::<request::Owned>().expect("a Request");
        let id = r.get_correlation_id();
        let data = match r.which().expect("known member") {
            request::Echo(data) => data.expect("echo bytes").to_vec(),
            _ => panic!("the test server answers echo only"),
        };
        let mut scratch = vec![0u8; data.len() + 1024];
        let mut writer = FrameWriter::new(&mut scratch);
        let mut out = Vec::new();
        writer
            .write::<response::Owned, _>(&mut out, |mut resp| {
                resp.set_correlation_id(id);
                resp.set_echo(&data);
                Ok(())
            })
            .expect("response encodes");
        out
    }

    pub(crate) fn serve(configure: impl FnOnce(&mut Config)) -> Server {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let state = std::env::temp_dir().join(format!(
            "turnstile-loadgen-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut config = Config::load(None).expect("default configuration");
        configure(&mut config);
        let tls = turnstile_config::server_crypto(&config.tls, &state).expect("dev certificate");
        let server_config =
            turnstile_config::quic_server_config(&config, &tls).expect("QUIC configuration");
        let counts = Arc::new(Counts::default());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_counts = counts.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let endpoint =
                    quinn::Endpoint::server(server_config, (Ipv4Addr::LOCALHOST, 0).into())
                        .expect("bind");
                addr_tx
                    .send(endpoint.local_addr().expect("address"))
                    .expect("report address");
                let accept = async {
                    while let Some(incoming) = endpoint.accept().await {
                        let counts = thread_counts.clone();
                        tokio::spawn(async move {
                            let Ok(connecting) = incoming.accept() else {
                                return;
                            };
                            // Answer 0-RTT requests at once (echo is replay-safe).
                            let Ok((conn, _)) = connecting.into_0rtt() else {
                                return;
                            };
                            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                                let counts = counts.clone();
                                tokio::spawn(async move {
                                    let open = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
                                    counts.most.fetch_max(open, Ordering::SeqCst);
                                    if let Ok(request) = recv.read_to_end(1 << 20).await {
                                        let _ = send.write_all(&echo_response(&request)).await;
                                        let _ = send.finish();
                                    }
                                    counts.open.fetch_sub(1, Ordering::SeqCst);
                                });
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
                endpoint.close(quinn::VarInt::from_u32(0), b"test over");
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server address");
        Server {
            addr,
            cert: tls.cert_path.clone(),
            counts,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub(crate) fn plan(server: &Server) -> Plan {
        Plan {
            addr: server.addr,
            server_name: "localhost".into(),
            cert: server.cert.clone(),
            server_pid: Some(std::process::id()),
            in_flight: 1,
            connections: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            payload_bytes: 64,
            body_bytes: 0,
            request: RequestKind::Echo,
            engine: "test".into(),
            scenario: "test".into(),
        }
    }

    #[test]
    fn zero_rtt_is_accepted_and_timed_when_the_server_allows_it() {
        let server = serve(|_| {});
        let report = crate::zero_rtt::run(&plan(&server), 8).expect("run");
        let z = report.zero_rtt.expect("zero_rtt figures");
        assert_eq!(z.one_rtt_samples, 8, "{:?}", report.first_error);
        assert_eq!(z.zero_rtt_accepted, 8, "{:?}", report.first_error);
        assert_eq!(z.zero_rtt_samples, 8);
        assert_eq!(z.zero_rtt_rejected + z.zero_rtt_unavailable, 0);
        assert!(z.tickets_received >= 8, "one new ticket per resumption");
        assert!(z.zero_rtt.p50_us > 0.0 && z.one_rtt.p50_us > 0.0);
        assert!(z.p50_ratio.is_some());
        assert_eq!(report.requests, 16);
        assert_eq!(report.errors, 0);
    }

    #[test]
    fn zero_rtt_refused_by_the_server_is_counted_never_timed() {
        let server = serve(|c| c.quic.zero_rtt = false);
        let report = crate::zero_rtt::run(&plan(&server), 4).expect("run");
        let z = report.zero_rtt.expect("zero_rtt figures");
        assert_eq!(z.one_rtt_samples, 4);
        assert_eq!((z.zero_rtt_accepted, z.zero_rtt_samples), (0, 0));
        assert_eq!(z.zero_rtt_rejected + z.zero_rtt_unavailable, 4);
        assert_eq!(z.zero_rtt.p50_us, 0.0);
        assert_eq!(z.p50_ratio, None);
        assert!(
            report
                .first_error
                .is_some_and(|e| e.contains("never accepted"))
        );
    }

    #[test]
    fn idle_streams_are_opened_held_and_spread_over_connections() {
        let server = serve(|c| c.quic.max_concurrent_bidi_streams = 8);
        let report = crate::idle_streams::run(&plan(&server), 30, 8).expect("run");
        let f = report.idle_streams.expect("idle_streams figures");
        assert_eq!(f.connections, 5, "30 streams, 7 per connection");
        assert_eq!(f.opened, 30, "{:?}", report.first_error);
        assert_eq!(report.requests, 30);
        assert!(
            server.counts.most.load(Ordering::SeqCst) >= 30,
            "the server held every stream at once"
        );
        assert!(f.rss_with_streams_bytes > 0 && f.rss_connected_bytes > 0);
        assert_eq!(report.server_rss_bytes, Some(f.rss_with_streams_bytes));
    }
}
