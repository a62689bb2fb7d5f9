//! The configuration file: agents, services, orchestrator settings.
//!
//! ```toml
//! [agents.qm]
//! socket = "/run/holden/qm.sock"
//!
//! [services.web]
//! command = ["/usr/bin/python3", "-m", "http.server", "8080"]
//! agent = "qm"
//! restart = "on-failure"
//! depends_on = ["db"]
//! stop_timeout = "5s"
//! backoff = { initial = "100ms", max = "30s", factor = 2.0, reset_after = "10s" }
//! start_limit = { burst = 5, interval = "60s" }
//! ```
//!
//! Unknown keys, wrong types, unknown agents, dependency cycles and empty commands are errors
//! that name the file, line and column.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::constraints::RawConstraints;
pub use crate::constraints::{CgroupLimit, Constraints};
pub use crate::readiness::{Condition, Dependency, Health, Probe, ReadyWhen};
pub use env::{interpolate, original_offset, read_env_file, Anchor};
use file::error_at;
pub use file::{control_socket_of, load};

mod env;
mod file;
mod order;

use order::find_cycle;
pub use order::start_order;

/// The longest service name (it names files and keys; 128 is plenty).
pub const MAX_NAME: usize = 128;
/// The largest backoff factor (a delay grows past any sensible maximum in a few steps anyway).
pub const MAX_FACTOR: f64 = 100.0;

/// A configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong, lower-case.
    pub message: String,
}

/// When a service is restarted after it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Whatever the exit.
    Always,
    /// Unless it exited with code 0.
    OnFailure,
    /// Never.
    Never,
}

/// What stop and kill signal: the main process, or its whole process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillMode {
    /// The service's own process.
    Process,
    /// Its process group (the service is started in its own session).
    Group,
    /// The main process, then every process of its cgroup at the stop deadline (`cgroup.kill`);
    /// when the main process ends, whatever is left in the cgroup ends too. Needs cgroups.
    Cgroup,
}

/// Where a service's stdout or stderr goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Captured, timestamped, into the service's rotated log.
    Log,
    /// The orchestrator's own.
    Inherit,
    /// `/dev/null`.
    Null,
    /// Appended to this file.
    File(PathBuf),
}

/// Exponential backoff between restarts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
    /// Growth per consecutive quick death.
    pub factor: f64,
    /// A run this long resets the delay to `initial`.
    pub reset_after: Duration,
}

/// At most `burst` starts within `interval`; past that the service is parked as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartLimit {
    /// Starts allowed in the window.
    pub burst: u32,
    /// The window.
    pub interval: Duration,
}

/// One service, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// argv; never empty.
    pub command: Vec<String>,
    /// The agent that spawns it; `None` spawns it locally.
    pub agent: Option<String>,
    /// Restart policy.
    pub restart: Restart,
    /// Environment added to the spawner's.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Services started before this one and stopped after it, in the order written.
    pub depends_on: Vec<String>,
    /// What this one waits for of each of `depends_on` (the list form: `started`).
    pub dependencies: BTreeMap<String, Dependency>,
    /// How it says it is ready, if it does.
    pub ready: Option<ReadyWhen>,
    /// Not ready by then after a spawn: a failed start.
    pub ready_timeout: Duration,
    /// Its health check, if any.
    pub health: Option<Health>,
    /// The signal that asks it to stop (followed by SIGCONT).
    pub stop_signal: i32,
    /// How long it may take to stop before SIGKILL.
    pub stop_timeout: Duration,
    /// Restart delays.
    pub backoff: Backoff,
    /// Start limit.
    pub start_limit: StartLimit,
    /// stdout.
    pub stdout: Output,
    /// stderr.
    pub stderr: Output,
    /// Whom stop and kill signal.
    pub kill_mode: KillMode,
    /// User, group, nice, oom_score_adj and rlimits.
    pub constraints: Constraints,
}

/// An agent the services may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Its socket.
    pub socket: PathBuf,
}

/// The whole configuration, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The control socket, if set in the file.
    pub control_socket: Option<PathBuf>,
    /// Where logs and the state file go, if set in the file.
    pub state_dir: Option<PathBuf>,
    /// A service's log file is rotated when it would grow past this many bytes.
    pub log_max_size: u64,
    /// How many rotated log files are kept per service (`NAME.log.1` is the newest).
    pub log_keep: u32,
    /// Agents by name.
    pub agents: BTreeMap<String, Agent>,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// Where services' cgroups go.
    pub cgroup: CgroupSetting,
}

/// `[orchestrator] cgroup`: where the services' cgroups are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupSetting {
    /// Below the orchestrator's own cgroup when it is delegated to it (not the root cgroup).
    Auto,
    /// None: services stay in the orchestrator's cgroup; cgroup keys are errors.
    Off,
    /// Below this cgroup (a path under `/sys/fs/cgroup`, starting with `/`).
    Path(PathBuf),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    orchestrator: RawOrchestrator,
    #[serde(default)]
    agents: BTreeMap<String, RawAgent>,
    #[serde(default)]
    services: BTreeMap<Spanned<String>, RawService>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOrchestrator {
    control_socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    log_max_size: Option<Spanned<u64>>,
    log_keep: Option<Spanned<u32>>,
    cgroup: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    socket: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    command: Spanned<Vec<String>>,
    agent: Option<Spanned<String>>,
    restart: Option<Restart>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    env_file: Option<Spanned<toml::Value>>,
    cwd: Option<PathBuf>,
    depends_on: Option<Spanned<toml::Value>>,
    ready: Option<Spanned<toml::Value>>,
    ready_timeout: Option<Spanned<String>>,
    health: Option<Spanned<toml::Value>>,
    stop_signal: Option<Spanned<String>>,
    stop_timeout: Option<Spanned<String>>,
    backoff: Option<RawBackoff>,
    start_limit: Option<RawStartLimit>,
    stdout: Option<Spanned<String>>,
    stderr: Option<Spanned<String>>,
    kill_mode: Option<KillMode>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    nice: Option<Spanned<i64>>,
    oom_score_adj: Option<Spanned<i64>>,
    rlimits: Option<Spanned<BTreeMap<String, toml::Value>>>,
    memory_max: Option<Spanned<toml::Value>>,
    memory_high: Option<Spanned<toml::Value>>,
    memory_low: Option<Spanned<toml::Value>>,
    cpu_max: Option<Spanned<toml::Value>>,
    cpu_weight: Option<Spanned<toml::Value>>,
    io_weight: Option<Spanned<toml::Value>>,
    pids_max: Option<Spanned<toml::Value>>,
    cpus: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    initial: Option<Spanned<String>>,
    max: Option<Spanned<String>>,
    factor: Option<Spanned<f64>>,
    reset_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStartLimit {
    burst: Option<Spanned<u32>>,
    interval: Option<Spanned<String>>,
}

/// Parses a duration: a number with `ms`, `s` or `m` (`100ms`, `1.5s`, `2m`), or what the
/// `humantime` crate reads (`1h`, `1m30s`, `2h 30m`, `1day`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let simple = || -> Result<Duration, String> {
        let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
            (n, 0.001)
        } else if let Some(n) = s.strip_suffix('s') {
            (n, 1.0)
        } else if let Some(n) = s.strip_suffix('m') {
            (n, 60.0)
        } else {
            return Err(format!("duration {s:?} needs a unit: ms, s, m or h (1m30s and 2h work too)"));
        };
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("duration {s:?} is not a number with a unit (100ms, 1.5s, 1m30s, 2h)"))?;
        // try_: a number past u64 seconds (1e20s) is an error, not a panic.
        Duration::try_from_secs_f64(v * scale).map_err(|_| format!("duration {s:?} is out of range"))
    };
    let d = simple().or_else(|e| humantime::parse_duration(s).map_err(|_| e))?;
    if d > Duration::from_secs(1_000_000_000) {
        return Err(format!("duration {s:?} is out of range"));
    }
    Ok(d)
}

/// Parses a signal given as `SIGTERM`, `TERM`, `SIGRTMIN+3` or a number from 1 to 64 (the one
/// signal table is `holden_proto::signal`).
pub fn parse_signal(s: &str) -> Result<i32, String> {
    holden_proto::signal::parse(s)
}

/// `stdout` / `stderr`: `log`, `inherit`, `null`, or a file written as a path (it holds a `/`,
/// so that a misspelt word is an error, not a file of that name).
fn parse_output(s: &Option<Spanned<String>>, which: &str) -> crate::readiness::Located<Output> {
    let Some(v) = s else { return Ok(Output::Log) };
    match v.get_ref().as_str() {
        "log" => Ok(Output::Log),
        "inherit" => Ok(Output::Inherit),
        "null" => Ok(Output::Null),
        path if path.contains('/') && !path.ends_with('/') && !path.contains('\0') => Ok(Output::File(path.into())),
        other => Err((
            v.span(),
            format!("{which} must be \"log\", \"inherit\", \"null\" or a file's path (/var/log/x.log, ./x.log), not {other:?}"),
        )),
    }
}

/// Checks configuration `text`, read from `file` (used in error messages).
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_from(file, text, text, &[])
}

/// Checks `text`, which is `original` interpolated (`anchors` from [`interpolate`]): errors
/// name the line and column in `original`.
pub(crate) fn parse_from(
    file: &Path,
    text: &str,
    original: &str,
    anchors: &[env::Anchor],
) -> Result<Config, ConfigError> {
    let at = |span: Range<usize>, message: String| {
        error_at(file, original, env::original_offset(anchors, span.start), message)
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| at(e.span().unwrap_or(0..0), e.message().to_lowercase()))?;
    let dur = |v: &Option<Spanned<String>>, default: Duration| match v {
        None => Ok(default),
        Some(s) => parse_duration(s.get_ref()).map_err(|m| at(s.span(), m)),
    };
    let mut services = BTreeMap::new();
    for (name, s) in &raw.services {
        let n = name.get_ref();
        if n.is_empty() || n.starts_with('.') || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
            return Err(at(
                name.span(),
                format!(
                    "service name {n:?} may hold only letters, digits, '-', '_', '.' and '@', and not begin with '.'"
                ),
            ));
        }
        if n.len() > MAX_NAME {
            return Err(at(name.span(), format!("service name {n:?} is longer than {MAX_NAME} characters")));
        }
        if s.command.get_ref().first().is_none_or(String::is_empty) {
            return Err(at(s.command.span(), format!("service {n}: the command is empty")));
        }
        if s.command.get_ref().iter().any(|a| a.contains('\0')) {
            return Err(at(s.command.span(), format!("service {n}: an argument holds a NUL byte")));
        }
        if let Some(k) = s.env.keys().chain(s.env.values()).find(|k| k.contains('\0')) {
            return Err(at(name.span(), format!("service {n}: env {k:?} holds a NUL byte")));
        }
        if let Some(k) = s.env.keys().find(|k| k.is_empty() || k.contains('=')) {
            return Err(at(name.span(), format!("service {n}: env name {k:?} is empty or holds '='")));
        }
        // env_file: one path or a list, relative to this file; `env` is applied over them.
        let mut env = BTreeMap::new();
        if let Some(f) = &s.env_file {
            let paths: Option<Vec<&str>> = match f.get_ref() {
                toml::Value::String(p) => Some(vec![p.as_str()]),
                toml::Value::Array(a) => a.iter().map(toml::Value::as_str).collect(),
                _ => None,
            };
            let paths =
                paths.ok_or_else(|| at(f.span(), format!("service {n}: env_file is a path or a list of paths")))?;
            for p in paths {
                let p = file.parent().unwrap_or(Path::new(".")).join(p);
                env.extend(read_env_file(&p).map_err(|m| at(f.span(), format!("service {n}: {m}")))?);
            }
        }
        env.extend(s.env.clone());
        if let Some(a) = &s.agent {
            if !raw.agents.contains_key(a.get_ref()) {
                return Err(at(a.span(), format!("service {n}: unknown agent {:?}", a.get_ref())));
            }
        }
        let deps = match &s.depends_on {
            None => Vec::new(),
            Some(d) => crate::readiness::depends_on(d.get_ref(), &d.span()).map_err(|(span, m)| at(span, m))?,
        };
        for (d, terms) in &deps {
            let span = || crate::readiness::locate(text, &s.depends_on.as_ref().expect("listed").span(), d);
            let Some((_, dep)) = raw.services.iter().find(|(k, _)| k.get_ref() == d) else {
                return Err(at(span(), format!("service {n}: depends on unknown service {d:?}")));
            };
            if terms.condition == Condition::Completed && dep.restart == Some(Restart::Always) {
                return Err(at(span(), format!("service {n}: {d} has restart = \"always\" and never completes")));
            }
        }
        let stdout = parse_output(&s.stdout, "stdout").map_err(|(span, m)| at(span, format!("service {n}: {m}")))?;
        let stderr = parse_output(&s.stderr, "stderr").map_err(|(span, m)| at(span, format!("service {n}: {m}")))?;
        let captured = stdout == Output::Log || stderr == Output::Log;
        let ready = match &s.ready {
            None => None,
            Some(r) => {
                Some(crate::readiness::ready(r.get_ref(), &r.span(), captured).map_err(|(span, m)| at(span, m))?)
            }
        };
        if let (None, Some(t)) = (&ready, &s.ready_timeout) {
            return Err(at(t.span(), format!("service {n}: ready_timeout needs ready")));
        }
        let health = match &s.health {
            None => None,
            Some(h) => Some(crate::readiness::health(h.get_ref(), &h.span()).map_err(|(span, m)| at(span, m))?),
        };
        let constraints = RawConstraints {
            user: &s.user,
            group: &s.group,
            nice: &s.nice,
            oom_score_adj: &s.oom_score_adj,
            rlimits: &s.rlimits,
            cgroup: [
                ("memory_max", &s.memory_max),
                ("memory_high", &s.memory_high),
                ("memory_low", &s.memory_low),
                ("cpu_max", &s.cpu_max),
                ("cpu_weight", &s.cpu_weight),
                ("io_weight", &s.io_weight),
                ("pids_max", &s.pids_max),
                ("cpus", &s.cpus),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_ref()?)))
            .collect(),
        }
        .check(n)
        .map_err(|(span, m)| at(span, m))?;
        let stop_signal = match &s.stop_signal {
            None => 15,
            Some(sig) => parse_signal(sig.get_ref()).map_err(|m| at(sig.span(), m))?,
        };
        let backoff = match &s.backoff {
            None => Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(30),
                factor: 2.0,
                reset_after: Duration::from_secs(10),
            },
            Some(b) => {
                let factor = match &b.factor {
                    None => 2.0,
                    Some(f) if (1.0..=MAX_FACTOR).contains(f.get_ref()) => *f.get_ref(),
                    Some(f) => return Err(at(f.span(), format!("backoff factor must be from 1.0 to {MAX_FACTOR}"))),
                };
                Backoff {
                    initial: dur(&b.initial, Duration::from_millis(100))?,
                    max: dur(&b.max, Duration::from_secs(30))?,
                    factor,
                    reset_after: dur(&b.reset_after, Duration::from_secs(10))?,
                }
            }
        };
        let start_limit = match &s.start_limit {
            None => StartLimit { burst: 5, interval: Duration::from_secs(60) },
            Some(l) => StartLimit {
                burst: match &l.burst {
                    None => 5,
                    Some(b) if *b.get_ref() > 0 => *b.get_ref(),
                    Some(b) => return Err(at(b.span(), "start_limit burst must be at least 1".into())),
                },
                interval: dur(&l.interval, Duration::from_secs(60))?,
            },
        };
        services.insert(
            n.clone(),
            Service {
                command: s.command.get_ref().clone(),
                agent: s.agent.as_ref().map(|a| a.get_ref().clone()),
                restart: s.restart.unwrap_or(Restart::OnFailure),
                env,
                cwd: s.cwd.clone(),
                depends_on: deps.iter().map(|(d, _)| d.clone()).collect(),
                dependencies: deps.into_iter().collect(),
                ready,
                ready_timeout: match dur(&s.ready_timeout, crate::readiness::DEFAULT_READY_TIMEOUT)? {
                    t if t < Duration::from_millis(10) => {
                        let span = s.ready_timeout.as_ref().map_or(0..0, |t| t.span());
                        return Err(at(span, format!("service {n}: ready_timeout must be at least 10ms")));
                    }
                    t => t,
                },
                health,
                stop_signal,
                stop_timeout: dur(&s.stop_timeout, Duration::from_secs(5))?,
                backoff,
                start_limit,
                stdout,
                stderr,
                // A service with a cgroup is stopped whole by default.
                kill_mode: s.kill_mode.unwrap_or(if constraints.cgroup.is_empty() {
                    KillMode::Process
                } else {
                    KillMode::Cgroup
                }),
                constraints,
            },
        );
    }
    if let Some(cycle) = find_cycle(&services) {
        let (name, s) = raw.services.iter().find(|(k, _)| *k.get_ref() == cycle[0]).expect("a configured service");
        let dep = s.depends_on.as_ref().map_or(name.span(), |d| crate::readiness::locate(text, &d.span(), &cycle[1]));
        return Err(at(dep, format!("dependency cycle: {}", cycle.join(" -> "))));
    }
    let log_max_size = match &raw.orchestrator.log_max_size {
        None => 1024 * 1024,
        Some(v) if *v.get_ref() >= 1024 => *v.get_ref(),
        Some(v) => return Err(at(v.span(), "log_max_size must be at least 1024 bytes".into())),
    };
    let log_keep = match &raw.orchestrator.log_keep {
        None => 3,
        Some(v) if (1..=100).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => return Err(at(v.span(), "log_keep must be from 1 to 100".into())),
    };
    let cgroup = match &raw.orchestrator.cgroup {
        None => CgroupSetting::Auto,
        Some(v) => match v.get_ref().as_str() {
            "auto" => CgroupSetting::Auto,
            "off" => CgroupSetting::Off,
            p if p.trim_end_matches('/').is_empty() => {
                return Err(at(
                    v.span(),
                    "cgroup = \"/\": the root cgroup cannot hold services; name a cgroup below it".into(),
                ))
            }
            p if p.starts_with('/') && !p.split('/').any(|c| c == "..") && !p.contains('\0') => {
                CgroupSetting::Path(p.into())
            }
            _ => return Err(at(v.span(), "cgroup must be \"auto\", \"off\" or an absolute cgroup path".into())),
        },
    };
    if cgroup == CgroupSetting::Off {
        for (name, s) in &services {
            if let Some(l) = s.constraints.cgroup.first() {
                let (span, _) = raw.orchestrator.cgroup.as_ref().map(|v| (v.span(), ())).unwrap_or((0..0, ()));
                return Err(at(
                    span,
                    format!("service {name}: {} needs cgroups, which cgroup = \"off\" disables", l.key),
                ));
            }
            if s.kill_mode == KillMode::Cgroup {
                let span = raw.orchestrator.cgroup.as_ref().map_or(0..0, |v| v.span());
                return Err(at(
                    span,
                    format!("service {name}: kill_mode = \"cgroup\" needs cgroups, which cgroup = \"off\" disables"),
                ));
            }
        }
    }
    Ok(Config {
        control_socket: raw.orchestrator.control_socket,
        state_dir: raw.orchestrator.state_dir,
        log_max_size,
        log_keep,
        agents: raw.agents.into_iter().map(|(k, a)| (k, Agent { socket: a.socket })).collect(),
        services,
        cgroup,
    })
}

#[cfg(test)]
mod tests;
