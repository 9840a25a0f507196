//! Real QUIC handshakes between quinn-proto endpoints in memory: the server side uses
//! `server_crypto` + `quic_server_config`, the client `dev_client_crypto`.

mod test_pair;

use std::sync::Arc;

use quinn_proto::{ConnectionError, Dir, TransportErrorCode};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;
use test_pair::{Network, alpn};
use turnstile_config::tls::{PinnedServerCert, crypto_provider};
use turnstile_config::{
    ALPN, Config, TlsMaterial, dev_client_crypto, quic_server_config, server_crypto,
};

/// TLS alerts carried in QUIC CONNECTION_CLOSE error codes (0x100 + alert, RFC 9001 §4.8).
const NO_APPLICATION_PROTOCOL: u64 = 0x178;
const CERTIFICATE_REQUIRED: u64 = 0x174;

/// A configuration from `toml` whose state directory is a fresh temporary directory, and its TLS
/// material (a development certificate unless `toml` names one).
fn server(toml: &str) -> (TempDir, Config, TlsMaterial) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = Config::parse(toml).expect("valid config");
    cfg.server.state_dir = dir.path().join("state");
    let tls = server_crypto(&cfg.tls, &cfg.server.state_dir).expect("TLS material");
    (dir, cfg, tls)
}

fn shared_quic(cfg: &Config, tls: &TlsMaterial) -> Arc<quinn_proto::ServerConfig> {
    Arc::new(quic_server_config(cfg, tls).expect("QUIC server config"))
}

fn client_crypto(tls: &TlsMaterial) -> rustls::ClientConfig {
    dev_client_crypto(&tls.certificate).expect("client config")
}

/// The crypto error code a connection was closed with, as seen by its peer.
fn closed_with(reason: Option<&ConnectionError>) -> Option<u64> {
    match reason? {
        ConnectionError::ConnectionClosed(close) => Some(u64::from(close.error_code)),
        ConnectionError::TransportError(error) => Some(u64::from(error.code)),
        _ => None,
    }
}

#[test]
fn handshake_completes_with_turnstile_alpn() {
    let (_dir, cfg, tls) = server("");
    let mut net = Network::new();
    let s = net.add_server(shared_quic(&cfg, &tls));
    let c = net.add_client();
    let ch = net.connect(c, s, client_crypto(&tls));
    net.drive();

    assert!(
        net.peers[c].connected(ch),
        "client events: {:?}",
        net.peers[c].events
    );
    assert_eq!(alpn(net.peers[c].conn(ch)).as_deref(), Some(ALPN));
    let server_conn = net.peers[s].only_conn();
    assert!(!server_conn.is_handshaking());
    assert_eq!(alpn(server_conn).as_deref(), Some(&b"turnstile/1"[..]));
}

#[test]
fn wrong_alpn_is_closed_with_no_application_protocol() {
    let (_dir, cfg, tls) = server("");
    let mut net = Network::new();
    let s = net.add_server(shared_quic(&cfg, &tls));
    let c = net.add_client();
    let mut crypto = client_crypto(&tls);
    crypto.alpn_protocols = vec![b"h3".to_vec()];
    let ch = net.connect(c, s, crypto);
    net.drive();

    assert!(!net.peers[c].connected(ch));
    assert_eq!(
        closed_with(net.peers[c].lost(ch)),
        Some(NO_APPLICATION_PROTOCOL)
    );
    let refused = net.peers[s].accept_errors.first();
    assert_eq!(closed_with(refused), Some(NO_APPLICATION_PROTOCOL));
    assert_eq!(
        u64::from(TransportErrorCode::crypto(0x78)),
        NO_APPLICATION_PROTOCOL
    );
}

#[test]
fn a_client_pinning_another_certificate_refuses_the_server() {
    let (_dir, cfg, tls) = server("");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let mut net = Network::new();
    let s = net.add_server(shared_quic(&cfg, &tls));
    let c = net.add_client();
    let crypto = dev_client_crypto(other.cert.der()).expect("client config");
    let ch = net.connect(c, s, crypto);
    net.drive();

    assert!(!net.peers[c].connected(ch));
    assert!(net.peers[c].lost(ch).is_some(), "client must give up");
}

/// Two shards (endpoints) share one `quinn_proto::ServerConfig`; the client resumes on the
/// second shard with the ticket the first one issued and sends a request as 0-RTT data.
fn resume_on_second_shard(cfg: &Config, tls: &TlsMaterial) -> ZeroRtt {
    let shared = shared_quic(cfg, tls);
    let mut net = Network::new();
    let shard_a = net.add_server(shared.clone());
    let shard_b = net.add_server(shared);
    let c = net.add_client();
    let crypto = client_crypto(tls); // clones share the client's session store

    let first = net.connect(c, shard_a, crypto.clone());
    net.drive();
    assert!(net.peers[c].connected(first));
    assert!(!net.peers[c].conn(first).has_0rtt(), "no ticket yet");

    let second = net.connect(c, shard_b, crypto);
    let conn = net.peers[c].conn(second);
    let offered = conn.has_0rtt();
    if offered {
        let id = conn.streams().open(Dir::Bi).expect("a stream in 0-RTT");
        conn.send_stream(id)
            .write(b"early request")
            .expect("0-RTT write");
        conn.send_stream(id).finish().expect("finish");
    }
    net.drive();
    assert!(
        net.peers[c].connected(second),
        "resumed handshake completes"
    );

    let accepted = net.peers[c].conn(second).accepted_0rtt();
    let server_conn = net.peers[shard_b].only_conn();
    let mut received = Vec::new();
    if let Some(id) = server_conn.streams().accept(Dir::Bi) {
        let mut recv = server_conn.recv_stream(id);
        let mut chunks = recv.read(true).expect("readable");
        while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
            received.extend_from_slice(&chunk.bytes);
        }
        let _ = chunks.finalize();
    }
    ZeroRtt {
        offered,
        accepted,
        received,
    }
}

#[derive(Debug, PartialEq)]
struct ZeroRtt {
    offered: bool,
    accepted: bool,
    received: Vec<u8>,
}

#[test]
fn ticket_from_one_shard_gives_zero_rtt_on_another() {
    let (_dir, cfg, tls) = server("");
    let outcome = resume_on_second_shard(&cfg, &tls);
    assert_eq!(
        outcome,
        ZeroRtt {
            offered: true,
            accepted: true,
            received: b"early request".to_vec(),
        }
    );
}

#[test]
fn zero_rtt_off_offers_no_early_data() {
    let (_dir, cfg, tls) = server("[quic]\nzero_rtt = false\n");
    let outcome = resume_on_second_shard(&cfg, &tls);
    assert!(!outcome.offered && !outcome.accepted, "{outcome:?}");
}

/// Why the session cache: rustls refuses 0-RTT with stateless (ticketer) resumption.
#[test]
fn a_stateless_ticketer_would_disable_zero_rtt() {
    let (_dir, cfg, tls) = server("");
    let mut stateless = (*tls.server_config).clone();
    stateless.ticketer = rustls::crypto::ring::Ticketer::new().expect("ticketer");
    let tls = TlsMaterial {
        server_config: Arc::new(stateless),
        ..tls
    };
    let outcome = resume_on_second_shard(&cfg, &tls);
    assert!(!outcome.offered && !outcome.accepted, "{outcome:?}");
}

/// A CA, written to `dir/ca.pem`, and a client certificate it signed.
fn client_identity(dir: &TempDir) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "turnstile test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write CA");

    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("client key");
    let mut params = CertificateParams::new(vec!["client-1".to_owned()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).expect("client cert");
    (
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

#[test]
fn mtls_accepts_a_certificate_from_the_ca_and_refuses_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (client_cert, client_key) = client_identity(&dir);
    let ca = dir.path().join("ca.pem");
    let (_state, cfg, tls) = server(&format!("[tls]\nclient_ca = {:?}\n", ca.display()));
    let shared = shared_quic(&cfg, &tls);

    // With a certificate signed by the CA.
    let mut crypto = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerCert::new(tls.certificate.clone())))
        .with_client_auth_cert(vec![client_cert.clone()], client_key)
        .expect("client identity");
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let mut net = Network::new();
    let s = net.add_server(shared.clone());
    let c = net.add_client();
    let ch = net.connect(c, s, crypto);
    net.drive();
    assert!(net.peers[c].connected(ch));
    let identity = net.peers[s].only_conn().crypto_session().peer_identity();
    let chain = identity
        .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
        .expect("client certificate chain");
    assert_eq!(chain.first(), Some(&client_cert));

    // Without a certificate.
    let mut net = Network::new();
    let s = net.add_server(shared);
    let c = net.add_client();
    let ch = net.connect(c, s, client_crypto(&tls));
    net.drive();
    assert_eq!(
        closed_with(net.peers[c].lost(ch)),
        Some(CERTIFICATE_REQUIRED)
    );
}
