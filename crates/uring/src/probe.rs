//! Start-up probe: can this process use io_uring, with every opcode and feature this crate
//! needs? If not, say exactly why and how to fix it.

use std::fmt;
use std::io;
use std::time::Duration;

use io_uring::types::{CancelBuilder, Fd};
use io_uring::{IoUring, Probe, opcode};
use socket2::{Domain, Protocol, Socket, Type};

use crate::bufring::BufRing;
use crate::queue::{Kind, Queue, user_data};
use crate::sys;

/// Which task-work flags a ring is created with. Decides how completions of socket
/// operations become visible; see [`crate::Ring::submit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetupMode {
    /// The best the kernel offers: [`SetupMode::DeferTaskrun`], else
    /// [`SetupMode::CoopTaskrun`], else [`SetupMode::Plain`].
    #[default]
    Auto,
    /// `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG | SUBMIT_ALL` (Linux >= 6.1): completion
    /// work runs only when this thread enters the kernel; the kernel flags pending work in the
    /// SQ ring so a spinning poll enters only when needed.
    DeferTaskrun,
    /// `COOP_TASKRUN | TASKRUN_FLAG | SUBMIT_ALL` (Linux >= 5.19): no inter-processor interrupt
    /// for completions; pending work is flagged like above.
    CoopTaskrun,
    /// No task-work flags: completions interrupt the thread (IPI) and appear on their own.
    /// Required with SQPOLL.
    Plain,
}

/// Why io_uring cannot be used. The message names the cause and the fix.
#[derive(Debug, thiserror::Error)]
pub enum UringUnavailable {
    /// `kernel.io_uring_disabled = 2`.
    #[error(
        "io_uring is disabled by sysctl kernel.io_uring_disabled=2; run `sysctl -w kernel.io_uring_disabled=0` as root"
    )]
    DisabledBySysctl,
    /// `kernel.io_uring_disabled = 1` and this process is neither in the group nor privileged.
    #[error(
        "io_uring is restricted by sysctl kernel.io_uring_disabled=1 to group {gid} (kernel.io_uring_group) and CAP_SYS_ADMIN; run as a member of that group, or run `sysctl -w kernel.io_uring_disabled=0` as root"
    )]
    RestrictedToGroup {
        /// Value of `kernel.io_uring_group`, or `unknown`.
        gid: String,
    },
    /// `EPERM` although the sysctl allows io_uring: a seccomp filter.
    #[error(
        "io_uring_setup returned EPERM although kernel.io_uring_disabled={sysctl}: a seccomp filter (e.g. a container runtime's default profile) blocks io_uring; run with a profile that allows io_uring_setup/io_uring_enter/io_uring_register"
    )]
    Seccomp {
        /// Value of `kernel.io_uring_disabled`, or `absent`.
        sysctl: String,
    },
    /// `ENOSYS`: no io_uring in this kernel, or a filter that answers `ENOSYS`.
    #[error(
        "io_uring_setup returned ENOSYS: the kernel is built without io_uring (CONFIG_IO_URING) or predates Linux 5.1, or a seccomp filter answers ENOSYS; run on Linux >= 6.1 with io_uring, with io_uring_setup/io_uring_enter/io_uring_register allowed"
    )]
    NotImplemented,
    /// `EACCES`: a security module said no.
    #[error(
        "io_uring_setup returned EACCES: a security module (SELinux or AppArmor policy) denies io_uring to this process; allow it in the policy"
    )]
    DeniedBySecurityModule,
    /// `ENOMEM`: the rings do not fit the locked-memory limit.
    #[error(
        "io_uring_setup returned ENOMEM: the rings exceed the locked-memory limit (kernels before 5.12 charge them to RLIMIT_MEMLOCK); raise it (`ulimit -l`, LimitMEMLOCK=) or use fewer entries"
    )]
    MemoryLimit,
    /// `EINVAL` for even the plainest ring.
    #[error("kernel too old: io_uring_setup rejected {what} (EINVAL); needs Linux >= {needs}")]
    KernelTooOld {
        /// What was rejected.
        what: &'static str,
        /// First kernel with it.
        needs: &'static str,
    },
    /// An opcode this crate issues is missing.
    #[error("kernel lacks io_uring opcode {name} (needs Linux >= {needs})")]
    MissingOpcode {
        /// Opcode name.
        name: &'static str,
        /// First kernel with it.
        needs: &'static str,
    },
    /// A feature this crate relies on is missing.
    #[error("kernel lacks io_uring feature {name} (needs Linux >= {needs})")]
    MissingFeature {
        /// Feature name.
        name: &'static str,
        /// First kernel with it.
        needs: &'static str,
    },
    /// An explicitly requested [`SetupMode`] is not supported.
    #[error(
        "io_uring setup mode {mode:?} is not supported by this kernel (needs Linux >= {needs})"
    )]
    SetupModeUnsupported {
        /// Requested mode.
        mode: SetupMode,
        /// First kernel with it.
        needs: &'static str,
    },
    /// Any other failure while probing.
    #[error("io_uring {action} failed: {source}")]
    Io {
        /// What failed.
        action: &'static str,
        /// Kernel error.
        #[source]
        source: io::Error,
    },
}

/// What the kernel offers, beyond the minimum this crate requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// `uname -r`.
    pub kernel_release: String,
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0).
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1).
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` (5.19).
    pub coop_taskrun: bool,
    /// The mode [`SetupMode::Auto`] picks here.
    pub auto_mode: SetupMode,
    /// `UDP_SEGMENT` (GSO) on send.
    pub udp_gso: bool,
    /// `UDP_GRO` on receive.
    pub udp_gro: bool,
    /// `IORING_OP_MSG_RING` (5.18).
    pub msg_ring: bool,
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "io_uring ok on Linux {}: mode={:?} single_issuer={} defer_taskrun={} coop_taskrun={} udp_gso={} udp_gro={} msg_ring={}",
            self.kernel_release,
            self.auto_mode,
            self.single_issuer,
            self.defer_taskrun,
            self.coop_taskrun,
            self.udp_gso,
            self.udp_gro,
            self.msg_ring
        )
    }
}

fn read_proc(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Turns an `io_uring_setup` error into the explanation the operator needs.
pub(crate) fn classify_setup_error(err: io::Error) -> UringUnavailable {
    match err.raw_os_error() {
        Some(libc::ENOSYS) => UringUnavailable::NotImplemented,
        Some(libc::EACCES) => UringUnavailable::DeniedBySecurityModule,
        Some(libc::ENOMEM) => UringUnavailable::MemoryLimit,
        Some(libc::EINVAL) => UringUnavailable::KernelTooOld {
            what: "a plain ring",
            needs: "5.1",
        },
        Some(libc::EPERM) => match read_proc("/proc/sys/kernel/io_uring_disabled").as_deref() {
            Some("2") => UringUnavailable::DisabledBySysctl,
            Some("1") => UringUnavailable::RestrictedToGroup {
                gid: read_proc("/proc/sys/kernel/io_uring_group")
                    .unwrap_or_else(|| "unknown".to_owned()),
            },
            other => UringUnavailable::Seccomp {
                sysctl: other.unwrap_or("absent").to_owned(),
            },
        },
        _ => UringUnavailable::Io {
            action: "setup",
            source: err,
        },
    }
}

/// Parameters for creating an io_uring instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingParams {
    pub(crate) entries: u32,
    pub(crate) cq_entries: u32,
    pub(crate) mode: SetupMode,
    pub(crate) sqpoll_idle_ms: Option<u32>,
    pub(crate) sqpoll_cpu: Option<u32>,
}

fn try_build(p: &RingParams, mode: SetupMode) -> io::Result<IoUring> {
    let mut b = IoUring::builder();
    b.setup_cqsize(p.cq_entries);
    match mode {
        SetupMode::DeferTaskrun => {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag()
                .setup_submit_all();
        }
        SetupMode::CoopTaskrun => {
            b.setup_coop_taskrun()
                .setup_taskrun_flag()
                .setup_submit_all();
        }
        SetupMode::Plain | SetupMode::Auto => {}
    }
    if let Some(idle) = p.sqpoll_idle_ms {
        b.setup_sqpoll(idle);
        if let Some(cpu) = p.sqpoll_cpu {
            b.setup_sqpoll_cpu(cpu);
        }
    }
    b.build(p.entries)
}

fn needs(mode: SetupMode) -> &'static str {
    match mode {
        SetupMode::DeferTaskrun => "6.1",
        SetupMode::CoopTaskrun => "5.19",
        SetupMode::Plain | SetupMode::Auto => "5.1",
    }
}

/// Creates a ring, walking down from the best [`SetupMode`] for `Auto`. Returns the mode used.
pub(crate) fn build_ring(p: &RingParams) -> Result<(IoUring, SetupMode), UringUnavailable> {
    let ladder: &[SetupMode] = match (p.mode, p.sqpoll_idle_ms.is_some()) {
        // SQPOLL excludes the task-run flags: the poll thread runs completion work itself.
        (SetupMode::Auto | SetupMode::Plain, true) => &[SetupMode::Plain],
        (mode, true) => {
            return Err(UringUnavailable::SetupModeUnsupported {
                mode,
                needs: "never (SQPOLL excludes task-run flags)",
            });
        }
        (SetupMode::Auto, false) => &[
            SetupMode::DeferTaskrun,
            SetupMode::CoopTaskrun,
            SetupMode::Plain,
        ],
        (SetupMode::DeferTaskrun, false) => &[SetupMode::DeferTaskrun],
        (SetupMode::CoopTaskrun, false) => &[SetupMode::CoopTaskrun],
        (SetupMode::Plain, false) => &[SetupMode::Plain],
    };
    let mut last = None;
    for &mode in ladder {
        match try_build(p, mode) {
            Ok(ring) => return Ok((ring, mode)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(mode),
            Err(e) => return Err(classify_setup_error(e)),
        }
    }
    Err(match last {
        Some(SetupMode::Plain) | None => UringUnavailable::KernelTooOld {
            what: if p.sqpoll_idle_ms.is_some() {
                "an SQPOLL ring"
            } else {
                "a plain ring"
            },
            needs: "5.11",
        },
        Some(mode) => UringUnavailable::SetupModeUnsupported {
            mode,
            needs: needs(mode),
        },
    })
}

/// Opcodes issued by this crate, with the first kernel that has them.
const REQUIRED_OPCODES: &[(u8, &str, &str)] = &[
    (opcode::RecvMsg::CODE, "RECVMSG", "5.3"),
    (opcode::SendMsg::CODE, "SENDMSG", "5.3"),
    (opcode::Timeout::CODE, "TIMEOUT", "5.4"),
    (opcode::TimeoutRemove::CODE, "TIMEOUT_REMOVE", "5.5"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL", "5.5"),
    (opcode::Connect::CODE, "CONNECT", "5.5"),
    (opcode::Close::CODE, "CLOSE", "5.6"),
    (opcode::Read::CODE, "READ", "5.6"),
    (opcode::Send::CODE, "SEND", "5.6"),
    (opcode::Recv::CODE, "RECV", "5.6"),
];

/// Checks ring features and opcodes every ring needs.
pub(crate) fn check_ring(ring: &IoUring) -> Result<(), UringUnavailable> {
    let params = ring.params();
    let features: [(bool, &str, &str); 3] = [
        (params.is_feature_nodrop(), "NODROP", "5.5"),
        (params.is_feature_fast_poll(), "FAST_POLL", "5.7"),
        (params.is_feature_ext_arg(), "EXT_ARG", "5.11"),
    ];
    for (present, name, needs) in features {
        if !present {
            return Err(UringUnavailable::MissingFeature { name, needs });
        }
    }
    let probe = register_probe(ring)?;
    for &(code, name, needs) in REQUIRED_OPCODES {
        if !probe.is_supported(code) {
            return Err(UringUnavailable::MissingOpcode { name, needs });
        }
    }
    Ok(())
}

fn register_probe(ring: &IoUring) -> Result<Probe, UringUnavailable> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => UringUnavailable::MissingFeature {
                name: "REGISTER_PROBE",
                needs: "5.6",
            },
            _ => UringUnavailable::Io {
                action: "register_probe",
                source: e,
            },
        })?;
    Ok(probe)
}

fn probe_params(mode: SetupMode) -> RingParams {
    RingParams {
        entries: 8,
        cq_entries: 16,
        mode,
        sqpoll_idle_ms: None,
        sqpoll_cpu: None,
    }
}

/// Tries io_uring and everything this crate uses; call once at start-up.
///
/// Creates a few small rings, checks the opcodes and features, registers a provided-buffer
/// ring and arms (then cancels) a multishot `recvmsg` on a throwaway UDP socket.
pub fn probe() -> Result<ProbeReport, UringUnavailable> {
    let (ring, auto_mode) = build_ring(&probe_params(SetupMode::Auto))?;
    check_ring(&ring)?;
    let msg_ring = register_probe(&ring)?.is_supported(opcode::MsgRingData::CODE);
    check_multishot_recvmsg(ring)?;

    let works = |mode| try_build(&probe_params(mode), mode).is_ok();
    let single_issuer = {
        let mut b = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder();
        b.setup_single_issuer();
        b.build(8).is_ok()
    };
    let udp = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| {
        UringUnavailable::Io {
            action: "create a UDP socket",
            source: e,
        }
    })?;
    Ok(ProbeReport {
        kernel_release: read_proc("/proc/sys/kernel/osrelease")
            .unwrap_or_else(|| "unknown".to_owned()),
        single_issuer,
        defer_taskrun: works(SetupMode::DeferTaskrun),
        coop_taskrun: works(SetupMode::CoopTaskrun),
        auto_mode,
        udp_gso: sys::getsockopt_int(&udp, libc::SOL_UDP, sys::UDP_SEGMENT).is_ok(),
        udp_gro: sys::setsockopt_int(&udp, libc::SOL_UDP, sys::UDP_GRO, 1).is_ok(),
        msg_ring,
    })
}

/// Arms a multishot `recvmsg` with a registered buffer ring, then cancels it. Older kernels
/// reject the buffer ring (< 5.19) or the multishot flag (< 6.0) with `EINVAL`.
fn check_multishot_recvmsg(ring: IoUring) -> Result<(), UringUnavailable> {
    let io = |action| move |source| UringUnavailable::Io { action, source };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(io("create a UDP socket"))?;
    let mut queue = Queue::new(ring);
    let mut bufs = BufRing::new(&queue.uring, 0, 1, 4096).map_err(|e| {
        if e.raw_os_error() == Some(libc::EINVAL) {
            UringUnavailable::MissingFeature {
                name: "provided buffer rings (REGISTER_PBUF_RING)",
                needs: "5.19",
            }
        } else {
            UringUnavailable::Io {
                action: "register a buffer ring",
                source: e,
            }
        }
    })?;
    let msghdr = Box::new(crate::udp::recv_msghdr());
    let recv = opcode::RecvMsgMulti::new(
        io_uring::types::Fd(std::os::fd::AsRawFd::as_raw_fd(&socket)),
        &raw const *msghdr,
        0,
    )
    .build()
    .user_data(user_data(Kind::UdpRecv, 0, 0));
    let cancel = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(std::os::fd::AsRawFd::as_raw_fd(
        &socket,
    ))))
    .build()
    .user_data(user_data(Kind::Cancel, 0, 0));
    // SAFETY: the receive writes only into `bufs` (kept alive below until its terminal
    // completion, or leaked) and reads `msghdr` at submission; the cancel has no buffers.
    let pushed = unsafe { queue.push(&recv).is_ok() && queue.push(&cancel).is_ok() };
    let mut recv_result = None;
    if pushed {
        for _ in 0..100 {
            if queue.inflight() == 0 {
                break;
            }
            queue
                .enter_and_wait(Some(Duration::from_millis(10)))
                .map_err(io("wait for the probe's completions"))?;
            while let Some(cqe) = queue.pop() {
                if cqe.user_data() == user_data(Kind::UdpRecv, 0, 0) {
                    recv_result = Some(cqe.result());
                }
            }
        }
    }
    if queue.inflight() == 0 {
        bufs.unregister(&queue.uring);
    } else {
        // The kernel may still own the buffer: never free it.
        bufs.leak();
        std::mem::forget(msghdr);
    }
    match recv_result {
        Some(r) if r == -libc::EINVAL => Err(UringUnavailable::MissingFeature {
            name: "multishot recvmsg (IORING_RECV_MULTISHOT)",
            needs: "6.0",
        }),
        Some(_) => Ok(()),
        None => Err(UringUnavailable::Io {
            action: "probe multishot recvmsg",
            source: io::Error::from(io::ErrorKind::TimedOut),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(errno: i32) -> String {
        classify_setup_error(io::Error::from_raw_os_error(errno)).to_string()
    }

    #[test]
    fn setup_errors_explain_cause_and_fix() {
        assert!(message(libc::ENOSYS).contains("CONFIG_IO_URING"));
        assert!(message(libc::EACCES).contains("security module"));
        assert!(message(libc::ENOMEM).contains("ulimit -l"));
        assert!(message(libc::EINVAL).contains("needs Linux >= 5.1"));
        // EPERM depends on the sysctl; here io_uring is enabled, so it must be seccomp.
        if read_proc("/proc/sys/kernel/io_uring_disabled").as_deref() == Some("0") {
            let msg = message(libc::EPERM);
            assert!(msg.contains("seccomp"), "{msg}");
            assert!(msg.contains("io_uring_setup/io_uring_enter/io_uring_register"));
        }
        assert_eq!(
            UringUnavailable::DisabledBySysctl.to_string(),
            "io_uring is disabled by sysctl kernel.io_uring_disabled=2; run `sysctl -w kernel.io_uring_disabled=0` as root"
        );
        assert_eq!(
            UringUnavailable::MissingFeature {
                name: "multishot recvmsg (IORING_RECV_MULTISHOT)",
                needs: "6.0"
            }
            .to_string(),
            "kernel lacks io_uring feature multishot recvmsg (IORING_RECV_MULTISHOT) (needs Linux >= 6.0)"
        );
    }

    #[test]
    fn sqpoll_excludes_taskrun_modes() {
        let params = RingParams {
            entries: 8,
            cq_entries: 16,
            mode: SetupMode::DeferTaskrun,
            sqpoll_idle_ms: Some(10),
            sqpoll_cpu: None,
        };
        assert!(matches!(
            build_ring(&params),
            Err(UringUnavailable::SetupModeUnsupported { .. })
        ));
    }
}
