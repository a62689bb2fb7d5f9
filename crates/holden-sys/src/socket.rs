//! Unix sockets: descriptors over `SCM_RIGHTS`, peer credentials, socket activation.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::{cvt, cvt_long};

/// Most descriptors one message may carry; more makes [`recv_with_fds`] report truncation.
pub const MAX_FDS: usize = 8;

/// Sends `data` with `fds` attached as one `SCM_RIGHTS` message: `sendmsg(2)` with
/// `MSG_NOSIGNAL` (a vanished peer is EPIPE, never SIGPIPE).
///
/// Returns how many bytes were sent; the descriptors travel with the first byte, so a caller
/// that sends the rest later must pass no descriptors again.
/// Man pages: <https://man7.org/linux/man-pages/man2/sendmsg.2.html>,
/// <https://man7.org/linux/man-pages/man7/unix.7.html>.
pub fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    assert!(fds.len() <= MAX_FDS, "at most {MAX_FDS} descriptors per message");
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let mut cmsg_buf = [0u64; 8]; // 64 bytes: room for CMSG_SPACE(8 * 4) = 48
                                  // SAFETY: msghdr is plain data; zeroed is a valid "no name, no control" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = (fds.len() * std::mem::size_of::<RawFd>()) as u32;
        // SAFETY: CMSG_SPACE is arithmetic on its argument.
        let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
        msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        // SAFETY: msg_control points to a buffer of at least `space` bytes, aligned for cmsghdr,
        // so CMSG_FIRSTHDR is non-null and CMSG_DATA has room for `payload` bytes.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as usize;
            let data = libc::CMSG_DATA(cmsg) as *mut RawFd;
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    // SAFETY: `msg` points to live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// What [`recv_with_fds`] read.
#[derive(Debug)]
pub struct Received {
    /// Bytes placed at the start of the buffer; 0 means the peer closed its end.
    pub len: usize,
    /// The control data was cut (more than [`MAX_FDS`] descriptors): the kernel closed the excess.
    pub truncated: bool,
}

/// Reads into `buf`, appending any descriptors that arrive to `fds`: `recvmsg(2)` with
/// `MSG_CMSG_CLOEXEC`, so a received descriptor can never leak into a spawned child.
/// Man page: <https://man7.org/linux/man-pages/man2/recvmsg.2.html>.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<Received> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let mut cmsg_buf = [0u64; 16]; // 128 bytes: CMSG_SPACE(8 * 4) plus room for credentials
                                   // SAFETY: as in `send_with_fds`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
    // SAFETY: arithmetic only.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let n = loop {
        // SAFETY: `msg` points to live buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: the kernel filled msg_control with `msg_controllen` bytes of well-formed cmsgs;
    // CMSG_FIRSTHDR/CMSG_NXTHDR walk them within that length, and each SCM_RIGHTS payload is an
    // array of new descriptors that this process now owns.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Received { len: n, truncated: msg.msg_flags & libc::MSG_CTRUNC != 0 })
}

/// Credentials of the process at the other end of a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCred {
    /// Its pid, in the caller's pid namespace (0 if not visible there).
    pub pid: i32,
    /// Its effective uid when it connected.
    pub uid: u32,
    /// Its effective gid when it connected.
    pub gid: u32,
    /// Its supplementary groups (`SO_PEERGROUPS`, Linux 4.13; empty before).
    pub groups: Vec<u32>,
}

/// Reads the peer's credentials: `getsockopt(SO_PEERCRED)` and `getsockopt(SO_PEERGROUPS)`.
/// Man page: <https://man7.org/linux/man-pages/man7/unix.7.html>.
pub fn peer_cred(sock: impl AsFd) -> io::Result<PeerCred> {
    let fd = sock.as_fd().as_raw_fd();
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid out-pointers of the declared size.
    cvt(unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, &mut cred as *mut _ as *mut libc::c_void, &mut len)
    })?;
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * 4) as libc::socklen_t;
        // SAFETY: `groups` has room for `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr() as *mut libc::c_void,
                &mut len,
            )
        };
        if r == 0 {
            groups.truncate(len as usize / 4);
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && (len as usize / 4) > groups.len() {
            groups.resize(len as usize / 4, 0);
            continue;
        }
        groups.clear();
        break;
    }
    Ok(PeerCred { pid: cred.pid, uid: cred.uid, gid: cred.gid, groups })
}

/// Takes the listening sockets that systemd passes with `LISTEN_FDS`/`LISTEN_PID`
/// (`sd_listen_fds(3)`), if they are meant for this process.
///
/// Returns them as owned descriptors starting at fd 3, marks them close-on-exec, and is meant to
/// be called once, early. `LISTEN_*` variables are left for the caller to drop from the
/// environment it hands on.
/// Man page: <https://www.freedesktop.org/software/systemd/man/latest/sd_listen_fds.html>.
pub fn take_listen_fds() -> Vec<OwnedFd> {
    let pid_ok =
        std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| p == std::process::id());
    let count = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<i32>().ok()).unwrap_or(0);
    if !pid_ok || count <= 0 {
        return Vec::new();
    }
    (3..3 + count.min(64))
        .filter_map(|fd| {
            // SAFETY: F_GETFD only inspects the descriptor; -1 means it is not open.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return None;
            }
            // SAFETY: systemd handed us this open descriptor for our exclusive use.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            // SAFETY: as above: it is open, and nothing else in this process owns it.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect()
}

/// Starts a connection to the Unix stream socket at `path` without waiting:
/// `socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC)` then `connect(2)`.
///
/// The returned socket is non-blocking. A listener whose backlog is full makes this fail with
/// `EAGAIN` (`ErrorKind::WouldBlock`) at once, where a blocking connect would wait for the
/// listener; a path that is too long for `sun_path` is `InvalidInput`.
/// Man pages: <https://man7.org/linux/man-pages/man2/connect.2.html>,
/// <https://man7.org/linux/man-pages/man7/unix.7.html>.
pub fn connect_nonblocking(path: &std::path::Path) -> io::Result<std::os::unix::net::UnixStream> {
    let (addr, len) = unix_addr(path)?;
    let fd = unix_socket(libc::SOCK_NONBLOCK)?;
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes for the duration of the call.
    let r = unsafe { libc::connect(fd.as_raw_fd(), &addr as *const libc::sockaddr_un as *const libc::sockaddr, len) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // A Unix stream connect either completes or fails; EINPROGRESS is not expected, but
        // if a kernel reports it, the socket becomes writable once connected.
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(std::os::unix::net::UnixStream::from(fd))
}

/// A Unix stream socket bound to `path` but not yet listening: nobody can connect until
/// [`listen`] is called, so its file's mode and owner can be set first. Close-on-exec.
/// Man pages: <https://man7.org/linux/man-pages/man2/bind.2.html>,
/// <https://man7.org/linux/man-pages/man7/unix.7.html>.
pub fn bind_unix(path: &std::path::Path) -> io::Result<OwnedFd> {
    let (addr, len) = unix_addr(path)?;
    let fd = unix_socket(0)?;
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes for the duration of the call.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), &addr as *const libc::sockaddr_un as *const libc::sockaddr, len) })?;
    Ok(fd)
}

/// `listen(2)` with the system's largest backlog (`SOMAXCONN`), as std's listeners use.
pub fn listen(sock: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain system call on a borrowed descriptor.
    cvt(unsafe { libc::listen(sock.as_raw_fd(), libc::SOMAXCONN) })?;
    Ok(())
}

/// `socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | extra)`.
fn unix_socket(extra: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor we own.
    let fd = cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | extra, 0) })?;
    // SAFETY: `fd` was just created and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `path` as a `sockaddr_un` and its length; `InvalidInput` if it is empty, too long for
/// `sun_path` or holds a NUL byte.
fn unix_addr(path: &std::path::Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; zeroed is an empty address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "socket path empty, too long or with a NUL byte"));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    Ok((addr, len))
}

/// Turns on `SO_PASSCRED`: each message then arrives with its sender's credentials, which
/// [`recv_with_pid`] reads. Man page: <https://man7.org/linux/man-pages/man7/unix.7.html>.
pub fn set_passcred(sock: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads an int from a live local.
    cvt(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Reads one message and its sender's pid (from `SCM_CREDENTIALS`, in the caller's pid
/// namespace; `None` without `SO_PASSCRED` or when the sender is not visible here). Descriptors
/// sent along are closed at once. Man page: <https://man7.org/linux/man-pages/man7/unix.7.html>.
pub fn recv_with_pid(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<i32>)> {
    let mut fds = Vec::new();
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let mut cmsg_buf = [0u64; 32];
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cmsg_buf);
    // SAFETY: `msg` points to live buffers for the duration of the call.
    let n = cvt_long(unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) as libc::c_long })?;
    let mut pid = None;
    // SAFETY: the kernel filled msg_control with well-formed cmsgs within msg_controllen; an
    // SCM_CREDENTIALS payload is a ucred, an SCM_RIGHTS payload descriptors this process owns.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) => {
                    let cred = (libc::CMSG_DATA(cmsg) as *const libc::ucred).read_unaligned();
                    pid = (cred.pid > 0).then_some(cred.pid);
                }
                (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                    let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                    for i in 0..bytes / std::mem::size_of::<RawFd>() {
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    drop(fds);
    Ok((n as usize, pid))
}
