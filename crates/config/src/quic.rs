//! QUIC: the `quinn_proto::ServerConfig` all shards share, and its transport parameters.

use std::sync::Arc;

use quinn_proto::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
use quinn_proto::crypto::rustls::QuicServerConfig;
use quinn_proto::{IdleTimeout, TransportConfig, VarInt};

use crate::tls::TlsMaterial;
use crate::{Config, ConfigError, Congestion, QuicConfig};

/// Builds the QUIC server configuration from `[quic]` and the shared TLS configuration.
///
/// Call it once and share the result (`Arc`) with every shard: besides the TLS session cache,
/// it holds the random key that protects Retry and NEW_TOKEN tokens, so a token issued by one
/// shard validates on another only if both use this same value.
///
/// Connection migration is allowed, unidirectional streams are refused, and quinn-proto's
/// anti-amplification limit (at most 3× the bytes received from an unvalidated address) stays
/// in force, as it always does. With `quic.zero_rtt = false` the TLS configuration is copied
/// with early data turned off (the copy shares the session cache).
pub fn quic_server_config(
    cfg: &Config,
    tls: &TlsMaterial,
) -> Result<quinn_proto::ServerConfig, ConfigError> {
    let crypto = if cfg.quic.zero_rtt {
        tls.server_config.clone()
    } else {
        let mut no_early_data = (*tls.server_config).clone();
        no_early_data.max_early_data_size = 0;
        Arc::new(no_early_data)
    };
    let crypto = QuicServerConfig::try_from(crypto)?;
    let mut server = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
    server
        .transport_config(Arc::new(transport_config(&cfg.quic)?))
        .migration(true);
    Ok(server)
}

/// Transport parameters from `[quic]`: stream limits (no unidirectional streams), idle timeout,
/// keep-alive, flow-control windows and congestion controller. QUIC DATAGRAM frames are not
/// offered. Also usable by clients such as the load generator.
pub fn transport_config(q: &QuicConfig) -> Result<TransportConfig, ConfigError> {
    let idle_timeout = IdleTimeout::try_from(q.idle_timeout).map_err(|_| {
        ConfigError::invalid(
            "quic.idle_timeout_ms",
            q.idle_timeout.as_millis().to_string(),
            "too large for QUIC",
        )
    })?;
    let congestion: Arc<dyn quinn_proto::congestion::ControllerFactory + Send + Sync> =
        match q.congestion {
            Congestion::Cubic => Arc::new(CubicConfig::default()),
            Congestion::Bbr => Arc::new(BbrConfig::default()),
            Congestion::NewReno => Arc::new(NewRenoConfig::default()),
        };
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(q.max_concurrent_bidi_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .max_idle_timeout(Some(idle_timeout))
        .keep_alive_interval(q.keep_alive)
        .stream_receive_window(VarInt::from_u32(q.stream_receive_window_bytes))
        .receive_window(VarInt::from_u32(q.receive_window_bytes))
        .send_window(q.send_window_bytes)
        .datagram_receive_buffer_size(None)
        .congestion_controller_factory(congestion);
    Ok(transport)
}
