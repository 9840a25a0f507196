//! Prints how long a datagram (and a `Waker`) takes to reach a ring that spin-polls versus one
//! that sleeps in `wait`, for every setup mode the kernel supports, plus the cost of one idle
//! spin iteration. Print only; nothing is asserted.
//!
//! `cargo run --release -p turnstile-uring --example wake_latency [samples]`

#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use turnstile_uring::{Completion, Ring, RingConfig, SetupMode, probe};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Idle {
    Spin,
    Sleep,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn summary(name: &str, mut nanos: Vec<u64>) {
    nanos.sort_unstable();
    println!(
        "  {name:<28} n={:<5} p50={:>7.1}us p90={:>7.1}us p99={:>7.1}us",
        nanos.len(),
        percentile(&nanos, 0.5),
        percentile(&nanos, 0.9),
        percentile(&nanos, 0.99)
    );
}

/// Datagram latency: sender stamps nanoseconds since `base`; the ring thread measures arrival.
fn datagram_latency(config: RingConfig, idle: Idle, samples: usize) -> Vec<u64> {
    let base = Instant::now();
    let (addr_tx, addr_rx) = mpsc::channel();
    let receiver = std::thread::spawn(move || {
        let mut ring = Ring::new(&config).unwrap();
        addr_tx.send(ring.udp_local_addr().unwrap()).unwrap();
        let mut out = Vec::with_capacity(samples);
        let end = Instant::now() + Duration::from_secs(30);
        while out.len() < samples && Instant::now() < end {
            ring.submit().unwrap();
            while let Some(c) = ring.poll_completion() {
                if let Completion::UdpRecv(r) = c {
                    let now = base.elapsed().as_nanos() as u64;
                    let sent = u64::from_be_bytes(r.data[..8].try_into().unwrap());
                    out.push(now.saturating_sub(sent));
                }
            }
            if idle == Idle::Sleep {
                ring.wait(Some(Instant::now() + Duration::from_millis(100)))
                    .unwrap();
            }
        }
        out
    });
    let dest = addr_rx.recv().unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..samples {
        // Give the receiver time to go back to spinning or sleeping.
        std::thread::sleep(Duration::from_micros(300));
        let stamp = base.elapsed().as_nanos() as u64;
        sender.send_to(&stamp.to_be_bytes(), dest).unwrap();
    }
    receiver.join().unwrap()
}

/// Waker latency for a sleeping ring: `wake()` to `Completion::Wake`.
fn waker_latency(config: RingConfig, samples: usize) -> Vec<u64> {
    let base = Instant::now();
    let (waker_tx, waker_rx) = mpsc::channel();
    let (stamp_tx, stamp_rx) = mpsc::channel::<u64>();
    let ring_thread = std::thread::spawn(move || {
        let mut ring = Ring::new(&config).unwrap();
        waker_tx.send(ring.waker()).unwrap();
        let mut out = Vec::with_capacity(samples);
        let end = Instant::now() + Duration::from_secs(30);
        while out.len() < samples && Instant::now() < end {
            ring.submit().unwrap();
            while let Some(c) = ring.poll_completion() {
                if matches!(c, Completion::Wake) {
                    let now = base.elapsed().as_nanos() as u64;
                    for sent in stamp_rx.try_iter() {
                        out.push(now.saturating_sub(sent));
                    }
                }
            }
            ring.wait(Some(Instant::now() + Duration::from_millis(100)))
                .unwrap();
        }
        out
    });
    let waker = waker_rx.recv().unwrap();
    for _ in 0..samples {
        std::thread::sleep(Duration::from_micros(300));
        stamp_tx.send(base.elapsed().as_nanos() as u64).unwrap();
        waker.wake();
    }
    ring_thread.join().unwrap()
}

/// Nanoseconds of one idle `submit` + `poll_completion` iteration.
fn idle_spin_cost(config: &RingConfig) -> f64 {
    let mut ring = Ring::new(config).unwrap();
    let iterations = 200_000u32;
    let start = Instant::now();
    for _ in 0..iterations {
        ring.submit().unwrap();
        while ring.poll_completion().is_some() {}
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn main() {
    let samples: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let report = probe().unwrap();
    println!("{report}");
    let mut configs = vec![];
    if report.defer_taskrun {
        configs.push(("DEFER_TASKRUN", SetupMode::DeferTaskrun, None));
    }
    if report.coop_taskrun {
        configs.push(("COOP_TASKRUN", SetupMode::CoopTaskrun, None));
    }
    configs.push(("plain", SetupMode::Plain, None));
    configs.push(("SQPOLL(idle 10ms)", SetupMode::Plain, Some(10)));
    for (name, mode, sqpoll) in configs {
        let config = RingConfig {
            mode,
            sqpoll_idle_ms: sqpoll,
            udp_bind: Some("127.0.0.1:0".parse().unwrap()),
            ..RingConfig::default()
        };
        println!(
            "{name}: idle spin iteration {:.0} ns",
            idle_spin_cost(&config)
        );
        summary(
            "datagram, ring spinning",
            datagram_latency(config.clone(), Idle::Spin, samples),
        );
        summary(
            "datagram, ring sleeping",
            datagram_latency(config.clone(), Idle::Sleep, samples),
        );
        summary("waker, ring sleeping", waker_latency(config, samples));
    }
}
