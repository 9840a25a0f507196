//! Shared checks of the fuzz targets in `fuzz_targets/`.
//!
//! Every function here takes arbitrary bytes and must return normally: a decoding error is an
//! expected outcome, a panic (from turnstile-wire, from capnp, or from one of the `assert!`s
//! below, which state invariants the decoders promise) is a finding.
//!
//! * [`fuzz_stream`]: the bytes are a stream of frames (`frame` target).
//! * [`fuzz_payload`]: the bytes are one frame's payload of a given root (`request`, `response`,
//!   `proxy_to_agent`, `agent_to_proxy` targets).
//! * [`fuzz_agent_json`]: the bytes are the JSON text of a kind 5 or 6 frame (`agent_json`
//!   target), fed to both decoders of `turnstile-agent-json`.

use std::hint::black_box;
use std::mem::discriminant;

use bytes::Bytes;
use capnp::Result;
use turnstile_agent_json::JsonError;
use turnstile_wire::limits::{FRAME_BYTES_MAX, FRAME_HEADER_BYTES, WRITER_SCRATCH_BYTES};
use turnstile_wire::turnstile_capnp as s;
use turnstile_wire::turnstile_capnp::{agent_to_proxy, proxy_to_agent, request, response};
use turnstile_wire::{
    FrameHeader, FrameKind, FrameWriter, Message, OwnedFrame, Root, WalkStats, WireError,
    decode_frame, peek_header, split_frame,
};

// ------------------------------------------------------------------------------------------------
// Stream of frames
// ------------------------------------------------------------------------------------------------

/// Treats `data` as a stream: splits frames off it one by one with [`split_frame`] and, in
/// lockstep, with [`OwnedFrame::split_from`] on a [`Bytes`] copy, checks that both agree with
/// [`peek_header`] and [`decode_frame`], and runs every complete frame through
/// [`fuzz_payload_of_kind`].
pub fn fuzz_stream(data: &[u8]) {
    let mut owned = Bytes::copy_from_slice(data);
    let mut rest = data;
    loop {
        assert_eq!(
            owned.len(),
            rest.len(),
            "OwnedFrame consumed a different length"
        );
        let header = peek_header(rest);
        let split = split_frame(rest);
        let owned_split = OwnedFrame::split_from(&mut owned);
        let whole = decode_frame(rest);
        let header = match header {
            Err(e) => {
                // A bad header is refused the same way by every entry point.
                let d = discriminant(&e);
                assert!(matches!(
                    &e,
                    WireError::TooLarge { .. } | WireError::UnknownKind(_)
                ));
                assert_eq!(discriminant(&split.expect_err("split_frame accepted")), d);
                assert_eq!(
                    discriminant(&owned_split.expect_err("split_from accepted")),
                    d
                );
                assert_eq!(discriminant(&whole.expect_err("decode_frame accepted")), d);
                assert!(Message::from_frame_bytes(rest).is_err());
                return;
            }
            Ok(None) => {
                assert!(rest.len() < FRAME_HEADER_BYTES);
                assert!(matches!(split, Ok(None)));
                assert!(matches!(owned_split, Ok(None)));
                assert_eq!(
                    owned.len(),
                    rest.len(),
                    "split_from consumed an incomplete frame"
                );
                assert!(matches!(whole, Err(WireError::Truncated { needed, have })
                        if needed == FRAME_HEADER_BYTES && have == rest.len()));
                return;
            }
            Ok(Some(header)) => header,
        };
        check_header(&header, rest);
        let total = header.frame_len();
        if rest.len() < total {
            assert!(
                matches!(split, Ok(None)),
                "split_frame returned a short frame"
            );
            assert!(
                matches!(owned_split, Ok(None)),
                "split_from returned a short frame"
            );
            assert_eq!(
                owned.len(),
                rest.len(),
                "split_from consumed an incomplete frame"
            );
            assert!(matches!(whole, Err(WireError::Truncated { needed, have })
                    if needed == total && have == rest.len()));
            assert!(Message::from_frame_bytes(rest).is_err());
            return;
        }

        let (frame, used) = split
            .expect("split_frame refused a good header")
            .expect("split_frame wants more bytes than the header says");
        assert_eq!(used, FRAME_HEADER_BYTES + header.payload_len as usize);
        assert_eq!(frame.kind, header.kind);
        assert_eq!(frame.payload.len(), header.payload_len as usize);
        assert!(
            std::ptr::eq(frame.payload, &rest[FRAME_HEADER_BYTES..used]),
            "payload is not borrowed in place"
        );

        let of = owned_split
            .expect("split_from refused a good header")
            .expect("split_from wants more bytes than split_frame");
        assert_eq!(of.kind, frame.kind);
        assert_eq!(&of.payload[..], frame.payload);
        assert_eq!(owned.len(), rest.len() - used);

        match whole {
            Ok(f) => {
                assert_eq!(used, rest.len(), "decode_frame accepted trailing bytes");
                assert_eq!(f.kind, frame.kind);
                assert!(std::ptr::eq(f.payload, frame.payload));
            }
            Err(WireError::TrailingBytes { extra }) => assert_eq!(extra, rest.len() - used),
            Err(e) => panic!("decode_frame failed on a complete frame: {e}"),
        }
        let exact = decode_frame(&rest[..used]).expect("decode_frame refused an exact frame");
        assert_eq!(exact.kind, frame.kind);
        assert!(std::ptr::eq(exact.payload, frame.payload));

        // The three ways to get a Message agree.
        let via_frame = frame.message().map(|m| m.kind());
        let via_bytes = Message::from_frame_bytes(&rest[..used]).map(|m| m.kind());
        let via_owned = of.message().map(|m| m.kind());
        assert_eq!(via_frame.is_ok(), via_bytes.is_ok());
        assert_eq!(via_frame.is_ok(), via_owned.is_ok());
        if let Ok(kind) = via_frame {
            assert_eq!(kind, frame.kind);
            assert_eq!(via_bytes.ok(), Some(kind));
            assert_eq!(via_owned.ok(), Some(kind));
        }

        fuzz_payload_of_kind(frame.kind, frame.payload);
        rest = &rest[used..];
    }
}

fn check_header(header: &FrameHeader, buf: &[u8]) {
    assert!(header.payload_len <= FRAME_BYTES_MAX);
    assert_eq!(&header.to_bytes()[..], &buf[..FRAME_HEADER_BYTES]);
    assert_eq!(
        FrameKind::try_from(header.kind as u8).ok(),
        Some(header.kind)
    );
    assert!(FrameKind::ALL.contains(&header.kind));
}

// ------------------------------------------------------------------------------------------------
// One payload
// ------------------------------------------------------------------------------------------------

/// [`fuzz_payload`] for the root named by `kind` ([`fuzz_json_of_kind`] for the JSON kinds).
pub fn fuzz_payload_of_kind(kind: FrameKind, data: &[u8]) {
    match kind {
        FrameKind::Request => fuzz_payload::<request::Owned>(data),
        FrameKind::Response => fuzz_payload::<response::Owned>(data),
        FrameKind::ProxyToAgent => fuzz_payload::<proxy_to_agent::Owned>(data),
        FrameKind::AgentToProxy => fuzz_payload::<agent_to_proxy::Owned>(data),
        FrameKind::ProxyToAgentJson | FrameKind::AgentToProxyJson => {
            assert!(matches!(
                Message::parse(kind, data),
                Err(WireError::NotCapnp(k)) if k == kind
            ));
            fuzz_json_of_kind(kind, data);
        }
    }
}

/// Treats `data` as the payload of a frame of root `R`.
///
/// Each step parses afresh, so that every step has the whole traversal budget:
/// 1. [`Message::parse`]; its outcome does not depend on the kind, and framing the payload changes
///    nothing; other roots are refused with `UnexpectedKind`.
/// 2. The typed API: `which()` on the root and every field of the active union member
///    ([`FuzzRoot::touch`]).
/// 3. [`Message::walk`] and [`Message::validate`]. A successful walk means every typed accessor
///    used in step 2 succeeds too.
/// 4. If both succeed: re-encode check ([`check_reencode`]), unless the walk visited more than
///    [`REENCODE_VALUES_MAX`] values.
pub fn fuzz_payload<R: FuzzRoot>(data: &[u8]) {
    let parsed = Message::parse(R::KIND, data);
    for other in FrameKind::CAPNP {
        assert_eq!(
            Message::parse(other, data).is_ok(),
            parsed.is_ok(),
            "parse depends on the kind"
        );
    }
    if data.len() <= FRAME_BYTES_MAX as usize {
        let mut framed = Vec::with_capacity(FRAME_HEADER_BYTES + data.len());
        framed.extend_from_slice(
            &FrameHeader {
                payload_len: data.len() as u32,
                kind: R::KIND,
            }
            .to_bytes(),
        );
        framed.extend_from_slice(data);
        let from_frame = Message::from_frame_bytes(&framed);
        assert_eq!(from_frame.is_ok(), parsed.is_ok(), "framing changes parse");
        if let Ok(m) = from_frame {
            assert_eq!(m.kind(), R::KIND);
        }
    }
    let Ok(msg) = parsed else { return };
    assert_eq!(msg.kind(), R::KIND);
    for other in FrameKind::CAPNP {
        if other != R::KIND {
            let wrong = Message::parse(other, data).expect("parsed above");
            assert!(matches!(
                wrong.root::<R>(),
                Err(WireError::UnexpectedKind { expected, got }) if expected == R::KIND && got == other
            ));
        }
    }

    let touched = msg.root::<R>().map(|root| R::touch(root));
    let walked = fresh::<R>(data).walk();
    let validated = fresh::<R>(data).validate();

    let Ok(stats) = walked else { return };
    match touched {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("walk succeeded but a typed accessor failed: {e}"),
        Err(e) => panic!("walk succeeded but root() failed: {e}"),
    }
    let Ok(words) = validated else { return };
    black_box(words);
    // A walk of this many values comes from a list that claims a huge count of zero-sized
    // elements (charged one word each by the traversal limit) and takes a good part of a second;
    // walking its copies twice more would only slow the fuzzer down.
    if stats.values <= REENCODE_VALUES_MAX {
        check_reencode::<R>(data, stats);
    }
}

// ------------------------------------------------------------------------------------------------
// JSON text of the agent roots
// ------------------------------------------------------------------------------------------------

type JsonFn = fn(&[u8], &mut Vec<u8>) -> std::result::Result<(), JsonError>;

/// Feeds `data` to both JSON decoders ([`fuzz_json_of_kind`] for each JSON kind).
pub fn fuzz_agent_json(data: &[u8]) {
    fuzz_json_of_kind(FrameKind::ProxyToAgentJson, data);
    fuzz_json_of_kind(FrameKind::AgentToProxyJson, data);
}

/// Treats `data` as the JSON text of a frame of `kind` (5 or 6):
/// 1. `*_from_json`: on error, nothing is appended to the output;
/// 2. if accepted, the Cap'n Proto payload parses, walks and validates with the wire format's
///    limits (the decoder builds only what a frame may hold);
/// 3. `*_to_json` of it succeeds (or is refused as `TooLarge`: numbers written as `1` come back
///    as `1.0`), and is a fixed point: decoding and encoding it again gives the same text.
pub fn fuzz_json_of_kind(kind: FrameKind, data: &[u8]) {
    let (capnp_kind, from_json, to_json): (FrameKind, JsonFn, JsonFn) = match kind {
        FrameKind::ProxyToAgentJson => (
            FrameKind::ProxyToAgent,
            turnstile_agent_json::proxy_to_agent_from_json,
            turnstile_agent_json::proxy_to_agent_to_json,
        ),
        FrameKind::AgentToProxyJson => (
            FrameKind::AgentToProxy,
            turnstile_agent_json::agent_to_proxy_from_json,
            turnstile_agent_json::agent_to_proxy_to_json,
        ),
        _ => return,
    };
    let mut payload = b"keep".to_vec();
    if from_json(data, &mut payload).is_err() {
        assert_eq!(payload, b"keep", "a refused text appended bytes");
        return;
    }
    let payload = payload.split_off(4);
    assert!(payload.len() <= FRAME_BYTES_MAX as usize);
    let msg = Message::parse(capnp_kind, &payload).expect("decoded JSON does not parse");
    msg.walk().expect("decoded JSON does not walk");
    msg.validate().expect("decoded JSON does not validate");

    let mut json = Vec::new();
    match to_json(&payload, &mut json) {
        Ok(()) => {}
        Err(JsonError::TooLarge { .. }) => return,
        Err(e) => panic!("re-encoding accepted JSON failed: {e}"),
    }
    let mut again = Vec::new();
    from_json(&json, &mut again).expect("the encoder's JSON does not decode");
    let mut json2 = Vec::new();
    to_json(&again, &mut json2).expect("re-encoding the encoder's JSON failed");
    assert!(json == json2, "JSON is not a fixed point");
}

/// Walks longer than this skip [`check_reencode`].
pub const REENCODE_VALUES_MAX: u64 = 1 << 16;

fn fresh<R: Root>(data: &[u8]) -> Message<'_> {
    Message::parse(R::KIND, data).expect("parse is deterministic")
}

/// Round-trip stability, for a message whose walk and validation both succeeded (so every pointer
/// reachable from the root is good):
/// * typed copy: [`FuzzRoot::copy`] (`set_*` of the active union member) through a
///   [`FrameWriter`]; the frame re-parses, walks with the same [`WalkStats`], validates, and
///   copying it again gives the same bytes;
/// * whole-root deep copy: `capnp::message::Builder::set_root`; re-parses and walks the same.
///
/// The copy may be refused, but only for one of two reasons ([`copy_may_refuse`]); once made, it
/// must round-trip.
pub fn check_reencode<R: FuzzRoot>(data: &[u8], stats: WalkStats) {
    let mut scratch = vec![0u8; WRITER_SCRATCH_BYTES];
    let mut writer = FrameWriter::new(&mut scratch);

    let mut first = Vec::new();
    let msg = fresh::<R>(data);
    let root = msg.root::<R>().expect("root of a walked message");
    match writer.write::<R, _>(&mut first, |b| R::copy(root, b)) {
        Ok(n) => assert_eq!(n, first.len()),
        Err(e) if copy_may_refuse(&e) => return,
        Err(e) => panic!("re-encoding a walked and validated message failed: {e}"),
    }
    let again = Message::from_frame_bytes(&first).expect("re-encoded frame does not parse");
    assert_eq!(again.kind(), R::KIND);
    let again_stats = again.walk().expect("re-encoded message does not walk");
    assert_eq!(again_stats, stats, "re-encoding changed what walk sees");
    Message::from_frame_bytes(&first)
        .unwrap()
        .validate()
        .expect("re-encoded message does not validate");
    let touched = Message::from_frame_bytes(&first)
        .unwrap()
        .root::<R>()
        .map(|r| R::touch(r));
    assert!(
        matches!(touched, Ok(Ok(()))),
        "re-encoded message: typed read failed"
    );

    // A copy of the copy is byte-for-byte the copy.
    let mut second = Vec::new();
    let msg = Message::from_frame_bytes(&first).unwrap();
    let root = msg.root::<R>().unwrap();
    writer
        .write::<R, _>(&mut second, |b| R::copy(root, b))
        .expect("re-encoding a re-encoded message failed");
    assert!(first == second, "re-encoding is not stable");

    // Whole-root deep copy with capnp's own setter (unknown fields included).
    let msg = fresh::<R>(data);
    let root = msg.root::<R>().unwrap();
    let mut builder = capnp::message::Builder::new_default();
    if let Err(e) = builder.set_root::<R>(root) {
        let e = WireError::from(e);
        assert!(
            copy_may_refuse(&e),
            "deep copy of a validated message failed: {e}"
        );
        return;
    }
    let words = capnp::serialize::write_message_to_words(&builder);
    let copy = Message::parse(R::KIND, &words).expect("deep copy does not parse");
    assert_eq!(
        copy.walk().expect("deep copy does not walk"),
        stats,
        "deep copy changed what walk sees"
    );
}

/// Errors a copy of a walked and validated message may legitimately end with:
/// * `TooLarge` from the writer: a copy un-shares pointers that the input shared, so it may be
///   larger than the input;
/// * the traversal limit: a copy also follows pointers the walk never reads (unknown fields, a
///   union's unused pointer slot), and capnp charges a list of `Void` (or of zero-sized structs)
///   for its element count when it is read or copied, but not in the `total_size` that
///   [`Message::validate`] computes. So a validated message may hold a tiny list that claims
///   millions of elements; copying it is refused, which is the traversal limit doing its job;
/// * a capability pointer: `total_size` counts them without complaint, so one in a field the walk
///   does not read passes [`Message::validate`]; the schema has no interfaces and a copy without a
///   capability table refuses it.
pub fn copy_may_refuse(e: &WireError) -> bool {
    use capnp::ErrorKind as K;
    match e {
        WireError::TooLarge { .. } => true,
        WireError::BadMessage(e) => matches!(
            e.kind,
            K::ReadLimitExceeded | K::MessageContainsInvalidCapabilityPointer
        ),
        _ => false,
    }
}

// ------------------------------------------------------------------------------------------------
// Typed access per root
// ------------------------------------------------------------------------------------------------

/// A root with typed readers and a typed copy, for [`fuzz_payload`].
pub trait FuzzRoot: Root {
    /// Reads the root's fields and every field of its active union member through the generated
    /// typed API, each pointer at most once (so it never costs more than a walk).
    fn touch(root: Self::Reader<'_>) -> Result<()>;
    /// Copies `from` into `to` with the typed setters: scalars, then `set_*` of the active member.
    fn copy(from: Self::Reader<'_>, to: Self::Builder<'_>) -> Result<()>;
}

impl FuzzRoot for request::Owned {
    fn touch(r: request::Reader<'_>) -> Result<()> {
        use request::Which as W;
        black_box(r.get_correlation_id());
        match r.which()? {
            W::Hello(h) => hello(h?),
            W::Decide(d) => decide(d?),
            W::Task(t) => task(t?),
            W::Memory(m) => memory(m?),
            W::Control(c) => control(c?),
            W::Status(st) => {
                black_box(st?.get_interval_ms());
                Ok(())
            }
            W::Echo(e) => data(e),
        }
    }

    fn copy(from: request::Reader<'_>, mut to: request::Builder<'_>) -> Result<()> {
        use request::Which as W;
        to.set_correlation_id(from.get_correlation_id());
        match from.which()? {
            W::Hello(x) => to.set_hello(x?),
            W::Decide(x) => to.set_decide(x?),
            W::Task(x) => to.set_task(x?),
            W::Memory(x) => to.set_memory(x?),
            W::Control(x) => to.set_control(x?),
            W::Status(x) => to.set_status(x?),
            W::Echo(x) => {
                to.set_echo(x?);
                Ok(())
            }
        }
    }
}

impl FuzzRoot for response::Owned {
    fn touch(r: response::Reader<'_>) -> Result<()> {
        use response::Which as W;
        black_box(r.get_correlation_id());
        match r.which()? {
            W::HelloAck(h) => hello_ack(h?),
            W::Decision(d) => decision(d?),
            W::TaskResult(t) => task_result(t?),
            W::MemoryResult(m) => memory_result(m?),
            W::ControlResult(c) => control_result(c?),
            W::StatusEvent(e) => status_event(e?),
            W::Echo(e) => data(e),
            W::Error(e) => error(e?),
        }
    }

    fn copy(from: response::Reader<'_>, mut to: response::Builder<'_>) -> Result<()> {
        use response::Which as W;
        to.set_correlation_id(from.get_correlation_id());
        match from.which()? {
            W::HelloAck(x) => to.set_hello_ack(x?),
            W::Decision(x) => to.set_decision(x?),
            W::TaskResult(x) => to.set_task_result(x?),
            W::MemoryResult(x) => to.set_memory_result(x?),
            W::ControlResult(x) => to.set_control_result(x?),
            W::StatusEvent(x) => to.set_status_event(x?),
            W::Echo(x) => {
                to.set_echo(x?);
                Ok(())
            }
            W::Error(x) => to.set_error(x?),
        }
    }
}

impl FuzzRoot for proxy_to_agent::Owned {
    fn touch(r: proxy_to_agent::Reader<'_>) -> Result<()> {
        use proxy_to_agent::Which as W;
        black_box(r.get_correlation_id());
        match r.which()? {
            W::Handshake(h) => handshake_request(h?),
            W::RequestHeaders(e) => {
                let e = e?;
                request_metadata(e.get_metadata()?)?;
                http_request(e.get_request()?)
            }
            W::RequestBodyChunk(c) => body_chunk(c?),
            W::ResponseHeaders(e) => http_response(e?.get_response()?),
            W::ResponseBodyChunk(c) => body_chunk(c?),
            W::WebsocketFrame(f) => websocket_frame(f?),
            W::GuardrailInspect(g) => guardrail_inspect(g?),
            W::RequestComplete(c) => request_complete(c?),
            W::Cancel(c) => {
                use s::cancel_reason::Which as R;
                let c = c?;
                match c.get_reason()?.which()? {
                    R::ClientDisconnect(()) | R::Timeout(()) => {}
                    R::UpstreamError(()) | R::ProxyShutdown(()) => {}
                    R::BlockedByAgent(t) | R::Manual(t) => text(t)?,
                }
                black_box(c.get_timestamp_ms());
                Ok(())
            }
            W::Configure(c) => {
                let c = c?;
                text(c.get_agent_id())?;
                data(c.get_config())?;
                black_box(c.get_generation());
                Ok(())
            }
            W::ConfigUpdateAck(a) => {
                let a = a?;
                text(a.get_request_id())?;
                black_box(a.get_accepted());
                text(a.get_message())
            }
            W::Drain(d) => {
                black_box(d?.get_deadline_ms());
                Ok(())
            }
            W::Shutdown(()) => Ok(()),
        }
    }

    fn copy(from: proxy_to_agent::Reader<'_>, mut to: proxy_to_agent::Builder<'_>) -> Result<()> {
        use proxy_to_agent::Which as W;
        to.set_correlation_id(from.get_correlation_id());
        match from.which()? {
            W::Handshake(x) => to.set_handshake(x?),
            W::RequestHeaders(x) => to.set_request_headers(x?),
            W::RequestBodyChunk(x) => to.set_request_body_chunk(x?),
            W::ResponseHeaders(x) => to.set_response_headers(x?),
            W::ResponseBodyChunk(x) => to.set_response_body_chunk(x?),
            W::WebsocketFrame(x) => to.set_websocket_frame(x?),
            W::GuardrailInspect(x) => to.set_guardrail_inspect(x?),
            W::RequestComplete(x) => to.set_request_complete(x?),
            W::Cancel(x) => to.set_cancel(x?),
            W::Configure(x) => to.set_configure(x?),
            W::ConfigUpdateAck(x) => to.set_config_update_ack(x?),
            W::Drain(x) => to.set_drain(x?),
            W::Shutdown(()) => {
                to.set_shutdown(());
                Ok(())
            }
        }
    }
}

impl FuzzRoot for agent_to_proxy::Owned {
    fn touch(r: agent_to_proxy::Reader<'_>) -> Result<()> {
        use agent_to_proxy::Which as W;
        black_box(r.get_correlation_id());
        match r.which()? {
            W::Handshake(h) => {
                use s::handshake_response::Which as H;
                match h?.which()? {
                    H::Accepted(c) => agent_capabilities(c?),
                    H::Rejected(t) => text(t),
                }
            }
            W::Response(r) => {
                let r = r?;
                verdict(r.get_verdict()?)?;
                header_ops(r.get_request_headers())?;
                header_ops(r.get_response_headers())?;
                audit(r.get_audit()?)?;
                black_box(r.get_need_more());
                Ok(())
            }
            W::Health(h) => health_status(h?),
            W::Metrics(m) => metrics_report(m?),
            W::ConfigUpdate(u) => config_update_request(u?),
            W::FlowControl(f) => {
                use s::flow_control_signal::action::Which as A;
                match f?.get_action().which()? {
                    A::Pause(()) | A::Resume(()) => {}
                    A::UpdateCapacity(n) => {
                        black_box(n);
                    }
                }
                Ok(())
            }
            W::Log(l) => {
                let l = l?;
                enumerant(l.get_level());
                text(l.get_message())?;
                labels(l.get_fields())
            }
        }
    }

    fn copy(from: agent_to_proxy::Reader<'_>, mut to: agent_to_proxy::Builder<'_>) -> Result<()> {
        use agent_to_proxy::Which as W;
        to.set_correlation_id(from.get_correlation_id());
        match from.which()? {
            W::Handshake(x) => to.set_handshake(x?),
            W::Response(x) => to.set_response(x?),
            W::Health(x) => to.set_health(x?),
            W::Metrics(x) => to.set_metrics(x?),
            W::ConfigUpdate(x) => to.set_config_update(x?),
            W::FlowControl(x) => to.set_flow_control(x?),
            W::Log(x) => to.set_log(x?),
        }
    }
}

// --- leaves -------------------------------------------------------------------------------------

fn text(t: Result<capnp::text::Reader<'_>>) -> Result<()> {
    let t = t?;
    // Invalid UTF-8 is the walk's business (it refuses it); the typed API hands out bytes.
    black_box(t.to_str().is_ok());
    black_box(t.as_bytes().len());
    Ok(())
}

fn data(d: Result<&[u8]>) -> Result<()> {
    black_box(d?.len());
    Ok(())
}

/// An enumerant this build does not know is not an error (a newer peer).
fn enumerant<T>(e: core::result::Result<T, capnp::NotInSchema>) {
    black_box(e.ok());
}

fn texts(l: Result<capnp::text_list::Reader<'_>>) -> Result<()> {
    for t in l?.iter() {
        text(t)?;
    }
    Ok(())
}

fn datas(l: Result<capnp::data_list::Reader<'_>>) -> Result<()> {
    for d in l?.iter() {
        data(d)?;
    }
    Ok(())
}

type StructList<'a, T> = capnp::struct_list::Reader<'a, T>;

// --- shared building blocks ---------------------------------------------------------------------

fn header(h: s::header::Reader<'_>) -> Result<()> {
    data(h.get_name())?;
    data(h.get_value())
}

fn headers(l: Result<StructList<'_, s::header::Owned>>) -> Result<()> {
    for h in l?.iter() {
        header(h)?;
    }
    Ok(())
}

fn http_request(r: s::http_request::Reader<'_>) -> Result<()> {
    text(r.get_method())?;
    text(r.get_authority())?;
    text(r.get_path())?;
    text(r.get_query())?;
    headers(r.get_headers())?;
    text(r.get_client_address())?;
    text(r.get_scheme())?;
    text(r.get_protocol())
}

fn http_response(r: s::http_response::Reader<'_>) -> Result<()> {
    black_box(r.get_status());
    headers(r.get_headers())
}

fn body_chunk(c: s::body_chunk::Reader<'_>) -> Result<()> {
    black_box(c.get_chunk_index());
    data(c.get_data())?;
    black_box(c.get_is_last());
    black_box(c.get_total_bytes());
    black_box(c.get_bytes_transferred());
    black_box(c.get_proxy_buffer_available_bytes());
    Ok(())
}

fn websocket_frame(f: s::web_socket_frame::Reader<'_>) -> Result<()> {
    black_box(f.get_opcode());
    black_box(f.get_fin());
    black_box(f.get_client_to_server());
    black_box(f.get_frame_index());
    data(f.get_data())
}

fn guardrail_inspect(g: s::guardrail_inspect::Reader<'_>) -> Result<()> {
    enumerant(g.get_kind());
    data(g.get_content())?;
    black_box(g.get_is_response());
    text(g.get_model())?;
    texts(g.get_policies())
}

fn request_complete(c: s::request_complete::Reader<'_>) -> Result<()> {
    black_box(c.get_status());
    black_box(c.get_duration_us());
    black_box(c.get_request_body_bytes());
    black_box(c.get_response_body_bytes());
    text(c.get_error())
}

fn header_ops(l: Result<StructList<'_, s::header_op::Owned>>) -> Result<()> {
    use s::header_op::Which as O;
    for op in l?.iter() {
        match op.which()? {
            O::Add(h) | O::Set(h) => header(h?)?,
            O::Remove(name) => data(name)?,
        }
    }
    Ok(())
}

fn verdict(v: s::verdict::Reader<'_>) -> Result<()> {
    use s::verdict::Which as V;
    match v.which()? {
        V::Allow(()) => Ok(()),
        V::Block(b) => {
            let b = b?;
            black_box(b.get_status());
            data(b.get_body())?;
            headers(b.get_headers())
        }
        V::Redirect(r) => {
            let r = r?;
            text(r.get_location())?;
            black_box(r.get_status());
            Ok(())
        }
    }
}

fn audit(a: s::audit::Reader<'_>) -> Result<()> {
    use s::audit::confidence::Which as C;
    texts(a.get_tags())?;
    texts(a.get_rule_ids())?;
    texts(a.get_reason_codes())?;
    match a.get_confidence().which()? {
        C::Unknown(()) => {}
        C::Value(v) => {
            black_box(v);
        }
    }
    Ok(())
}

// --- client protocol ----------------------------------------------------------------------------

fn hello(h: s::hello::Reader<'_>) -> Result<()> {
    for v in h.get_versions()?.iter() {
        black_box(v);
    }
    text(h.get_client_name())
}

fn decide(d: s::decide::Reader<'_>) -> Result<()> {
    use s::decide::phase::Which as P;
    text(d.get_route_id())?;
    text(d.get_request_id())?;
    match d.get_phase().which()? {
        P::Request(r) => {
            let r = r?;
            http_request(r.get_request()?)?;
            body_chunk(r.get_body()?)
        }
        P::RequestBody(c) | P::ResponseBody(c) => body_chunk(c?),
        P::Response(r) => {
            let r = r?;
            http_request(r.get_request()?)?;
            http_response(r.get_response()?)?;
            body_chunk(r.get_body()?)
        }
        P::WebsocketFrame(f) => websocket_frame(f?),
        P::Guardrail(g) => guardrail_inspect(g?),
        P::Complete(c) => request_complete(c?),
    }
}

fn task(t: s::task::Reader<'_>) -> Result<()> {
    text(t.get_agent_id())?;
    data(t.get_payload())?;
    black_box(t.get_deadline_ms());
    Ok(())
}

fn memory(m: s::memory::Reader<'_>) -> Result<()> {
    use s::memory::Which as M;
    text(m.get_namespace())?;
    match m.which()? {
        M::Store(st) => {
            let st = st?;
            data(st.get_key())?;
            data(st.get_value())?;
            black_box(st.get_ttl_ms());
            Ok(())
        }
        M::Retrieve(key) | M::Delete(key) => data(key),
        M::ListPrefix(l) => {
            let l = l?;
            data(l.get_prefix())?;
            black_box(l.get_limit());
            Ok(())
        }
    }
}

fn control(c: s::control::Reader<'_>) -> Result<()> {
    use s::control::Which as C;
    match c.which()? {
        C::Spawn(sp) => {
            let sp = sp?;
            text(sp.get_agent_id())?;
            texts(sp.get_command())?;
            data(sp.get_config())
        }
        C::Terminate(id) => text(id),
        C::List(()) => Ok(()),
    }
}

fn hello_ack(h: s::hello_ack::Reader<'_>) -> Result<()> {
    black_box(h.get_version());
    text(h.get_server_name())?;
    black_box(h.get_frame_bytes_max());
    black_box(h.get_request_bytes_max());
    black_box(h.get_streams_max());
    Ok(())
}

fn decision(d: s::decision::Reader<'_>) -> Result<()> {
    verdict(d.get_verdict()?)?;
    header_ops(d.get_request_headers())?;
    header_ops(d.get_response_headers())?;
    audit(d.get_audit()?)?;
    for t in d.get_timings()?.iter() {
        text(t.get_agent_id())?;
        enumerant(t.get_outcome());
        black_box(t.get_elapsed_us());
        enumerant(t.get_fail_mode());
    }
    black_box(d.get_need_more());
    Ok(())
}

fn task_result(t: s::task_result::Reader<'_>) -> Result<()> {
    text(t.get_agent_id())?;
    data(t.get_payload())?;
    black_box(t.get_elapsed_us());
    Ok(())
}

fn memory_result(m: s::memory_result::Reader<'_>) -> Result<()> {
    use s::memory_result::Which as M;
    match m.which()? {
        M::Stored(()) => Ok(()),
        M::Value(v) => data(v),
        M::Deleted(b) => {
            black_box(b);
            Ok(())
        }
        M::Keys(keys) => datas(keys),
    }
}

fn agent_info(a: s::agent_info::Reader<'_>) -> Result<()> {
    text(a.get_agent_id())?;
    text(a.get_name())?;
    text(a.get_version())?;
    enumerant(a.get_transport());
    enumerant(a.get_health());
    black_box(a.get_in_flight());
    black_box(a.get_breaker_open());
    Ok(())
}

fn agent_infos(l: Result<StructList<'_, s::agent_info::Owned>>) -> Result<()> {
    for a in l?.iter() {
        agent_info(a)?;
    }
    Ok(())
}

fn control_result(c: s::control_result::Reader<'_>) -> Result<()> {
    use s::control_result::Which as C;
    match c.which()? {
        C::Spawned(a) => agent_info(a?),
        C::Terminated(id) => text(id),
        C::Agents(l) => agent_infos(l),
    }
}

fn status_event(e: s::status_event::Reader<'_>) -> Result<()> {
    black_box(e.get_timestamp_ms());
    black_box(e.get_shard());
    black_box(e.get_connections());
    black_box(e.get_streams());
    black_box(e.get_requests_total());
    agent_infos(e.get_agents())
}

fn error(e: s::error::Reader<'_>) -> Result<()> {
    enumerant(e.get_code());
    text(e.get_message())?;
    black_box(e.get_retry_after_ms());
    Ok(())
}

// --- agent protocol -----------------------------------------------------------------------------

fn handshake_request(h: s::handshake_request::Reader<'_>) -> Result<()> {
    for v in h.get_supported_versions()?.iter() {
        black_box(v);
    }
    text(h.get_proxy_id())?;
    text(h.get_proxy_version())?;
    for e in h.get_encodings()?.iter() {
        enumerant(e);
    }
    black_box(h.get_shard());
    Ok(())
}

fn request_metadata(m: s::request_metadata::Reader<'_>) -> Result<()> {
    text(m.get_request_id())?;
    data(m.get_client_ip())?;
    black_box(m.get_client_port());
    text(m.get_server_name())?;
    text(m.get_tls_version())?;
    text(m.get_route_id())?;
    text(m.get_upstream_id())?;
    black_box(m.get_timestamp_ms());
    text(m.get_traceparent())?;
    black_box(m.get_deadline_ms());
    Ok(())
}

fn agent_capabilities(c: s::agent_capabilities::Reader<'_>) -> Result<()> {
    black_box(c.get_protocol_version());
    text(c.get_agent_id())?;
    text(c.get_name())?;
    text(c.get_version())?;
    for e in c.get_supported_events()?.iter() {
        enumerant(e);
    }
    let f = c.get_features()?;
    black_box((
        f.get_streaming_body(),
        f.get_websocket(),
        f.get_guardrails(),
        f.get_config_push(),
        f.get_metrics_export(),
        f.get_concurrent_requests(),
        f.get_cancellation(),
        f.get_flow_control(),
    ));
    let l = c.get_limits()?;
    black_box((
        l.get_max_body_bytes(),
        l.get_max_concurrency(),
        l.get_preferred_chunk_bytes(),
        l.get_max_memory_bytes(),
        l.get_max_processing_ms(),
    ));
    let h = c.get_health()?;
    black_box((
        h.get_report_interval_ms(),
        h.get_include_load_metrics(),
        h.get_include_resource_metrics(),
    ));
    let i = c.get_interest()?;
    texts(i.get_path_prefixes())?;
    texts(i.get_methods())?;
    datas(i.get_required_headers())?;
    enumerant(c.get_encoding());
    Ok(())
}

fn health_status(h: s::health_status::Reader<'_>) -> Result<()> {
    use s::health_status::state::Which as S;
    match h.get_state().which()? {
        S::Healthy(()) => {}
        S::Degraded(d) => {
            let d = d?;
            texts(d.get_disabled_features())?;
            black_box(d.get_timeout_multiplier());
        }
        S::Draining(d) => {
            black_box(d?.get_eta_ms());
        }
        S::Unhealthy(u) => {
            let u = u?;
            text(u.get_reason())?;
            black_box(u.get_recoverable());
        }
    }
    text(h.get_message())?;
    let l = h.get_load()?;
    black_box((
        l.get_in_flight(),
        l.get_queue_depth(),
        l.get_avg_latency_ms(),
        l.get_p99_latency_ms(),
        l.get_requests_processed(),
        l.get_requests_rejected(),
    ));
    let r = h.get_resources()?;
    black_box((
        r.get_cpu_percent(),
        r.get_memory_bytes(),
        r.get_memory_limit_bytes(),
        r.get_active_threads(),
        r.get_open_fds(),
    ));
    black_box(h.get_valid_until_ms());
    Ok(())
}

fn labels(l: Result<StructList<'_, s::label::Owned>>) -> Result<()> {
    for label in l?.iter() {
        text(label.get_name())?;
        text(label.get_value())?;
    }
    Ok(())
}

fn metrics_report(m: s::metrics_report::Reader<'_>) -> Result<()> {
    text(m.get_agent_id())?;
    black_box(m.get_timestamp_ms());
    black_box(m.get_interval_ms());
    for c in m.get_counters()?.iter() {
        text(c.get_name())?;
        labels(c.get_labels())?;
        black_box(c.get_value());
    }
    for g in m.get_gauges()?.iter() {
        text(g.get_name())?;
        labels(g.get_labels())?;
        black_box(g.get_value());
    }
    for h in m.get_histograms()?.iter() {
        text(h.get_name())?;
        labels(h.get_labels())?;
        black_box(h.get_sum());
        black_box(h.get_count());
        for b in h.get_buckets()?.iter() {
            black_box((b.get_le(), b.get_count()));
        }
    }
    Ok(())
}

fn config_update_request(u: s::config_update_request::Reader<'_>) -> Result<()> {
    use s::config_update_request::update::Which as U;
    text(u.get_request_id())?;
    black_box(u.get_timestamp_ms());
    match u.get_update().which()? {
        U::RequestReload(()) => Ok(()),
        U::RuleUpdate(r) => {
            let r = r?;
            text(r.get_rule_set())?;
            for rule in r.get_rules()?.iter() {
                text(rule.get_id())?;
                black_box(rule.get_priority());
                data(rule.get_definition())?;
                black_box(rule.get_enabled());
            }
            texts(r.get_remove_rules())
        }
        U::ListUpdate(l) => {
            let l = l?;
            text(l.get_list_id())?;
            texts(l.get_add())?;
            texts(l.get_remove())
        }
        U::RestartRequired(r) => {
            let r = r?;
            text(r.get_reason())?;
            black_box(r.get_grace_period_ms());
            Ok(())
        }
        U::ConfigError(e) => {
            let e = e?;
            text(e.get_error())?;
            text(e.get_field())
        }
    }
}
