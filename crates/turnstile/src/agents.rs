//! Turns the `[agents]` and `[[routes]]` configuration into what the shards need (the plane
//! spec), and starts the agents turnstile supervises.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnstile_config::{Config, FailMode, Placement};
use turnstile_dispatch::{AgentSpec, BreakerSpec, RouteSpec};
use turnstile_shard::{AgentSetup, PlaneEvent, PlaneSpec};
use turnstile_supervisor::{
    ProcessSpec, RuntimeDir, Supervisor, SupervisorEvent, SupervisorHandle,
};

/// How long start-up waits for supervised agents to create their sockets. Shards connect with
/// backoff anyway; waiting only spares the first requests a fail mode.
const AGENTS_READY_WAIT_MS: u64 = 10_000;

/// Longest grace period honoured for an agent's `restartRequired` (a longer one is cut to it).
const RESTART_GRACE_MS_MAX: u64 = 60_000;

/// Restarts agents asked for (`restartRequired`), each after its grace period. Sans-IO: time is
/// passed in. One pending restart per agent: every connection of an agent (one or more per
/// shard) passes on the same request, and the later copies must not restart it again.
#[derive(Debug, Default)]
struct RestartSchedule {
    /// (due, agent id); at most one entry per agent, so bounded by the number of agents.
    pending: Vec<(Instant, String)>,
}

impl RestartSchedule {
    /// An agent asked to be restarted after `grace`. Returns when it will be, or `None` when a
    /// restart of it is already pending (then that one stands).
    fn handle_request(&mut self, now: Instant, agent_id: &str, grace: Duration) -> Option<Instant> {
        if self.pending.iter().any(|(_, a)| a == agent_id) {
            return None;
        }
        let due = now + grace.min(Duration::from_millis(RESTART_GRACE_MS_MAX));
        self.pending.push((due, agent_id.to_owned()));
        Some(due)
    }

    /// The next agent whose restart is due at `now`.
    fn poll_due(&mut self, now: Instant) -> Option<String> {
        let i = self.pending.iter().position(|(due, _)| *due <= now)?;
        Some(self.pending.swap_remove(i).1)
    }

    /// When the next restart is due.
    fn poll_timeout(&self) -> Option<Instant> {
        self.pending.iter().map(|(due, _)| *due).min()
    }
}

/// Loads a WASM agent's module with its configured limits.
pub fn load_wasm(
    engine: &turnstile_wasm_host::WasmEngine,
    id: &str,
    module: &std::path::Path,
    limits: &turnstile_config::WasmLimitsConfig,
) -> Result<Arc<turnstile_wasm_host::WasmModule>, String> {
    let bytes = std::fs::read(module).map_err(|e| {
        format!(
            "agent {id}: cannot read WASM module {}: {e}",
            module.display()
        )
    })?;
    let limits = turnstile_wasm_host::WasmLimits {
        memory_bytes: limits.memory_bytes,
        fuel_per_call: limits.fuel_per_call,
        deadline: limits.deadline,
        instances_max: limits.instances,
        ..turnstile_wasm_host::WasmLimits::default()
    };
    engine
        .load(id, &bytes, limits)
        .map_err(|e| format!("agent {id}: WASM module {}: {e}", module.display()))
}

/// What `serve` keeps while running.
pub struct Agents {
    /// The shards' view of agents and routes.
    pub plane: Arc<PlaneSpec>,
    /// Running supervised agents (stopped on shutdown).
    pub supervisor: Option<Arc<SupervisorHandle>>,
    /// Where shards report agent events.
    pub events: Option<crossbeam_channel::Sender<PlaneEvent>>,
}

/// A bare program name found next to the turnstile binary wins over `PATH`: `make run` builds
/// the example agents into the same directory.
fn resolve_program(argv: &[String]) -> Vec<String> {
    let mut argv = argv.to_vec();
    if let Some(first) = argv.first_mut()
        && !first.contains('/')
        && let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let candidate = dir.join(first.as_str());
        if candidate.is_file() {
            *first = candidate.display().to_string();
        }
    }
    argv
}

fn dispatch_fail_mode(mode: FailMode) -> (turnstile_dispatch::FailMode, u16) {
    match mode {
        FailMode::Open => (turnstile_dispatch::FailMode::Open, 503),
        FailMode::Closed { status } => (turnstile_dispatch::FailMode::Closed, status),
    }
}

/// Builds the plane spec and starts supervised agents (waiting, bounded, for their sockets).
pub fn start(config: &Config) -> Result<Agents, String> {
    if config.agents.is_empty() {
        return Ok(Agents {
            plane: Arc::new(PlaneSpec::default()),
            supervisor: None,
            events: None,
        });
    }
    let uid = turnstile_supervisor::current_uid().map_err(|e| e.to_string())?;
    let needs_runtime_dir = config
        .agents
        .iter()
        .any(|a| matches!(a.placement, Placement::Supervised { .. }));
    let runtime = if needs_runtime_dir {
        Some(
            match &config.server.runtime_dir {
                Some(p) => RuntimeDir::open(p.clone()),
                None => RuntimeDir::open_default(),
            }
            .map_err(|e| format!("agent runtime directory: {e}"))?,
        )
    } else {
        None
    };

    let mut plane = PlaneSpec::default();
    if config
        .agents
        .iter()
        .any(|a| matches!(a.placement, Placement::Wasm { .. }))
    {
        plane.wasm_engine = Some(Arc::new(
            turnstile_wasm_host::WasmEngine::new(turnstile_wasm_host::EngineConfig::default())
                .map_err(|e| format!("WASM engine: {e}"))?,
        ));
    }
    let mut processes = Vec::new();
    for a in &config.agents {
        let mut wasm = None;
        let socket: PathBuf = match &a.placement {
            Placement::Supervised { argv } => {
                // Present whenever an agent is supervised (computed just above).
                let dir = runtime.as_ref().ok_or("no runtime directory")?;
                let socket = dir.socket_path(&a.id).map_err(|e| e.to_string())?;
                let argv = resolve_program(argv);
                processes.push(ProcessSpec::new(&a.id, argv, &socket).pinned(&a.cpus));
                socket
            }
            Placement::External { socket } => socket.clone(),
            Placement::Wasm { module, limits } => {
                let engine = plane.wasm_engine.as_ref().ok_or("no WASM engine")?;
                wasm = Some(load_wasm(engine, &a.id, module, limits)?);
                PathBuf::new()
            }
        };
        plane.agents.push(AgentSetup {
            id: a.id.clone(),
            socket,
            peer_uid: a.peer_uid.unwrap_or(uid),
            connections: a.connections as usize,
            config: a.config.clone().into_bytes(),
            wasm,
        });
        let (fail_mode, _) = dispatch_fail_mode(a.fail_mode);
        let fail_closed_status = a.fail_status;
        let mut spec = AgentSpec::new(&a.id);
        spec.timeout = a.timeout;
        spec.max_in_flight = a.max_in_flight;
        spec.queue_timeout = a.queue_timeout;
        spec.fail_mode = fail_mode;
        spec.fail_closed_status = fail_closed_status;
        spec.breaker = BreakerSpec {
            consecutive_failures: a.breaker.consecutive_failures,
            error_rate: a.breaker.error_rate_percent as f32 / 100.0,
            window: a.breaker.window,
            min_calls: a.breaker.min_calls,
            cool_down: a.breaker.open_for,
            half_open_probes: a.breaker.half_open_probes,
        };
        plane.policies.push(spec);
    }
    for r in &config.routes {
        let mut route = RouteSpec {
            id: r.id.clone(),
            groups: r.chain.clone(),
            fail_modes: Vec::new(),
        };
        if let Some(mode) = r.fail_mode {
            for agent in r.chain.iter().flatten() {
                route
                    .fail_modes
                    .push((agent.clone(), dispatch_fail_mode(mode).0));
            }
        }
        plane.routes.push(route);
    }

    // The shards build their dispatch from this; refuse here, clearly, what they would refuse.
    turnstile_dispatch::Dispatch::new(plane.policies.clone(), plane.routes.clone())
        .map_err(|e| format!("agents and routes: {e}"))?;
    let connections: usize = plane
        .agents
        .iter()
        .filter(|a| a.wasm.is_none())
        .map(|a| a.connections)
        .sum();
    if connections > turnstile_uring::limits::UDS_CONNECTIONS_MAX {
        return Err(format!(
            "agents: {connections} connections per shard in all (the sum of every agent's `connections`), but a shard holds at most {}; lower some agents' `connections`",
            turnstile_uring::limits::UDS_CONNECTIONS_MAX
        ));
    }
    let supervisor = if processes.is_empty() {
        None
    } else {
        let expected: Vec<String> = processes.iter().map(|p| p.agent_id.clone()).collect();
        let (tx, rx) = crossbeam_channel::bounded(1024);
        let handle = Supervisor::start(processes, tx).map_err(|e| format!("agents: {e}"))?;
        let late = turnstile_supervisor::wait_ready(
            &rx,
            &expected,
            Duration::from_millis(AGENTS_READY_WAIT_MS),
            |event| match event {
                SupervisorEvent::Ready { agent_id } => {
                    println!("turnstile: agent {agent_id} is ready")
                }
                other => log_event(other),
            },
        );
        if !late.is_empty() {
            eprintln!(
                "turnstile: agents not ready after {AGENTS_READY_WAIT_MS} ms: {late:?}; starting anyway (their calls get the fail mode until they are)"
            );
        }
        std::thread::Builder::new()
            .name("turnstile-agent-events".into())
            .spawn(move || {
                for event in rx {
                    log_event(&event);
                }
            })
            .map_err(|e| format!("cannot start the agent event thread: {e}"))?;
        Some(Arc::new(handle))
    };

    let (events_tx, events_rx) = crossbeam_channel::bounded::<PlaneEvent>(256);
    let restarter = supervisor.clone();
    std::thread::Builder::new()
        .name("turnstile-plane-events".into())
        .spawn(move || {
            let mut schedule = RestartSchedule::default();
            loop {
                let event = match schedule.poll_timeout() {
                    Some(at) => {
                        match events_rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                            Ok(e) => Some(e),
                            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    None => match events_rx.recv() {
                        Ok(e) => Some(e),
                        Err(_) => return,
                    },
                };
                if let Some(PlaneEvent::RestartRequired { agent_id, grace }) = event {
                    match &restarter {
                        Some(_) => {
                            if schedule
                                .handle_request(Instant::now(), &agent_id, grace)
                                .is_some()
                            {
                                println!(
                                    "turnstile: agent {agent_id} asked for a restart (in {} ms)",
                                    grace.as_millis().min(u128::from(RESTART_GRACE_MS_MAX))
                                );
                            }
                        }
                        None => eprintln!(
                            "turnstile: agent {agent_id} asked for a restart, but it is run by someone else"
                        ),
                    }
                }
                while let Some(agent_id) = schedule.poll_due(Instant::now()) {
                    if let Some(s) = &restarter
                        && let Err(e) = s.restart(&agent_id)
                    {
                        eprintln!("turnstile: cannot restart agent {agent_id}: {e}");
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the plane event thread: {e}"))?;

    Ok(Agents {
        plane: Arc::new(plane),
        supervisor,
        events: Some(events_tx),
    })
}

fn log_event(event: &SupervisorEvent) {
    match event {
        SupervisorEvent::Started { agent_id, pid } => {
            tracing::info!(agent = %agent_id, pid, "agent started")
        }
        SupervisorEvent::Ready { agent_id } => tracing::info!(agent = %agent_id, "agent ready"),
        SupervisorEvent::NotReady { agent_id, waited } => {
            tracing::warn!(agent = %agent_id, ?waited, "agent did not create its socket in time")
        }
        SupervisorEvent::Exited {
            agent_id,
            status,
            restart_in,
        } => tracing::warn!(agent = %agent_id, ?status, ?restart_in, "agent exited"),
        SupervisorEvent::SpawnFailed {
            agent_id,
            error,
            restart_in,
        } => tracing::error!(agent = %agent_id, %error, ?restart_in, "agent could not be started"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_wait_for_their_grace_and_happen_once() {
        let t0 = Instant::now();
        let mut s = RestartSchedule::default();
        let due = s.handle_request(t0, "waf", Duration::from_millis(500));
        assert_eq!(due, Some(t0 + Duration::from_millis(500)));
        // The same request from the agent's other connections changes nothing.
        assert_eq!(s.handle_request(t0, "waf", Duration::ZERO), None);
        assert_eq!(s.handle_request(t0, "auth", Duration::ZERO), Some(t0));
        assert_eq!(s.poll_timeout(), Some(t0));
        assert_eq!(s.poll_due(t0).as_deref(), Some("auth"));
        assert_eq!(s.poll_due(t0 + Duration::from_millis(499)), None);
        assert_eq!(
            s.poll_due(t0 + Duration::from_millis(500)).as_deref(),
            Some("waf")
        );
        assert_eq!(s.poll_timeout(), None);
        // Once done, a new request schedules a new restart; huge graces are capped.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            s.handle_request(later, "waf", Duration::from_secs(3600)),
            Some(later + Duration::from_millis(RESTART_GRACE_MS_MAX))
        );
    }
}
