//! Bounds of the dispatch, named once. Units come last. Every one is checked before anything is
//! allocated for it: configuration beyond them is a [`crate::ConfigError`], traffic beyond them a
//! [`crate::DispatchError`], an agent's failure, or a dropped-and-counted audit item.

use std::time::Duration;

/// Most agents one shard knows (an [`crate::AgentIndex`] is below this).
pub const AGENTS_MAX: usize = 256;

/// Most routes.
pub const ROUTES_MAX: usize = 4096;

/// Most groups in one route's chain (groups run one after the other).
pub const GROUPS_PER_ROUTE_MAX: usize = 16;

/// Most agents in one group (agents of a group run in parallel).
pub const AGENTS_PER_GROUP_MAX: usize = 16;

/// Most agents in one route's chain, all groups together (an agent appears at most once).
pub const AGENTS_PER_ROUTE_MAX: usize = 32;

/// Requests being decided at once on one shard: a [`crate::RequestKey`] is below this.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 65_536;

/// Largest `max_in_flight` an agent may be configured with (calls in flight per agent per shard).
pub const AGENT_CALLS_IN_FLIGHT_MAX: u32 = 4096;

/// Largest per-agent wait queue (calls waiting for an in-flight slot or for a resume).
pub const WAITING_REQUESTS_MAX: u32 = 4096;

/// Agent calls (waiting or in flight) that can exist at once: only the current group of a request
/// has calls.
pub const CALLS_MAX: usize = REQUESTS_IN_FLIGHT_MAX * AGENTS_PER_GROUP_MAX;

/// Header mutations (request and response together) one request may collect from all its agents.
/// A reply that would exceed it is a protocol error of that agent (its fail mode applies):
/// silently dropping a mutation such as "remove Authorization" would be worse.
pub const MUTATIONS_PER_REQUEST_MAX: usize = 256;

/// Audit items (tags, rule ids, reason codes) one request may collect. Beyond it items are
/// dropped and counted (`DispatchStats::audit_items_dropped`): audit is advisory.
pub const AUDIT_ITEMS_MAX: usize = 128;

/// Extra headers a block verdict may carry.
pub const BLOCK_HEADERS_MAX: usize = 64;

/// Longest agent id.
pub const AGENT_ID_BYTES_MAX: usize = 128;

/// Longest route id.
pub const ROUTE_ID_BYTES_MAX: usize = 256;

/// Most entries in each list of an agent's [`crate::Interest`] (events, path prefixes, methods,
/// required headers).
pub const INTEREST_ITEMS_MAX: usize = 64;

/// Longest agent call timeout (and wait-queue timeout, and breaker windows and cool-downs).
pub const AGENT_TIMEOUT_MAX: Duration = Duration::from_secs(600);

/// Largest timeout multiplier a Degraded agent may ask for; larger values are clamped. A
/// multiplier never shortens the timeout (values below 1.0 count as 1.0).
pub const TIMEOUT_MULTIPLIER_MAX: f32 = 10.0;

/// Largest number of probe calls a half-open breaker admits.
pub const BREAKER_PROBES_MAX: u32 = 64;

/// Buckets of a breaker's sliding error-rate window (the window slides one bucket at a time).
pub const BREAKER_WINDOW_BUCKETS: usize = 10;

/// Finished outcomes kept for reuse (see `Dispatch::recycle`). Beyond this they are dropped.
pub const OUTCOMES_POOLED_MAX: usize = 1024;

/// Disabled-feature names kept from a Degraded health report (the rest are dropped).
pub const DISABLED_FEATURES_MAX: usize = 64;

const _: () = assert!(AGENTS_MAX <= u16::MAX as usize);
const _: () = assert!(AGENTS_PER_ROUTE_MAX <= GROUPS_PER_ROUTE_MAX * AGENTS_PER_GROUP_MAX);
const _: () = assert!(AGENTS_PER_GROUP_MAX <= AGENTS_PER_ROUTE_MAX);
const _: () = assert!(CALLS_MAX < u32::MAX as usize);
const _: () = assert!(REQUESTS_IN_FLIGHT_MAX < u32::MAX as usize);
// Chain positions and per-request item sequence numbers share one u32 sort key (see merge.rs).
const _: () = assert!(AGENTS_PER_ROUTE_MAX <= 1 << 8);
const _: () =
    assert!(MUTATIONS_PER_REQUEST_MAX + AUDIT_ITEMS_MAX + 2 * AGENTS_PER_ROUTE_MAX < 1 << 24);
