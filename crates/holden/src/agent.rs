//! Connections to an agent and the calls it answers.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use holden_proto::{self as proto, GetInfoReply, Reply, SpawnParams, SpawnReply};
use holden_sys::socket;

use crate::child::Child;
use crate::varlink::Connection as Conn;
use crate::Error;

/// The agent's socket when `HOLDEN_SOCKET_PATH` is not set.
pub const DEFAULT_SOCKET: &str = "/run/holden/agent.sock";

/// A connection to a Holden agent.
///
/// Every call has a deadline ([`Agent::set_timeout`], 5 s by default). The connection is
/// re-opened on demand, so an `Agent` outlives agent restarts.
///
/// ```no_run
/// # fn main() -> Result<(), holden::Error> {
/// let mut agent = holden::Agent::connect("/run/holden/agent.sock")?;
/// agent.set_timeout(std::time::Duration::from_secs(2));
/// agent.ping()?;
/// let info = agent.info()?;
/// println!("agent {} (pid {} in its namespace): {:?}", info.version, info.pid, info.features);
/// let mut child = holden::Command::new("hostname").spawn_via(&mut agent)?;
/// assert!(child.wait()?.success());
/// # Ok(()) }
/// ```
pub struct Agent {
    path: PathBuf,
    conn: Option<Conn>,
    timeout: Duration,
    exit_stream: bool,
    /// Whether the kernel records exit statuses on pidfds, as the agent found (asked once).
    kernel_exit_info: Option<bool>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("path", &self.path).field("exit_stream", &self.exit_stream).finish()
    }
}

impl Agent {
    /// Connects to the agent listening on `path`.
    pub fn connect(path: impl AsRef<Path>) -> Result<Agent, Error> {
        let mut agent = Agent {
            path: path.as_ref().into(),
            conn: None,
            timeout: Duration::from_secs(5),
            exit_stream: std::env::var_os("HOLDEN_EXIT_STREAM").is_some_and(|v| v == "1"),
            kernel_exit_info: None,
        };
        agent.conn()?;
        Ok(agent)
    }

    /// Connects to [`Agent::default_path`].
    pub fn connect_default() -> Result<Agent, Error> {
        Agent::connect(Agent::default_path())
    }

    /// `HOLDEN_SOCKET_PATH` if set, else [`DEFAULT_SOCKET`].
    pub fn default_path() -> PathBuf {
        std::env::var_os("HOLDEN_SOCKET_PATH")
            .filter(|p| !p.is_empty())
            .map_or_else(|| DEFAULT_SOCKET.into(), PathBuf::from)
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the deadline of every later call.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.conn = None;
    }

    /// Gets exit statuses of children spawned from now on from the agent's exit stream even
    /// where the kernel offers `PIDFD_INFO_EXIT` (the documented switch for the fallback path;
    /// `HOLDEN_EXIT_STREAM=1` sets it at connect).
    pub fn force_exit_stream(&mut self, on: bool) {
        self.exit_stream = on;
    }

    /// The agent's pid in the caller's pid namespace (from `SO_PEERCRED`), if visible.
    pub fn agent_pid(&mut self) -> Result<Option<i32>, Error> {
        let cred = socket::peer_cred(self.conn()?.stream()).map_err(Error::Io)?;
        Ok((cred.pid > 0).then_some(cred.pid))
    }

    fn conn(&mut self) -> Result<&mut Conn, Error> {
        if self.conn.is_none() {
            let deadline = Instant::now() + self.timeout;
            self.conn = Some(Conn::connect(&self.path, deadline).map_err(|e| Error::from_conn(e, self.timeout))?);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// One call and its first reply. A broken connection is dropped, so the next call
    /// reconnects.
    fn call(
        &mut self,
        method: &str,
        params: &impl serde::Serialize,
        fds: &[BorrowedFd<'_>],
        more: bool,
    ) -> Result<(Reply, Vec<OwnedFd>), Error> {
        let deadline = Instant::now() + self.timeout;
        let msg = proto::encode_call(method, params, more);
        let timeout = self.timeout;
        let conn = self.conn()?;
        let r = conn
            .send(&msg, fds, Some(deadline))
            .and_then(|()| conn.recv(Some(deadline)))
            .map_err(|e| Error::from_conn(e, timeout))
            .and_then(|(reply, fds)| Ok((Error::check_reply(reply)?, fds)));
        if let Err(e) = &r {
            if !matches!(e, Error::Agent(_)) {
                self.conn = None;
            }
        }
        r
    }

    /// Checks that the agent answers.
    pub fn ping(&mut self) -> Result<(), Error> {
        self.call("io.holden.Agent.Ping", &serde_json::json!({}), &[], false).map(drop)
    }

    /// The agent's version, pid and kernel features.
    pub fn info(&mut self) -> Result<GetInfoReply, Error> {
        let (reply, _) = self.call("io.holden.Agent.GetInfo", &serde_json::json!({}), &[], false)?;
        serde_json::from_value(serde_json::Value::Object(reply.parameters)).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Spawns through the agent; used by [`crate::Command::spawn_via`].
    pub(crate) fn spawn(&mut self, params: &SpawnParams, fds: &[BorrowedFd<'_>]) -> Result<Child, Error> {
        // Containers share the host's kernel, so the agent's probe holds for this caller too.
        let exit_info = match self.kernel_exit_info {
            Some(known) => known,
            None => {
                let known = self.info()?.features.pidfd_info_exit;
                self.kernel_exit_info = Some(known);
                known
            }
        };
        let stream = self.exit_stream || !exit_info;
        let (reply, mut rfds) = self.call("io.holden.Agent.Spawn", params, fds, stream)?;
        let spawned: SpawnReply = serde_json::from_value(serde_json::Value::Object(reply.parameters))
            .map_err(|e| Error::Protocol(format!("Spawn reply: {e}")))?;
        let idx = spawned.pidfd.ok_or_else(|| Error::Protocol("Spawn reply without pidfd".into()))? as usize;
        if idx >= rfds.len() {
            return Err(Error::Protocol(format!("Spawn reply names descriptor {idx} of {}", rfds.len())));
        }
        let pidfd = rfds.swap_remove(idx);
        let exit_conn = if stream && reply.continues {
            // This connection now belongs to the child; the next call opens a new one.
            self.conn.take()
        } else {
            None
        };
        Ok(Child::from_agent(pidfd, spawned.pid, exit_conn))
    }
}
