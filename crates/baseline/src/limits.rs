//! Bounds of the baseline, named once. Units come last.

/// How long a closing endpoint gets to tell its peers, once the drain is over.
pub const CLOSE_FLUSH_MS: u64 = 500;
/// How often the drain checks whether requests are still in flight.
pub const DRAIN_POLL_MS: u64 = 5;
/// Window over which new connection attempts are counted for the Retry threshold.
pub const INITIAL_RATE_WINDOW_MS: u64 = 1000;

/// Frames queued for one agent connection's writer; beyond it a call fails (its fail mode).
pub const AGENT_WRITE_QUEUE_FRAMES_MAX: usize = 4096;
/// Time an agent has to answer the handshake.
pub const AGENT_HANDSHAKE_TIMEOUT_MS: u64 = 5000;
/// Reconnect backoff bounds of an agent connection.
pub const AGENT_RECONNECT_MS_MIN: u64 = 50;
/// See [`AGENT_RECONNECT_MS_MIN`].
pub const AGENT_RECONNECT_MS_MAX: u64 = 5000;
/// How long start-up waits for agents (their sockets, then the first connections).
pub const AGENTS_READY_WAIT_MS: u64 = 10_000;
/// Batched bytes one agent connection's writer sends in one write.
pub const AGENT_WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;
