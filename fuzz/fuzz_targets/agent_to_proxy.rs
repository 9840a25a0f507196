//! The input is the payload of a `AgentToProxy` frame: parsed, read through the typed API (`which()`
//! and every field of the active member), walked, validated and, when valid, re-encoded and
//! re-read (see `turnstile_wire_fuzz::fuzz_payload`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnstile_wire::agent_to_proxy;

fuzz_target!(|data: &[u8]| {
    turnstile_wire_fuzz::fuzz_payload::<agent_to_proxy::Owned>(data);
});
