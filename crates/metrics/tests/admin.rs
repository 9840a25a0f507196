//! The admin endpoint over loopback.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Spec, named, parse_exposition, record};
use turnstile_metrics::limits::{
    ADMIN_CONNECTIONS_MAX, ADMIN_READ_TIMEOUT_MS, ADMIN_REQUEST_BYTES_MAX,
};
use turnstile_metrics::{AdminHandle, AdminServer, BuildInfo, HealthSnapshot, Registry};

const WAIT: Duration = Duration::from_secs(10);

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

fn read_reply(mut s: TcpStream) -> Reply {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&raw)))
        + 4;
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let reply = Reply {
        status,
        body: raw[end..].to_vec(),
        head,
    };
    assert_eq!(reply.header("Connection"), Some("close"));
    reply
}

fn send(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    read_reply(s)
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    send(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n").as_bytes(),
    )
}

struct Fixture {
    handle: AdminHandle,
    registry: Arc<Registry>,
    draining: Arc<AtomicBool>,
}

fn start() -> Fixture {
    let registry = Arc::new(Registry::new(
        2,
        vec!["waf".to_owned()],
        BuildInfo {
            version: "0.1.0".to_owned(),
            revision: String::new(),
        },
    ));
    let draining = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&draining);
    let handle = AdminServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::clone(&registry),
        Arc::new(move || {
            if d.load(Ordering::Relaxed) {
                HealthSnapshot::Unavailable("draining: 3 connections left".to_owned())
            } else {
                HealthSnapshot::Ok
            }
        }),
    )
    .unwrap();
    Fixture {
        handle,
        registry,
        draining,
    }
}

#[test]
fn metrics_and_healthz() {
    let f = start();
    let addr = f.handle.local_addr();
    f.registry.shards[1].requests_total.add(42);
    record(
        &f.registry.agents,
        "waf",
        &Spec::default().counter("agent_requests_total", vec![], 9),
    )
    .unwrap();

    let r = get(addr, "/metrics?name[]=x");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(
        r.header("Content-Length"),
        Some(r.body.len().to_string().as_str())
    );
    let samples = parse_exposition(r.text());
    let req = named(&samples, "turnstile_requests_total");
    assert_eq!(req[1].value, "42");
    assert_eq!(
        named(&samples, "agent_requests_total")[0].label("agent_id"),
        Some("waf")
    );

    let r = send(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert!(
        r.header("Content-Length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 100
    );

    let r = get(addr, "/healthz");
    assert_eq!((r.status, r.text()), (200, "ok\n"));
    f.draining.store(true, Ordering::Relaxed);
    let r = get(addr, "/healthz");
    assert_eq!(
        (r.status, r.text()),
        (503, "draining: 3 connections left\n")
    );
    f.handle.stop();
}

#[test]
fn not_found_bad_requests_and_wrong_methods() {
    let f = start();
    let addr = f.handle.local_addr();
    assert_eq!(get(addr, "/").status, 404);
    assert_eq!(get(addr, "/metrics/x").status, 404);
    assert_eq!(send(addr, b"POST /nope HTTP/1.1\r\n\r\n").status, 404);
    let r = send(
        addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    for garbage in [
        &b"hello\r\n\r\n"[..],
        b"GET /metrics\r\n\r\n",
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        b"\x00\x01\x02\xff\xfe\n\n",
        b"GET /\xc3\x28 HTTP/1.1\r\n\r\n",
    ] {
        let r = send(addr, garbage);
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(garbage));
    }
    // A client that sends its request and half-closes still gets the answer.
    let mut s = connect(addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_reply(s).status, 200);
    // A client that closes before finishing its head gets nothing and costs nothing.
    let mut s = connect(addr);
    s.write_all(b"GET /metr").unwrap();
    drop(s);
    assert_eq!(get(addr, "/healthz").status, 200);
    f.handle.stop();
}

#[test]
fn oversized_request_is_refused() {
    let f = start();
    let addr = f.handle.local_addr();
    let mut req = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while req.len() <= ADMIN_REQUEST_BYTES_MAX {
        req.extend_from_slice(
            b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        );
    }
    req.extend_from_slice(b"\r\n");
    let r = send(addr, &req);
    assert_eq!(r.status, 431);
    // One that never ends its head is refused as soon as it passes the limit.
    let r = send(addr, &vec![b'a'; ADMIN_REQUEST_BYTES_MAX * 3]);
    assert_eq!(r.status, 431);
    assert_eq!(get(addr, "/healthz").status, 200);
    f.handle.stop();
}

#[test]
fn slow_clients_time_out_and_connections_are_bounded() {
    let f = start();
    let addr = f.handle.local_addr();
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..ADMIN_CONNECTIONS_MAX)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    // Let the server accept them all, then one more is refused.
    std::thread::sleep(Duration::from_millis(200));
    let r = get(addr, "/healthz");
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "too many admin connections\n");

    // The idle ones get 408 once the read timeout passes.
    let last = idle.pop().unwrap();
    let r = read_reply(last);
    assert_eq!(r.status, 408);
    assert!(started.elapsed() >= Duration::from_millis(ADMIN_READ_TIMEOUT_MS));
    for s in idle {
        assert_eq!(read_reply(s).status, 408);
    }
    // Their slots free up once the server sees them closed (at most ADMIN_LINGER_MS later).
    let t = Instant::now();
    while get(addr, "/healthz").status != 200 {
        assert!(t.elapsed() < Duration::from_secs(2), "slots not freed");
        std::thread::sleep(Duration::from_millis(20));
    }
    f.handle.stop();
}

#[test]
fn panicking_health_callback_gives_500_and_server_survives() {
    let registry = Arc::new(Registry::new(1, vec![], BuildInfo::default()));
    let handle = AdminServer::start(
        "127.0.0.1:0".parse().unwrap(),
        registry,
        Arc::new(|| panic!("health check exploded")),
    )
    .unwrap();
    let addr = handle.local_addr();
    assert_eq!(get(addr, "/healthz").status, 500);
    assert_eq!(get(addr, "/metrics").status, 200);
    handle.stop();
}

#[test]
fn stop_ends_the_thread_and_closes_the_listener() {
    let f = start();
    let addr = f.handle.local_addr();
    // An open, silent connection does not hold stop up.
    let _open = connect(addr);
    assert_eq!(get(addr, "/healthz").status, 200);
    let t = Instant::now();
    f.handle.stop();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(TcpStream::connect(addr).is_err());

    // Dropping the handle stops it as well.
    let f = start();
    let addr = f.handle.local_addr();
    drop(f);
    assert!(TcpStream::connect(addr).is_err());

    // A port in use is an error, not a panic.
    let f = start();
    let err = AdminServer::start(
        f.handle.local_addr(),
        Arc::clone(&f.registry),
        Arc::new(|| HealthSnapshot::Ok),
    )
    .unwrap_err();
    assert!(err.to_string().contains("admin endpoint"), "{err}");
}
