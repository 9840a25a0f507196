//! The few raw system calls io_uring cannot do for us: integer socket options and eventfd.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `SOL_UDP` option: receive coalesced (GRO) batches with a segment-size control message.
pub(crate) const UDP_GRO: libc::c_int = 104;
/// `SOL_UDP` option / control message: GSO segment size.
pub(crate) const UDP_SEGMENT: libc::c_int = 103;
/// `SOL_SOCKET` option: report the socket's drop counter as a control message.
pub(crate) const SO_RXQ_OVFL: libc::c_int = 40;
/// `SOL_SOCKET` option: like `SO_RCVBUF` but ignores `net.core.rmem_max` (needs
/// `CAP_NET_ADMIN`).
pub(crate) const SO_RCVBUFFORCE: libc::c_int = 33;
/// `SOL_SOCKET` option: like `SO_SNDBUF` but ignores `net.core.wmem_max`.
pub(crate) const SO_SNDBUFFORCE: libc::c_int = 32;

/// Sets an `int`-valued socket option.
pub(crate) fn setsockopt_int(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a live `c_int` on our stack and `len` is exactly its size; the kernel
    // only reads it during the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an `int`-valued socket option.
pub(crate) fn getsockopt_int(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; `len` tells the kernel it may write at most
    // `size_of::<c_int>()` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates a non-blocking, close-on-exec eventfd with a zero counter.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain system call with constant flags; no pointers involved.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by `eventfd`, is valid, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to an eventfd counter. `EAGAIN` (counter saturated, so a wake-up is already pending)
/// counts as success.
pub(crate) fn eventfd_signal(fd: &OwnedFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local `u64`, the size eventfd requires.
    let rc = unsafe {
        libc::write(
            fd.as_raw_fd(),
            std::ptr::from_ref(&one).cast(),
            std::mem::size_of::<u64>(),
        )
    };
    if rc == 8 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EAGAIN) {
        Ok(())
    } else {
        Err(err)
    }
}
