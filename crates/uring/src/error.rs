//! Error types. Every kernel or peer failure is a value of one of these, never a panic.

use std::io;
use std::net::SocketAddr;

use crate::probe::UringUnavailable;

/// Why [`crate::Ring::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// io_uring itself is unusable here; the message says why and how to fix it.
    #[error(transparent)]
    Unavailable(#[from] UringUnavailable),
    /// The [`crate::RingConfig`] is out of range.
    #[error("invalid ring configuration: {0}")]
    Config(&'static str),
    /// Binding the UDP socket failed (address in use without `SO_REUSEPORT` on the other
    /// socket, address not local, ...).
    #[error("cannot bind UDP socket to {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// Kernel error.
        #[source]
        source: io::Error,
    },
    /// Another set-up step failed.
    #[error("cannot {action}: {source}")]
    Io {
        /// What was being set up.
        action: &'static str,
        /// Kernel error.
        #[source]
        source: io::Error,
    },
}

/// Why [`crate::Ring::send_udp`] refused a datagram. Nothing was queued; the caller decides
/// whether to count it as lost or retry after draining completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Every send slot is in flight ([`crate::limits::SEND_SLOTS_COUNT`]); slots come back as
    /// completions are drained.
    #[error("all UDP send slots are in flight; drain completions and retry")]
    PoolExhausted,
    /// The payload exceeds [`crate::limits::SEND_BUFFER_BYTES`].
    #[error("UDP payload of {len} bytes exceeds the {max}-byte send buffer")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Largest accepted payload.
        max: usize,
    },
    /// `segment_size` is zero or larger than a datagram can be.
    #[error("invalid GSO segment size {0}")]
    InvalidSegmentSize(usize),
    /// The payload would be cut into more than [`crate::limits::GSO_MAX_SEGMENTS`] segments.
    #[error("{segments} GSO segments exceed the maximum of {max}")]
    TooManySegments {
        /// Segments the payload would need.
        segments: usize,
        /// Most segments per send.
        max: usize,
    },
    /// The destination's address family cannot be reached from this socket (an IPv6
    /// destination on an IPv4 socket).
    #[error("destination {0} cannot be reached from this socket's address family")]
    AddressFamily(SocketAddr),
    /// The ring was configured without a UDP socket.
    #[error("this ring has no UDP socket")]
    NoSocket,
    /// The submission queue stayed full even after submitting.
    #[error("io_uring submission queue is full")]
    RingFull,
}

/// Why a Unix-socket call was refused.
#[derive(Debug, thiserror::Error)]
pub enum UdsError {
    /// The socket path is longer than [`crate::limits::UDS_PATH_MAX_BYTES`].
    #[error("unix socket path is {len} bytes, longer than the limit of {max}")]
    PathTooLong {
        /// Path length in bytes.
        len: usize,
        /// Longest accepted path.
        max: usize,
    },
    /// [`crate::limits::UDS_CONNECTIONS_MAX`] connections are open already.
    #[error("all {0} unix connection slots are in use")]
    TooManyConnections(usize),
    /// The token does not name a live connection (closed, or never issued by this ring).
    #[error("unknown or closed unix connection token {0:?}")]
    UnknownToken(crate::Token),
    /// The connection is closing; it accepts no more calls.
    #[error("unix connection {0:?} is closing")]
    Closing(crate::Token),
    /// The write queue has no room for the data; wait for [`crate::Completion::UdsWritten`].
    #[error("unix write queue full: {queued} bytes queued, {len} more do not fit in {capacity}")]
    WriteQueueFull {
        /// Bytes already queued.
        queued: usize,
        /// Bytes offered.
        len: usize,
        /// Queue capacity ([`crate::limits::UDS_WRITE_BUFFER_BYTES`]).
        capacity: usize,
    },
    /// The submission queue stayed full even after submitting.
    #[error("io_uring submission queue is full")]
    RingFull,
    /// Creating the socket or its buffers failed.
    #[error("cannot {action}: {source}")]
    Io {
        /// What failed.
        action: &'static str,
        /// Kernel error.
        #[source]
        source: io::Error,
    },
}
