//! Probe, Unix stream connections, timer, wake-up and waiting.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::{GUARD, TempDir, run_until};
use turnstile_uring::{Completion, Ring, RingConfig, SetupMode, Token, UdsError, probe};

fn plain_ring() -> Ring {
    Ring::new(&RingConfig::default()).unwrap()
}

#[test]
fn probe_succeeds_here() {
    let report = probe().unwrap();
    eprintln!("{report}");
    assert_ne!(report.auto_mode, SetupMode::Auto);
    let ring = plain_ring();
    assert_eq!(ring.setup_mode(), report.auto_mode);
}

#[test]
fn every_setup_mode_the_kernel_has_works() {
    let report = probe().unwrap();
    let modes = [
        (SetupMode::DeferTaskrun, report.defer_taskrun),
        (SetupMode::CoopTaskrun, report.coop_taskrun),
        (SetupMode::Plain, true),
    ];
    for (mode, available) in modes {
        if !available {
            continue;
        }
        let mut ring = Ring::new(&RingConfig {
            mode,
            ..RingConfig::default()
        })
        .unwrap();
        assert_eq!(ring.setup_mode(), mode);
        // A timer completes in every mode (exercises submit + wait + poll).
        ring.set_timer(Some(Instant::now()));
        assert!(run_until(&mut ring, |c| matches!(c, Completion::Timer)));
    }
}

#[test]
fn timer_fires_once_for_the_nearest_deadline() {
    let mut ring = plain_ring();
    let start = Instant::now();
    // Later, then earlier: the earlier one wins, and fires once.
    ring.set_timer(Some(start + Duration::from_secs(3600)));
    ring.submit().unwrap();
    ring.set_timer(Some(start + Duration::from_millis(20)));
    assert!(run_until(&mut ring, |c| matches!(c, Completion::Timer)));
    assert!(Instant::now() >= start + Duration::from_millis(20));
    assert_eq!(ring.timer_deadline(), None);

    // Earlier, then later: fires for the later deadline only (not when the first expires).
    let start = Instant::now();
    ring.set_timer(Some(start + Duration::from_millis(5)));
    ring.submit().unwrap();
    ring.set_timer(Some(start + Duration::from_millis(40)));
    assert!(run_until(&mut ring, |c| matches!(c, Completion::Timer)));
    assert!(Instant::now() >= start + Duration::from_millis(40));
    assert_eq!(ring.stats().timers_fired, 2);

    // Cancelled: nothing fires.
    ring.set_timer(Some(Instant::now() + Duration::from_millis(5)));
    ring.submit().unwrap();
    ring.set_timer(None);
    let until = Instant::now() + Duration::from_millis(50);
    while Instant::now() < until {
        ring.wait(Some(until)).unwrap();
        if let Some(c) = ring.poll_completion() {
            panic!("unexpected completion {c:?}");
        }
    }
    assert_eq!(ring.stats().timers_fired, 2);
}

#[test]
fn wait_with_a_deadline_returns() {
    let mut ring = plain_ring();
    let deadline = Instant::now() + Duration::from_millis(30);
    ring.wait(Some(deadline)).unwrap();
    // Past deadlines return at once.
    ring.wait(Some(Instant::now() - Duration::from_millis(1)))
        .unwrap();
    assert!(ring.poll_completion().is_none());
}

#[test]
fn waker_from_another_thread_ends_wait() {
    let mut ring = plain_ring();
    let waker = ring.waker();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        for i in 0..3 {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(i).unwrap();
            waker.wake();
        }
    });
    let mut got = Vec::new();
    let end = Instant::now() + GUARD;
    while got.len() < 3 && Instant::now() < end {
        ring.submit().unwrap();
        while let Some(c) = ring.poll_completion() {
            assert!(matches!(c, Completion::Wake), "unexpected {c:?}");
        }
        // Check the queue after draining completions, then sleep with no deadline but the
        // guard: only the waker can end this wait early.
        got.extend(rx.try_iter());
        if got.len() < 3 {
            ring.wait(Some(end)).unwrap();
        }
    }
    thread.join().unwrap();
    assert_eq!(got, vec![0, 1, 2]);
    assert!(ring.stats().wakeups >= 1);
}

#[test]
fn wake_before_wait_is_not_lost() {
    let mut ring = plain_ring();
    ring.waker().wake();
    let start = Instant::now();
    ring.wait(Some(start + GUARD)).unwrap();
    assert!(matches!(ring.poll_completion(), Some(Completion::Wake)));
    assert!(start.elapsed() < GUARD);
}

/// Echo server on a Unix socket: echoes every connection until EOF.
fn echo_server(listener: UnixListener, connections: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 8192];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        }
    })
}

fn expect_connected(ring: &mut Ring, token: Token) {
    assert!(run_until(ring, |c| match c {
        Completion::UdsConnected { token: t, result } => {
            assert_eq!(t, token);
            result.unwrap();
            true
        }
        other => panic!("unexpected {other:?}"),
    }));
}

#[test]
fn uds_connect_write_read_close_against_an_echo_server() {
    let dir = TempDir::new();
    let path = dir.0.join("echo.sock");
    let server = echo_server(UnixListener::bind(&path).unwrap(), 1);
    let mut ring = plain_ring();
    let token = ring.uds_connect(&path).unwrap();
    // Writes may be queued before the connect completes.
    ring.uds_write(token, b"hello ").unwrap();
    expect_connected(&mut ring, token);
    // SO_PEERCRED names the process that made the listener: this one.
    let (pid, uid, _gid) = ring.uds_peer_cred(token).unwrap();
    assert_eq!(pid as u32, std::process::id());
    assert_eq!(
        uid,
        std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap()
    );
    ring.uds_read(token).unwrap();

    // Much more than the socket buffer: exercises short writes and queue refills.
    let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let mut expected = b"hello ".to_vec();
    expected.extend_from_slice(&big);
    let mut to_write = &big[..];
    let mut echoed = Vec::new();
    let end = Instant::now() + GUARD;
    while echoed.len() < expected.len() && Instant::now() < end {
        while !to_write.is_empty() {
            let n = to_write.len().min(64 * 1024);
            match ring.uds_write(token, &to_write[..n]) {
                Ok(()) => to_write = &to_write[n..],
                Err(UdsError::WriteQueueFull { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        ring.submit().unwrap();
        while let Some(c) = ring.poll_completion() {
            match c {
                Completion::UdsData { token: t, data } => {
                    assert_eq!(t, token);
                    echoed.extend_from_slice(data);
                }
                Completion::UdsWritten { token: t, result } => {
                    assert_eq!(t, token);
                    assert!(result.unwrap() > 0);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        ring.wait(Some(Instant::now() + Duration::from_millis(50)))
            .unwrap();
    }
    assert!(echoed == expected, "echo differs ({} bytes)", echoed.len());
    assert_eq!(ring.uds_queued_bytes(token), Some(0));

    ring.uds_close(token).unwrap();
    assert!(run_until(&mut ring, |c| match c {
        Completion::UdsClosed { token: t, error } => {
            assert_eq!(t, token);
            assert!(error.is_none(), "{error:?}");
            true
        }
        Completion::UdsWritten { .. } => false,
        other => panic!("unexpected {other:?}"),
    }));
    // The token is dead now.
    assert!(matches!(
        ring.uds_write(token, b"x"),
        Err(UdsError::UnknownToken(_))
    ));
    server.join().unwrap();
}

#[test]
fn uds_peer_close_is_reported_and_connect_failure_releases_the_token() {
    let dir = TempDir::new();
    let path = dir.0.join("once.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(b"bye").unwrap();
        // Dropping the stream closes it.
    });
    let mut ring = plain_ring();
    let token = ring.uds_connect(&path).unwrap();
    expect_connected(&mut ring, token);
    ring.uds_read(token).unwrap();
    let mut data = Vec::new();
    assert!(run_until(&mut ring, |c| match c {
        Completion::UdsData { data: d, .. } => {
            data.extend_from_slice(d);
            false
        }
        Completion::UdsClosed { token: t, error } => {
            assert_eq!(t, token);
            assert!(error.is_none());
            true
        }
        other => panic!("unexpected {other:?}"),
    }));
    assert_eq!(data, b"bye");
    server.join().unwrap();

    let missing = ring.uds_connect(&dir.0.join("missing.sock")).unwrap();
    assert!(run_until(&mut ring, |c| match c {
        Completion::UdsConnected { token, result } => {
            assert_eq!(token, missing);
            assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::NotFound);
            true
        }
        other => panic!("unexpected {other:?}"),
    }));
    assert!(ring.uds_close(missing).is_err());
    assert!(matches!(
        ring.uds_connect(&dir.0.join("x".repeat(200))),
        Err(UdsError::PathTooLong { .. })
    ));
}

#[test]
fn uds_close_while_reading_cancels_cleanly() {
    let dir = TempDir::new();
    let path = dir.0.join("idle.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        // Wait for the client to go away.
        let mut buf = [0u8; 16];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    });
    let mut ring = plain_ring();
    let token = ring.uds_connect(&path).unwrap();
    expect_connected(&mut ring, token);
    ring.uds_read(token).unwrap();
    ring.submit().unwrap();
    ring.uds_close(token).unwrap();
    assert!(run_until(&mut ring, |c| match c {
        Completion::UdsClosed { token: t, error } => {
            assert_eq!(t, token);
            assert!(error.is_none());
            true
        }
        other => panic!("unexpected {other:?}"),
    }));
    server.join().unwrap();
}

#[test]
fn dropping_a_busy_ring_does_not_hang() {
    let dir = TempDir::new();
    let path = dir.0.join("busy.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut ring = Ring::new(&RingConfig {
        udp_bind: Some("127.0.0.1:0".parse().unwrap()),
        ..RingConfig::default()
    })
    .unwrap();
    let token = ring.uds_connect(&path).unwrap();
    expect_connected(&mut ring, token);
    ring.uds_read(token).unwrap();
    ring.set_timer(Some(Instant::now() + Duration::from_secs(3600)));
    ring.submit().unwrap();
    let start = Instant::now();
    drop(ring);
    assert!(start.elapsed() < GUARD);
    drop(listener);
}
