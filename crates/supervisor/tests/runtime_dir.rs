//! The runtime directory and socket file checks.

use std::fs::{self, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use turnstile_supervisor::{RuntimeDir, SupervisorError, check_socket, current_uid};

/// A uid that is not ours, for files we can hand over (only when we are root).
const OTHER_UID: u32 = 65534;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("stat").mode() & 0o7777
}

/// Gives `path` to [`OTHER_UID`]; false (the test then skips that part) when we may not.
fn give_away(path: &Path) -> bool {
    match std::os::unix::fs::lchown(path, Some(OTHER_UID), None) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipping the other-owner check: cannot chown ({e}); not root?");
            false
        }
    }
}

#[test]
fn creates_the_directory_with_mode_0700() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("nested").join("turnstile");
    let dir = RuntimeDir::open(&path).expect("open");
    assert_eq!(dir.path(), path);
    assert_eq!(dir.uid(), current_uid().expect("uid"));
    assert_eq!(mode(&path), 0o700);
    // Opening again validates the existing directory.
    RuntimeDir::open(&path).expect("reopen");
}

#[test]
fn tightens_a_readable_directory_of_ours() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("rt");
    fs::create_dir(&path).expect("mkdir");
    fs::set_permissions(&path, Permissions::from_mode(0o755)).expect("chmod");
    RuntimeDir::open(&path).expect("open");
    assert_eq!(mode(&path), 0o700);
}

#[test]
fn refuses_group_or_world_writable_directories() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for bad in [0o777, 0o770, 0o702] {
        let path = tmp.path().join(format!("rt-{bad:o}"));
        fs::create_dir(&path).expect("mkdir");
        fs::set_permissions(&path, Permissions::from_mode(bad)).expect("chmod");
        let err = RuntimeDir::open(&path).expect_err("writable dir accepted");
        assert!(
            matches!(err, SupervisorError::RuntimeDirMode { mode, .. } if mode == bad),
            "{err}"
        );
        assert!(err.to_string().contains("writable"), "{err}");
        assert_eq!(mode(&path), bad, "a refused directory is left alone");
    }
}

#[test]
fn refuses_a_file_a_symlink_and_someone_elses_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("file");
    fs::write(&file, b"").expect("write");
    assert!(matches!(
        RuntimeDir::open(&file),
        Err(SupervisorError::RuntimeDirNotDir { .. })
    ));
    let target = tmp.path().join("target");
    fs::create_dir(&target).expect("mkdir");
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    assert!(matches!(
        RuntimeDir::open(&link),
        Err(SupervisorError::RuntimeDirNotDir { .. })
    ));

    let theirs = tmp.path().join("theirs");
    fs::create_dir(&theirs).expect("mkdir");
    fs::set_permissions(&theirs, Permissions::from_mode(0o700)).expect("chmod");
    if give_away(&theirs) {
        let err = RuntimeDir::open(&theirs).expect_err("foreign dir accepted");
        assert!(
            matches!(
                err,
                SupervisorError::RuntimeDirOwner {
                    actual: OTHER_UID,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn socket_paths() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = RuntimeDir::open(tmp.path().join("rt")).expect("open");
    assert_eq!(
        dir.socket_path("echo-1").expect("valid"),
        dir.path().join("echo-1.sock")
    );
    for bad in ["", "Echo", "a/b", "../x", &"x".repeat(65)] {
        assert!(matches!(
            dir.socket_path(bad),
            Err(SupervisorError::InvalidAgentId(_))
        ));
    }
    let deep = RuntimeDir::open(tmp.path().join("d".repeat(100))).expect("open");
    assert!(matches!(
        deep.socket_path("a"),
        Err(SupervisorError::SocketPathTooLong { .. })
    ));
}

#[test]
fn socket_check_tightens_ours_and_refuses_the_rest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let uid = current_uid().expect("uid");
    let path = tmp.path().join("a.sock");

    assert!(matches!(
        check_socket(&path, uid),
        Err(SupervisorError::SocketMissing { .. })
    ));

    let _listener = UnixListener::bind(&path).expect("bind");
    fs::set_permissions(&path, Permissions::from_mode(0o600)).expect("chmod");
    check_socket(&path, uid).expect("0600 socket of ours");
    fs::set_permissions(&path, Permissions::from_mode(0o666)).expect("chmod");
    check_socket(&path, uid).expect("socket of ours is tightened");
    assert_eq!(mode(&path), 0o600);

    let err = check_socket(&path, uid + 1).expect_err("wrong owner accepted");
    assert!(matches!(err, SupervisorError::SocketOwner { .. }), "{err}");

    let file = tmp.path().join("plain");
    fs::write(&file, b"").expect("write");
    assert!(matches!(
        check_socket(&file, uid),
        Err(SupervisorError::NotASocket { .. })
    ));
    let link = tmp.path().join("link.sock");
    std::os::unix::fs::symlink(&path, &link).expect("symlink");
    assert!(matches!(
        check_socket(&link, uid),
        Err(SupervisorError::NotASocket { .. })
    ));

    // A socket of another uid: accepted with mode 0600, refused (not tightened) otherwise.
    let theirs = tmp.path().join("theirs.sock");
    let _their_listener = UnixListener::bind(&theirs).expect("bind");
    fs::set_permissions(&theirs, Permissions::from_mode(0o600)).expect("chmod");
    if give_away(&theirs) {
        check_socket(&theirs, OTHER_UID).expect("their 0600 socket");
        let err = check_socket(&theirs, uid).expect_err("their socket accepted as ours");
        assert!(
            matches!(
                err,
                SupervisorError::SocketOwner {
                    actual: OTHER_UID,
                    ..
                }
            ),
            "{err}"
        );
        fs::set_permissions(&theirs, Permissions::from_mode(0o666)).expect("chmod");
        let err = check_socket(&theirs, OTHER_UID).expect_err("0666 accepted");
        assert!(
            matches!(err, SupervisorError::SocketMode { mode: 0o666, .. }),
            "{err}"
        );
        assert_eq!(mode(&theirs), 0o666);
    }
}
