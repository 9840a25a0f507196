//! Answers to requests, built the conventional way: a fresh Cap'n Proto builder (default heap
//! allocator) and a fresh output buffer per response.

use capnp::message::Builder;
use turnstile_wire::turnstile_capnp::{ErrorCode, request, response};
use turnstile_wire::{FrameHeader, FrameKind, Message, WireError, limits, split_frame};

/// The answer to a whole request stream's bytes: the response to its first frame (further frames,
/// such as body chunks of a `decide`, are not looked at by the built-in answers).
pub fn answer(stream: &[u8], max_request_bytes: usize, max_streams: u32) -> Vec<u8> {
    let frame = match split_frame(stream) {
        Ok(Some((frame, _used))) => frame,
        Ok(None) if stream.is_empty() => {
            return error_frame(
                0,
                ErrorCode::MalformedFrame,
                "empty request: the stream ended before a frame",
            );
        }
        Ok(None) => {
            let msg = format!(
                "truncated frame: the stream ended after {} bytes",
                stream.len()
            );
            return error_frame(0, ErrorCode::MalformedFrame, &msg);
        }
        Err(e) => return error_frame(0, code_of(&e), &e.to_string()),
    };
    let message = match Message::parse(frame.kind, frame.payload) {
        Ok(m) => m,
        Err(e) => return error_frame(0, ErrorCode::MalformedFrame, &e.to_string()),
    };
    let request = match message.root::<request::Owned>() {
        Ok(r) => r,
        Err(e) => return error_frame(0, ErrorCode::MalformedFrame, &e.to_string()),
    };
    let correlation_id = request.get_correlation_id();
    match respond_to(request, max_request_bytes, max_streams) {
        Ok(frame) => frame,
        Err(e) => error_frame(correlation_id, code_of(&e), &e.to_string()),
    }
}

/// `shuttingDown` for a request that arrives while the server drains.
pub fn shutting_down(stream: &[u8]) -> Vec<u8> {
    let correlation_id = split_frame(stream)
        .ok()
        .flatten()
        .and_then(|(f, _)| Message::parse(f.kind, f.payload).ok())
        .and_then(|m| {
            m.root::<request::Owned>()
                .ok()
                .map(|r| r.get_correlation_id())
        })
        .unwrap_or(0);
    error_frame(
        correlation_id,
        ErrorCode::ShuttingDown,
        "the server is draining",
    )
}

fn respond_to(
    request: request::Reader<'_>,
    max_request_bytes: usize,
    max_streams: u32,
) -> Result<Vec<u8>, WireError> {
    let correlation_id = request.get_correlation_id();
    match request.which()? {
        request::Echo(bytes) => {
            let bytes = bytes?;
            frame(|mut r| {
                r.set_correlation_id(correlation_id);
                r.set_echo(bytes);
                Ok(())
            })
        }
        request::Decide(_) => frame(|mut r| {
            r.set_correlation_id(correlation_id);
            let mut d = r.init_decision();
            d.reborrow().init_verdict().set_allow(());
            d.init_audit().init_tags(1).set(0, "route:allow-all");
            Ok(())
        }),
        request::Hello(hello) => {
            let wanted = turnstile_wire::CLIENT_PROTOCOL_VERSION;
            let versions = hello?.get_versions()?;
            if !(versions.is_empty() || versions.iter().any(|v| v == wanted)) {
                return Ok(error_frame(
                    correlation_id,
                    ErrorCode::UnsupportedVersion,
                    "no common client protocol version: this server speaks version 1",
                ));
            }
            frame(|mut r| {
                r.set_correlation_id(correlation_id);
                let mut ack = r.init_hello_ack();
                ack.set_version(wanted);
                ack.set_server_name(concat!("turnstile-baseline/", env!("CARGO_PKG_VERSION")));
                ack.set_frame_bytes_max(limits::FRAME_BYTES_MAX);
                ack.set_request_bytes_max(max_request_bytes as u64);
                ack.set_streams_max(max_streams);
                Ok(())
            })
        }
        request::Task(_) | request::Memory(_) | request::Control(_) | request::Status(_) => {
            Ok(error_frame(
                correlation_id,
                ErrorCode::NotImplemented,
                "the baseline answers echo, hello and decide (allow-all) only",
            ))
        }
    }
}

/// Builds a `Response` with `fill` and frames it into a new buffer.
fn frame<F>(fill: F) -> Result<Vec<u8>, WireError>
where
    F: FnOnce(response::Builder<'_>) -> capnp::Result<()>,
{
    let mut message = Builder::new_default();
    fill(message.init_root::<response::Builder<'_>>())?;
    let payload_len = capnp::serialize::compute_serialized_size_in_words(&message) as u64 * 8;
    if payload_len > u64::from(limits::FRAME_BYTES_MAX) {
        return Err(WireError::TooLarge {
            len: payload_len,
            max: limits::FRAME_BYTES_MAX,
        });
    }
    let header = FrameHeader {
        // Checked just above against a u32 limit.
        payload_len: payload_len as u32,
        kind: FrameKind::Response,
    };
    let mut out = Vec::with_capacity(header.frame_len());
    out.extend_from_slice(&header.to_bytes());
    capnp::serialize::write_message(&mut out, &message)?;
    Ok(out)
}

/// A framed `Response.error`. Always encodes (it is tiny).
pub fn error_frame(correlation_id: u64, code: ErrorCode, message: &str) -> Vec<u8> {
    frame(|mut r| {
        r.set_correlation_id(correlation_id);
        let mut e = r.init_error();
        e.set_code(code);
        e.set_message(message);
        Ok(())
    })
    .unwrap_or_default()
}

fn code_of(e: &WireError) -> ErrorCode {
    match e {
        WireError::TooLarge { .. } => ErrorCode::TooLarge,
        _ => ErrorCode::MalformedFrame,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use turnstile_wire::FrameWriter;

    /// A framed `Request` built by `fill` (shared by the baseline's unit tests).
    pub(crate) fn request_frame(
        fill: impl FnOnce(request::Builder<'_>) -> capnp::Result<()>,
    ) -> Vec<u8> {
        let mut scratch = vec![0u8; 4096];
        let mut writer = FrameWriter::new(&mut scratch);
        let mut out = Vec::new();
        writer
            .write::<request::Owned, _>(&mut out, fill)
            .expect("request encodes");
        out
    }

    #[test]
    fn echo_returns_the_same_bytes_and_correlation_id() {
        let req = request_frame(|mut r| {
            r.set_correlation_id(7);
            r.set_echo(b"ping");
            Ok(())
        });
        let resp = answer(&req, 1 << 20, 16);
        let msg = Message::from_frame_bytes(&resp).expect("one frame");
        let r = msg.root::<response::Owned>().expect("a Response");
        assert_eq!(r.get_correlation_id(), 7);
        match r.which().expect("known member") {
            response::Echo(b) => assert_eq!(b.expect("data"), b"ping"),
            _ => panic!("not an echo"),
        }
        // Same bytes as turnstile's writer produces for the same response (docs/protocol.md 9.2).
        assert_eq!(resp[4], 2);
        assert_eq!(&resp[5..], &req[5..]);
    }

    #[test]
    fn decide_is_allowed() {
        let req = request_frame(|mut r| {
            r.set_correlation_id(3);
            r.init_decide().set_route_id("");
            Ok(())
        });
        let resp = answer(&req, 1 << 20, 16);
        let msg = Message::from_frame_bytes(&resp).expect("one frame");
        let r = msg.root::<response::Owned>().expect("a Response");
        match r.which().expect("known member") {
            response::Decision(d) => {
                let v = d.expect("decision").get_verdict().expect("verdict");
                assert!(matches!(
                    v.which(),
                    Ok(turnstile_wire::turnstile_capnp::verdict::Allow(()))
                ));
            }
            _ => panic!("not a decision"),
        }
    }

    #[test]
    fn garbage_is_a_malformed_frame() {
        for bad in [
            &b""[..],
            &b"\x05\x00\x00\x00\x01abc"[..],
            &b"\x00\x00\x00\x00\x09"[..],
        ] {
            let resp = answer(bad, 1 << 20, 16);
            let msg = Message::from_frame_bytes(&resp).expect("one frame");
            let r = msg.root::<response::Owned>().expect("a Response");
            match r.which().expect("known member") {
                response::Error(e) => {
                    assert_eq!(
                        e.expect("error").get_code().ok(),
                        Some(ErrorCode::MalformedFrame)
                    )
                }
                _ => panic!("not an error"),
            }
        }
    }
}
