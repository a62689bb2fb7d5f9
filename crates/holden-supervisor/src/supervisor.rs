//! The event loop and the glue to the state machine: one epoll set, events in, the machine's
//! actions out, the state file written at the end of every iteration that changed it.
//!
//! An iteration: wait for readiness or the earliest deadline; handle what is ready (signals,
//! control connections, pidfds, one read per log pipe, agent replies); fire due timers; start
//! at most [`SPAWN_BUDGET`] queued spawns; write the state file if it changed. Spawns are
//! queued, never started from inside the handling of another event, so a storm of failing
//! spawns is bounded work per iteration and never recursion.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use holden_orchestrator::config::{self, Config};
use holden_orchestrator::machine::{Event, State};
use holden_sys::event::{Epoll, SignalFd, READABLE, WRITABLE};
use holden_sys::process;

use crate::conn::Conn;
use crate::holder::Holder;
use crate::logs::Pipe;
use crate::notify::Notifier;
use crate::spawn::InFlight;
use crate::state::{Snapshot, StateFile};
pub(crate) use crate::svc::Svc;
use crate::{Error, Options};

pub(crate) const SIGNALS: u64 = 0;
pub(crate) const LISTENER: u64 = 1;
pub(crate) const HOLDER: u64 = 2;
/// The pipe on which probes' threads say they are done.
pub(crate) const PROBES: u64 = 3;

/// The most spawns started in one iteration; the rest wait for the next (which does not wait).
pub const SPAWN_BUDGET: usize = 32;
/// The longest an iteration spends starting spawns (at least one is started).
pub const SPAWN_TIME: Duration = Duration::from_millis(10);

/// What an epoll token stands for.
pub(crate) enum Target {
    Pidfd(String),
    Pipe(Pipe),
    Conn(Conn),
    Spawn(InFlight),
    /// A service's readiness channel.
    Notify(String, crate::ready::Notify),
}

/// The supervisor: configuration, services, and every descriptor of the loop.
pub struct Supervisor {
    pub(crate) config_path: PathBuf,
    pub(crate) cfg: Config,
    pub(crate) services: BTreeMap<String, Svc>,
    pub(crate) order: Vec<String>,
    pub(crate) epoll: Epoll,
    signals: SignalFd,
    pub(crate) listener: holden_agent::listen::Listening,
    pub(crate) access: crate::Access,
    pub(crate) targets: HashMap<u64, Target>,
    /// The tokens of the connections that follow logs or events.
    pub(crate) followers: HashSet<u64>,
    /// Control connections open.
    pub(crate) connections: usize,
    /// Control connections with calls left over from their last turn.
    pub(crate) ready_conns: Vec<u64>,
    /// Accepting paused (out of descriptors) until then.
    accept_paused_until: Option<Instant>,
    next_token: u64,
    pub(crate) log_dir: PathBuf,
    pub(crate) state_file: StateFile,
    /// Something the state file records changed since it was last written.
    pub(crate) state_dirty: bool,
    /// The last write failed: why, and when to try again.
    pub(crate) state_error: Option<(String, Instant)>,
    /// This run's id, and earlier runs whose processes may still be around.
    pub(crate) run_id: String,
    pub(crate) runs: Vec<String>,
    pub(crate) spawn_seq: u64,
    pub(crate) spawn_queue: VecDeque<String>,
    /// A state file naming this run has been written: spawning may begin.
    pub(crate) run_recorded: bool,
    /// Agent calls given up but kept, to kill what a late reply brings.
    pub(crate) abandoned_calls: usize,
    /// Processes that must never be signalled or adopted: PID 1, this one, its ancestors.
    pub(crate) protected: Vec<i32>,
    /// Ask agents for the exit stream (no `PIDFD_INFO_EXIT` here, or forced).
    /// Decided at the first spawn through an agent (the probe spawns a child of its own).
    pub(crate) exit_stream: Option<bool>,
    pub(crate) holder: Option<Holder>,
    holder_command: Option<Vec<std::ffi::OsString>>,
    pub(crate) notify: Notifier,
    next_watchdog: Option<Instant>,
    pub(crate) shutting_down: bool,
    pub(crate) in_shutdown_pass: bool,
    /// The descriptor limit local services get (the one this process started with).
    pub(crate) child_nofile: Option<(u64, u64)>,
    /// Probes' answers, and the pipe their threads wake the loop with.
    pub(crate) probe_tx: std::sync::mpsc::Sender<crate::probe::Done>,
    pub(crate) probe_rx: std::sync::mpsc::Receiver<crate::probe::Done>,
    pub(crate) probe_wake: std::sync::Arc<std::io::PipeWriter>,
    pub(crate) probe_wake_read: std::io::PipeReader,
    /// The last probe's number.
    pub(crate) probe_seq: u64,
    /// Local exec probes' pids, which the reaper leaves alone.
    pub(crate) probe_pids: crate::probe::ProbePids,
    /// The reaper met a child while a probe was being spawned: it reaps again when a probe
    /// answers.
    pub(crate) reap_after_probes: bool,
    /// Agents' socket directories swept of dead notify sockets this run.
    pub(crate) notify_swept: std::collections::HashSet<std::path::PathBuf>,
    /// A pass over held services is under way (and another is asked for).
    pub(crate) in_recheck: bool,
    pub(crate) recheck_again: bool,
    /// Services a stop by hand will stop once their dependents are down.
    pub(crate) pending_stops: std::collections::BTreeSet<String>,
    /// Local services' cgroups, where they are used.
    pub(crate) cgroups: Option<crate::cgroups::Cgroups>,
    /// Cgroups no service uses any more that could not be removed yet (still populated).
    pub(crate) retired_cgroups: Vec<std::path::PathBuf>,
    /// The state directory's lock, held for the supervisor's life.
    _lock: std::fs::File,
}

/// Lines `say` could not write since the last one it could.
static UNSAID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Prints one line on stdout, only if that cannot block: a stdout nobody reads (a full pipe, a
/// stalled journal) or that fails (a closed pipe, a full disk) must never stall or stop
/// supervision. A line that cannot be written is dropped and counted; the next one written
/// says how many were.
pub(crate) fn say(line: &str) {
    say_at(line, SystemTime::now());
}

/// [`say`], with the time the line is about (a state change's, taken by the state machine).
pub(crate) fn say_at(line: &str, at: SystemTime) {
    use std::sync::atomic::Ordering;
    let now = crate::text::timestamp(at);
    let unsaid = UNSAID.load(Ordering::Relaxed);
    let mut text = String::new();
    if unsaid > 0 {
        text = format!("{now} ({unsaid} lines not written: stdout was full)\n");
    }
    text += &format!("{now} {line}");
    // One write of at most PIPE_BUF bytes: a longer line is cut, and still ends the line.
    if text.len() > 4095 {
        let mut cut = 4092;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text += "...";
    }
    text.push('\n');
    if holden_sys::event::write_now(holden_sys::fd::stdio(1), text.as_bytes()) {
        UNSAID.store(0, Ordering::Relaxed);
    } else {
        UNSAID.fetch_add(1, Ordering::Relaxed);
    }
}

impl Supervisor {
    /// Loads the configuration and sets up the socket, the signals and the state directory.
    pub fn new(o: Options) -> Result<Supervisor, Error> {
        let cfg = crate::load_config(&o.config)?;
        let socket_path = crate::control_socket_path(o.control_socket.as_deref(), cfg.control_socket.as_deref());
        let state_dir = crate::state_dir(cfg.state_dir.as_deref());
        let log_dir = state_dir.join("logs");
        crate::state::private_dir(&state_dir, 0o700)?;
        crate::state::private_dir(&log_dir, 0o750)?;
        // Blocked before anything can start a thread or a child, so no signal is lost.
        let signals = SignalFd::new(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD])
            .map_err(Error::setup("signalfd"))?;
        let listener = holden_agent::listen::bind(&socket_path, o.socket_mode, None).map_err(|e| match e {
            holden_agent::listen::ListenError::AlreadyServed(p) => Error::AlreadyServed(p),
            e => Error::Setup { what: "control socket".into(), source: std::io::Error::other(e.to_string()) },
        })?;
        listener.listener.set_nonblocking(true).map_err(Error::setup("control socket"))?;
        // One supervisor per state directory: two would adopt, sweep and remove each other's
        // processes. The lock lives as long as this process.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(state_dir.join("lock"))
            .map_err(Error::setup(format!("open {}", state_dir.join("lock").display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::StateDirInUse(state_dir)),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::setup("lock the state directory")(e)),
        }
        // After the lock: a second orchestrator must not touch the cgroups of the first.
        let cgroups = crate::cgroups::Cgroups::setup(&cfg)?;
        // Orphans of services (daemonising children) come to us to be reaped, not to PID 1.
        let _ = process::set_child_subreaper();
        // Each service holds a pidfd and up to two log pipes here: raise the soft limit on
        // descriptors to the hard one. Local services get the limit we started with.
        let child_nofile = holden_sys::fd::raise_nofile();
        let epoll = Epoll::new().map_err(Error::setup("epoll"))?;
        epoll.add(&signals, SIGNALS, READABLE).map_err(Error::setup("epoll"))?;
        epoll.add(&listener.listener, LISTENER, READABLE).map_err(Error::setup("epoll"))?;
        let (probe_wake_read, probe_wake) = std::io::pipe().map_err(Error::setup("pipe"))?;
        for fd in [probe_wake_read.as_fd(), probe_wake.as_fd()] {
            holden_sys::fd::set_nonblocking(fd, true).map_err(Error::setup("pipe"))?;
        }
        epoll.add(&probe_wake_read, PROBES, READABLE).map_err(Error::setup("epoll"))?;
        let (probe_tx, probe_rx) = std::sync::mpsc::channel();
        let order = config::start_order(&cfg.services);
        let now = Instant::now();
        let services = cfg.services.iter().map(|(name, s)| (name.clone(), Svc::new(s.clone(), now))).collect();

        Ok(Supervisor {
            config_path: o.config,
            cfg,
            services,
            order,
            epoll,
            signals,
            listener,
            access: o.access,
            targets: HashMap::new(),
            followers: HashSet::new(),
            connections: 0,
            ready_conns: Vec::new(),
            accept_paused_until: None,
            next_token: PROBES,
            log_dir,
            state_file: StateFile::new(&state_dir),
            state_dirty: true,
            state_error: None,
            run_id: crate::state::new_run_id(),
            runs: Vec::new(),
            spawn_seq: 0,
            spawn_queue: VecDeque::new(),
            run_recorded: false,
            abandoned_calls: 0,
            protected: crate::procfs::protected_pids(),
            exit_stream: None,
            holder: None,
            holder_command: o.holder,
            notify: Notifier::from_env(),
            next_watchdog: None,
            shutting_down: false,
            in_shutdown_pass: false,
            child_nofile,
            probe_tx,
            probe_rx,
            probe_wake: std::sync::Arc::new(probe_wake),
            probe_wake_read,
            probe_pids: Default::default(),
            reap_after_probes: false,
            notify_swept: Default::default(),
            probe_seq: 0,
            in_recheck: false,
            recheck_again: false,
            pending_stops: Default::default(),
            cgroups,
            retired_cgroups: Vec::new(),
            _lock: lock,
        })
    }

    pub(crate) fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn state_dir(&self) -> PathBuf {
        self.state_file.path().parent().map(Path::to_path_buf).unwrap_or_default()
    }

    /// Runs until a clean shutdown.
    pub fn run(&mut self) -> Result<(), Error> {
        say(&format!(
            "holden up: {} services from {}, control socket {}",
            self.services.len(),
            self.config_path.display(),
            self.listener.owned_path.as_deref().unwrap_or(Path::new("?")).display()
        ));
        let previous = match self.state_file.read() {
            Ok(s) => s,
            Err(e) => {
                say(&format!("error: state file: {e}; adopting nothing"));
                Snapshot::default()
            }
        };
        self.runs = previous.runs.iter().chain((!previous.run.is_empty()).then_some(&previous.run)).cloned().collect();
        self.runs.dedup();
        self.start_holder();
        // Adoption spawns nothing; a crash before the next write leaves the predecessor's file
        // as it was, so nothing it recorded is lost.
        self.adopt(previous);
        // The run id, the adopted processes and the intents are on disk before anything is
        // spawned, so that whatever this run starts can be told apart after a crash. Until a
        // write succeeds, nothing is spawned (run_spawns waits for it).
        self.write_state();
        for name in self.order.clone() {
            if self.services[&name].m.state == State::Stopped && !self.services[&name].stopped_by_hand {
                self.feed(&name, Event::Start);
            }
        }
        // The initial spawns, before READY=1, in budgeted passes; a service that fails and is
        // queued again at once (zero backoff) holds READY back for a second at most.
        let until = Instant::now() + Duration::from_secs(1);
        while !self.spawn_queue.is_empty() && self.run_recorded && Instant::now() < until {
            self.run_spawns();
        }
        self.write_state();
        self.notify.send(&format!("READY=1\nSTATUS={}", self.summary()));
        self.next_watchdog = self.notify.watchdog.map(|w| Instant::now() + w);
        let mut events = Vec::new();
        loop {
            self.run_spawns();
            self.write_state_if_due();
            if self.shutting_down && self.services.values().all(Svc::idle) {
                break;
            }
            if self.holder.as_ref().is_some_and(|h| h.wants_write()) {
                self.flush_holder();
            }
            self.holder_interest();
            let idle = (self.spawn_queue.is_empty() || !self.run_recorded) && self.ready_conns.is_empty();
            let timeout = if idle {
                self.next_deadline().map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            events.clear();
            self.epoll.wait(timeout, &mut events).map_err(Error::setup("epoll_wait"))?;
            let mut sigchld = false;
            // Exits first: supervision before logs and clients (a service's pipes report their
            // end with its exit, and need not delay it).
            for ev in &events {
                if matches!(self.targets.get(&ev.token), Some(Target::Pidfd(_))) {
                    self.on_ready(ev.token, ev.events);
                }
            }
            for ev in &events {
                match ev.token {
                    SIGNALS => sigchld |= self.on_signals(),
                    LISTENER => self.accept(),
                    HOLDER => self.on_holder(ev.events),
                    PROBES => self.on_probes(),
                    t if matches!(self.targets.get(&t), Some(Target::Pidfd(_))) => {}
                    t => self.on_ready(t, ev.events),
                }
            }
            for token in std::mem::take(&mut self.ready_conns) {
                self.on_conn(token, 0);
            }
            self.fire_timers();
            if sigchld {
                self.reap();
            }
        }
        self.finish();
        Ok(())
    }

    /// After every service is down: end what services left behind, release the holder,
    /// remove the state file.
    fn finish(&mut self) {
        // Drain what the pipes still hold into the logs.
        let pipes: Vec<u64> =
            self.targets.iter().filter(|(_, t)| matches!(t, Target::Pipe(_))).map(|(k, _)| *k).collect();
        for token in pipes {
            for _ in 0..64 {
                if !self.on_pipe(token) {
                    break;
                }
            }
        }
        // The holder first: it is our child, and would otherwise be ended as a stray.
        if let Some(h) = self.holder.take() {
            h.shutdown();
        }
        // Services' cgroups (agent services' too: their agents' `services/` stay, set up), then
        // the local base.
        let dirs: Vec<std::path::PathBuf> = self.services.values().filter_map(|s| s.cgroup_dir.clone()).collect();
        crate::cgroups::remove_all(dirs.into_iter().chain(self.retired_cgroups.drain(..)));
        if let Some(cg) = &self.cgroups {
            cg.teardown();
        }
        self.end_strays();
        self.notify.send("STATUS=stopped");
        self.state_file.remove();
        say("holden up: every service is down; exiting");
    }

    fn start_holder(&mut self) {
        let Some(command) = self.holder_command.clone() else { return };
        let socket = self.state_dir().join("fdholder.sock");
        match Holder::connect_or_start(&socket, &command) {
            Ok(h) => {
                if self.epoll.add(&h, HOLDER, 0).is_ok() {
                    self.holder = Some(h);
                }
            }
            Err(e) => say(&format!("log pipe holder at {}: {e}; logs will not outlive a crash", socket.display())),
        }
    }

    fn holder_interest(&mut self) {
        if let Some(h) = &self.holder {
            let interest = if h.wants_write() { WRITABLE } else { 0 };
            let _ = self.epoll.modify(h, HOLDER, interest);
        }
    }

    /// Stops watching the control socket for a moment (accept failed: out of descriptors).
    pub(crate) fn pause_accepting(&mut self) {
        let _ = self.epoll.modify(&self.listener.listener, LISTENER, 0);
        self.accept_paused_until = Some(Instant::now() + Duration::from_millis(100));
    }

    /// The holder's socket is writable (queued requests go out) or hung up (it is gone).
    fn on_holder(&mut self, events: u32) {
        if events & (libc::EPOLLHUP as u32 | libc::EPOLLERR as u32) != 0 {
            say("log pipe holder: gone; logs will not outlive a crash until holden up restarts");
            if let Some(h) = self.holder.take() {
                let _ = self.epoll.delete(&h);
            }
            return;
        }
        self.flush_holder();
    }

    pub(crate) fn flush_holder(&mut self) {
        let Some(h) = &mut self.holder else { return };
        if let Err(e) = h.flush() {
            say(&format!("log pipe holder: {e}; logs will not outlive a crash"));
            if let Some(h) = self.holder.take() {
                let _ = self.epoll.delete(&h);
            }
        }
    }

    /// The one-line summary used for systemd's STATUS=.
    pub(crate) fn summary(&self) -> String {
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
        let call_deadline = |token: &u64| match self.targets.get(token) {
            Some(Target::Spawn(f)) => Some(f.deadline),
            _ => None,
        };
        let abandoned = (self.abandoned_calls > 0).then(|| {
            self.targets.values().filter_map(|t| match t {
                Target::Spawn(f) => Some(f.deadline),
                _ => None,
            })
        });
        self.services
            .values()
            .flat_map(|s| {
                [
                    s.m.deadline,
                    s.exit_check.map(|c| c.0),
                    s.in_flight.as_ref().and_then(call_deadline),
                    s.checks.deadline(),
                ]
            })
            .flatten()
            .chain(self.next_watchdog)
            .chain(self.accept_paused_until)
            .chain(self.state_error.as_ref().map(|e| e.1).filter(|_| self.state_dirty))
            .chain(abandoned.into_iter().flatten())
            .min()
    }

    // ---- events in -------------------------------------------------------------------------

    /// Returns whether SIGCHLD arrived.
    fn on_signals(&mut self) -> bool {
        let mut sigchld = false;
        while let Ok(Some(sig)) = self.signals.read() {
            match sig {
                libc::SIGCHLD => sigchld = true,
                libc::SIGHUP => {
                    let _ = self.reload_and_say("SIGHUP");
                }
                _ if self.shutting_down => {
                    say("second stop signal: killing what is left");
                    for name in self.order.clone() {
                        self.signal(&name, libc::SIGKILL);
                    }
                }
                _ => {
                    say(&format!("{}: stopping every service", crate::text::signal_name(sig)));
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
            Some(Target::Pipe(_)) => {
                self.on_pipe(token);
            }
            Some(Target::Conn(_)) => self.on_conn(token, events),
            Some(Target::Spawn(_)) => self.on_spawn_ready(token),
            Some(Target::Notify(..)) => self.on_notify(token),
            None => {}
        }
    }

    /// Fires due timers: backoff ends, stop deadlines, exit-status re-reads, agent call
    /// deadlines, the watchdog.
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
        self.expire_spawns(now);
        self.run_checks(now);
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            let _ = self.epoll.modify(&self.listener.listener, LISTENER, READABLE);
        }
        if let (Some(at), Some(every)) = (self.next_watchdog, self.notify.watchdog) {
            if at <= now {
                self.notify.send("WATCHDOG=1");
                self.next_watchdog = Some(now + every);
            }
        }
    }
}
