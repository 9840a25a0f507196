//! The agent plane of one shard: requests from the front door go through the sans-IO dispatch,
//! whose calls travel over this shard's own agent connections (on its own ring), and whose
//! outcomes go back to the front door as `Decision`s. Everything here belongs to one thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use turnstile_agentlink::{CancelWhy, Link, LinkEvent, Pool};
use turnstile_dispatch::{
    Action, AgentIndex, AgentReply, AgentSpec, CallFailure, CallId, CancelReason, Dispatch,
    EventKind, Interest, RequestKey, RequestView, RouteSpec,
};
use turnstile_frontdoor::{
    FrontDoor, Reply, RequestHandler, RequestId, RequestInfo, ResponseSink, builtin_answer,
};
use turnstile_uring::{Ring, Token};
use turnstile_wire::turnstile_capnp::{self as s, ErrorCode, decide, request};
use turnstile_wire::{FrameKind, FrameWriter, Message, WireError};

use crate::convert;
use crate::limits::{HEADERS_VIEWED_MAX, PAYLOAD_BUFFERS_POOLED_MAX};

/// How one shard reaches one agent.
#[derive(Debug, Clone)]
pub struct AgentSetup {
    /// Agent id (as in the configuration and the routes).
    pub id: String,
    /// Its Unix socket.
    pub socket: PathBuf,
    /// The uid its socket must belong to (checked with SO_PEERCRED).
    pub peer_uid: u32,
    /// Connections per shard.
    pub connections: usize,
    /// Agent-specific configuration pushed with `configure`.
    pub config: Vec<u8>,
    /// For an in-process WASM agent: its compiled module (then `socket`, `peer_uid` and
    /// `connections` are unused).
    pub wasm: Option<std::sync::Arc<turnstile_wasm_host::WasmModule>>,
}

/// The agent plane's configuration, shared by every shard.
#[derive(Debug, Clone, Default)]
pub struct PlaneSpec {
    /// Agents, in the same order as `policies`.
    pub agents: Vec<AgentSetup>,
    /// Dispatch policy per agent.
    pub policies: Vec<AgentSpec>,
    /// Routes.
    pub routes: Vec<RouteSpec>,
    /// The process's WASM engine, when any agent is a WASM module.
    pub wasm_engine: Option<std::sync::Arc<turnstile_wasm_host::WasmEngine>>,
}

/// What a shard tells the rest of the process about agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaneEvent {
    /// The agent asked to be restarted (config update `restartRequired`).
    RestartRequired {
        /// Agent id.
        agent_id: String,
        /// How long the agent asked turnstile to wait before restarting it
        /// (`RestartRequired.gracePeriodMs`).
        grace: std::time::Duration,
    },
}

/// The front door's handler on a shard with agents: `decide` requests are queued for the
/// dispatch (their payload copied into a pooled buffer), everything else is answered at once.
pub(crate) struct Inbox {
    agents: bool,
    queued: Vec<(RequestId, Vec<u8>)>,
    more: Vec<(RequestId, Vec<u8>)>,
    cancelled: Vec<RequestId>,
    free: Vec<Vec<u8>>,
}

impl Inbox {
    pub(crate) fn new(agents: bool) -> Self {
        Inbox {
            agents,
            queued: Vec::with_capacity(256),
            more: Vec::with_capacity(256),
            cancelled: Vec::with_capacity(256),
            free: Vec::new(),
        }
    }
}

impl RequestHandler for Inbox {
    fn on_request(
        &mut self,
        _now: Instant,
        id: RequestId,
        _info: &RequestInfo,
        request: request::Reader<'_>,
        payload: &[u8],
        sink: &mut ResponseSink<'_>,
    ) -> Result<Reply, WireError> {
        if self.agents && matches!(request.which(), Ok(request::Decide(_))) {
            let mut buf = self.free.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(payload);
            self.queued.push((id, buf));
            return Ok(Reply::Pending);
        }
        builtin_answer(request, sink)?;
        Ok(Reply::Ready)
    }

    fn on_request_frame(&mut self, _now: Instant, id: RequestId, kind: FrameKind, payload: &[u8]) {
        if self.agents && kind == FrameKind::Request {
            let mut buf = self.free.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(payload);
            self.more.push((id, buf));
        }
    }

    fn on_cancel(&mut self, _now: Instant, id: RequestId) {
        self.cancelled.push(id);
    }
}

struct Pending {
    front: RequestId,
    payload: Vec<u8>,
    correlation_id: u64,
    /// Body chunk frames that arrived after the first frame, kept so that agents called later
    /// (a later group) see the whole body too. Bounded by the front door's request size limit.
    chunks: Vec<Vec<u8>>,
    /// Calls started for this request (some may be over).
    calls: Vec<u64>,
    /// The body is complete (no chunk or a last chunk seen).
    body_done: bool,
    /// The body is a response body.
    response_side: bool,
    /// Calls that got the synthetic end-of-body chunk.
    ended: Vec<u64>,
}

struct AgentRt {
    setup: AgentSetup,
    /// This shard's instances of a WASM agent (then the pool stays unused).
    wasm: Option<turnstile_wasm_host::WasmAgent>,
    pool: Pool,
    caps_known: bool,
    subscribes_request_body: bool,
    subscribes_response_body: bool,
    max_body_bytes: u64,
    generation: u64,
    /// Calls parked until a connection finishes its handshake: (call, request key, deadline).
    /// Bounded by [`crate::limits::CALLS_WAITING_FOR_CONNECT_MAX`]; the dispatch's own timer still
    /// times them out.
    waiting: std::collections::VecDeque<(u64, u32, Instant)>,
}

/// See the module docs.
pub(crate) struct Plane {
    shard: u16,
    dispatch: Dispatch,
    agents: Vec<AgentRt>,
    tokens: HashMap<Token, (u16, u16)>,
    slot_tokens: Vec<Vec<Option<Token>>>,
    requests: Vec<Option<Pending>>,
    free_keys: Vec<u32>,
    by_front: HashMap<RequestId, u32>,
    /// Open calls: call id → (agent, pool slot, correlation id on the link, request key).
    calls: HashMap<u64, (u16, u16, u64, u32)>,
    dirty: Vec<(u16, u16)>,
    retry: Vec<(u16, u16)>,
    closing: Vec<Token>,
    finished: Vec<u64>,
    wants_more: Vec<u64>,
    /// Emptied per-request call lists, reused so a request costs no allocation.
    spare_calls: Vec<Vec<u64>>,
    /// Calls whose agent paused them (per-call flow control): call → how many of its request's
    /// body chunks it has been sent. Chunks after those wait in the request until it resumes.
    held: HashMap<u64, usize>,
    /// Per-call flow signals of the connection being read: (call, pause).
    call_flow: Vec<(u64, bool)>,
    writer: FrameWriter<'static>,
    reply: AgentReply,
    events: Option<Sender<PlaneEvent>>,
    counters: std::sync::Arc<turnstile_metrics::ShardCounters>,
    reports: std::sync::Arc<turnstile_metrics::AgentReports>,
    /// Agent connections closed for a protocol error or a wrong peer uid.
    pub(crate) links_failed: u64,
    wasm_request: Vec<u8>,
    wasm_reply: Vec<u8>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Plane {
    pub(crate) fn new(
        shard: u16,
        spec: &PlaneSpec,
        events: Option<Sender<PlaneEvent>>,
        counters: std::sync::Arc<turnstile_metrics::ShardCounters>,
        reports: std::sync::Arc<turnstile_metrics::AgentReports>,
    ) -> Result<Plane, String> {
        assert_eq!(
            spec.agents.len(),
            spec.policies.len(),
            "one policy per agent"
        );
        let dispatch =
            Dispatch::new(spec.policies.clone(), spec.routes.clone()).map_err(|e| e.to_string())?;
        let agents: Vec<AgentRt> = spec
            .agents
            .iter()
            .enumerate()
            .map(|(i, a)| AgentRt {
                setup: a.clone(),
                wasm: None,
                pool: Pool::new(
                    a.connections
                        .clamp(1, turnstile_agentlink::limits::LINKS_PER_POOL_MAX),
                    (u64::from(shard) << 32) | i as u64,
                ),
                caps_known: false,
                subscribes_request_body: false,
                subscribes_response_body: false,
                max_body_bytes: 0,
                generation: 1,
                waiting: std::collections::VecDeque::new(),
            })
            .collect();
        let slot_tokens = agents.iter().map(|a| vec![None; a.pool.len()]).collect();
        let mut plane = Plane {
            shard,
            dispatch,
            agents,
            tokens: HashMap::with_capacity(256),
            slot_tokens,
            requests: Vec::new(),
            free_keys: Vec::new(),
            by_front: HashMap::with_capacity(1024),
            calls: HashMap::with_capacity(1024),
            dirty: Vec::with_capacity(64),
            retry: Vec::new(),
            closing: Vec::new(),
            finished: Vec::new(),
            wants_more: Vec::new(),
            spare_calls: Vec::new(),
            held: HashMap::new(),
            call_flow: Vec::new(),
            writer: FrameWriter::with_static_scratch(),
            reply: AgentReply::default(),
            events,
            counters,
            reports,
            links_failed: 0,
            wasm_request: Vec::with_capacity(4096),
            wasm_reply: Vec::with_capacity(4096),
        };
        // WASM agents start here, on the shard's own thread: their instances never leave it.
        for a in 0..plane.agents.len() {
            let Some(module) = plane.agents[a].setup.wasm.clone() else {
                continue;
            };
            let Some(engine) = spec.wasm_engine.as_ref() else {
                return Err(format!(
                    "agent {}: a WASM module but no engine",
                    plane.agents[a].setup.id
                ));
            };
            let config = plane.agents[a].setup.config.clone();
            let (agent, caps) =
                turnstile_wasm_host::WasmAgent::new_on_shard(engine, module, &config, shard)
                    .map_err(|e| format!("agent {}: {e}", plane.agents[a].setup.id))?;
            plane.agents[a].wasm = Some(agent);
            plane.apply_capabilities(a as u16, &caps);
        }
        Ok(plane)
    }

    /// A reload brought a new module for a WASM agent: later calls use it (calls are
    /// synchronous, so none is in flight on the old one).
    pub(crate) fn replace_wasm(
        &mut self,
        agent: &str,
        module: std::sync::Arc<turnstile_wasm_host::WasmModule>,
    ) {
        let Some(a) = self.agents.iter().position(|x| x.setup.id == agent) else {
            return;
        };
        let config = self.agents[a].setup.config.clone();
        let Some(wasm) = self.agents[a].wasm.as_mut() else {
            return;
        };
        match wasm.replace_module(module, &config) {
            Ok(caps) => {
                self.apply_capabilities(a as u16, &caps);
                tracing::info!(shard = self.shard, agent, "WASM module replaced");
            }
            Err(e) => {
                tracing::error!(shard = self.shard, agent, error = %e, "new WASM module refused; the old one keeps serving")
            }
        }
    }

    /// The earliest instant the plane has timed work (call deadlines, reconnects, handshakes).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.dispatch.poll_timeout();
        for a in &self.agents {
            if let Some(t) = a.pool.poll_timeout() {
                at = Some(at.map_or(t, |x| x.min(t)));
            }
        }
        at
    }

    /// turnstile stops: tells every connected agent to drain by `deadline`, and writes it out.
    pub(crate) fn drain(&mut self, now: Instant, deadline: Instant, ring: &mut Ring) {
        let ms = deadline
            .saturating_duration_since(now)
            .as_millis()
            .min(u128::from(u32::MAX)) as u32;
        for (ai, rt) in self.agents.iter_mut().enumerate() {
            for slot in 0..rt.pool.len() {
                if let Some(link) = rt.pool.link(slot) {
                    link.drain(ms, &mut self.writer);
                    mark_dirty(&mut self.dirty, ai as u16, slot as u16);
                }
            }
        }
        // Written now: the shard may stop before its next loop iteration.
        self.flush(ring);
    }

    /// A reload changed `agent`'s configuration: push it to its open connections (with a new
    /// generation) and keep it for later ones. Unknown agents are ignored (adding agents needs
    /// a restart).
    pub(crate) fn reconfigure(&mut self, agent: &str, config: &[u8]) {
        let Some(ai) = self.agents.iter().position(|a| a.setup.id == agent) else {
            return;
        };
        let rt = &mut self.agents[ai];
        if rt.setup.config == config {
            return;
        }
        rt.setup.config = config.to_vec();
        rt.generation += 1;
        if let Some(wasm) = rt.wasm.as_mut() {
            match wasm.configure(config) {
                Ok(caps) => self.apply_capabilities(ai as u16, &caps),
                Err(e) => {
                    tracing::warn!(shard = self.shard, agent, error = %e, "WASM agent refused its configuration")
                }
            }
            return;
        }
        for slot in 0..rt.pool.len() {
            if let Some(link) = rt.pool.link(slot) {
                link.reconfigure(config, rt.generation, &mut self.writer);
                mark_dirty(&mut self.dirty, ai as u16, slot as u16);
            }
        }
    }

    /// A connect finished.
    pub(crate) fn on_connected(
        &mut self,
        now: Instant,
        token: Token,
        result: std::io::Result<()>,
        ring: &mut Ring,
    ) {
        let Some(&(a, slot)) = self.tokens.get(&token) else {
            return;
        };
        if let Err(e) = result {
            tracing::debug!(shard = self.shard, agent = %self.agents[a as usize].setup.id, error = %e, "agent connect failed");
            self.tokens.remove(&token);
            self.slot_tokens[a as usize][slot as usize] = None;
            self.detach(now, a, slot, CallFailure::Transport);
            return;
        }
        let expected = self.agents[a as usize].setup.peer_uid;
        match ring.uds_peer_cred(token) {
            Ok((_, uid, _)) if uid == expected => {}
            Ok((pid, uid, _)) => {
                tracing::error!(
                    shard = self.shard,
                    agent = %self.agents[a as usize].setup.id,
                    pid, uid, expected,
                    "agent socket belongs to the wrong user: refusing it"
                );
                self.links_failed += 1;
                let _ = ring.uds_close(token);
                return;
            }
            Err(e) => {
                tracing::warn!(shard = self.shard, error = %e, "cannot read agent peer credentials");
                let _ = ring.uds_close(token);
                return;
            }
        }
        if let Err(e) = ring.uds_read(token) {
            tracing::warn!(shard = self.shard, error = %e, "cannot read from agent");
            let _ = ring.uds_close(token);
        }
    }

    /// Bytes arrived from an agent.
    pub(crate) fn on_data(&mut self, now: Instant, token: Token, data: &[u8]) {
        let Some(&(a, slot)) = self.tokens.get(&token) else {
            return;
        };
        let ai = a as usize;
        let agent_index = AgentIndex(a);
        let rt = &mut self.agents[ai];
        let agent_id = &rt.setup.id;
        let Some(link) = rt.pool.link(slot as usize) else {
            return;
        };
        let mut ready = false;
        let mut flow: Option<bool> = None;
        let mut restart: Option<u64> = None;
        let dispatch = &mut self.dispatch;
        let reply = &mut self.reply;
        let reports = &self.reports;
        let shard = self.shard;
        let finished = &mut self.finished;
        let wants_more = &mut self.wants_more;
        let call_flow = &mut self.call_flow;
        let result = link.handle_data(data, &mut self.writer, |event| match event {
            LinkEvent::Ready => ready = true,
            LinkEvent::Reply {
                user,
                response,
                last,
            } => {
                if last {
                    finished.push(user);
                } else {
                    wants_more.push(user);
                }
                let call = CallId::from_u64(user);
                match convert::read_reply(response, reply) {
                    Ok(()) => dispatch.handle_reply(now, call, reply),
                    Err(e) => {
                        tracing::debug!(shard, agent = %agent_id, error = %e, "agent sent an invalid response");
                        dispatch.handle_call_failed(now, call, CallFailure::Garbage);
                    }
                }
            }
            LinkEvent::Health(h) => match convert::read_health(h) {
                Ok(health) => dispatch.handle_health(now, agent_index, health),
                Err(e) => tracing::debug!(shard, agent = %agent_id, error = %e, "bad health report"),
            },
            LinkEvent::Flow { user: None, pause: Some(p), .. } => flow = Some(p),
            LinkEvent::Flow {
                user: Some(u),
                pause: Some(p),
                ..
            } => call_flow.push((u, p)),
            // Capacity updates are not acted on: chunks are bounded by the frame limit anyway.
            LinkEvent::Flow { .. } => {}
            LinkEvent::Metrics(m) => {
                if let Err(e) = reports.record(agent_id, m) {
                    tracing::debug!(shard, agent = %agent_id, error = %e, "agent metrics report refused");
                }
            }
            LinkEvent::ConfigUpdate(u) => {
                if let Ok(s::config_update_request::update::RestartRequired(r)) =
                    u.get_update().which()
                {
                    restart = Some(r.map_or(0, |r| r.get_grace_period_ms()));
                }
                if let Ok(s::config_update_request::update::ConfigError(e)) = u.get_update().which()
                    && let Ok(e) = e
                {
                    tracing::warn!(shard, agent = %agent_id, error = ?e.get_error().ok().and_then(|t| t.to_str().ok()), "agent refused its configuration");
                }
            }
            LinkEvent::Log(l) => {
                if let Ok(m) = l.get_message() {
                    tracing::info!(target: "turnstile::agent", agent = %agent_id, "{}", m.to_str().unwrap_or("(not UTF-8)"));
                }
            }
        });
        mark_dirty(&mut self.dirty, a, slot);
        let freed = !self.finished.is_empty();
        for user in self.finished.drain(..) {
            self.calls.remove(&user);
            self.held.remove(&user);
        }
        for i in 0..self.call_flow.len() {
            let (user, pause) = self.call_flow[i];
            self.flow_call(user, pause);
        }
        self.call_flow.clear();
        if freed {
            // Finished calls made room under the agent's declared concurrency.
            self.retry_waiting(now, a);
        }
        self.end_bodies();
        if let Err(e) = result {
            tracing::warn!(shard = self.shard, agent = %self.agents[ai].setup.id, error = %e, "closing agent connection");
            self.links_failed += 1;
            self.close_slot(now, a, slot, CallFailure::Garbage);
            return;
        }
        if ready {
            self.agents[ai].pool.mark_ready(slot as usize);
            self.learn_capabilities(a, slot);
            self.retry_waiting(now, a);
        }
        if let Some(paused) = flow {
            let any_open = self.agents[ai].pool.pick().is_some();
            if paused && !any_open {
                self.dispatch.handle_flow(now, agent_index, true);
            } else if !paused {
                self.dispatch.handle_flow(now, agent_index, false);
            }
        }
        if let Some(grace_ms) = restart
            && let Some(tx) = &self.events
        {
            let _ = tx.try_send(PlaneEvent::RestartRequired {
                agent_id: self.agents[ai].setup.id.clone(),
                grace: std::time::Duration::from_millis(grace_ms),
            });
        }
    }

    /// An agent connection closed (by the agent, an error, or us).
    pub(crate) fn on_closed(&mut self, now: Instant, token: Token) {
        let Some((a, slot)) = self.tokens.remove(&token) else {
            return;
        };
        self.slot_tokens[a as usize][slot as usize] = None;
        self.detach(now, a, slot, CallFailure::Transport);
    }

    fn learn_capabilities(&mut self, a: u16, slot: u16) {
        let Some(caps) = self.agents[a as usize]
            .pool
            .link(slot as usize)
            .and_then(|l| l.capabilities())
            .cloned()
        else {
            return;
        };
        self.apply_capabilities(a, &caps);
    }

    fn apply_capabilities(&mut self, a: u16, caps: &turnstile_agentlink::Capabilities) {
        let rt = &mut self.agents[a as usize];
        // Every handshake may bring new capabilities (an upgraded or reconfigured agent).
        rt.caps_known = true;
        rt.subscribes_request_body = caps.events.contains(s::EventType::RequestBody);
        rt.subscribes_response_body = caps.events.contains(s::EventType::ResponseBody);
        rt.max_body_bytes = caps.max_body_bytes;
        let mut events = Vec::new();
        for (e, k) in [
            (s::EventType::RequestHeaders, EventKind::RequestHeaders),
            (s::EventType::RequestBody, EventKind::RequestBody),
            (s::EventType::ResponseHeaders, EventKind::ResponseHeaders),
            (s::EventType::ResponseBody, EventKind::ResponseBody),
            (s::EventType::WebsocketFrame, EventKind::WebsocketFrame),
            (s::EventType::GuardrailInspect, EventKind::GuardrailInspect),
            (s::EventType::RequestComplete, EventKind::RequestComplete),
        ] {
            if caps.events.contains(e) {
                events.push(k);
            }
        }
        let interest = Interest {
            events,
            path_prefixes: caps.interest.path_prefixes.clone(),
            methods: caps.interest.methods.clone(),
            required_headers: caps
                .interest
                .required_headers
                .iter()
                .map(|h| bytes::Bytes::copy_from_slice(h))
                .collect(),
        };
        if let Err(e) = self.dispatch.set_interest(AgentIndex(a), interest) {
            tracing::warn!(shard = self.shard, agent = %rt.setup.id, error = %e, "agent declared an interest turnstile cannot use; it gets every request");
        }
    }

    fn close_slot(&mut self, now: Instant, a: u16, slot: u16, why: CallFailure) {
        if let Some(token) = self.slot_tokens[a as usize][slot as usize] {
            // The ring reports UdsClosed later; the calls fail now.
            self.tokens.remove(&token);
            self.slot_tokens[a as usize][slot as usize] = None;
            self.closing.push(token);
        }
        self.detach(now, a, slot, why);
    }

    /// Starts (or re-parks, or fails) the calls parked for agent `a` while it was connecting.
    fn retry_waiting(&mut self, now: Instant, a: u16) {
        if self.agents[a as usize].waiting.is_empty() {
            return;
        }
        let parked = std::mem::take(&mut self.agents[a as usize].waiting);
        for (call, req, deadline) in parked {
            self.call(
                now,
                CallId::from_u64(call),
                RequestKey(req),
                AgentIndex(a),
                deadline,
            );
        }
    }

    /// Forgets parked calls of request `req` (decided or cancelled: its key may be reused).
    fn unpark_request(&mut self, req: u32) {
        for rt in &mut self.agents {
            if !rt.waiting.is_empty() {
                rt.waiting.retain(|w| w.1 != req);
            }
        }
    }

    fn detach(&mut self, now: Instant, a: u16, slot: u16, why: CallFailure) {
        let failed = self.agents[a as usize].pool.detach(now, slot as usize);
        for user in failed {
            self.calls.remove(&user);
            self.held.remove(&user);
            self.dispatch
                .handle_call_failed(now, CallId::from_u64(user), why);
        }
        // Parked calls were waiting for a connection that just failed: they go to another
        // connection, keep waiting for one still on its way, or get the fail mode.
        self.retry_waiting(now, a);
        // A pause belongs to the connection that asked for it: once no connection of the agent
        // is paused any more, the agent is not either (a restarted agent never resumes).
        let agent = AgentIndex(a);
        if self.dispatch.is_paused(agent) && !self.agents[a as usize].pool.any_paused() {
            self.dispatch.handle_flow(now, agent, false);
        }
    }

    /// Runs everything that is due: new and cancelled requests, connects, timers, dispatch
    /// actions, and writes to agent connections.
    pub(crate) fn run(
        &mut self,
        now: Instant,
        front: &mut FrontDoor,
        inbox: &mut Inbox,
        ring: &mut Ring,
    ) {
        for token in self.closing.drain(..) {
            let _ = ring.uds_close(token);
        }
        while let Some((front_id, payload)) = inbox.queued.pop() {
            self.start(now, front_id, payload, front, inbox);
        }
        while let Some((id, frame)) = inbox.more.pop() {
            self.more_body(id, frame, inbox);
        }
        while let Some(id) = inbox.cancelled.pop() {
            if let Some(key) = self.by_front.remove(&id) {
                self.dispatch.handle_cancel(now, RequestKey(key));
                if let Some(p) = self.requests[key as usize].take() {
                    self.free_keys.push(key);
                    self.unpark_request(key);
                    let Pending {
                        payload,
                        chunks,
                        mut calls,
                        mut ended,
                        ..
                    } = p;
                    for v in [&mut calls, &mut ended] {
                        v.clear();
                    }
                    self.spare_calls.push(calls);
                    self.spare_calls.push(ended);
                    recycle(inbox, payload);
                    for c in chunks {
                        recycle(inbox, c);
                    }
                }
            }
        }
        self.connect(now, ring);
        for (ai, rt) in self.agents.iter_mut().enumerate() {
            for slot in 0..rt.pool.len() {
                if let Some(link) = rt.pool.link(slot)
                    && link.handle_timeout(now).is_err()
                {
                    tracing::warn!(shard = self.shard, agent = %rt.setup.id, "agent did not answer the handshake in time");
                    if let Some(token) = self.slot_tokens[ai][slot] {
                        self.closing.push(token);
                    }
                }
            }
        }
        if self.dispatch.poll_timeout().is_some_and(|t| t <= now) {
            self.dispatch.handle_timeout(now);
        }
        self.actions(now, front, inbox);
        self.flush(ring);
        for token in self.closing.drain(..) {
            let _ = ring.uds_close(token);
        }
    }

    fn start(
        &mut self,
        now: Instant,
        front_id: RequestId,
        payload: Vec<u8>,
        front: &mut FrontDoor,
        inbox: &mut Inbox,
    ) {
        let key = match self.free_keys.pop() {
            Some(k) => k,
            None if self.requests.len() < turnstile_dispatch::limits::REQUESTS_IN_FLIGHT_MAX => {
                self.requests.push(None);
                (self.requests.len() - 1) as u32
            }
            None => {
                fail(
                    now,
                    front,
                    inbox,
                    front_id,
                    0,
                    ErrorCode::Overloaded,
                    "too many requests in flight on this shard",
                );
                recycle(inbox, payload);
                return;
            }
        };
        let result =
            (|| -> Result<(u64, bool, bool, Result<(), turnstile_dispatch::DispatchError>), WireError> {
                let msg = Message::parse(FrameKind::Request, &payload)?;
                let req = msg.root::<turnstile_wire::request::Owned>()?;
                let cid = req.get_correlation_id();
                let request::Decide(d) = req.which()? else {
                    return Err(WireError::BadMessage(capnp::Error::failed(
                        "not a decide".into(),
                    )));
                };
                let d = d?;
                let route = d
                    .get_route_id()?
                    .to_str()
                    .map_err(|e| WireError::BadMessage(e.into()))?;
                let route = if route.is_empty() { "default" } else { route };
                let phase = d.get_phase();
                let event = convert::event_kind(phase)?;
                let mut names: [&[u8]; HEADERS_VIEWED_MAX] = [&[]; HEADERS_VIEWED_MAX];
                let mut n = 0;
                let (mut method, mut path, mut has_body) = ("", "", false);
                let http = match phase.which()? {
                    decide::phase::Request(r) => Some(r?.get_request()?),
                    decide::phase::Response(r) => Some(r?.get_request()?),
                    _ => None,
                };
                if let Some(h) = http {
                    method = h.get_method()?.to_str().unwrap_or("");
                    path = h.get_path()?.to_str().unwrap_or("");
                    for header in h.get_headers()?.iter() {
                        if n < HEADERS_VIEWED_MAX {
                            names[n] = header.get_name()?;
                            n += 1;
                        }
                    }
                }
                // A body is declared when the first chunk has data or more chunks follow.
                let (body, response_side) = match phase.which()? {
                    decide::phase::Request(r) => {
                        let r = r?;
                        (r.has_body().then(|| r.get_body()).transpose()?, false)
                    }
                    decide::phase::Response(r) => {
                        let r = r?;
                        (r.has_body().then(|| r.get_body()).transpose()?, true)
                    }
                    _ => (None, false),
                };
                let mut body_done = true;
                if let Some(b) = body {
                    body_done = b.get_is_last();
                    has_body = !b.get_data()?.is_empty() || !body_done;
                }
                let view = RequestView {
                    event,
                    method,
                    path,
                    header_names: &names[..n],
                    has_body,
                };
                Ok((
                    cid,
                    body_done,
                    response_side,
                    self.dispatch
                        .handle_request(now, RequestKey(key), route, &view),
                ))
            })();
        match result {
            Ok((cid, body_done, response_side, Ok(()))) => {
                self.requests[key as usize] = Some(Pending {
                    front: front_id,
                    payload,
                    correlation_id: cid,
                    chunks: Vec::new(),
                    calls: self.spare_calls.pop().unwrap_or_default(),
                    body_done,
                    response_side,
                    ended: self.spare_calls.pop().unwrap_or_default(),
                });
                self.by_front.insert(front_id, key);
            }
            Ok((cid, _, _, Err(e))) => {
                self.free_keys.push(key);
                let code = match e {
                    turnstile_dispatch::DispatchError::UnknownRoute => ErrorCode::UnknownRoute,
                    _ => ErrorCode::Overloaded,
                };
                fail(now, front, inbox, front_id, cid, code, &e.to_string());
                recycle(inbox, payload);
            }
            Err(e) => {
                self.free_keys.push(key);
                fail(
                    now,
                    front,
                    inbox,
                    front_id,
                    0,
                    ErrorCode::BadRequest,
                    &e.to_string(),
                );
                recycle(inbox, payload);
            }
        }
    }

    /// A body chunk frame arrived for a pending request: kept for agents called later, and sent
    /// now on every open call whose agent subscribed to bodies.
    fn more_body(&mut self, id: RequestId, frame: Vec<u8>, inbox: &mut Inbox) {
        let Some(&key) = self.by_front.get(&id) else {
            recycle(inbox, frame);
            return;
        };
        let Some(p) = self.requests.get_mut(key as usize).and_then(Option::as_mut) else {
            recycle(inbox, frame);
            return;
        };
        for &call in &p.calls {
            let Some(&(a, slot, cid, _)) = self.calls.get(&call) else {
                continue; // over already
            };
            if self.held.contains_key(&call) {
                continue; // paused by its agent: sent on resume, from `p.chunks`
            }
            let rt = &mut self.agents[a as usize];
            let max_body = rt.max_body_bytes;
            if !(rt.subscribes_request_body || rt.subscribes_response_body) || max_body == 0 {
                continue;
            }
            let Some(link) = rt.pool.link(slot as usize) else {
                continue;
            };
            if let Err(e) = send_chunk(link, cid, &mut self.writer, &frame, max_body) {
                tracing::debug!(shard = self.shard, error = %e, "cannot forward a body chunk");
            }
            mark_dirty(&mut self.dirty, a, slot);
        }
        if chunk_is_last(&frame) {
            p.body_done = true;
        }
        p.chunks.push(frame);
    }

    fn connect(&mut self, now: Instant, ring: &mut Ring) {
        for (ai, rt) in self.agents.iter_mut().enumerate() {
            if rt.wasm.is_some() {
                continue;
            }
            while let Some(slot) = rt.pool.poll_connect(now) {
                match ring.uds_connect(&rt.setup.socket) {
                    Ok(token) => {
                        let link = Link::new(
                            now,
                            &rt.setup.id,
                            self.shard,
                            &rt.setup.config,
                            rt.generation,
                            &mut self.writer,
                        );
                        rt.pool.attach(slot, link);
                        self.tokens.insert(token, (ai as u16, slot as u16));
                        self.slot_tokens[ai][slot] = Some(token);
                        mark_dirty(&mut self.dirty, ai as u16, slot as u16);
                    }
                    Err(e) => {
                        tracing::debug!(shard = self.shard, agent = %rt.setup.id, error = %e, "cannot start agent connect");
                        // Count it as a failed connection so the backoff applies.
                        rt.pool.attach(
                            slot,
                            Link::new(now, &rt.setup.id, self.shard, b"", 0, &mut self.writer),
                        );
                        let _ = rt.pool.detach(now, slot);
                        break;
                    }
                }
            }
        }
    }

    fn actions(&mut self, now: Instant, front: &mut FrontDoor, inbox: &mut Inbox) {
        while let Some(action) = self.dispatch.poll_action() {
            match action {
                Action::Call {
                    call,
                    req,
                    agent,
                    deadline,
                } => self.call(now, call, req, agent, deadline),
                Action::Cancel {
                    call,
                    agent,
                    reason,
                } => {
                    self.held.remove(&call.to_u64());
                    let Some((a, slot, cid, _)) = self.calls.remove(&call.to_u64()) else {
                        // Not started yet: it may be parked waiting for a connection.
                        if let Some(rt) = self.agents.get_mut(agent.0 as usize) {
                            rt.waiting.retain(|w| w.0 != call.to_u64());
                        }
                        continue;
                    };
                    if let Some(link) = self.agents[a as usize].pool.link(slot as usize) {
                        let why = match reason {
                            CancelReason::ClientDisconnect => CancelWhy::ClientDisconnect,
                            CancelReason::Timeout => CancelWhy::Timeout,
                            CancelReason::BlockedByAgent { agent } => {
                                CancelWhy::BlockedByAgent(self.dispatch.agent_id(agent))
                            }
                        };
                        link.cancel(cid, why, unix_ms(), &mut self.writer);
                        mark_dirty(&mut self.dirty, a, slot);
                        self.retry_waiting(now, a);
                    }
                }
                Action::Done { req, outcome } => {
                    let Some(p) = self.requests[req.0 as usize].take() else {
                        self.dispatch.recycle(outcome);
                        continue;
                    };
                    self.free_keys.push(req.0);
                    self.by_front.remove(&p.front);
                    self.unpark_request(req.0);
                    // Calls still open when the request is decided are moot: cancel them (the
                    // dispatch usually did already) and forget them.
                    for call in &p.calls {
                        self.held.remove(call);
                        if let Some((a, slot, cid, _)) = self.calls.remove(call)
                            && let Some(link) = self.agents[a as usize].pool.link(slot as usize)
                        {
                            let why = match outcome.decided_by {
                                Some(w) => CancelWhy::BlockedByAgent(self.dispatch.agent_id(w)),
                                None => CancelWhy::Timeout,
                            };
                            link.cancel(cid, why, unix_ms(), &mut self.writer);
                            mark_dirty(&mut self.dirty, a, slot);
                            self.retry_waiting(now, a);
                        }
                    }
                    self.count(&outcome);
                    let dispatch = &self.dispatch;
                    let name = |i: AgentIndex| dispatch.agent_id(i).to_owned();
                    front.complete(
                        now,
                        p.front,
                        |r| {
                            convert::write_decision(r, p.correlation_id, &outcome, &name);
                            Ok(())
                        },
                        inbox,
                    );
                    self.dispatch.recycle(outcome);
                    let Pending {
                        payload,
                        chunks,
                        mut calls,
                        mut ended,
                        ..
                    } = p;
                    calls.clear();
                    ended.clear();
                    self.spare_calls.push(calls);
                    self.spare_calls.push(ended);
                    recycle(inbox, payload);
                    for c in chunks {
                        recycle(inbox, c);
                    }
                }
            }
        }
    }

    /// Agent call and decision counters for one finished request.
    fn count(&self, outcome: &turnstile_dispatch::Outcome) {
        use turnstile_dispatch::AgentOutcome as O;
        use turnstile_metrics::FailureReason as F;
        let c = &self.counters;
        c.decisions(match outcome.verdict {
            turnstile_dispatch::Verdict::Allow => turnstile_metrics::Verdict::Allow,
            turnstile_dispatch::Verdict::Block(_) => turnstile_metrics::Verdict::Block,
            turnstile_dispatch::Verdict::Redirect(_) => turnstile_metrics::Verdict::Redirect,
        })
        .inc();
        for t in &outcome.timings {
            let i = usize::from(t.agent.0);
            if i >= c.agent_count() {
                continue;
            }
            let reason = match t.outcome {
                O::Skipped | O::Cancelled => continue,
                O::Allowed | O::Blocked | O::Redirected => None,
                O::Timeout => Some(F::Timeout),
                O::Error => Some(F::Error),
                O::BreakerOpen => Some(F::BreakerOpen),
                O::Unhealthy => Some(F::Unhealthy),
                O::Saturated => Some(F::Saturated),
            };
            c.agent_calls(i).inc();
            c.agent_call_duration(i).observe_us(u64::from(t.elapsed_us));
            if let Some(r) = reason {
                c.agent_failures(i, r).inc();
            }
        }
    }

    fn call(
        &mut self,
        now: Instant,
        call: CallId,
        req: RequestKey,
        agent: AgentIndex,
        deadline: Instant,
    ) {
        let a = agent.0;
        if self.agents[a as usize].wasm.is_some() {
            self.wasm_call(now, call, req, a, deadline);
            return;
        }
        let rt = &mut self.agents[a as usize];
        let Some(slot) = rt.pool.pick() else {
            // Right after start-up (or a reconnect) the connection is still handshaking, or
            // every connection is full at the agent's declared `maxConcurrency`: park the call
            // instead of failing it (its timeout still runs). An agent with nothing on the way
            // fails the call at once.
            if rt.pool.room_coming()
                && rt.waiting.len() < crate::limits::CALLS_WAITING_FOR_CONNECT_MAX
            {
                rt.waiting.push_back((call.to_u64(), req.0, deadline));
            } else {
                self.dispatch
                    .handle_call_failed(now, call, CallFailure::AgentGone);
            }
            return;
        };
        let Some(p) = self.requests.get(req.0 as usize).and_then(Option::as_ref) else {
            self.dispatch
                .handle_call_failed(now, call, CallFailure::Transport);
            return;
        };
        let (want_req_body, want_resp_body, max_body) = (
            rt.subscribes_request_body,
            rt.subscribes_response_body,
            rt.max_body_bytes,
        );
        let Some(link) = rt.pool.link(slot) else {
            self.dispatch
                .handle_call_failed(now, call, CallFailure::AgentGone);
            return;
        };
        let writer = &mut self.writer;
        let result = (|| -> Result<u64, turnstile_agentlink::LinkError> {
            let msg = Message::parse(FrameKind::Request, &p.payload)?;
            let root = msg.root::<turnstile_wire::request::Owned>()?;
            let request::Decide(d) = root.which()? else {
                return Err(turnstile_agentlink::LinkError::Protocol(
                    "not a decide".into(),
                ));
            };
            let d = d?;
            let phase = d.get_phase();
            let meta = convert::Meta {
                request_id: d.get_request_id()?,
                route_id: d.get_route_id()?.to_str().unwrap_or(""),
                timestamp_ms: unix_ms(),
                deadline_ms: deadline.saturating_duration_since(now).as_millis() as u32,
            };
            let cid = link.start_call(call.to_u64(), writer, |m| {
                convert::write_event(m, phase, &meta)
            })?;
            let response_side = matches!(phase.which()?, decide::phase::Response(_));
            let wants = if response_side {
                want_resp_body
            } else {
                want_req_body
            };
            if let Some(body) = convert::inline_body(phase)?
                && wants
                && max_body > 0
            {
                link.send_on_call(cid, writer, |m| {
                    convert::write_body_chunk(m, response_side, body, max_body)
                })?;
            }
            if wants && max_body > 0 {
                for chunk in &p.chunks {
                    send_chunk(link, cid, writer, chunk, max_body)?;
                }
            }
            Ok(cid)
        })();
        match result {
            Ok(cid) => {
                self.calls
                    .insert(call.to_u64(), (a, slot as u16, cid, req.0));
                if let Some(p) = self
                    .requests
                    .get_mut(req.0 as usize)
                    .and_then(Option::as_mut)
                {
                    p.calls.push(call.to_u64());
                }
                mark_dirty(&mut self.dirty, a, slot as u16);
            }
            Err(e) => {
                tracing::debug!(shard = self.shard, error = %e, "cannot start agent call");
                self.dispatch
                    .handle_call_failed(now, call, CallFailure::Transport);
            }
        }
    }

    /// Calls an in-process WASM agent: the event, then (when it asks for more) the request's
    /// inline body and an end-of-body marker, each answered synchronously.
    fn wasm_call(
        &mut self,
        now: Instant,
        call: CallId,
        req: RequestKey,
        a: u16,
        deadline: Instant,
    ) {
        let Some(p) = self.requests.get(req.0 as usize).and_then(Option::as_ref) else {
            self.dispatch
                .handle_call_failed(now, call, CallFailure::Transport);
            return;
        };
        let rt = &mut self.agents[a as usize];
        let wants_body = rt.subscribes_request_body || rt.subscribes_response_body;
        let max_body = rt.max_body_bytes;
        let Some(wasm) = rt.wasm.as_mut() else {
            return;
        };
        let (writer, request, reply_buf, reply) = (
            &mut self.writer,
            &mut self.wasm_request,
            &mut self.wasm_reply,
            &mut self.reply,
        );
        let cid = call.to_u64();
        let body_done = p.body_done;
        let result = (|| -> Result<(), CallFailure> {
            let msg = Message::parse(FrameKind::Request, &p.payload)
                .map_err(|_| CallFailure::Transport)?;
            let root = msg
                .root::<turnstile_wire::request::Owned>()
                .map_err(|_| CallFailure::Transport)?;
            let Ok(request::Decide(Ok(d))) = root.which() else {
                return Err(CallFailure::Transport);
            };
            let phase = d.get_phase();
            let meta = convert::Meta {
                request_id: d.get_request_id().map_err(|_| CallFailure::Transport)?,
                route_id: d
                    .get_route_id()
                    .ok()
                    .and_then(|t| t.to_str().ok())
                    .unwrap_or(""),
                timestamp_ms: unix_ms(),
                deadline_ms: deadline.saturating_duration_since(now).as_millis() as u32,
            };
            let response_side = matches!(phase.which(), Ok(decide::phase::Response(_)));
            let body = convert::inline_body(phase).map_err(|_| CallFailure::Transport)?;
            // Up to three messages: the event, the inline body, the end of the body.
            for step in 0..3 {
                request.clear();
                let written =
                    writer.write::<turnstile_wire::proxy_to_agent::Owned, _>(request, |mut m| {
                        m.set_correlation_id(cid);
                        match (step, body) {
                            (0, _) => convert::write_event(m, phase, &meta),
                            (1, Some(b)) => {
                                convert::write_body_chunk(m, response_side, b, max_body)
                            }
                            _ => {
                                let mut c = if response_side {
                                    m.init_response_body_chunk()
                                } else {
                                    m.init_request_body_chunk()
                                };
                                c.set_is_last(true);
                                Ok(())
                            }
                        }
                    });
                if written.is_err() {
                    return Err(CallFailure::Transport);
                }
                // The frame header is not part of the ABI's payload.
                let payload = &request[turnstile_wire::limits::FRAME_HEADER_BYTES..];
                wasm.call(payload, reply_buf).map_err(|e| match e {
                    turnstile_wasm_host::WasmError::BadReply(_) => CallFailure::Garbage,
                    _ => CallFailure::Transport,
                })?;
                let msg = Message::parse(FrameKind::AgentToProxy, reply_buf)
                    .map_err(|_| CallFailure::Garbage)?;
                let root = msg
                    .root::<turnstile_wire::agent_to_proxy::Owned>()
                    .map_err(|_| CallFailure::Garbage)?;
                let Ok(turnstile_wire::agent_to_proxy::Response(Ok(r))) = root.which() else {
                    return Err(CallFailure::Garbage);
                };
                convert::read_reply(r, reply).map_err(|_| CallFailure::Garbage)?;
                let more = reply.need_more
                    && wants_body
                    && max_body > 0
                    && match step {
                        0 => body.is_some() || body_done,
                        1 => body_done,
                        _ => false,
                    };
                if !more {
                    return Ok(());
                }
                if step == 0 && body.is_none() {
                    // No inline chunk: go straight to the end-of-body marker.
                    continue;
                }
            }
            Ok(())
        })();
        // The call ran synchronously since `now` was read: read the clock again, so the timing
        // shows what the module took (the loop's `now` would make every WASM call 0 µs).
        let done = Instant::now().max(now);
        match result {
            Ok(()) => self.dispatch.handle_reply(done, call, &mut self.reply),
            Err(why) => {
                tracing::debug!(shard = self.shard, agent = %self.agents[a as usize].setup.id, ?why, "WASM agent call failed");
                self.dispatch.handle_call_failed(done, call, why);
            }
        }
    }

    fn flush(&mut self, ring: &mut Ring) {
        for (a, slot) in self.dirty.drain(..) {
            let Some(token) = self.slot_tokens[a as usize][slot as usize] else {
                continue;
            };
            let Some(link) = self.agents[a as usize].pool.link(slot as usize) else {
                continue;
            };
            let n = link.output().len();
            if n == 0 {
                continue;
            }
            match ring.uds_write(token, link.output()) {
                Ok(()) => link.consume_output(n),
                Err(turnstile_uring::UdsError::WriteQueueFull { .. }) => {
                    // The ring's queue drains as writes complete: keep the bytes, try again on
                    // the next loop iteration. The link's own queue bound refuses new calls
                    // long before this grows without limit.
                    self.retry.push((a, slot));
                }
                Err(e) => {
                    tracing::warn!(shard = self.shard, error = %e, "agent connection refused bytes; closing it");
                    self.closing.push(token);
                }
            }
        }
        self.dirty.append(&mut self.retry);
    }

    /// Calls whose agent asked for more body (`needMore`) although the body is complete get one
    /// empty final chunk, so the agent decides instead of waiting for its timeout.
    /// An agent paused or resumed one call: a paused call is sent no further body chunks; on
    /// resume it gets the ones it missed, in order.
    fn flow_call(&mut self, user: u64, pause: bool) {
        let Some(&(a, slot, cid, key)) = self.calls.get(&user) else {
            return; // over already
        };
        let Some(p) = self.requests.get(key as usize).and_then(Option::as_ref) else {
            return;
        };
        if pause {
            self.held.entry(user).or_insert(p.chunks.len());
            return;
        }
        let Some(sent) = self.held.remove(&user) else {
            return;
        };
        let rt = &mut self.agents[a as usize];
        let max_body = rt.max_body_bytes;
        if !(rt.subscribes_request_body || rt.subscribes_response_body) || max_body == 0 {
            return;
        }
        let Some(link) = rt.pool.link(slot as usize) else {
            return;
        };
        for chunk in p.chunks.iter().skip(sent) {
            if let Err(e) = send_chunk(link, cid, &mut self.writer, chunk, max_body) {
                tracing::debug!(shard = self.shard, error = %e, "cannot forward a held body chunk");
            }
        }
        mark_dirty(&mut self.dirty, a, slot);
    }

    fn end_bodies(&mut self) {
        while let Some(user) = self.wants_more.pop() {
            let Some(&(a, slot, cid, key)) = self.calls.get(&user) else {
                continue;
            };
            if self.held.contains_key(&user) {
                continue; // its held chunks, the last among them, go out on resume
            }
            let Some(p) = self.requests.get_mut(key as usize).and_then(Option::as_mut) else {
                continue;
            };
            if !p.body_done || p.ended.contains(&user) {
                continue; // more chunks will come, or the end was already sent
            }
            p.ended.push(user);
            let response_side = p.response_side;
            let Some(link) = self.agents[a as usize].pool.link(slot as usize) else {
                continue;
            };
            let sent = link.send_on_call(cid, &mut self.writer, |m| {
                let mut c = if response_side {
                    m.init_response_body_chunk()
                } else {
                    m.init_request_body_chunk()
                };
                c.set_is_last(true);
                Ok(())
            });
            if sent.is_ok() {
                mark_dirty(&mut self.dirty, a, slot);
            }
        }
    }
}

/// Queues agent connection `(a, slot)` for the next write to its socket (once).
fn mark_dirty(dirty: &mut Vec<(u16, u16)>, a: u16, slot: u16) {
    if !dirty.contains(&(a, slot)) {
        dirty.push((a, slot));
    }
}

/// Whether a continuation frame carries the last chunk of its body.
fn chunk_is_last(frame: &[u8]) -> bool {
    let Ok(msg) = Message::parse(FrameKind::Request, frame) else {
        return false;
    };
    let Ok(root) = msg.root::<turnstile_wire::request::Owned>() else {
        return false;
    };
    let Ok(request::Decide(Ok(d))) = root.which() else {
        return false;
    };
    match d.get_phase().which() {
        Ok(decide::phase::RequestBody(Ok(b)) | decide::phase::ResponseBody(Ok(b))) => {
            b.get_is_last()
        }
        _ => false,
    }
}

/// Sends a continuation frame's body chunk (a `decide.requestBody` / `responseBody`) on a call.
/// Frames of other kinds are ignored.
fn send_chunk(
    link: &mut Link,
    cid: u64,
    writer: &mut FrameWriter<'static>,
    frame: &[u8],
    max_body: u64,
) -> Result<(), turnstile_agentlink::LinkError> {
    let msg = Message::parse(FrameKind::Request, frame)?;
    let request::Decide(d) = msg.root::<turnstile_wire::request::Owned>()?.which()? else {
        return Ok(());
    };
    let (response_side, body) = match d?.get_phase().which()? {
        decide::phase::RequestBody(b) => (false, b?),
        decide::phase::ResponseBody(b) => (true, b?),
        _ => return Ok(()),
    };
    link.send_on_call(cid, writer, |m| {
        convert::write_body_chunk(m, response_side, body, max_body)
    })
}

fn recycle(inbox: &mut Inbox, buf: Vec<u8>) {
    if inbox.free.len() < PAYLOAD_BUFFERS_POOLED_MAX {
        inbox.free.push(buf);
    }
}

fn fail(
    now: Instant,
    front: &mut FrontDoor,
    inbox: &mut Inbox,
    id: RequestId,
    correlation_id: u64,
    code: ErrorCode,
    message: &str,
) {
    front.complete(
        now,
        id,
        |mut r| {
            r.set_correlation_id(correlation_id);
            let mut e = r.init_error();
            e.set_code(code);
            e.set_message(message);
            Ok(())
        },
        inbox,
    );
}
