//! Taking over after a predecessor, and making sure nothing escapes.
//!
//! At start-up the supervisor adopts each recorded process that is provably the same process
//! (identity and start time, this boot, never PID 1, itself or an ancestor), takes back its log
//! pipes from the holder, and restores what the operator or the policy decided (stopped,
//! completed, failed). Then it sweeps: every process tagged by an earlier run (`HOLDEN_SPAWN`)
//! that does not belong to an adopted process is ended: a process started but not yet recorded
//! when the predecessor died, or a daemon left by a service that is gone. At a clean shutdown
//! the same sweep ends whatever services left behind, tagged or re-parented to us.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use holden_orchestrator::config::ReadyWhen;
use holden_orchestrator::machine::{Event, State, Wanted};
use holden_sys::process;

use crate::exits::Proc;
use crate::procfs;
use crate::state::{self, Intent, Snapshot, TAG_VAR};
use crate::supervisor::{say, Supervisor, Svc};

/// How long strays get between SIGTERM and SIGKILL.
const STRAY_GRACE: Duration = Duration::from_secs(2);
/// How long a sweep may take at all.
const SWEEP_LIMIT: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Takes over what the predecessor recorded, restores intents, and sweeps strays.
    pub(crate) fn adopt(&mut self, previous: Snapshot) {
        let mut held: HashMap<String, OwnedFd> = HashMap::new();
        if let Some(h) = &mut self.holder {
            match h.take_all() {
                Ok(fds) => held.extend(fds),
                Err(e) => say(&format!("log pipe holder: take: {e}")),
            }
        }
        let mut adopted_tags = HashSet::new();
        for entry in previous.processes {
            let Some(pidfd) = state::reopen(&entry, &self.protected) else {
                say(&format!("{}: pid {} from the last run is gone", entry.service, entry.pid));
                continue;
            };
            if !self.services.contains_key(&entry.service) {
                if entry.tag.is_some() {
                    // The sweep below ends it, and whatever carries its tag (TERM, then KILL).
                    say(&format!(
                        "{}: pid {} from the last run is no longer configured; ending it",
                        entry.service, entry.pid
                    ));
                } else {
                    say(&format!(
                        "{}: pid {} from the last run is no longer configured; sending SIGTERM",
                        entry.service, entry.pid
                    ));
                    let _ = process::pidfd_send_signal(&pidfd, libc::SIGTERM);
                    let _ = process::pidfd_send_signal(&pidfd, libc::SIGCONT);
                }
                continue;
            }
            let name = entry.service.clone();
            let svc = self.services.get_mut(&name).expect("present");
            if svc.proc.is_some() {
                say(&format!("{name}: pid {} is recorded twice; adopting one", entry.pid));
                continue;
            }
            svc.proc = Some(Proc::Adopted { pidfd });
            svc.identity = Some(entry.identity);
            svc.start_time = entry.start_time.or_else(|| procfs::start_time(entry.pid));
            svc.tag = entry.tag.clone();
            if let Err(e) = self.watch_pidfd(&name) {
                say(&format!("{name}: cannot watch pidfd of pid {}: {e}; not adopting it", entry.pid));
                let svc = self.services.get_mut(&name).expect("present");
                (svc.proc, svc.identity, svc.tag) = (None, None, None);
                continue;
            }
            if let Some(t) = &entry.tag {
                adopted_tags.insert(t.clone());
            }
            let captured = Svc::logs_captured(&self.services[&name].cfg);
            let mut reattached = false;
            for which in ["stdout", "stderr"] {
                let key = format!("{name}/{which}/{}", entry.tag.as_deref().unwrap_or(""));
                if let Some(fd) = held.remove(&key) {
                    self.watch_pipe(&name, which, fd, Some(key));
                    reattached = true;
                }
            }
            if captured && !reattached {
                for (fd, which) in reattach_pipes(entry.pid) {
                    // The holder keeps this one too from now on.
                    let key = entry.tag.as_ref().map(|t| format!("{name}/{which}/{t}"));
                    if let (Some(h), Some(k)) = (&mut self.holder, &key) {
                        h.store(k, fd.as_fd());
                    }
                    self.watch_pipe(&name, which, fd, key);
                }
            }
            say(&format!("{name}: adopting pid {} from the last run", entry.pid));
            let age =
                self.services[&name].start_time.and_then(holden_sys::process::age_from_start_ticks).unwrap_or_default();
            self.feed(&name, Event::Adopted { pid: entry.pid, age });
            // Notification and log readiness are said once: what was recorded stands. Probes
            // are simply run again.
            let said_once = matches!(
                self.services[&name].cfg.ready,
                Some(ReadyWhen::Fd(_) | ReadyWhen::Systemd | ReadyWhen::Log(_))
            );
            if entry.ready && said_once {
                self.feed(&name, Event::Ready);
            }
            // Not ready yet with notify = "fd": the holder kept the pipe's read end, so its
            // newline (and the process) survived the crash; watched again.
            let key = format!("{name}/notify/{}", entry.tag.as_deref().unwrap_or(""));
            if let Some(fd) = held.remove(&key) {
                if self.services[&name].m.ready {
                    if let Some(h) = &mut self.holder {
                        h.forget(&key);
                    }
                } else {
                    self.watch_notify(&name, crate::ready::Notify::Fd(std::io::PipeReader::from(fd)), Some(key));
                }
            }
        }
        // Pipes of processes not adopted: what they still hold goes to the log, then they end.
        held.retain(|key, _| {
            let notify = key.contains("/notify/");
            if let (true, Some(h)) = (notify, &mut self.holder) {
                h.forget(key);
            }
            !notify
        });
        for (key, fd) in held {
            let mut parts = key.rsplitn(3, '/');
            let (_tag, which, service) = (parts.next(), parts.next(), parts.next().map(str::to_owned));
            let which = match which {
                Some("stdout") => "stdout",
                Some("stderr") => "stderr",
                _ => "output",
            };
            match service.filter(|s| self.services.contains_key(s)) {
                Some(s) => self.watch_pipe(&s, which, fd, Some(key)),
                None => {
                    if let Some(h) = &mut self.holder {
                        h.forget(&key);
                    }
                }
            }
        }
        self.restore_intents(&previous.intents);
        self.adopt_cgroups();
        self.sweep_strays(&adopted_tags);
    }

    /// After a crash, the services' cgroups are how what they forked is found, even processes
    /// that shed their spawn tag: an adopted service keeps its cgroup (its limits, its
    /// `kill_mode = "cgroup"`, its usage), and the cgroup of a service not adopted is emptied.
    fn adopt_cgroups(&mut self) {
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            let Some(dir) = self.cgroup_dir_of(&name) else { continue };
            let svc = self.services.get_mut(&name).expect("present");
            let main = svc.m.pid.filter(|_| svc.proc.is_some());
            match main.and_then(crate::cgroups::cgroup_of) {
                Some(got) if got.starts_with(&dir) => {
                    svc.oom_base = crate::cgroups::oom_kills(&dir);
                    svc.cgroup_dir = Some(dir);
                }
                _ if crate::cgroups::populated(&dir) => {
                    say(&format!("{name}: ending what the last run left in {}", dir.display()));
                    crate::cgroups::kill(&dir);
                }
                _ => {}
            }
        }
    }

    fn restore_intents(&mut self, intents: &std::collections::BTreeMap<String, Intent>) {
        for (name, intent) in intents {
            let Some(svc) = self.services.get_mut(name) else { continue };
            if svc.proc.is_some() {
                // Adopted while it was being stopped by hand: the stop goes on.
                if *intent == Intent::Stopped {
                    svc.stopped_by_hand = true;
                    say(&format!("{name}: was being stopped by hand in the last run; stopping it"));
                    self.feed(name, Event::Stop);
                }
                continue;
            }
            svc.m.wanted = Wanted::Down;
            let (state, what) = match intent {
                Intent::Stopped => {
                    svc.stopped_by_hand = true;
                    (State::Stopped, "stopped by hand")
                }
                Intent::Completed => (State::Exited, "completed"),
                Intent::Failed => (State::Failed, "failed at its start limit"),
            };
            svc.m.state = state;
            say(&format!("{name}: {what} in the last run; left {}", state.name()));
        }
    }

    /// Whether `pid` carries a tag of one of `runs` (and not of a process to keep).
    fn tagged(pid: i32, runs: &[String], keep: &HashSet<String>) -> bool {
        procfs::env_value(pid, TAG_VAR).is_some_and(|tag| {
            let run = tag.split('.').next().unwrap_or("");
            runs.iter().any(|r| r == run) && !keep.contains(&tag)
        })
    }

    /// Ends processes of earlier runs that belong to nothing adopted; then only the runs of
    /// adopted processes need remembering.
    fn sweep_strays(&mut self, adopted: &HashSet<String>) {
        if self.runs.is_empty() {
            return;
        }
        let runs = self.runs.clone();
        if self.end_processes("processes of the last run that belong to no adopted service", |pid| {
            Supervisor::tagged(pid, &runs, adopted)
        }) {
            self.runs.retain(|r| adopted.iter().any(|t| t.split('.').next() == Some(r.as_str())));
        }
    }

    /// At shutdown: whatever services left behind (re-parented to this subreaper, or tagged
    /// by this run or an earlier one) gets SIGTERM, then SIGKILL, and is reaped.
    pub(crate) fn end_strays(&mut self) {
        let mut runs = self.runs.clone();
        runs.push(self.run_id.clone());
        let me = std::process::id() as i32;
        let none = HashSet::new();
        self.end_processes("processes that services left behind", |pid| {
            procfs::parent_of(pid) == Some(me) || Supervisor::tagged(pid, &runs, &none)
        });
    }

    /// SIGTERM + SIGCONT to every running process `is_target` accepts (never a protected one),
    /// SIGKILL after [`STRAY_GRACE`], until none is left or [`SWEEP_LIMIT`] passes (a process
    /// stuck in the kernel cannot be ended: it is reported, and the caller goes on). Each
    /// process is checked again after its pidfd is opened, so a pid reused meanwhile is never
    /// signalled. Only at start-up and shutdown, outside the loop. Returns whether none is left.
    fn end_processes(&mut self, what: &str, is_target: impl Fn(i32) -> bool) -> bool {
        let start = Instant::now();
        let mut signalled = HashSet::new();
        let mut said = false;
        loop {
            while let Ok(Some(_)) = process::reap_any() {}
            let left: Vec<i32> = procfs::all_pids()
                .filter(|pid| !self.protected.contains(pid) && procfs::is_running(*pid) && is_target(*pid))
                .collect();
            if left.is_empty() {
                return true;
            }
            if !said {
                say(&format!("ending {} {what}: {left:?}", left.len()));
                said = true;
            }
            if start.elapsed() >= SWEEP_LIMIT {
                say(&format!("could not end {left:?} within {SWEEP_LIMIT:?}; going on"));
                return false;
            }
            let late = start.elapsed() >= STRAY_GRACE;
            for pid in left {
                let Ok(fd) = process::pidfd_open(pid) else { continue };
                // The pidfd now pins this process: check it is still the one meant.
                if !is_target(pid) {
                    continue;
                }
                if late {
                    let _ = process::pidfd_send_signal(&fd, libc::SIGKILL);
                } else if signalled.insert(pid) {
                    let _ = process::pidfd_send_signal(&fd, libc::SIGTERM);
                    let _ = process::pidfd_send_signal(&fd, libc::SIGCONT);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Opens new read ends of an adopted process's stdout and stderr pipes (through
/// `/proc/PID/fd`), so its output is captured again when no holder kept them. One pipe shared by
/// both is opened once.
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
