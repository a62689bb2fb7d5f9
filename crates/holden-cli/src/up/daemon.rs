//! The supervisor's event loop and everything it carries out: spawning (locally or through an
//! agent), signalling, reading exits, logs, the control socket, the state file, reload and
//! shutdown.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use holden_orchestrator::config::{self, Config, KillMode, Output};
use holden_orchestrator::control::{self, ControlError, ReloadReply, Request, ServiceStatus, StateChange, INTERFACE};
use holden_orchestrator::machine::{self, Action, Event, Exit, Policy, State, Wanted};
use holden_sys::event::{Epoll, SignalFd, READABLE, WRITABLE};
use holden_sys::process;
use holden_sys::socket::{self, PeerCred};

use super::conn::{Conn, Follow, Input};
use super::logs::{LogFile, Pipe};
use super::notify::Notifier;
use super::state::{self, Entry, Identity, StateFile};
use super::Options;

const SIGNALS: u64 = 0;
const LISTENER: u64 = 1;

/// How long a spawn through an agent may take before the agent counts as unreachable.
const AGENT_TIMEOUT: Duration = Duration::from_secs(2);
/// After a pidfd reports an exit, how long to wait for the exit status to become readable
/// (an agent reaps its children within microseconds; an adopted process's parent may not).
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(1);

/// Who may call the control methods that change something or read logs: root, the
/// orchestrator's own uid, and these.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

impl Access {
    fn allows(&self, c: &PeerCred) -> bool {
        c.uid == 0
            || c.uid == holden_sys::fd::geteuid()
            || self.uids.contains(&c.uid)
            || self.gids.contains(&c.gid)
            || c.groups.iter().any(|g| self.gids.contains(g))
    }
}

/// A running process: spawned by this orchestrator, or adopted from a predecessor.
enum Proc {
    Child(holden::Child),
    Adopted { pidfd: OwnedFd },
}

impl Proc {
    fn pidfd(&self) -> BorrowedFd<'_> {
        match self {
            Proc::Child(c) => c.pidfd(),
            Proc::Adopted { pidfd, .. } => pidfd.as_fd(),
        }
    }

    /// How it ended, once the kernel (or the agent) can say.
    fn try_exit(&mut self) -> Option<Exit> {
        match self {
            Proc::Child(c) => match c.try_wait() {
                Ok(Some(s)) => Some(match (s.code(), s.signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(sig)) => Exit::Signal(sig),
                    _ => Exit::Unknown,
                }),
                Ok(None) => None,
                Err(_) => Some(Exit::Unknown),
            },
            Proc::Adopted { pidfd, .. } => {
                if let Ok(Some(e)) = process::wait_pidfd(pidfd.as_fd(), true) {
                    return Some(exit_of(e));
                }
                match process::pidfd_exit_info(pidfd.as_fd()) {
                    Ok(Some(e)) => Some(exit_of(e)),
                    Ok(None) => None,
                    Err(_) => Some(Exit::Unknown),
                }
            }
        }
    }
}

fn exit_of(e: process::Exit) -> Exit {
    match e {
        process::Exit::Exited(c) => Exit::Code(c),
        process::Exit::Signaled { signal, .. } => Exit::Signal(signal),
    }
}

fn exit_text(e: Exit) -> String {
    match e {
        Exit::Code(c) => format!("code {c}"),
        Exit::Signal(s) => format!("signal {}", holden_cli::signal_name(s)),
        Exit::Unknown => "unknown".into(),
    }
}

/// One supervised service.
struct Svc {
    cfg: config::Service,
    m: machine::Service,
    proc: Option<Proc>,
    /// The epoll token of the process's pidfd, while it is watched.
    pidfd_token: Option<u64>,
    identity: Option<Identity>,
    /// While an exit status is awaited: when to look again, the pause, and when to give up.
    exit_check: Option<(Instant, Duration, Instant)>,
    log: Option<LogFile>,
    /// Settings from a reload, applied once the old process has stopped; then started again
    /// if the flag says so.
    replacement: Option<(config::Service, bool)>,
    /// Removed by a reload: dropped once stopped.
    removing: bool,
}

impl Svc {
    fn new(cfg: config::Service, now: Instant) -> Svc {
        Svc {
            cfg,
            m: machine::Service::new(now),
            proc: None,
            pidfd_token: None,
            identity: None,
            exit_check: None,
            log: None,
            replacement: None,
            removing: false,
        }
    }

    fn policy(&self) -> Policy {
        Policy {
            restart: self.cfg.restart,
            backoff: self.cfg.backoff,
            start_limit: self.cfg.start_limit,
            stop_signal: self.cfg.stop_signal,
            stop_timeout: self.cfg.stop_timeout,
        }
    }

    fn logs_captured(cfg: &config::Service) -> bool {
        cfg.stdout == Output::Log || cfg.stderr == Output::Log
    }

    /// Settled: no process and no spawn in flight.
    fn idle(&self) -> bool {
        self.proc.is_none() && self.m.state != State::Starting
    }
}

enum Target {
    Pidfd(String),
    Pipe(Pipe),
    Conn(Conn),
}

struct Daemon {
    config_path: PathBuf,
    cfg: Config,
    services: BTreeMap<String, Svc>,
    order: Vec<String>,
    agents: HashMap<String, holden::Agent>,
    epoll: Epoll,
    signals: SignalFd,
    listener: holden_agent::listen::Listening,
    access: Access,
    targets: HashMap<u64, Target>,
    /// The tokens of the connections that follow logs or events.
    followers: HashSet<u64>,
    next_token: u64,
    log_dir: PathBuf,
    state_file: StateFile,
    recorded: Vec<Entry>,
    notify: Notifier,
    next_watchdog: Option<Instant>,
    shutting_down: bool,
    /// A pid changed since the state file was last written.
    state_dirty: bool,
    /// `advance_shutdown` is running.
    in_shutdown_pass: bool,
    /// The descriptor limit local services get (the one this process started with).
    child_nofile: Option<(u64, u64)>,
}

pub fn run(o: Options) -> ExitCode {
    match Daemon::new(o).and_then(|mut d| d.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holden up: {e}");
            ExitCode::from(1)
        }
    }
}

/// Prints one line on stdout. A stdout that fails (a closed pipe, a full disk) must not stop
/// supervision, so errors are ignored, where `println!` would panic.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{} {line}", holden_cli::timestamp(SystemTime::now()));
}

impl Daemon {
    fn new(o: Options) -> Result<Daemon, String> {
        let cfg = config::load(&o.config).map_err(|e| e.to_string())?;
        let socket_path = super::control_socket_path(o.control_socket.as_deref(), cfg.control_socket.as_deref());
        let state_dir = super::state_dir(cfg.state_dir.as_deref());
        let log_dir = state_dir.join("logs");
        std::fs::create_dir_all(&log_dir).map_err(|e| format!("create {}: {e}", log_dir.display()))?;
        // Blocked before anything can start a thread or a child, so no signal is lost.
        let signals = SignalFd::new(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD])
            .map_err(|e| format!("signalfd: {e}"))?;
        let listener = holden_agent::listen::bind(&socket_path, o.socket_mode, None).map_err(|e| match e {
            holden_agent::listen::ListenError::AlreadyServed(p) => {
                format!("another orchestrator is already listening on {}", p.display())
            }
            e => e.to_string(),
        })?;
        listener.listener.set_nonblocking(true).map_err(|e| format!("control socket: {e}"))?;
        // Orphans of services (daemonising children) come to us to be reaped, not to PID 1.
        let _ = process::set_child_subreaper();
        // Each service holds a pidfd and up to two log pipes here: raise the soft limit on
        // descriptors to the hard one. Local services get the limit we started with.
        let nofile = process::rlimit_resource("nofile").expect("nofile is a resource");
        let mut child_nofile = None;
        if let Ok((soft, hard)) = holden_sys::fd::getrlimit(nofile) {
            if soft < hard && holden_sys::fd::setrlimit(nofile, hard, hard).is_ok() {
                child_nofile = Some((soft, hard));
            }
        }
        let epoll = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
        epoll.add(&signals, SIGNALS, READABLE).map_err(|e| format!("epoll: {e}"))?;
        epoll.add(&listener.listener, LISTENER, READABLE).map_err(|e| format!("epoll: {e}"))?;
        let order = config::start_order(&cfg.services);
        let now = Instant::now();
        let services = cfg.services.iter().map(|(name, s)| (name.clone(), Svc::new(s.clone(), now))).collect();
        Ok(Daemon {
            config_path: o.config,
            cfg,
            services,
            order,
            agents: HashMap::new(),
            epoll,
            signals,
            listener,
            access: o.access,
            targets: HashMap::new(),
            followers: HashSet::new(),
            next_token: 2,
            log_dir,
            state_file: StateFile::new(&state_dir),
            recorded: Vec::new(),
            notify: Notifier::from_env(),
            next_watchdog: None,
            shutting_down: false,
            state_dirty: false,
            in_shutdown_pass: false,
            child_nofile,
        })
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn run(&mut self) -> Result<(), String> {
        say(&format!(
            "holden up: {} services from {}, control socket {}",
            self.services.len(),
            self.config_path.display(),
            self.listener.owned_path.as_deref().unwrap_or(Path::new("?")).display()
        ));
        self.adopt();
        for name in self.order.clone() {
            if self.services[&name].m.state == State::Stopped {
                self.feed(&name, Event::Start);
            }
        }
        self.write_state();
        self.notify.send(&format!("READY=1\nSTATUS={}", self.summary()));
        self.next_watchdog = self.notify.watchdog.map(|w| Instant::now() + w);
        let mut events = Vec::new();
        loop {
            if self.shutting_down && self.services.values().all(Svc::idle) {
                break;
            }
            let timeout = self.next_deadline().map(|d| d.saturating_duration_since(Instant::now()));
            events.clear();
            self.epoll.wait(timeout, &mut events).map_err(|e| format!("epoll_wait: {e}"))?;
            let mut sigchld = false;
            for ev in &events {
                match ev.token {
                    SIGNALS => sigchld |= self.on_signals(),
                    LISTENER => self.accept(),
                    t => self.on_ready(t, ev.events),
                }
            }
            self.fire_timers();
            if sigchld {
                self.reap();
            }
            if self.state_dirty {
                self.write_state();
            }
        }
        self.end_orphans();
        self.notify.send("STATUS=stopped");
        self.state_file.remove();
        say("holden up: every service is down; exiting");
        Ok(())
    }

    /// At shutdown: processes that services left behind and that were re-parented to this
    /// subreaper (a shell's child, a daemonised helper) get SIGTERM, then SIGKILL after 2 s,
    /// and are reaped, so that nothing outlives `holden up`.
    fn end_orphans(&mut self) {
        let me = std::process::id() as i32;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut sig = libc::SIGTERM;
        loop {
            while let Ok(Some(_)) = process::reap_any() {}
            let left = holden_cli::children_of(me);
            if left.is_empty() {
                return;
            }
            if sig == libc::SIGTERM {
                say(&format!("ending {} processes that services left behind: {left:?}", left.len()));
            }
            for pid in &left {
                // Our own children: their pids cannot be reused before we reap them.
                if let Ok(fd) = process::pidfd_open(*pid) {
                    let _ = process::pidfd_send_signal(&fd, sig);
                    if sig == libc::SIGTERM {
                        let _ = process::pidfd_send_signal(&fd, libc::SIGCONT);
                    }
                }
            }
            if Instant::now() >= deadline {
                sig = libc::SIGKILL;
            } else {
                sig = 0;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The one-line summary used for systemd's STATUS=.
    fn summary(&self) -> String {
        let count = |s: State| self.services.values().filter(|v| v.m.state == s).count();
        format!(
            "{} services: {} running, {} backing off, {} failed",
            self.services.len(),
            count(State::Running),
            count(State::BackingOff),
            count(State::Failed)
        )
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.services
            .values()
            .flat_map(|s| [s.m.deadline, s.exit_check.map(|c| c.0)])
            .flatten()
            .chain(self.next_watchdog)
            .min()
    }

    // ---- events in -------------------------------------------------------------------------

    /// Returns whether SIGCHLD arrived.
    fn on_signals(&mut self) -> bool {
        let mut sigchld = false;
        while let Ok(Some(sig)) = self.signals.read() {
            match sig {
                libc::SIGCHLD => sigchld = true,
                libc::SIGHUP => match self.reload() {
                    Ok(r) => {
                        say(&format!("reloaded: added {:?}, removed {:?}, changed {:?}", r.added, r.removed, r.changed))
                    }
                    Err(e) => say(&format!("reload: {e}")),
                },
                _ if self.shutting_down => {
                    say("second stop signal: killing what is left");
                    for name in self.order.clone() {
                        self.signal(&name, libc::SIGKILL);
                    }
                }
                _ => {
                    say(&format!("{}: stopping every service", holden_cli::signal_name(sig)));
                    self.shutting_down = true;
                    self.notify.send("STOPPING=1");
                    self.advance_shutdown();
                }
            }
        }
        sigchld
    }

    fn on_ready(&mut self, token: u64, events: u32) {
        match self.targets.get(&token) {
            Some(Target::Pidfd(name)) => {
                let name = name.clone();
                // Level-triggered and readable for good: watched no more.
                self.unwatch_pidfd(&name);
                self.check_exit(&name);
            }
            Some(Target::Pipe(_)) => self.on_pipe(token),
            Some(Target::Conn(_)) => self.on_conn(token, events),
            None => {}
        }
    }

    /// Fires due timers: backoff ends, stop deadlines, exit-status re-reads, the watchdog.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.m.deadline.is_some_and(|d| d <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.feed(&name, Event::Timer);
        }
        let checks: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.exit_check.is_some_and(|c| c.0 <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in checks {
            self.check_exit(&name);
        }
        if let (Some(at), Some(every)) = (self.next_watchdog, self.notify.watchdog) {
            if at <= now {
                self.notify.send("WATCHDOG=1");
                self.next_watchdog = Some(now + every);
            }
        }
    }

    /// Reads a service's exit status after its pidfd reported the exit; if the status is not
    /// there yet, looks again shortly, and gives up (exit unknown) after `EXIT_STATUS_WAIT`.
    fn check_exit(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else { return };
        let Some(proc) = svc.proc.as_mut() else {
            svc.exit_check = None;
            return;
        };
        let now = Instant::now();
        let exit = match proc.try_exit() {
            Some(e) => e,
            None => {
                let (pause, give_up) = match svc.exit_check {
                    Some((_, pause, give_up)) => (pause * 2, give_up),
                    None => (Duration::from_micros(200), now + EXIT_STATUS_WAIT),
                };
                if now < give_up {
                    svc.exit_check = Some((now + pause.min(Duration::from_millis(50)), pause, give_up));
                    return;
                }
                Exit::Unknown
            }
        };
        svc.exit_check = None;
        self.unwatch_pidfd(name);
        let svc = self.services.get_mut(name).expect("present");
        svc.proc = None;
        svc.identity = None;
        self.feed(name, Event::Exited(exit));
    }

    /// Adds the service's pidfd to the epoll set.
    fn watch_pidfd(&mut self, name: &str) -> std::io::Result<()> {
        let token = self.token();
        let svc = self.services.get_mut(name).expect("present");
        let proc = svc.proc.as_ref().expect("a process to watch");
        self.epoll.add(proc.pidfd(), token, READABLE)?;
        svc.pidfd_token = Some(token);
        self.targets.insert(token, Target::Pidfd(name.into()));
        Ok(())
    }

    /// Takes the service's pidfd out of the epoll set, if it is there.
    fn unwatch_pidfd(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else { return };
        if let Some(token) = svc.pidfd_token.take() {
            self.targets.remove(&token);
            if let Some(p) = &svc.proc {
                let _ = self.epoll.delete(p.pidfd());
            }
        }
    }

    /// Reaps exited children that are not services (orphans re-parented to us); a service's own
    /// exit found here is read through its pidfd as usual.
    fn reap(&mut self) {
        let mut seen = Vec::new();
        while let Ok(Some(pid)) = process::peek_exited_child() {
            if seen.contains(&pid) {
                break;
            }
            seen.push(pid);
            let service = self.services.iter().find(|(_, s)| {
                s.cfg.agent.is_none() && matches!(&s.proc, Some(Proc::Child(c)) if c.pid() == Some(pid))
            });
            match service.map(|(n, _)| n.clone()) {
                Some(name) => self.check_exit(&name),
                None => {
                    let _ = process::reap_pid(pid);
                }
            }
        }
    }

    // ---- the state machine -----------------------------------------------------------------

    /// Feeds one event to a service's state machine and carries out the actions.
    fn feed(&mut self, name: &str, event: Event) {
        let Some(svc) = self.services.get_mut(name) else { return };
        let before = (svc.m.state, svc.m.pid);
        let (m, actions) = machine::next(&svc.policy(), &svc.m, event, Instant::now());
        svc.m = m;
        let after = (svc.m.state, svc.m.pid);
        if before != after {
            self.changed(name);
        }
        for a in actions {
            match a {
                Action::Spawn => self.spawn(name),
                Action::Signal(sig) => self.signal(name, sig),
                // The deadline is in the machine's state; the loop's timeout follows it.
                Action::ArmTimer(_) => {}
            }
        }
    }

    /// After a state change: tell, record, and finish reloads and shutdown.
    fn changed(&mut self, name: &str) {
        let Some(svc) = self.services.get(name) else { return };
        let change = StateChange {
            time: holden_cli::timestamp(SystemTime::now()),
            service: name.into(),
            state: svc.m.state.name().into(),
            pid: svc.m.pid,
            last_exit: svc.m.last_exit.map(exit_text),
            last_error: svc.m.last_error.clone(),
        };
        let mut line = format!("{name}: {}", change.state);
        if let Some(pid) = change.pid {
            line += &format!(" pid {pid}");
        }
        match (svc.m.state, &change.last_exit, &change.last_error) {
            (State::Starting, ..) => {}
            (_, _, Some(err)) if svc.m.state != State::Running => line += &format!(" ({err})"),
            (State::Running, ..) => {}
            (_, Some(exit), _) => line += &format!(" (last exit: {exit})"),
            _ => {}
        }
        say(&line);
        self.broadcast(
            |f| *f == Follow::Events,
            || holden_proto::encode_reply(&serde_json::json!({ "event": change }), true),
        );
        if self.notify.active() {
            self.notify.send(&format!("STATUS={}", self.summary()));
        }
        self.state_dirty = true;
        let svc = &self.services[name];
        if svc.idle() {
            if svc.removing {
                self.services.remove(name);
                self.order.retain(|n| n != name);
            } else if svc.replacement.is_some() {
                let svc = self.services.get_mut(name).expect("present");
                let (cfg, start) = svc.replacement.take().expect("checked");
                svc.cfg = cfg;
                if start && !self.shutting_down {
                    self.feed(name, Event::Start);
                }
            }
        }
        if self.shutting_down {
            self.advance_shutdown();
        }
    }

    /// Stops, in reverse dependency order, every service whose dependents are all down.
    /// One pass at a time: the state changes it causes call back here, and must not start a
    /// nested pass each (with many services that would nest as deep as there are services).
    fn advance_shutdown(&mut self) {
        if self.in_shutdown_pass {
            return;
        }
        self.in_shutdown_pass = true;
        for name in self.order.clone().into_iter().rev() {
            let Some(svc) = self.services.get(&name) else { continue };
            if svc.m.wanted == Wanted::Down && matches!(svc.m.state, State::Stopping | State::Stopped) {
                continue;
            }
            let dependents_down = self
                .services
                .values()
                .filter(|s| s.cfg.depends_on.contains(&name))
                .all(|s| s.idle() && s.m.wanted == Wanted::Down);
            if dependents_down {
                self.feed(&name, Event::Stop);
            }
        }
        self.in_shutdown_pass = false;
    }

    // ---- actions out -----------------------------------------------------------------------

    fn spawn(&mut self, name: &str) {
        let cfg = self.services[name].cfg.clone();
        let mut cmd = holden::Command::new(&cfg.command[0]);
        cmd.args(&cfg.command[1..]).envs(&cfg.env).stdin(holden::Stdio::null());
        if let Some(cwd) = &cfg.cwd {
            cmd.current_dir(cwd);
        }
        if cfg.kill_mode == KillMode::Group {
            cmd.setsid(true);
        }
        if let (None, Some((soft, hard))) = (&cfg.agent, self.child_nofile) {
            cmd.rlimit("nofile", Some(soft), Some(hard));
        }
        let mut pipes = Vec::new();
        let mut failed = None;
        for (which, out) in [("stdout", &cfg.stdout), ("stderr", &cfg.stderr)] {
            let stdio = match out {
                Output::Inherit => holden::Stdio::Inherit,
                Output::Null => holden::Stdio::Null,
                Output::File(path) => match OpenOptions::new().create(true).append(true).mode(0o640).open(path) {
                    Ok(f) => holden::Stdio::from(f),
                    Err(e) => {
                        failed = Some(format!("open {which} file {}: {e}", path.display()));
                        break;
                    }
                },
                Output::Log => match std::io::pipe() {
                    Ok((r, w)) => {
                        pipes.push((which, OwnedFd::from(r)));
                        holden::Stdio::from(OwnedFd::from(w))
                    }
                    Err(e) => {
                        failed = Some(format!("pipe for {which}: {e}"));
                        break;
                    }
                },
            };
            if which == "stdout" {
                cmd.stdout(stdio);
            } else {
                cmd.stderr(stdio);
            }
        }
        if let Some(error) = failed {
            return self.feed(name, Event::SpawnFailed { error, transient: false });
        }
        let result = match &cfg.agent {
            None => cmd.spawn(),
            Some(agent) => self.spawn_via(agent, &mut cmd),
        };
        // The pipes' write ends now live only in the child.
        drop(cmd);
        match result {
            Ok(child) => {
                let pid = child.pid().unwrap_or_else(|| child.spawner_pid());
                let svc = self.services.get_mut(name).expect("present");
                svc.identity = state::identity(child.pidfd(), pid).ok();
                svc.proc = Some(Proc::Child(child));
                if let Err(e) = self.watch_pidfd(name) {
                    say(&format!("{name}: cannot watch pidfd: {e}"));
                }
                for (which, fd) in pipes {
                    self.watch_pipe(name, which, fd);
                }
                self.feed(name, Event::Spawned { pid });
            }
            Err(e) => {
                let transient = matches!(
                    e,
                    holden::Error::Connect { .. }
                        | holden::Error::Io(_)
                        | holden::Error::Timeout(_)
                        | holden::Error::Disconnected
                        | holden::Error::Protocol(_)
                        | holden::Error::Agent(holden::AgentError::TooManyClients { .. })
                );
                self.feed(name, Event::SpawnFailed { error: e.to_string(), transient });
            }
        }
    }

    fn spawn_via(&mut self, agent: &str, cmd: &mut holden::Command) -> Result<holden::Child, holden::Error> {
        let conn = match self.agents.remove(agent) {
            Some(c) => c,
            None => {
                let path = self.cfg.agents.get(agent).map(|a| a.socket.clone()).unwrap_or_default();
                let mut c = holden::Agent::connect(&path)?;
                c.set_timeout(AGENT_TIMEOUT);
                c
            }
        };
        let mut conn = conn;
        let r = cmd.spawn_via(&mut conn);
        // A connection that failed is not reused; the next spawn connects afresh.
        let broken = matches!(
            r,
            Err(holden::Error::Io(_)
                | holden::Error::Timeout(_)
                | holden::Error::Disconnected
                | holden::Error::Protocol(_))
        );
        if !broken {
            self.agents.insert(agent.into(), conn);
        }
        r
    }

    fn watch_pipe(&mut self, name: &str, which: &'static str, fd: OwnedFd) {
        let svc = self.services.get_mut(name).expect("present");
        if svc.log.is_none() {
            match LogFile::open(&self.log_dir, name, self.cfg.log_max_size, self.cfg.log_keep) {
                Ok(l) => svc.log = Some(l),
                Err(e) => say(&format!("{name}: cannot open its log in {}: {e}", self.log_dir.display())),
            }
        }
        match Pipe::new(name, which, fd) {
            Ok(pipe) => {
                let token = self.token();
                if self.epoll.add(&pipe, token, READABLE).is_ok() {
                    self.targets.insert(token, Target::Pipe(pipe));
                }
            }
            Err(e) => say(&format!("{name}: {which} pipe: {e}")),
        }
    }

    fn on_pipe(&mut self, token: u64) {
        let Some(Target::Pipe(pipe)) = self.targets.get_mut(&token) else { return };
        let (lines, eof) = pipe.drain();
        let name = pipe.service.clone();
        if eof {
            if let Some(Target::Pipe(p)) = self.targets.remove(&token) {
                let _ = self.epoll.delete(&p);
            }
        }
        if lines.is_empty() {
            return;
        }
        if let Some(log) = self.services.get_mut(&name).and_then(|s| s.log.as_mut()) {
            for l in &lines {
                if let Err(e) = log.write_line(l) {
                    say(&format!("{name}: write {}: {e}", log.path().display()));
                    break;
                }
            }
        }
        self.broadcast(
            |f| matches!(f, Follow::Logs(n) if *n == name),
            || holden_proto::encode_reply(&serde_json::json!({ "lines": lines }), true),
        );
    }

    fn signal(&mut self, name: &str, sig: i32) {
        let Some(svc) = self.services.get(name) else { return };
        let Some(proc) = &svc.proc else { return };
        let r = match (svc.cfg.kill_mode, svc.m.pid) {
            (KillMode::Group, Some(pid)) => process::pidfd_send_signal_group(proc.pidfd(), pid, sig),
            _ => process::pidfd_send_signal(proc.pidfd(), sig),
        };
        // ESRCH: it has just ended; its pidfd will say so.
        if let Err(e) = r {
            if e.raw_os_error() != Some(libc::ESRCH) {
                say(&format!("{name}: signal {}: {e}", holden_cli::signal_name(sig)));
            }
        }
    }

    // ---- state file and adoption -----------------------------------------------------------

    fn write_state(&mut self) {
        self.state_dirty = false;
        let entries: Vec<Entry> = self
            .services
            .iter()
            .filter_map(|(name, s)| {
                Some(Entry { service: name.clone(), pid: s.m.pid?, identity: s.identity? }).filter(|_| s.proc.is_some())
            })
            .collect();
        if entries != self.recorded {
            if let Err(e) = self.state_file.write(&entries) {
                say(&format!("cannot write the state file: {e}"));
            }
            self.recorded = entries;
        }
    }

    /// Takes over the processes a predecessor recorded, if they are still the same processes.
    fn adopt(&mut self) {
        for entry in self.state_file.read() {
            let Some(pidfd) = state::reopen(&entry) else {
                say(&format!("{}: pid {} from the last run is gone", entry.service, entry.pid));
                continue;
            };
            if !self.services.contains_key(&entry.service) {
                say(&format!(
                    "{}: pid {} from the last run is no longer configured; sending SIGTERM",
                    entry.service, entry.pid
                ));
                let _ = process::pidfd_send_signal(&pidfd, libc::SIGTERM);
                let _ = process::pidfd_send_signal(&pidfd, libc::SIGCONT);
                continue;
            }
            let name = entry.service.clone();
            let captured = Svc::logs_captured(&self.services[&name].cfg);
            let svc = self.services.get_mut(&name).expect("present");
            svc.proc = Some(Proc::Adopted { pidfd });
            svc.identity = Some(entry.identity);
            if let Err(e) = self.watch_pidfd(&name) {
                say(&format!("{name}: cannot watch pidfd of pid {}: {e}; not adopting it", entry.pid));
                let svc = self.services.get_mut(&name).expect("present");
                (svc.proc, svc.identity) = (None, None);
                continue;
            }
            if captured {
                for (fd, which) in reattach_pipes(entry.pid) {
                    self.watch_pipe(&name, which, fd);
                }
            }
            say(&format!("{name}: adopting pid {} from the last run", entry.pid));
            self.feed(&name, Event::Adopted { pid: entry.pid });
        }
    }

    // ---- control socket --------------------------------------------------------------------

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: leave the rest in the backlog for the next wake-up.
                    say(&format!("control socket: accept: {e}"));
                    return;
                }
            };
            let Ok(cred) = socket::peer_cred(&stream) else { continue };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.token();
            if self.epoll.add(&stream, token, READABLE).is_ok() {
                self.targets.insert(token, Target::Conn(Conn::new(stream, cred)));
            }
        }
    }

    fn on_conn(&mut self, token: u64, events: u32) {
        let Some(Target::Conn(mut conn)) = self.targets.remove(&token) else { return };
        if events & WRITABLE != 0 {
            conn.flush();
        }
        if events & READABLE != 0 || events & (libc::EPOLLHUP as u32) != 0 {
            match conn.read() {
                Input::Closed => conn.closing = true,
                Input::Messages(msgs) => {
                    for msg in msgs {
                        self.call(&mut conn, &msg);
                    }
                }
            }
        }
        if conn.closing && (conn.done() || events & (libc::EPOLLHUP as u32 | libc::EPOLLERR as u32) != 0) {
            self.followers.remove(&token);
            let _ = self.epoll.delete(&conn.stream);
            return;
        }
        if conn.follow.is_some() {
            self.followers.insert(token);
        }
        let interest = if conn.pending() { READABLE | WRITABLE } else { READABLE };
        let _ = self.epoll.modify(&conn.stream, token, interest);
        self.targets.insert(token, Target::Conn(conn));
    }

    /// Sends the message `make` builds to every connection following what `wants` accepts,
    /// building it only if there is one; drops followers that are too slow.
    fn broadcast(&mut self, wants: impl Fn(&Follow) -> bool, make: impl FnOnce() -> Vec<u8>) {
        let mut make = Some(make);
        let mut msg = Vec::new();
        let mut dead = Vec::new();
        for token in &self.followers {
            let Some(Target::Conn(c)) = self.targets.get_mut(token) else { continue };
            if !c.follow.as_ref().is_some_and(&wants) {
                continue;
            }
            if let Some(make) = make.take() {
                msg = make();
            }
            c.send(&msg);
            if c.closing {
                dead.push(*token);
            } else {
                let interest = if c.pending() { READABLE | WRITABLE } else { READABLE };
                let _ = self.epoll.modify(&c.stream, *token, interest);
            }
        }
        for t in dead {
            self.followers.remove(&t);
            if let Some(Target::Conn(c)) = self.targets.remove(&t) {
                let _ = self.epoll.delete(&c.stream);
            }
        }
    }

    fn call(&mut self, conn: &mut Conn, msg: &[u8]) {
        let call = match holden_proto::parse_call(msg) {
            Ok(c) => c,
            Err(e) => {
                conn.send(&ControlError::InvalidParameter { parameter: e.to_string() }.encode());
                conn.closing = true;
                return;
            }
        };
        let reply = control::parse_request(&call.method, &call.parameters).and_then(|req| {
            if (req.mutates() || matches!(req, Request::Logs(..))) && !self.access.allows(&conn.cred) {
                return Err(ControlError::PermissionDenied { uid: conn.cred.uid });
            }
            self.answer(req, call.more, conn)
        });
        if call.oneway {
            return;
        }
        match reply {
            Ok(Some(params)) => conn.send(&holden_proto::encode_reply(&params, conn.follow.is_some())),
            Ok(None) => {}
            Err(e) => conn.send(&e.encode()),
        }
    }

    fn status(&self, name: &str) -> Result<ServiceStatus, ControlError> {
        let s = self.services.get(name).ok_or_else(|| ControlError::NoSuchService { name: name.into() })?;
        Ok(ServiceStatus {
            name: name.into(),
            state: s.m.state.name().into(),
            wanted: if s.m.wanted == Wanted::Up { "up" } else { "down" }.into(),
            pid: s.m.pid,
            since_ms: s.m.since.elapsed().as_millis() as u64,
            restarts: s.m.restarts,
            last_exit: s.m.last_exit.map(exit_text),
            last_error: s.m.last_error.clone(),
            agent: s.cfg.agent.clone(),
        })
    }

    fn known(&self, names: &[String]) -> Result<(), ControlError> {
        match names.iter().find(|n| !self.services.contains_key(*n)) {
            Some(n) => Err(ControlError::NoSuchService { name: n.clone() }),
            None => Ok(()),
        }
    }

    /// In dependency order (`rev` for stopping).
    fn ordered(&self, names: &[String], rev: bool) -> Vec<String> {
        let mut v: Vec<String> = self.order.iter().filter(|n| names.contains(n)).cloned().collect();
        if rev {
            v.reverse();
        }
        v
    }

    /// Carries out one request; `Ok(None)` when the reply comes later (a stream).
    fn answer(&mut self, req: Request, more: bool, conn: &mut Conn) -> Result<Option<serde_json::Value>, ControlError> {
        let empty = serde_json::json!({});
        match req {
            Request::List => {
                let list: Vec<ServiceStatus> = self.order.iter().filter_map(|n| self.status(n).ok()).collect();
                Ok(Some(serde_json::json!({ "services": list })))
            }
            Request::Status(name) => Ok(Some(serde_json::json!({ "service": self.status(&name)? }))),
            Request::Start(names) => {
                self.known(&names)?;
                if !self.shutting_down {
                    for n in self.ordered(&names, false) {
                        self.feed(&n, Event::Start);
                    }
                }
                Ok(Some(empty))
            }
            Request::Stop(names) => {
                self.known(&names)?;
                for n in self.ordered(&names, true) {
                    self.feed(&n, Event::Stop);
                }
                Ok(Some(empty))
            }
            Request::Restart(names) => {
                self.known(&names)?;
                for n in self.ordered(&names, true) {
                    self.feed(&n, Event::Stop);
                }
                if !self.shutting_down {
                    for n in self.ordered(&names, false) {
                        self.feed(&n, Event::Start);
                    }
                }
                Ok(Some(empty))
            }
            Request::Kill(name, sig) => {
                let s = self.services.get(&name).ok_or_else(|| ControlError::NoSuchService { name: name.clone() })?;
                if s.proc.is_none() {
                    return Err(ControlError::NotRunning { name });
                }
                self.signal(&name, sig);
                Ok(Some(empty))
            }
            Request::Reload => self.reload().map(|r| Some(serde_json::to_value(r).expect("plain struct"))),
            Request::Logs(name, lines) => {
                let s = self.services.get(&name).ok_or_else(|| ControlError::NoSuchService { name: name.clone() })?;
                let tail = match &s.log {
                    Some(l) => l.tail(lines as usize),
                    None if Svc::logs_captured(&s.cfg) => {
                        LogFile::open(&self.log_dir, &name, self.cfg.log_max_size, self.cfg.log_keep)
                            .map(|l| l.tail(lines as usize))
                            .unwrap_or_default()
                    }
                    None => return Err(ControlError::NoLog { name }),
                };
                if more {
                    conn.follow = Some(Follow::Logs(name));
                }
                Ok(Some(serde_json::json!({ "lines": tail })))
            }
            Request::Events => {
                if !more {
                    return Err(ControlError::InvalidParameter {
                        parameter: "more: Events streams, so the call needs \"more\": true".into(),
                    });
                }
                conn.follow = Some(Follow::Events);
                Ok(None)
            }
            Request::GetInfo => Ok(Some(
                serde_json::to_value(holden_proto::ServiceInfo {
                    vendor: "Holden".into(),
                    product: "holden".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    url: String::new(),
                    interfaces: vec![INTERFACE.into(), holden_proto::SERVICE_INTERFACE.into()],
                })
                .expect("plain struct"),
            )),
            Request::GetInterfaceDescription(i) => match i.as_str() {
                INTERFACE => Ok(Some(serde_json::json!({ "description": control::DESCRIPTION }))),
                holden_proto::SERVICE_INTERFACE => {
                    Ok(Some(serde_json::json!({ "description": holden_proto::SERVICE_DESCRIPTION })))
                }
                _ => Err(ControlError::InterfaceNotFound { interface: i }),
            },
        }
    }

    // ---- reload ----------------------------------------------------------------------------

    /// Applies the configuration file again. Nothing changes if it does not load.
    fn reload(&mut self) -> Result<ReloadReply, ControlError> {
        if self.shutting_down {
            return Err(ControlError::ReloadFailed { message: "shutting down".into() });
        }
        let new = config::load(&self.config_path).map_err(|e| ControlError::ReloadFailed { message: e.to_string() })?;
        let mut r = ReloadReply::default();
        // Agent connections whose socket changed or vanished are dropped.
        self.agents.retain(|name, _| new.agents.get(name) == self.cfg.agents.get(name));
        let old_names: Vec<String> = self.services.keys().cloned().collect();
        for name in &old_names {
            if !new.services.contains_key(name) {
                r.removed.push(name.clone());
            }
        }
        let now = Instant::now();
        for (name, cfg) in &new.services {
            match self.services.get_mut(name) {
                None => {
                    r.added.push(name.clone());
                    self.services.insert(name.clone(), Svc::new(cfg.clone(), now));
                }
                Some(svc) if svc.cfg != *cfg || svc.replacement.is_some() => {
                    r.changed.push(name.clone());
                    if svc.idle() {
                        svc.cfg = cfg.clone();
                        svc.replacement = None;
                    } else {
                        let start = svc.m.wanted == Wanted::Up || svc.replacement.as_ref().is_some_and(|(_, s)| *s);
                        svc.replacement = Some((cfg.clone(), start));
                    }
                }
                Some(_) => {}
            }
        }
        for l in self.services.values_mut().filter_map(|s| s.log.as_mut()) {
            l.set_limits(new.log_max_size, new.log_keep);
        }
        // The new order covers new and kept services; removed ones stay at the end until gone.
        let mut order = config::start_order(&new.services);
        order.extend(r.removed.iter().cloned());
        self.order = order;
        let (control_socket, state_dir) = (self.cfg.control_socket.clone(), self.cfg.state_dir.clone());
        self.cfg = new;
        // Where the socket and the state live cannot change under a running orchestrator.
        self.cfg.control_socket = control_socket;
        self.cfg.state_dir = state_dir;
        for name in r.removed.clone().into_iter().rev() {
            let svc = self.services.get_mut(&name).expect("present");
            svc.removing = true;
            if svc.idle() {
                self.services.remove(&name);
                self.order.retain(|n| *n != name);
            } else {
                self.feed(&name, Event::Stop);
            }
        }
        for name in self.ordered(&r.changed, true) {
            if self.services[&name].replacement.is_some() {
                self.feed(&name, Event::Stop);
            }
        }
        for name in self.order.clone() {
            let s = &self.services[&name];
            let restart_idle = r.changed.contains(&name)
                && s.replacement.is_none()
                && matches!(s.m.state, State::Exited | State::Failed | State::BackingOff);
            if r.added.contains(&name) || restart_idle {
                self.feed(&name, Event::Start);
            }
        }
        Ok(r)
    }
}

/// Opens new read ends of an adopted process's stdout and stderr pipes (through
/// `/proc/PID/fd`), so its output is captured again. One pipe shared by both is opened once.
fn reattach_pipes(pid: i32) -> Vec<(OwnedFd, &'static str)> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (n, which) in [(1, "stdout"), (2, "stderr")] {
        let link = format!("/proc/{pid}/fd/{n}");
        let Ok(target) = std::fs::read_link(&link) else { continue };
        let target = target.to_string_lossy().into_owned();
        if !target.starts_with("pipe:") || seen.contains(&target) {
            continue;
        }
        if let Ok(f) = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&link) {
            seen.push(target);
            out.push((OwnedFd::from(f), which));
        }
    }
    out
}
