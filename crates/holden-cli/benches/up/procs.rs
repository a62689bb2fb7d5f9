//! The bench's processes: the marker every one of them carries, the supervisors it starts
//! (`holden up`), the trees they leave, and the sweep that ends what outlives them.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::HOLDEN;

/// The environment variable that marks every process the bench starts.
pub(crate) const MARK_VAR: &str = "HOLDEN_UP_BENCH_MARK";

/// This run's marker, unique to it: `holden-up-bench-PID-NANOS`, also the name of its directory.
pub(crate) static MARK: OnceLock<String> = OnceLock::new();

pub(crate) fn mark() -> &'static str {
    MARK.get().expect("the marker is set first")
}

pub(crate) fn kill(pid: i32, sig: i32) {
    if let Ok(fd) = holden_sys::process::pidfd_open(pid) {
        let _ = holden_sys::process::pidfd_send_signal(&fd, sig);
    }
}

pub(crate) fn wait_socket(p: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(p).is_err() {
        assert!(Instant::now() < deadline, "nothing on {}", p.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(crate) struct Holden {
    pub(crate) proc: Child,
    pub(crate) socket: PathBuf,
    pub(crate) dir: PathBuf,
}

impl Holden {
    pub(crate) fn write_config(dir: &Path, services: &str) {
        std::fs::write(
            dir.join("holden.toml"),
            format!(
                "[orchestrator]\ncontrol_socket = \"{}\"\nstate_dir = \"{}\"\n{services}",
                dir.join("control.sock").display(),
                dir.join("state").display()
            ),
        )
        .unwrap();
    }
    pub(crate) fn start(dir: &Path, services: &str) -> Holden {
        let _ = std::fs::remove_dir_all(dir.join("state"));
        let socket = dir.join("control.sock");
        Holden::write_config(dir, services);
        let proc = Command::new(HOLDEN)
            .args(["up", "-c"])
            .arg(dir.join("holden.toml"))
            .env(MARK_VAR, mark())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_socket(&socket);
        Holden { proc, socket, dir: dir.into() }
    }
    pub(crate) fn pid(&self) -> i32 {
        self.proc.id() as i32
    }
    /// SIGTERM, then whatever of its tree (as it was before the signal) outlives it is killed.
    pub(crate) fn stop(mut self) {
        let procs = Procs::under(self.pid());
        kill(self.pid(), libc::SIGTERM);
        let _ = self.proc.wait();
        procs.finish("holden up", Duration::from_secs(5));
    }
}

/// A process tree as it was at one instant, with a pidfd for each process, so that what is
/// left of it after a stop can be killed without a pid reused meanwhile being hit.
pub(crate) struct Procs(pub(crate) Vec<(i32, OwnedFd)>);

impl Procs {
    /// `root` and all its descendants.
    pub(crate) fn under(root: i32) -> Procs {
        let mut kids: HashMap<i32, Vec<i32>> = HashMap::new();
        for pid in holden_supervisor::procfs::all_pids() {
            if let Some(ppid) = holden_supervisor::procfs::parent_of(pid) {
                kids.entry(ppid).or_default().push(pid);
            }
        }
        let mut pids = vec![root];
        let mut i = 0;
        while i < pids.len() {
            pids.extend(kids.get(&pids[i]).into_iter().flatten());
            i += 1;
        }
        let mut out = Vec::new();
        for (n, &pid) in pids.iter().enumerate() {
            let Ok(fd) = holden_sys::process::pidfd_open(pid) else { continue };
            // The pid may have been reused between the scan and the open: keep it only if it
            // still has the parent it was found under.
            if n == 0 || pids[..n].iter().any(|&p| holden_supervisor::procfs::parent_of(pid) == Some(p)) {
                out.push((pid, fd));
            }
        }
        Procs(out)
    }
    /// Waits up to `grace` for the first process (the root) to end; whether it did.
    pub(crate) fn wait_root(&self, grace: Duration) -> bool {
        self.0.first().is_none_or(|(_, fd)| holden_sys::event::poll_readable(fd.as_fd(), Some(grace)).unwrap_or(true))
    }
    /// Waits up to `grace` in all for every process to end, SIGKILLs those still there, and
    /// says so when there were any. Those that were orphaned to this process are reaped; the
    /// root is left to its `Child`.
    pub(crate) fn finish(self, what: &str, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut killed = Vec::new();
        for (pid, fd) in &self.0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if !holden_sys::event::poll_readable(fd.as_fd(), Some(left)).unwrap_or(true)
                && holden_sys::process::pidfd_send_signal(fd, libc::SIGKILL).is_ok()
            {
                killed.push(*pid);
            }
        }
        for (_, fd) in self.0.iter().skip(1) {
            reap_if_orphan(fd);
        }
        if !killed.is_empty() {
            println!(
                "note: {} of the {} processes of {what} outlived its stop by {grace:?}; killed: {killed:?}",
                killed.len(),
                self.0.len()
            );
        }
    }
}

/// Reaps the process behind `fd` once it has ended (within 1 s), if it is this process's child:
/// an orphan of a stopped supervisor, come here as to a subreaper.
pub(crate) fn reap_if_orphan(fd: &OwnedFd) {
    if holden_sys::event::poll_readable(fd.as_fd(), Some(Duration::from_secs(1))).unwrap_or(false) {
        // ECHILD when it is not ours.
        let _ = holden_sys::process::wait_pidfd(fd.as_fd(), true);
    }
}

/// Whether `pid`'s command line holds this run's marker, or its environment `MARK_VAR=MARK`.
pub(crate) fn marked(pid: i32) -> bool {
    let m = mark().as_bytes();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if cmdline.windows(m.len()).any(|w| w == m) {
        return true;
    }
    let entry = format!("{MARK_VAR}={}", mark());
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    environ.split(|&b| b == 0).any(|v| v == entry.as_bytes())
}

/// Kills (SIGKILL) every live process but this one that carries the marker; how many there were.
pub(crate) fn sweep() -> usize {
    let me = std::process::id() as i32;
    let mut found = 0;
    for pid in holden_supervisor::procfs::all_pids().filter(|&p| p != me && marked(p)) {
        let Ok(fd) = holden_sys::process::pidfd_open(pid) else { continue };
        // Checked again through the open pidfd's pid, so a pid reused since is left alone.
        if marked(pid) && holden_cli::is_running(pid) {
            found += 1;
            let _ = holden_sys::process::pidfd_send_signal(&fd, libc::SIGKILL);
            reap_if_orphan(&fd);
        }
    }
    found
}
