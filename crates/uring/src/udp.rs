//! The ring's UDP socket: opening it (`SO_REUSEPORT`, GRO, destination address, ECN, drop
//! counter) and multishot `recvmsg` into the provided-buffer ring.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use io_uring::types::{Fd, RecvMsgOut};
use io_uring::{IoUring, cqueue, opcode};
use socket2::{Domain, Protocol, Socket, Type};

use crate::bufring::BufRing;
use crate::cmsg::{self, SOCKADDR_BYTES};
use crate::error::RingError;
use crate::limits::{RECV_BUFFER_BYTES, RECV_BUFFERS_COUNT, RECV_CONTROL_BYTES};
use crate::queue::{Kind, Queue, user_data};
use crate::send::SendPool;
use crate::stats::RingStats;
use crate::sys;

/// Buffer group id of the UDP receive buffers.
const RECV_BGID: u16 = 0;

/// One received datagram, or a GRO batch of datagrams, borrowed from a receive buffer until the
/// next call into the [`crate::Ring`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRecv<'a> {
    /// Payload: one datagram, or consecutive datagrams of `segment_size` bytes each (the last
    /// may be shorter).
    pub data: &'a [u8],
    /// Size of each coalesced datagram; `None` when `data` is a single datagram.
    pub segment_size: Option<usize>,
    /// Sender's address (IPv4-mapped IPv6 addresses are reported as IPv4).
    pub source: SocketAddr,
    /// Address the datagram was sent to (our local address), when the kernel reported it.
    pub destination: Option<IpAddr>,
    /// ECN codepoint from the IP header (0..=3).
    pub ecn: u8,
}

impl<'a> UdpRecv<'a> {
    /// The individual datagrams of `data`.
    pub fn segments(&self) -> std::slice::Chunks<'a, u8> {
        let size = self.segment_size.unwrap_or(self.data.len()).max(1);
        self.data.chunks(size)
    }
}

/// A parsed receive completion, owning no borrow (turned into [`UdpRecv`] afterwards).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvEvent {
    pub(crate) bid: u16,
    pub(crate) offset: usize,
    pub(crate) len: usize,
    pub(crate) segment_size: Option<usize>,
    pub(crate) source: SocketAddr,
    pub(crate) destination: Option<IpAddr>,
    pub(crate) ecn: u8,
}

/// The `msghdr` given to multishot `recvmsg`: only the name and control lengths matter.
pub(crate) fn recv_msghdr() -> libc::msghdr {
    // SAFETY: `msghdr` is integers and raw pointers; all-zero (null pointers) is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_namelen = SOCKADDR_BYTES as libc::socklen_t;
    msg.msg_controllen = RECV_CONTROL_BYTES as _;
    msg
}

/// UDP socket with its receive buffers and send slots.
pub(crate) struct Udp {
    socket: Socket,
    local: SocketAddr,
    recv: BufRing,
    /// Read by the kernel when a multishot receive is submitted; never changed afterwards.
    recv_msghdr: Box<libc::msghdr>,
    recv_armed: bool,
    gro: bool,
    pub(crate) send: SendPool,
}

fn io_err(action: &'static str) -> impl FnOnce(io::Error) -> RingError {
    move |source| RingError::Io { action, source }
}

fn set_buffer(socket: &Socket, force: libc::c_int, plain: libc::c_int, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // Privileged processes may exceed net.core.[rw]mem_max; others get what the sysctl allows.
    if sys::setsockopt_int(socket, libc::SOL_SOCKET, force, value).is_err() {
        let _ = sys::setsockopt_int(socket, libc::SOL_SOCKET, plain, value);
    }
}

impl Udp {
    /// Opens and binds the socket, registers the receive buffers and prepares send slots.
    pub(crate) fn open(
        uring: &IoUring,
        bind: SocketAddr,
        recv_buffer_bytes: Option<usize>,
        send_buffer_bytes: Option<usize>,
    ) -> Result<Self, RingError> {
        let socket = Socket::new(
            Domain::for_address(bind),
            Type::DGRAM.nonblocking().cloexec(),
            Some(Protocol::UDP),
        )
        .map_err(io_err("create the UDP socket"))?;
        socket
            .set_reuse_port(true)
            .map_err(io_err("set SO_REUSEPORT"))?;
        let v6 = bind.is_ipv6();
        if v6 && bind.ip().is_unspecified() {
            // Dual stack: IPv4 peers arrive as IPv4-mapped addresses (reported as IPv4).
            socket
                .set_only_v6(false)
                .map_err(io_err("clear IPV6_V6ONLY"))?;
        }
        if let Some(bytes) = recv_buffer_bytes {
            set_buffer(&socket, sys::SO_RCVBUFFORCE, libc::SO_RCVBUF, bytes);
        }
        if let Some(bytes) = send_buffer_bytes {
            set_buffer(&socket, sys::SO_SNDBUFFORCE, libc::SO_SNDBUF, bytes);
        }
        let gro = sys::setsockopt_int(&socket, libc::SOL_UDP, sys::UDP_GRO, 1).is_ok();
        let gso = sys::getsockopt_int(&socket, libc::SOL_UDP, sys::UDP_SEGMENT).is_ok();
        let _ = sys::setsockopt_int(&socket, libc::SOL_SOCKET, sys::SO_RXQ_OVFL, 1);
        let set = |level, name, action| {
            sys::setsockopt_int(&socket, level, name, 1).map_err(io_err(action))
        };
        if v6 {
            set(
                libc::IPPROTO_IPV6,
                libc::IPV6_RECVPKTINFO,
                "set IPV6_RECVPKTINFO",
            )?;
            set(
                libc::IPPROTO_IPV6,
                libc::IPV6_RECVTCLASS,
                "set IPV6_RECVTCLASS",
            )?;
            // For IPv4 datagrams on a dual-stack socket; harmless (or refused) otherwise.
            let _ = sys::setsockopt_int(&socket, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
            let _ = sys::setsockopt_int(&socket, libc::IPPROTO_IP, libc::IP_RECVTOS, 1);
        } else {
            set(libc::IPPROTO_IP, libc::IP_PKTINFO, "set IP_PKTINFO")?;
            set(libc::IPPROTO_IP, libc::IP_RECVTOS, "set IP_RECVTOS")?;
        }
        socket
            .bind(&bind.into())
            .map_err(|source| RingError::Bind { addr: bind, source })?;
        let local = socket
            .local_addr()
            .map_err(io_err("read the UDP socket's address"))?
            .as_socket()
            .unwrap_or(bind);
        let recv = BufRing::new(uring, RECV_BGID, RECV_BUFFERS_COUNT, RECV_BUFFER_BYTES)
            .map_err(io_err("register the UDP receive buffer ring"))?;
        let send = SendPool::new(gso, v6).map_err(io_err("allocate UDP send slots"))?;
        Ok(Self {
            socket,
            local,
            recv,
            recv_msghdr: Box::new(recv_msghdr()),
            recv_armed: false,
            gro,
            send,
        })
    }

    /// Bound local address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub(crate) fn fd(&self) -> Fd {
        Fd(self.socket.as_raw_fd())
    }

    /// Whether GRO was enabled on the socket.
    pub(crate) fn gro_enabled(&self) -> bool {
        self.gro
    }

    /// Arms the multishot receive if it is not armed and buffers are available.
    pub(crate) fn arm_recv(&mut self, queue: &mut Queue, stats: &mut RingStats) {
        if self.recv_armed || self.recv.available() == 0 {
            return;
        }
        let sqe = opcode::RecvMsgMulti::new(self.fd(), &raw const *self.recv_msghdr, RECV_BGID)
            .build()
            .user_data(user_data(Kind::UdpRecv, 0, 0));
        // SAFETY: the kernel writes only into buffers of the registered ring (owned by
        // `self.recv`, freed only after all operations end) and reads `recv_msghdr`, which
        // lives as long as `self` and is never modified.
        if unsafe { queue.push(&sqe) }.is_ok() {
            self.recv_armed = true;
            stats.udp_recv_arms += 1;
        }
    }

    /// Handles a receive completion. Returns a datagram to deliver, or an error to report.
    pub(crate) fn on_recv(
        &mut self,
        result: i32,
        flags: u32,
        stats: &mut RingStats,
    ) -> Option<Result<RecvEvent, i32>> {
        if !cqueue::more(flags) {
            // The kernel ended the multishot (buffers ran out, error, or cancel): re-armed on
            // the next submit.
            self.recv_armed = false;
        }
        if result < 0 {
            return match -result {
                libc::ENOBUFS => {
                    stats.udp_recv_no_buffers += 1;
                    None
                }
                libc::ECANCELED => None,
                errno => {
                    stats.udp_recv_errors += 1;
                    Some(Err(errno))
                }
            };
        }
        let Some(bid) = cqueue::buffer_select(flags).filter(|&b| b < self.recv.count()) else {
            stats.udp_recv_malformed += 1;
            return None;
        };
        self.recv.taken(bid);
        match self.parse(bid, result as usize, stats) {
            Some(event) => Some(Ok(event)),
            None => {
                self.recv.give_back(bid);
                None
            }
        }
    }

    fn parse(&self, bid: u16, len: usize, stats: &mut RingStats) -> Option<RecvEvent> {
        // SAFETY: `bid` was just delivered to us and is not given back while `buf` lives.
        let buf = unsafe { self.recv.buffer(bid, len.min(RECV_BUFFER_BYTES)) };
        let Ok(out) = RecvMsgOut::parse(buf, &self.recv_msghdr) else {
            stats.udp_recv_malformed += 1;
            return None;
        };
        if out.is_payload_truncated() {
            stats.udp_recv_truncated += 1;
            return None;
        }
        if out.is_control_data_truncated() {
            stats.udp_recv_control_truncated += 1;
        }
        let Some(source) = cmsg::decode_sockaddr(out.name_data()) else {
            stats.udp_recv_malformed += 1;
            return None;
        };
        let control = cmsg::parse_recv_control(out.control_data());
        if let Some(drops) = control.drops {
            stats.udp_recv_kernel_drops = u64::from(drops);
        }
        let payload = out.payload_data();
        let offset = payload.as_ptr() as usize - buf.as_ptr() as usize;
        stats.udp_recv_batches += 1;
        stats.udp_recv_bytes += payload.len() as u64;
        Some(RecvEvent {
            bid,
            offset,
            len: payload.len(),
            segment_size: control.segment_size.filter(|&s| s < payload.len()),
            source,
            destination: control.destination,
            ecn: control.ecn,
        })
    }

    /// The payload of a delivered datagram.
    ///
    /// # Safety
    ///
    /// `event` must come from [`Udp::on_recv`] and its buffer not be given back while the slice
    /// lives.
    pub(crate) unsafe fn payload(&self, event: &RecvEvent) -> &[u8] {
        // SAFETY: forwarded from this function's contract.
        let buf = unsafe { self.recv.buffer(event.bid, event.offset + event.len) };
        &buf[event.offset..]
    }

    /// Returns a delivered buffer to the kernel.
    pub(crate) fn give_back(&mut self, bid: u16) {
        self.recv.give_back(bid);
    }

    /// Unregisters the buffer ring (no operation may be in flight).
    pub(crate) fn shutdown(&mut self, uring: &IoUring) {
        self.recv.unregister(uring);
    }

    /// Never free kernel-shared memory (operations may still be in flight).
    pub(crate) fn leak(&mut self) {
        self.recv.leak();
        self.send.leak();
        std::mem::forget(std::mem::replace(
            &mut self.recv_msghdr,
            Box::new(recv_msghdr()),
        ));
    }

    /// Number of receive buffers.
    pub(crate) fn recv_buffers(&self) -> u16 {
        self.recv.count()
    }
}
