//! `turnstile-agent-chaos`: misbehaves on request, to test turnstile's handling of bad agents.

fn main() -> std::process::ExitCode {
    turnstile_agents::run("", |_| {
        turnstile_agents::chaos::Chaos::new().map_err(|e| format!("timer thread: {e}"))
    })
}
