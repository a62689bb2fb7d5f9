//! Spawning, locally or through an agent, without ever waiting in the loop.
//!
//! A local spawn is `clone` + `exec` (microseconds). A spawn through an agent is an
//! [`InFlight`] call: a non-blocking connection, the call sent, the reply awaited through epoll
//! with a deadline of [`AGENT_TIMEOUT`]. A hung, slow or dead agent delays only its own
//! services. A call whose deadline passes is abandoned but not forgotten: if the agent answers
//! later, the process it started is killed at once, so a late reply never leaves a duplicate.
//!
//! Every process gets `HOLDEN_SPAWN=RUN.N` in its environment (see [`crate::state`]).

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use holden_orchestrator::config::{KillMode, Output, ReadyWhen};
use holden_orchestrator::machine::{Event, Wanted};
use holden_sys::event::{READABLE, WRITABLE};

use crate::exits::Proc;
use crate::ready::Notify;
use crate::state::{self, TAG_VAR};
use crate::supervisor::{say, Supervisor, Target, SPAWN_BUDGET, SPAWN_TIME};

/// How long a spawn through an agent may take before the agent counts as unreachable.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an abandoned call is kept, to kill what a late reply brings.
const ABANDONED_KEEP: Duration = Duration::from_secs(60);
/// The capacity asked for each log pipe, so a service can keep writing for a while when no
/// supervisor reads (after a crash, until the next one takes the pipe back from the holder).
const PIPE_SIZE: usize = 1024 * 1024;

/// A spawn through an agent, in flight.
pub struct InFlight {
    /// The service (for an abandoned call: none, whatever comes is killed).
    service: Option<String>,
    call: holden::PendingSpawn,
    /// The read ends of the service's log pipes, watched once the spawn succeeds.
    pipes: Vec<(&'static str, OwnedFd)>,
    /// Its readiness channel (`notify`).
    notify: Option<Notify>,
    tag: String,
    /// When the call is given up (or, abandoned, forgotten).
    pub(crate) deadline: Instant,
}

/// A spawn's failure as the state machine sees it: unreachable agents are transient.
pub(crate) fn transient(e: &holden::Error) -> bool {
    matches!(
        e,
        holden::Error::Connect { .. }
            | holden::Error::Io(_)
            | holden::Error::Timeout(_)
            | holden::Error::Disconnected
            | holden::Error::Protocol(_)
            | holden::Error::Agent(holden::AgentError::TooManyClients { .. })
    )
}

impl Supervisor {
    /// Starts queued spawns, at most [`SPAWN_BUDGET`] per iteration.
    pub(crate) fn run_spawns(&mut self) {
        if !self.run_recorded && !self.shutting_down {
            // Not one process before the state file names this run (a full disk at start-up):
            // after a crash, an unrecorded run's processes could not be told apart.
            return;
        }
        let mut budget = SPAWN_BUDGET;
        let until = std::time::Instant::now() + SPAWN_TIME;
        // What this iteration takes on; spawns queued meanwhile wait for the next one.
        let mut queue = std::mem::take(&mut self.spawn_queue);
        while let Some(name) = queue.pop_front() {
            let wanted_down = self.services.get(&name).is_none_or(|s| s.m.wanted == Wanted::Down);
            if self.shutting_down || wanted_down {
                // The machine waits in Starting for an answer: the spawn did not happen.
                let error = "stopped before it started".into();
                self.feed(&name, Event::SpawnFailed { error, transient: false });
                continue;
            }
            if budget == 0 || std::time::Instant::now() >= until {
                queue.push_front(name);
                queue.append(&mut self.spawn_queue);
                self.spawn_queue = queue;
                return;
            }
            budget -= 1;
            self.spawn(&name);
        }
    }

    fn spawn(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else { return };
        // A reload's new settings wait for the old process to end; if the service starts again
        // straight away (a restart by hand), they apply now.
        if let Some((cfg, _)) = svc.replacement.take() {
            svc.cfg = cfg;
        }
        let cfg = svc.cfg.clone();
        self.spawn_seq += 1;
        let tag = format!("{}.{}", self.run_id, self.spawn_seq);
        let mut cmd = holden::Command::new(&cfg.command[0]);
        cmd.args(&cfg.command[1..]).envs(&cfg.env).env(TAG_VAR, &tag).stdin(holden::Stdio::null());
        if let Some(cwd) = &cfg.cwd {
            cmd.current_dir(cwd);
        }
        // A session (so a process group) of its own, whatever the kill mode: a terminal's
        // Ctrl-C reaches holden up alone, which stops the services in order.
        cmd.setsid(true);
        if let (None, Some((soft, hard))) = (&cfg.agent, self.child_nofile) {
            cmd.rlimit("nofile", Some(soft), Some(hard));
        }
        let c = &cfg.constraints;
        if let Some(user) = &c.user {
            cmd.user(user);
        }
        if let Some(group) = &c.group {
            cmd.group(group);
        }
        if let Some(nice) = c.nice {
            cmd.nice(nice);
        }
        if let Some(adj) = c.oom_score_adj {
            cmd.oom_score_adj(adj);
        }
        for (resource, (soft, hard)) in &c.rlimits {
            cmd.rlimit(resource, *soft, *hard);
        }
        let mut pipes = Vec::new();
        for (which, out) in [("stdout", &cfg.stdout), ("stderr", &cfg.stderr)] {
            let stdio = match out {
                Output::Inherit => holden::Stdio::Inherit,
                Output::Null => holden::Stdio::Null,
                // O_NONBLOCK: a FIFO nobody reads fails (ENXIO) instead of blocking the loop;
                // the child gets the file blocking, as usual.
                Output::File(path) => match OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(path)
                    .and_then(|f| holden_sys::fd::set_nonblocking(f.as_fd(), false).map(|()| f))
                {
                    Ok(f) => holden::Stdio::from(f),
                    Err(e) => {
                        let error = format!("open {which} file {}: {e}", path.display());
                        return self.feed(name, Event::SpawnFailed { error, transient: false });
                    }
                },
                Output::Log => match std::io::pipe() {
                    Ok((r, w)) => {
                        let _ = holden_sys::fd::set_pipe_size(r.as_fd(), PIPE_SIZE);
                        pipes.push((which, OwnedFd::from(r)));
                        holden::Stdio::from(OwnedFd::from(w))
                    }
                    Err(e) => {
                        let error = format!("pipe for {which}: {e}");
                        return self.feed(name, Event::SpawnFailed { error, transient: false });
                    }
                },
            };
            if which == "stdout" {
                cmd.stdout(stdio);
            } else {
                cmd.stderr(stdio);
            }
        }
        // notify = "fd": the write end goes to the child as that descriptor; the read end is
        // watched once the spawn succeeds. notify = "systemd": a socket of its own, named in
        // NOTIFY_SOCKET.
        let path = cfg.agent.as_ref().map(|a| self.cfg.agents.get(a).map(|a| a.socket.clone()).unwrap_or_default());
        let mut notify = None;
        match cfg.ready {
            Some(ReadyWhen::Fd(number)) => match std::io::pipe() {
                Ok((r, w)) => {
                    cmd.fd(number, OwnedFd::from(w));
                    notify = Some(Notify::Fd(r));
                }
                Err(e) => {
                    let error = format!("pipe for notify = \"fd\": {e}");
                    return self.feed(name, Event::SpawnFailed { error, transient: false });
                }
            },
            Some(ReadyWhen::Systemd) => match self.notify_socket(&tag, path.as_deref()) {
                Ok((n, value)) => {
                    cmd.env("NOTIFY_SOCKET", value);
                    notify = Some(n);
                }
                Err(e) => {
                    let error = format!("socket for notify = \"systemd\": {e}");
                    return self.feed(name, Event::SpawnFailed { error, transient: false });
                }
            },
            _ => {}
        }
        // The service's cgroup: below ours for a local service, below the agent's for an agent
        // service; its limits written before the child joins it.
        let dir = self.service_cgroup(name);
        // What an earlier spawn used (settings change at reload): forgotten, and removed if it
        // is not the one used now.
        let svc = self.services.get_mut(name).expect("present");
        svc.oom_base = 0;
        if let Some(old) = svc.cgroup_dir.take() {
            if !matches!(&dir, Some(Ok(d)) if *d == old) {
                self.retire_cgroup(old);
            }
        }
        if let Some(dir) = dir {
            let prepared =
                dir.and_then(|d| crate::cgroups::prepare(&d, &c.cgroup).map(|fd| (d, fd)).map_err(|e| e.to_string()));
            match prepared {
                Ok((dir, fd)) => {
                    cmd.cgroup(fd);
                    let svc = self.services.get_mut(name).expect("present");
                    svc.oom_base = crate::cgroups::oom_kills(&dir);
                    svc.cgroup_dir = Some(dir);
                }
                Err(e) => {
                    // An agent that is not there yet is retried like any unreachable agent, and
                    // so is a cgroup busy for a moment (a process of the agent's moving).
                    let transient =
                        path.is_some() && (e.starts_with("connect to the agent") || e.contains("resource busy"));
                    let error = format!("cgroup for {name}: {e}");
                    return self.feed(name, Event::SpawnFailed { error, transient });
                }
            }
        }
        let Some(path) = path else {
            let result = cmd.spawn();
            // The pipes' write ends now live only in the child.
            drop(cmd);
            return match result {
                Ok(child) => self.spawned(name, child, pipes, notify, tag),
                Err(e) => self.feed(name, Event::SpawnFailed { error: e.to_string(), transient: false }),
            };
        };
        let exit_stream = *self.exit_stream.get_or_insert_with(|| {
            std::env::var_os("HOLDEN_EXIT_STREAM").is_some_and(|v| v == "1")
                || !holden_sys::process::probe_features().pidfd_info_exit
        });
        let result = cmd.spawn_pending(&path, exit_stream);
        drop(cmd);
        let call = match result {
            Ok(c) => c,
            Err(e) => {
                let transient = transient(&e);
                return self.feed(name, Event::SpawnFailed { error: e.to_string(), transient });
            }
        };
        let token = self.token();
        let interest = match call.interest() {
            holden::Interest::Writable => WRITABLE,
            holden::Interest::Readable => READABLE,
        };
        if let Err(e) = self.epoll.add(&call, token, interest) {
            return self.feed(name, Event::SpawnFailed { error: format!("epoll: {e}"), transient: true });
        }
        let deadline = Instant::now() + AGENT_TIMEOUT;
        let f = InFlight { service: Some(name.into()), call, pipes, notify, tag, deadline };
        self.targets.insert(token, Target::Spawn(f));
        if let Some(svc) = self.services.get_mut(name) {
            svc.in_flight = Some(token);
        }
    }

    /// Where service `name`'s cgroup is (made ready below an agent's), if it needs one.
    pub(crate) fn service_cgroup(&self, name: &str) -> Option<Result<std::path::PathBuf, String>> {
        let cfg = &self.services.get(name)?.cfg;
        if cfg.constraints.cgroup.is_empty() && cfg.kill_mode != KillMode::Cgroup {
            return None;
        }
        match &cfg.agent {
            None => self.cgroups.as_ref().map(|cg| Ok(cg.dir(name))),
            Some(a) => {
                let socket = self.cfg.agents.get(a).map(|a| a.socket.clone()).unwrap_or_default();
                Some(crate::cgroups::agent_service_dir(&socket, name))
            }
        }
    }

    /// Service `name`'s cgroup directory, if it has one that exists.
    pub(crate) fn cgroup_dir_of(&self, name: &str) -> Option<std::path::PathBuf> {
        self.service_cgroup(name)?.ok().filter(|d| d.is_dir())
    }

    /// An agent call is ready: move it on.
    pub(crate) fn on_spawn_ready(&mut self, token: u64) {
        let Some(Target::Spawn(f)) = self.targets.get_mut(&token) else { return };
        let result = f.call.advance();
        if let Ok(None) = result {
            let interest = match f.call.interest() {
                holden::Interest::Writable => WRITABLE,
                holden::Interest::Readable => READABLE,
            };
            let _ = self.epoll.modify(&f.call, token, interest);
            return;
        }
        let Some(Target::Spawn(f)) = self.targets.remove(&token) else { return };
        let _ = self.epoll.delete(&f.call);
        let InFlight { service, pipes, notify, tag, .. } = f;
        let Some(name) = service else {
            self.abandoned_calls -= 1;
            // Abandoned: whatever the agent started late is not wanted.
            if let Ok(Some(child)) = result {
                say(&format!("a late reply from an agent brought pid {:?}; killing it", child.pid()));
                let _ = holden_sys::process::pidfd_send_signal(child.pidfd(), libc::SIGKILL);
            }
            return;
        };
        if let Some(svc) = self.services.get_mut(&name) {
            svc.in_flight = None;
        }
        match result {
            Ok(Some(child)) => self.spawned(&name, child, pipes, notify, tag),
            Ok(None) => unreachable!("handled above"),
            Err(e) => {
                let transient = transient(&e);
                self.feed(&name, Event::SpawnFailed { error: e.to_string(), transient });
            }
        }
    }

    /// Gives up agent calls past their deadline (the service retries), and forgets abandoned
    /// calls kept long enough.
    pub(crate) fn expire_spawns(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .targets
            .iter()
            .filter(|(_, t)| matches!(t, Target::Spawn(f) if f.deadline <= now))
            .map(|(k, _)| *k)
            .collect();
        for token in due {
            let Some(Target::Spawn(f)) = self.targets.get_mut(&token) else { continue };
            match f.service.take() {
                Some(name) => {
                    self.abandoned_calls += 1;
                    f.deadline = now + ABANDONED_KEEP;
                    f.pipes.clear();
                    f.notify = None;
                    if let Some(svc) = self.services.get_mut(&name) {
                        svc.in_flight = None;
                    }
                    let agent = self.services.get(&name).and_then(|s| s.cfg.agent.clone()).unwrap_or_default();
                    let error = format!("agent {agent} did not answer within {AGENT_TIMEOUT:?}");
                    self.feed(&name, Event::SpawnFailed { error, transient: true });
                }
                None => {
                    self.abandoned_calls -= 1;
                    if let Some(Target::Spawn(mut f)) = self.targets.remove(&token) {
                        let _ = self.epoll.delete(&f.call);
                        // A reply already here would otherwise go unread, its process unkilled.
                        if let Ok(Some(child)) = f.call.advance() {
                            let _ = holden_sys::process::pidfd_send_signal(child.pidfd(), libc::SIGKILL);
                        }
                    }
                }
            }
        }
    }

    /// A spawn succeeded: record the process (the state file is written at the end of this
    /// iteration, before the loop waits again), watch it and its pipes.
    fn spawned(
        &mut self,
        name: &str,
        child: holden::Child,
        pipes: Vec<(&'static str, OwnedFd)>,
        notify: Option<Notify>,
        tag: String,
    ) {
        let pid = child.pid().unwrap_or_else(|| child.spawner_pid());
        let Some(svc) = self.services.get_mut(name) else { return };
        // Verified, not assumed: the process is in its cgroup (it joined before exec).
        // (Only for a service with a cgroup: /proc is not read for the others.)
        let got = svc.cgroup_dir.as_ref().and_then(|_| child.pid().and_then(crate::cgroups::cgroup_of));
        if let (Some(want), Some(got)) = (&svc.cgroup_dir, got) {
            if !got.starts_with(want) {
                say(&format!("{name}: pid {pid} is in {}, not in {}: killed", got.display(), want.display()));
                let _ = holden_sys::process::pidfd_send_signal(child.pidfd(), libc::SIGKILL);
            }
        }
        svc.identity = state::identity(child.pidfd(), pid).ok();
        // A pid from the agent's pid namespace (the process is not visible here) says nothing.
        svc.start_time = child.pid().and_then(crate::procfs::start_time);
        svc.tag = Some(tag.clone());
        svc.proc = Some(Proc::Child(child));
        self.state_dirty = true;
        if let Err(e) = self.watch_pidfd(name) {
            say(&format!("{name}: cannot watch pidfd: {e}"));
        }
        for (which, fd) in pipes {
            if let Some(h) = &mut self.holder {
                h.store(&format!("{name}/{which}/{tag}"), fd.as_fd());
            }
            self.watch_pipe(name, which, fd, Some(format!("{name}/{which}/{tag}")));
        }
        self.feed(name, Event::Spawned { pid });
        if let Some(r) = notify {
            // The holder keeps a copy of a readiness pipe too: a crash before the newline
            // leaves the writer a reader (no SIGPIPE), and the next run watches it again.
            let key = match (&r, &mut self.holder) {
                (Notify::Fd(p), Some(h)) => {
                    let key = format!("{name}/notify/{tag}");
                    h.store(&key, p.as_fd());
                    Some(key)
                }
                _ => None,
            };
            self.watch_notify(name, r, key);
        }
    }
}
