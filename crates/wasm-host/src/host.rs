//! What the host gives a guest: the store's data (limits and counters of one instance) and the
//! only two imports, `turnstile_log` and `turnstile_metric`, both bounded. No WASI: nothing else
//! can be imported, so a module cannot reach files, sockets or clocks.

use std::sync::Arc;

use wasmtime::{Caller, Engine, Extern, Linker, ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use crate::abi::{EXPORT_MEMORY, IMPORT_LOG, IMPORT_METRIC, IMPORT_MODULE};
use crate::error::WasmError;
use crate::limits::{
    LOG_BYTES_MAX, LOG_LINES_PER_CALL_MAX, METRIC_NAME_BYTES_MAX, METRIC_NAMES_MAX,
    TABLE_ELEMENTS_MAX,
};

/// What a metric reported by a guest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic: reports add to it.
    Counter,
    /// Reports set it.
    Gauge,
}

/// One metric reported by a guest (`turnstile_metric`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// Name as the guest gave it.
    pub name: String,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// Current value.
    pub value: i64,
}

/// The metrics of an agent, bounded to [`METRIC_NAMES_MAX`] names.
#[derive(Debug, Default, Clone)]
pub(crate) struct MetricTable {
    pub entries: Vec<Metric>,
    pub dropped: u64,
}

impl MetricTable {
    pub fn report(&mut self, kind: MetricKind, name: &str, value: i64) {
        if let Some(m) = self
            .entries
            .iter_mut()
            .find(|m| m.name == name && m.kind == kind)
        {
            match kind {
                MetricKind::Counter => m.value = m.value.saturating_add(value),
                MetricKind::Gauge => m.value = value,
            }
            return;
        }
        if self.entries.len() >= METRIC_NAMES_MAX {
            self.dropped += 1;
            return;
        }
        self.entries.push(Metric {
            name: name.to_owned(),
            kind,
            value,
        });
    }

    /// Folds `other` in: counters add up, gauges take `other`'s value.
    pub fn merge(&mut self, other: &MetricTable) {
        for m in &other.entries {
            self.report(m.kind, &m.name, m.value);
        }
        self.dropped += other.dropped;
    }
}

/// Counters of one instance, summed into the agent's [`crate::AgentStats`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HostCounters {
    pub logs: u64,
    pub logs_dropped: u64,
}

/// Wasmtime's [`StoreLimits`], remembering whether it refused memory (so a trap that follows
/// is reported as [`WasmError::MemoryLimit`]), and turning a refused growth into a trap.
pub(crate) struct Limiter {
    inner: StoreLimits,
    pub memory_refused: bool,
}

impl Limiter {
    pub fn new(memory_bytes: u64) -> Self {
        let memory = usize::try_from(memory_bytes).unwrap_or(usize::MAX);
        Limiter {
            inner: StoreLimitsBuilder::new()
                .memory_size(memory)
                .table_elements(TABLE_ELEMENTS_MAX)
                .instances(1)
                .tables(1)
                .memories(1)
                .build(),
            memory_refused: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if self.inner.memory_growing(current, desired, maximum)? {
            return Ok(true);
        }
        self.memory_refused = true;
        Err(wasmtime::format_err!("memory limit: {desired} bytes asked"))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// The data of one instance's store.
pub(crate) struct HostState {
    pub agent_id: Arc<str>,
    pub limiter: Limiter,
    pub logs_left: u32,
    pub counters: HostCounters,
    pub metrics: MetricTable,
}

impl HostState {
    pub fn new(agent_id: Arc<str>, memory_bytes: u64) -> Self {
        HostState {
            agent_id,
            limiter: Limiter::new(memory_bytes),
            logs_left: LOG_LINES_PER_CALL_MAX,
            counters: HostCounters::default(),
            metrics: MetricTable::default(),
        }
    }

    /// Resets the per-call state before a call.
    pub fn begin_call(&mut self) {
        self.logs_left = LOG_LINES_PER_CALL_MAX;
        self.limiter.memory_refused = false;
    }
}

/// The guest bytes `[ptr, ptr + len)`, or a trap if they lie outside its memory.
fn guest_bytes<'a>(memory: &'a [u8], ptr: i32, len: i32, what: &str) -> wasmtime::Result<&'a [u8]> {
    let start = u32::try_from(ptr).ok().map(|p| p as usize);
    let len = u32::try_from(len).ok().map(|l| l as usize);
    start
        .zip(len)
        .and_then(|(s, l)| memory.get(s..s.checked_add(l)?))
        .ok_or_else(|| wasmtime::format_err!("{what}: bytes outside the guest's memory"))
}

fn memory_of(caller: &mut Caller<'_, HostState>) -> wasmtime::Result<wasmtime::Memory> {
    match caller.get_export(EXPORT_MEMORY) {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(wasmtime::format_err!("the module exports no memory")),
    }
}

fn log(mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32) -> wasmtime::Result<()> {
    let memory = memory_of(&mut caller)?;
    let (data, state) = memory.data_and_store_mut(&mut caller);
    if state.logs_left == 0 {
        state.counters.logs_dropped += 1;
        return Ok(());
    }
    let cut = len.clamp(0, LOG_BYTES_MAX as i32);
    let bytes = guest_bytes(data, ptr, cut, IMPORT_LOG)?;
    state.logs_left -= 1;
    state.counters.logs += 1;
    let text = String::from_utf8_lossy(bytes);
    let agent = &*state.agent_id;
    match level {
        0 => tracing::error!(target: "turnstile::agent", agent, "{text}"),
        1 => tracing::warn!(target: "turnstile::agent", agent, "{text}"),
        2 => tracing::info!(target: "turnstile::agent", agent, "{text}"),
        _ => tracing::debug!(target: "turnstile::agent", agent, "{text}"),
    }
    Ok(())
}

fn metric(
    mut caller: Caller<'_, HostState>,
    kind: i32,
    name_ptr: i32,
    name_len: i32,
    value: i64,
) -> wasmtime::Result<()> {
    let kind = match kind {
        0 => MetricKind::Counter,
        1 => MetricKind::Gauge,
        other => wasmtime::bail!("{IMPORT_METRIC}: unknown kind {other}"),
    };
    if !(1..=METRIC_NAME_BYTES_MAX as i32).contains(&name_len) {
        wasmtime::bail!("{IMPORT_METRIC}: name of {name_len} bytes (1..={METRIC_NAME_BYTES_MAX})");
    }
    let memory = memory_of(&mut caller)?;
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let name = std::str::from_utf8(guest_bytes(data, name_ptr, name_len, IMPORT_METRIC)?)
        .map_err(|_| wasmtime::format_err!("{IMPORT_METRIC}: name is not UTF-8"))?;
    if kind == MetricKind::Counter && value < 0 {
        wasmtime::bail!("{IMPORT_METRIC}: a counter cannot decrease");
    }
    state.metrics.report(kind, name, value);
    Ok(())
}

/// The linker every module is instantiated through: the two host functions and nothing else.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<HostState>, WasmError> {
    let mut linker = Linker::new(engine);
    linker
        .func_wrap(IMPORT_MODULE, IMPORT_LOG, log)
        .and_then(|l| l.func_wrap(IMPORT_MODULE, IMPORT_METRIC, metric))
        .map_err(|e| WasmError::Engine(format!("{e:#}")))?;
    Ok(linker)
}
