//! The agent's event loop: one thread, one epoll set holding the listener, a signalfd and every
//! connection. Nothing blocks but the spawn itself (which returns once the child has exec'd).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use holden_proto::{self as proto, AgentError, GetInfoReply, SpawnReply};
use holden_sys::event::{Epoll, Event, SignalFd, ERROR, HANGUP, READABLE, READ_CLOSED, WRITABLE};
use holden_sys::process::{self, User};
use holden_sys::socket::{self, PeerCred};

use crate::conn::{
    fail_framing, flush, has_whole_message, legacy_type, push, read_some, Conn, Proto, OWN_INPUT, READ_CHUNK,
    SHARED_INPUT,
};
use crate::log::{self, Level};
use crate::spawner::Spawner;

const LISTENER: u64 = 0;
const SIGNALS: u64 = 1;
/// Calls answered on one connection per turn: a client that pipelines many calls gets this many,
/// then every other ready connection gets its turn before it gets the next ones.
pub const CALLS_PER_TURN: usize = 16;

mod calls;
use calls::exit_status;

/// Who may spawn, and the limits of the loop.
pub struct Policy {
    /// The agent's effective uid (always allowed, as is root).
    pub own_uid: u32,
    /// Further uids allowed to spawn.
    pub allow_uids: Vec<u32>,
    /// Gids (primary or supplementary) whose members may spawn.
    pub allow_gids: Vec<u32>,
    /// Uids whose processes run as the agent's own user; every other caller but root and the
    /// agent's own uid gets processes running as itself.
    pub as_agent_uids: Vec<u32>,
    /// Most connections served at once.
    pub max_connections: usize,
    /// How long a message that has begun may take to arrive whole.
    pub message_timeout: Duration,
}

impl Policy {
    /// Who a caller's processes run as: the agent's user for root, the agent's own uid and the
    /// `--allow-uid-as-agent` uids; the caller's own uid, gid and groups for everyone else.
    fn run_as<'a>(&self, cred: &'a PeerCred) -> Option<User<'a>> {
        if cred.uid == 0 || cred.uid == self.own_uid || self.as_agent_uids.contains(&cred.uid) {
            return None;
        }
        Some(User { uid: cred.uid, gid: cred.gid, groups: &cred.groups })
    }

    fn may_spawn(&self, c: &PeerCred) -> bool {
        proto::peer_allowed(c.uid, c.gid, &c.groups, self.own_uid, &self.allow_uids, &self.allow_gids)
    }
}

/// Why the loop ended.
pub enum Stop {
    /// SIGTERM or SIGINT.
    Signal(i32),
}

/// The agent's state: everything here lives only as long as the connections it serves.
pub struct Server {
    epoll: Epoll,
    listener: UnixListener,
    signals: SignalFd,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    watches: HashMap<i32, u64>,
    spawner: Spawner,
    policy: Policy,
    info: GetInfoReply,
    accept_paused_until: Option<Instant>,
    scratch: Vec<u8>,
    /// Connections with calls left over from their last turn, served round-robin.
    ready: VecDeque<u64>,
    /// A descriptor kept free to accept and refuse a client when the limit is reached (EMFILE).
    spare: Option<std::fs::File>,
}

impl Server {
    /// The signals the loop handles, blocked and read from a signalfd. Create it before the
    /// socket listens: a SIGTERM that arrives as soon as a client can connect is then a clean stop.
    pub fn signals() -> io::Result<SignalFd> {
        SignalFd::new(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
    }

    /// Sets up the loop on a listening socket and the [`Server::signals`] descriptor.
    pub fn new(
        listener: UnixListener,
        signals: SignalFd,
        spawner: Spawner,
        policy: Policy,
        info: GetInfoReply,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let epoll = Epoll::new()?;
        epoll.add(&listener, LISTENER, READABLE)?;
        epoll.add(&signals, SIGNALS, READABLE)?;
        Ok(Server {
            epoll,
            listener,
            signals,
            conns: HashMap::new(),
            next_id: 2,
            watches: HashMap::new(),
            spawner,
            policy,
            info,
            accept_paused_until: None,
            scratch: vec![0; READ_CHUNK],
            ready: VecDeque::new(),
            spare: std::fs::File::open("/dev/null").ok(),
        })
    }

    /// Serves until SIGTERM or SIGINT.
    pub fn run(&mut self) -> io::Result<Stop> {
        // Orphans may already be waiting (the agent as PID 1 of a container).
        self.reap();
        let mut events: Vec<Event> = Vec::with_capacity(256);
        let mut next_deadline = None;
        loop {
            let timeout = if self.ready.is_empty() {
                next_deadline.map(|d: Instant| d.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            events.clear();
            self.epoll.wait(timeout, &mut events)?;
            for ev in &events {
                match ev.token {
                    LISTENER => self.accept_all(),
                    SIGNALS => {
                        if let Some(stop) = self.handle_signals()? {
                            return Ok(stop);
                        }
                    }
                    id => self.handle_conn(id, ev.events),
                }
            }
            // One more turn for each connection that had calls left over.
            for _ in 0..self.ready.len() {
                let Some(id) = self.ready.pop_front() else { break };
                if let Some(c) = self.conns.get_mut(&id) {
                    c.queued = false;
                    self.service(id);
                }
            }
            next_deadline = self.expire(Instant::now());
        }
    }

    /// Acts on every deadline that has passed (closing connections whose message is late,
    /// resuming a paused accept) and returns the next one, in one pass over the connections.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            if let Err(e) = self.epoll.modify(&self.listener, LISTENER, READABLE) {
                log::log(Level::Error, format_args!("resume accepting: {e}"));
            }
        }
        let timeout = self.policy.message_timeout;
        let mut late = Vec::new();
        let mut next = self.accept_paused_until;
        for (id, c) in &self.conns {
            let Some(deadline) = c.started.map(|s| s + timeout) else { continue };
            if now >= deadline {
                late.push(*id);
            } else if next.is_none_or(|n| deadline < n) {
                next = Some(deadline);
            }
        }
        for id in late {
            let Some(c) = self.conns.get_mut(&id) else { continue };
            log::log(
                Level::Warn,
                format_args!("pid {} uid {}: message incomplete after {:?}, closing", c.cred.pid, c.cred.uid, timeout),
            );
            c.started = None;
            let reason = format!("message incomplete after {} ms", timeout.as_millis());
            fail_framing(c, &reason);
            self.service(id);
        }
        next
    }

    fn accept_all(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) && self.spare.is_some() =>
                {
                    // Out of descriptors: free the spare one to accept this client and tell it
                    // so, instead of leaving it waiting in the backlog.
                    // (accept reserves a descriptor before it looks at the queue, so EMFILE
                    // comes whether or not a client waits: only a client accepted here means
                    // another may wait.)
                    self.spare = None;
                    let refused = match self.listener.accept() {
                        Ok((stream, _)) => {
                            let limit = self.conns.len() as u32;
                            log::log(
                                Level::Warn,
                                format_args!("out of descriptors with {limit} clients: refusing one"),
                            );
                            let msg = proto::encode_error(&AgentError::TooManyClients { limit });
                            let _ = socket::send_with_fds(stream.as_fd(), &msg, &[]);
                            true
                        }
                        Err(_) => false,
                    };
                    self.spare = std::fs::File::open("/dev/null").ok();
                    if !refused {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    // Other failures: pause accepting briefly instead of spinning.
                    log::log(Level::Error, format_args!("accept: {e}; pausing for 100 ms"));
                    self.accept_paused_until = Some(Instant::now() + Duration::from_millis(100));
                    let _ = self.epoll.modify(&self.listener, LISTENER, 0);
                    return;
                }
            };
            self.admit(stream);
        }
    }

    fn admit(&mut self, stream: UnixStream) {
        let cred = match socket::peer_cred(&stream) {
            Ok(c) => c,
            Err(e) => {
                log::log(Level::Warn, format_args!("peer credentials: {e}; closing"));
                return;
            }
        };
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        if self.conns.len() >= self.policy.max_connections {
            log::log(
                Level::Warn,
                format_args!("pid {} uid {}: too many clients ({}), refusing", cred.pid, cred.uid, self.conns.len()),
            );
            let msg = proto::encode_error(&AgentError::TooManyClients { limit: self.policy.max_connections as u32 });
            let _ = socket::send_with_fds(stream.as_fd(), &msg, &[]);
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let interest = READABLE | READ_CLOSED;
        if let Err(e) = self.epoll.add(&stream, id, interest) {
            log::log(Level::Error, format_args!("watch connection: {e}"));
            return;
        }
        log::log(Level::Debug, format_args!("connection {id} from pid {} uid {}", cred.pid, cred.uid));
        let may_spawn = self.policy.may_spawn(&cred);
        self.conns.insert(
            id,
            Conn {
                stream,
                cred,
                may_spawn,
                proto: Proto::Unknown,
                inbuf: Vec::new(),
                infds: Vec::new(),
                out: VecDeque::new(),
                started: None,
                watching: None,
                eof: false,
                queued: false,
                undelivered: Vec::new(),
                close_after_flush: false,
                interest,
            },
        );
    }

    fn handle_signals(&mut self) -> io::Result<Option<Stop>> {
        while let Some(sig) = self.signals.read()? {
            match sig {
                libc::SIGCHLD => self.reap(),
                libc::SIGTERM | libc::SIGINT => return Ok(Some(Stop::Signal(sig))),
                other => log::log(Level::Info, format_args!("signal {other} ignored")),
            }
        }
        Ok(None)
    }

    /// Reaps every exited child, ours and orphans alike, and answers exit streams.
    fn reap(&mut self) {
        loop {
            let (pid, exit) = match process::reap_any() {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    log::log(Level::Error, format_args!("waitid: {e}"));
                    return;
                }
            };
            let Some(id) = self.watches.remove(&pid) else { continue };
            let Some(c) = self.conns.get_mut(&id) else { continue };
            c.watching = None;
            let reply = SpawnReply { pid, pidfd: None, exit: Some(exit_status(exit)) };
            push(c, proto::encode_reply(&reply, false), Vec::new());
            self.service(id);
        }
    }

    fn handle_conn(&mut self, id: u64, events: u32) {
        let shared_left = if self.conns.get(&id).is_some_and(|c| c.inbuf.len() + READ_CHUNK > OWN_INPUT) {
            let used: usize = self.conns.values().map(|c| c.inbuf.len().saturating_sub(OWN_INPUT)).sum();
            SHARED_INPUT.saturating_sub(used)
        } else {
            SHARED_INPUT
        };
        let Some(c) = self.conns.get_mut(&id) else { return };
        if events & (READABLE | READ_CLOSED | HANGUP) != 0 {
            read_some(c, &mut self.scratch, shared_left);
        }
        self.service(id);
        if events & (HANGUP | ERROR) != 0 {
            // The peer is gone entirely: nothing more can be sent, and nothing is kept for it.
            self.close(id);
        }
    }

    /// Processes whatever complete messages a connection holds, sends what it can, and closes
    /// or re-arms it.
    fn service(&mut self, id: u64) {
        if self.process(id).is_err() {
            self.close(id);
            return;
        }
        let Some(c) = self.conns.get_mut(&id) else { return };
        let done_reading = c.eof || c.close_after_flush;
        let pending_msg = has_whole_message(c);
        // The message deadline runs only while the client owes us the rest of a message.
        if c.inbuf.is_empty() || pending_msg || done_reading {
            c.started = None;
        } else if c.started.is_none() {
            c.started = Some(Instant::now());
        }
        if c.out.is_empty() && (c.close_after_flush || (done_reading && c.watching.is_none() && !pending_msg)) {
            self.close(id);
            return;
        }
        let mut interest = 0;
        // Read more only while no whole call waits (a client that does not read its replies
        // leaves them queued and gets nothing more read) and within the bounds.
        if !done_reading && !pending_msg && c.out.is_empty() && c.inbuf.len() <= proto::MAX_MESSAGE {
            interest |= READABLE | READ_CLOSED;
        }
        if c.inbuf.capacity() > 2 * OWN_INPUT && c.inbuf.len() <= OWN_INPUT {
            c.inbuf.shrink_to(OWN_INPUT);
        }
        if !c.out.is_empty() {
            interest |= WRITABLE;
        }
        if interest != c.interest {
            c.interest = interest;
            if let Err(e) = self.epoll.modify(&c.stream, id, interest) {
                log::log(Level::Error, format_args!("re-arm connection: {e}"));
                self.close(id);
            }
        }
    }

    fn close(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            if let Some(pid) = c.watching {
                self.watches.remove(&pid);
            }
            log::log(Level::Debug, format_args!("connection {id} closed"));
        }
    }

    /// Answers buffered calls one at a time, sending each reply before reading the next call, so
    /// that calls pipelined in one write are all answered, in order. An error means the peer is
    /// gone.
    fn process(&mut self, id: u64) -> io::Result<()> {
        let mut answered = 0;
        loop {
            let Some(c) = self.conns.get_mut(&id) else { return Ok(()) };
            let flushed = flush(c);
            for pid in std::mem::take(&mut c.undelivered) {
                if c.watching == Some(pid) {
                    c.watching = None;
                }
                self.watches.remove(&pid);
            }
            let c = self.conns.get_mut(&id).expect("live connection");
            flushed?;
            if c.close_after_flush || c.watching.is_some() || !c.out.is_empty() {
                return Ok(());
            }
            if answered == CALLS_PER_TURN {
                // Its share of this turn is used: the rest waits until the others had theirs.
                if has_whole_message(c) && !c.queued {
                    c.queued = true;
                    self.ready.push_back(id);
                }
                return Ok(());
            }
            answered += 1;
            if c.proto == Proto::Unknown {
                // A v0.2 message starts with its type, 1 to 12, as a host-endian u32; anything
                // else is Varlink (or garbage, which the Varlink parser answers).
                match c.inbuf.first() {
                    None => return Ok(()),
                    Some(&b) if legacy_type(b) => c.proto = Proto::Legacy,
                    Some(_) => c.proto = Proto::Varlink,
                }
            }
            let handled = match c.proto {
                Proto::Varlink => self.next_varlink(id),
                _ => self.next_legacy(id),
            };
            if !handled {
                return Ok(());
            }
        }
    }
}
