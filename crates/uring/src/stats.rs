//! Counters a ring keeps about what it did and what went wrong (read with
//! [`crate::Ring::stats`]). They only grow; nothing here is reset.

/// Per-ring counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Receive completions delivered (one datagram or one GRO batch each).
    pub udp_recv_batches: u64,
    /// Payload bytes delivered.
    pub udp_recv_bytes: u64,
    /// Times the multishot receive was (re-)armed.
    pub udp_recv_arms: u64,
    /// Times the multishot receive ended because every buffer was in use.
    pub udp_recv_no_buffers: u64,
    /// Datagrams dropped by the kernel because the socket's receive queue was full, as last
    /// reported by `SO_RXQ_OVFL` (reported with the next datagram that is queued).
    pub udp_recv_kernel_drops: u64,
    /// Datagrams dropped because they did not fit a receive buffer.
    pub udp_recv_truncated: u64,
    /// Datagrams delivered with some control messages cut off.
    pub udp_recv_control_truncated: u64,
    /// Receive completions that could not be parsed.
    pub udp_recv_malformed: u64,
    /// Receive errors (each also delivered as [`crate::Completion::UdpRecvError`]).
    pub udp_recv_errors: u64,
    /// `sendmsg` operations that completed successfully.
    pub udp_send_ok: u64,
    /// `sendmsg` operations that failed (datagrams lost).
    pub udp_send_errors: u64,
    /// errno of the most recent failed `sendmsg` (0 if none).
    pub udp_send_last_errno: i32,
    /// [`crate::Ring::send_udp`] calls refused because every send slot was in flight.
    pub udp_send_pool_exhausted: u64,
    /// GSO sends the kernel refused with `EIO` and that were resent segment by segment (GSO is
    /// off for the socket after the first one).
    pub udp_send_gso_fallbacks: u64,
    /// Timer completions delivered.
    pub timers_fired: u64,
    /// Wake-up completions delivered.
    pub wakeups: u64,
    /// Failed reads of the wake-up eventfd.
    pub wake_errors: u64,
    /// Completions with a `user_data` this crate never issued, or other unexpected results.
    pub unexpected_completions: u64,
}
