//! turnstile's configuration: the configuration file format and its validation, and the TLS and
//! QUIC server configuration built from it.
//!
//! This crate reads files (the configuration, PEM files) and writes the development certificate
//! into the state directory; it does no socket I/O and knows nothing of shards' internals.
//!
//! Flow: [`Config::load`] (a TOML file, or the embedded [`DEFAULT_CONFIG_TOML`]; unknown keys
//! and out-of-range values are errors naming the key and the value) → [`server_crypto`] (one
//! `rustls::ServerConfig`, TLS 1.3 only, ALPN [`ALPN`], 0-RTT through one session cache) →
//! [`quic_server_config`] (one `quinn_proto::ServerConfig` that every shard's endpoint shares).
//!
//! `[agents.<id>]` tables define agents (how to reach them and the policy of their calls) and
//! `[[routes]]` the chains of agent groups requests run through.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agents;
mod config;
mod error;
mod file;
pub mod limits;
mod quic;
pub mod tls;

pub use agents::{AgentConfig, BreakerConfig, FailMode, Placement, RouteConfig, WasmLimitsConfig};
pub use config::{
    Config, Congestion, DEFAULT_CONFIG_TOML, QuicConfig, ServerConfig, ShardConfig, SpinPolicy,
    TlsConfig,
};
pub use error::ConfigError;
pub use quic::{quic_server_config, transport_config};
pub use tls::{TlsMaterial, dev_client_crypto, server_crypto};

/// The one ALPN protocol of turnstile's client protocol (Cap'n Proto over QUIC). Not
/// configurable.
pub const ALPN: &[u8] = b"turnstile/1";
