//! Unit tests that need crate internals (fault injection, shutdown accounting).

use std::net::UdpSocket;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use crate::{Completion, Ring, RingConfig};

const GUARD: Duration = Duration::from_secs(20);

fn udp_ring() -> Ring {
    Ring::new(&RingConfig {
        udp_bind: Some("127.0.0.1:0".parse().unwrap()),
        ..RingConfig::default()
    })
    .unwrap()
}

fn pump(ring: &mut Ring, done: impl Fn(&Ring) -> bool) {
    let end = Instant::now() + GUARD;
    while !done(ring) {
        assert!(Instant::now() < end, "guard expired");
        ring.submit().unwrap();
        while ring.poll_completion().is_some() {}
        ring.wait(Some(Instant::now() + Duration::from_millis(10)))
            .unwrap();
    }
}

#[test]
fn gso_refused_with_eio_is_resent_segment_by_segment() {
    let mut ring = udp_ring();
    assert!(ring.udp_gso_enabled(), "test needs UDP GSO");
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_read_timeout(Some(GUARD)).unwrap();
    let payload: Vec<u8> = (0..4500u32).map(|i| i as u8).collect();
    ring.inject_gso_eio();
    ring.send_udp(
        receiver.local_addr().unwrap(),
        None,
        0b10,
        Some(1000),
        &payload,
    )
    .unwrap();
    pump(&mut ring, |r| r.stats().udp_send_ok == 5);
    let stats = ring.stats();
    assert_eq!(stats.udp_send_gso_fallbacks, 1);
    assert_eq!(stats.udp_send_errors, 0);
    assert!(!ring.udp_gso_enabled(), "GSO stays off after EIO");
    let mut buf = [0u8; 2048];
    for expected in payload.chunks(1000) {
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], expected);
    }

    // Later GSO-style sends are split without trying GSO again.
    ring.send_udp(
        receiver.local_addr().unwrap(),
        None,
        0,
        Some(700),
        &payload[..1400],
    )
    .unwrap();
    pump(&mut ring, |r| r.stats().udp_send_ok == 7);
    for expected in payload[..1400].chunks(700) {
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], expected);
    }
}

#[test]
fn shutdown_drains_every_operation() {
    let dir = std::env::temp_dir().join(format!("turnstile-uring-unit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();

    let mut ring = udp_ring();
    let token = ring.uds_connect(&path).unwrap();
    let mut connected = false;
    let end = Instant::now() + GUARD;
    while !connected && Instant::now() < end {
        ring.submit().unwrap();
        while let Some(c) = ring.poll_completion() {
            if let Completion::UdsConnected { result, .. } = c {
                result.unwrap();
                connected = true;
            }
        }
        ring.wait(Some(Instant::now() + Duration::from_millis(10)))
            .unwrap();
    }
    ring.uds_read(token).unwrap();
    ring.set_timer(Some(Instant::now() + Duration::from_secs(3600)));
    ring.send_udp("127.0.0.1:9".parse().unwrap(), None, 0, None, b"x")
        .unwrap();
    ring.submit().unwrap();
    // Receive, wake-up read, socket read and timer are all in flight.
    assert!(ring.inflight_for_test() >= 4);
    assert!(ring.drain_for_test(), "operations left in flight");
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
}
