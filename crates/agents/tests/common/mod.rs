//! A minimal turnstile for tests: starts agent binaries on temporary sockets and speaks agent
//! protocol v2 to them over std `UnixStream`s. Every wait is bounded.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use turnstile_wire::turnstile_capnp::{
    self as s, agent_to_proxy, config_update_request, health_status, proxy_to_agent, verdict,
};
use turnstile_wire::{FrameKind, FrameWriter, Message, split_frame};

/// Default bound on every wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running agent binary on a temporary socket; killed on drop.
pub struct AgentProc {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    log: PathBuf,
}

impl AgentProc {
    /// Starts `bin` with `--socket` and `args`; `config` is written to a file passed as `--config`.
    pub fn start(bin: &str, args: &[&str], config: Option<&str>) -> AgentProc {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let log = dir.path().join("stderr.log");
        let mut cmd = Command::new(bin);
        cmd.arg("--socket").arg(&socket).args(args);
        if let Some(text) = config {
            let file = dir.path().join("agent.toml");
            std::fs::write(&file, text).unwrap();
            cmd.arg("--config").arg(file);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut p = AgentProc {
            child,
            dir,
            socket,
            log,
        };
        let start = Instant::now();
        while UnixStream::connect(&p.socket).is_err() {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("{bin} exited early ({status}):\n{}", p.stderr());
            }
            assert!(
                start.elapsed() < WAIT,
                "{bin} never listened:\n{}",
                p.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        p
    }

    /// A new connection, handshaken.
    pub fn connect(&self) -> (Client, Caps) {
        let mut c = Client::connect(&self.socket);
        let caps = c.handshake();
        (c, caps)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit, at most `max`.
    pub fn wait_exit(&mut self, max: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < max,
                "agent did not exit:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The capabilities of a `handshake.accepted`.
#[derive(Debug, Default)]
pub struct Caps {
    pub protocol_version: u32,
    pub agent_id: String,
    pub events: Vec<s::EventType>,
    pub max_body_bytes: u64,
    pub streaming_body: bool,
    pub cancellation: bool,
    pub concurrency: u32,
    pub report_interval_ms: u32,
    pub metrics_export: bool,
    pub capnp: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow,
    Block {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    Redirect {
        location: String,
        status: u16,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resp {
    pub cid: u64,
    pub verdict: Verdict,
    /// ("add" | "set" | "remove", name, value).
    pub request_ops: Vec<(String, String, String)>,
    pub response_ops: Vec<(String, String, String)>,
    pub tags: Vec<String>,
    pub rule_ids: Vec<String>,
    pub reasons: Vec<String>,
    pub need_more: bool,
}

impl Resp {
    pub fn status(&self) -> u16 {
        match &self.verdict {
            Verdict::Allow => 0,
            Verdict::Block { status, .. } | Verdict::Redirect { status, .. } => *status,
        }
    }
    pub fn block_header(&self, name: &str) -> Option<String> {
        match &self.verdict {
            Verdict::Block { headers, .. } => headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// "healthy", "degraded", "draining", "unhealthy".
    pub state: String,
    pub in_flight: u32,
    pub processed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// Capabilities are in `Client::caps`.
    Accepted,
    Rejected(String),
    Response(Resp),
    Health(Health),
    Metrics(Vec<(String, u64)>),
    ConfigError {
        error: String,
        field: String,
    },
    ConfigUpdate(String),
    Flow {
        cid: u64,
        action: String,
    },
    Log(String),
}

/// Why a receive ended without a frame.
#[derive(Debug, PartialEq)]
pub enum RecvError {
    Timeout,
    Closed,
    Bad(String),
}

pub struct Client {
    pub stream: UnixStream,
    buf: Vec<u8>,
    writer: FrameWriter<'static>,
    pub caps: Caps,
    /// Health reports seen while waiting for something else.
    pub healths: Vec<Health>,
    pub metrics: Vec<Vec<(String, u64)>>,
}

fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> String {
    t.unwrap().to_str().unwrap().to_owned()
}

fn lossy(d: capnp::Result<&[u8]>) -> String {
    String::from_utf8_lossy(d.unwrap()).into_owned()
}

fn ops(list: capnp::struct_list::Reader<'_, s::header_op::Owned>) -> Vec<(String, String, String)> {
    list.iter()
        .map(|op| match op.which().unwrap() {
            s::header_op::Add(h) => {
                let h = h.unwrap();
                ("add".into(), lossy(h.get_name()), lossy(h.get_value()))
            }
            s::header_op::Set(h) => {
                let h = h.unwrap();
                ("set".into(), lossy(h.get_name()), lossy(h.get_value()))
            }
            s::header_op::Remove(n) => ("remove".into(), lossy(n), String::new()),
        })
        .collect()
}

fn texts(l: capnp::Result<capnp::text_list::Reader<'_>>) -> Vec<String> {
    l.unwrap().iter().map(text).collect()
}

/// A request for [`Client::request`].
#[derive(Debug, Clone, Default)]
pub struct Req<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub client_ip: [u8; 4],
}

impl<'a> Req<'a> {
    pub fn get(path: &'a str) -> Self {
        Req {
            method: "GET",
            path,
            query: "",
            headers: &[],
            client_ip: [192, 0, 2, 1],
        }
    }
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        Client {
            stream: UnixStream::connect(path).unwrap(),
            buf: Vec::new(),
            writer: FrameWriter::with_static_scratch(),
            caps: Caps::default(),
            healths: Vec::new(),
            metrics: Vec::new(),
        }
    }

    /// Encodes one ProxyToAgent frame.
    pub fn frame(&mut self, cid: u64, fill: impl FnOnce(proxy_to_agent::Builder<'_>)) -> Vec<u8> {
        let mut out = Vec::new();
        self.writer
            .write::<proxy_to_agent::Owned, _>(&mut out, |mut m| {
                m.set_correlation_id(cid);
                fill(m);
                Ok(())
            })
            .unwrap();
        out
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, cid: u64, fill: impl FnOnce(proxy_to_agent::Builder<'_>)) {
        let f = self.frame(cid, fill);
        self.send_raw(&f);
    }

    pub fn send_handshake(&mut self, versions: &[u32]) {
        self.send(0, |m| {
            let mut h = m.init_handshake();
            let mut v = h.reborrow().init_supported_versions(versions.len() as u32);
            for (i, x) in versions.iter().enumerate() {
                v.set(i as u32, *x);
            }
            h.set_proxy_id("turnstile-test");
            h.set_proxy_version("0.0.0");
            h.reborrow().init_encodings(1).set(0, s::Encoding::Capnp);
            h.set_shard(0);
        });
    }

    /// Handshake; returns the capabilities and checks the first health report follows.
    pub fn handshake(&mut self) -> Caps {
        self.send_handshake(&[2]);
        match self.recv(WAIT).unwrap() {
            Msg::Accepted => {}
            other => panic!("expected handshake accepted, got {other:?}"),
        }
        std::mem::take(&mut self.caps)
    }

    pub fn configure(&mut self, config: &str, generation: u64) {
        self.send(0, |m| {
            let mut c = m.init_configure();
            c.set_agent_id("test");
            c.set_config(config.as_bytes());
            c.set_generation(generation);
        });
    }

    pub fn request_frame(&mut self, cid: u64, r: &Req<'_>) -> Vec<u8> {
        self.frame(cid, |m| {
            let mut e = m.init_request_headers();
            let mut md = e.reborrow().init_metadata();
            md.set_request_id(format!("req-{cid}"));
            md.set_client_ip(&r.client_ip);
            md.set_client_port(40000);
            md.set_route_id("default");
            let mut q = e.init_request();
            q.set_method(r.method);
            q.set_authority("example.com");
            q.set_path(r.path);
            q.set_query(r.query);
            q.set_scheme("https");
            q.set_protocol("HTTP/2");
            q.set_client_address(format!(
                "{}.{}.{}.{}:40000",
                r.client_ip[0], r.client_ip[1], r.client_ip[2], r.client_ip[3]
            ));
            let mut hs = q.init_headers(r.headers.len() as u32);
            for (i, (n, v)) in r.headers.iter().enumerate() {
                let mut h = hs.reborrow().get(i as u32);
                h.set_name(n.as_bytes());
                h.set_value(v.as_bytes());
            }
        })
    }

    pub fn request(&mut self, cid: u64, r: &Req<'_>) {
        let f = self.request_frame(cid, r);
        self.send_raw(&f);
    }

    pub fn body(&mut self, cid: u64, index: u32, data: &[u8], last: bool) {
        self.send(cid, |m| {
            let mut b = m.init_request_body_chunk();
            b.set_chunk_index(index);
            b.set_data(data);
            b.set_is_last(last);
        });
    }

    pub fn cancel(&mut self, cid: u64) {
        self.send(cid, |m| {
            let mut c = m.init_cancel();
            c.reborrow().init_reason().set_timeout(());
            c.set_timestamp_ms(1);
        });
    }

    /// Sends a request and returns its (final or needMore) answer.
    pub fn decide(&mut self, cid: u64, r: &Req<'_>) -> Resp {
        self.request(cid, r);
        let resp = self.response(WAIT);
        assert_eq!(resp.cid, cid);
        resp
    }

    /// Reads raw bytes: whatever arrives within `max` (at least one read's worth).
    pub fn read_raw(&mut self, want: usize, max: Duration) -> Vec<u8> {
        let start = Instant::now();
        let mut out = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 4096];
        while out.len() < want && start.elapsed() < max {
            self.stream
                .set_read_timeout(Some(
                    max.saturating_sub(start.elapsed())
                        .max(Duration::from_millis(1)),
                ))
                .unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        out
    }

    /// The next frame, within `max`.
    pub fn recv(&mut self, max: Duration) -> Result<Msg, RecvError> {
        let start = Instant::now();
        loop {
            let buf = std::mem::take(&mut self.buf);
            let decoded = match split_frame(&buf) {
                Err(e) => Some(Err(RecvError::Bad(e.to_string()))),
                Ok(Some((frame, used))) => {
                    assert_eq!(frame.kind, FrameKind::AgentToProxy);
                    let msg = Message::parse(frame.kind, frame.payload).unwrap();
                    msg.walk().unwrap();
                    let root = msg.root::<agent_to_proxy::Owned>().unwrap();
                    Some(Ok((self.decode(root), used)))
                }
                Ok(None) => None,
            };
            self.buf = buf;
            match decoded {
                Some(Ok((m, used))) => {
                    self.buf.drain(..used);
                    return Ok(m);
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
            let left = max.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(RecvError::Timeout);
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(RecvError::Timeout);
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Err(RecvError::Closed),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next response, skipping (and recording) health and metrics reports.
    pub fn try_response(&mut self, max: Duration) -> Result<Resp, RecvError> {
        let start = Instant::now();
        loop {
            match self.recv(max.saturating_sub(start.elapsed()))? {
                Msg::Response(r) => return Ok(r),
                Msg::Health(h) => self.healths.push(h),
                Msg::Metrics(m) => self.metrics.push(m),
                Msg::Log(_) => {}
                other => panic!("expected a response, got {other:?}"),
            }
        }
    }

    pub fn response(&mut self, max: Duration) -> Resp {
        self.try_response(max).unwrap()
    }

    /// The next message that is not a health or metrics report.
    pub fn next_other(&mut self, max: Duration) -> Result<Msg, RecvError> {
        let start = Instant::now();
        loop {
            match self.recv(max.saturating_sub(start.elapsed()))? {
                Msg::Health(h) => self.healths.push(h),
                Msg::Metrics(m) => self.metrics.push(m),
                other => return Ok(other),
            }
        }
    }

    /// Waits for the next health report (recorded ones first).
    pub fn health(&mut self, max: Duration) -> Health {
        if !self.healths.is_empty() {
            return self.healths.remove(0);
        }
        let start = Instant::now();
        loop {
            match self.recv(max.saturating_sub(start.elapsed())).unwrap() {
                Msg::Health(h) => return h,
                Msg::Metrics(m) => self.metrics.push(m),
                other => panic!("expected health, got {other:?}"),
            }
        }
    }

    /// Asserts the agent closes the connection within `max` (frames before the end are skipped).
    pub fn expect_closed(&mut self, max: Duration) {
        let start = Instant::now();
        loop {
            match self.recv(max.saturating_sub(start.elapsed())) {
                Err(RecvError::Closed) => return,
                Err(RecvError::Timeout) => panic!("connection still open after {max:?}"),
                Err(RecvError::Bad(e)) => panic!("bad frame from agent: {e}"),
                Ok(_) => {}
            }
        }
    }

    fn decode(&mut self, root: agent_to_proxy::Reader<'_>) -> Msg {
        use agent_to_proxy::Which;
        let cid = root.get_correlation_id();
        match root.which().unwrap() {
            Which::Handshake(h) => match h.unwrap().which().unwrap() {
                s::handshake_response::Accepted(c) => {
                    let c = c.unwrap();
                    let f = c.get_features().unwrap();
                    let l = c.get_limits().unwrap();
                    self.caps = Caps {
                        protocol_version: c.get_protocol_version(),
                        agent_id: text(c.get_agent_id()),
                        events: c
                            .get_supported_events()
                            .unwrap()
                            .iter()
                            .map(|e| e.unwrap())
                            .collect(),
                        max_body_bytes: l.get_max_body_bytes(),
                        streaming_body: f.get_streaming_body(),
                        cancellation: f.get_cancellation(),
                        concurrency: l.get_max_concurrency(),
                        report_interval_ms: c.get_health().unwrap().get_report_interval_ms(),
                        metrics_export: f.get_metrics_export(),
                        capnp: c.get_encoding().unwrap() == s::Encoding::Capnp,
                    };
                    Msg::Accepted
                }
                s::handshake_response::Rejected(t) => Msg::Rejected(text(t)),
            },
            Which::Response(r) => {
                let r = r.unwrap();
                let verdict = match r.get_verdict().unwrap().which().unwrap() {
                    verdict::Allow(()) => Verdict::Allow,
                    verdict::Block(b) => {
                        let b = b.unwrap();
                        Verdict::Block {
                            status: b.get_status(),
                            body: lossy(b.get_body()),
                            headers: b
                                .get_headers()
                                .unwrap()
                                .iter()
                                .map(|h| (lossy(h.get_name()), lossy(h.get_value())))
                                .collect(),
                        }
                    }
                    verdict::Redirect(d) => {
                        let d = d.unwrap();
                        Verdict::Redirect {
                            location: text(d.get_location()),
                            status: d.get_status(),
                        }
                    }
                };
                let a = r.get_audit().unwrap();
                Msg::Response(Resp {
                    cid,
                    verdict,
                    request_ops: ops(r.get_request_headers().unwrap()),
                    response_ops: ops(r.get_response_headers().unwrap()),
                    tags: texts(a.get_tags()),
                    rule_ids: texts(a.get_rule_ids()),
                    reasons: texts(a.get_reason_codes()),
                    need_more: r.get_need_more(),
                })
            }
            Which::Health(h) => {
                let h = h.unwrap();
                let state = match h.get_state().which().unwrap() {
                    health_status::state::Healthy(()) => "healthy",
                    health_status::state::Degraded(_) => "degraded",
                    health_status::state::Draining(_) => "draining",
                    health_status::state::Unhealthy(_) => "unhealthy",
                };
                let load = h.get_load().unwrap();
                Msg::Health(Health {
                    state: state.into(),
                    in_flight: load.get_in_flight(),
                    processed: load.get_requests_processed(),
                })
            }
            Which::Metrics(m) => {
                let m = m.unwrap();
                Msg::Metrics(
                    m.get_counters()
                        .unwrap()
                        .iter()
                        .map(|c| (text(c.get_name()), c.get_value()))
                        .collect(),
                )
            }
            Which::ConfigUpdate(u) => {
                let u = u.unwrap();
                match u.get_update().which().unwrap() {
                    config_update_request::update::ConfigError(e) => {
                        let e = e.unwrap();
                        Msg::ConfigError {
                            error: text(e.get_error()),
                            field: text(e.get_field()),
                        }
                    }
                    _ => Msg::ConfigUpdate(text(u.get_request_id())),
                }
            }
            Which::FlowControl(f) => {
                let action = match f.unwrap().get_action().which().unwrap() {
                    s::flow_control_signal::action::Pause(()) => "pause".to_owned(),
                    s::flow_control_signal::action::Resume(()) => "resume".to_owned(),
                    s::flow_control_signal::action::UpdateCapacity(n) => format!("capacity {n}"),
                };
                Msg::Flow { cid, action }
            }
            Which::Log(l) => Msg::Log(text(l.unwrap().get_message())),
        }
    }
}
