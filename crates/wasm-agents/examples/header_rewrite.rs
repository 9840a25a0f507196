//! The header-rewrite WASM agent: adds, sets and removes headers from its configuration.
#![forbid(unsafe_code)]

turnstile_wasm_agent_sdk::export_agent!(
    turnstile_wasm_agents::header_rewrite::HeaderRewrite::default()
);
