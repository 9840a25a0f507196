//! [`WasmAgent`]: one agent on one shard — its serving instance and warm spares, the handshake
//! and configure every new instance goes through, calls, faults and reloads.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::Arc;

use turnstile_agentlink::{Capabilities, read_capabilities};
use turnstile_wire::turnstile_capnp::{
    Encoding, agent_to_proxy, config_update_request, handshake_response, proxy_to_agent,
};
use turnstile_wire::{AGENT_PROTOCOL_VERSION, FrameKind, FrameWriter, Message};

use crate::engine::{WasmEngine, WasmModule};
use crate::error::WasmError;
use crate::host::{HostCounters, Metric, MetricTable};
use crate::instance::{Instance, Phase};
use crate::limits::CONTROL_SCRATCH_BYTES;

/// What turnstile says of itself in the handshake.
const PROXY_ID: &str = "turnstile";

/// Counters of one agent on one shard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AgentStats {
    /// Calls made (events sent).
    pub calls: u64,
    /// Calls that failed inside an instance, which was thrown away ([`WasmError::is_fault`]).
    pub faults: u64,
    /// Instances started (handshaken and configured), the first one included.
    pub instances_started: u64,
    /// Spares promoted to serving after a fault.
    pub spares_promoted: u64,
    /// Log lines passed to turnstile's log.
    pub logs: u64,
    /// Log lines dropped (over the per-call bound).
    pub logs_dropped: u64,
    /// Metric reports dropped (over the bound on names).
    pub metrics_dropped: u64,
}

/// One WASM agent on one shard: not `Sync`, owned and called by the shard thread only, so a
/// call takes no lock.
///
/// It keeps a serving instance and up to `spare_instances` warm spares (every instance with its
/// own store; at most `instances_max` alive). A call that traps, runs out of fuel, passes its
/// deadline, hits the memory limit or answers garbage returns that error; the instance is
/// thrown away and the next call runs on a spare (or on a new instance from the module's
/// `InstancePre`, handshaken and configured first). [`WasmAgent::maintain`] refills the spares
/// off the request path.
pub struct WasmAgent {
    module: Arc<WasmModule>,
    config: Vec<u8>,
    generation: u64,
    shard: u16,
    serving: Option<Instance>,
    spares: Vec<Instance>,
    caps: Capabilities,
    stats: AgentStats,
    retired: (HostCounters, MetricTable),
    _not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for WasmAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmAgent")
            .field("module", &self.module)
            .field("shard", &self.shard)
            .field("instances", &self.instance_count())
            .field("stats", &self.stats)
            .finish()
    }
}

impl WasmAgent {
    /// Starts `module` on shard 0: see [`WasmAgent::new_on_shard`].
    pub fn new(
        engine: &WasmEngine,
        module: Arc<WasmModule>,
        config: &[u8],
    ) -> Result<(Self, Capabilities), WasmError> {
        Self::new_on_shard(engine, module, config, 0)
    }

    /// Starts `module` for shard `shard`: a first instance is handshaken (its capabilities are
    /// returned) and configured with `config`, then the spares are started.
    pub fn new_on_shard(
        engine: &WasmEngine,
        module: Arc<WasmModule>,
        config: &[u8],
        shard: u16,
    ) -> Result<(Self, Capabilities), WasmError> {
        if !wasmtime::Engine::same(engine.engine(), module.engine()) {
            return Err(WasmError::Engine(
                "the module was loaded by another engine".into(),
            ));
        }
        let mut agent = WasmAgent {
            module,
            config: config.to_vec(),
            generation: 1,
            shard,
            serving: None,
            spares: Vec::new(),
            caps: Capabilities::default(),
            stats: AgentStats::default(),
            retired: Default::default(),
            _not_sync: PhantomData,
        };
        let (instance, caps) = agent.start_instance(&agent.module.clone())?;
        agent.serving = Some(instance);
        agent.caps = caps.clone();
        agent.maintain()?;
        Ok((agent, caps))
    }

    /// Sends one `ProxyToAgent` payload (the Cap'n Proto message, no frame header) and puts the
    /// `AgentToProxy` payload of the answer in `reply` (cleared first).
    ///
    /// An event (request or response headers, a body chunk, a WebSocket frame, a guardrail
    /// inspection, request complete) must be answered by a `response` with its correlation id;
    /// other messages (cancel, drain, ...) may get no reply (`reply` stays empty). Handshake and
    /// configure are refused here: [`WasmAgent::configure`] sends configurations.
    pub fn call(&mut self, payload: &[u8], reply: &mut Vec<u8>) -> Result<(), WasmError> {
        reply.clear();
        let expect = expected_reply(payload)?;
        if self.serving.is_none() {
            self.serve_next()?;
        }
        let Some(instance) = self.serving.as_mut() else {
            return Err(WasmError::Instantiate("no instance".into()));
        };
        self.stats.calls += 1;
        let result = instance
            .exchange(Phase::Call, payload, reply)
            .and_then(|()| check_reply(reply, expect));
        if let Err(e) = &result {
            reply.clear();
            if e.is_fault() {
                self.stats.faults += 1;
                if let Some(broken) = self.serving.take() {
                    self.retire(broken);
                }
            }
        }
        result
    }

    /// Sends a new configuration to every live instance (a reload with the same module) and
    /// returns the capabilities as configured. When the serving instance refuses it, nothing
    /// changes and the refusal is returned.
    pub fn configure(&mut self, config: &[u8]) -> Result<Capabilities, WasmError> {
        let generation = self.generation + 1;
        if self.serving.is_none() {
            self.serve_next()?;
        }
        if let Some(mut serving) = self.serving.take() {
            match send_configure(&mut serving, self.module.id(), config, generation) {
                Ok(caps) => {
                    self.serving = Some(serving);
                    if let Some(caps) = caps {
                        self.caps = caps;
                    }
                }
                Err(e) => {
                    if e.is_fault() {
                        self.retire(serving);
                    } else {
                        self.serving = Some(serving);
                    }
                    return Err(e);
                }
            }
        }
        self.config = config.to_vec();
        self.generation = generation;
        for mut spare in std::mem::take(&mut self.spares) {
            match send_configure(&mut spare, self.module.id(), config, generation) {
                Ok(_) => self.spares.push(spare),
                Err(_) => self.retire(spare),
            }
        }
        Ok(self.caps.clone())
    }

    /// Reloads with a changed module: a new instance of `module` is started (handshake and
    /// `config`) and serves every later call; the old instances are dropped. Calls are
    /// synchronous on the shard, so no call is in flight during the swap: every call runs
    /// wholly on the old module or wholly on the new one. On error the old module stays.
    /// Returns the new module's capabilities.
    pub fn replace_module(
        &mut self,
        module: Arc<WasmModule>,
        config: &[u8],
    ) -> Result<Capabilities, WasmError> {
        if !wasmtime::Engine::same(self.module.engine(), module.engine()) {
            return Err(WasmError::Engine(
                "the module was loaded by another engine".into(),
            ));
        }
        // Spares of the old module are no longer wanted; dropping them first keeps the number of
        // live instances within the limit during the swap.
        for spare in std::mem::take(&mut self.spares) {
            self.retire(spare);
        }
        let (old_config, old_generation) = (std::mem::take(&mut self.config), self.generation);
        self.config = config.to_vec();
        self.generation += 1;
        let started = self.start_instance(&module);
        let (instance, caps) = match started {
            Ok(x) => x,
            Err(e) => {
                self.config = old_config;
                self.generation = old_generation;
                return Err(e);
            }
        };
        if let Some(old) = self.serving.replace(instance) {
            self.retire(old);
        }
        self.module = module;
        self.caps = caps.clone();
        // Spares follow later (maintain) if they cannot start now; the agent already serves.
        let _ = self.maintain();
        Ok(caps)
    }

    /// Restores a serving instance and refills the warm spares up to the module's
    /// `spare_instances`. Meant for the shard's idle moments: it handshakes and configures new
    /// instances.
    pub fn maintain(&mut self) -> Result<(), WasmError> {
        if self.serving.is_none() {
            self.serve_next()?;
        }
        let want = self.module.limits().spare_instances as usize;
        while self.spares.len() < want {
            let module = self.module.clone();
            let (instance, _) = self.start_instance(&module)?;
            self.spares.push(instance);
        }
        Ok(())
    }

    /// The capabilities of the serving module (from its handshake).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The module now serving.
    pub fn module(&self) -> &Arc<WasmModule> {
        &self.module
    }

    /// Instances alive (serving + spares), at most the module's `instances_max`.
    pub fn instance_count(&self) -> usize {
        usize::from(self.serving.is_some()) + self.spares.len()
    }

    /// Counters, over every instance this agent has had.
    pub fn stats(&self) -> AgentStats {
        let mut s = self.stats;
        let mut c = self.retired.0;
        let mut dropped = self.retired.1.dropped;
        for i in self.live() {
            c.logs += i.state().counters.logs;
            c.logs_dropped += i.state().counters.logs_dropped;
            dropped += i.state().metrics.dropped;
        }
        s.logs = c.logs;
        s.logs_dropped = c.logs_dropped;
        s.metrics_dropped = dropped;
        s
    }

    /// The metrics the agent reported (`turnstile_metric`), over every instance it has had.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut table = self.retired.1.clone();
        for i in self.live() {
            table.merge(&i.state().metrics);
        }
        table.entries
    }

    fn live(&self) -> impl Iterator<Item = &Instance> {
        self.spares.iter().chain(self.serving.as_ref())
    }

    /// Makes a spare (or a new instance) the serving one.
    fn serve_next(&mut self) -> Result<(), WasmError> {
        if let Some(spare) = self.spares.pop() {
            self.stats.spares_promoted += 1;
            self.serving = Some(spare);
            return Ok(());
        }
        let module = self.module.clone();
        let (instance, _) = self.start_instance(&module)?;
        self.serving = Some(instance);
        Ok(())
    }

    /// Starts, handshakes and configures a new instance of `module`.
    fn start_instance(
        &mut self,
        module: &WasmModule,
    ) -> Result<(Instance, Capabilities), WasmError> {
        let max = module.limits().instances_max;
        let wanted = u32::try_from(self.instance_count() + 1).unwrap_or(u32::MAX);
        if wanted > max {
            return Err(WasmError::InstanceLimit { wanted, max });
        }
        let mut instance = Instance::start(module)?;
        let caps = handshake(&mut instance, self.shard)?;
        let caps = send_configure(&mut instance, module.id(), &self.config, self.generation)?
            .unwrap_or(caps);
        self.stats.instances_started += 1;
        Ok((instance, caps))
    }

    /// Keeps what a dropped instance counted.
    fn retire(&mut self, instance: Instance) {
        let s = instance.state();
        self.retired.0.logs += s.counters.logs;
        self.retired.0.logs_dropped += s.counters.logs_dropped;
        self.retired.1.merge(&s.metrics);
    }
}

/// What a call's reply must be.
#[derive(Clone, Copy)]
enum Expect {
    /// An event: a `response` with this correlation id.
    Response(u64),
    /// A connection-level message: nothing, or any valid `AgentToProxy`.
    Any,
}

fn expected_reply(payload: &[u8]) -> Result<Expect, WasmError> {
    use proxy_to_agent::Which;
    let bad = |e: &dyn std::fmt::Display| WasmError::Request(e.to_string());
    let msg = Message::parse(FrameKind::ProxyToAgent, payload).map_err(|e| bad(&e))?;
    let root = msg.root::<proxy_to_agent::Owned>().map_err(|e| bad(&e))?;
    let cid = root.get_correlation_id();
    match root.which().map_err(|e| bad(&e))? {
        Which::Handshake(_) | Which::Configure(_) => Err(WasmError::Request(
            "handshake and configure are the host's own (WasmAgent::configure)".into(),
        )),
        Which::RequestHeaders(_)
        | Which::RequestBodyChunk(_)
        | Which::ResponseHeaders(_)
        | Which::ResponseBodyChunk(_)
        | Which::WebsocketFrame(_)
        | Which::GuardrailInspect(_)
        | Which::RequestComplete(_) => Ok(Expect::Response(cid)),
        Which::Cancel(_) | Which::ConfigUpdateAck(_) | Which::Drain(_) | Which::Shutdown(()) => {
            Ok(Expect::Any)
        }
    }
}

fn check_reply(reply: &[u8], expect: Expect) -> Result<(), WasmError> {
    let bad = |what: String| Err(WasmError::BadReply(what));
    if reply.is_empty() {
        return match expect {
            Expect::Any => Ok(()),
            Expect::Response(_) => bad("no reply to an event".into()),
        };
    }
    let msg = match Message::parse(FrameKind::AgentToProxy, reply) {
        Ok(m) => m,
        Err(e) => return bad(e.to_string()),
    };
    if let Err(e) = msg.validate() {
        return bad(e.to_string());
    }
    let Expect::Response(cid) = expect else {
        return Ok(());
    };
    let root = match msg.root::<agent_to_proxy::Owned>() {
        Ok(r) => r,
        Err(e) => return bad(e.to_string()),
    };
    if root.get_correlation_id() != cid {
        return bad(format!(
            "correlation id {} answers {cid}",
            root.get_correlation_id()
        ));
    }
    match root.which() {
        Ok(agent_to_proxy::Response(_)) => Ok(()),
        Ok(_) => bad("not a response".into()),
        Err(e) => bad(format!("unknown union member {}", e.0)),
    }
}

/// Builds a `ProxyToAgent` control message and exchanges it with `instance`.
fn control(
    instance: &mut Instance,
    reply: &mut Vec<u8>,
    fill: impl FnOnce(proxy_to_agent::Builder<'_>) -> capnp::Result<()>,
) -> Result<(), WasmError> {
    let mut scratch = vec![0u8; CONTROL_SCRATCH_BYTES];
    let mut frame = Vec::new();
    FrameWriter::new(&mut scratch)
        .write::<proxy_to_agent::Owned, _>(&mut frame, fill)
        .map_err(|e| WasmError::Request(e.to_string()))?;
    let payload = frame
        .get(turnstile_wire::limits::FRAME_HEADER_BYTES..)
        .unwrap_or(&[]);
    instance.exchange(Phase::Setup, payload, reply)
}

/// The handshake: turnstile's versions and encodings in, the agent's capabilities out.
fn handshake(instance: &mut Instance, shard: u16) -> Result<Capabilities, WasmError> {
    let mut reply = Vec::new();
    control(instance, &mut reply, |mut m| {
        m.set_correlation_id(0);
        let mut h = m.init_handshake();
        h.reborrow()
            .init_supported_versions(1)
            .set(0, AGENT_PROTOCOL_VERSION);
        h.set_proxy_id(PROXY_ID);
        h.set_proxy_version(env!("CARGO_PKG_VERSION"));
        h.reborrow().init_encodings(1).set(0, Encoding::Capnp);
        h.set_shard(shard);
        Ok(())
    })?;
    read_accepted(&reply)
}

/// Reads an `AgentToProxy` handshake answer: the capabilities, or why the agent refused.
fn read_accepted(reply: &[u8]) -> Result<Capabilities, WasmError> {
    let hs = |e: &dyn std::fmt::Display| WasmError::Handshake(e.to_string());
    let msg = Message::parse(FrameKind::AgentToProxy, reply).map_err(|e| hs(&e))?;
    msg.validate().map_err(|e| hs(&e))?;
    let root = msg.root::<agent_to_proxy::Owned>().map_err(|e| hs(&e))?;
    let agent_to_proxy::Handshake(h) = root.which().map_err(|e| hs(&e.0))? else {
        return Err(WasmError::Handshake("the answer is not a handshake".into()));
    };
    match h.map_err(|e| hs(&e))?.which().map_err(|e| hs(&e.0))? {
        handshake_response::Accepted(c) => {
            read_capabilities(c.map_err(|e| hs(&e))?).map_err(|e| hs(&e))
        }
        handshake_response::Rejected(r) => Err(WasmError::Handshake(format!(
            "refused: {}",
            r.ok().and_then(|t| t.to_str().ok()).unwrap_or("")
        ))),
    }
}

/// Sends `configure`. A `configUpdate.configError` answer is a refusal; a handshake answer
/// carries the capabilities as configured (returned); anything else says nothing.
fn send_configure(
    instance: &mut Instance,
    agent_id: &str,
    config: &[u8],
    generation: u64,
) -> Result<Option<Capabilities>, WasmError> {
    let mut reply = Vec::new();
    control(instance, &mut reply, |mut m| {
        m.set_correlation_id(0);
        let mut c = m.init_configure();
        c.set_agent_id(agent_id);
        c.set_config(config);
        c.set_generation(generation);
        Ok(())
    })?;
    if reply.is_empty() {
        return Ok(None);
    }
    let bad = |e: &dyn std::fmt::Display| WasmError::BadReply(format!("to configure: {e}"));
    let msg = Message::parse(FrameKind::AgentToProxy, &reply).map_err(|e| bad(&e))?;
    msg.validate().map_err(|e| bad(&e))?;
    let root = msg.root::<agent_to_proxy::Owned>().map_err(|e| bad(&e))?;
    let u = match root.which() {
        Ok(agent_to_proxy::ConfigUpdate(u)) => u,
        Ok(agent_to_proxy::Handshake(_)) => return read_accepted(&reply).map(Some),
        // Anything else (a log line, health) says nothing about the configuration.
        _ => return Ok(None),
    };
    let u = u.map_err(|e| bad(&e))?;
    if let Ok(config_update_request::update::ConfigError(ce)) = u.get_update().which() {
        let ce = ce.map_err(|e| bad(&e))?;
        let text = |t: capnp::Result<capnp::text::Reader<'_>>| {
            t.ok()
                .and_then(|t| t.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        return Err(WasmError::Config {
            field: text(ce.get_field()),
            error: text(ce.get_error()),
        });
    }
    Ok(None)
}
