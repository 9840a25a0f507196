//! TLS material: development certificate, PEM files, key mismatch, mTLS, and the QUIC server
//! configuration built from it.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use turnstile_config::tls::{CertSource, DEV_CERT_FILE, DEV_KEY_FILE, sha256_fingerprint};
use turnstile_config::{
    ALPN, Config, ConfigError, Congestion, TlsConfig, dev_client_crypto, quic_server_config,
    server_crypto,
};

/// Writes a fresh self-signed certificate and its key as `dir/<name>.pem` / `dir/<name>.key`.
fn write_identity(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["gateway.test".to_owned()]).expect("cert");
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, generated.cert.pem()).expect("write cert");
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}

fn files(cert: &Path, key: &Path) -> TlsConfig {
    TlsConfig {
        cert: Some(cert.to_owned()),
        key: Some(key.to_owned()),
        client_ca: None,
    }
}

#[test]
fn fingerprint_is_colon_separated_uppercase_sha256() {
    let fp = sha256_fingerprint(b"");
    assert!(fp.starts_with("E3:B0:C4:42:98:FC:1C:14:"), "{fp}");
    assert!(fp.ends_with(":78:52:B8:55"), "{fp}");
    assert_eq!(fp.len(), 32 * 3 - 1);
}

#[test]
fn development_certificate_is_generated_once_and_reused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("nested/state");
    let first = server_crypto(&TlsConfig::default(), &state).expect("generate");
    assert_eq!(first.source, CertSource::DevelopmentGenerated);
    assert!(first.is_development() && first.generated_now());
    assert_eq!(first.cert_path, state.join(DEV_CERT_FILE));

    let pem = std::fs::read(&first.cert_path).expect("stored certificate");
    let stored = CertificateDer::from_pem_slice(&pem).expect("PEM certificate");
    assert_eq!(stored, first.certificate);
    assert_eq!(first.sha256_fingerprint, sha256_fingerprint(&stored));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&state.join(DEV_KEY_FILE)), 0o600);
        assert_eq!(mode(&state), 0o700);
    }

    let second = server_crypto(&TlsConfig::default(), &state).expect("reuse");
    assert_eq!(second.source, CertSource::DevelopmentReused);
    assert!(second.is_development() && !second.generated_now());
    assert_eq!(second.sha256_fingerprint, first.sha256_fingerprint);
    assert_eq!(second.certificate, first.certificate);
}

#[test]
fn server_config_is_tls13_with_alpn_and_stateful_zero_rtt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = server_crypto(&TlsConfig::default(), dir.path()).expect("material");
    let config = &tls.server_config;
    assert_eq!(config.alpn_protocols, vec![ALPN.to_vec()]);
    assert_eq!(config.max_early_data_size, u32::MAX);
    // rustls accepts 0-RTT only with stateful resumption: no ticketer.
    assert!(!config.ticketer.enabled());
    assert!(!config.send_half_rtt_data);

    // A TLS 1.2-only client gets no handshake (plain TLS in memory, no QUIC needed).
    let tls12 =
        rustls::ClientConfig::builder_with_provider(turnstile_config::tls::crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("TLS 1.2")
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(
                turnstile_config::tls::PinnedServerCert::new(tls.certificate.clone()),
            ))
            .with_no_client_auth();
    let name = "localhost".try_into().expect("name");
    let mut client =
        rustls::ClientConnection::new(std::sync::Arc::new(tls12), name).expect("client");
    let mut server = rustls::ServerConnection::new(config.clone()).expect("server");
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("client hello");
    server.read_tls(&mut hello.as_slice()).expect("read");
    let err = server.process_new_packets().expect_err("TLS 1.2 refused");
    assert_eq!(
        err,
        rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOfferedOrEnabled),
        "{err:?}"
    );

    let client = dev_client_crypto(&tls.certificate).expect("client");
    assert_eq!(client.alpn_protocols, vec![ALPN.to_vec()]);
    assert!(client.enable_early_data);
}

#[test]
fn certificate_and_key_from_pem_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = write_identity(dir.path(), "server");
    let tls = server_crypto(&files(&cert, &key), dir.path()).expect("material");
    assert_eq!(tls.source, CertSource::Configured);
    assert!(!tls.is_development() && !tls.generated_now());
    assert_eq!(tls.cert_path, cert);
    let pem = std::fs::read(&cert).expect("read");
    let der = CertificateDer::from_pem_slice(&pem).expect("PEM");
    assert_eq!(tls.sha256_fingerprint, sha256_fingerprint(&der));
    assert!(
        !dir.path().join(DEV_CERT_FILE).exists(),
        "no development certificate"
    );
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, _) = write_identity(dir.path(), "a");
    let (_, other_key) = write_identity(dir.path(), "b");
    let err = server_crypto(&files(&cert, &other_key), dir.path()).expect_err("mismatch");
    assert!(matches!(err, ConfigError::KeyMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "tls.key = {}: the private key does not match the certificate in {}",
            other_key.display(),
            cert.display()
        )
    );
}

#[test]
fn unusable_pem_files_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = write_identity(dir.path(), "server");

    // A key where the certificate should be, and the other way round.
    let err = server_crypto(&files(&key, &key), dir.path()).expect_err("no cert");
    assert_eq!(
        err.to_string(),
        format!(
            "tls.cert = {}: no certificate found (expected a \"CERTIFICATE\" PEM section)",
            key.display()
        )
    );
    let err = server_crypto(&files(&cert, &cert), dir.path()).expect_err("no key");
    assert!(
        err.to_string().starts_with(&format!(
            "tls.key = {}: not a PKCS#8/SEC1/PKCS#1 private key",
            cert.display()
        )),
        "{err}"
    );

    let missing = dir.path().join("missing.pem");
    let err = server_crypto(&files(&missing, &key), dir.path()).expect_err("missing");
    assert!(
        err.to_string()
            .starts_with(&format!("tls.cert = {}: cannot read: ", missing.display())),
        "{err}"
    );

    let half = TlsConfig {
        cert: Some(cert),
        ..TlsConfig::default()
    };
    let err = server_crypto(&half, dir.path()).expect_err("key missing");
    assert!(
        err.to_string().starts_with("tls.key = \"\": must be set"),
        "{err}"
    );
}

#[test]
fn mtls_configuration_builds_and_checks_its_ca_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca, ca_key) = write_identity(dir.path(), "ca");
    let mtls = TlsConfig {
        client_ca: Some(ca),
        ..TlsConfig::default()
    };
    server_crypto(&mtls, dir.path()).expect("mTLS config");

    let bad = TlsConfig {
        client_ca: Some(ca_key.clone()),
        ..TlsConfig::default()
    };
    let err = server_crypto(&bad, dir.path()).expect_err("not a CA file");
    assert!(
        err.to_string().starts_with(&format!(
            "tls.client_ca = {}: no certificate found",
            ca_key.display()
        )),
        "{err}"
    );
}

#[test]
fn quic_server_config_builds_for_every_congestion_controller() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = server_crypto(&TlsConfig::default(), dir.path()).expect("material");
    for congestion in Congestion::ALL {
        for zero_rtt in [true, false] {
            let text = format!("[quic]\ncongestion = \"{congestion}\"\nzero_rtt = {zero_rtt}\n");
            let cfg = Config::parse(&text).expect("valid");
            assert_eq!(cfg.quic.congestion, congestion);
            quic_server_config(&cfg, &tls).expect("QUIC server config");
        }
    }
}
