//! Every root and every union member of the schema, built, framed, parsed and read back.

use turnstile_wire::turnstile_capnp::{
    self as s, agent_to_proxy, cancel_reason, config_update_request, control, control_result,
    decide, flow_control_signal, handshake_response, header_op, health_status, memory,
    memory_result, proxy_to_agent, request, response, verdict,
};
use turnstile_wire::{FrameWriter, Message, Root, limits::WRITER_SCRATCH_BYTES};

fn encode<R: Root>(fill: impl FnOnce(R::Builder<'_>) -> capnp::Result<()>) -> Vec<u8> {
    let mut scratch = vec![0u8; WRITER_SCRATCH_BYTES];
    let mut writer = FrameWriter::new(&mut scratch);
    let mut out = Vec::new();
    let n = writer.write::<R, _>(&mut out, fill).expect("encode");
    assert_eq!(n, out.len());
    // The slice writer must produce the same bytes.
    let mut slab = vec![0u8; n + 16];
    let m = writer
        .write_into::<R, _>(&mut slab, |_| Ok(()))
        .expect("encode empty");
    assert!(m <= n);
    out
}

fn fill_http_request(mut r: s::http_request::Builder<'_>) {
    r.set_method("POST");
    r.set_authority("api.example.com");
    r.set_path("/v1/items");
    r.set_query("a=1&b=2");
    r.set_client_address("192.0.2.7:51000");
    r.set_scheme("https");
    r.set_protocol("HTTP/2");
    let mut headers = r.init_headers(3);
    for (i, (n, v)) in [
        ("content-type", "application/json"),
        ("x-a", "1"),
        ("x-a", "\u{0}\u{ff}"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut h = headers.reborrow().get(i as u32);
        h.set_name(n.as_bytes());
        h.set_value(v.as_bytes());
    }
}

fn check_http_request(r: s::http_request::Reader<'_>) {
    assert_eq!(r.get_method().unwrap().to_str().unwrap(), "POST");
    assert_eq!(r.get_path().unwrap().to_str().unwrap(), "/v1/items");
    assert_eq!(r.get_query().unwrap().to_str().unwrap(), "a=1&b=2");
    let headers = r.get_headers().unwrap();
    assert_eq!(headers.len(), 3);
    assert_eq!(headers.get(0).get_name().unwrap(), b"content-type");
    assert_eq!(
        headers.get(2).get_value().unwrap(),
        "\u{0}\u{ff}".as_bytes()
    );
}

#[test]
fn request_every_member() {
    type F = Box<dyn Fn(request::Builder<'_>)>;
    let cases: Vec<(u16, F)> = vec![
        (
            1,
            Box::new(|r| {
                let mut h = r.init_hello();
                h.set_client_name("t");
                h.init_versions(2).set(0, 1);
            }),
        ),
        (
            2,
            Box::new(|r| {
                let mut d = r.init_decide();
                d.set_route_id("default");
                let mut req = d.init_phase().init_request();
                fill_http_request(req.reborrow().init_request());
                let mut body = req.init_body();
                body.set_data(b"{\"x\":1}");
                body.set_is_last(true);
            }),
        ),
        (
            3,
            Box::new(|r| {
                let mut t = r.init_task();
                t.set_agent_id("a");
                t.set_payload(b"p");
                t.set_deadline_ms(5);
            }),
        ),
        (
            4,
            Box::new(|r| {
                let mut m = r.init_memory();
                m.set_namespace("ns");
                let mut st = m.init_store();
                st.set_key(b"k");
                st.set_value(b"v");
                st.set_ttl_ms(9);
            }),
        ),
        (
            5,
            Box::new(|r| {
                let mut sp = r.init_control().init_spawn();
                sp.set_agent_id("waf");
                sp.init_command(1).set(0, "waf-agent");
            }),
        ),
        (6, Box::new(|r| r.init_status().set_interval_ms(100))),
        (7, Box::new(|mut r| r.set_echo(b"ping"))),
    ];
    for (tag, fill) in cases {
        let bytes = encode::<request::Owned>(|mut b| {
            b.set_correlation_id(42);
            fill(b);
            Ok(())
        });
        let msg = Message::from_frame_bytes(&bytes).unwrap();
        msg.validate().unwrap();
        let root = msg.root::<request::Owned>().unwrap();
        assert_eq!(root.get_correlation_id(), 42);
        use request::Which;
        match root.which().unwrap() {
            Which::Hello(h) => {
                assert_eq!(tag, 1);
                assert_eq!(h.unwrap().get_versions().unwrap().get(0), 1);
            }
            Which::Decide(d) => {
                assert_eq!(tag, 2);
                let d = d.unwrap();
                match d.get_phase().which().unwrap() {
                    decide::phase::Request(r) => {
                        let r = r.unwrap();
                        check_http_request(r.get_request().unwrap());
                        assert!(r.get_body().unwrap().get_is_last());
                    }
                    _ => panic!("wrong phase"),
                }
            }
            Which::Task(t) => {
                assert_eq!(tag, 3);
                assert_eq!(t.unwrap().get_deadline_ms(), 5);
            }
            Which::Memory(m) => {
                assert_eq!(tag, 4);
                match m.unwrap().which().unwrap() {
                    memory::Store(st) => assert_eq!(st.unwrap().get_ttl_ms(), 9),
                    _ => panic!("wrong memory op"),
                }
            }
            Which::Control(c) => {
                assert_eq!(tag, 5);
                match c.unwrap().which().unwrap() {
                    control::Spawn(sp) => {
                        assert_eq!(sp.unwrap().get_agent_id().unwrap().to_str().unwrap(), "waf")
                    }
                    _ => panic!("wrong control op"),
                }
            }
            Which::Status(st) => {
                assert_eq!(tag, 6);
                assert_eq!(st.unwrap().get_interval_ms(), 100);
            }
            Which::Echo(e) => {
                assert_eq!(tag, 7);
                assert_eq!(e.unwrap(), b"ping");
            }
        }
    }
}

#[test]
fn decide_phases_all_round_trip() {
    for phase in 0..7u8 {
        let bytes = encode::<request::Owned>(|b| {
            let p = b.init_decide().init_phase();
            match phase {
                0 => fill_http_request(p.init_request().init_request()),
                1 => p.init_request_body().set_chunk_index(3),
                2 => p.init_response().init_response().set_status(201),
                3 => p.init_response_body().set_is_last(true),
                4 => p.init_websocket_frame().set_opcode(2),
                5 => p.init_guardrail().set_kind(s::GuardrailKind::Pii),
                _ => p.init_complete().set_status(204),
            }
            Ok(())
        });
        let msg = Message::from_frame_bytes(&bytes).unwrap();
        let request::Which::Decide(d) = msg.root::<request::Owned>().unwrap().which().unwrap()
        else {
            panic!("not a decide")
        };
        use decide::phase::Which as P;
        let got = match d.unwrap().get_phase().which().unwrap() {
            P::Request(r) => {
                check_http_request(r.unwrap().get_request().unwrap());
                0
            }
            P::RequestBody(b) => {
                assert_eq!(b.unwrap().get_chunk_index(), 3);
                1
            }
            P::Response(r) => {
                assert_eq!(r.unwrap().get_response().unwrap().get_status(), 201);
                2
            }
            P::ResponseBody(b) => {
                assert!(b.unwrap().get_is_last());
                3
            }
            P::WebsocketFrame(f) => {
                assert_eq!(f.unwrap().get_opcode(), 2);
                4
            }
            P::Guardrail(g) => {
                assert_eq!(g.unwrap().get_kind().unwrap(), s::GuardrailKind::Pii);
                5
            }
            P::Complete(c) => {
                assert_eq!(c.unwrap().get_status(), 204);
                6
            }
        };
        assert_eq!(got, phase);
    }
}

#[test]
fn response_every_member() {
    for tag in 1..=8u16 {
        let bytes = encode::<response::Owned>(|mut b| {
            b.set_correlation_id(7);
            match tag {
                1 => b.init_hello_ack().set_version(1),
                2 => {
                    let mut d = b.init_decision();
                    let mut blk = d.reborrow().init_verdict().init_block();
                    blk.set_status(403);
                    blk.set_body(b"no");
                    let mut ops = d.reborrow().init_request_headers(3);
                    let mut h = ops.reborrow().get(0).init_add();
                    h.set_name(b"x-a");
                    h.set_value(b"1");
                    ops.reborrow().get(1).init_set().set_name(b"x-b");
                    ops.reborrow().get(2).set_remove(b"x-c");
                    let mut audit = d.reborrow().init_audit();
                    audit.reborrow().init_rule_ids(1).set(0, "942100");
                    audit.reborrow().init_confidence().set_value(0.9);
                    let mut t = d.init_timings(1).get(0);
                    t.set_agent_id("waf");
                    t.set_outcome(s::AgentOutcome::Blocked);
                    t.set_elapsed_us(12);
                }
                3 => b.init_task_result().set_elapsed_us(3),
                4 => b.init_memory_result().set_deleted(true),
                5 => {
                    let mut a = b.init_control_result().init_agents(1).get(0);
                    a.set_health(s::AgentHealth::Draining);
                }
                6 => b.init_status_event().set_shard(1),
                7 => b.set_echo(b"pong"),
                _ => {
                    let mut e = b.init_error();
                    e.set_code(s::ErrorCode::NotReplaySafe);
                    e.set_message("resend after the handshake");
                }
            }
            Ok(())
        });
        let msg = Message::from_frame_bytes(&bytes).unwrap();
        msg.validate().unwrap();
        let root = msg.root::<response::Owned>().unwrap();
        assert_eq!(root.get_correlation_id(), 7);
        use response::Which;
        match root.which().unwrap() {
            Which::HelloAck(h) => assert_eq!((tag, h.unwrap().get_version()), (1, 1)),
            Which::Decision(d) => {
                assert_eq!(tag, 2);
                let d = d.unwrap();
                match d.get_verdict().unwrap().which().unwrap() {
                    verdict::Block(b) => {
                        let b = b.unwrap();
                        assert_eq!(b.get_status(), 403);
                        assert_eq!(b.get_body().unwrap(), b"no");
                    }
                    _ => panic!("wrong verdict"),
                }
                let ops = d.get_request_headers().unwrap();
                assert!(matches!(ops.get(0).which().unwrap(), header_op::Add(_)));
                assert!(matches!(ops.get(1).which().unwrap(), header_op::Set(_)));
                match ops.get(2).which().unwrap() {
                    header_op::Remove(r) => assert_eq!(r.unwrap(), b"x-c"),
                    _ => panic!("wrong op"),
                }
                let audit = d.get_audit().unwrap();
                assert_eq!(audit.get_rule_ids().unwrap().get(0).unwrap(), "942100");
                match audit.get_confidence().which().unwrap() {
                    s::audit::confidence::Value(v) => assert!((v - 0.9).abs() < 1e-6),
                    _ => panic!("confidence lost"),
                }
                let t = d.get_timings().unwrap().get(0);
                assert_eq!(t.get_outcome().unwrap(), s::AgentOutcome::Blocked);
            }
            Which::TaskResult(t) => assert_eq!((tag, t.unwrap().get_elapsed_us()), (3, 3)),
            Which::MemoryResult(m) => {
                assert_eq!(tag, 4);
                assert!(matches!(
                    m.unwrap().which().unwrap(),
                    memory_result::Deleted(true)
                ));
            }
            Which::ControlResult(c) => {
                assert_eq!(tag, 5);
                let control_result::Agents(a) = c.unwrap().which().unwrap() else {
                    panic!("wrong control result")
                };
                assert_eq!(
                    a.unwrap().get(0).get_health().unwrap(),
                    s::AgentHealth::Draining
                );
            }
            Which::StatusEvent(e) => assert_eq!((tag, e.unwrap().get_shard()), (6, 1)),
            Which::Echo(e) => assert_eq!((tag, e.unwrap()), (7, &b"pong"[..])),
            Which::Error(e) => {
                assert_eq!(tag, 8);
                assert_eq!(e.unwrap().get_code().unwrap(), s::ErrorCode::NotReplaySafe);
            }
        }
    }
}

#[test]
fn proxy_to_agent_every_member() {
    for tag in 1..=13u16 {
        let bytes = encode::<proxy_to_agent::Owned>(|mut b| {
            b.set_correlation_id(u64::from(tag));
            match tag {
                1 => {
                    let mut h = b.init_handshake();
                    h.reborrow().init_supported_versions(1).set(0, 2);
                    h.reborrow().init_encodings(2).set(1, s::Encoding::Json);
                    h.set_shard(1);
                }
                2 => {
                    let mut e = b.init_request_headers();
                    e.reborrow().init_metadata().set_client_ip(&[127, 0, 0, 1]);
                    fill_http_request(e.init_request());
                }
                3 => b.init_request_body_chunk().set_data(&[0u8; 1000]),
                4 => b.init_response_headers().init_response().set_status(500),
                5 => b.init_response_body_chunk().set_is_last(true),
                6 => b.init_websocket_frame().set_fin(true),
                7 => b.init_guardrail_inspect().set_content(b"ignore previous"),
                8 => b.init_request_complete().set_duration_us(77),
                9 => b.init_cancel().init_reason().set_blocked_by_agent("waf"),
                10 => b.init_configure().set_generation(3),
                11 => b.init_config_update_ack().set_accepted(true),
                12 => b.init_drain().set_deadline_ms(1000),
                _ => b.set_shutdown(()),
            }
            Ok(())
        });
        let msg = Message::from_frame_bytes(&bytes).unwrap();
        msg.validate().unwrap();
        let root = msg.root::<proxy_to_agent::Owned>().unwrap();
        assert_eq!(root.get_correlation_id(), u64::from(tag));
        use proxy_to_agent::Which as W;
        let got = match root.which().unwrap() {
            W::Handshake(h) => {
                let h = h.unwrap();
                assert_eq!(h.get_supported_versions().unwrap().get(0), 2);
                assert_eq!(
                    h.get_encodings().unwrap().get(1).unwrap(),
                    s::Encoding::Json
                );
                1
            }
            W::RequestHeaders(e) => {
                let e = e.unwrap();
                assert_eq!(
                    e.get_metadata().unwrap().get_client_ip().unwrap(),
                    [127, 0, 0, 1]
                );
                check_http_request(e.get_request().unwrap());
                2
            }
            W::RequestBodyChunk(c) => {
                assert_eq!(c.unwrap().get_data().unwrap().len(), 1000);
                3
            }
            W::ResponseHeaders(r) => {
                assert_eq!(r.unwrap().get_response().unwrap().get_status(), 500);
                4
            }
            W::ResponseBodyChunk(c) => {
                assert!(c.unwrap().get_is_last());
                5
            }
            W::WebsocketFrame(f) => {
                assert!(f.unwrap().get_fin());
                6
            }
            W::GuardrailInspect(g) => {
                assert_eq!(g.unwrap().get_content().unwrap(), b"ignore previous");
                7
            }
            W::RequestComplete(c) => {
                assert_eq!(c.unwrap().get_duration_us(), 77);
                8
            }
            W::Cancel(c) => {
                match c.unwrap().get_reason().unwrap().which().unwrap() {
                    cancel_reason::BlockedByAgent(a) => assert_eq!(a.unwrap(), "waf"),
                    _ => panic!("wrong reason"),
                }
                9
            }
            W::Configure(c) => {
                assert_eq!(c.unwrap().get_generation(), 3);
                10
            }
            W::ConfigUpdateAck(a) => {
                assert!(a.unwrap().get_accepted());
                11
            }
            W::Drain(d) => {
                assert_eq!(d.unwrap().get_deadline_ms(), 1000);
                12
            }
            W::Shutdown(()) => 13,
        };
        assert_eq!(got, tag);
    }
}

#[test]
fn agent_to_proxy_every_member() {
    for tag in 1..=7u16 {
        let bytes = encode::<agent_to_proxy::Owned>(|mut b| {
            b.set_correlation_id(9);
            match tag {
                1 => {
                    let mut c = b.init_handshake().init_accepted();
                    c.set_protocol_version(2);
                    c.set_agent_id("waf");
                    c.reborrow()
                        .init_supported_events(2)
                        .set(1, s::EventType::RequestBody);
                    c.reborrow().init_features().set_streaming_body(true);
                    c.reborrow().init_limits().set_max_body_bytes(1 << 20);
                    c.reborrow().init_health().set_report_interval_ms(1000);
                    c.init_interest().init_path_prefixes(1).set(0, "/api");
                }
                2 => {
                    let mut r = b.init_response();
                    r.reborrow()
                        .init_verdict()
                        .init_redirect()
                        .set_location("/login");
                    r.set_need_more(true);
                }
                3 => {
                    let mut h = b.init_health();
                    let mut d = h.reborrow().init_state().init_degraded();
                    d.set_timeout_multiplier(1.5);
                    d.init_disabled_features(1).set(0, "body");
                    h.init_load().set_in_flight(4);
                }
                4 => {
                    let mut m = b.init_metrics();
                    let mut c = m.reborrow().init_counters(1).get(0);
                    c.set_name("requests_total");
                    c.set_value(10);
                    let mut hist = m.init_histograms(1).get(0);
                    hist.set_count(2);
                    hist.init_buckets(1).get(0).set_le(0.005);
                }
                5 => {
                    let mut u = b.init_config_update();
                    u.set_request_id("r1");
                    let mut r = u.init_update().init_restart_required();
                    r.set_reason("new rules");
                    r.set_grace_period_ms(500);
                }
                6 => b
                    .init_flow_control()
                    .init_action()
                    .set_update_capacity(4096),
                _ => b.init_log().set_message("hello"),
            }
            Ok(())
        });
        let msg = Message::from_frame_bytes(&bytes).unwrap();
        msg.validate().unwrap();
        let root = msg.root::<agent_to_proxy::Owned>().unwrap();
        use agent_to_proxy::Which as W;
        let got = match root.which().unwrap() {
            W::Handshake(h) => {
                let handshake_response::Accepted(c) = h.unwrap().which().unwrap() else {
                    panic!("rejected")
                };
                let c = c.unwrap();
                assert_eq!(c.get_protocol_version(), 2);
                assert_eq!(
                    c.get_supported_events().unwrap().get(1).unwrap(),
                    s::EventType::RequestBody
                );
                assert!(c.get_features().unwrap().get_streaming_body());
                assert_eq!(
                    c.get_interest().unwrap().get_path_prefixes().unwrap().len(),
                    1
                );
                1
            }
            W::Response(r) => {
                let r = r.unwrap();
                assert!(r.get_need_more());
                assert!(matches!(
                    r.get_verdict().unwrap().which().unwrap(),
                    verdict::Redirect(_)
                ));
                2
            }
            W::Health(h) => {
                let h = h.unwrap();
                match h.get_state().which().unwrap() {
                    health_status::state::Degraded(d) => {
                        assert_eq!(d.unwrap().get_timeout_multiplier(), 1.5)
                    }
                    _ => panic!("wrong state"),
                }
                assert_eq!(h.get_load().unwrap().get_in_flight(), 4);
                // Defaults from the schema hold for unset fields.
                assert!(!h.has_resources());
                3
            }
            W::Metrics(m) => {
                let m = m.unwrap();
                assert_eq!(m.get_counters().unwrap().get(0).get_value(), 10);
                let hist = m.get_histograms().unwrap().get(0);
                assert_eq!(hist.get_buckets().unwrap().get(0).get_le(), 0.005);
                4
            }
            W::ConfigUpdate(u) => {
                let u = u.unwrap();
                match u.get_update().which().unwrap() {
                    config_update_request::update::RestartRequired(r) => {
                        assert_eq!(r.unwrap().get_grace_period_ms(), 500)
                    }
                    _ => panic!("wrong update"),
                }
                5
            }
            W::FlowControl(f) => {
                assert!(matches!(
                    f.unwrap().get_action().which().unwrap(),
                    flow_control_signal::action::UpdateCapacity(4096)
                ));
                6
            }
            W::Log(l) => {
                assert_eq!(l.unwrap().get_message().unwrap(), "hello");
                7
            }
        };
        assert_eq!(got, tag);
    }
}

#[test]
fn default_schema_values_hold() {
    let bytes = encode::<agent_to_proxy::Owned>(|b| {
        b.init_health().init_resources();
        Ok(())
    });
    let msg = Message::from_frame_bytes(&bytes).unwrap();
    let agent_to_proxy::Health(h) = msg
        .root::<agent_to_proxy::Owned>()
        .unwrap()
        .which()
        .unwrap()
    else {
        panic!("not health")
    };
    let r = h.unwrap().get_resources().unwrap();
    assert!(
        r.get_cpu_percent() < 0.0,
        "cpuPercent defaults to not-reported"
    );
}
