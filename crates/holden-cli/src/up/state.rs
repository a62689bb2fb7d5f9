//! The state file, `STATE_DIR/state.json`: each running service's pid and process identity,
//! so that an orchestrator started after a crash adopts what the last one left running
//! instead of starting duplicates. It is written atomically (a temporary file, then rename)
//! once per loop iteration in which a pid changed, and removed by a clean shutdown. There is no
//! fsync: the file only matters within one boot, and a crash of the orchestrator (not of the
//! kernel) loses nothing from the page cache; an fsync would sit in every restart's path.
//!
//! The identity is the pidfd's inode number on kernels with pidfs (Linux 6.9), unique per
//! process for the boot; otherwise the process's start time, field 22 of `/proc/PID/stat`.
//! The boot id guards against a file left from an earlier boot.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One process as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The service.
    pub service: String,
    /// Its pid in the orchestrator's pid namespace.
    pub pid: i32,
    /// How the process is recognised.
    pub identity: Identity,
}

/// What proves a pid is still the same process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    /// The pidfs inode number (Linux 6.9 and later).
    PidfsInode(u64),
    /// The start time in clock ticks after boot, from `/proc/PID/stat`.
    StartTime(u64),
}

#[derive(Serialize, Deserialize)]
struct File {
    boot_id: String,
    processes: Vec<Entry>,
}

/// The identity of the process behind `pidfd` (whose pid is `pid`).
pub fn identity(pidfd: BorrowedFd<'_>, pid: i32) -> io::Result<Identity> {
    if let Some(ino) = holden_sys::process::pidfs_inode(pidfd)? {
        return Ok(Identity::PidfsInode(ino));
    }
    start_time(pid).map(Identity::StartTime)
}

/// Field 22 of `/proc/PID/stat`: the start time in clock ticks after boot.
fn start_time(pid: i32) -> io::Result<u64> {
    holden_cli::stat_fields(pid)
        .and_then(|f| f.get(22 - 3)?.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: no start time")))
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// The state file in `dir`.
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file of `dir` (not read yet).
    pub fn new(dir: &Path) -> StateFile {
        StateFile { path: dir.join("state.json") }
    }

    /// The recorded processes, if the file exists and is from this boot. A file that cannot
    /// be parsed is reported and ignored: starting afresh beats refusing to start.
    pub fn read(&self) -> Vec<Entry> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                eprintln!("holden up: cannot read {}: {e}; adopting nothing", self.path.display());
                return Vec::new();
            }
        };
        match serde_json::from_slice::<File>(&text) {
            Ok(f) if f.boot_id == boot_id() => f.processes,
            Ok(_) => Vec::new(),
            Err(e) => {
                eprintln!("holden up: ignoring {}: {e}", self.path.display());
                Vec::new()
            }
        }
    }

    /// Replaces the file with `processes`, atomically.
    pub fn write(&self, processes: &[Entry]) -> io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&File { boot_id: boot_id(), processes: processes.to_vec() })
            .map_err(io::Error::other)?;
        std::fs::File::create(&tmp)?.write_all(&text)?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Removes the file (after a clean shutdown).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Opens a pidfd for a recorded process and checks it is the same process. `None` if it is
/// gone or the pid now belongs to another process.
pub fn reopen(entry: &Entry) -> Option<OwnedFd> {
    let pidfd = holden_sys::process::pidfd_open(entry.pid).ok()?;
    let now = identity(pidfd.as_fd(), entry.pid).ok()?;
    (now == entry.identity).then_some(pidfd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_process_is_found_again_and_a_changed_identity_is_refused() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let fd = holden_sys::process::pidfd_open(pid).unwrap();
        let e = Entry { service: "s".into(), pid, identity: identity(fd.as_fd(), pid).unwrap() };
        assert!(reopen(&e).is_some());
        let st = Entry { identity: Identity::StartTime(start_time(pid).unwrap()), ..e.clone() };
        assert_eq!(st.identity, Identity::StartTime(start_time(pid).unwrap()));
        let wrong = Entry {
            identity: match e.identity {
                Identity::PidfsInode(i) => Identity::PidfsInode(i + 1),
                Identity::StartTime(t) => Identity::StartTime(t + 1),
            },
            ..e.clone()
        };
        assert!(reopen(&wrong).is_none());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(reopen(&e).is_none(), "a reaped process is gone");

        let dir = std::env::temp_dir().join(format!("holden-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = StateFile::new(&dir);
        assert!(f.read().is_empty());
        f.write(std::slice::from_ref(&e)).unwrap();
        assert_eq!(f.read(), [e]);
        f.remove();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
