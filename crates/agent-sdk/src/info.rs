//! What an agent declares at the handshake, what it reports as health, and its config errors.

use turnstile_wire::turnstile_capnp::{agent_capabilities, health_status};

pub use turnstile_wire::turnstile_capnp::EventType;

use crate::limits::IN_FLIGHT_PER_CONNECTION_MAX;

/// The agent's identity and capabilities, sent in `handshake.accepted`.
///
/// [`AgentInfo::new`] gives an agent that subscribes `requestHeaders` only, inspects no body and
/// supports cancellation and flow control; the builder methods change that.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentInfo {
    /// Agent id (`[a-z0-9_-]`), as in turnstile's config.
    pub id: String,
    /// Display name; defaults to the id.
    pub name: String,
    /// Agent version.
    pub version: String,
    /// Events turnstile should send; only these are sent.
    pub events: Vec<EventType>,
    /// Optional features.
    pub features: Features,
    /// Resource limits.
    pub limits: Limits,
    /// Cheap predicates turnstile evaluates before calling the agent.
    pub interest: Interest,
}

/// `AgentFeatures` of the handshake. `concurrentRequests` and `metricsExport` are filled by the
/// SDK (from [`Limits::max_concurrency`] and [`crate::ServeOptions::metrics_interval_ms`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    /// Wants body chunks as they arrive (else turnstile buffers up to `max_body_bytes`).
    pub streaming_body: bool,
    /// Handles WebSocket frames.
    pub websocket: bool,
    /// Handles guardrail inspections.
    pub guardrails: bool,
    /// Sends config updates ([`crate::Connection::request_reload`] and friends).
    pub config_push: bool,
}

/// `AgentLimits` of the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest body the agent inspects; 0 = no body.
    pub max_body_bytes: u64,
    /// Requests in flight per connection (at most
    /// [`IN_FLIGHT_PER_CONNECTION_MAX`]).
    pub max_concurrency: u32,
    /// Preferred body chunk size, 0 = any.
    pub preferred_chunk_bytes: u32,
    /// Memory the agent will use, 0 = not declared.
    pub max_memory_bytes: u64,
    /// Worst-case processing time, 0 = not declared.
    pub max_processing_ms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 0,
            max_concurrency: IN_FLIGHT_PER_CONNECTION_MAX,
            preferred_chunk_bytes: 0,
            max_memory_bytes: 0,
            max_processing_ms: 0,
        }
    }
}

/// `Interest` of the handshake: a request matching none of these is never sent. Empty = all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    /// Path prefixes.
    pub path_prefixes: Vec<String>,
    /// Methods.
    pub methods: Vec<String>,
    /// Header names that must be present (case-insensitive).
    pub required_headers: Vec<String>,
}

impl AgentInfo {
    /// An agent `id` at `version` that subscribes `requestHeaders` only.
    pub fn new(id: impl Into<String>, version: impl Into<String>) -> Self {
        let id = id.into();
        AgentInfo {
            name: id.clone(),
            id,
            version: version.into(),
            events: vec![EventType::RequestHeaders],
            features: Features::default(),
            limits: Limits::default(),
            interest: Interest::default(),
        }
    }

    /// Sets the display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the subscribed events.
    pub fn events(mut self, events: &[EventType]) -> Self {
        self.events = events.to_vec();
        self
    }

    /// Subscribes `requestBody` too and inspects bodies up to `max_body_bytes`, buffered by
    /// turnstile (`streaming = false`) or chunk by chunk as they arrive (`streaming = true`).
    pub fn request_body(mut self, max_body_bytes: u64, streaming: bool) -> Self {
        if !self.events.contains(&EventType::RequestBody) {
            self.events.push(EventType::RequestBody);
        }
        self.limits.max_body_bytes = max_body_bytes;
        self.features.streaming_body = streaming;
        self
    }

    /// Sets the requests in flight per connection (clamped to
    /// [`IN_FLIGHT_PER_CONNECTION_MAX`]).
    pub fn max_concurrency(mut self, n: u32) -> Self {
        self.limits.max_concurrency = n.clamp(1, IN_FLIGHT_PER_CONNECTION_MAX);
        self
    }

    /// Only requests whose path starts with one of `prefixes` are sent.
    pub fn path_prefixes(mut self, prefixes: &[&str]) -> Self {
        self.interest.path_prefixes = prefixes.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    pub(crate) fn write_capabilities(
        &self,
        mut c: agent_capabilities::Builder<'_>,
        report_interval_ms: u32,
        metrics_export: bool,
        encoding: turnstile_wire::turnstile_capnp::Encoding,
    ) -> capnp::Result<()> {
        c.set_protocol_version(turnstile_wire::AGENT_PROTOCOL_VERSION);
        c.set_agent_id(self.id.as_str());
        c.set_name(self.name.as_str());
        c.set_version(self.version.as_str());
        let mut ev = c.reborrow().init_supported_events(len32(self.events.len()));
        for (i, e) in self.events.iter().enumerate() {
            ev.set(len32(i), *e);
        }
        let concurrency = self
            .limits
            .max_concurrency
            .clamp(1, IN_FLIGHT_PER_CONNECTION_MAX);
        let mut f = c.reborrow().init_features();
        f.set_streaming_body(self.features.streaming_body);
        f.set_websocket(self.features.websocket);
        f.set_guardrails(self.features.guardrails);
        f.set_config_push(self.features.config_push);
        f.set_metrics_export(metrics_export);
        f.set_concurrent_requests(concurrency);
        f.set_cancellation(true);
        f.set_flow_control(true);
        let mut l = c.reborrow().init_limits();
        l.set_max_body_bytes(self.limits.max_body_bytes);
        l.set_max_concurrency(concurrency);
        l.set_preferred_chunk_bytes(self.limits.preferred_chunk_bytes);
        l.set_max_memory_bytes(self.limits.max_memory_bytes);
        l.set_max_processing_ms(self.limits.max_processing_ms);
        let mut h = c.reborrow().init_health();
        h.set_report_interval_ms(report_interval_ms);
        h.set_include_load_metrics(true);
        h.set_include_resource_metrics(false);
        let mut i = c.reborrow().init_interest();
        let it = &self.interest;
        let mut p = i
            .reborrow()
            .init_path_prefixes(len32(it.path_prefixes.len()));
        for (n, v) in it.path_prefixes.iter().enumerate() {
            p.set(len32(n), v.as_str());
        }
        let mut m = i.reborrow().init_methods(len32(it.methods.len()));
        for (n, v) in it.methods.iter().enumerate() {
            m.set(len32(n), v.as_str());
        }
        let mut r = i.init_required_headers(len32(it.required_headers.len()));
        for (n, v) in it.required_headers.iter().enumerate() {
            r.set(len32(n), v.as_bytes());
        }
        c.set_encoding(encoding);
        Ok(())
    }
}

/// A list length for a Cap'n Proto builder. Lists built here come from the agent's own small
/// declarations; anything past `u32::MAX` would not fit a frame anyway and is cut.
pub(crate) fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The agent's health, as reported by [`crate::Agent::health`].
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Health {
    /// Fully operational.
    #[default]
    Healthy,
    /// Operational, with some features off or slower.
    Degraded {
        /// Features currently unavailable.
        disabled_features: Vec<String>,
        /// Suggested timeout multiplier (1.5 = 50% longer).
        timeout_multiplier: f32,
    },
    /// Finishing in-flight work, taking no new requests.
    Draining {
        /// Estimated time to drain, 0 = unknown.
        eta_ms: u64,
    },
    /// Not usable.
    Unhealthy {
        /// Why.
        reason: String,
        /// Whether the agent expects to recover.
        recoverable: bool,
    },
}

impl Health {
    pub(crate) fn write(&self, mut state: health_status::state::Builder<'_>) {
        match self {
            Health::Healthy => state.set_healthy(()),
            Health::Degraded {
                disabled_features,
                timeout_multiplier,
            } => {
                let mut d = state.init_degraded();
                d.set_timeout_multiplier(*timeout_multiplier);
                let mut l = d.init_disabled_features(len32(disabled_features.len()));
                for (i, f) in disabled_features.iter().enumerate() {
                    l.set(len32(i), f.as_str());
                }
            }
            Health::Draining { eta_ms } => state.init_draining().set_eta_ms(*eta_ms),
            Health::Unhealthy {
                reason,
                recoverable,
            } => {
                let mut u = state.init_unhealthy();
                u.set_reason(reason.as_str());
                u.set_recoverable(*recoverable);
            }
        }
    }
}

/// A configuration the agent refuses: sent to turnstile as `configUpdate.configError`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigError {
    /// What is wrong.
    pub error: String,
    /// The field at fault, "" when not tied to one.
    pub field: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn field(field: impl Into<String>, error: impl Into<String>) -> Self {
        ConfigError {
            error: error.into(),
            field: field.into(),
        }
    }
}

impl From<String> for ConfigError {
    fn from(error: String) -> Self {
        ConfigError {
            error,
            field: String::new(),
        }
    }
}

impl From<&str> for ConfigError {
    fn from(error: &str) -> Self {
        error.to_owned().into()
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.error)
        } else {
            write!(f, "{}: {}", self.field, self.error)
        }
    }
}

impl std::error::Error for ConfigError {}
