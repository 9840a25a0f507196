//! `turnstile-agent-waf`: regex rules over path, query, headers and body; 403 with rule ids.

fn main() -> std::process::ExitCode {
    turnstile_agents::run("", |_| Ok(turnstile_agents::waf::Waf::new()))
}
