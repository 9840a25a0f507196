//! Runs a `decide` through its route's chain: groups in order, the agents of a group
//! concurrently (polled together in the request's task), the first block or redirect wins and
//! cancels the rest, failures take the agent's (or route's) fail mode.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use turnstile_config::FailMode;
use turnstile_wire::turnstile_capnp::{self as s, ErrorCode, decide, request, response};
use turnstile_wire::{FrameHeader, FrameKind, Message, limits, split_frame};

use super::conn::{CallError, Caps};
use super::{Plane, json};

/// A request decoded into owned fields (capnp readers cannot cross an `.await` in a `Send`
/// task, and owned structs are what a conventional stack passes around anyway).
struct Req {
    correlation_id: u64,
    route: String,
    request_id: String,
    method: String,
    authority: String,
    path: String,
    query: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    client_address: String,
    scheme: String,
    protocol: String,
    /// First body chunk: data, end flag, declared total.
    body: Option<(Vec<u8>, bool, u64)>,
}

fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> capnp::Result<String> {
    Ok(t?
        .to_str()
        .map_err(|e| capnp::Error::failed(e.to_string()))?
        .to_owned())
}

/// What a request stream holds, for the agent path.
enum Parsed {
    /// Not a `decide`: the built-in answers handle it.
    NotDecide,
    /// A `decide` phase the baseline runs no agents on.
    OtherPhase(u64),
    /// A request phase to run through the chain.
    Request(Box<Req>),
}

/// Reads the request.
fn read_req(r: request::Reader<'_>) -> capnp::Result<Parsed> {
    let request::Decide(d) = r.which()? else {
        return Ok(Parsed::NotDecide);
    };
    let d = d?;
    let decide::phase::Request(p) = d.get_phase().which()? else {
        return Ok(Parsed::OtherPhase(r.get_correlation_id()));
    };
    let p = p?;
    let h = p.get_request()?;
    let mut headers = Vec::new();
    for x in h.get_headers()?.iter() {
        headers.push((x.get_name()?.to_vec(), x.get_value()?.to_vec()));
    }
    let body = if p.has_body() {
        let b = p.get_body()?;
        Some((b.get_data()?.to_vec(), b.get_is_last(), b.get_total_bytes()))
    } else {
        None
    };
    Ok(Parsed::Request(Box::new(Req {
        correlation_id: r.get_correlation_id(),
        route: text(d.get_route_id())?,
        request_id: text(d.get_request_id())?,
        method: text(h.get_method())?,
        authority: text(h.get_authority())?,
        path: text(h.get_path())?,
        query: text(h.get_query())?,
        headers,
        client_address: text(h.get_client_address())?,
        scheme: text(h.get_scheme())?,
        protocol: text(h.get_protocol())?,
        body,
    })))
}

/// How one agent's call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allowed,
    Blocked,
    Redirected,
    Skipped,
    Timeout,
    Error,
    Unhealthy,
    Saturated,
    Cancelled,
}

impl Outcome {
    fn code(self) -> s::AgentOutcome {
        match self {
            Outcome::Allowed => s::AgentOutcome::Allowed,
            Outcome::Blocked => s::AgentOutcome::Blocked,
            Outcome::Redirected => s::AgentOutcome::Redirected,
            Outcome::Skipped => s::AgentOutcome::Skipped,
            Outcome::Timeout => s::AgentOutcome::Timeout,
            Outcome::Error => s::AgentOutcome::Error,
            Outcome::Unhealthy => s::AgentOutcome::Unhealthy,
            Outcome::Saturated => s::AgentOutcome::Saturated,
            Outcome::Cancelled => s::AgentOutcome::Cancelled,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Outcome::Timeout => "timeout",
            Outcome::Unhealthy => "unhealthy",
            Outcome::Saturated => "saturated",
            _ => "error",
        }
    }
}

/// One chain position's result.
struct Step {
    agent: usize,
    outcome: Outcome,
    elapsed_us: u32,
    response: Option<json::AgentResponse>,
}

enum Final {
    Allow,
    Block {
        status: u16,
        body: Vec<u8>,
        headers: Vec<json::HeaderBuf>,
    },
    Redirect {
        location: String,
        status: u16,
    },
}

/// Answers a whole request stream: a `decide` request phase through the agent chain, anything
/// else as the agent-less baseline does.
pub async fn decide(
    plane: Arc<Plane>,
    stream: Vec<u8>,
    max_request_bytes: usize,
    max_streams: u32,
) -> Vec<u8> {
    let parsed = (|| -> Result<Parsed, String> {
        let (frame, _) = split_frame(&stream)
            .map_err(|e| e.to_string())?
            .ok_or("truncated frame")?;
        let msg = Message::parse(frame.kind, frame.payload).map_err(|e| e.to_string())?;
        let root = msg.root::<request::Owned>().map_err(|e| e.to_string())?;
        read_req(root).map_err(|e| e.to_string())
    })();
    let req = match parsed {
        Ok(Parsed::Request(r)) => r,
        Ok(Parsed::OtherPhase(cid)) => {
            return crate::answer::error_frame(
                cid,
                ErrorCode::NotImplemented,
                "the baseline runs agent chains on the request phase only",
            );
        }
        // Everything else (and malformed input) gets the built-in answers and their errors.
        Ok(Parsed::NotDecide) | Err(_) => {
            return crate::answer::answer(&stream, max_request_bytes, max_streams);
        }
    };
    let route_id = if req.route.is_empty() {
        "default"
    } else {
        req.route.as_str()
    };
    let Some(route) = plane.routes.get(route_id) else {
        return crate::answer::error_frame(
            req.correlation_id,
            ErrorCode::UnknownRoute,
            &format!("unknown route {route_id:?}"),
        );
    };
    // The agent whose block (or redirect, or fail-closed failure) decided the request: the
    // calls still open are cancelled with its name.
    let winner = OnceLock::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut fail_tags: Vec<String> = Vec::new();
    let mut verdict = None;
    for group in &route.groups {
        let started = Instant::now();
        let mut calls: FuturesUnordered<_> = group
            .iter()
            .map(|&a| {
                let plane = &plane;
                let req = &req;
                let winner = &winner;
                async move { (a, call(plane, a, req, route_id, winner).await) }
            })
            .collect();
        let first = steps.len();
        while let Some((a, (outcome, response))) = calls.next().await {
            let elapsed_us = elapsed_us(started);
            let agent = &plane.agents[a];
            let mode = route.fail_mode.unwrap_or(agent.fail_mode);
            let failed = matches!(
                outcome,
                Outcome::Timeout | Outcome::Error | Outcome::Unhealthy | Outcome::Saturated
            );
            if failed {
                let (tag, closed) = match mode {
                    FailMode::Open => ("fail-open", false),
                    FailMode::Closed { .. } => ("fail-closed", true),
                };
                fail_tags.push(format!("{tag}:{}:{}", agent.id, outcome.reason()));
                if closed && verdict.is_none() {
                    verdict = Some(Final::Block {
                        status: agent.fail_status,
                        body: Vec::new(),
                        headers: Vec::new(),
                    });
                }
            }
            let decided = match response.as_ref().and_then(|r| r.verdict.as_ref()) {
                Some(v) if v.block.is_some() && verdict.is_none() => {
                    let b = v.block.as_ref().map(|b| Final::Block {
                        status: if b.status == 0 { 403 } else { b.status },
                        body: b.body.0.clone(),
                        headers: b.headers.clone(),
                    });
                    verdict = b;
                    true
                }
                Some(v) if v.redirect.is_some() && verdict.is_none() => {
                    verdict = v.redirect.as_ref().map(|r| Final::Redirect {
                        location: r.location.clone(),
                        status: if r.status == 0 { 302 } else { r.status },
                    });
                    true
                }
                _ => false,
            };
            steps.push(Step {
                agent: a,
                outcome,
                elapsed_us,
                response,
            });
            if decided || verdict.is_some() {
                let _ = winner.set(agent.id.clone());
                // Dropping the rest cancels their calls (each tells its agent).
                break;
            }
        }
        drop(calls);
        // Agents of this group that never finished were cancelled by the winner.
        for &a in group {
            if !steps[first..].iter().any(|s| s.agent == a) {
                steps.push(Step {
                    agent: a,
                    outcome: Outcome::Cancelled,
                    elapsed_us: elapsed_us(started),
                    response: None,
                });
            }
        }
        if verdict.is_some() {
            break;
        }
    }
    // Positions never reached.
    for group in &route.groups {
        for &a in group {
            if !steps.iter().any(|s| s.agent == a) {
                steps.push(Step {
                    agent: a,
                    outcome: Outcome::Cancelled,
                    elapsed_us: 0,
                    response: None,
                });
            }
        }
    }
    // Timings in chain order.
    let order: Vec<usize> = route.groups.iter().flatten().copied().collect();
    steps.sort_by_key(|s| order.iter().position(|&a| a == s.agent));
    respond(
        &plane,
        req.correlation_id,
        verdict.unwrap_or(Final::Allow),
        &steps,
        &fail_tags,
        route.fail_mode,
    )
}

/// Whether the agent wants this request (its declared interest).
fn interested(caps: &Caps, req: &Req) -> bool {
    if !caps.request_headers {
        return false;
    }
    if !caps.path_prefixes.is_empty()
        && !caps
            .path_prefixes
            .iter()
            .any(|p| req.path.starts_with(p.as_str()))
    {
        return false;
    }
    if !caps.methods.is_empty()
        && !caps
            .methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&req.method))
    {
        return false;
    }
    caps.required_headers.iter().all(|want| {
        req.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(want))
    })
}

/// Microseconds since `started`, saturated to what `AgentTiming.elapsedUs` holds.
fn elapsed_us(started: Instant) -> u32 {
    started.elapsed().as_micros().min(u32::MAX as u128) as u32
}

/// Cancels the call when dropped before it finished (another agent won, or the request ended).
struct CancelOnDrop<'a> {
    winner: &'a OnceLock<String>,
    conn: Arc<super::conn::Conn>,
    cid: u64,
    done: bool,
    timed_out: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.done {
            let reason = if self.timed_out {
                json::CancelReason::Timeout(())
            } else if let Some(w) = self.winner.get() {
                json::CancelReason::BlockedByAgent(w.clone())
            } else {
                // The request's task was dropped: its client went away.
                json::CancelReason::ClientDisconnect(())
            };
            self.conn.cancel(self.cid, reason);
        }
    }
}

/// One agent call: interest, health, a slot (bounded wait), the events, the answer in time.
async fn call(
    plane: &Plane,
    a: usize,
    req: &Req,
    route_id: &str,
    winner: &OnceLock<String>,
) -> (Outcome, Option<json::AgentResponse>) {
    let agent = &plane.agents[a];
    let caps = agent.pool.caps();
    if !caps.known {
        // Never connected: the agent is down, not uninterested.
        return (Outcome::Error, None);
    }
    if !interested(&caps, req) {
        return (Outcome::Skipped, None);
    }
    if agent
        .pool
        .health_bad
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return (Outcome::Unhealthy, None);
    }
    let _slot = match tokio::time::timeout(agent.queue_timeout, agent.slots.acquire()).await {
        Ok(Ok(permit)) => permit,
        _ => return (Outcome::Saturated, None),
    };
    let Some(conn) = agent.pool.pick() else {
        return (Outcome::Error, None);
    };
    let (client_ip, client_port) = match req.client_address.parse::<std::net::SocketAddr>() {
        Ok(sa) => (
            match sa.ip() {
                std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
                std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
            },
            sa.port(),
        ),
        Err(_) => (Vec::new(), 0),
    };
    let headers = json::Event::RequestHeaders(json::RequestHeadersEvent {
        metadata: json::Metadata {
            request_id: &req.request_id,
            client_ip: json::DataRef(&client_ip),
            client_port,
            route_id,
            timestamp_ms: super::unix_ms(),
            deadline_ms: agent.timeout.as_millis().min(u32::MAX as u128) as u32,
        },
        request: json::HttpRequest {
            method: &req.method,
            authority: &req.authority,
            path: &req.path,
            query: &req.query,
            headers: req
                .headers
                .iter()
                .map(|(n, v)| json::Header {
                    name: json::DataRef(n),
                    value: json::DataRef(v),
                })
                .collect(),
            client_address: &req.client_address,
            scheme: &req.scheme,
            protocol: &req.protocol,
        },
    });
    let body = match &req.body {
        Some((data, is_last, total))
            if caps.request_body && caps.max_body_bytes > 0 && !data.is_empty() =>
        {
            let cut = usize::try_from(caps.max_body_bytes)
                .unwrap_or(usize::MAX)
                .min(data.len());
            Some(json::Event::RequestBodyChunk(json::BodyChunk {
                chunk_index: 0,
                data: json::DataRef(&data[..cut]),
                is_last: *is_last || cut < data.len(),
                total_bytes: *total,
                bytes_transferred: cut as u64,
            }))
        }
        _ => None,
    };
    let (cid, rx) = match conn.start_call(headers, body) {
        Ok(x) => x,
        Err(_) => return (Outcome::Error, None),
    };
    let mut guard = CancelOnDrop {
        winner,
        conn,
        cid,
        done: false,
        timed_out: false,
    };
    match tokio::time::timeout(agent.timeout, rx).await {
        Ok(Ok(Ok(response))) => {
            guard.done = true;
            let outcome = match response.verdict.as_ref() {
                Some(v) if v.block.is_some() => Outcome::Blocked,
                Some(v) if v.redirect.is_some() => Outcome::Redirected,
                _ => Outcome::Allowed,
            };
            (outcome, Some(response))
        }
        Ok(Ok(Err(CallError::Garbage | CallError::Transport))) | Ok(Err(_)) => {
            guard.done = true;
            (Outcome::Error, None)
        }
        Err(_) => {
            guard.timed_out = true;
            (Outcome::Timeout, None)
        }
    }
}

/// Builds the `Decision` response frame (a fresh builder and buffer, as the rest of the
/// baseline does).
fn respond(
    plane: &Plane,
    correlation_id: u64,
    verdict: Final,
    steps: &[Step],
    fail_tags: &[String],
    route_mode: Option<FailMode>,
) -> Vec<u8> {
    let mut message = capnp::message::Builder::new_default();
    {
        let mut r = message.init_root::<response::Builder<'_>>();
        r.set_correlation_id(correlation_id);
        let mut d = r.init_decision();
        {
            let mut v = d.reborrow().init_verdict();
            match &verdict {
                Final::Allow => v.set_allow(()),
                Final::Block {
                    status,
                    body,
                    headers,
                } => {
                    let mut b = v.init_block();
                    b.set_status(*status);
                    b.set_body(body);
                    let mut hs = b.init_headers(headers.len() as u32);
                    for (i, h) in headers.iter().enumerate() {
                        let mut x = hs.reborrow().get(i as u32);
                        x.set_name(&h.name.0);
                        x.set_value(&h.value.0);
                    }
                }
                Final::Redirect { location, status } => {
                    let mut x = v.init_redirect();
                    x.set_location(location.as_str());
                    x.set_status(*status);
                }
            }
        }
        // Mutations and audit of the agents that answered, in chain order.
        let answered: Vec<&json::AgentResponse> =
            steps.iter().filter_map(|s| s.response.as_ref()).collect();
        let ops = |pick: fn(&json::AgentResponse) -> &Vec<json::HeaderOp>| -> Vec<json::HeaderOp> {
            answered
                .iter()
                .flat_map(|r| pick(r).iter().cloned())
                .collect()
        };
        for (ops, request_side) in [
            (ops(|r| &r.request_headers), true),
            (ops(|r| &r.response_headers), false),
        ] {
            let mut list = if request_side {
                d.reborrow().init_request_headers(ops.len() as u32)
            } else {
                d.reborrow().init_response_headers(ops.len() as u32)
            };
            for (i, op) in ops.iter().enumerate() {
                let o = list.reborrow().get(i as u32);
                match op {
                    json::HeaderOp::Add(h) => {
                        let mut x = o.init_add();
                        x.set_name(&h.name.0);
                        x.set_value(&h.value.0);
                    }
                    json::HeaderOp::Set(h) => {
                        let mut x = o.init_set();
                        x.set_name(&h.name.0);
                        x.set_value(&h.value.0);
                    }
                    json::HeaderOp::Remove(n) => {
                        let mut o = o;
                        o.set_remove(&n.0);
                    }
                }
            }
        }
        {
            let audits: Vec<&json::Audit> =
                answered.iter().filter_map(|r| r.audit.as_ref()).collect();
            let tags: Vec<&str> = audits
                .iter()
                .flat_map(|a| a.tags.iter().map(String::as_str))
                .chain(fail_tags.iter().map(String::as_str))
                .collect();
            let rules: Vec<&str> = audits
                .iter()
                .flat_map(|a| a.rule_ids.iter().map(String::as_str))
                .collect();
            let reasons: Vec<&str> = audits
                .iter()
                .flat_map(|a| a.reason_codes.iter().map(String::as_str))
                .collect();
            let confidence = audits
                .iter()
                .filter_map(|a| a.confidence.as_ref().and_then(|c| c.value))
                .reduce(f32::max);
            let mut a = d.reborrow().init_audit();
            let mut t = a.reborrow().init_tags(tags.len() as u32);
            for (i, x) in tags.iter().enumerate() {
                t.set(i as u32, *x);
            }
            let mut t = a.reborrow().init_rule_ids(rules.len() as u32);
            for (i, x) in rules.iter().enumerate() {
                t.set(i as u32, *x);
            }
            let mut t = a.reborrow().init_reason_codes(reasons.len() as u32);
            for (i, x) in reasons.iter().enumerate() {
                t.set(i as u32, *x);
            }
            match confidence {
                Some(c) => a.init_confidence().set_value(c),
                None => a.init_confidence().set_unknown(()),
            }
        }
        let mut t = d.init_timings(steps.len() as u32);
        for (i, step) in steps.iter().enumerate() {
            let agent = &plane.agents[step.agent];
            let mut x = t.reborrow().get(i as u32);
            x.set_agent_id(agent.id.as_str());
            x.set_outcome(step.outcome.code());
            x.set_elapsed_us(step.elapsed_us);
            x.set_fail_mode(match route_mode.unwrap_or(agent.fail_mode) {
                FailMode::Open => s::FailMode::Open,
                FailMode::Closed { .. } => s::FailMode::Closed,
            });
        }
    }
    let words = capnp::serialize::compute_serialized_size_in_words(&message);
    let payload_len = (words * 8) as u64;
    if payload_len > u64::from(limits::FRAME_BYTES_MAX) {
        return crate::answer::error_frame(
            correlation_id,
            ErrorCode::TooLarge,
            "decision over the frame limit",
        );
    }
    let header = FrameHeader {
        payload_len: payload_len as u32,
        kind: FrameKind::Response,
    };
    let mut out = Vec::with_capacity(header.frame_len());
    out.extend_from_slice(&header.to_bytes());
    if capnp::serialize::write_message(&mut out, &message).is_err() {
        return crate::answer::error_frame(correlation_id, ErrorCode::Internal, "encode failed");
    }
    out
}
