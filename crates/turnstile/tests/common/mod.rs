//! Starts the real `turnstile` binary on a free loopback port and talks to it with quinn's
//! high-level client: an independent QUIC implementation.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use turnstile_wire::turnstile_capnp::{request, response};
use turnstile_wire::{FrameWriter, Message};

/// Integration tests start whole servers with agents: on a 2-core machine, running them all at
/// once makes every timing-sensitive one (timeouts, reloads) flaky. Each test holds this lock for
/// its whole run, so they run one at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Which server a test starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The `turnstile` binary.
    Turnstile,
    /// `turnstile-baseline` (tokio + quinn, agents over JSON).
    Baseline,
}

/// The `turnstile-baseline` binary, built (once per test process) so it is never stale: a plain
/// `cargo test -p turnstile` does not build another package's binaries.
pub fn baseline_binary() -> std::path::PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let dir = std::path::Path::new(env!("CARGO_BIN_EXE_turnstile"))
        .parent()
        .expect("binary directory")
        .to_path_buf();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "turnstile-baseline"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building turnstile-baseline failed");
    });
    let path = dir.join("turnstile-baseline");
    assert!(path.exists(), "{} missing", path.display());
    path
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub cert: CertificateDer<'static>,
    pub dir: tempfile::TempDir,
    lines: mpsc::Receiver<String>,
    /// Every output line seen so far.
    pub history: Vec<String>,
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind probe socket");
    s.local_addr().expect("local addr").port()
}

impl Server {
    /// Starts `turnstile serve` with 2 shards and `extra` TOML appended (sections `[quic]`, ...
    /// must not repeat `[server]`).
    pub fn start(server_extra: &str, extra: &str) -> Server {
        Server::start_on(Engine::Turnstile, server_extra, extra)
    }

    /// Like [`Server::start`], on either engine: turnstile or the tokio + quinn baseline (same
    /// configuration file, same agents).
    pub fn start_on(engine: Engine, server_extra: &str, extra: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nshards = 2\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\n{server_extra}\n{extra}\n",
            dir.path().join("state").display(),
            dir.path().join("run").display()
        );
        let path = dir.path().join("turnstile.toml");
        std::fs::write(&path, config).expect("write config");
        let binary = match engine {
            Engine::Turnstile => std::path::PathBuf::from(env!("CARGO_BIN_EXE_turnstile")),
            Engine::Baseline => baseline_binary(),
        };
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("TURNSTILE_LOG", "info")
            .spawn()
            .expect("spawn turnstile");
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            cert: CertificateDer::from(Vec::new()),
            dir,
            lines: rx,
            history: Vec::new(),
        };
        server.wait_for_line("listening on", Duration::from_secs(20));
        let pem = std::fs::read(server.dir.path().join("state/dev-cert.pem")).expect("dev cert");
        use rustls::pki_types::pem::PemObject;
        server.cert = CertificateDer::from_pem_slice(&pem).expect("pem cert");
        server
    }

    /// Waits for a line containing `needle`; returns it. Panics with everything seen on timeout.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => {
                    self.history.push(line.clone());
                    return line;
                }
                Ok(line) => {
                    self.history.push(line.clone());
                    seen.push(line)
                }
                Err(_) => panic!(
                    "no line with {needle:?}; output so far:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    /// Every output line received so far.
    pub fn drain_lines(&mut self) -> Vec<String> {
        let fresh: Vec<String> = self.lines.try_iter().collect();
        self.history.extend(fresh.iter().cloned());
        self.history.clone()
    }

    /// Kills the server outright (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit (bounded).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server did not exit in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client_config(&self) -> quinn::ClientConfig {
        let crypto = turnstile_config::dev_client_crypto(&self.cert).expect("client crypto");
        client_config_from(crypto)
    }

    pub async fn connect(&self, endpoint: &quinn::Endpoint) -> quinn::Connection {
        endpoint
            .connect_with(self.client_config(), self.addr, "localhost")
            .expect("connect")
            .await
            .expect("handshake")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client_config_from(crypto: rustls::ClientConfig) -> quinn::ClientConfig {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).expect("quic crypto");
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(30).try_into().expect("idle")));
    cfg.transport_config(Arc::new(transport));
    cfg
}

pub fn client_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint")
}

pub fn request_frame(fill: impl FnOnce(request::Builder<'_>)) -> Vec<u8> {
    let mut scratch = vec![0u8; 64 * 1024];
    let mut writer = FrameWriter::new(&mut scratch);
    let mut out = Vec::new();
    writer
        .write::<request::Owned, _>(&mut out, |r| {
            fill(r);
            Ok(())
        })
        .expect("encode");
    out
}

pub fn echo(correlation_id: u64, payload: &[u8]) -> Vec<u8> {
    request_frame(|mut r| {
        r.set_correlation_id(correlation_id);
        r.set_echo(payload);
    })
}

/// The path of an example agent binary, building the agents first (a plain
/// `cargo test -p turnstile` does not build another package's binaries).
pub fn agent_binary(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_BIN_EXE_turnstile"))
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let path = dir.join(format!("turnstile-agent-{name}"));
    // Built once per test process, even when present: a stale agent binary would test old code.
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "turnstile-agents", "--bins"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the example agents failed");
    });
    assert!(path.exists(), "{} missing", path.display());
    path
}

/// The path of an example WASM agent (noop, waf, header_rewrite), built for wasm32 first when
/// missing — the same command as `make wasm-agents`.
pub fn wasm_agent(name: &str) -> std::path::PathBuf {
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_turnstile"))
        .parent()
        .expect("binary directory");
    // <target>/<profile>/turnstile → <target>
    let target = bin_dir.parent().expect("target directory").to_path_buf();
    let dir = target.join("wasm-agents/wasm32-unknown-unknown/release/examples");
    let path = dir.join(format!("{name}.wasm"));
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = Command::new(cargo)
            .current_dir(&workspace)
            .args([
                "build",
                "-q",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
            ])
            .args(["-p", "turnstile-wasm-agents", "--examples"])
            .env("CARGO_TARGET_DIR", target.join("wasm-agents"))
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
            .status()
            .expect("run cargo");
        assert!(
            status.success(),
            "building the WASM example agents failed (rustup target add wasm32-unknown-unknown)"
        );
    }
    assert!(path.exists(), "{} missing", path.display());
    path
}

/// The verdict of a decision: ("allow" | "block:<status>" | "redirect:<location>", rule ids,
/// timings as (agent, outcome)).
pub fn decision(bytes: &[u8]) -> (String, Vec<String>, Vec<(String, String)>) {
    use turnstile_wire::turnstile_capnp::verdict;
    let msg = Message::from_frame_bytes(bytes).expect("one response frame");
    let r = msg.root::<response::Owned>().expect("response root");
    let d = match r.which().expect("member") {
        response::Decision(d) => d.expect("decision"),
        response::Error(e) => {
            let e = e.expect("error");
            panic!(
                "error response {:?}: {}",
                e.get_code(),
                e.get_message().unwrap().to_str().unwrap()
            )
        }
        _ => panic!("not a decision"),
    };
    let v = match d.get_verdict().unwrap().which().unwrap() {
        verdict::Allow(()) => "allow".to_string(),
        verdict::Block(b) => format!("block:{}", b.unwrap().get_status()),
        verdict::Redirect(rd) => format!(
            "redirect:{}",
            rd.unwrap().get_location().unwrap().to_str().unwrap()
        ),
    };
    let audit = d.get_audit().unwrap();
    let rules = audit
        .get_rule_ids()
        .unwrap()
        .iter()
        .map(|t| t.unwrap().to_string().unwrap())
        .collect();
    let timings = d
        .get_timings()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t.get_agent_id().unwrap().to_string().unwrap(),
                format!("{:?}", t.get_outcome().unwrap()),
            )
        })
        .collect();
    (v, rules, timings)
}

/// The audit tags of a decision.
pub fn audit_tags(bytes: &[u8]) -> Vec<String> {
    let msg = Message::from_frame_bytes(bytes).expect("one response frame");
    let r = msg.root::<response::Owned>().expect("response root");
    let response::Decision(d) = r.which().expect("member") else {
        panic!("not a decision")
    };
    d.unwrap()
        .get_audit()
        .unwrap()
        .get_tags()
        .unwrap()
        .iter()
        .map(|t| t.unwrap().to_string().unwrap())
        .collect()
}

/// A `decide` request-phase frame.
pub fn decide(
    route: &str,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    request_frame(|mut r| {
        r.set_correlation_id(11);
        let mut d = r.init_decide();
        d.set_route_id(route);
        let mut req = d.init_phase().init_request().init_request();
        req.set_method(method);
        req.set_path(path);
        req.set_query(query);
        req.set_authority("example.com");
        req.set_client_address("203.0.113.9:40000");
        let mut hs = req.init_headers(headers.len() as u32);
        for (i, (n, v)) in headers.iter().enumerate() {
            let mut h = hs.reborrow().get(i as u32);
            h.set_name(n.as_bytes());
            h.set_value(v.as_bytes());
        }
    })
}

/// What came back, summarised for assertions.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Echo(u64, Vec<u8>),
    Error(u64, String, String),
    Decision(u64),
    Status { shard: u16 },
    HelloAck(u32, u64, u32),
}

pub fn parse(bytes: &[u8]) -> Reply {
    let msg = Message::from_frame_bytes(bytes).expect("one response frame");
    let r = msg.root::<response::Owned>().expect("response root");
    let cid = r.get_correlation_id();
    match r.which().expect("known member") {
        response::Echo(e) => Reply::Echo(cid, e.expect("echo").to_vec()),
        response::Error(e) => {
            let e = e.expect("error");
            Reply::Error(
                cid,
                format!("{:?}", e.get_code().expect("code")),
                e.get_message().expect("msg").to_string().expect("utf8"),
            )
        }
        response::Decision(_) => Reply::Decision(cid),
        response::StatusEvent(s) => Reply::Status {
            shard: s.expect("status").get_shard(),
        },
        response::HelloAck(h) => {
            let h = h.expect("ack");
            Reply::HelloAck(
                h.get_version(),
                h.get_request_bytes_max(),
                h.get_streams_max(),
            )
        }
        _ => panic!("unexpected response member"),
    }
}

/// One request on its own stream: write, FIN, read the whole answer.
pub async fn call(conn: &quinn::Connection, frame: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(frame).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    recv.read_to_end(8 << 20).await.map_err(|e| e.to_string())
}

/// The `elapsedUs` of each agent timing of a decision, in chain order.
pub fn timing_us(bytes: &[u8]) -> Vec<u32> {
    let msg = Message::from_frame_bytes(bytes).expect("one response frame");
    let r = msg.root::<response::Owned>().expect("response root");
    let response::Decision(d) = r.which().expect("member") else {
        panic!("not a decision")
    };
    d.expect("decision")
        .get_timings()
        .expect("timings")
        .iter()
        .map(|t| t.get_elapsed_us())
        .collect()
}
