//! `turnstile-agent-delay`: answers after `--delay-ms` (default 50) without blocking others.

use turnstile_agents::delay::{DEFAULT_DELAY_MS, Delay, parse_delay_ms};

fn main() -> std::process::ExitCode {
    let usage = "  --delay-ms N                delay before each answer (default 50)\n  --max-concurrency N         declare at most N requests in flight per connection";
    turnstile_agents::run(usage, |flags| {
        let ms = match flags.take("--delay-ms")? {
            Some(v) => parse_delay_ms(&v)?,
            None => DEFAULT_DELAY_MS,
        };
        let max = match flags.take("--max-concurrency")? {
            Some(v) => Some(
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("--max-concurrency {v:?}: a whole number"))?,
            ),
            None => None,
        };
        let agent = Delay::new(ms).map_err(|e| format!("timer thread: {e}"))?;
        Ok(match max {
            Some(n) => agent.with_max_concurrency(n),
            None => agent,
        })
    })
}
