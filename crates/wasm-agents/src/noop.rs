//! The benchmark agent: allows every request at once, costing only the ABI and the protocol.

use turnstile_wasm_agent_sdk::{Agent, AgentInfo, Decision, RequestHeaders};

/// Allows everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Noop;

impl Agent for Noop {
    fn info(&self) -> AgentInfo {
        AgentInfo::new("noop", env!("CARGO_PKG_VERSION")).name("turnstile-wasm-agent-noop")
    }

    fn on_request_headers(&mut self, _request: &RequestHeaders<'_>) -> Decision {
        Decision::allow()
    }
}
