//! Bounds of agent connections, named once. Units come last.

/// Calls in flight on one connection.
pub const CALLS_PER_LINK_MAX: usize = 4096;

/// Bytes queued for writing on one connection before new calls are refused on it.
pub const LINK_QUEUED_BYTES_MAX: usize = 4 << 20;

/// Interest predicates kept per agent (path prefixes, methods, header names, each).
pub const INTEREST_ITEMS_MAX: usize = 64;

/// How long an agent has to answer the handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 2_000;

/// First reconnect delay; doubles per failure up to [`RECONNECT_BACKOFF_MS_MAX`].
pub const RECONNECT_BACKOFF_MS_MIN: u64 = 50;

/// Longest reconnect delay.
pub const RECONNECT_BACKOFF_MS_MAX: u64 = 5_000;

/// Connections in one pool.
pub const LINKS_PER_POOL_MAX: usize = 32;
