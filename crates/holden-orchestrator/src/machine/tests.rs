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
        ready_check: false,
        ready_timeout: Duration::from_secs(30),
        health_failures: 3,
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
    assert_eq!(r.s.last_error.as_deref(), Some("start limit reached: 5 starts in 60s"));
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
    assert_eq!(r.s.last_error.as_deref(), Some("start limit reached: 5 starts in 60s; last error: exec: not found"));
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
    assert_eq!(r.at(3000, Event::Adopted { pid: 42, age: Duration::from_secs(2) }), []);
    assert_eq!(r.s.since, r.ms(1000), "its uptime goes on");
    assert_eq!((r.s.state, r.s.pid, r.s.wanted), (State::Running, Some(42), Wanted::Up));
    let acts = r.at(3010, Event::Exited(Exit::Unknown));
    assert_eq!(acts, [Action::ArmTimer(r.ms(3110))]);
    assert_eq!(r.s.last_exit, Some(Exit::Unknown));
    // Adoption only takes a service that has nothing running.
    let mut r = Run::new(Restart::OnFailure);
    r.at(0, Event::Start);
    r.at(0, Event::Adopted { pid: 9, age: Duration::ZERO });
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

#[test]
fn without_a_check_it_is_ready_once_running_and_not_after() {
    let mut r = Run::new(Restart::Always);
    r.at(0, Event::Start);
    assert!(!r.s.ready);
    r.at(1, Event::Spawned { pid: 4 });
    assert!(r.s.ready);
    r.at(2, Event::Exited(Exit::Code(1)));
    assert!(!r.s.ready);
}

#[test]
fn a_service_not_ready_in_time_is_stopped_and_restarted_by_policy_with_backoff() {
    let mut r = Run::new(Restart::OnFailure);
    r.p.ready_check = true;
    r.at(0, Event::Start);
    assert_eq!(r.at(1, Event::Spawned { pid: 4 }), [Action::ArmTimer(r.ms(30_001))]);
    assert!(!r.s.ready);
    assert_eq!(r.at(30_000, Event::Timer), []);
    let acts = r.at(30_001, Event::Timer);
    assert_eq!(acts[0], Action::Signal(15));
    assert_eq!(r.s.state, State::Stopping);
    assert_eq!(r.s.last_error.as_deref(), Some("not ready within 30s"));
    // Its end is a failure: on-failure restarts it, after the backoff.
    assert_eq!(r.at(30_002, Event::Exited(Exit::Signal(15))), [Action::ArmTimer(r.ms(30_102))]);
    assert_eq!(r.at(30_102, Event::Timer), [Action::Spawn]);
    // Ready in time: the timer is spent.
    r.at(30_103, Event::Spawned { pid: 5 });
    r.at(30_104, Event::Ready);
    assert!(r.s.ready && r.s.deadline.is_none() && r.s.last_error.is_none());
    assert_eq!(r.at(90_000, Event::Timer), []);
    assert_eq!(r.s.state, State::Running);
}

#[test]
fn a_service_not_ready_in_time_with_restart_never_ends_exited() {
    let mut r = Run::new(Restart::Never);
    r.p.ready_check = true;
    r.at(0, Event::Start);
    r.at(0, Event::Spawned { pid: 4 });
    r.at(30_000, Event::Timer);
    assert_eq!(r.at(30_001, Event::Exited(Exit::Code(0))), []);
    assert_eq!(r.s.state, State::Exited);
}

#[test]
fn failed_health_checks_in_a_row_restart_it_and_a_pass_resets_the_count() {
    let mut r = Run::new(Restart::Always);
    r.at(0, Event::Start);
    r.at(0, Event::Spawned { pid: 4 });
    r.at(1, Event::Checked { ok: false });
    r.at(2, Event::Checked { ok: false });
    assert_eq!((r.s.health, r.s.failures), (Health::Unknown, 2));
    r.at(3, Event::Checked { ok: true });
    assert_eq!((r.s.health, r.s.failures), (Health::Healthy, 0));
    r.at(4, Event::Checked { ok: false });
    r.at(5, Event::Checked { ok: false });
    assert_eq!(r.at(6, Event::Checked { ok: false })[0], Action::Signal(15));
    assert_eq!((r.s.state, r.s.health), (State::Stopping, Health::Unhealthy));
    // A check that answers late changes nothing.
    assert_eq!(r.at(7, Event::Checked { ok: false }), []);
    let acts = r.at(8, Event::Exited(Exit::Signal(15)));
    assert_eq!(acts, [Action::ArmTimer(r.ms(108))], "a failure: restarted after the backoff");
    assert_eq!(r.s.health, Health::Unknown);
}

#[test]
fn regression_retries_while_an_agent_is_away_are_not_restarts() {
    let mut r = Run::new(Restart::Always);
    r.at(0, Event::Start);
    let mut t = 0;
    for _ in 0..3 {
        let acts = r.at(t, Event::SpawnFailed { error: "refused".into(), transient: true });
        let Action::ArmTimer(at) = acts[0] else { panic!("{acts:?}") };
        t = at.duration_since(r.t0).as_millis() as u64;
        r.at(t, Event::Timer);
    }
    r.at(t, Event::Spawned { pid: 3 });
    assert_eq!(r.s.restarts, 0, "retries while the agent was away are not restarts");
    // Nor later ones: one restart, then the agent is away a while.
    let acts = r.at(t + 1, Event::Exited(Exit::Code(1)));
    let Action::ArmTimer(at) = acts[0] else { panic!("{acts:?}") };
    t = at.duration_since(r.t0).as_millis() as u64;
    assert_eq!(r.at(t, Event::Timer), [Action::Spawn]);
    for _ in 0..5 {
        let acts = r.at(t, Event::SpawnFailed { error: "refused".into(), transient: true });
        let Action::ArmTimer(at) = acts[0] else { panic!("{acts:?}") };
        t = at.duration_since(r.t0).as_millis() as u64;
        assert_eq!(r.at(t, Event::Timer), [Action::Spawn]);
    }
    r.at(t, Event::Spawned { pid: 4 });
    assert_eq!(r.s.restarts, 1);
}

#[test]
fn a_long_healthy_run_then_unhealthy_restarts_at_once_and_a_restart_by_hand_is_no_failure() {
    let mut r = Run::new(Restart::Never);
    r.at(0, Event::Start);
    r.at(0, Event::Spawned { pid: 4 });
    for t in 1..=3 {
        r.at(20_000 + t, Event::Checked { ok: false });
    }
    assert_eq!(r.s.state, State::Stopping);
    // Asked to restart while it stops for the failed checks: a restart, not a failure (restart
    // = "never" would otherwise leave it exited).
    r.at(20_004, Event::Start);
    assert_eq!(r.at(20_005, Event::Exited(Exit::Signal(15))), [Action::Spawn]);
    // It ran 20 s before it went unhealthy: a stable run, so no backoff either.
    let mut r = Run::new(Restart::Always);
    r.at(0, Event::Start);
    r.at(0, Event::Spawned { pid: 4 });
    for t in 1..=3 {
        r.at(20_000 + t, Event::Checked { ok: false });
    }
    assert_eq!(r.at(20_005, Event::Exited(Exit::Signal(15))), [Action::Spawn]);
}

#[test]
fn regression_a_start_withdrawn_while_held_counts_nothing_and_is_no_error() {
    // Before: a held service stopped by hand was fed a failed spawn ("stopped before it
    // started"): a restart counted that never ran, and an error shown for a plain stop.
    let mut r = Run::new(Restart::OnFailure);
    r.at(0, Event::Start);
    r.at(1, Event::Spawned { pid: 10 });
    r.at(2, Event::Stop);
    r.at(3, Event::Exited(Exit::Code(0)));
    let before = r.s.clone();
    assert_eq!(r.at(4, Event::Start), [Action::Spawn]);
    assert_eq!(r.s.restarts, before.restarts + 1, "a start of a service that ran once is a restart");
    // Held for a dependency, then stopped: the spawn is withdrawn.
    r.at(5, Event::Stop);
    assert_eq!(r.at(6, Event::Withdrawn), []);
    assert_eq!(r.s.state, State::Stopped);
    assert_eq!((r.s.restarts, r.s.last_error.clone()), (before.restarts, None));
    assert!(r.s.starts.is_empty(), "the withdrawn start is not counted against the limit");
}
