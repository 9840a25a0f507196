//! Rate limiting: a token bucket per API key (the `x-api-key` header, when present) or else per
//! client IP address. An empty bucket blocks with 429 and `retry-after` (seconds). Buckets are
//! bounded: each of 16 shards keeps two generations of at most `max_buckets / 32` buckets, and a
//! key untouched for a whole generation is forgotten (it comes back full, which an idle key would
//! be anyway).
//!
//! Configuration (TOML, or the same as JSON); every key is optional:
//!
//! ```toml
//! rate_per_second = 10.0   # tokens added per second
//! burst = 20               # bucket size: requests allowed at once
//! max_buckets = 100000
//! key_header = "x-api-key" # "" = always by client address
//! status = 429
//! ```

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use serde::Deserialize;
use turnstile_agent_sdk::{Agent, AgentInfo, ConfigError, Reply, RequestHeaders, parse_config};

/// Shards of the bucket table.
pub const SHARDS: usize = 16;
/// Largest `max_buckets`.
pub const BUCKETS_MAX: usize = 10_000_000;
/// Longest key (header value) used as is; longer ones are hashed.
pub const KEY_BYTES_MAX: usize = 256;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    rate_per_second: f64,
    burst: u32,
    max_buckets: usize,
    key_header: String,
    status: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rate_per_second: 10.0,
            burst: 20,
            max_buckets: 100_000,
            key_header: "x-api-key".into(),
            status: 429,
        }
    }
}

impl Config {
    fn validate(self) -> Result<Config, ConfigError> {
        if !(self.rate_per_second.is_finite() && self.rate_per_second > 0.0) {
            return Err(ConfigError::field(
                "rate_per_second",
                "must be a number above 0",
            ));
        }
        if self.burst == 0 {
            return Err(ConfigError::field("burst", "must be at least 1"));
        }
        if !(2 * SHARDS..=BUCKETS_MAX).contains(&self.max_buckets) {
            return Err(ConfigError::field(
                "max_buckets",
                format!("must be from {} to {BUCKETS_MAX}", 2 * SHARDS),
            ));
        }
        if !(100..=599).contains(&self.status) {
            return Err(ConfigError::field(
                "status",
                "must be an HTTP status (100..=599)",
            ));
        }
        Ok(Config {
            key_header: self.key_header.to_ascii_lowercase(),
            ..self
        })
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// One shard: the current generation and the one before it.
#[derive(Default)]
struct Shard {
    current: HashMap<Vec<u8>, Bucket>,
    previous: HashMap<Vec<u8>, Bucket>,
}

struct Limiter {
    config: Config,
    shards: Vec<Mutex<Shard>>,
}

impl Limiter {
    fn new(config: Config) -> Self {
        Limiter {
            config,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Takes a token for `key` at `now`: `Ok(tokens left)` or `Err(seconds until one is back)`.
    fn take(&self, key: Vec<u8>, now: Instant) -> Result<u32, u64> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let shard = &self.shards[(h.finish() % SHARDS as u64) as usize];
        // Only map operations run under the lock; a poisoned shard still holds valid buckets.
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let generation_max = self.config.max_buckets / (2 * SHARDS);
        let burst = f64::from(self.config.burst);
        let bucket = match shard.current.get(&key) {
            Some(b) => *b,
            None => {
                let b = shard.previous.remove(&key).unwrap_or(Bucket {
                    tokens: burst,
                    last: now,
                });
                if shard.current.len() >= generation_max {
                    shard.previous = std::mem::take(&mut shard.current);
                }
                b
            }
        };
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        let mut tokens = (bucket.tokens + elapsed * self.config.rate_per_second).min(burst);
        let result = if tokens >= 1.0 {
            tokens -= 1.0;
            // tokens is within 0..burst, a u32.
            Ok(tokens as u32)
        } else {
            Err(((1.0 - tokens) / self.config.rate_per_second)
                .ceil()
                .max(1.0) as u64)
        };
        shard.current.insert(key, Bucket { tokens, last: now });
        result
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(PoisonError::into_inner);
                s.current.len() + s.previous.len()
            })
            .sum()
    }
}

/// The rate limit agent.
pub struct RateLimit {
    limiter: ArcSwap<Limiter>,
}

impl RateLimit {
    /// A limiter with the default configuration (10/s, burst 20).
    pub fn new() -> Self {
        RateLimit {
            limiter: ArcSwap::from_pointee(Limiter::new(Config::default())),
        }
    }

    /// Buckets currently held.
    pub fn buckets(&self) -> usize {
        self.limiter.load().len()
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// The bucket key of a request: `k:<api key>` or `ip:<address>`.
fn key_of(req: &RequestHeaders<'_>, key_header: &str) -> Vec<u8> {
    if let Some(v) = (!key_header.is_empty())
        .then(|| req.header(key_header))
        .flatten()
    {
        let mut key = b"k:".to_vec();
        if v.len() <= KEY_BYTES_MAX {
            key.extend_from_slice(v);
        } else {
            let mut h = DefaultHasher::new();
            v.hash(&mut h);
            key.extend_from_slice(&h.finish().to_le_bytes());
        }
        return key;
    }
    match req.client_ip() {
        Some(ip) => format!("ip:{ip}").into_bytes(),
        None => b"ip:unknown".to_vec(),
    }
}

impl Agent for RateLimit {
    fn info(&self) -> AgentInfo {
        AgentInfo::new("ratelimit", env!("CARGO_PKG_VERSION")).name("turnstile-agent-ratelimit")
    }

    fn configure(&self, config: &[u8]) -> Result<(), ConfigError> {
        let config = parse_config::<Config>(config)?.validate()?;
        self.limiter.store(Arc::new(Limiter::new(config)));
        Ok(())
    }

    fn on_request_headers(&self, req: &RequestHeaders<'_>, reply: Reply) {
        let limiter = self.limiter.load();
        match limiter.take(key_of(req, &limiter.config.key_header), Instant::now()) {
            Ok(left) => reply
                .set_response_header("x-ratelimit-remaining", left.to_string())
                .allow(),
            Err(retry_after_s) => reply
                .tag("ratelimit")
                .reason("ratelimit:exceeded")
                .block_header("retry-after", retry_after_s.to_string())
                .block(limiter.config.status, "too many requests\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_and_blocks() {
        let c: Config = parse_config(b"rate_per_second = 2.0\nburst = 3").unwrap();
        let l = Limiter::new(c.validate().unwrap());
        let t0 = Instant::now();
        let k = || b"ip:192.0.2.1".to_vec();
        assert_eq!(l.take(k(), t0), Ok(2));
        assert_eq!(l.take(k(), t0), Ok(1));
        assert_eq!(l.take(k(), t0), Ok(0));
        assert_eq!(l.take(k(), t0), Err(1));
        assert_eq!(l.take(b"ip:other".to_vec(), t0), Ok(2));
        assert_eq!(l.take(k(), t0 + Duration::from_millis(500)), Ok(0));
        assert_eq!(l.take(k(), t0 + Duration::from_secs(60)), Ok(2));
    }

    #[test]
    fn buckets_are_bounded() {
        let c = Config {
            max_buckets: 64,
            ..Config::default()
        };
        let l = Limiter::new(c.validate().unwrap());
        let now = Instant::now();
        for i in 0..10_000u32 {
            let _ = l.take(i.to_le_bytes().to_vec(), now);
        }
        assert!(l.len() <= 64, "{}", l.len());
    }

    #[test]
    fn config_errors() {
        let bad = |doc: &str| {
            parse_config::<Config>(doc.as_bytes())
                .unwrap()
                .validate()
                .unwrap_err()
                .field
        };
        assert_eq!(bad("rate_per_second = 0.0"), "rate_per_second");
        assert_eq!(bad("burst = 0"), "burst");
        assert_eq!(bad("max_buckets = 1"), "max_buckets");
        assert_eq!(bad("status = 1000"), "status");
    }
}
