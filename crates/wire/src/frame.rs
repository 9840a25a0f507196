//! Framing: `[u32 little-endian payload length][u8 kind][payload]`.
//!
//! The length is checked against [`FRAME_BYTES_MAX`] as soon as the 5 header bytes are known, so a
//! reader never buffers (or allocates for) a frame it would refuse.

use crate::error::WireError;
use crate::limits::{FRAME_BYTES_MAX, FRAME_HEADER_BYTES};

/// Which schema root a frame's payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Client → turnstile: `Request`.
    Request = 1,
    /// Turnstile → client: `Response`.
    Response = 2,
    /// Turnstile → agent: `ProxyToAgent`.
    ProxyToAgent = 3,
    /// Agent → turnstile: `AgentToProxy`.
    AgentToProxy = 4,
    /// Turnstile → agent: `ProxyToAgent` as JSON text, on a connection that negotiated the JSON
    /// encoding at the handshake (the `turnstile-agent-json` crate converts it).
    ProxyToAgentJson = 5,
    /// Agent → turnstile: `AgentToProxy` as JSON text (JSON encoding negotiated).
    AgentToProxyJson = 6,
}

impl FrameKind {
    /// Every kind, in wire order.
    pub const ALL: [FrameKind; 6] = [
        FrameKind::Request,
        FrameKind::Response,
        FrameKind::ProxyToAgent,
        FrameKind::AgentToProxy,
        FrameKind::ProxyToAgentJson,
        FrameKind::AgentToProxyJson,
    ];

    /// The kinds whose payload is a Cap'n Proto message, in wire order.
    pub const CAPNP: [FrameKind; 4] = [
        FrameKind::Request,
        FrameKind::Response,
        FrameKind::ProxyToAgent,
        FrameKind::AgentToProxy,
    ];

    /// Whether the payload is JSON text rather than a Cap'n Proto message.
    pub const fn is_json(self) -> bool {
        matches!(
            self,
            FrameKind::ProxyToAgentJson | FrameKind::AgentToProxyJson
        )
    }
}

impl TryFrom<u8> for FrameKind {
    type Error = WireError;

    fn try_from(byte: u8) -> Result<Self, WireError> {
        match byte {
            1 => Ok(FrameKind::Request),
            2 => Ok(FrameKind::Response),
            3 => Ok(FrameKind::ProxyToAgent),
            4 => Ok(FrameKind::AgentToProxy),
            5 => Ok(FrameKind::ProxyToAgentJson),
            6 => Ok(FrameKind::AgentToProxyJson),
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

/// A decoded, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload bytes that follow the header (at most [`FRAME_BYTES_MAX`]).
    pub payload_len: u32,
    /// Root of the payload.
    pub kind: FrameKind,
}

impl FrameHeader {
    /// Header plus payload bytes.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_BYTES + self.payload_len as usize
    }

    /// The 5 header bytes.
    pub fn to_bytes(&self) -> [u8; FRAME_HEADER_BYTES] {
        let len = self.payload_len.to_le_bytes();
        [len[0], len[1], len[2], len[3], self.kind as u8]
    }
}

/// Reads the header at the start of `buf`.
///
/// `Ok(None)` when fewer than 5 bytes are available; an error as soon as the announced length is
/// over the limit or the kind is unknown, before any payload is looked at.
pub fn peek_header(buf: &[u8]) -> Result<Option<FrameHeader>, WireError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let payload_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    if payload_len > FRAME_BYTES_MAX {
        return Err(WireError::TooLarge {
            len: u64::from(payload_len),
            max: FRAME_BYTES_MAX,
        });
    }
    let kind = FrameKind::try_from(header[4])?;
    Ok(Some(FrameHeader { payload_len, kind }))
}

/// A complete frame borrowed from a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Root of the payload.
    pub kind: FrameKind,
    /// The payload bytes, in place: a Cap'n Proto message, or JSON text for the JSON kinds.
    pub payload: &'a [u8],
}

/// Splits the first frame off a stream buffer.
///
/// `Ok(None)` when the buffer does not yet hold a whole frame (read more; the header, once
/// complete, has already been checked). On success returns the frame and the bytes it used.
pub fn split_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, WireError> {
    let Some(header) = peek_header(buf)? else {
        return Ok(None);
    };
    let total = header.frame_len();
    let Some(payload) = buf.get(FRAME_HEADER_BYTES..total) else {
        return Ok(None);
    };
    Ok(Some((
        Frame {
            kind: header.kind,
            payload,
        },
        total,
    )))
}

/// Decodes `buf` as exactly one frame: an error if it is shorter or longer.
pub fn decode_frame(buf: &[u8]) -> Result<Frame<'_>, WireError> {
    let Some(header) = peek_header(buf)? else {
        return Err(WireError::Truncated {
            needed: FRAME_HEADER_BYTES,
            have: buf.len(),
        });
    };
    let total = header.frame_len();
    match buf.len().cmp(&total) {
        std::cmp::Ordering::Less => Err(WireError::Truncated {
            needed: total,
            have: buf.len(),
        }),
        std::cmp::Ordering::Greater => Err(WireError::TrailingBytes {
            extra: buf.len() - total,
        }),
        std::cmp::Ordering::Equal => Ok(Frame {
            kind: header.kind,
            payload: &buf[FRAME_HEADER_BYTES..],
        }),
    }
}
