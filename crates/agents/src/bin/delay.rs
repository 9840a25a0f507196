//! `turnstile-agent-delay`: answers after `--delay-ms` (default 50) without blocking others.

use turnstile_agents::delay::{DEFAULT_DELAY_MS, Delay, parse_delay_ms};

fn main() -> std::process::ExitCode {
    let usage = "  --delay-ms N                delay before each answer (default 50)";
    turnstile_agents::run(usage, |flags| {
        let ms = match flags.take("--delay-ms")? {
            Some(v) => parse_delay_ms(&v)?,
            None => DEFAULT_DELAY_MS,
        };
        Delay::new(ms).map_err(|e| format!("timer thread: {e}"))
    })
}
