//! The real binary over loopback, driven by quinn's high-level client (an independent QUIC
//! implementation). Every wait is bounded; no assertion depends on timing beyond generous
//! deadlines.

// Each test holds `common::serial()` for its whole run, across awaits, on purpose: it keeps the
// servers of different tests from competing for the machine's two cores.
#![allow(clippy::await_holding_lock)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Reply, Server, call, client_endpoint, echo, parse, request_frame};

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_echo_hello_status() {
    let _serial = common::serial();
    let server = Server::start("", "");
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    assert_eq!(
        conn.handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol,
        Some(b"turnstile/1".to_vec())
    );
    let got = parse(&call(&conn, &echo(7, b"ping")).await.unwrap());
    assert_eq!(got, Reply::Echo(7, b"ping".to_vec()));
    let hello = request_frame(|mut r| {
        r.set_correlation_id(1);
        r.init_hello().init_versions(1).set(0, 1);
    });
    assert_eq!(
        parse(&call(&conn, &hello).await.unwrap()),
        Reply::HelloAck(1, 4 * 1024 * 1024, 1024)
    );
    let status = request_frame(|r| {
        r.init_status();
    });
    assert!(matches!(
        parse(&call(&conn, &status).await.unwrap()),
        Reply::Status { shard: 0 | 1 }
    ));
    let decide = request_frame(|mut r| {
        r.set_correlation_id(9);
        let mut req = r.init_decide().init_phase().init_request().init_request();
        req.set_method("GET");
        req.set_path("/");
    });
    assert_eq!(
        parse(&call(&conn, &decide).await.unwrap()),
        Reply::Decision(9)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_streams_on_one_connection() {
    let _serial = common::serial();
    let server = Server::start("", "");
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..1000u64 {
        let conn = conn.clone();
        set.spawn(async move {
            let payload = format!("req-{i}");
            let got = call(&conn, &echo(i, payload.as_bytes())).await.unwrap();
            assert_eq!(parse(&got), Reply::Echo(i, payload.into_bytes()));
        });
    }
    let mut done = 0;
    while let Some(r) = tokio::time::timeout(T, set.join_next()).await.unwrap() {
        r.unwrap();
        done += 1;
    }
    assert_eq!(done, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_connections_over_two_shards() {
    let _serial = common::serial();
    let server = Server::start("", "");
    let mut set = tokio::task::JoinSet::new();
    let config = server.client_config();
    let addr = server.addr;
    for i in 0..100u64 {
        let config = config.clone();
        set.spawn(async move {
            // One endpoint (one UDP port) per connection, so SO_REUSEPORT spreads them.
            let ep = client_endpoint();
            let conn = ep
                .connect_with(config, addr, "localhost")
                .unwrap()
                .await
                .unwrap();
            assert_eq!(
                parse(&call(&conn, &echo(i, b"x")).await.unwrap()),
                Reply::Echo(i, b"x".to_vec())
            );
            let status = request_frame(|r| {
                r.init_status();
            });
            let Reply::Status { shard } = parse(&call(&conn, &status).await.unwrap()) else {
                panic!("no status")
            };
            conn.close(0u32.into(), b"done");
            ep.wait_idle().await;
            shard
        });
    }
    let mut shards = BTreeSet::new();
    let mut n = 0;
    while let Some(r) = tokio::time::timeout(T, set.join_next()).await.unwrap() {
        shards.insert(r.unwrap());
        n += 1;
    }
    assert_eq!(n, 100);
    assert_eq!(
        shards,
        BTreeSet::from([0, 1]),
        "connections land on both shards"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_rtt_resumes_on_the_other_shard_and_refuses_unsafe_requests() {
    let _serial = common::serial();
    let server = Server::start("", "");
    let config = server.client_config(); // one rustls config: one session store
    let status = request_frame(|r| {
        r.init_status();
    });
    let first_shard = {
        let ep = client_endpoint();
        let conn = ep
            .connect_with(config.clone(), server.addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        let Reply::Status { shard } = parse(&call(&conn, &status).await.unwrap()) else {
            panic!("no status")
        };
        // Give the session tickets time to arrive before closing.
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.close(0u32.into(), b"");
        ep.wait_idle().await;
        shard
    };
    // A request written into the 0-RTT flight may still reach the server after the handshake
    // if the client's task is scheduled late: then it is ordinary 1-RTT data and rightly not
    // refused. So each attempt accepts either answer, and the test requires both facts to be
    // seen across attempts: a refusal in 0-RTT, and a resumption on the other shard.
    let mut landed_elsewhere = false;
    let mut refused_in_0rtt = false;
    for attempt in 0..40 {
        let ep = client_endpoint();
        let connecting = ep
            .connect_with(config.clone(), server.addr, "localhost")
            .unwrap();
        let (conn, accepted) = match connecting.into_0rtt() {
            Ok(pair) => pair,
            Err(_) => panic!("attempt {attempt}: no session ticket for 0-RTT"),
        };
        let task = request_frame(|mut r| {
            r.set_correlation_id(5);
            r.init_task().set_agent_id("x");
        });
        let (task_reply, shard_reply) = tokio::join!(call(&conn, &task), call(&conn, &status));
        assert!(accepted.await, "server accepted 0-RTT");
        let Reply::Status { shard } = parse(&shard_reply.unwrap()) else {
            panic!("no status")
        };
        match parse(&task_reply.unwrap()) {
            Reply::Error(5, code, msg) if code == "NotReplaySafe" => {
                assert!(msg.contains("resend"), "{msg}");
                refused_in_0rtt = true;
            }
            // Arrived after the handshake: answered like any 1-RTT task.
            Reply::Error(5, code, _) if code == "NotImplemented" => {}
            other => panic!("unexpected answer to a task: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.close(0u32.into(), b"");
        ep.wait_idle().await;
        if shard != first_shard {
            landed_elsewhere = true;
        }
        if landed_elsewhere && refused_in_0rtt {
            break;
        }
    }
    assert!(refused_in_0rtt, "no task was refused in 0-RTT in 40 tries");
    assert!(
        landed_elsewhere,
        "no 0-RTT connection landed on the other shard in 40 tries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reset_leaves_the_connection_serving() {
    let _serial = common::serial();
    let server = Server::start("", "");
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    for _ in 0..20 {
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let frame = echo(1, &[7u8; 4000]);
        send.write_all(&frame[..100]).await.unwrap();
        send.reset(5u32.into()).unwrap();
    }
    assert_eq!(
        parse(&call(&conn, &echo(2, b"ok")).await.unwrap()),
        Reply::Echo(2, b"ok".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_times_out() {
    let _serial = common::serial();
    let server = Server::start("", "[quic]\nidle_timeout_ms = 500\nkeep_alive_ms = 0\n");
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let err = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("closed by the idle timeout");
    assert!(matches!(err, quinn::ConnectionError::TimedOut), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_gets_an_error_response() {
    let _serial = common::serial();
    let server = Server::start("", "[quic]\nmax_request_bytes = 65536\n");
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let big = echo(3, &vec![1u8; 200_000]);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // The server may stop our sending half way: that is the point.
    let _ = send.write_all(&big).await;
    let _ = send.finish();
    let got = recv.read_to_end(1 << 20).await.unwrap();
    match parse(&got) {
        Reply::Error(_, code, msg) => {
            assert_eq!(code, "TooLarge");
            assert!(msg.contains("65536"), "{msg}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(
        parse(&call(&conn, &echo(4, b"next")).await.unwrap()),
        Reply::Echo(4, b"next".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_alpn_is_refused_with_a_tls_error() {
    let _serial = common::serial();
    let server = Server::start("", "");
    let mut crypto = turnstile_config::dev_client_crypto(&server.cert).unwrap();
    crypto.alpn_protocols = vec![b"h3".to_vec()];
    let ep = client_endpoint();
    let err = ep
        .connect_with(common::client_config_from(crypto), server.addr, "localhost")
        .unwrap()
        .await
        .expect_err("wrong ALPN must fail");
    let text = err.to_string();
    assert!(
        text.contains("no_application_protocol") || text.contains("120"),
        "unexpected error: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_then_closes_with_shutting_down() {
    let _serial = common::serial();
    let mut server = Server::start("drain_timeout_ms = 1500", "");
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    // A request still being sent when the signal arrives: in flight until the drain deadline.
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let frame = echo(1, &[1u8; 1000]);
    send.write_all(&frame[..10]).await.unwrap();
    // A complete request before the signal is answered.
    assert_eq!(
        parse(&call(&conn, &echo(2, b"before")).await.unwrap()),
        Reply::Echo(2, b"before".to_vec())
    );
    server.signal("TERM");
    server.wait_for_line("draining", T);
    let err = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("connection closed by the drain");
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, 2u32.into(), "SHUTTING_DOWN");
        }
        other => panic!("unexpected close: {other:?}"),
    }
    let status = server.wait_exit(T);
    assert!(status.success(), "exit status {status:?}");
}
