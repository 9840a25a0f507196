//! The SDK's protocol handling, with an in-process test agent and the test turnstile.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, Msg, RecvError, Req, Verdict, WAIT};
use turnstile_agent_sdk::{
    Agent, AgentInfo, BodyChunk, CancelReason, ConfigError, EventType, Health, Reply,
    RequestComplete, RequestHeaders, RequestKey, ResponseHeaders, ServeOptions, Server,
};

/// Behaviour by path; records what the SDK told it.
#[derive(Default)]
struct Probe {
    configured: AtomicU32,
    cancels: Mutex<Vec<(RequestKey, CancelReason)>>,
    held: Mutex<Vec<Reply>>,
    streamed: Mutex<Vec<u8>>,
}

/// The agent: a shared handle on the probe, so the test can look inside.
#[derive(Clone)]
struct P(Arc<Probe>);

impl std::ops::Deref for P {
    type Target = Probe;
    fn deref(&self) -> &Probe {
        &self.0
    }
}

impl Agent for P {
    fn info(&self) -> AgentInfo {
        AgentInfo::new("probe", "1.0")
            .events(&[
                EventType::RequestHeaders,
                EventType::ResponseHeaders,
                EventType::RequestComplete,
            ])
            .request_body(1024, true)
            .max_concurrency(8)
    }

    fn configure(&self, config: &[u8]) -> Result<(), ConfigError> {
        if config == b"bad" {
            return Err(ConfigError::field("x", "bad config"));
        }
        self.configured.fetch_add(1, Relaxed);
        Ok(())
    }

    fn on_request_headers(&self, req: &RequestHeaders<'_>, reply: Reply) {
        match req.path() {
            "/redirect" => reply
                .add_request_header("x-a", "1")
                .remove_response_header("server")
                .rule("r1")
                .reason("moved")
                .confidence(0.5)
                .redirect("/elsewhere", 307),
            "/drop" => drop(reply),
            "/hold" => self.held.lock().unwrap().push(reply),
            "/huge" => reply.block(400, vec![b'x'; 2 << 20]),
            "/stream" => {
                reply.pause();
                reply.resume();
                reply.need_more();
            }
            "/reload" => {
                let conn = reply.connection();
                conn.request_reload();
                conn.pause();
                conn.update_capacity(4096);
                reply.allow();
            }
            "/meta" => {
                let ok = req.method() == "GET"
                    && req.client_ip() == Some([192, 0, 2, 1].into())
                    && req.metadata().request_id() == format!("req-{}", req.key().correlation_id)
                    && req.header("X-Test") == Some(&b"yes"[..])
                    && req.headers().len() == 1;
                if ok {
                    reply.allow()
                } else {
                    reply.block(500, "metadata mismatch")
                }
            }
            _ => reply.allow(),
        }
    }

    fn on_request_body(&self, chunk: &BodyChunk<'_>, reply: Reply) {
        self.streamed
            .lock()
            .unwrap()
            .extend_from_slice(chunk.data());
        if chunk.is_last() {
            reply
                .tag(format!("bytes:{}", self.streamed.lock().unwrap().len()))
                .allow();
        } else {
            reply.need_more();
        }
    }

    fn on_response_headers(&self, response: &ResponseHeaders<'_>, reply: Reply) {
        reply.tag(format!("status:{}", response.status())).allow();
    }

    fn on_complete(&self, complete: &RequestComplete<'_>, reply: Reply) {
        reply.tag(format!("done:{}", complete.status())).allow();
    }

    fn on_cancel(&self, key: RequestKey, reason: &CancelReason) {
        self.cancels.lock().unwrap().push((key, reason.clone()));
    }

    fn health(&self) -> Health {
        Health::Degraded {
            disabled_features: vec!["body".into()],
            timeout_multiplier: 1.5,
        }
    }
}

fn start(probe: &Arc<Probe>) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServeOptions {
        handle_signals: false,
        report_interval_ms: 5000,
        metrics_interval_ms: 0,
        ..ServeOptions::new(dir.path().join("probe.sock"))
    };
    let server = Server::start(P(probe.clone()), opts).unwrap();
    (dir, server)
}

fn connect(server: &Server) -> Client {
    let mut c = Client::connect(server.socket_path());
    c.handshake();
    assert_eq!(c.health(WAIT).state, "degraded");
    c
}

#[test]
fn verdicts_ops_events_and_capabilities() {
    let probe = Arc::new(Probe::default());
    let (_dir, server) = start(&probe);
    let mode = std::fs::metadata(server.socket_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut c = Client::connect(server.socket_path());
    let caps = c.handshake();
    assert_eq!(caps.concurrency, 8);
    assert!(caps.streaming_body && !caps.metrics_export);
    assert_eq!(caps.max_body_bytes, 1024);
    assert_eq!(caps.events.len(), 4);

    let r = c.decide(1, &Req::get("/redirect"));
    assert_eq!(
        r.verdict,
        Verdict::Redirect {
            location: "/elsewhere".into(),
            status: 307
        }
    );
    assert_eq!(r.request_ops, [("add".into(), "x-a".into(), "1".into())]);
    assert_eq!(
        r.response_ops,
        [("remove".into(), "server".into(), String::new())]
    );
    assert_eq!(
        (r.rule_ids.clone(), r.reasons.clone()),
        (vec!["r1".into()], vec!["moved".into()])
    );
    let r = c.decide(
        2,
        &Req {
            headers: &[("x-test", "yes")],
            ..Req::get("/meta")
        },
    );
    assert_eq!(r.verdict, Verdict::Allow, "{r:?}");

    // A reply dropped unanswered is an allow, tagged; a reply too large goes out bare.
    let r = c.decide(3, &Req::get("/drop"));
    assert_eq!(
        (r.verdict, r.tags),
        (Verdict::Allow, vec!["sdk:dropped-reply".to_owned()])
    );
    let r = c.decide(4, &Req::get("/huge"));
    assert_eq!(r.status(), 400);
    assert_eq!(r.tags, ["sdk:reply-too-large"]);

    // Streaming body: flow control for the request, needMore, then the decision.
    c.request(5, &Req::get("/stream"));
    for action in ["pause", "resume"] {
        assert_eq!(
            c.next_other(WAIT).unwrap(),
            Msg::Flow {
                cid: 5,
                action: action.into()
            }
        );
    }
    assert!(c.response(WAIT).need_more);
    c.body(5, 0, b"abc", false);
    assert!(c.response(WAIT).need_more);
    c.body(5, 1, b"de", true);
    assert_eq!(c.response(WAIT).tags, ["bytes:5"]);

    // Response headers and completion use the same correlation id.
    c.send(5, |m| {
        let mut r = m.init_response_headers().init_response();
        r.set_status(201);
    });
    assert_eq!(c.response(WAIT).tags, ["status:201"]);
    c.send(5, |m| m.init_request_complete().set_status(201));
    assert_eq!(c.response(WAIT).tags, ["done:201"]);

    // Connection-level messages from the agent.
    c.request(6, &Req::get("/reload"));
    assert!(matches!(c.next_other(WAIT).unwrap(), Msg::ConfigUpdate(id) if id.starts_with("sdk-")));
    assert_eq!(
        c.next_other(WAIT).unwrap(),
        Msg::Flow {
            cid: 0,
            action: "pause".into()
        }
    );
    assert_eq!(
        c.next_other(WAIT).unwrap(),
        Msg::Flow {
            cid: 0,
            action: "capacity 4096".into()
        }
    );
    assert_eq!(c.response(WAIT).cid, 6);
    server.stop();
}

#[test]
fn configure_cancel_reuse_and_close() {
    let probe = Arc::new(Probe::default());
    let (_dir, server) = start(&probe);
    let mut a = connect(&server);
    let mut b = connect(&server);
    // The pool's connections all send the same config: applied once. A bad one is refused.
    a.configure("x = 1", 1);
    b.configure("x = 1", 1);
    a.configure("bad", 2);
    assert_eq!(
        a.next_other(WAIT).unwrap(),
        Msg::ConfigError {
            error: "bad config".into(),
            field: "x".into()
        }
    );
    assert_eq!(b.decide(1, &Req::get("/")).verdict, Verdict::Allow);
    assert_eq!(probe.configured.load(Relaxed), 1);

    // A held reply for a cancelled id is discarded, even when the id is reused meanwhile.
    a.request(7, &Req::get("/hold"));
    assert_eq!(
        a.try_response(Duration::from_millis(50)),
        Err(RecvError::Timeout)
    );
    a.cancel(7);
    a.request(7, &Req::get("/hold"));
    assert_eq!(
        a.try_response(Duration::from_millis(50)),
        Err(RecvError::Timeout)
    );
    let first = probe.held.lock().unwrap().remove(0);
    first.block(403, "stale");
    assert_eq!(
        a.try_response(Duration::from_millis(100)),
        Err(RecvError::Timeout)
    );
    let second = probe.held.lock().unwrap().remove(0);
    std::thread::spawn(move || second.allow()).join().unwrap();
    assert_eq!(a.response(WAIT).cid, 7);
    let cancels = probe.cancels.lock().unwrap().clone();
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].1, CancelReason::Timeout);

    // Closing a connection cancels its open requests.
    a.request(8, &Req::get("/hold"));
    assert_eq!(
        a.try_response(Duration::from_millis(50)),
        Err(RecvError::Timeout)
    );
    drop(a);
    let start = std::time::Instant::now();
    while probe.cancels.lock().unwrap().len() < 2 {
        assert!(start.elapsed() < WAIT);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        probe.cancels.lock().unwrap()[1].1,
        CancelReason::ConnectionClosed
    );
    probe.held.lock().unwrap().clear(); // dropped on a closed connection: nothing sent, no panic

    // Drain: reported, and the idle connection is closed.
    b.send(0, |m| m.init_drain().set_deadline_ms(1000));
    assert_eq!(b.health(WAIT).state, "draining");
    b.expect_closed(WAIT);
    server.stop();
}

#[test]
fn socket_file_handling() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.sock");
    let opts = || ServeOptions {
        handle_signals: false,
        ..ServeOptions::new(&path)
    };
    // A stale socket file is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let server = Server::start(P(Arc::default()), opts()).unwrap();
    // A live one is refused.
    let err = Server::start(P(Arc::default()), opts()).err().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    server.stop();
    assert!(!path.exists());
    // A regular file is never removed.
    std::fs::write(&path, "keep").unwrap();
    assert!(Server::start(P(Arc::default()), opts()).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep");
}
