//! Bounds of a WAF configuration, named once.

/// Most rules one configuration may hold.
pub const RULES_MAX: usize = 1024;

/// Largest `max_body_bytes` a configuration may set.
pub const BODY_BYTES_MAX: u64 = 16 << 20;

/// Body bytes inspected when the configuration does not say.
pub const BODY_BYTES_DEFAULT: u64 = 64 * 1024;

/// Status of a block when the configuration does not say.
pub const BLOCK_STATUS_DEFAULT: u16 = 403;
