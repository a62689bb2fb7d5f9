//! One control-socket connection: NUL-framed input, a bounded output queue, and what it
//! follows (a service's log, or events) after a call with `more`.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use holden_orchestrator::control::MAX_MESSAGE;
use holden_sys::socket::PeerCred;

/// A follower that lets this much output pile up is too slow and is disconnected; the log
/// files keep everything, so nothing is lost, and supervision never waits for a reader.
pub const MAX_QUEUED: usize = 4 * 1024 * 1024;

/// What a connection receives without asking again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// New lines of this service's log.
    Logs(String),
    /// Every state change.
    Events,
}

pub struct Conn {
    pub stream: UnixStream,
    pub cred: PeerCred,
    input: Vec<u8>,
    out: Vec<u8>,
    pub follow: Option<Follow>,
    /// Close once the output is sent (framing lost, or too slow).
    pub closing: bool,
}

/// What reading found.
pub enum Input {
    /// Complete messages (NUL removed), possibly none yet.
    Messages(Vec<Vec<u8>>),
    /// The peer hung up or broke the framing; the connection is done.
    Closed,
}

impl Conn {
    pub fn new(stream: UnixStream, cred: PeerCred) -> Conn {
        Conn { stream, cred, input: Vec::new(), out: Vec::new(), follow: None, closing: false }
    }

    /// Reads what is there.
    pub fn read(&mut self) -> Input {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Input::Closed,
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    if self.input.len() > MAX_MESSAGE + 1 && !self.input[..MAX_MESSAGE + 1].contains(&0) {
                        return Input::Closed;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Input::Closed,
            }
        }
        let mut msgs = Vec::new();
        while let Some(end) = self.input.iter().position(|&b| b == 0) {
            let msg: Vec<u8> = self.input.drain(..=end).collect();
            msgs.push(msg[..end].to_vec());
        }
        Input::Messages(msgs)
    }

    /// Queues a message and sends what the socket takes now.
    pub fn send(&mut self, msg: &[u8]) {
        if self.out.len() + msg.len() > MAX_QUEUED {
            self.closing = true;
            self.out.clear();
            return;
        }
        self.out.extend_from_slice(msg);
        self.flush();
    }

    /// Sends what the socket takes without blocking.
    pub fn flush(&mut self) {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => {
                    self.closing = true;
                    self.out.clear();
                }
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.closing = true;
                    self.out.clear();
                }
            }
        }
    }

    /// Output is waiting for the socket to take it.
    pub fn pending(&self) -> bool {
        !self.out.is_empty()
    }

    /// The connection should be dropped now.
    pub fn done(&self) -> bool {
        self.closing && self.out.is_empty()
    }
}
