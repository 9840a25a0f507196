//! UDP send slots: a fixed pool of `sendmsg` headers and payload buffers. A datagram (or GSO
//! batch) is copied into a free slot, which stays busy until its completion. When the pool is
//! exhausted, [`SendError::PoolExhausted`] is returned; nothing grows and nothing is dropped
//! silently.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};

use io_uring::types::Fd;
use io_uring::{opcode, squeue};

use crate::cmsg::{self, SOCKADDR_BYTES};
use crate::error::SendError;
use crate::limits::{GSO_MAX_SEGMENTS, SEND_BUFFER_BYTES, SEND_CONTROL_BYTES, SEND_SLOTS_COUNT};
use crate::mem::KernelMem;
use crate::queue::{Kind, Queue, user_data};
use crate::stats::RingStats;

#[repr(C, align(8))]
struct ControlBuf([u8; SEND_CONTROL_BYTES]);

/// Everything `sendmsg` reads besides the payload. Lives in kernel-shared memory; all-zero is a
/// valid value (integers, null pointers, byte arrays).
#[repr(C)]
struct SendHdr {
    msg: libc::msghdr,
    iov: libc::iovec,
    name: [u8; SOCKADDR_BYTES],
    control: ControlBuf,
}

/// What a busy slot is sending (kept outside kernel-shared memory).
#[derive(Debug, Clone, Copy)]
struct SlotMeta {
    /// Destination in the socket's address family.
    dest: SocketAddr,
    /// Whether the destination is IPv4 (possibly mapped): picks `IP_TOS` over `IPV6_TCLASS`.
    ipv4_dest: bool,
    src_ip: Option<IpAddr>,
    ecn: u8,
    len: usize,
    /// GSO segment size; 0 for a single datagram.
    segment: usize,
    /// Sent as one GSO `sendmsg`.
    gso: bool,
    /// Sent one segment per `sendmsg`, starting at `cursor`.
    split: bool,
    cursor: usize,
    /// Test hook: treat this slot's next completion as `EIO`.
    #[cfg(test)]
    inject_eio: bool,
}

const EMPTY_META: SlotMeta = SlotMeta {
    dest: SocketAddr::V4(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0)),
    ipv4_dest: true,
    src_ip: None,
    ecn: 0,
    len: 0,
    segment: 0,
    gso: false,
    split: false,
    cursor: 0,
    #[cfg(test)]
    inject_eio: false,
};

/// One datagram (or GSO batch) to send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Datagram<'a> {
    pub(crate) dest: SocketAddr,
    pub(crate) src_ip: Option<IpAddr>,
    pub(crate) ecn: u8,
    pub(crate) segment_size: Option<usize>,
    pub(crate) payload: &'a [u8],
}

/// The pool of send slots of one socket.
pub(crate) struct SendPool {
    hdrs: KernelMem,
    bufs: KernelMem,
    meta: Vec<SlotMeta>,
    free: Vec<u16>,
    /// GSO is supported and has not been refused with `EIO`.
    gso: bool,
    /// The socket is IPv6 (possibly dual-stack).
    v6: bool,
    /// Test hook: the next GSO send completes with `EIO` without reaching the kernel.
    #[cfg(test)]
    pub(crate) inject_gso_eio: bool,
}

impl SendPool {
    pub(crate) fn new(gso: bool, v6: bool) -> io::Result<Self> {
        let slots = usize::from(SEND_SLOTS_COUNT);
        Ok(Self {
            hdrs: KernelMem::new(slots * size_of::<SendHdr>())?,
            bufs: KernelMem::new(slots * SEND_BUFFER_BYTES)?,
            meta: vec![EMPTY_META; slots],
            free: (0..SEND_SLOTS_COUNT).rev().collect(),
            gso,
            v6,
            #[cfg(test)]
            inject_gso_eio: false,
        })
    }

    /// Whether sends still use GSO.
    pub(crate) fn gso_enabled(&self) -> bool {
        self.gso
    }

    /// Maps `dest` into the socket's family; reports whether it is an IPv4 destination.
    fn adjust(&self, dest: SocketAddr) -> Result<(SocketAddr, bool), SendError> {
        Ok(match (self.v6, dest) {
            (false, SocketAddr::V4(_)) => (dest, true),
            (false, SocketAddr::V6(a)) => match a.ip().to_ipv4_mapped() {
                Some(v4) => (SocketAddr::V4(SocketAddrV4::new(v4, a.port())), true),
                None => return Err(SendError::AddressFamily(dest)),
            },
            (true, SocketAddr::V4(a)) => (
                SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0)),
                true,
            ),
            (true, SocketAddr::V6(a)) => (dest, a.ip().to_ipv4_mapped().is_some()),
        })
    }

    /// Copies the datagram into a free slot and queues its `sendmsg`.
    pub(crate) fn send(
        &mut self,
        queue: &mut Queue,
        fd: Fd,
        d: &Datagram<'_>,
        stats: &mut RingStats,
    ) -> Result<(), SendError> {
        let len = d.payload.len();
        if len > SEND_BUFFER_BYTES {
            return Err(SendError::TooLarge {
                len,
                max: SEND_BUFFER_BYTES,
            });
        }
        let segment = match d.segment_size {
            None => 0,
            Some(s) if s == 0 || s > usize::from(u16::MAX) => {
                return Err(SendError::InvalidSegmentSize(s));
            }
            Some(s) if s >= len => 0,
            Some(s) => {
                let segments = len.div_ceil(s);
                if segments > GSO_MAX_SEGMENTS {
                    return Err(SendError::TooManySegments {
                        segments,
                        max: GSO_MAX_SEGMENTS,
                    });
                }
                s
            }
        };
        let (dest, ipv4_dest) = self.adjust(d.dest)?;
        let Some(slot) = self.free.pop() else {
            stats.udp_send_pool_exhausted += 1;
            return Err(SendError::PoolExhausted);
        };
        // SAFETY: the slot was free, so no operation uses its payload buffer.
        unsafe {
            self.bufs
                .write(usize::from(slot) * SEND_BUFFER_BYTES, d.payload)
        };
        self.meta[usize::from(slot)] = SlotMeta {
            dest,
            ipv4_dest,
            src_ip: d.src_ip.map(|ip| ip.to_canonical()),
            ecn: d.ecn & 0b11,
            len,
            segment,
            gso: segment > 0 && self.gso,
            split: segment > 0 && !self.gso,
            cursor: 0,
            #[cfg(test)]
            inject_eio: false,
        };
        let sqe = self.build(slot, fd);
        // SAFETY: `build` pointed the entry at this slot's header and payload, which stay
        // untouched until the slot is freed by its terminal completion.
        if unsafe { queue.push(&sqe) }.is_err() {
            self.free.push(slot);
            return Err(SendError::RingFull);
        }
        Ok(())
    }

    /// Fills the slot's `msghdr` for its next `sendmsg` and returns the entry.
    fn build(&mut self, slot: u16, fd: Fd) -> squeue::Entry {
        let index = usize::from(slot);
        assert!(index < self.meta.len(), "send slot {slot} out of range");
        let ud = user_data(Kind::UdpSend, slot, 0);
        let m = self.meta[index];
        #[cfg(test)]
        if m.gso && self.inject_gso_eio {
            self.inject_gso_eio = false;
            self.meta[index].inject_eio = true;
            return opcode::Nop::new().build().user_data(ud);
        }
        let (offset, len, gso) = if m.gso {
            (0, m.len, Some(m.segment as u16))
        } else if m.split {
            (m.cursor, m.segment.min(m.len - m.cursor), None)
        } else {
            (0, m.len, None)
        };
        let hdr_ptr = self.hdrs.as_ptr().cast::<SendHdr>().wrapping_add(index);
        // SAFETY: `index` is in bounds of the header array (checked above), the pointer is
        // aligned (page-aligned base, array stride), the memory is initialised (zeroed, then
        // only valid values written), and the slot is not in flight, so nothing else uses it.
        let hdr = unsafe { &mut *hdr_ptr };
        let name_len = cmsg::encode_sockaddr(m.dest, &mut hdr.name);
        let control_len =
            cmsg::encode_send_control(&mut hdr.control.0, gso, m.src_ip, m.ecn, m.ipv4_dest);
        hdr.iov = libc::iovec {
            iov_base: self
                .bufs
                .as_ptr()
                .wrapping_add(index * SEND_BUFFER_BYTES + offset)
                .cast(),
            iov_len: len,
        };
        // SAFETY: `msghdr` is integers and raw pointers; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = hdr.name.as_mut_ptr().cast();
        msg.msg_namelen = name_len;
        msg.msg_iov = &raw mut hdr.iov;
        msg.msg_iovlen = 1;
        if control_len > 0 {
            msg.msg_control = hdr.control.0.as_mut_ptr().cast();
            msg.msg_controllen = control_len as _;
        }
        hdr.msg = msg;
        opcode::SendMsg::new(fd, &raw const hdr.msg)
            .build()
            .user_data(ud)
    }

    /// Handles a send completion. Queues the slot's next `sendmsg` if it has more to send
    /// (segment-by-segment resend after GSO was refused), else frees the slot.
    pub(crate) fn on_complete(
        &mut self,
        queue: &mut Queue,
        fd: Fd,
        slot: u16,
        result: i32,
        stats: &mut RingStats,
    ) {
        let index = usize::from(slot);
        assert!(index < self.meta.len(), "send slot {slot} out of range");
        #[cfg(test)]
        let result = if std::mem::take(&mut self.meta[index].inject_eio) {
            -libc::EIO
        } else {
            result
        };
        let m = &mut self.meta[index];
        let mut resend = false;
        if result == -libc::EIO && m.gso {
            // The device (or its checksum offload) refused GSO: turn it off for this socket and
            // send the same bytes one datagram at a time.
            self.gso = false;
            stats.udp_send_gso_fallbacks += 1;
            m.gso = false;
            m.split = true;
            m.cursor = 0;
            resend = true;
        } else {
            if result < 0 {
                stats.udp_send_errors += 1;
                stats.udp_send_last_errno = -result;
            } else {
                stats.udp_send_ok += 1;
            }
            if m.split {
                m.cursor += m.segment;
                resend = m.cursor < m.len;
            }
        }
        if resend {
            let sqe = self.build(slot, fd);
            // SAFETY: as in `send`: the entry points at this still-busy slot only.
            if unsafe { queue.push(&sqe) }.is_ok() {
                return;
            }
            stats.udp_send_errors += 1;
            stats.udp_send_last_errno = libc::EBUSY;
        }
        self.free.push(slot);
    }

    /// Never free kernel-shared memory (operations may still be in flight).
    pub(crate) fn leak(&mut self) {
        self.hdrs.leak();
        self.bufs.leak();
    }
}
