//! `turnstile-agent-ratelimit`: token bucket per API key or client address; 429 when empty.

fn main() -> std::process::ExitCode {
    turnstile_agents::run("", |_| Ok(turnstile_agents::ratelimit::RateLimit::new()))
}
