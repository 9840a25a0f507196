//! Counting-allocator test: after warm-up, echo requests through one shard's front door must not
//! allocate in turnstile's own code. What remains is named: each allocation is attributed to the
//! innermost crate on its stack, and only the crates listed in `ALLOWED` may allocate.

mod pair;

use std::collections::BTreeMap;
use std::sync::Mutex;

use pair::{Pair, server_cfg};
use turnstile_frontdoor::BuiltinHandler;
use turnstile_uring::counting::{self, CountingAlloc};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc::new();

static SAMPLES: Mutex<Vec<String>> = Mutex::new(Vec::new());
const SAMPLES_MAX: usize = 400;

fn sample() {
    if let Ok(mut s) = SAMPLES.lock()
        && s.len() < SAMPLES_MAX
    {
        s.push(std::backtrace::Backtrace::force_capture().to_string());
    }
}

/// Crates whose own code may still allocate per request, and why.
const ALLOWED: &[(&str, &str)] = &[
    (
        "quinn_proto",
        "per-packet and per-stream state inside quinn-proto (stream maps, received-data Bytes, ACK ranges, pending frames)",
    ),
    (
        "capnp",
        "capnp's message builder keeps its segment table in a one-element Vec: one small allocation per response",
    ),
    ("rustls", "packet protection inside the TLS session"),
    ("ring", "packet protection"),
    ("bytes", "BytesMut/Bytes growth requested by quinn-proto"),
];

/// The innermost frame that belongs to a crate we care about.
fn owner(bt: &str) -> String {
    for line in bt.lines() {
        let line = line.trim();
        let Some(sym) = line.split_once(": ").map(|(_, s)| s) else {
            continue;
        };
        for krate in [
            "quinn_proto",
            "capnp",
            "rustls",
            "ring",
            "bytes",
            "turnstile_frontdoor",
            "turnstile_wire",
        ] {
            if sym.starts_with(krate) || sym.starts_with(&format!("<{krate}")) {
                return krate.to_string();
            }
        }
    }
    "unknown".to_string()
}

#[test]
fn echo_hot_path_allocations_are_named() {
    let mut h = BuiltinHandler::default();
    let mut p = Pair::new(server_cfg());
    p.connect(&mut h);
    counting::set_sampler(sample);
    p.server_scope = counting::set_counting;
    let frame = p.echo_frame(1, b"0123456789abcdef");

    // Warm-up: pools, maps and buffers reach their steady size.
    for _ in 0..2_000 {
        let id = p.send(&frame, true);
        p.drive(&mut h);
        assert!(p.recv(id).1);
    }
    counting::reset();
    SAMPLES.lock().unwrap().clear();

    let requests = 10_000u64;
    for _ in 0..requests {
        let id = p.send(&frame, true);
        p.drive(&mut h);
        let (bytes, fin) = p.recv(id);
        assert!(fin && !bytes.is_empty());
    }
    p.server_scope = |_| {};
    let total = counting::count();

    let mut by_owner: BTreeMap<String, usize> = BTreeMap::new();
    let samples = SAMPLES.lock().unwrap().clone();
    for bt in &samples {
        *by_owner.entry(owner(bt)).or_default() += 1;
    }
    println!(
        "server-side allocations: {total} for {requests} echo requests ({:.2} per request)",
        total as f64 / requests as f64
    );
    for (krate, n) in &by_owner {
        let why = ALLOWED
            .iter()
            .find(|(k, _)| k == krate)
            .map_or("NOT ALLOWED", |(_, why)| why);
        println!("  {krate}: {n} of {} sampled: {why}", samples.len());
    }
    for krate in by_owner.keys() {
        assert!(
            ALLOWED.iter().any(|(k, _)| k == krate),
            "allocation owned by {krate} on the hot path; one sample:\n{}",
            samples.iter().find(|bt| &owner(bt) == krate).unwrap()
        );
    }
}
