//! A regex WAF: rules over the path, the query, header values and the body (raw and
//! percent-decoded). A match blocks with 403 (configurable) and the ids of every matching rule in
//! the audit. The rules themselves live in `turnstile-waf-rules`, shared with the WASM waf, so
//! both placements block the same requests.
//!
//! Configuration (TOML, or the same as JSON); every key is optional:
//!
//! ```toml
//! default_rules = true        # keep the built-in rules (see turnstile_waf_rules::DEFAULT_RULES)
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
use turnstile_agent_sdk::{
    Agent, AgentInfo, BodyChunk, CancelReason, ConfigError, Reply, RequestHeaders, RequestKey,
    parse_config,
};
pub use turnstile_waf_rules::{Config, DEFAULT_RULES, Rules, Target};

/// Most request bodies buffered at once; past it bodies go uninspected (tagged).
pub const BODIES_MAX: usize = 65_536;

/// Compiles a configuration, turning a refused rule into the SDK's configuration error.
fn compile(c: Config) -> Result<Rules, ConfigError> {
    Rules::compile(c).map_err(|e| ConfigError::field(e.field, e.error))
}

/// Answers with the verdict for `hits`: allow, or a block naming every matching rule.
fn verdict(rules: &Rules, hits: &[usize], reply: Reply) {
    if hits.is_empty() {
        return reply.allow();
    }
    let mut reply = reply.tag("waf");
    for &i in hits {
        reply = reply.rule(rules.id(i).to_owned());
    }
    reply.block(rules.block_status, rules.block_body(hits));
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
        let rules = Rules::defaults();
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
    turnstile_waf_rules::expects_body(
        req.header_str("content-length"),
        req.header("transfer-encoding").is_some(),
        req.method(),
    )
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
        let rules = compile(parse_config(config)?)?;
        self.rules.store(Arc::new(rules));
        Ok(())
    }

    fn on_request_headers(&self, req: &RequestHeaders<'_>, reply: Reply) {
        let rules = self.rules.load();
        let mut hits = Vec::new();
        rules.scan(Target::Path, req.path().as_bytes(), &mut hits);
        rules.scan(Target::Query, req.query().as_bytes(), &mut hits);
        for (_, value) in req.headers() {
            rules.scan(Target::Headers, value, &mut hits);
        }
        if !hits.is_empty()
            || !rules.inspect_body
            || rules.max_body_bytes == 0
            || !expects_body(req)
        {
            return verdict(&rules, &hits, reply);
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
        rules.scan(Target::Body, &body, &mut hits);
        verdict(&rules, &hits, reply);
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
        rules.scan(target, input.as_bytes(), &mut h);
        h.iter().map(|&i| rules.id(i).to_owned()).collect()
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
        assert!(Rules::compile(json).unwrap().is_empty());
        // The SDK error names the field too.
        let Err(err) = compile(parse_config(b"block_status = 42").unwrap()) else {
            panic!("a status of 42 must be refused")
        };
        assert!(err.to_string().contains("block_status"), "{err}");
    }
}
