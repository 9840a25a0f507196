//! Example turnstile agents built on [`turnstile_agent_sdk`], each also a binary
//! `turnstile-agent-<name>`:
//!
//! * [`noop::Noop`]: allows everything (the benchmark agent);
//! * [`waf::Waf`]: regex rules over path, query, header values and body; 403 with rule ids;
//! * [`auth::Auth`]: API key or HMAC-SHA256 signed bearer token; 401 otherwise;
//! * [`ratelimit::RateLimit`]: token bucket per client address or API key; 429 with
//!   `retry-after`;
//! * [`delay::Delay`]: answers after a delay, without holding up other requests;
//! * [`chaos::Chaos`]: misbehaves on request (crash, hang, garbage, oversized frame, slow,
//!   unhealthy, block).
//!
//! Every binary takes the SDK's options (`--socket PATH`, `--config FILE`, `--busy-poll`, ...),
//! logs to stderr, and exits 0 on SIGTERM or SIGINT after removing its socket file.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::process::ExitCode;

use turnstile_agent_sdk::{Agent, ArgsError, ServeOptions, USAGE};

pub mod auth;
pub mod chaos;
pub mod delay;
pub mod noop;
pub mod ratelimit;
pub mod waf;

/// The arguments an agent's binary has left after the SDK's options.
#[derive(Debug, Default)]
pub struct Flags(Vec<String>);

impl Flags {
    /// Removes `--name VALUE` or `--name=VALUE` and returns the value.
    pub fn take(&mut self, name: &str) -> Result<Option<String>, String> {
        let prefix = format!("{name}=");
        if let Some(i) = self.0.iter().position(|a| a.starts_with(&prefix)) {
            let arg = self.0.remove(i);
            return Ok(Some(arg[prefix.len()..].to_owned()));
        }
        let Some(i) = self.0.iter().position(|a| a == name) else {
            return Ok(None);
        };
        if i + 1 >= self.0.len() {
            return Err(format!("{name} needs a value"));
        }
        let value = self.0.remove(i + 1);
        self.0.remove(i);
        Ok(Some(value))
    }
}

/// The `main` of every agent binary: parses the SDK's options, builds the agent with `make`
/// (which takes its own flags from [`Flags`]; `usage` documents them), and serves until SIGTERM
/// or SIGINT. Exit codes: 0 after a signal, 1 if serving fails, 2 for a bad command line.
pub fn run<A: Agent>(usage: &str, make: impl FnOnce(&mut Flags) -> Result<A, String>) -> ExitCode {
    let program = std::env::args().next().unwrap_or_else(|| "agent".into());
    let program = program.rsplit('/').next().unwrap_or("agent").to_owned();
    let (opts, rest) = match ServeOptions::parse(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(ArgsError::Help) => {
            println!("usage: {program} --socket PATH [options]\n{USAGE}\n{usage}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{program}: {e}\n{usage}");
            return ExitCode::from(2);
        }
    };
    let mut flags = Flags(rest);
    let agent = match make(&mut flags) {
        Ok(agent) => agent,
        Err(e) => {
            eprintln!("{program}: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(arg) = flags.0.first() {
        eprintln!("{program}: unknown argument {arg:?}\n{USAGE}\n{usage}");
        return ExitCode::from(2);
    }
    match turnstile_agent_sdk::serve(agent, opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Percent-decoding as the waf rules apply it (shared with the WASM waf).
pub use turnstile_waf_rules::percent_decode;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_take_values() {
        let mut f = Flags(vec!["--delay-ms".into(), "7".into(), "--x=1".into()]);
        assert_eq!(f.take("--delay-ms").unwrap().as_deref(), Some("7"));
        assert_eq!(f.take("--x").unwrap().as_deref(), Some("1"));
        assert_eq!(f.take("--y").unwrap(), None);
        assert!(f.0.is_empty());
        assert!(Flags(vec!["--delay-ms".into()]).take("--delay-ms").is_err());
    }

    #[test]
    fn decoding() {
        assert_eq!(&*percent_decode(b"a%20b+c", true), b"a b c");
        assert_eq!(&*percent_decode(b"a%20b+c", false), b"a b+c");
        assert_eq!(&*percent_decode(b"%2e%2E%2f", false), b"../");
        assert_eq!(&*percent_decode(b"%zz%4", false), b"%zz%4");
        assert_eq!(&*percent_decode(b"%", false), b"%");
        assert!(matches!(
            percent_decode(b"plain", true),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
