//! The input is the JSON text of a kind 5 (`ProxyToAgent`) or kind 6 (`AgentToProxy`) frame: fed
//! to both decoders of `turnstile-agent-json`; whatever is accepted must parse and walk as Cap'n
//! Proto and round-trip through the encoder to a fixed point (see
//! `turnstile_wire_fuzz::fuzz_agent_json`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    turnstile_wire_fuzz::fuzz_agent_json(data);
});
