//! Authentication: an API key from a configured set, or an HMAC-SHA256 signed bearer token.
//! Valid: allow, with the request header `x-auth-subject` set to the caller's subject (replacing
//! any the client sent). Missing or invalid: block 401 with `www-authenticate`.
//!
//! Tokens: `authorization: Bearer <payload>.<hex HMAC-SHA256 of payload>` where the payload is
//! `<subject>` or `<subject>:<expiry, Unix seconds>`.
//!
//! Configuration (TOML, or the same as JSON):
//!
//! ```toml
//! hmac_secret = "change me"           # "" = tokens refused
//! api_key_header = "x-api-key"
//! subject_header = "x-auth-subject"
//!
//! [api_keys]                          # key = subject; or a list: api_keys = ["k1", "k2"]
//! "k-3f9a0c" = "billing-service"
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ring::hmac;
use serde::Deserialize;
use turnstile_agent_sdk::{Agent, AgentInfo, ConfigError, Reply, RequestHeaders, parse_config};

/// Most API keys one configuration may hold.
pub const API_KEYS_MAX: usize = 100_000;
/// Longest bearer token accepted.
pub const TOKEN_BYTES_MAX: usize = 4096;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ApiKeys {
    List(Vec<String>),
    Map(HashMap<String, String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    api_keys: ApiKeys,
    hmac_secret: String,
    api_key_header: String,
    subject_header: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api_keys: ApiKeys::List(Vec::new()),
            hmac_secret: String::new(),
            api_key_header: "x-api-key".into(),
            subject_header: "x-auth-subject".into(),
        }
    }
}

struct Settings {
    keys: HashMap<Vec<u8>, String>,
    hmac: Option<hmac::Key>,
    api_key_header: String,
    subject_header: String,
}

impl Settings {
    fn new(c: Config) -> Result<Settings, ConfigError> {
        let keys: HashMap<Vec<u8>, String> = match c.api_keys {
            ApiKeys::List(l) => l
                .into_iter()
                .map(|k| (k.into_bytes(), "api-key".into()))
                .collect(),
            ApiKeys::Map(m) => m.into_iter().map(|(k, s)| (k.into_bytes(), s)).collect(),
        };
        if keys.len() > API_KEYS_MAX {
            return Err(ConfigError::field(
                "api_keys",
                format!("at most {API_KEYS_MAX}"),
            ));
        }
        if keys.keys().any(Vec::is_empty) {
            return Err(ConfigError::field("api_keys", "an empty key"));
        }
        for (name, field) in [
            (&c.api_key_header, "api_key_header"),
            (&c.subject_header, "subject_header"),
        ] {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(ConfigError::field(
                    field,
                    "a header name: letters, digits and '-'",
                ));
            }
        }
        Ok(Settings {
            keys,
            hmac: (!c.hmac_secret.is_empty())
                .then(|| hmac::Key::new(hmac::HMAC_SHA256, c.hmac_secret.as_bytes())),
            api_key_header: c.api_key_header.to_ascii_lowercase(),
            subject_header: c.subject_header.to_ascii_lowercase(),
        })
    }

    /// The subject of a valid credential, or the reason code of the refusal.
    fn check(&self, req: &RequestHeaders<'_>, now_s: u64) -> Result<String, &'static str> {
        if let Some(key) = req.header(&self.api_key_header) {
            return self.keys.get(key).cloned().ok_or("auth:invalid-api-key");
        }
        let Some(auth) = req.header("authorization") else {
            return Err("auth:missing");
        };
        let token = auth
            .strip_prefix(b"Bearer ")
            .or_else(|| auth.strip_prefix(b"bearer "))
            .ok_or("auth:not-bearer")?;
        self.verify_token(token, now_s)
    }

    fn verify_token(&self, token: &[u8], now_s: u64) -> Result<String, &'static str> {
        let key = self.hmac.as_ref().ok_or("auth:tokens-disabled")?;
        if token.len() > TOKEN_BYTES_MAX {
            return Err("auth:malformed-token");
        }
        let dot = token
            .iter()
            .rposition(|&b| b == b'.')
            .ok_or("auth:malformed-token")?;
        let (payload, sig) = (&token[..dot], &token[dot + 1..]);
        let sig = hex_decode(sig).ok_or("auth:malformed-token")?;
        hmac::verify(key, payload, &sig).map_err(|_| "auth:bad-signature")?;
        let payload = std::str::from_utf8(payload).map_err(|_| "auth:malformed-token")?;
        let subject = match payload.rsplit_once(':') {
            Some((subject, exp)) if !exp.is_empty() && exp.bytes().all(|b| b.is_ascii_digit()) => {
                let exp: u64 = exp.parse().map_err(|_| "auth:malformed-token")?;
                if now_s >= exp {
                    return Err("auth:expired");
                }
                subject
            }
            _ => payload,
        };
        if subject.is_empty() {
            return Err("auth:malformed-token");
        }
        Ok(subject.to_owned())
    }
}

/// Lowercase or uppercase hex to bytes.
fn hex_decode(hex: &[u8]) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|p| {
            let h = (p[0] as char).to_digit(16)?;
            let l = (p[1] as char).to_digit(16)?;
            u8::try_from(h * 16 + l).ok()
        })
        .collect()
}

/// Signs a token for `payload` with `secret` (for clients and tests): `<payload>.<hex hmac>`.
pub fn sign_token(secret: &[u8], payload: &str) -> String {
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret),
        payload.as_bytes(),
    );
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{payload}.{hex}")
}

/// The auth agent.
pub struct Auth {
    settings: ArcSwap<Settings>,
}

impl Auth {
    /// An auth agent with no keys and no secret (everything is refused until configured).
    pub fn new() -> Self {
        // The default configuration has valid header names and no keys: it cannot be refused.
        let settings = Settings::new(Config::default()).expect("default auth config is valid");
        Auth {
            settings: ArcSwap::from_pointee(settings),
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Self::new()
    }
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Agent for Auth {
    fn info(&self) -> AgentInfo {
        AgentInfo::new("auth", env!("CARGO_PKG_VERSION")).name("turnstile-agent-auth")
    }

    fn configure(&self, config: &[u8]) -> Result<(), ConfigError> {
        self.settings
            .store(Arc::new(Settings::new(parse_config(config)?)?));
        Ok(())
    }

    fn on_request_headers(&self, req: &RequestHeaders<'_>, reply: Reply) {
        let s = self.settings.load();
        match s.check(req, unix_now_s()) {
            Ok(subject) => reply
                .set_request_header(s.subject_header.as_bytes(), subject.as_bytes())
                .allow(),
            Err(reason) => reply
                .tag("auth")
                .reason(reason)
                .block_header("www-authenticate", "Bearer realm=\"turnstile\"")
                .block(401, "unauthorized\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let c: Config = parse_config(b"hmac_secret = \"s3cret\"\napi_keys = [\"k1\"]").unwrap();
        let s = Settings::new(c).unwrap();
        let t = sign_token(b"s3cret", "alice@example.com");
        assert_eq!(
            s.verify_token(t.as_bytes(), 0).unwrap(),
            "alice@example.com"
        );
        let t = sign_token(b"s3cret", "bob:1000");
        assert_eq!(s.verify_token(t.as_bytes(), 999).unwrap(), "bob");
        assert_eq!(s.verify_token(t.as_bytes(), 1000), Err("auth:expired"));
        let forged = sign_token(b"other", "alice");
        assert_eq!(
            s.verify_token(forged.as_bytes(), 0),
            Err("auth:bad-signature")
        );
        assert_eq!(s.verify_token(b"alice", 0), Err("auth:malformed-token"));
        assert_eq!(s.verify_token(b"alice.zz", 0), Err("auth:malformed-token"));
        assert_eq!(s.keys.get(&b"k1"[..]).map(String::as_str), Some("api-key"));
        assert_eq!(hex_decode(b"0aFF"), Some(vec![10, 255]));
    }

    #[test]
    fn config() {
        let c: Config = parse_config(b"[api_keys]\nk2 = \"svc\"").unwrap();
        let s = Settings::new(c).unwrap();
        assert_eq!(s.keys.get(&b"k2"[..]).map(String::as_str), Some("svc"));
        assert!(s.hmac.is_none());
        let c: Config = parse_config(b"subject_header = \"bad header\"").unwrap();
        assert_eq!(Settings::new(c).err().unwrap().field, "subject_header");
    }
}
