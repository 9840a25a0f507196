//! One agent process: spawning it in its own process group, signalling the group, noticing its
//! exit, forwarding its output to the log.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use crate::limits::LOG_LINE_BYTES_MAX;
use crate::{ProcessSpec, SupervisorError};

/// A signal sent to an agent's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Asks it to finish.
    Term,
    /// Ends it.
    Kill,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
        }
    }
}

/// The `argv` of a spec with `{socket}` replaced by the agent's socket path.
pub(crate) fn expand_argv(spec: &ProcessSpec) -> Vec<OsString> {
    let socket = spec.socket.as_os_str().to_string_lossy();
    spec.argv
        .iter()
        .map(|arg| OsString::from(arg.replace("{socket}", &socket)))
        .collect()
}

/// Finds the executable `command` names: a path when it has a `/`, else the first match in
/// `path_var` (the `PATH` the child will see).
pub(crate) fn resolve_command(command: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if command.is_empty() {
        return None;
    }
    if command.contains('/') {
        let path = PathBuf::from(command);
        return is_executable(&path).then_some(path);
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(command))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The `PATH` an agent's command is looked up in: its own `env` entry, else ours.
pub(crate) fn child_path_var(spec: &ProcessSpec) -> Option<OsString> {
    spec.env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| OsString::from(v))
        .or_else(|| std::env::var_os("PATH"))
}

/// Checks that a spec's command can be found, naming the agent and command when not.
pub(crate) fn check_command(spec: &ProcessSpec) -> Result<(), SupervisorError> {
    let Some(command) = spec.argv.first() else {
        return Err(SupervisorError::EmptyCommand {
            agent_id: spec.agent_id.clone(),
        });
    };
    match resolve_command(command, child_path_var(spec).as_deref()) {
        Some(_) => Ok(()),
        None => Err(SupervisorError::CommandNotFound {
            agent_id: spec.agent_id.clone(),
            command: command.clone(),
        }),
    }
}

/// A running (or exited but not yet reaped) agent process, leader of its own process group.
/// Dropping it unreaped kills the whole group and reaps the leader.
#[derive(Debug)]
pub(crate) struct AgentProcess {
    child: Child,
    reaped: bool,
}

impl AgentProcess {
    /// Starts the agent: own process group, stdin from /dev/null, stdout and stderr forwarded
    /// line by line to the log.
    pub(crate) fn spawn(spec: &ProcessSpec) -> Result<Self, SupervisorError> {
        check_command(spec)?;
        let argv = expand_argv(spec);
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| SupervisorError::EmptyCommand {
                agent_id: spec.agent_id.clone(),
            })?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // Agents die with turnstile, even when turnstile is killed outright.
        turnstile_uring::process::terminate_with_parent(&mut command);
        let mut child = command.spawn().map_err(|source| {
            let command = spec.argv[0].clone();
            let agent_id = spec.agent_id.clone();
            if source.kind() == io::ErrorKind::NotFound {
                SupervisorError::CommandNotFound { agent_id, command }
            } else {
                SupervisorError::Spawn {
                    agent_id,
                    command,
                    source,
                }
            }
        })?;
        if let Some(out) = child.stdout.take() {
            forward_output(&spec.agent_id, "stdout", out);
        }
        if let Some(err) = child.stderr.take() {
            forward_output(&spec.agent_id, "stderr", err);
        }
        Ok(Self {
            child,
            reaped: false,
        })
    }

    /// Its pid, which is also its process group id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the whole process group (with the `kill` command: this crate makes no
    /// raw system calls). If that command cannot run, SIGKILL still reaches the leader through
    /// [`Child::kill`]; SIGTERM is then skipped (the grace period ends in SIGKILL anyway).
    pub(crate) fn signal_group(&mut self, signal: Signal) {
        if self.reaped {
            return;
        }
        if let Err(e) = kill_group(self.pid(), signal) {
            tracing::warn!(pid = self.pid(), signal = signal.name(), error = %e,
                "cannot signal agent process group with `kill`");
            if signal == Signal::Kill {
                let _ = self.child.kill();
            }
        }
    }

    /// Returns the exit status once the leader has exited, and reaps it. While the leader is a
    /// zombie its pid still names the group, so whatever is left of the group (processes the
    /// agent started) is killed first: an agent's dying leaves no orphans behind.
    pub(crate) fn poll_exit(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.reaped {
            return Ok(None);
        }
        let status = match leader_state(self.pid()) {
            Some('Z') => {
                let _ = kill_group(self.pid(), Signal::Kill);
                self.child.wait().map(Some)
            }
            Some(_) => Ok(None),
            // No procfs (or already reaped elsewhere): reap directly, without the group sweep.
            None => self.child.try_wait(),
        };
        // After an error (ECHILD: reaped by someone else) there is nothing left to wait for,
        // and its pid may be reused: never signal it again.
        if !matches!(status, Ok(None)) {
            self.reaped = true;
        }
        status
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if !self.reaped {
            self.signal_group(Signal::Kill);
            let _ = self.child.wait();
            self.reaped = true;
        }
    }
}

/// `kill -s <SIG> -- -<pgid>`, output discarded; an error when it cannot run or fails.
fn kill_group(pgid: u32, signal: Signal) -> io::Result<()> {
    let status = Command::new("kill")
        .args(["-s", signal.name(), "--"])
        .arg(format!("-{pgid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill exited with {status}")))
    }
}

/// The state letter of a process in `/proc/<pid>/stat` (`Z` for a zombie); `None` when it
/// cannot be read.
fn leader_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may hold spaces and parentheses, so look after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// Forwards one output stream of an agent to `tracing` on a thread of its own, which ends at
/// end of file (when every process holding the pipe is gone).
fn forward_output(agent_id: &str, stream: &'static str, reader: impl Read + Send + 'static) {
    let agent = agent_id.to_owned();
    let spawned = std::thread::Builder::new()
        .name(format!("agent-{stream}"))
        .spawn(move || {
            let result = for_each_line(reader, LOG_LINE_BYTES_MAX, |line, truncated| {
                tracing::info!(target: "turnstile::agent", agent = %agent, stream, truncated,
                    "{}", String::from_utf8_lossy(line));
            });
            if let Err(e) = result {
                tracing::debug!(agent = %agent, stream, error = %e, "agent output ended");
            }
        });
    if let Err(e) = spawned {
        // The pipe is dropped with the closure: the agent gets EPIPE on writes, nothing worse.
        tracing::warn!(agent = %agent_id, stream, error = %e, "cannot forward agent output");
    }
}

/// Calls `emit(line, truncated)` for each line of `reader` (without its newline), keeping at most
/// `max` bytes of each; a last line without newline is emitted too.
pub(crate) fn for_each_line(
    reader: impl Read,
    max: usize,
    mut emit: impl FnMut(&[u8], bool),
) -> io::Result<()> {
    let mut reader = BufReader::new(reader);
    let mut line: Vec<u8> = Vec::with_capacity(max.min(1024));
    let mut truncated = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            if !line.is_empty() || truncated {
                emit(&line, truncated);
            }
            return Ok(());
        }
        let (chunk, used, end_of_line) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = max - line.len();
        if chunk.len() > room {
            truncated = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if end_of_line {
            emit(&line, truncated);
            line.clear();
            truncated = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for_each_line(input, max, |l, t| {
            out.push((String::from_utf8_lossy(l).into_owned(), t))
        })
        .expect("reading a slice cannot fail");
        out
    }

    #[test]
    fn splits_and_bounds_lines() {
        assert_eq!(
            lines(b"one\ntwo\n\nlast", 10),
            vec![
                ("one".into(), false),
                ("two".into(), false),
                ("".into(), false),
                ("last".into(), false)
            ]
        );
        assert_eq!(
            lines(b"0123456789abc\nok\n0123456789", 4),
            vec![
                ("0123".into(), true),
                ("ok".into(), false),
                ("0123".into(), true)
            ]
        );
        assert!(lines(b"", 4).is_empty());
    }

    #[test]
    fn long_line_across_buffer_refills() {
        let mut input = vec![b'x'; 20_000];
        input.push(b'\n');
        input.extend_from_slice(b"next\n");
        let out = lines(&input, 100);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0.len(), 100);
        assert!(out[0].1);
        assert_eq!(out[1], ("next".into(), false));
    }

    #[test]
    fn resolves_commands() {
        let path = std::env::var_os("PATH");
        assert!(resolve_command("sh", path.as_deref()).is_some());
        assert!(resolve_command("no-such-command-turnstile", path.as_deref()).is_none());
        assert!(resolve_command("/no/such/file", path.as_deref()).is_none());
        assert!(resolve_command("", path.as_deref()).is_none());
    }
}
