//! The file format: what serde reads from TOML, before validation.
//!
//! Every table denies unknown keys, and every key has a default equal to the one in
//! `default.toml` (a test checks that an empty file and the embedded default agree). Integers are
//! read as `i64` and strings as `String` so that range and syntax errors are reported by
//! validation, with the key and the value, rather than by serde.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileConfig {
    pub server: FileServer,
    pub shard: FileShard,
    pub quic: FileQuic,
    pub tls: FileTls,
    pub agents: std::collections::BTreeMap<String, crate::agents::FileAgent>,
    pub routes: Vec<crate::agents::FileRoute>,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileServer {
    pub listen: String,
    pub shards: i64,
    pub cores: Vec<i64>,
    pub state_dir: String,
    pub runtime_dir: String,
    pub admin_listen: String,
    pub drain_timeout_ms: i64,
}

impl Default for FileServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4433".to_owned(),
            shards: 0,
            cores: Vec::new(),
            state_dir: String::new(),
            runtime_dir: String::new(),
            admin_listen: String::new(),
            drain_timeout_ms: 5000,
        }
    }
}

/// `[shard]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileShard {
    pub spin: String,
    /// `None` when the key is absent: then [`SPIN_US_DEFAULT`] for `fixed` and `adaptive`, and
    /// nothing for `busy-poll`, which rejects the key.
    pub spin_us: Option<i64>,
    pub ring_entries: i64,
    pub sqpoll: bool,
    pub max_sleep_ms: i64,
}

/// `shard.spin_us` when the key is absent.
pub(crate) const SPIN_US_DEFAULT: i64 = 50;

impl Default for FileShard {
    fn default() -> Self {
        Self {
            spin: "fixed".to_owned(),
            spin_us: None,
            ring_entries: 1024,
            sqpoll: false,
            max_sleep_ms: 0,
        }
    }
}

/// `[quic]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileQuic {
    pub max_concurrent_bidi_streams: i64,
    pub idle_timeout_ms: i64,
    pub keep_alive_ms: i64,
    pub max_connections_per_shard: i64,
    pub max_request_bytes: i64,
    pub retry_above_initials_per_sec: i64,
    pub congestion: String,
    pub zero_rtt: bool,
    pub stream_receive_window_bytes: i64,
    pub receive_window_bytes: i64,
    pub send_window_bytes: i64,
}

impl Default for FileQuic {
    fn default() -> Self {
        Self {
            max_concurrent_bidi_streams: 1024,
            idle_timeout_ms: 30_000,
            keep_alive_ms: 10_000,
            max_connections_per_shard: 10_000,
            max_request_bytes: 4 << 20,
            retry_above_initials_per_sec: 1000,
            congestion: "cubic".to_owned(),
            zero_rtt: true,
            stream_receive_window_bytes: 1 << 20,
            receive_window_bytes: 4 << 20,
            send_window_bytes: 4 << 20,
        }
    }
}

/// `[tls]`. Empty strings mean "not set".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileTls {
    pub cert: String,
    pub key: String,
    pub client_ca: String,
}
