//! The benchmark agent: allows every request at once, costing only the protocol.

use turnstile_agent_sdk::{Agent, AgentInfo, Reply, RequestHeaders};

/// Allows everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Noop;

impl Agent for Noop {
    fn info(&self) -> AgentInfo {
        AgentInfo::new("noop", env!("CARGO_PKG_VERSION")).name("turnstile-agent-noop")
    }

    fn on_request_headers(&self, _request: &RequestHeaders<'_>, reply: Reply) {
        reply.allow();
    }
}
