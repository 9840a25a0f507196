//! Answers every request after a delay (allow), without holding up other requests: replies wait
//! on a [`Timer`] thread, not in the connection's reader.
//!
//! The delay comes from, in order: the request header `x-delay-ms`, the configuration, the
//! `--delay-ms` flag, 50 ms. Configuration (TOML, or the same as JSON):
//!
//! ```toml
//! delay_ms = 50
//! ```

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Deserialize;
use turnstile_agent_sdk::{
    Agent, AgentInfo, ConfigError, Reply, RequestHeaders, Timer, parse_config,
};

/// Delay when nothing else says.
pub const DEFAULT_DELAY_MS: u64 = 50;
/// Longest delay accepted (from any source).
pub const DELAY_MS_MAX: u64 = 600_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    delay_ms: Option<u64>,
}

/// Parses a delay in ms, at most [`DELAY_MS_MAX`].
pub fn parse_delay_ms(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(ms) if ms <= DELAY_MS_MAX => Ok(ms),
        _ => Err(format!("{text:?}: a delay is 0 to {DELAY_MS_MAX} ms")),
    }
}

/// The delay agent.
pub struct Delay {
    delay_ms: AtomicU64,
    timer: Timer,
    /// Declared `maxConcurrency` per connection (`None` = the SDK's default).
    max_concurrency: Option<u32>,
}

impl Delay {
    /// Answers after `delay_ms` unless configured otherwise.
    pub fn new(delay_ms: u64) -> std::io::Result<Self> {
        Ok(Delay {
            delay_ms: AtomicU64::new(delay_ms.min(DELAY_MS_MAX)),
            timer: Timer::new()?,
            max_concurrency: None,
        })
    }

    /// Declares at most `n` requests in flight per connection (at least 1).
    pub fn with_max_concurrency(mut self, n: u32) -> Self {
        self.max_concurrency = Some(n.max(1));
        self
    }
}

impl Agent for Delay {
    fn info(&self) -> AgentInfo {
        let info = AgentInfo::new("delay", env!("CARGO_PKG_VERSION")).name("turnstile-agent-delay");
        match self.max_concurrency {
            Some(n) => info.max_concurrency(n),
            None => info,
        }
    }

    fn configure(&self, config: &[u8]) -> Result<(), ConfigError> {
        let c: Config = parse_config(config)?;
        if let Some(ms) = c.delay_ms {
            if ms > DELAY_MS_MAX {
                return Err(ConfigError::field(
                    "delay_ms",
                    format!("at most {DELAY_MS_MAX}"),
                ));
            }
            self.delay_ms.store(ms, Relaxed);
        }
        Ok(())
    }

    fn on_request_headers(&self, req: &RequestHeaders<'_>, reply: Reply) {
        let ms = req
            .header_str("x-delay-ms")
            .and_then(|v| parse_delay_ms(v).ok())
            .unwrap_or_else(|| self.delay_ms.load(Relaxed));
        if ms == 0 {
            return reply.allow();
        }
        self.timer
            .after(Duration::from_millis(ms), move || reply.allow());
    }
}
