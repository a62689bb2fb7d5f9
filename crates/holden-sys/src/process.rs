//! Processes and pidfds: race-free spawn, signalling, waiting, exit information, feature probes.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub use crate::exec::{exec_candidates, merge_env};
pub use crate::features::{probe_features, Features};
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

/// The stage of child set-up at which a spawn failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Joining the requested cgroup (writing to its `cgroup.procs`).
    Cgroup,
    /// Putting the requested descriptors on 0, 1 and 2.
    Stdio,
    /// `setsid(2)`.
    Setsid,
    /// `setrlimit(2)`.
    Rlimit,
    /// `setpriority(2)`: the nice value.
    Nice,
    /// Writing `/proc/self/oom_score_adj`.
    OomScoreAdj,
    /// `setgroups(2)`, `setresgid(2)`, `setresuid(2)`: becoming the requested user.
    User,
    /// `chdir(2)` to the requested directory.
    Cwd,
    /// `execve(2)` of every candidate path.
    Exec,
}

impl Stage {
    /// A short lower-case name, as used in error messages and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Cgroup => "cgroup",
            Stage::Stdio => "stdio",
            Stage::Setsid => "setsid",
            Stage::Rlimit => "rlimit",
            Stage::Nice => "nice",
            Stage::OomScoreAdj => "oom_score_adj",
            Stage::User => "user",
            Stage::Cwd => "cwd",
            Stage::Exec => "exec",
        }
    }
}

/// Why [`spawn`] failed.
#[derive(Debug)]
pub enum SpawnError {
    /// `clone(2)` itself failed (for example EAGAIN at the process limit); no child exists.
    Clone(io::Error),
    /// The child failed before or at `execve(2)`; it has already been reaped.
    Child {
        /// Where it failed.
        stage: Stage,
        /// The errno of the failing call.
        errno: i32,
    },
}

/// A resource limit to set in the child, as `setrlimit(2)` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// The `RLIMIT_*` resource number (see [`rlimit_resource`]).
    pub resource: u32,
    /// The soft limit; `u64::MAX` is infinity.
    pub soft: u64,
    /// The hard limit; `u64::MAX` is infinity.
    pub hard: u64,
}

// RLIMIT_* are u32 on glibc and c_int on musl.
#[allow(clippy::unnecessary_cast)]
/// Maps a resource name such as `"nofile"` to its `RLIMIT_*` number.
pub fn rlimit_resource(name: &str) -> Option<u32> {
    let r = match name {
        "as" => libc::RLIMIT_AS,
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    };
    Some(r as u32)
}

/// Everything the child needs, prepared by the parent so that the child allocates nothing.
pub struct SpawnSpec<'a> {
    /// Paths to `execve` in order (PATH lookup already done by the caller, like `execvp`).
    pub candidates: &'a [CString],
    /// The argument vector, `argv[0]` first.
    pub argv: &'a [CString],
    /// The whole environment, `KEY=VALUE` strings.
    pub envp: &'a [CString],
    /// Directory to change to, if any.
    pub cwd: Option<&'a CStr>,
    /// Descriptors to place on 0, 1 and 2; `None` keeps the parent's.
    pub stdio: [Option<BorrowedFd<'a>>; 3],
    /// Start a new session (`setsid(2)`).
    pub setsid: bool,
    /// File-mode creation mask, if it should be changed.
    pub umask: Option<u32>,
    /// Resource limits to set.
    pub rlimits: &'a [Rlimit],
    /// The nice value to set (-20 to 19), before the user changes.
    pub nice: Option<i32>,
    /// The OOM killer's score adjustment to set (-1000 to 1000), before the user changes.
    pub oom_score_adj: Option<i32>,
    /// The user to become before `chdir` and `execve`; `None` keeps the caller's.
    pub user: Option<User<'a>>,
    /// The `cgroup.procs` file of a cgroup v2, opened for writing, that the child joins first,
    /// before anything else runs in it (it writes `0` to it), so it never runs unconfined. A
    /// file, never the cgroup's directory: a directory descriptor would let whoever receives it
    /// reach the rest of the host's filesystem.
    pub cgroup: Option<BorrowedFd<'a>>,
    /// Apply `rlimits`, `nice` and `oom_score_adj` after becoming `user`, with its privileges
    /// rather than the spawner's: for a spawner that acts on behalf of a less privileged caller.
    pub limits_as_user: bool,
}

/// Credentials for a spawned process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User<'a> {
    /// Real, effective and saved uid.
    pub uid: u32,
    /// Real, effective and saved gid.
    pub gid: u32,
    /// Supplementary groups (at most 65,536, as the kernel allows).
    pub groups: &'a [u32],
}

/// A process started by [`spawn`].
#[derive(Debug)]
pub struct Spawned {
    /// The pidfd, taken atomically at creation (close-on-exec).
    pub pidfd: OwnedFd,
    /// The pid in the caller's pid namespace.
    pub pid: i32,
}

/// Shared between parent and child (the child runs in the parent's memory until it execs).
struct ChildCtx<'a> {
    spec: &'a SpawnSpec<'a>,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// `oom_score_adj` as decimal text, formatted by the parent (the child must not allocate).
    oom_text: [u8; 12],
    oom_len: usize,
    failed_stage: Stage,
    errno: i32,
    failed: bool,
}

const CHILD_STACK_SIZE: usize = 64 * 1024;

/// Starts a process and returns a pidfd for it, with no window in which it could be reaped or its
/// pid reused: `clone(2)` with `CLONE_PIDFD | CLONE_VM | CLONE_VFORK`.
///
/// This is what `posix_spawn(3)` does, plus the pidfd. The parent is suspended until the child
/// has called `execve` or exited, so an exec failure is reported here, synchronously, with its
/// errno, and the failed child is reaped before this returns. The child gets an empty signal
/// mask, every signal at its default disposition, and no descriptor but 0, 1 and 2
/// (`close_range(2)`; on kernels before 5.9 descriptors marked close-on-exec are closed by exec).
/// It uses the legacy `clone` system call, which container seccomp profiles allow where they
/// refuse `clone3` with ENOSYS.
///
/// Man pages: <https://man7.org/linux/man-pages/man2/clone.2.html>,
/// <https://man7.org/linux/man-pages/man3/posix_spawn.3.html>.
pub fn spawn(spec: &SpawnSpec<'_>) -> Result<Spawned, SpawnError> {
    let argv: Vec<*const libc::c_char> =
        spec.argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let envp: Vec<*const libc::c_char> =
        spec.envp.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let mut oom_text = [0u8; 12];
    let oom_len = match spec.oom_score_adj {
        Some(v) => {
            let text = v.to_string();
            oom_text[..text.len()].copy_from_slice(text.as_bytes());
            text.len()
        }
        None => 0,
    };
    let mut ctx = ChildCtx {
        spec,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        oom_text,
        oom_len,
        failed_stage: Stage::Exec,
        errno: 0,
        failed: false,
    };
    let mut stack = vec![0u8; CHILD_STACK_SIZE];
    // The stack grows down on every architecture Linux/Rust supports here; align the top to 16.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK_SIZE) & !15;
    let mut pidfd: libc::c_int = -1;

    // Block every signal so that no handler of the parent can run on the child's stack while it
    // shares our memory; the child resets dispositions before unblocking.
    let mut all: libc::sigset_t = empty_sigset();
    let mut old: libc::sigset_t = empty_sigset();
    // SAFETY: `all` and `old` are valid sigset_t values owned by this frame.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    // `pidfd` is where CLONE_PIDFD stores the descriptor (the parent_tid argument of clone(2)).
    // SAFETY: the child runs only `child_main` (async-signal-safe calls, writes into `ctx`) on a
    // live 64 KiB stack that outlives it: CLONE_VFORK suspends us until it has exec'd or exited.
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            flags,
            &mut ctx as *mut ChildCtx as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    let clone_err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    drop(stack);
    if pid == -1 {
        return Err(SpawnError::Clone(clone_err));
    }
    // SAFETY: clone succeeded with CLONE_PIDFD, so `pidfd` is a new descriptor that we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    if ctx.failed {
        // The child has exited with 127; reap it so that nothing is left behind.
        let _ = wait_pidfd(pidfd.as_fd(), false);
        return Err(SpawnError::Child { stage: ctx.failed_stage, errno: ctx.errno });
    }
    Ok(Spawned { pidfd, pid })
}

fn empty_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        s
    }
}

pub(crate) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// The child's rlimits, nice value and `oom_score_adj`; the failed stage and errno, if any.
/// Runs in the vfork child: no allocation.
fn apply_limits(ctx: &ChildCtx) -> Option<(Stage, i32)> {
    let spec = ctx.spec;
    // SAFETY: (the whole block) thin, async-signal-safe system-call wrappers on arguments the
    // parent prepared; none allocates.
    unsafe {
        for r in spec.rlimits {
            let lim = libc::rlimit { rlim_cur: r.soft as libc::rlim_t, rlim_max: r.hard as libc::rlim_t };
            if libc::setrlimit(r.resource as _, &lim) < 0 {
                return Some((Stage::Rlimit, errno()));
            }
        }
        if let Some(n) = spec.nice {
            if libc::setpriority(libc::PRIO_PROCESS, 0, n) < 0 {
                return Some((Stage::Nice, errno()));
            }
        }
        if ctx.oom_len > 0 {
            let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Some((Stage::OomScoreAdj, errno()));
            }
            let written = libc::write(fd, ctx.oom_text.as_ptr() as *const libc::c_void, ctx.oom_len);
            let err = errno();
            libc::close(fd);
            if written != ctx.oom_len as isize {
                return Some((Stage::OomScoreAdj, if written < 0 { err } else { libc::EIO }));
            }
        }
    }
    None
}

/// The child side of [`spawn`]. Runs on its own stack in the parent's memory: it must not
/// allocate, lock, or return.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildCtx` that `spawn` passed, alive while the parent is suspended.
    let ctx = unsafe { &mut *(arg as *mut ChildCtx) };
    let fail = |ctx: &mut ChildCtx, stage: Stage, errno: i32| -> ! {
        ctx.failed_stage = stage;
        ctx.errno = errno;
        ctx.failed = true;
        // SAFETY: _exit never returns and is async-signal-safe.
        unsafe { libc::_exit(127) }
    };
    let spec = ctx.spec;
    // SAFETY: (the whole block) each call below is a thin, async-signal-safe system-call
    // wrapper on arguments prepared by the parent; none allocates.
    unsafe {
        // Default disposition for every signal, through the raw system call: glibc's wrapper
        // refuses its internal signals 32 and 33, which a launcher may have left ignored. An
        // all-zero kernel sigaction is SIG_DFL with no flags and an empty mask on every
        // architecture. SIGKILL and SIGSTOP answer EINVAL, which is fine.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), std::ptr::null_mut::<u64>(), 8usize);
        }
        if let Some(procs) = spec.cgroup {
            if libc::write(procs.as_raw_fd(), b"0".as_ptr() as *const libc::c_void, 1) != 1 {
                fail(ctx, Stage::Cgroup, errno());
            }
        }
        // Stdio: first lift any source that sits on 0..2 out of the way, then dup2 into place.
        let mut src: [RawFd; 3] = [-1; 3];
        for (i, fd) in spec.stdio.iter().enumerate() {
            if let Some(fd) = fd {
                let mut raw = fd.as_raw_fd();
                if raw < 3 {
                    raw = libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 3);
                    if raw < 0 {
                        fail(ctx, Stage::Stdio, errno());
                    }
                }
                src[i] = raw;
            }
        }
        for (target, &raw) in src.iter().enumerate() {
            if raw >= 0 && libc::dup2(raw, target as RawFd) < 0 {
                fail(ctx, Stage::Stdio, errno());
            }
        }
        // Nothing but 0, 1, 2 crosses exec. ENOSYS (before 5.9): close-on-exec does it.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        if spec.setsid && libc::setsid() < 0 {
            fail(ctx, Stage::Setsid, errno());
        }
        if let Some(mask) = spec.umask {
            libc::umask(mask as libc::mode_t);
        }
        if !spec.limits_as_user {
            if let Some((stage, e)) = apply_limits(ctx) {
                fail(ctx, stage, e);
            }
        }
        // Raw system calls: glibc's wrappers would try to change every thread's credentials,
        // which a vfork child sharing the parent's memory must not attempt.
        if let Some(u) = spec.user {
            if libc::syscall(libc::SYS_setgroups, u.groups.len(), u.groups.as_ptr()) < 0
                || libc::syscall(libc::SYS_setresgid, u.gid, u.gid, u.gid) < 0
                || libc::syscall(libc::SYS_setresuid, u.uid, u.uid, u.uid) < 0
            {
                fail(ctx, Stage::User, errno());
            }
        }
        if spec.limits_as_user {
            // A change of uid made the process non-dumpable, which leaves /proc/self owned by
            // root; exec sets it again as it should be.
            libc::prctl(libc::PR_SET_DUMPABLE, 1 as libc::c_ulong, 0, 0, 0);
            if let Some((stage, e)) = apply_limits(ctx) {
                fail(ctx, stage, e);
            }
        }
        if let Some(cwd) = spec.cwd {
            if libc::chdir(cwd.as_ptr()) < 0 {
                fail(ctx, Stage::Cwd, errno());
            }
        }
        let empty = empty_sigset();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // execvp semantics: try each candidate; remember EACCES; stop on other errors.
        let mut err = libc::ENOENT;
        let mut saw_eacces = false;
        for path in spec.candidates {
            libc::execve(path.as_ptr(), ctx.argv, ctx.envp);
            err = errno();
            match err {
                libc::EACCES => saw_eacces = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => break,
            }
        }
        if saw_eacces && err != libc::EACCES && matches!(err, libc::ENOENT | libc::ENOTDIR) {
            err = libc::EACCES;
        }
        fail(ctx, Stage::Exec, err)
    }
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
