//! Malformed input: every case is a precise error, never a panic.

use bytes::Bytes;
use turnstile_wire::limits::{
    FRAME_BYTES_MAX, FRAME_HEADER_BYTES, SEGMENTS_MAX, WRITER_SCRATCH_BYTES,
};
use turnstile_wire::turnstile_capnp::{request, response};
use turnstile_wire::{
    FrameKind, FrameWriter, Message, OwnedFrame, WireError, decode_frame, peek_header, split_frame,
};

fn echo_frame(payload: &[u8]) -> Vec<u8> {
    let mut scratch = vec![0u8; WRITER_SCRATCH_BYTES];
    let mut writer = FrameWriter::new(&mut scratch);
    let mut out = Vec::new();
    writer
        .write::<request::Owned, _>(&mut out, |mut r| {
            r.set_correlation_id(1);
            r.set_echo(payload);
            Ok(())
        })
        .unwrap();
    out
}

#[test]
fn truncated_at_every_length() {
    let frame = echo_frame(b"hello world");
    for cut in 0..frame.len() {
        let part = &frame[..cut];
        assert!(
            matches!(decode_frame(part), Err(WireError::Truncated { .. })),
            "cut at {cut}"
        );
        assert!(split_frame(part).unwrap().is_none(), "cut at {cut}");
    }
    assert!(decode_frame(&frame).is_ok());
}

#[test]
fn oversized_length_refused_from_header_alone() {
    let mut header = (FRAME_BYTES_MAX + 1).to_le_bytes().to_vec();
    header.push(FrameKind::Request as u8);
    // Only the 5 header bytes exist: the refusal must not wait for the payload.
    match peek_header(&header) {
        Err(WireError::TooLarge { len, max }) => {
            assert_eq!(len, u64::from(FRAME_BYTES_MAX) + 1);
            assert_eq!(max, FRAME_BYTES_MAX);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(matches!(
        split_frame(&header),
        Err(WireError::TooLarge { .. })
    ));
    let mut max = u32::MAX.to_le_bytes().to_vec();
    max.push(1);
    assert!(matches!(
        decode_frame(&max),
        Err(WireError::TooLarge { .. })
    ));
}

#[test]
fn oversized_message_refused_by_writer() {
    let mut scratch = vec![0u8; WRITER_SCRATCH_BYTES];
    let mut writer = FrameWriter::new(&mut scratch);
    let mut out = vec![9u8];
    let big = vec![0u8; FRAME_BYTES_MAX as usize];
    let err = writer
        .write::<request::Owned, _>(&mut out, |mut r| {
            r.set_echo(&big);
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, WireError::TooLarge { .. }), "{err}");
    assert_eq!(out, vec![9u8], "output untouched on error");
    // A slab buffer too small for the frame.
    let mut small = [0u8; 16];
    let err = writer
        .write_into::<request::Owned, _>(&mut small, |mut r| {
            r.set_echo(b"0123456789abcdef");
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, WireError::TooLarge { .. }));
}

#[test]
fn unknown_kind() {
    let mut frame = echo_frame(b"x");
    for kind in [0u8, 7, 42, 255] {
        frame[4] = kind;
        match decode_frame(&frame) {
            Err(WireError::UnknownKind(k)) => assert_eq!(k, kind),
            other => panic!("kind {kind}: {other:?}"),
        }
    }
}

#[test]
fn json_kinds_are_framed_but_not_parsed_as_capnp() {
    let json = br#"{"correlationId":1,"shutdown":null}"#;
    for (byte, kind) in [
        (5u8, FrameKind::ProxyToAgentJson),
        (6u8, FrameKind::AgentToProxyJson),
    ] {
        assert!(kind.is_json());
        assert!(FrameKind::ALL.contains(&kind) && !FrameKind::CAPNP.contains(&kind));
        let mut frame = (json.len() as u32).to_le_bytes().to_vec();
        frame.push(byte);
        frame.extend_from_slice(json);
        let (f, used) = split_frame(&frame).unwrap().unwrap();
        assert_eq!((f.kind, f.payload, used), (kind, &json[..], frame.len()));
        assert_eq!(decode_frame(&frame).unwrap().kind, kind);
        assert!(matches!(f.message(), Err(WireError::NotCapnp(k)) if k == kind));
        assert!(
            matches!(Message::from_frame_bytes(&frame), Err(WireError::NotCapnp(k)) if k == kind)
        );
        // Even a valid Cap'n Proto payload is refused under a JSON kind.
        let capnp = echo_frame(b"x");
        assert!(matches!(
            Message::parse(kind, &capnp[FRAME_HEADER_BYTES..]),
            Err(WireError::NotCapnp(_))
        ));
        // The length limit is the same as for every kind.
        let mut big = (FRAME_BYTES_MAX + 1).to_le_bytes().to_vec();
        big.push(byte);
        assert!(matches!(peek_header(&big), Err(WireError::TooLarge { .. })));
    }
    for kind in FrameKind::CAPNP {
        assert!(!kind.is_json());
    }
    let mut seven = 0u32.to_le_bytes().to_vec();
    seven.push(7);
    assert!(matches!(
        peek_header(&seven),
        Err(WireError::UnknownKind(7))
    ));
}

#[test]
fn wrong_root_for_kind() {
    let frame = echo_frame(b"x");
    let msg = Message::from_frame_bytes(&frame).unwrap();
    match msg.root::<response::Owned>() {
        Err(WireError::UnexpectedKind { expected, got }) => {
            assert_eq!(expected, FrameKind::Response);
            assert_eq!(got, FrameKind::Request);
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("accepted a request as a response"),
    }
}

#[test]
fn trailing_bytes_refused() {
    let mut frame = echo_frame(b"x");
    frame.extend_from_slice(&[0; 8]);
    assert!(matches!(
        decode_frame(&frame),
        Err(WireError::TrailingBytes { extra: 8 })
    ));
    // Trailing bytes inside the payload (length field covers them).
    let payload_len = u32::from_le_bytes(frame[..4].try_into().unwrap()) + 8;
    frame[..4].copy_from_slice(&payload_len.to_le_bytes());
    assert!(matches!(
        Message::from_frame_bytes(&frame),
        Err(WireError::TrailingBytes { extra: 8 })
    ));
}

#[test]
fn too_many_segments() {
    let mut payload = vec![0u8; 8];
    payload[..4].copy_from_slice(&SEGMENTS_MAX.to_le_bytes()); // count - 1 = MAX → MAX + 1 segments
    assert!(matches!(
        Message::parse(FrameKind::Request, &payload),
        Err(WireError::TooManySegments { .. })
    ));
}

#[test]
fn empty_and_short_payloads() {
    for len in 0..16 {
        let payload = vec![0u8; len];
        // Must not panic; a zero payload is either refused or an empty default root.
        if let Ok(msg) = Message::parse(FrameKind::Request, &payload) {
            let _ = msg.walk();
        }
    }
    assert!(Message::parse(FrameKind::Request, &[]).is_err());
}

#[test]
fn bad_pointer_is_bad_message() {
    // One segment of one word whose root pointer points far outside the segment.
    let mut payload = vec![0u8; 16];
    payload[4..8].copy_from_slice(&1u32.to_le_bytes());
    payload[8..16].copy_from_slice(&0x0000_0001_7fff_fff0u64.to_le_bytes());
    let msg = Message::parse(FrameKind::Request, &payload).unwrap();
    assert!(matches!(
        msg.root::<request::Owned>(),
        Err(WireError::BadMessage(_))
    ));
    assert!(msg.walk().is_err());
    assert!(msg.validate().is_err());
}

#[test]
fn invalid_utf8_in_text_is_caught_by_walk() {
    let mut scratch = vec![0u8; WRITER_SCRATCH_BYTES];
    let mut writer = FrameWriter::new(&mut scratch);
    let mut out = Vec::new();
    writer
        .write::<request::Owned, _>(&mut out, |r| {
            let mut d = r.init_decide();
            d.set_route_id("ROUTE");
            Ok(())
        })
        .unwrap();
    let pos = out.windows(5).position(|w| w == b"ROUTE").unwrap();
    out[pos] = 0xff;
    let msg = Message::from_frame_bytes(&out).unwrap();
    assert!(matches!(msg.walk(), Err(WireError::BadMessage(_))));
}

#[test]
fn garbage_never_panics() {
    // Deterministic xorshift garbage, as frames and as payloads of every kind.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000 {
        let len = (next() % 256) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && buf.len() >= FRAME_HEADER_BYTES {
            let plen = (buf.len() - FRAME_HEADER_BYTES) as u32;
            buf[..4].copy_from_slice(&plen.to_le_bytes());
            buf[4] = 1 + (next() % 4) as u8;
            if round % 4 == 0 && buf.len() >= 13 {
                // A plausible segment table so the pointer decoding is exercised too.
                buf[5..9].copy_from_slice(&0u32.to_le_bytes());
                let words = ((buf.len() - 13) / 8) as u32;
                buf[9..13].copy_from_slice(&words.to_le_bytes());
            }
        }
        if let Ok(msg) = Message::from_frame_bytes(&buf) {
            let _ = msg.walk();
            let _ = msg.validate();
        }
        for kind in FrameKind::ALL {
            if let Ok(msg) = Message::parse(kind, &buf) {
                let _ = msg.walk();
            }
        }
    }
}

#[test]
fn owned_frames_split_without_copy() {
    let mut stream = Vec::new();
    stream.extend(echo_frame(b"one"));
    stream.extend(echo_frame(b"two"));
    let first_len = echo_frame(b"one").len();
    let mut buf = Bytes::from(stream);
    let base = buf.as_ptr();
    let f1 = OwnedFrame::split_from(&mut buf).unwrap().unwrap();
    assert_eq!(f1.payload.as_ptr(), base.wrapping_add(FRAME_HEADER_BYTES));
    let f2 = OwnedFrame::split_from(&mut buf).unwrap().unwrap();
    assert_eq!(
        f2.payload.as_ptr(),
        base.wrapping_add(first_len + FRAME_HEADER_BYTES)
    );
    assert!(OwnedFrame::split_from(&mut buf).unwrap().is_none());
    let m = f2.message().unwrap();
    let request::Echo(e) = m.root::<request::Owned>().unwrap().which().unwrap() else {
        panic!("not echo")
    };
    let e = e.unwrap();
    assert_eq!(e, b"two");
    // The echo bytes are read in place, inside the original buffer.
    let range = base as usize..base as usize + 2 * first_len;
    assert!(range.contains(&(e.as_ptr() as usize)));
}

#[test]
fn walk_refuses_lists_of_zero_sized_values_beyond_the_payload_size() {
    // A struct list whose elements have no data and no pointers costs no bytes per element, so a
    // few hundred bytes can declare 100,000 of them: the walk must refuse, not visit them all.
    let mut scratch = vec![0u8; WRITER_SCRATCH_BYTES];
    let mut writer = FrameWriter::new(&mut scratch);
    let mut out = Vec::new();
    writer
        .write::<response::Owned, _>(&mut out, |r| {
            r.init_control_result().init_agents(1);
            Ok(())
        })
        .unwrap();
    assert!(Message::from_frame_bytes(&out).unwrap().walk().is_ok());
    // AgentInfo is 2 data words and 3 pointers: find the composite list pointer and its tag.
    let words: Vec<usize> = (FRAME_HEADER_BYTES + 8..out.len() - 8).step_by(8).collect();
    let word = |at: usize| u64::from_le_bytes(out[at..at + 8].try_into().unwrap());
    let list_ptr = (5u64 << 35) | (7 << 32) | 1;
    let tag = ((2u64 | (3 << 16)) << 32) | (1 << 2);
    let at = words
        .into_iter()
        .find(|&at| word(at) == list_ptr && word(at + 8) == tag)
        .expect("list pointer and tag");
    out[at..at + 8].copy_from_slice(&((7u64 << 32) | 1).to_le_bytes());
    out[at + 8..at + 16].copy_from_slice(&(100_000u64 << 2).to_le_bytes());
    let msg = Message::from_frame_bytes(&out).unwrap();
    match msg.walk() {
        Err(WireError::BadMessage(e)) => assert!(e.to_string().contains("more than"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
