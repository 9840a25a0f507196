//! Process-level helpers that need a system call the standard library does not offer.

use std::process::Command;

/// Makes the child started by `command` receive SIGTERM when the thread that started it (in
/// practice: the turnstile process) dies, however it dies — SIGKILL included — so supervised
/// agents never outlive turnstile as orphans.
///
/// Linux's `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits; call this from
/// a thread that lives as long as the children (the supervisor thread does).
pub fn terminate_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    let hook = move || -> std::io::Result<()> {
        // SAFETY: PR_SET_PDEATHSIG takes a signal number as its only argument; prctl is a plain
        // system call, safe to make between fork and exec.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The parent may have died before the prctl: then nobody would ever signal us.
        // SAFETY: getppid has no preconditions and is async-signal-safe.
        if unsafe { libc::getppid() } != parent {
            return Err(std::io::Error::other(
                "parent exited before the child started",
            ));
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec, where only async-signal-safe
    // functions may be called: it makes two system calls, takes no lock, does not allocate on
    // success and captures only a `Copy` pid.
    unsafe {
        command.pre_exec(hook);
    }
}
