//! A connection's reader thread: reads frames, checks them, and hands each event to the agent.
//!
//! Any frame that does not decode, or that breaks the protocol, closes this connection (with a
//! log line) and nothing else.
//!
//! On a connection that negotiated JSON, each frame after the handshake is JSON text (kind 5);
//! it is converted to the Cap'n Proto message it describes and handled exactly like one.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use turnstile_wire::limits::FRAME_HEADER_BYTES;
use turnstile_wire::turnstile_capnp::{Encoding, handshake_request, proxy_to_agent};
use turnstile_wire::{AGENT_PROTOCOL_VERSION, Frame, FrameKind, Message, peek_header, split_frame};

use crate::Agent;
use crate::conn::{Conn, ConnError};
use crate::info::Health;
use crate::limits::{READ_CHUNK_BYTES, SHUTDOWN_WAIT_MS_MAX};
use crate::log::{log, unix_ms};
use crate::server::apply_config;
use crate::stats::inc;
use crate::view::{
    BodyChunk, CancelReason, GuardrailInspect, RequestComplete, RequestHeaders, RequestKey,
    ResponseHeaders, WebSocketFrame,
};

/// How a connection's read loop ended without an error.
enum End {
    /// turnstile closed it.
    Eof,
    /// After `shutdown` and the in-flight replies.
    Shutdown,
    /// The handshake was refused.
    Rejected,
}

/// What to do after a frame.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Shutdown,
    Reject,
}

/// Runs the connection until it ends, then closes it and cancels its open requests.
pub(crate) fn run_connection<A: Agent>(agent: Arc<A>, conn: Arc<Conn>, stream: UnixStream) {
    conn.bind_reader_thread();
    match read_loop(&*agent, &conn, stream) {
        Ok(End::Eof) => {}
        Ok(End::Shutdown) => log!("connection {}: closed on turnstile's shutdown", conn.id),
        Ok(End::Rejected) => log!("connection {}: handshake refused; closed", conn.id),
        Err(e) if conn.is_closing() => {
            let _ = e; // the socket was shut down on purpose
        }
        Err(e) => {
            inc(&conn.shared.stats.errors);
            log!("connection {}: {e}; closing this connection", conn.id);
        }
    }
    let (writer, open) = conn.close();
    conn.shared.release(conn.id, writer);
    for cid in open {
        let key = RequestKey {
            connection: conn.id,
            correlation_id: cid,
        };
        guarded(&conn, "on_cancel", || {
            agent.on_cancel(key, &CancelReason::ConnectionClosed)
        });
    }
}

/// Runs agent code; a panic is logged and counted, and the connection goes on.
fn guarded(conn: &Conn, what: &str, f: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        inc(&conn.shared.stats.errors);
        log!("connection {}: agent panicked in {what}: {msg}", conn.id);
    }
}

fn read_loop<A: Agent>(
    agent: &A,
    conn: &Arc<Conn>,
    mut stream: UnixStream,
) -> Result<End, ConnError> {
    let busy = conn.shared.opts.busy_poll;
    stream.set_nonblocking(busy)?;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    // A JSON connection's frames, converted to Cap'n Proto (unused on a Cap'n Proto one).
    let mut from_json = Vec::new();
    let mut end = 0;
    loop {
        // Handle every complete frame; replies to them go out in one write.
        let mut start = 0;
        let mut next = Next::Continue;
        conn.set_batching(true);
        while next == Next::Continue {
            let Some((frame, used)) = split_frame(&buf[start..end])? else {
                break;
            };
            next = handle_frame(agent, conn, frame, &mut from_json)?;
            start += used;
        }
        conn.set_batching(false);
        match next {
            Next::Continue => {}
            Next::Reject => return Ok(End::Rejected),
            Next::Shutdown => {
                wait_in_flight(conn, Duration::from_millis(SHUTDOWN_WAIT_MS_MAX));
                return Ok(End::Shutdown);
            }
        }
        // Keep the partial frame at the front, with room for all of it.
        buf.copy_within(start..end, 0);
        end -= start;
        let need = peek_header(&buf[..end])?.map_or(FRAME_HEADER_BYTES, |h| h.frame_len());
        if need > buf.len() {
            buf.resize(need, 0);
        } else if buf.len() > 2 * READ_CHUNK_BYTES && need <= READ_CHUNK_BYTES && end <= need {
            buf.truncate(READ_CHUNK_BYTES);
            buf.shrink_to_fit();
        }
        let n = read_some(&mut stream, &mut buf[end..], busy, conn)?;
        if n == 0 {
            if end > 0 {
                return Err(ConnError::Protocol(format!(
                    "connection ended inside a frame ({end} bytes of it)"
                )));
            }
            return Ok(End::Eof);
        }
        end += n;
    }
}

/// One read; in busy-poll mode spins until data, end of stream, or close.
fn read_some(
    stream: &mut UnixStream,
    buf: &mut [u8],
    busy: bool,
    conn: &Conn,
) -> io::Result<usize> {
    let mut spins = 0u32;
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if busy && e.kind() == io::ErrorKind::WouldBlock => {
                if conn.is_closing() {
                    return Ok(0);
                }
                // Spin on the core; give it up now and then so a shared core still progresses.
                spins = spins.wrapping_add(1);
                if spins % 1024 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn wait_in_flight(conn: &Conn, max: Duration) {
    let start = Instant::now();
    while conn.in_flight.load(Relaxed) > 0 && start.elapsed() < max {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn handle_frame<A: Agent>(
    agent: &A,
    conn: &Arc<Conn>,
    frame: Frame<'_>,
    from_json: &mut Vec<u8>,
) -> Result<Next, ConnError> {
    use proxy_to_agent::Which;
    // The handshake is always Cap'n Proto; after it, the negotiated encoding only.
    let json = conn.is_json();
    let expected = if json {
        FrameKind::ProxyToAgentJson
    } else {
        FrameKind::ProxyToAgent
    };
    if frame.kind != expected {
        return Err(ConnError::Protocol(format!(
            "{:?} frame from turnstile on a {} connection (expected {expected:?})",
            frame.kind,
            if json { "JSON" } else { "Cap'n Proto" },
        )));
    }
    let payload = if json {
        from_json.clear();
        turnstile_agent_json::proxy_to_agent_from_json(frame.payload, from_json)?;
        from_json.as_slice()
    } else {
        frame.payload
    };
    let msg = Message::parse(FrameKind::ProxyToAgent, payload)?;
    msg.validate()?;
    let root = msg.root::<proxy_to_agent::Owned>()?;
    let cid = root.get_correlation_id();
    let key = RequestKey {
        connection: conn.id,
        correlation_id: cid,
    };
    let which = match root.which() {
        Ok(w) => w,
        Err(e) => {
            // A newer turnstile's message: not ours to judge, skip it.
            log!("connection {}: ignoring unknown message {}", conn.id, e.0);
            return Ok(Next::Continue);
        }
    };
    if !conn.handshaken.load(Relaxed) {
        let Which::Handshake(h) = which else {
            return Err(ConnError::Protocol(
                "first message is not a handshake".into(),
            ));
        };
        return handshake(agent, conn, h?);
    }
    let protocol = |what: &str| ConnError::Protocol(format!("bad {what} event"));
    match which {
        Which::Handshake(_) => return Err(ConnError::Protocol("second handshake".into())),
        Which::RequestHeaders(ev) => {
            let view = RequestHeaders::new(key, ev?).ok_or_else(|| protocol("requestHeaders"))?;
            let reply = conn.open_request(cid).map_err(ConnError::Protocol)?;
            guarded(conn, "on_request_headers", || {
                agent.on_request_headers(&view, reply)
            });
        }
        Which::RequestBodyChunk(c) => {
            let view = BodyChunk::new(key, c?);
            let reply = conn.open_request(cid).map_err(ConnError::Protocol)?;
            guarded(conn, "on_request_body", || {
                agent.on_request_body(&view, reply)
            });
        }
        Which::ResponseHeaders(ev) => {
            let view = ResponseHeaders::new(key, ev?).ok_or_else(|| protocol("responseHeaders"))?;
            let reply = conn.open_request(cid).map_err(ConnError::Protocol)?;
            guarded(conn, "on_response_headers", || {
                agent.on_response_headers(&view, reply)
            });
        }
        Which::ResponseBodyChunk(c) => {
            let view = BodyChunk::new(key, c?);
            let reply = conn.open_request(cid).map_err(ConnError::Protocol)?;
            guarded(conn, "on_response_body", || {
                agent.on_response_body(&view, reply)
            });
        }
        Which::WebsocketFrame(f) => {
            let view = WebSocketFrame::new(key, f?);
            let reply = conn.open_request(cid).map_err(ConnError::Protocol)?;
            guarded(conn, "on_websocket_frame", || {
                agent.on_websocket_frame(&view, reply)
            });
        }
        Which::GuardrailInspect(g) => {
            let view = GuardrailInspect::new(key, g?);
            let reply = conn.open_request(cid).map_err(ConnError::Protocol)?;
            guarded(conn, "on_guardrail", || agent.on_guardrail(&view, reply));
        }
        Which::RequestComplete(c) => {
            let view = RequestComplete::new(key, c?);
            let reply = conn.open_request(cid).map_err(ConnError::Protocol)?;
            guarded(conn, "on_complete", || agent.on_complete(&view, reply));
        }
        Which::Cancel(c) => {
            let reason = CancelReason::read(c?.get_reason());
            if conn.cancel(cid) {
                guarded(conn, "on_cancel", || agent.on_cancel(key, &reason));
            }
        }
        Which::Configure(c) => {
            let c = c?;
            let generation = c.get_generation();
            match apply_config(agent, &conn.shared, c.get_config()?) {
                Ok(true) => log!(
                    "connection {}: configuration generation {generation} applied",
                    conn.id
                ),
                Ok(false) => {}
                Err(e) => {
                    log!(
                        "connection {}: configuration generation {generation} refused: {e}",
                        conn.id
                    );
                    conn.send_config_update(|u| {
                        let mut ce = u.init_config_error();
                        ce.set_error(e.error.as_str());
                        ce.set_field(e.field.as_str());
                    });
                }
            }
        }
        Which::ConfigUpdateAck(a) => {
            let a = a?;
            let text = |t: capnp::Result<capnp::text::Reader<'_>>| {
                t.ok()
                    .and_then(|t| t.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            log!(
                "connection {}: config update {} {}: {}",
                conn.id,
                text(a.get_request_id()),
                if a.get_accepted() {
                    "accepted"
                } else {
                    "refused"
                },
                text(a.get_message())
            );
        }
        Which::Drain(d) => {
            let deadline_ms = d?.get_deadline_ms();
            conn.drain_deadline_ms
                .store(unix_ms() + u64::from(deadline_ms), Relaxed);
            log!(
                "connection {}: draining (deadline {deadline_ms} ms)",
                conn.id
            );
            conn.send_health(&Health::Healthy);
        }
        Which::Shutdown(()) => return Ok(Next::Shutdown),
    }
    Ok(Next::Continue)
}

fn handshake<A: Agent>(
    agent: &A,
    conn: &Conn,
    h: handshake_request::Reader<'_>,
) -> Result<Next, ConnError> {
    let versions = h.get_supported_versions()?;
    let encodings = h.get_encodings()?;
    let version_ok = versions.iter().any(|v| v == AGENT_PROTOCOL_VERSION);
    // turnstile's preference order; the first one spoken here wins. No list means Cap'n Proto.
    let encoding = if encodings.is_empty() {
        Some(Encoding::Capnp)
    } else {
        encodings.iter().find_map(|e| {
            e.ok()
                .filter(|e| matches!(e, Encoding::Capnp | Encoding::Json))
        })
    };
    let picked = match encoding {
        _ if !version_ok => {
            let offered: Vec<u32> = versions.iter().collect();
            Err(format!(
                "no common protocol version: agent speaks {AGENT_PROTOCOL_VERSION}, turnstile offers {offered:?}"
            ))
        }
        Some(encoding) => Ok(encoding),
        None => {
            let offered: Vec<String> = encodings
                .iter()
                .map(|e| match e {
                    Ok(Encoding::Capnp) => "capnp".to_owned(),
                    Ok(Encoding::Json) => "json".to_owned(),
                    Err(e) => format!("unknown({})", e.0),
                })
                .collect();
            Err(format!(
                "no common encoding: agent speaks capnp and json, turnstile offers {offered:?}"
            ))
        }
    };
    let encoding = match picked {
        Ok(encoding) => encoding,
        Err(reason) => {
            log!("connection {}: refusing handshake: {reason}", conn.id);
            conn.send_control(|m| {
                m.init_handshake().set_rejected(reason.as_str());
                Ok(())
            });
            return Ok(Next::Reject);
        }
    };
    let info = catch_unwind(AssertUnwindSafe(|| agent.info()))
        .map_err(|_| ConnError::Protocol("agent panicked in info()".into()))?;
    let opts = &conn.shared.opts;
    let sent = conn.send_handshake_accepted(encoding, |m| {
        info.write_capabilities(
            m.init_handshake().init_accepted(),
            opts.report_interval_ms,
            opts.metrics_interval_ms > 0,
            encoding,
        )
    });
    if !sent {
        return Err(ConnError::Protocol("capabilities not encodable".into()));
    }
    if encoding == Encoding::Json {
        log!("connection {}: JSON encoding (debug mode)", conn.id);
    }
    conn.handshaken.store(true, Relaxed);
    let health = catch_unwind(AssertUnwindSafe(|| agent.health())).unwrap_or_default();
    conn.send_health(&health);
    Ok(Next::Continue)
}
