//! `--mode idle-streams`: the server's memory per open, idle request stream.
//!
//! 1. The server's `VmRSS` is read (`--server-pid` is required).
//! 2. `ceil(streams / (streams_per_connection - 1))` connections are made, each from its own UDP
//!    socket, and each serves one echo (so per-connection and first-request memory is in place);
//!    the RSS is read once it stops growing: the *connected* figure.
//! 3. The streams are opened, spread evenly over the connections, leaving one stream of each
//!    connection's allowance (`--streams-per-connection`, the server's
//!    `quic.max_concurrent_bidi_streams`) free. On each, the 5-byte header of a request frame
//!    announcing [`IDLE_FRAME_PAYLOAD_BYTES`] bytes is written and nothing more, so the server
//!    has to hold the stream and what it read of it, waiting for the rest. A server that grants
//!    fewer streams than expected shows up as a timeout of `open_bi`, reported as such.
//! 4. One echo per connection on the free stream: its answer means the server has read the
//!    connection's earlier packets. Then the RSS is read again once it stops growing (sampled
//!    every [`SETTLE_INTERVAL_MS`], settled when [`SETTLE_STABLE_SAMPLES`] samples lie within
//!    [`SETTLE_TOLERANCE_BYTES`], at most [`SETTLE_TIMEOUT_MS`]).
//! 5. Every idle stream is checked to be still open and unanswered, then the connections are
//!    closed (code 0) and drained, bounded.
//!
//! `bytes_per_idle_stream` = (RSS with the streams − RSS connected) ÷ streams. Memory a QUIC
//! stack reserves per connection for its whole stream allowance (quinn-proto keeps a map entry
//! for every stream the peer may open) lands in the connected figure; it is reported separately
//! as `bytes_per_connection`, and `bytes_per_idle_stream_all_in` divides everything above the
//! first reading by the streams.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use turnstile_wire::{FrameHeader, FrameKind};

use crate::cpu;
use crate::limits::{
    HANDSHAKE_TIMEOUT_MS, IDLE_CONNECTIONS_MAX, IDLE_FRAME_PAYLOAD_BYTES, IDLE_STREAMS_MAX,
    SETTLE_INTERVAL_MS, SETTLE_STABLE_SAMPLES, SETTLE_TIMEOUT_MS, SETTLE_TOLERANCE_BYTES,
    STREAM_OPEN_TIMEOUT_MS, STREAMS_PER_CONNECTION_MAX, STREAMS_PER_CONNECTION_MIN,
};
use crate::probe::{self, Echo, Window};
use crate::report::{Latency, RunReport};
use crate::run::Plan;

/// Figures of a `--mode idle-streams` run (the `idle_streams` member of the run record).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleStreamFigures {
    /// Idle streams asked for.
    pub streams: usize,
    /// Idle streams open (partial frame written, not answered, not reset) when the RSS was read.
    pub opened: u64,
    /// Connections they were spread over.
    pub connections: usize,
    /// The server's stream allowance per connection assumed (`--streams-per-connection`).
    pub streams_per_connection: usize,
    /// Server `VmRSS` before any connection, bytes.
    pub rss_before_connections_bytes: u64,
    /// Server `VmRSS` with the connections established and idle, bytes.
    pub rss_connected_bytes: u64,
    /// Server `VmRSS` with the idle streams open, bytes.
    pub rss_with_streams_bytes: u64,
    /// `rss_with_streams_bytes − rss_connected_bytes` (may be negative if the server returned
    /// memory in between).
    pub rss_added_bytes: i64,
    /// `rss_added_bytes ÷ opened`.
    pub bytes_per_idle_stream: f64,
    /// `(rss_with_streams_bytes − rss_before_connections_bytes) ÷ opened`: connections
    /// included.
    pub bytes_per_idle_stream_all_in: f64,
    /// `(rss_connected_bytes − rss_before_connections_bytes) ÷ connections`.
    pub bytes_per_connection: f64,
    /// Time to open every stream and write its partial frame, milliseconds.
    pub open_ms: f64,
    /// Whether the RSS stopped growing before [`SETTLE_TIMEOUT_MS`] (both readings).
    pub settled: bool,
    /// Time the readings with streams took to settle, milliseconds.
    pub settle_ms: f64,
}

/// Connections needed for `streams` idle streams when each connection may have `per_connection`
/// open (one of them kept for the probe).
pub fn connections_for(streams: usize, per_connection: usize) -> usize {
    streams.div_ceil(per_connection.saturating_sub(1).max(1))
}

/// How many of `streams` go to connection `i` of `connections` (evenly, the first ones one more).
pub fn share(streams: usize, connections: usize, i: usize) -> usize {
    streams / connections + usize::from(i < streams % connections)
}

/// Runs `--mode idle-streams`.
pub fn run(plan: &Plan, streams: usize, per_connection: usize) -> Result<RunReport, String> {
    if streams == 0 || streams > IDLE_STREAMS_MAX {
        return Err(format!(
            "--streams must be between 1 and {IDLE_STREAMS_MAX}"
        ));
    }
    if !(STREAMS_PER_CONNECTION_MIN..=STREAMS_PER_CONNECTION_MAX).contains(&per_connection) {
        return Err(format!(
            "--streams-per-connection must be between {STREAMS_PER_CONNECTION_MIN} and {STREAMS_PER_CONNECTION_MAX}"
        ));
    }
    let connections = connections_for(streams, per_connection);
    if connections > IDLE_CONNECTIONS_MAX {
        return Err(format!(
            "{streams} streams at {} per connection need {connections} connections, more than {IDLE_CONNECTIONS_MAX}: raise --streams-per-connection (and the server's quic.max_concurrent_bidi_streams)",
            per_connection - 1
        ));
    }
    let pid = plan
        .server_pid
        .ok_or("--mode idle-streams needs --server-pid: it reads the server's VmRSS")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(
        &runtime,
        run_local(plan, pid, streams, per_connection, connections),
    )
}

/// Reads the server's RSS until it stops growing (bounded): (last reading, settled, time taken).
async fn settle(pid: u32) -> Result<(u64, bool, Duration), String> {
    let started = Instant::now();
    let mut samples: VecDeque<u64> = VecDeque::with_capacity(SETTLE_STABLE_SAMPLES);
    loop {
        let rss =
            cpu::rss_bytes(pid).map_err(|e| format!("cannot read the server's VmRSS: {e}"))?;
        if samples.len() == SETTLE_STABLE_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(rss);
        let lo = samples.iter().copied().min().unwrap_or(rss);
        let hi = samples.iter().copied().max().unwrap_or(rss);
        if samples.len() == SETTLE_STABLE_SAMPLES && hi - lo <= SETTLE_TOLERANCE_BYTES {
            return Ok((rss, true, started.elapsed()));
        }
        if started.elapsed() >= Duration::from_millis(SETTLE_TIMEOUT_MS) {
            return Ok((rss, false, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(SETTLE_INTERVAL_MS)).await;
    }
}

/// The request bytes each idle stream carries: a frame header whose payload never comes.
pub fn partial_frame() -> [u8; turnstile_wire::limits::FRAME_HEADER_BYTES] {
    FrameHeader {
        payload_len: IDLE_FRAME_PAYLOAD_BYTES,
        kind: FrameKind::Request,
    }
    .to_bytes()
}

async fn open_idle(
    conn: &quinn::Connection,
    bytes: &[u8],
) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
    let timeout = Duration::from_millis(STREAM_OPEN_TIMEOUT_MS);
    let (mut send, recv) = tokio::time::timeout(timeout, conn.open_bi())
        .await
        .map_err(|_| {
            format!(
                "the server granted no further stream within {STREAM_OPEN_TIMEOUT_MS} ms: its per-connection stream limit (quic.max_concurrent_bidi_streams) is below --streams-per-connection"
            )
        })?
        .map_err(|e| format!("open stream: {e}"))?;
    tokio::time::timeout(timeout, send.write_all(bytes))
        .await
        .map_err(|_| {
            format!("writing an idle stream's bytes took over {STREAM_OPEN_TIMEOUT_MS} ms")
        })?
        .map_err(|e| format!("write: {e}"))?;
    Ok((send, recv))
}

/// Whether `recv` has nothing to read yet (no data, no FIN, no reset): the stream is idle.
async fn still_idle(recv: &mut quinn::RecvStream) -> bool {
    let mut byte = [0u8; 1];
    let mut read = std::pin::pin!(recv.read(&mut byte));
    // One poll: pending means nothing arrived (a zero `timeout` would wait for the timer's next
    // tick, a millisecond per stream).
    std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx).is_pending())).await
}

async fn run_local(
    plan: &Plan,
    pid: u32,
    streams: usize,
    per_connection: usize,
    connections: usize,
) -> Result<RunReport, String> {
    let cert = rustls::pki_types::CertificateDer::from_pem_file(&plan.cert)
        .map_err(|e| format!("cannot read the certificate {}: {e}", plan.cert.display()))?;
    let crypto = turnstile_config::dev_client_crypto(&cert).map_err(|e| e.to_string())?;
    let config = probe::quic_client_config(crypto)?;
    let echo = Echo::new(0, plan.payload_bytes)?;
    let mut figures = IdleStreamFigures {
        streams,
        connections,
        streams_per_connection: per_connection,
        ..IdleStreamFigures::default()
    };
    figures.rss_before_connections_bytes =
        cpu::rss_bytes(pid).map_err(|e| format!("cannot read the server's VmRSS: {e}"))?;

    let mut endpoints = Vec::with_capacity(connections);
    let mut conns = Vec::with_capacity(connections);
    let result = async {
        for i in 0..connections {
            let endpoint = probe::endpoint(plan.addr)?;
            let connecting = endpoint
                .connect_with(config.clone(), plan.addr, &plan.server_name)
                .map_err(|e| format!("cannot connect to {}: {e}", plan.addr))?;
            endpoints.push(endpoint);
            let conn =
                tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), connecting)
                    .await
                    .map_err(|_| format!("connection {i}: handshake timed out"))?
                    .map_err(|e| format!("connection {i}: {e}"))?;
            conns.push(conn);
        }
        for (i, c) in conns.iter().enumerate() {
            echo.call(c)
                .await
                .map_err(|e| format!("connection {i}: first echo: {e}"))?;
        }
        Ok::<(), String>(())
    }
    .await;
    if let Err(e) = result {
        probe::close_all(&conns, &endpoints).await;
        return Err(e);
    }
    let (rss, settled_connected, _) = settle(pid).await?;
    figures.rss_connected_bytes = rss;

    let bytes = partial_frame();
    let mut idle: Vec<(quinn::SendStream, quinn::RecvStream)> = Vec::with_capacity(streams);
    let window = Window::start(Some(pid))?;
    let opened_at = Instant::now();
    let result = async {
        for (i, c) in conns.iter().enumerate() {
            for _ in 0..share(streams, connections, i) {
                idle.push(
                    open_idle(c, &bytes)
                        .await
                        .map_err(|e| format!("connection {i}: {e}"))?,
                );
            }
        }
        figures.open_ms = opened_at.elapsed().as_secs_f64() * 1e3;
        for (i, c) in conns.iter().enumerate() {
            echo.call(c)
                .await
                .map_err(|e| format!("connection {i}: echo after the idle streams: {e}"))?;
        }
        Ok::<(), String>(())
    }
    .await;
    if let Err(e) = result {
        probe::close_all(&conns, &endpoints).await;
        return Err(e);
    }
    let delta = window.finish()?;
    let (rss, settled_streams, settle_time) = settle(pid).await?;
    figures.rss_with_streams_bytes = rss;
    figures.settled = settled_connected && settled_streams;
    figures.settle_ms = settle_time.as_secs_f64() * 1e3;

    let mut not_idle = 0u64;
    for (_, recv) in idle.iter_mut() {
        if !still_idle(recv).await {
            not_idle += 1;
        }
    }
    let lost = conns.iter().filter(|c| c.close_reason().is_some()).count();
    probe::close_all(&conns, &endpoints).await;
    drop(idle);

    figures.opened = (streams as u64).saturating_sub(not_idle);
    let opened = figures.opened.max(1) as f64;
    figures.rss_added_bytes =
        figures.rss_with_streams_bytes as i64 - figures.rss_connected_bytes as i64;
    figures.bytes_per_idle_stream = figures.rss_added_bytes as f64 / opened;
    figures.bytes_per_idle_stream_all_in = (figures.rss_with_streams_bytes as f64
        - figures.rss_before_connections_bytes as f64)
        / opened;
    figures.bytes_per_connection = (figures.rss_connected_bytes as f64
        - figures.rss_before_connections_bytes as f64)
        / connections as f64;

    let mut first_error = None;
    if lost > 0 {
        first_error = Some(format!("{lost} connection(s) were closed before the end"));
    } else if not_idle > 0 {
        first_error = Some(format!(
            "{not_idle} idle stream(s) were answered, finished or reset by the server before the RSS was read"
        ));
    } else if !figures.settled {
        first_error = Some(format!(
            "the server's RSS did not settle within {SETTLE_TIMEOUT_MS} ms; the last reading is used"
        ));
    }
    let errors = not_idle + lost as u64;
    let mut report = RunReport::new(
        plan,
        connections,
        delta.elapsed,
        figures.opened,
        errors,
        figures.opened,
        errors,
        first_error,
        Latency::default(),
        delta.server,
        delta.own,
        delta.threads,
        delta.ticks_per_sec,
        Some(figures.rss_with_streams_bytes),
    );
    eprintln!(
        "  idle-streams: {} streams over {} connections; server RSS {} → {} → {} bytes; {:.0} bytes per idle stream ({:.0} with connections), {:.0} bytes per connection{}",
        figures.opened,
        connections,
        figures.rss_before_connections_bytes,
        figures.rss_connected_bytes,
        figures.rss_with_streams_bytes,
        figures.bytes_per_idle_stream,
        figures.bytes_per_idle_stream_all_in,
        figures.bytes_per_connection,
        if figures.settled {
            ""
        } else {
            " (not settled)"
        },
    );
    report.idle_streams = Some(figures);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_spread_with_one_slot_left_per_connection() {
        assert_eq!(connections_for(10_000, 1024), 10);
        assert_eq!(connections_for(100_000, 1024), 98);
        assert_eq!(connections_for(1023, 1024), 1);
        assert_eq!(connections_for(1024, 1024), 2);
        assert_eq!(connections_for(3, 2), 3);
        let total: usize = (0..98).map(|i| share(100_000, 98, i)).sum();
        assert_eq!(total, 100_000);
        assert!((0..98).all(|i| share(100_000, 98, i) <= 1023));
    }

    #[test]
    fn the_partial_frame_announces_a_request_that_never_completes() {
        let bytes = partial_frame();
        match turnstile_wire::split_frame(&bytes) {
            Ok(None) => {}
            other => panic!("a complete or bad frame: {other:?}"),
        }
        let header = turnstile_wire::peek_header(&bytes)
            .expect("valid header")
            .expect("5 bytes");
        assert_eq!(header.kind, FrameKind::Request);
        assert_eq!(header.payload_len, IDLE_FRAME_PAYLOAD_BYTES);
    }
}
