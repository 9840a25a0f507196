//! Bounds of a shard, named once. Units come last.

/// Datagrams waiting in one shard's queue of datagrams steered to it by other shards. Beyond it
/// they are dropped and counted (QUIC retransmits).
pub const STEERED_DATAGRAMS_QUEUED_MAX: usize = 4096;

/// Size of each block of the receive arena that datagrams are copied into for quinn-proto (which
/// decrypts in place). Blocks are reused once quinn-proto drops every datagram cut from them.
pub const RECV_ARENA_BYTES: usize = 256 * 1024;

/// Largest transmit quinn-proto may produce (GSO batch of full-size datagrams).
pub const TRANSMIT_BYTES_MAX: usize = 64 * 1024;

/// Control messages queued for one shard.
pub const CONTROL_QUEUED_MAX: usize = 16;

/// Spin budget ceiling for the adaptive policy and for configured values, in microseconds.
pub const SPIN_US_MAX: u32 = 100_000;

/// After the drain deadline, how long closing connections get to flush their CONNECTION_CLOSE.
pub const CLOSE_FLUSH_MS: u64 = 200;

/// Header names of one request looked at for agents' interest predicates; headers beyond it are
/// not considered (a required header past this point counts as absent).
pub const HEADERS_VIEWED_MAX: usize = 128;

/// Request payload buffers kept for reuse.
pub const PAYLOAD_BUFFERS_POOLED_MAX: usize = 4096;

/// Calls to one agent parked while its connections are still connecting or handshaking (right
/// after start-up or a restart), or full at the agent's declared `maxConcurrency`. Beyond it calls
/// get the agent's fail mode at once.
pub const CALLS_WAITING_FOR_CONNECT_MAX: usize = 1024;
