//! Every bound a configuration value is checked against, named once. Units come last in the name.

/// Largest configuration file read: 1 MiB. Checked before the file is parsed.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// Largest PEM file (certificate chain, key, client CA bundle) read: 1 MiB.
pub const PEM_FILE_BYTES_MAX: u64 = 1 << 20;

/// Most shards (`server.shards`, entries of `server.cores`).
pub const SHARDS_MAX: u64 = 1024;

/// Highest core id `server.cores` may name (Linux's largest `NR_CPUS` is 8192).
pub const CORE_ID_MAX: u64 = 8191;

/// Longest `server.drain_timeout_ms`: 10 minutes.
pub const DRAIN_TIMEOUT_MS_MAX: u64 = 600_000;

/// Longest `shard.spin_us`: 100 ms.
pub const SPIN_US_MAX: u64 = 100_000;

/// Longest `shard.max_sleep_ms`: 1 s.
pub const MAX_SLEEP_MS_MAX: u64 = 1000;

/// Fewest `shard.ring_entries`.
pub const RING_ENTRIES_MIN: u64 = 8;

/// Most `shard.ring_entries` (the kernel's `IORING_MAX_ENTRIES`).
pub const RING_ENTRIES_MAX: u64 = 32_768;

/// Most `quic.max_concurrent_bidi_streams`.
pub const STREAMS_PER_CONNECTION_MAX: u64 = 100_000;

/// Shortest `quic.idle_timeout_ms`.
pub const IDLE_TIMEOUT_MS_MIN: u64 = 100;

/// Longest `quic.idle_timeout_ms`: 10 minutes.
pub const IDLE_TIMEOUT_MS_MAX: u64 = 600_000;

/// Most `quic.max_connections_per_shard`.
pub const CONNECTIONS_PER_SHARD_MAX: u64 = 1_000_000;

/// Largest `quic.max_request_bytes`: 64 MiB.
pub const REQUEST_BYTES_MAX: u64 = 64 << 20;

/// Highest `quic.retry_above_initials_per_sec`.
pub const INITIALS_PER_SEC_MAX: u64 = 10_000_000;

/// Smallest flow-control window (`quic.*_window_bytes`): one minimal QUIC datagram.
pub const WINDOW_BYTES_MIN: u64 = 1200;

/// Largest flow-control window (`quic.*_window_bytes`): 1 GiB.
pub const WINDOW_BYTES_MAX: u64 = 1 << 30;

/// TLS sessions remembered for resumption and 0-RTT, shared by all shards. Each handshake stores
/// up to two (rustls sends two tickets); each entry is a few hundred bytes.
pub const TLS_SESSION_CACHE_ENTRIES: usize = 65_536;

const _: () = assert!(WINDOW_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(SHARDS_MAX <= CORE_ID_MAX + 1);

/// Agents one configuration may define.
pub const AGENTS_MAX: u64 = 64;
/// Routes one configuration may define.
pub const ROUTES_MAX: u64 = 1024;
/// Groups in one route's chain.
pub const GROUPS_PER_ROUTE_MAX: u64 = 16;
/// Agents in one parallel group.
pub const AGENTS_PER_GROUP_MAX: u64 = 16;
/// Connections per agent per shard.
pub const AGENT_CONNECTIONS_MAX: u64 = 32;
/// Longest agent call timeout.
pub const AGENT_TIMEOUT_MS_MAX: u64 = 600_000;
/// Most calls in flight per agent per shard.
pub const AGENT_IN_FLIGHT_MAX: u64 = 4096;

/// Agents in one route, all groups together.
pub const AGENTS_PER_ROUTE_MAX: u64 = 32;
/// Longest breaker window or open period.
pub const BREAKER_MS_MAX: u64 = 600_000;
/// Most half-open probe calls.
pub const BREAKER_PROBES_MAX: u64 = 64;
