//! The WASM waf: the same rules, configuration and verdicts as the UDS waf
//! (`crates/agents/src/waf.rs`), from the shared `turnstile-waf-rules` crate. A match blocks
//! with 403 (configurable), tagged `waf`, with the ids of every matching rule in the audit.
//!
//! Request bodies (when `inspect_body`) are buffered in the instance by correlation id until the
//! last chunk or `max_body_bytes`, at most [`WAF_BODIES_MAX`] at once. A chunk for a request it
//! holds no body for (decided on the headers, or the instance was replaced meanwhile) is allowed,
//! as the UDS waf does.

use std::collections::HashMap;

use turnstile_waf_rules::{Config, Rules, Target, expects_body};
use turnstile_wasm_agent_sdk::{
    Agent, AgentInfo, BodyChunk, ConfigError, Decision, RequestHeaders, RequestKey, parse_config,
};

use crate::limits::WAF_BODIES_MAX;

/// The WAF agent. Rules are compiled by `configure` (turnstile always configures a new
/// instance), or on first use with the built-in defaults.
#[derive(Default)]
pub struct Waf {
    rules: Option<Rules>,
    bodies: HashMap<RequestKey, Vec<u8>>,
}

fn verdict(rules: &Rules, hits: &[usize]) -> Decision {
    if hits.is_empty() {
        return Decision::allow();
    }
    let mut d = Decision::block(rules.block_status, rules.block_body(hits)).tag("waf");
    for &i in hits {
        d = d.rule(rules.id(i));
    }
    d
}

impl Agent for Waf {
    fn info(&self) -> AgentInfo {
        let (inspect, max) = match &self.rules {
            Some(r) => (r.inspect_body, r.max_body_bytes),
            None => {
                let c = Config::default();
                (c.inspect_body, c.max_body_bytes)
            }
        };
        let info =
            AgentInfo::new("waf", env!("CARGO_PKG_VERSION")).name("turnstile-wasm-agent-waf");
        if inspect && max > 0 {
            info.request_body(max, false)
        } else {
            info
        }
    }

    fn configure(&mut self, config: &[u8]) -> Result<(), ConfigError> {
        let c: Config = parse_config(config)?;
        let rules = Rules::compile(c).map_err(|e| ConfigError::field(e.field, e.error))?;
        self.rules = Some(rules);
        Ok(())
    }

    fn on_request_headers(&mut self, req: &RequestHeaders<'_>) -> Decision {
        let rules = self.rules.get_or_insert_with(Rules::defaults);
        let mut hits = Vec::new();
        rules.scan(Target::Path, req.path().as_bytes(), &mut hits);
        rules.scan(Target::Query, req.query().as_bytes(), &mut hits);
        for (_, value) in req.headers() {
            rules.scan(Target::Headers, value, &mut hits);
        }
        let body_follows = expects_body(
            req.header_str("content-length"),
            req.header("transfer-encoding").is_some(),
            req.method(),
        );
        if !hits.is_empty() || !rules.inspect_body || rules.max_body_bytes == 0 || !body_follows {
            return verdict(rules, &hits);
        }
        if self.bodies.len() >= WAF_BODIES_MAX {
            return Decision::allow().tag("waf:body-not-inspected");
        }
        self.bodies.insert(req.key(), Vec::new());
        Decision::need_more()
    }

    fn on_request_body(&mut self, chunk: &BodyChunk<'_>) -> Decision {
        let rules = self.rules.get_or_insert_with(Rules::defaults);
        let max = usize::try_from(rules.max_body_bytes).unwrap_or(usize::MAX);
        let Some(body) = self.bodies.get_mut(&chunk.key()) else {
            return Decision::allow();
        };
        let room = max.saturating_sub(body.len());
        let data = chunk.data();
        body.extend_from_slice(&data[..data.len().min(room)]);
        if !chunk.is_last() && body.len() < max {
            return Decision::need_more();
        }
        let body = self.bodies.remove(&chunk.key()).unwrap_or_default();
        let mut hits = Vec::new();
        rules.scan(Target::Body, &body, &mut hits);
        verdict(rules, &hits)
    }

    fn on_cancel(&mut self, key: RequestKey) {
        self.bodies.remove(&key);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn configure_refuses_bad_rules_and_keeps_the_old_ones() {
        let mut waf = Waf::default();
        assert!(waf.rules.is_none(), "nothing compiled before use");
        assert_eq!(waf.info().max_body_bytes, 64 * 1024);
        waf.configure(b"").unwrap();
        let before = waf.rules.as_ref().map_or(0, Rules::len);
        let err = waf
            .configure(b"[[rules]]\nid = \"1\"\npattern = \"(\"")
            .unwrap_err();
        assert_eq!(err.field, "rules[0].pattern");
        assert_eq!(waf.rules.as_ref().map_or(0, Rules::len), before);
        waf.configure(b"disabled_rules = [\"913100\"]\ninspect_body = false")
            .unwrap();
        let rules = waf.rules.as_ref().unwrap();
        assert_eq!(rules.len(), before - 1);
        assert_eq!(verdict(rules, &[]), Decision::allow());
        assert_eq!(verdict(rules, &[0]).rule_ids(), [rules.id(0).to_owned()]);
        assert_eq!(waf.info().max_body_bytes, 0);
    }
}
