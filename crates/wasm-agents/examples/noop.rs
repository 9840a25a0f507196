//! The noop WASM agent: allows everything (the benchmark agent).
#![forbid(unsafe_code)]

turnstile_wasm_agent_sdk::export_agent!(turnstile_wasm_agents::noop::Noop);
