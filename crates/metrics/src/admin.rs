//! The admin HTTP endpoint: one thread, a non-blocking std `TcpListener` and non-blocking
//! connections polled in turn, sleeping [`ADMIN_BUSY_POLL_MS`] / [`ADMIN_IDLE_POLL_MS`] between
//! polls. One response per connection (`Connection: close`).
//!
//! Routes: `GET`/`HEAD /metrics` → 200 with the text exposition; `GET`/`HEAD /healthz` → 200 `ok`
//! or 503 with the reason; another method on those → 405; any other path → 404; a malformed head
//! → 400; a head over [`ADMIN_REQUEST_BYTES_MAX`] → 431; a head not complete within
//! [`ADMIN_READ_TIMEOUT_MS`] → 408; a connection over [`ADMIN_CONNECTIONS_MAX`] → 503 without
//! reading its request (up to as many again; past that it is closed at once).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::MetricsError;
use crate::http::{METRICS_CONTENT_TYPE, head_end, parse_head, response, simple};
use crate::limits::{
    ADMIN_BUSY_POLL_MS, ADMIN_CONNECTIONS_MAX, ADMIN_IDLE_POLL_MS, ADMIN_LINGER_MS,
    ADMIN_READ_TIMEOUT_MS, ADMIN_REQUEST_BYTES_MAX, ADMIN_WRITE_TIMEOUT_MS,
};
use crate::registry::Registry;

/// What `/healthz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthSnapshot {
    /// Serving: `200 ok`.
    Ok,
    /// Not taking traffic (draining, starting): `503` with this reason as the body.
    Unavailable(String),
}

/// The callback `/healthz` asks on every request.
pub type HealthFn = Arc<dyn Fn() -> HealthSnapshot + Send + Sync>;

/// Starts the admin endpoint.
#[derive(Debug)]
pub struct AdminServer;

impl AdminServer {
    /// Binds `addr` and serves `registry` and `health` from a new thread until
    /// [`AdminHandle::stop`] (or the handle is dropped).
    pub fn start(
        addr: SocketAddr,
        registry: Arc<Registry>,
        health: HealthFn,
    ) -> Result<AdminHandle, MetricsError> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let server = Server {
            listener,
            registry,
            health,
            stop: Arc::clone(&stop),
            conns: Vec::with_capacity(2 * ADMIN_CONNECTIONS_MAX),
            body: String::new(),
        };
        let thread = std::thread::Builder::new()
            .name("turnstile-admin".into())
            .spawn(move || server.run())?;
        Ok(AdminHandle {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }
}

/// A running admin endpoint. Dropping it stops it too.
#[derive(Debug)]
pub struct AdminHandle {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminHandle {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the thread (within about [`ADMIN_IDLE_POLL_MS`]), closing open connections, and
    /// waits for it. The listening socket is closed when this returns.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // A panic on the admin thread was already reported by the panic hook.
            let _ = t.join();
        }
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Server {
    listener: TcpListener,
    registry: Arc<Registry>,
    health: HealthFn,
    stop: Arc<AtomicBool>,
    conns: Vec<Conn>,
    /// Rendering buffer, reused across scrapes.
    body: String,
}

enum State {
    /// Reading the request head.
    Reading { buf: Vec<u8> },
    /// Writing the response from `pos`.
    Writing { out: Vec<u8>, pos: usize },
    /// Response sent and write side shut; discarding what the client still sends until EOF.
    Draining,
}

struct Conn {
    stream: TcpStream,
    state: State,
    deadline: Instant,
    /// Accepted over [`ADMIN_CONNECTIONS_MAX`] only to be answered `503`.
    refusal: bool,
}

/// What a poll of a connection decided.
enum Next {
    Keep { progressed: bool },
    Close,
}

impl Server {
    fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            let mut progressed = self.accept();
            let now = Instant::now();
            let mut i = 0;
            while i < self.conns.len() {
                match self.poll(i, now) {
                    Next::Keep { progressed: p } => {
                        progressed |= p;
                        i += 1;
                    }
                    Next::Close => {
                        progressed = true;
                        self.conns.swap_remove(i);
                    }
                }
            }
            if !progressed {
                let ms = if self.conns.is_empty() {
                    ADMIN_IDLE_POLL_MS
                } else {
                    ADMIN_BUSY_POLL_MS
                };
                std::thread::sleep(Duration::from_millis(ms));
            }
        }
    }

    /// Accepts every pending connection; those over the limit get a best-effort 503.
    fn accept(&mut self) -> bool {
        let mut progressed = false;
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // WouldBlock, or a transient failure (EMFILE, ECONNABORTED): try next poll.
                Err(_) => return progressed,
            };
            progressed = true;
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let serving = self.conns.iter().filter(|c| !c.refusal).count();
            if serving < ADMIN_CONNECTIONS_MAX {
                self.conns.push(Conn {
                    stream,
                    state: State::Reading {
                        buf: Vec::with_capacity(1024),
                    },
                    deadline: Instant::now() + Duration::from_millis(ADMIN_READ_TIMEOUT_MS),
                    refusal: false,
                });
            } else if self.conns.len() - serving < ADMIN_CONNECTIONS_MAX {
                // Answered like any other response (write, then drain), so the client reads the
                // 503 rather than a reset.
                let mut out = Vec::new();
                simple(&mut out, 503, "too many admin connections", false);
                let mut conn = Conn {
                    stream,
                    state: State::Draining,
                    deadline: Instant::now(),
                    refusal: true,
                };
                conn.start_writing(out);
                self.conns.push(conn);
            }
            // Past both limits the connection is simply closed.
        }
    }

    fn poll(&mut self, i: usize, now: Instant) -> Next {
        let conn = &mut self.conns[i];
        let timed_out = now >= conn.deadline;
        match &mut conn.state {
            State::Reading { buf } => {
                if timed_out {
                    let mut out = Vec::new();
                    simple(&mut out, 408, "request timeout", false);
                    return conn.start_writing(out);
                }
                match read_some(&mut conn.stream, buf) {
                    Err(_) | Ok(ReadOutcome::Eof) => Next::Close,
                    Ok(ReadOutcome::WouldBlock) => Next::Keep { progressed: false },
                    Ok(ReadOutcome::Data) => {
                        let out = match head_end(buf) {
                            Some(end) if end <= ADMIN_REQUEST_BYTES_MAX => {
                                let buf = std::mem::take(buf);
                                self.respond(&buf[..end])
                            }
                            _ if buf.len() > ADMIN_REQUEST_BYTES_MAX => {
                                let mut out = Vec::new();
                                simple(&mut out, 431, "request head too large", false);
                                out
                            }
                            _ => return Next::Keep { progressed: true },
                        };
                        self.conns[i].start_writing(out)
                    }
                }
            }
            State::Writing { out, pos } => {
                if timed_out {
                    return Next::Close;
                }
                let mut progressed = false;
                while *pos < out.len() {
                    match (&conn.stream).write(&out[*pos..]) {
                        Ok(0) => return Next::Close,
                        Ok(n) => {
                            *pos += n;
                            progressed = true;
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            return Next::Keep { progressed };
                        }
                        Err(_) => return Next::Close,
                    }
                }
                let _ = conn.stream.shutdown(Shutdown::Write);
                conn.state = State::Draining;
                conn.deadline = now + Duration::from_millis(ADMIN_LINGER_MS);
                Next::Keep { progressed: true }
            }
            State::Draining => {
                if timed_out {
                    return Next::Close;
                }
                // At most 64 KiB per poll, so a client that keeps sending cannot hold the
                // thread; the linger deadline ends it.
                let mut sink = [0u8; 1024];
                for _ in 0..64 {
                    match (&conn.stream).read(&mut sink) {
                        Ok(0) => return Next::Close,
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            return Next::Keep { progressed: false };
                        }
                        Err(_) => return Next::Close,
                    }
                }
                Next::Keep { progressed: true }
            }
        }
    }

    /// The full response to a complete request head.
    fn respond(&mut self, head: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(req) = parse_head(head) else {
            simple(&mut out, 400, "bad request", false);
            return out;
        };
        let head_only = req.method == "HEAD";
        let known = matches!(req.path, "/metrics" | "/healthz");
        if !known {
            simple(&mut out, 404, "not found", head_only);
            return out;
        }
        if !matches!(req.method, "GET" | "HEAD") {
            let body = b"method not allowed\n";
            response(
                &mut out,
                405,
                crate::http::TEXT_CONTENT_TYPE,
                "Allow: GET, HEAD\r\n",
                body,
                false,
            );
            return out;
        }
        if req.path == "/metrics" {
            self.body.clear();
            let registry = &self.registry;
            let body = &mut self.body;
            if catch_unwind(AssertUnwindSafe(|| registry.render(body))).is_err() {
                simple(&mut out, 500, "rendering metrics failed", head_only);
                return out;
            }
            response(
                &mut out,
                200,
                METRICS_CONTENT_TYPE,
                "",
                self.body.as_bytes(),
                head_only,
            );
            return out;
        }
        match catch_unwind(AssertUnwindSafe(|| (self.health)())) {
            Ok(HealthSnapshot::Ok) => simple(&mut out, 200, "ok", head_only),
            Ok(HealthSnapshot::Unavailable(reason)) => simple(&mut out, 503, &reason, head_only),
            Err(_) => simple(&mut out, 500, "health check failed", head_only),
        }
        out
    }
}

impl Conn {
    fn start_writing(&mut self, out: Vec<u8>) -> Next {
        self.state = State::Writing { out, pos: 0 };
        self.deadline = Instant::now() + Duration::from_millis(ADMIN_WRITE_TIMEOUT_MS);
        Next::Keep { progressed: true }
    }
}

enum ReadOutcome {
    Data,
    WouldBlock,
    Eof,
}

/// Reads what is available into `buf`, never growing it past one chunk over
/// [`ADMIN_REQUEST_BYTES_MAX`].
fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<ReadOutcome> {
    let mut chunk = [0u8; 1024];
    let mut got = false;
    while buf.len() <= ADMIN_REQUEST_BYTES_MAX {
        match stream.read(&mut chunk) {
            Ok(0) if got => return Ok(ReadOutcome::Data),
            Ok(0) => return Ok(ReadOutcome::Eof),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                got = true;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return Ok(if got {
                    ReadOutcome::Data
                } else {
                    ReadOutcome::WouldBlock
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(ReadOutcome::Data)
}
