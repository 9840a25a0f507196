//! One connection's shared half: the writer (a mutex around the socket, the frame writer and the
//! output buffer) and the table of open requests, used by the reader thread and by replies on
//! any thread.
//!
//! Lock order: a connection's `state` is the innermost lock; no agent code runs while it is held.
//!
//! Encoding: every message is built as Cap'n Proto. On a connection that negotiated JSON at the
//! handshake, it is then converted to JSON text (`turnstile-agent-json`) and framed as kind 6;
//! the Cap'n Proto path does not change.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use turnstile_agent_json::{JsonError, agent_to_proxy_to_json};
use turnstile_wire::limits::{FRAME_BYTES_MAX, FRAME_HEADER_BYTES};
use turnstile_wire::turnstile_capnp::{Encoding, agent_to_proxy, config_update_request};
use turnstile_wire::{FrameHeader, FrameKind, FrameWriter, WireError};

use crate::info::{Health, len32};
use crate::limits::OPEN_REQUESTS_PER_CONNECTION_MAX;
use crate::limits::WRITE_BATCH_BYTES;
use crate::log::{log, unix_ms};
use crate::reply::{Extras, HeaderOp, Reply};
use crate::server::Shared;
use crate::stats::{inc, sub};

thread_local! {
    /// The connection whose reader runs on this thread (0 = none): its replies are batched.
    static READER_OF: Cell<u64> = const { Cell::new(0) };
}

/// A verdict as given by the agent, borrowed until it is encoded.
pub(crate) enum Verdict<'a> {
    Allow,
    Block { status: u16, body: &'a [u8] },
    Redirect { location: &'a str, status: u16 },
}

/// What became of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendOutcome {
    /// Encoded and written (or queued in the current batch).
    Sent,
    /// The request was cancelled (or is unknown): discarded.
    Stale,
    /// The connection is closed: discarded.
    Closed,
}

/// A flow-control action.
pub(crate) enum Flow {
    Pause,
    Resume,
    Capacity(u64),
}

/// An open request: its replies must carry this `seq` (correlation ids are reused).
struct Open {
    seq: u64,
    pending: u32,
}

struct State {
    stream: UnixStream,
    /// `None` once the connection is closed.
    writer: Option<FrameWriter<'static>>,
    out: Vec<u8>,
    open: HashMap<u64, Open>,
    next_seq: u64,
    batching: bool,
    /// Messages go out as JSON text (kind 6): negotiated at the handshake.
    json: bool,
    /// A JSON connection's Cap'n Proto frame, built here before it is converted (reused).
    json_stage: Vec<u8>,
}

/// Why a message was not encoded.
#[derive(Debug)]
pub(crate) enum EncodeError {
    /// The connection is closed.
    Closed,
    Wire(WireError),
    Json(JsonError),
}

impl From<WireError> for EncodeError {
    fn from(e: WireError) -> Self {
        EncodeError::Wire(e)
    }
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncodeError::Closed => f.write_str("connection closed"),
            EncodeError::Wire(e) => e.fmt(f),
            EncodeError::Json(e) => write!(f, "JSON encoding: {e}"),
        }
    }
}

impl State {
    /// Appends one `AgentToProxy` frame built by `fill` to `out`: Cap'n Proto (kind 4), or on a
    /// JSON connection the same message as JSON text (kind 6). On error `out` is as it was.
    fn write_message<F>(&mut self, fill: F) -> Result<(), EncodeError>
    where
        F: FnOnce(agent_to_proxy::Builder<'_>) -> capnp::Result<()>,
    {
        let Some(writer) = self.writer.as_mut() else {
            return Err(EncodeError::Closed);
        };
        if !self.json {
            writer.write::<agent_to_proxy::Owned, _>(&mut self.out, fill)?;
            return Ok(());
        }
        self.json_stage.clear();
        writer.write::<agent_to_proxy::Owned, _>(&mut self.json_stage, fill)?;
        let payload = self
            .json_stage
            .get(FRAME_HEADER_BYTES..)
            .unwrap_or_default();
        append_json_frame(payload, &mut self.out).map_err(EncodeError::Json)
    }
}

/// Appends the kind 6 frame of the `AgentToProxy` payload `payload`, converted to JSON.
fn append_json_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    if let Err(e) = agent_to_proxy_to_json(payload, out) {
        out.truncate(start);
        return Err(e);
    }
    let len = out.len() - start - FRAME_HEADER_BYTES;
    let Some(payload_len) = u32::try_from(len).ok().filter(|&n| n <= FRAME_BYTES_MAX) else {
        out.truncate(start);
        return Err(JsonError::TooLarge {
            len,
            max: FRAME_BYTES_MAX as usize,
        });
    };
    let header = FrameHeader {
        payload_len,
        kind: FrameKind::AgentToProxyJson,
    };
    out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&header.to_bytes());
    Ok(())
}

/// One connection with turnstile.
pub(crate) struct Conn {
    pub id: u64,
    pub shared: Arc<Shared>,
    state: Mutex<State>,
    /// Replies outstanding on this connection.
    pub in_flight: AtomicU64,
    pub load: crate::stats::LoadWindow,
    /// Unix ms by which a drain must be over; 0 = not draining.
    pub drain_deadline_ms: AtomicU64,
    pub handshaken: AtomicBool,
    /// Frames from turnstile arrive as JSON text (kind 5): negotiated at the handshake.
    json: AtomicBool,
    closing: AtomicBool,
}

impl Conn {
    pub fn new(
        id: u64,
        shared: Arc<Shared>,
        stream: UnixStream,
        writer: FrameWriter<'static>,
    ) -> Self {
        Conn {
            id,
            shared,
            state: Mutex::new(State {
                stream,
                writer: Some(writer),
                out: Vec::with_capacity(4096),
                open: HashMap::new(),
                next_seq: 1,
                batching: false,
                json: false,
                json_stage: Vec::new(),
            }),
            in_flight: AtomicU64::new(0),
            load: Default::default(),
            drain_deadline_ms: AtomicU64::new(0),
            handshaken: AtomicBool::new(false),
            json: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs under this lock; a poisoned lock still holds valid state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the calling thread as this connection's reader.
    pub fn bind_reader_thread(&self) {
        READER_OF.with(|c| c.set(self.id));
    }

    /// Whether turnstile's frames arrive as JSON text (after a handshake that picked JSON).
    pub fn is_json(&self) -> bool {
        self.json.load(Relaxed)
    }

    /// Whether the connection is being closed (busy-poll readers check this).
    pub fn is_closing(&self) -> bool {
        self.closing.load(Relaxed) || self.shared.stopping()
    }

    /// Registers an event for `cid` and returns the reply for it.
    pub fn open_request(self: &Arc<Self>, cid: u64) -> Result<Reply, String> {
        if cid == 0 {
            return Err("request event with correlation id 0".into());
        }
        let mut st = self.lock();
        let st = &mut *st;
        let len = st.open.len();
        let seq = match st.open.get_mut(&cid) {
            Some(open) => {
                open.pending += 1;
                open.seq
            }
            None if len >= OPEN_REQUESTS_PER_CONNECTION_MAX => {
                return Err(format!(
                    "more than {OPEN_REQUESTS_PER_CONNECTION_MAX} open requests"
                ));
            }
            None => {
                let seq = st.next_seq;
                st.next_seq += 1;
                st.open.insert(cid, Open { seq, pending: 1 });
                seq
            }
        };
        self.in_flight.fetch_add(1, Relaxed);
        self.shared.stats.in_flight.fetch_add(1, Relaxed);
        Ok(Reply::new(self.clone(), cid, seq))
    }

    /// Accounts one pending reply of `cid` (matching `seq`) as done. False if stale.
    fn settle(&self, st: &mut State, cid: u64, seq: u64, keep_open: bool) -> bool {
        let Some(open) = st.open.get_mut(&cid) else {
            return false;
        };
        if open.seq != seq {
            return false;
        }
        open.pending = open.pending.saturating_sub(1);
        if open.pending == 0 && !keep_open {
            st.open.remove(&cid);
        }
        sub(&self.in_flight, 1);
        sub(&self.shared.stats.in_flight, 1);
        true
    }

    /// Encodes and sends an answer for `cid`, unless it was cancelled or the connection closed.
    pub fn send_reply(
        &self,
        cid: u64,
        seq: u64,
        started: Instant,
        verdict: &Verdict<'_>,
        extras: Option<&Extras>,
        need_more: bool,
    ) -> SendOutcome {
        let mut st = self.lock();
        let st = &mut *st;
        if st.writer.is_none() {
            return SendOutcome::Closed;
        }
        if !self.settle(st, cid, seq, need_more) {
            return SendOutcome::Stale;
        }
        let fill =
            |m: agent_to_proxy::Builder<'_>| fill_response(m, cid, verdict, extras, need_more);
        if let Err(e) = st.write_message(fill) {
            // Too large (a huge block body or header list): keep the verdict, drop the rest.
            log!(
                "connection {}: reply for {cid} not encodable ({e}); sending it bare",
                self.id
            );
            inc(&self.shared.stats.errors);
            let bare = match verdict {
                Verdict::Allow => Verdict::Allow,
                Verdict::Block { status, .. } => Verdict::Block {
                    status: *status,
                    body: b"",
                },
                Verdict::Redirect { .. } => Verdict::Block {
                    status: 500,
                    body: b"",
                },
            };
            let mut x = Extras::default();
            x.tags.push("sdk:reply-too-large".into());
            let fill =
                |m: agent_to_proxy::Builder<'_>| fill_response(m, cid, &bare, Some(&x), need_more);
            if let Err(e) = st.write_message(fill) {
                log!(
                    "connection {}: bare reply for {cid} failed too: {e}",
                    self.id
                );
                return SendOutcome::Closed;
            }
        }
        let stats = &self.shared.stats;
        if need_more {
            inc(&stats.need_more);
        } else {
            inc(&stats.requests);
            inc(match verdict {
                Verdict::Allow => &stats.allowed,
                Verdict::Block { .. } => &stats.blocked,
                Verdict::Redirect { .. } => &stats.redirected,
            });
        }
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.latency.record(us);
        self.load.latency.record(us);
        inc(&self.load.processed);
        self.flush(st, false);
        SendOutcome::Sent
    }

    /// Forgets one pending reply of `cid` without answering.
    pub fn abandon(&self, cid: u64, seq: u64) {
        let mut st = self.lock();
        if self.settle(&mut st, cid, seq, true) {
            inc(&self.load.rejected);
        }
    }

    /// Drops `cid` from the open requests: later replies for it are discarded. True if it was
    /// open.
    pub fn cancel(&self, cid: u64) -> bool {
        let mut st = self.lock();
        let Some(open) = st.open.remove(&cid) else {
            return false;
        };
        sub(&self.in_flight, u64::from(open.pending));
        sub(&self.shared.stats.in_flight, u64::from(open.pending));
        inc(&self.shared.stats.cancelled);
        inc(&self.load.rejected);
        true
    }

    /// Sends a connection-level message (correlation id 0). False if it was not sent.
    pub fn send_control<F>(&self, fill: F) -> bool
    where
        F: FnOnce(agent_to_proxy::Builder<'_>) -> capnp::Result<()>,
    {
        self.send_with_cid(0, fill)
    }

    fn send_with_cid<F>(&self, cid: u64, fill: F) -> bool
    where
        F: FnOnce(agent_to_proxy::Builder<'_>) -> capnp::Result<()>,
    {
        let mut st = self.lock();
        let st = &mut *st;
        let r = st.write_message(|mut m| {
            m.set_correlation_id(cid);
            fill(m)
        });
        match r {
            Ok(()) => {}
            Err(EncodeError::Closed) => return false,
            Err(e) => {
                log!("connection {}: message not encodable: {e}", self.id);
                return false;
            }
        }
        self.flush(st, false);
        true
    }

    /// Sends the accepting handshake answer (always Cap'n Proto) and, under the same lock, so
    /// that no other message slips in between, switches the connection to `encoding` for
    /// everything after it. False if it was not sent.
    pub fn send_handshake_accepted<F>(&self, encoding: Encoding, fill: F) -> bool
    where
        F: FnOnce(agent_to_proxy::Builder<'_>) -> capnp::Result<()>,
    {
        let mut st = self.lock();
        let st = &mut *st;
        match st.write_message(fill) {
            Ok(()) => {}
            Err(EncodeError::Closed) => return false,
            Err(e) => {
                log!(
                    "connection {}: handshake answer not encodable: {e}",
                    self.id
                );
                return false;
            }
        }
        let json = encoding == Encoding::Json;
        st.json = json;
        self.json.store(json, Relaxed);
        self.flush(st, false);
        true
    }

    /// Sends a flow-control signal for `cid` (0 = the whole connection).
    pub fn send_flow(&self, cid: u64, flow: Flow) {
        self.send_with_cid(cid, |m| {
            let mut a = m.init_flow_control().init_action();
            match flow {
                Flow::Pause => a.set_pause(()),
                Flow::Resume => a.set_resume(()),
                Flow::Capacity(bytes) => a.set_update_capacity(bytes),
            }
            Ok(())
        });
    }

    /// Sends a `configUpdate` and returns its request id.
    pub fn send_config_update(
        &self,
        fill: impl FnOnce(config_update_request::update::Builder<'_>),
    ) -> String {
        let id = self.shared.next_request_id();
        self.send_control(|m| {
            let mut u = m.init_config_update();
            u.set_request_id(id.as_str());
            u.set_timestamp_ms(unix_ms());
            fill(u.init_update());
            Ok(())
        });
        id
    }

    /// Sends a health report with this connection's load over the last interval. A draining
    /// connection reports `Draining` unless the agent reports `Unhealthy`.
    pub fn send_health(&self, health: &Health) {
        let deadline = self.drain_deadline_ms.load(Relaxed);
        let draining;
        let health = match health {
            Health::Healthy | Health::Degraded { .. } if deadline != 0 => {
                draining = Health::Draining {
                    eta_ms: deadline.saturating_sub(unix_ms()),
                };
                &draining
            }
            h => h,
        };
        let lat = self.load.latency.snapshot(true);
        let processed = self.load.processed.swap(0, Relaxed);
        let rejected = self.load.rejected.swap(0, Relaxed);
        let in_flight = u32::try_from(self.in_flight.load(Relaxed)).unwrap_or(u32::MAX);
        self.send_control(|m| {
            let mut h = m.init_health();
            health.write(h.reborrow().init_state());
            let mut l = h.init_load();
            l.set_in_flight(in_flight);
            l.set_avg_latency_ms(lat.avg_ms());
            l.set_p99_latency_ms(lat.p99_ms());
            l.set_requests_processed(processed);
            l.set_requests_rejected(rejected);
            Ok(())
        });
    }

    /// Starts or stops batching this reader's replies; stopping writes the batch out.
    pub fn set_batching(&self, on: bool) {
        let mut st = self.lock();
        st.batching = on;
        if !on {
            self.flush(&mut st, true);
        }
    }

    /// Writes the output buffer, unless the reader thread is batching and it is small.
    fn flush(&self, st: &mut State, force: bool) {
        if st.out.is_empty() {
            return;
        }
        let batched = st.batching && READER_OF.with(Cell::get) == self.id;
        if !force && batched && st.out.len() < WRITE_BATCH_BYTES {
            return;
        }
        if let Err(e) = write_all(&mut st.stream, &st.out) {
            log!("connection {}: write failed: {e}; closing", self.id);
            let _ = st.stream.shutdown(std::net::Shutdown::Both);
            self.closing.store(true, Relaxed);
        }
        st.out.clear();
    }

    /// Shuts the socket down: the reader sees the end and closes the connection.
    pub fn shutdown_socket(&self) {
        self.closing.store(true, Relaxed);
        let st = self.lock();
        let _ = st.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Closes the connection for good: later sends are discarded. Returns the frame writer (for
    /// reuse) and the correlation ids still open.
    pub fn close(&self) -> (Option<FrameWriter<'static>>, Vec<u64>) {
        self.closing.store(true, Relaxed);
        let mut st = self.lock();
        let _ = st.stream.shutdown(std::net::Shutdown::Both);
        st.out.clear();
        let writer = st.writer.take();
        let open: Vec<u64> = st.open.drain().map(|(cid, _)| cid).collect();
        let n = self.in_flight.swap(0, Relaxed);
        sub(&self.shared.stats.in_flight, n);
        (writer, open)
    }

    /// Writes bytes verbatim (fault injection).
    #[cfg(feature = "fault-injection")]
    pub fn write_raw(&self, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        let st = &mut *st;
        if !st.out.is_empty() {
            write_all(&mut st.stream, &st.out)?;
            st.out.clear();
        }
        write_all(&mut st.stream, bytes)
    }
}

/// `write_all` that also works on a non-blocking socket (busy-poll mode).
fn write_all(stream: &mut UnixStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn fill_ops(
    mut list: capnp::struct_list::Builder<'_, turnstile_wire::turnstile_capnp::header_op::Owned>,
    ops: &[HeaderOp],
) {
    for (i, op) in ops.iter().enumerate() {
        let mut b = list.reborrow().get(len32(i));
        match op {
            HeaderOp::Add(n, v) => {
                let mut h = b.init_add();
                h.set_name(n);
                h.set_value(v);
            }
            HeaderOp::Set(n, v) => {
                let mut h = b.init_set();
                h.set_name(n);
                h.set_value(v);
            }
            HeaderOp::Remove(n) => b.set_remove(n),
        }
    }
}

fn fill_texts(mut list: capnp::text_list::Builder<'_>, items: &[String]) {
    for (i, t) in items.iter().enumerate() {
        list.set(len32(i), t.as_str());
    }
}

/// Builds `AgentToProxy{cid, response{...}}`.
fn fill_response(
    mut m: agent_to_proxy::Builder<'_>,
    cid: u64,
    verdict: &Verdict<'_>,
    extras: Option<&Extras>,
    need_more: bool,
) -> capnp::Result<()> {
    m.set_correlation_id(cid);
    let mut r = m.init_response();
    let mut v = r.reborrow().init_verdict();
    match *verdict {
        Verdict::Allow => v.set_allow(()),
        Verdict::Block { status, body } => {
            let mut b = v.init_block();
            b.set_status(status);
            b.set_body(body);
            if let Some(x) = extras.filter(|x| !x.block_headers.is_empty()) {
                let mut hs = b.init_headers(len32(x.block_headers.len()));
                for (i, (n, val)) in x.block_headers.iter().enumerate() {
                    let mut h = hs.reborrow().get(len32(i));
                    h.set_name(n);
                    h.set_value(val);
                }
            }
        }
        Verdict::Redirect { location, status } => {
            let mut d = v.init_redirect();
            d.set_location(location);
            d.set_status(status);
        }
    }
    r.set_need_more(need_more);
    let Some(x) = extras else {
        return Ok(());
    };
    if !x.request_ops.is_empty() {
        fill_ops(
            r.reborrow()
                .init_request_headers(len32(x.request_ops.len())),
            &x.request_ops,
        );
    }
    if !x.response_ops.is_empty() {
        fill_ops(
            r.reborrow()
                .init_response_headers(len32(x.response_ops.len())),
            &x.response_ops,
        );
    }
    let mut a = r.init_audit();
    fill_texts(a.reborrow().init_tags(len32(x.tags.len())), &x.tags);
    fill_texts(
        a.reborrow().init_rule_ids(len32(x.rule_ids.len())),
        &x.rule_ids,
    );
    fill_texts(
        a.reborrow().init_reason_codes(len32(x.reason_codes.len())),
        &x.reason_codes,
    );
    if let Some(c) = x.confidence {
        a.init_confidence().set_value(c);
    }
    Ok(())
}

/// Why a connection ended badly.
#[derive(Debug)]
pub(crate) enum ConnError {
    Io(io::Error),
    Wire(WireError),
    Json(JsonError),
    Protocol(String),
}

impl From<JsonError> for ConnError {
    fn from(e: JsonError) -> Self {
        ConnError::Json(e)
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}
impl From<WireError> for ConnError {
    fn from(e: WireError) -> Self {
        ConnError::Wire(e)
    }
}
impl From<capnp::Error> for ConnError {
    fn from(e: capnp::Error) -> Self {
        ConnError::Wire(WireError::BadMessage(e))
    }
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "i/o error: {e}"),
            ConnError::Wire(e) => write!(f, "malformed frame: {e}"),
            ConnError::Json(e) => write!(f, "malformed JSON frame: {e}"),
            ConnError::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}
