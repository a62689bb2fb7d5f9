//! # holden
//!
//! Start processes — locally or through a Holden agent running in another set of namespaces —
//! and manage them through their pidfds: wait for them, read how they ended, signal them.
//!
//! ```no_run
//! use holden::{Agent, Command};
//!
//! # fn main() -> Result<(), holden::Error> {
//! let mut agent = Agent::connect("/run/holden/agent.sock")?;
//! let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn_via(&mut agent)?;
//! let status = child.wait()?;
//! assert_eq!(status.code(), Some(3));
//!
//! // The same Command API spawns locally, and gives the same kind of Child.
//! let mut local = Command::new("sleep").arg("10").spawn()?;
//! local.kill()?;
//! assert_eq!(local.wait()?.signal(), Some(9));
//! # Ok(()) }
//! ```
//!
//! How the exit status is obtained is the library's business, not the caller's: from
//! `waitid(P_PIDFD)` when the caller is the parent (local spawns), from `PIDFD_INFO_EXIT` when
//! the kernel has it (Linux 6.15), and otherwise from the agent's exit stream (a `Spawn` call
//! with `more`, whose connection the [`Child`] keeps). Setting `HOLDEN_EXIT_STREAM=1`, or
//! [`Agent::force_exit_stream`], forces the exit stream on any kernel.
//!
//! What it deliberately does not do: restart, log, or supervise. That is the orchestrator's job.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod agent;
mod child;
mod command;
mod pending;
pub mod varlink;

pub use agent::{Agent, DEFAULT_SOCKET};
pub use child::{Child, ExitStatus};
pub use command::{Command, Stdio};
pub use holden_proto::{AgentError, Features, GetInfoReply as AgentInfo};
pub use pending::{Interest, PendingSpawn};

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in this library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent's socket could not be reached.
    #[error("connect to agent at {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading from or writing to the agent failed.
    #[error("talk to agent: {0}")]
    Io(#[source] io::Error),
    /// The agent did not answer before the call's deadline.
    #[error("agent did not answer within {0:?}")]
    Timeout(Duration),
    /// The agent closed the connection before answering.
    #[error("agent closed the connection")]
    Disconnected,
    /// The agent's reply did not follow the protocol.
    #[error("malformed reply from agent: {0}")]
    Protocol(String),
    /// The agent answered with an error.
    #[error("agent: {0}")]
    Agent(#[from] AgentError),
    /// A local spawn failed (stage is `clone`, `stdio`, `setsid`, `rlimit`, `cwd` or `exec`).
    #[error("spawn {program} ({stage}): {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Where it failed.
        stage: &'static str,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The command cannot be expressed (for example a NUL byte in an argument, a non-UTF-8
    /// string for an agent, an unknown rlimit).
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    /// Waiting for the process failed.
    #[error("wait for process: {0}")]
    Wait(#[source] io::Error),
    /// The process ended but its exit status cannot be known (the kernel lacks
    /// `PIDFD_INFO_EXIT` and the agent's exit stream was lost).
    #[error("exit status unavailable: {0}")]
    ExitUnavailable(String),
    /// Sending a signal failed (ESRCH once the process is reaped).
    #[error("signal process: {0}")]
    Signal(#[source] io::Error),
}

impl Error {
    /// A connection failure as a library error (`timeout` is the deadline that was given).
    pub(crate) fn from_conn(e: varlink::ConnError, timeout: Duration) -> Error {
        use varlink::ConnError as C;
        match e {
            C::Connect { path, source } => Error::Connect { path, source },
            C::Timeout => Error::Timeout(timeout),
            C::Closed => Error::Disconnected,
            C::Io(e) => Error::Io(e),
            C::Protocol(p) => Error::Protocol(p),
        }
    }

    /// A reply as a result: an error reply becomes [`Error::Agent`].
    pub(crate) fn check_reply(r: holden_proto::Reply) -> Result<holden_proto::Reply, Error> {
        match &r.error {
            Some(name) => Err(Error::Agent(AgentError::from_wire(name, &r.parameters))),
            None => Ok(r),
        }
    }

    /// The errno of a failed exec, local (`Spawn` at stage `exec`) or remote (`ExecFailed`).
    pub fn exec_errno(&self) -> Option<i32> {
        match self {
            Error::Spawn { stage: "exec", source, .. } => source.raw_os_error(),
            Error::Agent(AgentError::ExecFailed { errno, .. }) => Some(*errno),
            _ => None,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
