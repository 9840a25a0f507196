//! The WAF's rule engine: the built-in rules, the configuration document, compilation into one
//! [`regex::bytes::RegexSet`], and the scan of a target (raw and percent-decoded).
//!
//! It owns rule data and matching only. It must not know how an agent is reached (no agent SDK,
//! no I/O, no global state), so that the UDS waf (`crates/agents`) and the WASM waf
//! (`crates/wasm-agents`) run the very same rules; it builds for the host and for
//! `wasm32-unknown-unknown`.
//!
//! Configuration (TOML or JSON, parsed by the caller's SDK into [`Config`]); every key is
//! optional:
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
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod limits;

use std::borrow::Cow;

use regex::bytes::RegexSet;
use serde::Deserialize;

use crate::limits::{BLOCK_STATUS_DEFAULT, BODY_BYTES_DEFAULT, BODY_BYTES_MAX, RULES_MAX};

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

    /// Whether `+` means a space in this target (form encoding).
    pub fn plus_is_space(self) -> bool {
        matches!(self, Target::Query | Target::Body)
    }
}

/// Every target.
pub const ALL_TARGETS: &[Target] = &[Target::Path, Target::Query, Target::Headers, Target::Body];

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

/// The configuration document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Keep the built-in rules.
    pub default_rules: bool,
    /// Rule ids switched off.
    pub disabled_rules: Vec<String>,
    /// Inspect request bodies (buffered by turnstile).
    pub inspect_body: bool,
    /// Body bytes inspected, at most [`BODY_BYTES_MAX`].
    pub max_body_bytes: u64,
    /// Status of a block (100..=599).
    pub block_status: u16,
    /// Extra rules.
    pub rules: Vec<RuleConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_rules: true,
            disabled_rules: Vec::new(),
            inspect_body: true,
            max_body_bytes: BODY_BYTES_DEFAULT,
            block_status: BLOCK_STATUS_DEFAULT,
            rules: Vec::new(),
        }
    }
}

/// One rule of the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule id, reported in the audit.
    pub id: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// A `regex` pattern over bytes.
    pub pattern: String,
    /// Where it looks; empty = everywhere.
    #[serde(default)]
    pub targets: Vec<Target>,
}

/// A configuration refused by [`Rules::compile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The field at fault.
    pub field: String,
    /// What is wrong.
    pub error: String,
}

impl RuleError {
    fn new(field: impl Into<String>, error: impl Into<String>) -> Self {
        RuleError {
            field: field.into(),
            error: error.into(),
        }
    }
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.error)
    }
}

impl std::error::Error for RuleError {}

struct Rule {
    id: String,
    targets: u8,
}

/// A compiled rule set.
pub struct Rules {
    set: RegexSet,
    rules: Vec<Rule>,
    /// Inspect request bodies.
    pub inspect_body: bool,
    /// Body bytes inspected.
    pub max_body_bytes: u64,
    /// Status of a block.
    pub block_status: u16,
}

impl Rules {
    /// Compiles a configuration; an error names the field at fault.
    pub fn compile(c: Config) -> Result<Rules, RuleError> {
        if !(100..=599).contains(&c.block_status) {
            return Err(RuleError::new(
                "block_status",
                "must be an HTTP status (100..=599)",
            ));
        }
        if c.max_body_bytes > BODY_BYTES_MAX {
            return Err(RuleError::new(
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
                return Err(RuleError::new(
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
                return Err(RuleError::new(format!("rules[{i}].pattern"), e.to_string()));
            }
            specs.push((r.id, r.pattern, mask));
        }
        specs.retain(|(id, _, _)| !c.disabled_rules.contains(id));
        if specs.len() > RULES_MAX {
            return Err(RuleError::new(
                "rules",
                format!("at most {RULES_MAX} rules"),
            ));
        }
        let set = RegexSet::new(specs.iter().map(|(_, p, _)| p.as_str()))
            .map_err(|e| RuleError::new("rules", e.to_string()))?;
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

    /// The built-in rules with every default.
    pub fn defaults() -> Rules {
        // The built-in rules are tested to compile (tests::defaults_compile_and_match).
        Rules::compile(Config::default()).expect("built-in rules compile")
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The id of rule `i` (as pushed by [`Rules::scan`]).
    pub fn id(&self, i: usize) -> &str {
        self.rules.get(i).map_or("", |r| r.id.as_str())
    }

    /// Adds the indices of the rules matching `input` for `target` to `hits` (raw and decoded),
    /// each once.
    pub fn scan(&self, target: Target, input: &[u8], hits: &mut Vec<usize>) {
        let decoded = percent_decode(input, target.plus_is_space());
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

    /// The body of a block for `hits`: `blocked by waf: <id> <id>\n`.
    pub fn block_body(&self, hits: &[usize]) -> String {
        let mut body = String::from("blocked by waf:");
        for &i in hits {
            body.push(' ');
            body.push_str(self.id(i));
        }
        body.push('\n');
        body
    }
}

/// Whether a request with these facts will send a body: a non-zero (or unparsable)
/// `content-length`, a `transfer-encoding`, or a method that usually carries one.
pub fn expects_body(
    content_length: Option<&str>,
    has_transfer_encoding: bool,
    method: &str,
) -> bool {
    if let Some(len) = content_length {
        return len.trim().parse::<u64>().map_or(true, |n| n > 0);
    }
    has_transfer_encoding || matches!(method, "POST" | "PUT" | "PATCH")
}

/// Percent-decodes `input` (and `+` as space when `plus_is_space`), leaving invalid escapes as
/// they are. Borrows when there is nothing to decode.
pub fn percent_decode(input: &[u8], plus_is_space: bool) -> Cow<'_, [u8]> {
    if !input
        .iter()
        .any(|&b| b == b'%' || (plus_is_space && b == b'+'))
    {
        return Cow::Borrowed(input);
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' if i + 2 < input.len() => match (hex(input[i + 1]), hex(input[i + 2])) {
                (Some(h), Some(l)) => {
                    // Two hex digits make at most 0xff.
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hits(rules: &Rules, target: Target, input: &str) -> Vec<String> {
        let mut h = Vec::new();
        rules.scan(target, input.as_bytes(), &mut h);
        h.iter().map(|&i| rules.id(i).to_owned()).collect()
    }

    #[test]
    fn defaults_compile_and_match() {
        let r = Rules::defaults();
        assert_eq!(hits(&r, Target::Query, "q=1 union select 2"), ["942100"]);
        assert_eq!(
            hits(&r, Target::Query, "q=1%20UNION%20ALL%20SELECT+2"),
            ["942100"]
        );
        assert_eq!(hits(&r, Target::Body, "name=' or 1=1"), ["942130"]);
        assert_eq!(
            hits(&r, Target::Path, "/static/%2e%2e/%2e%2e/etc/passwd"),
            ["930100"]
        );
        assert_eq!(hits(&r, Target::Headers, "sqlmap/1.7"), ["913100"]);
        assert!(hits(&r, Target::Path, "/sqlmap").is_empty());
        assert!(hits(&r, Target::Query, "page=2&sort=name").is_empty());
        assert_eq!(r.block_body(&[0]), "blocked by waf: 942100\n");
    }

    #[test]
    fn config_rules_and_errors() {
        let c: Config = serde_json::from_str(
            r#"{"disabled_rules": ["913100"], "block_status": 406,
                "rules": [{"id": "100001", "pattern": "^/internal/", "targets": ["path"]}]}"#,
        )
        .unwrap();
        let r = Rules::compile(c).unwrap();
        assert_eq!(r.block_status, 406);
        assert_eq!(hits(&r, Target::Path, "/internal/x"), ["100001"]);
        assert!(hits(&r, Target::Headers, "sqlmap").is_empty());
        let bad = |doc: &str| {
            Rules::compile(serde_json::from_str(doc).unwrap())
                .err()
                .unwrap()
        };
        assert_eq!(
            bad(r#"{"rules": [{"id": "1", "pattern": "("}]}"#).field,
            "rules[0].pattern"
        );
        assert_eq!(bad(r#"{"block_status": 42}"#).field, "block_status");
        assert!(serde_json::from_str::<Config>(r#"{"unknown": 1}"#).is_err());
    }

    #[test]
    fn decoding_and_body_expectation() {
        assert_eq!(&*percent_decode(b"a%20b+c", true), b"a b c");
        assert_eq!(&*percent_decode(b"%2e%2E%2f", false), b"../");
        assert_eq!(&*percent_decode(b"%zz%4", false), b"%zz%4");
        assert!(matches!(percent_decode(b"plain", true), Cow::Borrowed(_)));
        assert!(expects_body(Some("12"), false, "GET"));
        assert!(!expects_body(Some("0"), false, "POST"));
        assert!(expects_body(None, false, "POST"));
        assert!(!expects_body(None, false, "GET"));
    }
}
