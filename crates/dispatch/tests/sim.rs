//! A seeded simulation in the spirit of TigerBeetle's VOPR: random configurations, random traffic
//! and scripted agent behaviours (allow, block, redirect, hang, slow, crash, garbage, need-more,
//! duplicate replies), random health, flow-control, lost connections and client cancels, a fake
//! clock. After every step the dispatch's own invariants are checked, and a model of what the I/O
//! layer saw checks the contract: every accepted request gets exactly one `Done` unless the client
//! cancelled it (then none), no request is lost, every `Cancel` names a call in flight, calls of
//! a later group only go out once the earlier group is over, calls in flight never exceed an
//! agent's limit, outcomes are consistent with fail modes, and every ignored reply is counted.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{set, text};
use turnstile_dispatch::*;

/// splitmix64: small, fast, good enough to drive a simulation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Allow,
    Mutate,
    Block,
    Redirect,
    Hang,
    Slow,
    Crash,
    Garbage,
    NeedMore,
    Lost,
}

/// Weights of each behaviour, per agent.
type Profile = [(Behaviour, u64); 10];

fn profile(rng: &mut Rng) -> Profile {
    use Behaviour::*;
    let mut w = [
        (Allow, 60),
        (Mutate, 20),
        (Block, 3),
        (Redirect, 1),
        (Hang, 2),
        (Slow, 3),
        (Crash, 2),
        (Garbage, 2),
        (NeedMore, 4),
        (Lost, 1),
    ];
    match rng.below(4) {
        0 => w[4].1 = 40, // hangs a lot: timeouts, breaker
        1 => w[6].1 = 30, // crashes a lot
        2 => w[2].1 = 30, // blocks a lot
        _ => {}
    }
    w
}

fn pick(rng: &mut Rng, p: &Profile) -> Behaviour {
    let total: u64 = p.iter().map(|(_, w)| w).sum();
    let mut x = rng.below(total);
    for (b, w) in p {
        if x < *w {
            return *b;
        }
        x -= w;
    }
    unreachable!()
}

enum Ev {
    Request { serial: u64 },
    Reply(CallId, AgentReply),
    Fail(CallId, CallFailure),
    Lost(AgentIndex),
    Cancel { serial: u64 },
    Health(AgentIndex, Health),
    Flow(AgentIndex, bool),
}

struct Live {
    key: RequestKey,
    route: usize,
    group: Option<usize>,
}

struct Sim {
    rng: Rng,
    now: Instant,
    d: Dispatch,
    profiles: Vec<Profile>,
    max_in_flight: Vec<u32>,
    route_ids: Vec<String>,
    /// Per route: group of each agent in it, and chain length.
    route_groups: Vec<HashMap<AgentIndex, usize>>,
    events: Vec<(Instant, u64, Ev)>,
    seq: u64,
    open: HashMap<CallId, (RequestKey, AgentIndex)>,
    issued: HashSet<CallId>,
    live: HashMap<u64, Live>,
    key_owner: HashMap<RequestKey, u64>,
    free_keys: Vec<u32>,
    expected_stale: u64,
    started: u64,
    done: u64,
    cancelled: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let n_agents = 1 + rng.below(5) as usize;
        let mut agents = Vec::new();
        let mut profiles = Vec::new();
        for i in 0..n_agents {
            let mut a = AgentSpec::new(format!("agent{i}"));
            a.timeout = rng.ms(10, 60);
            a.max_in_flight = 1 + rng.below(4) as u32;
            a.queue_max = rng.below(5) as u32;
            a.queue_timeout = rng.ms(0, 30);
            a.fail_mode = if rng.chance(50) {
                FailMode::Open
            } else {
                FailMode::Closed
            };
            a.breaker = BreakerSpec {
                consecutive_failures: rng.below(6) as u32,
                error_rate: if rng.chance(50) { 0.5 } else { 0.0 },
                window: Duration::from_millis(200),
                min_calls: 4,
                cool_down: rng.ms(20, 100),
                half_open_probes: 1 + rng.below(2) as u32,
            };
            if rng.chance(25) {
                a.interest.path_prefixes = vec!["/api".into()];
            }
            if rng.chance(15) {
                a.interest.required_headers = vec![text("x-token")];
            }
            agents.push(a);
            profiles.push(profile(&mut rng));
        }
        let max_in_flight = agents.iter().map(|a| a.max_in_flight).collect();
        let n_routes = 1 + rng.below(3) as usize;
        let mut routes = Vec::new();
        let mut route_groups = Vec::new();
        for r in 0..n_routes {
            let mut ids: Vec<usize> = (0..n_agents).collect();
            for i in (1..ids.len()).rev() {
                ids.swap(i, rng.below(i as u64 + 1) as usize);
            }
            ids.truncate(rng.below(n_agents as u64 + 1) as usize);
            let mut groups: Vec<Vec<String>> = Vec::new();
            let mut map = HashMap::new();
            for a in ids {
                if groups.is_empty() || rng.chance(40) {
                    groups.push(Vec::new());
                }
                map.insert(AgentIndex(a as u16), groups.len() - 1);
                groups
                    .last_mut()
                    .expect("a group")
                    .push(format!("agent{a}"));
            }
            let mut spec = RouteSpec {
                id: if r == 0 {
                    String::new()
                } else {
                    format!("route{r}")
                },
                groups,
                fail_modes: vec![],
            };
            if rng.chance(30) && n_agents > 0 {
                let a = rng.below(n_agents as u64);
                spec.fail_modes.push((format!("agent{a}"), FailMode::Open));
            }
            routes.push(spec);
            route_groups.push(map);
        }
        let route_ids = routes.iter().map(|r| r.id.clone()).collect();
        let d = Dispatch::new(agents, routes).expect("valid config");
        let mut sim = Sim {
            rng,
            now: Instant::now(),
            d,
            profiles,
            max_in_flight,
            route_ids,
            route_groups,
            events: Vec::new(),
            seq: 0,
            open: HashMap::new(),
            issued: HashSet::new(),
            live: HashMap::new(),
            key_owner: HashMap::new(),
            free_keys: (0..64).rev().collect(),
            expected_stale: 0,
            started: 0,
            done: 0,
            cancelled: 0,
        };
        let requests = 20 + sim.rng.below(40);
        for serial in 0..requests {
            let at = sim.rng.ms(0, 300);
            sim.at(at, Ev::Request { serial });
            if sim.rng.chance(10) {
                let later = at + sim.rng.ms(0, 40);
                sim.at(later, Ev::Cancel { serial });
            }
        }
        for _ in 0..sim.rng.below(6) {
            let a = AgentIndex(sim.rng.below(n_agents as u64) as u16);
            let at = sim.rng.ms(0, 300);
            let h = match sim.rng.below(4) {
                0 => Health::Healthy,
                1 => Health::Degraded {
                    timeout_multiplier: 2.0,
                    disabled_features: vec![],
                },
                2 => Health::Draining,
                _ => Health::Unhealthy,
            };
            sim.at(at, Ev::Health(a, h));
            let back = at + sim.rng.ms(10, 100);
            sim.at(back, Ev::Health(a, Health::Healthy));
        }
        for _ in 0..sim.rng.below(6) {
            let a = AgentIndex(sim.rng.below(n_agents as u64) as u16);
            let at = sim.rng.ms(0, 300);
            sim.at(at, Ev::Flow(a, true));
            if sim.rng.chance(80) {
                let back = at + sim.rng.ms(0, 60);
                sim.at(back, Ev::Flow(a, false));
            }
        }
        sim
    }

    fn at(&mut self, after: Duration, ev: Ev) {
        self.seq += 1;
        self.events.push((self.now + after, self.seq, ev));
    }

    fn run(&mut self) {
        let mut steps = 0u64;
        loop {
            let next_ev = self
                .events
                .iter()
                .enumerate()
                .min_by_key(|(_, (t, s, _))| (*t, *s))
                .map(|(i, (t, _, _))| (i, *t));
            let next_to = self.d.poll_timeout();
            match (next_ev, next_to) {
                (None, None) => break,
                (Some((i, t)), to) if to.is_none_or(|to| t < to) => {
                    self.now = self.now.max(t);
                    let (_, _, ev) = self.events.swap_remove(i);
                    self.apply(ev);
                }
                (_, Some(to)) => {
                    self.now = self.now.max(to);
                    self.d.handle_timeout(self.now);
                }
                (Some(_), None) => unreachable!("covered by the guard above"),
            }
            self.collect();
            self.d.assert_invariants();
            assert_eq!(self.open.len() as u64, self.d.stats().calls_in_flight);
            steps += 1;
            assert!(steps < 1_000_000, "simulation does not settle");
        }
        assert!(self.live.is_empty(), "requests lost: {}", self.live.len());
        assert!(self.open.is_empty());
        let s = self.d.stats();
        assert_eq!(s.requests_started, self.started);
        assert_eq!(s.requests_done, self.done);
        assert_eq!(s.requests_cancelled, self.cancelled);
        assert_eq!(s.requests_in_flight, 0);
        assert_eq!(s.calls_in_flight, 0);
        assert_eq!(
            s.replies_stale, self.expected_stale,
            "every ignored reply counted"
        );
        assert_eq!(self.d.poll_timeout(), None);
    }

    fn apply(&mut self, ev: Ev) {
        match ev {
            Ev::Request { serial } => self.request(serial),
            Ev::Reply(call, mut reply) => {
                match self.open.get(&call) {
                    Some(_) if reply.need_more => {}
                    Some(_) => {
                        self.open.remove(&call);
                    }
                    None => self.expected_stale += 1,
                }
                self.d.handle_reply(self.now, call, &mut reply);
                assert_eq!(reply, AgentReply::default(), "reply left cleared");
            }
            Ev::Fail(call, why) => {
                if self.open.remove(&call).is_none() {
                    self.expected_stale += 1;
                }
                self.d.handle_call_failed(self.now, call, why);
            }
            Ev::Lost(agent) => {
                self.open.retain(|_, (_, a)| *a != agent);
                self.d.handle_agent_lost(self.now, agent);
            }
            Ev::Cancel { serial } => match self.live.remove(&serial) {
                Some(l) => {
                    self.d.handle_cancel(self.now, l.key);
                    self.cancelled += 1;
                    // The Cancel actions come next; collect() removes them from `open`.
                    self.collect();
                    assert!(
                        self.open.values().all(|(r, _)| *r != l.key),
                        "a call of a cancelled request is still in flight"
                    );
                    self.release(l.key);
                }
                None => self.d.handle_cancel(self.now, RequestKey(60_000)),
            },
            Ev::Health(a, h) => self.d.handle_health(self.now, a, h),
            Ev::Flow(a, paused) => self.d.handle_flow(self.now, a, paused),
        }
    }

    fn request(&mut self, serial: u64) {
        let Some(k) = self.free_keys.pop() else {
            return; // the shard is full: the client would be told to retry
        };
        let key = RequestKey(k);
        let bogus = self.rng.chance(3);
        let route = self.rng.below(self.route_ids.len() as u64) as usize;
        let route_id = if bogus {
            "no-such-route"
        } else {
            self.route_ids[route].as_str()
        };
        let headers: &[&[u8]] = if self.rng.chance(50) {
            &[b"host", b"X-Token"]
        } else {
            &[b"host"]
        };
        let view = RequestView {
            event: EventKind::RequestHeaders,
            method: "GET",
            path: if self.rng.chance(50) {
                "/api/x"
            } else {
                "/static/y"
            },
            header_names: headers,
            has_body: false,
        };
        match self.d.handle_request(self.now, key, route_id, &view) {
            Ok(()) => {
                assert!(!bogus);
                self.started += 1;
                self.live.insert(
                    serial,
                    Live {
                        key,
                        route,
                        group: None,
                    },
                );
                self.key_owner.insert(key, serial);
            }
            Err(e) => {
                assert!(bogus, "refused: {e}");
                assert_eq!(e, DispatchError::UnknownRoute);
                self.free_keys.push(k);
            }
        }
    }

    fn release(&mut self, key: RequestKey) {
        self.key_owner.remove(&key);
        self.free_keys.push(key.0);
    }

    /// Takes every action and checks it against the model.
    fn collect(&mut self) {
        while let Some(action) = self.d.poll_action() {
            match action {
                Action::Call {
                    call,
                    req,
                    agent,
                    deadline,
                } => self.on_call(call, req, agent, deadline),
                Action::Cancel { call, agent, .. } => {
                    let (_, a) = self
                        .open
                        .remove(&call)
                        .expect("Cancel names a call in flight");
                    assert_eq!(a, agent);
                }
                Action::Done { req, outcome } => self.on_done(req, outcome),
            }
        }
    }

    fn on_call(&mut self, call: CallId, req: RequestKey, agent: AgentIndex, deadline: Instant) {
        assert!(
            self.issued.insert(call),
            "call id reused while the test runs"
        );
        assert!(deadline > self.now);
        let serial = self.key_owner[&req];
        let l = self.live.get_mut(&serial).expect("Call for a live request");
        let g = self.route_groups[l.route][&agent];
        if let Some(cur) = l.group {
            assert!(g >= cur, "groups run in order");
            if g > cur {
                assert!(
                    self.open.values().all(|(r, _)| *r != req),
                    "next group called while the previous one has calls in flight"
                );
            }
        }
        l.group = Some(g);
        self.open.insert(call, (req, agent));
        let in_flight = self.open.values().filter(|(_, a)| *a == agent).count();
        assert!(in_flight as u32 <= self.max_in_flight[usize::from(agent.0)]);

        let quick = self.rng.ms(0, 5);
        match pick(&mut self.rng, &self.profiles[usize::from(agent.0)]) {
            Behaviour::Allow => self.at(quick, Ev::Reply(call, AgentReply::default())),
            Behaviour::Mutate => {
                let reply = AgentReply {
                    request_headers: vec![set("x-agent", "1")],
                    response_headers: vec![HeaderOp::Remove(text("server"))],
                    audit: Audit {
                        tags: vec![text("seen")],
                        confidence: Some(0.5),
                        ..Audit::default()
                    },
                    ..AgentReply::default()
                };
                self.at(quick, Ev::Reply(call, reply));
            }
            Behaviour::Block => {
                let reply = AgentReply {
                    verdict: Verdict::Block(Block {
                        status: 403,
                        body: Bytes::from_static(b"denied"),
                        headers: vec![],
                    }),
                    ..AgentReply::default()
                };
                self.at(quick, Ev::Reply(call, reply.clone()));
                if self.rng.chance(20) {
                    self.at(quick, Ev::Reply(call, reply)); // duplicate: stale
                }
            }
            Behaviour::Redirect => {
                let reply = AgentReply {
                    verdict: Verdict::Redirect(Redirect {
                        location: text("/login"),
                        status: 0,
                    }),
                    ..AgentReply::default()
                };
                self.at(quick, Ev::Reply(call, reply));
            }
            Behaviour::Hang => {}
            Behaviour::Slow => {
                let late = self.rng.ms(30, 200);
                self.at(late, Ev::Reply(call, AgentReply::default()));
            }
            Behaviour::Crash => self.at(quick, Ev::Fail(call, CallFailure::Transport)),
            Behaviour::Garbage => {
                if self.rng.chance(50) {
                    self.at(quick, Ev::Fail(call, CallFailure::Garbage));
                } else {
                    let reply = AgentReply {
                        verdict: Verdict::Block(Block {
                            status: 9999,
                            ..Block::default()
                        }),
                        ..AgentReply::default()
                    };
                    self.at(quick, Ev::Reply(call, reply));
                }
            }
            Behaviour::NeedMore => {
                let more = AgentReply {
                    need_more: true,
                    ..AgentReply::default()
                };
                self.at(quick, Ev::Reply(call, more));
                let fin = quick + self.rng.ms(0, 20);
                self.at(fin, Ev::Reply(call, AgentReply::default()));
            }
            Behaviour::Lost => self.at(quick, Ev::Lost(agent)),
        }
    }

    fn on_done(&mut self, req: RequestKey, o: Outcome) {
        let serial = self.key_owner[&req];
        let l = self
            .live
            .remove(&serial)
            .expect("exactly one Done per request");
        assert!(
            self.open.values().all(|(r, _)| *r != req),
            "Done with calls in flight"
        );
        assert_eq!(
            o.timings.len(),
            self.route_groups[l.route].len(),
            "one timing per agent"
        );
        let failures = o.timings.iter().filter(|t| t.outcome.is_failure()).count();
        let fail_tags = o
            .audit
            .tags
            .iter()
            .filter(|t| t.starts_with(b"fail-open:") || t.starts_with(b"fail-closed:"))
            .count();
        assert_eq!(failures, fail_tags, "one fail-mode tag per failure");
        match o.decided_by {
            None => {
                assert_eq!(o.verdict, Verdict::Allow);
                for t in &o.timings {
                    use AgentOutcome::*;
                    match t.outcome {
                        Allowed | Skipped => {}
                        f if f.is_failure() => assert_eq!(t.fail_mode, FailMode::Open),
                        other => panic!("allow with an agent outcome {other:?}"),
                    }
                }
            }
            Some(w) => {
                assert!(!o.verdict.is_allow());
                let t = o
                    .timings
                    .iter()
                    .find(|t| t.agent == w)
                    .expect("winner in the chain");
                let ok = matches!(t.outcome, AgentOutcome::Blocked | AgentOutcome::Redirected)
                    || (t.outcome.is_failure() && t.fail_mode == FailMode::Closed);
                assert!(ok, "winner's outcome {:?}", t.outcome);
            }
        }
        self.done += 1;
        self.release(req);
        self.d.recycle(o);
    }
}

#[test]
fn seeded_simulation() {
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let started = Instant::now();
    let mut totals = (0u64, 0u64, 0u64, 0u64);
    for seed in 0..seeds {
        let mut sim = Sim::new(seed);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.run()));
        if let Err(e) = result {
            eprintln!("seed {seed} failed; rerun with only this seed to debug");
            std::panic::resume_unwind(e);
        }
        let s = sim.d.stats();
        totals.0 += s.requests_started;
        totals.1 += s.calls_issued;
        totals.2 += s.calls_timed_out + s.calls_failed + s.calls_saturated;
        totals.3 += s.replies_stale;
    }
    println!(
        "{seeds} seeds in {:?}: {} requests, {} calls, {} failed calls, {} stale replies",
        started.elapsed(),
        totals.0,
        totals.1,
        totals.2,
        totals.3
    );
    assert!(totals.0 > seeds * 10, "the simulation exercised traffic");
}
