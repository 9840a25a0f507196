//! Bounds of the example agents, named once.

/// Request bodies the WASM waf buffers at once; past it bodies go uninspected (tagged). With
/// the default 64 KiB per body this stays within a quarter of the default 64 MiB instance.
pub const WAF_BODIES_MAX: usize = 256;

/// Header operations one header-rewrite configuration may hold (request and response together).
pub const REWRITE_OPS_MAX: usize = 64;

/// Longest header name or value in a header-rewrite configuration.
pub const REWRITE_FIELD_BYTES_MAX: usize = 8 * 1024;
