//! The example frames of `docs/protocol.md`, section 9: built with `FrameWriter`, compared with
//! golden bytes, read back, and compared with the hex blocks in the document itself, so the
//! document's bytes are the bytes turnstile really writes.

use turnstile_wire::turnstile_capnp::{
    AgentOutcome, FailMode, decide, header_op, request, response, verdict,
};
use turnstile_wire::{FrameKind, FrameWriter, Message, Root, limits::WRITER_SCRATCH_BYTES};

fn frame<R: Root>(fill: impl FnOnce(R::Builder<'_>) -> capnp::Result<()>) -> Vec<u8> {
    let mut scratch = vec![0u8; WRITER_SCRATCH_BYTES];
    let mut writer = FrameWriter::new(&mut scratch);
    let mut out = Vec::new();
    let n = writer.write::<R, _>(&mut out, fill).expect("encode");
    assert_eq!(n, out.len());
    out
}

fn echo_request() -> Vec<u8> {
    frame::<request::Owned>(|mut r| {
        r.set_correlation_id(1);
        r.set_echo(b"ping");
        Ok(())
    })
}

fn echo_response() -> Vec<u8> {
    frame::<response::Owned>(|mut r| {
        r.set_correlation_id(1);
        r.set_echo(b"ping");
        Ok(())
    })
}

const HEADERS: [(&str, &str); 2] = [("accept", "*/*"), ("user-agent", "curl/8.5")];

fn decide_request() -> Vec<u8> {
    frame::<request::Owned>(|mut r| {
        r.set_correlation_id(2);
        let mut d = r.init_decide();
        d.set_route_id("api");
        let mut http = d.init_phase().init_request().init_request();
        http.set_method("GET");
        http.set_authority("example.com");
        http.set_path("/items");
        http.set_scheme("https");
        let mut headers = http.init_headers(HEADERS.len() as u32);
        for (i, (name, value)) in HEADERS.iter().enumerate() {
            let mut h = headers.reborrow().get(i as u32);
            h.set_name(name.as_bytes());
            h.set_value(value.as_bytes());
        }
        Ok(())
    })
}

fn decide_response() -> Vec<u8> {
    frame::<response::Owned>(|mut r| {
        r.set_correlation_id(2);
        let mut d = r.init_decision();
        d.reborrow().init_verdict().set_allow(());
        let mut add = d.reborrow().init_request_headers(1).get(0).init_add();
        add.set_name(b"x-checked");
        add.set_value(b"1");
        let mut t = d.init_timings(1).get(0);
        t.set_agent_id("waf");
        t.set_outcome(AgentOutcome::Allowed);
        t.set_elapsed_us(180);
        t.set_fail_mode(FailMode::Open);
        Ok(())
    })
}

const ECHO_REQUEST_HEX: &str = concat!(
    "3000000001",
    "0000000005000000",
    "0000000002000100",
    "0100000000000000",
    "0600000000000000",
    "0100000022000000",
    "70696e6700000000",
);

const ECHO_RESPONSE_HEX: &str = concat!(
    "3000000002",
    "0000000005000000",
    "0000000002000100",
    "0100000000000000",
    "0600000000000000",
    "0100000022000000",
    "70696e6700000000",
);

const DECIDE_REQUEST_HEX: &str = concat!(
    "1801000001",
    "0000000022000000",
    "0000000002000100",
    "0200000000000000",
    "0100000000000000",
    "0000000001000300",
    "0000000000000000",
    "0900000022000000",
    "0000000000000000",
    "0400000000000200",
    "6170690000000000",
    "0400000000000800",
    "0000000000000000",
    "1d00000022000000",
    "1d00000062000000",
    "210000003a000000",
    "0000000000000000",
    "2100000027000000",
    "0000000000000000",
    "1500000032000000",
    "0000000000000000",
    "4745540000000000",
    "6578616d706c652e",
    "636f6d0000000000",
    "2f6974656d730000",
    "6874747073000000",
    "0800000000000200",
    "0d00000032000000",
    "0d0000001a000000",
    "0d00000052000000",
    "1100000042000000",
    "6163636570740000",
    "2a2f2a0000000000",
    "757365722d616765",
    "6e74000000000000",
    "6375726c2f382e35",
);

const DECIDE_RESPONSE_HEX: &str = concat!(
    "c800000002",
    "0000000018000000",
    "0000000002000100",
    "0200000000000000",
    "0100000000000000",
    "0000000001000500",
    "0000000000000000",
    "1000000001000100",
    "1500000017000000",
    "0000000000000000",
    "0000000000000000",
    "2900000017000000",
    "0000000000000000",
    "0000000000000000",
    "0400000001000100",
    "0000000000000000",
    "0000000000000200",
    "050000004a000000",
    "090000000a000000",
    "782d636865636b65",
    "6400000000000000",
    "3100000000000000",
    "0400000001000100",
    "00000000b4000000",
    "0100000022000000",
    "7761660000000000",
);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> &str {
    t.unwrap().to_str().unwrap()
}

#[test]
fn echo_frames_match_the_golden_bytes_and_read_back() {
    let req = echo_request();
    assert_eq!(hex(&req), ECHO_REQUEST_HEX);
    assert_eq!(req.len(), 53);
    let msg = Message::from_frame_bytes(&req).unwrap();
    assert_eq!(msg.kind(), FrameKind::Request);
    let root = msg.root::<request::Owned>().unwrap();
    assert_eq!(root.get_correlation_id(), 1);
    let request::Which::Echo(bytes) = root.which().unwrap() else {
        panic!("not an echo")
    };
    assert_eq!(bytes.unwrap(), b"ping");

    let resp = echo_response();
    assert_eq!(hex(&resp), ECHO_RESPONSE_HEX);
    // Same layout and union tag: only the kind byte differs.
    assert_eq!(req[..4], resp[..4]);
    assert_eq!(req[5..], resp[5..]);
    let msg = Message::from_frame_bytes(&resp).unwrap();
    let root = msg.root::<response::Owned>().unwrap();
    assert_eq!(root.get_correlation_id(), 1);
    let response::Which::Echo(bytes) = root.which().unwrap() else {
        panic!("not an echo")
    };
    assert_eq!(bytes.unwrap(), b"ping");
}

#[test]
fn decide_request_matches_the_golden_bytes_and_reads_back() {
    let bytes = decide_request();
    assert_eq!(hex(&bytes), DECIDE_REQUEST_HEX);
    assert_eq!(bytes.len(), 5 + 280);
    let msg = Message::from_frame_bytes(&bytes).unwrap();
    msg.walk().unwrap();
    let root = msg.root::<request::Owned>().unwrap();
    assert_eq!(root.get_correlation_id(), 2);
    let request::Which::Decide(d) = root.which().unwrap() else {
        panic!("not a decide")
    };
    let d = d.unwrap();
    assert_eq!(text(d.get_route_id()), "api");
    assert_eq!(text(d.get_request_id()), "");
    let decide::phase::Request(phase) = d.get_phase().which().unwrap() else {
        panic!("not the request phase")
    };
    let phase = phase.unwrap();
    assert!(!phase.has_body(), "no body in the example");
    let http = phase.get_request().unwrap();
    assert_eq!(text(http.get_method()), "GET");
    assert_eq!(text(http.get_authority()), "example.com");
    assert_eq!(text(http.get_path()), "/items");
    assert_eq!(text(http.get_query()), "");
    assert_eq!(text(http.get_scheme()), "https");
    assert_eq!(text(http.get_protocol()), "");
    let headers = http.get_headers().unwrap();
    assert_eq!(headers.len() as usize, HEADERS.len());
    for (h, (name, value)) in headers.iter().zip(HEADERS) {
        assert_eq!(h.get_name().unwrap(), name.as_bytes());
        assert_eq!(h.get_value().unwrap(), value.as_bytes());
    }
}

#[test]
fn decide_response_matches_the_golden_bytes_and_reads_back() {
    let bytes = decide_response();
    assert_eq!(hex(&bytes), DECIDE_RESPONSE_HEX);
    assert_eq!(bytes.len(), 5 + 200);
    let msg = Message::from_frame_bytes(&bytes).unwrap();
    msg.walk().unwrap();
    let root = msg.root::<response::Owned>().unwrap();
    assert_eq!(root.get_correlation_id(), 2);
    let response::Which::Decision(d) = root.which().unwrap() else {
        panic!("not a decision")
    };
    let d = d.unwrap();
    assert!(!d.get_need_more());
    assert!(matches!(
        d.get_verdict().unwrap().which().unwrap(),
        verdict::Allow(())
    ));
    let ops = d.get_request_headers().unwrap();
    assert_eq!(ops.len(), 1);
    let header_op::Add(h) = ops.get(0).which().unwrap() else {
        panic!("not an add")
    };
    let h = h.unwrap();
    assert_eq!(h.get_name().unwrap(), b"x-checked");
    assert_eq!(h.get_value().unwrap(), b"1");
    assert_eq!(d.get_response_headers().unwrap().len(), 0);
    // A null audit reads as defaults.
    let audit = d.get_audit().unwrap();
    assert_eq!(audit.get_tags().unwrap().len(), 0);
    let timings = d.get_timings().unwrap();
    assert_eq!(timings.len(), 1);
    let t = timings.get(0);
    assert_eq!(text(t.get_agent_id()), "waf");
    assert_eq!(t.get_outcome().unwrap(), AgentOutcome::Allowed);
    assert_eq!(t.get_fail_mode().unwrap(), FailMode::Open);
    assert_eq!(t.get_elapsed_us(), 180);
}

#[test]
fn frames_concatenated_on_a_stream_split_apart() {
    // What a client does with the bytes of one stream (docs/protocol.md, section 10).
    let mut stream = echo_response();
    stream.extend(decide_response());
    let mut rest = &stream[..];
    let mut ids = Vec::new();
    while let Some((f, used)) = turnstile_wire::split_frame(rest).unwrap() {
        assert_eq!(f.kind, FrameKind::Response);
        let msg = f.message().unwrap();
        ids.push(msg.root::<response::Owned>().unwrap().get_correlation_id());
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    assert_eq!(ids, [1, 2]);
}

/// The bytes of the ```text block that follows `<!-- frame: NAME -->` in the document. Each line
/// is hex byte pairs, then optionally `#` and a comment.
fn doc_frame(doc: &str, name: &str) -> Vec<u8> {
    let marker = format!("<!-- frame: {name} -->");
    let at = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/protocol.md has no `{marker}`"));
    let after = &doc[at + marker.len()..];
    let open = after
        .find("```text\n")
        .expect("a ```text block after the marker");
    let body = &after[open + "```text\n".len()..];
    let close = body.find("```").expect("the block's closing fence");
    let mut bytes = Vec::new();
    for line in body[..close].lines() {
        let code = line.split('#').next().unwrap();
        for token in code.split_whitespace() {
            assert!(
                token.len() == 2 && token.bytes().all(|b| b.is_ascii_hexdigit()),
                "{name}: `{token}` is not a hex byte in line `{line}`"
            );
            bytes.push(u8::from_str_radix(token, 16).unwrap());
        }
    }
    bytes
}

#[test]
fn the_document_shows_these_bytes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md");
    for (name, built) in [
        ("echo-request", echo_request()),
        ("echo-response", echo_response()),
        ("decide-request", decide_request()),
        ("decide-response", decide_response()),
    ] {
        assert_eq!(
            hex(&doc_frame(&doc, name)),
            hex(&built),
            "docs/protocol.md block `{name}` differs from the encoder's bytes"
        );
    }
}
