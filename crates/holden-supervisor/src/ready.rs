//! Readiness and health in the loop: when probes run (at most one per service in flight), what
//! their answers do, the `notify = "fd"` pipe and `log` readiness. The probes themselves run on
//! threads ([`crate::probe`]); nothing here waits.

use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use holden_orchestrator::config::{Probe, ReadyWhen};
use holden_orchestrator::machine::{Event, State};
use holden_sys::event::READABLE;

use crate::exits::Proc;
use crate::probe::{self, Job, Miss};
use crate::supervisor::{say, Supervisor, Target};

/// The first pause between readiness tries; it doubles up to the probe's interval.
const FIRST_TRY: Duration = Duration::from_millis(100);
/// How long past its timeout a probe's thread may take to answer before the probe counts as
/// failed (it is still waited for before the next one starts).
const GRACE: Duration = Duration::from_secs(1);
/// How long past that a probe's thread is waited for before checks go on without it.
const ABANDON: Duration = Duration::from_secs(30);

/// The most entries of an agent's socket directory the sweep of dead notify sockets reads.
const SWEEP_ENTRIES: usize = 4096;

/// How a process says it is ready, watched by the loop.
pub(crate) enum Notify {
    /// The read end of its `notify = "fd"` pipe.
    Fd(std::io::PipeReader),
    /// Its `notify = "systemd"` socket; a file of it is removed with it.
    Systemd { sock: UnixDatagram, file: Option<PathBuf> },
}

impl AsFd for Notify {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Notify::Fd(r) => r.as_fd(),
            Notify::Systemd { sock, .. } => sock.as_fd(),
        }
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        if let Notify::Systemd { file: Some(f), .. } = self {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Removes the `notify = "systemd"` socket files in an agent's socket directory that nothing
/// is bound to any more: an orchestrator that was killed left them (one that ends removes its
/// own). A socket still bound, whichever orchestrator's, takes a connect; a dead one refuses it.
/// The directory is the container's too: at most [`SWEEP_ENTRIES`] entries are looked at.
fn sweep_dead_notify_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.take(SWEEP_ENTRIES).flatten() {
        let name = entry.file_name();
        let ours = name.to_str().is_some_and(|n| n.starts_with("holden-notify-") && n.ends_with(".sock"));
        if !ours || !entry.file_type().is_ok_and(|t| t.is_socket()) {
            continue;
        }
        let path = entry.path();
        let refused = UnixDatagram::unbound().and_then(|s| s.connect(&path));
        if refused.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// A service's probes.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    /// When the next probe starts.
    pub(crate) next: Option<Instant>,
    /// The current pause between readiness tries.
    pace: Duration,
    /// The probe in flight: its number, when it counts as failed, whether it already has.
    in_flight: Option<(u64, Instant, bool)>,
    seq: u64,
    /// The epoll token of the `notify = "fd"` pipe's read end, while it is watched.
    pub(crate) notify: Option<u64>,
}

impl Checks {
    /// The earliest time something of these probes is due.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let late = self.in_flight.map(|f| if f.2 { f.1 + ABANDON } else { f.1 });
        match (self.next.filter(|_| self.in_flight.is_none()), late) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Supervisor {
    /// After a change of service `name`: probes are planned while it runs, dropped otherwise.
    pub(crate) fn plan_checks(&mut self, name: &str) {
        let now = Instant::now();
        let Some(svc) = self.services.get_mut(name) else { return };
        let c = &mut svc.checks;
        if svc.m.state != State::Running {
            c.next = None;
            c.pace = FIRST_TRY;
            // An answer still to come belongs to a run that is over: it counts for nothing, and
            // its deadline is no one's (the next probe waits for its thread all the same).
            c.seq = 0;
            if let Some(f) = &mut c.in_flight {
                f.2 = true;
            }
            if let Some(token) = c.notify {
                self.unwatch_notify(token);
            }
            return;
        }
        if c.next.is_some() {
            return;
        }
        if !svc.m.ready {
            if matches!(svc.cfg.ready, Some(ReadyWhen::Probe { .. })) {
                c.pace = FIRST_TRY;
                c.next = Some(now);
            }
        } else if let Some(h) = &svc.cfg.health {
            c.next = Some(now + h.interval.min(h.start_period.max(FIRST_TRY)));
        }
    }

    /// Starts the probes that are due, and fails those past their time.
    pub(crate) fn run_checks(&mut self, now: Instant) {
        let due: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.checks.deadline().is_some_and(|d| d <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let Some(svc) = self.services.get_mut(&name) else { continue };
            match svc.checks.in_flight {
                Some((seq, at, false)) if at <= now => {
                    svc.checks.in_flight = Some((seq, at, true));
                    self.checked(&name, Err(Miss::Failed("no answer in time".into())));
                }
                // Its thread is stuck (an agent that stopped answering mid-call): given up, so
                // that checks go on; its late answer, if any, is an old number's.
                Some((_, at, true)) if at + ABANDON <= now => {
                    svc.checks.in_flight = None;
                    say(&format!(
                        "{name}: a probe has not ended {ABANDON:?} past its timeout; checks go on without it"
                    ));
                }
                Some(_) => {}
                None => self.start_probe(&name),
            }
        }
    }

    fn start_probe(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else { return };
        svc.checks.next = None;
        let (probe, timeout) = match (&svc.cfg.ready, &svc.cfg.health) {
            (Some(ReadyWhen::Probe { probe, timeout, .. }), _) if !svc.m.ready => (probe.clone(), *timeout),
            (_, Some(h)) if svc.m.ready => (h.probe.clone(), h.timeout),
            _ => return,
        };
        let agent = svc.cfg.agent.as_ref().and_then(|a| self.cfg.agents.get(a)).map(|a| a.socket.clone());
        // tcp and http probes of an agent service connect from its network namespace.
        let netns_of = match (&probe, &svc.proc, svc.m.pid, &agent) {
            (Probe::Exec(_), ..) | (_, _, _, None) => None,
            (_, Some(p), Some(pid), Some(_)) => {
                let pidfd = match p {
                    Proc::Child(c) => c.pidfd(),
                    Proc::Adopted { pidfd } => pidfd.as_fd(),
                };
                pidfd.try_clone_to_owned().ok().map(|fd| (fd, pid))
            }
            _ => None,
        };
        // Numbered across the supervisor: a service removed and added again by reloads never
        // takes an old probe's answer for its own.
        self.probe_seq += 1;
        let seq = self.probe_seq;
        svc.checks.seq = seq;
        let c = &svc.cfg.constraints;
        let job = Job {
            service: name.into(),
            seq,
            probe,
            timeout,
            agent,
            netns_of,
            env: svc.cfg.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            cwd: svc.cfg.cwd.clone(),
            user: c.user.clone(),
            group: c.group.clone(),
        };
        svc.checks.in_flight = Some((seq, Instant::now() + timeout + GRACE, false));
        if let Err(e) = probe::start(job, self.probe_tx.clone(), self.probe_wake.clone(), self.probe_pids.clone()) {
            if let Some(svc) = self.services.get_mut(name) {
                svc.checks.in_flight = None;
            }
            self.checked(name, Err(Miss::NoAnswer(format!("cannot start a thread for the probe: {e}"))));
        }
    }

    /// Probes have answered.
    pub(crate) fn on_probes(&mut self) {
        let mut buf = [0u8; 256];
        while matches!(read_some(&self.probe_wake_read, &mut buf), Some(n) if n > 0) {}
        while let Ok(done) = self.probe_rx.try_recv() {
            let Some(svc) = self.services.get_mut(&done.service) else { continue };
            let Some((seq, _, counted)) = svc.checks.in_flight else { continue };
            if seq != done.seq {
                continue;
            }
            svc.checks.in_flight = None;
            if !counted && svc.checks.seq == seq {
                self.checked(&done.service, done.result);
            } else {
                // Its run is over, or it already counted as failed: the next one may start.
                self.plan_checks(&done.service);
            }
        }
        if std::mem::take(&mut self.reap_after_probes) {
            self.reap();
        }
    }

    /// One probe's answer: readiness, or health.
    fn checked(&mut self, name: &str, result: Result<(), Miss>) {
        let now = Instant::now();
        let Some(svc) = self.services.get_mut(name) else { return };
        if svc.m.state != State::Running {
            return;
        }
        if !svc.m.ready {
            let Some(ReadyWhen::Probe { interval, .. }) = svc.cfg.ready else { return };
            match result {
                Ok(()) => {
                    svc.checks.next = None;
                    self.feed(name, Event::Ready);
                }
                Err(_) => {
                    svc.checks.pace = (svc.checks.pace * 2).min(interval);
                    svc.checks.next = Some(now + svc.checks.pace);
                }
            }
            return;
        }
        let Some(h) = &svc.cfg.health else { return };
        svc.checks.next = Some(now + h.interval);
        let in_start_period = now.duration_since(svc.m.since) < h.start_period;
        match result {
            Ok(()) => self.feed(name, Event::Checked { ok: true }),
            Err(_) if in_start_period => {}
            Err(Miss::NoAnswer(e)) => say(&format!("{name}: health check not run (not counted): {e}")),
            Err(Miss::Failed(e)) => {
                say(&format!("{name}: health check failed: {e}"));
                self.feed(name, Event::Checked { ok: false });
            }
        }
    }

    /// A socket for `notify = "systemd"`, for the process about to be spawned with spawn tag
    /// `tag`: in the abstract namespace for a local service; for an agent service, a file in
    /// the agent socket's directory, which its container has (bind-mounted), writable by all
    /// (the sender's credentials are checked). Returns it and the `NOTIFY_SOCKET` value.
    pub(crate) fn notify_socket(
        &mut self,
        tag: &str,
        agent_socket: Option<&Path>,
    ) -> std::io::Result<(Notify, String)> {
        let (sock, value, file) = match agent_socket.and_then(Path::parent) {
            None => {
                // Not guessable: a local user could otherwise bind the next names first.
                let name = format!("holden-notify-{tag}-{}", crate::state::new_run_id());
                let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
                (UnixDatagram::bind_addr(&addr)?, format!("@{name}"), None)
            }
            Some(dir) => {
                // Dead files come from crashes before this run: one sweep per directory will do.
                if self.notify_swept.insert(dir.to_path_buf()) {
                    sweep_dead_notify_sockets(dir);
                }
                let path = dir.join(format!("holden-notify-{tag}.sock"));
                let _ = std::fs::remove_file(&path);
                let sock = UnixDatagram::bind(&path)?;
                // Writable by the container's users (the sender is checked), through what was
                // bound, not the name: the directory is the container's too, and a symlink
                // swapped in would make chmod reach another file.
                let bound =
                    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_NOFOLLOW).open(&path)?;
                if !bound.metadata()?.file_type().is_socket() {
                    return Err(std::io::Error::other(format!("{} was replaced", path.display())));
                }
                let fd = std::os::fd::AsRawFd::as_raw_fd(&bound);
                std::fs::set_permissions(format!("/proc/self/fd/{fd}"), std::fs::Permissions::from_mode(0o666))?;
                (sock, path.to_string_lossy().into_owned(), Some(path))
            }
        };
        sock.set_nonblocking(true)?;
        holden_sys::socket::set_passcred(sock.as_fd())?;
        Ok((Notify::Systemd { sock, file }, value))
    }

    /// The readiness channel of a process just spawned: watched until it says it is ready.
    /// `holder_key`: the copy the fd holder keeps of a `notify = "fd"` pipe, forgotten with it.
    pub(crate) fn watch_notify(&mut self, name: &str, n: Notify, holder_key: Option<String>) {
        let token = self.token();
        let fd = n.as_fd();
        if let Err(e) = holden_sys::fd::set_nonblocking(fd, true).and_then(|()| self.epoll.add(fd, token, READABLE)) {
            say(&format!("{name}: cannot watch its readiness channel: {e}"));
            return;
        }
        self.targets.insert(token, Target::Notify(name.into(), n));
        if let Some(svc) = self.services.get_mut(name) {
            svc.checks.notify = Some(token);
            svc.notify_key = holder_key;
        }
    }

    /// The readiness channel is readable. The pipe: a newline is readiness; its end without one
    /// is not (the ready timeout decides). The socket: `READY=1` from the service's process or
    /// one of its descendants (the kernel's credentials say who sent it) is readiness.
    pub(crate) fn on_notify(&mut self, token: u64) {
        let Some(Target::Notify(name, n)) = self.targets.get(&token) else { return };
        let name = name.clone();
        let main = self.services.get(&name).and_then(|s| s.m.pid);
        let mut buf = [0u8; 4096];
        let (said, over) = match n {
            Notify::Fd(r) => {
                let got = read_some(r, &mut buf);
                let said = got.is_some_and(|n| buf[..n].contains(&b'\n'));
                (said, said || got == Some(0))
            }
            Notify::Systemd { sock, .. } => {
                let (mut said, mut warned) = (false, false);
                // A bounded number per turn, and one line about impostors: a flood can hold
                // neither the loop nor the log.
                for _ in 0..64 {
                    let Ok((len, pid)) = holden_sys::socket::recv_with_pid(sock.as_fd(), &mut buf) else { break };
                    let from_service = pid.zip(main).is_some_and(|(p, m)| crate::procfs::descends_from(p, m));
                    let ready = String::from_utf8_lossy(&buf[..len]).lines().any(|l| l == "READY=1");
                    if ready && from_service {
                        said = true;
                        break;
                    }
                    if ready && !std::mem::replace(&mut warned, true) {
                        say(&format!("{name}: READY=1 from pid {pid:?}, not the service's: ignored"));
                    }
                }
                (said, said)
            }
        };
        if over {
            self.unwatch_notify(token);
        }
        if said {
            self.feed(&name, Event::Ready);
        }
    }

    pub(crate) fn unwatch_notify(&mut self, token: u64) {
        if let Some(Target::Notify(name, fd)) = self.targets.remove(&token) {
            let _ = self.epoll.delete(&fd);
            if let Some(svc) = self.services.get_mut(&name) {
                svc.checks.notify = None;
                if let (Some(key), Some(h)) = (svc.notify_key.take(), &mut self.holder) {
                    h.forget(&key);
                }
            }
        }
    }

    /// Lines of `name`'s output (`TIMESTAMP STREAM TEXT` each): one that holds its `log`
    /// readiness text makes it ready.
    /// Lines from the pipe of an earlier process (`tag` another spawn's) do not count.
    pub(crate) fn log_ready(&mut self, name: &str, tag: Option<&str>, chunk: &[u8]) {
        let Some(svc) = self.services.get(name) else { return };
        let Some(ReadyWhen::Log(text)) = &svc.cfg.ready else { return };
        if svc.m.ready || svc.m.state != State::Running {
            return;
        }
        if tag.zip(svc.tag.as_deref()).is_some_and(|(a, b)| a != b) {
            return;
        }
        let chunk = String::from_utf8_lossy(chunk);
        if chunk.lines().any(|l| l.splitn(3, ' ').nth(2).is_some_and(|t| t.contains(text.as_str()))) {
            self.feed(name, Event::Ready);
        }
    }
}

/// One non-blocking read: `Some(n)` (0 at the end), `None` when nothing is there or on error.
pub(crate) fn read_some(mut pipe: &std::io::PipeReader, buf: &mut [u8]) -> Option<usize> {
    std::io::Read::read(&mut pipe, buf).ok()
}
