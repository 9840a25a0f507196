//! Helpers shared by the WASM host tests: the example agents (built on demand), the WAT
//! fixtures, and agent protocol messages built and read with the wire crate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use turnstile_wasm_host::{EngineConfig, WasmEngine};
use turnstile_wire::turnstile_capnp::{
    agent_response, agent_to_proxy, header_op, proxy_to_agent, verdict,
};
use turnstile_wire::{FrameKind, FrameWriter, Message, limits::FRAME_HEADER_BYTES};

/// One engine per test process, as in turnstile.
pub fn engine() -> &'static WasmEngine {
    static ENGINE: OnceLock<WasmEngine> = OnceLock::new();
    ENGINE.get_or_init(|| WasmEngine::new(EngineConfig::default()).expect("engine"))
}

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // <target>/debug/deps/<test binary>
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// Where `make wasm-agents` (and this helper) put the example agents.
fn wasm_dir() -> PathBuf {
    target_dir().join("wasm-agents/wasm32-unknown-unknown/release/examples")
}

/// Builds the example agents for wasm32 once per test process (cargo makes it a no-op when they
/// are fresh). The same command as the Makefile's `wasm-agents` target.
fn build_examples() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = Command::new(cargo)
            .current_dir(&workspace)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
                "-p",
                "turnstile-wasm-agents",
                "--examples",
            ])
            .env("CARGO_TARGET_DIR", target_dir().join("wasm-agents"))
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
            .status()
            .expect("run cargo");
        assert!(
            status.success(),
            "building the WASM example agents failed; is the target installed? \
             (rustup target add wasm32-unknown-unknown)"
        );
        wasm_dir()
    })
}

/// The bytes of example agent `name` (noop, waf, header_rewrite).
pub fn example(name: &str) -> Vec<u8> {
    let path = build_examples().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Example agent `name` with `limits`, compiled once per test process.
pub fn example_module(
    name: &str,
    limits: turnstile_wasm_host::WasmLimits,
) -> Arc<turnstile_wasm_host::WasmModule> {
    static COMPILED: Mutex<Vec<(String, Arc<turnstile_wasm_host::WasmModule>)>> =
        Mutex::new(Vec::new());
    let mut compiled = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, m)) = compiled.iter().find(|(n, _)| n == name) {
        return m.with_limits(limits).expect("limits");
    }
    let module = engine().load(name, &example(name), limits).expect("load");
    compiled.push((name.to_owned(), module.clone()));
    module
}

/// The payload (no frame header) of a `ProxyToAgent` or `AgentToProxy` built by `fill`.
fn payload<R: turnstile_wire::Root>(
    fill: impl FnOnce(R::Builder<'_>) -> capnp::Result<()>,
) -> Vec<u8> {
    let mut scratch = vec![0u8; 64 * 1024];
    let mut frame = Vec::new();
    FrameWriter::new(&mut scratch)
        .write::<R, _>(&mut frame, fill)
        .expect("encode");
    frame.split_off(FRAME_HEADER_BYTES)
}

/// The WAT fixture `name` with its reply templates filled in.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.wat"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let handshake = payload::<agent_to_proxy::Owned>(|m| {
        let mut c = m.init_handshake().init_accepted();
        c.set_protocol_version(turnstile_wire::AGENT_PROTOCOL_VERSION);
        c.set_agent_id(name);
        c.set_name(name);
        c.set_version("0");
        c.reborrow().init_supported_events(1).set(
            0,
            turnstile_wire::turnstile_capnp::EventType::RequestHeaders,
        );
        Ok(())
    });
    let response = payload::<agent_to_proxy::Owned>(|mut m| {
        m.set_correlation_id(u64::MAX);
        m.init_response().init_verdict().set_allow(());
        Ok(())
    });
    let escape = |b: &[u8]| b.iter().map(|x| format!("\\{x:02x}")).collect::<String>();
    text.replace("{{HANDSHAKE}}", &escape(&handshake))
        .replace("{{HANDSHAKE_LEN}}", &handshake.len().to_string())
        .replace("{{RESPONSE}}", &escape(&response))
        .replace("{{RESPONSE_LEN}}", &response.len().to_string())
}

/// A request to decide.
pub struct Req<'a> {
    pub cid: u64,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

/// A realistic browser request's headers.
pub const BROWSER_HEADERS: &[(&str, &str)] = &[
    ("host", "shop.example.com"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("accept-language", "en-US,en;q=0.5"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    (
        "cookie",
        "session=4f3c2a1b9e8d7c6b5a4f3e2d1c0b9a8f; theme=dark",
    ),
    (
        "authorization",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl",
    ),
    ("x-request-id", "0d8f2c3e-5b7a-4e21-9c1d-6f0a8b3e2d17"),
];

/// The `ProxyToAgent` payload of a `requestHeaders` event.
pub fn request_headers(r: &Req<'_>) -> Vec<u8> {
    payload::<proxy_to_agent::Owned>(|mut m| {
        m.set_correlation_id(r.cid);
        let mut e = m.init_request_headers();
        {
            let mut md = e.reborrow().init_metadata();
            md.set_request_id("req-1");
            md.set_route_id("default");
            md.set_timestamp_ms(1_700_000_000_000);
            md.set_client_ip(&[203, 0, 113, 7]);
            md.set_client_port(51234);
            md.set_deadline_ms(100);
        }
        let mut q = e.init_request();
        q.set_method(r.method);
        q.set_authority("shop.example.com");
        q.set_path(r.path);
        q.set_query(r.query);
        q.set_scheme("https");
        q.set_protocol("HTTP/2");
        q.set_client_address("203.0.113.7:51234");
        let mut hs = q.init_headers(r.headers.len() as u32);
        for (i, (n, v)) in r.headers.iter().enumerate() {
            let mut h = hs.reborrow().get(i as u32);
            h.set_name(n.as_bytes());
            h.set_value(v.as_bytes());
        }
        Ok(())
    })
}

/// The `ProxyToAgent` payload of a `requestBodyChunk` event.
pub fn body_chunk(cid: u64, data: &[u8], last: bool) -> Vec<u8> {
    payload::<proxy_to_agent::Owned>(|mut m| {
        m.set_correlation_id(cid);
        let mut c = m.init_request_body_chunk();
        c.set_data(data);
        c.set_is_last(last);
        Ok(())
    })
}

/// The `ProxyToAgent` payload of a `cancel`.
pub fn cancel(cid: u64) -> Vec<u8> {
    payload::<proxy_to_agent::Owned>(|mut m| {
        m.set_correlation_id(cid);
        m.init_cancel().init_reason().set_client_disconnect(());
        Ok(())
    })
}

/// The `ProxyToAgent` payload of a `configure` (refused by `WasmAgent::call`).
pub fn configure(config: &[u8]) -> Vec<u8> {
    payload::<proxy_to_agent::Owned>(|m| {
        m.init_configure().set_config(config);
        Ok(())
    })
}

/// What a reply said, in plain values.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub cid: u64,
    /// "allow", "block <status>", "redirect <status> <location>"
    pub verdict: String,
    pub block_body: String,
    pub need_more: bool,
    pub rule_ids: Vec<String>,
    pub tags: Vec<String>,
    /// "add name: value", "set name: value", "remove name"; response ones prefixed "response "
    pub ops: Vec<String>,
}

fn ops(
    list: capnp::struct_list::Reader<'_, header_op::Owned>,
    prefix: &str,
    out: &mut Vec<String>,
) {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for op in list.iter() {
        out.push(match op.which().unwrap() {
            header_op::Add(h) => {
                let h = h.unwrap();
                format!(
                    "{prefix}add {}: {}",
                    s(h.get_name().unwrap()),
                    s(h.get_value().unwrap())
                )
            }
            header_op::Set(h) => {
                let h = h.unwrap();
                format!(
                    "{prefix}set {}: {}",
                    s(h.get_name().unwrap()),
                    s(h.get_value().unwrap())
                )
            }
            header_op::Remove(n) => format!("{prefix}remove {}", s(n.unwrap())),
        });
    }
}

/// Reads an `AgentToProxy` response payload.
pub fn answer(reply: &[u8]) -> Answer {
    let msg = Message::parse(FrameKind::AgentToProxy, reply).expect("parse");
    let root = msg.root::<agent_to_proxy::Owned>().expect("root");
    let agent_to_proxy::Response(r) = root.which().expect("which") else {
        panic!("not a response");
    };
    let r: agent_response::Reader<'_> = r.unwrap();
    let mut a = Answer {
        cid: root.get_correlation_id(),
        need_more: r.get_need_more(),
        ..Answer::default()
    };
    a.verdict = match r.get_verdict().unwrap().which().unwrap() {
        verdict::Allow(()) => "allow".into(),
        verdict::Block(b) => {
            let b = b.unwrap();
            a.block_body = String::from_utf8_lossy(b.get_body().unwrap()).into_owned();
            format!("block {}", b.get_status())
        }
        verdict::Redirect(rd) => {
            let rd = rd.unwrap();
            format!(
                "redirect {} {}",
                rd.get_status(),
                rd.get_location().unwrap().to_str().unwrap()
            )
        }
    };
    if r.has_request_headers() {
        ops(r.get_request_headers().unwrap(), "", &mut a.ops);
    }
    if r.has_response_headers() {
        ops(r.get_response_headers().unwrap(), "response ", &mut a.ops);
    }
    if r.has_audit() {
        let au = r.get_audit().unwrap();
        for t in au.get_rule_ids().unwrap().iter() {
            a.rule_ids.push(t.unwrap().to_string().unwrap());
        }
        for t in au.get_tags().unwrap().iter() {
            a.tags.push(t.unwrap().to_string().unwrap());
        }
    }
    a
}

/// The union tag of a `ProxyToAgent` payload, where the fixtures read it (offset 24).
pub fn fixture_tag(payload: &[u8]) -> u16 {
    u16::from_le_bytes([payload[24], payload[25]])
}
