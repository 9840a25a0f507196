//! Write a turnstile WASM agent: the same shape as the UDS agent SDK (`turnstile-agent-sdk`) —
//! an [`Agent`] trait with one method per event, each given a borrowed view of the event read in
//! place — compiled to `wasm32-unknown-unknown` and run in-process by `turnstile-wasm-host`.
//!
//! ```no_run
//! use turnstile_wasm_agent_sdk::{Agent, AgentInfo, Decision, RequestHeaders};
//!
//! /// Refuses /admin to everyone without the magic header.
//! #[derive(Default)]
//! struct AdminGate;
//!
//! impl Agent for AdminGate {
//!     fn info(&self) -> AgentInfo {
//!         AgentInfo::new("admin-gate", env!("CARGO_PKG_VERSION"))
//!     }
//!     fn on_request_headers(&mut self, req: &RequestHeaders<'_>) -> Decision {
//!         if req.path().starts_with("/admin") && req.header("x-admin") != Some(b"yes") {
//!             Decision::block(403, "admins only").rule("admin-1")
//!         } else {
//!             Decision::allow().set_request_header("x-gate", "passed")
//!         }
//!     }
//! }
//!
//! turnstile_wasm_agent_sdk::export_agent!(AdminGate::default());
//! ```
//!
//! The crate is a `cdylib` built with `cargo build --release --target wasm32-unknown-unknown`.
//!
//! **What this crate owns**: the guest half of the ABI in `docs/wasm-abi.md` — the input buffer
//! (`turnstile_alloc`), the dispatch of each `ProxyToAgent` message to the agent
//! (`turnstile_on_message`), the handshake and configure answers, and the `AgentToProxy` reply.
//! The messages are the agent protocol v2 of `schema/turnstile.capnp`, byte for byte the ones a
//! UDS agent gets, so an agent's logic moves between the two placements unchanged.
//!
//! **What it must not do**: reach anything outside the sandbox. There is no WASI: no files, no
//! network, no clock (the request's `timestamp_ms` is the only time), no threads. The only
//! imports are the host's bounded [`log`] and metric functions.
//!
//! **Calls** are synchronous and one at a time, so handlers take `&mut self` and keep state
//! without locks. State lives in the instance's memory: it is lost when the host replaces the
//! instance (after a trap or a limit hit) or reloads the module; the agent is then constructed
//! again, handshaken and configured.
//!
//! **`unsafe`**: the crate forbids it. Exporting and importing functions needs
//! `#[unsafe(no_mangle)]` and an `unsafe extern` block; those attributes live in the
//! [`export_agent!`] expansion only (three exports, two imports declared `safe`), and carry no
//! `unsafe` block: the guest never dereferences an address the host gave, it checks the address
//! against its own buffer.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod decision;
mod info;
pub mod limits;
#[doc(hidden)]
pub mod rt;
mod view;

pub use config::parse_config;
pub use decision::{Decision, Verdict};
pub use info::{AgentInfo, ConfigError, EventType};
pub use rt::MetricKind;
pub use turnstile_wire::turnstile_capnp::{GuardrailKind, LogLevel};
pub use view::{
    BodyChunk, GuardrailInspect, Headers, HeadersIter, Metadata, RequestComplete, RequestHeaders,
    RequestKey, ResponseHeaders, WebSocketFrame,
};

/// The ABI version this SDK implements (`turnstile_abi_version`).
pub const ABI_VERSION: i32 = 1;

#[doc(hidden)]
pub use rt as __rt;

/// A WASM agent: one method per event of agent protocol v2.
///
/// Only [`info`](Agent::info) and [`on_request_headers`](Agent::on_request_headers) are
/// required; every other event is allowed by default.
pub trait Agent: 'static {
    /// Identity and capabilities, sent at every handshake (after construction, before
    /// [`configure`](Agent::configure)).
    fn info(&self) -> AgentInfo;

    /// Applies a configuration document (TOML or JSON text; see [`parse_config`]). An error
    /// refuses the configuration: the host keeps the previous one (or refuses to load the agent).
    fn configure(&mut self, config: &[u8]) -> Result<(), ConfigError> {
        let _ = config;
        Ok(())
    }

    /// A request's headers arrived.
    fn on_request_headers(&mut self, request: &RequestHeaders<'_>) -> Decision;

    /// A request body chunk arrived (agents that subscribe `requestBody`).
    fn on_request_body(&mut self, chunk: &BodyChunk<'_>) -> Decision {
        let _ = chunk;
        Decision::allow()
    }

    /// The upstream's response headers arrived (agents that subscribe `responseHeaders`).
    fn on_response_headers(&mut self, response: &ResponseHeaders<'_>) -> Decision {
        let _ = response;
        Decision::allow()
    }

    /// A response body chunk arrived (agents that subscribe `responseBody`).
    fn on_response_body(&mut self, chunk: &BodyChunk<'_>) -> Decision {
        let _ = chunk;
        Decision::allow()
    }

    /// A WebSocket frame passed (agents that subscribe `websocketFrame`).
    fn on_websocket_frame(&mut self, frame: &WebSocketFrame<'_>) -> Decision {
        let _ = frame;
        Decision::allow()
    }

    /// Content to inspect (agents that subscribe `guardrailInspect`).
    fn on_guardrail(&mut self, inspect: &GuardrailInspect<'_>) -> Decision {
        let _ = inspect;
        Decision::allow()
    }

    /// The request finished (agents that subscribe `requestComplete`).
    fn on_complete(&mut self, complete: &RequestComplete<'_>) -> Decision {
        let _ = complete;
        Decision::allow()
    }

    /// turnstile cancelled an open request: drop per-request state here.
    fn on_cancel(&mut self, key: RequestKey) {
        let _ = key;
    }
}

/// Sends a log line to turnstile's log (cut to [`limits::LOG_BYTES_MAX`] bytes; the host keeps
/// a few lines per call and counts the rest as dropped).
pub fn log(level: LogLevel, message: &str) {
    rt::log(level, message);
}

/// Adds `by` to the counter `name` (at most [`limits::METRIC_NAME_BYTES_MAX`] bytes).
pub fn counter_add(name: &str, by: i64) {
    rt::metric(MetricKind::CounterAdd, name, by);
}

/// Sets the gauge `name` (at most [`limits::METRIC_NAME_BYTES_MAX`] bytes) to `value`.
pub fn gauge_set(name: &str, value: i64) {
    rt::metric(MetricKind::GaugeSet, name, value);
}

/// Exports an agent from a `cdylib`: `export_agent!(MyAgent::default())`. The expression builds
/// the agent; it runs once per instance, at the first message (the handshake).
///
/// Generates the ABI's exports `turnstile_abi_version`, `turnstile_alloc` and
/// `turnstile_on_message`, and imports `turnstile.turnstile_log` and `turnstile.turnstile_metric`
/// (on `wasm32` only; a host build gets no-op imports so agent crates also build and test as
/// plain Rust). Use it once per crate.
#[macro_export]
macro_rules! export_agent {
    ($make:expr) => {
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = "turnstile")]
        unsafe extern "C" {
            safe fn turnstile_log(level: i32, ptr: i32, len: i32);
            safe fn turnstile_metric(kind: i32, name_ptr: i32, name_len: i32, value: i64);
        }

        #[cfg(target_arch = "wasm32")]
        const __TURNSTILE_HOST: $crate::__rt::Host = $crate::__rt::Host {
            log: turnstile_log,
            metric: turnstile_metric,
        };
        #[cfg(not(target_arch = "wasm32"))]
        const __TURNSTILE_HOST: $crate::__rt::Host = $crate::__rt::Host::NONE;

        fn __turnstile_make_agent() -> ::std::boxed::Box<dyn $crate::Agent> {
            ::std::boxed::Box::new($make)
        }

        /// ABI export: the ABI version this agent implements.
        #[unsafe(no_mangle)]
        pub extern "C" fn turnstile_abi_version() -> i32 {
            $crate::ABI_VERSION
        }

        /// ABI export: the address of an input buffer of at least `len` bytes.
        #[unsafe(no_mangle)]
        pub extern "C" fn turnstile_alloc(len: i32) -> i32 {
            $crate::__rt::alloc(len)
        }

        /// ABI export: handles one `ProxyToAgent` message, returns the reply's place.
        #[unsafe(no_mangle)]
        pub extern "C" fn turnstile_on_message(ptr: i32, len: i32) -> i64 {
            $crate::__rt::on_message(ptr, len, __TURNSTILE_HOST, __turnstile_make_agent)
        }
    };
}
