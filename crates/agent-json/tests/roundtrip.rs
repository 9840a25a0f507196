//! Cap'n Proto → JSON → Cap'n Proto for every union member of both agent roots (and the members
//! of their nested unions): the values survive, and the JSON is a fixed point.
#![allow(clippy::unwrap_used)]

mod common;

use common::fixtures::{
    AGENT_TO_PROXY_MEMBERS, PROXY_TO_AGENT_MEMBERS, agent_to_proxy_member, proxy_to_agent_member,
};
use common::{payload, same_payload};
use turnstile_agent_json::{
    agent_to_proxy_from_json, agent_to_proxy_to_json, proxy_to_agent_from_json,
    proxy_to_agent_to_json,
};
use turnstile_wire::turnstile_capnp::{agent_to_proxy, proxy_to_agent};
use turnstile_wire::{FrameKind, Message};

type ToJson = fn(&[u8], &mut Vec<u8>) -> Result<(), turnstile_agent_json::JsonError>;

/// Round-trips `original`; returns its JSON. `check` compares two payloads.
fn round_trip(
    original: &[u8],
    to_json: ToJson,
    from_json: ToJson,
    kind: FrameKind,
    check: fn(&[u8], &[u8]) -> Result<(), String>,
) -> String {
    let mut json = b"prefix:".to_vec();
    to_json(original, &mut json).unwrap();
    assert!(json.starts_with(b"prefix:"), "to_json must append");
    let json = json.split_off(7);
    let mut back = Vec::new();
    from_json(&json, &mut back).unwrap();
    let msg = Message::parse(kind, &back).unwrap();
    msg.validate().unwrap();
    msg.walk().unwrap();
    check(original, &back).unwrap_or_else(|e| {
        panic!(
            "round trip changed a value: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    let mut again = Vec::new();
    to_json(&back, &mut again).unwrap();
    assert_eq!(
        String::from_utf8(again).unwrap(),
        String::from_utf8(json.clone()).unwrap(),
        "JSON is not a fixed point"
    );
    String::from_utf8(json).unwrap()
}

fn top_keys(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn proxy_to_agent_every_member_round_trips() {
    for (i, member) in PROXY_TO_AGENT_MEMBERS.iter().enumerate() {
        let tag = i as u16 + 1;
        let original = payload::<proxy_to_agent::Owned>(|b| proxy_to_agent_member(tag, b));
        let json = round_trip(
            &original,
            proxy_to_agent_to_json,
            proxy_to_agent_from_json,
            FrameKind::ProxyToAgent,
            same_payload::<proxy_to_agent::Owned>,
        );
        let mut keys = top_keys(&json);
        keys.sort();
        let mut want = vec!["correlationId".to_owned(), (*member).to_owned()];
        want.sort();
        assert_eq!(keys, want, "{json}");
    }
}

#[test]
fn agent_to_proxy_every_member_round_trips() {
    for (i, member) in AGENT_TO_PROXY_MEMBERS.iter().enumerate() {
        let tag = i as u16 + 1;
        let original = payload::<agent_to_proxy::Owned>(|b| agent_to_proxy_member(tag, b));
        let json = round_trip(
            &original,
            agent_to_proxy_to_json,
            agent_to_proxy_from_json,
            FrameKind::AgentToProxy,
            same_payload::<agent_to_proxy::Owned>,
        );
        let mut keys = top_keys(&json);
        keys.sort();
        let mut want = vec!["correlationId".to_owned(), (*member).to_owned()];
        want.sort();
        assert_eq!(keys, want, "{json}");
    }
}

#[test]
fn nested_union_members_round_trip() {
    use turnstile_wire::turnstile_capnp::agent_to_proxy::Builder as A;
    use turnstile_wire::turnstile_capnp::proxy_to_agent::Builder as P;
    type FillA = fn(A<'_>);
    type FillP = fn(P<'_>);
    let agent: [(FillA, &str); 9] = [
        (
            |b| b.init_response().init_verdict().set_allow(()),
            r#"{"response":{"verdict":{"allow":null}}}"#,
        ),
        (
            |b| {
                let mut r = b.init_response().init_verdict().init_redirect();
                r.set_location("/login");
                r.set_status(302);
            },
            r#"{"response":{"verdict":{"redirect":{"location":"/login","status":302}}}}"#,
        ),
        (
            |b| b.init_handshake().set_rejected("no common version"),
            r#"{"handshake":{"rejected":"no common version"}}"#,
        ),
        (
            |b| b.init_health().init_state().set_healthy(()),
            r#"{"health":{"state":{"healthy":null}}}"#,
        ),
        (
            |b| b.init_health().init_state().init_draining().set_eta_ms(9),
            r#"{"health":{"state":{"draining":{"etaMs":9}}}}"#,
        ),
        (
            |b| {
                let mut u = b.init_health().init_state().init_unhealthy();
                u.set_reason("oom");
                u.set_recoverable(true);
            },
            r#"{"health":{"state":{"unhealthy":{"reason":"oom","recoverable":true}}}}"#,
        ),
        (
            |b| b.init_config_update().init_update().set_request_reload(()),
            r#"{"configUpdate":{"update":{"requestReload":null}}}"#,
        ),
        (
            |b| b.init_flow_control().init_action().set_pause(()),
            r#"{"flowControl":{"action":{"pause":null}}}"#,
        ),
        (
            // A set struct whose fields are all defaults is `{}`; the schema's non-zero
            // default (`timeoutMultiplier = 1.0`) is left out like any other default.
            |b| {
                b.init_health()
                    .init_state()
                    .init_degraded()
                    .set_timeout_multiplier(1.0);
            },
            r#"{"health":{"state":{"degraded":{}}}}"#,
        ),
    ];
    for (fill, want) in agent {
        let original = payload::<agent_to_proxy::Owned>(|b| {
            fill(b);
            Ok(())
        });
        let json = round_trip(
            &original,
            agent_to_proxy_to_json,
            agent_to_proxy_from_json,
            FrameKind::AgentToProxy,
            same_payload::<agent_to_proxy::Owned>,
        );
        assert_eq!(json, want);
    }
    let proxy: [(FillP, &str); 4] = [
        (
            |b| b.init_cancel().init_reason().set_client_disconnect(()),
            r#"{"cancel":{"reason":{"clientDisconnect":null}}}"#,
        ),
        (
            |b| b.init_cancel().init_reason().set_manual("admin"),
            r#"{"cancel":{"reason":{"manual":"admin"}}}"#,
        ),
        (|mut b| b.set_shutdown(()), r#"{"shutdown":null}"#),
        // The first member, with nothing set: still written.
        (
            |b| {
                b.init_handshake();
            },
            r#"{"handshake":{}}"#,
        ),
    ];
    for (fill, want) in proxy {
        let original = payload::<proxy_to_agent::Owned>(|b| {
            fill(b);
            Ok(())
        });
        let json = round_trip(
            &original,
            proxy_to_agent_to_json,
            proxy_to_agent_from_json,
            FrameKind::ProxyToAgent,
            same_payload::<proxy_to_agent::Owned>,
        );
        assert_eq!(json, want);
    }
}

#[test]
fn health_resources_default_survives_when_left_out() {
    // cpuPercent's schema default is -1 ("not reported"): a JSON without it must read -1.
    let mut out = Vec::new();
    agent_to_proxy_from_json(br#"{"health":{"resources":{"openFds":3}}}"#, &mut out).unwrap();
    let msg = Message::parse(FrameKind::AgentToProxy, &out).unwrap();
    let agent_to_proxy::Health(h) = msg
        .root::<agent_to_proxy::Owned>()
        .unwrap()
        .which()
        .unwrap()
    else {
        panic!("not health")
    };
    let r = h.unwrap().get_resources().unwrap();
    assert_eq!(r.get_open_fds(), 3);
    assert_eq!(r.get_cpu_percent(), -1.0);
    // And 0.0 (not the default) is written out.
    let p = payload::<agent_to_proxy::Owned>(|b| {
        b.init_health().init_resources().set_cpu_percent(0.0);
        Ok(())
    });
    let mut json = Vec::new();
    agent_to_proxy_to_json(&p, &mut json).unwrap();
    assert_eq!(
        std::str::from_utf8(&json).unwrap(),
        r#"{"health":{"state":{"healthy":null},"resources":{"cpuPercent":0.0}}}"#
    );
}

#[test]
fn the_comparison_sees_a_changed_value() {
    // Guards the guard: `same_payload` must notice one changed field deep inside.
    let a = payload::<proxy_to_agent::Owned>(|b| proxy_to_agent_member(2, b));
    let b = payload::<proxy_to_agent::Owned>(|mut b| {
        proxy_to_agent_member(2, b.reborrow())?;
        let proxy_to_agent::RequestHeaders(e) = b.which()? else {
            unreachable!()
        };
        e?.get_request()?
            .get_headers()?
            .get(2)
            .set_value(&[0, 0xff, 0xfe, 0x81]);
        Ok(())
    });
    let err = same_payload::<proxy_to_agent::Owned>(&a, &b).unwrap_err();
    assert!(
        err.contains(".requestHeaders.request.headers[2].value"),
        "{err}"
    );
}

#[test]
#[ignore = "prints the JSON of every fixture"]
fn print_fixtures() {
    for tag in 1..=13 {
        let p = payload::<proxy_to_agent::Owned>(|b| proxy_to_agent_member(tag, b));
        let mut json = Vec::new();
        proxy_to_agent_to_json(&p, &mut json).unwrap();
        println!("{}", String::from_utf8(json).unwrap());
    }
    for tag in 1..=7 {
        let p = payload::<agent_to_proxy::Owned>(|b| agent_to_proxy_member(tag, b));
        let mut json = Vec::new();
        agent_to_proxy_to_json(&p, &mut json).unwrap();
        println!("{}", String::from_utf8(json).unwrap());
    }
}
