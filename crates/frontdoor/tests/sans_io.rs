//! The front door driven with virtual time against quinn-proto's client: no sockets.

mod pair;

use std::time::{Duration, Instant};

use pair::{Pair, parse_response, server_cfg};
use turnstile_frontdoor::{
    BuiltinHandler, Reply, RequestHandler, RequestId, RequestInfo, ResponseSink,
};
use turnstile_wire::turnstile_capnp::request;

#[test]
fn echo_round_trip() {
    let mut h = BuiltinHandler::default();
    let mut p = Pair::new(server_cfg());
    p.connect(&mut h);
    assert_eq!(p.server.connections(), 1);
    let frame = p.echo_frame(7, b"ping");
    let id = p.send(&frame, true);
    p.drive(&mut h);
    let (bytes, fin) = p.recv(id);
    assert!(fin);
    assert_eq!(parse_response(&bytes), (7, "echo:ping".to_string()));
    assert_eq!(p.server.streams_in_flight(), 0);
}

#[test]
fn thousand_concurrent_streams() {
    let mut h = BuiltinHandler::default();
    let mut p = Pair::new(server_cfg());
    p.connect(&mut h);
    let mut ids = Vec::new();
    for i in 0..1000u64 {
        let frame = p.echo_frame(i, format!("n{i}").as_bytes());
        ids.push((i, p.send(&frame, true)));
    }
    p.drive(&mut h);
    for (i, id) in ids {
        let (bytes, fin) = p.recv(id);
        assert!(fin, "stream {i} unfinished");
        assert_eq!(parse_response(&bytes), (i, format!("echo:n{i}")));
    }
    assert_eq!(h.answered, 1000);
}

#[test]
fn frame_split_across_packets_and_body_after_fin() {
    let mut h = BuiltinHandler::default();
    let mut p = Pair::new(server_cfg());
    p.connect(&mut h);
    let payload = vec![b'x'; 20_000];
    let frame = p.echo_frame(1, &payload);
    let id = p.send(&frame, true);
    p.drive(&mut h);
    let (bytes, fin) = p.recv(id);
    assert!(fin);
    let (cid, what) = parse_response(&bytes);
    assert_eq!(cid, 1);
    assert_eq!(what.len(), "echo:".len() + 20_000);
}

#[test]
fn oversized_request_gets_too_large() {
    let mut h = BuiltinHandler::default();
    let mut p = Pair::new(server_cfg()); // 64 KiB limit
    p.connect(&mut h);
    let payload = vec![0u8; 100_000];
    let frame = p.echo_frame(1, &payload);
    let id = p.send(&frame, true);
    p.drive(&mut h);
    let (bytes, fin) = p.recv(id);
    assert!(fin);
    let (_, what) = parse_response(&bytes);
    assert!(what.starts_with("error:TooLarge"), "{what}");
    // The connection still serves others.
    let frame = p.echo_frame(2, b"after");
    let id = p.send(&frame, true);
    p.drive(&mut h);
    assert_eq!(parse_response(&p.recv(id).0), (2, "echo:after".into()));
}

#[test]
fn malformed_frames_get_errors() {
    let mut h = BuiltinHandler::default();
    let mut p = Pair::new(server_cfg());
    p.connect(&mut h);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "error:MalformedFrame:empty request"),
        (vec![1, 0, 0], "error:MalformedFrame:truncated"),
        (
            vec![0, 0, 0, 0, 9],
            "error:MalformedFrame:unknown frame kind 9",
        ),
        (vec![255, 255, 255, 255, 1], "error:TooLarge"),
        (
            vec![8, 0, 0, 0, 1, 0, 0, 0, 0, 9, 9, 9, 9],
            "error:MalformedFrame",
        ),
        (
            vec![
                16, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            "error:MalformedFrame:unexpected frame kind",
        ),
    ];
    for (bytes, want) in cases {
        let id = p.send(&bytes, true);
        p.drive(&mut h);
        let (resp, fin) = p.recv(id);
        assert!(fin, "{want}");
        let (_, what) = parse_response(&resp);
        assert!(what.starts_with(want), "got {what}, want {want}");
    }
    assert_eq!(h.answered, 0);
}

/// A handler that never answers by itself: requests stay pending until completed or cancelled.
#[derive(Default)]
struct Parked {
    pending: Vec<RequestId>,
    cancelled: Vec<RequestId>,
}

impl RequestHandler for Parked {
    fn on_request(
        &mut self,
        _now: Instant,
        id: RequestId,
        _info: &RequestInfo,
        _request: request::Reader<'_>,
        _payload: &[u8],
        _sink: &mut ResponseSink<'_>,
    ) -> Result<Reply, turnstile_wire::WireError> {
        self.pending.push(id);
        Ok(Reply::Pending)
    }
    fn on_cancel(&mut self, _now: Instant, id: RequestId) {
        self.cancelled.push(id);
    }
}

#[test]
fn stream_reset_cancels_pending_request() {
    let mut h = Parked::default();
    let mut p = Pair::new(server_cfg());
    p.connect(&mut h);
    let frame = p.echo_frame(1, b"slow");
    let id = p.send(&frame, true);
    let frame = p.echo_frame(2, b"kept");
    let id2 = p.send(&frame, true);
    p.drive(&mut h);
    assert_eq!(h.pending.len(), 2);
    p.client.send_stream(id).reset(0u32.into()).unwrap();
    let _ = p.client.recv_stream(id).stop(0u32.into());
    p.drive(&mut h);
    assert_eq!(h.cancelled, vec![h.pending[0]]);
    // The other request completes normally.
    let other = h.pending[1];
    let now = p.now;
    let mut h2 = Parked::default();
    assert!(p.server.complete(
        now,
        other,
        |mut r| {
            r.set_correlation_id(2);
            r.set_echo(b"late");
            Ok(())
        },
        &mut h2
    ));
    p.drive(&mut h2);
    assert_eq!(parse_response(&p.recv(id2).0), (2, "echo:late".into()));
    // Completing the cancelled one is refused.
    assert!(!p.server.complete(now, h.pending[0], |_| Ok(()), &mut h2));
}

#[test]
fn connection_close_cancels_everything() {
    let mut h = Parked::default();
    let mut p = Pair::new(server_cfg());
    p.connect(&mut h);
    for i in 0..5 {
        let f = p.echo_frame(i, b"x");
        p.send(&f, true);
    }
    p.drive(&mut h);
    assert_eq!(h.pending.len(), 5);
    let now = p.now;
    p.client.close(now, 0u32.into(), bytes::Bytes::new());
    p.drive(&mut h);
    p.advance(Duration::from_secs(5), &mut h);
    assert_eq!(h.cancelled.len(), 5);
    assert_eq!(p.server.connections(), 0, "drained connection forgotten");
}

#[test]
fn idle_timeout_closes() {
    let mut h = BuiltinHandler::default();
    let mut p = Pair::new(server_cfg());
    p.connect(&mut h);
    for _ in 0..10 {
        p.advance(Duration::from_secs(10), &mut h);
    }
    assert!(p.client.is_closed() || p.client.is_drained());
    assert_eq!(p.server.connections(), 0);
}

#[test]
fn draining_refuses_new_connections() {
    let mut h = BuiltinHandler::default();
    let mut p = Pair::new(server_cfg());
    p.connect(&mut h);
    p.server.begin_drain();
    // A second client.
    let (ch2, mut c2) = p
        .client_ep
        .connect(
            p.now,
            p.client_config.clone(),
            pair::SERVER.parse().unwrap(),
            "localhost",
        )
        .unwrap();
    let mut buf = Vec::new();
    let t = c2.poll_transmit(p.now, 1, &mut buf).unwrap();
    p.server.handle_datagram(
        p.now,
        "127.0.0.1:50001".parse().unwrap(),
        None,
        None,
        bytes::BytesMut::from(&buf[..t.size]),
        &mut h,
    );
    let _ = ch2;
    assert_eq!(p.server.stats().connections_refused, 1);
    // The existing connection stays open, but new requests on it are refused with a typed
    // error telling the client to go elsewhere.
    let f = p.echo_frame(3, b"still");
    let id = p.send(&f, true);
    p.drive(&mut h);
    let (cid, what) = parse_response(&p.recv(id).0);
    assert_eq!(cid, 3);
    assert!(what.starts_with("error:ShuttingDown"), "{what}");
}

#[test]
fn non_replay_safe_in_handshake_refused_and_builtins_answer() {
    // Not 0-RTT here (the handshake is complete), so task is answered as not implemented.
    let mut h = BuiltinHandler::default();
    let mut p = Pair::new(server_cfg());
    p.connect(&mut h);
    let mut out = Vec::new();
    p.writer
        .write::<request::Owned, _>(&mut out, |r| {
            r.init_task().set_agent_id("x");
            Ok(())
        })
        .unwrap();
    let id = p.send(&out, true);
    p.drive(&mut h);
    assert!(
        parse_response(&p.recv(id).0)
            .1
            .starts_with("error:NotImplemented")
    );
}

#[test]
fn short_header_for_other_shard_is_steered() {
    let h = BuiltinHandler::default();
    let _ = h;
    let p = Pair::new(server_cfg());
    let mut pkt = vec![0x40u8, 1];
    pkt.extend_from_slice(&[0; 30]);
    assert_eq!(p.server.steer(&pkt), turnstile_frontdoor::Steer::Shard(1));
    pkt[1] = 0;
    assert_eq!(p.server.steer(&pkt), turnstile_frontdoor::Steer::Local);
}

#[test]
fn retry_demanded_above_the_initial_rate_and_the_handshake_still_completes() {
    let mut h = BuiltinHandler::default();
    let mut cfg = server_cfg();
    cfg.retry_above_initials_per_sec = 0; // every new client must validate its address
    let mut p = Pair::new(cfg);
    p.connect(&mut h);
    assert_eq!(p.server.stats().retries_sent, 1);
    assert_eq!(p.server.connections(), 1);
    let f = p.echo_frame(1, b"after retry");
    let id = p.send(&f, true);
    p.drive(&mut h);
    assert_eq!(
        parse_response(&p.recv(id).0),
        (1, "echo:after retry".into())
    );
}

#[test]
fn connections_beyond_the_limit_are_refused() {
    let mut h = BuiltinHandler::default();
    let mut cfg = server_cfg();
    cfg.max_connections = 1;
    let mut p = Pair::new(cfg);
    p.connect(&mut h);
    let (_ch2, mut c2) = p
        .client_ep
        .connect(
            p.now,
            p.client_config.clone(),
            pair::SERVER.parse().unwrap(),
            "localhost",
        )
        .unwrap();
    let mut buf = Vec::new();
    let t = c2.poll_transmit(p.now, 1, &mut buf).unwrap();
    p.server.handle_datagram(
        p.now,
        "127.0.0.1:50002".parse().unwrap(),
        None,
        None,
        bytes::BytesMut::from(&buf[..t.size]),
        &mut h,
    );
    assert_eq!(p.server.stats().connections_refused, 1);
    // The refusal is a real CONNECTION_REFUSED close sent back to the second client.
    let mut out = Vec::new();
    let t = p
        .server
        .poll_transmit(p.now, &mut out)
        .expect("refusal datagram");
    assert!(t.size > 0);
    assert_eq!(p.server.connections(), 1);
}
