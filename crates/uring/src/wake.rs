//! Cross-thread wake-up: an eventfd whose read is always armed on the ring, written only when
//! the ring is (about to be) asleep. The protocol is described on [`Waker`].

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::opcode;
use io_uring::types::Fd;

use crate::mem::KernelMem;
use crate::queue::{Kind, Queue, user_data};
use crate::sys;

struct Shared {
    eventfd: OwnedFd,
    sleeping: AtomicBool,
    pending: AtomicBool,
}

/// Wakes one [`crate::Ring`] from another thread. Cheap to clone; `Send + Sync`.
///
/// Protocol (all `SeqCst`), between two flags shared with the ring:
/// - [`Waker::wake`] sets `pending`; then, if `sleeping` was set, clears it and writes the
///   eventfd (one system call).
/// - [`crate::Ring::wait`] sets `sleeping`; then, if `pending` was set, clears both and
///   returns at once with a [`crate::Completion::Wake`]; else it sleeps in `io_uring_enter`
///   with a read of the eventfd armed.
///
/// In the total order either the waker's `pending` store comes first, and the ring sees it
/// before sleeping, or the ring's `sleeping` store does, and the waker sees it and writes the
/// eventfd, which completes the read and ends the sleep: no wake-up is lost. Waking a ring
/// that is spinning costs two atomic operations and no system call. The ring clears `pending`
/// whenever it hands out a `Wake`, so the caller must check its cross-thread queues after
/// every `Wake`, and once per loop between draining completions and calling `wait`.
#[derive(Clone)]
pub struct Waker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker")
            .field("eventfd", &self.shared.eventfd.as_raw_fd())
            .finish()
    }
}

impl Waker {
    /// Makes the ring's current or next [`crate::Ring::wait`] return with a
    /// [`crate::Completion::Wake`]. Publish the work (e.g. push to a channel) *before* calling
    /// this. Costs a system call only when the ring is asleep.
    pub fn wake(&self) {
        self.shared.pending.store(true, Ordering::SeqCst);
        if self.shared.sleeping.swap(false, Ordering::SeqCst) {
            // Can only fail with EBADF/EINVAL, impossible for our own open eventfd; a saturated
            // counter (EAGAIN) already means "awake".
            let _ = sys::eventfd_signal(&self.shared.eventfd);
        }
    }
}

/// The ring's side of the wake-up machinery.
pub(crate) struct WakeState {
    shared: Arc<Shared>,
    /// Target of the armed eventfd read (8 bytes).
    buf: KernelMem,
    armed: bool,
    /// A `Wake` completion is owed to the caller.
    ready: bool,
}

impl WakeState {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            shared: Arc::new(Shared {
                eventfd: sys::eventfd()?,
                sleeping: AtomicBool::new(false),
                pending: AtomicBool::new(false),
            }),
            buf: KernelMem::new(8)?,
            armed: false,
            ready: false,
        })
    }

    pub(crate) fn waker(&self) -> Waker {
        Waker {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Arms the eventfd read if it is not armed.
    pub(crate) fn arm(&mut self, queue: &mut Queue) {
        if self.armed {
            return;
        }
        let sqe = opcode::Read::new(Fd(self.shared.eventfd.as_raw_fd()), self.buf.as_ptr(), 8)
            .build()
            .user_data(user_data(Kind::Wake, 0, 0));
        // SAFETY: the kernel writes 8 bytes into `buf`, which we never read or free while the
        // read is in flight (freed only after its completion, or leaked).
        if unsafe { queue.push(&sqe) }.is_ok() {
            self.armed = true;
        }
    }

    /// Whether the eventfd read is armed (else a sleep could miss a wake-up).
    pub(crate) fn is_armed(&self) -> bool {
        self.armed
    }

    /// Handles the eventfd read's completion; returns whether to report a wake-up.
    pub(crate) fn on_complete(&mut self, result: i32) -> Result<bool, i32> {
        self.armed = false;
        match result {
            8 => Ok(true),
            r if r == -libc::ECANCELED => Ok(false),
            r if r == -libc::EAGAIN || r == -libc::EINTR => Ok(false),
            r => Err(-r),
        }
    }

    /// Before sleeping: announce it, and report whether a wake-up is already pending (then do
    /// not sleep).
    pub(crate) fn prepare_sleep(&mut self) -> bool {
        self.shared.sleeping.store(true, Ordering::SeqCst);
        if self.shared.pending.swap(false, Ordering::SeqCst) {
            self.shared.sleeping.store(false, Ordering::SeqCst);
            self.ready = true;
            return true;
        }
        false
    }

    /// After sleeping.
    pub(crate) fn end_sleep(&mut self) {
        self.shared.sleeping.store(false, Ordering::SeqCst);
    }

    /// A `Wake` is being handed out: it covers every earlier `wake()`.
    pub(crate) fn clear_pending(&mut self) {
        self.shared.pending.store(false, Ordering::SeqCst);
    }

    /// Takes an owed `Wake`.
    pub(crate) fn take_ready(&mut self) -> bool {
        std::mem::take(&mut self.ready)
    }

    /// Whether a `Wake` is owed.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready
    }

    /// Never free kernel-shared memory (the read may still be in flight).
    pub(crate) fn leak(&mut self) {
        self.buf.leak();
    }
}
