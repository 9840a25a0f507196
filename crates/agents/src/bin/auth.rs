//! `turnstile-agent-auth`: API key or HMAC-SHA256 signed bearer token; 401 otherwise.

fn main() -> std::process::ExitCode {
    turnstile_agents::run("", |_| Ok(turnstile_agents::auth::Auth::new()))
}
