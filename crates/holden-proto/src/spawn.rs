//! `io.holden.Agent.Spawn` and `GetInfo`: parameters, checks and replies.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{AgentError, MAX_ARGS, MAX_ENV, MAX_FDS, MAX_RLIMITS};

/// Resource names `Rlimit.resource` accepts.
pub const RLIMIT_NAMES: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// A resource limit for the child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// One of [`RLIMIT_NAMES`].
    pub resource: String,
    /// Soft limit; `None` is infinity.
    pub soft: Option<u64>,
    /// Hard limit; `None` is infinity.
    pub hard: Option<u64>,
}

/// The parameters of `io.holden.Agent.Spawn`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpawnParams {
    /// Program and arguments; never empty.
    pub argv: Vec<String>,
    /// The whole environment; `None` means the agent's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `KEY=VALUE` sets, bare `KEY` removes, applied after `env`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_update: Option<Vec<String>>,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Index of the descriptor to use as stdin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<u32>,
    /// Index of the descriptor to use as stdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<u32>,
    /// Index of the descriptor to use as stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<u32>,
    /// Start a new session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setsid: Option<bool>,
    /// File-mode creation mask.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
    /// Resource limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rlimits: Option<Vec<Rlimit>>,
    /// The user to run as, a name (in the agent's `/etc/passwd`) or a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The group to run as, a name (in the agent's `/etc/group`) or a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The nice value, -20 to 19.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nice: Option<i32>,
    /// The OOM killer's score adjustment, -1000 to 1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// Index of the descriptor of a cgroup v2 directory the child joins before exec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<u32>,
    /// More descriptors for the child, each under a number of the caller's choosing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fds: Option<Vec<PassFd>>,
}

/// A descriptor of the call passed to the child as descriptor `number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassFd {
    /// Index into the call's descriptors.
    pub fd: u32,
    /// Its number in the child: 3 to [`MAX_FD_NUMBER`].
    pub number: u32,
}

/// The highest descriptor number `PassFd.number` may be.
pub const MAX_FD_NUMBER: u32 = 255;

fn pass_fds(value: &Value, nfds: usize) -> Result<Vec<PassFd>, AgentError> {
    let Value::Array(items) = value else {
        return Err(bad("fds", "must be an array of PassFd objects"));
    };
    if items.len() > MAX_FDS {
        return Err(bad("fds", format!("has {} entries, at most {MAX_FDS} allowed", items.len())));
    }
    let mut out: Vec<PassFd> = Vec::new();
    for item in items {
        let Value::Object(o) = item else {
            return Err(bad("fds", "must be an array of PassFd objects"));
        };
        if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "fd" | "number")) {
            return Err(bad("fds", format!("unknown field {k:?}")));
        }
        let fd = fd_index("fds", o.get("fd").ok_or_else(|| bad("fds", "an entry needs fd"))?, nfds)?;
        let number = match o.get("number").and_then(Value::as_u64) {
            Some(n) if (3..=MAX_FD_NUMBER as u64).contains(&n) => n as u32,
            _ => return Err(bad("fds", format!("number must be an integer from 3 to {MAX_FD_NUMBER}"))),
        };
        if out.iter().any(|p| p.number == number) {
            return Err(bad("fds", format!("number {number} is given twice")));
        }
        out.push(PassFd { fd, number });
    }
    out.sort_by_key(|p| p.number);
    Ok(out)
}

fn bad(parameter: &str, reason: impl Into<String>) -> AgentError {
    AgentError::InvalidParameter { parameter: parameter.to_owned(), reason: reason.into() }
}

fn check_string(parameter: &str, s: &str) -> Result<(), AgentError> {
    if s.contains('\0') {
        return Err(bad(parameter, "contains a NUL byte"));
    }
    Ok(())
}

fn string_array(parameter: &str, v: &Value, max: usize) -> Result<Vec<String>, AgentError> {
    let Value::Array(items) = v else {
        return Err(bad(parameter, "must be an array of strings"));
    };
    if items.len() > max {
        return Err(bad(parameter, format!("has {} entries, at most {max} allowed", items.len())));
    }
    items
        .iter()
        .map(|i| match i {
            Value::String(s) => check_string(parameter, s).map(|()| s.clone()),
            _ => Err(bad(parameter, "must be an array of strings")),
        })
        .collect()
}

fn fd_index(parameter: &str, v: &Value, nfds: usize) -> Result<u32, AgentError> {
    let i = v.as_u64().ok_or_else(|| bad(parameter, "must be a descriptor index (a non-negative integer)"))?;
    if i as usize >= nfds || i >= MAX_FDS as u64 {
        return Err(bad(parameter, format!("names descriptor {i}, but the message carries {nfds}")));
    }
    Ok(i as u32)
}

/// A user or group: a name or a number, as `/etc/passwd` and `/etc/group` allow.
fn account(parameter: &str, v: &Value) -> Result<String, AgentError> {
    let s = v.as_str().ok_or_else(|| bad(parameter, "must be a string (a name or a number)"))?;
    if s.is_empty() || s.len() > 256 || s.contains([':', '\n', '\0']) {
        return Err(bad(parameter, "must be a name or a number: 1 to 256 bytes, no ':', newline or NUL"));
    }
    Ok(s.to_owned())
}

fn int_in(parameter: &str, v: &Value, min: i64, max: i64) -> Result<i32, AgentError> {
    match v.as_i64() {
        Some(n) if (min..=max).contains(&n) => Ok(n as i32),
        _ => Err(bad(parameter, format!("must be an integer from {min} to {max}"))),
    }
}

fn opt_limit(parameter: &str, v: Option<&Value>) -> Result<Option<u64>, AgentError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| bad(parameter, "must be a non-negative integer or null")),
    }
}

impl SpawnParams {
    /// Reads and checks the parameters of a `Spawn` call that carried `nfds` descriptors.
    ///
    /// Every error names the offending parameter. Unknown parameters are errors, so that a
    /// caller relying on a feature this agent lacks learns it instead of being ignored.
    pub fn from_call(parameters: &Map<String, Value>, nfds: usize) -> Result<SpawnParams, AgentError> {
        let mut p = SpawnParams::default();
        for (key, value) in parameters {
            // `null` is the same as absent for every optional parameter.
            if value.is_null() && key != "argv" {
                continue;
            }
            match key.as_str() {
                "argv" => p.argv = string_array("argv", value, MAX_ARGS)?,
                "env" => p.env = Some(string_array("env", value, MAX_ENV)?),
                "env_update" => p.env_update = Some(string_array("env_update", value, MAX_ENV)?),
                "cwd" => {
                    let s = value.as_str().ok_or_else(|| bad("cwd", "must be a string"))?;
                    check_string("cwd", s)?;
                    if s.is_empty() {
                        return Err(bad("cwd", "must not be empty"));
                    }
                    p.cwd = Some(s.to_owned());
                }
                "stdin" => p.stdin = Some(fd_index("stdin", value, nfds)?),
                "stdout" => p.stdout = Some(fd_index("stdout", value, nfds)?),
                "stderr" => p.stderr = Some(fd_index("stderr", value, nfds)?),
                "setsid" => p.setsid = Some(value.as_bool().ok_or_else(|| bad("setsid", "must be a boolean"))?),
                "umask" => {
                    let m = value.as_u64().filter(|m| *m <= 0o777);
                    p.umask = Some(m.ok_or_else(|| bad("umask", "must be an integer from 0 to 511 (0o777)"))? as u32);
                }
                "rlimits" => p.rlimits = Some(rlimits(value)?),
                "user" => p.user = Some(account("user", value)?),
                "group" => p.group = Some(account("group", value)?),
                "nice" => p.nice = Some(int_in("nice", value, -20, 19)?),
                "oom_score_adj" => p.oom_score_adj = Some(int_in("oom_score_adj", value, -1000, 1000)?),
                "cgroup" => p.cgroup = Some(fd_index("cgroup", value, nfds)?),
                "fds" => p.fds = Some(pass_fds(value, nfds)?),
                other => return Err(bad(other, "unknown parameter")),
            }
        }
        if !parameters.contains_key("argv") {
            return Err(bad("argv", "missing"));
        }
        match p.argv.first() {
            None => return Err(bad("argv", "must not be empty")),
            Some(a) if a.is_empty() => return Err(bad("argv", "the program name must not be empty")),
            Some(_) => {}
        }
        for e in p.env.iter().flatten() {
            match e.split_once('=') {
                Some((k, _)) if !k.is_empty() => {}
                _ => return Err(bad("env", format!("entry {e:?} is not KEY=VALUE"))),
            }
        }
        for e in p.env_update.iter().flatten() {
            if e.is_empty() || e.starts_with('=') {
                return Err(bad("env_update", format!("entry {e:?} is not KEY=VALUE or KEY")));
            }
        }
        Ok(p)
    }
}

fn rlimits(value: &Value) -> Result<Vec<Rlimit>, AgentError> {
    let Value::Array(items) = value else {
        return Err(bad("rlimits", "must be an array of Rlimit objects"));
    };
    if items.len() > MAX_RLIMITS {
        return Err(bad("rlimits", format!("has {} entries, at most {MAX_RLIMITS} allowed", items.len())));
    }
    items
        .iter()
        .map(|item| {
            let Value::Object(o) = item else {
                return Err(bad("rlimits", "must be an array of Rlimit objects"));
            };
            if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "resource" | "soft" | "hard")) {
                return Err(bad("rlimits", format!("unknown field {k:?}")));
            }
            let resource =
                o.get("resource").and_then(Value::as_str).ok_or_else(|| bad("rlimits", "needs a resource name"))?;
            if !RLIMIT_NAMES.contains(&resource) {
                return Err(bad("rlimits", format!("unknown resource {resource:?}")));
            }
            let soft = opt_limit("rlimits", o.get("soft"))?;
            let hard = opt_limit("rlimits", o.get("hard"))?;
            if soft.unwrap_or(u64::MAX) > hard.unwrap_or(u64::MAX) {
                return Err(bad("rlimits", format!("{resource}: soft limit above hard limit")));
            }
            Ok(Rlimit { resource: resource.to_owned(), soft, hard })
        })
        .collect()
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// Whether it dumped core.
    pub core_dumped: bool,
}

/// A reply of `Spawn`: the first has `pidfd`, the last of a `more` call has `exit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnReply {
    /// The pid as the agent sees it.
    pub pid: i32,
    /// Index of the pidfd in the reply's descriptors.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pidfd: Option<u32>,
    /// How the process ended (last reply of a `more` call).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit: Option<ExitStatus>,
}

/// Kernel features an agent found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// clone3(2) answers.
    pub clone3: bool,
    /// clone(2) with CLONE_PIDFD works.
    pub clone_pidfd: bool,
    /// close_range(2) exists.
    pub close_range: bool,
    /// PIDFD_GET_INFO reports PIDFD_INFO_EXIT.
    pub pidfd_info_exit: bool,
    /// pidfds have their own inodes (pidfs). Absent from agents before 0.3.1: false.
    #[serde(default)]
    pub pidfs: bool,
    /// pidfd_send_signal(2) takes PIDFD_SIGNAL_PROCESS_GROUP. Absent before 0.3.1: false.
    #[serde(default)]
    pub pidfd_signal_group: bool,
}

/// `io.holden.Agent.GetInfo`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetInfoReply {
    /// The agent's version.
    pub version: String,
    /// The agent's pid in its own pid namespace.
    pub pid: i32,
    /// What the kernel offers.
    pub features: Features,
}
