//! One supervised service as the loop holds it: its configuration, its state machine, its
//! process and descriptors, and what survives a crash about it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use holden_orchestrator::config::{self, Output};
use holden_orchestrator::machine::{self, Policy, State};

use crate::exits::Proc;
use crate::logs::LogFile;
use crate::state::{Identity, Intent};

/// One supervised service.
pub(crate) struct Svc {
    pub(crate) cfg: config::Service,
    pub(crate) m: machine::Service,
    pub(crate) proc: Option<Proc>,
    /// The epoll token of the process's pidfd, while it is watched.
    pub(crate) pidfd_token: Option<u64>,
    pub(crate) identity: Option<Identity>,
    pub(crate) start_time: Option<u64>,
    /// The spawn tag of the process (`RUN.N`).
    pub(crate) tag: Option<String>,
    /// The epoll token of a spawn through an agent in flight.
    pub(crate) in_flight: Option<u64>,
    /// While an exit status is awaited: when to look again, the pause, and when to give up.
    pub(crate) exit_check: Option<(Instant, Duration, Instant)>,
    pub(crate) log: Option<LogFile>,
    /// Stopped by the operator (kept across a crash).
    pub(crate) stopped_by_hand: bool,
    /// Settings from a reload, applied once the old process has stopped; then started again
    /// if the flag says so.
    pub(crate) replacement: Option<(config::Service, bool)>,
    /// Removed by a reload: dropped once stopped.
    pub(crate) removing: bool,
    /// Its cgroup, if it has one (set at spawn), and the OOM kills there at that time.
    pub(crate) cgroup_dir: Option<std::path::PathBuf>,
    pub(crate) oom_base: u64,
    /// The CPU time its cgroup had used at the previous status, and when.
    pub(crate) cpu_sample: std::cell::Cell<Option<(Instant, u64)>>,
    /// Its readiness and health probes.
    pub(crate) checks: crate::ready::Checks,
    /// Held before its spawn by a dependency condition: what it waits for.
    pub(crate) waiting: Option<String>,
    /// A `restart = true` dependency stopped meeting its condition: restart once it does.
    pub(crate) restart_pending: bool,
    /// The fd holder's key of its `notify = "fd"` pipe, while watched.
    pub(crate) notify_key: Option<String>,
    /// Whether each `restart = true` dependency met its condition when last looked at.
    pub(crate) dep_held: BTreeMap<String, bool>,
    /// When its state machine last took an event (the time of a state change it made).
    pub(crate) fed_at: Instant,
}

impl Svc {
    pub(crate) fn new(cfg: config::Service, now: Instant) -> Svc {
        Svc {
            cfg,
            m: machine::Service::new(now),
            proc: None,
            pidfd_token: None,
            identity: None,
            start_time: None,
            tag: None,
            in_flight: None,
            exit_check: None,
            log: None,
            stopped_by_hand: false,
            replacement: None,
            removing: false,
            cgroup_dir: None,
            oom_base: 0,
            cpu_sample: std::cell::Cell::new(None),
            checks: crate::ready::Checks::default(),
            waiting: None,
            restart_pending: false,
            dep_held: BTreeMap::new(),
            notify_key: None,
            fed_at: now,
        }
    }

    pub(crate) fn policy(&self) -> Policy {
        Policy {
            restart: self.cfg.restart,
            backoff: self.cfg.backoff,
            start_limit: self.cfg.start_limit,
            stop_signal: self.cfg.stop_signal,
            stop_timeout: self.cfg.stop_timeout,
            ready_check: self.cfg.ready.is_some(),
            ready_timeout: self.cfg.ready_timeout,
            health_failures: self.cfg.health.as_ref().map_or(u32::MAX, |h| h.failures),
        }
    }

    pub(crate) fn logs_captured(cfg: &config::Service) -> bool {
        cfg.stdout == Output::Log || cfg.stderr == Output::Log
    }

    /// Settled: no process and no spawn in flight.
    pub(crate) fn idle(&self) -> bool {
        self.proc.is_none() && self.m.state != State::Starting
    }

    /// What survives a crash of the supervisor about this service.
    pub(crate) fn intent(&self) -> Option<Intent> {
        if self.stopped_by_hand {
            return Some(Intent::Stopped);
        }
        // Exited means its policy does not restart it (a start by hand leaves the state).
        match self.m.state {
            State::Exited => Some(Intent::Completed),
            State::Failed => Some(Intent::Failed),
            _ => None,
        }
    }
}
