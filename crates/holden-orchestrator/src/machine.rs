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
    /// The process ended (its pidfd became readable and the status was read).
    Exited(Exit),
    /// A process found running at start-up (left by an orchestrator that did not shut down
    /// cleanly, and proven to be the same process) is taken over as this service's.
    Adopted {
        /// Its pid.
        pid: i32,
    },
    /// A timer the service armed has fired (spurious ones are ignored).
    Timer,
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
    /// Start times inside the start-limit window.
    starts: VecDeque<Instant>,
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
            starts: VecDeque::new(),
            started_once: false,
        }
    }

    fn set(&mut self, state: State, now: Instant) {
        if self.state != state {
            self.state = state;
            self.since = now;
        }
    }

    fn spawn(&mut self, now: Instant, acts: &mut Vec<Action>) {
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

    fn fail(&mut self, now: Instant) {
        self.deadline = None;
        self.set(State::Failed, now);
    }

    /// Starts now if the start limit allows, else parks in `Failed`.
    fn try_start(&mut self, p: &Policy, now: Instant, acts: &mut Vec<Action>) {
        if self.may_start(&p.start_limit, now) {
            self.starts.push_back(now);
            self.spawn(now, acts);
        } else {
            self.fail(now);
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
                // Already on its way up, or coming back after the stop in progress.
                State::Starting | State::Running | State::BackingOff | State::Stopping => {}
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
                s.set(State::Running, now);
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
                    }
                    s.back_off(p, now, &mut acts);
                }
            }
        }
        Event::Exited(exit) => {
            if matches!(s.state, State::Running | State::Stopping) {
                let ran = now.duration_since(s.since);
                let was_stopping = s.state == State::Stopping;
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
                    let restart = match p.restart {
                        Restart::Always => true,
                        Restart::OnFailure => !exit.success(),
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
                        s.fail(now);
                    }
                }
            }
        }
        Event::Adopted { pid } => {
            if s.state == State::Stopped {
                s.wanted = Wanted::Up;
                s.started_once = true;
                s.pid = Some(pid);
                s.set(State::Running, now);
            }
        }
        Event::Timer => match s.state {
            State::BackingOff if s.deadline.is_some_and(|d| now >= d) => s.try_start(p, now, &mut acts),
            State::Stopping if s.deadline.is_some_and(|d| now >= d) => {
                s.deadline = None;
                acts.push(Action::Signal(SIGKILL));
            }
            _ => {}
        },
    }
    (s, acts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(restart: Restart) -> Policy {
        Policy {
            restart,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_millis(400),
                factor: 2.0,
                reset_after: Duration::from_secs(10),
            },
            start_limit: StartLimit { burst: 5, interval: Duration::from_secs(60) },
            stop_signal: 15,
            stop_timeout: Duration::from_secs(5),
        }
    }

    /// A fake clock: events applied at offsets from one base instant.
    struct Run {
        p: Policy,
        s: Service,
        t0: Instant,
    }

    impl Run {
        fn new(restart: Restart) -> Run {
            let t0 = Instant::now();
            Run { p: policy(restart), s: Service::new(t0), t0 }
        }
        fn at(&mut self, ms: u64, e: Event) -> Vec<Action> {
            let (s, a) = next(&self.p, &self.s, e, self.t0 + Duration::from_millis(ms));
            self.s = s;
            a
        }
        fn ms(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }
    }

    #[test]
    fn crash_loop_backs_off_exponentially_then_fails_at_the_start_limit() {
        let mut r = Run::new(Restart::OnFailure);
        assert_eq!(r.at(0, Event::Start), [Action::Spawn]);
        r.at(1, Event::Spawned { pid: 10 });
        assert_eq!(r.s.state, State::Running);
        // Dies at once: 100 ms, then 200, then 400 (the max), then 400.
        let mut t = 2;
        for want in [100, 200, 400, 400] {
            let acts = r.at(t, Event::Exited(Exit::Code(1)));
            assert_eq!(r.s.state, State::BackingOff);
            assert_eq!(acts, [Action::ArmTimer(r.ms(t + want))]);
            assert_eq!(r.at(t + want - 1, Event::Timer), [], "not before the deadline");
            assert_eq!(r.at(t + want, Event::Timer), [Action::Spawn]);
            r.at(t + want + 1, Event::Spawned { pid: 11 });
            t += want + 2;
        }
        assert_eq!(r.s.restarts, 4);
        // The fifth start was the last the limit (5 per 60 s) allows.
        r.at(t, Event::Exited(Exit::Signal(11)));
        assert_eq!(r.s.state, State::Failed);
        assert_eq!(r.s.last_exit, Some(Exit::Signal(11)));
        // A start by hand begins anew.
        assert_eq!(r.at(t + 1, Event::Start), [Action::Spawn]);
        assert_eq!(r.s.state, State::Starting);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut r = Run::new(Restart::Always);
        r.at(0, Event::Start);
        r.at(0, Event::Spawned { pid: 1 });
        r.at(10, Event::Exited(Exit::Code(0)));
        r.at(110, Event::Timer);
        r.at(110, Event::Spawned { pid: 2 });
        r.at(120, Event::Exited(Exit::Code(0)));
        assert_eq!(r.s.delay, Duration::from_millis(200));
        r.at(320, Event::Timer);
        r.at(320, Event::Spawned { pid: 3 });
        // Ran 10 s: restarted at once, delay reset.
        assert_eq!(r.at(10_320, Event::Exited(Exit::Code(0))), [Action::Spawn]);
        assert_eq!(r.s.delay, Duration::ZERO);
    }

    #[test]
    fn restart_policies() {
        let mut r = Run::new(Restart::Never);
        r.at(0, Event::Start);
        r.at(0, Event::Spawned { pid: 1 });
        assert_eq!(r.at(5, Event::Exited(Exit::Code(3))), []);
        assert_eq!(r.s.state, State::Exited);

        let mut r = Run::new(Restart::OnFailure);
        r.at(0, Event::Start);
        r.at(0, Event::Spawned { pid: 1 });
        assert_eq!(r.at(5, Event::Exited(Exit::Code(0))), []);
        assert_eq!(r.s.state, State::Exited);

        let mut r = Run::new(Restart::Always);
        r.at(0, Event::Start);
        r.at(0, Event::Spawned { pid: 1 });
        r.at(5, Event::Exited(Exit::Code(0)));
        assert_eq!(r.s.state, State::BackingOff);
    }

    #[test]
    fn stop_sends_the_signal_and_sigcont_then_sigkill_at_the_deadline() {
        let mut r = Run::new(Restart::Always);
        r.at(0, Event::Start);
        r.at(0, Event::Spawned { pid: 7 });
        let acts = r.at(100, Event::Stop);
        assert_eq!(acts, [Action::Signal(15), Action::Signal(18), Action::ArmTimer(r.ms(5100))]);
        assert_eq!(r.s.state, State::Stopping);
        assert_eq!(r.at(5099, Event::Timer), []);
        assert_eq!(r.at(5100, Event::Timer), [Action::Signal(9)]);
        assert_eq!(r.at(5101, Event::Exited(Exit::Signal(9))), []);
        assert_eq!((r.s.state, r.s.pid), (State::Stopped, None));
    }

    #[test]
    fn stop_while_starting_stops_once_the_spawn_answers() {
        let mut r = Run::new(Restart::Always);
        r.at(0, Event::Start);
        assert_eq!(r.at(1, Event::Stop), []);
        assert_eq!(r.at(2, Event::Spawned { pid: 5 })[0], Action::Signal(15));
        r.at(3, Event::Exited(Exit::Signal(15)));
        assert_eq!(r.s.state, State::Stopped);
    }

    #[test]
    fn restart_by_hand_is_stop_then_start_without_backoff() {
        let mut r = Run::new(Restart::Always);
        r.at(0, Event::Start);
        r.at(0, Event::Spawned { pid: 5 });
        r.at(10, Event::Stop);
        r.at(11, Event::Start); // wanted up again while stopping
        assert_eq!(r.at(12, Event::Exited(Exit::Signal(15))), [Action::Spawn]);
        assert_eq!(r.s.state, State::Starting);
    }

    #[test]
    fn an_unreachable_agent_is_retried_with_backoff_without_counting_starts() {
        let mut r = Run::new(Restart::Always);
        r.at(0, Event::Start);
        let mut t = 0;
        for _ in 0..20 {
            let acts = r.at(t, Event::SpawnFailed { error: "connect: refused".into(), transient: true });
            assert_eq!(r.s.state, State::BackingOff);
            let Action::ArmTimer(at) = acts[0] else { panic!() };
            t = at.duration_since(r.t0).as_millis() as u64;
            assert_eq!(r.at(t, Event::Timer), [Action::Spawn]);
        }
        assert_eq!(r.s.last_error.as_deref(), Some("connect: refused"));
        r.at(t, Event::Spawned { pid: 3 });
        assert_eq!((r.s.state, r.s.last_error.clone()), (State::Running, None));
    }

    #[test]
    fn a_missing_program_counts_against_the_start_limit() {
        let mut r = Run::new(Restart::Always);
        r.at(0, Event::Start);
        let mut t = 0;
        for _ in 0..10 {
            let acts = r.at(t, Event::SpawnFailed { error: "exec: not found".into(), transient: false });
            if r.s.state == State::Failed {
                break;
            }
            let Action::ArmTimer(at) = acts[0] else { panic!("{acts:?}") };
            t = at.duration_since(r.t0).as_millis() as u64;
            r.at(t, Event::Timer);
        }
        assert_eq!(r.s.state, State::Failed);
    }

    #[test]
    fn zero_backoff_restarts_in_the_same_step() {
        let mut r = Run::new(Restart::Always);
        r.p.backoff.initial = Duration::ZERO;
        r.at(0, Event::Start);
        r.at(0, Event::Spawned { pid: 1 });
        assert_eq!(r.at(5, Event::Exited(Exit::Signal(9))), [Action::Spawn]);
        assert_eq!((r.s.state, r.s.restarts), (State::Starting, 1));
        // An unreachable agent is still asked no more often than TRANSIENT_RETRY.
        let acts = r.at(6, Event::SpawnFailed { error: "refused".into(), transient: true });
        assert_eq!(acts, [Action::ArmTimer(r.ms(6) + TRANSIENT_RETRY)]);
    }

    #[test]
    fn an_adopted_process_is_running_and_restarted_when_it_ends_unknown() {
        let mut r = Run::new(Restart::OnFailure);
        assert_eq!(r.at(0, Event::Adopted { pid: 42 }), []);
        assert_eq!((r.s.state, r.s.pid, r.s.wanted), (State::Running, Some(42), Wanted::Up));
        let acts = r.at(10, Event::Exited(Exit::Unknown));
        assert_eq!(acts, [Action::ArmTimer(r.ms(110))]);
        assert_eq!(r.s.last_exit, Some(Exit::Unknown));
        // Adoption only takes a service that has nothing running.
        let mut r = Run::new(Restart::OnFailure);
        r.at(0, Event::Start);
        r.at(0, Event::Adopted { pid: 9 });
        assert_eq!(r.s.state, State::Starting);
    }

    #[test]
    fn stale_events_change_nothing() {
        let mut r = Run::new(Restart::Always);
        let before = r.s.clone();
        for e in [Event::Timer, Event::Spawned { pid: 1 }, Event::Exited(Exit::Code(0)), Event::Stop] {
            r.at(0, e);
        }
        assert_eq!(r.s.state, before.state);
        assert_eq!(r.s.pid, None);
    }
}
