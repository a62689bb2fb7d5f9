//! `PendingSpawn`: a spawn through an agent that an event loop drives by readiness, so that a
//! slow, stopped or dead agent never blocks the caller.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use holden_proto::{self as proto, AgentError, SpawnReply};
use holden_sys::socket;

use crate::child::Child;
use crate::varlink::Connection as Conn;
use crate::Error;

/// What a [`PendingSpawn`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// The socket must become writable (the call is not sent in full yet).
    Writable,
    /// The socket must become readable (the reply is awaited).
    Readable,
}

/// A `Spawn` call in flight on its own non-blocking connection, made by
/// [`Command::spawn_pending`](crate::Command::spawn_pending).
///
/// Poll [`PendingSpawn::as_fd`] for [`PendingSpawn::interest`] and call
/// [`PendingSpawn::advance`] when it is ready; it never blocks. Deadlines are the caller's:
/// dropping it abandons the call (the agent then closes its side).
pub struct PendingSpawn {
    path: PathBuf,
    stream: UnixStream,
    message: Vec<u8>,
    sent: usize,
    fds: Vec<OwnedFd>,
    input: Vec<u8>,
    received: Vec<OwnedFd>,
    exit_stream: bool,
}

impl std::fmt::Debug for PendingSpawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSpawn").field("path", &self.path).field("sent", &self.sent).finish()
    }
}

impl PendingSpawn {
    pub(crate) fn start(path: &Path, message: Vec<u8>, fds: Vec<OwnedFd>) -> Result<PendingSpawn, Error> {
        let stream =
            socket::connect_nonblocking(path).map_err(|source| Error::Connect { path: path.into(), source })?;
        let exit_stream = proto::parse_call(&message[..message.len().saturating_sub(1)]).is_ok_and(|c| c.more);
        let mut p = PendingSpawn {
            path: path.into(),
            stream,
            message,
            sent: 0,
            fds,
            input: Vec::new(),
            received: Vec::new(),
            exit_stream,
        };
        // Most calls fit the socket buffer at once.
        p.send()?;
        Ok(p)
    }

    /// What to poll for next.
    pub fn interest(&self) -> Interest {
        if self.sent < self.message.len() {
            Interest::Writable
        } else {
            Interest::Readable
        }
    }

    fn send(&mut self) -> Result<(), Error> {
        while self.sent < self.message.len() {
            let fds: Vec<BorrowedFd<'_>> =
                if self.sent == 0 { self.fds.iter().map(|f| f.as_fd()).collect() } else { Vec::new() };
            match socket::send_with_fds(self.stream.as_fd(), &self.message[self.sent..], &fds) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Err(Error::Disconnected),
                Err(e) => return Err(Error::Io(e)),
            }
        }
        // Sent: the duplicated descriptors are the agent's now.
        self.fds.clear();
        Ok(())
    }

    /// Moves the call on as far as it goes without waiting: `Ok(Some(child))` once the agent
    /// answered with a pidfd, `Ok(None)` while more readiness is needed, an error when the call
    /// failed (an error reply is [`Error::Agent`]).
    pub fn advance(&mut self) -> Result<Option<Child>, Error> {
        if self.sent < self.message.len() {
            self.send()?;
            if self.sent < self.message.len() {
                return Ok(None);
            }
        }
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = proto::message_end(&self.input) {
                return self.finish(end).map(Some);
            }
            if self.input.len() > proto::MAX_MESSAGE {
                return Err(Error::Protocol("reply larger than the protocol allows".into()));
            }
            match socket::recv_with_fds(self.stream.as_fd(), &mut buf, &mut self.received) {
                Ok(got) if got.len == 0 => return Err(Error::Disconnected),
                Ok(got) => {
                    // A Spawn reply carries one descriptor; an agent sending more is broken.
                    if self.received.len() > proto::MAX_FDS {
                        return Err(Error::Protocol("more descriptors than a Spawn reply carries".into()));
                    }
                    self.input.extend_from_slice(&buf[..got.len]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    fn finish(&mut self, end: usize) -> Result<Child, Error> {
        let msg: Vec<u8> = self.input.drain(..=end).collect();
        let reply = proto::parse_reply(&msg[..end]).map_err(|e| Error::Protocol(e.to_string()))?;
        if let Some(name) = &reply.error {
            return Err(Error::Agent(AgentError::from_wire(name, &reply.parameters)));
        }
        let spawned: SpawnReply = serde_json::from_value(serde_json::Value::Object(reply.parameters))
            .map_err(|e| Error::Protocol(format!("Spawn reply: {e}")))?;
        let idx = spawned.pidfd.ok_or_else(|| Error::Protocol("Spawn reply without pidfd".into()))? as usize;
        if idx >= self.received.len() {
            return Err(Error::Protocol(format!("Spawn reply names descriptor {idx} of {}", self.received.len())));
        }
        let pidfd = self.received.swap_remove(idx);
        self.received.clear();
        let exit_conn = if self.exit_stream && reply.continues {
            // The connection now carries this child's exit; it becomes the child's, blocking.
            let stream = self.stream.try_clone().map_err(Error::Io)?;
            stream.set_nonblocking(false).map_err(Error::Io)?;
            Some(Conn::from_parts(stream, std::mem::take(&mut self.input)))
        } else {
            None
        };
        Ok(Child::from_agent(pidfd, spawned.pid, exit_conn))
    }
}

impl AsFd for PendingSpawn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}
