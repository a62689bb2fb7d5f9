//! Dependency conditions in the loop: a service whose `depends_on` conditions do not hold is
//! held in `starting` before its spawn ("waiting for db: ready") and spawned once they do; a
//! start by hand pulls in what a service depends on, a stop by hand stops what depends on it
//! first; dependents with `restart = true` restart once their dependency meets the condition
//! again after it stopped meeting it.

use holden_orchestrator::config::Condition;
use holden_orchestrator::machine::{Event, Exit, State, Wanted};

use crate::supervisor::{say, Supervisor};

impl Supervisor {
    /// Whether `dep` meets `condition` now.
    fn holds(&self, dep: &str, condition: Condition) -> bool {
        let Some(d) = self.services.get(dep) else { return true };
        match condition {
            Condition::Started => true,
            Condition::Ready => d.m.state == State::Running && d.m.ready,
            // Exited 0 by itself: stopped for a failed check (ready_timeout, unhealthy) is no
            // completion, whatever its exit status. Recorded as completed by an earlier run: its
            // status is gone, its intent is not.
            Condition::Completed => {
                d.m.state == State::Exited
                    && d.m.last_error.is_none()
                    && matches!(d.m.last_exit, Some(Exit::Code(0)) | None)
            }
        }
    }

    /// What service `name` still waits for, if anything: "waiting for db: ready", and why it
    /// may never come ("db is failed: start limit reached").
    pub(crate) fn unmet(&self, name: &str) -> Option<String> {
        let svc = self.services.get(name)?;
        let (dep, terms) = svc.cfg.dependencies.iter().find(|(d, t)| !self.holds(d, t.condition))?;
        let mut why = format!("waiting for {dep}: {}", terms.condition.name());
        if let Some(d) = self.services.get(dep) {
            let hopeless = match d.m.state {
                State::Failed | State::Stopped => true,
                State::Exited => {
                    terms.condition == Condition::Ready
                        || d.m.last_exit != Some(Exit::Code(0))
                        || d.m.last_error.is_some()
                }
                _ => false,
            };
            // Not hopeless, but in trouble: why its last run ended (not ready in time, unhealthy).
            let troubled = d.m.state == State::BackingOff && d.m.last_error.is_some();
            if hopeless || troubled {
                why += &format!(" ({dep} is {}", d.m.state.name());
                if let Some(e) = &d.m.last_error {
                    why += &format!(": {e}");
                } else if let Some(e) = d.m.last_exit {
                    why += &format!(": last exit {}", crate::exits::exit_text(e));
                }
                why += ")";
            }
        }
        Some(why)
    }

    /// The machine asked for a spawn: queued, or held while a dependency condition fails.
    pub(crate) fn queue_spawn(&mut self, name: &str) {
        // A fresh start waits for its conditions anyway: no restart is owed to it.
        if let Some(s) = self.services.get_mut(name) {
            s.restart_pending = false;
        }
        match self.unmet(name) {
            None => self.spawn_queue.push_back(name.into()),
            Some(why) => self.hold(name, why),
        }
    }

    fn hold(&mut self, name: &str, why: String) {
        let Some(svc) = self.services.get_mut(name) else { return };
        if svc.waiting.as_ref() == Some(&why) {
            return;
        }
        say(&format!("{name}: {why}"));
        svc.waiting = Some(why);
        self.tell(name, "waiting");
    }

    /// After any change: held services whose conditions now hold are spawned, those no longer
    /// wanted give up their start, the others' reasons are brought up to date; and dependents
    /// with `restart = true` are marked or restarted. One pass at a time (changes it causes
    /// ask for another).
    pub(crate) fn recheck_dependents(&mut self) {
        if self.in_recheck {
            self.recheck_again = true;
            return;
        }
        self.in_recheck = true;
        loop {
            self.recheck_again = false;
            let held: Vec<String> = self
                .order
                .iter()
                .filter(|n| self.services.get(*n).is_some_and(|s| s.waiting.is_some()))
                .cloned()
                .collect();
            for name in held {
                let wanted_down = self.services.get(&name).is_none_or(|s| s.m.wanted == Wanted::Down);
                if wanted_down {
                    if let Some(s) = self.services.get_mut(&name) {
                        s.waiting = None;
                    }
                    self.feed(&name, Event::Withdrawn);
                    continue;
                }
                match self.unmet(&name) {
                    None => {
                        if let Some(s) = self.services.get_mut(&name) {
                            s.waiting = None;
                        }
                        self.spawn_queue.push_back(name);
                    }
                    Some(why) => self.hold(&name, why),
                }
            }
            self.restart_dependents();
            if !self.recheck_again {
                break;
            }
        }
        self.in_recheck = false;
    }

    /// `restart = true`: a running dependent is marked when its dependency, having met the
    /// condition, stops meeting it (a change seen, never a state found: an adopted or early
    /// dependent is not restarted for a dependency that was simply not up yet), and restarted
    /// when it meets it again.
    fn restart_dependents(&mut self) {
        let mut restart = Vec::new();
        let mut seen = Vec::new();
        for (name, svc) in &self.services {
            for (dep, terms) in &svc.cfg.dependencies {
                if !terms.restart || terms.condition == Condition::Completed {
                    continue;
                }
                let holds = match terms.condition {
                    Condition::Started => self.services.get(dep).is_some_and(|d| d.m.state == State::Running),
                    c => self.holds(dep, c),
                };
                let held = svc.dep_held.get(dep).copied();
                seen.push((name.clone(), dep.clone(), holds));
                if held == Some(true) && !holds && svc.m.state == State::Running && svc.m.wanted == Wanted::Up {
                    restart.push((name.clone(), false));
                } else if holds && svc.restart_pending {
                    restart.push((name.clone(), true));
                }
            }
        }
        for (name, dep, holds) in seen {
            if let Some(svc) = self.services.get_mut(&name) {
                svc.dep_held.insert(dep, holds);
            }
        }
        for (name, now) in restart {
            let Some(svc) = self.services.get_mut(&name) else { continue };
            if !now {
                svc.restart_pending = true;
                continue;
            }
            svc.restart_pending = false;
            if svc.m.state == State::Running && svc.m.wanted == Wanted::Up {
                say(&format!("{name}: restarting: a dependency is back"));
                self.feed(&name, Event::Stop);
                self.feed(&name, Event::Start);
            }
        }
    }

    /// `names` and, before them, everything they depend on (transitively), in start order.
    pub(crate) fn with_dependencies(&self, names: &[String]) -> Vec<String> {
        let mut want: Vec<String> = names.to_vec();
        let mut i = 0;
        while i < want.len() {
            if let Some(s) = self.services.get(&want[i]) {
                for d in &s.cfg.depends_on {
                    if !want.contains(d) {
                        want.push(d.clone());
                    }
                }
            }
            i += 1;
        }
        self.ordered(&want, false)
    }

    /// What a start of `names` starts: them, and what they depend on that is not up, except a
    /// dependency that has completed (a oneshot, a migration: not run again) unless something
    /// that comes up by this start needs it `started` or `ready` (a daemon that exited 0).
    pub(crate) fn to_start(&self, names: &[String]) -> Vec<String> {
        let all = self.with_dependencies(names);
        // Dependents before their dependencies: what comes up is known before what it needs.
        let mut coming: Vec<&str> = Vec::new();
        let mut started = vec![false; all.len()];
        for (i, n) in all.iter().enumerate().rev() {
            let needed = coming
                .iter()
                .filter_map(|d| self.services.get(*d))
                .any(|d| d.cfg.dependencies.get(n).is_some_and(|t| t.condition != Condition::Completed));
            started[i] = names.contains(n) || needed || !self.holds(n, Condition::Completed);
            let up = self.services.get(n).is_some_and(|s| {
                s.m.wanted == Wanted::Up && matches!(s.m.state, State::Running | State::Starting | State::BackingOff)
            });
            if started[i] && (names.contains(n) || !up) {
                coming.push(n);
            }
        }
        all.iter().zip(started).filter(|(_, s)| *s).map(|(n, _)| n.clone()).collect()
    }

    /// `names` and everything that depends on them (transitively), in stop order.
    pub(crate) fn with_dependents(&self, names: &[String]) -> Vec<String> {
        let mut want: Vec<String> = names.to_vec();
        let mut i = 0;
        while i < want.len() {
            let n = want[i].clone();
            for (name, s) in &self.services {
                if s.cfg.depends_on.contains(&n) && !want.contains(name) {
                    want.push(name.clone());
                }
            }
            i += 1;
        }
        self.ordered(&want, true)
    }

    /// Stops asked for by hand go out in stop order: a service is stopped once everything
    /// that depends on it and is being stopped too has stopped.
    pub(crate) fn advance_stops(&mut self) {
        if self.pending_stops.is_empty() {
            return;
        }
        for name in self.ordered(&self.pending_stops.iter().cloned().collect::<Vec<_>>(), true) {
            if !self.pending_stops.contains(&name) {
                continue;
            }
            let blocked = self.services.iter().any(|(d, s)| {
                s.cfg.depends_on.contains(&name)
                    && (self.pending_stops.contains(d) || (s.m.wanted == Wanted::Down && !s.idle()))
            });
            if !blocked {
                self.pending_stops.remove(&name);
                self.feed(&name, Event::Stop);
            }
        }
    }
}
