//! The directory agent sockets live in, and the checks on a socket file.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::SupervisorError;
use crate::limits::{AGENT_ID_BYTES_MAX, SOCKET_PATH_BYTES_MAX};

/// Mode of the runtime directory.
const DIR_MODE: u32 = 0o700;
/// Mode of a socket file.
const SOCKET_MODE: u32 = 0o600;

/// Our uid, read safely from the owner of `/proc/self`.
pub fn current_uid() -> Result<u32, SupervisorError> {
    fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(SupervisorError::Uid)
}

/// Checks an agent id: 1 to 64 characters of `[a-z0-9_-]` (it becomes a file name).
pub fn validate_agent_id(agent_id: &str) -> Result<(), SupervisorError> {
    let ok = !agent_id.is_empty()
        && agent_id.len() <= AGENT_ID_BYTES_MAX
        && agent_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SupervisorError::InvalidAgentId(agent_id.to_owned()))
    }
}

/// A directory for agent sockets: mode 0700, owned by us, never group or world writable.
#[derive(Debug, Clone)]
pub struct RuntimeDir {
    path: PathBuf,
    uid: u32,
}

impl RuntimeDir {
    /// Where the runtime directory goes by default: `$XDG_RUNTIME_DIR/turnstile` when that
    /// variable is set (and absolute), else `<temp dir>/turnstile-<uid>`.
    pub fn default_path() -> Result<PathBuf, SupervisorError> {
        let xdg = std::env::var_os("XDG_RUNTIME_DIR");
        Ok(Self::default_path_from(
            xdg.as_deref(),
            &std::env::temp_dir(),
            current_uid()?,
        ))
    }

    /// [`RuntimeDir::default_path`] from explicit inputs (`XDG_RUNTIME_DIR`, temp dir, uid).
    pub fn default_path_from(xdg_runtime_dir: Option<&OsStr>, temp: &Path, uid: u32) -> PathBuf {
        match xdg_runtime_dir.map(Path::new) {
            Some(xdg) if xdg.is_absolute() => xdg.join("turnstile"),
            _ => temp.join(format!("turnstile-{uid}")),
        }
    }

    /// Creates (or validates) the runtime directory at [`RuntimeDir::default_path`].
    pub fn open_default() -> Result<Self, SupervisorError> {
        Self::open(Self::default_path()?)
    }

    /// Creates the directory at `path` with mode 0700 (and any missing parents with the default
    /// mode), or validates an existing one: it must be a real directory (not a symlink) owned by
    /// us and not writable by group or others. An existing directory of ours that others can
    /// read or enter is tightened to 0700.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, SupervisorError> {
        let path = path.into();
        let uid = current_uid()?;
        let io_err = |source: io::Error| SupervisorError::RuntimeDirIo {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_err)?;
        }
        match DirBuilder::new().mode(DIR_MODE).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(e)),
        }
        let meta = fs::symlink_metadata(&path).map_err(io_err)?;
        if !meta.file_type().is_dir() {
            return Err(SupervisorError::RuntimeDirNotDir { path });
        }
        if meta.uid() != uid {
            return Err(SupervisorError::RuntimeDirOwner {
                path,
                expected: uid,
                actual: meta.uid(),
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(SupervisorError::RuntimeDirMode { path, mode });
        }
        if mode != DIR_MODE {
            fs::set_permissions(&path, Permissions::from_mode(DIR_MODE)).map_err(io_err)?;
        }
        Ok(Self { path, uid })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The uid that owns it (ours).
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The socket path of an agent: `<dir>/<agent_id>.sock`. Refuses an invalid id and a path
    /// too long for a Unix socket address.
    pub fn socket_path(&self, agent_id: &str) -> Result<PathBuf, SupervisorError> {
        validate_agent_id(agent_id)?;
        let path = self.path.join(format!("{agent_id}.sock"));
        check_socket_path_len(&path)?;
        Ok(path)
    }
}

/// Refuses a path longer than a Unix socket address can hold.
pub fn check_socket_path_len(path: &Path) -> Result<(), SupervisorError> {
    let len = path.as_os_str().len();
    if len > SOCKET_PATH_BYTES_MAX {
        return Err(SupervisorError::SocketPathTooLong {
            path: path.to_owned(),
            len,
            max: SOCKET_PATH_BYTES_MAX,
        });
    }
    Ok(())
}

/// Checks a socket file before connecting to it: it exists, is a socket (not a symlink), is
/// owned by `expected_uid` and has mode 0600. A socket of ours with another mode is tightened to
/// 0600; one of someone else's with another mode is refused.
pub fn check_socket(path: &Path, expected_uid: u32) -> Result<(), SupervisorError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SupervisorError::SocketMissing {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(SupervisorError::SocketIo {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(SupervisorError::NotASocket {
            path: path.to_owned(),
        });
    }
    if meta.uid() != expected_uid {
        return Err(SupervisorError::SocketOwner {
            path: path.to_owned(),
            expected: expected_uid,
            actual: meta.uid(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode == SOCKET_MODE {
        return Ok(());
    }
    if meta.uid() == current_uid()? {
        return fs::set_permissions(path, Permissions::from_mode(SOCKET_MODE)).map_err(|source| {
            SupervisorError::SocketIo {
                path: path.to_owned(),
                source,
            }
        });
    }
    Err(SupervisorError::SocketMode {
        path: path.to_owned(),
        mode,
    })
}

/// Removes a leftover socket file (only a socket: anything else at the path is left alone).
pub(crate) fn remove_stale_socket(path: &Path) {
    let is_socket = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket {
        if let Err(e) = fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove stale agent socket");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids() {
        for ok in ["a", "echo-1", "a_b", &"x".repeat(64)] {
            assert!(validate_agent_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a/b", "..", "a.b", "é", &"x".repeat(65)] {
            assert!(validate_agent_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_path_prefers_absolute_xdg() {
        let tmp = Path::new("/tmp");
        assert_eq!(
            RuntimeDir::default_path_from(Some(OsStr::new("/run/user/7")), tmp, 7),
            Path::new("/run/user/7/turnstile")
        );
        assert_eq!(
            RuntimeDir::default_path_from(Some(OsStr::new("relative")), tmp, 7),
            Path::new("/tmp/turnstile-7")
        );
        assert_eq!(
            RuntimeDir::default_path_from(None, tmp, 7),
            Path::new("/tmp/turnstile-7")
        );
    }
}
