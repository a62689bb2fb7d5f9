//! Kernel features Holden can use, probed at run time (ENOSYS, EINVAL), never guessed from the
//! version. Re-exported from [`crate::process`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use crate::cvt;
use crate::process::{errno, pidfd_exit_info, pidfd_open, pidfs_inode, wait_pidfd, Exit, PIDFD_SIGNAL_PROCESS_GROUP};

/// Kernel features Holden can use, found by trying them (never by parsing the version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `clone3(2)` answers (not ENOSYS, as under Docker's default seccomp profile).
    pub clone3: bool,
    /// `clone(2)` with `CLONE_PIDFD` works (Linux 5.2); Holden's spawn path needs it.
    pub clone_pidfd: bool,
    /// `close_range(2)` exists (Linux 5.9).
    pub close_range: bool,
    /// `PIDFD_GET_INFO` reports `PIDFD_INFO_EXIT` (Linux 6.15).
    pub pidfd_info_exit: bool,
    /// pidfds live in pidfs, so each process's pidfd has its own inode (Linux 6.9).
    pub pidfs: bool,
    /// `pidfd_send_signal(2)` takes `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9).
    pub pidfd_signal_group: bool,
}

/// Probes the running kernel for [`Features`]. Spawns and reaps one short-lived child of the
/// caller (a clone that exits at once), so call it before anything else reaps children.
pub fn probe_features() -> Features {
    // SAFETY: clone3 with a null argument and size 0 only validates its arguments: EINVAL where
    // it exists, ENOSYS where it does not (or a seccomp filter refuses it).
    let clone3 =
        unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) } == -1 && errno() != libc::ENOSYS;
    // SAFETY: close_range on the empty range [MAX, MAX] closes nothing.
    let close_range =
        unsafe { libc::syscall(libc::SYS_close_range, u32::MAX, u32::MAX, 0u32) } == 0 || errno() != libc::ENOSYS;
    let (clone_pidfd, pidfd_info_exit) = match probe_child() {
        Ok(fd) => {
            let exit = matches!(pidfd_exit_info(fd.as_fd()), Ok(Some(Exit::Exited(42))));
            (true, exit)
        }
        Err(_) => (false, false),
    };
    let (pidfs, pidfd_signal_group) = match pidfd_open(std::process::id() as i32) {
        Ok(own) => {
            let pidfs = matches!(pidfs_inode(own.as_fd()), Ok(Some(_)));
            // SAFETY: signal 0 to this process's own group only checks the arguments and the
            // permission: EINVAL where the flag is unknown.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    own.as_raw_fd(),
                    0,
                    std::ptr::null::<libc::siginfo_t>(),
                    PIDFD_SIGNAL_PROCESS_GROUP,
                )
            };
            (pidfs, r == 0 || errno() != libc::EINVAL)
        }
        Err(_) => (false, false),
    };
    Features { clone3, clone_pidfd, close_range, pidfd_info_exit, pidfs, pidfd_signal_group }
}

extern "C" fn probe_child_main(_: *mut libc::c_void) -> libc::c_int {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(42) }
}

/// Clones a child that exits with 42 at once, reaps it, and returns its pidfd.
fn probe_child() -> io::Result<OwnedFd> {
    let mut stack = vec![0u8; 4096];
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    let mut pidfd: libc::c_int = -1;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: the child only calls _exit on its own 4 KiB stack; `pidfd` receives the descriptor.
    let pid = unsafe {
        libc::clone(
            probe_child_main,
            top as *mut libc::c_void,
            flags,
            std::ptr::null_mut(),
            &mut pidfd as *mut libc::c_int,
        )
    };
    cvt(pid)?;
    drop(stack);
    // SAFETY: clone succeeded with CLONE_PIDFD, so `pidfd` is ours.
    let fd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    wait_pidfd(fd.as_fd(), false)?;
    Ok(fd)
}
