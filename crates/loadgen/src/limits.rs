//! Bounds of the load generator, named once. Units come last in the name.

use std::time::Duration;

/// Longest a probe request (`probe.rs`) waits for its response.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;

/// Longest closing connections may take for their endpoints to drain, and the open loop waits
/// for requests still outstanding at its end.
pub const CLOSE_TIMEOUT_MS: u64 = 1_000;

/// Outstanding requests allowed in open loop when `--max-in-flight` is not given.
pub const OPEN_IN_FLIGHT_DEFAULT: usize = 10_000;

/// Most `--max-in-flight`.
pub const OPEN_IN_FLIGHT_MAX: usize = 1_000_000;

/// Lowest `--rate` / `--rates` entry: one request every ten seconds.
pub const RATE_RPS_MIN: f64 = 0.1;

/// Highest `--rate` / `--rates` entry.
pub const RATE_RPS_MAX: f64 = 10_000_000.0;

/// Most steps of a rate search (`--rates`).
pub const RATE_STEPS_MAX: usize = 64;

/// Highest `--p99-max-ms`.
pub const P99_MAX_MS_MAX: f64 = 600_000.0;

/// How long after a step's measured window its measured requests may still be answered; the
/// ones still outstanding then count as errors (unanswered). Load keeps coming meanwhile.
pub const DRAIN: Duration = Duration::from_secs(2);

/// Requests the open loop sends back to back before it lets answers be processed (when it is
/// behind schedule it would otherwise send everything due before reading anything).
pub const SEND_BURST_MAX: usize = 64;

/// Highest latency the histograms track (larger values are recorded as this): 60 s in ns.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// Significant decimal digits the latency histograms keep.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// Interval of the live progress line.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Least time the open loop's ticker thread rests after waking the sender: at most one
/// wake-up per this interval.
pub const TICK_REST: Duration = Duration::from_micros(50);

/// Longest the ticker thread sleeps before it reads the due time again.
pub const TICK_IDLE: Duration = Duration::from_millis(1);

// `--mode zero-rtt` and `--mode idle-streams` (`zero_rtt.rs`, `idle_streams.rs`).

/// Longest wait for one QUIC handshake in the measurement modes, milliseconds.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// Longest wait for the session ticket a connection should bring (0-RTT needs one per
/// resumption: turnstile's tickets are stateful and single-use).
pub const TICKET_TIMEOUT_MS: u64 = 2_000;

/// Iterations of `--mode zero-rtt` run before the measured ones and not recorded.
pub const ZERO_RTT_WARMUP_ITERATIONS: usize = 5;

/// Client endpoints (UDP sockets) `--mode zero-rtt` spreads its connections over, in turn.
pub const ZERO_RTT_ENDPOINTS: usize = 16;

/// Most `--iterations` of `--mode zero-rtt`.
pub const ZERO_RTT_ITERATIONS_MAX: usize = 100_000;

/// Most `--streams` of `--mode idle-streams`.
pub const IDLE_STREAMS_MAX: usize = 1_000_000;

/// Most connections `--mode idle-streams` opens (each from its own UDP socket).
pub const IDLE_CONNECTIONS_MAX: usize = 4_096;

/// Fewest `--streams-per-connection`: one idle stream plus the probe's.
pub const STREAMS_PER_CONNECTION_MIN: usize = 2;

/// Most `--streams-per-connection` (the server's `quic.max_concurrent_bidi_streams` bound).
pub const STREAMS_PER_CONNECTION_MAX: usize = 100_000;

/// Longest wait for the server to grant one more stream (`open_bi`): a stream limit lower than
/// `--streams-per-connection` shows up as this timeout, reported as such.
pub const STREAM_OPEN_TIMEOUT_MS: u64 = 5_000;

/// Interval between two samples of the server's RSS while it settles.
pub const SETTLE_INTERVAL_MS: u64 = 100;

/// Consecutive samples within [`SETTLE_TOLERANCE_BYTES`] of each other that count as settled.
pub const SETTLE_STABLE_SAMPLES: usize = 5;

/// RSS change (bytes) between the settled samples still taken as "not growing".
pub const SETTLE_TOLERANCE_BYTES: u64 = 64 * 1024;

/// Longest wait for the server's RSS to settle; past it the last sample is used and the run
/// says it did not settle.
pub const SETTLE_TIMEOUT_MS: u64 = 10_000;

/// Payload length announced by the frame header each idle stream carries (the payload never
/// follows, so the server holds the stream open, waiting for the rest of the frame).
pub const IDLE_FRAME_PAYLOAD_BYTES: u32 = 64;

// `--driver proto` (`proto_run.rs`).

/// Longest wait for the handshakes of `--driver proto`'s connections before the warm-up.
pub const PROTO_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest `--driver proto` waits, once the measured window is over, for the requests still
/// outstanding and then for its connections to close.
pub const PROTO_DRAIN: Duration = Duration::from_secs(1);

/// Bytes of the receive buffer of `--driver proto` (one UDP datagram at most).
pub const PROTO_RECV_BUFFER_BYTES: usize = 65_536;

/// Most datagrams `--driver proto` hands the kernel in one segmented send (UDP GSO, Linux).
pub const PROTO_GSO_SEGMENTS_MAX: usize = 10;
