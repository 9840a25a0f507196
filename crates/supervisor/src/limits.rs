//! Bounds of the supervisor, named once. Units come last.

/// First delay before restarting an agent that died, in milliseconds.
pub const RESTART_BACKOFF_MS_MIN: u64 = 100;

/// Ceiling of the restart delay, in milliseconds; it doubles from the minimum up to this.
pub const RESTART_BACKOFF_MS_MAX: u64 = 10_000;

/// An agent that stayed up this long before dying is restarted after the minimum delay again,
/// in milliseconds.
pub const RESTART_BACKOFF_RESET_MS: u64 = 30_000;

/// Largest share of a restart delay that jitter takes off it, in percent (the delay lies in
/// `[(100 - this)% , 100%]` of the current backoff, so successive delays still grow).
pub const RESTART_JITTER_PERCENT_MAX: u64 = 25;

/// Default time an agent gets between SIGTERM and SIGKILL, in milliseconds.
pub const STOP_GRACE_MS: u64 = 2_000;

/// Default time an agent gets to create its socket file after it was started, in milliseconds.
pub const READY_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// How often the supervisor thread looks at its children (exit, socket file, deadlines), in
/// milliseconds. It sleeps in between: there is no busy loop.
pub const POLL_MS: u64 = 10;

/// Agents one supervisor runs.
pub const AGENTS_MAX: usize = 64;

/// Bytes of an agent id (`[a-z0-9_-]`).
pub const AGENT_ID_BYTES_MAX: usize = 64;

/// Bytes of one line of agent output forwarded to the log; the rest of a longer line is dropped
/// (and the line marked truncated).
pub const LOG_LINE_BYTES_MAX: usize = 4096;

/// Bytes of a Unix socket path (`sun_path` is 108 bytes including the terminating NUL).
pub const SOCKET_PATH_BYTES_MAX: usize = 107;

/// Commands queued from handles to the supervisor thread.
pub const COMMANDS_QUEUED_MAX: usize = 64;
