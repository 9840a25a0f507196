//! `[agents.<id>]` and `[[routes]]`: which agents exist, how turnstile reaches them, the policy
//! each call runs under, and which chain of agent groups a route runs.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{quoted, ranged};
use crate::error::ConfigError;
use crate::limits;

/// `[agents.<id>]` as read from TOML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileAgent {
    pub command: Vec<String>,
    pub socket: String,
    pub wasm: String,
    pub wasm_memory_bytes: i64,
    pub wasm_fuel_per_call: i64,
    pub wasm_deadline_ms: i64,
    pub wasm_instances: i64,
    pub cpus: Vec<i64>,
    pub peer_uid: Option<i64>,
    pub connections: i64,
    pub timeout_ms: i64,
    pub max_in_flight: i64,
    pub queue_timeout_ms: i64,
    pub fail_mode: String,
    pub fail_status: i64,
    pub config: String,
    pub breaker: FileBreaker,
}

impl Default for FileAgent {
    fn default() -> Self {
        Self {
            command: Vec::new(),
            socket: String::new(),
            wasm: String::new(),
            wasm_memory_bytes: 64 << 20,
            wasm_fuel_per_call: 10_000_000,
            wasm_deadline_ms: 100,
            wasm_instances: 4,
            cpus: Vec::new(),
            peer_uid: None,
            connections: 4,
            timeout_ms: 100,
            max_in_flight: 1024,
            queue_timeout_ms: 10,
            fail_mode: "closed".to_owned(),
            fail_status: 503,
            config: String::new(),
            breaker: FileBreaker::default(),
        }
    }
}

/// `[agents.<id>.breaker]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileBreaker {
    pub consecutive_failures: i64,
    pub error_rate_percent: i64,
    pub window_ms: i64,
    pub min_calls: i64,
    pub open_ms: i64,
    pub half_open_probes: i64,
}

impl Default for FileBreaker {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            error_rate_percent: 50,
            window_ms: 10_000,
            min_calls: 20,
            open_ms: 5_000,
            half_open_probes: 3,
        }
    }
}

/// `[[routes]]` as read from TOML.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileRoute {
    pub id: String,
    pub chain: Vec<Vec<String>>,
    pub fail_mode: String,
}

/// What a failed agent call turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Allow, with an audit tag naming the agent and the failure.
    Open,
    /// Block with this HTTP status.
    Closed {
        /// Status of the block.
        status: u16,
    },
}

/// How turnstile reaches an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// turnstile starts this command (argv; `{socket}` is replaced by the socket path), restarts
    /// it when it dies and stops it on shutdown.
    Supervised {
        /// The command and its arguments.
        argv: Vec<String>,
    },
    /// Someone else runs the agent; turnstile connects to this socket.
    External {
        /// The agent's socket.
        socket: PathBuf,
    },
    /// An in-process WebAssembly module, one instance set per shard (docs/wasm-abi.md).
    Wasm {
        /// The module file (binary or text format).
        module: PathBuf,
        /// Its limits.
        limits: WasmLimitsConfig,
    },
}

/// Per-call limits of a WASM agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WasmLimitsConfig {
    /// Linear memory an instance may grow to.
    pub memory_bytes: u64,
    /// Fuel (roughly instructions) one call may burn.
    pub fuel_per_call: u64,
    /// Wall-clock time one call may take.
    pub deadline: Duration,
    /// Instances per agent per shard (one serving, the rest warm spares).
    pub instances: u32,
}

/// Circuit breaker settings of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Or open when at least this percentage of calls in the window failed...
    pub error_rate_percent: u32,
    /// ...over this window...
    pub window: Duration,
    /// ...once the window holds at least this many calls.
    pub min_calls: u32,
    /// Stay open this long, then let probes through.
    pub open_for: Duration,
    /// Probe calls in the half-open state; all must succeed to close.
    pub half_open_probes: u32,
}

/// One agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Its id (the table name), `[a-z0-9_-]{1,64}`.
    pub id: String,
    /// How to reach it.
    pub placement: Placement,
    /// CPUs a supervised agent is pinned to (`taskset`), e.g. the shard's own core so a call
    /// never wakes another core, or a dedicated core for a busy-polling agent. Empty = unpinned.
    pub cpus: Vec<usize>,
    /// The uid the agent's socket must belong to (SO_PEERCRED); `None` = turnstile's own uid.
    pub peer_uid: Option<u32>,
    /// Connections per shard (1 to 32).
    pub connections: u32,
    /// Time an agent has to answer one call.
    pub timeout: Duration,
    /// Calls in flight per shard; more wait up to `queue_timeout`.
    pub max_in_flight: u32,
    /// How long a call may wait for a free slot (or a resumed, unpaused agent).
    pub queue_timeout: Duration,
    /// What a failed call turns into.
    pub fail_mode: FailMode,
    /// Status of a fail-closed block for this agent (also when a route overrides an open agent
    /// to closed).
    pub fail_status: u16,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Agent-specific configuration text pushed with the `configure` event.
    pub config: String,
}

/// One route: an ordered chain of agent groups (agents in a group run in parallel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Route id ("default" is also the route of requests that name none).
    pub id: String,
    /// Groups of agent ids, run in order.
    pub chain: Vec<Vec<String>>,
    /// Overrides every agent's fail mode on this route.
    pub fail_mode: Option<FailMode>,
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn fail_mode(key: &str, mode: &str, status: i64) -> Result<FailMode, ConfigError> {
    match mode {
        "open" => Ok(FailMode::Open),
        "closed" => Ok(FailMode::Closed {
            status: ranged(&format!("{key}_status"), status, 400, 599)?,
        }),
        other => Err(ConfigError::invalid(
            format!("{key}_mode"),
            quoted(other),
            "must be \"open\" (allow, with an audit tag) or \"closed\" (block)",
        )),
    }
}

pub(crate) fn agents(
    file: &BTreeMap<String, FileAgent>,
    base: Option<&Path>,
) -> Result<Vec<AgentConfig>, ConfigError> {
    if file.len() as u64 > limits::AGENTS_MAX {
        return Err(ConfigError::invalid(
            "agents",
            format!("[{} agents]", file.len()),
            format!("at most {} agents", limits::AGENTS_MAX),
        ));
    }
    let mut out = Vec::with_capacity(file.len());
    for (id, f) in file {
        let key = |k: &str| format!("agents.{id}.{k}");
        if !valid_id(id) {
            return Err(ConfigError::invalid(
                format!("agents.{id}"),
                quoted(id),
                "agent ids are 1 to 64 characters of a-z, 0-9, '-' and '_'",
            ));
        }
        let placements = [
            !f.command.is_empty(),
            !f.socket.is_empty(),
            !f.wasm.is_empty(),
        ];
        if placements.iter().filter(|p| **p).count() > 1 {
            return Err(ConfigError::invalid(
                format!("agents.{id}"),
                "{...}".to_owned(),
                "set exactly one of `command` (turnstile runs the agent), `socket` (someone else \
                 runs it) and `wasm` (an in-process module)",
            ));
        }
        let relative = |p: &str| {
            let p = PathBuf::from(p);
            match base {
                Some(b) if p.is_relative() => b.join(p),
                _ => p,
            }
        };
        let placement = if !f.wasm.is_empty() {
            Placement::Wasm {
                module: relative(&f.wasm),
                limits: WasmLimitsConfig {
                    memory_bytes: ranged(
                        &key("wasm_memory_bytes"),
                        f.wasm_memory_bytes,
                        1 << 16,
                        1 << 30,
                    )?,
                    fuel_per_call: ranged(
                        &key("wasm_fuel_per_call"),
                        f.wasm_fuel_per_call,
                        1000,
                        10_000_000_000,
                    )?,
                    deadline: Duration::from_millis(ranged(
                        &key("wasm_deadline_ms"),
                        f.wasm_deadline_ms,
                        1,
                        60_000,
                    )?),
                    instances: ranged(&key("wasm_instances"), f.wasm_instances, 1, 64)?,
                },
            }
        } else {
            match (f.command.is_empty(), f.socket.is_empty()) {
                (false, true) => {
                    if f.command[0].is_empty() {
                        return Err(ConfigError::invalid(
                            key("command"),
                            format!("{:?}", f.command),
                            "the first element must name a program",
                        ));
                    }
                    Placement::Supervised {
                        argv: f.command.clone(),
                    }
                }
                (true, false) => {
                    let socket = PathBuf::from(&f.socket);
                    let socket = match base {
                        Some(b) if socket.is_relative() => b.join(socket),
                        _ => socket,
                    };
                    Placement::External { socket }
                }
                (true, true) => {
                    return Err(ConfigError::invalid(
                        format!("agents.{id}"),
                        "{}".to_owned(),
                        "set `command = [...]` (turnstile runs the agent), `socket = \"...\"` \
                     (someone else runs it) or `wasm = \"module.wasm\"` (in-process)",
                    ));
                }
                (false, false) => {
                    return Err(ConfigError::invalid(
                        key("socket"),
                        quoted(&f.socket),
                        "set either `command` or `socket`, not both (a supervised agent's socket \
                     lives in server.runtime_dir)",
                    ));
                }
            }
        };
        if !f.cpus.is_empty() && !matches!(placement, Placement::Supervised { .. }) {
            return Err(ConfigError::invalid(
                key("cpus"),
                format!("{:?}", f.cpus),
                "only agents turnstile starts (`command`) can be pinned",
            ));
        }
        let mut cpus = Vec::with_capacity(f.cpus.len());
        for &c in &f.cpus {
            cpus.push(ranged(&key("cpus"), c, 0, limits::CORE_ID_MAX)?);
        }
        let peer_uid = match f.peer_uid {
            None => None,
            Some(uid) => Some(ranged(&key("peer_uid"), uid, 0, u64::from(u32::MAX))?),
        };
        let b = &f.breaker;
        let bkey = |k: &str| format!("agents.{id}.breaker.{k}");
        out.push(AgentConfig {
            id: id.clone(),
            placement,
            cpus,
            peer_uid,
            connections: ranged(
                &key("connections"),
                f.connections,
                1,
                limits::AGENT_CONNECTIONS_MAX,
            )?,
            timeout: Duration::from_millis(ranged(
                &key("timeout_ms"),
                f.timeout_ms,
                1,
                limits::AGENT_TIMEOUT_MS_MAX,
            )?),
            max_in_flight: ranged(
                &key("max_in_flight"),
                f.max_in_flight,
                1,
                limits::AGENT_IN_FLIGHT_MAX,
            )?,
            queue_timeout: Duration::from_millis(ranged(
                &key("queue_timeout_ms"),
                f.queue_timeout_ms,
                0,
                limits::AGENT_TIMEOUT_MS_MAX,
            )?),
            fail_mode: fail_mode(&format!("agents.{id}.fail"), &f.fail_mode, f.fail_status)?,
            fail_status: ranged(&key("fail_status"), f.fail_status, 400, 599)?,
            breaker: BreakerConfig {
                consecutive_failures: ranged(
                    &bkey("consecutive_failures"),
                    b.consecutive_failures,
                    1,
                    1_000_000,
                )?,
                error_rate_percent: ranged(
                    &bkey("error_rate_percent"),
                    b.error_rate_percent,
                    1,
                    100,
                )?,
                window: Duration::from_millis(ranged(
                    &bkey("window_ms"),
                    b.window_ms,
                    10,
                    limits::BREAKER_MS_MAX,
                )?),
                min_calls: ranged(&bkey("min_calls"), b.min_calls, 1, 1_000_000)?,
                open_for: Duration::from_millis(ranged(
                    &bkey("open_ms"),
                    b.open_ms,
                    1,
                    limits::BREAKER_MS_MAX,
                )?),
                half_open_probes: ranged(
                    &bkey("half_open_probes"),
                    b.half_open_probes,
                    1,
                    limits::BREAKER_PROBES_MAX,
                )?,
            },
            config: f.config.clone(),
        });
    }
    Ok(out)
}

pub(crate) fn routes(
    file: &[FileRoute],
    agents: &[AgentConfig],
) -> Result<Vec<RouteConfig>, ConfigError> {
    if file.len() as u64 > limits::ROUTES_MAX {
        return Err(ConfigError::invalid(
            "routes",
            format!("[{} routes]", file.len()),
            format!("at most {} routes", limits::ROUTES_MAX),
        ));
    }
    let known: HashSet<&str> = agents.iter().map(|a| a.id.as_str()).collect();
    let mut ids = HashSet::new();
    let mut out = Vec::with_capacity(file.len());
    for (i, r) in file.iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].{k}");
        let id = if r.id.is_empty() {
            "default"
        } else {
            r.id.as_str()
        };
        if !valid_id(id) {
            return Err(ConfigError::invalid(
                key("id"),
                quoted(id),
                "route ids are 1 to 64 characters of a-z, 0-9, '-' and '_'",
            ));
        }
        if !ids.insert(id) {
            return Err(ConfigError::invalid(
                key("id"),
                quoted(id),
                "route id used twice",
            ));
        }
        if r.chain.is_empty() || r.chain.len() as u64 > limits::GROUPS_PER_ROUTE_MAX {
            return Err(ConfigError::invalid(
                key("chain"),
                format!("{:?}", r.chain),
                format!(
                    "a chain has 1 to {} groups, e.g. [[\"auth\"], [\"waf\", \"ratelimit\"]]",
                    limits::GROUPS_PER_ROUTE_MAX
                ),
            ));
        }
        let total: usize = r.chain.iter().map(Vec::len).sum();
        if total as u64 > limits::AGENTS_PER_ROUTE_MAX {
            return Err(ConfigError::invalid(
                key("chain"),
                format!("[{total} agents]"),
                format!(
                    "a route has at most {} agents",
                    limits::AGENTS_PER_ROUTE_MAX
                ),
            ));
        }
        let mut seen = HashSet::new();
        for group in &r.chain {
            if group.is_empty() || group.len() as u64 > limits::AGENTS_PER_GROUP_MAX {
                return Err(ConfigError::invalid(
                    key("chain"),
                    format!("{:?}", r.chain),
                    format!("a group has 1 to {} agents", limits::AGENTS_PER_GROUP_MAX),
                ));
            }
            for agent in group {
                if !known.contains(agent.as_str()) {
                    return Err(ConfigError::invalid(
                        key("chain"),
                        quoted(agent),
                        "no such agent: define it in an [agents.<id>] table",
                    ));
                }
                if !seen.insert(agent.as_str()) {
                    return Err(ConfigError::invalid(
                        key("chain"),
                        quoted(agent),
                        "an agent appears twice in one route",
                    ));
                }
            }
        }
        let fail_mode = if r.fail_mode.is_empty() {
            None
        } else {
            // A route overrides the mode only; a closed block uses each agent's fail_status.
            Some(fail_mode(&key("fail"), &r.fail_mode, 503)?)
        };
        out.push(RouteConfig {
            id: id.to_owned(),
            chain: r.chain.clone(),
            fail_mode,
        });
    }
    Ok(out)
}
