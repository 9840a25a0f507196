//! What the dispatch is configured with (agents, routes, interest, breaker settings), how it is
//! validated against [`crate::limits`], and the compiled form the hot path reads.

use std::time::Duration;

use bytes::Bytes;

use crate::limits::*;
use crate::types::{AgentIndex, EventKind, FailMode, RequestView};

/// Why a configuration was refused. Messages name the agent or route and the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// More of something than a limit allows.
    #[error("too many {what}: {count} (at most {max})")]
    TooMany {
        /// What (e.g. "agents", "groups in route \"api\"").
        what: String,
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Two agents share an id.
    #[error("agent id {0:?} appears twice")]
    DuplicateAgent(String),
    /// Two routes share an id.
    #[error("route id {0:?} appears twice")]
    DuplicateRoute(String),
    /// A route names an agent that is not configured.
    #[error("route {route:?} names unknown agent {agent:?}")]
    UnknownAgent {
        /// The route.
        route: String,
        /// The name it used.
        agent: String,
    },
    /// An agent appears twice in one route's chain.
    #[error("route {route:?} lists agent {agent:?} more than once")]
    AgentRepeated {
        /// The route.
        route: String,
        /// The agent.
        agent: String,
    },
    /// A value is out of range.
    #[error("{owner}: {field} = {value}: {reason}")]
    Invalid {
        /// The agent or route.
        owner: String,
        /// Field name.
        field: &'static str,
        /// The value as given.
        value: String,
        /// What would be right.
        reason: &'static str,
    },
    /// An agent index is out of range.
    #[error("no agent with index {0}")]
    NoSuchAgent(u16),
}

/// Cheap predicates, declared by an agent at handshake, evaluated before calling it: a request that
/// does not match is never sent (outcome `Skipped`). An empty list matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interest {
    /// Events the agent subscribes to. An agent subscribed to `RequestBody` (`ResponseBody`) also
    /// gets the headers event of a request (response) that has a body, since that event carries
    /// the first chunk.
    pub events: Vec<EventKind>,
    /// The path must start with one of these.
    pub path_prefixes: Vec<String>,
    /// The method must be one of these (exact, case-sensitive as HTTP methods are).
    pub methods: Vec<String>,
    /// Every one of these header names must be present (case-insensitive).
    pub required_headers: Vec<Bytes>,
}

impl Interest {
    /// Whether a request with this view is of interest.
    pub fn matches<H: AsRef<[u8]>>(&self, view: &RequestView<'_, H>) -> bool {
        if !self.events.is_empty() && !self.events.iter().any(|e| subscribed(*e, view)) {
            return false;
        }
        if !self.path_prefixes.is_empty()
            && !self
                .path_prefixes
                .iter()
                .any(|p| view.path.starts_with(p.as_str()))
        {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == view.method) {
            return false;
        }
        self.required_headers.iter().all(|want| {
            view.header_names
                .iter()
                .any(|have| have.as_ref().eq_ignore_ascii_case(want))
        })
    }

    fn validate(&self, owner: &str) -> Result<(), ConfigError> {
        let lists = [
            ("interest.events", self.events.len()),
            ("interest.path_prefixes", self.path_prefixes.len()),
            ("interest.methods", self.methods.len()),
            ("interest.required_headers", self.required_headers.len()),
        ];
        for (what, count) in lists {
            if count > INTEREST_ITEMS_MAX {
                return Err(ConfigError::TooMany {
                    what: format!("{what} of agent {owner:?}"),
                    count,
                    max: INTEREST_ITEMS_MAX,
                });
            }
        }
        Ok(())
    }
}

fn subscribed<H: AsRef<[u8]>>(event: EventKind, view: &RequestView<'_, H>) -> bool {
    event == view.event
        || (view.has_body
            && matches!(
                (event, view.event),
                (EventKind::RequestBody, EventKind::RequestHeaders)
                    | (EventKind::ResponseBody, EventKind::ResponseHeaders)
            ))
}

/// When an agent's circuit breaker opens and how it recovers.
///
/// Closed → open after `consecutive_failures` failures in a row, or when at least `min_calls`
/// calls ended within the sliding `window` and the share of failures among them is at least
/// `error_rate`. Open for `cool_down`, then half-open: `half_open_probes` calls are let through;
/// when that many have succeeded the breaker closes, and any probe failure opens it again.
/// Failures are timeouts and errors (transport, garbage, invalid replies); a verdict of any kind is
/// a success; refusals made without calling (breaker, health, saturation) and cancellations
/// count as neither.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSpec {
    /// Failures in a row that open the breaker; 0 = this trigger is off.
    pub consecutive_failures: u32,
    /// Failure share (0.0 ..= 1.0) over the window that opens it; 0.0 = this trigger is off.
    pub error_rate: f32,
    /// Length of the sliding window for `error_rate`.
    pub window: Duration,
    /// Calls the window must hold before `error_rate` is looked at.
    pub min_calls: u32,
    /// How long the breaker stays open before probing.
    pub cool_down: Duration,
    /// Probe calls admitted while half-open (1 ..= [`BREAKER_PROBES_MAX`]).
    pub half_open_probes: u32,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec {
            consecutive_failures: 5,
            error_rate: 0.5,
            window: Duration::from_secs(10),
            min_calls: 20,
            cool_down: Duration::from_secs(5),
            half_open_probes: 1,
        }
    }
}

impl BreakerSpec {
    fn validate(&self, owner: &str) -> Result<(), ConfigError> {
        let invalid = |field, value: String, reason| ConfigError::Invalid {
            owner: owner.to_string(),
            field,
            value,
            reason,
        };
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(invalid(
                "breaker.error_rate",
                self.error_rate.to_string(),
                "must be within 0.0 ..= 1.0 (0 = off)",
            ));
        }
        if self.window.is_zero() || self.window > AGENT_TIMEOUT_MAX {
            return Err(invalid(
                "breaker.window",
                format!("{:?}", self.window),
                "must be above 0 and at most AGENT_TIMEOUT_MAX",
            ));
        }
        if self.cool_down > AGENT_TIMEOUT_MAX {
            return Err(invalid(
                "breaker.cool_down",
                format!("{:?}", self.cool_down),
                "must be at most AGENT_TIMEOUT_MAX",
            ));
        }
        if self.half_open_probes == 0 || self.half_open_probes > BREAKER_PROBES_MAX {
            return Err(invalid(
                "breaker.half_open_probes",
                self.half_open_probes.to_string(),
                "must be within 1 ..= BREAKER_PROBES_MAX",
            ));
        }
        Ok(())
    }
}

/// One agent's policy on this shard.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    /// Unique id (named by routes, reported in timings and cancel reasons).
    pub id: String,
    /// How long a call may take (multiplied while the agent reports Degraded).
    pub timeout: Duration,
    /// Calls in flight at once on this shard; more wait in the queue.
    pub max_in_flight: u32,
    /// Calls that may wait (for an in-flight slot, or for a resume after a pause); beyond that a
    /// call is refused at once (outcome `Saturated`). 0 = never wait.
    pub queue_max: u32,
    /// How long a call may wait before it gets the fail mode (outcome `Saturated`).
    pub queue_timeout: Duration,
    /// What a failure turns into, unless the route overrides it.
    pub fail_mode: FailMode,
    /// Status of the block produced by a fail-closed failure.
    pub fail_closed_status: u16,
    /// Breaker settings.
    pub breaker: BreakerSpec,
    /// Which requests it wants (may be replaced at handshake: `Dispatch::set_interest`).
    pub interest: Interest,
}

impl AgentSpec {
    /// An agent with default policy: 100 ms timeout, 256 in flight, 1024 waiting for up to 50 ms,
    /// fail closed with 503, default breaker, interested in everything.
    pub fn new(id: impl Into<String>) -> Self {
        AgentSpec {
            id: id.into(),
            timeout: Duration::from_millis(100),
            max_in_flight: 256,
            queue_max: 1024,
            queue_timeout: Duration::from_millis(50),
            fail_mode: FailMode::Closed,
            fail_closed_status: 503,
            breaker: BreakerSpec::default(),
            interest: Interest::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, value: String, reason| ConfigError::Invalid {
            owner: format!("agent {:?}", self.id),
            field,
            value,
            reason,
        };
        if self.id.is_empty() || self.id.len() > AGENT_ID_BYTES_MAX {
            return Err(invalid(
                "id",
                format!("{:?}", self.id),
                "must be 1 ..= AGENT_ID_BYTES_MAX bytes",
            ));
        }
        if self.timeout.is_zero() || self.timeout > AGENT_TIMEOUT_MAX {
            return Err(invalid(
                "timeout",
                format!("{:?}", self.timeout),
                "must be above 0 and at most AGENT_TIMEOUT_MAX",
            ));
        }
        if self.queue_timeout > AGENT_TIMEOUT_MAX {
            return Err(invalid(
                "queue_timeout",
                format!("{:?}", self.queue_timeout),
                "must be at most AGENT_TIMEOUT_MAX",
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > AGENT_CALLS_IN_FLIGHT_MAX {
            return Err(invalid(
                "max_in_flight",
                self.max_in_flight.to_string(),
                "must be within 1 ..= AGENT_CALLS_IN_FLIGHT_MAX",
            ));
        }
        if self.queue_max > WAITING_REQUESTS_MAX {
            return Err(invalid(
                "queue_max",
                self.queue_max.to_string(),
                "must be at most WAITING_REQUESTS_MAX",
            ));
        }
        if !(100..=599).contains(&self.fail_closed_status) {
            return Err(invalid(
                "fail_closed_status",
                self.fail_closed_status.to_string(),
                "must be an HTTP status (100 ..= 599)",
            ));
        }
        let owner = format!("agent {:?}", self.id);
        self.breaker.validate(&owner)?;
        self.interest.validate(&self.id)
    }
}

/// One route: its chain of agent groups. Groups run in order; the agents of one group run in
/// parallel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteSpec {
    /// Route id; "" is the default route.
    pub id: String,
    /// Agent ids per group, in chain order. An agent appears at most once per route.
    pub groups: Vec<Vec<String>>,
    /// Fail-mode overrides for agents of this route.
    pub fail_modes: Vec<(String, FailMode)>,
}

impl RouteSpec {
    /// A route with these groups and no overrides.
    pub fn new(id: impl Into<String>, groups: &[&[&str]]) -> Self {
        RouteSpec {
            id: id.into(),
            groups: groups
                .iter()
                .map(|g| g.iter().map(|a| a.to_string()).collect())
                .collect(),
            fail_modes: Vec::new(),
        }
    }

    /// Adds a fail-mode override for `agent` on this route.
    pub fn with_fail_mode(mut self, agent: impl Into<String>, mode: FailMode) -> Self {
        self.fail_modes.push((agent.into(), mode));
        self
    }
}

/// One agent's place in a compiled chain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Position {
    pub(crate) agent: AgentIndex,
    pub(crate) fail_mode: FailMode,
}

/// A route, compiled: positions in chain order, and where each group starts and ends.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) positions: Vec<Position>,
    /// `groups[g]..groups[g + 1]` are the positions of group `g`; `groups.len()` = groups + 1.
    pub(crate) group_bounds: Vec<u16>,
}

impl Route {
    pub(crate) fn groups(&self) -> usize {
        self.group_bounds.len() - 1
    }

    pub(crate) fn group(&self, g: usize) -> std::ops::Range<usize> {
        usize::from(self.group_bounds[g])..usize::from(self.group_bounds[g + 1])
    }
}

/// Validated, compiled routes: the chains, and the ids sorted for lookup.
pub(crate) struct Routes {
    pub(crate) routes: Vec<Route>,
    /// (id, index into `routes`), sorted by (length, bytes): most comparisons stop at the length.
    pub(crate) by_id: Vec<(Box<str>, u16)>,
    /// The route with id "", looked up without comparing anything.
    pub(crate) default: Option<u16>,
}

fn by_len_then_bytes(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

impl Routes {
    #[inline]
    pub(crate) fn lookup(&self, id: &str) -> Option<usize> {
        if id.is_empty() {
            return self.default.map(usize::from);
        }
        self.by_id
            .binary_search_by(|(k, _)| by_len_then_bytes(k, id))
            .ok()
            .map(|i| usize::from(self.by_id[i].1))
    }
}

/// Validates every agent and route and compiles the routes.
pub(crate) fn compile(agents: &[AgentSpec], routes: &[RouteSpec]) -> Result<Routes, ConfigError> {
    if agents.len() > AGENTS_MAX {
        return Err(too_many("agents".into(), agents.len(), AGENTS_MAX));
    }
    if routes.len() > ROUTES_MAX {
        return Err(too_many("routes".into(), routes.len(), ROUTES_MAX));
    }
    let mut agent_ids: Vec<(&str, u16)> = Vec::with_capacity(agents.len());
    for (i, a) in agents.iter().enumerate() {
        a.validate()?;
        // `i < AGENTS_MAX <= u16::MAX` (checked above and by a const assert in limits).
        agent_ids.push((a.id.as_str(), i as u16));
    }
    agent_ids.sort_unstable();
    if let Some(w) = agent_ids.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(ConfigError::DuplicateAgent(w[0].0.to_string()));
    }
    let find_agent = |id: &str| {
        agent_ids
            .binary_search_by(|(k, _)| (*k).cmp(id))
            .ok()
            .map(|i| agent_ids[i].1)
    };

    let mut compiled = Vec::with_capacity(routes.len());
    let mut by_id = Vec::with_capacity(routes.len());
    for (ri, r) in routes.iter().enumerate() {
        if r.id.len() > ROUTE_ID_BYTES_MAX {
            return Err(ConfigError::Invalid {
                owner: format!("route {:?}", r.id),
                field: "id",
                value: r.id.len().to_string(),
                reason: "longer than ROUTE_ID_BYTES_MAX bytes",
            });
        }
        if r.groups.len() > GROUPS_PER_ROUTE_MAX {
            let what = format!("groups in route {:?}", r.id);
            return Err(too_many(what, r.groups.len(), GROUPS_PER_ROUTE_MAX));
        }
        let total: usize = r.groups.iter().map(Vec::len).sum();
        if total > AGENTS_PER_ROUTE_MAX {
            let what = format!("agents in route {:?}", r.id);
            return Err(too_many(what, total, AGENTS_PER_ROUTE_MAX));
        }
        if r.fail_modes.len() > AGENTS_PER_ROUTE_MAX {
            let what = format!("fail-mode overrides in route {:?}", r.id);
            return Err(too_many(what, r.fail_modes.len(), AGENTS_PER_ROUTE_MAX));
        }
        let mut positions = Vec::with_capacity(total);
        let mut group_bounds = Vec::with_capacity(r.groups.len() + 1);
        group_bounds.push(0u16);
        for (g, group) in r.groups.iter().enumerate() {
            if group.is_empty() || group.len() > AGENTS_PER_GROUP_MAX {
                let what = format!(
                    "agents in group {g} of route {:?} (an empty group is refused too)",
                    r.id
                );
                return Err(too_many(what, group.len(), AGENTS_PER_GROUP_MAX));
            }
            for name in group {
                let idx = find_agent(name).ok_or_else(|| ConfigError::UnknownAgent {
                    route: r.id.clone(),
                    agent: name.clone(),
                })?;
                if positions.iter().any(|p: &Position| p.agent.0 == idx) {
                    return Err(ConfigError::AgentRepeated {
                        route: r.id.clone(),
                        agent: name.clone(),
                    });
                }
                positions.push(Position {
                    agent: AgentIndex(idx),
                    fail_mode: agents[usize::from(idx)].fail_mode,
                });
            }
            // positions.len() <= AGENTS_PER_ROUTE_MAX, which fits u16 (const assert in limits).
            group_bounds.push(positions.len() as u16);
        }
        for (name, mode) in &r.fail_modes {
            let idx = find_agent(name).ok_or_else(|| ConfigError::UnknownAgent {
                route: r.id.clone(),
                agent: name.clone(),
            })?;
            // An override for an agent not in this chain is harmless; it simply matches nothing.
            for p in positions.iter_mut().filter(|p| p.agent.0 == idx) {
                p.fail_mode = *mode;
            }
        }
        compiled.push(Route {
            positions,
            group_bounds,
        });
        // ri < ROUTES_MAX, which fits u16.
        by_id.push((r.id.clone().into_boxed_str(), ri as u16));
    }
    by_id.sort_unstable_by(|a, b| by_len_then_bytes(&a.0, &b.0));
    if let Some(w) = by_id.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(ConfigError::DuplicateRoute(w[0].0.to_string()));
    }
    let default = by_id.iter().find(|(k, _)| k.is_empty()).map(|(_, i)| *i);
    Ok(Routes {
        routes: compiled,
        by_id,
        default,
    })
}

fn too_many(what: String, count: usize, max: usize) -> ConfigError {
    ConfigError::TooMany { what, count, max }
}

const _: () = assert!(ROUTES_MAX <= u16::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(method: &'a str, path: &'a str, headers: &'a [&'a [u8]]) -> RequestView<'a> {
        RequestView {
            event: EventKind::RequestHeaders,
            method,
            path,
            header_names: headers,
            has_body: false,
        }
    }

    #[test]
    fn empty_interest_matches_everything() {
        assert!(Interest::default().matches(&view("GET", "/", &[])));
    }

    #[test]
    fn interest_predicates() {
        let i = Interest {
            events: vec![EventKind::RequestHeaders],
            path_prefixes: vec!["/api/".into(), "/v2/".into()],
            methods: vec!["POST".into()],
            required_headers: vec![Bytes::from_static(b"authorization")],
        };
        let auth: &[&[u8]] = &[b"Host", b"Authorization"];
        assert!(i.matches(&view("POST", "/api/x", auth)));
        assert!(i.matches(&view("POST", "/v2/", auth)));
        assert!(!i.matches(&view("GET", "/api/x", auth)));
        assert!(!i.matches(&view("POST", "/static", auth)));
        assert!(!i.matches(&view("POST", "/api/x", &[b"Host"])));
        let mut v = view("POST", "/api/x", auth);
        v.event = EventKind::ResponseHeaders;
        assert!(!i.matches(&v));
    }

    #[test]
    fn body_subscribers_get_the_headers_event_of_a_body() {
        let i = Interest {
            events: vec![EventKind::RequestBody],
            ..Interest::default()
        };
        let mut v = view("POST", "/", &[]);
        assert!(!i.matches(&v));
        v.has_body = true;
        assert!(i.matches(&v));
    }

    #[test]
    fn config_errors() {
        let a = || vec![AgentSpec::new("a"), AgentSpec::new("b")];
        assert!(compile(&a(), &[RouteSpec::new("", &[&["a", "b"]])]).is_ok());
        assert!(matches!(
            compile(&a(), &[RouteSpec::new("", &[&["a", "zz"]])]),
            Err(ConfigError::UnknownAgent { .. })
        ));
        assert!(matches!(
            compile(&a(), &[RouteSpec::new("", &[&["a"], &["a"]])]),
            Err(ConfigError::AgentRepeated { .. })
        ));
        assert!(matches!(
            compile(&a(), &[RouteSpec::new("x", &[]), RouteSpec::new("x", &[])]),
            Err(ConfigError::DuplicateRoute(_))
        ));
        assert!(matches!(
            compile(&[AgentSpec::new("a"), AgentSpec::new("a")], &[]),
            Err(ConfigError::DuplicateAgent(_))
        ));
        assert!(matches!(
            compile(&a(), &[RouteSpec::new("", &[&[]])]),
            Err(ConfigError::TooMany { .. })
        ));
        let mut bad = AgentSpec::new("a");
        bad.timeout = Duration::ZERO;
        assert!(matches!(
            compile(&[bad], &[]),
            Err(ConfigError::Invalid {
                field: "timeout",
                ..
            })
        ));
        let mut bad = AgentSpec::new("a");
        bad.breaker.half_open_probes = 0;
        assert!(compile(&[bad], &[]).is_err());
        let many: Vec<AgentSpec> = (0..=AGENTS_MAX)
            .map(|i| AgentSpec::new(format!("a{i}")))
            .collect();
        assert!(matches!(
            compile(&many, &[]),
            Err(ConfigError::TooMany { .. })
        ));
        let ids: Vec<String> = (0..=AGENTS_PER_GROUP_MAX)
            .map(|i| format!("a{i}"))
            .collect();
        let agents: Vec<AgentSpec> = ids.iter().map(AgentSpec::new).collect();
        let route = RouteSpec {
            id: String::new(),
            groups: vec![ids.clone()],
            fail_modes: vec![],
        };
        assert!(matches!(
            compile(&agents, &[route]),
            Err(ConfigError::TooMany { .. })
        ));
    }

    #[test]
    fn route_override_and_lookup() {
        let agents = vec![AgentSpec::new("a"), AgentSpec::new("b")];
        let routes = vec![
            RouteSpec::new("", &[&["a"], &["b"]]),
            RouteSpec::new("api", &[&["a", "b"]]).with_fail_mode("b", FailMode::Open),
        ];
        let r = compile(&agents, &routes).expect("valid");
        let api = &r.routes[r.lookup("api").expect("configured")];
        assert_eq!(api.groups(), 1);
        assert_eq!(api.positions[1].fail_mode, FailMode::Open);
        let def = &r.routes[r.lookup("").expect("configured")];
        assert_eq!(def.groups(), 2);
        assert_eq!(def.group(1), 1..2);
        assert_eq!(def.positions[1].fail_mode, FailMode::Closed);
        assert!(r.lookup("nope").is_none());
        let many: Vec<RouteSpec> = ["b", "a", "ab", "ba", "abc", "", "zz"]
            .iter()
            .map(|id| RouteSpec::new(*id, &[&["a"]]))
            .collect();
        let r = compile(&agents, &many).expect("valid");
        for (i, spec) in many.iter().enumerate() {
            assert_eq!(r.lookup(&spec.id), Some(i), "{:?}", spec.id);
        }
        assert_eq!(r.lookup("c"), None);
        assert_eq!(r.lookup("abcd"), None);
    }
}
