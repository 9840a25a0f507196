//! Typed reading and writing of framed Cap'n Proto messages.
//!
//! Reading is in place: a [`Message`] borrows the frame's payload (a `&[u8]` or [`bytes::Bytes`]);
//! header and body bytes are never copied to decode. Writing goes through a [`FrameWriter`] whose
//! scratch space is reused from message to message.

use bytes::Bytes;
use capnp::message::{Builder, ScratchSpaceHeapAllocator};
use capnp::serialize::{self, NoAllocSliceSegments};

use crate::error::WireError;
use crate::frame::{Frame, FrameHeader, FrameKind, decode_frame};
use crate::limits::{FRAME_BYTES_MAX, FRAME_HEADER_BYTES, SEGMENTS_MAX, reader_options};
use crate::turnstile_capnp::{agent_to_proxy, proxy_to_agent, request, response};

/// A schema root that travels in a frame of its own kind.
pub trait Root: capnp::traits::Owned {
    /// The frame kind byte for this root.
    const KIND: FrameKind;
}

impl Root for request::Owned {
    const KIND: FrameKind = FrameKind::Request;
}
impl Root for response::Owned {
    const KIND: FrameKind = FrameKind::Response;
}
impl Root for proxy_to_agent::Owned {
    const KIND: FrameKind = FrameKind::ProxyToAgent;
}
impl Root for agent_to_proxy::Owned {
    const KIND: FrameKind = FrameKind::AgentToProxy;
}

/// A decoded message, borrowing its bytes.
pub struct Message<'a> {
    kind: FrameKind,
    reader: capnp::message::Reader<NoAllocSliceSegments<'a>>,
    payload_bytes: usize,
}

impl<'a> Message<'a> {
    /// Parses a frame's payload: segment table checked, limits from [`crate::limits`] applied,
    /// trailing bytes refused. No allocation. A JSON kind ([`FrameKind::is_json`]) is refused
    /// with [`WireError::NotCapnp`].
    pub fn parse(kind: FrameKind, payload: &'a [u8]) -> Result<Self, WireError> {
        if kind.is_json() {
            return Err(WireError::NotCapnp(kind));
        }
        if let Some(first) = payload.first_chunk::<4>() {
            let count = u32::from_le_bytes(*first).saturating_add(1);
            if count > SEGMENTS_MAX {
                return Err(WireError::TooManySegments {
                    count,
                    max: SEGMENTS_MAX,
                });
            }
        }
        let mut rest = payload;
        let reader = serialize::read_message_from_flat_slice_no_alloc(&mut rest, reader_options())?;
        if !rest.is_empty() {
            return Err(WireError::TrailingBytes { extra: rest.len() });
        }
        Ok(Message {
            kind,
            reader,
            payload_bytes: payload.len(),
        })
    }

    /// Parses `buf` as exactly one frame.
    pub fn from_frame_bytes(buf: &'a [u8]) -> Result<Self, WireError> {
        let frame = decode_frame(buf)?;
        Self::parse(frame.kind, frame.payload)
    }

    /// Size of the payload this message was parsed from.
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Which root this message holds.
    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// The root reader, if this message is of root `R`.
    pub fn root<R: Root>(&self) -> Result<R::Reader<'_>, WireError> {
        if self.kind != R::KIND {
            return Err(WireError::UnexpectedKind {
                expected: R::KIND,
                got: self.kind,
            });
        }
        Ok(self.reader.get_root::<R::Reader<'_>>()?)
    }

    /// Walks every pointer of the message once, so later accessors cannot hit a bad pointer.
    /// Bounded by the traversal limit. Returns the message's size in words.
    pub fn validate(&self) -> Result<u64, WireError> {
        let root: capnp::any_pointer::Reader<'_> = self.reader.get_root()?;
        Ok(root.target_size()?.word_count)
    }
}

impl<'a> Frame<'a> {
    /// Parses this frame's payload into a [`Message`].
    pub fn message(&self) -> Result<Message<'a>, WireError> {
        Message::parse(self.kind, self.payload)
    }
}

/// A frame whose payload is held in a reference-counted buffer (for example a slice of a larger
/// receive buffer), for readers that outlive the receive call.
#[derive(Debug, Clone)]
pub struct OwnedFrame {
    /// Root of the payload.
    pub kind: FrameKind,
    /// The payload bytes: a Cap'n Proto message, or JSON text for the JSON kinds.
    pub payload: Bytes,
}

impl OwnedFrame {
    /// Splits the first frame off `buf` without copying: `Ok(None)` if it is not complete yet.
    pub fn split_from(buf: &mut Bytes) -> Result<Option<OwnedFrame>, WireError> {
        let Some(header) = crate::frame::peek_header(buf)? else {
            return Ok(None);
        };
        if buf.len() < header.frame_len() {
            return Ok(None);
        }
        let mut frame = buf.split_to(header.frame_len());
        let payload = frame.split_off(FRAME_HEADER_BYTES);
        Ok(Some(OwnedFrame {
            kind: header.kind,
            payload,
        }))
    }

    /// Parses the payload in place.
    pub fn message(&self) -> Result<Message<'_>, WireError> {
        Message::parse(self.kind, &self.payload)
    }
}

/// Builds framed messages with a reusable scratch space: a message that fits in the scratch
/// space costs no heap memory for its contents.
///
/// Cap'n Proto's builder still keeps its segment table in a one-element `Vec`, so one small
/// allocation per message remains (counted and named by the allocation tests).
pub struct FrameWriter<'s> {
    alloc: ScratchSpaceHeapAllocator<'s>,
}

impl<'s> FrameWriter<'s> {
    /// A writer over `scratch` (zeroed once here; see [`crate::limits::WRITER_SCRATCH_BYTES`]).
    pub fn new(scratch: &'s mut [u8]) -> Self {
        FrameWriter {
            alloc: ScratchSpaceHeapAllocator::new(scratch),
        }
    }

    /// A writer owning a scratch space of [`crate::limits::WRITER_SCRATCH_BYTES`] for the rest of
    /// the process: meant for long-lived owners (one per shard or per agent connection), so the
    /// scratch space is zeroed once rather than per message. Each call leaks that many bytes.
    pub fn with_static_scratch() -> FrameWriter<'static> {
        let scratch: &'static mut [u8] =
            Box::leak(vec![0u8; crate::limits::WRITER_SCRATCH_BYTES].into_boxed_slice());
        FrameWriter::new(scratch)
    }

    /// Builds a message of root `R` with `fill` and appends its frame to `out`.
    /// Returns the frame's length in bytes. On error `out` is left as it was.
    pub fn write<R, F>(&mut self, out: &mut Vec<u8>, fill: F) -> Result<usize, WireError>
    where
        R: Root,
        F: FnOnce(R::Builder<'_>) -> capnp::Result<()>,
    {
        let mut message = Builder::new(&mut self.alloc);
        fill(message.init_root::<R::Builder<'_>>())?;
        let header = header_for::<R>(&message)?;
        let start = out.len();
        out.reserve(header.frame_len());
        out.extend_from_slice(&header.to_bytes());
        if let Err(e) = serialize::write_message(&mut *out, &message) {
            out.truncate(start);
            return Err(e.into());
        }
        assert_eq!(
            out.len() - start,
            header.frame_len(),
            "frame length mismatch"
        );
        Ok(header.frame_len())
    }

    /// Builds a message of root `R` with `fill` and writes its frame at the start of `buf`
    /// (for example a slab buffer). Returns the frame's length; `TooLarge` if it does not fit.
    pub fn write_into<R, F>(&mut self, buf: &mut [u8], fill: F) -> Result<usize, WireError>
    where
        R: Root,
        F: FnOnce(R::Builder<'_>) -> capnp::Result<()>,
    {
        let mut message = Builder::new(&mut self.alloc);
        fill(message.init_root::<R::Builder<'_>>())?;
        let header = header_for::<R>(&message)?;
        let total = header.frame_len();
        let Some(dest) = buf.get_mut(..total) else {
            return Err(WireError::TooLarge {
                len: total as u64,
                max: u32::try_from(buf.len()).unwrap_or(u32::MAX),
            });
        };
        let (head, mut body) = dest.split_at_mut(FRAME_HEADER_BYTES);
        head.copy_from_slice(&header.to_bytes());
        serialize::write_message(&mut body, &message)?;
        assert!(
            body.is_empty(),
            "serialized size differs from computed size"
        );
        Ok(total)
    }
}

fn header_for<R: Root>(
    message: &Builder<&mut ScratchSpaceHeapAllocator<'_>>,
) -> Result<FrameHeader, WireError> {
    let payload_len = serialize::compute_serialized_size_in_words(message) as u64 * 8;
    if payload_len > u64::from(FRAME_BYTES_MAX) {
        return Err(WireError::TooLarge {
            len: payload_len,
            max: FRAME_BYTES_MAX,
        });
    }
    Ok(FrameHeader {
        // Checked just above against a u32 limit, so it fits.
        payload_len: payload_len as u32,
        kind: R::KIND,
    })
}
