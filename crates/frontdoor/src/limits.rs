//! Bounds of the front door, named once. Units come last.

/// Length of every connection id this server issues. Byte 0 is the owning shard.
pub const CID_BYTES: usize = 8;

/// Most shards a connection id can name (one byte).
pub const SHARDS_MAX: usize = 256;

/// Most datagrams quinn-proto may pack into one GSO transmit.
pub const GSO_SEGMENTS_MAX: usize = 10;

/// Endpoint-generated datagrams (stateless resets, Retry, refusals, version negotiation) waiting
/// to be sent. Beyond this they are dropped and counted: the peer retransmits.
pub const ENDPOINT_TRANSMITS_QUEUED_MAX: usize = 256;

/// Request buffers kept for reuse per shard (each grows to the largest request it held).
pub const STREAM_BUFFERS_POOLED_MAX: usize = 4096;

/// A pooled buffer that grew beyond this is freed instead of pooled, so one huge request does not
/// pin its memory forever.
pub const POOLED_BUFFER_BYTES_MAX: usize = 64 * 1024;

/// Initial capacity of a pooled stream buffer. Small, so an idle stream costs little; pooled
/// buffers keep what they grew to (up to `POOLED_BUFFER_BYTES_MAX`), so after warm-up requests of
/// the usual size allocate nothing.
pub const STREAM_BUFFER_BYTES: usize = 256;

/// Bytes read from a stream per `read` call.
pub const STREAM_READ_CHUNK_BYTES: usize = 64 * 1024;

/// Length of the window in which new Initials are counted for the Retry threshold.
pub const INITIAL_RATE_WINDOW_MS: u64 = 1000;
