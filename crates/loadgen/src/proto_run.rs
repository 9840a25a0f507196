//! The closed loop driven through quinn-proto directly (`--driver proto`).
//!
//! Same semantics as `run.rs` (`in_flight` requests outstanding at all times, spread over
//! `connections`, warm-up then a measured window, the same report), at a lower cost per request:
//! one thread, optionally pinned to a core (`--cpu`), owns one `quinn_proto::Endpoint` and every
//! `Connection`, with no task, waker or channel per request. Each connection has its own
//! non-blocking UDP socket (distinct 4-tuples, so the server's SO_REUSEPORT hash spreads them
//! over its shards). One turn of the loop receives every datagram waiting on every socket, lets
//! the connections process them and their timers, starts a request for every free slot (one
//! bidirectional stream each: request frame, finish, read to the end) and sends every pending
//! datagram, up to [`limits::PROTO_GSO_SEGMENTS_MAX`] per `sendmsg(2)` with UDP segmentation
//! offload on Linux (one at a time where the kernel refuses it); only then does it wait, for
//! the first socket to become readable or the earliest timer. The waiting uses tokio's reactor (epoll) on a current-thread runtime, and nothing else
//! of tokio.

use std::future::poll_fn;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig,
    Event, ReadError, StreamEvent, StreamId, VarInt,
};
use turnstile_wire::limits as wire_limits;

use crate::cpu::{self, CpuDelta, Pid};
use crate::limits;
use crate::report::{Latency, RunReport, Threads};
use crate::run::{Expect, Failure, Phase, Plan, client_config, payload, request_frame};

/// Runs `plan` with the quinn-proto driver, on this thread, pinned to core `cpu` if given.
pub fn run(plan: &Plan, cpu: Option<usize>) -> Result<RunReport, String> {
    if plan.in_flight == 0 || plan.connections == 0 {
        return Err("--in-flight and --connections must be at least 1".into());
    }
    if let Some(id) = cpu {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        if !cores.iter().any(|c| c.id == id) {
            return Err(format!(
                "--cpu {id}: no such core available to this process (have {:?})",
                cores.iter().map(|c| c.id).collect::<Vec<_>>()
            ));
        }
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            return Err(format!("--cpu {id}: cannot pin the load generator to it"));
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    runtime.block_on(Driver::new(plan)?.run(plan))
}

/// One request slot: always either waiting to start or outstanding on a stream.
struct Slot {
    /// The request frame this slot sends (its correlation id is the slot number).
    frame: Bytes,
    /// What its answer must be.
    expect: Expect,
}

/// A request outstanding on a stream.
struct Outstanding {
    stream: StreamId,
    slot: usize,
    started: Instant,
    /// Bytes of the request frame written so far (flow control may split the write).
    written: usize,
    /// The response read so far.
    response: Vec<u8>,
}

/// One QUIC connection, its socket and its requests.
struct Conn {
    handle: ConnectionHandle,
    conn: Connection,
    socket: tokio::net::UdpSocket,
    local_ip: IpAddr,
    connected: bool,
    /// Set when the connection is gone (its slots stop).
    lost: bool,
    /// Slots waiting for a stream.
    idle: Vec<usize>,
    outstanding: Vec<Outstanding>,
}

/// Counters and latencies of the run.
struct Tally {
    phase: Phase,
    histogram: Histogram<u64>,
    measured_ok: u64,
    measured_errors: u64,
    total_ok: u64,
    total_errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn done(&mut self, started: Instant, result: Result<(), Failure>) {
        let measuring = self.phase == Phase::Measure;
        match result {
            Ok(()) => {
                self.total_ok += 1;
                if measuring {
                    self.measured_ok += 1;
                    let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    self.histogram.saturating_record(ns.max(1));
                }
            }
            Err(Failure::Connection(why) | Failure::Request(why)) => {
                self.total_errors += 1;
                if measuring {
                    self.measured_errors += 1;
                }
                self.first_error.get_or_insert(why);
            }
        }
    }
}

/// The endpoint, its connections and the run's tally.
struct Driver {
    endpoint: Endpoint,
    conns: Vec<Conn>,
    slots: Vec<Slot>,
    tally: Tally,
    client_config: ClientConfig,
    /// Datagram scratch (receive).
    recv_buf: Vec<u8>,
    /// Datagram scratch (transmit).
    send_buf: Vec<u8>,
    read_limit: usize,
    /// Whether datagrams go out in batches with UDP segmentation offload (Linux), until a
    /// send says it is unavailable.
    gso: bool,
}

impl Driver {
    fn new(plan: &Plan) -> Result<Driver, String> {
        let mut slots = Vec::with_capacity(plan.in_flight);
        for slot in 0..plan.in_flight {
            slots.push(Slot {
                frame: request_frame(
                    plan.request,
                    slot as u64,
                    plan.payload_bytes,
                    plan.body_bytes,
                )?,
                expect: Expect {
                    correlation_id: slot as u64,
                    kind: plan.request,
                    payload: payload(plan.payload_bytes),
                },
            });
        }
        Ok(Driver {
            endpoint: Endpoint::new(Arc::new(EndpointConfig::default()), None, true, None),
            conns: Vec::new(),
            slots,
            tally: Tally {
                phase: Phase::Warmup,
                histogram: Histogram::new_with_bounds(
                    1,
                    limits::LATENCY_NS_MAX,
                    limits::LATENCY_SIGNIFICANT_DIGITS,
                )
                .map_err(|e| format!("histogram: {e}"))?,
                measured_ok: 0,
                measured_errors: 0,
                total_ok: 0,
                total_errors: 0,
                first_error: None,
            },
            client_config: client_config(&plan.cert)?,
            recv_buf: vec![0; limits::PROTO_RECV_BUFFER_BYTES],
            send_buf: Vec::with_capacity(limits::PROTO_RECV_BUFFER_BYTES),
            read_limit: wire_limits::FRAME_HEADER_BYTES + wire_limits::FRAME_BYTES_MAX as usize,
            gso: cfg!(target_os = "linux"),
        })
    }

    /// Opens the connections (slots dealt round-robin), waits for their handshakes, then runs
    /// the warm-up and the measured window.
    async fn run(mut self, plan: &Plan) -> Result<RunReport, String> {
        let connections = plan.connections.min(plan.in_flight);
        let bind: SocketAddr = match (plan.addr.is_ipv4(), plan.addr.ip().is_loopback()) {
            (true, true) => (Ipv4Addr::LOCALHOST, 0).into(),
            (true, false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            (false, true) => (Ipv6Addr::LOCALHOST, 0).into(),
            (false, false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        for i in 0..connections {
            let std_socket = std::net::UdpSocket::bind(bind)
                .map_err(|e| format!("cannot bind a client socket on {bind}: {e}"))?;
            std_socket
                .set_nonblocking(true)
                .map_err(|e| format!("cannot make the client socket non-blocking: {e}"))?;
            let socket = tokio::net::UdpSocket::from_std(std_socket)
                .map_err(|e| format!("cannot register the client socket: {e}"))?;
            let (handle, conn) = self
                .endpoint
                .connect(
                    Instant::now(),
                    self.client_config.clone(),
                    plan.addr,
                    &plan.server_name,
                )
                .map_err(|e| format!("cannot connect to {}: {e}", plan.addr))?;
            self.conns.push(Conn {
                handle,
                conn,
                socket,
                local_ip: bind.ip(),
                connected: false,
                lost: false,
                idle: (i..plan.in_flight).step_by(connections).collect(),
                outstanding: Vec::new(),
            });
        }

        // Handshakes (no request starts before a connection is up).
        let deadline = Instant::now() + limits::PROTO_HANDSHAKE_TIMEOUT;
        while !self.conns.iter().all(|c| c.connected) {
            if let Some(c) = self.conns.iter().find(|c| c.lost) {
                let why = self.tally.first_error.clone().unwrap_or_default();
                return Err(format!("connection {:?} to {}: {why}", c.handle, plan.addr));
            }
            if Instant::now() >= deadline {
                return Err(format!("connection to {}: handshake timed out", plan.addr));
            }
            self.turn(Some(deadline)).await?;
        }

        let ticks_per_sec = cpu::clock_ticks_per_sec();
        let window = Window::new(plan.server_pid);
        let warmup_end = Instant::now() + plan.warmup;
        while Instant::now() < warmup_end {
            self.turn(Some(warmup_end)).await?;
        }
        let start = window.sample()?;
        let started = Instant::now();
        self.tally.phase = Phase::Measure;
        let measure_end = started + plan.duration;
        while Instant::now() < measure_end {
            self.turn(Some(measure_end)).await?;
        }
        self.tally.phase = Phase::Done;
        let elapsed = started.elapsed();
        let end = window.sample()?;
        let server_rss_bytes = plan.server_pid.and_then(|p| cpu::rss_bytes(p).ok());

        // Requests still outstanding may finish (they are no longer counted); then close.
        let drain_end = Instant::now() + limits::PROTO_DRAIN;
        while Instant::now() < drain_end && self.conns.iter().any(|c| !c.outstanding.is_empty()) {
            self.turn(Some(drain_end)).await?;
        }
        let now = Instant::now();
        for c in &mut self.conns {
            c.conn
                .close(now, VarInt::from_u32(0), Bytes::from_static(b"done"));
        }
        let close_end = now + limits::PROTO_DRAIN;
        while Instant::now() < close_end && self.conns.iter().any(|c| !c.conn.is_drained()) {
            self.turn(Some(close_end)).await?;
        }

        let secs = elapsed.as_secs_f64();
        let threads = Threads {
            server: match (start.server_threads, end.server_threads) {
                (Some(a), Some(b)) => Some(cpu::thread_deltas(&a, &b, secs)),
                _ => None,
            },
            loadgen: cpu::thread_deltas(&start.own_threads, &end.own_threads, secs),
            machine: match (start.machine, end.machine) {
                (Some(a), Some(b)) => Some(cpu::MachineDelta::between(a, b, secs, ticks_per_sec)),
                _ => None,
            },
        };
        let server = match (start.server, end.server) {
            (Some(a), Some(b)) => Some(CpuDelta::between(a, b, ticks_per_sec)),
            _ => None,
        };
        let own = CpuDelta::between(start.own, end.own, ticks_per_sec);
        Ok(RunReport::new(
            plan,
            connections,
            elapsed,
            self.tally.measured_ok,
            self.tally.measured_errors,
            self.tally.total_ok,
            self.tally.total_errors,
            self.tally.first_error.clone(),
            Latency::from_histogram(&self.tally.histogram),
            server,
            own,
            threads,
            ticks_per_sec,
            server_rss_bytes,
        ))
    }

    /// One turn: receive everything waiting, run timers, start requests, send everything
    /// pending, then wait for a datagram, the earliest timer or `until`.
    async fn turn(&mut self, until: Option<Instant>) -> Result<(), String> {
        // One clock reading per turn: the turn takes microseconds, well below any QUIC timer.
        let now = Instant::now();
        let received = self.receive_all(now)?;
        for i in 0..self.conns.len() {
            let c = &mut self.conns[i];
            if c.conn.poll_timeout().is_some_and(|t| t <= now) {
                c.conn.handle_timeout(now);
            }
            self.process(i);
            self.send_all(i, now).await?;
        }
        if received {
            // More may have arrived meanwhile: look again before sleeping.
            return Ok(());
        }
        let mut wake = until;
        for c in &mut self.conns {
            if let Some(t) = c.conn.poll_timeout() {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        }
        let readable = poll_fn(|cx| {
            for c in &self.conns {
                if c.socket.poll_recv_ready(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        });
        match wake {
            Some(t) => {
                let _ = tokio::time::timeout_at(t.into(), readable).await;
            }
            None => readable.await,
        }
        Ok(())
    }

    /// Reads every datagram waiting on every socket into the endpoint. True if any came.
    fn receive_all(&mut self, now: Instant) -> Result<bool, String> {
        let mut any = false;
        for i in 0..self.conns.len() {
            loop {
                let (n, from) = match self.conns[i].socket.try_recv_from(&mut self.recv_buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    // ICMP errors (port unreachable) and the like: the connection times out.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(format!("receive: {e}")),
                };
                any = true;
                let local_ip = self.conns[i].local_ip;
                self.send_buf.clear();
                match self.endpoint.handle(
                    now,
                    from,
                    Some(local_ip),
                    None,
                    BytesMut::from(&self.recv_buf[..n]),
                    &mut self.send_buf,
                ) {
                    Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                        if let Some(c) = self.conns.iter_mut().find(|c| c.handle == handle) {
                            c.conn.handle_event(event);
                        }
                    }
                    Some(DatagramEvent::Response(t)) => {
                        // A stateless reset or version negotiation: best effort.
                        let _ = self.conns[i]
                            .socket
                            .try_send_to(&self.send_buf[..t.size], t.destination);
                    }
                    Some(DatagramEvent::NewConnection(incoming)) => self.endpoint.ignore(incoming),
                    None => {}
                }
            }
        }
        Ok(any)
    }

    /// Lets connection `i` exchange events with the endpoint, handles its application events
    /// and starts a request for each of its free slots.
    fn process(&mut self, i: usize) {
        let c = &mut self.conns[i];
        while let Some(event) = c.conn.poll_endpoint_events() {
            if let Some(event) = self.endpoint.handle_event(c.handle, event) {
                c.conn.handle_event(event);
            }
        }
        while let Some(event) = c.conn.poll() {
            match event {
                Event::Connected => c.connected = true,
                Event::ConnectionLost { reason } => {
                    c.lost = true;
                    let why = format!("connection lost: {reason}");
                    for o in c.outstanding.drain(..) {
                        self.tally
                            .done(o.started, Err(Failure::Connection(why.clone())));
                    }
                    self.tally.first_error.get_or_insert(why);
                    c.idle.clear();
                }
                Event::Stream(StreamEvent::Readable { id }) => {
                    if let Some(k) = c.outstanding.iter().position(|o| o.stream == id) {
                        match read(&mut c.conn, &mut c.outstanding[k], self.read_limit) {
                            Ok(false) => {}
                            Ok(true) => {
                                let o = c.outstanding.swap_remove(k);
                                let result = self.slots[o.slot]
                                    .expect
                                    .check(&o.response)
                                    .map_err(Failure::Request);
                                self.tally.done(o.started, result);
                                c.idle.push(o.slot);
                            }
                            Err(why) => {
                                let o = c.outstanding.swap_remove(k);
                                self.tally.done(o.started, Err(Failure::Request(why)));
                                c.idle.push(o.slot);
                            }
                        }
                    }
                }
                Event::Stream(StreamEvent::Writable { id }) => {
                    if let Some(o) = c.outstanding.iter_mut().find(|o| o.stream == id) {
                        let frame = &self.slots[o.slot].frame;
                        if let Err(why) = write(&mut c.conn, o, frame) {
                            self.tally.first_error.get_or_insert(why);
                        }
                    }
                }
                // Stopped before the whole request was written: it cannot be answered. (Once it
                // is written, the answer may still come, as with quinn's `write` + `finish`.)
                Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                    if let Some(k) = c
                        .outstanding
                        .iter()
                        .position(|o| o.stream == id && o.written < self.slots[o.slot].frame.len())
                    {
                        let o = c.outstanding.swap_remove(k);
                        let why =
                            format!("request stream stopped by the server: code {error_code}");
                        self.tally.done(o.started, Err(Failure::Request(why)));
                        c.idle.push(o.slot);
                    }
                }
                _ => {}
            }
        }
        if !c.connected || c.lost || self.tally.phase == Phase::Done {
            return;
        }
        while let Some(&slot) = c.idle.last() {
            let Some(stream) = c.conn.streams().open(Dir::Bi) else {
                break; // stream limit: `StreamEvent::Available` comes, then the next turn
            };
            c.idle.pop();
            let mut o = Outstanding {
                stream,
                slot,
                started: Instant::now(),
                written: 0,
                response: Vec::new(),
            };
            match write(&mut c.conn, &mut o, &self.slots[slot].frame) {
                Ok(()) => c.outstanding.push(o),
                Err(why) => {
                    self.tally.done(o.started, Err(Failure::Request(why)));
                    c.idle.insert(0, slot);
                    break;
                }
            }
        }
    }

    /// Sends every datagram connection `i` has to send.
    async fn send_all(&mut self, i: usize, now: Instant) -> Result<(), String> {
        let c = &mut self.conns[i];
        loop {
            self.send_buf.clear();
            let max = if self.gso {
                limits::PROTO_GSO_SEGMENTS_MAX
            } else {
                1
            };
            let Some(t) = c.conn.poll_transmit(now, max, &mut self.send_buf) else {
                return Ok(());
            };
            let bytes = &self.send_buf[..t.size];
            let segment = t.segment_size.filter(|&s| s < t.size);
            loop {
                let sent = match segment {
                    Some(size) => c.socket.try_io(tokio::io::Interest::WRITABLE, || {
                        send_segmented(&c.socket, bytes, size, t.destination)
                    }),
                    None => c.socket.try_send_to(bytes, t.destination).map(|_| ()),
                };
                match sent {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        c.socket
                            .writable()
                            .await
                            .map_err(|e| format!("send: {e}"))?;
                    }
                    // Lost like any datagram; QUIC recovers.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                    // No segmentation offload here (kernel, device): send these one by one and
                    // ask for single datagrams from now on.
                    Err(e) if segment.is_some() && gso_unsupported(&e) => {
                        self.gso = false;
                        for datagram in bytes.chunks(segment.unwrap_or(t.size)) {
                            let _ = c.socket.try_send_to(datagram, t.destination);
                        }
                        break;
                    }
                    Err(e) => return Err(format!("send to {}: {e}", t.destination)),
                }
            }
        }
    }
}

/// `SOL_UDP` (`IPPROTO_UDP`): the level of the UDP socket options and control messages.
const SOL_UDP: i32 = 17;

/// `UDP_SEGMENT` (Linux): the control message giving the segment size of a GSO send.
const UDP_SEGMENT: i32 = 103;

/// Sends `bytes` to `to` as datagrams of `segment` bytes each (the last may be shorter) in one
/// `sendmsg(2)` with a `UDP_SEGMENT` control message (UDP generic segmentation offload).
fn send_segmented(
    socket: &tokio::net::UdpSocket,
    bytes: &[u8],
    segment: usize,
    to: SocketAddr,
) -> std::io::Result<()> {
    // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; } then the u16 payload,
    // the whole padded to the alignment of size_t (CMSG_SPACE).
    const WORD: usize = std::mem::size_of::<usize>();
    const HEADER: usize = (WORD + 8).div_ceil(WORD) * WORD;
    const SPACE: usize = (HEADER + 2).div_ceil(WORD) * WORD;
    let segment = u16::try_from(segment).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut control = [0u8; SPACE];
    control[..WORD].copy_from_slice(&(HEADER + 2).to_ne_bytes());
    control[WORD..WORD + 4].copy_from_slice(&SOL_UDP.to_ne_bytes());
    control[WORD + 4..WORD + 8].copy_from_slice(&UDP_SEGMENT.to_ne_bytes());
    control[HEADER..HEADER + 2].copy_from_slice(&segment.to_ne_bytes());
    let to = socket2::SockAddr::from(to);
    let buffers = [std::io::IoSlice::new(bytes)];
    let message = socket2::MsgHdr::new()
        .with_addr(&to)
        .with_buffers(&buffers)
        .with_control(&control);
    socket2::SockRef::from(socket)
        .sendmsg(&message, 0)
        .map(|_| ())
}

/// Whether a segmented send failed because segmentation offload is unavailable (`EIO`: the
/// device cannot checksum; `EINVAL`/`ENOPROTOOPT`: the kernel does not know `UDP_SEGMENT`).
fn gso_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(5 | 22 | 92))
}

/// Writes what is left of the request frame on `o`'s stream, and finishes it once all is
/// written.
fn write(conn: &mut Connection, o: &mut Outstanding, frame: &[u8]) -> Result<(), String> {
    let mut send = conn.send_stream(o.stream);
    while o.written < frame.len() {
        match send.write(&frame[o.written..]) {
            Ok(n) => o.written += n,
            Err(quinn_proto::WriteError::Blocked) => return Ok(()), // `Writable` comes
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    send.finish().map_err(|e| format!("finish: {e}"))
}

/// Reads what has arrived of `o`'s response: true once it is complete (the stream finished).
fn read(conn: &mut Connection, o: &mut Outstanding, limit: usize) -> Result<bool, String> {
    let mut recv = conn.recv_stream(o.stream);
    let mut chunks = recv.read(true).map_err(|e| format!("read: {e}"))?;
    let result = loop {
        match chunks.next(limit) {
            Ok(Some(chunk)) => {
                o.response.extend_from_slice(&chunk.bytes);
                if o.response.len() > limit {
                    break Err(format!("response longer than {limit} bytes"));
                }
            }
            Ok(None) => break Ok(true),
            Err(ReadError::Blocked) => break Ok(false),
            Err(ReadError::Reset(code)) => {
                break Err(format!("read: reset by the server: code {code}"));
            }
        }
    };
    // Whether flow-control credit is to be sent is found by `poll_transmit` anyway.
    let _ = chunks.finalize();
    result
}

/// Samples of the CPU counters at one edge of the measured window.
struct Edge {
    server: Option<cpu::CpuSample>,
    own: cpu::CpuSample,
    server_threads: Option<Vec<cpu::ThreadSample>>,
    own_threads: Vec<cpu::ThreadSample>,
    machine: Option<cpu::MachineSample>,
}

/// What is sampled at both edges of the measured window.
struct Window {
    server: Option<Pid>,
}

impl Window {
    fn new(server_pid: Option<u32>) -> Window {
        Window {
            server: server_pid.map(Pid::Other),
        }
    }

    fn sample(&self) -> Result<Edge, String> {
        let server = self
            .server
            .map(|p| cpu::sample(p).map_err(|e| format!("cannot read the server's CPU time: {e}")))
            .transpose()?;
        Ok(Edge {
            server,
            own: cpu::sample(Pid::OurSelf).map_err(|e| format!("/proc/self: {e}"))?,
            server_threads: self.server.and_then(|p| cpu::threads(p).ok()),
            own_threads: cpu::threads(Pid::OurSelf).unwrap_or_default(),
            machine: cpu::machine().ok(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::probe::tests::{plan, serve};

    #[test]
    fn the_proto_driver_keeps_requests_in_flight_and_times_them() {
        let server = serve(|_| {});
        let mut plan = plan(&server);
        plan.in_flight = 8;
        plan.connections = 2;
        plan.warmup = Duration::from_millis(100);
        plan.duration = Duration::from_millis(400);
        let report = super::run(&plan, None).expect("run");
        assert_eq!(report.errors, 0, "{:?}", report.first_error);
        assert_eq!(report.errors_total, 0, "{:?}", report.first_error);
        assert_eq!(report.connections, 2);
        assert!(
            report.requests > 8,
            "only {} requests answered",
            report.requests
        );
        assert!(
            report.requests_total > report.requests,
            "warm-up requests count in the total"
        );
        assert!(report.latency.p50_us > 0.0);
        assert!(report.latency.max_us >= report.latency.p99_us);
        assert!(report.rps > 0.0);
    }

    #[test]
    fn requests_and_answers_of_many_datagrams_go_through() {
        let server = serve(|_| {});
        let mut plan = plan(&server);
        plan.in_flight = 16;
        plan.connections = 2;
        plan.payload_bytes = 20_000; // about 17 datagrams each way: segmented sends
        plan.warmup = Duration::from_millis(100);
        plan.duration = Duration::from_millis(400);
        let report = super::run(&plan, None).expect("run");
        assert_eq!(report.errors_total, 0, "{:?}", report.first_error);
        assert!(
            report.requests > 16,
            "only {} requests answered",
            report.requests
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_segmented_send_arrives_as_separate_datagrams() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = runtime.enter();
        let sender = tokio::net::UdpSocket::from_std({
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_nonblocking(true).expect("non-blocking");
            s
        })
        .expect("register");
        let bytes: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let to = receiver.local_addr().expect("address");
        super::send_segmented(&sender, &bytes, 1000, to).expect("segmented send");
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        for _ in 0..3 {
            let n = receiver.recv(&mut buf).expect("a segment");
            got.push(buf[..n].to_vec());
        }
        assert_eq!(
            got.iter().map(Vec::len).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        assert_eq!(got.concat(), bytes);
    }

    #[test]
    fn the_proto_driver_reports_a_server_that_does_not_answer() {
        // A bound socket nobody reads: the handshake never completes.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let server = serve(|_| {});
        let mut plan = plan(&server);
        plan.addr = silent.local_addr().expect("address");
        let err = super::run(&plan, None).expect_err("no server");
        assert!(err.contains("handshake timed out"), "{err}");
    }
}
