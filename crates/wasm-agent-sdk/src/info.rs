//! What an agent declares at the handshake, and the configuration errors it reports.

use turnstile_wire::turnstile_capnp::{Encoding, agent_capabilities};

pub use turnstile_wire::turnstile_capnp::EventType;

use crate::decision::len32;

/// The agent's identity and capabilities, sent in `handshake.accepted`.
///
/// [`AgentInfo::new`] gives an agent that subscribes `requestHeaders` only and inspects no body;
/// the builder methods change that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// Agent id (`[a-z0-9_-]`).
    pub id: String,
    /// Display name; defaults to the id.
    pub name: String,
    /// Agent version.
    pub version: String,
    /// Events turnstile should send; only these are sent.
    pub events: Vec<EventType>,
    /// Wants body chunks as they arrive (else turnstile buffers up to `max_body_bytes`).
    pub streaming_body: bool,
    /// Largest body the agent inspects; 0 = no body.
    pub max_body_bytes: u64,
    /// Path prefixes of the requests it wants (empty = all).
    pub path_prefixes: Vec<String>,
    /// Methods of the requests it wants (empty = all).
    pub methods: Vec<String>,
    /// Header names a request must carry to be sent (empty = no requirement).
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
            streaming_body: false,
            max_body_bytes: 0,
            path_prefixes: Vec::new(),
            methods: Vec::new(),
            required_headers: Vec::new(),
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
    /// turnstile (`streaming = false`) or chunk by chunk (`streaming = true`).
    pub fn request_body(mut self, max_body_bytes: u64, streaming: bool) -> Self {
        if !self.events.contains(&EventType::RequestBody) {
            self.events.push(EventType::RequestBody);
        }
        self.max_body_bytes = max_body_bytes;
        self.streaming_body = streaming;
        self
    }

    /// Only requests whose path starts with one of `prefixes` are sent.
    pub fn path_prefixes(mut self, prefixes: &[&str]) -> Self {
        self.path_prefixes = prefixes.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    pub(crate) fn write_capabilities(&self, mut c: agent_capabilities::Builder<'_>) {
        c.set_protocol_version(turnstile_wire::AGENT_PROTOCOL_VERSION);
        c.set_agent_id(self.id.as_str());
        c.set_name(self.name.as_str());
        c.set_version(self.version.as_str());
        let mut ev = c.reborrow().init_supported_events(len32(self.events.len()));
        for (i, e) in self.events.iter().enumerate() {
            ev.set(len32(i), *e);
        }
        let mut f = c.reborrow().init_features();
        f.set_streaming_body(self.streaming_body);
        f.set_cancellation(true);
        // One call at a time: the host calls a WASM agent synchronously.
        f.set_concurrent_requests(1);
        let mut l = c.reborrow().init_limits();
        l.set_max_body_bytes(self.max_body_bytes);
        let mut i = c.reborrow().init_interest();
        let mut p = i
            .reborrow()
            .init_path_prefixes(len32(self.path_prefixes.len()));
        for (n, v) in self.path_prefixes.iter().enumerate() {
            p.set(len32(n), v.as_str());
        }
        let mut m = i.reborrow().init_methods(len32(self.methods.len()));
        for (n, v) in self.methods.iter().enumerate() {
            m.set(len32(n), v.as_str());
        }
        let mut r = i.init_required_headers(len32(self.required_headers.len()));
        for (n, v) in self.required_headers.iter().enumerate() {
            r.set(len32(n), v.as_bytes());
        }
        c.set_encoding(Encoding::Capnp);
    }
}

/// A configuration the agent refuses: sent to turnstile as `configUpdate.configError`, which
/// makes the host refuse the configuration (the previous one stays).
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
