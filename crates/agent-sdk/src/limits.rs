//! Every bound the SDK applies, named once. Units come last in the name.
//!
//! Frame sizes are the wire format's: [`turnstile_wire::limits::FRAME_BYTES_MAX`] applies to
//! every frame in both directions.

/// Most connections served at once; further connections are accepted and closed at once.
pub const CONNECTIONS_MAX: usize = 1024;

/// Requests in flight per connection declared at the handshake (`limits.maxConcurrency`,
/// unless the agent declares less). turnstile keeps to it.
pub const IN_FLIGHT_PER_CONNECTION_MAX: u32 = 4096;

/// Most open requests on one connection: requests with a reply outstanding or kept open by a
/// `needMore` answer. A proxy that exceeds it breaks the protocol and loses the connection.
pub const OPEN_REQUESTS_PER_CONNECTION_MAX: usize = 4 * IN_FLIGHT_PER_CONNECTION_MAX as usize;

/// Bytes asked of the kernel per read; the receive buffer grows past it only for a larger frame.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes of replies buffered on a connection while one read's frames are handled, before they
/// are written out anyway.
pub const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Longest a connection told to `shutdown` waits for its in-flight replies before it closes.
pub const SHUTDOWN_WAIT_MS_MAX: u64 = 5_000;

/// Longest [`crate::Server::stop`] waits for in-flight replies, then for connections to close.
pub const STOP_WAIT_MS_MAX: u64 = 2_000;

/// Shortest health or metrics report interval accepted.
pub const REPORT_INTERVAL_MS_MIN: u32 = 10;

/// Largest `--config` file read at start-up.
pub const CONFIG_FILE_BYTES_MAX: u64 = turnstile_wire::limits::FRAME_BYTES_MAX as u64;

/// Most tasks a [`crate::Timer`] holds; past it a task runs at once instead of being lost.
pub const TIMER_TASKS_MAX: usize = 1 << 20;

/// Longest time between two checks of the stop flag and drain deadlines by the report thread.
pub const TICK_MS_MAX: u64 = 50;
