//! Services' cgroups (cgroup v2), for local services and agent services.
//!
//! Where: `[orchestrator] cgroup`. `"auto"` (the default) uses the orchestrator's own cgroup
//! when it is delegated to it (not the root cgroup; systemd's `Delegate=yes`): the orchestrator
//! moves itself into the leaf `supervisor` so that controllers can be enabled below. A path uses
//! that cgroup (created if missing). Either way each service gets `BASE/services/NAME`, with
//! the controllers the base offers enabled, and its limits written before it is spawned into it:
//! the child joins its cgroup before it runs anything (`holden::Command::cgroup`).
//!
//! Cgroups are set up only when a service asks for one (a cgroup key or `kill_mode =
//! "cgroup"`). Where cgroup v2 or a controller is missing (a cgroup v1 or hybrid host, the root
//! cgroup), such a service is an error at start-up naming the key and what is missing.
//!
//! An agent service's cgroup is made inside the agent's own cgroup (its container's), found
//! through the agent's pid (the socket's peer credentials) and `/proc/PID/cgroup`: the agent,
//! and whatever else runs there, moves into the leaf `agent`, and the service gets
//! `AGENT_CGROUP/services/NAME`, whose descriptor travels in `Spawn` (`cgroup`). The agent's
//! child joins it before exec; the agent keeps no state.
//!
//! Cgroups of removed services are removed, and at shutdown `services/` and everything below it
//! (and a base this supervisor created).

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use holden_orchestrator::config::{CgroupSetting, Config, KillMode};

use crate::Error;

/// Where cgroup v2 is mounted.
const ROOT: &str = "/sys/fs/cgroup";
/// The controllers enabled for services, where the base offers them.
const CONTROLLERS: [&str; 5] = ["cpu", "cpuset", "io", "memory", "pids"];

/// The services' cgroups.
#[derive(Debug)]
pub(crate) struct Cgroups {
    /// `BASE/services`.
    services: PathBuf,
    /// The base and the topmost directory made for it, if this supervisor made it (removed
    /// at shutdown, with the directories between).
    created_base: Option<(PathBuf, PathBuf)>,
    /// The controllers enabled for services.
    controllers: Vec<&'static str>,
}

fn err(what: String) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Setup { what, source }
}

fn cgroup_error(message: String) -> Error {
    Error::Cgroup(message)
}

/// This process's cgroup v2 path (`/` for the root), if `/sys/fs/cgroup` is cgroup v2.
fn own_cgroup() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    if !mounts.lines().any(|l| l.split(' ').nth(1) == Some(ROOT) && l.split(' ').nth(2) == Some("cgroup2")) {
        return None;
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    own.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_owned)
}

fn enable(dir: &Path, controllers: &[&str]) -> io::Result<()> {
    for c in controllers {
        std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"))?;
    }
    Ok(())
}

fn offered(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

impl Cgroups {
    /// Sets up the services' cgroups as `cfg` asks; `None` where they are not used.
    pub(crate) fn setup(cfg: &Config) -> Result<Option<Cgroups>, Error> {
        // The first key that needs cgroups, for the error message.
        let needed = cfg.services.iter().filter(|(_, s)| s.agent.is_none()).find_map(|(name, s)| {
            s.constraints.cgroup.first().map(|l| format!("service {name}: {}", l.key)).or_else(|| {
                (s.kill_mode == KillMode::Cgroup).then(|| format!("service {name}: kill_mode = \"cgroup\""))
            })
        });
        let missing = |why: &str| match &needed {
            Some(what) => Err(cgroup_error(format!("{what} needs cgroups: {why}"))),
            None => Ok(None),
        };
        // Agent services' cgroups are made at spawn, inside their agents' cgroups: cgroup v2 is
        // all that can be checked here.
        let agent_needs = cfg.services.iter().filter(|(_, s)| s.agent.is_some()).find_map(|(name, s)| {
            let key = s.constraints.cgroup.first().map(|l| l.key);
            key.or((s.kill_mode == KillMode::Cgroup).then_some("kill_mode = \"cgroup\""))
                .map(|k| format!("service {name}: {k}"))
        });
        if let (Some(what), None) = (&agent_needs, own_cgroup()) {
            return Err(cgroup_error(format!(
                "{what} needs cgroups: /sys/fs/cgroup is not cgroup v2 (a cgroup v1 or hybrid system)"
            )));
        }
        if cfg.cgroup == CgroupSetting::Off || needed.is_none() {
            // Nothing asks for a cgroup: the orchestrator's own is left as it is.
            return Ok(None);
        }
        let Some(own) = own_cgroup() else {
            return missing("/sys/fs/cgroup is not cgroup v2 (a cgroup v1 or hybrid system)");
        };
        let (base, created_base) = match &cfg.cgroup {
            CgroupSetting::Off => unreachable!("handled above"),
            CgroupSetting::Auto => {
                if own == "/" {
                    return missing(
                        "the orchestrator runs in the root cgroup; run it in a delegated cgroup (systemd's \
                         Delegate=yes) or set [orchestrator] cgroup to a path",
                    );
                }
                let mut base = PathBuf::from(format!("{ROOT}{own}"));
                // Already in the leaf an earlier run made: the base is its parent.
                let delegating = |p: &Path| {
                    !std::fs::read_to_string(p.join("cgroup.subtree_control")).unwrap_or_default().trim().is_empty()
                };
                if base.file_name().is_some_and(|n| n == "supervisor") && base.parent().is_some_and(delegating) {
                    base.pop();
                }
                // Move into a leaf, so that controllers can be enabled for the base's children.
                let leaf = base.join("supervisor");
                if let Err(e) = std::fs::create_dir_all(&leaf)
                    .and_then(|()| std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string()))
                {
                    return missing(&format!("its cgroup {} is not delegated to it ({e})", base.display()));
                }
                // Whatever else is there (the fd holder, processes of an earlier run) too.
                move_all(&base, &leaf);
                (base, None)
            }
            CgroupSetting::Path(p) => {
                let base = Path::new(ROOT).join(p.strip_prefix("/").unwrap_or(p));
                // The topmost directory this makes: it and what is below go at shutdown.
                let created =
                    base.ancestors().filter(|a| a.starts_with(ROOT) && !a.exists()).last().map(Path::to_path_buf);
                // Every ancestor passes the controllers down (as far as it can), each made in
                // turn below the one that offers them.
                let mut dir = PathBuf::from(ROOT);
                for part in p.components().skip(1) {
                    let offer: Vec<String> = offered(&dir);
                    let wanted: Vec<&str> =
                        CONTROLLERS.iter().copied().filter(|c| offer.iter().any(|o| o == c)).collect();
                    let _ = enable(&dir, &wanted);
                    dir.push(part);
                    match std::fs::create_dir(&dir) {
                        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                            return Err(err(format!("create cgroup {}", dir.display()))(e));
                        }
                        _ => {}
                    }
                }
                (base.clone(), created.map(|top| (base, top)))
            }
        };
        let offer = offered(&base);
        let wanted: Vec<&'static str> = CONTROLLERS.iter().copied().filter(|c| offer.iter().any(|o| o == c)).collect();
        enable(&base, &wanted).map_err(err(format!("enable controllers in {}", base.display())))?;
        let services = base.join("services");
        std::fs::create_dir_all(&services).map_err(err(format!("create cgroup {}", services.display())))?;
        enable(&services, &wanted).map_err(err(format!("enable controllers in {}", services.display())))?;
        let cgroups = Cgroups { services, created_base, controllers: wanted };
        cgroups.check(cfg).map_err(cgroup_error)?;
        Ok(Some(cgroups))
    }

    /// Whether every local service's limits have their controllers here (at start-up and at
    /// reload).
    pub(crate) fn check(&self, cfg: &Config) -> Result<(), String> {
        for (name, s) in cfg.services.iter().filter(|(_, s)| s.agent.is_none()) {
            if let Some(l) = s.constraints.cgroup.iter().find(|l| !self.controllers.contains(&l.controller)) {
                let base = self.services.parent().unwrap_or(&self.services);
                return Err(format!(
                    "service {name}: {} needs the {} controller, which {} does not offer",
                    l.key,
                    l.controller,
                    base.display()
                ));
            }
        }
        Ok(())
    }

    /// Service `name`'s cgroup directory (a local service).
    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        self.services.join(name)
    }

    /// At shutdown: removes every service's cgroup, `services/`, and a base this supervisor
    /// created. What is still populated is killed first.
    pub(crate) fn teardown(&self) {
        let names: Vec<String> = std::fs::read_dir(&self.services)
            .map(|d| {
                d.flatten().filter(|e| e.path().is_dir()).filter_map(|e| e.file_name().into_string().ok()).collect()
            })
            .unwrap_or_default();
        remove_all(names.iter().map(|n| self.dir(n)));
        let _ = std::fs::remove_dir(&self.services);
        if let Some((base, top)) = &self.created_base {
            for dir in base.ancestors().take_while(|d| d.starts_with(top)) {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// Creates (or reuses) a service's cgroup `dir`, writes its limits, and opens it for
/// [`holden::Command::cgroup`].
pub(crate) fn prepare(dir: &Path, limits: &[holden_orchestrator::config::CgroupLimit]) -> io::Result<OwnedFd> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    // A limit no longer configured goes back to its default (a reused cgroup keeps old values).
    for (file, default) in DEFAULTS {
        if !limits.iter().any(|l| l.file == file) && dir.join(file).exists() {
            let _ = std::fs::write(dir.join(file), default);
        }
    }
    for l in limits {
        std::fs::write(dir.join(l.file), &l.value)
            .map_err(|e| io::Error::new(e.kind(), format!("{} = {:?} ({}): {e}", l.key, l.value, l.file)))?;
    }
    // The child joins through cgroup.procs: a file, never the directory, which would let the
    // receiver of the descriptor (an agent in a container) reach the rest of the filesystem.
    Ok(std::fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs"))?.into())
}

/// The default of each limit file, restored when its key is removed.
const DEFAULTS: [(&str, &str); 8] = [
    ("memory.max", "max"),
    ("memory.high", "max"),
    ("memory.low", "0"),
    ("cpu.max", "max 100000"),
    ("cpu.weight", "100"),
    ("io.weight", "default 100"),
    ("pids.max", "max"),
    ("cpuset.cpus", ""),
];

/// How many times the OOM killer has killed in cgroup `dir`.
pub(crate) fn oom_kills(dir: &Path) -> u64 {
    let events = std::fs::read_to_string(dir.join("memory.events")).unwrap_or_default();
    events.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// Whether any process is left in cgroup `dir`.
pub(crate) fn populated(dir: &Path) -> bool {
    let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
    events.lines().any(|l| l == "populated 1")
}

/// SIGKILLs every process in cgroup `dir`: `cgroup.kill` (Linux 5.14), else each process of
/// `cgroup.procs` through a pidfd.
pub(crate) fn kill(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
        if let Ok(fd) = holden_sys::process::pidfd_open(pid) {
            let _ = holden_sys::process::pidfd_send_signal(&fd, libc::SIGKILL);
        }
    }
}

/// Removes cgroup `dir` if it is empty; `false` if it is still in use.
pub(crate) fn remove(dir: &Path) -> bool {
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// Kills what is left in each of `dirs` and removes them (at shutdown: a killed process leaves
/// its cgroup within moments).
pub(crate) fn remove_all(dirs: impl Iterator<Item = PathBuf>) {
    let dirs: Vec<PathBuf> = dirs.collect();
    for d in dirs.iter().filter(|d| populated(d)) {
        kill(d);
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    for d in &dirs {
        while !remove(d) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// The cgroup for agent service `name`, inside the cgroup of the agent listening on `socket`:
/// `AGENT_CGROUP/services/NAME`. The first time, the agent's cgroup is made able to hold it:
/// its processes move into the leaf `agent` and the controllers are enabled below.
pub(crate) fn agent_service_dir(socket: &Path, name: &str) -> Result<PathBuf, String> {
    if own_cgroup().is_none() {
        return Err("/sys/fs/cgroup is not cgroup v2 (a cgroup v1 or hybrid system)".into());
    }
    let conn = holden_sys::socket::connect_nonblocking(socket).map_err(|e| format!("connect to the agent: {e}"))?;
    let pid = holden_sys::socket::peer_cred(&conn).map_err(|e| format!("the agent's credentials: {e}"))?.pid;
    drop(conn);
    if pid <= 0 {
        return Err("the agent's pid is not visible in this pid namespace".into());
    }
    // The listener must be the agent itself: under socket activation it is the service manager
    // (PID 1), whose cgroup is not the agent's.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let arg1 = argv.split(|&b| b == 0).nth(1).unwrap_or_default();
    let is_agent = match exe.file_name().and_then(|n| n.to_str()) {
        Some("holden-agent" | "agent") => true,
        Some("holden") => arg1 == b"agent",
        _ => false,
    };
    if !is_agent {
        return Err(format!(
            "the agent's socket is held by pid {pid} ({}), not by the agent (socket activation?): its cgroup \
             is not the agent's",
            exe.display()
        ));
    }
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| format!("/proc/{pid}/cgroup: {e}"))?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::")).ok_or("the agent is in no cgroup v2")?;
    let mut base = PathBuf::from(format!("{ROOT}{path}"));
    if base.file_name().is_some_and(|n| n == "agent") && base.parent().is_some_and(|p| p.join("services").is_dir()) {
        base.pop();
    }
    let services = base.join("services");
    if !services.is_dir() {
        if base == Path::new(ROOT) {
            return Err("the agent runs in the root cgroup; give it a cgroup of its own".into());
        }
        let leaf = base.join("agent");
        std::fs::create_dir_all(&leaf).map_err(|e| format!("create {}: {e}", leaf.display()))?;
        move_all(&base, &leaf);
        let offer = offered(&base);
        let wanted: Vec<&str> = CONTROLLERS.iter().copied().filter(|c| offer.iter().any(|o| o == c)).collect();
        enable(&base, &wanted).map_err(|e| format!("enable controllers in {}: {e}", base.display()))?;
        std::fs::create_dir_all(&services).map_err(|e| format!("create {}: {e}", services.display()))?;
        enable(&services, &wanted).map_err(|e| format!("enable controllers in {}: {e}", services.display()))?;
    }
    Ok(services.join(name))
}

/// Moves every process of cgroup `from` into `to` (one that has just ended is gone: fine).
fn move_all(from: &Path, to: &Path) {
    let procs = std::fs::read_to_string(from.join("cgroup.procs")).unwrap_or_default();
    for p in procs.lines() {
        let _ = std::fs::write(to.join("cgroup.procs"), p);
    }
}

/// The cgroup `pid` is in, as a directory under `/sys/fs/cgroup`.
pub(crate) fn cgroup_of(pid: i32) -> Option<PathBuf> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    own.lines().find_map(|l| l.strip_prefix("0::")).map(|p| PathBuf::from(format!("{ROOT}{p}")))
}

/// What a service's cgroup says of its use, for `Status` (the other fields empty).
pub(crate) fn usage(svc: &crate::supervisor::Svc) -> holden_orchestrator::control::ServiceStatus {
    let mut st = holden_orchestrator::control::ServiceStatus::default();
    let Some(dir) = svc.cgroup_dir.as_deref().filter(|d| d.is_dir()) else { return st };
    let number = |file: &str| std::fs::read_to_string(dir.join(file)).ok()?.trim().parse::<u64>().ok();
    st.memory_bytes = number("memory.current");
    st.pids = number("pids.current");
    st.oom_kills = Some(oom_kills(dir));
    let stat = std::fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
    st.cpu_usec = stat.lines().find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok());
    if let Some(used) = st.cpu_usec {
        let now = std::time::Instant::now();
        if let Some((then, before)) = svc.cpu_sample.replace(Some((now, used))) {
            let wall = now.duration_since(then).as_micros() as u64;
            st.cpu_percent = (used.saturating_sub(before) * 100).checked_div(wall).map(|p| p as u32);
        }
    }
    st
}
