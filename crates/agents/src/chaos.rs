//! A misbehaving agent, to test how turnstile copes. The request header `x-chaos` (or else the
//! configured `mode`) picks the behaviour:
//!
//! | mode | behaviour |
//! | --- | --- |
//! | `crash` | the process exits at once (status 70), socket file left behind |
//! | `hang` | never answers this request |
//! | `garbage` | writes 64 random bytes on the connection (never a valid frame header) |
//! | `oversized` | writes a frame header announcing `FRAME_BYTES_MAX + 1` bytes |
//! | `slow:<ms>` | allows after `<ms>`, without holding up other requests |
//! | `restart:<ms>` | allows, and asks turnstile to restart the agent after `<ms>` (`restartRequired`) |
//! | `pause:<ms>` | pauses the request (flow control) for `<ms>`, then resumes and asks for its body; a body chunk arriving while paused gets a 409 block |
//! | `unhealthy` | reports Unhealthy from now on (sent at once), then allows |
//! | `healthy` | reports Healthy again, then allows |
//! | `panic` | the handler panics (the SDK answers with a dropped-reply allow) |
//! | `block` | blocks with 503 |
//! | anything else, `allow` | allows |
//!
//! Configuration (TOML, or the same as JSON): `mode = "allow"`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use turnstile_agent_sdk::{
    Agent, AgentInfo, BodyChunk, ConfigError, Health, Reply, RequestHeaders, RequestKey, Timer,
    parse_config,
};
use turnstile_wire::limits::FRAME_BYTES_MAX;

use crate::delay::parse_delay_ms;

/// Body bytes the chaos agent asks for (it only looks at whether chunks come while paused).
const CHAOS_BODY_BYTES_MAX: u64 = 64 * 1024;

/// Exit status of `crash`.
pub const CRASH_EXIT_CODE: i32 = 70;
/// Bytes written by `garbage`.
pub const GARBAGE_BYTES: usize = 64;

/// One behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Allow.
    Allow,
    /// Exit the process.
    Crash,
    /// Never answer.
    Hang,
    /// Random bytes on the connection.
    Garbage,
    /// A frame header over the limit.
    Oversized,
    /// Allow after this many ms.
    Slow(u64),
    /// Report Unhealthy from now on.
    Unhealthy,
    /// Report Healthy again.
    Healthy,
    /// Panic in the handler.
    Panic,
    /// Block with 503.
    Block,
    /// Allow, and ask turnstile to restart this agent after this many ms (`restartRequired`).
    Restart(u64),
    /// Pause the request (per-request flow control) for this many ms, then resume and ask for
    /// its body; a body chunk that arrives while paused is blocked with 409.
    Pause(u64),
}

impl Mode {
    /// Parses a mode name; unknown names are [`Mode::Allow`], a bad `slow:` is an error.
    pub fn parse(s: &str) -> Result<Mode, String> {
        Ok(match s.trim() {
            "crash" => Mode::Crash,
            "hang" => Mode::Hang,
            "garbage" => Mode::Garbage,
            "oversized" => Mode::Oversized,
            "unhealthy" => Mode::Unhealthy,
            "healthy" => Mode::Healthy,
            "panic" => Mode::Panic,
            "block" => Mode::Block,
            other => match other.split_once(':') {
                Some(("slow", ms)) => Mode::Slow(parse_delay_ms(ms)?),
                Some(("restart", ms)) => Mode::Restart(parse_delay_ms(ms)?),
                Some(("pause", ms)) => Mode::Pause(parse_delay_ms(ms)?),
                _ => Mode::Allow,
            },
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    mode: String,
}

/// The chaos agent.
pub struct Chaos {
    mode: Mutex<Mode>,
    unhealthy: AtomicBool,
    rng: AtomicU64,
    timer: Timer,
    /// Requests paused by `pause:<ms>` and not resumed yet.
    paused: Arc<Mutex<HashSet<RequestKey>>>,
}

impl Chaos {
    /// A chaos agent whose default mode is `allow`.
    pub fn new() -> std::io::Result<Self> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
            | 1;
        Ok(Chaos {
            mode: Mutex::new(Mode::Allow),
            unhealthy: AtomicBool::new(false),
            rng: AtomicU64::new(seed),
            timer: Timer::new()?,
            paused: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// `n` pseudo-random bytes (xorshift; chaos needs no better).
    fn random_bytes(&self, n: usize) -> Vec<u8> {
        let mut x = self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    fn health_now(&self) -> Health {
        if self.unhealthy.load(Relaxed) {
            Health::Unhealthy {
                reason: "chaos: unhealthy requested".into(),
                recoverable: true,
            }
        } else {
            Health::Healthy
        }
    }
}

impl Agent for Chaos {
    fn info(&self) -> AgentInfo {
        AgentInfo::new("chaos", env!("CARGO_PKG_VERSION"))
            .name("turnstile-agent-chaos")
            .request_body(CHAOS_BODY_BYTES_MAX, true)
    }

    fn configure(&self, config: &[u8]) -> Result<(), ConfigError> {
        let c: Config = parse_config(config)?;
        let mode = Mode::parse(&c.mode).map_err(|e| ConfigError::field("mode", e))?;
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
        Ok(())
    }

    fn on_request_headers(&self, req: &RequestHeaders<'_>, reply: Reply) {
        let mode = match req.header_str("x-chaos") {
            Some(h) => Mode::parse(h).unwrap_or(Mode::Allow),
            None => self
                .mode
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        };
        let conn = reply.connection();
        match mode {
            Mode::Allow => reply.allow(),
            Mode::Crash => {
                eprintln!("turnstile-agent-chaos: crash requested; exiting");
                std::process::exit(CRASH_EXIT_CODE);
            }
            Mode::Hang => reply.abandon(),
            Mode::Garbage => {
                let mut bytes = self.random_bytes(GARBAGE_BYTES);
                // Kind byte 0 names no root: the header is invalid whatever the length says.
                bytes[4] = 0;
                if let Err(e) = conn.write_raw(&bytes) {
                    eprintln!("turnstile-agent-chaos: garbage not written: {e}");
                }
                reply.abandon();
            }
            Mode::Oversized => {
                let mut header = (FRAME_BYTES_MAX + 1).to_le_bytes().to_vec();
                header.push(turnstile_wire::FrameKind::AgentToProxy as u8);
                if let Err(e) = conn.write_raw(&header) {
                    eprintln!("turnstile-agent-chaos: oversized header not written: {e}");
                }
                reply.abandon();
            }
            Mode::Slow(ms) => self
                .timer
                .after(Duration::from_millis(ms), move || reply.allow()),
            Mode::Unhealthy | Mode::Healthy => {
                self.unhealthy.store(mode == Mode::Unhealthy, Relaxed);
                conn.report_health(&self.health_now());
                reply.allow();
            }
            Mode::Panic => panic!("chaos: panic requested"),
            Mode::Block => reply.tag("chaos").block(503, "chaos\n"),
            Mode::Restart(ms) => {
                conn.restart_required("chaos: restart requested", ms);
                reply.allow();
            }
            Mode::Pause(ms) => {
                let key = req.key();
                reply.pause();
                self.paused
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key);
                let paused = self.paused.clone();
                self.timer.after(Duration::from_millis(ms), move || {
                    paused
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&key);
                    reply.resume();
                    reply.need_more();
                });
            }
        }
    }

    fn on_request_body(&self, chunk: &BodyChunk<'_>, reply: Reply) {
        let paused = self
            .paused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&chunk.key());
        if paused {
            reply
                .tag("chaos:chunk-while-paused")
                .block(409, "body chunk while paused\n");
        } else if chunk.is_last() {
            reply.allow();
        } else {
            reply.need_more();
        }
    }

    fn health(&self) -> Health {
        self.health_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("slow:25"), Ok(Mode::Slow(25)));
        assert!(Mode::parse("slow:x").is_err());
        assert_eq!(Mode::parse("restart:600"), Ok(Mode::Restart(600)));
        assert_eq!(Mode::parse("pause:100"), Ok(Mode::Pause(100)));
        assert!(Mode::parse("restart:-1").is_err());
        assert_eq!(Mode::parse("whatever"), Ok(Mode::Allow));
        assert_eq!(Mode::parse(" crash "), Ok(Mode::Crash));
        let c = Chaos::new().unwrap();
        assert_eq!(c.random_bytes(64).len(), 64);
        assert_ne!(c.random_bytes(16), c.random_bytes(16));
        c.configure(b"mode = \"block\"").unwrap();
        assert_eq!(*c.mode.lock().unwrap(), Mode::Block);
        assert_eq!(
            c.configure(b"mode = \"slow:no\"").unwrap_err().field,
            "mode"
        );
    }
}
