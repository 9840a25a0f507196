//! A lossless in-memory network of quinn-proto endpoints, driven by hand with a fake clock.
//!
//! Each [`Peer`] is one `Endpoint` (a server endpoint stands for one shard) with its
//! connections. [`Network::drive`] moves datagrams between them — `Connection::poll_transmit` →
//! `Endpoint::handle` → `Connection::handle_event` — until nothing is in flight. Timers are never
//! fired: on a lossless link a handshake completes without them.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::crypto::rustls::{HandshakeData, QuicClientConfig};
use quinn_proto::{
    ClientConfig, Connection, ConnectionError, ConnectionHandle, DatagramEvent, Endpoint,
    EndpointConfig, Event, ServerConfig,
};

/// Rounds after which [`Network::drive`] gives up: a handshake needs fewer than ten.
const ROUNDS_MAX: usize = 1000;

/// One endpoint and its connections.
pub struct Peer {
    pub addr: SocketAddr,
    pub endpoint: Endpoint,
    pub connections: HashMap<ConnectionHandle, Connection>,
    /// Every application event of every connection, in order.
    pub events: Vec<(ConnectionHandle, Event)>,
    /// Why `Endpoint::accept` refused incoming connections (servers only).
    pub accept_errors: Vec<ConnectionError>,
}

impl Peer {
    /// The connection `ch`.
    pub fn conn(&mut self, ch: ConnectionHandle) -> &mut Connection {
        self.connections.get_mut(&ch).expect("no such connection")
    }

    /// The only connection of this peer.
    pub fn only_conn(&mut self) -> &mut Connection {
        assert_eq!(self.connections.len(), 1, "expected exactly one connection");
        self.connections
            .values_mut()
            .next()
            .expect("one connection")
    }

    /// Whether `ch` reported `Event::Connected`.
    pub fn connected(&self, ch: ConnectionHandle) -> bool {
        self.events
            .iter()
            .any(|(h, e)| *h == ch && matches!(e, Event::Connected))
    }

    /// Why `ch` was lost, if it was.
    pub fn lost(&self, ch: ConnectionHandle) -> Option<&ConnectionError> {
        self.events.iter().find_map(|(h, e)| match e {
            Event::ConnectionLost { reason } if *h == ch => Some(reason),
            _ => None,
        })
    }
}

/// The protocol ALPN negotiated on `conn`, once its handshake data is ready.
pub fn alpn(conn: &Connection) -> Option<Vec<u8>> {
    let data = conn.crypto_session().handshake_data()?;
    data.downcast::<HandshakeData>().ok()?.protocol
}

struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    data: BytesMut,
}

/// Peers, the datagrams between them, and the clock.
pub struct Network {
    pub now: Instant,
    pub peers: Vec<Peer>,
    in_flight: VecDeque<Datagram>,
}

impl Network {
    pub fn new() -> Self {
        Self {
            now: Instant::now(),
            peers: Vec::new(),
            in_flight: VecDeque::new(),
        }
    }

    /// Adds a server endpoint (one "shard"); returns its index.
    pub fn add_server(&mut self, config: Arc<ServerConfig>) -> usize {
        self.add_peer(Some(config))
    }

    /// Adds a client endpoint; returns its index.
    pub fn add_client(&mut self) -> usize {
        self.add_peer(None)
    }

    fn add_peer(&mut self, server: Option<Arc<ServerConfig>>) -> usize {
        let index = self.peers.len();
        let port = 4433 + u16::try_from(index).expect("few peers");
        self.peers.push(Peer {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            endpoint: Endpoint::new(Arc::new(EndpointConfig::default()), server, true, None),
            connections: HashMap::new(),
            events: Vec::new(),
            accept_errors: Vec::new(),
        });
        index
    }

    /// Starts a connection from `client` to `server` for server name `localhost`.
    pub fn connect(
        &mut self,
        client: usize,
        server: usize,
        crypto: rustls::ClientConfig,
    ) -> ConnectionHandle {
        let crypto = QuicClientConfig::try_from(crypto).expect("TLS 1.3 client config");
        let config = ClientConfig::new(Arc::new(crypto));
        let remote = self.peers[server].addr;
        let peer = &mut self.peers[client];
        let (ch, conn) = peer
            .endpoint
            .connect(self.now, config, remote, "localhost")
            .expect("connect");
        peer.connections.insert(ch, conn);
        ch
    }

    /// Moves datagrams until none is in flight (one millisecond of fake time per round).
    pub fn drive(&mut self) {
        for _ in 0..ROUNDS_MAX {
            self.collect_transmits();
            if self.in_flight.is_empty() {
                return;
            }
            self.now += Duration::from_millis(1);
            while let Some(datagram) = self.in_flight.pop_front() {
                self.deliver(datagram);
            }
        }
        panic!("network still busy after {ROUNDS_MAX} rounds");
    }

    /// Polls every connection for datagrams, endpoint events and application events.
    fn collect_transmits(&mut self) {
        let now = self.now;
        let mut buf = Vec::new();
        for peer in &mut self.peers {
            for (&ch, conn) in &mut peer.connections {
                while let Some(event) = conn.poll_endpoint_events() {
                    if let Some(event) = peer.endpoint.handle_event(ch, event) {
                        conn.handle_event(event);
                    }
                }
                loop {
                    buf.clear();
                    let Some(transmit) = conn.poll_transmit(now, 1, &mut buf) else {
                        break;
                    };
                    self.in_flight.push_back(Datagram {
                        from: peer.addr,
                        to: transmit.destination,
                        data: BytesMut::from(&buf[..transmit.size]),
                    });
                }
                while let Some(event) = conn.poll() {
                    peer.events.push((ch, event));
                }
            }
        }
    }

    /// Hands one datagram to the endpoint it is addressed to.
    fn deliver(&mut self, datagram: Datagram) {
        let now = self.now;
        let Some(peer) = self.peers.iter_mut().find(|p| p.addr == datagram.to) else {
            return;
        };
        let mut buf = Vec::new();
        let response =
            match peer
                .endpoint
                .handle(now, datagram.from, None, None, datagram.data, &mut buf)
            {
                None => None,
                Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                    peer.conn(ch).handle_event(event);
                    None
                }
                Some(DatagramEvent::Response(transmit)) => Some(transmit),
                Some(DatagramEvent::NewConnection(incoming)) => {
                    match peer.endpoint.accept(incoming, now, &mut buf, None) {
                        Ok((ch, conn)) => {
                            peer.connections.insert(ch, conn);
                            None
                        }
                        Err(error) => {
                            peer.accept_errors.push(error.cause);
                            error.response
                        }
                    }
                }
            };
        if let Some(transmit) = response {
            self.in_flight.push_back(Datagram {
                from: peer.addr,
                to: transmit.destination,
                data: BytesMut::from(&buf[..transmit.size]),
            });
        }
    }
}
