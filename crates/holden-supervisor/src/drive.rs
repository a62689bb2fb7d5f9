//! Driving the state machine: events fed to `machine::next`, its actions carried out, and what
//! a state change sets off (an event for followers, a line on stdout, the state file marked
//! for writing, the end of a reload's replacement, the next step of a shutdown).

use std::time::{Instant, SystemTime};

use holden_orchestrator::config::KillMode;
use holden_orchestrator::control::StateChange;
use holden_orchestrator::machine::{self, Action, Event, State, Wanted};
use holden_orchestrator::plan;
use holden_sys::process;

use crate::conn::Follow;
use crate::exits::exit_text;
use crate::supervisor::{say, say_at, Supervisor};

impl Supervisor {
    // ---- the state machine -----------------------------------------------------------------

    /// Feeds one event to a service's state machine and carries out the actions. A spawn is
    /// queued, never started here.
    pub(crate) fn feed(&mut self, name: &str, event: Event) {
        let Some(svc) = self.services.get_mut(name) else { return };
        let before = (svc.m.state, svc.m.pid, svc.m.ready, svc.m.health);
        let now = Instant::now();
        let (m, actions) = machine::next(&svc.policy(), &svc.m, event, now);
        svc.m = m;
        svc.fed_at = now;
        let after = (svc.m.state, svc.m.pid, svc.m.ready, svc.m.health);
        let held = svc.waiting.is_some();
        let mut spawn = false;
        for a in actions {
            match a {
                // After the change is told: "starting", then what it waits for, if anything.
                Action::Spawn => spawn = true,
                Action::Signal(sig) => self.signal(name, sig),
                // The deadline is in the machine's state; the loop's timeout follows it.
                Action::ArmTimer(_) => {}
            }
        }
        if (before.0, before.1) != (after.0, after.1) {
            // Unhealthy, and so stopping: both are told.
            if after.3 != before.3 && after.3 == machine::Health::Unhealthy {
                self.tell(name, "unhealthy");
            }
            self.changed(name, "state");
        } else if before.2 != after.2 {
            self.changed(name, "ready");
        } else if before.3 != after.3 {
            self.changed(name, after.3.name());
        } else if held {
            // A held service asked to stop gives up its start.
            self.recheck_dependents();
        }
        if spawn {
            self.queue_spawn(name);
        }
    }

    /// Sends the event of a change of `kind` (`state`, `ready`, `healthy`, `unhealthy`,
    /// `waiting`) to the clients that follow events.
    pub(crate) fn tell(&mut self, name: &str, kind: &str) {
        let Some(svc) = self.services.get(name) else { return };
        let change = StateChange {
            time: crate::text::timestamp(self.when(name, kind)),
            service: name.into(),
            state: svc.m.state.name().into(),
            pid: svc.m.pid,
            last_exit: svc.m.last_exit.map(exit_text),
            last_error: svc.m.last_error.clone(),
            ready: svc.m.ready,
            health: svc.m.health.name().into(),
            change: kind.into(),
            waiting: svc.waiting.clone(),
        };
        self.broadcast(
            |f| *f == Follow::Events,
            || holden_proto::encode_reply(&serde_json::json!({ "event": change }), true),
        );
    }

    /// When a change of `kind` happened: a state change when the state machine made it (its
    /// clock, not the time it is told, so that the times on record measure its delays exactly);
    /// anything else now.
    fn when(&self, name: &str, kind: &str) -> SystemTime {
        match self.services.get(name) {
            Some(s) if kind == "state" => SystemTime::now() - s.fed_at.elapsed(),
            _ => SystemTime::now(),
        }
    }

    /// After a change of `kind` (see [`Supervisor::tell`]): tell, record, plan probes, move
    /// dependents, and finish reloads, stops and shutdown.
    pub(crate) fn changed(&mut self, name: &str, kind: &str) {
        let Some(svc) = self.services.get(name) else { return };
        let mut line = format!("{name}: {}", if kind == "state" { svc.m.state.name() } else { kind });
        if let (Some(pid), "state") = (svc.m.pid, kind) {
            line += &format!(" pid {pid}");
        }
        let last_exit = svc.m.last_exit.map(exit_text);
        match (svc.m.state, &last_exit, &svc.m.last_error) {
            _ if kind == "ready" || kind == "healthy" => {}
            (State::Starting, ..) => {}
            (_, _, Some(err)) if svc.m.state != State::Running => line += &format!(" ({err})"),
            (State::Running, ..) => {}
            (_, Some(exit), _) => line += &format!(" (last exit: {exit})"),
            _ => {}
        }
        // Clients that follow events first: they act on them; stdout is a record.
        self.tell(name, kind);
        say_at(&line, self.when(name, kind));
        self.plan_checks(name);
        if self.notify.active() {
            self.notify.send(&format!("STATUS={}", self.summary()));
        }
        self.state_dirty = true;
        let svc = &self.services[name];
        if svc.idle() {
            if svc.removing {
                if let Some(dir) = self.services.get_mut(name).and_then(|s| s.cgroup_dir.take()) {
                    self.retire_cgroup(dir);
                }
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
        self.recheck_dependents();
        self.advance_stops();
        if self.shutting_down {
            self.advance_shutdown();
        }
    }

    /// Stops, in reverse dependency order, every service whose dependents are all down
    /// (`plan::shutdown_next`). One pass at a time: the state changes it causes call back
    /// here and must not start a nested pass each.
    pub(crate) fn advance_shutdown(&mut self) {
        if self.in_shutdown_pass {
            return;
        }
        self.in_shutdown_pass = true;
        let dependents = plan::dependents(self.services.iter().map(|(n, s)| (n, s.cfg.depends_on.as_slice())));
        for _ in 0..=self.services.len() {
            let order = self.order.clone();
            let services = &self.services;
            let next = plan::shutdown_next(&order, &dependents, |n| {
                services.get(n).map(|s| plan::Down {
                    asked: s.m.wanted == Wanted::Down && matches!(s.m.state, State::Stopping | State::Stopped),
                    settled: s.idle() && s.m.wanted == Wanted::Down,
                })
            });
            if next.is_empty() {
                break;
            }
            for name in next {
                self.feed(&name, Event::Stop);
            }
        }
        self.in_shutdown_pass = false;
    }

    /// A cgroup no service uses any more: what is left in it is killed, and it is removed now
    /// if it is empty, else at shutdown.
    pub(crate) fn retire_cgroup(&mut self, dir: std::path::PathBuf) {
        if crate::cgroups::populated(&dir) {
            crate::cgroups::kill(&dir);
        }
        if !crate::cgroups::remove(&dir) {
            self.retired_cgroups.push(dir);
        }
    }

    // ---- actions out -----------------------------------------------------------------------

    pub(crate) fn signal(&mut self, name: &str, sig: i32) {
        let Some(svc) = self.services.get(name) else { return };
        let Some(proc) = &svc.proc else { return };
        let r = match (svc.cfg.kill_mode, svc.m.pid) {
            (_, Some(pid)) if self.protected.contains(&pid) => return,
            // A process that is not (or no longer) its group's leader (an adopted one whose
            // kill_mode changed) is signalled alone rather than not at all.
            (KillMode::Group, Some(pid)) => match process::pidfd_send_signal_group(proc.pidfd(), pid, sig) {
                Ok(how) => {
                    let how = match how {
                        process::GroupSignal::Pidfd => "through its leader's pidfd".to_string(),
                        process::GroupSignal::KillPgid => format!("with kill(-{pid})"),
                    };
                    say(&format!("{name}: {} to process group {pid} {how}", crate::text::signal_name(sig)));
                    Ok(())
                }
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => process::pidfd_send_signal(proc.pidfd(), sig),
                Err(e) => Err(e),
            },
            _ => process::pidfd_send_signal(proc.pidfd(), sig),
        };
        // At the deadline, everything in the service's cgroup goes with it.
        if let (KillMode::Cgroup, libc::SIGKILL, Some(dir)) = (svc.cfg.kill_mode, sig, &svc.cgroup_dir) {
            crate::cgroups::kill(dir);
        }
        // ESRCH: it has just ended; its pidfd will say so.
        if let Err(e) = r {
            if e.raw_os_error() != Some(libc::ESRCH) {
                say(&format!("{name}: signal {}: {e}", crate::text::signal_name(sig)));
            }
        }
    }
}
