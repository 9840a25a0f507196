//! The sandbox's limits and fault handling, proven with hand-written WAT fixtures: fuel, the
//! epoch deadline, the memory limit, traps (and the fresh instance after one), the instance cap,
//! the ABI checks, bad replies, and the bounded host functions.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Req, answer, engine, fixture, fixture_tag, request_headers};
use turnstile_wasm_host::{MetricKind, WasmAgent, WasmError, WasmLimits};

fn get(cid: u64) -> Vec<u8> {
    request_headers(&Req {
        cid,
        method: "GET",
        path: "/",
        query: "",
        headers: &[("host", "a")],
    })
}

fn start(name: &str, limits: WasmLimits) -> WasmAgent {
    let module = engine()
        .load(name, fixture(name).as_bytes(), limits)
        .expect("load");
    WasmAgent::new(engine(), module, b"").expect("start").0
}

#[test]
fn fixtures_layout_assumptions_hold() {
    // The fixtures read the union tag at offset 24 and the correlation id at offset 16.
    assert_eq!(fixture_tag(&get(7)), 1, "requestHeaders");
    assert_eq!(fixture_tag(&common::configure(b"x")), 9, "configure");
    assert_eq!(u64::from_le_bytes(get(7)[16..24].try_into().unwrap()), 7);
}

#[test]
fn trap_is_an_error_and_the_next_call_runs_on_a_fresh_instance() {
    let mut agent = start("trap", WasmLimits::default());
    let mut reply = Vec::new();
    agent
        .call(&get(2), &mut reply)
        .expect("even ids are answered");
    assert_eq!(answer(&reply).cid, 2);
    let err = agent.call(&get(3), &mut reply).unwrap_err();
    assert!(matches!(err, WasmError::Trap(_)), "{err:?}");
    assert!(err.is_fault());
    assert!(reply.is_empty());
    agent
        .call(&get(4), &mut reply)
        .expect("served after the trap");
    assert_eq!(answer(&reply).verdict, "allow");
    let s = agent.stats();
    assert_eq!((s.calls, s.faults, s.spares_promoted), (3, 1, 1));
    assert_eq!(
        agent.instance_count(),
        1,
        "the spare took over; maintain refills"
    );
    agent.maintain().unwrap();
    assert_eq!(agent.instance_count(), 2);

    // Repeated traps each fail their call, and the agent keeps serving without a spare.
    let limits = WasmLimits {
        spare_instances: 0,
        ..WasmLimits::default()
    };
    let mut agent = start("trap", limits);
    for cid in 1..=20u64 {
        let r = agent.call(&get(cid), &mut reply);
        assert_eq!(r.is_err(), cid % 2 == 1, "cid {cid}: {r:?}");
    }
    let s = agent.stats();
    assert_eq!((s.calls, s.faults), (20, 10));
    assert_eq!(s.instances_started, 11, "one start + one per trap");
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let mut agent = start("infinite_loop", WasmLimits::default());
    let t = Instant::now();
    let err = agent.call(&get(1), &mut Vec::new()).unwrap_err();
    assert_eq!(err, WasmError::OutOfFuel);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn infinite_loop_is_stopped_by_the_deadline() {
    let limits = WasmLimits {
        fuel_per_call: u64::MAX,
        deadline: Duration::from_millis(50),
        ..WasmLimits::default()
    };
    let mut agent = start("infinite_loop", limits);
    let t = Instant::now();
    let err = agent.call(&get(1), &mut Vec::new()).unwrap_err();
    let took = t.elapsed();
    assert_eq!(err, WasmError::Deadline);
    assert!(took >= Duration::from_millis(40), "{took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // And again on the replacement instance.
    let err = agent.call(&get(2), &mut Vec::new()).unwrap_err();
    assert_eq!(err, WasmError::Deadline);
}

#[test]
fn memory_bomb_is_refused() {
    let limits = WasmLimits {
        memory_bytes: 8 << 20,
        ..WasmLimits::default()
    };
    let mut agent = start("memory_bomb", limits.clone());
    let err = agent.call(&get(1), &mut Vec::new()).unwrap_err();
    assert_eq!(err, WasmError::MemoryLimit);
    // Default 64 MiB too.
    let mut agent = start("memory_bomb", WasmLimits::default());
    let err = agent.call(&get(1), &mut Vec::new()).unwrap_err();
    assert_eq!(err, WasmError::MemoryLimit);
    // A module whose initial memory is over the agent's limit cannot start (256 pages = 16 MiB).
    let big = fixture("trap").replace(
        "(memory (export \"memory\") 2)",
        "(memory (export \"memory\") 256)",
    );
    let module = engine().load("big", big.as_bytes(), limits).unwrap();
    let err = WasmAgent::new(engine(), module, b"").unwrap_err();
    assert_eq!(err, WasmError::MemoryLimit);
    // Over the engine's largest memory, it does not even load.
    let huge = fixture("trap").replace(
        "(memory (export \"memory\") 2)",
        "(memory (export \"memory\") 2000)",
    );
    let err = engine()
        .load("huge", huge.as_bytes(), WasmLimits::default())
        .unwrap_err();
    assert!(
        matches!(err, WasmError::Compile(ref m) if m.contains("memory")),
        "{err}"
    );
}

#[test]
fn at_most_instances_max_instances_per_agent() {
    let limits = WasmLimits {
        spare_instances: 3,
        ..WasmLimits::default()
    };
    assert_eq!(limits.instances_max, 4);
    let mut agent = start("trap", limits);
    assert_eq!(agent.instance_count(), 4);
    let mut reply = Vec::new();
    for cid in 1..=9u64 {
        let _ = agent.call(&get(cid), &mut reply);
        let _ = agent.maintain();
        assert!(agent.instance_count() <= 4);
    }
    assert_eq!(agent.instance_count(), 4);
    // A fifth is refused.
    let too_many = WasmLimits {
        spare_instances: 4,
        ..WasmLimits::default()
    };
    let err = engine()
        .load("trap", fixture("trap").as_bytes(), too_many)
        .unwrap_err();
    assert_eq!(err, WasmError::InstanceLimit { wanted: 5, max: 4 });
}

#[test]
fn abi_violations_are_refused_at_load_or_start() {
    let load = |wat: &str| engine().load("bad", wat.as_bytes(), WasmLimits::default());
    let err = load("(module (memory (export \"memory\") 1))").unwrap_err();
    assert!(
        matches!(err, WasmError::Abi(ref m) if m.contains("turnstile_abi_version")),
        "{err}"
    );
    // WASI (or any other import) is not offered.
    let wasi = fixture("trap").replace(
        "(memory (export",
        "(import \"wasi_snapshot_preview1\" \"fd_write\" (func (param i32 i32 i32 i32) (result i32)))\n  (memory (export",
    );
    let err = load(&wasi).unwrap_err();
    assert!(matches!(err, WasmError::Abi(_)), "{err}");
    // Another ABI version.
    let v2 = fixture("trap").replace("(result i32) (i32.const 1))", "(result i32) (i32.const 2))");
    let module = load(&v2).unwrap();
    let err = WasmAgent::new(engine(), module, b"").unwrap_err();
    assert!(
        matches!(err, WasmError::Abi(ref m) if m.contains("version 2")),
        "{err}"
    );
    // Not WebAssembly.
    assert!(matches!(
        load("garbage").unwrap_err(),
        WasmError::Compile(_)
    ));
}

#[test]
fn garbage_replies_are_bad_replies() {
    // Answers events with 16 bytes of its own memory that are no AgentToProxy.
    let wat = fixture("trap").replace(
        ";; the bug: odd correlation ids trap",
        "(return (call $reply (i32.const 0) (i32.const 16)))",
    );
    let module = engine()
        .load("garbage", wat.as_bytes(), WasmLimits::default())
        .unwrap();
    let (mut agent, _) = WasmAgent::new(engine(), module, b"").unwrap();
    let err = agent.call(&get(2), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, WasmError::BadReply(_)), "{err}");
    // A reply outside memory.
    let wat = fixture("trap").replace(
        ";; the bug: odd correlation ids trap",
        "(return (call $reply (i32.const 131000) (i32.const 4096)))",
    );
    let module = engine()
        .load("outside", wat.as_bytes(), WasmLimits::default())
        .unwrap();
    let (mut agent, _) = WasmAgent::new(engine(), module, b"").unwrap();
    let err = agent.call(&get(2), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, WasmError::BadReply(_)), "{err}");
    // Handshake and configure are not the caller's to send; the instance is not harmed.
    let err = agent
        .call(&common::configure(b""), &mut Vec::new())
        .unwrap_err();
    assert!(matches!(err, WasmError::Request(_)) && !err.is_fault());
}

#[test]
fn host_functions_are_bounded() {
    let mut agent = start("host_calls", WasmLimits::default());
    let mut reply = Vec::new();
    for cid in 1..=3 {
        agent.call(&get(cid), &mut reply).unwrap();
    }
    let s = agent.stats();
    assert_eq!((s.logs, s.logs_dropped), (3 * 8, 3 * 12));
    let m = agent.metrics();
    assert_eq!(m.len(), 1);
    assert_eq!(
        (m[0].name.as_str(), m[0].kind, m[0].value),
        ("events_total", MetricKind::Counter, 6)
    );
}
