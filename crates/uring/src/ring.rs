//! [`Ring`]: one io_uring instance with its UDP socket, Unix connections, timer and wake-up,
//! driven by the single thread that created it.

use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use io_uring::opcode;
use io_uring::types::CancelBuilder;

use crate::error::{RingError, SendError, UdsError};
use crate::limits::{
    CQ_ENTRIES_MIN_COUNT, RING_ENTRIES_DEFAULT_COUNT, RING_ENTRIES_MAX_COUNT,
    SHUTDOWN_WAIT_ROUND_MS, SHUTDOWN_WAIT_ROUNDS_COUNT, WAKE_UNARMED_SLEEP_MS,
};
use crate::probe::{self, RingParams, SetupMode};
use crate::queue::{Kind, Queue, decode_user_data, user_data};
use crate::send::Datagram;
use crate::stats::RingStats;
use crate::timer::Timer;
use crate::udp::{RecvEvent, Udp, UdpRecv};
use crate::uds::{Token, Uds, UdsEvent};
use crate::wake::{WakeState, Waker};

const UNARMED_WAKE_SLEEP: Duration = Duration::from_millis(WAKE_UNARMED_SLEEP_MS);

/// How to build a [`Ring`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingConfig {
    /// Submission-queue entries (1..=[`crate::limits::RING_ENTRIES_MAX_COUNT`]; rounded up to
    /// a power of two by the kernel). The completion queue is at least
    /// [`crate::limits::CQ_ENTRIES_MIN_COUNT`].
    pub entries: u32,
    /// Use a kernel SQ polling thread that idles after this many milliseconds (`SQPOLL`).
    /// Excludes the task-run flags, so [`SetupMode::Plain`] is used.
    pub sqpoll_idle_ms: Option<u32>,
    /// Pin the SQ polling thread to this CPU.
    pub sqpoll_cpu: Option<u32>,
    /// Task-run flags; [`SetupMode::Auto`] picks the best the kernel has.
    pub mode: SetupMode,
    /// Bind a UDP socket here (with `SO_REUSEPORT`, so every shard can bind the same address).
    pub udp_bind: Option<SocketAddr>,
    /// `SO_RCVBUF` for the UDP socket (forced past `net.core.rmem_max` when privileged).
    pub udp_recv_buffer_bytes: Option<usize>,
    /// `SO_SNDBUF` for the UDP socket (forced past `net.core.wmem_max` when privileged).
    pub udp_send_buffer_bytes: Option<usize>,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            entries: RING_ENTRIES_DEFAULT_COUNT,
            sqpoll_idle_ms: None,
            sqpoll_cpu: None,
            mode: SetupMode::Auto,
            udp_bind: None,
            udp_recv_buffer_bytes: None,
            udp_send_buffer_bytes: None,
        }
    }
}

/// Something that finished. Borrowed data is valid until the next call into the [`Ring`]
/// (the borrow checker enforces it); the ring then reuses the buffer.
#[derive(Debug)]
pub enum Completion<'a> {
    /// A datagram or GRO batch arrived on the UDP socket.
    UdpRecv(UdpRecv<'a>),
    /// The UDP receive failed (it is re-armed on the next submit).
    UdpRecvError(io::Error),
    /// A [`Ring::uds_connect`] finished. On error the token is already released.
    UdsConnected {
        /// Connection.
        token: Token,
        /// Outcome.
        result: io::Result<()>,
    },
    /// Bytes arrived on a connection being read ([`Ring::uds_read`]).
    UdsData {
        /// Connection.
        token: Token,
        /// The bytes (at most [`crate::limits::UDS_READ_BUFFER_BYTES`]).
        data: &'a [u8],
    },
    /// A write of queued bytes finished: `Ok(n)` bytes left the queue (the rest, after a short
    /// write, is being sent), or the connection failed (a `UdsClosed` follows).
    UdsWritten {
        /// Connection.
        token: Token,
        /// Bytes written, or the error.
        result: io::Result<usize>,
    },
    /// The connection is closed (by [`Ring::uds_close`], the peer, or an error) and its token
    /// released. `error` is `None` for a clean close.
    UdsClosed {
        /// Connection.
        token: Token,
        /// What ended it, if it failed.
        error: Option<io::Error>,
    },
    /// The deadline given to [`Ring::set_timer`] was reached (the timer is now unset).
    Timer,
    /// A [`Waker`] woke this ring: check the cross-thread queues.
    Wake,
}

/// A completion without borrows, before it is handed out.
enum Event {
    Udp(RecvEvent),
    UdpError(i32),
    Uds(UdsEvent),
    Timer,
    Wake,
}

/// A buffer lent to the caller with the last completion.
enum View {
    Recv(u16),
    Uds(Token),
}

/// One io_uring instance and everything it drives, owned by one thread.
///
/// Create it on the thread that will drive it (`SINGLE_ISSUER` ties the ring to its creator);
/// it is deliberately neither `Send` nor `Sync`. The loop is:
///
/// ```text
/// loop {
///     ring.submit()?;                       // non-blocking: submit, run deferred work
///     while let Some(c) = ring.poll_completion() { /* handle c */ }
///     /* check cross-thread queues, run timers, queue sends */
///     if idle for the spin budget { ring.wait(next_deadline)?; }
/// }
/// ```
pub struct Ring {
    queue: Queue,
    mode: SetupMode,
    sqpoll: bool,
    udp: Option<Udp>,
    uds: Uds,
    timer: Timer,
    wake: WakeState,
    view: Option<View>,
    stats: RingStats,
    _single_thread: PhantomData<*mut ()>,
}

fn io_err(action: &'static str) -> impl FnOnce(io::Error) -> RingError {
    move |source| RingError::Io { action, source }
}

impl Ring {
    /// Creates the ring (see [`RingConfig`]), binds the UDP socket and arms its receive.
    pub fn new(config: &RingConfig) -> Result<Self, RingError> {
        if config.entries == 0 || config.entries > RING_ENTRIES_MAX_COUNT {
            return Err(RingError::Config("entries must be in 1..=32768"));
        }
        let cq_entries = (config.entries.next_power_of_two() * 2).max(CQ_ENTRIES_MIN_COUNT);
        let (uring, mode) = probe::build_ring(&RingParams {
            entries: config.entries,
            cq_entries,
            mode: config.mode,
            sqpoll_idle_ms: config.sqpoll_idle_ms,
            sqpoll_cpu: config.sqpoll_cpu,
        })?;
        probe::check_ring(&uring)?;
        let udp = match config.udp_bind {
            Some(addr) => Some(Udp::open(
                &uring,
                addr,
                config.udp_recv_buffer_bytes,
                config.udp_send_buffer_bytes,
            )?),
            None => None,
        };
        let mut ring = Self {
            sqpoll: uring.params().is_setup_sqpoll(),
            queue: Queue::new(uring),
            mode,
            udp,
            uds: Uds::new(),
            timer: Timer::new().map_err(io_err("allocate the timer"))?,
            wake: WakeState::new().map_err(io_err("create the wake-up eventfd"))?,
            view: None,
            stats: RingStats::default(),
            _single_thread: PhantomData,
        };
        ring.submit()
            .map_err(io_err("submit the initial operations"))?;
        Ok(ring)
    }

    /// The task-run mode the ring was created with (never [`SetupMode::Auto`]).
    pub fn setup_mode(&self) -> SetupMode {
        self.mode
    }

    /// Whether a kernel SQ polling thread submits for this ring.
    pub fn is_sqpoll(&self) -> bool {
        self.sqpoll
    }

    /// A handle other threads use to wake this ring from [`Ring::wait`].
    pub fn waker(&self) -> Waker {
        self.wake.waker()
    }

    /// The bound UDP address (with the actual port when bound to port 0).
    pub fn udp_local_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().map(Udp::local_addr)
    }

    /// Whether sends use UDP GSO (supported, and not refused by the device so far).
    pub fn udp_gso_enabled(&self) -> bool {
        self.udp.as_ref().is_some_and(|u| u.send.gso_enabled())
    }

    /// Whether the UDP socket receives GRO batches.
    pub fn udp_gro_enabled(&self) -> bool {
        self.udp.as_ref().is_some_and(Udp::gro_enabled)
    }

    /// Number of UDP receive buffers ([`crate::limits::RECV_BUFFERS_COUNT`]), 0 without UDP.
    pub fn udp_recv_buffers(&self) -> u16 {
        self.udp.as_ref().map_or(0, Udp::recv_buffers)
    }

    /// Counters.
    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// Submits queued work and makes finished work visible to [`Ring::poll_completion`],
    /// without blocking. Enters the kernel only if there is something to submit or the kernel
    /// flagged pending completion work, so calling it in a spin loop is cheap.
    pub fn submit(&mut self) -> io::Result<()> {
        self.prepare();
        self.queue.enter_nonblocking()
    }

    /// Blocks until at least one completion is ready, a [`Waker`] fires, or `deadline`
    /// passes (returns at once if it already has, or if completions are pending). Also submits
    /// queued work. Interrupted or timed-out waits return `Ok`.
    pub fn wait(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        self.prepare();
        if self.wake.is_ready() || !self.queue.cq_is_empty() {
            return self.queue.enter_nonblocking();
        }
        let mut timeout = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(t) if !t.is_zero() => Some(t),
                _ => return self.queue.enter_nonblocking(),
            },
            None => None,
        };
        if !self.wake.is_armed() {
            timeout = Some(timeout.map_or(UNARMED_WAKE_SLEEP, |t| t.min(UNARMED_WAKE_SLEEP)));
        }
        if self.wake.prepare_sleep() {
            return self.queue.enter_nonblocking();
        }
        let result = self.queue.enter_and_wait(timeout);
        self.wake.end_sleep();
        result
    }

    /// The next completion, if one is visible; never blocks or enters the kernel.
    pub fn poll_completion(&mut self) -> Option<Completion<'_>> {
        self.release_view();
        if self.wake.take_ready() {
            self.stats.wakeups += 1;
            return Some(Completion::Wake);
        }
        let event = loop {
            let cqe = self.queue.pop()?;
            if let Some(event) = self.dispatch(cqe.user_data(), cqe.result(), cqe.flags()) {
                break event;
            }
        };
        Some(self.hand_out(event))
    }

    /// Sets the deadline for the next [`Completion::Timer`] (`None` cancels). Only the nearest
    /// deadline matters; call it whenever it changes.
    pub fn set_timer(&mut self, deadline: Option<Instant>) {
        self.timer.set(deadline);
    }

    /// The deadline set with [`Ring::set_timer`] that has not fired yet.
    pub fn timer_deadline(&self) -> Option<Instant> {
        self.timer.deadline()
    }

    /// Queues one datagram, or with `segment_size` a GSO batch of datagrams of that size (the
    /// last may be shorter), to `dest`. `src_ip` picks the source address (`IP_PKTINFO`),
    /// `ecn` the ECN codepoint (0..=3). The payload is copied into a send slot, so the caller
    /// keeps its buffer. Without GSO support the segments are sent one by one; if the kernel
    /// refuses a GSO send with `EIO`, GSO is turned off and that batch resent segment by
    /// segment. Failed sends are counted in [`RingStats`].
    pub fn send_udp(
        &mut self,
        dest: SocketAddr,
        src_ip: Option<std::net::IpAddr>,
        ecn: u8,
        segment_size: Option<usize>,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let Some(udp) = self.udp.as_mut() else {
            return Err(SendError::NoSocket);
        };
        let fd = udp.fd();
        let datagram = Datagram {
            dest,
            src_ip,
            ecn,
            segment_size,
            payload,
        };
        udp.send
            .send(&mut self.queue, fd, &datagram, &mut self.stats)
    }

    /// Starts connecting a Unix stream socket to `path`; [`Completion::UdsConnected`]
    /// follows. Bytes may be queued with [`Ring::uds_write`] right away.
    pub fn uds_connect(&mut self, path: &Path) -> Result<Token, UdsError> {
        self.release_view();
        self.uds.connect(&mut self.queue, path)
    }

    /// Copies `data` into the connection's write queue; it is written in order, short writes
    /// resubmitted. Fails with [`UdsError::WriteQueueFull`] if it does not fit (nothing is
    /// queued then); retry after a [`Completion::UdsWritten`].
    pub fn uds_write(&mut self, token: Token, data: &[u8]) -> Result<(), UdsError> {
        self.release_view();
        self.uds.write(&mut self.queue, token, data)
    }

    /// Starts receiving on the connection: [`Completion::UdsData`] until it closes.
    pub fn uds_read(&mut self, token: Token) -> Result<(), UdsError> {
        self.release_view();
        self.uds.read(&mut self.queue, token)
    }

    /// Closes the connection, dropping bytes not yet written; [`Completion::UdsClosed`]
    /// follows.
    pub fn uds_close(&mut self, token: Token) -> Result<(), UdsError> {
        self.release_view();
        self.uds.close(&mut self.queue, token)
    }

    /// The peer's credentials of a connected Unix socket, from `SO_PEERCRED`: (pid, uid, gid)
    /// of the process that created the listening socket.
    pub fn uds_peer_cred(&self, token: Token) -> Result<(i32, u32, u32), UdsError> {
        self.uds.peer_cred(token)
    }

    /// Bytes queued on the connection and not yet written (`None` for a dead token).
    pub fn uds_queued_bytes(&self, token: Token) -> Option<usize> {
        self.uds.queued(token)
    }

    /// Gives back what the last completion lent and (re-)queues standing operations.
    fn prepare(&mut self) {
        self.release_view();
        if let Some(udp) = self.udp.as_mut() {
            udp.arm_recv(&mut self.queue, &mut self.stats);
        }
        self.wake.arm(&mut self.queue);
        self.uds.retry(&mut self.queue);
        self.timer.flush(&mut self.queue);
    }

    fn release_view(&mut self) {
        match self.view.take() {
            Some(View::Recv(bid)) => {
                if let Some(udp) = self.udp.as_mut() {
                    udp.give_back(bid);
                }
            }
            Some(View::Uds(token)) => self.uds.release(&mut self.queue, token),
            None => {}
        }
    }

    /// Routes one completion; returns what the caller should see, if anything.
    fn dispatch(&mut self, ud: u64, result: i32, flags: u32) -> Option<Event> {
        let Some((kind, index, tag)) = decode_user_data(ud) else {
            self.stats.unexpected_completions += 1;
            return None;
        };
        match kind {
            Kind::UdpRecv | Kind::UdpSend => {
                let Some(udp) = self.udp.as_mut() else {
                    self.stats.unexpected_completions += 1;
                    return None;
                };
                if kind == Kind::UdpSend {
                    let fd = udp.fd();
                    udp.send
                        .on_complete(&mut self.queue, fd, index, result, &mut self.stats);
                    return None;
                }
                match udp.on_recv(result, flags, &mut self.stats)? {
                    Ok(event) => Some(Event::Udp(event)),
                    Err(errno) => Some(Event::UdpError(errno)),
                }
            }
            Kind::Timer => self
                .timer
                .on_complete(index, tag, result)
                .then_some(Event::Timer),
            Kind::TimerRemove | Kind::Cancel => None,
            Kind::Wake => match self.wake.on_complete(result) {
                Ok(woken) => woken.then_some(Event::Wake),
                Err(_) => {
                    self.stats.wake_errors += 1;
                    None
                }
            },
            Kind::UdsConnect
            | Kind::UdsRead
            | Kind::UdsWrite
            | Kind::UdsCancel
            | Kind::UdsClose => self
                .uds
                .on_complete(&mut self.queue, kind, index, tag, result)
                .map(Event::Uds),
        }
    }

    fn hand_out(&mut self, event: Event) -> Completion<'_> {
        let err = io::Error::from_raw_os_error;
        match event {
            Event::Udp(r) => {
                self.view = Some(View::Recv(r.bid));
                match self.udp.as_ref() {
                    Some(udp) => Completion::UdpRecv(UdpRecv {
                        // SAFETY: buffer `r.bid` was delivered by the kernel and is given back
                        // only by `release_view`, which runs at the start of the next `&mut
                        // self` call, when this borrow has ended.
                        data: unsafe { udp.payload(&r) },
                        segment_size: r.segment_size,
                        source: r.source,
                        destination: r.destination,
                        ecn: r.ecn,
                    }),
                    None => Completion::UdpRecvError(err(libc::EBADF)),
                }
            }
            Event::UdpError(errno) => Completion::UdpRecvError(err(errno)),
            Event::Uds(UdsEvent::Data(token, len)) => {
                self.view = Some(View::Uds(token));
                Completion::UdsData {
                    token,
                    // SAFETY: the receive is re-armed only by `release_view`, at the start of
                    // the next `&mut self` call, when this borrow has ended.
                    data: unsafe { self.uds.data(token, len) },
                }
            }
            Event::Uds(UdsEvent::Connected(token, result)) => Completion::UdsConnected {
                token,
                result: result.map_err(err),
            },
            Event::Uds(UdsEvent::Written(token, result)) => Completion::UdsWritten {
                token,
                result: result.map_err(err),
            },
            Event::Uds(UdsEvent::Closed(token, errno)) => Completion::UdsClosed {
                token,
                error: (errno != 0).then(|| err(errno)),
            },
            Event::Timer => {
                self.stats.timers_fired += 1;
                Completion::Timer
            }
            Event::Wake => {
                self.wake.clear_pending();
                self.stats.wakeups += 1;
                Completion::Wake
            }
        }
    }
}

impl Ring {
    /// Cancels everything in flight and waits (bounded) for the terminal completions. Returns
    /// whether the kernel let go of everything.
    fn cancel_and_drain(&mut self) -> bool {
        self.view = None;
        if self.queue.inflight() > 0 {
            let cancel = opcode::AsyncCancel2::new(CancelBuilder::any())
                .build()
                .user_data(user_data(Kind::Cancel, 0, 0));
            // SAFETY: a cancellation points at no memory.
            let _ = unsafe { self.queue.push(&cancel) };
            for _ in 0..SHUTDOWN_WAIT_ROUNDS_COUNT {
                if self.queue.inflight() == 0 {
                    break;
                }
                let round = Duration::from_millis(SHUTDOWN_WAIT_ROUND_MS);
                if self.queue.enter_and_wait(Some(round)).is_err() {
                    break;
                }
                while self.queue.pop().is_some() {}
            }
        }
        self.queue.inflight() == 0
    }

    /// Test hook: the next GSO send completes with `EIO` instead of reaching the kernel.
    #[cfg(test)]
    pub(crate) fn inject_gso_eio(&mut self) {
        if let Some(udp) = self.udp.as_mut() {
            udp.send.inject_gso_eio = true;
        }
    }

    /// Test hook: operations owed a terminal completion.
    #[cfg(test)]
    pub(crate) fn inflight_for_test(&self) -> u32 {
        self.queue.inflight()
    }

    /// Test hook: run the shutdown drain and report whether it completed.
    #[cfg(test)]
    pub(crate) fn drain_for_test(&mut self) -> bool {
        self.cancel_and_drain()
    }
}

impl Drop for Ring {
    /// Cancels everything in flight and waits (bounded) for the kernel to let go of the
    /// ring's buffers; buffers it may still hold are leaked, never freed under it.
    fn drop(&mut self) {
        if self.cancel_and_drain() {
            if let Some(udp) = self.udp.as_mut() {
                udp.shutdown(&self.queue.uring);
            }
        } else {
            if let Some(udp) = self.udp.as_mut() {
                udp.leak();
            }
            self.uds.leak();
            self.timer.leak();
            self.wake.leak();
        }
    }
}
