//! Socket addresses and control messages (`cmsg`) as bytes: what `sendmsg` is given and what
//! multishot `recvmsg` writes into a provided buffer.

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::sys;

/// Bytes of the largest socket address we send to or receive from (`sockaddr_in6`).
pub(crate) const SOCKADDR_BYTES: usize = size_of::<libc::sockaddr_in6>();

const CMSG_ALIGN_BYTES: usize = size_of::<usize>();
const CMSG_HDR_BYTES: usize = size_of::<libc::cmsghdr>();

const fn cmsg_align(len: usize) -> usize {
    (len + CMSG_ALIGN_BYTES - 1) & !(CMSG_ALIGN_BYTES - 1)
}

/// `CMSG_SPACE`: room one control message with `data_len` bytes of data takes.
pub(crate) const fn cmsg_space(data_len: usize) -> usize {
    cmsg_align(CMSG_HDR_BYTES) + cmsg_align(data_len)
}

/// `CMSG_LEN`: the `cmsg_len` of a control message with `data_len` bytes of data.
const fn cmsg_len(data_len: usize) -> usize {
    cmsg_align(CMSG_HDR_BYTES) + data_len
}

/// Encodes `addr` as a `sockaddr_in`/`sockaddr_in6` into `out`; returns its length.
pub(crate) fn encode_sockaddr(addr: SocketAddr, out: &mut [u8; SOCKADDR_BYTES]) -> u32 {
    out.fill(0);
    match addr {
        SocketAddr::V4(a) => {
            out[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            out[2..4].copy_from_slice(&a.port().to_be_bytes());
            out[4..8].copy_from_slice(&a.ip().octets());
            size_of::<libc::sockaddr_in>() as u32
        }
        SocketAddr::V6(a) => {
            out[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            out[2..4].copy_from_slice(&a.port().to_be_bytes());
            out[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            out[8..24].copy_from_slice(&a.ip().octets());
            out[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
            size_of::<libc::sockaddr_in6>() as u32
        }
    }
}

/// Decodes a `sockaddr_in`/`sockaddr_in6`; IPv4-mapped IPv6 addresses come back as IPv4.
pub(crate) fn decode_sockaddr(bytes: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(bytes.get(0..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
    if family == libc::AF_INET {
        let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    } else if family == libc::AF_INET6 {
        let flowinfo = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
        let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
        let scope_id = u32::from_ne_bytes(bytes.get(24..28)?.try_into().ok()?);
        let ip = Ipv6Addr::from(ip);
        Some(match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
            None => SocketAddr::V6(SocketAddrV6::new(ip, port, flowinfo, scope_id)),
        })
    } else {
        None
    }
}

fn read_header(bytes: &[u8]) -> Option<(usize, libc::c_int, libc::c_int)> {
    if bytes.len() < CMSG_HDR_BYTES {
        return None;
    }
    // SAFETY: at least `size_of::<cmsghdr>()` bytes are readable (checked above); the read is
    // unaligned-tolerant and `cmsghdr` is plain integers, valid for any bit pattern.
    let hdr = unsafe { bytes.as_ptr().cast::<libc::cmsghdr>().read_unaligned() };
    #[allow(clippy::unnecessary_cast)] // `cmsg_len` is `u32` on some libcs
    let len = hdr.cmsg_len as usize;
    Some((len, hdr.cmsg_level, hdr.cmsg_type))
}

fn write_header(out: &mut [u8], len: usize, level: libc::c_int, ty: libc::c_int) {
    assert!(out.len() >= CMSG_HDR_BYTES, "no room for a cmsg header");
    // SAFETY: `cmsghdr` is plain integers (and, on some libcs, padding), for which all-zero is
    // a valid value.
    let mut hdr: libc::cmsghdr = unsafe { std::mem::zeroed() };
    hdr.cmsg_len = len as _;
    hdr.cmsg_level = level;
    hdr.cmsg_type = ty;
    // SAFETY: `out` has room for a whole `cmsghdr` (asserted above); the write is unaligned.
    unsafe {
        out.as_mut_ptr()
            .cast::<libc::cmsghdr>()
            .write_unaligned(hdr)
    }
}

/// Appends control messages to a byte buffer (the `msg_control` of a `sendmsg`).
pub(crate) struct ControlEncoder<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> ControlEncoder<'a> {
    /// Starts an empty encoder over `buf` (cleared).
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        buf.fill(0);
        Self { buf, len: 0 }
    }

    /// Appends one control message. Panics if the buffer is too small: the callers' buffers
    /// are sized for every message they push.
    pub(crate) fn push(&mut self, level: libc::c_int, ty: libc::c_int, data: &[u8]) {
        let space = cmsg_space(data.len());
        assert!(
            self.len + space <= self.buf.len(),
            "control buffer too small"
        );
        let at = &mut self.buf[self.len..self.len + space];
        write_header(at, cmsg_len(data.len()), level, ty);
        let start = cmsg_align(CMSG_HDR_BYTES);
        at[start..start + data.len()].copy_from_slice(data);
        self.len += space;
    }

    /// Bytes used so far (the `msg_controllen`).
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Control messages for one outgoing datagram (or GSO batch).
pub(crate) fn encode_send_control(
    buf: &mut [u8],
    gso_segment: Option<u16>,
    src_ip: Option<IpAddr>,
    ecn: u8,
    ipv4_dest: bool,
) -> usize {
    let mut enc = ControlEncoder::new(buf);
    if let Some(seg) = gso_segment {
        enc.push(libc::SOL_UDP, sys::UDP_SEGMENT, &seg.to_ne_bytes());
    }
    match src_ip {
        Some(IpAddr::V4(ip)) => {
            // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
            let mut info = [0u8; 12];
            info[4..8].copy_from_slice(&ip.octets());
            enc.push(libc::IPPROTO_IP, libc::IP_PKTINFO, &info);
        }
        Some(IpAddr::V6(ip)) => {
            // struct in6_pktinfo { in6_addr ipi6_addr; unsigned ipi6_ifindex; }
            let mut info = [0u8; 20];
            info[0..16].copy_from_slice(&ip.octets());
            enc.push(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info);
        }
        None => {}
    }
    if ecn != 0 {
        let value = libc::c_int::from(ecn & 0b11).to_ne_bytes();
        if ipv4_dest {
            enc.push(libc::IPPROTO_IP, libc::IP_TOS, &value);
        } else {
            enc.push(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &value);
        }
    }
    enc.len()
}

/// What the control messages of one received datagram (batch) say.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecvControl {
    /// GRO segment size, when the kernel coalesced datagrams.
    pub(crate) segment_size: Option<usize>,
    /// Destination address of the datagram (our local address).
    pub(crate) destination: Option<IpAddr>,
    /// ECN bits of the IP header.
    pub(crate) ecn: u8,
    /// Socket drop counter (`SO_RXQ_OVFL`), when reported.
    pub(crate) drops: Option<u32>,
}

fn int_data(data: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(data.get(0..4)?.try_into().ok()?))
}

/// Parses received control messages; unknown or malformed ones are skipped.
pub(crate) fn parse_recv_control(mut control: &[u8]) -> RecvControl {
    let mut out = RecvControl::default();
    while let Some((len, level, ty)) = read_header(control) {
        let start = cmsg_align(CMSG_HDR_BYTES);
        if len < start || len > control.len() {
            break;
        }
        let data = &control[start..len];
        match (level, ty) {
            (libc::SOL_UDP, sys::UDP_GRO) => {
                out.segment_size = int_data(data)
                    .and_then(|v| usize::try_from(v).ok())
                    .filter(|&v| v > 0);
            }
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                if let Some(addr) = data.get(8..12).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
                    out.destination = Some(IpAddr::V4(Ipv4Addr::from(addr)));
                }
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                if let Some(addr) = data.get(0..16).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
                    out.destination = Some(IpAddr::V6(Ipv6Addr::from(addr)).to_canonical());
                }
            }
            (libc::IPPROTO_IP, libc::IP_TOS | libc::IP_RECVTOS) => {
                if let Some(&tos) = data.first() {
                    out.ecn = tos & 0b11;
                }
            }
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                if let Some(tclass) = int_data(data) {
                    out.ecn = (tclass & 0b11) as u8;
                }
            }
            (libc::SOL_SOCKET, sys::SO_RXQ_OVFL) => {
                out.drops = int_data(data).map(|v| v as u32);
            }
            _ => {}
        }
        let advance = cmsg_align(len);
        if advance >= control.len() {
            break;
        }
        control = &control[advance..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip_and_mapped_canonicalised() {
        let mut buf = [0u8; SOCKADDR_BYTES];
        for addr in [
            "127.0.0.1:4433".parse::<SocketAddr>().unwrap(),
            "[::1]:9".parse().unwrap(),
            "[fe80::1%3]:80".parse().unwrap(),
        ] {
            let len = encode_sockaddr(addr, &mut buf) as usize;
            assert_eq!(decode_sockaddr(&buf[..len]), Some(addr));
        }
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:7".parse().unwrap();
        let len = encode_sockaddr(mapped, &mut buf) as usize;
        assert_eq!(
            decode_sockaddr(&buf[..len]),
            Some("10.1.2.3:7".parse().unwrap())
        );
        assert_eq!(decode_sockaddr(&[0u8; 3]), None);
    }

    #[test]
    fn control_round_trip() {
        let mut buf = [0u8; 128];
        let len = encode_send_control(&mut buf, Some(1200), None, 2, false);
        assert_eq!(len, cmsg_space(2) + cmsg_space(4));
        // Re-read what we wrote with the receive parser: GSO looks like GRO, TCLASS like TCLASS.
        let mut rx = [0u8; 128];
        let mut enc = ControlEncoder::new(&mut rx);
        enc.push(libc::SOL_UDP, sys::UDP_GRO, &1200i32.to_ne_bytes());
        enc.push(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &3i32.to_ne_bytes());
        let mut info = [0u8; 12];
        info[8..12].copy_from_slice(&[127, 0, 0, 1]);
        enc.push(libc::IPPROTO_IP, libc::IP_PKTINFO, &info);
        enc.push(libc::SOL_SOCKET, sys::SO_RXQ_OVFL, &5u32.to_ne_bytes());
        let n = enc.len();
        let parsed = parse_recv_control(&rx[..n]);
        assert_eq!(parsed.segment_size, Some(1200));
        assert_eq!(parsed.ecn, 3);
        assert_eq!(parsed.destination, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(parsed.drops, Some(5));
        // Truncated or garbage input never panics.
        for cut in 0..n {
            let _ = parse_recv_control(&rx[..cut]);
        }
    }
}
