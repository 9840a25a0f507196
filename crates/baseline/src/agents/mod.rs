//! The baseline's agent path: the same agent binaries, routes, timeouts and fail modes as
//! turnstile, built the conventional way (tokio tasks, JSON over `UnixStream`s, owned request
//! structs, a mutex-guarded map of calls per connection).
//!
//! Request phase only: a `decide` carrying the request headers (and its first body chunk) runs
//! through the route's chain; other phases are answered `notImplemented`. No circuit breakers.

mod chain;
mod conn;
mod json;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};
use turnstile_config::{Config, FailMode, Placement};
use turnstile_supervisor::{ProcessSpec, RuntimeDir, Supervisor, SupervisorHandle, wait_ready};

pub use chain::decide;

/// How long start-up waits for agents (their sockets, then the first connections).
const AGENTS_READY_WAIT: Duration = Duration::from_millis(crate::limits::AGENTS_READY_WAIT_MS);

/// One agent as the chain sees it.
struct Agent {
    id: String,
    pool: Arc<conn::Pool>,
    timeout: Duration,
    fail_mode: FailMode,
    fail_status: u16,
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
}

/// One route: groups of agent indexes, and the route's fail-mode override.
struct Route {
    groups: Vec<Vec<usize>>,
    fail_mode: Option<FailMode>,
}

/// Agents and routes, shared by every request task.
pub struct Plane {
    agents: Vec<Agent>,
    routes: HashMap<String, Route>,
    /// Supervised agent processes (stopped when the plane is dropped).
    _supervisor: Option<SupervisorHandle>,
}

impl Plane {
    /// Starts the supervised agents, connects to every agent (waiting, bounded, for the first
    /// connections) and returns the plane; `None` when the configuration has no agents (then
    /// `decide` is the built-in allow-all).
    pub async fn start(config: &Config) -> Result<Option<Arc<Plane>>, String> {
        if config.agents.is_empty() {
            return Ok(None);
        }
        let mut processes = Vec::new();
        let mut sockets = Vec::new();
        let runtime = if config
            .agents
            .iter()
            .any(|a| matches!(a.placement, Placement::Supervised { .. }))
        {
            Some(
                match &config.server.runtime_dir {
                    Some(p) => RuntimeDir::open(p.join("baseline")),
                    None => RuntimeDir::open_default(),
                }
                .map_err(|e| format!("agent runtime directory: {e}"))?,
            )
        } else {
            None
        };
        for a in &config.agents {
            let socket: PathBuf = match &a.placement {
                Placement::Supervised { argv } => {
                    let dir = runtime.as_ref().ok_or("no runtime directory")?;
                    let socket = dir.socket_path(&a.id).map_err(|e| e.to_string())?;
                    processes.push(ProcessSpec::new(&a.id, argv.clone(), &socket).pinned(&a.cpus));
                    socket
                }
                Placement::External { socket } => socket.clone(),
                Placement::Wasm { .. } => {
                    return Err(format!(
                        "agent {}: WASM agents are turnstile only; the baseline has no WASM runtime",
                        a.id
                    ));
                }
            };
            sockets.push(socket);
        }
        let supervisor = if processes.is_empty() {
            None
        } else {
            let expected: Vec<String> = processes.iter().map(|p| p.agent_id.clone()).collect();
            let (tx, rx) = crossbeam_channel::bounded(1024);
            let handle = Supervisor::start(processes, tx).map_err(|e| format!("agents: {e}"))?;
            tokio::task::spawn_blocking(move || {
                let late = wait_ready(&rx, &expected, AGENTS_READY_WAIT, |_| {});
                if !late.is_empty() {
                    eprintln!("turnstile-baseline: agents not ready in time: {late:?}");
                }
                // Keep draining events so the supervisor never blocks on a full channel.
                for _ in rx {}
            });
            Some(handle)
        };
        let mut agents = Vec::new();
        let mut waits = Vec::new();
        for (a, socket) in config.agents.iter().zip(sockets) {
            let pool = conn::Pool::new(&a.id, a.connections as usize);
            let (tx, rx) = oneshot::channel();
            tokio::spawn(pool.clone().run(
                socket,
                a.config.clone().into_bytes(),
                AGENTS_READY_WAIT,
                tx,
            ));
            waits.push(rx);
            agents.push(Agent {
                id: a.id.clone(),
                pool,
                timeout: a.timeout,
                fail_mode: a.fail_mode,
                fail_status: a.fail_status,
                slots: Arc::new(Semaphore::new(a.max_in_flight.max(1) as usize)),
                queue_timeout: a.queue_timeout,
            });
        }
        for w in waits {
            let _ = w.await;
        }
        let index: HashMap<&str, usize> = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.as_str(), i))
            .collect();
        let mut routes = HashMap::new();
        for r in &config.routes {
            let mut groups = Vec::new();
            for g in &r.chain {
                let mut group = Vec::new();
                for id in g {
                    let i = index.get(id.as_str()).copied().ok_or_else(|| {
                        format!(
                            "route {:?} names agent {id:?}, which is not configured",
                            r.id
                        )
                    })?;
                    group.push(i);
                }
                groups.push(group);
            }
            routes.insert(
                r.id.clone(),
                Route {
                    groups,
                    fail_mode: r.fail_mode,
                },
            );
        }
        Ok(Some(Arc::new(Plane {
            agents,
            routes,
            _supervisor: supervisor,
        })))
    }
}

/// Unix time now, in milliseconds (0 if the clock is before 1970).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
