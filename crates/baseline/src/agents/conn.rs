//! Connections to one agent, the conventional way: a tokio `UnixStream` per connection, a writer
//! task fed by a bounded channel, a reader task that parses JSON frames and completes the
//! waiting call through a oneshot, a `Mutex<HashMap>` of calls in flight, and a pool that
//! reconnects in the background.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use turnstile_wire::turnstile_capnp::{
    Encoding, EventType, agent_to_proxy, handshake_response, proxy_to_agent,
};
use turnstile_wire::{AGENT_PROTOCOL_VERSION, FrameKind, Message, limits, peek_header};

use super::json;

use crate::limits::{
    AGENT_HANDSHAKE_TIMEOUT_MS, AGENT_RECONNECT_MS_MAX, AGENT_RECONNECT_MS_MIN,
    AGENT_WRITE_BATCH_BYTES_MAX, AGENT_WRITE_QUEUE_FRAMES_MAX,
};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(AGENT_HANDSHAKE_TIMEOUT_MS);
const RECONNECT_MIN: Duration = Duration::from_millis(AGENT_RECONNECT_MS_MIN);
const RECONNECT_MAX: Duration = Duration::from_millis(AGENT_RECONNECT_MS_MAX);

/// What the agent declared at the handshake and the baseline acts on.
#[derive(Debug, Default, Clone)]
pub struct Caps {
    /// A handshake completed at least once (before that, nothing is known).
    pub known: bool,
    /// Subscribes to request headers.
    pub request_headers: bool,
    /// Subscribes to request bodies.
    pub request_body: bool,
    /// Largest body it inspects.
    pub max_body_bytes: u64,
    /// Interest: path prefixes (empty = all).
    pub path_prefixes: Vec<String>,
    /// Interest: methods, upper case (empty = all).
    pub methods: Vec<String>,
    /// Interest: header names that must be present, lower case.
    pub required_headers: Vec<Vec<u8>>,
}

/// Why a call failed (before the fail mode applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// No connection, or it broke.
    Transport,
    /// The agent sent something unreadable.
    Garbage,
}

/// A call's waiter: gets the final response (or the failure).
type Waiter = oneshot::Sender<Result<json::AgentResponse, CallError>>;

struct Pending {
    waiter: Waiter,
    /// Events sent that have not been answered yet.
    unanswered: u32,
}

/// One connection after a successful handshake.
pub struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    calls: Mutex<HashMap<u64, Pending>>,
    next_cid: AtomicU64,
    alive: AtomicBool,
    /// Calls in flight (for least-loaded picking).
    in_flight: AtomicUsize,
}

impl Conn {
    /// Whether the connection still works.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Starts a call: registers it and queues its events (each serialized to JSON and framed).
    /// Returns the correlation id and the receiver of the final answer.
    pub fn start_call(
        &self,
        headers: json::Event<'_>,
        body: Option<json::Event<'_>>,
    ) -> Result<
        (
            u64,
            oneshot::Receiver<Result<json::AgentResponse, CallError>>,
        ),
        CallError,
    > {
        let cid = self.next_cid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.calls.lock().map_err(|_| CallError::Transport)?.insert(
            cid,
            Pending {
                waiter: tx,
                unanswered: 1 + u32::from(body.is_some()),
            },
        );
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        for event in std::iter::once(headers).chain(body) {
            let Ok(frame) = encode(cid, event) else {
                self.forget(cid);
                return Err(CallError::Transport);
            };
            if self.tx.try_send(frame).is_err() {
                self.forget(cid);
                return Err(CallError::Transport);
            }
        }
        Ok((cid, rx))
    }

    /// Gives up on a call (timed out or moot) and tells the agent.
    pub fn cancel(&self, cid: u64, reason: json::CancelReason) {
        if self.forget(cid) {
            let cancel = json::Event::Cancel(json::Cancel {
                reason,
                timestamp_ms: super::unix_ms(),
            });
            if let Ok(frame) = encode(cid, cancel) {
                let _ = self.tx.try_send(frame);
            }
        }
    }

    /// Removes a call; returns whether it was still open.
    fn forget(&self, cid: u64) -> bool {
        let removed = self
            .calls
            .lock()
            .map(|mut c| c.remove(&cid).is_some())
            .unwrap_or(false);
        if removed {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    fn fail_all(&self, why: CallError) {
        self.alive.store(false, Ordering::Relaxed);
        let calls: Vec<Pending> = match self.calls.lock() {
            Ok(mut c) => c.drain().map(|(_, p)| p).collect(),
            Err(_) => Vec::new(),
        };
        self.in_flight.store(0, Ordering::Relaxed);
        for p in calls {
            let _ = p.waiter.send(Err(why));
        }
    }

    /// One frame from the agent.
    fn on_frame(&self, kind: FrameKind, payload: &[u8]) -> Result<Option<json::Health>, String> {
        if kind != FrameKind::AgentToProxyJson {
            return Err(format!(
                "expected a JSON frame (kind 6) after the handshake, got {kind:?}"
            ));
        }
        let msg: json::AgentToProxy =
            serde_json::from_slice(payload).map_err(|e| format!("bad JSON message: {e}"))?;
        if let Some(response) = msg.response {
            let cid = msg.correlation_id;
            let mut calls = self.calls.lock().map_err(|_| "poisoned".to_string())?;
            let Some(p) = calls.get_mut(&cid) else {
                // A late answer to a cancelled or timed-out call.
                return Ok(None);
            };
            p.unanswered = p.unanswered.saturating_sub(1);
            if response.need_more {
                if p.unanswered == 0 {
                    // Everything we had is sent: tell the agent the body is over.
                    p.unanswered = 1;
                    drop(calls);
                    let end = json::Event::RequestBodyChunk(json::BodyChunk {
                        chunk_index: 0,
                        data: json::DataRef(b""),
                        is_last: true,
                        total_bytes: 0,
                        bytes_transferred: 0,
                    });
                    if let Ok(frame) = encode(cid, end) {
                        let _ = self.tx.try_send(frame);
                    }
                }
                return Ok(None);
            }
            if let Some(p) = calls.remove(&cid) {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                let _ = p.waiter.send(Ok(response));
            }
            return Ok(None);
        }
        Ok(msg.health)
    }
}

/// Serializes one event into a new framed buffer (kind 5).
fn encode(cid: u64, event: json::Event<'_>) -> Result<Vec<u8>, serde_json::Error> {
    let msg = json::ProxyToAgent {
        correlation_id: cid,
        event,
    };
    let mut out = vec![0u8; 5];
    serde_json::to_writer(&mut out, &msg)?;
    let len = (out.len() - 5) as u32;
    if len > limits::FRAME_BYTES_MAX {
        return Err(serde::ser::Error::custom(format!(
            "message of {len} bytes is over the frame limit"
        )));
    }
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4] = FrameKind::ProxyToAgentJson as u8;
    Ok(out)
}

/// Reads one frame: header, then the payload into `buf`.
async fn read_frame(
    r: &mut tokio::net::unix::OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> Result<FrameKind, String> {
    let mut header = [0u8; 5];
    r.read_exact(&mut header)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let h = peek_header(&header)
        .map_err(|e| e.to_string())?
        .ok_or("short frame header")?;
    buf.clear();
    buf.resize(h.payload_len as usize, 0);
    r.read_exact(buf).await.map_err(|e| format!("read: {e}"))?;
    Ok(h.kind)
}

/// Connects and handshakes (Cap'n Proto, offering JSON only), pushes the configuration, and
/// starts the reader and writer tasks.
async fn connect(
    socket: &PathBuf,
    agent_id: &str,
    config: &[u8],
    health_bad: Arc<AtomicBool>,
) -> Result<(Arc<Conn>, Caps), String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect {}: {e}", socket.display()))?;
    let (mut rd, mut wr) = stream.into_split();
    // Handshake request (always Cap'n Proto).
    let mut scratch = vec![0u8; 4096];
    let mut writer = turnstile_wire::FrameWriter::new(&mut scratch);
    let mut hello = Vec::new();
    writer
        .write::<proxy_to_agent::Owned, _>(&mut hello, |mut m| {
            m.set_correlation_id(0);
            let mut h = m.init_handshake();
            h.reborrow()
                .init_supported_versions(1)
                .set(0, AGENT_PROTOCOL_VERSION);
            h.set_proxy_id("turnstile-baseline");
            h.set_proxy_version(env!("CARGO_PKG_VERSION"));
            h.reborrow().init_encodings(1).set(0, Encoding::Json);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    wr.write_all(&hello)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(4096);
    let kind = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut rd, &mut buf))
        .await
        .map_err(|_| "no handshake answer in time".to_string())??;
    if kind != FrameKind::AgentToProxy {
        return Err(format!("handshake answer of kind {kind:?}"));
    }
    let caps = read_caps(&buf)?;
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(AGENT_WRITE_QUEUE_FRAMES_MAX);
    let conn = Arc::new(Conn {
        tx,
        calls: Mutex::new(HashMap::new()),
        next_cid: AtomicU64::new(1),
        alive: AtomicBool::new(true),
        in_flight: AtomicUsize::new(0),
    });
    // Writer task.
    let w = conn.clone();
    tokio::spawn(async move {
        // Frames queued while a write was in progress go out together in one write.
        let mut batch = Vec::with_capacity(16 * 1024);
        while let Some(frame) = rx.recv().await {
            batch.clear();
            batch.extend_from_slice(&frame);
            while batch.len() < AGENT_WRITE_BATCH_BYTES_MAX {
                match rx.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if wr.write_all(&batch).await.is_err() {
                w.fail_all(CallError::Transport);
                return;
            }
        }
    });
    // Configuration.
    let configure = json::Event::Configure(json::Configure {
        agent_id,
        config: json::DataRef(config),
        generation: 1,
    });
    let frame = encode(0, configure).map_err(|e| e.to_string())?;
    conn.tx
        .send(frame)
        .await
        .map_err(|_| "connection closed".to_string())?;
    // Reader task.
    let r = conn.clone();
    let id = agent_id.to_owned();
    tokio::spawn(async move {
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            let result = match read_frame(&mut rd, &mut buf).await {
                Ok(kind) => r.on_frame(kind, &buf),
                Err(e) => Err(e),
            };
            match result {
                Ok(Some(h)) => {
                    health_bad.store(
                        h.unhealthy.is_some() || h.draining.is_some(),
                        Ordering::Relaxed,
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("turnstile-baseline: agent {id}: closing connection: {e}");
                    r.fail_all(CallError::Garbage);
                    return;
                }
            }
        }
    });
    Ok((conn, caps))
}

fn read_caps(payload: &[u8]) -> Result<Caps, String> {
    let msg = Message::parse(FrameKind::AgentToProxy, payload).map_err(|e| e.to_string())?;
    let root = msg
        .root::<agent_to_proxy::Owned>()
        .map_err(|e| e.to_string())?;
    let agent_to_proxy::Handshake(h) = root.which().map_err(|e| e.to_string())? else {
        return Err("the agent's first message is not a handshake".into());
    };
    let h = h.map_err(|e| e.to_string())?;
    let c = match h.which().map_err(|e| e.to_string())? {
        handshake_response::Accepted(c) => c.map_err(|e| e.to_string())?,
        handshake_response::Rejected(why) => {
            return Err(format!(
                "the agent refused the handshake: {}",
                why.ok()
                    .and_then(|t| t.to_str().ok())
                    .unwrap_or("(no reason)")
            ));
        }
    };
    let e = |e: capnp::Error| e.to_string();
    if c.get_encoding().map_err(|e| e.to_string())? != Encoding::Json {
        return Err("the agent does not speak JSON".into());
    }
    let mut caps = Caps {
        known: true,
        ..Caps::default()
    };
    for ev in c.get_supported_events().map_err(e)?.iter().flatten() {
        match ev {
            EventType::RequestHeaders => caps.request_headers = true,
            EventType::RequestBody => caps.request_body = true,
            _ => {}
        }
    }
    caps.max_body_bytes = c.get_limits().map_err(e)?.get_max_body_bytes();
    let i = c.get_interest().map_err(e)?;
    for p in i.get_path_prefixes().map_err(e)?.iter() {
        caps.path_prefixes
            .push(p.map_err(e)?.to_string().map_err(|e| e.to_string())?);
    }
    for m in i.get_methods().map_err(e)?.iter() {
        caps.methods.push(
            m.map_err(e)?
                .to_string()
                .map_err(|e| e.to_string())?
                .to_ascii_uppercase(),
        );
    }
    for h in i.get_required_headers().map_err(e)?.iter() {
        caps.required_headers
            .push(h.map_err(e)?.to_ascii_lowercase());
    }
    Ok(caps)
}

/// The connections to one agent, reconnected in the background.
pub struct Pool {
    /// The agent's id.
    pub id: String,
    slots: Vec<RwLock<Option<Arc<Conn>>>>,
    caps: RwLock<Arc<Caps>>,
    next: AtomicUsize,
    /// Set by the agent's last health report (unhealthy or draining).
    pub health_bad: Arc<AtomicBool>,
}

impl Pool {
    /// A pool of `size` connections to `socket`; `connect_all` opens them.
    pub fn new(id: &str, size: usize) -> Arc<Pool> {
        Arc::new(Pool {
            id: id.to_owned(),
            slots: (0..size.max(1)).map(|_| RwLock::new(None)).collect(),
            caps: RwLock::new(Arc::new(Caps::default())),
            next: AtomicUsize::new(0),
            health_bad: Arc::new(AtomicBool::new(false)),
        })
    }

    /// What the agent declared (at the latest handshake).
    pub fn caps(&self) -> Arc<Caps> {
        self.caps.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// A live connection, round robin.
    pub fn pick(&self) -> Option<Arc<Conn>> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(slot) = self.slots[(start + i) % n].read()
                && let Some(c) = slot.as_ref()
                && c.is_alive()
            {
                return Some(c.clone());
            }
        }
        None
    }

    /// Keeps every slot connected: connects now (waiting up to `first_wait` for the first
    /// round), then watches and reconnects with exponential backoff, forever.
    pub async fn run(
        self: Arc<Self>,
        socket: PathBuf,
        config: Vec<u8>,
        first_wait: Duration,
        ready: oneshot::Sender<()>,
    ) {
        let deadline = tokio::time::Instant::now() + first_wait;
        let mut ready = Some(ready);
        let mut backoff = RECONNECT_MIN;
        loop {
            let mut all = true;
            for slot in &self.slots {
                let alive = slot
                    .read()
                    .map(|s| s.as_ref().is_some_and(|c| c.is_alive()))
                    .unwrap_or(false);
                if alive {
                    continue;
                }
                match connect(&socket, &self.id, &config, self.health_bad.clone()).await {
                    Ok((conn, caps)) => {
                        if let Ok(mut c) = self.caps.write() {
                            *c = Arc::new(caps);
                        }
                        if let Ok(mut s) = slot.write() {
                            *s = Some(conn);
                        }
                        backoff = RECONNECT_MIN;
                    }
                    Err(e) => {
                        all = false;
                        if tokio::time::Instant::now() >= deadline {
                            eprintln!("turnstile-baseline: agent {}: {e}", self.id);
                        }
                    }
                }
            }
            if all || tokio::time::Instant::now() >= deadline {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            let pause = if all { RECONNECT_MIN } else { backoff };
            tokio::time::sleep(pause).await;
            if !all {
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
    }
}
