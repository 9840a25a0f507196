//! In-process WASM agents: agent protocol v2 messages (`ProxyToAgent` in, `AgentToProxy` out,
//! byte for byte the UDS agents' payloads) run through a wasmtime instance on the shard's own
//! thread, for agent logic that must cost microseconds.
//!
//! * [`WasmEngine`]: one per process (`Send + Sync`). Compiler, pooling allocator, and the one
//!   epoch ticker thread that gives every call its wall-clock deadline. [`WasmEngine::load`]
//!   compiles a module once and checks it against the ABI (`docs/wasm-abi.md`).
//! * [`WasmModule`]: compiled code with its `InstancePre` and [`WasmLimits`], shared by shards.
//! * [`WasmAgent`]: one agent on one shard (`!Sync`, owned by the shard thread, no lock on a
//!   call): a serving instance plus warm spares, each in its own store; handshake and
//!   configure like a UDS agent; [`WasmAgent::call`] per event; fault replacement; reload.
//!
//! Limits per agent (defaults from the design, see [`limits`]): 64 MiB of memory, 10 M fuel and
//! 100 ms per call, 4 instances per shard. A call that breaks one returns a typed
//! [`WasmError`] and its instance is replaced; the shard applies the agent's fail mode and feeds
//! the failure to the dispatch's circuit breaker.
//!
//! This crate owns the sandbox and the ABI. It must not give a guest anything beyond its two
//! bounded imports (`turnstile_log`, `turnstile_metric`): no WASI, no files, no network, no
//! clock; and it must not share an instance or a store between threads.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod abi;
mod agent;
mod engine;
mod error;
mod host;
mod instance;
pub mod limits;

pub use agent::{AgentStats, WasmAgent};
pub use engine::{EngineConfig, WasmEngine, WasmLimits, WasmModule};
pub use error::WasmError;
pub use host::{Metric, MetricKind};
pub use turnstile_agentlink::Capabilities;

// The threading contract: one engine and its modules shared by every shard; an agent moved to
// its shard thread and used there only (it is not `Sync`: a `Cell` marker).
const _: () = {
    const fn send<T: Send>() {}
    const fn send_sync<T: Send + Sync>() {}
    send::<WasmAgent>();
    send_sync::<WasmEngine>();
    send_sync::<WasmModule>();
};
