//! Every way a JSON text (or a Cap'n Proto message on its way to JSON) is refused: each with its
//! own error, none with a panic.
#![allow(clippy::unwrap_used)]

mod common;

use capnp::dynamic_value;
use capnp::introspect::{Introspect, TypeVariant};
use common::payload;
use turnstile_agent_json::limits::{JSON_BYTES_MAX, JSON_DEPTH_MAX};
use turnstile_agent_json::{
    JsonError, agent_to_proxy_from_json, agent_to_proxy_to_json, proxy_to_agent_from_json,
    proxy_to_agent_to_json, to_json,
};
use turnstile_wire::turnstile_capnp::{self as s, agent_to_proxy, proxy_to_agent};

fn p2a(json: &str) -> JsonError {
    let mut out = b"keep".to_vec();
    let e = proxy_to_agent_from_json(json.as_bytes(), &mut out).unwrap_err();
    assert_eq!(out, b"keep", "a refused text must not append");
    e
}

fn a2p(json: &str) -> JsonError {
    let mut out = Vec::new();
    agent_to_proxy_from_json(json.as_bytes(), &mut out).unwrap_err()
}

#[test]
fn unknown_key_names_the_key_and_the_struct() {
    let e = p2a(r#"{"requestHeaders":{"request":{"methd":"GET"}}}"#);
    assert!(
        matches!(&e, JsonError::UnknownKey { key, in_struct } if key == "methd" && in_struct == "HttpRequest"),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "unknown key `methd` in HttpRequest");
    // snake_case is not the schema's spelling.
    assert!(matches!(
        p2a(r#"{"correlation_id":1}"#),
        JsonError::UnknownKey { .. }
    ));
}

#[test]
fn two_union_members_are_refused() {
    let e = p2a(r#"{"correlationId":1,"drain":{},"shutdown":null}"#);
    assert!(
        matches!(&e, JsonError::TwoUnionMembers { in_struct, first, second }
            if in_struct == "ProxyToAgent" && first == "drain" && second == "shutdown"),
        "{e:?}"
    );
    // In a named union too.
    let e = a2p(r#"{"health":{"state":{"healthy":null,"draining":{}}}}"#);
    assert!(
        matches!(&e, JsonError::TwoUnionMembers { in_struct, .. } if in_struct == "HealthStatus.state"),
        "{e:?}"
    );
}

#[test]
fn duplicate_key_is_refused() {
    let e = p2a(r#"{"correlationId":1,"correlationId":2}"#);
    assert!(
        matches!(&e, JsonError::DuplicateKey { key, .. } if key == "correlationId"),
        "{e:?}"
    );
}

#[test]
fn bad_enum_name_is_refused() {
    let e = a2p(r#"{"log":{"level":"warning"}}"#);
    assert!(
        matches!(&e, JsonError::UnknownEnumName { name, in_enum, field, .. }
            if name == "warning" && in_enum == "LogLevel" && field == "level"),
        "{e:?}"
    );
    // Enums are names, not numbers.
    assert!(matches!(
        a2p(r#"{"log":{"level":1}}"#),
        JsonError::WrongType { .. }
    ));
}

#[test]
fn wrong_types_are_refused() {
    let cases: [(&str, &str, &str); 9] = [
        (r#"{"correlationId":"7"}"#, "correlationId", "a string"),
        (r#"{"correlationId":7.0}"#, "correlationId", "a number"),
        (r#"{"correlationId":1e3}"#, "correlationId", "a number"),
        (r#"{"shutdown":{}}"#, "shutdown", "an object"),
        (r#"{"drain":[]}"#, "drain", "an array"),
        (
            r#"{"requestHeaders":{"request":{"headers":{}}}}"#,
            "headers",
            "an object",
        ),
        (
            r#"{"requestHeaders":{"request":{"headers":[1]}}}"#,
            "headers",
            "a number",
        ),
        (
            r#"{"requestHeaders":{"request":{"path":null}}}"#,
            "path",
            "null",
        ),
        (r#"{"configure":{"config":[1,2]}}"#, "config", "an array"),
    ];
    for (json, want_field, want_got) in cases {
        match p2a(json) {
            JsonError::WrongType { field, got, .. } => {
                assert_eq!((field.as_str(), got), (want_field, want_got), "{json}")
            }
            e => panic!("{json}: {e:?}"),
        }
    }
    let e = p2a("[1]");
    assert!(
        matches!(&e, JsonError::WrongType { field, .. } if field == "(root)"),
        "{e:?}"
    );
}

#[test]
fn numbers_out_of_range_are_refused() {
    for json in [
        r#"{"correlationId":-1}"#,
        r#"{"correlationId":18446744073709551616}"#,
        r#"{"handshake":{"shard":65536}}"#,
        r#"{"websocketFrame":{"opcode":256}}"#,
        r#"{"handshake":{"supportedVersions":[4294967296]}}"#,
    ] {
        let e = p2a(json);
        assert!(
            matches!(
                e,
                JsonError::OutOfRange { .. } | JsonError::WrongType { .. }
            ),
            "{json}: {e:?}"
        );
    }
    assert!(matches!(
        p2a(r#"{"handshake":{"shard":-1}}"#),
        JsonError::OutOfRange { ty: "UInt16", .. }
    ));
    assert!(matches!(
        a2p(r#"{"health":{"load":{"avgLatencyMs":1e39}}}"#),
        JsonError::OutOfRange { ty: "Float32", .. }
    ));
    // The extremes that fit are taken.
    let mut out = Vec::new();
    proxy_to_agent_from_json(br#"{"correlationId":18446744073709551615}"#, &mut out).unwrap();
}

#[test]
fn too_deep_is_refused() {
    // Deeper than the limit, inside a field that would take an array.
    let n = JSON_DEPTH_MAX;
    let json = format!(
        r#"{{"handshake":{{"supportedVersions":{}{}}}}}"#,
        "[".repeat(n),
        "]".repeat(n)
    );
    assert!(matches!(p2a(&json), JsonError::TooDeep { max } if max == JSON_DEPTH_MAX));
}

#[test]
fn truncated_and_trailing_text_is_refused() {
    let full = r#"{"correlationId":7,"requestHeaders":{"request":{"method":"GET"}}}"#;
    for cut in 0..full.len() {
        let e = p2a(&full[..cut]);
        assert!(matches!(e, JsonError::Syntax(_)), "{cut}: {e:?}");
    }
    assert!(matches!(p2a(&format!("{full}{{}}")), JsonError::Syntax(_)));
    assert!(matches!(p2a(&format!("{full} x")), JsonError::Syntax(_)));
}

#[test]
fn non_utf8_is_refused_in_json_and_carried_as_base64_in_data() {
    // JSON → capnp: raw non-UTF-8 bytes in a JSON string are not JSON.
    let mut out = Vec::new();
    let e =
        proxy_to_agent_from_json(b"{\"configure\":{\"config\":\"\xff\"}}", &mut out).unwrap_err();
    assert!(matches!(e, JsonError::Syntax(_)), "{e:?}");
    // capnp → JSON: non-UTF-8 Data becomes base64, and comes back as the same bytes.
    let p = payload::<proxy_to_agent::Owned>(|m| {
        m.init_configure().set_config(&[0xff, 0x00, b'a']);
        Ok(())
    });
    let mut json = Vec::new();
    proxy_to_agent_to_json(&p, &mut json).unwrap();
    assert_eq!(json, br#"{"configure":{"config":{"base64":"/wBh"}}}"#);
    let mut back = Vec::new();
    proxy_to_agent_from_json(&json, &mut back).unwrap();
    common::same_payload::<proxy_to_agent::Owned>(&p, &back).unwrap();
    // capnp → JSON: non-UTF-8 Text has no JSON form.
    let mut p = payload::<agent_to_proxy::Owned>(|m| {
        m.init_log().set_message("ab\u{1}cd");
        Ok(())
    });
    let at = p.windows(5).position(|w| w == b"ab\x01cd").unwrap();
    p[at + 2] = 0xff;
    let mut json = b"keep".to_vec();
    let e = agent_to_proxy_to_json(&p, &mut json).unwrap_err();
    assert!(
        matches!(&e, JsonError::TextNotUtf8 { in_struct, field } if in_struct == "LogMessage" && field == "message"),
        "{e:?}"
    );
    assert_eq!(json, b"keep", "a refused message must not append");
}

#[test]
fn bad_base64_is_refused() {
    for json in [
        r#"{"configure":{"config":{"base64":"/wB"}}}"#,
        r#"{"configure":{"config":{"base64":"*"}}}"#,
    ] {
        assert!(matches!(p2a(json), JsonError::BadBase64 { .. }), "{json}");
    }
    for json in [
        r#"{"configure":{"config":{"base64":1}}}"#,
        r#"{"configure":{"config":{"hex":"00"}}}"#,
        r#"{"configure":{"config":{"base64":"","x":""}}}"#,
    ] {
        assert!(matches!(p2a(json), JsonError::WrongType { .. }), "{json}");
    }
}

#[test]
fn size_limits_hold_both_ways() {
    let big = format!(
        r#"{{"log":{{"message":"{}"}}}}"#,
        "a".repeat(JSON_BYTES_MAX)
    );
    assert!(matches!(a2p(&big), JsonError::TooLarge { .. }));
    // A small text that would build a large message: 200 000 empty headers are 400 000 words.
    let many = format!(
        r#"{{"requestHeaders":{{"request":{{"headers":[{}{{}}]}}}}}}"#,
        "{},".repeat(199_999)
    );
    assert!(many.len() < JSON_BYTES_MAX);
    assert!(matches!(p2a(&many), JsonError::MessageTooLarge { .. }));
}

#[test]
fn encoder_refuses_what_json_cannot_hold() {
    // NaN.
    let p = payload::<agent_to_proxy::Owned>(|m| {
        m.init_health().init_load().set_avg_latency_ms(f32::NAN);
        Ok(())
    });
    let e = agent_to_proxy_to_json(&p, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(&e, JsonError::NonFinite { field, .. } if field == "avgLatencyMs"),
        "{e:?}"
    );
    // An enum value the schema does not name (a newer peer).
    let mut message = capnp::message::Builder::new_default();
    let root = message.init_root::<agent_to_proxy::Builder<'_>>();
    let log = root.init_log();
    let dynamic_value::Builder::Struct(mut log) = log.into() else {
        unreachable!()
    };
    let TypeVariant::Enum(level) = s::LogLevel::introspect().which() else {
        unreachable!()
    };
    let field = log.get_schema().get_field_by_name("level").unwrap();
    log.set(field, dynamic_value::Enum::new(99, level.into()).into())
        .unwrap();
    let reader = message
        .get_root_as_reader::<agent_to_proxy::Reader<'_>>()
        .unwrap();
    let dynamic_value::Reader::Struct(r) = reader.into() else {
        unreachable!()
    };
    let e = to_json(r, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(e, JsonError::UnknownEnumValue { value: 99, .. }),
        "{e:?}"
    );
    // A union member the schema does not know: patch the discriminant of `shutdown` (12).
    let mut p = payload::<proxy_to_agent::Owned>(|mut m| {
        m.set_correlation_id(0x1122_3344_5566_7788);
        m.set_shutdown(());
        Ok(())
    });
    let at = p
        .windows(8)
        .position(|w| w == 0x1122_3344_5566_7788u64.to_le_bytes())
        .unwrap();
    assert_eq!(p[at + 8..at + 10], [12, 0]);
    p[at + 8] = 99;
    let e = proxy_to_agent_to_json(&p, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(&e, JsonError::UnknownUnionMember { in_struct } if in_struct == "ProxyToAgent"),
        "{e:?}"
    );
}

#[test]
fn garbage_payloads_are_errors() {
    for bad in [&b""[..], &[0u8; 7], &[0xff; 64]] {
        assert!(proxy_to_agent_to_json(bad, &mut Vec::new()).is_err());
        assert!(agent_to_proxy_to_json(bad, &mut Vec::new()).is_err());
    }
}
