//! Every bound of this crate, named once. Units come last in the name.

/// Most agents whose latest report is kept at once. Agents are known at start, so this is a
/// guard against a caller bug rather than a tuning knob.
pub const REPORTING_AGENTS_MAX: usize = 256;

/// Longest agent id accepted by [`crate::AgentReports::record`].
pub const AGENT_ID_BYTES_MAX: usize = 128;

/// Most series (counters + gauges + histograms) one agent report may hold. A histogram counts as
/// one series here; its buckets are bounded by [`HISTOGRAM_BUCKETS_MAX`].
pub const AGENT_SERIES_MAX: usize = 1024;

/// Most bytes of text (metric names, label names and values) kept from one agent report. Bounds
/// an agent's memory even when a message reuses one text for many fields.
pub const AGENT_REPORT_BYTES_MAX: usize = 1 << 20;

/// Most labels one reported series may carry (before turnstile adds `agent_id`).
pub const LABELS_PER_SERIES_MAX: usize = 16;

/// Longest metric name an agent may report.
pub const METRIC_NAME_BYTES_MAX: usize = 128;

/// Longest label name an agent may report.
pub const LABEL_NAME_BYTES_MAX: usize = 64;

/// Longest label value an agent may report.
pub const LABEL_VALUE_BYTES_MAX: usize = 256;

/// Most buckets one reported histogram may have (including a `+Inf` bucket, if sent).
pub const HISTOGRAM_BUCKETS_MAX: usize = 64;

/// Bucket upper bounds of turnstile's own duration histograms: `2^0 ..= 2^(N-1)` microseconds,
/// plus `+Inf`. With 21 bounds the largest finite bound is 2^20 µs ≈ 1.05 s.
pub const DURATION_BUCKETS_LOG2_COUNT: usize = 21;

/// Most connections the admin endpoint serves at once; further connections get a `503` and are
/// closed.
pub const ADMIN_CONNECTIONS_MAX: usize = 16;

/// Largest request head (request line plus headers) the admin endpoint reads; larger requests get
/// `431`.
pub const ADMIN_REQUEST_BYTES_MAX: usize = 8 * 1024;

/// Time a client has to send its whole request head, from accept; then it gets `408`.
pub const ADMIN_READ_TIMEOUT_MS: u64 = 2_000;

/// Time a client has to take the whole response; then the connection is closed.
pub const ADMIN_WRITE_TIMEOUT_MS: u64 = 5_000;

/// After the response, unread request bytes are drained (so closing does not reset the
/// connection before the client read the response) for at most this long.
pub const ADMIN_LINGER_MS: u64 = 200;

/// Sleep of the admin thread between polls while no connection is open: the worst-case delay of
/// accepting a scrape and of [`crate::AdminHandle::stop`].
pub const ADMIN_IDLE_POLL_MS: u64 = 20;

/// Sleep of the admin thread between polls while connections are open.
pub const ADMIN_BUSY_POLL_MS: u64 = 1;

const _: () = assert!(DURATION_BUCKETS_LOG2_COUNT < 64);
const _: () = assert!(LABELS_PER_SERIES_MAX >= 4 && AGENT_SERIES_MAX >= 16);
const _: () = assert!(ADMIN_IDLE_POLL_MS < ADMIN_READ_TIMEOUT_MS);
