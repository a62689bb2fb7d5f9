//! A client's Varlink connection: NUL framing, descriptors, deadlines.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use holden_proto::{self as proto, AgentError, Reply};
use holden_sys::{event, socket};

use crate::Error;

/// One connection to an agent. Calls are strictly one at a time.
pub(crate) struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl Conn {
    pub(crate) fn connect(path: &Path, timeout: Duration) -> Result<Conn, Error> {
        let connect_err = |source| Error::Connect { path: path.into(), source };
        let stream = UnixStream::connect(path).map_err(connect_err)?;
        stream.set_write_timeout(Some(timeout)).map_err(connect_err)?;
        Ok(Conn { stream, buf: Vec::new(), scratch: vec![0; 4096] })
    }

    /// A connection already open, with bytes already read from it.
    pub(crate) fn from_parts(stream: UnixStream, buf: Vec<u8>) -> Conn {
        Conn { stream, buf, scratch: vec![0; 4096] }
    }

    pub(crate) fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends one call; the descriptors ride on its first byte.
    pub(crate) fn send(&mut self, msg: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        let mut sent = 0;
        while sent < msg.len() {
            let f = if sent == 0 { fds } else { &[] };
            match socket::send_with_fds(self.stream.as_fd(), &msg[sent..], f) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(Error::Timeout(self.stream.write_timeout().ok().flatten().unwrap_or_default()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Err(Error::Disconnected),
                Err(e) => return Err(Error::Io(e)),
            }
        }
        Ok(())
    }

    /// Reads one reply (by `deadline`, or forever), with the descriptors that came with it.
    /// An error reply becomes `Error::Agent`.
    pub(crate) fn recv(&mut self, deadline: Option<Instant>) -> Result<(Reply, Vec<OwnedFd>), Error> {
        let mut fds = Vec::new();
        loop {
            if let Some(end) = proto::message_end(&self.buf) {
                let msg: Vec<u8> = self.buf.drain(..=end).collect();
                let reply = proto::parse_reply(&msg[..end]).map_err(|e| Error::Protocol(e.to_string()))?;
                if let Some(name) = &reply.error {
                    return Err(Error::Agent(AgentError::from_wire(name, &reply.parameters)));
                }
                return Ok((reply, fds));
            }
            if self.buf.len() > proto::MAX_MESSAGE {
                return Err(Error::Protocol("reply larger than the protocol allows".into()));
            }
            let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if wait == Some(Duration::ZERO) || !event::poll_readable(self.stream.as_fd(), wait).map_err(Error::Io)? {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Error::Timeout(wait.unwrap_or_default()));
                }
                continue;
            }
            let got = socket::recv_with_fds(self.stream.as_fd(), &mut self.scratch, &mut fds).map_err(Error::Io)?;
            if got.len == 0 {
                return Err(Error::Disconnected);
            }
            self.buf.extend_from_slice(&self.scratch[..got.len]);
        }
    }

    /// Whether a reply has begun to arrive (or the agent hung up), without waiting.
    pub(crate) fn has_input(&self) -> Result<bool, Error> {
        Ok(!self.buf.is_empty()
            || event::poll_readable(self.stream.as_fd(), Some(Duration::ZERO)).map_err(Error::Io)?)
    }
}
