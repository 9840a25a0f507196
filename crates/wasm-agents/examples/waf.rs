//! The WASM waf: the UDS waf's rule set, in-process.
#![forbid(unsafe_code)]

turnstile_wasm_agent_sdk::export_agent!(turnstile_wasm_agents::waf::Waf::default());
