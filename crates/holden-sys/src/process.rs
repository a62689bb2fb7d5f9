//! Processes and pidfds: race-free spawn, signalling, waiting, exit information, feature probes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub use crate::exec::{exec_candidates, merge_env};
pub use crate::features::{probe_features, Features};
pub use crate::spawn::{
    rlimit_resource, spawn, Rlimit, SpawnError, SpawnSpec, Spawned, Stage, User, MAX_EXTRA_FD, MAX_EXTRA_FDS,
};
use crate::{cvt, cvt_long};

/// How a process ended, as `waitid(2)` or `PIDFD_INFO_EXIT` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called `exit(code)`; the code is 0..=255.
    Exited(i32),
    /// A signal ended it.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

impl Exit {
    /// Decodes a `wait(2)`-style status word (as in `PIDFD_INFO_EXIT`'s `exit_code`).
    pub fn from_wait_status(status: i32) -> Exit {
        if libc::WIFEXITED(status) {
            Exit::Exited(libc::WEXITSTATUS(status))
        } else {
            Exit::Signaled { signal: libc::WTERMSIG(status), core_dumped: libc::WCOREDUMP(status) }
        }
    }

    fn from_siginfo(info: &libc::siginfo_t) -> Exit {
        // SAFETY: the kernel filled `info` for a child state change (si_signo == SIGCHLD), for
        // which si_status is the valid union member.
        let status = unsafe { info.si_status() };
        match info.si_code {
            libc::CLD_EXITED => Exit::Exited(status),
            libc::CLD_DUMPED => Exit::Signaled { signal: status, core_dumped: true },
            _ => Exit::Signaled { signal: status, core_dumped: false },
        }
    }
}

pub(crate) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Waits for the child behind `pidfd` to exit and reaps it: `waitid(P_PIDFD, fd, WEXITED)`.
///
/// With `nohang`, returns `Ok(None)` if it is still running. Fails with ECHILD if the caller is
/// not its parent or it was already reaped.
/// Man page: <https://man7.org/linux/man-pages/man2/waitid.2.html>.
pub fn wait_pidfd(pidfd: BorrowedFd<'_>, nohang: bool) -> io::Result<Option<Exit>> {
    const P_PIDFD: libc::idtype_t = 3;
    let flags = libc::WEXITED | if nohang { libc::WNOHANG } else { 0 };
    Ok(waitid(P_PIDFD, pidfd.as_raw_fd() as libc::id_t, flags)?.map(|(_, e)| e))
}

/// `waitid(2)`, retried on EINTR: the pid and exit of the child it reports, or `None` when
/// `WNOHANG` found nothing ready.
fn waitid(idtype: libc::idtype_t, id: libc::id_t, flags: libc::c_int) -> io::Result<Option<(i32, Exit)>> {
    // SAFETY: siginfo_t is plain data; zeroed is a valid initial value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `info` is a valid out-pointer; any descriptor in `id` is borrowed by the caller.
        match cvt(unsafe { libc::waitid(idtype, id, &mut info, flags) }) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    // SAFETY: after a successful waitid, si_pid is valid; 0 means nothing was ready (WNOHANG).
    let pid = unsafe { info.si_pid() };
    Ok((pid != 0).then(|| (pid, Exit::from_siginfo(&info))))
}

/// ECHILD (no child at all) as "nothing to report".
fn none_if_no_child<T>(r: io::Result<Option<T>>) -> io::Result<Option<T>> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(None),
        r => r,
    }
}

/// Reaps any one exited child without blocking: `waitid(P_ALL, 0, WEXITED | WNOHANG)`.
///
/// Returns `Ok(None)` when no child has exited (or there are no children at all).
/// Man page: <https://man7.org/linux/man-pages/man2/waitid.2.html>.
pub fn reap_any() -> io::Result<Option<(i32, Exit)>> {
    none_if_no_child(waitid(libc::P_ALL, 0, libc::WEXITED | libc::WNOHANG))
}

/// Opens a pidfd for `pid`: `pidfd_open(2)` (Linux 5.3). The descriptor is close-on-exec.
/// Man page: <https://man7.org/linux/man-pages/man2/pidfd_open.2.html>.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let fd = cvt_long(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) })?;
    // SAFETY: pidfd_open returned a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` to the process behind `pidfd`: `pidfd_send_signal(2)` (Linux 5.1).
/// Man page: <https://man7.org/linux/man-pages/man2/pidfd_send_signal.2.html>.
pub fn pidfd_send_signal(pidfd: impl AsFd, signal: i32) -> io::Result<()> {
    let fd = pidfd.as_fd().as_raw_fd();
    // SAFETY: plain system call; a null siginfo means "as if by kill(2)".
    cvt_long(unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, fd, signal, std::ptr::null::<libc::siginfo_t>(), 0u32)
    })?;
    Ok(())
}

/// `struct pidfd_info` of `<linux/pidfd.h>`, in its 64-byte first version, where Linux 6.15 put
/// `exit_code` in the last word.
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

const PIDFD_INFO_EXIT: u64 = 1 << 3;
/// `_IOWR(0xFF, 11, struct pidfd_info)` with the 64-byte size.
const PIDFD_GET_INFO: libc::c_ulong = 0xC040_FF0B;

/// Asks the kernel how the process behind `pidfd` exited: `ioctl(PIDFD_GET_INFO)` with
/// `PIDFD_INFO_EXIT` (Linux 6.15).
///
/// Works for any holder of the pidfd, not only the parent, once the process has been reaped.
/// Returns `Ok(None)` while the exit is not (yet) recorded; fails with ENOTTY or EINVAL on
/// kernels without `PIDFD_GET_INFO`.
/// Documentation: <https://man7.org/linux/man-pages/man2/pidfd_open.2.html> and
/// `<linux/pidfd.h>`.
pub fn pidfd_exit_info(pidfd: BorrowedFd<'_>) -> io::Result<Option<Exit>> {
    let mut info = PidfdInfo { mask: PIDFD_INFO_EXIT, ..Default::default() };
    // SAFETY: `info` is a 64-byte struct matching the size encoded in the request number.
    let r = unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_INFO as _, &mut info) };
    match cvt(r) {
        Ok(_) => {}
        // A live process's info is still readable; a dead one that is not yet reaped and whose
        // pid was released answers ESRCH on some kernels.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e),
    }
    if info.mask & PIDFD_INFO_EXIT == 0 {
        return Ok(None);
    }
    Ok(Some(Exit::from_wait_status(info.exit_code)))
}

/// Makes this process a child subreaper: orphaned descendants are re-parented to it instead of
/// to PID 1, so it can reap them. `prctl(PR_SET_CHILD_SUBREAPER, 1)` (Linux 3.4).
/// Man page: <https://man7.org/linux/man-pages/man2/PR_SET_CHILD_SUBREAPER.2const.html>.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: plain prctl with integer arguments.
    cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) })?;
    Ok(())
}

/// Whether `fd` is a regular file on a cgroup v2 filesystem (a `cgroup.procs` to join), by
/// `fstatfs(2)` and `fstat(2)`.
pub fn is_cgroup2_file(fd: BorrowedFd<'_>) -> io::Result<bool> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    // SAFETY: statfs is plain data, filled by the call.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fs` is a valid out-pointer; the fd is borrowed for the call.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut fs) })?;
    // SAFETY: stat is plain data, filled by the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; the fd is borrowed for the call.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(fs.f_type as i64 == CGROUP2_SUPER_MAGIC && st.st_mode & libc::S_IFMT == libc::S_IFREG)
}

/// `pidfd_send_signal(2)`'s flag that sends to the target's process group (Linux 6.9).
pub(crate) const PIDFD_SIGNAL_PROCESS_GROUP: u32 = 1 << 2;

/// How [`pidfd_send_signal_group`] reached the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSignal {
    /// `pidfd_send_signal(2)` with `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9).
    Pidfd,
    /// `kill(-pgid)`, after checking the leader through its pidfd (older kernels).
    KillPgid,
}

/// Sends `signal` to the process group led by the process behind `pidfd`.
///
/// Uses `pidfd_send_signal(2)` with `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9), which names the
/// group through the pidfd and so cannot hit a recycled pid. Older kernels answer EINVAL; then
/// it checks the leader is still there (signal 0 through the pidfd) and falls back to
/// `kill(-pgid)`, where `pgid` is the leader's pid as this process sees it.
/// Man page: <https://man7.org/linux/man-pages/man2/pidfd_send_signal.2.html>.
pub fn pidfd_send_signal_group(pidfd: impl AsFd, pgid: i32, signal: i32) -> io::Result<GroupSignal> {
    let fd = pidfd.as_fd().as_raw_fd();
    // SAFETY: plain system call; a null siginfo means "as if by kill(2)".
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            PIDFD_SIGNAL_PROCESS_GROUP,
        )
    };
    match cvt_long(r) {
        Ok(_) => Ok(GroupSignal::Pidfd),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && pgid > 1 => {
            pidfd_send_signal(pidfd.as_fd(), 0)?;
            // SAFETY: plain system call; a negative pid names a process group.
            cvt(unsafe { libc::kill(-pgid, signal) })?;
            Ok(GroupSignal::KillPgid)
        }
        Err(e) => Err(e),
    }
}

/// The identity of the process behind `pidfd` that stays unique for the whole boot: the inode
/// number of the pidfd on kernels with pidfs (Linux 6.9), found with `fstatfs(2)` and
/// `fstat(2)`. Returns `Ok(None)` on older kernels, where pidfds share one anonymous inode and
/// callers fall back to the start time in `/proc/PID/stat`.
/// Man page: <https://man7.org/linux/man-pages/man2/pidfd_open.2.html>.
pub fn pidfs_inode(pidfd: BorrowedFd<'_>) -> io::Result<Option<u64>> {
    const PIDFS_MAGIC: i64 = 0x5049_4446;
    // SAFETY: statfs is plain data, filled by the call.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fs` is a valid out-pointer; the fd is borrowed for the call.
    cvt(unsafe { libc::fstatfs(pidfd.as_raw_fd(), &mut fs) })?;
    if fs.f_type as i64 != PIDFS_MAGIC {
        return Ok(None);
    }
    // SAFETY: stat is plain data, filled by the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; the fd is borrowed for the call.
    cvt(unsafe { libc::fstat(pidfd.as_raw_fd(), &mut st) })?;
    Ok(Some(st.st_ino))
}

/// The pid of an exited child that is waiting to be reaped, without reaping it:
/// `waitid(P_ALL, 0, WEXITED | WNOHANG | WNOWAIT)`. `Ok(None)` if there is none.
/// Man page: <https://man7.org/linux/man-pages/man2/waitid.2.html>.
pub fn peek_exited_child() -> io::Result<Option<i32>> {
    let r = none_if_no_child(waitid(libc::P_ALL, 0, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT));
    Ok(r?.map(|(pid, _)| pid))
}

/// Reaps the exited child `pid`: `waitid(P_PID, pid, WEXITED | WNOHANG)`.
/// Man page: <https://man7.org/linux/man-pages/man2/waitid.2.html>.
pub fn reap_pid(pid: i32) -> io::Result<Option<Exit>> {
    Ok(waitid(libc::P_PID, pid as libc::id_t, libc::WEXITED | libc::WNOHANG)?.map(|(_, e)| e))
}

/// Moves the calling thread into the network namespace of the process `pidfd` refers to
/// (`setns(2)` with `CLONE_NEWNET`): through the pidfd itself (Linux 5.8), else through
/// `/proc/PID/ns/net`. Only this thread changes namespace; it should end after its work.
/// Man page: <https://man7.org/linux/man-pages/man2/setns.2.html>.
pub fn enter_net_namespace(pidfd: BorrowedFd<'_>, pid: i32) -> io::Result<()> {
    // SAFETY: setns on a descriptor we borrow; it changes only this thread's namespace.
    match cvt(unsafe { libc::setns(pidfd.as_raw_fd(), libc::CLONE_NEWNET) }) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
            // The process must still be the one the pidfd names: checked after the open.
            pidfd_send_signal(pidfd, 0)?;
            // SAFETY: as above, on a descriptor we own.
            cvt(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
        }
        r => r.map(drop),
    }
}

/// How long ago a process started that started `start_ticks` clock ticks after boot (field 22
/// of `/proc/PID/stat`), by `CLOCK_BOOTTIME` (which counts suspended time, as that field does).
pub fn age_from_start_ticks(start_ticks: u64) -> Option<std::time::Duration> {
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a live local.
    if hz <= 0 || unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return None;
    }
    let now = std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
    let started = std::time::Duration::from_secs_f64(start_ticks as f64 / hz as f64);
    now.checked_sub(started)
}
