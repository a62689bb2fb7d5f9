//! Race-free spawning: `clone(CLONE_PIDFD | CLONE_VM | CLONE_VFORK)`, the child's set-up
//! (cgroup, stdio, session, limits, user, directory) and exec, with failures reported by stage.
//! Re-exported from [`crate::process`].

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::process::{errno, wait_pidfd};

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
    /// More descriptors to pass: (number in the child, descriptor here), at most
    /// [`MAX_EXTRA_FDS`], numbers from 3 to [`MAX_EXTRA_FD`] in increasing order.
    pub extra_fds: &'a [(i32, BorrowedFd<'a>)],
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

/// The most descriptors [`SpawnSpec::extra_fds`] may pass.
pub const MAX_EXTRA_FDS: usize = 8;
/// The highest descriptor number [`SpawnSpec::extra_fds`] may place.
pub const MAX_EXTRA_FD: i32 = 255;

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
    let numbers_ok = spec.extra_fds.len() <= MAX_EXTRA_FDS
        && spec.extra_fds.iter().all(|(n, _)| (3..=MAX_EXTRA_FD).contains(n))
        && spec.extra_fds.windows(2).all(|w| w[0].0 < w[1].0);
    if !numbers_ok {
        return Err(SpawnError::Child { stage: Stage::Stdio, errno: libc::EINVAL });
    }
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
        // Stdio and the extra descriptors: first lift every source that sits at or below the
        // highest number placed out of the way (close-on-exec), then dup2 each into place.
        let top = spec.extra_fds.last().map_or(2, |e| e.0);
        let mut src: [(RawFd, RawFd); 3 + MAX_EXTRA_FDS] = [(-1, -1); 3 + MAX_EXTRA_FDS];
        let wanted = spec.stdio.iter().enumerate().filter_map(|(i, fd)| Some((i as RawFd, (*fd)?)));
        for (slot, (target, fd)) in wanted.chain(spec.extra_fds.iter().copied()).enumerate() {
            let mut raw = fd.as_raw_fd();
            if raw <= top {
                raw = libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, top + 1);
                if raw < 0 {
                    fail(ctx, Stage::Stdio, errno());
                }
            }
            src[slot] = (target, raw);
        }
        for &(target, raw) in src.iter().filter(|s| s.0 >= 0) {
            if libc::dup2(raw, target) < 0 {
                fail(ctx, Stage::Stdio, errno());
            }
        }
        // Nothing but 0, 1, 2 and the extra descriptors crosses exec. ENOSYS (before 5.9):
        // close-on-exec does it.
        let mut from = 3u32;
        for &(n, _) in spec.extra_fds {
            if n as u32 > from {
                libc::syscall(libc::SYS_close_range, from, n as u32 - 1, 0u32);
            }
            from = n as u32 + 1;
        }
        libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32);
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
