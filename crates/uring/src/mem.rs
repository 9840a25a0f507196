//! Memory shared with the kernel.
//!
//! Buffers that the kernel reads or writes while an operation is in flight are never held as a
//! Rust `Box`/`Vec` (whose unique-ownership guarantees the kernel would break); they live in a
//! [`KernelMem`]: a raw, page-aligned, zeroed allocation that hands out slices only for ranges
//! the caller vouches no operation is using.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;

/// Alignment of every allocation (the buffer ring must be page aligned).
const PAGE_BYTES: usize = 4096;

/// A page-aligned, zero-initialised heap allocation shared with the kernel.
pub(crate) struct KernelMem {
    ptr: NonNull<u8>,
    layout: Layout,
    leaked: bool,
}

impl KernelMem {
    /// Allocates `len` zeroed bytes (at least one page).
    pub(crate) fn new(len: usize) -> io::Result<Self> {
        let size = len.max(PAGE_BYTES).next_multiple_of(PAGE_BYTES);
        let layout = Layout::from_size_align(size, PAGE_BYTES)
            .map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: `layout` has a non-zero size (at least one page).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Self {
            ptr,
            layout,
            leaked: false,
        })
    }

    /// Usable length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }

    /// Base pointer. Writing through it is only sound for ranges no in-flight operation uses.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Address of byte `offset`, as the kernel ABI wants it.
    pub(crate) fn addr(&self, offset: usize) -> u64 {
        assert!(offset <= self.len(), "offset {offset} past allocation");
        self.as_ptr() as u64 + offset as u64
    }

    fn check(&self, offset: usize, len: usize) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len()),
            "range {offset}+{len} past allocation of {}",
            self.len()
        );
    }

    /// Borrows `len` bytes at `offset`.
    ///
    /// # Safety
    ///
    /// The kernel must not write the range for as long as the slice lives (no in-flight
    /// operation targets it, and none is started while the borrow is alive).
    pub(crate) unsafe fn slice(&self, offset: usize, len: usize) -> &[u8] {
        self.check(offset, len);
        // SAFETY: in bounds (checked above) and initialised (zeroed at allocation, then only
        // written with initialised bytes); the caller guarantees no concurrent kernel writes.
        unsafe { std::slice::from_raw_parts(self.as_ptr().add(offset), len) }
    }

    /// Copies `data` to `offset`.
    ///
    /// # Safety
    ///
    /// No in-flight operation may read or write the destination range.
    pub(crate) unsafe fn write(&self, offset: usize, data: &[u8]) {
        self.check(offset, data.len());
        // SAFETY: in bounds (checked above); `data` is a separate Rust borrow so it cannot
        // overlap memory the caller is allowed to write; the caller guarantees exclusivity.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr().add(offset), data.len());
        }
    }

    /// Moves `len` bytes from `src` to `dst` (ranges may overlap).
    ///
    /// # Safety
    ///
    /// No in-flight operation may read or write either range.
    pub(crate) unsafe fn copy_within(&self, src: usize, dst: usize, len: usize) {
        self.check(src, len);
        self.check(dst, len);
        // SAFETY: both ranges are in bounds (checked above); `copy` allows overlap; the caller
        // guarantees the kernel uses neither range.
        unsafe { std::ptr::copy(self.as_ptr().add(src), self.as_ptr().add(dst), len) }
    }

    /// Never free this allocation: used when the kernel may still own part of it.
    pub(crate) fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for KernelMem {
    fn drop(&mut self) {
        if !self.leaked {
            // SAFETY: `ptr` came from `alloc_zeroed` with exactly this layout and is freed once;
            // owners call `leak` instead when an operation might still use the memory.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_aligned_zeroed_and_bounded() {
        let mem = KernelMem::new(10).expect("alloc");
        assert_eq!(mem.as_ptr() as usize % PAGE_BYTES, 0);
        assert_eq!(mem.len(), PAGE_BYTES);
        // SAFETY: no kernel operation uses this memory in the test.
        unsafe {
            mem.write(3, b"abc");
            assert_eq!(mem.slice(0, 7), b"\0\0\0abc\0");
            mem.copy_within(3, 4, 3);
            assert_eq!(mem.slice(3, 4), b"aabc");
        }
    }

    #[test]
    #[should_panic(expected = "past allocation")]
    fn out_of_bounds_panics() {
        let mem = KernelMem::new(PAGE_BYTES).expect("alloc");
        // SAFETY: no kernel operation uses this memory; the call panics before any access.
        let _ = unsafe { mem.slice(PAGE_BYTES - 1, 2) };
    }
}
