//! Example WASM agents built on [`turnstile_wasm_agent_sdk`], each exported by an example
//! `cdylib` of the same name and compiled to `wasm32-unknown-unknown` by `make wasm-agents`:
//!
//! * [`noop::Noop`]: allows everything (the benchmark agent);
//! * [`waf::Waf`]: the UDS waf's rules (shared through `turnstile-waf-rules`), 403 with rule ids;
//! * [`header_rewrite::HeaderRewrite`]: adds, sets and removes request and response headers.
//!
//! The agents are plain Rust: this crate owns their logic and nothing of the ABI (the SDK's
//! `export_agent!` does that), so they are unit-tested on the host like any library.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod header_rewrite;
pub mod limits;
pub mod noop;
pub mod waf;
