//! The guest half of the ABI (docs/wasm-abi.md), called by the exports that
//! [`crate::export_agent!`] generates: the input buffer, message dispatch to the [`Agent`], and
//! the reply buffer. Not for direct use.
//!
//! State lives in thread-locals: a WASM instance has one thread, and `thread_local!` gives safe
//! global state without raw pointers.

use std::cell::{Cell, RefCell};

use turnstile_wire::turnstile_capnp::{
    Encoding, agent_to_proxy, handshake_request, proxy_to_agent,
};
use turnstile_wire::{AGENT_PROTOCOL_VERSION, FrameKind, FrameWriter, Message};

use crate::Agent;
use crate::limits::{INPUT_BYTES_MAX, LOG_BYTES_MAX, METRIC_NAME_BYTES_MAX};
use crate::view::{
    BodyChunk, GuardrailInspect, RequestComplete, RequestHeaders, RequestKey, ResponseHeaders,
    WebSocketFrame,
};
use crate::{Decision, LogLevel};

/// `turnstile_on_message`'s result when `(ptr, len)` is not the buffer `turnstile_alloc` gave.
pub const ERR_INPUT: i64 = -1;
/// `turnstile_on_message`'s result when the bytes are not a valid `ProxyToAgent`.
pub const ERR_DECODE: i64 = -2;
/// `turnstile_on_message`'s result when the reply could not be encoded.
pub const ERR_ENCODE: i64 = -3;

/// The host's imports, as safe function pointers (no-ops outside WASM).
#[derive(Clone, Copy)]
pub struct Host {
    /// `turnstile.turnstile_log(level, ptr, len)`.
    pub log: extern "C" fn(i32, i32, i32),
    /// `turnstile.turnstile_metric(kind, name_ptr, name_len, value)`.
    pub metric: extern "C" fn(i32, i32, i32, i64),
}

extern "C" fn no_log(_: i32, _: i32, _: i32) {}
extern "C" fn no_metric(_: i32, _: i32, _: i32, _: i64) {}

impl Host {
    /// Imports that do nothing (host builds of an agent crate, unit tests).
    pub const NONE: Host = Host {
        log: no_log,
        metric: no_metric,
    };
}

struct Runtime {
    agent: Option<Box<dyn Agent>>,
    input: Vec<u8>,
    output: Vec<u8>,
    writer: FrameWriter<'static>,
}

thread_local! {
    static RT: RefCell<Option<Runtime>> = const { RefCell::new(None) };
    static HOST: Cell<Option<Host>> = const { Cell::new(None) };
}

/// A guest address as the ABI's `i32`. Linear memory of a turnstile agent is far below 2 GiB
/// (the host's limit), so the cast is lossless there; on a host build the value is meaningless.
fn addr(p: *const u8) -> i32 {
    p as usize as i32
}

fn with_rt<R>(f: impl FnOnce(&mut Runtime) -> R) -> R {
    RT.with_borrow_mut(|rt| {
        let rt = rt.get_or_insert_with(|| Runtime {
            agent: None,
            input: Vec::new(),
            output: Vec::with_capacity(1024),
            writer: FrameWriter::with_static_scratch(),
        });
        f(rt)
    })
}

/// `turnstile_alloc(len)`: makes the input buffer at least `len` bytes long and returns its
/// address (valid until the next `turnstile_alloc`); 0 if `len` is negative or too large.
pub fn alloc(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else {
        return 0;
    };
    if len > INPUT_BYTES_MAX {
        return 0;
    }
    with_rt(|rt| {
        if rt.input.len() < len {
            rt.input.resize(len, 0);
        }
        addr(rt.input.as_ptr())
    })
}

/// `turnstile_on_message(ptr, len)`: handles one `ProxyToAgent` and returns
/// `(reply_ptr << 32) | reply_len` (0 = no reply) or a negative error code.
pub fn on_message(ptr: i32, len: i32, host: Host, make: fn() -> Box<dyn Agent>) -> i64 {
    if HOST.get().is_none() {
        HOST.set(Some(host));
        std::panic::set_hook(Box::new(|info| {
            log(LogLevel::Error, &format!("panic: {info}"))
        }));
    }
    with_rt(|rt| {
        let Ok(len) = usize::try_from(len) else {
            return ERR_INPUT;
        };
        if ptr != addr(rt.input.as_ptr()) || len > rt.input.len() {
            return ERR_INPUT;
        }
        // Taken out for the call so the agent and the writer can be borrowed beside it; put back
        // unchanged, so the address the host holds stays valid.
        let input = std::mem::take(&mut rt.input);
        let result = handle(rt, &input[..len], make);
        rt.input = input;
        match result {
            Ok(true) if rt.output.len() > turnstile_wire::limits::FRAME_HEADER_BYTES => {
                let h = turnstile_wire::limits::FRAME_HEADER_BYTES;
                let reply_ptr = i64::from(addr(rt.output[h..].as_ptr()));
                let reply_len = (rt.output.len() - h) as i64;
                (reply_ptr << 32) | reply_len
            }
            Ok(_) => 0,
            Err(code) => code,
        }
    })
}

/// Handles one message; `Ok(true)` when `rt.output` holds a reply frame.
fn handle(rt: &mut Runtime, bytes: &[u8], make: fn() -> Box<dyn Agent>) -> Result<bool, i64> {
    use proxy_to_agent::Which;
    // No full validation walk up front (the UDS SDK does one): every accessor checks its own
    // pointer and the views turn a bad one into "" or empty, and the bytes come from turnstile
    // itself, in process. This keeps a call from paying a walk of every header it never reads.
    let msg = Message::parse(FrameKind::ProxyToAgent, bytes).map_err(|_| ERR_DECODE)?;
    let root = msg
        .root::<proxy_to_agent::Owned>()
        .map_err(|_| ERR_DECODE)?;
    let cid = root.get_correlation_id();
    let key = RequestKey {
        correlation_id: cid,
    };
    // A message this build does not know (a newer turnstile) gets no reply.
    let Ok(which) = root.which() else {
        return Ok(false);
    };
    let agent = rt.agent.get_or_insert_with(make);
    let decision = match which {
        Which::Handshake(h) => {
            let h = h.map_err(|_| ERR_DECODE)?;
            let info = handshake_refusal(h).map_or_else(|| Ok(agent.info()), Err);
            rt.output.clear();
            rt.writer
                .write::<agent_to_proxy::Owned, _>(&mut rt.output, |mut m| {
                    m.set_correlation_id(0);
                    let mut hs = m.init_handshake();
                    match &info {
                        Ok(info) => info.write_capabilities(hs.init_accepted()),
                        Err(reason) => hs.set_rejected(reason.as_str()),
                    }
                    Ok(())
                })
                .map_err(|_| ERR_ENCODE)?;
            return Ok(true);
        }
        Which::Configure(c) => {
            let c = c.map_err(|_| ERR_DECODE)?;
            let config = c.get_config().unwrap_or(&[]);
            if let Err(e) = agent.configure(config) {
                write_config_error(rt, &e)?;
                return Ok(true);
            }
            // Capabilities may follow the configuration (events, body size, interest): the
            // answer to an accepted configure carries them, as a handshake answer does.
            let info = agent.info();
            rt.output.clear();
            rt.writer
                .write::<agent_to_proxy::Owned, _>(&mut rt.output, |mut m| {
                    m.set_correlation_id(0);
                    info.write_capabilities(m.init_handshake().init_accepted());
                    Ok(())
                })
                .map_err(|_| ERR_ENCODE)?;
            return Ok(true);
        }
        Which::Cancel(_) => {
            agent.on_cancel(key);
            return Ok(false);
        }
        Which::RequestHeaders(ev) => {
            let ev = ev.map_err(|_| ERR_DECODE)?;
            let view = RequestHeaders::new(key, ev).ok_or(ERR_DECODE)?;
            agent.on_request_headers(&view)
        }
        Which::RequestBodyChunk(c) => {
            let view = BodyChunk::new(key, c.map_err(|_| ERR_DECODE)?);
            agent.on_request_body(&view)
        }
        Which::ResponseHeaders(ev) => {
            let ev = ev.map_err(|_| ERR_DECODE)?;
            let view = ResponseHeaders::new(key, ev).ok_or(ERR_DECODE)?;
            agent.on_response_headers(&view)
        }
        Which::ResponseBodyChunk(c) => {
            let view = BodyChunk::new(key, c.map_err(|_| ERR_DECODE)?);
            agent.on_response_body(&view)
        }
        Which::WebsocketFrame(f) => {
            let view = WebSocketFrame::new(key, f.map_err(|_| ERR_DECODE)?);
            agent.on_websocket_frame(&view)
        }
        Which::GuardrailInspect(g) => {
            let view = GuardrailInspect::new(key, g.map_err(|_| ERR_DECODE)?);
            agent.on_guardrail(&view)
        }
        Which::RequestComplete(c) => {
            let view = RequestComplete::new(key, c.map_err(|_| ERR_DECODE)?);
            agent.on_complete(&view)
        }
        Which::ConfigUpdateAck(_) | Which::Drain(_) | Which::Shutdown(()) => return Ok(false),
    };
    write_decision(rt, cid, &decision)?;
    Ok(true)
}

fn write_config_error(rt: &mut Runtime, e: &crate::ConfigError) -> Result<(), i64> {
    rt.output.clear();
    rt.writer
        .write::<agent_to_proxy::Owned, _>(&mut rt.output, |mut m| {
            m.set_correlation_id(0);
            let u = m.init_config_update();
            let mut ce = u.get_update().init_config_error();
            ce.set_error(e.error.as_str());
            ce.set_field(e.field.as_str());
            Ok(())
        })
        .map_err(|_| ERR_ENCODE)?;
    Ok(())
}

fn write_decision(rt: &mut Runtime, cid: u64, decision: &Decision) -> Result<(), i64> {
    rt.output.clear();
    rt.writer
        .write::<agent_to_proxy::Owned, _>(&mut rt.output, |mut m| {
            m.set_correlation_id(cid);
            decision.write(m.init_response());
            Ok(())
        })
        .map_err(|_| ERR_ENCODE)?;
    Ok(())
}

/// Why the handshake is refused, if it is: no common version or encoding.
fn handshake_refusal(h: handshake_request::Reader<'_>) -> Option<String> {
    let versions = h.get_supported_versions().ok()?;
    if !versions.iter().any(|v| v == AGENT_PROTOCOL_VERSION) {
        return Some(format!(
            "no common protocol version: agent speaks {AGENT_PROTOCOL_VERSION}"
        ));
    }
    let encodings = h.get_encodings().ok()?;
    let capnp = encodings.is_empty() || encodings.iter().any(|e| matches!(e, Ok(Encoding::Capnp)));
    (!capnp).then(|| "no common encoding: agent speaks capnp".to_owned())
}

fn len32(n: usize) -> u32 {
    crate::decision::len32(n)
}

/// Sends a log line to turnstile's log (cut to [`LOG_BYTES_MAX`] bytes). The host bounds the
/// lines per call and drops the rest.
pub fn log(level: LogLevel, message: &str) {
    let Some(host) = HOST.get() else {
        return;
    };
    let mut end = message.len().min(LOG_BYTES_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = &message.as_bytes()[..end];
    (host.log)(
        level as i32,
        addr(bytes.as_ptr()),
        len32(bytes.len()) as i32,
    );
}

/// Metric kinds of `turnstile_metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum MetricKind {
    /// Adds `value` to a counter.
    CounterAdd = 0,
    /// Sets a gauge to `value`.
    GaugeSet = 1,
}

/// Reports a metric to the host. Names longer than [`METRIC_NAME_BYTES_MAX`] are not sent.
pub fn metric(kind: MetricKind, name: &str, value: i64) {
    let Some(host) = HOST.get() else {
        return;
    };
    if name.len() > METRIC_NAME_BYTES_MAX {
        return;
    }
    (host.metric)(kind as i32, addr(name.as_ptr()), name.len() as i32, value);
}
