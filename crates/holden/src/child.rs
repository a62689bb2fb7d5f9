//! `Child`: a process held by its pidfd, however it was spawned.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use holden_proto::SpawnReply;
use holden_sys::event;
use holden_sys::process::{self, Exit};

use crate::varlink::Connection as Conn;
use crate::Error;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitStatus {
    code: Option<i32>,
    signal: Option<i32>,
    core_dumped: bool,
}

impl ExitStatus {
    /// The exit code, if the process exited normally.
    pub fn code(&self) -> Option<i32> {
        self.code
    }
    /// The signal that ended it, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.signal
    }
    /// Whether it dumped core.
    pub fn core_dumped(&self) -> bool {
        self.core_dumped
    }
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    /// The shell's convention: the code, or 128 + the signal number.
    pub fn shell_code(&self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

impl From<Exit> for ExitStatus {
    fn from(e: Exit) -> ExitStatus {
        match e {
            Exit::Exited(code) => ExitStatus { code: Some(code), signal: None, core_dumped: false },
            Exit::Signaled { signal, core_dumped } => ExitStatus { code: None, signal: Some(signal), core_dumped },
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) if self.core_dumped => write!(f, "signal {s} (core dumped)"),
            (None, Some(s)) => write!(f, "signal {s}"),
            (None, None) => write!(f, "unknown"),
        }
    }
}

enum Source {
    /// The caller is the parent: `waitid(P_PIDFD)`.
    Local,
    /// Spawned by an agent; the exit stream's connection when one was asked for.
    Agent { stream: Option<Conn> },
}

/// A running (or finished) process, held by its pidfd.
///
/// Dropping a `Child` neither kills nor waits for it, as with `std::process::Child`; a local
/// child that is never waited for stays a zombie until the caller exits.
///
/// ```
/// # fn main() -> Result<(), holden::Error> {
/// let mut child = holden::Command::new("sleep").arg("1000").spawn()?;
/// assert!(child.try_wait()?.is_none(), "still running");
/// child.signal(libc::SIGTERM)?; // through the pidfd: never a recycled pid
/// let status = child.wait()?;
/// assert_eq!((status.code(), status.signal()), (None, Some(libc::SIGTERM)));
/// assert_eq!(status.shell_code(), 128 + libc::SIGTERM);
/// # Ok(()) }
/// ```
pub struct Child {
    pidfd: OwnedFd,
    pid: Option<i32>,
    spawner_pid: i32,
    source: Source,
    status: Option<ExitStatus>,
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child").field("pid", &self.pid).field("status", &self.status).finish()
    }
}

/// The pid a pidfd refers to in the caller's pid namespace, from `/proc/self/fdinfo`.
fn fdinfo_pid(fd: BorrowedFd<'_>) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    let pid: i32 = text.lines().find_map(|l| l.strip_prefix("Pid:"))?.trim().parse().ok()?;
    (pid > 0).then_some(pid)
}

impl Child {
    pub(crate) fn from_local(pidfd: OwnedFd, pid: i32) -> Child {
        Child { pidfd, pid: Some(pid), spawner_pid: pid, source: Source::Local, status: None }
    }

    pub(crate) fn from_agent(pidfd: OwnedFd, agent_pid: i32, stream: Option<Conn>) -> Child {
        let pid = fdinfo_pid(pidfd.as_fd());
        Child { pidfd, pid, spawner_pid: agent_pid, source: Source::Agent { stream }, status: None }
    }

    /// The pid in the caller's pid namespace; `None` when the process is not visible there
    /// (spawned by an agent in a pid namespace the caller cannot see into... or out of).
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// The pid as the spawner saw it (the agent's pid namespace, or the caller's).
    pub fn spawner_pid(&self) -> i32 {
        self.spawner_pid
    }

    /// The pidfd, for polling alongside other descriptors.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Whether this child's exit status will come from the agent's exit stream.
    pub fn uses_exit_stream(&self) -> bool {
        matches!(self.source, Source::Agent { stream: Some(_) })
    }

    /// Sends `signal` through the pidfd (`pidfd_send_signal`): it can never hit a recycled pid.
    pub fn signal(&self, signal: i32) -> Result<(), Error> {
        process::pidfd_send_signal(&self.pidfd, signal).map_err(Error::Signal)
    }

    /// Sends SIGKILL.
    pub fn kill(&self) -> Result<(), Error> {
        self.signal(libc::SIGKILL)
    }

    /// Waits for the process to end and returns how it ended.
    pub fn wait(&mut self) -> Result<ExitStatus, Error> {
        self.status_of(true).map(|s| s.expect("a blocking wait returns a status"))
    }

    /// Returns how the process ended if it has, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        self.status_of(false)
    }

    fn status_of(&mut self, block: bool) -> Result<Option<ExitStatus>, Error> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let status = match &mut self.source {
            Source::Local => match process::wait_pidfd(self.pidfd.as_fd(), !block) {
                Ok(s) => s.map(ExitStatus::from),
                // Someone else reaped it (a waitpid(-1) elsewhere in the program).
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => self.status_from_kernel(block)?,
                Err(e) => return Err(Error::Wait(e)),
            },
            Source::Agent { stream: Some(conn) } => {
                if !block && !conn.has_input().map_err(Error::Io)? {
                    return Ok(None);
                }
                // Not blocking: what has arrived is read, a reply still partial waits for the
                // next look (an event loop must not wait here).
                let deadline = (!block).then(Instant::now);
                let got = conn.recv(deadline).map_err(|e| Error::from_conn(e, Duration::from_secs(1)));
                match got.and_then(|(reply, fds)| Ok((Error::check_reply(reply)?, fds))) {
                    Ok((reply, _)) => {
                        let r: SpawnReply = serde_json::from_value(serde_json::Value::Object(reply.parameters))
                            .map_err(|e| Error::Protocol(format!("exit reply: {e}")))?;
                        let e = r.exit.ok_or_else(|| Error::Protocol("exit stream reply without exit".into()))?;
                        Some(ExitStatus { code: e.code, signal: e.signal, core_dumped: e.core_dumped })
                    }
                    Err(Error::Timeout(_)) => None,
                    Err(_) => {
                        // The agent went away: the kernel may still know.
                        self.source = Source::Agent { stream: None };
                        self.status_from_kernel(block)?
                    }
                }
            }
            Source::Agent { stream: None } => self.status_from_kernel(block)?,
        };
        self.status = status;
        Ok(status)
    }

    /// Reads the exit status from the pidfd (`PIDFD_INFO_EXIT`), waiting for the process to end
    /// and be reaped by its parent when `block`.
    fn status_from_kernel(&self, block: bool) -> Result<Option<ExitStatus>, Error> {
        let mut pause = Duration::from_micros(20);
        loop {
            let timeout = if block { None } else { Some(Duration::ZERO) };
            if !event::poll_readable(self.pidfd.as_fd(), timeout).map_err(Error::Wait)? {
                if block {
                    continue;
                }
                return Ok(None);
            }
            // If its spawner died and the caller, a subreaper, inherited it, the caller reaps it.
            if let Ok(Some(e)) = process::wait_pidfd(self.pidfd.as_fd(), true) {
                return Ok(Some(e.into()));
            }
            match process::pidfd_exit_info(self.pidfd.as_fd()) {
                Ok(Some(e)) => return Ok(Some(e.into())),
                // Exited, but its parent has not reaped it yet (microseconds for an agent).
                Ok(None) if block => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(Error::ExitUnavailable(format!(
                        "the kernel has no PIDFD_INFO_EXIT ({e}) and no exit stream is open"
                    )))
                }
            }
        }
    }

    /// Waits without blocking the async runtime: readiness of the pidfd, then the status.
    #[cfg(feature = "tokio")]
    pub async fn wait_async(&mut self) -> Result<ExitStatus, Error> {
        if let Some(s) = self.try_wait()? {
            return Ok(s);
        }
        let fd = self.pidfd.try_clone().map_err(Error::Wait)?;
        event::readable_async(fd).await.map_err(Error::Wait)?;
        let mut pause = Duration::from_micros(20);
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}

impl AsFd for Child {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

impl From<Child> for OwnedFd {
    fn from(c: Child) -> OwnedFd {
        c.pidfd
    }
}
