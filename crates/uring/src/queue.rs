//! The io_uring instance with its submission bookkeeping: pushing entries, entering the
//! kernel (without blocking, or waiting for one completion), popping completions, and the
//! `user_data` encoding every entry carries.

use std::io;
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, squeue};

/// What an entry's completion belongs to (top byte of `user_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// Multishot UDP `recvmsg`.
    UdpRecv = 1,
    /// UDP `sendmsg` from a send slot (`index` = slot).
    UdpSend = 2,
    /// Kernel timeout (`index` = timespec slot, `tag` = generation).
    Timer = 3,
    /// Removal of a stale kernel timeout.
    TimerRemove = 4,
    /// Read of the wake-up eventfd.
    Wake = 5,
    /// Unix socket connect (`index` = connection, `tag` = generation).
    UdsConnect = 6,
    /// Unix socket receive.
    UdsRead = 7,
    /// Unix socket send.
    UdsWrite = 8,
    /// Cancellation of a closing connection's operations.
    UdsCancel = 9,
    /// Close of a connection's socket.
    UdsClose = 10,
    /// Cancel-everything entry used at shutdown and by the probe.
    Cancel = 11,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::UdpRecv,
            2 => Self::UdpSend,
            3 => Self::Timer,
            4 => Self::TimerRemove,
            5 => Self::Wake,
            6 => Self::UdsConnect,
            7 => Self::UdsRead,
            8 => Self::UdsWrite,
            9 => Self::UdsCancel,
            10 => Self::UdsClose,
            11 => Self::Cancel,
            _ => return None,
        })
    }
}

/// Packs kind, index and tag into a `user_data`.
pub(crate) fn user_data(kind: Kind, index: u16, tag: u32) -> u64 {
    (u64::from(kind as u8) << 56) | (u64::from(index) << 32) | u64::from(tag)
}

/// Unpacks a `user_data` made by [`user_data`]; `None` for values this crate never makes.
pub(crate) fn decode_user_data(ud: u64) -> Option<(Kind, u16, u32)> {
    let kind = Kind::from_u8((ud >> 56) as u8)?;
    Some((kind, (ud >> 32) as u16, ud as u32))
}

/// The submission queue is full even after submitting.
#[derive(Debug)]
pub(crate) struct QueueFull;

/// An io_uring instance plus the count of operations whose final completion is outstanding.
pub(crate) struct Queue {
    pub(crate) uring: IoUring,
    /// Entries pushed whose terminal CQE has not been popped yet. Memory an entry points to is
    /// only reused or freed after its terminal CQE; at shutdown, while this is non-zero, the
    /// ring's memory is leaked rather than freed.
    inflight: u32,
}

fn transient(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY | libc::ETIME)
    )
}

impl Queue {
    pub(crate) fn new(uring: IoUring) -> Self {
        Self { uring, inflight: 0 }
    }

    /// Operations still owed a terminal completion.
    pub(crate) fn inflight(&self) -> u32 {
        self.inflight
    }

    /// Queues one entry, submitting first if the queue is full.
    ///
    /// # Safety
    ///
    /// Every buffer the entry points to must stay valid, and must not be written by us (or
    /// read, if the kernel writes it), until the entry's terminal completion is popped — or, for
    /// data the kernel copies while submitting (timespecs, socket addresses, the multishot
    /// `recvmsg` header), until the entry has been submitted.
    pub(crate) unsafe fn push(&mut self, sqe: &squeue::Entry) -> Result<(), QueueFull> {
        // SAFETY: forwarded from this function's contract.
        if unsafe { self.uring.submission().push(sqe) }.is_err() {
            // Make room; a failure here (e.g. EBUSY on CQ overflow) just means still full.
            let _ = self.uring.submit();
            // SAFETY: as above.
            unsafe { self.uring.submission().push(sqe) }.map_err(|_| QueueFull)?;
        }
        self.inflight += 1;
        Ok(())
    }

    /// Submits queued entries and runs pending task work so completions become visible,
    /// without blocking. Enters the kernel only when there is something to submit or the
    /// kernel flagged pending work (`IORING_SQ_TASKRUN`) or a CQ overflow.
    pub(crate) fn enter_nonblocking(&mut self) -> io::Result<()> {
        let sq = self.uring.submission();
        let needed = !sq.is_empty() || sq.taskrun() || sq.cq_overflow();
        drop(sq);
        if !needed {
            return Ok(());
        }
        match self.uring.submit() {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits and blocks until at least one completion is visible, or `timeout` passes.
    pub(crate) fn enter_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let result = match timeout {
            None => self.uring.submit_and_wait(1),
            Some(t) => {
                let ts = Timespec::from(t);
                let args = SubmitArgs::new().timespec(&ts);
                self.uring.submitter().submit_with_args(1, &args)
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether the completion queue holds no entry right now.
    pub(crate) fn cq_is_empty(&mut self) -> bool {
        self.uring.completion().is_empty()
    }

    /// Pops one completion, updating the in-flight count.
    pub(crate) fn pop(&mut self) -> Option<cqueue::Entry> {
        let cqe = self.uring.completion().next()?;
        if !cqueue::more(cqe.flags()) {
            assert!(
                self.inflight > 0,
                "terminal completion without an operation in flight"
            );
            self.inflight -= 1;
        }
        Some(cqe)
    }
}
