//! The JSON encoding, negotiated at the handshake: an SDK agent served in-process, driven by a
//! minimal turnstile that writes its JSON by hand (not through the converter under test).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Value, json};
use turnstile_agent_sdk::{Agent, AgentInfo, Reply, RequestHeaders, ServeOptions, Server};
use turnstile_wire::turnstile_capnp::{
    Encoding, agent_to_proxy, handshake_response, proxy_to_agent, verdict,
};
use turnstile_wire::{AGENT_PROTOCOL_VERSION, FrameKind, FrameWriter, Message, split_frame};

/// Refuses /admin without the magic header.
struct Gate;

impl Agent for Gate {
    fn info(&self) -> AgentInfo {
        AgentInfo::new("gate", "1.0.0")
    }

    fn on_request_headers(&self, req: &RequestHeaders<'_>, reply: Reply) {
        if req.path().starts_with("/admin") && req.header("x-admin") != Some(b"yes") {
            reply.rule("admin-1").block(403, "admins only");
        } else {
            reply.set_request_header("x-gate", "passed").allow();
        }
    }
}

struct Turnstile {
    _dir: tempfile::TempDir,
    _server: Server,
    stream: UnixStream,
    inbuf: Vec<u8>,
}

impl Turnstile {
    fn connect() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("gate.sock");
        let server = Server::start(Gate, ServeOptions::new(&socket)).unwrap();
        let stream = UnixStream::connect(&socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Turnstile {
            _dir: dir,
            _server: server,
            stream,
            inbuf: Vec::new(),
        }
    }

    fn send_frame(&mut self, kind: u8, payload: &[u8]) {
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.push(kind);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).unwrap();
    }

    fn send_capnp(&mut self, fill: impl FnOnce(proxy_to_agent::Builder<'_>) -> capnp::Result<()>) {
        let mut out = Vec::new();
        FrameWriter::with_static_scratch()
            .write::<proxy_to_agent::Owned, _>(&mut out, fill)
            .unwrap();
        self.stream.write_all(&out).unwrap();
    }

    fn send_json(&mut self, v: Value) {
        self.send_frame(5, v.to_string().as_bytes());
    }

    /// The next frame, or `None` when the agent closed the connection.
    fn recv(&mut self) -> Option<(FrameKind, Vec<u8>)> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            if let Some((frame, used)) = split_frame(&self.inbuf).unwrap() {
                let got = (frame.kind, frame.payload.to_vec());
                self.inbuf.drain(..used);
                return Some(got);
            }
            let n = self.stream.read(&mut buf).unwrap();
            if n == 0 {
                assert!(self.inbuf.is_empty(), "connection ended inside a frame");
                return None;
            }
            self.inbuf.extend_from_slice(&buf[..n]);
        }
    }

    /// Handshakes offering `offered`; returns the encoding the agent picked.
    fn handshake(&mut self, offered: &[Encoding]) -> Encoding {
        self.send_capnp(|m| {
            let mut h = m.init_handshake();
            h.reborrow()
                .init_supported_versions(1)
                .set(0, AGENT_PROTOCOL_VERSION);
            h.set_proxy_id("turnstile");
            let mut e = h.init_encodings(offered.len() as u32);
            for (i, enc) in offered.iter().enumerate() {
                e.set(i as u32, *enc);
            }
            Ok(())
        });
        // The answer is always Cap'n Proto, whatever was picked.
        let (kind, payload) = self.recv().expect("a handshake answer");
        assert_eq!(kind, FrameKind::AgentToProxy);
        let msg = Message::parse(kind, &payload).unwrap();
        let root = msg.root::<agent_to_proxy::Owned>().unwrap();
        let agent_to_proxy::Handshake(h) = root.which().unwrap() else {
            panic!("not a handshake answer")
        };
        match h.unwrap().which().unwrap() {
            handshake_response::Accepted(c) => c.unwrap().get_encoding().unwrap(),
            handshake_response::Rejected(r) => panic!("refused: {:?}", r.unwrap()),
        }
    }

    /// The next JSON message that has `key` (health and metrics reports are skipped). Every
    /// frame on the way must be JSON.
    fn recv_json_with(&mut self, key: &str) -> Value {
        loop {
            let (kind, payload) = self.recv().expect("the agent closed the connection");
            assert_eq!(kind, FrameKind::AgentToProxyJson, "a non-JSON frame");
            let v: Value = serde_json::from_slice(&payload).unwrap();
            if v.get(key).is_some() {
                return v;
            }
        }
    }
}

#[test]
fn json_offered_json_spoken() {
    let mut t = Turnstile::connect();
    assert_eq!(t.handshake(&[Encoding::Json]), Encoding::Json);
    t.send_json(json!({"configure": {"agentId": "gate", "generation": 1}}));

    t.send_json(json!({
        "correlationId": 1,
        "requestHeaders": {"request": {"method": "GET", "path": "/admin/users"}}
    }));
    let v = t.recv_json_with("response");
    assert_eq!(v["correlationId"], 1);
    assert_eq!(v["response"]["verdict"]["block"]["status"], 403);
    assert_eq!(v["response"]["verdict"]["block"]["body"], "admins only");
    assert_eq!(v["response"]["audit"]["ruleIds"], json!(["admin-1"]));

    t.send_json(json!({
        "correlationId": 2,
        "requestHeaders": {"request": {
            "method": "GET",
            "path": "/admin/users",
            "headers": [{"name": "x-admin", "value": "yes"}]
        }}
    }));
    let v = t.recv_json_with("response");
    assert_eq!(v["correlationId"], 2);
    assert_eq!(v["response"]["verdict"], json!({"allow": null}));
    assert_eq!(
        v["response"]["requestHeaders"],
        json!([{"set": {"name": "x-gate", "value": "passed"}}])
    );
}

#[test]
fn capnp_offered_first_capnp_spoken() {
    let mut t = Turnstile::connect();
    assert_eq!(
        t.handshake(&[Encoding::Capnp, Encoding::Json]),
        Encoding::Capnp
    );
    t.send_capnp(|mut m| {
        m.set_correlation_id(1);
        let mut r = m.init_request_headers().init_request();
        r.set_method("GET");
        r.set_path("/admin");
        Ok(())
    });
    loop {
        let (kind, payload) = t.recv().expect("an answer");
        assert_eq!(kind, FrameKind::AgentToProxy, "a non-capnp frame");
        let msg = Message::parse(kind, &payload).unwrap();
        let root = msg.root::<agent_to_proxy::Owned>().unwrap();
        if let agent_to_proxy::Response(r) = root.which().unwrap() {
            assert_eq!(root.get_correlation_id(), 1);
            let verdict::Block(b) = r.unwrap().get_verdict().unwrap().which().unwrap() else {
                panic!("not a block")
            };
            assert_eq!(b.unwrap().get_status(), 403);
            break;
        }
    }
}

#[test]
fn json_preferred_first_is_picked() {
    let mut t = Turnstile::connect();
    assert_eq!(
        t.handshake(&[Encoding::Json, Encoding::Capnp]),
        Encoding::Json
    );
}

/// Reads until the agent closes the connection; fails if it answers a request instead.
fn expect_closed(t: &mut Turnstile) {
    while let Some((_, payload)) = t.recv() {
        if let Ok(v) = serde_json::from_slice::<Value>(&payload) {
            assert!(v.get("response").is_none(), "answered a bad frame: {v}");
        }
    }
}

#[test]
fn capnp_frame_on_a_json_connection_closes_it() {
    let mut t = Turnstile::connect();
    assert_eq!(t.handshake(&[Encoding::Json]), Encoding::Json);
    t.send_capnp(|mut m| {
        m.set_correlation_id(1);
        m.init_request_headers().init_request().set_path("/");
        Ok(())
    });
    expect_closed(&mut t);
}

#[test]
fn json_frame_on_a_capnp_connection_closes_it() {
    let mut t = Turnstile::connect();
    assert_eq!(t.handshake(&[Encoding::Capnp]), Encoding::Capnp);
    t.send_json(json!({"correlationId": 1, "requestHeaders": {}}));
    expect_closed(&mut t);
}

#[test]
fn bad_json_closes_the_connection() {
    let mut t = Turnstile::connect();
    assert_eq!(t.handshake(&[Encoding::Json]), Encoding::Json);
    t.send_json(json!({"correlationId": 1, "requestHeaders": {"request": {"methd": "GET"}}}));
    expect_closed(&mut t);
}
