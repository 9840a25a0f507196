//! The process's one [`WasmEngine`] (compiler, pooling allocator, epoch ticker) and the
//! [`WasmModule`]s it loads: compiled code plus an `InstancePre`, shared by every shard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Module,
    PoolingAllocationConfig, ValType,
};

use crate::abi::{EXPORT_ABI_VERSION, EXPORT_ALLOC, EXPORT_MEMORY, EXPORT_ON_MESSAGE};
use crate::error::WasmError;
use crate::host::{HostState, linker};
use crate::limits::{
    DEADLINE_DEFAULT, EPOCH_TICK_DEFAULT, EPOCH_TICK_MIN, FUEL_PER_CALL_DEFAULT,
    INSTANCES_PER_AGENT_DEFAULT, MEMORY_BYTES_CAP, MEMORY_BYTES_DEFAULT, MODULE_BYTES_MAX,
    POOL_INSTANCES_DEFAULT, POOL_INSTANCES_MAX, SETUP_DEADLINE_DEFAULT, SETUP_FUEL_DEFAULT,
    SPARE_INSTANCES_DEFAULT, WASM_STACK_BYTES,
};

/// Settings of the process's engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Period of the epoch ticker thread: the resolution of every call's deadline.
    pub epoch_tick: Duration,
    /// Instance slots of the pooling allocator, for every agent on every shard together.
    pub pool_instances: u32,
    /// Largest memory limit an agent may ask for (at most [`MEMORY_BYTES_CAP`]).
    pub memory_bytes_max: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            epoch_tick: EPOCH_TICK_DEFAULT,
            pool_instances: POOL_INSTANCES_DEFAULT,
            memory_bytes_max: MEMORY_BYTES_DEFAULT,
        }
    }
}

/// Limits of one agent, applied to each of its instances and calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmLimits {
    /// Linear memory of one instance.
    pub memory_bytes: u64,
    /// Fuel of one call (roughly instructions).
    pub fuel_per_call: u64,
    /// Wall-clock deadline of one call (rounded up to whole epoch ticks).
    pub deadline: Duration,
    /// Fuel of one setup message (handshake, with the agent's construction, and configure).
    pub setup_fuel: u64,
    /// Wall-clock deadline of one setup message.
    pub setup_deadline: Duration,
    /// Most instances of this agent alive on one shard (serving + spares).
    pub instances_max: u32,
    /// Warm spare instances kept per shard, promoted at once after a fault.
    pub spare_instances: u32,
}

impl Default for WasmLimits {
    fn default() -> Self {
        WasmLimits {
            memory_bytes: MEMORY_BYTES_DEFAULT,
            fuel_per_call: FUEL_PER_CALL_DEFAULT,
            deadline: DEADLINE_DEFAULT,
            setup_fuel: SETUP_FUEL_DEFAULT,
            setup_deadline: SETUP_DEADLINE_DEFAULT,
            instances_max: INSTANCES_PER_AGENT_DEFAULT,
            spare_instances: SPARE_INSTANCES_DEFAULT,
        }
    }
}

/// The thread that advances the engine's epoch every tick; stops when the last owner is gone.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The process's WebAssembly engine: one per process, shared by every shard (`Send + Sync`).
///
/// Owns the compiler, the pooling allocator's slots and the epoch ticker thread. Loading
/// ([`WasmEngine::load`]) compiles a module once for every shard; each shard then runs it in
/// its own [`crate::WasmAgent`].
pub struct WasmEngine {
    engine: Engine,
    tick: Duration,
    memory_bytes_max: u64,
    ticker: Arc<Ticker>,
}

impl std::fmt::Debug for WasmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmEngine")
            .field("tick", &self.tick)
            .field("memory_bytes_max", &self.memory_bytes_max)
            .finish()
    }
}

impl WasmEngine {
    /// Builds the engine (fuel, epoch interruption, pooling allocator, no WASI) and starts the
    /// epoch ticker thread.
    pub fn new(cfg: EngineConfig) -> Result<Self, WasmError> {
        if cfg.epoch_tick < EPOCH_TICK_MIN {
            return Err(WasmError::Engine(format!(
                "epoch tick {:?} is below {EPOCH_TICK_MIN:?}",
                cfg.epoch_tick
            )));
        }
        if cfg.memory_bytes_max == 0 || cfg.memory_bytes_max > MEMORY_BYTES_CAP {
            return Err(WasmError::Engine(format!(
                "memory_bytes_max must be 1..={MEMORY_BYTES_CAP}"
            )));
        }
        if !(1..=POOL_INSTANCES_MAX).contains(&cfg.pool_instances) {
            return Err(WasmError::Engine(format!(
                "pool_instances must be 1..={POOL_INSTANCES_MAX}"
            )));
        }
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(cfg.pool_instances)
            .total_memories(cfg.pool_instances)
            .total_tables(cfg.pool_instances)
            // Checked above to be at most 1 GiB.
            .max_memory_size(cfg.memory_bytes_max as usize);
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(WASM_STACK_BYTES)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (engine, stop, tick) = (engine.clone(), stop.clone(), cfg.epoch_tick);
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| WasmError::Engine(format!("cannot start the epoch ticker: {e}")))?
        };
        Ok(WasmEngine {
            engine,
            tick: cfg.epoch_tick,
            memory_bytes_max: cfg.memory_bytes_max,
            ticker: Arc::new(Ticker {
                stop,
                thread: Some(thread),
            }),
        })
    }

    /// The epoch tick.
    pub fn epoch_tick(&self) -> Duration {
        self.tick
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `wasm_bytes` (binary, or text with the `wat` syntax) as agent `id`, checks its
    /// exports and imports against the ABI, and prepares its instantiation. Every shard then
    /// instantiates it without compiling again.
    pub fn load(
        &self,
        id: &str,
        wasm_bytes: &[u8],
        limits: WasmLimits,
    ) -> Result<Arc<WasmModule>, WasmError> {
        check_limits(self.tick, self.memory_bytes_max, &limits)?;
        if wasm_bytes.len() > MODULE_BYTES_MAX {
            return Err(WasmError::Compile(format!(
                "{} bytes, at most {MODULE_BYTES_MAX}",
                wasm_bytes.len()
            )));
        }
        let module = Module::new(&self.engine, wasm_bytes)
            .map_err(|e| WasmError::Compile(format!("{e:#}")))?;
        check_exports(&module)?;
        let pre = linker(&self.engine)?
            .instantiate_pre(&module)
            .map_err(|e| WasmError::Abi(format!("{e:#}")))?;
        Ok(Arc::new(WasmModule {
            id: id.into(),
            call: Budget::new(self.tick, limits.fuel_per_call, limits.deadline),
            setup: Budget::new(self.tick, limits.setup_fuel, limits.setup_deadline),
            limits,
            pre,
            tick: self.tick,
            memory_bytes_max: self.memory_bytes_max,
            _ticker: self.ticker.clone(),
        }))
    }
}

/// What one guest call may use: fuel, and a deadline in whole epoch ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    pub fuel: u64,
    pub ticks: u64,
}

impl Budget {
    /// `fuel` and the whole ticks covering `deadline` (at least one).
    fn new(tick: Duration, fuel: u64, deadline: Duration) -> Self {
        let tick_ns = tick.as_nanos().max(1);
        let ticks = u64::try_from(deadline.as_nanos().div_ceil(tick_ns))
            .unwrap_or(u64::MAX)
            .max(1);
        Budget { fuel, ticks }
    }
}

fn check_limits(tick: Duration, memory_bytes_max: u64, l: &WasmLimits) -> Result<(), WasmError> {
    let bad = |what: String| Err(WasmError::Limits(what));
    if l.memory_bytes == 0 || l.memory_bytes > memory_bytes_max {
        return bad(format!(
            "memory_bytes {} must be 1..={memory_bytes_max} (the engine's memory_bytes_max)",
            l.memory_bytes
        ));
    }
    if l.fuel_per_call == 0 || l.setup_fuel == 0 {
        return bad("fuel_per_call and setup_fuel must not be 0".into());
    }
    if l.deadline < tick || l.setup_deadline < tick {
        return bad(format!(
            "deadline {:?} and setup_deadline {:?} must be at least the epoch tick {tick:?}",
            l.deadline, l.setup_deadline
        ));
    }
    if l.instances_max == 0 || l.spare_instances >= l.instances_max {
        return Err(WasmError::InstanceLimit {
            wanted: l.spare_instances.saturating_add(1),
            max: l.instances_max,
        });
    }
    Ok(())
}

/// A compiled agent module with its limits, ready to instantiate on any shard (`Send + Sync`,
/// shared as `Arc`). Keeps the engine's epoch ticker running while it exists.
pub struct WasmModule {
    id: Arc<str>,
    limits: WasmLimits,
    call: Budget,
    setup: Budget,
    pre: InstancePre<HostState>,
    tick: Duration,
    memory_bytes_max: u64,
    _ticker: Arc<Ticker>,
}

impl std::fmt::Debug for WasmModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmModule")
            .field("id", &self.id)
            .field("limits", &self.limits)
            .finish()
    }
}

impl WasmModule {
    /// The agent id it was loaded as.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its limits.
    pub fn limits(&self) -> &WasmLimits {
        &self.limits
    }

    /// The same compiled module with other limits (no compilation: shares the code).
    pub fn with_limits(&self, limits: WasmLimits) -> Result<Arc<WasmModule>, WasmError> {
        check_limits(self.tick, self.memory_bytes_max, &limits)?;
        Ok(Arc::new(WasmModule {
            id: self.id.clone(),
            call: Budget::new(self.tick, limits.fuel_per_call, limits.deadline),
            setup: Budget::new(self.tick, limits.setup_fuel, limits.setup_deadline),
            limits,
            pre: self.pre.clone(),
            tick: self.tick,
            memory_bytes_max: self.memory_bytes_max,
            _ticker: self._ticker.clone(),
        }))
    }

    pub(crate) fn id_arc(&self) -> Arc<str> {
        self.id.clone()
    }

    pub(crate) fn call_budget(&self) -> Budget {
        self.call
    }

    pub(crate) fn setup_budget(&self) -> Budget {
        self.setup
    }

    pub(crate) fn pre(&self) -> &InstancePre<HostState> {
        &self.pre
    }

    pub(crate) fn engine(&self) -> &Engine {
        self.pre.module().engine()
    }
}

fn check_exports(module: &Module) -> Result<(), WasmError> {
    let abi = |what: String| Err(WasmError::Abi(what));
    match module.get_export(EXPORT_MEMORY) {
        Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {}
        _ => return abi(format!("no 32-bit, unshared `{EXPORT_MEMORY}` export")),
    }
    let funcs: [(&str, &[ValType], &[ValType]); 3] = [
        (EXPORT_ABI_VERSION, &[], &[ValType::I32]),
        (EXPORT_ALLOC, &[ValType::I32], &[ValType::I32]),
        (
            EXPORT_ON_MESSAGE,
            &[ValType::I32, ValType::I32],
            &[ValType::I64],
        ),
    ];
    for (name, params, results) in funcs {
        let Some(ExternType::Func(f)) = module.get_export(name) else {
            return abi(format!("no function export `{name}`"));
        };
        let same = |a: &mut dyn ExactSizeIterator<Item = ValType>, b: &[ValType]| {
            a.len() == b.len() && a.zip(b).all(|(x, y)| ValType::eq(&x, y))
        };
        if !same(&mut f.params(), params) || !same(&mut f.results(), results) {
            return abi(format!(
                "`{name}` has type {f:?}, expected {params:?} -> {results:?}"
            ));
        }
    }
    Ok(())
}
