//! Readiness: `epoll`, `signalfd`, `poll`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::cvt;

/// Readable (`EPOLLIN`).
pub const READABLE: u32 = libc::EPOLLIN as u32;
/// Writable (`EPOLLOUT`).
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// The peer shut down its writing side (`EPOLLRDHUP`).
pub const READ_CLOSED: u32 = libc::EPOLLRDHUP as u32;
/// Hang-up (`EPOLLHUP`), always reported.
pub const HANGUP: u32 = libc::EPOLLHUP as u32;
/// Error (`EPOLLERR`), always reported.
pub const ERROR: u32 = libc::EPOLLERR as u32;

/// One readiness report from [`Epoll::wait`].
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// The token given at registration.
    pub token: u64,
    /// The ready events, a mask of the constants of this module.
    pub events: u32,
}

/// An epoll instance: `epoll_create1(EPOLL_CLOEXEC)`, level-triggered.
/// Man page: <https://man7.org/linux/man-pages/man7/epoll.7.html>.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
    buf: Vec<libc::epoll_event>,
}

impl Epoll {
    /// Creates an epoll instance that reports up to 256 events per wait.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain system call.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: a new descriptor that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd, buf: vec![libc::epoll_event { events: 0, u64: 0 }; 256] })
    }

    fn ctl(&self, op: libc::c_int, fd: BorrowedFd<'_>, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid event for the call; the fd is borrowed for it.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) })?;
        Ok(())
    }

    /// Watches `fd` for `events`, reporting it as `token`: `epoll_ctl(EPOLL_CTL_ADD)`.
    pub fn add(&self, fd: impl AsFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd.as_fd(), token, events)
    }

    /// Changes the events watched on `fd`: `epoll_ctl(EPOLL_CTL_MOD)`.
    pub fn modify(&self, fd: impl AsFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd.as_fd(), token, events)
    }

    /// Stops watching `fd`: `epoll_ctl(EPOLL_CTL_DEL)`. Closing the descriptor does it too.
    pub fn delete(&self, fd: impl AsFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd.as_fd(), 0, 0)
    }

    /// Waits up to `timeout` (`None`: forever) and appends what is ready to `out`:
    /// `epoll_wait(2)`. An interrupted wait returns no events.
    pub fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Event>) -> io::Result<()> {
        let ms = timeout_ms(timeout);
        // SAFETY: `buf` has room for `buf.len()` events.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), self.buf.as_mut_ptr(), self.buf.len() as i32, ms) };
        match cvt(n) {
            Ok(n) => {
                out.extend(self.buf[..n as usize].iter().map(|e| Event { token: e.u64, events: e.events }));
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        // Round up so that a wait never ends before its deadline.
        Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
    }
}

/// Signals delivered through a descriptor: the signals are blocked for the calling thread and
/// read with `signalfd(2)` (`SFD_NONBLOCK | SFD_CLOEXEC`). Threads created afterwards inherit
/// the mask; children spawned by [`crate::process::spawn`] get an empty one.
/// Man page: <https://man7.org/linux/man-pages/man2/signalfd.2.html>.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks `signals` and creates a descriptor that reads them.
    pub fn new(signals: &[i32]) -> io::Result<SignalFd> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t; the signal numbers are checked by sigaddset.
        unsafe {
            libc::sigemptyset(&mut set);
            for &s in signals {
                cvt(libc::sigaddset(&mut set, s))?;
            }
            cvt(libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()))?;
        }
        // SAFETY: `set` is valid; -1 asks for a new descriptor.
        let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
        // SAFETY: a new descriptor that we own.
        Ok(SignalFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Reads one pending signal number, or `None` if none is pending.
    pub fn read(&self) -> io::Result<Option<i32>> {
        // SAFETY: signalfd_siginfo is plain data.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` has room for `size` bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), &mut info as *mut _ as *mut libc::c_void, size) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
        }
        Ok(Some(info.ssi_signo as i32))
    }
}

impl AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Waits until `fd` is readable or hung up, up to `timeout` (`None`: forever): `poll(2)`.
/// Returns whether it became ready; an interrupted wait returns `false`.
/// Man page: <https://man7.org/linux/man-pages/man2/poll.2.html>.
pub fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    match cvt(unsafe { libc::poll(&mut p, 1, timeout_ms(timeout)) }) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `fd`'s other end is gone (`POLLHUP`, `POLLERR`, `POLLNVAL`), without waiting: a
/// terminal whose emulator closed, a pipe whose writers all closed.
/// Man page: <https://man7.org/linux/man-pages/man2/poll.2.html>.
pub fn hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, a zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// Whether `fd` can be written now without blocking (`POLLOUT`), without waiting: `poll(2)`
/// with a zero timeout. For a pipe this means room for at least one page, so a write of at
/// most `PIPE_BUF` bytes does not block. A peer that is gone (`POLLERR`, `POLLHUP`) counts as
/// writable: the write then fails at once, which is what a caller that must not block wants.
/// Man page: <https://man7.org/linux/man-pages/man2/poll.2.html>.
pub fn writable_now(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0 && p.revents & libc::POLLNVAL == 0
}

/// Writes `data` (at most `PIPE_BUF`, 4096 bytes, is written) to `fd` only if that cannot block
/// ([`writable_now`]), in one `write(2)`. Returns whether it was written; a full pipe, a peer
/// that is gone, a closed descriptor or a short write are all just `false`. For logging that
/// must never stall or kill the logger.
/// Man page: <https://man7.org/linux/man-pages/man2/write.2.html>.
pub fn write_now(fd: BorrowedFd<'_>, data: &[u8]) -> bool {
    let data = &data[..data.len().min(libc::PIPE_BUF)];
    if !writable_now(fd) {
        return false;
    }
    // SAFETY: `data` is a live buffer of `data.len()` bytes; `fd` is borrowed for the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr() as *const libc::c_void, data.len()) };
    n == data.len() as isize
}

/// Waits, without blocking the tokio runtime, until `fd` is readable (for a pidfd: the process
/// has exited). Registers the descriptor with the current runtime's reactor for the wait.
#[cfg(feature = "tokio")]
pub async fn readable_async(fd: OwnedFd) -> io::Result<()> {
    use tokio::io::{unix::AsyncFd, Interest};
    // SAFETY: an OwnedFd is an open descriptor that only the AsyncFd (which now owns it) can
    // close, and its raw number never changes while owned.
    let afd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)?;
    let _guard = afd.readable().await?;
    Ok(())
}
