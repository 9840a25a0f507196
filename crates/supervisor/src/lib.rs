//! Owns the lifecycle of the agent processes turnstile starts itself (`command = [...]` in the
//! configuration), and the runtime directory their sockets live in.
//!
//! An agent configured with `command` is started by the [`Supervisor`] in its own process
//! group, restarted with exponential backoff (and jitter) when it dies, restarted at once when
//! asked ([`SupervisorHandle::restart`], for an agent's `restartRequired`), and stopped (SIGTERM,
//! a grace period, SIGKILL, for the whole group) on shutdown. An agent configured with `socket`
//! is run by someone else; [`check_socket`] checks its socket file's owner and mode.
//!
//! This crate does not speak the agent protocol and is not on the request path: the supervisor
//! runs on its own thread, never on a shard, and reports what happens as [`SupervisorEvent`]s.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backoff;
mod error;
pub mod limits;
mod process;
mod runtime_dir;
mod supervisor;

use std::path::PathBuf;
use std::time::Duration;

pub use error::SupervisorError;
pub use runtime_dir::{
    RuntimeDir, check_socket, check_socket_path_len, current_uid, validate_agent_id,
};
pub use supervisor::{Supervisor, SupervisorEvent, SupervisorHandle, wait_ready};

/// How to run one agent process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The agent's id (`[a-z0-9_-]{1,64}`).
    pub agent_id: String,
    /// Command and arguments; the literal `{socket}` in any of them is replaced by
    /// [`ProcessSpec::socket`]. `argv[0]` is a path or a name looked up in `PATH`.
    pub argv: Vec<String>,
    /// Environment variables set for the agent, on top of turnstile's own.
    pub env: Vec<(String, String)>,
    /// Where the agent creates its listening socket; it is ready once that file exists.
    pub socket: PathBuf,
    /// How long the agent gets to create its socket before it is stopped and restarted.
    pub ready_timeout: Duration,
    /// How long the agent gets between SIGTERM and SIGKILL when it is restarted on request or
    /// for not becoming ready (and when stopped by dropping the handle).
    pub stop_grace: Duration,
}

impl ProcessSpec {
    /// A spec with no extra environment and the default ready timeout and stop grace
    /// ([`limits::READY_TIMEOUT_MS_DEFAULT`], [`limits::STOP_GRACE_MS`]).
    pub fn new(agent_id: impl Into<String>, argv: Vec<String>, socket: impl Into<PathBuf>) -> Self {
        Self {
            agent_id: agent_id.into(),
            argv,
            env: Vec::new(),
            socket: socket.into(),
            ready_timeout: Duration::from_millis(limits::READY_TIMEOUT_MS_DEFAULT),
            stop_grace: Duration::from_millis(limits::STOP_GRACE_MS),
        }
    }

    /// Runs the command pinned to `cpus` (util-linux `taskset -c`, so no raw affinity system
    /// call is needed); an empty list leaves it unpinned.
    pub fn pinned(mut self, cpus: &[usize]) -> Self {
        if !cpus.is_empty() {
            let list: Vec<String> = cpus.iter().map(usize::to_string).collect();
            let mut argv = vec!["taskset".to_owned(), "-c".to_owned(), list.join(",")];
            argv.append(&mut self.argv);
            self.argv = argv;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::ProcessSpec;

    #[test]
    fn wait_ready_returns_the_agents_that_never_got_ready() {
        let (tx, rx) = crossbeam_channel::bounded(8);
        tx.send(crate::SupervisorEvent::Started {
            agent_id: "a".into(),
            pid: 1,
        })
        .expect("channel open");
        tx.send(crate::SupervisorEvent::Ready {
            agent_id: "a".into(),
        })
        .expect("channel open");
        let mut seen = 0;
        let late = crate::wait_ready(
            &rx,
            &["a".to_string(), "b".to_string()],
            std::time::Duration::from_millis(50),
            |_| seen += 1,
        );
        assert_eq!(late, vec!["b".to_string()]);
        assert_eq!(seen, 2);
    }

    #[test]
    fn pinning_wraps_the_command_in_taskset() {
        let spec = ProcessSpec::new("a", vec!["agent".into(), "--x".into()], "/s.sock");
        assert_eq!(spec.clone().pinned(&[]).argv, spec.argv);
        assert_eq!(
            spec.pinned(&[0, 1]).argv,
            vec!["taskset", "-c", "0,1", "agent", "--x"]
        );
    }
}
