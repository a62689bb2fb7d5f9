//! One client connection of the agent and what is done to it without the server's state:
//! reading with bounds (descriptors tied to their message), framing, queued replies with their
//! descriptors, sending (killing a child whose pidfd cannot be delivered).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use holden_proto::{self as proto, legacy, AgentError};
use holden_sys::process;
use holden_sys::socket::{self, PeerCred};

use crate::log::{self, Level};

/// Bytes read per `recvmsg`.
pub(crate) const READ_CHUNK: usize = 16 * 1024;
/// Input every connection may buffer. Beyond it, a message still arriving draws on
/// [`SHARED_INPUT`], shared by all connections, so that the agent's memory is bounded whatever
/// the clients do (1,024 connections × 16 KiB + 32 MiB).
pub(crate) const OWN_INPUT: usize = 16 * 1024;
/// Input beyond [`OWN_INPUT`] all connections together may buffer (large `Spawn` calls).
pub(crate) const SHARED_INPUT: usize = 32 * 1024 * 1024;

#[derive(PartialEq, Eq, Clone, Copy)]
pub(crate) enum Proto {
    Unknown,
    Varlink,
    Legacy,
}

pub(crate) struct Out {
    pub(crate) data: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
    pub(crate) sent: usize,
    /// The child whose pidfd this reply delivers: killed if it cannot be delivered.
    pub(crate) child: Option<i32>,
}

pub(crate) struct Conn {
    pub(crate) stream: UnixStream,
    pub(crate) cred: PeerCred,
    pub(crate) may_spawn: bool,
    pub(crate) proto: Proto,
    pub(crate) inbuf: Vec<u8>,
    /// Descriptors received, each with the offset in `inbuf` of the message they came with.
    pub(crate) infds: Vec<(usize, OwnedFd)>,
    pub(crate) out: VecDeque<Out>,
    /// When the incomplete message at the end of `inbuf` began.
    pub(crate) started: Option<Instant>,
    /// The child whose exit this connection waits for (a `Spawn` called with `more`).
    pub(crate) watching: Option<i32>,
    /// The peer shut down its writing side.
    pub(crate) eof: bool,
    /// In the ready queue: whole calls wait beyond this turn's share.
    pub(crate) queued: bool,
    /// Children killed because their pidfd could not be delivered (no exit stream for them).
    pub(crate) undelivered: Vec<i32>,
    /// Close once `out` is sent: framing was lost or the peer is not allowed to stay.
    pub(crate) close_after_flush: bool,
    pub(crate) interest: u32,
}

/// Whether a whole message waits in `inbuf` (so the client is waiting on us, not we on it).
pub(crate) fn has_whole_message(c: &Conn) -> bool {
    let proto = match (c.proto, c.inbuf.first()) {
        (Proto::Unknown, Some(&b)) if legacy_type(b) => Proto::Legacy,
        (Proto::Unknown, Some(_)) => Proto::Varlink,
        (p, _) => p,
    };
    match proto {
        Proto::Varlink => proto::message_end(&c.inbuf).is_some(),
        Proto::Legacy if c.inbuf.len() >= legacy::HEADER => {
            let header: [u8; legacy::HEADER] = c.inbuf[..legacy::HEADER].try_into().expect("header size");
            let (_, len) = legacy::parse_header(&header);
            c.inbuf.len() >= legacy::HEADER + len as usize
        }
        _ => false,
    }
}

/// Whether a connection's first byte starts a v0.2 message: its type, 1 to 12, as a host-endian
/// u32; anything else is Varlink (or garbage, which the Varlink parser answers).
pub(crate) fn legacy_type(b: u8) -> bool {
    if cfg!(target_endian = "little") {
        (1..=12).contains(&b)
    } else {
        b == 0
    }
}

pub(crate) fn push(c: &mut Conn, data: Vec<u8>, fds: Vec<OwnedFd>) {
    c.out.push_back(Out { data, fds, sent: 0, child: None });
}

/// Sends an error and closes after it: the stream can no longer be split into messages.
pub(crate) fn fail_framing(c: &mut Conn, reason: &str) {
    let msg = match c.proto {
        Proto::Legacy => legacy::process_error(reason),
        _ => proto::encode_error(&AgentError::InvalidMessage { reason: reason.into() }),
    };
    push(c, msg, Vec::new());
    c.close_after_flush = true;
    c.inbuf.clear();
    c.infds.clear();
}

/// Takes the descriptors of the message at the front of `inbuf`, which was `consumed` bytes long,
/// and shifts the others' offsets.
pub(crate) fn take_fds(c: &mut Conn, consumed: usize) -> Vec<OwnedFd> {
    let mut mine = Vec::new();
    let mut rest = Vec::new();
    for (off, fd) in c.infds.drain(..) {
        if off < consumed {
            mine.push(fd);
        } else {
            rest.push((off - consumed, fd));
        }
    }
    c.infds = rest;
    mine
}

/// Reads what is available (bounded, for fairness), noting where descriptors arrived. Stops
/// once a whole message is buffered, and beyond [`OWN_INPUT`] reads only what `shared_left`
/// allows.
pub(crate) fn read_some(c: &mut Conn, scratch: &mut [u8], mut shared_left: usize) {
    for _ in 0..4 {
        if c.eof || c.close_after_flush || c.inbuf.len() > proto::MAX_MESSAGE || has_whole_message(c) {
            return;
        }
        // Up to OWN_INPUT freely; beyond, only what is left of the shared pool.
        let room = scratch.len().min(OWN_INPUT.saturating_sub(c.inbuf.len()) + shared_left);
        if room == 0 {
            // Over the shared bound: the rest waits in the socket (its deadline runs).
            return;
        }
        let mut fds = Vec::new();
        let r = socket::recv_with_fds(c.stream.as_fd(), &mut scratch[..room], &mut fds);
        let got = match r {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                c.eof = true;
                c.close_after_flush = true;
                return;
            }
        };
        if got.truncated && fds.len() < proto::MAX_FDS {
            // The kernel could not install the descriptors: this process is at its limit.
            drop(fds);
            log::log(
                Level::Warn,
                format_args!("pid {} uid {}: out of descriptors receiving a message, closing", c.cred.pid, c.cred.uid),
            );
            let e = AgentError::SpawnFailed {
                stage: "receive".into(),
                errno: libc::EMFILE,
                message: "the agent is out of descriptors (EMFILE); the message's descriptors were lost".into(),
            };
            push(c, proto::encode_error(&e), Vec::new());
            c.close_after_flush = true;
            c.inbuf.clear();
            c.infds.clear();
            return;
        }
        if got.truncated || c.infds.len() + fds.len() > proto::MAX_FDS {
            drop(fds);
            log::log(Level::Warn, format_args!("pid {} uid {}: too many descriptors, closing", c.cred.pid, c.cred.uid));
            fail_framing(c, &format!("more than {} descriptors on one message", proto::MAX_FDS));
            return;
        }
        if got.len == 0 {
            c.eof = true;
            c.started = None;
            return;
        }
        let old = c.inbuf.len();
        c.inbuf.extend_from_slice(&scratch[..got.len]);
        shared_left -= c.inbuf.len().saturating_sub(OWN_INPUT.max(old)).min(shared_left);
        if !fds.is_empty() {
            // The kernel ends a read at the message that carried descriptors, and a sender
            // attaches them to its message's first byte: they belong to the last message that
            // starts within this read.
            let at_boundary = old == 0 || c.inbuf[old - 1] == 0;
            let last_start = c.inbuf[old..c.inbuf.len() - 1]
                .iter()
                .rposition(|&b| b == 0)
                .map(|p| old + p + 1)
                .or(if at_boundary { Some(old) } else { None })
                .unwrap_or(old);
            c.infds.extend(fds.into_iter().map(|fd| (last_start, fd)));
        }
        if c.started.is_none() {
            c.started = Some(Instant::now());
        }
    }
}

/// Sends queued output until done or the socket is full. Errors mean the peer is gone.
pub(crate) fn flush(c: &mut Conn) -> io::Result<()> {
    while let Some(o) = c.out.front_mut() {
        let fds: Vec<_> = if o.sent == 0 { o.fds.iter().map(|f| f.as_fd()).collect() } else { Vec::new() };
        match socket::send_with_fds(c.stream.as_fd(), &o.data[o.sent..], &fds) {
            Ok(n) => {
                o.sent += n;
                if o.sent == o.data.len() {
                    c.out.pop_front();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if o.sent == 0 && o.child.is_some() && !o.fds.is_empty() => {
                // The pidfd cannot travel (ETOOMANYREFS: too many descriptors in flight). A
                // process nobody can hold must not run: kill it (the SIGCHLD handler reaps
                // it) and say why instead of the reply.
                let pid = o.child.take().expect("checked");
                let errno = e.raw_os_error().unwrap_or(0);
                for fd in &o.fds {
                    let _ = process::pidfd_send_signal(fd, libc::SIGKILL);
                }
                let (level, why) = match errno {
                    libc::EPIPE | libc::ECONNRESET => (Level::Info, "the caller left before receiving it".to_owned()),
                    _ => (Level::Error, crate::spawner::errno_text(errno)),
                };
                log::log(
                    level,
                    format_args!(
                        "pid {} uid {}: cannot deliver the pidfd of pid {pid}: {why}; killed it",
                        c.cred.pid, c.cred.uid
                    ),
                );
                c.undelivered.push(pid);
                let legacy = c.proto == Proto::Legacy;
                let err = AgentError::SpawnFailed {
                    stage: "deliver".into(),
                    errno,
                    message: format!("cannot deliver the pidfd of pid {pid}: {}", crate::spawner::errno_text(errno)),
                };
                o.fds.clear();
                if legacy {
                    // v0.2 already had "started": there is no way to take it back but to close.
                    c.out.pop_front();
                    c.close_after_flush = true;
                } else {
                    o.data = proto::encode_error(&err);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
