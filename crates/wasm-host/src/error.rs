//! The one error type of the WASM host.

/// Why loading, starting or calling a WASM agent failed.
///
/// Every error of [`crate::WasmAgent::call`] is a failed call: the shard applies the agent's
/// fail mode and reports it to the dispatch, which owns the circuit breaker, so repeated
/// failures open it — [`WasmError::BadReply`] as `CallFailure::Garbage`, the others as
/// `CallFailure::Transport`. [`WasmError::is_fault`] tells which ones threw the instance away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WasmError {
    /// The engine configuration is invalid, or the module belongs to another engine.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The module does not validate or compile.
    #[error("wasm module does not compile: {0}")]
    Compile(String),
    /// The module breaks the ABI (docs/wasm-abi.md): missing or mistyped exports, imports
    /// other than the host's, another ABI version, a refused input buffer.
    #[error("wasm module breaks the ABI: {0}")]
    Abi(String),
    /// The limits asked for are invalid (zero fuel, memory over the engine's cap, ...).
    #[error("wasm limits: {0}")]
    Limits(String),
    /// An instance could not be created (the process's pool is full, or start-up failed).
    #[error("cannot instantiate wasm agent: {0}")]
    Instantiate(String),
    /// More instances of one agent on one shard than its limit allows.
    #[error("{wanted} instances asked, at most {max} per agent per shard")]
    InstanceLimit {
        /// Instances asked for.
        wanted: u32,
        /// The limit.
        max: u32,
    },
    /// The agent refused the handshake, or its capabilities are unusable.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The agent refused its configuration.
    #[error("configuration refused: {field}: {error}")]
    Config {
        /// Field at fault, "" when not tied to one.
        field: String,
        /// What is wrong.
        error: String,
    },
    /// The caller's message is not a `ProxyToAgent` this API sends (the instance is untouched).
    #[error("bad request: {0}")]
    Request(String),
    /// The guest trapped (unreachable, out-of-bounds access, a panic, a host function refusing
    /// its arguments, stack overflow).
    #[error("wasm trap: {0}")]
    Trap(String),
    /// The call used up its fuel.
    #[error("wasm call ran out of fuel")]
    OutOfFuel,
    /// The call ran past its wall-clock deadline (epoch interruption).
    #[error("wasm call ran past its deadline")]
    Deadline,
    /// The guest asked for more memory than its limit.
    #[error("wasm instance hit its memory limit")]
    MemoryLimit,
    /// The reply is not a valid `AgentToProxy` for the message (or lies outside memory).
    #[error("bad reply from wasm agent: {0}")]
    BadReply(String),
    /// The guest answered with an error code (negative result of `turnstile_on_message`).
    #[error("wasm agent reported error code {0}")]
    Guest(i64),
}

impl WasmError {
    /// Whether the module failed (inside its sandbox, or breaking the ABI): from a call, the
    /// instance was thrown away, and this is an error the circuit breaker counts. Errors of the
    /// caller (`Request`) and of setup are not faults of a call.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            WasmError::Abi(_)
                | WasmError::Trap(_)
                | WasmError::OutOfFuel
                | WasmError::Deadline
                | WasmError::MemoryLimit
                | WasmError::BadReply(_)
                | WasmError::Guest(_)
        )
    }
}
