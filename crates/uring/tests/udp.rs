//! UDP over loopback: round trips, GSO, GRO, buffer exhaustion, SO_REUSEPORT, send-pool limits.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::{addr_of, ipv6_loopback, pump, run_until, udp_ring};
use turnstile_uring::limits::{RECV_BUFFERS_COUNT, SEND_SLOTS_COUNT};
use turnstile_uring::{Completion, SendError};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    data: Vec<u8>,
    segment_size: Option<usize>,
    source: SocketAddr,
    destination: Option<IpAddr>,
    ecn: u8,
}

fn recv_one(ring: &mut turnstile_uring::Ring) -> Got {
    let mut got = None;
    assert!(run_until(ring, |c| match c {
        Completion::UdpRecv(r) => {
            got = Some(Got {
                data: r.data.to_vec(),
                segment_size: r.segment_size,
                source: r.source,
                destination: r.destination,
                ecn: r.ecn,
            });
            true
        }
        other => panic!("unexpected completion {other:?}"),
    }));
    got.unwrap()
}

fn round_trip(bind: &str, local_ip: &str) {
    let mut a = udp_ring(bind);
    let mut b = udp_ring(bind);
    let (a_addr, b_addr) = (addr_of(&a), addr_of(&b));

    a.send_udp(b_addr, None, 0b10, None, b"hello").unwrap();
    a.submit().unwrap();
    let got = recv_one(&mut b);
    assert_eq!(got.data, b"hello");
    assert_eq!(got.source, a_addr);
    assert_eq!(got.destination, Some(local_ip.parse().unwrap()));
    assert_eq!(got.ecn, 0b10);
    assert_eq!(got.segment_size, None);

    // Reply with an explicit source address and another ECN codepoint.
    b.send_udp(got.source, got.destination, 0b01, None, b"world")
        .unwrap();
    b.submit().unwrap();
    let back = recv_one(&mut a);
    assert_eq!(back.data, b"world");
    assert_eq!(back.source, b_addr);
    assert_eq!(back.ecn, 0b01);
    assert_eq!(a.stats().udp_send_ok, 1);
    assert_eq!(b.stats().udp_send_errors, 0);
}

#[test]
fn round_trip_ipv4() {
    round_trip("127.0.0.1:0", "127.0.0.1");
}

#[test]
fn round_trip_ipv6() {
    if !ipv6_loopback() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    round_trip("[::1]:0", "::1");
}

#[test]
fn dual_stack_socket_reports_ipv4_peers_as_ipv4() {
    if !ipv6_loopback() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let mut ring = udp_ring("[::]:0");
    let port = addr_of(&ring).port();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.send_to(b"v4", ("127.0.0.1", port)).unwrap();
    let got = recv_one(&mut ring);
    assert_eq!(got.data, b"v4");
    assert_eq!(got.source, peer.local_addr().unwrap());
    assert_eq!(got.destination, Some("127.0.0.1".parse().unwrap()));

    ring.send_udp(got.source, None, 0b10, None, b"back")
        .unwrap();
    ring.submit().unwrap();
    peer.set_read_timeout(Some(common::GUARD)).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"back");
    assert_eq!(from.port(), port);
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn gso_send_arrives_as_separate_datagrams() {
    let mut ring = udp_ring("127.0.0.1:0");
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_read_timeout(Some(common::GUARD)).unwrap();
    let (segment, count, last) = (1000, 10, 500);
    let payload = pattern(segment * (count - 1) + last, 7);
    ring.send_udp(
        receiver.local_addr().unwrap(),
        None,
        0,
        Some(segment),
        &payload,
    )
    .unwrap();
    ring.submit().unwrap();
    let mut buf = [0u8; 2048];
    for (i, expected) in payload.chunks(segment).enumerate() {
        let (n, from) = receiver.recv_from(&mut buf).unwrap();
        assert_eq!(from, addr_of(&ring));
        assert_eq!(&buf[..n], expected, "segment {i}");
    }
    assert!(pump(&mut ring, |r| r.stats().udp_send_ok == 1));
    eprintln!(
        "gso enabled: {}, stats: {:?}",
        ring.udp_gso_enabled(),
        ring.stats()
    );
}

#[test]
fn many_small_datagrams_from_a_plain_socket() {
    let mut ring = udp_ring("127.0.0.1:0");
    let dest = addr_of(&ring);
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent: Vec<Vec<u8>> = (0..50u8).map(|i| pattern(20 + usize::from(i), i)).collect();
    for d in &sent {
        sender.send_to(d, dest).unwrap();
    }
    let mut got = Vec::new();
    assert!(run_until(&mut ring, |c| {
        let Completion::UdpRecv(r) = c else {
            panic!("unexpected completion");
        };
        assert_eq!(r.source, sender.local_addr().unwrap());
        // Whatever the kernel coalesced, the segments must split back into the datagrams.
        got.extend(r.segments().map(<[u8]>::to_vec));
        got.len() >= sent.len()
    }));
    assert_eq!(got, sent);
}

#[test]
fn gro_batch_carries_segment_size() {
    let mut a = udp_ring("127.0.0.1:0");
    let mut b = udp_ring("127.0.0.1:0");
    let (segment, count) = (1200, 8);
    let payload = pattern(segment * count - 100, 3);
    a.send_udp(addr_of(&b), None, 0, Some(segment), &payload)
        .unwrap();
    a.submit().unwrap();
    let mut segments = Vec::new();
    let mut batches = Vec::new();
    assert!(run_until(&mut b, |c| {
        let Completion::UdpRecv(r) = c else {
            panic!("unexpected completion");
        };
        batches.push((r.data.len(), r.segment_size));
        segments.extend(r.segments().map(<[u8]>::to_vec));
        segments.len() >= count
    }));
    let expected: Vec<Vec<u8>> = payload.chunks(segment).map(<[u8]>::to_vec).collect();
    assert_eq!(segments, expected);
    eprintln!(
        "gro={} batches (len, segment_size): {batches:?}",
        b.udp_gro_enabled()
    );
    if a.udp_gso_enabled() && b.udp_gro_enabled() {
        // A GSO send over loopback reaches a GRO socket as one batch.
        assert_eq!(batches, vec![(payload.len(), Some(segment))]);
    }
}

#[test]
fn multishot_rearms_after_buffers_run_out() {
    let mut ring = udp_ring("127.0.0.1:0");
    let dest = addr_of(&ring);
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Sent while the ring is not being driven, so every buffer fills before any comes back.
    let total = 3 * usize::from(RECV_BUFFERS_COUNT);
    for i in 0..total {
        sender.send_to(&(i as u32).to_be_bytes(), dest).unwrap();
    }
    // Let the kernel run its receive work without us taking any completion (so no buffer
    // comes back) until it runs out of buffers.
    for _ in 0..1000 {
        ring.submit().unwrap();
    }
    let mut seen = vec![false; total];
    let mut received = 0usize;
    let done = run_until(&mut ring, |c| {
        let Completion::UdpRecv(r) = c else {
            panic!("unexpected completion");
        };
        for seg in r.segments() {
            let i = u32::from_be_bytes(seg.try_into().unwrap()) as usize;
            assert!(!seen[i], "datagram {i} delivered twice");
            seen[i] = true;
            received += 1;
        }
        received >= total
    });
    let stats = ring.stats();
    eprintln!("received {received}/{total}, stats: {stats:?}");
    // Every datagram is delivered or counted as dropped by the kernel.
    assert!(done || received as u64 + stats.udp_recv_kernel_drops >= total as u64);
    assert!(stats.udp_recv_no_buffers >= 1, "buffers never ran out");
    assert!(stats.udp_recv_arms >= 2, "multishot was never re-armed");
}

#[test]
fn two_rings_share_a_port_with_reuseport() {
    let mut a = udp_ring("127.0.0.1:0");
    let port = addr_of(&a).port();
    let mut b = udp_ring(&format!("127.0.0.1:{port}"));
    assert_eq!(addr_of(&b).port(), port);

    // Many source ports, so the kernel's hash spreads them over both sockets.
    let total = 64;
    for i in 0..total {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(&[i as u8], ("127.0.0.1", port)).unwrap();
    }
    let mut counts = [0usize; 2];
    for _ in 0..common::GUARD.as_millis() / 10 {
        for (n, ring) in [&mut a, &mut b].into_iter().enumerate() {
            ring.submit().unwrap();
            while let Some(c) = ring.poll_completion() {
                if let Completion::UdpRecv(r) = c {
                    counts[n] += r.segments().count();
                }
            }
        }
        if counts[0] + counts[1] >= total {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("datagrams per ring: {counts:?}");
    assert_eq!(counts[0] + counts[1], total);
}

#[test]
fn send_pool_exhaustion_is_an_error_not_growth() {
    let mut ring = udp_ring("127.0.0.1:0");
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dest = receiver.local_addr().unwrap();
    for _ in 0..SEND_SLOTS_COUNT {
        ring.send_udp(dest, None, 0, None, b"x").unwrap();
    }
    assert_eq!(
        ring.send_udp(dest, None, 0, None, b"x"),
        Err(SendError::PoolExhausted)
    );
    assert_eq!(ring.stats().udp_send_pool_exhausted, 1);
    // Draining completions frees the slots.
    let want = u64::from(SEND_SLOTS_COUNT);
    assert!(pump(&mut ring, |r| r.stats().udp_send_ok == want));
    ring.send_udp(dest, None, 0, None, b"y").unwrap();

    assert_eq!(
        ring.send_udp(dest, None, 0, Some(0), b"abc"),
        Err(SendError::InvalidSegmentSize(0))
    );
    assert!(matches!(
        ring.send_udp(dest, None, 0, None, &vec![0; 70_000]),
        Err(SendError::TooLarge { .. })
    ));
    assert!(matches!(
        ring.send_udp(dest, None, 0, Some(10), &[0; 1000]),
        Err(SendError::TooManySegments { .. })
    ));
    assert!(matches!(
        ring.send_udp("[2001:db8::1]:9".parse().unwrap(), None, 0, None, b"z"),
        Err(SendError::AddressFamily(_))
    ));
}

#[test]
fn kernel_drops_are_counted() {
    let mut ring = turnstile_uring::Ring::new(&turnstile_uring::RingConfig {
        udp_bind: Some("127.0.0.1:0".parse().unwrap()),
        udp_recv_buffer_bytes: Some(4096),
        ..Default::default()
    })
    .unwrap();
    let dest = addr_of(&ring);
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let total = 500u32;
    for i in 0..total {
        sender.send_to(&i.to_be_bytes(), dest).unwrap();
    }
    // The drop counter travels with the next queued datagram: drain, then send a marker.
    let mut received = 0u64;
    let mut marker_sent = false;
    assert!(run_until(&mut ring, |c| {
        let Completion::UdpRecv(r) = c else {
            panic!("unexpected completion");
        };
        if r.data == b"end" {
            return true;
        }
        received += r.segments().count() as u64;
        if !marker_sent {
            marker_sent = true;
            sender.send_to(b"end", dest).unwrap();
        }
        false
    }));
    let drops = ring.stats().udp_recv_kernel_drops;
    eprintln!("received {received}, kernel drops {drops}");
    assert!(drops > 0);
    assert_eq!(received + drops, u64::from(total));
}
