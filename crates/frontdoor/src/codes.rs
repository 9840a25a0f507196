//! QUIC application error codes used on streams and connections (see docs/protocol.md).

use quinn_proto::VarInt;

/// Graceful close.
pub const NO_ERROR: VarInt = VarInt::from_u32(0x0);
/// Something failed inside turnstile.
pub const INTERNAL: VarInt = VarInt::from_u32(0x1);
/// The server is draining; requests in flight were finished first.
pub const SHUTTING_DOWN: VarInt = VarInt::from_u32(0x2);
/// A frame on this stream did not decode and no Response could be sent.
pub const FRAME_ERROR: VarInt = VarInt::from_u32(0x3);
/// The request exceeded the server's request size limit.
pub const REQUEST_TOO_LARGE: VarInt = VarInt::from_u32(0x4);
/// The request was cancelled.
pub const CANCELLED: VarInt = VarInt::from_u32(0x5);
/// The connection limit was reached.
pub const CONNECTION_LIMIT: VarInt = VarInt::from_u32(0x6);
