//! The SDK's own log lines: one line each on stderr, prefixed with the time and the process.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Writes one log line to stderr.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let ms = unix_ms();
    eprintln!(
        "{}.{:03} turnstile-agent[{}]: {args}",
        ms / 1000,
        ms % 1000,
        std::process::id()
    );
}

/// `log!("...", args)`: one line on stderr.
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::write(format_args!($($arg)*)) };
}
pub(crate) use log;
