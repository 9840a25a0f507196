//! [`Reply`]: the answer to one event, given at once or later from any thread; and
//! [`Connection`]: connection-level messages (flow control, health, logs, config requests).

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use turnstile_wire::turnstile_capnp::LogLevel;

use crate::conn::{Conn, Flow, SendOutcome, Verdict};
use crate::info::Health;
use crate::log::log;
use crate::stats::inc;
use crate::view::RequestKey;

/// Audit tag of the allow the SDK sends for a [`Reply`] dropped unanswered.
pub const DROPPED_REPLY_TAG: &str = "sdk:dropped-reply";

/// A header mutation requested by a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderOp {
    Add(Vec<u8>, Vec<u8>),
    Set(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

/// Everything a reply carries besides its verdict. Boxed and allocated only when used, so a bare
/// `allow()` costs no allocation.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    pub request_ops: Vec<HeaderOp>,
    pub response_ops: Vec<HeaderOp>,
    pub block_headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub tags: Vec<String>,
    pub rule_ids: Vec<String>,
    pub reason_codes: Vec<String>,
    pub confidence: Option<f32>,
}

/// The answer to one event of one request.
///
/// Answer it exactly once with [`allow`](Reply::allow), [`block`](Reply::block),
/// [`redirect`](Reply::redirect) or [`need_more`](Reply::need_more) — in the handler (the common
/// case, written straight to the socket) or later from any thread (a `Reply` is `Send`): other
/// requests on the connection are never held up by one that is answered late. Header operations
/// and audit data are added with the builder methods before the verdict.
///
/// A reply for a request turnstile has cancelled is discarded. A reply dropped unanswered is
/// logged and answered with an allow tagged [`DROPPED_REPLY_TAG`]; a handler that panics drops its
/// reply that way too.
#[must_use = "a Reply must be answered: allow(), block(), redirect() or need_more()"]
pub struct Reply {
    conn: Option<Arc<Conn>>,
    cid: u64,
    seq: u64,
    started: Instant,
    extras: Option<Box<Extras>>,
}

impl Reply {
    pub(crate) fn new(conn: Arc<Conn>, cid: u64, seq: u64) -> Self {
        Reply {
            conn: Some(conn),
            cid,
            seq,
            started: Instant::now(),
            extras: None,
        }
    }

    /// Which request this answers.
    pub fn key(&self) -> RequestKey {
        RequestKey {
            connection: self.conn.as_ref().map_or(0, |c| c.id),
            correlation_id: self.cid,
        }
    }

    /// Time since the event arrived.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The connection the event arrived on.
    pub fn connection(&self) -> Connection {
        Connection {
            // A Reply only loses its connection in the consuming methods and in Drop.
            conn: self
                .conn
                .clone()
                .expect("unanswered Reply has its connection"),
        }
    }

    fn extras(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Appends a request header before forwarding (keeps fields with the same name).
    pub fn add_request_header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        let op = HeaderOp::Add(name.as_ref().to_vec(), value.as_ref().to_vec());
        self.extras().request_ops.push(op);
        self
    }

    /// Replaces every request header named `name` by this one.
    pub fn set_request_header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        let op = HeaderOp::Set(name.as_ref().to_vec(), value.as_ref().to_vec());
        self.extras().request_ops.push(op);
        self
    }

    /// Removes every request header named `name`.
    pub fn remove_request_header(mut self, name: impl AsRef<[u8]>) -> Self {
        let op = HeaderOp::Remove(name.as_ref().to_vec());
        self.extras().request_ops.push(op);
        self
    }

    /// Appends a response header before sending the response downstream.
    pub fn add_response_header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        let op = HeaderOp::Add(name.as_ref().to_vec(), value.as_ref().to_vec());
        self.extras().response_ops.push(op);
        self
    }

    /// Replaces every response header named `name` by this one.
    pub fn set_response_header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        let op = HeaderOp::Set(name.as_ref().to_vec(), value.as_ref().to_vec());
        self.extras().response_ops.push(op);
        self
    }

    /// Removes every response header named `name`.
    pub fn remove_response_header(mut self, name: impl AsRef<[u8]>) -> Self {
        let op = HeaderOp::Remove(name.as_ref().to_vec());
        self.extras().response_ops.push(op);
        self
    }

    /// A header of the refusal response, for a later [`block`](Reply::block)
    /// (e.g. `retry-after`, `www-authenticate`).
    pub fn block_header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        let h = (name.as_ref().to_vec(), value.as_ref().to_vec());
        self.extras().block_headers.push(h);
        self
    }

    /// Adds an audit tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.extras().tags.push(tag.into());
        self
    }

    /// Adds the id of a rule that matched.
    pub fn rule(mut self, rule_id: impl Into<String>) -> Self {
        self.extras().rule_ids.push(rule_id.into());
        self
    }

    /// Adds a reason code.
    pub fn reason(mut self, code: impl Into<String>) -> Self {
        self.extras().reason_codes.push(code.into());
        self
    }

    /// Sets the confidence of the verdict, 0.0 to 1.0 (clamped).
    pub fn confidence(mut self, confidence: f32) -> Self {
        self.extras().confidence = Some(confidence.clamp(0.0, 1.0));
        self
    }

    /// Lets the request through.
    pub fn allow(mut self) {
        self.finish(Verdict::Allow, false);
    }

    /// Refuses the request with `status` (0 means 403) and `body`.
    pub fn block(mut self, status: u16, body: impl AsRef<[u8]>) {
        self.finish(
            Verdict::Block {
                status,
                body: body.as_ref(),
            },
            false,
        );
    }

    /// Sends the client to `location` with `status` (301, 302, 303, 307, 308; 0 means 302).
    pub fn redirect(mut self, location: &str, status: u16) {
        self.finish(Verdict::Redirect { location, status }, false);
    }

    /// No decision yet: asks for further body chunks (the request stays open). Header operations
    /// and audit data given here are sent too.
    pub fn need_more(mut self) {
        self.finish(Verdict::Allow, true);
    }

    /// Gives up on this event without answering: turnstile's timeout for the agent applies.
    /// Meant for tests and fault injection; a real agent answers.
    pub fn abandon(mut self) {
        if let Some(conn) = self.conn.take() {
            conn.abandon(self.cid, self.seq);
        }
    }

    /// Asks turnstile to send nothing more for this request until [`resume`](Reply::resume).
    pub fn pause(&self) {
        if let Some(c) = &self.conn {
            c.send_flow(self.cid, Flow::Pause);
        }
    }

    /// Ends a [`pause`](Reply::pause).
    pub fn resume(&self) {
        if let Some(c) = &self.conn {
            c.send_flow(self.cid, Flow::Resume);
        }
    }

    fn finish(&mut self, verdict: Verdict<'_>, need_more: bool) -> SendOutcome {
        let Some(conn) = self.conn.take() else {
            return SendOutcome::Closed;
        };
        let extras = self.extras.take();
        conn.send_reply(
            self.cid,
            self.seq,
            self.started,
            &verdict,
            extras.as_deref(),
            need_more,
        )
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if self.conn.is_none() {
            return;
        }
        let cid = self.cid;
        let mut extras = self.extras.take().unwrap_or_default();
        extras.tags.push(DROPPED_REPLY_TAG.to_owned());
        self.extras = Some(extras);
        let conn = self.conn.clone();
        if self.finish(Verdict::Allow, false) == SendOutcome::Sent {
            if let Some(conn) = conn {
                inc(&conn.shared.stats.dropped_replies);
                inc(&conn.load.rejected);
                log!(
                    "connection {}: reply for correlation id {cid} dropped unanswered; sent allow tagged {DROPPED_REPLY_TAG}",
                    conn.id
                );
            }
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("key", &self.key())
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

/// A handle to one connection with turnstile, for connection-level messages. Cheap to clone,
/// usable from any thread; sends on a closed connection do nothing.
#[derive(Clone)]
pub struct Connection {
    conn: Arc<Conn>,
}

impl Connection {
    /// The connection's number (as in [`RequestKey::connection`]).
    pub fn id(&self) -> u64 {
        self.conn.id
    }

    /// Asks turnstile to send no new requests on this connection until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.conn.send_flow(0, Flow::Pause);
    }

    /// Ends a [`pause`](Self::pause).
    pub fn resume(&self) {
        self.conn.send_flow(0, Flow::Resume);
    }

    /// Tells turnstile how many body bytes the agent is willing to buffer.
    pub fn update_capacity(&self, bytes: u64) {
        self.conn.send_flow(0, Flow::Capacity(bytes));
    }

    /// Sends a health report now (with this connection's load metrics), rather than at the next
    /// report interval.
    pub fn report_health(&self, health: &Health) {
        self.conn.send_health(health);
    }

    /// Sends a log line to turnstile's log.
    pub fn log(&self, level: LogLevel, message: &str) {
        self.conn.send_control(|m| {
            let mut l = m.init_log();
            l.set_level(level);
            l.set_message(message);
            Ok(())
        });
    }

    /// Asks turnstile to resend the configuration. Returns the request id turnstile's
    /// `configUpdateAck` will carry.
    pub fn request_reload(&self) -> String {
        self.conn
            .send_config_update(|mut u| u.set_request_reload(()))
    }

    /// Tells turnstile the agent must be restarted (a supervised agent is restarted after
    /// `grace_period_ms`). Returns the request id.
    pub fn restart_required(&self, reason: &str, grace_period_ms: u64) -> String {
        self.conn.send_config_update(|u| {
            let mut r = u.init_restart_required();
            r.set_reason(reason);
            r.set_grace_period_ms(grace_period_ms);
        })
    }

    /// Closes the connection (its open requests are cancelled with
    /// [`crate::CancelReason::ConnectionClosed`]).
    pub fn close(&self) {
        self.conn.shutdown_socket();
    }

    /// Writes `bytes` verbatim, bypassing framing and every limit: for fault-injection agents
    /// that must break the protocol on purpose.
    #[cfg(feature = "fault-injection")]
    pub fn write_raw(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.conn.write_raw(bytes)
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id())
            .finish()
    }
}
