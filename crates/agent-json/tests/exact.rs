//! The mapping pinned byte for byte: a `requestHeaders` event and two responses, as the encoder
//! writes them; the same texts decode to the same messages. `docs/protocol.md` section 12.1
//! shows the first two, and is checked against the encoder here too.
#![allow(clippy::unwrap_used)]

mod common;

use common::{payload, same_payload};
use turnstile_agent_json::{
    agent_to_proxy_from_json, agent_to_proxy_to_json, proxy_to_agent_from_json,
    proxy_to_agent_to_json,
};
use turnstile_wire::turnstile_capnp::{agent_to_proxy, proxy_to_agent};

/// `ProxyToAgent { correlationId = 7, requestHeaders = … }`.
pub fn request_headers_event() -> Vec<u8> {
    payload::<proxy_to_agent::Owned>(|mut m| {
        m.set_correlation_id(7);
        let mut e = m.init_request_headers();
        let mut md = e.reborrow().init_metadata();
        md.set_request_id("req-1");
        md.set_client_ip(&[192, 0, 2, 7]);
        md.set_client_port(51000);
        md.set_route_id("api");
        md.set_timestamp_ms(1_700_000_000_000);
        md.set_deadline_ms(100);
        let mut r = e.init_request();
        r.set_method("GET");
        r.set_authority("example.com");
        r.set_path("/items");
        r.set_query("page=2");
        let mut hs = r.reborrow().init_headers(2);
        for (i, (n, v)) in [("accept", "*/*"), ("user-agent", "curl/8.5")]
            .iter()
            .enumerate()
        {
            let mut h = hs.reborrow().get(i as u32);
            h.set_name(n.as_bytes());
            h.set_value(v.as_bytes());
        }
        r.set_client_address("192.0.2.7:51000");
        r.set_scheme("https");
        r.set_protocol("HTTP/2");
        Ok(())
    })
}

const REQUEST_HEADERS_JSON: &str = concat!(
    r#"{"correlationId":7,"requestHeaders":{"#,
    r#""metadata":{"requestId":"req-1","clientIp":{"base64":"wAACBw=="},"clientPort":51000,"#,
    r#""routeId":"api","timestampMs":1700000000000,"deadlineMs":100},"#,
    r#""request":{"method":"GET","authority":"example.com","path":"/items","query":"page=2","#,
    r#""headers":[{"name":"accept","value":"*/*"},{"name":"user-agent","value":"curl/8.5"}],"#,
    r#""clientAddress":"192.0.2.7:51000","scheme":"https","protocol":"HTTP/2"}}}"#,
);

/// `AgentToProxy { correlationId = 7, response = block 403 … }`.
pub fn block_response() -> Vec<u8> {
    payload::<agent_to_proxy::Owned>(|mut m| {
        m.set_correlation_id(7);
        let mut r = m.init_response();
        let mut b = r.reborrow().init_verdict().init_block();
        b.set_status(403);
        b.set_body(b"blocked\n");
        let mut a = r.init_audit();
        a.reborrow().init_tags(1).set(0, "waf");
        a.reborrow().init_rule_ids(1).set(0, "942100");
        a.init_confidence().set_value(0.9);
        Ok(())
    })
}

const BLOCK_RESPONSE_JSON: &str = concat!(
    r#"{"correlationId":7,"response":{"#,
    r#""verdict":{"block":{"status":403,"body":"blocked\n"}},"#,
    r#""audit":{"tags":["waf"],"ruleIds":["942100"],"confidence":{"value":0.9}}}}"#,
);

/// `AgentToProxy { correlationId = 8, response = allow, one header set }`, as the SDK builds it
/// (audit struct set, its lists empty).
pub fn allow_response() -> Vec<u8> {
    payload::<agent_to_proxy::Owned>(|mut m| {
        m.set_correlation_id(8);
        let mut r = m.init_response();
        r.reborrow().init_verdict().set_allow(());
        let mut set = r.reborrow().init_request_headers(1).get(0).init_set();
        set.set_name(b"x-checked");
        set.set_value(b"1");
        r.set_need_more(false);
        let mut a = r.init_audit();
        a.reborrow().init_tags(0);
        a.init_rule_ids(0);
        Ok(())
    })
}

const ALLOW_RESPONSE_JSON: &str = concat!(
    r#"{"correlationId":8,"response":{"verdict":{"allow":null},"#,
    r#""requestHeaders":[{"set":{"name":"x-checked","value":"1"}}],"#,
    r#""audit":{"confidence":{"unknown":null}}}}"#,
);

#[test]
fn request_headers_event_is_exactly_this_json() {
    let p = request_headers_event();
    let mut json = Vec::new();
    proxy_to_agent_to_json(&p, &mut json).unwrap();
    assert_eq!(std::str::from_utf8(&json).unwrap(), REQUEST_HEADERS_JSON);
    let mut back = Vec::new();
    proxy_to_agent_from_json(REQUEST_HEADERS_JSON.as_bytes(), &mut back).unwrap();
    same_payload::<proxy_to_agent::Owned>(&p, &back).unwrap();
}

#[test]
fn responses_are_exactly_this_json() {
    for (p, want) in [
        (block_response(), BLOCK_RESPONSE_JSON),
        (allow_response(), ALLOW_RESPONSE_JSON),
    ] {
        let mut json = Vec::new();
        agent_to_proxy_to_json(&p, &mut json).unwrap();
        assert_eq!(std::str::from_utf8(&json).unwrap(), want);
        let mut back = Vec::new();
        agent_to_proxy_from_json(want.as_bytes(), &mut back).unwrap();
        same_payload::<agent_to_proxy::Owned>(&p, &back).unwrap();
    }
}

#[test]
fn decoder_takes_any_key_order_whitespace_and_both_data_forms() {
    // What a hand-written peer may send: other order, spaces, an escaped string, base64 for
    // UTF-8 bytes, and defaults written out.
    let json = br#" {
        "requestHeaders": {
            "request": {"protocol": "HTTP/2", "scheme": "https", "clientAddress": "192.0.2.7:51000",
                        "headers": [{"value": "*/*", "name": {"base64": "YWNjZXB0"}},
                                    {"name": "user-agent", "value": "curl\/8.5"}],
                        "query": "page=2", "path": "/items", "authority": "example.com",
                        "method": "GET"},
            "metadata": {"deadlineMs": 100, "timestampMs": 1700000000000, "routeId": "api",
                         "clientPort": 51000, "clientIp": {"base64": "wAACBw=="},
                         "requestId": "req-1", "tlsVersion": "", "upstreamId": ""}
        },
        "correlationId": 7
    } "#;
    let mut back = Vec::new();
    proxy_to_agent_from_json(json, &mut back).unwrap();
    same_payload::<proxy_to_agent::Owned>(&request_headers_event(), &back).unwrap();
}

/// The ```json block after `<!-- json: NAME -->` in docs/protocol.md.
fn doc_json(doc: &str, name: &str) -> serde_json::Value {
    let marker = format!("<!-- json: {name} -->");
    let at = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/protocol.md has no `{marker}`"));
    let rest = &doc[at + marker.len()..];
    let start = rest.find("```json\n").expect("a ```json block") + "```json\n".len();
    let end = rest[start..].find("```").expect("the block's end");
    serde_json::from_str(&rest[start..start + end]).expect("the block is JSON")
}

#[test]
fn protocol_doc_examples_are_what_the_encoder_writes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md");
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    assert_eq!(
        doc_json(&doc, "request-headers"),
        parse(REQUEST_HEADERS_JSON),
        "docs/protocol.md block `request-headers` differs from the encoder's JSON"
    );
    assert_eq!(
        doc_json(&doc, "block-response"),
        parse(BLOCK_RESPONSE_JSON),
        "docs/protocol.md block `block-response` differs from the encoder's JSON"
    );
    // The compact text and its frame header, as the document spells them out.
    let len = BLOCK_RESPONSE_JSON.len();
    assert!(len < 256);
    let header = format!("`{len:02x} 00 00 00 06` (length {len}, kind");
    assert!(doc.contains(&header), "docs/protocol.md lacks {header}");
    assert!(doc.contains(&format!("`{BLOCK_RESPONSE_JSON}`")));
}
