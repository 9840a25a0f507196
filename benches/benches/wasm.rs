//! turnstile-wasm-host: the full path of one in-process WASM agent call — encode the
//! `ProxyToAgent` requestHeaders event of a realistic browser request, call the agent, decode
//! its `AgentToProxy` answer — for the noop agent (goal: p50 at most 2 µs; the source design
//! says 10–50 µs) and the WASM waf (the UDS waf's rules). Also one instance start (instantiate
//! from the `InstancePre`, handshake, configure: what a fault replacement costs).
//!
//! The example agents are built for wasm32 first (`make wasm-agents`'s command; a no-op when
//! fresh). Prints p50 / p99 / mean ns per call at the end.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use turnstile_wasm_host::{EngineConfig, WasmAgent, WasmEngine, WasmLimits};
use turnstile_wire::turnstile_capnp::{agent_to_proxy, proxy_to_agent, verdict};
use turnstile_wire::{FrameKind, FrameWriter, Message, limits::FRAME_HEADER_BYTES};

const HEADERS: &[(&str, &str)] = &[
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

/// Builds the example agents for wasm32 into `<target>/wasm-agents` and returns their directory.
fn examples() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        // <target>/release/deps/<bench binary>
        || {
            let exe = std::env::current_exe().expect("current exe");
            exe.ancestors().nth(3).expect("target dir").to_path_buf()
        },
        PathBuf::from,
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
        .args(["-p", "turnstile-wasm-agents", "--examples"])
        .env("CARGO_TARGET_DIR", target.join("wasm-agents"))
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "building the WASM agents failed (rustup target add wasm32-unknown-unknown)"
    );
    target.join("wasm-agents/wasm32-unknown-unknown/release/examples")
}

/// One full call: encode, call, decode. Returns whether the request was allowed.
fn one_call(
    agent: &mut WasmAgent,
    writer: &mut FrameWriter<'_>,
    frame: &mut Vec<u8>,
    reply: &mut Vec<u8>,
    cid: u64,
    query: &str,
) -> bool {
    frame.clear();
    encode(writer, frame, cid, query);
    agent
        .call(&frame[FRAME_HEADER_BYTES..], reply)
        .expect("call");
    let msg = Message::parse(FrameKind::AgentToProxy, reply).expect("parse");
    let root = msg.root::<agent_to_proxy::Owned>().expect("root");
    let agent_to_proxy::Response(r) = root.which().expect("which") else {
        panic!("not a response");
    };
    let r = r.expect("response");
    let allowed = matches!(
        r.get_verdict().expect("verdict").which(),
        Ok(verdict::Allow(()))
    );
    if r.has_audit() {
        for id in r
            .get_audit()
            .expect("audit")
            .get_rule_ids()
            .expect("ids")
            .iter()
        {
            black_box(id.expect("id"));
        }
    }
    allowed
}

/// Encodes the requestHeaders event of the realistic request as a frame into `frame`.
fn encode(writer: &mut FrameWriter<'_>, frame: &mut Vec<u8>, cid: u64, query: &str) {
    writer
        .write::<proxy_to_agent::Owned, _>(frame, |mut m| {
            m.set_correlation_id(cid);
            let mut e = m.init_request_headers();
            {
                let mut md = e.reborrow().init_metadata();
                md.set_request_id("0d8f2c3e-5b7a-4e21-9c1d-6f0a8b3e2d17");
                md.set_route_id("shop");
                md.set_timestamp_ms(1_700_000_000_000);
                md.set_deadline_ms(100);
                md.set_client_ip(&[203, 0, 113, 7]);
                md.set_client_port(51234);
            }
            let mut r = e.init_request();
            r.set_method("GET");
            r.set_authority("shop.example.com");
            r.set_path("/api/v1/items/42");
            r.set_query(query);
            r.set_scheme("https");
            r.set_protocol("HTTP/2");
            r.set_client_address("203.0.113.7:51234");
            let mut hs = r.init_headers(HEADERS.len() as u32);
            for (i, (n, v)) in HEADERS.iter().enumerate() {
                let mut h = hs.reborrow().get(i as u32);
                h.set_name(n.as_bytes());
                h.set_value(v.as_bytes());
            }
            Ok(())
        })
        .expect("encode");
}

/// p50, p99 and mean of `n` single calls, timed one by one.
fn percentiles(n: usize, mut f: impl FnMut(u64)) -> (u128, u128, u128) {
    let mut samples: Vec<u128> = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i as u64 + 1);
        samples.push(t.elapsed().as_nanos());
    }
    let mean = samples.iter().sum::<u128>() / n as u128;
    samples.sort_unstable();
    (samples[n / 2], samples[n * 99 / 100], mean)
}

fn main() {
    let dir = examples();
    let engine = WasmEngine::new(EngineConfig::default()).expect("engine");
    let load = |name: &str, limits: WasmLimits| {
        let bytes = std::fs::read(dir.join(format!("{name}.wasm"))).expect("read module");
        let t = Instant::now();
        let m = engine.load(name, &bytes, limits).expect("load");
        println!(
            "wasm: {name}.wasm ({} KiB) compiled in {:?}",
            bytes.len() / 1024,
            t.elapsed()
        );
        m
    };
    let noop = load("noop", WasmLimits::default());
    let waf = load("waf", WasmLimits::default());
    let (mut noop_agent, _) = WasmAgent::new(&engine, noop.clone(), b"").expect("noop");
    let (mut waf_agent, _) = WasmAgent::new(&engine, waf.clone(), b"").expect("waf");
    let mut scratch = vec![0u8; 16 * 1024];
    let mut writer = FrameWriter::new(&mut scratch);
    let (mut frame, mut reply) = (Vec::with_capacity(4096), Vec::with_capacity(4096));
    let mut cid = 0u64;
    for _ in 0..1000 {
        cid += 1;
        assert!(one_call(
            &mut noop_agent,
            &mut writer,
            &mut frame,
            &mut reply,
            cid,
            "page=2"
        ));
        assert!(one_call(
            &mut waf_agent,
            &mut writer,
            &mut frame,
            &mut reply,
            cid,
            "page=2&sort=name"
        ));
    }
    assert!(!one_call(
        &mut waf_agent,
        &mut writer,
        &mut frame,
        &mut reply,
        1,
        "q=1 union select pw"
    ));

    let single = WasmLimits {
        spare_instances: 0,
        ..WasmLimits::default()
    };
    let noop_single = noop.with_limits(single.clone()).expect("limits");
    let waf_single = waf.with_limits(single).expect("limits");

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut group = c.benchmark_group("wasm");
    group.bench_function("noop_call", |b| {
        b.iter(|| {
            cid += 1;
            one_call(
                &mut noop_agent,
                &mut writer,
                &mut frame,
                &mut reply,
                cid,
                "page=2",
            )
        })
    });
    // The parts of noop_call: the encode alone, and the call alone (encoded once).
    group.bench_function("encode_request_headers", |b| {
        b.iter(|| {
            frame.clear();
            encode(&mut writer, &mut frame, 1, "page=2");
            black_box(frame.len())
        })
    });
    frame.clear();
    encode(&mut writer, &mut frame, 1, "page=2");
    let encoded = frame.clone();
    group.bench_function("noop_call_only", |b| {
        b.iter(|| {
            noop_agent
                .call(&encoded[FRAME_HEADER_BYTES..], &mut reply)
                .expect("call")
        })
    });
    group.bench_function("waf_call_allow", |b| {
        b.iter(|| {
            cid += 1;
            one_call(
                &mut waf_agent,
                &mut writer,
                &mut frame,
                &mut reply,
                cid,
                "page=2&sort=name",
            )
        })
    });
    group.bench_function("waf_call_block", |b| {
        b.iter(|| {
            cid += 1;
            one_call(
                &mut waf_agent,
                &mut writer,
                &mut frame,
                &mut reply,
                cid,
                "q=1 union select pw",
            )
        })
    });
    group.bench_function("noop_instance_start", |b| {
        b.iter(|| WasmAgent::new(&engine, noop_single.clone(), b"").expect("start"))
    });
    group.finish();

    let report = |name: &str, (p50, p99, mean): (u128, u128, u128)| {
        println!("wasm: {name}: p50 {p50} ns, p99 {p99} ns, mean {mean} ns per call");
    };
    let n = 200_000;
    report(
        "noop call (encode + call + decode; goal p50 <= 2000 ns)",
        percentiles(n, |i| {
            black_box(one_call(
                &mut noop_agent,
                &mut writer,
                &mut frame,
                &mut reply,
                i,
                "page=2",
            ));
        }),
    );
    report(
        "waf call, realistic request allowed",
        percentiles(n, |i| {
            black_box(one_call(
                &mut waf_agent,
                &mut writer,
                &mut frame,
                &mut reply,
                i,
                "page=2&sort=name",
            ));
        }),
    );
    report(
        "waf call, SQL injection blocked",
        percentiles(n / 4, |i| {
            black_box(one_call(
                &mut waf_agent,
                &mut writer,
                &mut frame,
                &mut reply,
                i,
                "q=1 union select pw",
            ));
        }),
    );
    let starts = 200;
    let (p50, p99, mean) = percentiles(starts, |_| {
        black_box(WasmAgent::new(&engine, noop_single.clone(), b"").expect("start"));
    });
    println!(
        "wasm: noop instance start (instantiate + handshake + configure): p50 {p50} ns, p99 {p99} ns, mean {mean} ns"
    );
    let (p50, p99, mean) = percentiles(20, |_| {
        black_box(WasmAgent::new(&engine, waf_single.clone(), b"").expect("start"));
    });
    println!(
        "wasm: waf instance start (configure compiles the rule set): p50 {p50} ns, p99 {p99} ns, mean {mean} ns"
    );
}
