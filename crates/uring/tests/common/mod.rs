//! Helpers shared by the integration tests: loopback rings and a bounded event loop.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use turnstile_uring::{Completion, Ring, RingConfig};

/// Upper bound for any loop in a test: only a hang guard, never a timing assertion.
pub const GUARD: Duration = Duration::from_secs(20);

/// A ring with a UDP socket bound to `addr`.
pub fn udp_ring(addr: &str) -> Ring {
    Ring::new(&RingConfig {
        udp_bind: Some(addr.parse().unwrap()),
        udp_recv_buffer_bytes: Some(8 << 20),
        ..RingConfig::default()
    })
    .unwrap()
}

/// The UDP address of a ring.
pub fn addr_of(ring: &Ring) -> SocketAddr {
    ring.udp_local_addr().unwrap()
}

/// Runs the ring until `f` returns true for a completion, or the guard expires (then false).
pub fn run_until(ring: &mut Ring, mut f: impl FnMut(Completion<'_>) -> bool) -> bool {
    let end = Instant::now() + GUARD;
    loop {
        ring.submit().unwrap();
        while let Some(c) = ring.poll_completion() {
            if f(c) {
                return true;
            }
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        ring.wait(Some((now + Duration::from_millis(100)).min(end)))
            .unwrap();
    }
}

/// Drives the ring, discarding completions, until `done(ring)` holds or the guard expires.
pub fn pump(ring: &mut Ring, done: impl Fn(&Ring) -> bool) -> bool {
    let end = Instant::now() + GUARD;
    while !done(ring) {
        if Instant::now() >= end {
            return false;
        }
        ring.submit().unwrap();
        while ring.poll_completion().is_some() {}
        if !done(ring) {
            ring.wait(Some(Instant::now() + Duration::from_millis(10)))
                .unwrap();
        }
    }
    true
}

/// Whether IPv6 loopback is usable here (some containers lack it).
pub fn ipv6_loopback() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "turnstile-uring-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
