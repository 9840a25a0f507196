//! Unix stream connections for the agent plane: connect, a continuously re-armed receive into
//! a per-connection buffer, an ordered write queue (one `send` in flight, short writes
//! resubmitted), and close (cancel what is in flight, then close the socket).
//!
//! Every token ends with exactly one of: `UdsConnected { result: Err(..) }` (connect failed;
//! the socket is already gone) or `UdsClosed`.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use io_uring::opcode;
use io_uring::types::{CancelBuilder, Fd};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::error::UdsError;
use crate::limits::{
    UDS_CONNECTIONS_MAX, UDS_PATH_MAX_BYTES, UDS_READ_BUFFER_BYTES, UDS_WRITE_BUFFER_BYTES,
};
use crate::mem::KernelMem;
use crate::queue::{Kind, Queue, user_data};

/// Names one Unix stream connection of a ring. Stale tokens (of closed connections) are
/// rejected, never confused with a newer connection in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    index: u16,
    generation: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Connecting,
    Open,
    Closing,
}

struct Conn {
    generation: u32,
    state: State,
    socket: Option<Socket>,
    /// Peer address; kept (boxed, so it never moves) until the connect completes.
    addr: Option<Box<SockAddr>>,
    rbuf: Option<KernelMem>,
    wbuf: Option<KernelMem>,
    /// Queued bytes are `wbuf[w_start..w_end]`; the first `w_inflight` of them are being sent.
    w_start: usize,
    w_end: usize,
    w_inflight: usize,
    /// The caller asked for data (receives stay armed until close).
    reading: bool,
    /// Received bytes are lent to the caller until its next call into the ring.
    read_held: bool,
    connect_inflight: bool,
    read_inflight: bool,
    cancel_inflight: bool,
    cancel_sent: bool,
    close_inflight: bool,
    /// errno that ended the connection (0 = clean).
    close_errno: i32,
}

impl Conn {
    const fn free() -> Self {
        Self {
            generation: 0,
            state: State::Free,
            socket: None,
            addr: None,
            rbuf: None,
            wbuf: None,
            w_start: 0,
            w_end: 0,
            w_inflight: 0,
            reading: false,
            read_held: false,
            connect_inflight: false,
            read_inflight: false,
            cancel_inflight: false,
            cancel_sent: false,
            close_inflight: false,
            close_errno: 0,
        }
    }

    fn io_inflight(&self) -> bool {
        self.connect_inflight || self.read_inflight || self.w_inflight > 0
    }

    fn fd(&self) -> Option<Fd> {
        self.socket.as_ref().map(|s| Fd(s.as_raw_fd()))
    }
}

/// What a connection completion means for the caller.
#[derive(Debug)]
pub(crate) enum UdsEvent {
    Connected(Token, Result<(), i32>),
    Data(Token, usize),
    Written(Token, Result<usize, i32>),
    Closed(Token, i32),
}

/// The connection table of a ring.
pub(crate) struct Uds {
    conns: Vec<Conn>,
    free: Vec<u16>,
    /// Some connection may need an entry queued that could not be queued earlier.
    kick: bool,
}

fn io_err(action: &'static str) -> impl FnOnce(io::Error) -> UdsError {
    move |source| UdsError::Io { action, source }
}

impl Uds {
    pub(crate) fn new() -> Self {
        Self {
            conns: (0..UDS_CONNECTIONS_MAX).map(|_| Conn::free()).collect(),
            free: (0..UDS_CONNECTIONS_MAX as u16).rev().collect(),
            kick: false,
        }
    }

    fn token(&self, index: u16) -> Token {
        Token {
            index,
            generation: self.conns[usize::from(index)].generation,
        }
    }

    fn live(&self, token: Token) -> Result<usize, UdsError> {
        let index = usize::from(token.index);
        match self.conns.get(index) {
            Some(c) if c.generation == token.generation && c.state != State::Free => {
                if c.state == State::Closing {
                    Err(UdsError::Closing(token))
                } else {
                    Ok(index)
                }
            }
            _ => Err(UdsError::UnknownToken(token)),
        }
    }

    /// Starts connecting to the socket at `path`.
    pub(crate) fn connect(&mut self, queue: &mut Queue, path: &Path) -> Result<Token, UdsError> {
        let len = path.as_os_str().len();
        if len > UDS_PATH_MAX_BYTES {
            return Err(UdsError::PathTooLong {
                len,
                max: UDS_PATH_MAX_BYTES,
            });
        }
        let addr = SockAddr::unix(path).map_err(io_err("build the unix socket address"))?;
        let Some(&index) = self.free.last() else {
            return Err(UdsError::TooManyConnections(UDS_CONNECTIONS_MAX));
        };
        let i = usize::from(index);
        if self.conns[i].rbuf.is_none() {
            self.conns[i].rbuf =
                Some(KernelMem::new(UDS_READ_BUFFER_BYTES).map_err(io_err("allocate buffers"))?);
        }
        if self.conns[i].wbuf.is_none() {
            self.conns[i].wbuf =
                Some(KernelMem::new(UDS_WRITE_BUFFER_BYTES).map_err(io_err("allocate buffers"))?);
        }
        let socket = Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)
            .map_err(io_err("create a unix socket"))?;
        let generation = self.conns[i].generation;
        let conn = &mut self.conns[i];
        let addr = conn.addr.insert(Box::new(addr));
        let sqe = opcode::Connect::new(Fd(socket.as_raw_fd()), addr.as_ptr().cast(), addr.len())
            .build()
            .user_data(user_data(Kind::UdsConnect, index, generation));
        // SAFETY: the address is boxed in the connection and stays there, unmoved, until the
        // connect completes; the kernel only reads it.
        if unsafe { queue.push(&sqe) }.is_err() {
            conn.addr = None;
            return Err(UdsError::RingFull);
        }
        self.free.pop();
        conn.socket = Some(socket);
        conn.state = State::Connecting;
        conn.connect_inflight = true;
        Ok(self.token(index))
    }

    /// Queues bytes for writing (also allowed while connecting).
    pub(crate) fn write(
        &mut self,
        queue: &mut Queue,
        token: Token,
        data: &[u8],
    ) -> Result<(), UdsError> {
        let i = self.live(token)?;
        let conn = &mut self.conns[i];
        let Some(wbuf) = conn.wbuf.as_ref() else {
            return Err(UdsError::UnknownToken(token));
        };
        let queued = conn.w_end - conn.w_start;
        if queued + data.len() > UDS_WRITE_BUFFER_BYTES {
            return Err(UdsError::WriteQueueFull {
                queued,
                len: data.len(),
                capacity: UDS_WRITE_BUFFER_BYTES,
            });
        }
        if conn.w_end + data.len() > UDS_WRITE_BUFFER_BYTES {
            // Compact. Only possible with nothing in flight; else wait for the completion.
            if conn.w_inflight > 0 {
                return Err(UdsError::WriteQueueFull {
                    queued,
                    len: data.len(),
                    capacity: UDS_WRITE_BUFFER_BYTES - conn.w_start,
                });
            }
            // SAFETY: no send is in flight, so the kernel uses no part of the buffer.
            unsafe { wbuf.copy_within(conn.w_start, 0, queued) };
            conn.w_start = 0;
            conn.w_end = queued;
        }
        // SAFETY: the in-flight send (if any) reads `w_start..w_start + w_inflight`, which lies
        // below `w_end`; we write at and after `w_end`.
        unsafe { wbuf.write(conn.w_end, data) };
        conn.w_end += data.len();
        self.progress(queue, i);
        Ok(())
    }

    /// Keeps a receive armed on the connection until it closes.
    pub(crate) fn read(&mut self, queue: &mut Queue, token: Token) -> Result<(), UdsError> {
        let i = self.live(token)?;
        self.conns[i].reading = true;
        self.progress(queue, i);
        Ok(())
    }

    /// Closes the connection; a `Closed` event follows once the kernel is done with it.
    pub(crate) fn close(&mut self, queue: &mut Queue, token: Token) -> Result<(), UdsError> {
        let i = self.live(token)?;
        self.begin_close(queue, i, 0);
        Ok(())
    }

    /// Bytes queued for writing and not yet written.
    /// The peer's credentials (`SO_PEERCRED`) of an open connection: (pid, uid, gid).
    pub(crate) fn peer_cred(&self, token: Token) -> Result<(i32, u32, u32), UdsError> {
        let i = self.live(token)?;
        let Some(socket) = self.conns[i].socket.as_ref() else {
            return Err(UdsError::Io {
                action: "read peer credentials",
                source: io::Error::from(io::ErrorKind::NotConnected),
            });
        };
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: `socket` is an open socket owned by this table for the duration of the call;
        // `cred` and `len` are valid, writable and sized for SO_PEERCRED's `struct ucred`, and the
        // kernel writes at most `len` bytes into `cred`.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&raw mut cred).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(UdsError::Io {
                action: "read peer credentials",
                source: io::Error::last_os_error(),
            });
        }
        Ok((cred.pid, cred.uid, cred.gid))
    }

    pub(crate) fn queued(&self, token: Token) -> Option<usize> {
        let i = self.live(token).ok()?;
        Some(self.conns[i].w_end - self.conns[i].w_start)
    }

    fn begin_close(&mut self, queue: &mut Queue, i: usize, errno: i32) {
        let conn = &mut self.conns[i];
        if conn.state == State::Closing {
            return;
        }
        conn.state = State::Closing;
        conn.close_errno = errno;
        conn.reading = false;
        self.progress(queue, i);
    }

    /// Queues whatever the connection's state calls for; remembers to retry what did not fit.
    fn progress(&mut self, queue: &mut Queue, i: usize) {
        let index = i as u16;
        let conn = &mut self.conns[i];
        let (Some(fd), generation) = (conn.fd(), conn.generation) else {
            return;
        };
        let mut stuck = false;
        match conn.state {
            State::Free | State::Connecting => {}
            State::Open => {
                if conn.reading && !conn.read_inflight && !conn.read_held {
                    if let Some(rbuf) = conn.rbuf.as_ref() {
                        let sqe =
                            opcode::Recv::new(fd, rbuf.as_ptr(), UDS_READ_BUFFER_BYTES as u32)
                                .build()
                                .user_data(user_data(Kind::UdsRead, index, generation));
                        // SAFETY: the kernel writes into `rbuf`, which we neither read (no data
                        // is lent out: `read_held` is false) nor free until the completion.
                        if unsafe { queue.push(&sqe) }.is_ok() {
                            conn.read_inflight = true;
                        } else {
                            stuck = true;
                        }
                    }
                }
                if conn.w_inflight == 0 && conn.w_end > conn.w_start {
                    if let Some(wbuf) = conn.wbuf.as_ref() {
                        let len = conn.w_end - conn.w_start;
                        let sqe = opcode::Send::new(
                            fd,
                            wbuf.as_ptr().wrapping_add(conn.w_start).cast_const(),
                            len as u32,
                        )
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(user_data(
                            Kind::UdsWrite,
                            index,
                            generation,
                        ));
                        // SAFETY: the kernel reads `w_start..w_end`; until the completion we
                        // only append after `w_end` and never compact or free.
                        if unsafe { queue.push(&sqe) }.is_ok() {
                            conn.w_inflight = len;
                        } else {
                            stuck = true;
                        }
                    }
                }
            }
            State::Closing => {
                if conn.io_inflight() {
                    if !conn.cancel_sent {
                        let sqe = opcode::AsyncCancel2::new(CancelBuilder::fd(fd).all())
                            .build()
                            .user_data(user_data(Kind::UdsCancel, index, generation));
                        // SAFETY: a cancellation points at no memory.
                        if unsafe { queue.push(&sqe) }.is_ok() {
                            conn.cancel_sent = true;
                            conn.cancel_inflight = true;
                        } else {
                            stuck = true;
                        }
                    }
                } else if !conn.cancel_inflight && !conn.close_inflight {
                    let sqe = opcode::Close::new(fd).build().user_data(user_data(
                        Kind::UdsClose,
                        index,
                        generation,
                    ));
                    // SAFETY: a close points at no memory.
                    if unsafe { queue.push(&sqe) }.is_ok() {
                        conn.close_inflight = true;
                        // The queued close owns the descriptor now.
                        if let Some(socket) = conn.socket.take() {
                            let _ = std::os::fd::IntoRawFd::into_raw_fd(socket);
                        }
                    } else {
                        stuck = true;
                    }
                }
            }
        }
        self.kick |= stuck;
    }

    /// Retries entries that did not fit in the submission queue earlier.
    pub(crate) fn retry(&mut self, queue: &mut Queue) {
        if std::mem::take(&mut self.kick) {
            for i in 0..self.conns.len() {
                if self.conns[i].state != State::Free {
                    self.progress(queue, i);
                }
            }
        }
    }

    /// The caller is done with the data of the last `Data` event: re-arm the receive.
    pub(crate) fn release(&mut self, queue: &mut Queue, token: Token) {
        let i = usize::from(token.index);
        if self
            .conns
            .get(i)
            .is_some_and(|c| c.generation == token.generation)
        {
            self.conns[i].read_held = false;
            self.progress(queue, i);
        }
    }

    /// The bytes of a `Data` event.
    ///
    /// # Safety
    ///
    /// `token` and `len` must come from the latest `Data` event, and the receive must not be
    /// re-armed (no [`Uds::release`]) while the slice lives.
    pub(crate) unsafe fn data(&self, token: Token, len: usize) -> &[u8] {
        let conn = &self.conns[usize::from(token.index)];
        assert!(
            conn.read_held && !conn.read_inflight,
            "no received data is lent out"
        );
        match conn.rbuf.as_ref() {
            // SAFETY: no receive is in flight on this buffer (asserted) and none is armed
            // before the caller releases the data (forwarded contract).
            Some(rbuf) => unsafe { rbuf.slice(0, len) },
            None => &[],
        }
    }

    fn free_slot(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        let (rbuf, wbuf, generation) = (conn.rbuf.take(), conn.wbuf.take(), conn.generation);
        *conn = Conn::free();
        conn.generation = generation.wrapping_add(1);
        conn.rbuf = rbuf;
        conn.wbuf = wbuf;
        self.free.push(i as u16);
    }

    /// Handles a connection completion.
    pub(crate) fn on_complete(
        &mut self,
        queue: &mut Queue,
        kind: Kind,
        index: u16,
        generation: u32,
        result: i32,
    ) -> Option<UdsEvent> {
        let i = usize::from(index);
        assert!(
            self.conns
                .get(i)
                .is_some_and(|c| c.generation == generation && c.state != State::Free),
            "unix completion for a connection that is not in flight"
        );
        let token = self.token(index);
        let closing = self.conns[i].state == State::Closing;
        let conn = &mut self.conns[i];
        let event = match kind {
            Kind::UdsConnect => {
                conn.connect_inflight = false;
                conn.addr = None;
                if closing {
                    None
                } else if result < 0 {
                    // Failed: drop the socket now (nothing else is in flight on it).
                    self.free_slot(i);
                    return Some(UdsEvent::Connected(token, Err(-result)));
                } else {
                    conn.state = State::Open;
                    Some(UdsEvent::Connected(token, Ok(())))
                }
            }
            Kind::UdsRead => {
                conn.read_inflight = false;
                if closing {
                    None
                } else if result > 0 {
                    conn.read_held = true;
                    Some(UdsEvent::Data(token, result as usize))
                } else if result == 0 {
                    self.begin_close(queue, i, 0);
                    None
                } else if result == -libc::EINTR || result == -libc::EAGAIN {
                    None
                } else {
                    self.begin_close(queue, i, -result);
                    None
                }
            }
            Kind::UdsWrite => {
                let sent = std::mem::take(&mut conn.w_inflight);
                if closing {
                    None
                } else if result == 0 && sent > 0 {
                    // A stream send that moves nothing would be retried forever: treat the
                    // connection as broken.
                    self.begin_close(queue, i, libc::EPIPE);
                    Some(UdsEvent::Written(token, Err(libc::EPIPE)))
                } else if result >= 0 {
                    // A short write leaves the rest queued; `progress` sends it next.
                    let n = (result as usize).min(sent);
                    conn.w_start += n;
                    if conn.w_start == conn.w_end {
                        conn.w_start = 0;
                        conn.w_end = 0;
                    }
                    Some(UdsEvent::Written(token, Ok(n)))
                } else {
                    self.begin_close(queue, i, -result);
                    Some(UdsEvent::Written(token, Err(-result)))
                }
            }
            Kind::UdsCancel => {
                conn.cancel_inflight = false;
                None
            }
            Kind::UdsClose => {
                let errno = conn.close_errno;
                self.free_slot(i);
                return Some(UdsEvent::Closed(token, errno));
            }
            _ => None,
        };
        self.progress(queue, i);
        event
    }

    /// Never free kernel-shared memory (operations may still be in flight).
    pub(crate) fn leak(&mut self) {
        for conn in &mut self.conns {
            if let Some(b) = conn.rbuf.as_mut() {
                b.leak();
            }
            if let Some(b) = conn.wbuf.as_mut() {
                b.leak();
            }
            std::mem::forget(conn.addr.take());
        }
    }
}
