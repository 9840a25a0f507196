//! Per-stream request state and the pool its buffers come from.

use crate::limits::{POOLED_BUFFER_BYTES_MAX, STREAM_BUFFER_BYTES, STREAM_BUFFERS_POOLED_MAX};

/// Where a request stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading the request's first frame.
    Reading,
    /// The handler answers later.
    Pending,
    /// Writing the response.
    Responding,
}

/// One request stream.
pub(crate) struct StreamState {
    pub(crate) phase: Phase,
    /// Received bytes not yet consumed as frames.
    pub(crate) inbuf: Vec<u8>,
    /// All bytes received on the stream, for the request size limit.
    pub(crate) received: usize,
    pub(crate) fin_received: bool,
    /// The framed response; `out_off` bytes of it are already handed to QUIC.
    pub(crate) outbuf: Vec<u8>,
    pub(crate) out_off: usize,
    /// The client's correlation id, once known (for error responses).
    pub(crate) correlation_id: u64,
}

/// Reusable byte buffers, so request and response bytes cost no heap allocation after warm-up.
pub(crate) struct BufferPool {
    free: Vec<Vec<u8>>,
}

impl BufferPool {
    pub(crate) fn new() -> Self {
        BufferPool {
            free: Vec::with_capacity(STREAM_BUFFERS_POOLED_MAX),
        }
    }

    pub(crate) fn get(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(STREAM_BUFFER_BYTES))
    }

    pub(crate) fn put(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() > 0
            && self.free.len() < STREAM_BUFFERS_POOLED_MAX
            && buf.capacity() <= POOLED_BUFFER_BYTES_MAX
        {
            buf.clear();
            self.free.push(buf);
        }
    }

    /// A new stream: a pooled read buffer, and no response buffer until there is a response
    /// (an idle stream holds one small buffer, not two).
    pub(crate) fn new_stream(&mut self) -> StreamState {
        StreamState {
            phase: Phase::Reading,
            inbuf: self.get(),
            received: 0,
            fin_received: false,
            outbuf: Vec::new(),
            out_off: 0,
            correlation_id: 0,
        }
    }

    /// Makes `out` an empty pooled buffer, ready for a response.
    pub(crate) fn response_buffer(&mut self, out: &mut Vec<u8>) {
        if out.capacity() == 0 {
            *out = self.get();
        }
        out.clear();
    }

    pub(crate) fn recycle(&mut self, s: StreamState) {
        self.put(s.inbuf);
        self.put(s.outbuf);
    }
}
