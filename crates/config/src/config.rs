//! The validated configuration: loading, validation and the typed sections.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;
use crate::file::{FileConfig, FileQuic, FileServer, FileShard, FileTls, SPIN_US_DEFAULT};
use crate::limits;

/// The embedded default configuration file (`default.toml`), with a comment on every key.
/// [`Config::load`] uses it when no file is given; print it to show an operator every option.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../default.toml");

/// A complete, validated configuration. Build it with [`Config::load`] or [`Config::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[server]`: process-wide settings.
    pub server: ServerConfig,
    /// `[shard]`: how each shard thread runs its ring.
    pub shard: ShardConfig,
    /// `[quic]`: QUIC transport settings and per-shard admission limits.
    pub quic: QuicConfig,
    /// `[tls]`: certificate, key and client authentication.
    pub tls: TlsConfig,
    /// `[agents.<id>]`: the agents, sorted by id.
    pub agents: Vec<crate::agents::AgentConfig>,
    /// `[[routes]]`: agent chains by route id.
    pub routes: Vec<crate::agents::RouteConfig>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// UDP address every shard binds (port never 0).
    pub listen: SocketAddr,
    /// Configured shard count; 0 = automatic. Use [`ServerConfig::shard_count`].
    pub shards: usize,
    /// Explicit core ids to pin shards to, without duplicates; empty = no explicit list.
    pub cores: Vec<usize>,
    /// Directory for generated state (the development certificate), already resolved.
    pub state_dir: PathBuf,
    /// How long open connections get to finish on shutdown.
    pub drain_timeout: Duration,
    /// Directory for the sockets of agents turnstile starts; `None` = the supervisor's default
    /// (`$XDG_RUNTIME_DIR/turnstile`, else a per-user directory in the system temp dir).
    pub runtime_dir: Option<PathBuf>,
    /// TCP address of the admin endpoint (`GET /metrics`, `GET /healthz`); `None` = off.
    pub admin_listen: Option<SocketAddr>,
}

impl ServerConfig {
    /// Number of shards to run: `shards` if set, else the length of `cores` if set, else the
    /// number of cores available to this process (at most [`limits::SHARDS_MAX`]).
    pub fn shard_count(&self) -> usize {
        if self.shards != 0 {
            self.shards
        } else if !self.cores.is_empty() {
            self.cores.len()
        } else {
            let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
            cores.min(limits::SHARDS_MAX as usize)
        }
    }
}

/// What a shard does when it has no work (`shard.spin` and `shard.spin_us`).
///
/// TOML forms: `spin = "fixed"` (the default) with `spin_us = N` → [`SpinPolicy::Fixed`];
/// `spin = "adaptive"` with `spin_us = N` → [`SpinPolicy::Adaptive`]; `spin = "busy-poll"`
/// (without `spin_us`) → [`SpinPolicy::BusyPoll`]. An absent `spin_us` means 50.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpinPolicy {
    /// Poll for this many microseconds, then sleep in the kernel until woken. 0 = never poll.
    Fixed(u32),
    /// Poll for at most `max_us` microseconds, less while traffic is sparse.
    Adaptive {
        /// Upper bound of the polling time, in microseconds (at least 1).
        max_us: u32,
    },
    /// Never sleep: poll continuously.
    BusyPoll,
}

/// `[shard]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardConfig {
    /// Polling before sleeping.
    pub spin: SpinPolicy,
    /// Submission-queue entries of the io_uring ring (a power of two).
    pub ring_entries: u32,
    /// Whether the ring uses a kernel submission-polling thread.
    pub sqpoll: bool,
    /// Longest time one sleep in the kernel may last before the shard looks again, even with
    /// nothing to do; `None` (`max_sleep_ms = 0`, the default) = sleep until a completion, a
    /// wake-up or the next timer.
    pub max_sleep: Option<Duration>,
}

/// Congestion controller of every connection (`quic.congestion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Congestion {
    /// CUBIC (RFC 9438), quinn's default.
    Cubic,
    /// BBR (quinn-proto's experimental BBRv1).
    Bbr,
    /// NewReno (RFC 9002).
    NewReno,
}

impl Congestion {
    /// Every controller, in the order the error messages list them.
    pub const ALL: [Congestion; 3] = [Congestion::Cubic, Congestion::Bbr, Congestion::NewReno];

    /// The name used in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Congestion::Cubic => "cubic",
            Congestion::Bbr => "bbr",
            Congestion::NewReno => "newreno",
        }
    }
}

impl fmt::Display for Congestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `[quic]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicConfig {
    /// Bidirectional streams a client may have open at once on one connection.
    pub max_concurrent_bidi_streams: u32,
    /// Idle time after which a connection is closed.
    pub idle_timeout: Duration,
    /// Keep-alive interval; `None` = off. Always shorter than `idle_timeout`.
    pub keep_alive: Option<Duration>,
    /// Connections one shard holds at once.
    pub max_connections_per_shard: u32,
    /// Largest request accepted on one stream.
    pub max_request_bytes: usize,
    /// Rate of new Initials per second and shard above which clients must answer a Retry.
    /// 0 = always.
    pub retry_above_initials_per_sec: u32,
    /// Congestion controller.
    pub congestion: Congestion,
    /// Whether 0-RTT data from resuming clients is accepted.
    pub zero_rtt: bool,
    /// Per-stream receive window.
    pub stream_receive_window_bytes: u32,
    /// Per-connection receive window (at least `stream_receive_window_bytes`).
    pub receive_window_bytes: u32,
    /// Per-connection send buffer.
    pub send_window_bytes: u64,
}

/// `[tls]`. Paths are resolved; `None` = not set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Set together with `key`, or neither.
    pub cert: Option<PathBuf>,
    /// PEM private key of the leaf certificate.
    pub key: Option<PathBuf>,
    /// PEM bundle of the CAs that sign client certificates; set = mutual TLS.
    pub client_ca: Option<PathBuf>,
}

impl Config {
    /// Loads and validates the file at `path`, or the embedded [`DEFAULT_CONFIG_TOML`] for
    /// `None`. Relative paths in the file are relative to the file's directory.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Self::from_toml(
                DEFAULT_CONFIG_TOML.as_bytes(),
                "embedded default config",
                None,
            );
        };
        let text = read_bounded(path)?;
        Self::from_toml(&text, &path.display().to_string(), path.parent())
    }

    /// Parses and validates configuration text. Relative paths are relative to the current
    /// directory.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Self::from_toml(text.as_bytes(), "config", None)
    }

    fn from_toml(text: &[u8], origin: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_slice(text).map_err(|source| ConfigError::Syntax {
            origin: origin.to_owned(),
            source: Box::new(source),
        })?;
        let env = Env::from_process();
        let agents = crate::agents::agents(&file.agents, base)?;
        Ok(Config {
            server: server(&file.server, base, &env)?,
            shard: shard(&file.shard)?,
            quic: quic(&file.quic)?,
            tls: tls(&file.tls, base)?,
            agents: agents.clone(),
            routes: crate::agents::routes(&file.routes, &agents)?,
        })
    }
}

/// Reads at most [`limits::CONFIG_FILE_BYTES_MAX`] bytes (plus one, to detect a larger file).
fn read_bounded(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let read_error = |source| ConfigError::ReadConfig {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(limits::CONFIG_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    let len = bytes.len() as u64;
    if len > limits::CONFIG_FILE_BYTES_MAX {
        return Err(ConfigError::ConfigTooLarge {
            path: path.to_owned(),
            bytes: len,
            max: limits::CONFIG_FILE_BYTES_MAX,
        });
    }
    Ok(bytes)
}

/// `value` if it lies in `min..=max` and fits `T`, else "`key` = value: must be between …".
pub(crate) fn ranged<T: TryFrom<i64>>(
    key: &str,
    value: i64,
    min: u64,
    max: u64,
) -> Result<T, ConfigError> {
    let in_range = u64::try_from(value).is_ok_and(|v| (min..=max).contains(&v));
    match T::try_from(value) {
        Ok(v) if in_range => Ok(v),
        _ => Err(ConfigError::invalid(
            key,
            value.to_string(),
            format!("must be between {min} and {max}"),
        )),
    }
}

fn milliseconds(key: &str, value: i64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    ranged::<u64>(key, value, min, max).map(Duration::from_millis)
}

/// A TOML string literal for error messages.
pub(crate) fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// An optional path: "" = `None`; relative paths are joined to `base`.
fn path(value: &str, base: Option<&Path>) -> Option<PathBuf> {
    if value.is_empty() {
        return None;
    }
    let path = PathBuf::from(value);
    Some(match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path,
    })
}

/// The process environment the defaults depend on, captured once (and replaceable in tests).
struct Env {
    xdg_state_home: Option<OsString>,
    home: Option<OsString>,
    temp: PathBuf,
}

impl Env {
    fn from_process() -> Self {
        Self {
            xdg_state_home: std::env::var_os("XDG_STATE_HOME"),
            home: std::env::var_os("HOME"),
            temp: std::env::temp_dir(),
        }
    }

    /// `$XDG_STATE_HOME/turnstile`, else `$HOME/.local/state/turnstile`, else
    /// `<temp>/turnstile`. Relative or empty variables are ignored, as the XDG spec requires.
    fn default_state_dir(&self) -> PathBuf {
        let absolute =
            |v: &Option<OsString>| v.as_ref().map(PathBuf::from).filter(|p| p.is_absolute());
        if let Some(dir) = absolute(&self.xdg_state_home) {
            dir.join("turnstile")
        } else if let Some(home) = absolute(&self.home) {
            home.join(".local/state/turnstile")
        } else {
            self.temp.join("turnstile")
        }
    }
}

fn server(f: &FileServer, base: Option<&Path>, env: &Env) -> Result<ServerConfig, ConfigError> {
    let listen: SocketAddr = f.listen.parse().map_err(|_| {
        ConfigError::invalid(
            "server.listen",
            quoted(&f.listen),
            "not an IP address and port, e.g. \"127.0.0.1:4433\" or \"[::]:4433\" \
             (host names are not resolved)",
        )
    })?;
    if listen.port() == 0 {
        return Err(ConfigError::invalid(
            "server.listen",
            quoted(&f.listen),
            "port 0 is not allowed: every shard must bind the same port",
        ));
    }
    let shards: usize = ranged("server.shards", f.shards, 0, limits::SHARDS_MAX)?;
    if f.cores.len() as u64 > limits::SHARDS_MAX {
        return Err(ConfigError::invalid(
            "server.cores",
            format!("[...{} entries]", f.cores.len()),
            format!("at most {} entries", limits::SHARDS_MAX),
        ));
    }
    let mut cores = Vec::with_capacity(f.cores.len());
    let mut seen = HashSet::new();
    for &core in &f.cores {
        let core: usize = ranged("server.cores", core, 0, limits::CORE_ID_MAX)?;
        if !seen.insert(core) {
            return Err(ConfigError::invalid(
                "server.cores",
                format!("{:?}", f.cores),
                format!("core {core} is listed twice"),
            ));
        }
        cores.push(core);
    }
    if shards != 0 && !cores.is_empty() && shards != cores.len() {
        return Err(ConfigError::invalid(
            "server.shards",
            shards.to_string(),
            format!(
                "must be 0 or equal to the number of server.cores ({})",
                cores.len()
            ),
        ));
    }
    let state_dir = path(&f.state_dir, base).unwrap_or_else(|| env.default_state_dir());
    let admin_listen = if f.admin_listen.is_empty() {
        None
    } else {
        Some(f.admin_listen.parse::<SocketAddr>().map_err(|_| {
            ConfigError::invalid(
                "server.admin_listen",
                quoted(&f.admin_listen),
                "not an IP address and port, e.g. \"127.0.0.1:9464\" (\"\" = no admin endpoint)",
            )
        })?)
    };
    let drain_timeout = milliseconds(
        "server.drain_timeout_ms",
        f.drain_timeout_ms,
        0,
        limits::DRAIN_TIMEOUT_MS_MAX,
    )?;
    Ok(ServerConfig {
        listen,
        shards,
        cores,
        state_dir,
        drain_timeout,
        runtime_dir: path(&f.runtime_dir, base),
        admin_listen,
    })
}

fn shard(f: &FileShard) -> Result<ShardConfig, ConfigError> {
    let spin_us = f.spin_us.unwrap_or(SPIN_US_DEFAULT);
    let spin = match f.spin.as_str() {
        "fixed" => SpinPolicy::Fixed(ranged("shard.spin_us", spin_us, 0, limits::SPIN_US_MAX)?),
        "adaptive" => SpinPolicy::Adaptive {
            max_us: ranged("shard.spin_us", spin_us, 1, limits::SPIN_US_MAX)?,
        },
        "busy-poll" => match f.spin_us {
            None => SpinPolicy::BusyPoll,
            Some(us) => {
                return Err(ConfigError::invalid(
                    "shard.spin_us",
                    us.to_string(),
                    "has no meaning with shard.spin = \"busy-poll\": remove it",
                ));
            }
        },
        other => {
            return Err(ConfigError::invalid(
                "shard.spin",
                quoted(other),
                "must be one of \"fixed\", \"adaptive\", \"busy-poll\"",
            ));
        }
    };
    let ring_entries: u32 = ranged(
        "shard.ring_entries",
        f.ring_entries,
        limits::RING_ENTRIES_MIN,
        limits::RING_ENTRIES_MAX,
    )?;
    if !ring_entries.is_power_of_two() {
        return Err(ConfigError::invalid(
            "shard.ring_entries",
            ring_entries.to_string(),
            "must be a power of two",
        ));
    }
    let max_sleep = milliseconds(
        "shard.max_sleep_ms",
        f.max_sleep_ms,
        0,
        limits::MAX_SLEEP_MS_MAX,
    )?;
    Ok(ShardConfig {
        spin,
        ring_entries,
        sqpoll: f.sqpoll,
        max_sleep: (!max_sleep.is_zero()).then_some(max_sleep),
    })
}

fn quic(f: &FileQuic) -> Result<QuicConfig, ConfigError> {
    let idle_timeout = milliseconds(
        "quic.idle_timeout_ms",
        f.idle_timeout_ms,
        limits::IDLE_TIMEOUT_MS_MIN,
        limits::IDLE_TIMEOUT_MS_MAX,
    )?;
    let keep_alive = milliseconds(
        "quic.keep_alive_ms",
        f.keep_alive_ms,
        0,
        limits::IDLE_TIMEOUT_MS_MAX,
    )?;
    if keep_alive >= idle_timeout {
        return Err(ConfigError::invalid(
            "quic.keep_alive_ms",
            f.keep_alive_ms.to_string(),
            format!(
                "must be below quic.idle_timeout_ms ({}), or 0 for off",
                f.idle_timeout_ms
            ),
        ));
    }
    let congestion = Congestion::ALL
        .into_iter()
        .find(|c| c.name() == f.congestion)
        .ok_or_else(|| {
            ConfigError::invalid(
                "quic.congestion",
                quoted(&f.congestion),
                "must be one of \"cubic\", \"bbr\", \"newreno\"",
            )
        })?;
    let window = |key: &str, value: i64| {
        ranged::<u64>(
            key,
            value,
            limits::WINDOW_BYTES_MIN,
            limits::WINDOW_BYTES_MAX,
        )
    };
    let stream_receive_window_bytes = window(
        "quic.stream_receive_window_bytes",
        f.stream_receive_window_bytes,
    )?;
    let receive_window_bytes = window("quic.receive_window_bytes", f.receive_window_bytes)?;
    if receive_window_bytes < stream_receive_window_bytes {
        return Err(ConfigError::invalid(
            "quic.receive_window_bytes",
            receive_window_bytes.to_string(),
            format!(
                "must be at least quic.stream_receive_window_bytes ({stream_receive_window_bytes})"
            ),
        ));
    }
    Ok(QuicConfig {
        max_concurrent_bidi_streams: ranged(
            "quic.max_concurrent_bidi_streams",
            f.max_concurrent_bidi_streams,
            1,
            limits::STREAMS_PER_CONNECTION_MAX,
        )?,
        idle_timeout,
        keep_alive: (!keep_alive.is_zero()).then_some(keep_alive),
        max_connections_per_shard: ranged(
            "quic.max_connections_per_shard",
            f.max_connections_per_shard,
            1,
            limits::CONNECTIONS_PER_SHARD_MAX,
        )?,
        max_request_bytes: ranged(
            "quic.max_request_bytes",
            f.max_request_bytes,
            1,
            limits::REQUEST_BYTES_MAX,
        )?,
        retry_above_initials_per_sec: ranged(
            "quic.retry_above_initials_per_sec",
            f.retry_above_initials_per_sec,
            0,
            limits::INITIALS_PER_SEC_MAX,
        )?,
        congestion,
        zero_rtt: f.zero_rtt,
        // Both windows were checked against WINDOW_BYTES_MAX, which is below u32::MAX.
        stream_receive_window_bytes: narrow(
            "quic.stream_receive_window_bytes",
            stream_receive_window_bytes,
        )?,
        receive_window_bytes: narrow("quic.receive_window_bytes", receive_window_bytes)?,
        send_window_bytes: window("quic.send_window_bytes", f.send_window_bytes)?,
    })
}

/// `value` as `u32`; only fails if a limit exceeds `u32::MAX`, which `limits` asserts it does not.
fn narrow(key: &str, value: u64) -> Result<u32, ConfigError> {
    u32::try_from(value)
        .map_err(|_| ConfigError::invalid(key, value.to_string(), "must fit in 32 bits"))
}

fn tls(f: &FileTls, base: Option<&Path>) -> Result<TlsConfig, ConfigError> {
    let cfg = TlsConfig {
        cert: path(&f.cert, base),
        key: path(&f.key, base),
        client_ca: path(&f.client_ca, base),
    };
    match (&cfg.cert, &cfg.key) {
        (Some(_), None) => Err(ConfigError::invalid(
            "tls.key",
            "\"\"",
            "must be set when tls.cert is set (or leave both empty for a development certificate)",
        )),
        (None, Some(_)) => Err(ConfigError::invalid(
            "tls.cert",
            "\"\"",
            "must be set when tls.key is set (or leave both empty for a development certificate)",
        )),
        _ => Ok(cfg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(xdg: Option<&str>, home: Option<&str>) -> Env {
        Env {
            xdg_state_home: xdg.map(OsString::from),
            home: home.map(OsString::from),
            temp: PathBuf::from("/tmp"),
        }
    }

    #[test]
    fn state_dir_follows_xdg_then_home_then_temp() {
        let dir = |xdg, home| env(xdg, home).default_state_dir();
        assert_eq!(dir(Some("/s"), Some("/h")), Path::new("/s/turnstile"));
        assert_eq!(
            dir(None, Some("/h")),
            Path::new("/h/.local/state/turnstile")
        );
        // Relative or empty values are ignored, as the XDG base directory spec requires.
        assert_eq!(
            dir(Some("rel"), Some("/h")),
            Path::new("/h/.local/state/turnstile")
        );
        assert_eq!(dir(Some(""), Some("")), Path::new("/tmp/turnstile"));
        assert_eq!(dir(None, None), Path::new("/tmp/turnstile"));
    }

    #[test]
    fn relative_paths_are_joined_to_the_file_directory() {
        let base = Path::new("/etc/turnstile");
        assert_eq!(path("", Some(base)), None);
        assert_eq!(
            path("c.pem", Some(base)),
            Some(PathBuf::from("/etc/turnstile/c.pem"))
        );
        assert_eq!(
            path("/abs/c.pem", Some(base)),
            Some(PathBuf::from("/abs/c.pem"))
        );
        assert_eq!(path("c.pem", None), Some(PathBuf::from("c.pem")));
    }

    #[test]
    fn ranged_rejects_negative_and_large_values() {
        assert_eq!(ranged::<u32>("k", 5, 1, 10).ok(), Some(5));
        for bad in [-1, 0, 11, i64::MIN, i64::MAX] {
            let err = ranged::<u32>("k", bad, 1, 10).err().map(|e| e.to_string());
            assert_eq!(err, Some(format!("k = {bad}: must be between 1 and 10")));
        }
    }
}
