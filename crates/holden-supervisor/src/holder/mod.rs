//! The log-pipe holder: a tiny separate process that keeps a copy of the read end of every
//! service's stdout and stderr pipe, so that a service does not get SIGPIPE when the supervisor
//! is killed, and a restarted supervisor can take the pipes back (the idea of s6-fdholder).
//! [`serve`] is the holder process's main; [`Holder`] is the supervisor's side.
//!
//! # Protocol
//!
//! One Unix stream socket (mode 0600). Requests are ASCII lines ending in `\n`, at most 512
//! bytes with the newline:
//!
//! - `store KEY`: keep the descriptor attached with `SCM_RIGHTS` to the request's first byte
//!   (exactly one) under `KEY`, closing what was kept under `KEY` before. The holder enlarges a
//!   pipe to 1 MiB (`F_SETPIPE_SZ`, failure ignored) so a service can keep writing while no
//!   supervisor reads. At most 4096 descriptors are kept: a `store` under a new key beyond that
//!   is ignored and its descriptor closed.
//! - `forget KEY`: close what is kept under `KEY`, if anything.
//! - `take`: answered with one `fd KEY\n` per kept descriptor, a copy of it attached to that
//!   message's first byte, then `end\n`. The holder keeps its own copies.
//! - `exit`: close everything, remove the socket file and exit.
//!
//! Nothing else is sent: no acknowledgement, no error. `KEY` is 1 to 256 printable ASCII
//! characters (no space). A stream socket may merge or split messages, so descriptors are
//! matched to `store` requests (and `fd` replies) by order: each takes the next one received. A
//! connection that breaks the protocol (an unknown request, a bad key, a longer line, a `store`
//! without a descriptor, a descriptor no `store` claims) is closed; what is kept stays kept.
//!
//! # Who may connect
//!
//! Peers whose uid (`SO_PEERCRED`) is neither 0 nor the holder's effective uid are refused at
//! once; [`Holder`] likewise refuses a holder run by another uid. One connection is served at a
//! time: a new one replaces it, after the requests already received on it are carried out (so
//! the last stores of a supervisor that was just killed are not lost).
//!
//! A holder started by [`Holder::connect_or_start`] is the caller's child, kept as a pidfd and
//! reaped by [`Holder::shutdown`]; there is no double fork, as `holden up` is a subreaper that
//! would get a grandchild back anyway. One that exits earlier is reaped with the other children
//! that are not services. A dropped client leaves the holder running, which is the point.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{CString, OsString};
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use holden_sys::event::{poll_readable, Epoll, READABLE, WRITABLE};
use holden_sys::process::{self, SpawnError, SpawnSpec, Spawned};
use holden_sys::{fd, socket};

const MAX_LINE: usize = 512;
const MAX_KEPT: usize = 4096;
/// Descriptors received ahead of their line; more is a broken peer.
const MAX_UNCLAIMED: usize = 64;

fn valid_key(key: &str) -> bool {
    (1..=256).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> io::Error {
    io::Error::new(kind, msg.into())
}

/// Adds what failed to an error, keeping its kind.
fn ctx(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    err(e.kind(), format!("{what}: {e}"))
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// A line to send, with the descriptor for its first byte. A later message with the same key
/// replaces it while none of it is sent.
#[derive(Debug)]
struct Msg {
    key: Option<String>,
    line: Vec<u8>,
    fd: Option<OwnedFd>,
    sent: usize,
}

/// One end of a connection, either side: lines with descriptors, both ways, non-blocking.
#[derive(Debug)]
struct Link {
    sock: UnixStream,
    out: VecDeque<Msg>,
    input: Vec<u8>,
    /// Received and not yet claimed by a line.
    fds: VecDeque<OwnedFd>,
}

impl Link {
    fn new(sock: UnixStream) -> Link {
        Link { sock, out: VecDeque::new(), input: Vec::new(), fds: VecDeque::new() }
    }

    fn push(&mut self, key: Option<&str>, line: String, fd: Option<OwnedFd>) {
        let msg = Msg { key: key.map(str::to_owned), line: line.into_bytes(), fd, sent: 0 };
        match self.out.iter_mut().find(|m| m.sent == 0 && m.key.is_some() && m.key == msg.key) {
            Some(old) => *old = msg,
            None => self.out.push_back(msg),
        }
    }

    /// Sends as much as the socket takes.
    fn send(&mut self) -> io::Result<()> {
        while let Some(m) = self.out.front_mut() {
            let fd = m.fd.as_ref().map(|f| f.as_fd());
            match socket::send_with_fds(self.sock.as_fd(), &m.line[m.sent..], fd.as_slice()) {
                Ok(n) => (m.sent, m.fd) = (m.sent + n, None), // the peer has its copy
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
            if m.sent >= m.line.len() {
                self.out.pop_front();
            }
        }
        Ok(())
    }

    /// Reads once: `Ok(true)` if bytes came, `Ok(false)` if none wait, `Err` if the peer hung
    /// up or sent more descriptors than lines can claim.
    fn read(&mut self) -> Result<bool, ()> {
        let (mut buf, mut got) = ([0u8; 4096], Vec::new());
        match socket::recv_with_fds(self.sock.as_fd(), &mut buf, &mut got) {
            Ok(r) => {
                self.fds.extend(got);
                self.input.extend_from_slice(&buf[..r.len]);
                (r.len > 0 && !r.truncated && self.fds.len() <= MAX_UNCLAIMED).then_some(true).ok_or(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => Ok(false),
            Err(_) => Err(()),
        }
    }

    /// The next complete line received, without its newline; `Err` for a line that is (or
    /// will be) longer than 512 bytes, or not UTF-8.
    fn line(&mut self) -> Result<Option<String>, ()> {
        let Some(end) = self.input.iter().position(|&b| b == b'\n') else {
            return if self.input.len() < MAX_LINE { Ok(None) } else { Err(()) };
        };
        if end >= MAX_LINE {
            return Err(());
        }
        String::from_utf8(self.input.drain(..=end).take(end).collect()).map(Some).map_err(drop)
    }
}

/// The client the supervisor uses. Non-blocking after `connect_or_start`; never blocks the
/// supervisor's event loop once running.
#[derive(Debug)]
pub struct Holder {
    link: Link,
    /// The holder process, when this client started it.
    child: Option<Spawned>,
}

impl Holder {
    /// Connects to the holder listening on `socket`; if none answers (no file, ECONNREFUSED),
    /// starts one by running `command` (program then arguments; the socket path is appended) as
    /// a child in a new session with stdio on `/dev/null` and no other descriptor, then waits
    /// up to 2 s for its socket to accept (else kills and reaps it). Fails too when the holder
    /// is run by a uid other than 0 or ours.
    pub fn connect_or_start(socket: &Path, command: &[OsString]) -> io::Result<Holder> {
        let absent = |e: &io::Error| matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused);
        match connect(socket) {
            Err(e) if absent(&e) => {}
            r => return r.map(|sock| Holder { link: Link::new(sock), child: None }),
        }
        let child = start(socket, command)?;
        let deadline = Instant::now() + Duration::from_secs(2);
        let result = loop {
            if poll_readable(child.pidfd.as_fd(), Some(left(deadline).min(Duration::from_millis(1)))).unwrap_or(false) {
                break Err(err(ErrorKind::Other, "fd holder exited before listening"));
            }
            match connect(socket) {
                Ok(sock) => return Ok(Holder { link: Link::new(sock), child: Some(child) }),
                Err(e) if !absent(&e) && e.kind() != ErrorKind::WouldBlock => break Err(e),
                Err(e) if left(deadline).is_zero() => break Err(ctx(e, "fd holder did not listen within 2 s")),
                Err(_) => {}
            }
        };
        kill_and_reap(&child);
        result
    }

    /// Copies of every descriptor the holder keeps, with their keys. Blocking, with a 2 s
    /// deadline (only called at start-up, before the event loop runs). Queued requests are sent
    /// first. After a failure the connection is out of step: connect again.
    pub fn take_all(&mut self) -> io::Result<Vec<(String, OwnedFd)>> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let broken = || err(ErrorKind::InvalidData, "fd holder broke the protocol in its reply to take");
        self.link.push(None, "take\n".into(), None);
        self.flush_within(deadline)?;
        let mut taken = Vec::new();
        loop {
            while let Some(line) = self.link.line().map_err(|()| broken())? {
                if line == "end" && self.link.input.is_empty() && self.link.fds.is_empty() {
                    return Ok(taken);
                }
                let key = line.strip_prefix("fd ").filter(|k| valid_key(k)).ok_or_else(broken)?;
                taken.push((key.to_owned(), self.link.fds.pop_front().ok_or_else(broken)?));
            }
            if left(deadline).is_zero() {
                return Err(err(ErrorKind::TimedOut, "fd holder did not answer take within 2 s"));
            } else if poll_readable(self.link.sock.as_fd(), Some(left(deadline)))? && self.link.read().is_err() {
                return Err(err(ErrorKind::UnexpectedEof, "fd holder hung up (or broke the protocol) during take"));
            }
        }
    }

    /// Asks the holder to keep a copy of `fd` under `key` (replacing what it held under that
    /// key). Never blocks: the request (with a duplicate of the fd) is queued, replacing a
    /// queued request for the same key that is not sent yet, and goes out with the next
    /// [`Holder::flush`] (or `take_all`, or `shutdown`).
    ///
    /// An invalid `key` (see the module doc) is a caller bug, ignored (a panic in debug builds).
    /// If `fd` cannot be duplicated, `forget KEY` is sent instead: no older pipe stays kept.
    pub fn store(&mut self, key: &str, fd: BorrowedFd<'_>) {
        match fd.try_clone_to_owned() {
            Ok(copy) => self.push(key, "store", Some(copy)),
            Err(_) => self.push(key, "forget", None),
        }
    }

    /// Asks the holder to close what it keeps under `key`. Never blocks (queued likewise).
    pub fn forget(&mut self, key: &str) {
        self.push(key, "forget", None);
    }

    fn push(&mut self, key: &str, verb: &str, fd: Option<OwnedFd>) {
        debug_assert!(valid_key(key), "invalid fd holder key {key:?}");
        if valid_key(key) {
            // Only queued: the supervisor sends everything queued once per loop iteration
            // (`flush`), after the work that cannot wait (an exit, a spawn).
            self.link.push(Some(key), format!("{verb} {key}\n"), fd);
        }
    }

    /// Whether queued requests wait for the socket to become writable (also after a failed
    /// send: the request stays queued, so that the next [`Holder::flush`] reports it).
    pub fn wants_write(&self) -> bool {
        !self.link.out.is_empty()
    }

    /// Sends what is queued, as far as the socket takes it. Err when the holder is gone (then
    /// connect again).
    pub fn flush(&mut self) -> io::Result<()> {
        self.link.send().map_err(|e| ctx(e, "send to fd holder"))
    }

    /// Flushes the whole queue, waiting for the socket up to `deadline`.
    fn flush_within(&mut self, deadline: Instant) -> io::Result<()> {
        let mut epoll = Epoll::new()?;
        epoll.add(self.link.sock.as_fd(), 0, WRITABLE)?;
        while self.flush().map(|()| self.wants_write())? {
            if left(deadline).is_zero() {
                return Err(err(ErrorKind::TimedOut, "fd holder did not read its requests in time"));
            }
            epoll.wait(Some(left(deadline)), &mut Vec::new())?;
        }
        Ok(())
    }

    /// Tells the holder to close everything and exit, and waits up to 1 s for it to go: for
    /// the connection to close and, if this client started it, for the process to exit. A
    /// started holder still there after that is killed; it is reaped either way.
    pub fn shutdown(mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        self.link.push(None, "exit\n".into(), None);
        if self.flush_within(deadline).is_ok() && self.link.sock.set_nonblocking(false).is_ok() {
            // The holder sends nothing more: this read ends with its hang-up or the deadline.
            let _ = self.link.sock.set_read_timeout(Some(left(deadline).max(Duration::from_millis(1))));
            let _ = (&self.link.sock).read(&mut [0u8; 64]);
        }
        if let Some(child) = self.child.take() {
            match poll_readable(child.pidfd.as_fd(), Some(left(deadline))) {
                Ok(true) => drop(process::wait_pidfd(child.pidfd.as_fd(), false)),
                _ => kill_and_reap(&child),
            }
        }
    }
}

impl AsFd for Holder {
    /// The socket, for the supervisor's epoll (writable interest while [`Holder::wants_write`]).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.link.sock.as_fd()
    }
}

/// Connects without waiting and checks who listens.
fn connect(socket: &Path) -> io::Result<UnixStream> {
    let what = || format!("connect to fd holder socket {}", socket.display());
    let stream = socket::connect_nonblocking(socket).map_err(|e| ctx(e, what()))?;
    let uid = socket::peer_cred(&stream).map_err(|e| ctx(e, what()))?.uid;
    let ok = uid == 0 || uid == fd::geteuid();
    ok.then_some(stream).ok_or_else(|| err(ErrorKind::PermissionDenied, format!("{}: served by uid {uid}", what())))
}

/// Starts `command SOCKET` as a child in a new session, with stdio on `/dev/null`, no other
/// descriptor, and our environment and working directory.
fn start(socket: &Path, command: &[OsString]) -> io::Result<Spawned> {
    let program = command.first().ok_or_else(|| err(ErrorKind::InvalidInput, "fd holder command is empty"))?;
    let argv = (command.iter().map(|a| a.as_os_str()).chain([socket.as_os_str()]))
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| err(ErrorKind::InvalidInput, "fd holder command has a NUL byte"))?;
    let envp: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| CString::new([k.into_vec(), b"=".to_vec(), v.into_vec()].concat()).ok())
        .collect();
    let path = std::env::var_os("PATH");
    let candidates = process::exec_candidates(program.as_bytes(), path.as_ref().map(|p| p.as_bytes()));
    let null = OpenOptions::new().read(true).write(true).open("/dev/null").map_err(|e| ctx(e, "open /dev/null"))?;
    let (argv, envp, candidates, stdio) = (&argv, &envp, &candidates, [Some(null.as_fd()); 3]);
    let spec = SpawnSpec {
        candidates,
        argv,
        envp,
        cwd: None,
        stdio,
        setsid: true,
        umask: None,
        rlimits: &[],
        nice: None,
        oom_score_adj: None,
        user: None,
        cgroup: None,
        extra_fds: &[],
        limits_as_user: false,
    };
    let what = format!("start fd holder {}", program.to_string_lossy());
    process::spawn(&spec).map_err(|e| match e {
        SpawnError::Clone(e) => ctx(e, format!("{what}: clone")),
        SpawnError::Child { stage, errno } => {
            ctx(io::Error::from_raw_os_error(errno), format!("{what}: {}", stage.name()))
        }
    })
}

fn kill_and_reap(child: &Spawned) {
    let _ = process::pidfd_send_signal(&child.pidfd, libc::SIGKILL);
    let _ = process::wait_pidfd(child.pidfd.as_fd(), false);
}

/// The holder process's main: listens on `socket` (mode 0600; a stale socket file is removed
/// first, a live holder's is left alone with `AddrInUse`) and serves as the module doc says.
/// Ignores SIGHUP, SIGINT and SIGPIPE (it must outlive the supervisor and its terminal) and
/// raises its soft descriptor limit toward the hard one. On `exit` it removes its socket file
/// (if that is still its own) and returns `Ok(())`.
pub fn serve(socket: &Path) -> io::Result<()> {
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGPIPE] {
        fd::ignore_signal(sig).map_err(|e| ctx(e, "ignore signals"))?;
    }
    // Room for the kept descriptors, and for their copies on their way to a `take`.
    if let Some((nofile, Ok((soft, hard)))) = process::rlimit_resource("nofile").map(|r| (r, fd::getrlimit(r))) {
        let _ = fd::setrlimit(nofile, hard.min(soft.max(3 * MAX_KEPT as u64)), hard);
    }
    let listener = listen(socket)?;
    let id = |p: &Path| fs::symlink_metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let ours = id(socket);
    let result = Epoll::new().and_then(|epoll| {
        Server { epoll, listener, kept: BTreeMap::new(), conn: None, token: LISTENER, paused: false }.run()
    });
    if ours.is_some() && id(socket) == ours {
        let _ = fs::remove_file(socket);
    }
    result.map_err(|e| ctx(e, "fd holder epoll"))
}

fn listen(socket: &Path) -> io::Result<UnixListener> {
    let what = format!("fd holder socket {}", socket.display());
    if let Ok(meta) = fs::symlink_metadata(socket) {
        if !meta.file_type().is_socket() {
            return Err(err(ErrorKind::AlreadyExists, format!("{what}: exists and is not a socket")));
        }
        match socket::connect_nonblocking(socket) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                fs::remove_file(socket).map_err(|e| ctx(e, format!("remove stale {what}")))?
            }
            Err(e) if e.kind() != ErrorKind::WouldBlock => return Err(ctx(e, what)),
            _ => return Err(err(ErrorKind::AddrInUse, format!("{what}: a holder listens there"))),
        }
    }
    let listener = UnixListener::bind(socket).map_err(|e| ctx(e, format!("bind {what}")))?;
    let mode = fs::set_permissions(socket, Permissions::from_mode(0o600)).and_then(|()| listener.set_nonblocking(true));
    if let Err(e) = mode {
        let _ = fs::remove_file(socket);
        return Err(ctx(e, format!("set up {what}")));
    }
    Ok(listener)
}

const LISTENER: u64 = 0;

struct Server {
    epoll: Epoll,
    listener: UnixListener,
    kept: BTreeMap<String, OwnedFd>,
    /// The connection served, with its epoll token and whether it waits to write.
    conn: Option<(Link, u64, bool)>,
    /// The last token given out; each connection gets a new one, so a stale event is ignored.
    token: u64,
    /// Accepting failed (out of descriptors, say): the listener is left out of the epoll set
    /// for up to 100 ms rather than reported ready again at once.
    paused: bool,
}

/// What became of a connection.
enum Status {
    Open,
    Closed,
    Exit,
}

impl Server {
    fn run(&mut self) -> io::Result<()> {
        self.epoll.add(&self.listener, LISTENER, READABLE)?;
        let mut events = Vec::new();
        loop {
            events.clear();
            self.epoll.wait(self.paused.then_some(Duration::from_millis(100)), &mut events)?;
            if std::mem::take(&mut self.paused) {
                self.epoll.add(&self.listener, LISTENER, READABLE)?;
            }
            for ev in &events {
                let ours = self.conn.as_ref().is_some_and(|c| c.1 == ev.token);
                if ev.token == LISTENER && self.accept() || ours && self.serve() {
                    return Ok(());
                }
            }
        }
    }

    /// Accepts what waits, each new connection replacing the one served; returns whether that
    /// one asked to exit.
    fn accept(&mut self) -> bool {
        loop {
            let sock = match self.listener.accept() {
                Ok((sock, _)) => sock,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => continue,
                Err(_) => {
                    self.paused = self.epoll.delete(&self.listener).is_ok();
                    return false;
                }
            };
            let allowed = socket::peer_cred(&sock).is_ok_and(|c| c.uid == 0 || c.uid == fd::geteuid());
            if allowed && sock.set_nonblocking(true).is_ok() && self.epoll.add(&sock, self.token + 1, READABLE).is_ok()
            {
                self.token += 1;
                let old = self.conn.replace((Link::new(sock), self.token, false));
                if old.is_some_and(|(old, ..)| drain(old, &mut self.kept)) {
                    return true;
                }
            }
        }
    }

    /// Serves the connection: sends replies, carries out requests and reads, up to 16 reads.
    /// Returns whether it asked to exit.
    fn serve(&mut self) -> bool {
        let Some((link, token, writing)) = &mut self.conn else { return false };
        let mut reads = 0;
        let status = loop {
            if link.send().is_err() {
                break Status::Closed;
            } else if !link.out.is_empty() {
                break Status::Open; // the socket is full
            } else if let Some(status) = requests(link, &mut self.kept, true) {
                break status;
            } else if !link.out.is_empty() {
                continue; // a reply to send
            } else if reads == 16 {
                break Status::Open;
            }
            reads += 1;
            match link.read() {
                Ok(true) => {}
                Ok(false) => break Status::Open,
                Err(()) => break Status::Closed,
            }
        };
        let want = !link.out.is_empty();
        let interest = if want { WRITABLE } else { READABLE };
        if let Status::Open = status {
            if want != std::mem::replace(writing, want) && self.epoll.modify(&link.sock, *token, interest).is_err() {
                self.conn = None;
            }
        } else if let Status::Closed = status {
            self.conn = None;
        }
        matches!(status, Status::Exit)
    }
}

/// Carries out what a replaced connection has sent, without replies; returns whether it asked
/// to exit.
fn drain(mut link: Link, kept: &mut BTreeMap<String, OwnedFd>) -> bool {
    link.out.clear();
    for _ in 0..1024 {
        match requests(&mut link, kept, false) {
            Some(status) => return matches!(status, Status::Exit),
            None if link.read() != Ok(true) => return false,
            None => {}
        }
    }
    false
}

/// Carries out the complete requests received, until a reply waits. `Some` when the connection
/// is done: broken, or asked to exit. Replies are made only if `reply`.
fn requests(link: &mut Link, kept: &mut BTreeMap<String, OwnedFd>, reply: bool) -> Option<Status> {
    while link.out.is_empty() {
        let Ok(line) = link.line() else { return Some(Status::Closed) };
        let Some(line) = line else {
            // Every request whose first byte came is done: a descriptor left over came with
            // something other than a `store`.
            return (link.input.is_empty() && !link.fds.is_empty()).then_some(Status::Closed);
        };
        match line.split_once(' ') {
            Some(("store", key)) if valid_key(key) => {
                let Some(fd) = link.fds.pop_front() else { return Some(Status::Closed) };
                if kept.len() < MAX_KEPT || kept.contains_key(key) {
                    let _ = fd::set_pipe_size(fd.as_fd(), 1 << 20);
                    kept.insert(key.to_owned(), fd);
                }
            }
            Some(("forget", key)) if valid_key(key) => drop(kept.remove(key)),
            None if line == "take" && reply => {
                for (key, fd) in kept.iter() {
                    // A copy that cannot be made (out of descriptors) is left out of the reply.
                    if let Ok(copy) = fd.try_clone() {
                        link.push(None, format!("fd {key}\n"), Some(copy));
                    }
                }
                link.push(None, "end\n".into(), None);
            }
            None if line == "take" => {}
            None if line == "exit" => return Some(Status::Exit),
            _ => return Some(Status::Closed),
        }
    }
    None
}

#[cfg(test)]
mod tests;
