//! Reload: the configuration file is read again and `plan::reload_plan`'s answer carried out.
//! New services start, removed ones stop and are dropped, changed ones are restarted with their
//! new settings once their old process has stopped. Nothing changes if the file does not load.
//! Services are only fed events here: what must be spawned is queued for the loop.

use std::collections::BTreeMap;
use std::time::Instant;

use holden_orchestrator::config;
use holden_orchestrator::control::{ControlError, ReloadReply};
use holden_orchestrator::machine::{Event, State, Wanted};
use holden_orchestrator::plan;

use crate::supervisor::{Supervisor, Svc};

impl Supervisor {
    /// Applies the configuration file again.
    /// Reloads for `why` (`SIGHUP`, `holden reload`) and says what came of it on stdout.
    pub(crate) fn reload_and_say(&mut self, why: &str) -> Result<ReloadReply, ControlError> {
        let r = self.reload();
        match &r {
            Ok(r) => crate::supervisor::say(&format!(
                "reloaded ({why}): added {:?}, removed {:?}, changed {:?}",
                r.added, r.removed, r.changed
            )),
            Err(e) => crate::supervisor::say(&format!("reload ({why}): {e}")),
        }
        r
    }

    pub(crate) fn reload(&mut self) -> Result<ReloadReply, ControlError> {
        if self.shutting_down {
            return Err(ControlError::ReloadFailed { message: "shutting down".into() });
        }
        let new =
            crate::load_config(&self.config_path).map_err(|e| ControlError::ReloadFailed { message: e.to_string() })?;
        // Cgroups are set up at start-up: a reload can use them, not add them.
        match &self.cgroups {
            None => {
                let needs = new.services.iter().filter(|(_, s)| s.agent.is_none()).find_map(|(n, s)| {
                    let key = s.constraints.cgroup.first().map(|l| l.key);
                    key.or((s.kill_mode == config::KillMode::Cgroup).then_some("kill_mode = \"cgroup\""))
                        .map(|k| (n, k))
                });
                if let Some((name, key)) = needs {
                    let message = format!(
                        "service {name}: {key} needs cgroups, which this orchestrator did not set up at start-up \
                         (restart it)"
                    );
                    return Err(ControlError::ReloadFailed { message });
                }
            }
            Some(cg) => cg.check(&new).map_err(|message| ControlError::ReloadFailed { message })?,
        }
        let old: BTreeMap<String, config::Service> =
            self.services.iter().map(|(n, s)| (n.clone(), s.cfg.clone())).collect();
        let services = &self.services;
        let p = plan::reload_plan(&old, &new.services, |n| services.get(n).is_some_and(|s| s.replacement.is_some()));
        let now = Instant::now();
        // A service a previous reload removed, still stopping, and configured again: it stays,
        // and starts again with these settings once stopped.
        let mut p = p;
        for (name, cfg) in &new.services {
            if let Some(svc) = self.services.get_mut(name).filter(|s| s.removing) {
                svc.removing = false;
                p.changed.retain(|n| n != name);
                if svc.idle() {
                    svc.cfg = cfg.clone();
                    p.added.push(name.clone());
                } else {
                    svc.replacement = Some((cfg.clone(), true));
                    p.changed.push(name.clone());
                }
            }
        }
        for name in p.added.iter().filter(|n| !self.services.contains_key(*n)).cloned().collect::<Vec<_>>() {
            self.services.insert(name.clone(), Svc::new(new.services[&name].clone(), now));
        }
        for name in &p.changed {
            let cfg = new.services[name].clone();
            let svc = self.services.get_mut(name).expect("changed services exist");
            if svc.idle() {
                svc.cfg = cfg;
                svc.replacement = None;
            } else {
                let start = svc.m.wanted == Wanted::Up || svc.replacement.as_ref().is_some_and(|(_, s)| *s);
                svc.replacement = Some((cfg, start));
            }
        }
        for l in self.services.values_mut().filter_map(|s| s.log.as_mut()) {
            l.set_limits(new.log_max_size, new.log_keep);
        }
        // The new order covers new and kept services; removed ones stay at the end until gone.
        let mut order = config::start_order(&new.services);
        order.extend(p.removed.iter().cloned());
        self.order = order;
        let (control_socket, state_dir) = (self.cfg.control_socket.clone(), self.cfg.state_dir.clone());
        self.cfg = new;
        // Where the socket and the state live cannot change under a running supervisor.
        self.cfg.control_socket = control_socket;
        self.cfg.state_dir = state_dir;
        for name in p.removed.iter().rev() {
            let svc = self.services.get_mut(name).expect("removed services exist until stopped");
            svc.removing = true;
            if svc.idle() {
                self.services.remove(name);
                self.order.retain(|n| n != name);
            } else {
                self.feed(name, Event::Stop);
            }
        }
        for name in self.ordered(&p.changed, true) {
            if self.services[&name].replacement.is_some() {
                self.feed(&name, Event::Stop);
            }
        }
        for name in self.order.clone() {
            let Some(s) = self.services.get(&name) else { continue };
            let restart_idle = p.changed.contains(&name)
                && s.replacement.is_none()
                && !s.stopped_by_hand
                && matches!(s.m.state, State::Exited | State::Failed | State::BackingOff);
            if p.added.contains(&name) || restart_idle {
                self.feed(&name, Event::Start);
            }
        }
        self.state_dirty = true;
        Ok(ReloadReply { added: p.added, removed: p.removed, changed: p.changed })
    }
}
