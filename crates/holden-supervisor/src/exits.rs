//! Processes and their ends: a spawned or adopted process, its pidfd in the epoll set, its
//! exit status read once the pidfd says it ended (retried briefly when the status is not
//! readable yet), and orphans re-parented to this subreaper reaped.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use holden_orchestrator::config::KillMode;
use holden_orchestrator::machine::{Event, Exit};
use holden_sys::event::READABLE;
use holden_sys::process;

use crate::supervisor::{Supervisor, Target};

/// After a pidfd reports an exit, how long to wait for the exit status to become readable
/// (an agent reaps its children within microseconds; an adopted process's parent may not).
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(1);

/// A running process: spawned by this supervisor, or adopted from a predecessor.
pub(crate) enum Proc {
    Child(holden::Child),
    Adopted { pidfd: OwnedFd },
}

impl Proc {
    pub(crate) fn pidfd(&self) -> BorrowedFd<'_> {
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

pub(crate) fn exit_text(e: Exit) -> String {
    match e {
        Exit::Code(c) => format!("code {c}"),
        Exit::Signal(s) => format!("signal {}", crate::text::signal_name(s)),
        Exit::Unknown => "unknown".into(),
        Exit::OomKilled => "oom-killed".into(),
    }
}

impl Supervisor {
    /// Reads a service's exit status after its pidfd reported the exit; if the status is not
    /// there yet, looks again shortly, and gives up (exit unknown) after `EXIT_STATUS_WAIT`.
    pub(crate) fn check_exit(&mut self, name: &str) {
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
        let exit = self.cgroup_exit(name, exit);
        self.unwatch_pidfd(name);
        let svc = self.services.get_mut(name).expect("present");
        svc.proc = None;
        svc.identity = None;
        svc.start_time = None;
        self.feed(name, Event::Exited(exit));
    }

    /// A service's exit as its cgroup tells it: a SIGKILL while the OOM killer struck there is
    /// `oom-killed`; with `kill_mode = "cgroup"`, what the main process left in the cgroup is
    /// killed.
    fn cgroup_exit(&self, name: &str, exit: Exit) -> Exit {
        let Some(svc) = self.services.get(name) else { return exit };
        let Some(dir) = &svc.cgroup_dir else { return exit };
        if svc.cfg.kill_mode == KillMode::Cgroup && crate::cgroups::populated(dir) {
            crate::cgroups::kill(dir);
        }
        if exit == Exit::Signal(libc::SIGKILL) && crate::cgroups::oom_kills(dir) > svc.oom_base {
            return Exit::OomKilled;
        }
        exit
    }

    /// Adds the service's pidfd to the epoll set.
    pub(crate) fn watch_pidfd(&mut self, name: &str) -> std::io::Result<()> {
        let token = self.token();
        let svc = self.services.get_mut(name).expect("present");
        let proc = svc.proc.as_ref().expect("a process to watch");
        self.epoll.add(proc.pidfd(), token, READABLE)?;
        svc.pidfd_token = Some(token);
        self.targets.insert(token, Target::Pidfd(name.into()));
        Ok(())
    }

    /// Takes the service's pidfd out of the epoll set, if it is there.
    pub(crate) fn unwatch_pidfd(&mut self, name: &str) {
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
    pub(crate) fn reap(&mut self) {
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
                None => match self.probe_pids.try_lock() {
                    // A local exec probe: its thread reaps it.
                    Ok(probes) if probes.contains(&pid) => {}
                    Err(std::sync::TryLockError::Poisoned(p)) if p.get_ref().contains(&pid) => {}
                    // A probe's thread holds the lock while it spawns, until its child has
                    // exec'd, which a hung file system can make last: this may be that child.
                    // Never waited for here; tried again once the spawn is done (the probe
                    // wakes the loop).
                    Err(std::sync::TryLockError::WouldBlock) => self.reap_after_probes = true,
                    _ => {
                        let _ = process::reap_pid(pid);
                    }
                },
            }
        }
    }
}
