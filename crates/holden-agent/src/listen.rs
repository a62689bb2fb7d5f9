//! The listening socket: systemd's, or one the agent binds (and later removes). Public so that
//! the orchestrator's control socket follows the same rules.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Where the agent listens.
pub struct Listening {
    /// The socket.
    pub listener: UnixListener,
    /// The socket file the agent created and must remove; `None` under socket activation.
    pub owned_path: Option<PathBuf>,
}

/// Errors that stop the agent from listening, each naming the path.
#[derive(Debug)]
pub enum ListenError {
    /// Something answers on the path: it is not stale.
    AlreadyServed(PathBuf),
    /// The path exists and is not a socket; it is left alone.
    NotASocket(PathBuf),
    /// A step failed: what, and why.
    Io(String, io::Error),
    /// `--socket-group` names no group.
    UnknownGroup(String),
}

impl std::fmt::Display for ListenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenError::AlreadyServed(p) => write!(f, "another agent is already listening on {}", p.display()),
            ListenError::NotASocket(p) => write!(f, "{} exists and is not a socket; not replacing it", p.display()),
            ListenError::Io(what, e) => write!(f, "{what}: {e}"),
            ListenError::UnknownGroup(g) => write!(f, "--socket-group: no group {g:?} in /etc/group"),
        }
    }
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> ListenError {
    move |e| ListenError::Io(what, e)
}

/// Resolves a group name or number to a gid.
pub fn group_id(group: &str) -> Result<u32, ListenError> {
    holden_sys::users::group(Path::new("/"), group).map_err(|_| ListenError::UnknownGroup(group.into()))
}

/// Binds `path`: creates its directory, replaces a stale socket file (nothing answers on it),
/// refuses to touch a live one or a non-socket, then sets mode and group before it listens.
pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> Result<Listening, ListenError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err(format!("create socket directory {}", dir.display())))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => return Err(ListenError::AlreadyServed(path.into())),
            Err(_) => fs::remove_file(path).map_err(io_err(format!("remove stale socket {}", path.display())))?,
        },
        Ok(_) => return Err(ListenError::NotASocket(path.into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ListenError::Io(format!("inspect {}", path.display()), e)),
    }
    // Bound but not listening until its mode and group are set: no client can connect while
    // they are still the umask's and the process's.
    let bound = holden_sys::socket::bind_unix(path).map_err(io_err(format!("bind {}", path.display())))?;
    let owned = Listening { listener: UnixListener::from(bound), owned_path: Some(path.into()) };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("set mode {mode:o} on {}", path.display())))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(io_err(format!("set group {gid} on {}", path.display())))?;
    }
    holden_sys::socket::listen(owned.listener.as_fd()).map_err(io_err(format!("listen on {}", path.display())))?;
    Ok(owned)
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(p) = &self.owned_path {
            let _ = fs::remove_file(p);
        }
    }
}
