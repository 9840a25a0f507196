//! Adds, sets and removes request and response headers, from its configuration.
//!
//! Configuration (TOML, or the same as JSON):
//!
//! ```toml
//! path_prefixes = ["/api/"]   # only these requests are sent (default: all)
//!
//! [[request]]
//! op = "set"                  # "add" (append), "set" (replace all), or "remove"
//! name = "x-env"
//! value = "prod"              # not for "remove"
//!
//! [[response]]
//! op = "remove"
//! name = "server"
//! ```
//!
//! Every request gets an allow carrying the operations, in order. At most [`REWRITE_OPS_MAX`]
//! operations; names must be HTTP tokens and values must not hold CR, LF or NUL.

use serde::Deserialize;
use turnstile_wasm_agent_sdk::{
    Agent, AgentInfo, ConfigError, Decision, RequestHeaders, parse_config,
};

use crate::limits::{REWRITE_FIELD_BYTES_MAX, REWRITE_OPS_MAX};

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Append a field.
    Add,
    /// Replace every field with this name.
    Set,
    /// Remove every field with this name.
    Remove,
}

/// One header operation of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRule {
    /// What to do.
    pub op: Op,
    /// Header name.
    pub name: String,
    /// Header value (ignored for `remove`).
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    path_prefixes: Vec<String>,
    request: Vec<HeaderRule>,
    response: Vec<HeaderRule>,
}

/// The header-rewrite agent.
#[derive(Debug, Default)]
pub struct HeaderRewrite {
    path_prefixes: Vec<String>,
    request: Vec<HeaderRule>,
    response: Vec<HeaderRule>,
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check(side: &str, rules: &[HeaderRule]) -> Result<(), ConfigError> {
    for (i, r) in rules.iter().enumerate() {
        if !is_token(&r.name) || r.name.len() > REWRITE_FIELD_BYTES_MAX {
            return Err(ConfigError::field(
                format!("{side}[{i}].name"),
                "must be an HTTP token of at most 8 KiB",
            ));
        }
        if r.value.len() > REWRITE_FIELD_BYTES_MAX || r.value.contains(['\r', '\n', '\0']) {
            return Err(ConfigError::field(
                format!("{side}[{i}].value"),
                "must be at most 8 KiB without CR, LF or NUL",
            ));
        }
    }
    Ok(())
}

fn apply(mut d: Decision, rules: &[HeaderRule], response: bool) -> Decision {
    for r in rules {
        d = match (r.op, response) {
            (Op::Add, false) => d.add_request_header(&r.name, &r.value),
            (Op::Set, false) => d.set_request_header(&r.name, &r.value),
            (Op::Remove, false) => d.remove_request_header(&r.name),
            (Op::Add, true) => d.add_response_header(&r.name, &r.value),
            (Op::Set, true) => d.set_response_header(&r.name, &r.value),
            (Op::Remove, true) => d.remove_response_header(&r.name),
        };
    }
    d
}

impl Agent for HeaderRewrite {
    fn info(&self) -> AgentInfo {
        let prefixes: Vec<&str> = self.path_prefixes.iter().map(String::as_str).collect();
        AgentInfo::new("header-rewrite", env!("CARGO_PKG_VERSION"))
            .name("turnstile-wasm-agent-header-rewrite")
            .path_prefixes(&prefixes)
    }

    fn configure(&mut self, config: &[u8]) -> Result<(), ConfigError> {
        let c: Config = parse_config(config)?;
        if c.request.len() + c.response.len() > REWRITE_OPS_MAX {
            return Err(ConfigError::from(format!(
                "at most {REWRITE_OPS_MAX} header operations"
            )));
        }
        check("request", &c.request)?;
        check("response", &c.response)?;
        *self = HeaderRewrite {
            path_prefixes: c.path_prefixes,
            request: c.request,
            response: c.response,
        };
        Ok(())
    }

    fn on_request_headers(&mut self, _request: &RequestHeaders<'_>) -> Decision {
        let d = apply(Decision::allow(), &self.request, false);
        apply(d, &self.response, true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn configure_checks_fields() {
        let mut h = HeaderRewrite::default();
        h.configure(b"[[request]]\nop = \"set\"\nname = \"x-env\"\nvalue = \"prod\"")
            .unwrap();
        assert_eq!(h.request.len(), 1);
        let e = h
            .configure(b"[[response]]\nop = \"add\"\nname = \"bad name\"")
            .unwrap_err();
        assert_eq!(e.field, "response[0].name");
        let e = h
            .configure(br#"{"request": [{"op": "add", "name": "x", "value": "a\nb"}]}"#)
            .unwrap_err();
        assert_eq!(e.field, "request[0].value");
        assert_eq!(
            h.request.len(),
            1,
            "a refused configuration changes nothing"
        );
        assert!(
            h.configure(b"[[request]]\nop = \"rename\"\nname = \"x\"")
                .is_err()
        );
    }
}
