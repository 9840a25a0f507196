//! One instance of an agent module: its own store (so throwing it away frees everything it
//! holds), its exports, and the raw ABI exchange of one message.

use wasmtime::{Memory, Store, Trap, TypedFunc};

use crate::abi::{ABI_VERSION, EXPORT_ABI_VERSION, EXPORT_ALLOC, EXPORT_MEMORY, EXPORT_ON_MESSAGE};
use crate::abi::{Packed, unpack};
use crate::engine::{Budget, WasmModule};
use crate::error::WasmError;
use crate::host::HostState;
use crate::limits::{INPUT_BYTES_INITIAL, MESSAGE_BYTES_MAX};

/// Which budget a guest call runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// An event: the per-call fuel and deadline.
    Call,
    /// Start-up, handshake, configure: the setup fuel and deadline.
    Setup,
}

/// A live instance and the input buffer the guest gave it.
pub(crate) struct Instance {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    on_message: TypedFunc<(i32, i32), i64>,
    call: Budget,
    setup: Budget,
    input_ptr: u32,
    input_cap: u32,
}

impl Instance {
    /// Instantiates `module` from its `InstancePre` in a new store, checks the ABI version and
    /// asks for the initial input buffer.
    pub fn start(module: &WasmModule) -> Result<Instance, WasmError> {
        let limits = module.limits();
        let mut store = Store::new(
            module.engine(),
            HostState::new(module.id_arc(), limits.memory_bytes),
        );
        store.limiter(|s| &mut s.limiter);
        let (call, setup) = (module.call_budget(), module.setup_budget());
        arm(&mut store, setup)?;
        let instance = match module.pre().instantiate(&mut store) {
            Ok(i) => i,
            Err(e) if store.data().limiter.memory_refused => {
                let _ = e;
                return Err(WasmError::MemoryLimit);
            }
            Err(e) => return Err(WasmError::Instantiate(format!("{e:#}"))),
        };
        let abi = |e: wasmtime::Error| WasmError::Abi(format!("{e:#}"));
        let memory = instance
            .get_memory(&mut store, EXPORT_MEMORY)
            .ok_or_else(|| WasmError::Abi(format!("no `{EXPORT_MEMORY}` export")))?;
        let version = instance
            .get_typed_func::<(), i32>(&mut store, EXPORT_ABI_VERSION)
            .map_err(abi)?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, EXPORT_ALLOC)
            .map_err(abi)?;
        let on_message = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, EXPORT_ON_MESSAGE)
            .map_err(abi)?;
        let v = version
            .call(&mut store, ())
            .map_err(|e| classify(e, store.data()))?;
        if v != ABI_VERSION {
            return Err(WasmError::Abi(format!(
                "ABI version {v}, this host speaks {ABI_VERSION}"
            )));
        }
        let mut instance = Instance {
            store,
            memory,
            alloc,
            on_message,
            call,
            setup,
            input_ptr: 0,
            input_cap: 0,
        };
        instance.arm(Phase::Setup)?;
        instance.grow_input(INPUT_BYTES_INITIAL)?;
        Ok(instance)
    }

    fn arm(&mut self, phase: Phase) -> Result<(), WasmError> {
        self.store.data_mut().begin_call();
        let budget = match phase {
            Phase::Call => self.call,
            Phase::Setup => self.setup,
        };
        arm(&mut self.store, budget)
    }

    fn grow_input(&mut self, len: u32) -> Result<(), WasmError> {
        let len_i32 =
            i32::try_from(len).map_err(|_| WasmError::Request("message too large".into()))?;
        let ptr = self
            .alloc
            .call(&mut self.store, len_i32)
            .map_err(|e| classify(e, self.store.data()))?;
        let ptr = u32::try_from(ptr)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| WasmError::Abi(format!("`{EXPORT_ALLOC}({len})` refused ({ptr})")))?;
        self.input_ptr = ptr;
        self.input_cap = len;
        Ok(())
    }

    /// One ABI exchange: copies `payload` into the guest, calls `turnstile_on_message` within
    /// the phase's fuel and deadline, and appends the reply's bytes (if any) to `reply`. Any
    /// error leaves the instance unusable: the caller throws it away.
    pub fn exchange(
        &mut self,
        phase: Phase,
        payload: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), WasmError> {
        if payload.len() > MESSAGE_BYTES_MAX {
            return Err(WasmError::Request(format!(
                "message of {} bytes, at most {MESSAGE_BYTES_MAX}",
                payload.len()
            )));
        }
        // At most MESSAGE_BYTES_MAX (1 MiB), checked just above.
        let len = payload.len() as u32;
        self.arm(phase)?;
        if len > self.input_cap {
            self.grow_input(len)?;
        }
        let start = self.input_ptr as usize;
        let dst = self
            .memory
            .data_mut(&mut self.store)
            .get_mut(start..start + payload.len())
            .ok_or_else(|| WasmError::Abi("input buffer outside the guest's memory".into()))?;
        dst.copy_from_slice(payload);
        // Both below 2^31: the pointer lies in a memory of at most 1 GiB, the length is ≤ 1 MiB.
        let args = (self.input_ptr as i32, len as i32);
        let packed = self
            .on_message
            .call(&mut self.store, args)
            .map_err(|e| classify(e, self.store.data()))?;
        match unpack(packed) {
            Packed::Empty => Ok(()),
            Packed::Error(code) => Err(WasmError::Guest(code)),
            Packed::Reply { ptr, len } => {
                if len as usize > MESSAGE_BYTES_MAX {
                    return Err(WasmError::BadReply(format!(
                        "{len} bytes, at most {MESSAGE_BYTES_MAX}"
                    )));
                }
                let start = ptr as usize;
                let bytes = self
                    .memory
                    .data(&self.store)
                    .get(start..start + len as usize)
                    .ok_or_else(|| WasmError::BadReply("outside the guest's memory".into()))?;
                reply.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// The store's data (counters and metrics of this instance).
    pub fn state(&self) -> &HostState {
        self.store.data()
    }
}

fn arm(store: &mut Store<HostState>, budget: Budget) -> Result<(), WasmError> {
    store
        .set_fuel(budget.fuel)
        .map_err(|e| WasmError::Engine(format!("{e:#}")))?;
    store.set_epoch_deadline(budget.ticks);
    Ok(())
}

/// Names the reason a guest call failed.
fn classify(e: wasmtime::Error, state: &HostState) -> WasmError {
    if state.limiter.memory_refused {
        return WasmError::MemoryLimit;
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => WasmError::OutOfFuel,
        Some(Trap::Interrupt) => WasmError::Deadline,
        Some(t) => WasmError::Trap(t.to_string()),
        None => WasmError::Trap(format!("{e:#}")),
    }
}
