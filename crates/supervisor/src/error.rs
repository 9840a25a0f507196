//! What can go wrong while supervising agents.

use std::io;
use std::path::PathBuf;

/// Why an agent could not be (re)started, or why a runtime directory or socket was refused.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The agent's command does not exist (or is not an executable file), neither as a path nor
    /// in `PATH`.
    #[error("agent {agent_id:?}: command {command:?} not found (or not executable)")]
    CommandNotFound {
        /// The agent whose command it is.
        agent_id: String,
        /// The command as configured (`argv[0]`).
        command: String,
    },
    /// Starting the agent's process failed for another reason.
    #[error("agent {agent_id:?}: cannot start {command:?}: {source}")]
    Spawn {
        /// The agent.
        agent_id: String,
        /// The command as configured (`argv[0]`).
        command: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// An agent was configured with an empty command.
    #[error("agent {agent_id:?}: empty command")]
    EmptyCommand {
        /// The agent.
        agent_id: String,
    },
    /// An agent id that is not 1 to 64 characters of `[a-z0-9_-]`.
    #[error("invalid agent id {0:?}: expected 1 to 64 characters of [a-z0-9_-]")]
    InvalidAgentId(String),
    /// Two agents with the same id.
    #[error("agent id {0:?} appears more than once")]
    DuplicateAgent(String),
    /// More agents than [`crate::limits::AGENTS_MAX`].
    #[error("{count} agents to supervise, at most {max}")]
    TooManyAgents {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// No agent with that id is supervised.
    #[error("no supervised agent {0:?}")]
    UnknownAgent(String),
    /// Too many commands are queued for the supervisor thread; try again later.
    #[error("the supervisor's command queue is full")]
    Busy,
    /// The supervisor has stopped (after `stop_all`, or its thread is gone).
    #[error("the supervisor has stopped")]
    Stopped,
    /// The supervisor thread could not be started.
    #[error("cannot start the supervisor thread: {0}")]
    Thread(#[source] io::Error),
    /// Our own uid could not be found.
    #[error("cannot find our uid from /proc/self: {0}")]
    Uid(#[source] io::Error),
    /// The runtime directory could not be created or read.
    #[error("runtime directory {}: {source}", path.display())]
    RuntimeDirIo {
        /// The directory.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The runtime directory path exists but is not a directory (a symlink is refused too).
    #[error("runtime directory {} is not a directory (symlinks are refused)", path.display())]
    RuntimeDirNotDir {
        /// The path.
        path: PathBuf,
    },
    /// The runtime directory belongs to someone else.
    #[error("runtime directory {} is owned by uid {actual}, expected uid {expected}", path.display())]
    RuntimeDirOwner {
        /// The directory.
        path: PathBuf,
        /// Our uid.
        expected: u32,
        /// Its owner.
        actual: u32,
    },
    /// The runtime directory is writable by group or others.
    #[error("runtime directory {} has mode {mode:04o}: group or world writable", path.display())]
    RuntimeDirMode {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A socket path longer than a Unix socket address can hold.
    #[error("socket path {} is {len} bytes, at most {max}", path.display())]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No socket file at the path.
    #[error("socket {} does not exist", path.display())]
    SocketMissing {
        /// The path.
        path: PathBuf,
    },
    /// The socket file could not be read or changed.
    #[error("socket {}: {source}", path.display())]
    SocketIo {
        /// The path.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The path exists but is not a socket (a symlink is refused too).
    #[error("{} is not a socket (symlinks are refused)", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The socket file belongs to another uid than the configured one.
    #[error("socket {} is owned by uid {actual}, expected uid {expected}", path.display())]
    SocketOwner {
        /// The path.
        path: PathBuf,
        /// The configured uid.
        expected: u32,
        /// Its owner.
        actual: u32,
    },
    /// The socket file's mode is not 0600 and it is not ours to tighten.
    #[error("socket {} has mode {mode:04o}, expected 0600", path.display())]
    SocketMode {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}
