//! Conversions between the wire (Cap'n Proto readers and builders) and the dispatch crate's plain
//! types. Header and body bytes are copied only when an agent actually sends mutations or a block
//! body; an allow without mutations copies nothing.

use bytes::Bytes;
use turnstile_dispatch::{
    AgentOutcome, AgentReply, FailMode, Header, HeaderOp, Health, Outcome, Verdict,
};
use turnstile_wire::turnstile_capnp::{
    self as s, agent_response, audit, decide, header_op, health_status, proxy_to_agent, verdict,
};

/// Reads an agent's answer into `out` (cleared first).
pub(crate) fn read_reply(r: agent_response::Reader<'_>, out: &mut AgentReply) -> capnp::Result<()> {
    out.clear();
    out.need_more = r.get_need_more();
    if r.has_verdict() {
        out.verdict = match r.get_verdict()?.which()? {
            verdict::Allow(()) => Verdict::Allow,
            verdict::Block(b) => {
                let b = b?;
                let mut headers = Vec::new();
                if b.has_headers() {
                    for h in b.get_headers()?.iter() {
                        headers.push(Header {
                            name: Bytes::copy_from_slice(h.get_name()?),
                            value: Bytes::copy_from_slice(h.get_value()?),
                        });
                    }
                }
                Verdict::Block(turnstile_dispatch::Block {
                    status: b.get_status(),
                    body: Bytes::copy_from_slice(b.get_body()?),
                    headers,
                })
            }
            verdict::Redirect(rd) => {
                let rd = rd?;
                Verdict::Redirect(turnstile_dispatch::Redirect {
                    location: Bytes::copy_from_slice(rd.get_location()?.as_bytes()),
                    status: rd.get_status(),
                })
            }
        };
    }
    if r.has_request_headers() {
        read_ops(r.get_request_headers()?, &mut out.request_headers)?;
    }
    if r.has_response_headers() {
        read_ops(r.get_response_headers()?, &mut out.response_headers)?;
    }
    if r.has_audit() {
        let a = r.get_audit()?;
        for t in a.get_tags()?.iter() {
            out.audit.tags.push(Bytes::copy_from_slice(t?.as_bytes()));
        }
        for t in a.get_rule_ids()?.iter() {
            out.audit
                .rule_ids
                .push(Bytes::copy_from_slice(t?.as_bytes()));
        }
        for t in a.get_reason_codes()?.iter() {
            out.audit
                .reason_codes
                .push(Bytes::copy_from_slice(t?.as_bytes()));
        }
        if let audit::confidence::Value(v) = a.get_confidence().which()? {
            out.audit.confidence = Some(v);
        }
    }
    Ok(())
}

fn read_ops(
    ops: capnp::struct_list::Reader<'_, header_op::Owned>,
    out: &mut Vec<HeaderOp>,
) -> capnp::Result<()> {
    for op in ops.iter() {
        let header = |h: s::header::Reader<'_>| -> capnp::Result<Header> {
            Ok(Header {
                name: Bytes::copy_from_slice(h.get_name()?),
                value: Bytes::copy_from_slice(h.get_value()?),
            })
        };
        out.push(match op.which()? {
            header_op::Add(h) => HeaderOp::Add(header(h?)?),
            header_op::Set(h) => HeaderOp::Set(header(h?)?),
            header_op::Remove(n) => HeaderOp::Remove(Bytes::copy_from_slice(n?)),
        });
    }
    Ok(())
}

/// Reads a health report.
pub(crate) fn read_health(h: health_status::Reader<'_>) -> capnp::Result<Health> {
    Ok(match h.get_state().which()? {
        health_status::state::Healthy(()) => Health::Healthy,
        health_status::state::Degraded(d) => {
            let d = d?;
            let mut disabled_features = Vec::new();
            for f in d.get_disabled_features()?.iter() {
                disabled_features.push(f?.to_string().unwrap_or_default());
            }
            Health::Degraded {
                timeout_multiplier: d.get_timeout_multiplier(),
                disabled_features,
            }
        }
        health_status::state::Draining(_) => Health::Draining,
        health_status::state::Unhealthy(_) => Health::Unhealthy,
    })
}

fn set_ops(mut list: capnp::struct_list::Builder<'_, header_op::Owned>, ops: &[HeaderOp]) {
    for (i, op) in ops.iter().enumerate() {
        let b = list.reborrow().get(i as u32);
        match op {
            HeaderOp::Add(h) => {
                let mut x = b.init_add();
                x.set_name(&h.name);
                x.set_value(&h.value);
            }
            HeaderOp::Set(h) => {
                let mut x = b.init_set();
                x.set_name(&h.name);
                x.set_value(&h.value);
            }
            HeaderOp::Remove(n) => {
                let mut b = b;
                b.set_remove(n);
            }
        }
    }
}

fn set_texts(mut list: capnp::text_list::Builder<'_>, items: &[Bytes]) {
    for (i, t) in items.iter().enumerate() {
        // Audit strings come from agents' text fields, which the walk checked as UTF-8; a
        // replacement keeps the response valid if one slipped through.
        let text = String::from_utf8_lossy(t);
        list.set(i as u32, text.as_ref());
    }
}

fn outcome_code(o: AgentOutcome) -> s::AgentOutcome {
    match o {
        AgentOutcome::Allowed => s::AgentOutcome::Allowed,
        AgentOutcome::Blocked => s::AgentOutcome::Blocked,
        AgentOutcome::Redirected => s::AgentOutcome::Redirected,
        AgentOutcome::Skipped => s::AgentOutcome::Skipped,
        AgentOutcome::Timeout => s::AgentOutcome::Timeout,
        AgentOutcome::Error => s::AgentOutcome::Error,
        AgentOutcome::BreakerOpen => s::AgentOutcome::BreakerOpen,
        AgentOutcome::Unhealthy => s::AgentOutcome::Unhealthy,
        AgentOutcome::Saturated => s::AgentOutcome::Saturated,
        AgentOutcome::Cancelled => s::AgentOutcome::Cancelled,
    }
}

/// Writes a `Decision` for `outcome` into a response builder.
pub(crate) fn write_decision(
    mut r: s::response::Builder<'_>,
    correlation_id: u64,
    outcome: &Outcome,
    agent_name: &dyn Fn(turnstile_dispatch::AgentIndex) -> String,
) {
    r.set_correlation_id(correlation_id);
    let mut d = r.init_decision();
    {
        let v = d.reborrow().init_verdict();
        match &outcome.verdict {
            Verdict::Allow => {
                let mut v = v;
                v.set_allow(());
            }
            Verdict::Block(b) => {
                let mut x = v.init_block();
                x.set_status(b.status);
                x.set_body(&b.body);
                let mut hs = x.init_headers(b.headers.len() as u32);
                for (i, h) in b.headers.iter().enumerate() {
                    let mut hb = hs.reborrow().get(i as u32);
                    hb.set_name(&h.name);
                    hb.set_value(&h.value);
                }
            }
            Verdict::Redirect(rd) => {
                let mut x = v.init_redirect();
                x.set_location(String::from_utf8_lossy(&rd.location).as_ref());
                x.set_status(rd.status);
            }
        }
    }
    set_ops(
        d.reborrow()
            .init_request_headers(outcome.request_headers.len() as u32),
        &outcome.request_headers,
    );
    set_ops(
        d.reborrow()
            .init_response_headers(outcome.response_headers.len() as u32),
        &outcome.response_headers,
    );
    {
        let mut a = d.reborrow().init_audit();
        set_texts(
            a.reborrow().init_tags(outcome.audit.tags.len() as u32),
            &outcome.audit.tags,
        );
        set_texts(
            a.reborrow()
                .init_rule_ids(outcome.audit.rule_ids.len() as u32),
            &outcome.audit.rule_ids,
        );
        set_texts(
            a.reborrow()
                .init_reason_codes(outcome.audit.reason_codes.len() as u32),
            &outcome.audit.reason_codes,
        );
        match outcome.audit.confidence {
            Some(c) => a.init_confidence().set_value(c),
            None => a.init_confidence().set_unknown(()),
        }
    }
    let mut t = d.init_timings(outcome.timings.len() as u32);
    for (i, timing) in outcome.timings.iter().enumerate() {
        let mut tb = t.reborrow().get(i as u32);
        tb.set_agent_id(agent_name(timing.agent).as_str());
        tb.set_outcome(outcome_code(timing.outcome));
        tb.set_elapsed_us(timing.elapsed_us);
        tb.set_fail_mode(match timing.fail_mode {
            FailMode::Open => s::FailMode::Open,
            FailMode::Closed => s::FailMode::Closed,
        });
    }
}

/// What part of an HTTP exchange a `decide` carries, for interest matching.
pub(crate) fn event_kind(
    phase: decide::phase::Reader<'_>,
) -> capnp::Result<turnstile_dispatch::EventKind> {
    use turnstile_dispatch::EventKind as E;
    Ok(match phase.which()? {
        decide::phase::Request(_) => E::RequestHeaders,
        decide::phase::RequestBody(_) => E::RequestBody,
        decide::phase::Response(_) => E::ResponseHeaders,
        decide::phase::ResponseBody(_) => E::ResponseBody,
        decide::phase::WebsocketFrame(_) => E::WebsocketFrame,
        decide::phase::Guardrail(_) => E::GuardrailInspect,
        decide::phase::Complete(_) => E::RequestComplete,
    })
}

/// Facts about the request that go into the agent's `RequestMetadata`.
pub(crate) struct Meta<'a> {
    pub request_id: capnp::text::Reader<'a>,
    pub route_id: &'a str,
    pub timestamp_ms: u64,
    pub deadline_ms: u32,
}

/// Builds the agent event for one `decide` phase. Returns whether a body chunk should follow as
/// its own frame (the request or response carried one and the agent subscribed to bodies).
pub(crate) fn write_event(
    m: proxy_to_agent::Builder<'_>,
    phase: decide::phase::Reader<'_>,
    meta: &Meta<'_>,
) -> capnp::Result<()> {
    match phase.which()? {
        decide::phase::Request(r) => {
            let r = r?;
            let request = r.get_request()?;
            let mut e = m.init_request_headers();
            write_metadata(e.reborrow().init_metadata(), meta, request)?;
            e.set_request(request)?;
        }
        decide::phase::RequestBody(b) => m.init_request_body_chunk().set_data(b?.get_data()?),
        decide::phase::Response(r) => {
            let r = r?;
            let mut e = m.init_response_headers();
            e.set_response(r.get_response()?)?;
            // The request this response answers, so the agent can relate the two.
            let request = r.get_request()?;
            write_metadata(e.reborrow().init_metadata(), meta, request)?;
            if r.has_request() {
                e.set_request(request)?;
            }
        }
        decide::phase::ResponseBody(b) => {
            let b = b?;
            let mut c = m.init_response_body_chunk();
            c.set_data(b.get_data()?);
            c.set_is_last(b.get_is_last());
            c.set_chunk_index(b.get_chunk_index());
        }
        decide::phase::WebsocketFrame(f) => {
            let mut m = m;
            m.set_websocket_frame(f?)?;
        }
        decide::phase::Guardrail(g) => {
            let mut m = m;
            m.set_guardrail_inspect(g?)?;
        }
        decide::phase::Complete(c) => {
            let mut m = m;
            m.set_request_complete(c?)?;
        }
    }
    Ok(())
}

/// Fills an agent event's `RequestMetadata` from the request's facts and its HTTP request.
fn write_metadata(
    mut md: s::request_metadata::Builder<'_>,
    meta: &Meta<'_>,
    request: s::http_request::Reader<'_>,
) -> capnp::Result<()> {
    md.set_request_id(meta.request_id);
    md.set_route_id(meta.route_id);
    md.set_timestamp_ms(meta.timestamp_ms);
    md.set_deadline_ms(meta.deadline_ms);
    if let Ok(addr) = request.get_client_address()?.to_str()
        && let Ok(sa) = addr.parse::<std::net::SocketAddr>()
    {
        match sa.ip() {
            std::net::IpAddr::V4(ip) => md.set_client_ip(&ip.octets()),
            std::net::IpAddr::V6(ip) => md.set_client_ip(&ip.octets()),
        }
        md.set_client_port(sa.port());
    }
    Ok(())
}

/// The body chunk that travels with a request or response phase, if any (non-empty data).
pub(crate) fn inline_body<'a>(
    phase: decide::phase::Reader<'a>,
) -> capnp::Result<Option<s::body_chunk::Reader<'a>>> {
    let body = match phase.which()? {
        decide::phase::Request(r) => {
            let r = r?;
            if !r.has_body() {
                return Ok(None);
            }
            r.get_body()?
        }
        decide::phase::Response(r) => {
            let r = r?;
            if !r.has_body() {
                return Ok(None);
            }
            r.get_body()?
        }
        _ => return Ok(None),
    };
    Ok((!body.get_data()?.is_empty()).then_some(body))
}

/// Writes a body chunk event (request or response side), cut to `max_bytes` of data.
pub(crate) fn write_body_chunk(
    m: proxy_to_agent::Builder<'_>,
    response_side: bool,
    body: s::body_chunk::Reader<'_>,
    max_bytes: u64,
) -> capnp::Result<()> {
    let data = body.get_data()?;
    let cut = usize::try_from(max_bytes)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let mut c = if response_side {
        m.init_response_body_chunk()
    } else {
        m.init_request_body_chunk()
    };
    c.set_data(&data[..cut]);
    c.set_chunk_index(body.get_chunk_index());
    c.set_is_last(body.get_is_last() || cut < data.len());
    c.set_total_bytes(body.get_total_bytes());
    c.set_bytes_transferred(cut as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_headers_event_carries_its_request_and_metadata() {
        let mut msg = capnp::message::Builder::new_default();
        {
            let mut r = msg.init_root::<s::request::Builder<'_>>();
            let mut d = r.reborrow().init_decide();
            d.set_request_id("req-7");
            let mut resp = d.init_phase().init_response();
            let mut req = resp.reborrow().init_request();
            req.set_method("POST");
            req.set_path("/orders");
            req.set_client_address("192.0.2.7:51000");
            resp.init_response().set_status(502);
        }
        let root = msg.get_root_as_reader::<s::request::Reader<'_>>().unwrap();
        let s::request::Decide(d) = root.which().unwrap() else {
            panic!("not a decide")
        };
        let d = d.unwrap();
        let meta = Meta {
            request_id: d.get_request_id().unwrap(),
            route_id: "api",
            timestamp_ms: 1,
            deadline_ms: 100,
        };
        let mut out = capnp::message::Builder::new_default();
        write_event(
            out.init_root::<proxy_to_agent::Builder<'_>>(),
            d.get_phase(),
            &meta,
        )
        .unwrap();
        let ev = out
            .get_root_as_reader::<proxy_to_agent::Reader<'_>>()
            .unwrap();
        let proxy_to_agent::ResponseHeaders(e) = ev.which().unwrap() else {
            panic!("not a responseHeaders event")
        };
        let e = e.unwrap();
        assert_eq!(e.get_response().unwrap().get_status(), 502);
        let md = e.get_metadata().unwrap();
        assert_eq!(md.get_request_id().unwrap(), "req-7");
        assert_eq!(md.get_route_id().unwrap(), "api");
        assert_eq!(md.get_client_ip().unwrap(), &[192, 0, 2, 7]);
        assert_eq!(md.get_client_port(), 51000);
        let req = e.get_request().unwrap();
        assert_eq!(
            (req.get_method().unwrap(), req.get_path().unwrap()),
            ("POST".into(), "/orders".into())
        );
    }
}
