//! The supervisor against fake agents: shell commands and a few lines of python that bind a
//! Unix socket and sleep.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use turnstile_supervisor::{
    ProcessSpec, Supervisor, SupervisorError, SupervisorEvent, SupervisorHandle,
};

/// A fake agent: listens on the socket path given as its first argument, then sleeps.
const LISTENER_PY: &str = "import socket,sys,time\n\
s=socket.socket(socket.AF_UNIX)\n\
s.bind(sys.argv[1])\n\
s.listen()\n\
time.sleep(60)\n";

/// Longest any single expected event may take.
const EVENT_WAIT: Duration = Duration::from_secs(5);

fn listener_spec(id: &str, dir: &Path) -> ProcessSpec {
    let argv = ["python3", "-c", LISTENER_PY, "{socket}"]
        .map(String::from)
        .to_vec();
    ProcessSpec::new(id, argv, dir.join(format!("{id}.sock")))
}

/// A spec running `script` with `sh -c`; `$PY` holds the listener program and `$1` the socket.
fn sh_spec(id: &str, dir: &Path, script: &str, extra: &[&str]) -> ProcessSpec {
    let mut argv: Vec<String> = ["sh", "-c", script, "sh", "{socket}"]
        .map(String::from)
        .to_vec();
    argv.extend(extra.iter().map(|s| s.to_string()));
    let mut spec = ProcessSpec::new(id, argv, dir.join(format!("{id}.sock")));
    spec.env.push(("PY".into(), LISTENER_PY.into()));
    spec
}

fn start(specs: Vec<ProcessSpec>) -> (SupervisorHandle, Receiver<SupervisorEvent>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (Supervisor::start(specs, tx).expect("start"), rx)
}

/// The next event matching `pred` (others are skipped); panics after [`EVENT_WAIT`].
fn next<T>(
    rx: &Receiver<SupervisorEvent>,
    what: &str,
    mut pred: impl FnMut(&SupervisorEvent) -> Option<T>,
) -> T {
    let deadline = Instant::now() + EVENT_WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(event) => {
                if let Some(t) = pred(&event) {
                    return t;
                }
                seen.push(event);
            }
            Err(_) => panic!("no {what} within {EVENT_WAIT:?}; saw {seen:#?}"),
        }
    }
}

fn started(rx: &Receiver<SupervisorEvent>) -> u32 {
    next(rx, "Started", |e| match e {
        SupervisorEvent::Started { pid, .. } => Some(*pid),
        _ => None,
    })
}

fn ready(rx: &Receiver<SupervisorEvent>) {
    next(rx, "Ready", |e| {
        matches!(e, SupervisorEvent::Ready { .. }).then_some(())
    })
}

/// Status and restart delay of the next exit.
fn exited(rx: &Receiver<SupervisorEvent>) -> (Option<std::process::ExitStatus>, Option<Duration>) {
    next(rx, "Exited", |e| match e {
        SupervisorEvent::Exited {
            status, restart_in, ..
        } => Some((*status, *restart_in)),
        _ => None,
    })
}

fn kill9(pid: u32) {
    let ok = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -9 {pid}");
}

/// True once `/proc/<pid>` is gone (a direct child must be reaped, not just dead).
fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// True when the process is gone or a zombie (a grandchild re-parented to an init that may not
/// reap is dead all the same).
fn dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z')),
    }
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + EVENT_WAIT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} not within {EVENT_WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ready_then_stop_all_leaves_no_process_and_no_socket() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pidfile = tmp.path().join("grandchild.pid");
    // The agent starts a process of its own: stopping must take the whole group.
    let spec = sh_spec(
        "group",
        tmp.path(),
        r#"sleep 60 & echo $! > "$2"; exec python3 -c "$PY" "$1""#,
        &[pidfile.to_str().expect("utf-8 path")],
    );
    let socket = spec.socket.clone();
    let (handle, rx) = start(vec![spec]);
    let pid = started(&rx);
    ready(&rx);
    assert_eq!(fs::metadata(&socket).expect("socket").mode() & 0o777, 0o600);
    let grandchild: u32 = fs::read_to_string(&pidfile)
        .expect("pidfile")
        .trim()
        .parse()
        .expect("pid");
    assert!(!dead(grandchild));

    let t = Instant::now();
    handle.stop_all(Duration::from_secs(2));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "SIGTERM is enough here"
    );
    assert!(gone(pid), "agent {pid} still in /proc");
    eventually("grandchild dead", || dead(grandchild));
    assert!(!socket.exists(), "socket file left behind");
    let (status, restart_in) = exited(&rx);
    assert_eq!(status.and_then(|s| s.signal()), Some(15));
    assert_eq!(restart_in, None);
    assert!(matches!(
        handle.restart("group"),
        Err(SupervisorError::Stopped)
    ));
}

#[test]
fn agent_killed_externally_is_restarted_with_a_new_pid() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (handle, rx) = start(vec![listener_spec("victim", tmp.path())]);
    let first = started(&rx);
    ready(&rx);
    kill9(first);
    let (status, restart_in) = exited(&rx);
    assert_eq!(status.and_then(|s| s.signal()), Some(9));
    let restart_in = restart_in.expect("restarted");
    assert!(restart_in <= Duration::from_millis(100), "{restart_in:?}");
    let t = Instant::now();
    let second = started(&rx);
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_ne!(first, second);
    ready(&rx);
    assert!(gone(first));
    drop(handle);
    assert!(gone(second));
}

#[test]
fn crashing_agent_is_restarted_with_growing_backoff() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let argv = ["sh", "-c", "exit 3"].map(String::from).to_vec();
    let spec = ProcessSpec::new("crashy", argv, tmp.path().join("crashy.sock"));
    let (handle, rx) = start(vec![spec]);
    let t0 = Instant::now();
    let mut starts = Vec::new();
    let mut delays = Vec::new();
    while let Ok(event) = rx.recv_timeout(Duration::from_secs(2).saturating_sub(t0.elapsed())) {
        match event {
            SupervisorEvent::Started { .. } => starts.push(t0.elapsed()),
            SupervisorEvent::Exited {
                status, restart_in, ..
            } => {
                assert_eq!(status.and_then(|s| s.code()), Some(3));
                delays.push(restart_in.expect("restarted"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(handle);
    // 75-100 ms, 150-200, 300-400, 600-800, 1200-1600: four or five starts fit in 2 s.
    assert!((3..=6).contains(&starts.len()), "{starts:?}");
    assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
    for (i, gap) in starts.windows(2).map(|w| w[1] - w[0]).enumerate() {
        assert!(
            gap >= delays[i],
            "restart {i} after {gap:?}, delay {:?}",
            delays[i]
        );
    }
}

#[test]
fn restart_request_gives_a_new_pid() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (handle, rx) = start(vec![listener_spec("fresh", tmp.path())]);
    let first = started(&rx);
    ready(&rx);
    assert!(matches!(
        handle.restart("nobody"),
        Err(SupervisorError::UnknownAgent(_))
    ));
    handle.restart("fresh").expect("restart");
    let (status, restart_in) = exited(&rx);
    assert_eq!(status.and_then(|s| s.signal()), Some(15));
    assert_eq!(restart_in, Some(Duration::ZERO));
    let second = started(&rx);
    assert_ne!(first, second);
    ready(&rx);
    assert!(gone(first));
}

#[test]
fn restart_escalates_to_sigkill_after_the_grace() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut spec = sh_spec(
        "stubborn",
        tmp.path(),
        r#"trap '' TERM; exec python3 -c "$PY" "$1""#,
        &[],
    );
    spec.stop_grace = Duration::from_millis(300);
    let (handle, rx) = start(vec![spec]);
    let first = started(&rx);
    ready(&rx);
    let t = Instant::now();
    handle.restart("stubborn").expect("restart");
    let (status, _) = exited(&rx);
    let took = t.elapsed();
    assert_eq!(status.and_then(|s| s.signal()), Some(9));
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_ne!(started(&rx), first);
    drop(handle);
}

#[test]
fn dropping_the_handle_stops_everything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let specs = vec![
        listener_spec("one", tmp.path()),
        listener_spec("two", tmp.path()),
    ];
    let (handle, rx) = start(specs);
    let pids = [started(&rx), started(&rx)];
    ready(&rx);
    ready(&rx);
    drop(handle);
    for pid in pids {
        assert!(gone(pid), "agent {pid} outlived its supervisor");
    }
}

#[test]
fn missing_command_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (tx, _rx) = crossbeam_channel::unbounded();
    let argv = vec!["turnstile-no-such-agent".to_string()];
    let spec = ProcessSpec::new("ghost", argv, tmp.path().join("ghost.sock"));
    let err = Supervisor::start(vec![spec], tx.clone()).expect_err("missing command");
    assert!(
        matches!(err, SupervisorError::CommandNotFound { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("ghost") && text.contains("turnstile-no-such-agent"),
        "{text}"
    );

    let empty = ProcessSpec::new("empty", Vec::new(), tmp.path().join("e.sock"));
    assert!(matches!(
        Supervisor::start(vec![empty], tx.clone()),
        Err(SupervisorError::EmptyCommand { .. })
    ));
    let bad = listener_spec("Bad/Id", tmp.path());
    assert!(matches!(
        Supervisor::start(vec![bad], tx.clone()),
        Err(SupervisorError::InvalidAgentId(_))
    ));
    let twice = vec![
        listener_spec("a", tmp.path()),
        listener_spec("a", tmp.path()),
    ];
    assert!(matches!(
        Supervisor::start(twice, tx),
        Err(SupervisorError::DuplicateAgent(_))
    ));
}

#[test]
fn command_that_disappears_is_retried_until_it_returns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let script: PathBuf = tmp.path().join("agent.sh");
    let hidden = tmp.path().join("agent.sh.away");
    fs::write(&script, "#!/bin/sh\nexec python3 -c \"$PY\" \"$1\"\n").expect("write");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let argv = vec![
        script.to_str().expect("utf-8").to_string(),
        "{socket}".into(),
    ];
    let mut spec = ProcessSpec::new("flaky", argv, tmp.path().join("flaky.sock"));
    spec.env.push(("PY".into(), LISTENER_PY.into()));
    let (handle, rx) = start(vec![spec]);
    let first = started(&rx);
    ready(&rx);

    fs::rename(&script, &hidden).expect("hide");
    kill9(first);
    let mut failures = Vec::new();
    while failures.len() < 2 {
        failures.push(next(&rx, "SpawnFailed", |e| match e {
            SupervisorEvent::SpawnFailed {
                error, restart_in, ..
            } => {
                assert!(
                    matches!(error, SupervisorError::CommandNotFound { .. }),
                    "{error}"
                );
                assert!(error.to_string().contains("flaky"), "{error}");
                Some(*restart_in)
            }
            _ => None,
        }));
    }
    assert!(failures[0] < failures[1], "{failures:?}");

    fs::rename(&hidden, &script).expect("restore");
    assert_ne!(started(&rx), first);
    ready(&rx);
    drop(handle);
}

#[test]
fn agent_without_socket_is_stopped_and_restarted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let argv = ["sleep", "30"].map(String::from).to_vec();
    let mut spec = ProcessSpec::new("mute", argv, tmp.path().join("mute.sock"));
    spec.ready_timeout = Duration::from_millis(200);
    spec.stop_grace = Duration::from_millis(500);
    let (handle, rx) = start(vec![spec]);
    let first = started(&rx);
    let waited = next(&rx, "NotReady", |e| match e {
        SupervisorEvent::NotReady { waited, .. } => Some(*waited),
        _ => None,
    });
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    let (status, restart_in) = exited(&rx);
    assert_eq!(status.and_then(|s| s.signal()), Some(15));
    assert!(restart_in.expect("restarted") > Duration::ZERO);
    assert_ne!(started(&rx), first);
    drop(handle);
}
