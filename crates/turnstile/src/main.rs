//! The `turnstile` binary: command line, configuration, start-up checks, shard start and
//! graceful shutdown. It wires the crates together and holds no protocol logic of its own.
#![forbid(unsafe_code)]

mod agents;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use turnstile_config::{Config, SpinPolicy};
use turnstile_frontdoor::FrontDoorConfig;
use turnstile_shard::{Control, ShardSpec};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A thread-per-core QUIC agent gateway.
#[derive(Parser, Debug)]
#[command(name = "turnstile", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the client protocol over QUIC until SIGTERM or SIGINT (SIGHUP reloads agent
    /// configurations).
    Serve {
        /// Configuration file (TOML). Without it, the embedded default is used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check that io_uring works here and print what the kernel offers.
    Probe,
    /// Print the embedded default configuration.
    DefaultConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TURNSTILE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Probe => match turnstile_uring::probe() {
            Ok(report) => {
                println!("{report:#?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("turnstile: io_uring is not usable here: {e}");
                ExitCode::from(2)
            }
        },
        Command::DefaultConfig => {
            print!("{}", turnstile_config::DEFAULT_CONFIG_TOML);
            ExitCode::SUCCESS
        }
    }
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    // io_uring first: without it nothing else matters, and the message must say how to fix it.
    let probe = match turnstile_uring::probe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("turnstile: cannot start: io_uring is not usable here: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("turnstile: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&config, config_path.as_deref(), &probe) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turnstile: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Re-reads the configuration and pushes what can change live: each agent's `config` text (sent
/// to the agent with a new generation). Other changes are reported as needing a restart.
fn reload(
    path: Option<&std::path::Path>,
    running: &Config,
    handles: &[turnstile_shard::ShardHandle],
    wasm_engine: Option<&turnstile_wasm_host::WasmEngine>,
) {
    let fresh = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("turnstile: reload refused, keeping the running configuration: {e}");
            return;
        }
    };
    let mut changed = Vec::new();
    for agent in &fresh.agents {
        match running.agents.iter().find(|a| a.id == agent.id) {
            Some(old) if old.config != agent.config => {
                changed.push((agent.id.clone(), agent.config.clone().into_bytes()))
            }
            Some(_) => {}
            None => eprintln!(
                "turnstile: reload: agent {} is new; adding agents needs a restart",
                agent.id
            ),
        }
    }
    let same = |a: &Config, b: &Config| {
        a.routes == b.routes
            && a.agents.len() == b.agents.len()
            && a.agents.iter().zip(&b.agents).all(|(x, y)| {
                x.placement == y.placement && x.timeout == y.timeout && x.fail_mode == y.fail_mode
            })
    };
    if !same(running, &fresh) {
        eprintln!(
            "turnstile: reload: routes or agent policies changed; those take effect at the next restart"
        );
    }
    // WASM modules: every WASM agent's file is read again; shards swap to the new module
    // between calls (requests in flight finish on the old one: calls are synchronous).
    let mut modules = Vec::new();
    if let Some(engine) = wasm_engine {
        for agent in &fresh.agents {
            if let turnstile_config::Placement::Wasm { module, limits } = &agent.placement {
                match agents::load_wasm(engine, &agent.id, module, limits) {
                    Ok(m) => modules.push((agent.id.clone(), m)),
                    Err(e) => eprintln!("turnstile: reload: {e}; the old module keeps serving"),
                }
            }
        }
    }
    if !modules.is_empty() {
        println!(
            "turnstile: reload: new modules for {} WASM agent(s)",
            modules.len()
        );
        let modules = Arc::new(modules);
        for h in handles {
            h.send(Control::ReplaceWasm(modules.clone()));
        }
    }
    println!(
        "turnstile: reload: pushing new configuration to {} agent(s)",
        changed.len()
    );
    let changed = Arc::new(changed);
    for h in handles {
        h.send(Control::Reconfigure(changed.clone()));
    }
}

fn run(
    config: &Config,
    config_path: Option<&std::path::Path>,
    probe: &turnstile_uring::ProbeReport,
) -> Result<(), String> {
    let tls = turnstile_config::server_crypto(&config.tls, &config.server.state_dir)
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    if tls.is_development() {
        println!(
            "turnstile: using {} development certificate {} (sha256 {}); clients must pin it",
            if tls.generated_now() { "a new" } else { "the" },
            tls.cert_path.display(),
            tls.sha256_fingerprint
        );
    }
    let server_config = Arc::new(
        turnstile_config::quic_server_config(config, &tls)
            .map_err(|e| format!("QUIC setup failed: {e}"))?,
    );
    let mut reset_secret = [0u8; 64];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut reset_secret)
        .map_err(|_| "the system random source failed".to_string())?;
    let reset_key: Arc<dyn quinn_proto::crypto::HmacKey> =
        Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset_secret));

    let agents = agents::start(config)?;
    let shards = config.server.shard_count();
    let registry = Arc::new(turnstile_metrics::Registry::new(
        shards,
        agents.plane.agents.iter().map(|a| a.id.clone()).collect(),
        turnstile_metrics::BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            revision: String::new(),
        },
    ));
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cores = core_ids(config, shards);
    let spin = match config.shard.spin {
        SpinPolicy::Fixed(us) => turnstile_shard::SpinPolicy::Fixed(us),
        SpinPolicy::Adaptive { max_us } => turnstile_shard::SpinPolicy::Adaptive { max_us },
        SpinPolicy::BusyPoll => turnstile_shard::SpinPolicy::BusyPoll,
    };
    let specs = (0..shards)
        .map(|i| ShardSpec {
            front: FrontDoorConfig {
                // shard_count() is at most SHARDS_MAX (256), so the index fits a byte.
                shard: i as u8,
                shards,
                max_connections: config.quic.max_connections_per_shard as usize,
                max_request_bytes: config.quic.max_request_bytes,
                retry_above_initials_per_sec: config.quic.retry_above_initials_per_sec,
                max_streams: config.quic.max_concurrent_bidi_streams,
            },
            core: cores.get(i).copied(),
            listen: config.server.listen,
            spin,
            max_sleep: config.shard.max_sleep,
            ring_entries: config.shard.ring_entries,
            sqpoll: config.shard.sqpoll,
            plane: agents.plane.clone(),
            plane_events: agents.events.clone(),
            // One counters block per shard, created just above for `shards` shards.
            counters: registry.shards[i].clone(),
            reports: registry.agents.clone(),
        })
        .collect();

    // Block the signals before the shard threads exist so they inherit nothing surprising;
    // the iterator below receives them.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;

    let handles = turnstile_shard::start(specs, server_config, reset_key)
        .map_err(|e| format!("cannot start shards: {e}"))?;
    let admin = match config.server.admin_listen {
        Some(addr) => {
            let flag = draining.clone();
            let health: turnstile_metrics::HealthFn = Arc::new(move || {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    turnstile_metrics::HealthSnapshot::Unavailable("draining".into())
                } else {
                    turnstile_metrics::HealthSnapshot::Ok
                }
            });
            let handle = turnstile_metrics::AdminServer::start(addr, registry.clone(), health)
                .map_err(|e| format!("admin endpoint on {addr}: {e}"))?;
            println!(
                "turnstile: admin endpoint on http://{}/metrics and /healthz",
                handle.local_addr()
            );
            Some(handle)
        }
        None => None,
    };
    println!(
        "turnstile: listening on {} (QUIC, ALPN turnstile/1) with {shards} shard(s) on cores {:?}; io_uring {:?}, GSO {}, GRO {}; kernel {}",
        config.server.listen,
        cores,
        probe.auto_mode,
        probe.udp_gso,
        probe.udp_gro,
        probe.kernel_release
    );
    if agents.plane.routes.is_empty() {
        println!(
            "turnstile: no routes configured: decide is answered by the built-in allow-all route"
        );
    } else {
        let routes: Vec<String> = agents
            .plane
            .routes
            .iter()
            .map(|r| format!("{} = {:?}", r.id, r.groups))
            .collect();
        println!(
            "turnstile: {} agent(s); routes: {}",
            agents.plane.agents.len(),
            routes.join("; ")
        );
    }

    // SIGHUP reloads; the first SIGTERM/SIGINT drains.
    let mut signal = None;
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            reload(
                config_path,
                config,
                &handles,
                agents.plane.wasm_engine.as_deref(),
            );
            continue;
        }
        signal = Some(sig);
        break;
    }
    let drain = config.server.drain_timeout;
    println!(
        "turnstile: received signal {}; draining requests for up to {} ms",
        signal.unwrap_or(0),
        drain.as_millis()
    );
    draining.store(true, std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + drain;
    for h in &handles {
        h.send(Control::Drain { deadline });
    }
    // A second signal during the drain stops at once.
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            eprintln!("turnstile: second signal: stopping without waiting for the drain");
            std::process::exit(1);
        }
    });
    let mut failed = None;
    for h in handles {
        match h.join() {
            Ok(r) => tracing::info!(
                shard = r.shard,
                connections = r.front.connections_accepted,
                requests = r.front.requests,
                cancelled = r.front.requests_cancelled,
                steered_out = r.datagrams_steered_out,
                steered_in = r.datagrams_steered_in,
                sleeps = r.sleeps,
                "shard stopped"
            ),
            Err(e) => failed = Some(e.to_string()),
        }
    }
    if let Some(s) = &agents.supervisor {
        s.stop_all(Duration::from_secs(2));
    }
    if let Some(a) = admin {
        a.stop();
    }
    match failed {
        Some(e) => Err(e),
        None => {
            println!("turnstile: stopped cleanly");
            Ok(())
        }
    }
}

/// Cores to pin shards to: the configured list, or 0, 1, 2... limited to the cores present.
fn core_ids(config: &Config, shards: usize) -> Vec<usize> {
    if !config.server.cores.is_empty() {
        return config.server.cores.clone();
    }
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if available.is_empty() {
        return Vec::new();
    }
    (0..shards)
        .map(|i| available[i % available.len()])
        .collect()
}
