//! [`ServeOptions`] and the command line every agent shares.

use std::path::PathBuf;

use crate::limits::REPORT_INTERVAL_MS_MIN;

/// Environment variable naming the socket when `--socket` is not given.
pub const SOCKET_ENV: &str = "TURNSTILE_AGENT_SOCKET";

/// The options shared by every agent's command line.
pub const USAGE: &str = "\
options:
  --socket PATH               Unix socket to listen on (default: $TURNSTILE_AGENT_SOCKET)
  --config FILE               configuration applied at start (TOML or JSON); turnstile's
                              `configure` replaces it
  --busy-poll                 spin on reads instead of blocking (dedicated cores only)
  --health-interval-ms N      health report interval (default 1000)
  --metrics-interval-ms N     metrics report interval, 0 = no metrics (default 10000)
  -h, --help                  this text";

/// How [`crate::serve`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// Socket path to listen on.
    pub socket: PathBuf,
    /// Configuration document applied before serving; turnstile's `configure` replaces it.
    pub config_file: Option<PathBuf>,
    /// Connection readers spin on non-blocking reads instead of blocking: lowest latency, one
    /// busy core per connection. For agents on dedicated cores.
    pub busy_poll: bool,
    /// Health report interval (declared in the handshake).
    pub report_interval_ms: u32,
    /// Metrics report interval; 0 = no metrics export.
    pub metrics_interval_ms: u32,
    /// [`crate::serve`] returns on SIGTERM or SIGINT (after a graceful stop) instead of never.
    pub handle_signals: bool,
}

/// A command line [`ServeOptions::parse`] cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    /// `-h` or `--help`: print [`USAGE`] and exit 0.
    Help,
    /// What is wrong.
    Invalid(String),
}

impl std::fmt::Display for ArgsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgsError::Help => f.write_str(USAGE),
            ArgsError::Invalid(e) => write!(f, "{e}\n{USAGE}"),
        }
    }
}

impl std::error::Error for ArgsError {}

impl ServeOptions {
    /// Defaults for an agent on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ServeOptions {
            socket: socket.into(),
            config_file: None,
            busy_poll: false,
            report_interval_ms: 1000,
            metrics_interval_ms: 10_000,
            handle_signals: true,
        }
    }

    /// Options from the process's command line; any other argument is an error.
    pub fn from_args() -> Result<Self, ArgsError> {
        let (opts, rest) = Self::parse(std::env::args().skip(1))?;
        match rest.first() {
            Some(arg) => Err(ArgsError::Invalid(format!("unknown argument {arg:?}"))),
            None => Ok(opts),
        }
    }

    /// Parses the shared options out of `args` (without the program name). Returns the
    /// arguments it does not know, in order, for the agent's own flags. `--flag value` and
    /// `--flag=value` both work.
    pub fn parse<I: IntoIterator<Item = String>>(
        args: I,
    ) -> Result<(Self, Vec<String>), ArgsError> {
        let mut socket = std::env::var_os(SOCKET_ENV).map(PathBuf::from);
        let mut opts = ServeOptions::new("");
        let mut rest = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| ArgsError::Invalid(format!("{name} needs a value")))
            };
            match flag.as_str() {
                "-h" | "--help" => return Err(ArgsError::Help),
                "--socket" => socket = Some(PathBuf::from(value("--socket")?)),
                "--config" => opts.config_file = Some(PathBuf::from(value("--config")?)),
                "--busy-poll" => opts.busy_poll = true,
                "--health-interval-ms" => {
                    opts.report_interval_ms = interval(&flag, &value(&flag)?, false)?;
                }
                "--metrics-interval-ms" => {
                    opts.metrics_interval_ms = interval(&flag, &value(&flag)?, true)?;
                }
                _ => rest.push(arg),
            }
        }
        opts.socket = socket
            .filter(|s| !s.as_os_str().is_empty())
            .ok_or_else(|| {
                ArgsError::Invalid(format!("no socket: pass --socket PATH or set {SOCKET_ENV}"))
            })?;
        Ok((opts, rest))
    }
}

fn interval(flag: &str, v: &str, zero_ok: bool) -> Result<u32, ArgsError> {
    let n: u32 = v
        .parse()
        .map_err(|_| ArgsError::Invalid(format!("{flag}: {v:?} is not a number of ms")))?;
    if (n == 0 && zero_ok) || n >= REPORT_INTERVAL_MS_MIN {
        Ok(n)
    } else {
        Err(ArgsError::Invalid(format!(
            "{flag}: at least {REPORT_INTERVAL_MS_MIN} ms"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(ServeOptions, Vec<String>), ArgsError> {
        ServeOptions::parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn flags() {
        let (o, rest) = parse(&[
            "--socket",
            "/tmp/a.sock",
            "--busy-poll",
            "--delay-ms",
            "5",
            "--config=c.toml",
            "--health-interval-ms=50",
            "--metrics-interval-ms",
            "0",
        ])
        .unwrap();
        assert_eq!(o.socket, PathBuf::from("/tmp/a.sock"));
        assert!(o.busy_poll);
        assert_eq!(o.config_file, Some(PathBuf::from("c.toml")));
        assert_eq!((o.report_interval_ms, o.metrics_interval_ms), (50, 0));
        assert_eq!(rest, ["--delay-ms", "5"]);
        assert_eq!(parse(&["--help"]).unwrap_err(), ArgsError::Help);
        assert!(parse(&["--socket"]).is_err());
        assert!(parse(&["--socket", "s", "--health-interval-ms", "1"]).is_err());
        assert!(parse(&["--socket", "s", "--health-interval-ms", "x"]).is_err());
    }
}
