//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// Why a configuration could not be loaded, validated or turned into TLS/QUIC configuration.
///
/// Every message names the key (or file) and the offending value, so that it can be shown to the
/// operator as it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The configuration file exceeds [`crate::limits::CONFIG_FILE_BYTES_MAX`].
    #[error("config file {path} is larger than {max} bytes (at least {bytes} bytes)")]
    ConfigTooLarge {
        /// The file.
        path: PathBuf,
        /// Bytes seen before giving up (a lower bound of the file's size).
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The text is not valid TOML, or a key is unknown or has the wrong type. The TOML error's
    /// message carries the line, the column and the offending text.
    #[error("{origin}: {source}")]
    Syntax {
        /// Where the text came from (a path, or "embedded default config").
        origin: String,
        /// The parser's error.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent with another one.
    #[error("{key} = {value}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `quic.max_concurrent_bidi_streams`.
        key: String,
        /// The value as written in TOML (strings quoted).
        value: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// A TLS file (`tls.cert`, `tls.key`, `tls.client_ca` or a development certificate file)
    /// could not be read.
    #[error("{key} = {path}: cannot read: {source}")]
    ReadTlsFile {
        /// The key that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A TLS file was read but its content is unusable.
    #[error("{key} = {path}: {reason}")]
    TlsFile {
        /// The key that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with the content.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("tls.key = {key}: the private key does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The state directory (or a file in it) could not be created or written.
    #[error("server.state_dir = {path}: {source}")]
    StateDir {
        /// The directory or file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// rcgen failed to generate the development certificate.
    #[error("cannot generate the development certificate: {0}")]
    CertGeneration(#[from] rcgen::Error),
    /// rustls refused the TLS configuration (`context` says which step).
    #[error("{context}: {source}")]
    Tls {
        /// What was being built.
        context: &'static str,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built from `tls.client_ca`.
    #[error("tls.client_ca = {path}: {source}")]
    ClientCa {
        /// The CA bundle.
        path: PathBuf,
        /// rustls' reason.
        source: rustls::server::VerifierBuilderError,
    },
    /// quinn-proto refused the TLS configuration (it lacks TLS 1.3's `TLS13_AES_128_GCM_SHA256`).
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(#[from] quinn_proto::crypto::rustls::NoInitialCipherSuite),
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] for `key = value`, `value` already rendered as TOML.
    pub(crate) fn invalid(
        key: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}
