//! The baseline's 0-RTT against the real binary: resumed connections have their early data
//! accepted, replay-safe requests are answered from it, and other requests read before the
//! handshake completed get `notReplaySafe` (as from turnstile), then are served after it.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use turnstile_wire::turnstile_capnp::{ErrorCode, request, response};
use turnstile_wire::{FrameWriter, Message};

/// Resumed connections tried; the refusal must show on at least one (the server checks when it
/// has read the request, which on a busy machine may now and then be after the handshake).
const ATTEMPTS: usize = 5;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path) -> (Server, SocketAddr) {
    let addr = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\nshards = 1\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\n",
            dir.join("state").display(),
            dir.join("run").display()
        ),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_turnstile-baseline"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start turnstile-baseline");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("turnstile-baseline: listening on") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the baseline says it listens");
    (server, addr)
}

fn frame(fill: impl FnOnce(request::Builder<'_>)) -> Vec<u8> {
    let mut scratch = vec![0u8; 4096];
    let mut writer = FrameWriter::new(&mut scratch);
    let mut out = Vec::new();
    writer
        .write::<request::Owned, _>(&mut out, |r| {
            fill(r);
            Ok(())
        })
        .expect("request encodes");
    out
}

/// What the server answered.
#[derive(Debug, PartialEq)]
enum Answer {
    Echo(Vec<u8>),
    Error(ErrorCode),
}

async fn call(conn: &quinn::Connection, bytes: &[u8]) -> Answer {
    let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
    send.write_all(bytes).await.expect("write");
    send.finish().expect("finish");
    let got = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20))
        .await
        .expect("an answer in time")
        .expect("read");
    let message = Message::from_frame_bytes(&got).expect("one frame");
    let r = message.root::<response::Owned>().expect("a Response");
    match r.which().expect("known member") {
        response::Echo(b) => Answer::Echo(b.expect("bytes").to_vec()),
        response::Error(e) => Answer::Error(e.expect("error").get_code().expect("known code")),
        _ => panic!("unexpected answer"),
    }
}

#[test]
fn early_data_is_accepted_and_only_replay_safe_requests_are_served_from_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, addr) = start(dir.path());
    let cert = CertificateDer::from_pem_file(dir.path().join("state/dev-cert.pem"))
        .expect("the development certificate");
    let mut crypto = turnstile_config::dev_client_crypto(&cert).expect("client TLS");
    crypto.resumption = rustls::client::Resumption::in_memory_sessions(16);
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(crypto))
        .expect("QUIC client TLS");
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let echo = frame(|mut r| {
        r.set_correlation_id(1);
        r.set_echo(b"early");
    });
    let task = frame(|mut r| {
        r.set_correlation_id(2);
        r.init_task();
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address"))
            .expect("client socket");
        endpoint.set_default_client_config(config);
        // A full handshake brings the first ticket.
        let first = endpoint
            .connect(addr, "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        assert_eq!(call(&first, &echo).await, Answer::Echo(b"early".to_vec()));
        tokio::time::sleep(Duration::from_millis(200)).await; // the tickets arrive
        first.close(0u32.into(), b"");

        let mut refused = 0;
        for _ in 0..ATTEMPTS {
            let connecting = endpoint.connect(addr, "localhost").expect("connect");
            let Ok((conn, accepted)) = connecting.into_0rtt() else {
                panic!("no ticket allowing early data was issued");
            };
            // Both requests go out as early data, before the handshake can have completed.
            let (in_0rtt_task, in_0rtt_echo) = tokio::join!(call(&conn, &task), call(&conn, &echo));
            assert!(accepted.await, "the server accepted the early data");
            assert_eq!(in_0rtt_echo, Answer::Echo(b"early".to_vec()));
            match in_0rtt_task {
                Answer::Error(ErrorCode::NotReplaySafe) => refused += 1,
                // Read only after the handshake completed: served as any request.
                Answer::Error(ErrorCode::NotImplemented) => {}
                other => panic!("a task in 0-RTT got {other:?}"),
            }
            // After the handshake the same request is served (the baseline has no task path).
            assert_eq!(
                call(&conn, &task).await,
                Answer::Error(ErrorCode::NotImplemented)
            );
            tokio::time::sleep(Duration::from_millis(100)).await; // the next ticket arrives
            conn.close(0u32.into(), b"");
        }
        assert!(
            refused > 0,
            "no task request sent in 0-RTT was refused as not replay-safe"
        );
    });
}
