//! What the front door asks of the layer that answers requests, and the built-in answers that
//! need no agents (echo, hello, the allow-all route).

use std::net::SocketAddr;
use std::time::Instant;

use quinn_proto::{ConnectionHandle, StreamId};
use turnstile_wire::turnstile_capnp::{ErrorCode, request, response};
use turnstile_wire::{FrameWriter, WireError};

/// Identifies one request: a bidirectional stream of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId {
    pub(crate) conn: ConnectionHandle,
    pub(crate) serial: u64,
    pub(crate) stream: StreamId,
}

/// Facts about a request the handler may need.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The request arrived before the handshake completed (0-RTT data).
    pub zero_rtt: bool,
    /// The shard serving it.
    pub shard: u8,
}

/// Whether the handler answered at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The response frame has been written to the sink.
    Ready,
    /// The handler answers later through `FrontDoor::complete`.
    Pending,
}

/// Where a handler writes its one framed `Response`.
pub struct ResponseSink<'a> {
    pub(crate) writer: &'a mut FrameWriter<'static>,
    pub(crate) out: &'a mut Vec<u8>,
}

impl ResponseSink<'_> {
    /// Builds the response with `fill` and frames it.
    pub fn write<F>(&mut self, fill: F) -> Result<(), WireError>
    where
        F: FnOnce(response::Builder<'_>) -> capnp::Result<()>,
    {
        self.writer.write::<response::Owned, _>(self.out, fill)?;
        Ok(())
    }

    /// Frames a typed error response.
    pub fn error(&mut self, correlation_id: u64, code: ErrorCode, message: &str) {
        self.out.clear();
        write_error(self.writer, self.out, correlation_id, code, message);
    }
}

/// Frames an error response into `out`. An error response is tiny and always fits, so an
/// encoding failure here would be a bug in the schema code: asserted.
pub(crate) fn write_error(
    writer: &mut FrameWriter<'static>,
    out: &mut Vec<u8>,
    correlation_id: u64,
    code: ErrorCode,
    message: &str,
) {
    let result = writer.write::<response::Owned, _>(out, |mut r| {
        r.set_correlation_id(correlation_id);
        let mut e = r.init_error();
        e.set_code(code);
        e.set_message(message);
        Ok(())
    });
    assert!(result.is_ok(), "error response must encode: {result:?}");
}

/// Answers requests. Called by the front door for each request stream's first frame.
pub trait RequestHandler {
    /// Handle `request`; either write the response to `sink` and return [`Reply::Ready`], or
    /// return [`Reply::Pending`] and answer later with `FrontDoor::complete`. `payload` is the
    /// request's Cap'n Proto message bytes (what `request` reads), for handlers that keep the
    /// request beyond this call.
    fn on_request(
        &mut self,
        now: Instant,
        id: RequestId,
        info: &RequestInfo,
        request: request::Reader<'_>,
        payload: &[u8],
        sink: &mut ResponseSink<'_>,
    ) -> Result<Reply, WireError>;

    /// A further complete frame arrived on the stream of a request answered [`Reply::Pending`]
    /// (for example a `decide.requestBody` chunk). The default ignores it.
    fn on_request_frame(
        &mut self,
        _now: Instant,
        _id: RequestId,
        _kind: turnstile_wire::FrameKind,
        _payload: &[u8],
    ) {
    }

    /// A pending request was cancelled (stream reset or stopped by the client, connection lost,
    /// shutdown). No response will be delivered for it.
    fn on_cancel(&mut self, now: Instant, id: RequestId);
}

/// Whether a request may be served from 0-RTT data (it must be safe to replay).
pub fn replay_safe(request: request::Reader<'_>) -> bool {
    use turnstile_wire::turnstile_capnp::memory;
    match request.which() {
        Ok(request::Decide(_) | request::Echo(_) | request::Hello(_) | request::Status(_)) => true,
        Ok(request::Memory(Ok(m))) => {
            matches!(m.which(), Ok(memory::Retrieve(_) | memory::ListPrefix(_)))
        }
        _ => false,
    }
}

/// Answers what needs no agents: `echo` and `decide` on the allow-all route (`hello` and
/// `status` never reach a handler: the front door answers them). Everything
/// that needs the agent plane gets `notImplemented`, saying so.
#[derive(Debug, Default)]
pub struct BuiltinHandler {
    /// Requests answered.
    pub answered: u64,
    /// Cancellations seen (only pending requests are cancelled; the built-ins never pend).
    pub cancelled: u64,
}

impl RequestHandler for BuiltinHandler {
    fn on_request(
        &mut self,
        _now: Instant,
        _id: RequestId,
        _info: &RequestInfo,
        request: request::Reader<'_>,
        _payload: &[u8],
        sink: &mut ResponseSink<'_>,
    ) -> Result<Reply, WireError> {
        self.answered += 1;
        builtin_answer(request, sink)?;
        Ok(Reply::Ready)
    }

    fn on_cancel(&mut self, _now: Instant, _id: RequestId) {
        self.cancelled += 1;
    }
}

/// Writes the built-in answer to `request` (see [`BuiltinHandler`]).
pub fn builtin_answer(
    request: request::Reader<'_>,
    sink: &mut ResponseSink<'_>,
) -> Result<(), WireError> {
    let correlation_id = request.get_correlation_id();
    match request.which()? {
        request::Echo(bytes) => {
            let bytes = bytes?;
            sink.write(|mut r| {
                r.set_correlation_id(correlation_id);
                r.set_echo(bytes);
                Ok(())
            })?;
        }
        request::Hello(_) | request::Status(_) => {
            // The front door answers these itself, with its limits and counters.
            sink.error(
                correlation_id,
                ErrorCode::Internal,
                "hello and status are answered by the front door",
            );
        }
        request::Decide(_) => {
            sink.write(|mut r| {
                r.set_correlation_id(correlation_id);
                let mut d = r.init_decision();
                d.reborrow().init_verdict().set_allow(());
                d.init_audit().init_tags(1).set(0, "route:allow-all");
                Ok(())
            })?;
        }
        request::Task(_) | request::Memory(_) | request::Control(_) => {
            sink.error(
                correlation_id,
                ErrorCode::NotImplemented,
                "task, memory and control requests are not implemented in this build",
            );
        }
    }
    Ok(())
}
