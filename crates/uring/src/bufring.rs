//! Provided-buffer ring (`IORING_REGISTER_PBUF_RING`): a ring of buffer descriptors the
//! kernel picks receive buffers from. A buffer handed out in a completion belongs to us until
//! we put its descriptor back.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;

use crate::mem::KernelMem;

/// Bytes of one `struct io_uring_buf { u64 addr; u32 len; u16 bid; u16 resv; }`.
const ENTRY_BYTES: usize = 16;
/// Offset of the ring tail: the `resv` field of entry 0.
const TAIL_OFFSET: usize = 14;

/// A registered buffer ring with `count` buffers of `buf_bytes` each.
pub(crate) struct BufRing {
    ring: KernelMem,
    bufs: KernelMem,
    count: u16,
    buf_bytes: usize,
    bgid: u16,
    tail: u16,
    /// Buffers delivered in completions and not yet given back.
    out: u16,
    registered: bool,
}

impl BufRing {
    /// Allocates the buffers, registers the ring as buffer group `bgid` and fills it.
    pub(crate) fn new(
        uring: &IoUring,
        bgid: u16,
        count: u16,
        buf_bytes: usize,
    ) -> io::Result<Self> {
        assert!(
            count.is_power_of_two(),
            "buffer ring size must be a power of two"
        );
        let ring = KernelMem::new(usize::from(count) * ENTRY_BYTES)?;
        let bufs = KernelMem::new(usize::from(count) * buf_bytes)?;
        // SAFETY: `ring` holds `count` entries, is page aligned and lives in `self` until
        // `unregister` (or is leaked if the kernel might still use it).
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(ring.addr(0), count, bgid, 0)?
        };
        let mut this = Self {
            ring,
            bufs,
            count,
            buf_bytes,
            bgid,
            tail: 0,
            out: count,
            registered: true,
        };
        for bid in 0..count {
            this.give_back(bid);
        }
        Ok(this)
    }

    /// Number of buffers this ring holds.
    pub(crate) fn count(&self) -> u16 {
        self.count
    }

    /// Buffers currently in the kernel's hands (available for receives).
    pub(crate) fn available(&self) -> u16 {
        self.count - self.out
    }

    /// Records that a completion handed buffer `bid` to us.
    pub(crate) fn taken(&mut self, bid: u16) {
        assert!(
            bid < self.count,
            "kernel returned buffer id {bid} out of range"
        );
        assert!(self.out < self.count, "more buffers taken than exist");
        self.out += 1;
    }

    /// Borrows the first `len` bytes of buffer `bid`.
    ///
    /// # Safety
    ///
    /// `bid` must have been delivered in a completion ([`BufRing::taken`]) and not given back
    /// while the slice lives.
    pub(crate) unsafe fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        assert!(len <= self.buf_bytes, "length {len} exceeds buffer");
        // SAFETY: the caller guarantees the kernel does not own the buffer right now.
        unsafe { self.bufs.slice(usize::from(bid) * self.buf_bytes, len) }
    }

    /// Puts buffer `bid` back in the ring for the kernel to fill again.
    pub(crate) fn give_back(&mut self, bid: u16) {
        assert!(bid < self.count, "buffer id {bid} out of range");
        assert!(self.out > 0, "buffer given back twice");
        let slot = usize::from(self.tail & (self.count - 1));
        let entry = self.ring.as_ptr().wrapping_add(slot * ENTRY_BYTES);
        let addr = self.bufs.addr(usize::from(bid) * self.buf_bytes);
        // SAFETY: `entry` is in bounds (slot < count) and 16-byte aligned (page-aligned base).
        // The kernel reads only entries between its head and our tail; since at most `count`
        // buffers exist and this one was out, this slot is not among them. We write the
        // addr/len/bid fields only, never `resv`, which for entry 0 is the shared tail.
        unsafe {
            entry.cast::<u64>().write(addr);
            entry.add(8).cast::<u32>().write(self.buf_bytes as u32);
            entry.add(12).cast::<u16>().write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        self.out -= 1;
        // SAFETY: the tail is a u16 at an aligned offset inside the ring allocation, accessed
        // atomically by both sides; the Release store publishes the entry written above.
        let tail = unsafe { &*self.ring.as_ptr().add(TAIL_OFFSET).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Unregisters the ring. Only call when no operation can pick buffers from it any more.
    pub(crate) fn unregister(&mut self, uring: &IoUring) {
        if self.registered {
            self.registered = false;
            let _ = uring.submitter().unregister_buf_ring(self.bgid);
        }
    }

    /// Never free the memory: the kernel may still use it.
    pub(crate) fn leak(&mut self) {
        self.ring.leak();
        self.bufs.leak();
    }
}
