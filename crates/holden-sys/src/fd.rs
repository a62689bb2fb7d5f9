//! Descriptor hygiene, resource limits and process ids.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::cvt;

/// Marks every descriptor from `first` up close-on-exec: `close_range(first, ~0,
/// CLOSE_RANGE_CLOEXEC)` (Linux 5.11), else `fcntl(F_SETFD)` on each entry of `/proc/self/fd`.
///
/// Used at start-up so that whatever a launcher leaked into this process cannot reach children.
/// Man page: <https://man7.org/linux/man-pages/man2/close_range.2.html>.
pub fn set_cloexec_from(first: u32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    // SAFETY: marks descriptors close-on-exec; closes nothing.
    if unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) } == 0 {
        return Ok(());
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd: &i32| fd >= first as i32)
        .collect();
    for fd in fds {
        // SAFETY: sets a flag on a descriptor number; a closed one answers EBADF, ignored.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Sets or clears `O_NONBLOCK`: `fcntl(F_SETFL)`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL only change status flags of a descriptor we borrow.
    unsafe {
        let flags = cvt(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
        let new = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
        cvt(libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new))?;
    }
    Ok(())
}

// The casts are no-ops on glibc but not on every libc (rlim_t, resource types differ).
#[allow(clippy::unnecessary_cast)]
/// Reads a resource limit: `getrlimit(2)`. Returns `(soft, hard)`, `u64::MAX` for infinity.
pub fn getrlimit(resource: u32) -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid out-pointer.
    cvt(unsafe { libc::getrlimit(resource as _, &mut lim) })?;
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// Sets a resource limit of this process: `setrlimit(2)`.
/// Man page: <https://man7.org/linux/man-pages/man2/getrlimit.2.html>.
pub fn setrlimit(resource: u32, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: `lim` is a valid in-pointer.
    cvt(unsafe { libc::setrlimit(resource as _, &lim) })?;
    Ok(())
}

/// The real uid of this process: `getuid(2)`.
pub fn getuid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// The effective uid of this process: `geteuid(2)`.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Borrows this process's descriptor 0, 1 or 2 for the life of the process.
///
/// Panics for any other number.
pub fn stdio(n: i32) -> BorrowedFd<'static> {
    assert!((0..3).contains(&n), "stdio descriptors are 0, 1 and 2");
    // SAFETY: descriptors 0-2 belong to the process as a whole and are never closed by Holden;
    // a program that closes its own stdio gets EBADF from the calls that use them, not UB.
    unsafe { BorrowedFd::borrow_raw(n) }
}

/// Sets a pipe's capacity: `fcntl(F_SETPIPE_SZ)`. Returns the capacity the kernel chose (at
/// least `bytes`, rounded up to a power of two pages), or an error (`EPERM` above
/// `/proc/sys/fs/pipe-max-size` for an unprivileged caller, `EBUSY` below what it holds).
/// Man page: <https://man7.org/linux/man-pages/man2/fcntl.2.html>.
pub fn set_pipe_size(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    let want = libc::c_int::try_from(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: F_SETPIPE_SZ takes an int and changes only the pipe behind a borrowed descriptor.
    let got = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, want) })?;
    Ok(got as usize)
}

/// Makes this process ignore `signal`: `sigaction(2)` with `SIG_IGN`. The setting is
/// process-wide and survives `execve(2)`; children started by [`crate::process::spawn`] reset
/// it to the default.
/// Man page: <https://man7.org/linux/man-pages/man2/sigaction.2.html>.
pub fn ignore_signal(signal: i32) -> io::Result<()> {
    // SAFETY: sigaction is plain data; zeroed is an empty mask with no flags. SIG_IGN installs
    // no handler, so no code of ours ever runs in signal context.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = libc::SIG_IGN;
    // SAFETY: `act` is a valid sigaction for the call; the old action is not asked for.
    cvt(unsafe { libc::sigaction(signal, &act, std::ptr::null_mut()) })?;
    Ok(())
}

/// Raises the soft limit on descriptors to the hard one (`RLIMIT_NOFILE`), as a server that
/// holds many does. Returns the limits it started with when it raised them (for children, who
/// should get those), `None` when there was nothing to raise or raising failed.
pub fn raise_nofile() -> Option<(u64, u64)> {
    let nofile = crate::process::rlimit_resource("nofile")?;
    let (soft, hard) = getrlimit(nofile).ok()?;
    (soft < hard && setrlimit(nofile, hard, hard).is_ok()).then_some((soft, hard))
}
