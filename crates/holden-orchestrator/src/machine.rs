//! One service's supervision as a pure state machine, after s6-supervise: what is *wanted* (up
//! or down) is kept apart from what *is* (the state, the pid, the last exit), and one function,
//! [`next`], takes the service, an event and the time and returns the new service and the
//! actions for the event loop to carry out. No clock is read and nothing is done here.
//!
//! Policies: exponential backoff between restarts, reset after a stable run; a start limit
//! that parks a service in `Failed` until it is started by hand; stop as the stop signal plus
//! SIGCONT, then SIGKILL after the stop timeout; an unreachable agent is retried with backoff
//! without counting against the start limit.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::{Backoff, Restart, StartLimit};

/// What the policy needs from a service's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Restart policy.
    pub restart: Restart,
    /// Restart delays.
    pub backoff: Backoff,
    /// Start limit.
    pub start_limit: StartLimit,
    /// The signal that asks it to stop.
    pub stop_signal: i32,
    /// How long it may take to stop before SIGKILL.
    pub stop_timeout: Duration,
    /// It says when it is ready (`ready`); else it is ready once running.
    pub ready_check: bool,
    /// Not ready this long after the spawn: a failed start.
    pub ready_timeout: Duration,
    /// Consecutive failed health checks that restart it.
    pub health_failures: u32,
}

/// What the health checks say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No check has answered since the start (or there is no check).
    Unknown,
    /// The last check passed.
    Healthy,
    /// `failures` checks in a row failed.
    Unhealthy,
}

impl Health {
    /// The lower-case name shown in status output.
    pub fn name(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// What the operator wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Running.
    Up,
    /// Not running.
    Down,
}

/// What is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not running, not wanted.
    Stopped,
    /// A spawn was asked for and has not answered yet.
    Starting,
    /// Running since `since`.
    Running,
    /// Waiting until `until` before the next start.
    BackingOff,
    /// Asked to stop; SIGKILL at the deadline.
    Stopping,
    /// Ended and, by policy, not restarted.
    Exited,
    /// Hit the start limit; waits for a start by hand.
    Failed,
}

impl State {
    /// The lower-case name shown in status output.
    pub fn name(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::BackingOff => "backing-off",
            State::Stopping => "stopping",
            State::Exited => "exited",
            State::Failed => "failed",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exit code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Ended, but how is not known: an adopted process whose status the kernel no longer
    /// holds (no `PIDFD_INFO_EXIT`, or not reaped by its parent). Counts as a failure.
    Unknown,
    /// Killed by the OOM killer at its cgroup's memory limit. Counts as a failure.
    OomKilled,
}

impl Exit {
    fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

/// Something that happened to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The operator wants it up (also: the initial start, a start after `Failed`).
    Start,
    /// The operator wants it down.
    Stop,
    /// The spawn succeeded.
    Spawned {
        /// Its pid.
        pid: i32,
    },
    /// The spawn failed. `transient` is an unreachable agent: retried, not counted.
    SpawnFailed {
        /// Why, for the status.
        error: String,
        /// Retry without counting against the start limit.
        transient: bool,
    },
    /// The spawn was never made: the service was stopped while it was held, waiting for a
    /// dependency. No start is counted and no error recorded.
    Withdrawn,
    /// The process ended (its pidfd became readable and the status was read).
    Exited(Exit),
    /// A process found running at start-up (left by an orchestrator that did not shut down
    /// cleanly, and proven to be the same process) is taken over as this service's.
    Adopted {
        /// Its pid.
        pid: i32,
        /// How long it has run: its uptime goes on from there.
        age: Duration,
    },
    /// A timer the service armed has fired (spurious ones are ignored).
    Timer,
    /// It said it is ready (or its readiness probe passed).
    Ready,
    /// A health check answered: passed or not.
    Checked {
        /// Passed.
        ok: bool,
    },
}

/// What the event loop must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Spawn the service's command; answer with `Spawned` or `SpawnFailed`.
    Spawn,
    /// Send this signal to the service (or its group, with `kill_mode = "group"`).
    Signal(i32),
    /// Wake the service with `Timer` at this time.
    ArmTimer(Instant),
}

/// The shortest delay between attempts to reach an agent that does not answer.
pub const TRANSIENT_RETRY: Duration = Duration::from_millis(100);

const SIGKILL: i32 = 9;
const SIGCONT: i32 = 18;

/// One service: wanted and actual state, and the counters the policies need.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// What the operator wants.
    pub wanted: Wanted,
    /// What is.
    pub state: State,
    /// The pid while starting, running or stopping.
    pub pid: Option<i32>,
    /// When the current state began.
    pub since: Instant,
    /// Restarts so far (starts after the first).
    pub restarts: u32,
    /// How the last run ended.
    pub last_exit: Option<Exit>,
    /// The last spawn error, until a spawn succeeds.
    pub last_error: Option<String>,
    /// The next backoff delay.
    pub delay: Duration,
    /// When the pending timer fires (backing off: restart; stopping: SIGKILL).
    pub deadline: Option<Instant>,
    /// Running and ready (at once for a service without a readiness check).
    pub ready: bool,
    /// What the health checks say.
    pub health: Health,
    /// Failed health checks in a row.
    pub failures: u32,
    /// Stopped because it was not ready in time or unhealthy: its exit is a failure, and the
    /// restart policy decides (with backoff).
    failed_check: bool,
    /// Start times inside the start-limit window.
    starts: VecDeque<Instant>,
    /// The spawn in flight counted as a restart (taken back if an unreachable agent fails it).
    counted: bool,
    /// When the current (or last) run began: how long it ran decides the backoff's reset, also
    /// when it ends after a stop for a failed check.
    run_started: Instant,
    started_once: bool,
}

impl Service {
    /// A service that is stopped and not wanted, as of `now`.
    pub fn new(now: Instant) -> Service {
        Service {
            wanted: Wanted::Down,
            state: State::Stopped,
            pid: None,
            since: now,
            restarts: 0,
            last_exit: None,
            last_error: None,
            delay: Duration::ZERO,
            deadline: None,
            ready: false,
            health: Health::Unknown,
            failures: 0,
            failed_check: false,
            starts: VecDeque::new(),
            counted: false,
            run_started: now,
            started_once: false,
        }
    }

    fn set(&mut self, state: State, now: Instant) {
        if self.state != state {
            self.state = state;
            self.since = now;
        }
        if state != State::Running {
            self.ready = false;
            self.health = Health::Unknown;
            self.failures = 0;
        }
    }

    /// Now running (spawned or adopted): ready at once without a check, else given until
    /// the ready timeout.
    fn running(&mut self, p: &Policy, now: Instant, acts: &mut Vec<Action>) {
        self.set(State::Running, now);
        self.run_started = now;
        self.failed_check = false;
        if !p.ready_check {
            self.ready = true;
        } else if self.wanted == Wanted::Up {
            let until = now + p.ready_timeout;
            self.deadline = Some(until);
            acts.push(Action::ArmTimer(until));
        }
    }

    fn spawn(&mut self, now: Instant, acts: &mut Vec<Action>) {
        self.counted = self.started_once;
        if self.started_once {
            self.restarts += 1;
        }
        self.started_once = true;
        self.deadline = None;
        self.set(State::Starting, now);
        acts.push(Action::Spawn);
    }

    /// Waits the current delay, then starts; with no delay, starts at once.
    fn back_off(&mut self, p: &Policy, now: Instant, acts: &mut Vec<Action>) {
        if self.delay.is_zero() {
            return self.try_start(p, now, acts);
        }
        let until = now + self.delay;
        self.deadline = Some(until);
        self.set(State::BackingOff, now);
        acts.push(Action::ArmTimer(until));
    }

    fn grow_delay(&mut self, b: &Backoff) {
        self.delay = if self.delay.is_zero() { b.initial } else { self.delay.mul_f64(b.factor).min(b.max) };
    }

    /// Whether another start fits in the start-limit window ending at `now`.
    fn may_start(&mut self, l: &StartLimit, now: Instant) -> bool {
        while self.starts.front().is_some_and(|t| now.duration_since(*t) >= l.interval) {
            self.starts.pop_front();
        }
        self.starts.len() < l.burst as usize
    }

    /// Parks it in `Failed`, saying why: the start limit, and the last error if there was one.
    fn fail(&mut self, l: &StartLimit, now: Instant) {
        self.deadline = None;
        let limit = format!("start limit reached: {} starts in {:?}", l.burst, l.interval);
        self.last_error = Some(match self.last_error.take() {
            Some(e) => format!("{limit}; last error: {e}"),
            None => limit,
        });
        self.set(State::Failed, now);
    }

    /// Starts now if the start limit allows, else parks in `Failed`.
    fn try_start(&mut self, p: &Policy, now: Instant, acts: &mut Vec<Action>) {
        if self.may_start(&p.start_limit, now) {
            self.starts.push_back(now);
            self.spawn(now, acts);
        } else {
            self.fail(&p.start_limit, now);
        }
    }

    fn stop(&mut self, p: &Policy, now: Instant, acts: &mut Vec<Action>) {
        let deadline = now + p.stop_timeout;
        self.deadline = Some(deadline);
        self.set(State::Stopping, now);
        acts.extend([Action::Signal(p.stop_signal), Action::Signal(SIGCONT), Action::ArmTimer(deadline)]);
    }
}

/// The transition function: the service after `event` at `now`, and what to do.
pub fn next(p: &Policy, svc: &Service, event: Event, now: Instant) -> (Service, Vec<Action>) {
    let mut s = svc.clone();
    let mut acts = Vec::new();
    match event {
        Event::Start => {
            s.wanted = Wanted::Up;
            match s.state {
                State::Stopped | State::Exited | State::Failed => {
                    // A start by hand is a fresh start: the limit and the delay begin anew.
                    s.starts.clear();
                    s.delay = Duration::ZERO;
                    s.try_start(p, now, &mut acts);
                }
                // Coming back after the stop in progress, as asked: not as a failure, even if the
                // stop was for a failed check.
                State::Stopping => s.failed_check = false,
                // Already on its way up.
                State::Starting | State::Running | State::BackingOff => {}
            }
        }
        Event::Stop => {
            s.wanted = Wanted::Down;
            match s.state {
                State::Running => s.stop(p, now, &mut acts),
                State::BackingOff | State::Failed | State::Exited => {
                    s.deadline = None;
                    s.set(State::Stopped, now);
                }
                // A spawn in flight is stopped when it answers; a stop in progress goes on.
                State::Starting | State::Stopping | State::Stopped => {}
            }
        }
        Event::Spawned { pid } => {
            if s.state == State::Starting {
                s.pid = Some(pid);
                s.last_error = None;
                s.running(p, now, &mut acts);
                if s.wanted == Wanted::Down {
                    s.stop(p, now, &mut acts);
                }
            }
        }
        Event::SpawnFailed { error, transient } => {
            if s.state == State::Starting {
                s.last_error = Some(error);
                if s.wanted == Wanted::Down {
                    s.set(State::Stopped, now);
                } else {
                    s.grow_delay(&p.backoff);
                    if transient {
                        // The agent is away: not the service's fault, so no start is counted,
                        // and it is asked again no more often than every TRANSIENT_RETRY.
                        s.starts.pop_back();
                        s.delay = s.delay.max(TRANSIENT_RETRY);
                        // Nor a restart: the service did not run.
                        if std::mem::take(&mut s.counted) {
                            s.restarts -= 1;
                        } else {
                            s.started_once = false;
                        }
                    }
                    s.back_off(p, now, &mut acts);
                }
            }
        }
        Event::Withdrawn => {
            if s.state == State::Starting {
                s.starts.pop_back();
                if std::mem::take(&mut s.counted) {
                    s.restarts -= 1;
                } else {
                    s.started_once = false;
                }
                s.set(State::Stopped, now);
            }
        }
        Event::Exited(exit) => {
            if matches!(s.state, State::Running | State::Stopping) {
                let ran = now.duration_since(s.run_started);
                // Stopped for a failed check: an end like any failure, restarted by policy.
                let was_stopping = s.state == State::Stopping && !std::mem::take(&mut s.failed_check);
                s.pid = None;
                s.last_exit = Some(exit);
                s.deadline = None;
                if s.wanted == Wanted::Down {
                    s.set(State::Stopped, now);
                } else if was_stopping {
                    // Restart after a stop by hand (Restart): no backoff.
                    s.delay = Duration::ZERO;
                    s.try_start(p, now, &mut acts);
                } else {
                    let failed = !exit.success() || s.last_error.is_some();
                    let restart = match p.restart {
                        Restart::Always => true,
                        Restart::OnFailure => failed,
                        Restart::Never => false,
                    };
                    if !restart {
                        s.set(State::Exited, now);
                    } else if ran >= p.backoff.reset_after {
                        // A stable run: the delay starts over, and this restart is immediate.
                        s.delay = Duration::ZERO;
                        s.try_start(p, now, &mut acts);
                    } else if s.may_start(&p.start_limit, now) {
                        s.grow_delay(&p.backoff);
                        s.back_off(p, now, &mut acts);
                    } else {
                        // No start is left: park at once rather than after the delay.
                        s.fail(&p.start_limit, now);
                    }
                }
            }
        }
        Event::Adopted { pid, age } => {
            if s.state == State::Stopped {
                s.wanted = Wanted::Up;
                s.started_once = true;
                s.pid = Some(pid);
                s.running(p, now, &mut acts);
                s.since = now.checked_sub(age).unwrap_or(now);
                s.run_started = s.since;
            }
        }
        Event::Timer => match s.state {
            State::BackingOff if s.deadline.is_some_and(|d| now >= d) => s.try_start(p, now, &mut acts),
            State::Stopping if s.deadline.is_some_and(|d| now >= d) => {
                s.deadline = None;
                acts.push(Action::Signal(SIGKILL));
            }
            State::Running if !s.ready && s.deadline.is_some_and(|d| now >= d) => {
                s.last_error = Some(format!("not ready within {:?}", p.ready_timeout));
                s.failed_check = true;
                // A run that never became ready is no stable run: the backoff goes on growing.
                s.run_started = now;
                s.stop(p, now, &mut acts);
            }
            _ => {}
        },
        Event::Ready => {
            if s.state == State::Running && !s.ready {
                s.ready = true;
                s.deadline = None;
            }
        }
        Event::Checked { ok } => {
            if s.state == State::Running {
                if ok {
                    s.failures = 0;
                    s.health = Health::Healthy;
                } else {
                    s.failures += 1;
                    if s.failures >= p.health_failures && s.health != Health::Unhealthy {
                        s.health = Health::Unhealthy;
                        s.last_error = Some(format!("unhealthy: {} checks failed in a row", s.failures));
                        s.failed_check = true;
                        // Kept while it stops, so that status and events say why.
                        let health = s.health;
                        s.stop(p, now, &mut acts);
                        s.health = health;
                    }
                }
            }
        }
    }
    (s, acts)
}

#[cfg(test)]
mod tests;
