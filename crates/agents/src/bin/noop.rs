//! `turnstile-agent-noop`: allows everything (the benchmark agent).

fn main() -> std::process::ExitCode {
    turnstile_agents::run("", |_| Ok(turnstile_agents::noop::Noop))
}
