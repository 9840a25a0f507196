//! A regex WAF: rules over the path, the query, header values and the body (raw and
//! percent-decoded). A match blocks with 403 (configurable) and the ids of every matching rule in
//! the audit.
//!
//! Configuration (TOML, or the same as JSON); every key is optional:
//!
//! ```toml
//! default_rules = true        # keep the built-in rules (see DEFAULT_RULES)
//! disabled_rules = ["913100"] # rule ids to switch off
//! inspect_body = true         # subscribe requestBody, buffered by turnstile
//! max_body_bytes = 65536      # bytes of body inspected (the rest is not looked at)
//! block_status = 403
//!
//! [[rules]]
//! id = "100001"
//! description = "internal path"
//! pattern = "^/internal/"
//! targets = ["path"]          # any of "path", "query", "headers", "body"; default all
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use regex::bytes::RegexSet;
use serde::Deserialize;
use turnstile_agent_sdk::{
    Agent, AgentInfo, BodyChunk, CancelReason, ConfigError, Reply, RequestHeaders, RequestKey,
    parse_config,
};

use crate::percent_decode;

/// The built-in rules: (id, description, pattern, targets).
pub const DEFAULT_RULES: &[(&str, &str, &str, &[Target])] = &[
    (
        "942100",
        "SQL injection: UNION SELECT",
        r"(?i)\bunion(?:\s|/\*.*?\*/)+(?:all(?:\s|/\*.*?\*/)+)?select\b",
        ALL_TARGETS,
    ),
    (
        "942130",
        "SQL injection: tautology",
        r#"(?i)['"]\s*or\s+['"]?\w+['"]?\s*=\s*['"]?\w+"#,
        &[Target::Query, Target::Body, Target::Headers],
    ),
    (
        "941100",
        "XSS: script tag",
        r"(?i)<script[\s>/]",
        ALL_TARGETS,
    ),
    (
        "941110",
        "XSS: event handler attribute",
        r"(?i)<[^>]*\bon(?:error|load|mouseover|focus|click)\s*=",
        ALL_TARGETS,
    ),
    (
        "930100",
        "path traversal",
        r"\.\.[/\\]",
        &[Target::Path, Target::Query, Target::Body],
    ),
    (
        "913100",
        "security scanner user agent",
        r"(?i)sqlmap|nikto|nmap|masscan|dirbuster|wpscan",
        &[Target::Headers],
    ),
];

const ALL_TARGETS: &[Target] = &[Target::Path, Target::Query, Target::Headers, Target::Body];

/// Most rules one configuration may hold.
pub const RULES_MAX: usize = 1024;
/// Most request bodies buffered at once; past it bodies go uninspected (tagged).
pub const BODIES_MAX: usize = 65_536;
/// Largest `max_body_bytes`.
pub const BODY_BYTES_MAX: u64 = 16 << 20;

/// Where a rule looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The path (raw and percent-decoded).
    Path,
    /// The query (raw and form-decoded).
    Query,
    /// Every header value.
    Headers,
    /// The request body (raw and form-decoded).
    Body,
}

impl Target {
    fn bit(self) -> u8 {
        1 << self as u8
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    default_rules: bool,
    disabled_rules: Vec<String>,
    inspect_body: bool,
    max_body_bytes: u64,
    block_status: u16,
    rules: Vec<RuleConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_rules: true,
            disabled_rules: Vec::new(),
            inspect_body: true,
            max_body_bytes: 64 * 1024,
            block_status: 403,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    id: String,
    #[serde(default)]
    description: String,
    pattern: String,
    #[serde(default)]
    targets: Vec<Target>,
}

struct Rule {
    id: String,
    targets: u8,
}

/// A compiled rule set.
struct Rules {
    set: RegexSet,
    rules: Vec<Rule>,
    inspect_body: bool,
    max_body_bytes: u64,
    block_status: u16,
}

impl Rules {
    fn compile(c: Config) -> Result<Rules, ConfigError> {
        if !(100..=599).contains(&c.block_status) {
            return Err(ConfigError::field(
                "block_status",
                "must be an HTTP status (100..=599)",
            ));
        }
        if c.max_body_bytes > BODY_BYTES_MAX {
            return Err(ConfigError::field(
                "max_body_bytes",
                format!("at most {BODY_BYTES_MAX}"),
            ));
        }
        let mut specs: Vec<(String, String, u8)> = Vec::new();
        if c.default_rules {
            for (id, _, pattern, targets) in DEFAULT_RULES {
                let mask = targets.iter().fold(0, |m, t| m | t.bit());
                specs.push(((*id).to_owned(), (*pattern).to_owned(), mask));
            }
        }
        for (i, r) in c.rules.into_iter().enumerate() {
            if r.id.is_empty() {
                return Err(ConfigError::field(
                    format!("rules[{i}].id"),
                    "must not be empty",
                ));
            }
            let targets = if r.targets.is_empty() {
                ALL_TARGETS
            } else {
                &r.targets[..]
            };
            let mask = targets.iter().fold(0, |m, t| m | t.bit());
            if let Err(e) = regex::bytes::Regex::new(&r.pattern) {
                return Err(ConfigError::field(
                    format!("rules[{i}].pattern"),
                    e.to_string(),
                ));
            }
            let _ = r.description;
            specs.push((r.id, r.pattern, mask));
        }
        specs.retain(|(id, _, _)| !c.disabled_rules.contains(id));
        if specs.len() > RULES_MAX {
            return Err(ConfigError::field(
                "rules",
                format!("at most {RULES_MAX} rules"),
            ));
        }
        let set = RegexSet::new(specs.iter().map(|(_, p, _)| p.as_str()))
            .map_err(|e| ConfigError::field("rules", e.to_string()))?;
        Ok(Rules {
            set,
            rules: specs
                .into_iter()
                .map(|(id, _, targets)| Rule { id, targets })
                .collect(),
            inspect_body: c.inspect_body,
            max_body_bytes: c.max_body_bytes,
            block_status: c.block_status,
        })
    }

    /// Adds the rules matching `input` for `target` to `hits`, raw and decoded.
    fn scan(&self, target: Target, input: &[u8], plus_is_space: bool, hits: &mut Vec<usize>) {
        let decoded = percent_decode(input, plus_is_space);
        let inputs: &[&[u8]] = if decoded.as_ref() == input {
            &[input]
        } else {
            &[input, &decoded]
        };
        for bytes in inputs {
            for i in self.set.matches(bytes).iter() {
                if self.rules[i].targets & target.bit() != 0 && !hits.contains(&i) {
                    hits.push(i);
                }
            }
        }
    }

    fn verdict(&self, hits: &[usize], reply: Reply) {
        if hits.is_empty() {
            return reply.allow();
        }
        let mut reply = reply.tag("waf");
        let mut body = String::from("blocked by waf:");
        for &i in hits {
            let id = &self.rules[i].id;
            body.push(' ');
            body.push_str(id);
            reply = reply.rule(id.clone());
        }
        body.push('\n');
        reply.block(self.block_status, body);
    }
}

/// The WAF agent.
pub struct Waf {
    rules: ArcSwap<Rules>,
    bodies: Mutex<HashMap<RequestKey, Vec<u8>>>,
}

impl Waf {
    /// A WAF with the built-in rules.
    pub fn new() -> Self {
        // The built-in rules are tested to compile (tests::defaults_compile).
        let rules = Rules::compile(Config::default()).expect("built-in rules compile");
        Waf {
            rules: ArcSwap::from_pointee(rules),
            bodies: Mutex::new(HashMap::new()),
        }
    }

    fn bodies(&self) -> MutexGuard<'_, HashMap<RequestKey, Vec<u8>>> {
        self.bodies.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Waf {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a body will follow these headers.
fn expects_body(req: &RequestHeaders<'_>) -> bool {
    if let Some(len) = req.header_str("content-length") {
        return len.trim().parse::<u64>().map_or(true, |n| n > 0);
    }
    req.header("transfer-encoding").is_some() || matches!(req.method(), "POST" | "PUT" | "PATCH")
}

impl Agent for Waf {
    fn info(&self) -> AgentInfo {
        let rules = self.rules.load();
        let info = AgentInfo::new("waf", env!("CARGO_PKG_VERSION")).name("turnstile-agent-waf");
        if rules.inspect_body && rules.max_body_bytes > 0 {
            info.request_body(rules.max_body_bytes, false)
        } else {
            info
        }
    }

    fn configure(&self, config: &[u8]) -> Result<(), ConfigError> {
        let rules = Rules::compile(parse_config(config)?)?;
        self.rules.store(Arc::new(rules));
        Ok(())
    }

    fn on_request_headers(&self, req: &RequestHeaders<'_>, reply: Reply) {
        let rules = self.rules.load();
        let mut hits = Vec::new();
        rules.scan(Target::Path, req.path().as_bytes(), false, &mut hits);
        rules.scan(Target::Query, req.query().as_bytes(), true, &mut hits);
        for (_, value) in req.headers() {
            rules.scan(Target::Headers, value, false, &mut hits);
        }
        if !hits.is_empty()
            || !rules.inspect_body
            || rules.max_body_bytes == 0
            || !expects_body(req)
        {
            return rules.verdict(&hits, reply);
        }
        let mut bodies = self.bodies();
        if bodies.len() >= BODIES_MAX {
            drop(bodies);
            return reply.tag("waf:body-not-inspected").allow();
        }
        bodies.insert(req.key(), Vec::new());
        drop(bodies);
        reply.need_more();
    }

    fn on_request_body(&self, chunk: &BodyChunk<'_>, reply: Reply) {
        let rules = self.rules.load();
        let max = usize::try_from(rules.max_body_bytes).unwrap_or(usize::MAX);
        let mut bodies = self.bodies();
        let Some(body) = bodies.get_mut(&chunk.key()) else {
            // Decided on the headers already (turnstile sends an inline chunk right after them).
            drop(bodies);
            return reply.allow();
        };
        let done = {
            let room = max.saturating_sub(body.len());
            let data = chunk.data();
            body.extend_from_slice(&data[..data.len().min(room)]);
            chunk.is_last() || body.len() >= max
        };
        if !done {
            drop(bodies);
            return reply.need_more();
        }
        let body = bodies.remove(&chunk.key()).unwrap_or_default();
        drop(bodies);
        let mut hits = Vec::new();
        rules.scan(Target::Body, &body, true, &mut hits);
        rules.verdict(&hits, reply);
    }

    fn on_cancel(&self, key: RequestKey, _reason: &CancelReason) {
        self.bodies().remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(rules: &Rules, target: Target, input: &str) -> Vec<String> {
        let mut h = Vec::new();
        rules.scan(target, input.as_bytes(), true, &mut h);
        h.iter().map(|&i| rules.rules[i].id.clone()).collect()
    }

    #[test]
    fn defaults_compile_and_match() {
        let r = Rules::compile(Config::default()).unwrap();
        assert_eq!(hits(&r, Target::Query, "q=1 union select 2"), ["942100"]);
        assert_eq!(
            hits(&r, Target::Query, "q=1%20UNION%20ALL%20SELECT+2"),
            ["942100"]
        );
        assert_eq!(hits(&r, Target::Query, "q=1+union+select+2"), ["942100"]);
        assert_eq!(hits(&r, Target::Body, "name=' or 1=1"), ["942130"]);
        assert_eq!(
            hits(&r, Target::Body, "<script>alert(1)</script>"),
            ["941100"]
        );
        assert_eq!(
            hits(&r, Target::Path, "/static/%2e%2e/%2e%2e/etc/passwd"),
            ["930100"]
        );
        assert_eq!(hits(&r, Target::Headers, "sqlmap/1.7"), ["913100"]);
        assert!(
            hits(&r, Target::Path, "/sqlmap").is_empty(),
            "913100 is headers only"
        );
        assert!(hits(&r, Target::Query, "q=the union of select committees").is_empty());
        assert!(hits(&r, Target::Query, "page=2&sort=name").is_empty());
    }

    #[test]
    fn config_rules_and_errors() {
        let c: Config = parse_config(
            br#"
            disabled_rules = ["913100"]
            block_status = 406
            [[rules]]
            id = "100001"
            pattern = "^/internal/"
            targets = ["path"]
            "#,
        )
        .unwrap();
        let r = Rules::compile(c).unwrap();
        assert_eq!(r.block_status, 406);
        assert_eq!(hits(&r, Target::Path, "/internal/x"), ["100001"]);
        assert!(hits(&r, Target::Headers, "sqlmap").is_empty());
        let bad = |doc: &str| {
            Rules::compile(parse_config(doc.as_bytes()).unwrap())
                .err()
                .unwrap()
        };
        assert_eq!(
            bad("[[rules]]\nid = \"1\"\npattern = \"(\"").field,
            "rules[0].pattern"
        );
        assert_eq!(bad("block_status = 42").field, "block_status");
        assert!(parse_config::<Config>(b"unknown = 1").is_err());
        let json: Config = parse_config(br#"{"default_rules": false, "rules": []}"#).unwrap();
        assert!(Rules::compile(json).unwrap().rules.is_empty());
    }
}
