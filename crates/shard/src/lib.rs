//! One turnstile shard per core: a pinned thread that owns an io_uring ring (its UDP socket bound
//! with SO_REUSEPORT), a QUIC front door (quinn-proto endpoint and connections), the buffers
//! datagrams are received into, and its counters. No locks and no shared state on the request
//! path: the only cross-thread traffic is datagrams steered to the shard that owns their
//! connection, and control messages (drain, stop).
//!
//! This crate owns the loop and how it waits (spin, then sleep: see [`SpinPolicy`]). It must not
//! parse QUIC or the wire format itself (that is `turnstile-frontdoor`) nor touch the kernel
//! except through `turnstile-uring`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod convert;
pub mod limits;
mod plane;
mod spin;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use quinn_proto::EcnCodepoint;
use turnstile_frontdoor::{FrontDoor, FrontDoorConfig, Steer, codes};
use turnstile_uring::{Completion, Ring, RingConfig, SetupMode, Waker};

use limits::*;
pub use plane::{AgentSetup, PlaneEvent, PlaneSpec};
pub use spin::{Idle, SpinPolicy, Spinner};

/// How to run one shard.
#[derive(Debug, Clone)]
pub struct ShardSpec {
    /// Front door settings (shard index and count included).
    pub front: FrontDoorConfig,
    /// Core to pin the thread to; `None` leaves it unpinned.
    pub core: Option<usize>,
    /// UDP address every shard binds (SO_REUSEPORT).
    pub listen: SocketAddr,
    /// How the loop waits when idle.
    pub spin: SpinPolicy,
    /// Longest one sleep in the kernel may last; `None` = until a completion, a wake-up or the
    /// next timer. With a bound, a sleep that ends with nothing to do is followed by a yield of
    /// the core, so that tools which do not know `io_uring_enter` can block (valgrind 3.19 runs
    /// one thread at a time and never switches away from a thread inside it) let the process's
    /// other threads run.
    pub max_sleep: Option<Duration>,
    /// io_uring submission queue entries.
    pub ring_entries: u32,
    /// Use a kernel SQ polling thread.
    pub sqpoll: bool,
    /// Agents and routes (empty: `decide` is answered by the built-in allow-all route).
    pub plane: Arc<PlaneSpec>,
    /// Where agent events for the rest of the process go (restart requests).
    pub plane_events: Option<Sender<PlaneEvent>>,
    /// This shard's counters (read by the admin endpoint).
    pub counters: Arc<turnstile_metrics::ShardCounters>,
    /// Where agents' metrics reports are kept.
    pub reports: Arc<turnstile_metrics::AgentReports>,
}

/// What ended a shard, or kept it from starting.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The ring (or its UDP socket) could not be set up.
    #[error("shard {shard}: {source}")]
    Ring {
        /// Shard index.
        shard: u8,
        /// Cause.
        source: turnstile_uring::RingError,
    },
    /// Submitting to or waiting on the ring failed.
    #[error("shard {shard}: io_uring {action} failed: {source}")]
    Io {
        /// Shard index.
        shard: u8,
        /// What was being done.
        action: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// The agent plane could not be set up (dispatch configuration, WASM agents).
    #[error("shard {shard}: agent plane: {message}")]
    Plane {
        /// Shard index.
        shard: u8,
        /// Cause.
        message: String,
    },
    /// The thread could not be started.
    #[error("shard {shard}: could not start its thread: {source}")]
    Spawn {
        /// Shard index.
        shard: u8,
        /// Cause.
        source: std::io::Error,
    },
    /// The shard thread panicked (a bug: an invariant assertion fired).
    #[error("shard {0} panicked")]
    Panicked(u8),
}

/// A message to a shard.
#[derive(Debug, Clone)]
pub enum Control {
    /// Stop accepting connections, let requests in flight finish until `deadline`, then close
    /// every connection with SHUTTING_DOWN and stop.
    Drain {
        /// When to close connections whatever their state.
        deadline: Instant,
    },
    /// New agent configurations (agent id, configuration text) from a reload: pushed to the
    /// agents' connections now, and used for every later connection.
    Reconfigure(Arc<Vec<(String, Vec<u8>)>>),
    /// New modules for WASM agents (agent id, module) from a reload.
    ReplaceWasm(Arc<Vec<(String, Arc<turnstile_wasm_host::WasmModule>)>>),
}

/// A datagram received by one shard for a connection another shard owns.
struct Steered {
    data: BytesMut,
    remote: SocketAddr,
    local_ip: Option<IpAddr>,
    ecn: u8,
}

/// Counters of one shard, reported when it stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShardReport {
    /// Shard index.
    pub shard: u8,
    /// Datagrams received from the socket.
    pub datagrams_received: u64,
    /// Datagrams sent (transmits, each possibly a GSO batch, counted once).
    pub transmits_sent: u64,
    /// Transmits the ring refused (send slots exhausted, socket errors).
    pub transmits_failed: u64,
    /// Datagrams handed to another shard.
    pub datagrams_steered_out: u64,
    /// Datagrams received from other shards.
    pub datagrams_steered_in: u64,
    /// Steered datagrams dropped because the owner's queue was full.
    pub datagrams_steered_dropped: u64,
    /// Loop iterations that ended in a kernel sleep.
    pub sleeps: u64,
    /// Front door counters.
    pub front: turnstile_frontdoor::FrontDoorStats,
}

/// A running shard.
pub struct ShardHandle {
    index: u8,
    thread: Option<JoinHandle<Result<ShardReport, ShardError>>>,
    control: Sender<Control>,
    waker: Waker,
}

impl ShardHandle {
    /// Sends `msg` to the shard and wakes it.
    pub fn send(&self, msg: Control) {
        // A full control queue means the shard already has messages to act on.
        let _ = self.control.try_send(msg);
        self.waker.wake();
    }

    /// Waits for the shard thread to end.
    pub fn join(mut self) -> Result<ShardReport, ShardError> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) | None => Err(ShardError::Panicked(self.index)),
        }
    }
}

/// Starts one thread per spec; returns when every shard has its ring and socket ready (or the
/// first error). `server_config` and `reset_key` are shared by all shards, so tokens, tickets and
/// stateless resets work whichever shard a packet reaches.
pub fn start(
    specs: Vec<ShardSpec>,
    server_config: Arc<quinn_proto::ServerConfig>,
    reset_key: Arc<dyn quinn_proto::crypto::HmacKey>,
) -> Result<Vec<ShardHandle>, ShardError> {
    let count = specs.len();
    let wakers: Arc<OnceLock<Vec<Waker>>> = Arc::new(OnceLock::new());
    let mut steer_txs = Vec::with_capacity(count);
    let mut steer_rxs = Vec::with_capacity(count);
    for _ in 0..count {
        let (tx, rx) = crossbeam_channel::bounded::<Steered>(STEERED_DATAGRAMS_QUEUED_MAX);
        steer_txs.push(tx);
        steer_rxs.push(rx);
    }
    let mut handles = Vec::with_capacity(count);
    let mut ready = Vec::with_capacity(count);
    for (spec, steer_rx) in specs.into_iter().zip(steer_rxs) {
        let index = spec.front.shard;
        let (control_tx, control_rx) = crossbeam_channel::bounded(CONTROL_QUEUED_MAX);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let peers = steer_txs.clone();
        let wakers = wakers.clone();
        let server_config = server_config.clone();
        let reset_key = reset_key.clone();
        let thread = std::thread::Builder::new()
            .name(format!("turnstile-shard-{index}"))
            .spawn(move || {
                run(
                    spec,
                    server_config,
                    reset_key,
                    control_rx,
                    steer_rx,
                    peers,
                    wakers,
                    ready_tx,
                )
            })
            .map_err(|source| ShardError::Spawn {
                shard: index,
                source,
            })?;
        handles.push((index, thread, control_tx));
        ready.push(ready_rx);
    }
    let mut all_wakers = Vec::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    for ((index, thread, control), ready_rx) in handles.into_iter().zip(ready) {
        match ready_rx.recv() {
            Ok(waker) => {
                all_wakers.push(waker);
                out.push((index, thread, control));
            }
            Err(_) => {
                // The thread ended before it was ready: its result says why.
                return match thread.join() {
                    Ok(Err(e)) => Err(e),
                    _ => Err(ShardError::Panicked(index)),
                };
            }
        }
    }
    // Only set here, once: nothing else sets it.
    let _ = wakers.set(all_wakers.clone());
    Ok(out
        .into_iter()
        .zip(all_wakers)
        .map(|((index, thread, control), waker)| ShardHandle {
            index,
            thread: Some(thread),
            control,
            waker,
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn run(
    spec: ShardSpec,
    server_config: Arc<quinn_proto::ServerConfig>,
    reset_key: Arc<dyn quinn_proto::crypto::HmacKey>,
    control_rx: Receiver<Control>,
    steer_rx: Receiver<Steered>,
    peers: Vec<Sender<Steered>>,
    wakers: Arc<OnceLock<Vec<Waker>>>,
    ready_tx: Sender<Waker>,
) -> Result<ShardReport, ShardError> {
    let shard = spec.front.shard;
    if let Some(core) = spec.core
        && !core_affinity::set_for_current(core_affinity::CoreId { id: core })
    {
        tracing::warn!(
            shard,
            core,
            "could not pin shard thread to its core; running unpinned"
        );
    }
    let ring_config = RingConfig {
        entries: spec.ring_entries,
        sqpoll_idle_ms: spec.sqpoll.then_some(100),
        mode: SetupMode::Auto,
        udp_bind: Some(spec.listen),
        ..RingConfig::default()
    };
    let mut ring = Ring::new(&ring_config).map_err(|source| ShardError::Ring { shard, source })?;
    tracing::debug!(
        shard,
        mode = ?ring.setup_mode(),
        gso = ring.udp_gso_enabled(),
        gro = ring.udp_gro_enabled(),
        "shard ready"
    );

    let mut front = FrontDoor::new(spec.front.clone(), server_config, reset_key);
    let agents_configured = !spec.plane.routes.is_empty();
    let mut handler = plane::Inbox::new(agents_configured);
    let counters = spec.counters.clone();
    let mut plane = plane::Plane::new(
        u16::from(shard),
        &spec.plane,
        spec.plane_events.clone(),
        counters.clone(),
        spec.reports.clone(),
    )
    .map_err(|message| ShardError::Plane { shard, message })?;
    // Ready only once everything that can refuse the configuration has accepted it.
    let _ = ready_tx.send(ring.waker());
    let mut spinner = Spinner::new(spec.spin);
    let mut arena = BytesMut::with_capacity(RECV_ARENA_BYTES);
    let mut txbuf: Vec<u8> = Vec::with_capacity(TRANSMIT_BYTES_MAX);
    let mut report = ShardReport {
        shard,
        ..ShardReport::default()
    };
    let mut drain_deadline: Option<Instant> = None;
    let mut closed_at: Option<Instant> = None;
    let io = |action| {
        move |source| ShardError::Io {
            shard,
            action,
            source,
        }
    };

    let mut published = turnstile_frontdoor::FrontDoorStats::default();
    let mut published_report = ShardReport::default();
    let mut iterations: u32 = 0;
    // The last bounded sleep ended and the loop has found no work since.
    let mut slept_idle = false;
    loop {
        iterations = iterations.wrapping_add(1);
        if iterations.is_multiple_of(256) {
            publish(
                &counters,
                &front,
                &report,
                &mut published,
                &mut published_report,
                256,
            );
        }
        ring.submit().map_err(io("submit"))?;
        let now = Instant::now();
        let mut worked = false;

        while let Some(completion) = ring.poll_completion() {
            worked = true;
            match completion {
                Completion::UdpRecv(recv) => {
                    let ecn = recv.ecn;
                    for datagram in recv.segments() {
                        report.datagrams_received += 1;
                        match front.steer(datagram) {
                            Steer::Shard(owner) => {
                                report.datagrams_steered_out += 1;
                                let steered = Steered {
                                    data: BytesMut::from(datagram),
                                    remote: recv.source,
                                    local_ip: recv.destination,
                                    ecn,
                                };
                                match peers[owner as usize].try_send(steered) {
                                    Ok(()) => {
                                        if let Some(w) = wakers.get() {
                                            w[owner as usize].wake();
                                        }
                                    }
                                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                                        report.datagrams_steered_dropped += 1
                                    }
                                }
                            }
                            Steer::Local | Steer::Unknown => {
                                if arena.capacity() < datagram.len() {
                                    arena.reserve(RECV_ARENA_BYTES);
                                }
                                arena.extend_from_slice(datagram);
                                let data = arena.split();
                                front.handle_datagram(
                                    now,
                                    recv.source,
                                    recv.destination,
                                    EcnCodepoint::from_bits(ecn),
                                    data,
                                    &mut handler,
                                );
                            }
                        }
                    }
                }
                Completion::UdpRecvError(e) => {
                    tracing::debug!(shard, error = %e, "udp receive error");
                }
                Completion::Timer | Completion::Wake => {}
                Completion::UdsConnected { token, result } => {
                    plane.on_connected(now, token, result, &mut ring)
                }
                Completion::UdsData { token, data } => plane.on_data(now, token, data),
                Completion::UdsWritten { .. } => {}
                Completion::UdsClosed { token, error } => {
                    if let Some(e) = error {
                        tracing::debug!(shard, error = %e, "agent connection closed");
                    }
                    plane.on_closed(now, token)
                }
            }
        }

        while let Ok(s) = steer_rx.try_recv() {
            worked = true;
            report.datagrams_steered_in += 1;
            front.handle_datagram(
                now,
                s.remote,
                s.local_ip,
                EcnCodepoint::from_bits(s.ecn),
                s.data,
                &mut handler,
            );
        }

        while let Ok(msg) = control_rx.try_recv() {
            match msg {
                Control::ReplaceWasm(modules) => {
                    for (agent, module) in modules.iter() {
                        plane.replace_wasm(agent, module.clone());
                    }
                }
                Control::Reconfigure(configs) => {
                    for (agent, config) in configs.iter() {
                        plane.reconfigure(agent, config);
                    }
                }
                Control::Drain { deadline } => {
                    front.begin_drain();
                    drain_deadline = Some(drain_deadline.map_or(deadline, |d| d.min(deadline)));
                }
            }
        }

        front.handle_timeout(now, &mut handler);
        plane.run(now, &mut front, &mut handler, &mut ring);

        if let Some(deadline) = drain_deadline
            && closed_at.is_none()
            && (front.streams_in_flight() == 0 || now >= deadline)
        {
            front.close_all(
                now,
                codes::SHUTTING_DOWN,
                b"server shutting down",
                &mut handler,
            );
            // Every request is answered or cancelled: no call will start again. Agents hear it
            // only now, so requests still in flight during the drain could use every agent.
            plane.drain(now, now + Duration::from_millis(CLOSE_FLUSH_MS), &mut ring);
            closed_at = Some(now);
        }

        while let Some(t) = front.poll_transmit(now, &mut txbuf) {
            worked = true;
            let ecn = t.ecn.map_or(0, |e| e as u8);
            match ring.send_udp(
                t.destination,
                t.src_ip,
                ecn,
                t.segment_size,
                &txbuf[..t.size],
            ) {
                Ok(()) => report.transmits_sent += 1,
                Err(e) => {
                    report.transmits_failed += 1;
                    tracing::debug!(shard, error = %e, "udp send failed");
                }
            }
        }

        if let Some(at) = closed_at {
            let flushed = front.connections() == 0;
            if flushed || now.saturating_duration_since(at) > Duration::from_millis(CLOSE_FLUSH_MS)
            {
                ring.submit().map_err(io("submit"))?;
                report.front = front.stats();
                return Ok(report);
            }
        }

        if worked {
            spinner.worked();
            slept_idle = false;
            continue;
        }
        match spinner.idle(now) {
            // Yielding costs nothing when no other thread wants this core, and hands it over at
            // once when one does (a load generator or an agent sharing the core), instead of
            // making it wait for the scheduler's time slice.
            Idle::Spin => std::thread::yield_now(),
            Idle::Sleep => {
                report.sleeps += 1;
                publish(
                    &counters,
                    &front,
                    &report,
                    &mut published,
                    &mut published_report,
                    u64::from(iterations % 256),
                );
                iterations = 0;
                let mut deadline = front.poll_timeout();
                if let Some(p) = plane.poll_timeout() {
                    deadline = Some(deadline.map_or(p, |d| d.min(p)));
                }
                if closed_at.is_some() || drain_deadline.is_some() {
                    // Wake up regularly while shutting down to check the deadlines.
                    let tick = now + Duration::from_millis(10);
                    deadline = Some(deadline.map_or(tick, |d| d.min(tick)));
                }
                if let Some(bound) = spec.max_sleep {
                    if slept_idle {
                        std::thread::yield_now();
                    }
                    let until = now + bound;
                    deadline = Some(deadline.map_or(until, |d| d.min(until)));
                    slept_idle = true;
                }
                ring.wait(deadline).map_err(io("wait"))?;
            }
        }
    }
}

/// Copies what changed since the last call into the shard's counters (relaxed atomics read by
/// the admin endpoint). Called every 256 loop iterations and before sleeping, so the loop pays
/// for a handful of atomic adds now and then, not per packet.
fn publish(
    counters: &turnstile_metrics::ShardCounters,
    front: &FrontDoor,
    report: &ShardReport,
    last: &mut turnstile_frontdoor::FrontDoorStats,
    last_report: &mut ShardReport,
    iterations: u64,
) {
    let now = front.stats();
    counters
        .connections_accepted
        .add(now.connections_accepted - last.connections_accepted);
    counters
        .connections_refused
        .add(now.connections_refused - last.connections_refused);
    counters
        .retries_sent
        .add(now.retries_sent - last.retries_sent);
    counters.requests_total.add(now.requests - last.requests);
    counters
        .requests_rejected
        .add(now.requests_rejected - last.requests_rejected);
    counters
        .requests_cancelled
        .add(now.requests_cancelled - last.requests_cancelled);
    *last = now;
    let r = report;
    let l = &*last_report;
    counters
        .datagrams_received
        .add(r.datagrams_received - l.datagrams_received);
    counters
        .datagrams_sent
        .add(r.transmits_sent - l.transmits_sent);
    counters
        .datagrams_steered_out
        .add(r.datagrams_steered_out - l.datagrams_steered_out);
    counters
        .datagrams_steered_in
        .add(r.datagrams_steered_in - l.datagrams_steered_in);
    counters
        .datagrams_steered_dropped
        .add(r.datagrams_steered_dropped - l.datagrams_steered_dropped);
    counters.ring_sleeps.add(r.sleeps - l.sleeps);
    counters.loop_iterations.add(iterations);
    *last_report = *report;
    counters
        .connections_open
        .set(i64::try_from(front.connections()).unwrap_or(i64::MAX));
    counters
        .streams_open
        .set(i64::try_from(front.streams_in_flight()).unwrap_or(i64::MAX));
}
