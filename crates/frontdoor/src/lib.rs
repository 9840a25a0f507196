//! The QUIC front door of one shard, sans-IO: a quinn-proto `Endpoint` and its connections,
//! connection ids that name their shard, and the client protocol on bidirectional streams (one
//! framed `Request` in, one framed `Response` out).
//!
//! It owns: accepting or refusing connections (limits, Retry above a rate of new Initials,
//! draining), reading request frames within the request size limit, refusing non-replay-safe
//! requests in 0-RTT, writing responses, and cancelling requests whose stream or connection goes
//! away. It must not do I/O, read clocks or spawn threads: datagrams and time come in through
//! `handle_*`, datagrams to send and the next deadline go out through `poll_*`.
//!
//! Data flow: `handle_datagram` → quinn-proto → stream readable → frames split in place →
//! [`RequestHandler::on_request`] → response frame → stream → `poll_transmit`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cid;
pub mod codes;
mod handler;
pub mod limits;
mod stream;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ConnectionHandle, DatagramEvent, Dir, EcnCodepoint, Endpoint, EndpointConfig, Event, Incoming,
    ReadError, ServerConfig, StreamEvent, StreamId, Transmit,
};
use turnstile_wire::turnstile_capnp::{ErrorCode, request};
use turnstile_wire::{FrameKind, FrameWriter, Message, WireError, split_frame};

pub use cid::{ShardCidGenerator, Steer, steer};
use handler::write_error;
pub use handler::{
    BuiltinHandler, Reply, RequestHandler, RequestId, RequestInfo, ResponseSink, builtin_answer,
    replay_safe,
};
use limits::*;
use stream::{BufferPool, Phase, StreamState};

/// Settings of one shard's front door.
#[derive(Debug, Clone)]
pub struct FrontDoorConfig {
    /// This shard's index (byte 0 of every connection id it issues).
    pub shard: u8,
    /// Number of shards in the process.
    pub shards: usize,
    /// Connections beyond this are refused with CONNECTION_REFUSED.
    pub max_connections: usize,
    /// Largest request (all bytes of one stream) accepted.
    pub max_request_bytes: usize,
    /// Above this many new Initials per second, clients must validate their address (Retry).
    pub retry_above_initials_per_sec: u32,
    /// Concurrent bidirectional streams per connection (as set in the transport config);
    /// announced in `HelloAck`.
    pub max_streams: u32,
}

/// What the front door itself reports in `HelloAck` and `StatusEvent`.
struct Snapshot {
    shard: u8,
    draining: bool,
    max_request_bytes: usize,
    max_streams: u32,
    connections: usize,
    streams: usize,
    requests: u64,
}

/// Counters of one front door.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrontDoorStats {
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections refused (limit or draining).
    pub connections_refused: u64,
    /// Retry packets sent.
    pub retries_sent: u64,
    /// Requests handed to the handler.
    pub requests: u64,
    /// Requests answered with an error by the front door itself (size, frame, 0-RTT).
    pub requests_rejected: u64,
    /// Pending requests cancelled.
    pub requests_cancelled: u64,
    /// Endpoint datagrams dropped because their queue was full.
    pub endpoint_transmits_dropped: u64,
}

struct ConnState {
    conn: quinn_proto::Connection,
    serial: u64,
    streams: HashMap<StreamId, StreamState>,
    dirty: bool,
    timer: Option<Instant>,
}

/// One shard's QUIC endpoint and client-protocol streams. See the crate docs.
pub struct FrontDoor {
    cfg: FrontDoorConfig,
    endpoint: Endpoint,
    server_config: Arc<ServerConfig>,
    conns: Vec<Option<ConnState>>,
    open_conns: usize,
    next_serial: u64,
    dirty: VecDeque<ConnectionHandle>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    endpoint_out: VecDeque<(Transmit, Vec<u8>)>,
    spare_bufs: Vec<Vec<u8>>,
    pool: BufferPool,
    writer: FrameWriter<'static>,
    accepting: bool,
    initials_window_start: Option<Instant>,
    initials_in_window: u32,
    stats: FrontDoorStats,
}

impl FrontDoor {
    /// A front door for `cfg.shard`. `reset_key` must be the same for every shard of a process.
    pub fn new(
        cfg: FrontDoorConfig,
        server_config: Arc<ServerConfig>,
        reset_key: Arc<dyn quinn_proto::crypto::HmacKey>,
    ) -> Self {
        assert!(
            cfg.shards >= 1 && cfg.shards <= SHARDS_MAX,
            "shard count out of range"
        );
        assert!(
            (cfg.shard as usize) < cfg.shards,
            "shard index out of range"
        );
        let shard = cfg.shard;
        let mut endpoint_config = EndpointConfig::new(reset_key);
        endpoint_config.cid_generator(move || Box::new(ShardCidGenerator::new(shard)));
        let endpoint = Endpoint::new(
            Arc::new(endpoint_config),
            Some(server_config.clone()),
            true,
            None,
        );
        FrontDoor {
            cfg,
            endpoint,
            server_config,
            conns: Vec::new(),
            open_conns: 0,
            next_serial: 1,
            dirty: VecDeque::new(),
            timers: BinaryHeap::new(),
            endpoint_out: VecDeque::new(),
            spare_bufs: Vec::new(),
            pool: BufferPool::new(),
            writer: FrameWriter::with_static_scratch(),
            accepting: true,
            initials_window_start: None,
            initials_in_window: 0,
            stats: FrontDoorStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> FrontDoorStats {
        self.stats
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.open_conns
    }

    /// Requests whose streams are still open (reading, pending or responding).
    pub fn streams_in_flight(&self) -> usize {
        self.conns.iter().flatten().map(|c| c.streams.len()).sum()
    }

    /// Where `datagram` must be processed (see [`steer`]).
    pub fn steer(&self, datagram: &[u8]) -> Steer {
        steer(datagram, self.cfg.shard, self.cfg.shards)
    }

    /// Feeds one received datagram (one GRO segment) to the endpoint.
    pub fn handle_datagram<H: RequestHandler>(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
        handler: &mut H,
    ) {
        let mut buf = self.spare_bufs.pop().unwrap_or_default();
        buf.clear();
        match self
            .endpoint
            .handle(now, remote, local_ip, ecn, data, &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(c) = self.conns.get_mut(ch.0).and_then(Option::as_mut) {
                    c.conn.handle_event(event);
                    self.drive(now, ch, handler);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.on_incoming(now, incoming, &mut buf, handler)
            }
            Some(DatagramEvent::Response(transmit)) => {
                self.queue_endpoint_transmit(transmit, buf);
                return;
            }
            None => {}
        }
        self.spare_bufs.push(buf);
    }

    fn on_incoming<H: RequestHandler>(
        &mut self,
        now: Instant,
        incoming: Incoming,
        buf: &mut Vec<u8>,
        handler: &mut H,
    ) {
        if !self.accepting || self.open_conns >= self.cfg.max_connections {
            self.stats.connections_refused += 1;
            let t = self.endpoint.refuse(incoming, buf);
            self.queue_endpoint_transmit(t, std::mem::take(buf));
            return;
        }
        // Count new Initials per window; above the threshold demand address validation.
        let window = Duration::from_millis(INITIAL_RATE_WINDOW_MS);
        match self.initials_window_start {
            Some(start) if now.saturating_duration_since(start) < window => {
                self.initials_in_window = self.initials_in_window.saturating_add(1)
            }
            _ => {
                self.initials_window_start = Some(now);
                self.initials_in_window = 1;
            }
        }
        if self.initials_in_window > self.cfg.retry_above_initials_per_sec
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            match self.endpoint.retry(incoming, buf) {
                Ok(t) => {
                    self.stats.retries_sent += 1;
                    self.queue_endpoint_transmit(t, std::mem::take(buf));
                }
                Err(e) => self.endpoint.ignore(e.into_incoming()),
            }
            return;
        }
        match self
            .endpoint
            .accept(incoming, now, buf, Some(self.server_config.clone()))
        {
            Ok((ch, conn)) => {
                self.stats.connections_accepted += 1;
                if self.conns.len() <= ch.0 {
                    self.conns.resize_with(ch.0 + 1, || None);
                }
                let serial = self.next_serial;
                self.next_serial += 1;
                assert!(
                    self.conns[ch.0].is_none(),
                    "quinn-proto reused a live handle"
                );
                self.conns[ch.0] = Some(ConnState {
                    conn,
                    serial,
                    streams: HashMap::with_capacity(16),
                    dirty: false,
                    timer: None,
                });
                self.open_conns += 1;
                self.drive(now, ch, handler);
            }
            Err(e) => {
                if let Some(t) = e.response {
                    self.queue_endpoint_transmit(t, std::mem::take(buf));
                }
            }
        }
    }

    fn queue_endpoint_transmit(&mut self, t: Transmit, buf: Vec<u8>) {
        if self.endpoint_out.len() >= ENDPOINT_TRANSMITS_QUEUED_MAX {
            self.stats.endpoint_transmits_dropped += 1;
            self.spare_bufs.push(buf);
            return;
        }
        self.endpoint_out.push_back((t, buf));
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout<H: RequestHandler>(&mut self, now: Instant, handler: &mut H) {
        while let Some(&Reverse((at, idx, serial))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            if c.serial != serial || c.timer != Some(at) {
                continue; // stale entry
            }
            c.timer = None;
            c.conn.handle_timeout(now);
            self.drive(now, ConnectionHandle(idx), handler);
        }
    }

    /// The earliest instant at which [`FrontDoor::handle_timeout`] has work (may be early).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next datagram(s) to send: written into `buf` (cleared first), described by the
    /// returned [`Transmit`] (with a segment size when it holds several GSO segments).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if let Some((t, bytes)) = self.endpoint_out.pop_front() {
            buf.clear();
            buf.extend_from_slice(&bytes[..t.size]);
            self.spare_bufs.push(bytes);
            return Some(t);
        }
        while let Some(&ch) = self.dirty.front() {
            let Some(c) = self.conns.get_mut(ch.0).and_then(Option::as_mut) else {
                self.dirty.pop_front();
                continue;
            };
            buf.clear();
            if let Some(t) = c.conn.poll_transmit(now, GSO_SEGMENTS_MAX, buf) {
                // Sending may move the loss-detection timer.
                Self::rearm(&mut self.timers, ch, c);
                return Some(t);
            }
            c.dirty = false;
            self.dirty.pop_front();
            Self::rearm(&mut self.timers, ch, c);
        }
        None
    }

    /// Stop accepting connections: new ones are refused from now on. Requests in flight go on.
    pub fn begin_drain(&mut self) {
        self.accepting = false;
    }

    /// Closes every connection with `code` (e.g. [`codes::SHUTTING_DOWN`]), cancelling what is
    /// still pending.
    pub fn close_all<H: RequestHandler>(
        &mut self,
        now: Instant,
        code: quinn_proto::VarInt,
        reason: &'static [u8],
        handler: &mut H,
    ) {
        for idx in 0..self.conns.len() {
            if let Some(c) = self.conns[idx].as_mut() {
                c.conn.close(now, code, Bytes::from_static(reason));
                self.drive(now, ConnectionHandle(idx), handler);
            }
        }
    }

    /// Delivers the response of a request the handler answered [`Reply::Pending`].
    /// Returns false when the request is gone (cancelled, connection lost).
    pub fn complete<H, F>(&mut self, now: Instant, id: RequestId, fill: F, handler: &mut H) -> bool
    where
        H: RequestHandler,
        F: FnOnce(turnstile_wire::response::Builder<'_>) -> capnp::Result<()>,
    {
        let Some(c) = self.conns.get_mut(id.conn.0).and_then(Option::as_mut) else {
            return false;
        };
        if c.serial != id.serial {
            return false;
        }
        let Some(s) = c.streams.get_mut(&id.stream) else {
            return false;
        };
        if s.phase != Phase::Pending {
            return false;
        }
        self.pool.response_buffer(&mut s.outbuf);
        if let Err(e) = self
            .writer
            .write::<turnstile_wire::response::Owned, _>(&mut s.outbuf, fill)
        {
            s.outbuf.clear();
            write_error(
                &mut self.writer,
                &mut s.outbuf,
                s.correlation_id,
                ErrorCode::Internal,
                &format!("response did not encode: {e}"),
            );
        }
        s.phase = Phase::Responding;
        Self::flush_stream(&mut self.pool, c, id.stream);
        self.drive(now, id.conn, handler);
        true
    }

    /// Runs a connection's pending work: endpoint events, application events, timers, marks it
    /// for transmit, and forgets it once drained.
    fn drive<H: RequestHandler>(&mut self, now: Instant, ch: ConnectionHandle, handler: &mut H) {
        let shard = self.cfg.shard;
        let max_request_bytes = self.cfg.max_request_bytes;
        let max_streams = self.cfg.max_streams;
        let connections = self.open_conns;
        let draining = !self.accepting;
        let Some(c) = self.conns.get_mut(ch.0).and_then(Option::as_mut) else {
            return;
        };
        loop {
            let mut progressed = false;
            while let Some(ev) = c.conn.poll_endpoint_events() {
                progressed = true;
                let drained = ev.is_drained();
                if let Some(back) = self.endpoint.handle_event(ch, ev) {
                    c.conn.handle_event(back);
                }
                if drained {
                    let c = self.conns[ch.0].take();
                    self.open_conns -= 1;
                    if let Some(c) = c {
                        for (stream, s) in c.streams {
                            if s.phase == Phase::Pending {
                                self.stats.requests_cancelled += 1;
                                handler.on_cancel(
                                    now,
                                    RequestId {
                                        conn: ch,
                                        serial: c.serial,
                                        stream,
                                    },
                                );
                            }
                            self.pool.recycle(s);
                        }
                    }
                    return;
                }
            }
            while let Some(ev) = c.conn.poll() {
                progressed = true;
                match ev {
                    Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                        while let Some(id) = c.conn.streams().accept(Dir::Bi) {
                            c.streams.insert(id, self.pool.new_stream());
                            Self::read_stream(
                                now,
                                ch,
                                c,
                                id,
                                shard,
                                max_request_bytes,
                                max_streams,
                                connections,
                                draining,
                                &mut self.pool,
                                &mut self.writer,
                                &mut self.stats,
                                handler,
                            );
                        }
                    }
                    Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                        // The protocol uses no unidirectional streams: refuse each politely.
                        while let Some(id) = c.conn.streams().accept(Dir::Uni) {
                            let _ = c.conn.recv_stream(id).stop(codes::NO_ERROR);
                        }
                    }
                    Event::Stream(StreamEvent::Readable { id }) => Self::read_stream(
                        now,
                        ch,
                        c,
                        id,
                        shard,
                        max_request_bytes,
                        max_streams,
                        connections,
                        draining,
                        &mut self.pool,
                        &mut self.writer,
                        &mut self.stats,
                        handler,
                    ),
                    Event::Stream(StreamEvent::Writable { id }) => {
                        Self::flush_stream(&mut self.pool, c, id)
                    }
                    Event::Stream(StreamEvent::Stopped { id, .. }) => {
                        if let Some(s) = c.streams.remove(&id) {
                            if s.phase == Phase::Pending {
                                self.stats.requests_cancelled += 1;
                                handler.on_cancel(
                                    now,
                                    RequestId {
                                        conn: ch,
                                        serial: c.serial,
                                        stream: id,
                                    },
                                );
                            }
                            let _ = c.conn.recv_stream(id).stop(codes::CANCELLED);
                            self.pool.recycle(s);
                        }
                    }
                    Event::ConnectionLost { .. } => {
                        for (stream, s) in c.streams.drain() {
                            if s.phase == Phase::Pending {
                                self.stats.requests_cancelled += 1;
                                handler.on_cancel(
                                    now,
                                    RequestId {
                                        conn: ch,
                                        serial: c.serial,
                                        stream,
                                    },
                                );
                            }
                            self.pool.recycle(s);
                        }
                    }
                    _ => {}
                }
            }
            if !progressed {
                break;
            }
        }
        if !c.dirty {
            c.dirty = true;
            self.dirty.push_back(ch);
        }
        Self::rearm(&mut self.timers, ch, c);
        // Stale timer entries accumulate as deadlines move; rebuild when they dominate.
        if self.timers.len() > 4 * self.open_conns + 1024 {
            self.timers.clear();
            for (idx, c) in self.conns.iter().enumerate() {
                if let Some(c) = c
                    && let Some(at) = c.timer
                {
                    self.timers.push(Reverse((at, idx, c.serial)));
                }
            }
        }
    }

    fn rearm(
        timers: &mut BinaryHeap<Reverse<(Instant, usize, u64)>>,
        ch: ConnectionHandle,
        c: &mut ConnState,
    ) {
        let next = c.conn.poll_timeout();
        if next != c.timer {
            c.timer = next;
            if let Some(at) = next {
                timers.push(Reverse((at, ch.0, c.serial)));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read_stream<H: RequestHandler>(
        now: Instant,
        ch: ConnectionHandle,
        c: &mut ConnState,
        id: StreamId,
        shard: u8,
        max_request_bytes: usize,
        max_streams: u32,
        connections: usize,
        draining: bool,
        pool: &mut BufferPool,
        writer: &mut FrameWriter<'static>,
        stats: &mut FrontDoorStats,
        handler: &mut H,
    ) {
        let open_streams = c.streams.len();
        let Some(s) = c.streams.get_mut(&id) else {
            return;
        };
        let mut reset = None;
        let mut too_large = false;
        {
            let mut recv = c.conn.recv_stream(id);
            let Ok(mut chunks) = recv.read(true) else {
                return;
            };
            loop {
                match chunks.next(STREAM_READ_CHUNK_BYTES) {
                    Ok(Some(chunk)) => {
                        s.received += chunk.bytes.len();
                        if s.received > max_request_bytes {
                            too_large = true;
                            break;
                        }
                        if matches!(s.phase, Phase::Reading | Phase::Pending) {
                            s.inbuf.extend_from_slice(&chunk.bytes);
                        }
                    }
                    Ok(None) => {
                        s.fin_received = true;
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                    Err(ReadError::Reset(code)) => {
                        reset = Some(code);
                        break;
                    }
                }
            }
            let _ = chunks.finalize();
        }
        let rid = RequestId {
            conn: ch,
            serial: c.serial,
            stream: id,
        };
        if reset.is_some() {
            // The client abandoned the request: cancel it, and stop our side too.
            if let Some(s) = c.streams.remove(&id) {
                if s.phase == Phase::Pending {
                    stats.requests_cancelled += 1;
                    handler.on_cancel(now, rid);
                }
                let _ = c.conn.send_stream(id).reset(codes::CANCELLED);
                pool.recycle(s);
            }
            return;
        }
        if too_large {
            stats.requests_rejected += 1;
            let _ = c.conn.recv_stream(id).stop(codes::REQUEST_TOO_LARGE);
            s.fin_received = true; // we read no more
            if s.phase == Phase::Reading {
                pool.response_buffer(&mut s.outbuf);
                let msg = format!(
                    "request exceeds {max_request_bytes} bytes (the server's max_request_bytes)"
                );
                write_error(writer, &mut s.outbuf, 0, ErrorCode::TooLarge, &msg);
                s.phase = Phase::Responding;
            } else if s.phase == Phase::Pending {
                stats.requests_cancelled += 1;
                handler.on_cancel(now, rid);
                pool.response_buffer(&mut s.outbuf);
                let msg = format!("request exceeds {max_request_bytes} bytes");
                write_error(
                    writer,
                    &mut s.outbuf,
                    s.correlation_id,
                    ErrorCode::TooLarge,
                    &msg,
                );
                s.phase = Phase::Responding;
            }
            Self::flush_stream(pool, c, id);
            return;
        }
        if s.phase == Phase::Reading {
            let zero_rtt = c.conn.is_handshaking();
            let info = RequestInfo {
                remote: c.conn.remote_address(),
                zero_rtt,
                shard,
            };
            match split_frame(&s.inbuf) {
                Ok(Some((frame, used))) => {
                    pool.response_buffer(&mut s.outbuf);
                    let mut sink = ResponseSink {
                        writer,
                        out: &mut s.outbuf,
                    };
                    let snapshot = Snapshot {
                        shard,
                        draining,
                        max_request_bytes,
                        max_streams,
                        connections,
                        streams: open_streams,
                        requests: stats.requests,
                    };
                    let reply =
                        answer_frame(now, rid, &info, &snapshot, frame, &mut sink, handler, stats);
                    s.phase = match reply {
                        Reply::Ready => Phase::Responding,
                        Reply::Pending => Phase::Pending,
                    };
                    if s.phase == Phase::Pending {
                        // Later frames (body chunks) go to the handler as they complete.
                        s.inbuf.drain(..used);
                    } else {
                        s.inbuf.clear();
                    }
                }
                Ok(None) if s.fin_received => {
                    stats.requests_rejected += 1;
                    let msg = if s.inbuf.is_empty() {
                        "empty request: the stream ended before a frame".to_string()
                    } else {
                        format!(
                            "truncated frame: the stream ended after {} bytes",
                            s.inbuf.len()
                        )
                    };
                    pool.response_buffer(&mut s.outbuf);
                    write_error(writer, &mut s.outbuf, 0, ErrorCode::MalformedFrame, &msg);
                    s.phase = Phase::Responding;
                }
                Ok(None) => {}
                Err(e) => {
                    stats.requests_rejected += 1;
                    let code = match e {
                        WireError::TooLarge { .. } => ErrorCode::TooLarge,
                        _ => ErrorCode::MalformedFrame,
                    };
                    pool.response_buffer(&mut s.outbuf);
                    write_error(writer, &mut s.outbuf, 0, code, &e.to_string());
                    s.phase = Phase::Responding;
                    s.fin_received = true;
                    let _ = c.conn.recv_stream(id).stop(codes::FRAME_ERROR);
                }
            }
        }
        if let Some(s) = c.streams.get_mut(&id)
            && s.phase == Phase::Pending
            && !s.inbuf.is_empty()
        {
            let mut used = 0;
            loop {
                match split_frame(&s.inbuf[used..]) {
                    Ok(Some((frame, n))) => {
                        handler.on_request_frame(now, rid, frame.kind, frame.payload);
                        used += n;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // The request keeps what it has; its agents decide on it (or time out).
                        tracing::debug!(error = %e, "bad continuation frame; no more body read");
                        let _ = c.conn.recv_stream(id).stop(codes::FRAME_ERROR);
                        used = s.inbuf.len();
                        break;
                    }
                }
            }
            s.inbuf.drain(..used);
        }
        if c.streams
            .get(&id)
            .is_some_and(|s| s.phase == Phase::Responding)
        {
            Self::flush_stream(pool, c, id);
        }
    }

    /// Hands as much of the response to QUIC as flow control allows; finishes the stream and
    /// forgets it once all is written.
    fn flush_stream(pool: &mut BufferPool, c: &mut ConnState, id: StreamId) {
        let Some(s) = c.streams.get_mut(&id) else {
            return;
        };
        if s.phase != Phase::Responding {
            return;
        }
        let mut send = c.conn.send_stream(id);
        while s.out_off < s.outbuf.len() {
            match send.write(&s.outbuf[s.out_off..]) {
                Ok(n) => s.out_off += n,
                Err(quinn_proto::WriteError::Blocked) => return,
                Err(_) => {
                    // Stopped or closed: the client no longer wants the answer.
                    if let Some(s) = c.streams.remove(&id) {
                        pool.recycle(s);
                    }
                    return;
                }
            }
        }
        let _ = send.finish();
        let fin_received = s.fin_received;
        if let Some(s) = c.streams.remove(&id) {
            pool.recycle(s);
        }
        if !fin_received {
            // Answered before the client finished sending: it need not send the rest.
            let _ = c.conn.recv_stream(id).stop(codes::NO_ERROR);
        }
    }
}

/// Parses a request frame and hands it to the handler, or answers it itself (errors, `hello`,
/// `status`).
#[allow(clippy::too_many_arguments)]
fn answer_frame<H: RequestHandler>(
    now: Instant,
    rid: RequestId,
    info: &RequestInfo,
    snapshot: &Snapshot,
    frame: turnstile_wire::Frame<'_>,
    sink: &mut ResponseSink<'_>,
    handler: &mut H,
    stats: &mut FrontDoorStats,
) -> Reply {
    let parsed = frame.message().and_then(|m| {
        if m.kind() != FrameKind::Request {
            return Err(WireError::UnexpectedKind {
                expected: FrameKind::Request,
                got: m.kind(),
            });
        }
        Ok(m)
    });
    let message: Message<'_> = match parsed {
        Ok(m) => m,
        Err(e) => {
            stats.requests_rejected += 1;
            sink.error(0, ErrorCode::MalformedFrame, &e.to_string());
            return Reply::Ready;
        }
    };
    let request = match message.root::<request::Owned>() {
        Ok(r) => r,
        Err(e) => {
            stats.requests_rejected += 1;
            sink.error(0, ErrorCode::MalformedFrame, &e.to_string());
            return Reply::Ready;
        }
    };
    let correlation_id = request.get_correlation_id();
    if snapshot.draining {
        stats.requests_rejected += 1;
        sink.error(
            correlation_id,
            ErrorCode::ShuttingDown,
            "the server is draining: send this request on another connection or later",
        );
        return Reply::Ready;
    }
    if info.zero_rtt && !replay_safe(request) {
        stats.requests_rejected += 1;
        sink.error(
            correlation_id,
            ErrorCode::NotReplaySafe,
            "not replay-safe: this request arrived in 0-RTT; resend it after the handshake",
        );
        return Reply::Ready;
    }
    stats.requests += 1;
    match request.which() {
        Ok(request::Hello(Ok(hello))) => {
            answer_hello(correlation_id, hello, snapshot, sink);
            return Reply::Ready;
        }
        Ok(request::Status(Ok(_))) => {
            answer_status(correlation_id, snapshot, sink);
            return Reply::Ready;
        }
        _ => {}
    }
    match handler.on_request(now, rid, info, request, frame.payload, sink) {
        Ok(reply) => reply,
        Err(e) => {
            stats.requests_rejected += 1;
            let code = match e {
                WireError::TooLarge { .. } => ErrorCode::TooLarge,
                _ => ErrorCode::BadRequest,
            };
            sink.error(correlation_id, code, &e.to_string());
            Reply::Ready
        }
    }
}

fn answer_hello(
    correlation_id: u64,
    hello: turnstile_wire::turnstile_capnp::hello::Reader<'_>,
    snapshot: &Snapshot,
    sink: &mut ResponseSink<'_>,
) {
    let wanted = turnstile_wire::CLIENT_PROTOCOL_VERSION;
    let supported = match hello.get_versions() {
        Ok(v) => v.is_empty() || v.iter().any(|x| x == wanted),
        Err(_) => false,
    };
    if !supported {
        sink.error(
            correlation_id,
            ErrorCode::UnsupportedVersion,
            "no common client protocol version: this server speaks version 1",
        );
        return;
    }
    let written = sink.write(|mut r| {
        r.set_correlation_id(correlation_id);
        let mut ack = r.init_hello_ack();
        ack.set_version(wanted);
        ack.set_server_name(concat!("turnstile/", env!("CARGO_PKG_VERSION")));
        ack.set_frame_bytes_max(turnstile_wire::limits::FRAME_BYTES_MAX);
        ack.set_request_bytes_max(snapshot.max_request_bytes as u64);
        ack.set_streams_max(snapshot.max_streams);
        Ok(())
    });
    assert!(written.is_ok(), "hello ack must encode");
}

fn answer_status(correlation_id: u64, snapshot: &Snapshot, sink: &mut ResponseSink<'_>) {
    // One event per subscription for now: periodic events come with the agent plane's status.
    let written = sink.write(|mut r| {
        r.set_correlation_id(correlation_id);
        let mut e = r.init_status_event();
        e.set_shard(u16::from(snapshot.shard));
        e.set_connections(u32::try_from(snapshot.connections).unwrap_or(u32::MAX));
        e.set_streams(u32::try_from(snapshot.streams).unwrap_or(u32::MAX));
        e.set_requests_total(snapshot.requests);
        Ok(())
    });
    assert!(written.is_ok(), "status event must encode");
}
