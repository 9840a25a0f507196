//! Every size and count this crate allocates or accepts, in one place. Nothing grows past these.
//!
//! Names end in their unit (`_BYTES`, `_COUNT`, `_MAX`, `_MS`).

/// Default submission-queue size of a ring ([`crate::RingConfig::entries`]).
pub const RING_ENTRIES_DEFAULT_COUNT: u32 = 1024;

/// Largest submission-queue size [`crate::RingConfig::entries`] accepts.
pub const RING_ENTRIES_MAX_COUNT: u32 = 32_768;

/// Smallest completion-queue size. Large enough that every operation this crate can have in
/// flight at once (one CQE per receive buffer, send slot, connection operation, timer, wake-up)
/// fits, so the CQ never overflows in normal operation.
pub const CQ_ENTRIES_MIN_COUNT: u32 = 2048;

/// Size of one provided receive buffer. Holds the kernel's `io_uring_recvmsg_out` header, the
/// source address, the control messages and a full 64 KiB UDP GRO batch.
pub const RECV_BUFFER_BYTES: usize = 64 * 1024 + 1024;

/// Number of provided receive buffers per ring (a power of two, as the buffer ring requires).
pub const RECV_BUFFERS_COUNT: u16 = 256;

/// Space reserved in each receive buffer for control messages (GRO segment size, destination
/// address, ECN, kernel drop counter).
pub const RECV_CONTROL_BYTES: usize = 256;

/// Number of send slots per ring: at most this many `sendmsg` operations are in flight.
pub const SEND_SLOTS_COUNT: u16 = 128;

/// Largest payload of one [`crate::Ring::send_udp`] call (one datagram or one GSO batch).
pub const SEND_BUFFER_BYTES: usize = 64 * 1024;

/// Space reserved in each send slot for control messages (GSO segment size, source address,
/// ECN).
pub const SEND_CONTROL_BYTES: usize = 128;

/// Most segments one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS`).
pub const GSO_MAX_SEGMENTS: usize = 64;

/// Most Unix stream connections one ring holds at once.
pub const UDS_CONNECTIONS_MAX: usize = 64;

/// Per-connection receive buffer: one [`crate::Completion::UdsData`] carries at most this much.
pub const UDS_READ_BUFFER_BYTES: usize = 64 * 1024;

/// Per-connection queue of bytes accepted by [`crate::Ring::uds_write`] but not yet written.
pub const UDS_WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Longest Unix socket path (`sun_path` holds 108 bytes including the terminating NUL).
pub const UDS_PATH_MAX_BYTES: usize = 107;

/// When a ring is dropped with operations in flight, it cancels them and waits at most this
/// many rounds of [`SHUTDOWN_WAIT_ROUND_MS`] for their completions; memory of operations that
/// never complete is leaked rather than freed under the kernel.
pub const SHUTDOWN_WAIT_ROUNDS_COUNT: u32 = 100;

/// Length of one shutdown wait round.
pub const SHUTDOWN_WAIT_ROUND_MS: u64 = 10;

/// Kernel timeouts that can be in flight at once (one armed for the nearest deadline, the
/// others being removed). When all are busy, re-arming waits for a removal to complete.
pub const TIMER_SLOTS_COUNT: usize = 8;

/// How long [`crate::Ring::wait`] sleeps at most when the wake-up read could not be armed (the
/// submission queue was full), so that no wake-up is missed for longer than this.
pub const WAKE_UNARMED_SLEEP_MS: u64 = 1;

/// A timer completion is reported when the kernel timeout fires no earlier than this before
/// the requested deadline (guards against clock rounding).
pub const TIMER_SLACK_US: u64 = 50;

const _: () = assert!(RECV_BUFFERS_COUNT.is_power_of_two());
const _: () = assert!(RECV_BUFFER_BYTES >= 16 + 28 + RECV_CONTROL_BYTES + 65_535);
const _: () = assert!(SEND_BUFFER_BYTES <= u32::MAX as usize);
const _: () = assert!(UDS_WRITE_BUFFER_BYTES <= u32::MAX as usize);
const _: () = assert!(UDS_CONNECTIONS_MAX <= u16::MAX as usize);
