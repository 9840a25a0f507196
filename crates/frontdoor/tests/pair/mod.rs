//! A server `FrontDoor` and a quinn-proto client connected through an in-memory network with a
//! virtual clock: no sockets, no sleeping, deterministic.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig,
    ServerConfig, StreamId,
};
use turnstile_frontdoor::{FrontDoor, FrontDoorConfig, RequestHandler};
use turnstile_wire::turnstile_capnp::{request, response};
use turnstile_wire::{FrameWriter, Message};

pub const SERVER: &str = "127.0.0.1:4433";
pub const CLIENT: &str = "127.0.0.1:50000";
const CLIENT_ADDR: std::net::SocketAddr = std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(127, 0, 0, 1),
    50000,
));

pub fn tls() -> (Arc<ServerConfig>, ClientConfig) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut server =
        rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_no_client_auth()
            .with_single_cert(vec![cert_der.clone()], key)
            .unwrap();
    server.alpn_protocols = vec![turnstile_wire::ALPN.to_vec()];
    server.max_early_data_size = u32::MAX;
    let mut server_config =
        ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server).unwrap()));
    let mut transport = quinn_proto::TransportConfig::default();
    transport.max_concurrent_bidi_streams(1024u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    server_config.transport_config(Arc::new(transport));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let mut client =
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_root_certificates(roots)
            .with_no_client_auth();
    client.alpn_protocols = vec![turnstile_wire::ALPN.to_vec()];
    let client_config = ClientConfig::new(Arc::new(QuicClientConfig::try_from(client).unwrap()));
    (Arc::new(server_config), client_config)
}

pub fn server_cfg() -> FrontDoorConfig {
    FrontDoorConfig {
        shard: 0,
        shards: 2,
        max_connections: 100,
        max_request_bytes: 64 * 1024,
        retry_above_initials_per_sec: 1000,
        max_streams: 1024,
    }
}

pub struct Pair {
    pub now: Instant,
    pub server: FrontDoor,
    pub client_ep: Endpoint,
    pub client: Connection,
    pub client_ch: ConnectionHandle,
    /// Datagrams in flight to the server / to the client.
    pub to_server: VecDeque<Vec<u8>>,
    pub to_client: VecDeque<Vec<u8>>,
    pub writer: FrameWriter<'static>,
    pub client_config: ClientConfig,
    /// Called with `true` before and `false` after every call into the server, so a test can
    /// attribute work (allocations) to the server alone.
    pub server_scope: fn(bool),
}

impl Pair {
    pub fn new(cfg: FrontDoorConfig) -> Pair {
        let (server_config, client_config) = tls();
        let reset_key: Arc<dyn quinn_proto::crypto::HmacKey> =
            Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7u8; 32]));
        let server = FrontDoor::new(cfg, server_config, reset_key);
        let mut client_ep = Endpoint::new(Arc::new(EndpointConfig::default()), None, true, None);
        let now = Instant::now();
        let (client_ch, client) = client_ep
            .connect(
                now,
                client_config.clone(),
                SERVER.parse().unwrap(),
                "localhost",
            )
            .unwrap();
        Pair {
            now,
            server,
            client_ep,
            client,
            client_ch,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            writer: FrameWriter::with_static_scratch(),
            client_config,
            server_scope: |_| {},
        }
    }

    /// Moves datagrams and fires timers until nothing moves; advances the clock a little each
    /// round so timers make progress.
    pub fn drive<H: RequestHandler>(&mut self, handler: &mut H) {
        for _ in 0..10_000 {
            let mut moved = false;
            let mut buf = Vec::new();
            while let Some(t) = self.client.poll_transmit(self.now, 10, &mut buf) {
                push_segments(&mut self.to_server, &buf[..t.size], t.segment_size);
                buf.clear();
                moved = true;
            }
            while let Some(d) = self.to_server.pop_front() {
                moved = true;
                let data = BytesMut::from(&d[..]);
                (self.server_scope)(true);
                self.server
                    .handle_datagram(self.now, CLIENT_ADDR, None, None, data, handler);
                (self.server_scope)(false);
            }
            loop {
                (self.server_scope)(true);
                let t = self.server.poll_transmit(self.now, &mut buf);
                (self.server_scope)(false);
                let Some(t) = t else { break };
                push_segments(&mut self.to_client, &buf[..t.size], t.segment_size);
                moved = true;
            }
            while let Some(d) = self.to_client.pop_front() {
                moved = true;
                let mut rbuf = Vec::new();
                match self.client_ep.handle(
                    self.now,
                    SERVER.parse().unwrap(),
                    None,
                    None,
                    BytesMut::from(&d[..]),
                    &mut rbuf,
                ) {
                    Some(DatagramEvent::ConnectionEvent(_, ev)) => self.client.handle_event(ev),
                    Some(DatagramEvent::Response(_)) | Some(DatagramEvent::NewConnection(_)) => {}
                    None => {}
                }
            }
            while let Some(ev) = self.client.poll_endpoint_events() {
                if let Some(back) = self.client_ep.handle_event(self.client_ch, ev) {
                    self.client.handle_event(back);
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// Advances the virtual clock by `d` and fires due timers on both sides.
    pub fn advance<H: RequestHandler>(&mut self, d: Duration, handler: &mut H) {
        self.now += d;
        self.client.handle_timeout(self.now);
        (self.server_scope)(true);
        self.server.handle_timeout(self.now, handler);
        (self.server_scope)(false);
        self.drive(handler);
    }

    pub fn connect<H: RequestHandler>(&mut self, handler: &mut H) {
        self.drive(handler);
        assert!(!self.client.is_handshaking(), "handshake did not complete");
        while self.client.poll().is_some() {}
    }

    /// Opens a stream, writes `frame` and FIN.
    pub fn send(&mut self, frame: &[u8], fin: bool) -> StreamId {
        let id = self.client.streams().open(Dir::Bi).expect("stream credit");
        let mut off = 0;
        while off < frame.len() {
            off += self
                .client
                .send_stream(id)
                .write(&frame[off..])
                .expect("write");
        }
        if fin {
            self.client.send_stream(id).finish().unwrap();
        }
        id
    }

    /// Everything the server sent on `id` so far, and whether it finished.
    pub fn recv(&mut self, id: StreamId) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut fin = false;
        let mut s = self.client.recv_stream(id);
        if let Ok(mut chunks) = s.read(true) {
            loop {
                match chunks.next(usize::MAX) {
                    Ok(Some(c)) => out.extend_from_slice(&c.bytes),
                    Ok(None) => {
                        fin = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let _ = chunks.finalize();
        }
        (out, fin)
    }

    pub fn echo_frame(&mut self, correlation_id: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.writer
            .write::<request::Owned, _>(&mut out, |mut r| {
                r.set_correlation_id(correlation_id);
                r.set_echo(payload);
                Ok(())
            })
            .unwrap();
        out
    }
}

fn push_segments(q: &mut VecDeque<Vec<u8>>, data: &[u8], segment: Option<usize>) {
    match segment {
        Some(seg) => q.extend(data.chunks(seg).map(<[u8]>::to_vec)),
        None => q.push_back(data.to_vec()),
    }
}

/// Parses a response frame and returns (correlation id, echo bytes or error code text).
pub fn parse_response(bytes: &[u8]) -> (u64, String) {
    let msg = Message::from_frame_bytes(bytes).expect("one response frame");
    let r = msg.root::<response::Owned>().unwrap();
    let what = match r.which().unwrap() {
        response::Echo(e) => format!("echo:{}", String::from_utf8_lossy(e.unwrap())),
        response::Error(e) => {
            let e = e.unwrap();
            format!(
                "error:{:?}:{}",
                e.get_code().unwrap(),
                e.get_message().unwrap().to_str().unwrap()
            )
        }
        response::Decision(_) => "decision".to_string(),
        response::HelloAck(h) => format!("hello:{}", h.unwrap().get_version()),
        _ => "other".to_string(),
    };
    (r.get_correlation_id(), what)
}
