//! The seed corpus of the `agent_json` fuzz target (see `fuzz/README.md`): the JSON text of one
//! message per union member of both agent roots, and texts that must be refused.
//!
//! `seeds_decode` checks that every good seed is accepted by its decoder and every bad one by
//! neither; `write_fuzz_seeds` (ignored) writes them to `fuzz/corpus/agent_json/seed-*`:
//!
//! ```sh
//! TURNSTILE_WRITE_FUZZ_SEEDS=1 cargo test -p turnstile-agent-json --test fuzz_seeds -- --ignored
//! ```
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::fixtures::{
    AGENT_TO_PROXY_MEMBERS, PROXY_TO_AGENT_MEMBERS, agent_to_proxy_member, proxy_to_agent_member,
};
use common::payload;
use turnstile_agent_json::{
    agent_to_proxy_from_json, agent_to_proxy_to_json, proxy_to_agent_from_json,
    proxy_to_agent_to_json,
};
use turnstile_wire::turnstile_capnp::{agent_to_proxy, proxy_to_agent};

const ENV_WRITE: &str = "TURNSTILE_WRITE_FUZZ_SEEDS";

/// (file name after `seed-`, JSON text).
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (i, member) in PROXY_TO_AGENT_MEMBERS.iter().enumerate() {
        let p = payload::<proxy_to_agent::Owned>(|b| proxy_to_agent_member(i as u16 + 1, b));
        let mut json = Vec::new();
        proxy_to_agent_to_json(&p, &mut json).unwrap();
        seeds.push((format!("p2a-{member}"), json));
    }
    for (i, member) in AGENT_TO_PROXY_MEMBERS.iter().enumerate() {
        let p = payload::<agent_to_proxy::Owned>(|b| agent_to_proxy_member(i as u16 + 1, b));
        let mut json = Vec::new();
        agent_to_proxy_to_json(&p, &mut json).unwrap();
        seeds.push((format!("a2p-{member}"), json));
    }
    let depth = "[".repeat(40) + &"]".repeat(40);
    for (name, text) in [
        (
            "bad-unknown-key",
            r#"{"requestHeaders":{"request":{"methd":"GET"}}}"#.to_owned(),
        ),
        (
            "bad-two-members",
            r#"{"drain":{},"response":{}}"#.to_owned(),
        ),
        ("bad-enum", r#"{"log":{"level":"warning"}}"#.to_owned()),
        ("bad-type", r#"{"correlationId":"7"}"#.to_owned()),
        ("bad-too-deep", format!(r#"{{"log":{{"fields":{depth}}}}}"#)),
        (
            "bad-truncated",
            r#"{"correlationId":7,"requestHeaders":{"#.to_owned(),
        ),
        (
            "bad-base64",
            r#"{"configure":{"config":{"base64":"/wB"}}}"#.to_owned(),
        ),
    ] {
        seeds.push((name.to_owned(), text.into_bytes()));
    }
    seeds
}

#[test]
fn seeds_decode() {
    let all = seeds();
    assert!(all.len() >= PROXY_TO_AGENT_MEMBERS.len() + AGENT_TO_PROXY_MEMBERS.len() + 5);
    for (name, text) in &all {
        let p2a = proxy_to_agent_from_json(text, &mut Vec::new()).is_ok();
        let a2p = agent_to_proxy_from_json(text, &mut Vec::new()).is_ok();
        if name.starts_with("bad-") {
            assert!(!p2a && !a2p, "{name} is accepted");
        } else if name.starts_with("p2a-") {
            assert!(p2a, "{name} is refused");
        } else {
            assert!(a2p, "{name} is refused");
        }
    }
}

#[test]
#[ignore = "writes fuzz/corpus/agent_json/seed-*; run with TURNSTILE_WRITE_FUZZ_SEEDS=1"]
fn write_fuzz_seeds() {
    if std::env::var_os(ENV_WRITE).is_none() {
        eprintln!("{ENV_WRITE} is not set: nothing written");
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/agent_json");
    std::fs::create_dir_all(&dir).unwrap();
    // Replace the committed seeds (only those: found inputs are left alone).
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let is_seed = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("seed-"));
        if is_seed {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let all = seeds();
    for (name, text) in &all {
        std::fs::write(dir.join(format!("seed-{name}")), text).unwrap();
    }
    eprintln!("wrote {} seeds under {}", all.len(), dir.display());
}
