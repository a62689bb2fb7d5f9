//! The state file, `STATE_DIR/state.json`: what a supervisor started after a crash needs so as
//! never to start a duplicate, and to keep what the operator asked for.
//!
//! It holds, with the boot id (a file from an earlier boot is ignored):
//! - `processes`: each running service's pid, its identity (the pidfs inode on Linux 6.9+,
//!   else the start time) *and* its start time from `/proc/PID/stat`, and its spawn tag;
//! - `run` and `runs`: this supervisor's run id and those of predecessors whose processes may
//!   still run. Every process a supervisor spawns carries `HOLDEN_SPAWN=RUN.N` in its
//!   environment (and so do its children), so that processes started but not yet recorded when
//!   a supervisor was killed, and daemons that services forked, are found again;
//! - `intents`: services stopped by hand, completed (`restart = "never"`) or failed at their
//!   start limit, which a restarted supervisor leaves as they are.
//!
//! The loop writes the file at the end of every iteration in which something it records
//! changed (a spawn is never followed by anything slow before that), atomically: a fresh
//! temporary file, then rename. A failed write (a full disk) is retried until it succeeds.
//! There is no fsync: the file only matters within one boot, and a crash of the supervisor
//! (not of the kernel) loses nothing from the page cache.
//!
//! The file is opened with `O_NOFOLLOW | O_NONBLOCK` and must be a regular file owned by the
//! supervisor's uid: a FIFO, a symlink, a file of another owner or one that does not parse is
//! set aside (renamed `state.json.rejected`) and not trusted.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use std::time::{Instant, SystemTime};

use holden_orchestrator::control::StateChange;

use crate::conn::Follow;
use crate::procfs;
use crate::supervisor::{say, Supervisor};

/// The environment variable that tags every spawned process with `RUN.N`.
pub const TAG_VAR: &str = "HOLDEN_SPAWN";

/// How soon a failed state-file write is tried again.
const STATE_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// The largest state file read (a bigger one is rejected).
const MAX_FILE: u64 = 64 * 1024 * 1024;

/// One process as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The service.
    pub service: String,
    /// Its pid in the supervisor's pid namespace.
    pub pid: i32,
    /// How the process is recognised.
    pub identity: Identity,
    /// Its start time (clock ticks after boot), checked as well as the identity.
    #[serde(default)]
    pub start_time: Option<u64>,
    /// Its spawn tag (`RUN.N`).
    #[serde(default)]
    pub tag: Option<String>,
    /// It had said it was ready (kept for `notify` and `log` readiness, which do not repeat).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ready: bool,
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

/// What the operator's or the policy's last word on a service was, kept across a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// Stopped by hand: stays stopped.
    Stopped,
    /// Ran and, by its policy, is not restarted.
    Completed,
    /// Parked by its start limit.
    Failed,
}

/// The file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The boot it was written in.
    #[serde(default)]
    pub boot_id: String,
    /// The run that wrote it.
    #[serde(default)]
    pub run: String,
    /// Earlier runs whose processes may still be around.
    #[serde(default)]
    pub runs: Vec<String>,
    /// The running processes.
    #[serde(default)]
    pub processes: Vec<Entry>,
    /// Intents by service.
    #[serde(default)]
    pub intents: BTreeMap<String, Intent>,
}

/// Why the state file was not used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It is not a regular file (a FIFO, a symlink, a directory...).
    #[error("{} is not a regular file; set aside as {}", path.display(), aside.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// Where it went.
        aside: PathBuf,
    },
    /// Another user owns it.
    #[error("{} belongs to uid {uid}, not to this supervisor; set aside as {}", path.display(), aside.display())]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Where it went.
        aside: PathBuf,
    },
    /// It does not parse.
    #[error("{} is not a valid state file ({message}); set aside as {}", path.display(), aside.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's words.
        message: String,
        /// Where it went.
        aside: PathBuf,
    },
    /// It could not be read.
    #[error("read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The identity of the process behind `pidfd` (whose pid is `pid`).
pub fn identity(pidfd: BorrowedFd<'_>, pid: i32) -> io::Result<Identity> {
    if let Some(ino) = holden_sys::process::pidfs_inode(pidfd)? {
        return Ok(Identity::PidfsInode(ino));
    }
    start_time(pid).map(Identity::StartTime)
}

fn start_time(pid: i32) -> io::Result<u64> {
    procfs::start_time(pid)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: no start time")))
}

/// This boot's id (read once: it does not change while the system runs).
pub fn boot_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned()).unwrap_or_default()
    })
    .clone()
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

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn set_aside(&self) -> PathBuf {
        let aside = self.path.with_extension("json.rejected");
        let _ = std::fs::rename(&self.path, &aside);
        aside
    }

    /// What the file holds, if it exists and is from this boot (else an empty snapshot). A file
    /// that is not a regular file of this uid, or does not parse, is set aside and reported.
    pub fn read(&self) -> Result<Snapshot, StateError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&self.path);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Snapshot::default()),
            // ELOOP: a symlink, refused by O_NOFOLLOW. ENXIO: a socket.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENXIO)) => {
                return Err(StateError::NotRegular { path: self.path.clone(), aside: self.set_aside() })
            }
            Err(source) => return Err(StateError::Io { path: self.path.clone(), source }),
        };
        let meta = file.metadata().map_err(|source| StateError::Io { path: self.path.clone(), source })?;
        if !meta.file_type().is_file() {
            drop(file);
            return Err(StateError::NotRegular { path: self.path.clone(), aside: self.set_aside() });
        }
        if meta.uid() != holden_sys::fd::geteuid() {
            drop(file);
            return Err(StateError::Owner { path: self.path.clone(), uid: meta.uid(), aside: self.set_aside() });
        }
        let mut text = Vec::new();
        if let Err(source) = (&mut file).take(MAX_FILE).read_to_end(&mut text) {
            return Err(StateError::Io { path: self.path.clone(), source });
        }
        match serde_json::from_slice::<Snapshot>(&text) {
            // An unreadable boot id ("") proves nothing: such a file is not trusted.
            Ok(s) if !s.boot_id.is_empty() && s.boot_id == boot_id() => Ok(s),
            Ok(_) => Ok(Snapshot::default()),
            Err(e) => {
                Err(StateError::Invalid { path: self.path.clone(), message: e.to_string(), aside: self.set_aside() })
            }
        }
    }

    /// Replaces the file with `snapshot`, atomically. A failure leaves the old file in place
    /// and no temporary file behind.
    pub fn write(&self, snapshot: &Snapshot) -> io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec(snapshot).map_err(io::Error::other)?;
        // Whatever sits at the temporary name (a FIFO, a symlink) is replaced, never opened.
        let _ = std::fs::remove_file(&tmp);
        let result = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&text))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Removes the file (after a clean shutdown).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Opens a pidfd for a recorded process and checks it is the same process: the identity and
/// the start time must both match, and the pid must not be one that is never touched (PID 1,
/// this process, its ancestors). `None` otherwise.
pub fn reopen(entry: &Entry, protected: &[i32]) -> Option<OwnedFd> {
    if entry.pid <= 1 || protected.contains(&entry.pid) {
        return None;
    }
    let pidfd = holden_sys::process::pidfd_open(entry.pid).ok()?;
    let now = identity(pidfd.as_fd(), entry.pid).ok()?;
    if now != entry.identity {
        return None;
    }
    let started = procfs::start_time(entry.pid)?;
    if entry.start_time.is_some_and(|t| t != started) {
        return None;
    }
    // A zombie is gone, whatever its identity.
    procfs::is_running(entry.pid).then_some(pidfd)
}

impl Supervisor {
    // ---- the state file --------------------------------------------------------------------

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            boot_id: boot_id(),
            run: self.run_id.clone(),
            runs: self.runs.clone(),
            processes: self
                .services
                .iter()
                .filter(|(_, s)| s.proc.is_some())
                .filter_map(|(name, s)| {
                    Some(Entry {
                        service: name.clone(),
                        pid: s.m.pid?,
                        identity: s.identity?,
                        start_time: s.start_time,
                        tag: s.tag.clone(),
                        ready: s.m.ready,
                    })
                })
                .collect(),
            intents: self.services.iter().filter_map(|(n, s)| Some((n.clone(), s.intent()?))).collect(),
        }
    }

    pub(crate) fn write_state_if_due(&mut self) {
        if self.state_dirty && self.state_error.as_ref().is_none_or(|e| e.1 <= Instant::now()) {
            self.write_state();
        }
    }

    /// Writes the state file now; a failure is reported (once per distinct error, and as an
    /// event) and retried until it succeeds.
    pub(crate) fn write_state(&mut self) {
        let snap = self.snapshot();
        match self.state_file.write(&snap) {
            Ok(()) => {
                self.state_dirty = false;
                self.run_recorded = true;
                if self.state_error.take().is_some() {
                    say("state file: written again");
                    self.state_event(None);
                }
            }
            Err(e) => {
                let msg = format!("cannot write {}: {e}", self.state_file.path().display());
                if self.state_error.as_ref().is_none_or(|(m, _)| *m != msg) {
                    say(&format!("state file: {msg}; retrying"));
                    self.state_event(Some(msg.clone()));
                }
                self.state_dirty = true;
                self.state_error = Some((msg, Instant::now() + STATE_RETRY));
            }
        }
    }

    fn state_event(&mut self, error: Option<String>) {
        let change = StateChange {
            time: crate::text::timestamp(SystemTime::now()),
            service: String::new(),
            state: if error.is_some() { "state-file-error" } else { "state-file-ok" }.into(),
            pid: None,
            last_exit: None,
            last_error: error,
            ready: false,
            health: "unknown".into(),
            change: "state".into(),
            waiting: None,
        };
        self.broadcast(
            |f| *f == Follow::Events,
            || holden_proto::encode_reply(&serde_json::json!({ "event": change }), true),
        );
    }
}

/// Creates `dir` if needed and gives it exactly `mode`, whatever the umask.
pub(crate) fn private_dir(dir: &Path, mode: u32) -> Result<(), crate::Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(crate::Error::setup(format!("create {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(crate::Error::setup(format!("chmod {}", dir.display())))
}

/// A fresh run id: 16 hex digits from /dev/urandom (or the clock and pid).
pub(crate) fn new_run_id() -> String {
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        b = (t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("holden-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_recorded_process_is_found_again_and_a_changed_identity_is_refused() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let fd = holden_sys::process::pidfd_open(pid).unwrap();
        let e = Entry {
            service: "s".into(),
            pid,
            identity: identity(fd.as_fd(), pid).unwrap(),
            start_time: procfs::start_time(pid),
            tag: None,
            ready: false,
        };
        assert!(reopen(&e, &[]).is_some());
        assert!(reopen(&e, &[pid]).is_none(), "a protected pid is never reopened");
        let wrong = Entry {
            identity: match e.identity {
                Identity::PidfsInode(i) => Identity::PidfsInode(i + 1),
                Identity::StartTime(t) => Identity::StartTime(t + 1),
            },
            ..e.clone()
        };
        assert!(reopen(&wrong, &[]).is_none());
        let late = Entry { start_time: e.start_time.map(|t| t + 1), ..e.clone() };
        assert!(reopen(&late, &[]).is_none(), "the start time must match too");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(reopen(&e, &[]).is_none(), "a reaped process is gone");

        let dir = temp_dir("rw");
        let f = StateFile::new(&dir);
        assert_eq!(f.read().unwrap(), Snapshot::default());
        let snap = Snapshot { boot_id: boot_id(), run: "r".into(), processes: vec![e], ..Snapshot::default() };
        f.write(&snap).unwrap();
        assert_eq!(f.read().unwrap(), snap);
        f.remove();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_fifo_a_symlink_or_garbage_is_set_aside_without_blocking() {
        let dir = temp_dir("bad");
        let f = StateFile::new(&dir);
        let fifo = std::process::Command::new("mkfifo").arg(f.path()).status().unwrap();
        assert!(fifo.success());
        assert!(matches!(f.read(), Err(StateError::NotRegular { .. })));
        assert!(!f.path().exists() && dir.join("state.json.rejected").exists());

        let target = dir.join("elsewhere");
        std::fs::write(&target, b"{}").unwrap();
        std::os::unix::fs::symlink(&target, f.path()).unwrap();
        assert!(matches!(f.read(), Err(StateError::NotRegular { .. })));
        assert_eq!(std::fs::read(&target).unwrap(), b"{}");

        std::fs::write(f.path(), b"\x00garbage").unwrap();
        assert!(matches!(f.read(), Err(StateError::Invalid { .. })));
        assert_eq!(f.read().unwrap(), Snapshot::default(), "set aside: nothing left to read");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
