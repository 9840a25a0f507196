//! Every bound of the WASM host, named once. Units come last in the name.
//!
//! The per-agent defaults are the source design's `WasmAgentLimits` (64 MB memory, 100 ms per
//! call, 4 instances, 10 M fuel); each can be changed per agent with [`crate::WasmLimits`].

use std::time::Duration;

/// Default linear memory limit of one instance: 64 MiB.
pub const MEMORY_BYTES_DEFAULT: u64 = 64 << 20;

/// Largest memory limit any agent may ask for: 1 GiB. Keeps every guest address below 2^31, so
/// the packed `i64` result of `turnstile_on_message` is never negative for a real reply.
pub const MEMORY_BYTES_CAP: u64 = 1 << 30;

/// Default fuel per call (roughly WebAssembly instructions): 10 M.
pub const FUEL_PER_CALL_DEFAULT: u64 = 10_000_000;

/// Default wall-clock deadline of one call, enforced by epoch interruption.
pub const DEADLINE_DEFAULT: Duration = Duration::from_millis(100);

/// Default fuel of an instance's setup messages (construction and handshake, configure): 1 G.
/// Off the request path, and an agent's configure may compile (the waf builds a regex set).
pub const SETUP_FUEL_DEFAULT: u64 = 1_000_000_000;

/// Default wall-clock deadline of one setup message.
pub const SETUP_DEADLINE_DEFAULT: Duration = Duration::from_secs(2);

/// Default most instances of one agent alive on one shard (serving + spares).
pub const INSTANCES_PER_AGENT_DEFAULT: u32 = 4;

/// Default warm spare instances per agent per shard, promoted at once after a fault.
pub const SPARE_INSTANCES_DEFAULT: u32 = 1;

/// Default period of the process's epoch ticker: the deadline's resolution.
pub const EPOCH_TICK_DEFAULT: Duration = Duration::from_millis(1);

/// Shortest epoch tick accepted (a faster ticker costs CPU on every core's behalf).
pub const EPOCH_TICK_MIN: Duration = Duration::from_micros(100);

/// Default instance slots of the process's pooling allocator (all agents, all shards).
pub const POOL_INSTANCES_DEFAULT: u32 = 128;

/// Most instance slots a pool may be configured with.
pub const POOL_INSTANCES_MAX: u32 = 10_000;

/// WebAssembly stack of one call.
pub const WASM_STACK_BYTES: usize = 512 * 1024;

/// Largest module accepted by [`crate::WasmEngine::load`].
pub const MODULE_BYTES_MAX: usize = 64 << 20;

/// Table elements one instance may have (Rust modules use a few hundred).
pub const TABLE_ELEMENTS_MAX: usize = 20_000;

/// Input buffer asked of a new instance, so a typical message needs no `turnstile_alloc` call.
pub const INPUT_BYTES_INITIAL: u32 = 16 * 1024;

/// Largest message in either direction: the wire format's frame limit.
pub const MESSAGE_BYTES_MAX: usize = turnstile_wire::limits::FRAME_BYTES_MAX as usize;

/// Log lines one call may emit; the rest are dropped and counted.
pub const LOG_LINES_PER_CALL_MAX: u32 = 8;

/// Bytes of one log line kept; the rest is cut.
pub const LOG_BYTES_MAX: usize = 1024;

/// Distinct metric names one agent may report on one shard; new names past it are dropped.
pub const METRIC_NAMES_MAX: usize = 64;

/// Longest metric name.
pub const METRIC_NAME_BYTES_MAX: usize = 64;

/// Scratch space for building the handshake and configure messages.
pub const CONTROL_SCRATCH_BYTES: usize = 4096;

const _: () = assert!(MEMORY_BYTES_DEFAULT <= MEMORY_BYTES_CAP);
const _: () = assert!(SPARE_INSTANCES_DEFAULT < INSTANCES_PER_AGENT_DEFAULT);
const _: () = assert!((INPUT_BYTES_INITIAL as usize) < MESSAGE_BYTES_MAX);
