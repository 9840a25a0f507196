//! The supervisor thread and its handle.

use std::collections::HashSet;
use std::process::ExitStatus;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::backoff::Backoff;
use crate::limits::{AGENTS_MAX, COMMANDS_QUEUED_MAX, POLL_MS, RESTART_BACKOFF_RESET_MS};
use crate::process::{AgentProcess, Signal, check_command};
use crate::runtime_dir::{check_socket_path_len, remove_stale_socket};
use crate::{ProcessSpec, SupervisorError, check_socket, current_uid, validate_agent_id};

/// What happened to a supervised agent. Sent with `try_send`: the supervisor never blocks on a
/// full channel (the event is dropped and logged) and keeps running when it is disconnected.
#[derive(Debug)]
pub enum SupervisorEvent {
    /// The agent's process was started.
    Started {
        /// The agent.
        agent_id: String,
        /// Its pid (also its process group id).
        pid: u32,
    },
    /// The agent's socket file appeared (and was checked: ours, mode 0600).
    Ready {
        /// The agent.
        agent_id: String,
    },
    /// The agent did not create its socket within its ready timeout. It is being stopped (an
    /// [`SupervisorEvent::Exited`] follows) and will be restarted with backoff.
    NotReady {
        /// The agent.
        agent_id: String,
        /// How long it was given.
        waited: Duration,
    },
    /// The agent's process exited (on its own, or stopped by the supervisor).
    Exited {
        /// The agent.
        agent_id: String,
        /// How it ended; `None` when the status could not be read (reaped by someone else).
        status: Option<ExitStatus>,
        /// When it will be started again: zero after [`SupervisorHandle::restart`], the backoff
        /// delay after a crash, `None` when it is not restarted (stopping).
        restart_in: Option<Duration>,
    },
    /// The agent's process could not be started (for instance its command has disappeared). The
    /// supervisor never gives up: it tries again after `restart_in`, with growing backoff.
    SpawnFailed {
        /// The agent.
        agent_id: String,
        /// Why.
        error: SupervisorError,
        /// When it tries again.
        restart_in: Duration,
    },
}

/// Starts the supervisor thread. See [`Supervisor::start`].
#[derive(Debug)]
pub struct Supervisor;

impl Supervisor {
    /// Checks every spec (ids valid and distinct, at most [`AGENTS_MAX`], commands found,
    /// socket paths short enough), then starts the supervisor thread, which starts every agent
    /// and reports to `events`. Nothing is started when a spec is refused.
    pub fn start(
        specs: Vec<ProcessSpec>,
        events: Sender<SupervisorEvent>,
    ) -> Result<SupervisorHandle, SupervisorError> {
        if specs.len() > AGENTS_MAX {
            return Err(SupervisorError::TooManyAgents {
                count: specs.len(),
                max: AGENTS_MAX,
            });
        }
        let mut seen = HashSet::new();
        for spec in &specs {
            validate_agent_id(&spec.agent_id)?;
            if !seen.insert(spec.agent_id.as_str()) {
                return Err(SupervisorError::DuplicateAgent(spec.agent_id.clone()));
            }
            check_command(spec)?;
            check_socket_path_len(&spec.socket)?;
        }
        let uid = current_uid()?;
        let agent_ids: Vec<String> = specs.iter().map(|s| s.agent_id.clone()).collect();
        let now = Instant::now();
        let agents = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| Agent {
                spec,
                backoff: Backoff::new(i as u64),
                state: State::Waiting { until: now },
                socket_warned: false,
            })
            .collect();
        let core = Core {
            agents,
            events,
            uid,
        };
        let (commands, commands_rx) = crossbeam_channel::bounded(COMMANDS_QUEUED_MAX);
        let thread = std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || run(core, commands_rx))
            .map_err(SupervisorError::Thread)?;
        Ok(SupervisorHandle {
            commands,
            agent_ids,
            thread: Some(thread),
        })
    }
}

/// Controls a running supervisor. Dropping it stops every agent (as
/// [`SupervisorHandle::stop_all`] with each agent's own stop grace) and joins the thread.
#[derive(Debug)]
pub struct SupervisorHandle {
    commands: Sender<Command>,
    agent_ids: Vec<String>,
    thread: Option<JoinHandle<()>>,
}

impl SupervisorHandle {
    /// The supervised agents' ids.
    pub fn agent_ids(&self) -> &[String] {
        &self.agent_ids
    }

    /// Restarts an agent now (for `restartRequired`): SIGTERM to its process group, up to its
    /// stop grace, SIGKILL, then started again without backoff. An agent waiting for a backoff
    /// restart is started at once. Returns once the request is queued; never blocks.
    pub fn restart(&self, agent_id: &str) -> Result<(), SupervisorError> {
        if !self.agent_ids.iter().any(|id| id == agent_id) {
            return Err(SupervisorError::UnknownAgent(agent_id.to_owned()));
        }
        match self
            .commands
            .try_send(Command::Restart(agent_id.to_owned()))
        {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SupervisorError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(SupervisorError::Stopped),
        }
    }

    /// Stops every agent: SIGTERM to every process group, up to `grace`, then SIGKILL; reaps
    /// them all and removes their socket files. Blocks until done; the supervisor thread then
    /// ends. Does nothing when already stopped.
    pub fn stop_all(&self, grace: Duration) {
        self.stop(Some(grace));
    }

    fn stop(&self, grace: Option<Duration>) {
        let (done, done_rx) = crossbeam_channel::bounded(1);
        if self.commands.send(Command::StopAll { grace, done }).is_ok() {
            // An error means the thread ended (and its agents were dropped, killing them).
            let _ = done_rx.recv();
        }
    }
}

impl Drop for SupervisorHandle {
    fn drop(&mut self) {
        self.stop(None);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the supervisor thread panicked (its agents were killed)");
            }
        }
    }
}

enum Command {
    Restart(String),
    StopAll {
        grace: Option<Duration>,
        done: Sender<()>,
    },
}

/// What to do once a stopping agent has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    RestartNow,
    Backoff,
    Stop,
}

enum State {
    Running {
        process: AgentProcess,
        started: Instant,
        ready: bool,
    },
    Stopping {
        process: AgentProcess,
        deadline: Instant,
        killed: bool,
        then: Then,
    },
    Waiting {
        until: Instant,
    },
    Stopped,
}

struct Agent {
    spec: ProcessSpec,
    backoff: Backoff,
    state: State,
    /// A socket file that fails [`check_socket`] is logged once per start.
    socket_warned: bool,
}

struct Core {
    agents: Vec<Agent>,
    events: Sender<SupervisorEvent>,
    uid: u32,
}

fn run(mut core: Core, commands: Receiver<Command>) {
    let poll = Duration::from_millis(POLL_MS);
    loop {
        match commands.recv_timeout(poll) {
            Ok(Command::Restart(agent_id)) => core.restart(&agent_id, Instant::now()),
            Ok(Command::StopAll { grace, done }) => {
                core.stop_all(grace);
                let _ = done.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                core.stop_all(None);
                return;
            }
        }
        core.tick(Instant::now());
    }
}

impl Core {
    fn tick(&mut self, now: Instant) {
        for agent in &mut self.agents {
            agent.tick(&self.events, self.uid, now);
        }
    }

    fn restart(&mut self, agent_id: &str, now: Instant) {
        let Some(agent) = self.agents.iter_mut().find(|a| a.spec.agent_id == agent_id) else {
            return;
        };
        tracing::info!(agent = %agent_id, "restart requested");
        match &mut agent.state {
            State::Running { .. } => agent.begin_stop(now, agent.spec.stop_grace, Then::RestartNow),
            State::Stopping { then, .. } => {
                if *then == Then::Backoff {
                    *then = Then::RestartNow;
                }
            }
            State::Waiting { until } => *until = now,
            State::Stopped => {}
        }
    }

    fn stop_all(&mut self, grace: Option<Duration>) {
        let now = Instant::now();
        for agent in &mut self.agents {
            let grace = grace.unwrap_or(agent.spec.stop_grace);
            match &mut agent.state {
                State::Running { .. } => agent.begin_stop(now, grace, Then::Stop),
                State::Stopping { deadline, then, .. } => {
                    *deadline = (*deadline).min(now + grace);
                    *then = Then::Stop;
                }
                State::Waiting { .. } | State::Stopped => agent.state = State::Stopped,
            }
        }
        let poll = Duration::from_millis(POLL_MS);
        while self
            .agents
            .iter()
            .any(|a| matches!(a.state, State::Stopping { .. }))
        {
            std::thread::sleep(poll);
            self.tick(Instant::now());
        }
        for agent in &self.agents {
            remove_stale_socket(&agent.spec.socket);
        }
        tracing::info!(agents = self.agents.len(), "all agents stopped");
    }
}

impl Agent {
    /// SIGTERM to a running agent's group; it gets until `now + grace` before SIGKILL.
    fn begin_stop(&mut self, now: Instant, grace: Duration, then: Then) {
        let state = std::mem::replace(&mut self.state, State::Stopped);
        self.state = match state {
            State::Running { mut process, .. } => {
                process.signal_group(Signal::Term);
                State::Stopping {
                    process,
                    deadline: now + grace,
                    killed: false,
                    then,
                }
            }
            other => other,
        };
    }

    fn tick(&mut self, events: &Sender<SupervisorEvent>, uid: u32, now: Instant) {
        let agent_id = &self.spec.agent_id;
        match &mut self.state {
            State::Waiting { until } if now >= *until => self.spawn(events, now),
            State::Running {
                process,
                started,
                ready,
            } => match process.poll_exit() {
                Ok(None) => {
                    if *ready {
                        return;
                    }
                    match check_socket(&self.spec.socket, uid) {
                        Ok(()) => {
                            *ready = true;
                            tracing::info!(agent = %agent_id, "agent ready");
                            emit(
                                events,
                                SupervisorEvent::Ready {
                                    agent_id: agent_id.clone(),
                                },
                            );
                            return;
                        }
                        Err(SupervisorError::SocketMissing { .. }) => {}
                        Err(e) => {
                            if !self.socket_warned {
                                tracing::warn!(agent = %agent_id, error = %e, "agent socket refused");
                                self.socket_warned = true;
                            }
                        }
                    }
                    let waited = now.saturating_duration_since(*started);
                    if waited >= self.spec.ready_timeout {
                        tracing::warn!(agent = %agent_id, ?waited, "agent not ready in time");
                        emit(
                            events,
                            SupervisorEvent::NotReady {
                                agent_id: agent_id.clone(),
                                waited,
                            },
                        );
                        self.begin_stop(now, self.spec.stop_grace, Then::Backoff);
                    }
                }
                exit => {
                    let uptime = now.saturating_duration_since(*started);
                    if uptime >= Duration::from_millis(RESTART_BACKOFF_RESET_MS) {
                        self.backoff.reset();
                    }
                    self.exited(events, exit, Then::Backoff, now);
                }
            },
            State::Stopping {
                process,
                deadline,
                killed,
                then,
            } => match process.poll_exit() {
                Ok(None) => {
                    if now >= *deadline && !*killed {
                        tracing::warn!(agent = %agent_id, "agent still running after its grace: SIGKILL");
                        process.signal_group(Signal::Kill);
                        *killed = true;
                    }
                }
                exit => {
                    let then = *then;
                    self.exited(events, exit, then, now);
                }
            },
            State::Waiting { .. } | State::Stopped => {}
        }
    }

    /// The process has exited (or could not be waited for): report it and move on per `then`.
    fn exited(
        &mut self,
        events: &Sender<SupervisorEvent>,
        exit: std::io::Result<Option<ExitStatus>>,
        then: Then,
        now: Instant,
    ) {
        let agent_id = self.spec.agent_id.clone();
        let status = match exit {
            Ok(status) => status,
            Err(e) => {
                tracing::error!(agent = %agent_id, error = %e, "cannot read agent exit status");
                None
            }
        };
        let restart_in = match then {
            Then::RestartNow => Some(Duration::ZERO),
            Then::Backoff => Some(self.backoff.next_delay()),
            Then::Stop => None,
        };
        match status {
            Some(status) if then == Then::Backoff => {
                tracing::warn!(agent = %agent_id, %status, ?restart_in, "agent exited")
            }
            _ => tracing::info!(agent = %agent_id, ?status, ?restart_in, "agent exited"),
        }
        remove_stale_socket(&self.spec.socket);
        self.state = State::Stopped;
        emit(
            events,
            SupervisorEvent::Exited {
                agent_id,
                status,
                restart_in,
            },
        );
        match restart_in {
            Some(delay) if delay.is_zero() => self.spawn(events, now),
            Some(delay) => self.state = State::Waiting { until: now + delay },
            None => {}
        }
    }

    fn spawn(&mut self, events: &Sender<SupervisorEvent>, now: Instant) {
        let agent_id = self.spec.agent_id.clone();
        remove_stale_socket(&self.spec.socket);
        self.socket_warned = false;
        match AgentProcess::spawn(&self.spec) {
            Ok(process) => {
                let pid = process.pid();
                tracing::info!(agent = %agent_id, pid, "agent started");
                self.state = State::Running {
                    process,
                    started: now,
                    ready: false,
                };
                emit(events, SupervisorEvent::Started { agent_id, pid });
            }
            Err(error) => {
                let restart_in = self.backoff.next_delay();
                tracing::error!(agent = %agent_id, %error, ?restart_in, "cannot start agent");
                self.state = State::Waiting {
                    until: now + restart_in,
                };
                emit(
                    events,
                    SupervisorEvent::SpawnFailed {
                        agent_id,
                        error,
                        restart_in,
                    },
                );
            }
        }
    }
}

fn emit(events: &Sender<SupervisorEvent>, event: SupervisorEvent) {
    match events.try_send(event) {
        Ok(()) | Err(TrySendError::Disconnected(_)) => {}
        Err(TrySendError::Full(event)) => {
            tracing::warn!(?event, "supervisor event channel full: event dropped");
        }
    }
}

/// Waits up to `wait` for a [`SupervisorEvent::Ready`] of every agent in `expected`, handing
/// each event received (`Ready` included) to `on_event`. Returns the agents still not ready
/// when the wait ran out (empty when all are).
pub fn wait_ready(
    rx: &Receiver<SupervisorEvent>,
    expected: &[String],
    wait: Duration,
    mut on_event: impl FnMut(&SupervisorEvent),
) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut waiting: Vec<String> = expected.to_vec();
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(event) => {
                if let SupervisorEvent::Ready { agent_id } = &event {
                    waiting.retain(|w| w != agent_id);
                }
                on_event(&event);
            }
            Err(_) => break,
        }
    }
    waiting
}
