//! A counting global allocator for allocation tests ("the hot path allocates nothing").
//!
//! It lives here because a `GlobalAlloc` implementation is `unsafe` and this is the only crate
//! allowed to contain `unsafe`. Counting is per thread and off by default: a test switches it on
//! around the code it measures with [`set_counting`], reads [`count`], and may register a
//! [`set_sampler`] callback (called outside the allocator's re-entrancy, e.g. to capture a
//! backtrace of each counted allocation).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}
static COUNT: AtomicU64 = AtomicU64::new(0);
static SAMPLER: OnceLock<fn()> = OnceLock::new();

/// The system allocator, counting allocations (and reallocations) made by threads that switched
/// counting on.
pub struct CountingAlloc;

impl CountingAlloc {
    /// The allocator, for `#[global_allocator] static A: CountingAlloc = CountingAlloc::new();`.
    pub const fn new() -> Self {
        CountingAlloc
    }
}

impl Default for CountingAlloc {
    fn default() -> Self {
        Self::new()
    }
}

/// Switches counting on or off for the calling thread.
pub fn set_counting(on: bool) {
    ACTIVE.with(|a| a.set(on));
}

/// Allocations counted so far (all threads).
pub fn count() -> u64 {
    COUNT.load(Ordering::Relaxed)
}

/// Sets the count back to zero.
pub fn reset() {
    COUNT.store(0, Ordering::Relaxed);
}

/// Registers a callback run on every counted allocation (once per process). The callback may
/// allocate: allocations it makes are not counted and do not re-enter it.
pub fn set_sampler(f: fn()) {
    let _ = SAMPLER.set(f);
}

fn record() {
    if !ACTIVE.with(Cell::get) || INSIDE.with(Cell::get) {
        return;
    }
    INSIDE.with(|i| i.set(true));
    COUNT.fetch_add(1, Ordering::Relaxed);
    if let Some(f) = SAMPLER.get() {
        f();
    }
    INSIDE.with(|i| i.set(false));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; the bookkeeping around it only
// touches thread-locals and an atomic, and the re-entrancy flag keeps the sampler's own
// allocations from recursing.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: the caller upholds `alloc`'s contract for `layout`; passed through unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record();
        // SAFETY: `ptr` was allocated by `System` through this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}
