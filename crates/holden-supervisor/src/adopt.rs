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
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use holden_orchestrator::machine::{Event, State, Wanted};
use holden_sys::process;

use crate::exits::Proc;
use crate::procfs;
use crate::state::{self, Intent, Snapshot, TAG_VAR};
use crate::supervisor::{say, Supervisor, Svc};

/// How long strays get between SIGTERM and SIGKILL.
const STRAY_GRACE: Duration = Duration::from_secs(2);

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
                say(&format!(
                    "{}: pid {} from the last run is no longer configured; sending SIGTERM",
                    entry.service, entry.pid
                ));
                let _ = process::pidfd_send_signal(&pidfd, libc::SIGTERM);
                let _ = process::pidfd_send_signal(&pidfd, libc::SIGCONT);
                if let Some(t) = &entry.tag {
                    adopted_tags.insert(t.clone());
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
                    self.watch_pipe(&name, which, fd, None);
                }
            }
            say(&format!("{name}: adopting pid {} from the last run", entry.pid));
            self.feed(&name, Event::Adopted { pid: entry.pid });
        }
        // Pipes of processes not adopted: what they still hold goes to the log, then they end.
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
        self.sweep_strays(&adopted_tags);
    }

    fn restore_intents(&mut self, intents: &std::collections::BTreeMap<String, Intent>) {
        for (name, intent) in intents {
            let Some(svc) = self.services.get_mut(name) else { continue };
            if svc.proc.is_some() {
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

    /// Processes carrying a tag of one of `runs` (and not of a process to keep), minus the
    /// protected ones.
    fn tagged(&self, runs: &[String], keep: &HashSet<String>) -> Vec<i32> {
        procfs::all_pids()
            .filter(|pid| !self.protected.contains(pid))
            .filter(|&pid| {
                procfs::env_value(pid, TAG_VAR).is_some_and(|tag| {
                    let run = tag.split('.').next().unwrap_or("");
                    runs.iter().any(|r| r == run) && !keep.contains(&tag)
                })
            })
            .filter(|&pid| procfs::is_running(pid))
            .collect()
    }

    /// Ends processes of earlier runs that belong to nothing adopted.
    fn sweep_strays(&mut self, adopted: &HashSet<String>) {
        if self.runs.is_empty() {
            return;
        }
        let strays = self.tagged(&self.runs.clone(), adopted);
        if strays.is_empty() {
            return;
        }
        say(&format!(
            "ending {} processes of the last run that belong to no adopted service: {strays:?}",
            strays.len()
        ));
        let runs = self.runs.clone();
        self.end_processes(|s| s.tagged(&runs, adopted));
    }

    /// At shutdown: whatever services left behind (re-parented to this subreaper, or tagged
    /// by this run or an earlier one) gets SIGTERM, then SIGKILL, and is reaped.
    pub(crate) fn end_strays(&mut self) {
        let mut runs = self.runs.clone();
        runs.push(self.run_id.clone());
        let me = std::process::id() as i32;
        let none = HashSet::new();
        let find = |s: &Supervisor| {
            let mut left = procfs::children_of(me);
            left.extend(s.tagged(&runs, &none));
            left.sort_unstable();
            left.dedup();
            left.retain(|p| !s.protected.contains(p));
            left
        };
        let left = find(self);
        if !left.is_empty() {
            say(&format!("ending {} processes that services left behind: {left:?}", left.len()));
        }
        self.end_processes(find);
    }

    /// SIGTERM + SIGCONT to what `find` lists, SIGKILL after [`STRAY_GRACE`], until it lists
    /// nothing. Only at start-up and shutdown, outside the loop.
    fn end_processes(&mut self, find: impl Fn(&Supervisor) -> Vec<i32>) {
        let deadline = Instant::now() + STRAY_GRACE;
        let mut signalled = HashSet::new();
        loop {
            while let Ok(Some(_)) = process::reap_any() {}
            let left = find(self);
            if left.is_empty() {
                return;
            }
            let late = Instant::now() >= deadline;
            for pid in left {
                let Ok(fd) = process::pidfd_open(pid) else { continue };
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
