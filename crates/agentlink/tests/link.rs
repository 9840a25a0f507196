//! The link against a scripted agent: frames built with the schema, fed byte by byte and in
//! bulk, with virtual time.

use std::time::{Duration, Instant};

use turnstile_agentlink::{CancelWhy, Link, LinkError, LinkEvent, Pool};
use turnstile_wire::turnstile_capnp::{self as s, agent_to_proxy, proxy_to_agent, verdict};
use turnstile_wire::{FrameWriter, Message, split_frame};

fn agent_frame(fill: impl FnOnce(agent_to_proxy::Builder<'_>)) -> Vec<u8> {
    let mut w = FrameWriter::with_static_scratch();
    let mut out = Vec::new();
    w.write::<agent_to_proxy::Owned, _>(&mut out, |b| {
        fill(b);
        Ok(())
    })
    .unwrap();
    out
}

fn accept(events: &[s::EventType], cancellation: bool) -> Vec<u8> {
    agent_frame(|mut b| {
        let mut c = b.reborrow().init_handshake().init_accepted();
        c.set_protocol_version(2);
        c.set_agent_id("waf");
        let mut e = c.reborrow().init_supported_events(events.len() as u32);
        for (i, ev) in events.iter().enumerate() {
            e.set(i as u32, *ev);
        }
        c.reborrow().init_features().set_cancellation(cancellation);
        c.reborrow().init_limits().set_max_body_bytes(1024);
        let mut i = c.init_interest();
        i.reborrow().init_path_prefixes(1).set(0, "/api");
        i.init_methods(1).set(0, "post");
    })
}

/// Splits the link's output into (correlation id, member name) pairs.
fn sent(link: &mut Link) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let bytes = link.output().to_vec();
    link.consume_output(bytes.len());
    let mut at = 0;
    while let Some((frame, n)) = split_frame(&bytes[at..]).unwrap() {
        let msg = Message::parse(frame.kind, frame.payload).unwrap();
        let root = msg.root::<proxy_to_agent::Owned>().unwrap();
        let name = match root.which().unwrap() {
            proxy_to_agent::Handshake(_) => "handshake",
            proxy_to_agent::Configure(_) => "configure",
            proxy_to_agent::RequestHeaders(_) => "requestHeaders",
            proxy_to_agent::RequestBodyChunk(_) => "requestBodyChunk",
            proxy_to_agent::Cancel(_) => "cancel",
            proxy_to_agent::ConfigUpdateAck(_) => "configUpdateAck",
            _ => "other",
        };
        out.push((root.get_correlation_id(), name.to_string()));
        at += n;
    }
    out
}

fn ready_link(writer: &mut FrameWriter<'static>, cancellation: bool) -> Link {
    let now = Instant::now();
    let mut link = Link::new(now, "waf", 1, b"rules = 1", 7, writer);
    assert_eq!(sent(&mut link), vec![(0, "handshake".into())]);
    let mut ready = false;
    link.handle_data(
        &accept(&[s::EventType::RequestHeaders], cancellation),
        writer,
        |e| {
            ready |= matches!(e, LinkEvent::Ready);
        },
    )
    .unwrap();
    assert!(ready && link.is_ready());
    assert_eq!(sent(&mut link), vec![(0, "configure".into())]);
    link
}

fn reply(cid: u64, block: bool, need_more: bool) -> Vec<u8> {
    agent_frame(|mut b| {
        b.set_correlation_id(cid);
        let mut r = b.init_response();
        r.set_need_more(need_more);
        let v = r.init_verdict();
        if block {
            v.init_block().set_status(403);
        } else {
            let mut v = v;
            v.set_allow(());
        }
    })
}

#[test]
fn handshake_capabilities_and_configure() {
    let mut w = FrameWriter::with_static_scratch();
    let link = ready_link(&mut w, true);
    let caps = link.capabilities().unwrap();
    assert_eq!(caps.agent_id, "waf");
    assert!(caps.events.contains(s::EventType::RequestHeaders));
    assert!(!caps.events.contains(s::EventType::RequestBody));
    assert_eq!(caps.interest.path_prefixes, vec!["/api".to_string()]);
    assert_eq!(caps.interest.methods, vec!["POST".to_string()]);
    assert_eq!(caps.max_body_bytes, 1024);
}

#[test]
fn multiplexed_calls_answer_in_any_order() {
    let mut w = FrameWriter::with_static_scratch();
    let mut link = ready_link(&mut w, true);
    let mut cids = Vec::new();
    for user in 100..105u64 {
        cids.push(
            link.start_call(user, &mut w, |m| {
                m.init_request_headers().init_request().set_path("/x");
                Ok(())
            })
            .unwrap(),
        );
    }
    assert_eq!(link.calls_in_flight(), 5);
    assert_eq!(sent(&mut link).len(), 5);
    // Answers in reverse order, all in one read, split at an awkward boundary.
    let mut bytes = Vec::new();
    for &cid in cids.iter().rev() {
        bytes.extend(reply(cid, cid == cids[2], false));
    }
    let mut got = Vec::new();
    let (a, b) = bytes.split_at(bytes.len() / 2 + 3);
    for part in [a, b] {
        link.handle_data(part, &mut w, |e| {
            if let LinkEvent::Reply {
                user,
                response,
                last,
            } = e
            {
                let blocked = matches!(
                    response.get_verdict().unwrap().which().unwrap(),
                    verdict::Block(_)
                );
                got.push((user, blocked, last));
            }
        })
        .unwrap();
    }
    assert_eq!(
        got,
        vec![
            (104, false, true),
            (103, false, true),
            (102, true, true),
            (101, false, true),
            (100, false, true)
        ]
    );
    assert_eq!(link.calls_in_flight(), 0);
}

#[test]
fn byte_by_byte_input_is_reassembled() {
    let mut w = FrameWriter::with_static_scratch();
    let mut link = ready_link(&mut w, true);
    let cid = link
        .start_call(1, &mut w, |m| {
            m.init_request_headers();
            Ok(())
        })
        .unwrap();
    let bytes = reply(cid, false, false);
    let mut n = 0;
    for b in &bytes {
        link.handle_data(std::slice::from_ref(b), &mut w, |e| {
            if matches!(e, LinkEvent::Reply { .. }) {
                n += 1;
            }
        })
        .unwrap();
    }
    assert_eq!(n, 1);
}

#[test]
fn need_more_keeps_the_call_open() {
    let mut w = FrameWriter::with_static_scratch();
    let mut link = ready_link(&mut w, true);
    let cid = link
        .start_call(9, &mut w, |m| {
            m.init_request_headers();
            Ok(())
        })
        .unwrap();
    let mut lasts = Vec::new();
    link.handle_data(&reply(cid, false, true), &mut w, |e| {
        if let LinkEvent::Reply { last, .. } = e {
            lasts.push(last)
        }
    })
    .unwrap();
    assert_eq!(link.calls_in_flight(), 1);
    link.send_on_call(cid, &mut w, |m| {
        m.init_request_body_chunk().set_is_last(true);
        Ok(())
    })
    .unwrap();
    link.handle_data(&reply(cid, false, false), &mut w, |e| {
        if let LinkEvent::Reply { last, .. } = e {
            lasts.push(last)
        }
    })
    .unwrap();
    assert_eq!(lasts, vec![false, true]);
}

#[test]
fn cancel_sends_cancel_and_drops_late_reply() {
    let mut w = FrameWriter::with_static_scratch();
    let mut link = ready_link(&mut w, true);
    let cid = link
        .start_call(1, &mut w, |m| {
            m.init_request_headers();
            Ok(())
        })
        .unwrap();
    sent(&mut link);
    link.cancel(cid, CancelWhy::BlockedByAgent("auth"), 0, &mut w);
    assert_eq!(sent(&mut link), vec![(cid, "cancel".into())]);
    let mut replies = 0;
    link.handle_data(&reply(cid, false, false), &mut w, |e| {
        if matches!(e, LinkEvent::Reply { .. }) {
            replies += 1;
        }
    })
    .unwrap();
    assert_eq!(replies, 0);
    assert_eq!(link.stale_replies, 1);
}

#[test]
fn agents_without_cancellation_get_no_cancel_frames() {
    let mut w = FrameWriter::with_static_scratch();
    let mut link = ready_link(&mut w, false);
    let cid = link
        .start_call(1, &mut w, |m| {
            m.init_request_headers();
            Ok(())
        })
        .unwrap();
    sent(&mut link);
    link.cancel(cid, CancelWhy::Timeout, 0, &mut w);
    assert!(sent(&mut link).is_empty());
}

#[test]
fn protocol_errors_close_the_link() {
    let mut w = FrameWriter::with_static_scratch();
    // A response before the handshake.
    let mut link = Link::new(Instant::now(), "a", 0, b"", 1, &mut w);
    let err = link
        .handle_data(&reply(1, false, false), &mut w, |_| {})
        .unwrap_err();
    assert!(matches!(err, LinkError::Protocol(_)), "{err}");
    // Garbage.
    let mut link = ready_link(&mut w, true);
    let err = link.handle_data(&[0xff; 64], &mut w, |_| {}).unwrap_err();
    assert!(matches!(err, LinkError::Wire(_)), "{err}");
    // An oversized frame header is refused before its payload arrives.
    let mut link = ready_link(&mut w, true);
    let mut huge = (64u32 << 20).to_le_bytes().to_vec();
    huge.push(4);
    let err = link.handle_data(&huge, &mut w, |_| {}).unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
    // Rejected handshake.
    let mut link = Link::new(Instant::now(), "a", 0, b"", 1, &mut w);
    let rejected = agent_frame(|b| {
        b.init_handshake().set_rejected("no common version");
    });
    let err = link.handle_data(&rejected, &mut w, |_| {}).unwrap_err();
    assert!(err.to_string().contains("no common version"));
    // A wrong protocol version.
    let mut link = Link::new(Instant::now(), "a", 0, b"", 1, &mut w);
    let v1 = agent_frame(|b| {
        b.init_handshake().init_accepted().set_protocol_version(1);
    });
    assert!(link.handle_data(&v1, &mut w, |_| {}).is_err());
}

#[test]
fn handshake_timeout() {
    let mut w = FrameWriter::with_static_scratch();
    let t0 = Instant::now();
    let mut link = Link::new(t0, "a", 0, b"", 1, &mut w);
    assert!(link.handle_timeout(t0 + Duration::from_millis(100)).is_ok());
    let deadline = link.poll_timeout().unwrap();
    assert!(matches!(
        link.handle_timeout(deadline),
        Err(LinkError::HandshakeTimeout(_))
    ));
}

#[test]
fn config_update_is_acknowledged_and_reload_resends_configure() {
    let mut w = FrameWriter::with_static_scratch();
    let mut link = ready_link(&mut w, true);
    let update = agent_frame(|b| {
        let mut u = b.init_config_update();
        u.set_request_id("r1");
        u.init_update().set_request_reload(());
    });
    let mut seen = 0;
    link.handle_data(&update, &mut w, |e| {
        if matches!(e, LinkEvent::ConfigUpdate(_)) {
            seen += 1;
        }
    })
    .unwrap();
    assert_eq!(seen, 1);
    assert_eq!(
        sent(&mut link),
        vec![(0, "configUpdateAck".into()), (0, "configure".into())]
    );
}

#[test]
fn flow_control_pauses_the_connection() {
    let mut w = FrameWriter::with_static_scratch();
    let mut link = ready_link(&mut w, true);
    let pause = agent_frame(|b| b.init_flow_control().init_action().set_pause(()));
    let mut paused = None;
    link.handle_data(&pause, &mut w, |e| {
        if let LinkEvent::Flow { user, pause, .. } = e {
            paused = Some((user, pause));
        }
    })
    .unwrap();
    assert_eq!(paused, Some((None, Some(true))));
    assert!(link.is_paused());
    let mut pool = Pool::new(1, 1);
    pool.attach(0, link);
    assert_eq!(pool.pick(), None, "a paused link takes no calls");
}

#[test]
fn pool_backoff_grows_and_picks_least_loaded() {
    let mut w = FrameWriter::with_static_scratch();
    let t0 = Instant::now();
    let mut pool = Pool::new(2, 42);
    assert_eq!(pool.poll_connect(t0), Some(0));
    pool.attach(0, ready_link(&mut w, true));
    assert_eq!(pool.poll_connect(t0), Some(1));
    pool.attach(1, ready_link(&mut w, true));
    assert_eq!(pool.poll_connect(t0), None);
    // Load slot 0: the pick moves to slot 1.
    pool.link(0)
        .unwrap()
        .start_call(1, &mut w, |m| {
            m.init_request_headers();
            Ok(())
        })
        .unwrap();
    assert_eq!(pool.pick(), Some(1));
    // Slot 0 dies: its call fails, reconnect waits with growing backoff.
    assert_eq!(pool.detach(t0, 0), vec![1]);
    let first = pool.poll_timeout().unwrap() - t0;
    assert!(
        first >= Duration::from_millis(50) && first <= Duration::from_millis(75),
        "{first:?}"
    );
    assert_eq!(pool.poll_connect(t0), None);
    let t1 = t0 + first;
    assert_eq!(pool.poll_connect(t1), Some(0));
    pool.attach(0, Link::new(t1, "waf", 0, b"", 1, &mut w));
    pool.detach(t1, 0);
    let second = pool.poll_timeout().unwrap() - t1;
    assert!(second >= Duration::from_millis(100), "{second:?}");
}
