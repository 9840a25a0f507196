//! One connection to an agent: handshake, configure, multiplexed calls, and the messages an
//! agent sends on its own (health, metrics, config updates, flow control, logs).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use turnstile_wire::turnstile_capnp::{
    self as s, agent_response, agent_to_proxy, config_update_request, flow_control_signal,
    handshake_response, health_status, log_message, metrics_report, proxy_to_agent,
};
use turnstile_wire::{AGENT_PROTOCOL_VERSION, FrameWriter, Message, WireError, split_frame};

use crate::limits::*;

/// Which events an agent subscribed to (bit per [`s::EventType`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventSet(u8);

impl EventSet {
    /// Adds an event.
    pub fn insert(&mut self, e: s::EventType) {
        self.0 |= 1 << (e as u8);
    }
    /// Whether the event is in the set.
    pub fn contains(&self, e: s::EventType) -> bool {
        self.0 & (1 << (e as u8)) != 0
    }
}

/// Cheap predicates an agent declared: a request matching none is never sent to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    /// Path prefixes (empty = any path).
    pub path_prefixes: Vec<String>,
    /// Methods (empty = any method), upper case.
    pub methods: Vec<String>,
    /// Header names that must be present, lower case (empty = no requirement).
    pub required_headers: Vec<Vec<u8>>,
}

/// What an agent declared at handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The agent's own id.
    pub agent_id: String,
    /// Display name.
    pub name: String,
    /// Version string.
    pub version: String,
    /// Subscribed events.
    pub events: EventSet,
    /// Wants body chunks as they arrive.
    pub streaming_body: bool,
    /// Understands cancel.
    pub cancellation: bool,
    /// Largest body it inspects (0 = none).
    pub max_body_bytes: u64,
    /// Requests it takes in flight per connection (0 = no limit declared).
    pub max_concurrency: u32,
    /// Request predicates.
    pub interest: Interest,
    /// How often it reports health (0 = never unprompted).
    pub health_interval_ms: u32,
}

/// Why a connection must be closed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The agent sent bytes that are not a valid frame or message.
    #[error("agent sent a bad frame: {0}")]
    Wire(#[from] WireError),
    /// The agent broke the protocol (message out of order, unknown correlation id misuse...).
    #[error("agent protocol violation: {0}")]
    Protocol(String),
    /// The agent refused the handshake.
    #[error("agent refused the handshake: {0}")]
    Rejected(String),
    /// No handshake answer in time.
    #[error("agent did not answer the handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// Too many calls or queued bytes on this connection.
    #[error("connection saturated ({0})")]
    Saturated(&'static str),
    /// The connection is not ready for calls.
    #[error("connection not ready")]
    NotReady,
}

impl From<capnp::Error> for LinkError {
    fn from(e: capnp::Error) -> Self {
        LinkError::Wire(WireError::BadMessage(e))
    }
}

impl From<capnp::NotInSchema> for LinkError {
    fn from(e: capnp::NotInSchema) -> Self {
        LinkError::Wire(WireError::NotInSchema(e.0))
    }
}

/// What an agent said, borrowed from the receive buffer for the duration of the callback.
pub enum LinkEvent<'a> {
    /// The handshake completed; calls may start.
    Ready,
    /// An answer to the call `user` (as given to [`Link::start_call`]). `last` is false when the
    /// agent asked for more body (`needMore`): the call stays open.
    Reply {
        /// The caller's tag of the call.
        user: u64,
        /// The answer.
        response: agent_response::Reader<'a>,
        /// Whether the call is over.
        last: bool,
    },
    /// A health report.
    Health(health_status::Reader<'a>),
    /// A metrics report.
    Metrics(metrics_report::Reader<'a>),
    /// A config update request; the link has already queued the acknowledgement (and, for
    /// `requestReload`, the configuration again).
    ConfigUpdate(config_update_request::Reader<'a>),
    /// Flow control for one call (`Some(user)`) or the whole connection (`None`).
    Flow {
        /// The call, or `None` for the connection.
        user: Option<u64>,
        /// `Some(true)` pause, `Some(false)` resume, `None` a capacity update.
        pause: Option<bool>,
        /// Bytes the agent can buffer, for capacity updates.
        capacity_bytes: u64,
    },
    /// A log line from the agent.
    Log(log_message::Reader<'a>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking { since: Instant },
    Ready,
    Closed,
}

/// One agent connection's protocol state. Bytes in through [`Link::handle_data`], bytes out
/// through [`Link::output`] / [`Link::consume_output`]; the caller owns the socket.
pub struct Link {
    state: State,
    caps: Option<Capabilities>,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    calls: HashMap<u64, u64>,
    next_cid: u64,
    paused: bool,
    agent_id: String,
    config: Vec<u8>,
    generation: u64,
    /// Replies for calls no longer open (cancelled or timed out): counted, dropped.
    pub stale_replies: u64,
}

impl Link {
    /// A new connection to agent `agent_id`: queues the handshake at once (writes may go out
    /// before the connect completes). `config` is pushed with `configure` after the handshake.
    pub fn new(
        now: Instant,
        agent_id: &str,
        shard: u16,
        config: &[u8],
        generation: u64,
        writer: &mut FrameWriter<'static>,
    ) -> Link {
        let mut link = Link {
            state: State::Handshaking { since: now },
            caps: None,
            inbuf: Vec::with_capacity(16 * 1024),
            out: Vec::with_capacity(16 * 1024),
            calls: HashMap::with_capacity(64),
            next_cid: 1,
            paused: false,
            agent_id: agent_id.to_owned(),
            config: config.to_vec(),
            generation,
            stale_replies: 0,
        };
        let written = writer.write::<proxy_to_agent::Owned, _>(&mut link.out, |mut m| {
            m.set_correlation_id(0);
            let mut h = m.init_handshake();
            h.reborrow()
                .init_supported_versions(1)
                .set(0, AGENT_PROTOCOL_VERSION);
            h.set_proxy_id("turnstile");
            h.set_proxy_version(env!("CARGO_PKG_VERSION"));
            h.reborrow().init_encodings(1).set(0, s::Encoding::Capnp);
            h.set_shard(shard);
            Ok(())
        });
        assert!(written.is_ok(), "handshake frame must encode");
        link
    }

    /// Whether calls may start on this connection.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Whether the agent paused the whole connection.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Calls open on this connection.
    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Whether another call fits under the agent's declared `maxConcurrency` (0 = no limit).
    pub fn has_room(&self) -> bool {
        match self.caps.as_ref().map_or(0, |c| c.max_concurrency) {
            0 => true,
            max => self.calls.len() < max as usize,
        }
    }

    /// The capabilities from the handshake.
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.caps.as_ref()
    }

    /// Bytes waiting to be written.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// `n` bytes of [`Link::output`] were handed to the socket.
    pub fn consume_output(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    /// Handshake deadline, while handshaking.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Handshaking { since } => {
                Some(since + Duration::from_millis(HANDSHAKE_TIMEOUT_MS))
            }
            _ => None,
        }
    }

    /// Fails the connection if the handshake is overdue.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), LinkError> {
        if let Some(at) = self.poll_timeout()
            && now >= at
        {
            self.state = State::Closed;
            return Err(LinkError::HandshakeTimeout(Duration::from_millis(
                HANDSHAKE_TIMEOUT_MS,
            )));
        }
        Ok(())
    }

    /// Closes the link: returns the tags of every open call (they failed).
    pub fn close(&mut self) -> Vec<u64> {
        self.state = State::Closed;
        self.calls.drain().map(|(_, user)| user).collect()
    }

    /// Starts a call tagged `user`: `fill` builds the event (its correlation id is set here).
    pub fn start_call<F>(
        &mut self,
        user: u64,
        writer: &mut FrameWriter<'static>,
        fill: F,
    ) -> Result<u64, LinkError>
    where
        F: FnOnce(proxy_to_agent::Builder<'_>) -> capnp::Result<()>,
    {
        if self.state != State::Ready {
            return Err(LinkError::NotReady);
        }
        if self.calls.len() >= CALLS_PER_LINK_MAX {
            return Err(LinkError::Saturated("calls in flight"));
        }
        if self.out.len() >= LINK_QUEUED_BYTES_MAX {
            return Err(LinkError::Saturated("queued bytes"));
        }
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        writer.write::<proxy_to_agent::Owned, _>(&mut self.out, |mut m| {
            m.set_correlation_id(cid);
            fill(m)
        })?;
        self.calls.insert(cid, user);
        Ok(cid)
    }

    /// Sends a further event (a body chunk...) on an open call.
    pub fn send_on_call<F>(
        &mut self,
        cid: u64,
        writer: &mut FrameWriter<'static>,
        fill: F,
    ) -> Result<(), LinkError>
    where
        F: FnOnce(proxy_to_agent::Builder<'_>) -> capnp::Result<()>,
    {
        if !self.calls.contains_key(&cid) {
            return Err(LinkError::Protocol(format!("call {cid} is not open")));
        }
        writer.write::<proxy_to_agent::Owned, _>(&mut self.out, |mut m| {
            m.set_correlation_id(cid);
            fill(m)
        })?;
        Ok(())
    }

    /// Cancels call `cid` (its answer, if one still comes, is dropped).
    pub fn cancel(
        &mut self,
        cid: u64,
        reason: CancelWhy<'_>,
        now_unix_ms: u64,
        writer: &mut FrameWriter<'static>,
    ) {
        if self.calls.remove(&cid).is_none() {
            return;
        }
        let supports_cancel = self.caps.as_ref().is_some_and(|c| c.cancellation);
        if !supports_cancel || self.state != State::Ready {
            return;
        }
        let written = writer.write::<proxy_to_agent::Owned, _>(&mut self.out, |mut m| {
            m.set_correlation_id(cid);
            let mut c = m.init_cancel();
            c.set_timestamp_ms(now_unix_ms);
            let mut r = c.init_reason();
            match reason {
                CancelWhy::ClientDisconnect => r.set_client_disconnect(()),
                CancelWhy::Timeout => r.set_timeout(()),
                CancelWhy::BlockedByAgent(a) => r.set_blocked_by_agent(a),
                CancelWhy::ProxyShutdown => r.set_proxy_shutdown(()),
            }
            Ok(())
        });
        assert!(written.is_ok(), "cancel frame must encode");
    }

    /// Pushes a new configuration (on reload).
    pub fn reconfigure(
        &mut self,
        config: &[u8],
        generation: u64,
        writer: &mut FrameWriter<'static>,
    ) {
        self.config = config.to_vec();
        self.generation = generation;
        if self.state == State::Ready {
            self.queue_configure(writer);
        }
    }

    /// Tells the agent turnstile is draining this connection: no new requests after the ones in
    /// flight, which finish within `deadline_ms`. Nothing is sent before the handshake completes.
    pub fn drain(&mut self, deadline_ms: u32, writer: &mut FrameWriter<'static>) {
        if self.state != State::Ready {
            return;
        }
        let written = writer.write::<proxy_to_agent::Owned, _>(&mut self.out, |mut m| {
            m.set_correlation_id(0);
            m.init_drain().set_deadline_ms(deadline_ms);
            Ok(())
        });
        // A fixed-size message: it always encodes.
        assert!(written.is_ok(), "drain frame must encode: {written:?}");
    }

    fn queue_configure(&mut self, writer: &mut FrameWriter<'static>) {
        let (agent_id, config, generation) = (&self.agent_id, &self.config, self.generation);
        let written = writer.write::<proxy_to_agent::Owned, _>(&mut self.out, |mut m| {
            m.set_correlation_id(0);
            let mut c = m.init_configure();
            c.set_agent_id(agent_id.as_str());
            c.set_config(config);
            c.set_generation(generation);
            Ok(())
        });
        // A configuration over the frame limit is refused by config validation long before.
        assert!(written.is_ok(), "configure frame must encode: {written:?}");
    }

    /// Feeds bytes read from the socket; `on_event` sees each message. An error means the
    /// connection must be closed (call [`Link::close`]).
    pub fn handle_data<F>(
        &mut self,
        data: &[u8],
        writer: &mut FrameWriter<'static>,
        mut on_event: F,
    ) -> Result<(), LinkError>
    where
        F: FnMut(LinkEvent<'_>),
    {
        if self.state == State::Closed {
            return Ok(());
        }
        // Frames wholly inside `data` are read in place; only a partial tail is buffered.
        let mut input: &[u8] = data;
        let mut staged = std::mem::take(&mut self.inbuf);
        let result = (|| {
            if !staged.is_empty() {
                staged.extend_from_slice(input);
                input = &[];
                let mut used = 0;
                while let Some((frame, n)) = split_frame(&staged[used..])? {
                    let msg = frame.message()?;
                    self.dispatch(&msg, writer, &mut on_event)?;
                    used += n;
                }
                staged.drain(..used);
                return Ok(());
            }
            let mut used = 0;
            while let Some((frame, n)) = split_frame(&input[used..])? {
                let msg = frame.message()?;
                self.dispatch(&msg, writer, &mut on_event)?;
                used += n;
            }
            staged.extend_from_slice(&input[used..]);
            Ok(())
        })();
        self.inbuf = staged;
        if result.is_err() {
            self.state = State::Closed;
        }
        result
    }

    fn dispatch<F>(
        &mut self,
        msg: &Message<'_>,
        writer: &mut FrameWriter<'static>,
        on_event: &mut F,
    ) -> Result<(), LinkError>
    where
        F: FnMut(LinkEvent<'_>),
    {
        let root = msg.root::<agent_to_proxy::Owned>()?;
        let cid = root.get_correlation_id();
        match root.which()? {
            agent_to_proxy::Handshake(h) => {
                if !matches!(self.state, State::Handshaking { .. }) {
                    return Err(LinkError::Protocol("second handshake".into()));
                }
                match h?.which()? {
                    handshake_response::Rejected(reason) => {
                        return Err(LinkError::Rejected(
                            reason?.to_string().unwrap_or_else(|_| "(not UTF-8)".into()),
                        ));
                    }
                    handshake_response::Accepted(c) => {
                        let caps = read_capabilities(c?)?;
                        self.caps = Some(caps);
                        self.state = State::Ready;
                        self.queue_configure(writer);
                        on_event(LinkEvent::Ready);
                    }
                }
            }
            _ if self.state != State::Ready => {
                return Err(LinkError::Protocol(
                    "message before the handshake answer".into(),
                ));
            }
            agent_to_proxy::Response(r) => {
                let response = r?;
                let last = !response.get_need_more();
                let user = if last {
                    self.calls.remove(&cid)
                } else {
                    self.calls.get(&cid).copied()
                };
                match user {
                    Some(user) => on_event(LinkEvent::Reply {
                        user,
                        response,
                        last,
                    }),
                    None => self.stale_replies += 1,
                }
            }
            agent_to_proxy::Health(h) => on_event(LinkEvent::Health(h?)),
            agent_to_proxy::Metrics(m) => on_event(LinkEvent::Metrics(m?)),
            agent_to_proxy::ConfigUpdate(u) => {
                let u = u?;
                let request_id = u.get_request_id()?;
                let (accepted, message) = match u.get_update().which()? {
                    config_update_request::update::RequestReload(()) => {
                        (true, "configuration resent")
                    }
                    config_update_request::update::ConfigError(_) => {
                        (true, "configuration error recorded")
                    }
                    config_update_request::update::RestartRequired(_) => {
                        (true, "restart scheduled")
                    }
                    config_update_request::update::RuleUpdate(_)
                    | config_update_request::update::ListUpdate(_) => (true, "noted"),
                };
                let written =
                    writer.write::<proxy_to_agent::Owned, _>(&mut self.out, |mut m| {
                        m.set_correlation_id(0);
                        let mut a = m.init_config_update_ack();
                        a.set_request_id(request_id);
                        a.set_accepted(accepted);
                        a.set_message(message);
                        Ok(())
                    })?;
                let _ = written;
                if matches!(
                    u.get_update().which()?,
                    config_update_request::update::RequestReload(())
                ) {
                    self.queue_configure(writer);
                }
                on_event(LinkEvent::ConfigUpdate(u));
            }
            agent_to_proxy::FlowControl(f) => {
                let user = if cid == 0 {
                    None
                } else {
                    match self.calls.get(&cid) {
                        Some(u) => Some(*u),
                        None => return Ok(()), // for a call already over: nothing to do
                    }
                };
                let (pause, capacity_bytes) = match f?.get_action().which()? {
                    flow_control_signal::action::Pause(()) => (Some(true), 0),
                    flow_control_signal::action::Resume(()) => (Some(false), 0),
                    flow_control_signal::action::UpdateCapacity(b) => (None, b),
                };
                if user.is_none()
                    && let Some(p) = pause
                {
                    self.paused = p;
                }
                on_event(LinkEvent::Flow {
                    user,
                    pause,
                    capacity_bytes,
                });
            }
            agent_to_proxy::Log(l) => on_event(LinkEvent::Log(l?)),
        }
        Ok(())
    }
}

/// Why a call is cancelled.
#[derive(Debug, Clone, Copy)]
pub enum CancelWhy<'a> {
    /// The client went away.
    ClientDisconnect,
    /// The call timed out.
    Timeout,
    /// Another agent blocked first.
    BlockedByAgent(&'a str),
    /// turnstile is shutting down.
    ProxyShutdown,
}

fn text(t: capnp::text::Reader<'_>) -> Result<String, LinkError> {
    t.to_string()
        .map_err(|e| LinkError::Protocol(format!("text field is not UTF-8: {e}")))
}

/// Reads an agent's `AgentCapabilities` (from `handshake.accepted`), checking the protocol version,
/// the encoding and the interest bounds. Shared by socket links and in-process (WASM) agents.
pub fn read_capabilities(c: s::agent_capabilities::Reader<'_>) -> Result<Capabilities, LinkError> {
    if c.get_protocol_version() != AGENT_PROTOCOL_VERSION {
        return Err(LinkError::Protocol(format!(
            "agent picked protocol version {}, turnstile speaks {}",
            c.get_protocol_version(),
            AGENT_PROTOCOL_VERSION
        )));
    }
    if c.get_encoding()? != s::Encoding::Capnp {
        return Err(LinkError::Protocol(
            "agent picked an encoding turnstile did not offer".into(),
        ));
    }
    let mut events = EventSet::default();
    // Unknown events (a newer agent) are ignored: they are never sent.
    for e in c.get_supported_events()?.iter().flatten() {
        events.insert(e);
    }
    let features = c.get_features()?;
    let limits = c.get_limits()?;
    let i = c.get_interest()?;
    let bounded = |n: u32, what: &str| -> Result<(), LinkError> {
        if n as usize > INTEREST_ITEMS_MAX {
            return Err(LinkError::Protocol(format!(
                "{n} interest {what}: at most {INTEREST_ITEMS_MAX}"
            )));
        }
        Ok(())
    };
    let (prefixes, methods, headers) = (
        i.get_path_prefixes()?,
        i.get_methods()?,
        i.get_required_headers()?,
    );
    bounded(prefixes.len(), "path prefixes")?;
    bounded(methods.len(), "methods")?;
    bounded(headers.len(), "headers")?;
    let mut interest = Interest::default();
    for p in prefixes.iter() {
        interest.path_prefixes.push(text(p?)?);
    }
    for m in methods.iter() {
        interest.methods.push(text(m?)?.to_ascii_uppercase());
    }
    for h in headers.iter() {
        interest.required_headers.push(h?.to_ascii_lowercase());
    }
    Ok(Capabilities {
        agent_id: text(c.get_agent_id()?)?,
        name: text(c.get_name()?)?,
        version: text(c.get_version()?)?,
        events,
        streaming_body: features.get_streaming_body(),
        cancellation: features.get_cancellation(),
        max_body_bytes: limits.get_max_body_bytes(),
        max_concurrency: limits.get_max_concurrency(),
        interest,
        health_interval_ms: c.get_health()?.get_report_interval_ms(),
    })
}
