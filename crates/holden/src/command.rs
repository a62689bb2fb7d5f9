//! `Command`: what to run, shaped like `std::process::Command`, spawned locally or via an agent.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use holden_proto::{Rlimit as WireRlimit, SpawnParams};
use holden_sys::process::{self, Rlimit, SpawnError, SpawnSpec};

use crate::{Agent, Child, Error, PendingSpawn};

/// Where a child's stdin, stdout or stderr comes from.
#[derive(Debug)]
pub enum Stdio {
    /// The caller's own descriptor 0, 1 or 2 (for an agent spawn, it is passed to the agent).
    Inherit,
    /// `/dev/null`.
    Null,
    /// This descriptor (a pipe end, a file, a socket...). The command keeps it; every spawn
    /// passes it again.
    Fd(OwnedFd),
}

impl Stdio {
    /// [`Stdio::Inherit`].
    pub fn inherit() -> Stdio {
        Stdio::Inherit
    }
    /// [`Stdio::Null`].
    pub fn null() -> Stdio {
        Stdio::Null
    }
}

impl From<OwnedFd> for Stdio {
    fn from(fd: OwnedFd) -> Stdio {
        Stdio::Fd(fd)
    }
}

impl From<File> for Stdio {
    fn from(f: File) -> Stdio {
        Stdio::Fd(f.into())
    }
}

/// A command to run: program, arguments, environment, directory, stdio, session, limits.
///
/// Unset stdio means: for a local spawn, the caller's own (like `std::process::Command`); for an
/// agent spawn, the agent's defaults (stdin from /dev/null, the agent's stdout and stderr).
#[derive(Debug)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    env_clear: bool,
    env: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
    stdio: [Option<Stdio>; 3],
    setsid: bool,
    umask: Option<u32>,
    rlimits: Vec<(String, Option<u64>, Option<u64>)>,
    user: Option<String>,
    group: Option<String>,
    nice: Option<i32>,
    oom_score_adj: Option<i32>,
    cgroup: Option<OwnedFd>,
    /// More descriptors for the child, by number, in increasing order.
    fds: Vec<(i32, OwnedFd)>,
}

fn utf8<'a>(what: &str, s: &'a OsStr) -> Result<&'a str, Error> {
    s.to_str().ok_or_else(|| Error::InvalidCommand(format!("{what} {s:?} is not UTF-8, which an agent needs")))
}

fn cstring(what: &str, s: &[u8]) -> Result<CString, Error> {
    CString::new(s)
        .map_err(|_| Error::InvalidCommand(format!("{what} {:?} contains a NUL byte", String::from_utf8_lossy(s))))
}

impl Command {
    /// A command running `program` (looked up in PATH when it has no slash).
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command {
            program: program.as_ref().into(),
            args: Vec::new(),
            env_clear: false,
            env: Vec::new(),
            cwd: None,
            stdio: [None, None, None],
            setsid: false,
            umask: None,
            rlimits: Vec::new(),
            user: None,
            group: None,
            nice: None,
            oom_score_adj: None,
            cgroup: None,
            fds: Vec::new(),
        }
    }

    /// Passes `fd` to the child as descriptor `number` (3 to 255; a number given twice keeps
    /// the last), locally and through an agent (the descriptor travels with the call). Used
    /// for readiness notification (`notify = "fd"`), inherited sockets and the like. At most 8.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::Read;
    /// let (mut ready, w) = std::io::pipe()?;
    /// let mut cmd = holden::Command::new("sh");
    /// cmd.args(["-c", "echo up >&3"]).fd(3, w.into());
    /// let mut child = cmd.spawn()?;
    /// drop(cmd); // our copy of the write end
    /// let mut said = String::new();
    /// ready.read_to_string(&mut said)?;
    /// assert_eq!(said, "up\n");
    /// assert!(child.wait()?.success());
    /// # Ok(()) }
    /// ```
    pub fn fd(&mut self, number: i32, fd: OwnedFd) -> &mut Command {
        self.fds.retain(|(n, _)| *n != number);
        let at = self.fds.partition_point(|(n, _)| *n < number);
        self.fds.insert(at, (number, fd));
        self
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.args.push(arg.as_ref().into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().into()));
        self
    }

    /// Sets an environment variable.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Command {
        self.set_env(key.as_ref(), Some(value.as_ref().into()));
        self
    }

    /// Sets environment variables.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self.env(k, v);
        }
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.set_env(key.as_ref(), None);
        self
    }

    /// Starts from an empty environment instead of the spawner's.
    pub fn env_clear(&mut self) -> &mut Command {
        self.env_clear = true;
        self.env.clear();
        self
    }

    fn set_env(&mut self, key: &OsStr, value: Option<OsString>) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value));
    }

    /// Sets the working directory.
    pub fn current_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Command {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets stdin.
    pub fn stdin(&mut self, s: impl Into<Stdio>) -> &mut Command {
        self.stdio[0] = Some(s.into());
        self
    }

    /// Sets stdout.
    pub fn stdout(&mut self, s: impl Into<Stdio>) -> &mut Command {
        self.stdio[1] = Some(s.into());
        self
    }

    /// Sets stderr.
    pub fn stderr(&mut self, s: impl Into<Stdio>) -> &mut Command {
        self.stdio[2] = Some(s.into());
        self
    }

    /// Starts the child in a new session (`setsid`), leading its own process group.
    pub fn setsid(&mut self, on: bool) -> &mut Command {
        self.setsid = on;
        self
    }

    /// Sets the child's file-mode creation mask (0 to 0o777).
    pub fn umask(&mut self, mask: u32) -> &mut Command {
        self.umask = Some(mask);
        self
    }

    /// Sets a resource limit by name (`nofile`, `core`, `nproc`, ...); `None` is infinity.
    pub fn rlimit(&mut self, resource: &str, soft: Option<u64>, hard: Option<u64>) -> &mut Command {
        self.rlimits.retain(|(r, _, _)| r != resource);
        self.rlimits.push((resource.into(), soft, hard));
        self
    }

    /// Runs the child as `user`, a name or a number: its uid, its primary group and the groups
    /// that list it, from `/etc/passwd` and `/etc/group` (this system's for a local spawn, the
    /// agent's for an agent spawn). Needs privilege (root, or an agent that runs your processes
    /// as itself).
    pub fn user(&mut self, user: &str) -> &mut Command {
        self.user = Some(user.into());
        self
    }

    /// Runs the child with `group` (a name or a number) as its primary group: with
    /// [`Command::user`], instead of the user's own; alone, with the current uid and only this
    /// group.
    pub fn group(&mut self, group: &str) -> &mut Command {
        self.group = Some(group.into());
        self
    }

    /// Sets the child's nice value (-20 to 19; lowering it needs `CAP_SYS_NICE`).
    pub fn nice(&mut self, nice: i32) -> &mut Command {
        self.nice = Some(nice);
        self
    }

    /// Sets the child's `oom_score_adj` (-1000 to 1000; lowering it needs `CAP_SYS_RESOURCE`).
    pub fn oom_score_adj(&mut self, adj: i32) -> &mut Command {
        self.oom_score_adj = Some(adj);
        self
    }

    /// Makes the child join a cgroup v2 before it runs anything: `procs` is the cgroup's
    /// `cgroup.procs`, opened for writing by the caller, who creates the cgroup and sets its
    /// limits. Through an agent, the descriptor travels with the call (the agent's child joins
    /// it). Never pass the cgroup's directory: it would open the host's filesystem to the agent.
    pub fn cgroup(&mut self, procs: OwnedFd) -> &mut Command {
        self.cgroup = Some(procs);
        self
    }

    fn check(&self) -> Result<(), Error> {
        if self.nice.is_some_and(|n| !(-20..=19).contains(&n)) {
            return Err(Error::InvalidCommand("nice must be from -20 to 19".into()));
        }
        if self.oom_score_adj.is_some_and(|n| !(-1000..=1000).contains(&n)) {
            return Err(Error::InvalidCommand("oom_score_adj must be from -1000 to 1000".into()));
        }
        for (what, v) in [("user", &self.user), ("group", &self.group)] {
            if v.as_deref().is_some_and(|v| v.is_empty() || v.contains([':', '\n', '\0'])) {
                return Err(Error::InvalidCommand(format!("{what} must be a name or a number")));
            }
        }
        if self.fds.len() > process::MAX_EXTRA_FDS {
            return Err(Error::InvalidCommand(format!("at most {} extra descriptors", process::MAX_EXTRA_FDS)));
        }
        if let Some((n, _)) = self.fds.iter().find(|(n, _)| !(3..=process::MAX_EXTRA_FD).contains(n)) {
            return Err(Error::InvalidCommand(format!(
                "descriptor number {n} is not from 3 to {}",
                process::MAX_EXTRA_FD
            )));
        }
        if self.program.is_empty() {
            return Err(Error::InvalidCommand("the program name is empty".into()));
        }
        if self.umask.is_some_and(|m| m > 0o777) {
            return Err(Error::InvalidCommand("umask must be at most 0o777".into()));
        }
        for (r, soft, hard) in &self.rlimits {
            if process::rlimit_resource(r).is_none() {
                return Err(Error::InvalidCommand(format!("unknown rlimit resource {r:?}")));
            }
            if soft.unwrap_or(u64::MAX) > hard.unwrap_or(u64::MAX) {
                return Err(Error::InvalidCommand(format!("rlimit {r}: soft limit above hard limit")));
            }
        }
        Ok(())
    }

    /// Spawns the command as a child of this process.
    ///
    /// ```
    /// # fn main() -> Result<(), holden::Error> {
    /// use holden::{Command, Stdio};
    /// let mut child = Command::new("sh").args(["-c", "exit 3"]).stdout(Stdio::null()).spawn()?;
    /// assert_eq!(child.wait()?.code(), Some(3));
    /// // A program that is not there: an error with the errno of exec, and no child left.
    /// let e = Command::new("/nonexistent").spawn().unwrap_err();
    /// assert_eq!(e.exec_errno(), Some(libc::ENOENT));
    /// # Ok(()) }
    /// ```
    pub fn spawn(&mut self) -> Result<Child, Error> {
        self.check()?;
        let program = self.program.as_bytes();
        let argv = std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| cstring("argument", a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let base: Vec<Vec<u8>> = if self.env_clear {
            Vec::new()
        } else {
            std::env::vars_os()
                .map(|(k, v)| {
                    let mut kv = std::os::unix::ffi::OsStringExt::into_vec(k);
                    kv.push(b'=');
                    kv.extend_from_slice(v.as_bytes());
                    kv
                })
                .collect()
        };
        let updates: Vec<(&[u8], Option<&[u8]>)> =
            self.env.iter().map(|(k, v)| (k.as_bytes(), v.as_ref().map(|v| v.as_bytes()))).collect();
        let env = process::merge_env(base, &updates);
        let envp = env.iter().map(|kv| cstring("environment entry", kv)).collect::<Result<Vec<_>, _>>()?;
        let path = env.iter().find_map(|kv| kv.strip_prefix(b"PATH="));
        let candidates = process::exec_candidates(program, path);
        let cwd = self.cwd.as_ref().map(|c| cstring("directory", c.as_os_str().as_bytes())).transpose()?;
        let null = open_null_if(self.stdio.iter().any(|s| matches!(s, Some(Stdio::Null))))?;
        let stdio: [Option<BorrowedFd<'_>>; 3] = std::array::from_fn(|i| match &self.stdio[i] {
            None | Some(Stdio::Inherit) => None,
            Some(Stdio::Null) => null.as_ref().map(|f| f.as_fd()),
            Some(Stdio::Fd(fd)) => Some(fd.as_fd()),
        });
        let rlimits: Vec<Rlimit> = self
            .rlimits
            .iter()
            .map(|(r, soft, hard)| Rlimit {
                resource: process::rlimit_resource(r).expect("checked"),
                soft: soft.unwrap_or(u64::MAX),
                hard: hard.unwrap_or(u64::MAX),
            })
            .collect();
        let account = holden_sys::users::resolve(
            std::path::Path::new("/"),
            self.user.as_deref(),
            self.group.as_deref(),
            holden_sys::fd::geteuid(),
        )
        .map_err(|e| Error::InvalidCommand(e.to_string()))?;
        let extra_fds: Vec<(i32, BorrowedFd<'_>)> = self.fds.iter().map(|(n, fd)| (*n, fd.as_fd())).collect();
        let spec = SpawnSpec {
            candidates: &candidates,
            argv: &argv,
            envp: &envp,
            cwd: cwd.as_deref(),
            stdio,
            setsid: self.setsid,
            umask: self.umask,
            rlimits: &rlimits,
            nice: self.nice,
            oom_score_adj: self.oom_score_adj,
            user: account.as_ref().map(|a| process::User { uid: a.uid, gid: a.gid, groups: &a.groups }),
            cgroup: self.cgroup.as_ref().map(|fd| fd.as_fd()),
            extra_fds: &extra_fds,
            limits_as_user: false,
        };
        let prog = || String::from_utf8_lossy(program).into_owned();
        match process::spawn(&spec) {
            Ok(s) => Ok(Child::from_local(s.pidfd, s.pid)),
            Err(SpawnError::Clone(source)) => Err(Error::Spawn { program: prog(), stage: "clone", source }),
            Err(SpawnError::Child { stage, errno }) => Err(Error::Spawn {
                program: prog(),
                stage: stage.name(),
                source: std::io::Error::from_raw_os_error(errno),
            }),
        }
    }

    /// Spawns the command through `agent`: the child lives in the agent's namespaces, cgroup
    /// and security context; the caller gets its pidfd.
    pub fn spawn_via(&mut self, agent: &mut Agent) -> Result<Child, Error> {
        self.check()?;
        let null = open_null_if(self.stdio[1..].iter().any(|s| matches!(s, Some(Stdio::Null))))?;
        let (params, fds) = self.wire(null.as_ref())?;
        agent.spawn(&params, &fds)
    }

    /// Starts a spawn through the agent listening on `path` without waiting for it: the
    /// connection is non-blocking and the caller's event loop drives the returned
    /// [`PendingSpawn`] by readiness. `exit_stream` asks for the exit stream (needed where the
    /// kernel has no `PIDFD_INFO_EXIT`). The command's descriptors are duplicated, so the
    /// command can be dropped at once.
    pub fn spawn_pending(&self, path: &std::path::Path, exit_stream: bool) -> Result<PendingSpawn, Error> {
        self.check()?;
        let null = open_null_if(self.stdio[1..].iter().any(|s| matches!(s, Some(Stdio::Null))))?;
        let (params, fds) = self.wire(null.as_ref())?;
        let fds = fds.iter().map(|f| f.try_clone_to_owned()).collect::<Result<Vec<_>, _>>().map_err(Error::Io)?;
        let message = holden_proto::encode_call("io.holden.Agent.Spawn", &params, exit_stream);
        PendingSpawn::start(path, message, fds)
    }

    /// The `Spawn` parameters and the descriptors they index.
    fn wire<'a>(&'a self, null: Option<&'a File>) -> Result<(SpawnParams, Vec<BorrowedFd<'a>>), Error> {
        let argv = std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| utf8("argument", a).map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        let entries = |with_removals: bool| -> Result<Vec<String>, Error> {
            let mut out = Vec::new();
            for (k, v) in &self.env {
                let k = utf8("environment variable", k)?;
                match v {
                    Some(v) => out.push(format!("{k}={}", utf8("environment value", v)?)),
                    None if with_removals => out.push(k.to_owned()),
                    None => {}
                }
            }
            Ok(out)
        };
        let (env, env_update) = if self.env_clear {
            (Some(entries(false)?), None)
        } else if self.env.is_empty() {
            (None, None)
        } else {
            (None, Some(entries(true)?))
        };
        let cwd = self.cwd.as_ref().map(|c| utf8("directory", c.as_os_str()).map(str::to_owned)).transpose()?;
        let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
        let mut index = [None; 3];
        for (i, s) in self.stdio.iter().enumerate() {
            let fd = match s {
                None => None,
                // The agent's default stdin is already /dev/null.
                Some(Stdio::Null) if i == 0 => None,
                Some(Stdio::Null) => null.map(|f| f.as_fd()),
                Some(Stdio::Inherit) => Some(caller_stdio(i)),
                Some(Stdio::Fd(fd)) => Some(fd.as_fd()),
            };
            if let Some(fd) = fd {
                index[i] = Some(fds.len() as u32);
                fds.push(fd);
            }
        }
        let params = SpawnParams {
            argv,
            env,
            env_update,
            cwd,
            stdin: index[0],
            stdout: index[1],
            stderr: index[2],
            setsid: self.setsid.then_some(true),
            umask: self.umask,
            rlimits: (!self.rlimits.is_empty()).then(|| {
                self.rlimits
                    .iter()
                    .map(|(r, soft, hard)| WireRlimit { resource: r.clone(), soft: *soft, hard: *hard })
                    .collect()
            }),
            user: self.user.clone(),
            group: self.group.clone(),
            nice: self.nice,
            oom_score_adj: self.oom_score_adj,
            cgroup: self.cgroup.as_ref().map(|fd| {
                fds.push(fd.as_fd());
                (fds.len() - 1) as u32
            }),
            fds: (!self.fds.is_empty()).then(|| {
                self.fds
                    .iter()
                    .map(|(n, fd)| {
                        fds.push(fd.as_fd());
                        holden_proto::PassFd { fd: (fds.len() - 1) as u32, number: *n as u32 }
                    })
                    .collect()
            }),
        };
        if fds.len() > holden_proto::MAX_FDS {
            return Err(Error::InvalidCommand(format!(
                "{} descriptors for one call (stdio, cgroup and extra ones); an agent takes at most {}",
                fds.len(),
                holden_proto::MAX_FDS
            )));
        }
        Ok((params, fds))
    }
}

fn open_null_if(needed: bool) -> Result<Option<File>, Error> {
    if !needed {
        return Ok(None);
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(Some)
        .map_err(|e| Error::InvalidCommand(format!("open /dev/null: {e}")))
}

fn caller_stdio(i: usize) -> BorrowedFd<'static> {
    holden_sys::fd::stdio(i as i32)
}
