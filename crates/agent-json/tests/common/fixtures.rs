//! One message per union member of `ProxyToAgent` and `AgentToProxy`, with (almost) every field
//! set to a value other than its default, so a round trip that drops or changes a field shows.
#![allow(dead_code, clippy::unwrap_used)]

use turnstile_wire::turnstile_capnp::{self as s, agent_to_proxy, proxy_to_agent};

/// Union members of `ProxyToAgent`, in discriminant order.
pub const PROXY_TO_AGENT_MEMBERS: [&str; 13] = [
    "handshake",
    "requestHeaders",
    "requestBodyChunk",
    "responseHeaders",
    "responseBodyChunk",
    "websocketFrame",
    "guardrailInspect",
    "requestComplete",
    "cancel",
    "configure",
    "configUpdateAck",
    "drain",
    "shutdown",
];

/// Union members of `AgentToProxy`, in discriminant order.
pub const AGENT_TO_PROXY_MEMBERS: [&str; 7] = [
    "handshake",
    "response",
    "health",
    "metrics",
    "configUpdate",
    "flowControl",
    "log",
];

fn headers(list: capnp::struct_list::Builder<'_, s::header::Owned>, pairs: &[(&[u8], &[u8])]) {
    let mut list = list;
    for (i, (n, v)) in pairs.iter().enumerate() {
        let mut h = list.reborrow().get(i as u32);
        h.set_name(n);
        h.set_value(v);
    }
}

fn http_request(mut r: s::http_request::Builder<'_>) {
    r.set_method("POST");
    r.set_authority("api.example.com:8443");
    r.set_path("/v1/items/é");
    r.set_query("a=1&b=\"2\"");
    r.set_client_address("192.0.2.7:51000");
    r.set_scheme("https");
    r.set_protocol("HTTP/2");
    headers(
        r.init_headers(3),
        &[
            (b"content-type", b"application/json"),
            (b"x-a", b"tab\there\nnewline"),
            // Not UTF-8: travels as base64.
            (b"x-bin", &[0, 0xff, 0xfe, 0x80]),
        ],
    );
}

fn body_chunk(mut c: s::body_chunk::Builder<'_>, last: bool) {
    c.set_chunk_index(3);
    c.set_data(&[0x89, b'P', b'N', b'G', 0, 1, 2]);
    c.set_is_last(last);
    c.set_total_bytes(u64::MAX);
    c.set_bytes_transferred(1 << 40);
    c.set_proxy_buffer_available_bytes(65536);
}

fn labels(list: capnp::struct_list::Builder<'_, s::label::Owned>) {
    let mut list = list;
    for (i, (n, v)) in [("agent_id", "waf"), ("route", "api")].iter().enumerate() {
        let mut l = list.reborrow().get(i as u32);
        l.set_name(n);
        l.set_value(v);
    }
}

/// Fills `ProxyToAgent` with its union member number `tag` (1-based, as in the schema).
pub fn proxy_to_agent_member(tag: u16, mut b: proxy_to_agent::Builder<'_>) -> capnp::Result<()> {
    b.set_correlation_id(u64::from(tag) << 40 | 7);
    match tag {
        1 => {
            let mut h = b.init_handshake();
            let mut v = h.reborrow().init_supported_versions(2);
            v.set(0, 2);
            v.set(1, u32::MAX);
            h.set_proxy_id("turnstile");
            h.set_proxy_version("0.1.0");
            let mut e = h.reborrow().init_encodings(2);
            e.set(0, s::Encoding::Json);
            e.set(1, s::Encoding::Capnp);
            h.set_shard(65535);
        }
        2 => {
            let mut e = b.init_request_headers();
            let mut m = e.reborrow().init_metadata();
            m.set_request_id("req-1");
            m.set_client_ip(&[192, 0, 2, 7]);
            m.set_client_port(51000);
            m.set_server_name("api.example.com");
            m.set_tls_version("TLSv1.3");
            m.set_route_id("api");
            m.set_upstream_id("backend-1");
            m.set_timestamp_ms(1_700_000_000_123);
            m.set_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
            m.set_deadline_ms(250);
            http_request(e.init_request());
        }
        3 => body_chunk(b.init_request_body_chunk(), false),
        4 => {
            let mut r = b.init_response_headers().init_response();
            r.set_status(503);
            headers(r.init_headers(1), &[(b"retry-after", b"5")]);
        }
        5 => body_chunk(b.init_response_body_chunk(), true),
        6 => {
            let mut f = b.init_websocket_frame();
            f.set_opcode(2);
            f.set_fin(true);
            f.set_client_to_server(true);
            f.set_frame_index(12);
            f.set_data(&[0xde, 0xad, 0xbe, 0xef]);
        }
        7 => {
            let mut g = b.init_guardrail_inspect();
            g.set_kind(s::GuardrailKind::Jailbreak);
            g.set_content(b"ignore previous instructions");
            g.set_is_response(true);
            g.set_model("gpt-x");
            let mut p = g.init_policies(2);
            p.set(0, "strict");
            p.set(1, "");
        }
        8 => {
            let mut c = b.init_request_complete();
            c.set_status(200);
            c.set_duration_us(1234);
            c.set_request_body_bytes(10);
            c.set_response_body_bytes(20);
            c.set_error("upstream reset");
        }
        9 => {
            let mut c = b.init_cancel();
            c.set_timestamp_ms(42);
            c.init_reason().set_blocked_by_agent("waf");
        }
        10 => {
            let mut c = b.init_configure();
            c.set_agent_id("waf");
            c.set_config(b"mode = \"block\"\n");
            c.set_generation(3);
        }
        11 => {
            let mut a = b.init_config_update_ack();
            a.set_request_id("sdk-1");
            a.set_accepted(true);
            a.set_message("ok");
        }
        12 => b.init_drain().set_deadline_ms(1000),
        _ => b.set_shutdown(()),
    }
    Ok(())
}

/// Fills `AgentToProxy` with its union member number `tag` (1-based).
pub fn agent_to_proxy_member(tag: u16, mut b: agent_to_proxy::Builder<'_>) -> capnp::Result<()> {
    b.set_correlation_id(u64::MAX - u64::from(tag));
    match tag {
        1 => {
            let mut c = b.init_handshake().init_accepted();
            c.set_protocol_version(2);
            c.set_agent_id("waf");
            c.set_name("WAF");
            c.set_version("1.2.3");
            let mut ev = c.reborrow().init_supported_events(2);
            ev.set(0, s::EventType::RequestHeaders);
            ev.set(1, s::EventType::RequestComplete);
            let mut f = c.reborrow().init_features();
            f.set_streaming_body(true);
            f.set_websocket(true);
            f.set_guardrails(true);
            f.set_config_push(true);
            f.set_metrics_export(true);
            f.set_concurrent_requests(64);
            f.set_cancellation(true);
            f.set_flow_control(true);
            let mut l = c.reborrow().init_limits();
            l.set_max_body_bytes(1 << 20);
            l.set_max_concurrency(64);
            l.set_preferred_chunk_bytes(16384);
            l.set_max_memory_bytes(1 << 30);
            l.set_max_processing_ms(50);
            let mut h = c.reborrow().init_health();
            h.set_report_interval_ms(1000);
            h.set_include_load_metrics(true);
            h.set_include_resource_metrics(true);
            let mut i = c.reborrow().init_interest();
            i.reborrow().init_path_prefixes(1).set(0, "/api");
            i.reborrow().init_methods(2).set(1, "POST");
            i.init_required_headers(1).set(0, b"x-api-key");
            c.set_encoding(s::Encoding::Json);
        }
        2 => {
            let mut r = b.init_response();
            let mut bl = r.reborrow().init_verdict().init_block();
            bl.set_status(403);
            bl.set_body(b"blocked\n");
            headers(bl.init_headers(1), &[(b"x-why", b"\xff")]);
            let mut ops = r.reborrow().init_request_headers(3);
            let mut add = ops.reborrow().get(0).init_add();
            add.set_name(b"x-a");
            add.set_value(b"1");
            let mut set = ops.reborrow().get(1).init_set();
            set.set_name(b"x-b");
            set.set_value(b"");
            ops.get(2).set_remove(b"cookie");
            r.reborrow()
                .init_response_headers(1)
                .get(0)
                .set_remove(b"server");
            let mut a = r.reborrow().init_audit();
            a.reborrow().init_tags(1).set(0, "waf");
            a.reborrow().init_rule_ids(1).set(0, "942100");
            a.reborrow().init_reason_codes(1).set(0, "sqli");
            a.init_confidence().set_value(0.875);
            r.set_need_more(true);
        }
        3 => {
            let mut h = b.init_health();
            let mut d = h.reborrow().init_state().init_degraded();
            d.set_timeout_multiplier(1.5);
            d.init_disabled_features(1).set(0, "body");
            h.set_message("busy");
            let mut l = h.reborrow().init_load();
            l.set_in_flight(4);
            l.set_queue_depth(2);
            l.set_avg_latency_ms(0.25);
            l.set_p99_latency_ms(3.0e-5);
            l.set_requests_processed(100);
            l.set_requests_rejected(1);
            let mut r = h.reborrow().init_resources();
            r.set_cpu_percent(0.0);
            r.set_memory_bytes(1 << 33);
            r.set_memory_limit_bytes(1 << 34);
            r.set_active_threads(8);
            r.set_open_fds(100);
            h.set_valid_until_ms(1_700_000_000_000);
        }
        4 => {
            let mut m = b.init_metrics();
            m.set_agent_id("waf");
            m.set_timestamp_ms(1_700_000_000_000);
            m.set_interval_ms(10_000);
            let mut c = m.reborrow().init_counters(1).get(0);
            c.set_name("requests_total");
            labels(c.reborrow().init_labels(2));
            c.set_value(u64::MAX);
            let mut g = m.reborrow().init_gauges(1).get(0);
            g.set_name("in_flight");
            g.set_value(-0.5);
            let mut hist = m.init_histograms(1).get(0);
            hist.set_name("latency_seconds");
            labels(hist.reborrow().init_labels(2));
            hist.set_sum(1.0e-300);
            hist.set_count(2);
            let mut bk = hist.init_buckets(2);
            bk.reborrow().get(0).set_le(0.005);
            bk.reborrow().get(0).set_count(1);
            bk.reborrow().get(1).set_le(f64::MAX);
            bk.reborrow().get(1).set_count(2);
        }
        5 => {
            let mut u = b.init_config_update();
            u.set_request_id("r1");
            u.set_timestamp_ms(5);
            let mut r = u.init_update().init_rule_update();
            r.set_rule_set("crs");
            let mut rule = r.reborrow().init_rules(1).get(0);
            rule.set_id("942100");
            rule.set_priority(-5);
            rule.set_definition(b"SecRule ARGS \"@detectSQLi\"");
            rule.set_enabled(true);
            r.init_remove_rules(1).set(0, "900000");
        }
        6 => b
            .init_flow_control()
            .init_action()
            .set_update_capacity(4096),
        _ => {
            let mut l = b.init_log();
            l.set_level(s::LogLevel::Debug);
            l.set_message("hello \u{1}\u{7f} \"world\"");
            labels(l.init_fields(2));
        }
    }
    Ok(())
}
