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

/// What reading found: the complete messages (NUL removed), possibly none, and whether the
/// peer is done sending (it hung up, or broke the framing). Messages read before the end are
/// still answered.
pub struct Input {
    /// Complete messages, at most [`CALLS_PER_READ`].
    pub messages: Vec<Vec<u8>>,
    /// Nothing more will be read.
    pub ended: bool,
    /// More complete messages wait: read again on the next iteration.
    pub more: bool,
}

/// Calls taken from one connection per wake-up; the rest wait for the next iteration, so one
/// pipelining client cannot hold the loop.
pub const CALLS_PER_READ: usize = 16;

impl Conn {
    pub fn new(stream: UnixStream, cred: PeerCred) -> Conn {
        Conn { stream, cred, input: Vec::new(), out: Vec::new(), follow: None, closing: false }
    }

    /// Reads once (at most 16 KiB) and takes out up to [`CALLS_PER_READ`] complete messages.
    pub fn read(&mut self) -> Input {
        let mut buf = [0u8; 16 * 1024];
        let mut ended = false;
        if !self.closing && !self.input[..self.input.len().min(MAX_MESSAGE + 1)].contains(&0) {
            loop {
                match self.stream.read(&mut buf) {
                    Ok(0) => ended = true,
                    Ok(n) => self.input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => ended = true,
                }
                break;
            }
        }
        let mut messages = Vec::new();
        let mut start = 0;
        while messages.len() < CALLS_PER_READ {
            let Some(end) = self.input[start..].iter().position(|&b| b == 0) else { break };
            messages.push(self.input[start..start + end].to_vec());
            start += end + 1;
        }
        self.input.drain(..start);
        let more = self.input.contains(&0);
        if !more && self.input.len() > MAX_MESSAGE {
            // No NUL within the largest message: the framing is lost.
            ended = true;
        }
        Input { messages, ended, more }
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
