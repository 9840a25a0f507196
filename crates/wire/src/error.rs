//! The one error type of the wire format.

use crate::frame::FrameKind;

/// Why bytes could not be decoded or a message could not be encoded.
///
/// Every variant is a statement about the peer's bytes (or the caller's message); none of them is
/// a bug in turnstile, and none of them panics.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The input ends before the frame does.
    #[error("truncated frame: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes the frame needs in total (header included) as far as known.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// The length field exceeds [`crate::limits::FRAME_BYTES_MAX`] (or an encoded message would).
    #[error("frame too large: {len} bytes, limit {max}")]
    TooLarge {
        /// Payload length announced (or produced).
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The kind byte names no root of the schema.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The frame is valid but carries another root than the caller expects.
    #[error("unexpected frame kind: expected {expected:?}, got {got:?}")]
    UnexpectedKind {
        /// Kind the caller asked for.
        expected: FrameKind,
        /// Kind the frame carries.
        got: FrameKind,
    },
    /// The frame's payload is JSON text ([`FrameKind::is_json`]), not a Cap'n Proto message:
    /// convert it with the `turnstile-agent-json` crate instead of parsing it.
    #[error("frame kind {0:?} carries JSON text, not a Cap'n Proto message")]
    NotCapnp(FrameKind),
    /// The payload is longer than the Cap'n Proto message it holds.
    #[error("{extra} trailing bytes after the message in a frame")]
    TrailingBytes {
        /// Bytes left over.
        extra: usize,
    },
    /// The message has too many segments.
    #[error("message has {count} segments, limit {max}")]
    TooManySegments {
        /// Segment count announced.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// The payload is not a valid Cap'n Proto message of the expected root (bad pointers,
    /// traversal or nesting limit exceeded, invalid UTF-8 in a text field, unknown union member).
    #[error("bad message: {0}")]
    BadMessage(#[from] capnp::Error),
    /// A union discriminant this build does not know (a newer peer, or garbage).
    #[error("unknown union member {0}")]
    NotInSchema(u16),
}

impl From<capnp::NotInSchema> for WireError {
    fn from(e: capnp::NotInSchema) -> Self {
        WireError::NotInSchema(e.0)
    }
}
