//! The SDK example of `docs/agents.md` (section 3.1, the same as the crate documentation), run
//! against a minimal turnstile: handshake, then three requests, answered as the document says.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use turnstile_agent_sdk::{Agent, AgentInfo, Reply, RequestHeaders, ServeOptions, Server};
use turnstile_wire::turnstile_capnp::{
    Encoding, agent_to_proxy, handshake_response, header_op, proxy_to_agent, verdict,
};
use turnstile_wire::{AGENT_PROTOCOL_VERSION, FrameWriter, split_frame};

// ---- the example, as printed in docs/agents.md ----

/// Refuses /admin to everyone without the magic header.
struct AdminGate;

impl Agent for AdminGate {
    fn info(&self) -> AgentInfo {
        AgentInfo::new("admin-gate", env!("CARGO_PKG_VERSION"))
    }

    fn on_request_headers(&self, req: &RequestHeaders<'_>, reply: Reply) {
        if req.path().starts_with("/admin") && req.header("x-admin") != Some(b"yes") {
            reply.rule("admin-1").block(403, "admins only");
        } else {
            reply.set_request_header("x-gate", "passed").allow();
        }
    }
}

#[allow(dead_code)] // the example's `main`: compiled here, not run
fn main_of_the_example() -> Result<(), Box<dyn std::error::Error>> {
    // --socket PATH (or $TURNSTILE_AGENT_SOCKET), --config FILE, --busy-poll
    turnstile_agent_sdk::serve(AdminGate, ServeOptions::from_args()?)?;
    Ok(())
}

// ---- a minimal turnstile ----

/// What one answer said: (correlation id, verdict, rule ids, request header `set`s).
type Answer = (u64, String, Vec<String>, Vec<(String, String)>);

struct Turnstile {
    stream: UnixStream,
    writer: FrameWriter<'static>,
    inbuf: Vec<u8>,
}

impl Turnstile {
    fn send<F>(&mut self, cid: u64, fill: F)
    where
        F: FnOnce(proxy_to_agent::Builder<'_>) -> capnp::Result<()>,
    {
        let mut out = Vec::new();
        self.writer
            .write::<proxy_to_agent::Owned, _>(&mut out, |mut m| {
                m.set_correlation_id(cid);
                fill(m)
            })
            .unwrap();
        self.stream.write_all(&out).unwrap();
    }

    /// The next agent message that `pick` wants (health and metrics reports are skipped).
    fn recv<T>(
        &mut self,
        mut pick: impl FnMut(u64, agent_to_proxy::WhichReader<'_>) -> Option<T>,
    ) -> T {
        let mut buf = [0u8; 64 * 1024];
        loop {
            while let Some((frame, used)) = split_frame(&self.inbuf).unwrap() {
                let msg = frame.message().unwrap();
                let root = msg.root::<agent_to_proxy::Owned>().unwrap();
                let got = pick(root.get_correlation_id(), root.which().unwrap());
                self.inbuf.drain(..used);
                if let Some(t) = got {
                    return t;
                }
            }
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "the agent closed the connection");
            self.inbuf.extend_from_slice(&buf[..n]);
        }
    }

    fn request(&mut self, cid: u64, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(cid, |m| {
            let mut ev = m.init_request_headers();
            ev.reborrow().init_metadata().set_request_id("docs-example");
            let mut r = ev.init_request();
            r.set_method("GET");
            r.set_path(path);
            let mut hs = r.init_headers(headers.len() as u32);
            for (i, (n, v)) in headers.iter().enumerate() {
                let mut h = hs.reborrow().get(i as u32);
                h.set_name(n.as_bytes());
                h.set_value(v.as_bytes());
            }
            Ok(())
        });
        self.recv(|c, which| {
            let agent_to_proxy::Response(r) = which else {
                return None;
            };
            let r = r.unwrap();
            assert!(!r.get_need_more());
            let v = match r.get_verdict().unwrap().which().unwrap() {
                verdict::Allow(()) => "allow".to_owned(),
                verdict::Block(b) => format!("block:{}", b.unwrap().get_status()),
                verdict::Redirect(_) => "redirect".to_owned(),
            };
            let rules = r
                .get_audit()
                .unwrap()
                .get_rule_ids()
                .unwrap()
                .iter()
                .map(|t| t.unwrap().to_string().unwrap())
                .collect();
            let sets = r
                .get_request_headers()
                .unwrap()
                .iter()
                .filter_map(|op| match op.which().unwrap() {
                    header_op::Set(h) => {
                        let h = h.unwrap();
                        let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                        Some((text(h.get_name().unwrap()), text(h.get_value().unwrap())))
                    }
                    _ => None,
                })
                .collect();
            Some((c, v, rules, sets))
        })
    }
}

#[test]
fn the_documented_example_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin-gate.sock");
    let server = Server::start(AdminGate, ServeOptions::new(&socket)).unwrap();
    let stream = UnixStream::connect(&socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut t = Turnstile {
        stream,
        writer: FrameWriter::with_static_scratch(),
        inbuf: Vec::new(),
    };

    // The handshake turnstile sends, and the agent's capabilities.
    t.send(0, |m| {
        let mut h = m.init_handshake();
        h.reborrow()
            .init_supported_versions(1)
            .set(0, AGENT_PROTOCOL_VERSION);
        h.set_proxy_id("turnstile");
        h.reborrow().init_encodings(1).set(0, Encoding::Capnp);
        Ok(())
    });
    let (version, id, cancellation) = t.recv(|cid, which| {
        let agent_to_proxy::Handshake(h) = which else {
            return None;
        };
        assert_eq!(cid, 0);
        let handshake_response::Accepted(c) = h.unwrap().which().unwrap() else {
            panic!("handshake refused");
        };
        let c = c.unwrap();
        Some((
            c.get_protocol_version(),
            c.get_agent_id().unwrap().to_string().unwrap(),
            c.get_features().unwrap().get_cancellation(),
        ))
    });
    assert_eq!(
        (version, id.as_str(), cancellation),
        (2, "admin-gate", true)
    );
    t.send(0, |m| {
        let mut c = m.init_configure();
        c.set_agent_id("admin-gate");
        c.set_generation(1);
        Ok(())
    });

    let (cid, v, rules, _) = t.request(1, "/admin/users", &[]);
    assert_eq!(
        (cid, v.as_str(), rules),
        (1, "block:403", vec!["admin-1".to_owned()])
    );

    let (cid, v, _, sets) = t.request(2, "/admin/users", &[("X-Admin", "yes")]);
    assert_eq!((cid, v.as_str()), (2, "allow"));
    assert_eq!(sets, [("x-gate".to_owned(), "passed".to_owned())]);

    let (cid, v, rules, sets) = t.request(3, "/products", &[]);
    assert_eq!(
        (cid, v.as_str(), rules.len(), sets.len()),
        (3, "allow", 0, 1)
    );

    server.stop();
}
