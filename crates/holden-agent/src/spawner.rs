//! Turns a checked `Spawn` request into a process: environment, PATH lookup, stdio, limits.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use holden_proto::{AgentError, SpawnParams};
use holden_sys::process::{self, Rlimit, SpawnError, SpawnSpec, Spawned, Stage, User};

/// What every spawn shares, prepared once at start-up.
pub struct Spawner {
    /// The agent's environment as handed to children, without socket-activation variables.
    envp: Vec<CString>,
    /// The agent's PATH, for lookups when the request does not set one.
    path: Option<Vec<u8>>,
    /// Children's stdin unless the caller passes one.
    devnull: File,
    /// Limits every child gets unless the request sets the same resource: the agent raises its
    /// own descriptor limit, and children get the one it started with.
    default_rlimits: Vec<Rlimit>,
}

/// How the child is set up before exec, besides its stdio and directory.
struct Setup<'a> {
    setsid: bool,
    umask: Option<u32>,
    rlimits: &'a [Rlimit],
    nice: Option<i32>,
    oom_score_adj: Option<i32>,
    user: Option<User<'a>>,
    cgroup: Option<BorrowedFd<'a>>,
    /// More descriptors for the child: (number, descriptor), by increasing number.
    extra_fds: &'a [(i32, BorrowedFd<'a>)],
    /// The caller's processes run as the caller: limits are set with its privileges.
    limits_as_user: bool,
}

/// Text of an errno in the house style: lower-case, no "(os error N)".
pub fn errno_text(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

impl Spawner {
    /// Snapshots the environment and opens /dev/null.
    pub fn new(default_rlimits: Vec<Rlimit>) -> std::io::Result<Spawner> {
        let mut envp = Vec::new();
        let mut path = None;
        for (k, v) in std::env::vars_os() {
            let k = k.as_bytes();
            if matches!(k, b"LISTEN_FDS" | b"LISTEN_PID" | b"LISTEN_FDNAMES") {
                continue;
            }
            if k == b"PATH" {
                path = Some(v.as_bytes().to_vec());
            }
            let mut kv = k.to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.extend(CString::new(kv).ok());
        }
        Ok(Spawner { envp, path, devnull: File::open("/dev/null")?, default_rlimits })
    }

    /// Spawns a Varlink `Spawn` request; `fds` are the descriptors of its message. `user` is
    /// who the process runs as (`None`: as the agent).
    pub fn spawn(&self, p: &SpawnParams, fds: &[OwnedFd], user: Option<User<'_>>) -> Result<Spawned, AgentError> {
        let cstring = |parameter: &str, s: &str| {
            CString::new(s).map_err(|_| AgentError::InvalidParameter {
                parameter: parameter.into(),
                reason: "contains a NUL byte".into(),
            })
        };
        let argv = p.argv.iter().map(|a| cstring("argv", a)).collect::<Result<Vec<_>, _>>()?;
        let built;
        let (envp, path) = if p.env.is_none() && p.env_update.is_none() {
            (&self.envp, self.path.as_deref())
        } else {
            built = self.build_env(p)?;
            (&built, built.iter().find_map(|e| e.as_bytes().strip_prefix(b"PATH=")))
        };
        let cwd = p.cwd.as_deref().map(|c| cstring("cwd", c)).transpose()?;
        let fd = |i: Option<u32>| i.map(|i| fds[i as usize].as_fd());
        let stdio = [fd(p.stdin).or(Some(self.devnull.as_fd())), fd(p.stdout), fd(p.stderr)];
        let mut rlimits: Vec<Rlimit> = p
            .rlimits
            .iter()
            .flatten()
            .filter_map(|r| {
                Some(Rlimit {
                    resource: process::rlimit_resource(&r.resource)?,
                    soft: r.soft.unwrap_or(u64::MAX),
                    hard: r.hard.unwrap_or(u64::MAX),
                })
            })
            .collect();
        for d in &self.default_rlimits {
            if !rlimits.iter().any(|r| r.resource == d.resource) {
                rlimits.push(*d);
            }
        }
        // A caller whose processes run as itself sets their limits with its own privileges.
        let limits_as_user = user.is_some();
        // The cgroup to join: its cgroup.procs on a cgroup v2 (never a directory).
        let cgroup = p.cgroup.map(|i| fds[i as usize].as_fd());
        // Checked by the decoder: numbers from 3 to 255, each once, in increasing order.
        let extra_fds: Vec<(i32, BorrowedFd<'_>)> =
            p.fds.iter().flatten().map(|f| (f.number as i32, fds[f.fd as usize].as_fd())).collect();
        if let Some(fd) = cgroup {
            if !process::is_cgroup2_file(fd).unwrap_or(false) {
                return Err(AgentError::InvalidParameter {
                    parameter: "cgroup".into(),
                    reason: "must be the cgroup.procs file of a cgroup v2, opened for writing".into(),
                });
            }
        }
        // `user` and `group` in the agent's own user database (the container's).
        let account = holden_sys::users::resolve(
            std::path::Path::new("/"),
            p.user.as_deref(),
            p.group.as_deref(),
            holden_sys::fd::geteuid(),
        )
        .map_err(|e| {
            let parameter = match e {
                holden_sys::users::LookupError::UnknownUser(_) => "user",
                holden_sys::users::LookupError::UnknownGroup(_) => "group",
            };
            AgentError::InvalidParameter { parameter: parameter.into(), reason: e.to_string() }
        })?;
        let user = match &account {
            Some(a) => Some(User { uid: a.uid, gid: a.gid, groups: &a.groups }),
            None => user,
        };
        let setup = Setup {
            setsid: p.setsid.unwrap_or(false),
            umask: p.umask,
            rlimits: &rlimits,
            nice: p.nice,
            oom_score_adj: p.oom_score_adj,
            user,
            cgroup,
            extra_fds: &extra_fds,
            limits_as_user,
        };
        self.run(&argv, envp, path, cwd.as_deref(), stdio, setup)
    }

    /// Spawns a v0.2 START_PROCESS: `name` looked up in PATH, argv `[name, args...]`, the
    /// agent's environment and stdio.
    pub fn spawn_legacy(&self, name: &[u8], args: &[Vec<u8>], user: Option<User<'_>>) -> Result<Spawned, AgentError> {
        let argv = std::iter::once(name)
            .chain(args.iter().map(Vec::as_slice))
            .map(|a| CString::new(a).expect("legacy strings end at their NUL"))
            .collect::<Vec<_>>();
        let stdio = [Some(self.devnull.as_fd()), None, None];
        let setup = Setup {
            setsid: false,
            umask: None,
            rlimits: &self.default_rlimits,
            nice: None,
            oom_score_adj: None,
            limits_as_user: user.is_some(),
            user,
            cgroup: None,
            extra_fds: &[],
        };
        self.run(&argv, &self.envp, self.path.as_deref(), None, stdio, setup)
    }

    /// The child's environment: `env` (or the agent's), then `env_update` applied in order
    /// (`KEY=VALUE` sets, a bare `KEY` removes), by `holden_sys::process::merge_env` (linear).
    fn build_env(&self, p: &SpawnParams) -> Result<Vec<CString>, AgentError> {
        let base: Vec<Vec<u8>> = match &p.env {
            Some(e) => e.iter().map(|s| s.as_bytes().to_vec()).collect(),
            None => self.envp.iter().map(|c| c.as_bytes().to_vec()).collect(),
        };
        let updates: Vec<(&[u8], Option<&[u8]>)> = p
            .env_update
            .iter()
            .flatten()
            .map(|u| match u.split_once('=') {
                Some((k, v)) => (k.as_bytes(), Some(v.as_bytes())),
                None => (u.as_bytes(), None),
            })
            .collect();
        process::merge_env(base, &updates)
            .into_iter()
            .map(|e| {
                CString::new(e).map_err(|_| AgentError::InvalidParameter {
                    parameter: "env".into(),
                    reason: "contains a NUL byte".into(),
                })
            })
            .collect()
    }

    fn run(
        &self,
        argv: &[CString],
        envp: &[CString],
        path: Option<&[u8]>,
        cwd: Option<&CStr>,
        stdio: [Option<BorrowedFd<'_>>; 3],
        setup: Setup<'_>,
    ) -> Result<Spawned, AgentError> {
        let program = argv[0].as_bytes();
        // PATH lookup uses the child's own PATH, as std::process::Command does.
        let candidates = process::exec_candidates(program, path);
        let Setup { setsid, umask, rlimits, nice, oom_score_adj, user, cgroup, extra_fds, limits_as_user } = setup;
        let spec = SpawnSpec {
            candidates: &candidates,
            argv,
            envp,
            cwd,
            stdio,
            setsid,
            umask,
            rlimits,
            nice,
            oom_score_adj,
            user,
            cgroup,
            extra_fds,
            limits_as_user,
        };
        process::spawn(&spec).map_err(|e| {
            let prog = String::from_utf8_lossy(program);
            match e {
                SpawnError::Clone(e) => {
                    let errno = e.raw_os_error().unwrap_or(0);
                    AgentError::SpawnFailed {
                        stage: "clone".into(),
                        errno,
                        message: format!("clone for {prog}: {}", errno_text(errno)),
                    }
                }
                SpawnError::Child { stage: Stage::Exec, errno } => {
                    AgentError::ExecFailed { errno, message: format!("exec {prog}: {}", errno_text(errno)) }
                }
                SpawnError::Child { stage, errno } => {
                    let what = match (stage, cwd) {
                        (Stage::Cwd, Some(c)) => format!("cwd {}", c.to_string_lossy()),
                        _ => format!("{} for {prog}", stage.name()),
                    };
                    AgentError::SpawnFailed {
                        stage: stage.name().into(),
                        errno,
                        message: format!("{what}: {}", errno_text(errno)),
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    /// The wire's rlimit names (holden-proto) and the kernel's numbers (holden-sys) are one
    /// table seen from two crates that know nothing of each other: they must agree.
    #[test]
    fn every_rlimit_name_on_the_wire_has_a_number() {
        for name in holden_proto::RLIMIT_NAMES {
            assert!(holden_sys::process::rlimit_resource(name).is_some(), "{name}");
        }
        assert!(holden_sys::process::rlimit_resource("bogus").is_none());
    }
}
