//! Write a turnstile agent in about 20 lines.
//!
//! An agent is a process listening on a Unix domain socket; turnstile connects (several
//! connections per shard) and speaks agent protocol v2 (`schema/turnstile.capnp`). This crate
//! does the protocol: the handshake, many requests multiplexed per connection and answered in
//! any order, cancellation, health and metrics reports, flow control, drain and shutdown, and
//! the limits on what turnstile may send. The agent implements [`Agent`]: one method per event,
//! each given a borrowed view of the event (read in place, no copies) and a [`Reply`].
//!
//! ```no_run
//! use turnstile_agent_sdk::{Agent, AgentInfo, Reply, RequestHeaders, ServeOptions};
//!
//! /// Refuses /admin to everyone without the magic header.
//! struct AdminGate;
//!
//! impl Agent for AdminGate {
//!     fn info(&self) -> AgentInfo {
//!         AgentInfo::new("admin-gate", env!("CARGO_PKG_VERSION"))
//!     }
//!
//!     fn on_request_headers(&self, req: &RequestHeaders<'_>, reply: Reply) {
//!         if req.path().starts_with("/admin") && req.header("x-admin") != Some(b"yes") {
//!             reply.rule("admin-1").block(403, "admins only");
//!         } else {
//!             reply.set_request_header("x-gate", "passed").allow();
//!         }
//!     }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // --socket PATH (or $TURNSTILE_AGENT_SOCKET), --config FILE, --busy-poll
//!     turnstile_agent_sdk::serve(AdminGate, ServeOptions::from_args()?)?;
//!     Ok(())
//! }
//! ```
//!
//! **Threads.** Each connection has a reader thread that calls the agent's methods in frame
//! order. Methods take `&self` (the agent is shared by every connection, so state such as rate
//! limit buckets is shared too: use atomics or locks inside). A method that must wait answers
//! later: move the [`Reply`] to another thread or a [`Timer`]; the reader goes on with the next
//! frames. Replies written during one read are batched into one write.
//!
//! **Bodies.** An agent that subscribes `requestBody` gets chunks with the request's
//! correlation id. Every event gets exactly one answer; [`Reply::need_more`] means "no decision
//! yet, send more" and keeps the request open.
//!
//! **Encoding.** The handshake is always Cap'n Proto. turnstile lists the encodings it accepts,
//! preferred first, and the SDK picks the first it speaks: `capnp`, or `json`, the debugging
//! mode of the protocol (frames of kind 5 and 6, converted by `turnstile-agent-json` at the
//! connection's edge). Handlers see the same views and write the same replies either way; the
//! Cap'n Proto path pays nothing for JSON.
//!
//! **Failure.** A frame that does not decode, exceeds
//! [`turnstile_wire::limits::FRAME_BYTES_MAX`] or breaks the protocol closes that connection with
//! a log line; the process and the other connections go on. A handler that panics is logged and
//! its reply answered as dropped ([`reply::DROPPED_REPLY_TAG`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod conn;
mod info;
pub mod limits;
mod log;
mod options;
mod reader;
pub mod reply;
mod server;
mod stats;
mod timer;
mod view;

pub use config::parse_config;
pub use info::{AgentInfo, ConfigError, EventType, Features, Health, Interest, Limits};
pub use options::{ArgsError, SOCKET_ENV, ServeOptions, USAGE};
pub use reply::{Connection, LogLevel, Reply};
pub use server::Server;
pub use timer::Timer;
pub use turnstile_wire::turnstile_capnp::GuardrailKind;
pub use view::{
    BodyChunk, CancelReason, GuardrailInspect, Headers, HeadersIter, Metadata, RequestComplete,
    RequestHeaders, RequestKey, ResponseHeaders, WebSocketFrame,
};

/// An agent: one method per event of agent protocol v2.
///
/// Only [`info`](Agent::info) and [`on_request_headers`](Agent::on_request_headers) are
/// required; every other event is allowed by default. Each event method gets a [`Reply`] that
/// must be answered once, now or later (see [`Reply`]).
pub trait Agent: Send + Sync + 'static {
    /// Identity and capabilities, sent at every handshake (so they may follow the config).
    fn info(&self) -> AgentInfo;

    /// Applies a configuration document (TOML or JSON text; see [`parse_config`]). Called with
    /// the `--config` file at start and for each new document turnstile sends. An error is sent
    /// to turnstile as `configError` and the previous configuration stays.
    fn configure(&self, config: &[u8]) -> Result<(), ConfigError> {
        let _ = config;
        Ok(())
    }

    /// A request's headers arrived.
    fn on_request_headers(&self, request: &RequestHeaders<'_>, reply: Reply);

    /// A request body chunk arrived (agents that subscribe `requestBody`).
    fn on_request_body(&self, chunk: &BodyChunk<'_>, reply: Reply) {
        let _ = chunk;
        reply.allow();
    }

    /// The upstream's response headers arrived (agents that subscribe `responseHeaders`).
    fn on_response_headers(&self, response: &ResponseHeaders<'_>, reply: Reply) {
        let _ = response;
        reply.allow();
    }

    /// A response body chunk arrived (agents that subscribe `responseBody`).
    fn on_response_body(&self, chunk: &BodyChunk<'_>, reply: Reply) {
        let _ = chunk;
        reply.allow();
    }

    /// A WebSocket frame passed (agents that subscribe `websocketFrame`).
    fn on_websocket_frame(&self, frame: &WebSocketFrame<'_>, reply: Reply) {
        let _ = frame;
        reply.allow();
    }

    /// Content to inspect (agents that subscribe `guardrailInspect`).
    fn on_guardrail(&self, inspect: &GuardrailInspect<'_>, reply: Reply) {
        let _ = inspect;
        reply.allow();
    }

    /// The request finished (agents that subscribe `requestComplete`).
    fn on_complete(&self, complete: &RequestComplete<'_>, reply: Reply) {
        let _ = complete;
        reply.allow();
    }

    /// turnstile cancelled an open request (or its connection closed): any reply for it is
    /// discarded; drop per-request state here.
    fn on_cancel(&self, key: RequestKey, reason: &CancelReason) {
        let _ = (key, reason);
    }

    /// Current health, sent after each handshake and at every report interval.
    fn health(&self) -> Health {
        Health::Healthy
    }
}

/// Serves `agent` on `opts.socket` until SIGTERM or SIGINT (with `opts.handle_signals`, the
/// default), then stops gracefully, removes the socket file and returns `Ok`. Without
/// `handle_signals` it serves until the process ends.
///
/// Errors: the `--config` file cannot be read or is refused, or the socket cannot be bound.
pub fn serve(agent: impl Agent, opts: ServeOptions) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let handle_signals = opts.handle_signals;
    // Register before binding, so a signal sent as soon as the socket exists is not lost.
    let mut signals = if handle_signals {
        Some(signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?)
    } else {
        None
    };
    let server = Server::start(agent, opts)?;
    match signals.as_mut() {
        Some(signals) => {
            if let Some(sig) = signals.forever().next() {
                log::log!("signal {sig}: stopping");
            }
            server.stop();
        }
        None => loop {
            std::thread::park();
        },
    }
    Ok(())
}
