//! The listening socket, the accept thread, the report thread (health, metrics, drain
//! deadlines) and the process-wide state they share.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use turnstile_wire::FrameWriter;
use turnstile_wire::turnstile_capnp::{label, metrics_report};

use crate::Agent;
use crate::conn::Conn;
use crate::info::{ConfigError, len32};
use crate::limits::{CONFIG_FILE_BYTES_MAX, CONNECTIONS_MAX, STOP_WAIT_MS_MAX, TICK_MS_MAX};
use crate::log::{log, unix_ms};
use crate::options::ServeOptions;
use crate::reader::run_connection;
use crate::stats::{LATENCY_BUCKETS, Stats, bucket_le_us, inc, sub};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only plain bookkeeping runs under these locks; a poisoned one still holds valid data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by every thread of one server.
pub(crate) struct Shared {
    pub opts: ServeOptions,
    pub agent_id: String,
    pub stats: Stats,
    stop: AtomicBool,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Frame writers of closed connections, for reuse (each one's scratch space lives forever).
    writers: Mutex<Vec<FrameWriter<'static>>>,
    /// The configuration document last applied (the pool's connections all send it).
    last_config: Mutex<Option<Vec<u8>>>,
    next_conn: AtomicU64,
    next_request: AtomicU64,
}

impl Shared {
    pub fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// A fresh `configUpdate` request id.
    pub fn next_request_id(&self) -> String {
        format!("sdk-{}", self.next_request.fetch_add(1, Relaxed) + 1)
    }

    /// Forgets a closed connection and keeps its frame writer.
    pub fn release(&self, id: u64, writer: Option<FrameWriter<'static>>) {
        if lock(&self.conns).remove(&id).is_some() {
            sub(&self.stats.connections, 1);
        }
        if let Some(w) = writer {
            lock(&self.writers).push(w);
        }
    }

    fn snapshot(&self) -> Vec<Arc<Conn>> {
        lock(&self.conns).values().cloned().collect()
    }
}

/// Applies a configuration document unless it is empty (turnstile has none for this agent:
/// the `--config` file or the defaults stay) or the one already applied. `Ok(true)` if applied.
pub(crate) fn apply_config<A: Agent>(
    agent: &A,
    shared: &Shared,
    config: &[u8],
) -> Result<bool, ConfigError> {
    if config.is_empty() {
        return Ok(false);
    }
    let mut last = lock(&shared.last_config);
    if last.as_deref() == Some(config) {
        return Ok(false);
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| agent.configure(config)))
        .unwrap_or_else(|_| Err(ConfigError::from("agent panicked in configure")));
    match r {
        Ok(()) => {
            *last = Some(config.to_vec());
            Ok(true)
        }
        Err(e) => {
            inc(&shared.stats.config_errors);
            Err(e)
        }
    }
}

/// A running agent server: accepts connections on its socket until [`Server::stop`].
pub struct Server {
    shared: Arc<Shared>,
    path: PathBuf,
    accept: Option<JoinHandle<()>>,
    reporter: Option<JoinHandle<()>>,
}

impl Server {
    /// Applies `opts.config_file` (if any), binds the socket (mode 0600, a stale socket file is
    /// removed) and starts serving in background threads.
    pub fn start<A: Agent>(agent: A, opts: ServeOptions) -> io::Result<Server> {
        let agent = Arc::new(agent);
        let info = agent.info();
        let shared = Arc::new(Shared {
            agent_id: info.id.clone(),
            stats: Stats::default(),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            writers: Mutex::new(Vec::new()),
            last_config: Mutex::new(None),
            next_conn: AtomicU64::new(0),
            next_request: AtomicU64::new(0),
            opts,
        });
        if let Some(file) = &shared.opts.config_file {
            let bytes = read_config_file(file)?;
            apply_config(&*agent, &shared, &bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", file.display()),
                )
            })?;
        }
        let path = shared.opts.socket.clone();
        let listener = bind(&path)?;
        log!(
            "agent {} {} listening on {}{}",
            info.id,
            info.version,
            path.display(),
            if shared.opts.busy_poll {
                " (busy-poll)"
            } else {
                ""
            }
        );
        let accept = {
            let (agent, shared) = (agent.clone(), shared.clone());
            thread::Builder::new()
                .name("agent-accept".into())
                .spawn(move || accept_loop(agent, shared, listener))?
        };
        let reporter = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("agent-report".into())
                .spawn(move || report_loop(agent, shared))?
        };
        Ok(Server {
            shared,
            path,
            accept: Some(accept),
            reporter: Some(reporter),
        })
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, lets in-flight replies finish (bounded by
    /// [`STOP_WAIT_MS_MAX`](crate::limits::STOP_WAIT_MS_MAX)), closes every connection and
    /// removes the socket file.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if self.shared.stop.swap(true, Relaxed) {
            return;
        }
        // Wake the accept thread with a connection of our own. If that fails (someone removed
        // the socket file), the thread stays blocked and is left behind rather than joined.
        let woke = UnixStream::connect(&self.path).is_ok();
        if let Some(t) = self.accept.take().filter(|_| woke) {
            let _ = t.join();
        }
        let max = Duration::from_millis(STOP_WAIT_MS_MAX);
        let start = Instant::now();
        while self.shared.stats.in_flight.load(Relaxed) > 0 && start.elapsed() < max {
            thread::sleep(Duration::from_millis(1));
        }
        for c in self.shared.snapshot() {
            c.shutdown_socket();
        }
        while !lock(&self.shared.conns).is_empty() && start.elapsed() < max {
            thread::sleep(Duration::from_millis(1));
        }
        if let Some(t) = self.reporter.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
        log!("agent {} stopped", self.shared.agent_id);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn read_config_file(file: &Path) -> io::Result<Vec<u8>> {
    let len = fs::metadata(file)?.len();
    if len > CONFIG_FILE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: {len} bytes, limit {CONFIG_FILE_BYTES_MAX}",
                file.display()
            ),
        ));
    }
    fs::read(file)
}

/// Binds `path`: removes a stale socket file first (refusing a live one or a non-socket file),
/// then restricts the new socket to its owner.
fn bind(path: &Path) -> io::Result<UnixListener> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: another process is listening there", path.display()),
                ));
            }
            fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn accept_loop<A: Agent>(agent: Arc<A>, shared: Arc<Shared>, listener: UnixListener) {
    for stream in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log!("accept failed: {e}");
                // Out of descriptors and the like: do not spin on it.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if let Err(e) = start_connection(&agent, &shared, stream) {
            log!("connection not started: {e}");
        }
    }
}

fn start_connection<A: Agent>(
    agent: &Arc<A>,
    shared: &Arc<Shared>,
    stream: UnixStream,
) -> io::Result<()> {
    let mut conns = lock(&shared.conns);
    if conns.len() >= CONNECTIONS_MAX {
        return Err(io::Error::other(format!(
            "{CONNECTIONS_MAX} connections already open; refused"
        )));
    }
    let id = shared.next_conn.fetch_add(1, Relaxed) + 1;
    let writer = lock(&shared.writers)
        .pop()
        .unwrap_or_else(FrameWriter::with_static_scratch);
    let conn = Arc::new(Conn::new(id, shared.clone(), stream.try_clone()?, writer));
    conns.insert(id, conn.clone());
    inc(&shared.stats.connections);
    drop(conns);
    let agent = agent.clone();
    let spawned = thread::Builder::new()
        .name(format!("agent-conn-{id}"))
        .spawn({
            let conn = conn.clone();
            move || run_connection(agent, conn, stream)
        });
    if let Err(e) = spawned {
        let (writer, _) = conn.close();
        shared.release(id, writer);
        return Err(e);
    }
    Ok(())
}

/// Sends health reports and metrics on every connection at their intervals, and closes drained
/// connections.
fn report_loop<A: Agent>(agent: Arc<A>, shared: Arc<Shared>) {
    let health_every = Duration::from_millis(u64::from(shared.opts.report_interval_ms));
    let metrics_every = Duration::from_millis(u64::from(shared.opts.metrics_interval_ms));
    let tick = Duration::from_millis(TICK_MS_MAX).min(health_every);
    let (mut next_health, mut next_metrics) = (
        Instant::now() + health_every,
        Instant::now() + metrics_every,
    );
    while !shared.stopping() {
        thread::sleep(tick);
        let now = Instant::now();
        let conns = shared.snapshot();
        for c in &conns {
            let deadline = c.drain_deadline_ms.load(Relaxed);
            if deadline != 0 && (c.in_flight.load(Relaxed) == 0 || unix_ms() >= deadline) {
                log!("connection {}: drained; closing", c.id);
                c.shutdown_socket();
            }
        }
        if now >= next_health {
            next_health = now + health_every;
            let health = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| agent.health()))
                .unwrap_or_default();
            for c in conns.iter().filter(|c| c.handshaken.load(Relaxed)) {
                c.send_health(&health);
            }
        }
        if shared.opts.metrics_interval_ms > 0 && now >= next_metrics {
            next_metrics = now + metrics_every;
            for c in conns.iter().filter(|c| c.handshaken.load(Relaxed)) {
                c.send_control(|m| fill_metrics(m.init_metrics(), &shared));
            }
        }
    }
}

fn set_label(mut l: label::Builder<'_>, name: &str, value: &str) {
    l.set_name(name);
    l.set_value(value);
}

/// The standard agent metrics (names from the Agent Protocol 2.0 design), labelled `agent_id`.
fn fill_metrics(mut m: metrics_report::Builder<'_>, shared: &Shared) -> capnp::Result<()> {
    let s = &shared.stats;
    let id = shared.agent_id.as_str();
    m.set_agent_id(id);
    m.set_timestamp_ms(unix_ms());
    m.set_interval_ms(u64::from(shared.opts.metrics_interval_ms));
    let counters: [(&str, &str, &AtomicU64); 9] = [
        ("agent_requests_total", "", &s.requests),
        ("agent_requests_blocked_total", "block", &s.blocked),
        ("agent_requests_allowed_total", "allow", &s.allowed),
        ("agent_requests_redirected_total", "redirect", &s.redirected),
        ("agent_need_more_total", "", &s.need_more),
        ("agent_requests_cancelled_total", "", &s.cancelled),
        ("agent_replies_dropped_total", "", &s.dropped_replies),
        ("agent_errors_total", "", &s.errors),
        ("agent_config_errors_total", "", &s.config_errors),
    ];
    let mut list = m.reborrow().init_counters(len32(counters.len()));
    for (i, (name, decision, v)) in counters.iter().enumerate() {
        let mut c = list.reborrow().get(len32(i));
        c.set_name(*name);
        c.set_value(v.load(Relaxed));
        let mut labels = c.init_labels(if decision.is_empty() { 1 } else { 2 });
        set_label(labels.reborrow().get(0), "agent_id", id);
        if !decision.is_empty() {
            set_label(labels.get(1), "decision", decision);
        }
    }
    let gauges = [
        ("agent_in_flight_requests", s.in_flight.load(Relaxed)),
        ("agent_connections", s.connections.load(Relaxed)),
    ];
    let mut list = m.reborrow().init_gauges(len32(gauges.len()));
    for (i, (name, v)) in gauges.iter().enumerate() {
        let mut g = list.reborrow().get(len32(i));
        g.set_name(*name);
        g.set_value(*v as f64);
        set_label(g.init_labels(1).get(0), "agent_id", id);
    }
    let lat = s.latency.snapshot(false);
    let mut h = m.init_histograms(1).get(0);
    h.set_name("agent_requests_duration_seconds");
    set_label(h.reborrow().init_labels(1).get(0), "agent_id", id);
    h.set_sum(lat.sum_us as f64 / 1e6);
    h.set_count(lat.count);
    let mut buckets = h.init_buckets(len32(LATENCY_BUCKETS));
    let mut cumulative = 0;
    for (i, n) in lat.buckets.iter().enumerate() {
        cumulative += n;
        let mut b = buckets.reborrow().get(len32(i));
        b.set_le(bucket_le_us(i) / 1e6);
        b.set_count(cumulative);
    }
    Ok(())
}
