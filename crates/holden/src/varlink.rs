//! A client's Varlink connection, blocking with deadlines: NUL framing, descriptors on the
//! message they belong to, replies decoded by `holden_proto`. It is the one client connection
//! of Holden: the library's calls to an agent and the `holden` CLI's calls to the orchestrator
//! both use it. (The non-blocking variant an event loop drives is [`crate::PendingSpawn`];
//! the servers' connections live in the agent and the supervisor.)

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use holden_proto::{self as proto, Reply};
use holden_sys::{event, socket};

/// Why a call on a [`Connection`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Connecting failed (no socket, refused, permission).
    #[error("connect to {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The deadline passed.
    #[error("no answer in time")]
    Timeout,
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// The peer sent something that is not a Varlink reply.
    #[error("malformed reply: {0}")]
    Protocol(String),
}

/// One connection. Calls are strictly one at a time.
pub struct Connection {
    stream: UnixStream,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("buffered", &self.buf.len()).finish()
    }
}

impl Connection {
    /// Connects to the socket at `path` by `deadline`. A listener whose backlog is full is
    /// tried again until the deadline, never waited on without one.
    pub fn connect(path: &Path, deadline: Instant) -> Result<Connection, ConnError> {
        let connect_err = |source| ConnError::Connect { path: path.into(), source };
        let stream = loop {
            match socket::connect_nonblocking(path) {
                Ok(s) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(ConnError::Timeout);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(connect_err(e)),
            }
        };
        stream.set_nonblocking(false).map_err(connect_err)?;
        Ok(Connection::from_parts(stream, Vec::new()))
    }

    /// A connection already open, with bytes already read from it.
    pub(crate) fn from_parts(stream: UnixStream, buf: Vec<u8>) -> Connection {
        Connection { stream, buf, scratch: vec![0; 4096] }
    }

    /// The socket.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends one message (NUL-terminated, as `holden_proto::encode_call` makes it) by
    /// `deadline`; the descriptors ride on its first byte.
    pub fn send(&mut self, msg: &[u8], fds: &[BorrowedFd<'_>], deadline: Option<Instant>) -> Result<(), ConnError> {
        let mut sent = 0;
        while sent < msg.len() {
            let left = match deadline {
                Some(d) => Some(d.saturating_duration_since(Instant::now())).filter(|l| !l.is_zero()),
                None => None,
            };
            if deadline.is_some() && left.is_none() {
                return Err(ConnError::Timeout);
            }
            self.stream.set_write_timeout(left).map_err(ConnError::Io)?;
            let f = if sent == 0 { fds } else { &[] };
            match socket::send_with_fds(self.stream.as_fd(), &msg[sent..], f) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(ConnError::Timeout),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Err(ConnError::Closed),
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
        Ok(())
    }

    /// Reads one reply (by `deadline`, or for ever), with the descriptors that came with it.
    /// An error reply is a `Reply` whose `error` is set: what it means is the caller's.
    pub fn recv(&mut self, deadline: Option<Instant>) -> Result<(Reply, Vec<OwnedFd>), ConnError> {
        let mut fds = Vec::new();
        loop {
            if let Some(end) = proto::message_end(&self.buf) {
                let msg: Vec<u8> = self.buf.drain(..=end).collect();
                let reply = proto::parse_reply(&msg[..end]).map_err(|e| ConnError::Protocol(e.to_string()))?;
                return Ok((reply, fds));
            }
            if self.buf.len() > proto::MAX_MESSAGE {
                return Err(ConnError::Protocol("reply larger than the protocol allows".into()));
            }
            // With the deadline reached the poll does not wait, but what is there is still read.
            let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !event::poll_readable(self.stream.as_fd(), wait).map_err(ConnError::Io)? {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(ConnError::Timeout);
                }
                continue;
            }
            let got = socket::recv_with_fds(self.stream.as_fd(), &mut self.scratch, &mut fds).map_err(ConnError::Io)?;
            if got.len == 0 {
                return Err(ConnError::Closed);
            }
            self.buf.extend_from_slice(&self.scratch[..got.len]);
        }
    }

    /// Whether a reply has begun to arrive (or the peer hung up), without waiting.
    pub fn has_input(&self) -> std::io::Result<bool> {
        Ok(!self.buf.is_empty() || event::poll_readable(self.stream.as_fd(), Some(Duration::ZERO))?)
    }
}
