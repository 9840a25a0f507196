//! Bounds the guest side of the ABI applies, named once.

/// Largest message the guest accepts from turnstile (the wire format's frame limit): a larger
/// `turnstile_alloc` request is refused with 0.
pub const INPUT_BYTES_MAX: usize = turnstile_wire::limits::FRAME_BYTES_MAX as usize;

/// Bytes of a log line passed to the host; longer lines are cut (the host cuts too).
pub const LOG_BYTES_MAX: usize = 1024;

/// Bytes of a metric name passed to the host; longer names are refused by the host.
pub const METRIC_NAME_BYTES_MAX: usize = 64;
