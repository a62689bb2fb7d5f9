//! Fault tests for `holden up`: each pins one promise and is named after the defect it guards
//! against. The supervisor is SIGKILLed at random instants (up_state.rs has the faults of its
//! state file), a spawn fails in a tight loop, an agent is
//! SIGSTOPped, a neighbour floods its pipe, a service double-forks, a crash happens while a
//! service logs, the umask is wide open and the control socket never answers. Needs root
//! (mounts, signals to agents, /proc of every process).
//!
//! Like up_crash.rs, the test process is a child subreaper, and `common::reaper` reaps the
//! services orphaned by a SIGKILLed orchestrator; every `holden up` and agent a test waits for
//! itself is `protect`ed from it. Services are counted by their command line among the
//! processes that carry the test's marker, never by the marker alone: `holden up`, agents and
//! `holden fdholder` carry it too. Run one test at a time (`--test-threads=1`; `SERIAL` makes
//! sure of it): some measure rates.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::faults::*;
use common::*;
use serde_json::Value;

/// A small xorshift generator: the instants of the crash storm. The seed is printed, and
/// `HOLDEN_TEST_SEED` replays it.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("HOLDEN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("HOLDEN_TEST_SEED={seed}");
        Rng(seed | 1)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A service that runs until stopped, and the command lines its process may show: the first
/// is what it runs for good, the last its configured command (a shell that `exec`s the first).
struct LongRunner {
    name: &'static str,
    forms: &'static [&'static [&'static str]],
}

impl LongRunner {
    /// Every process that is this service's.
    fn pids(&self, dir: &Dir) -> Vec<i32> {
        self.forms.iter().flat_map(|f| dir.pids_of(f)).collect()
    }
}

/// Waits until every one of `long` is `running`, then checks that each runs as exactly one
/// process, the one `holden status` names.
fn assert_one_each(dir: &Dir, up: &Up, long: &[LongRunner], when: &str) {
    wait_for_socket(&up.socket);
    let deadline = Instant::now() + Duration::from_secs(20);
    let list = loop {
        let list = up.status();
        let running = |n: &str| list.iter().any(|s| s["name"] == n && s["state"] == "running");
        if long.iter().all(|l| running(l.name)) {
            break list;
        }
        assert!(Instant::now() < deadline, "{when}: not every long-runner runs: {list:?}\n{}", up.output());
        std::thread::sleep(Duration::from_millis(20));
    };
    for l in long {
        let s = list.iter().find(|s| s["name"] == l.name).unwrap();
        let pids = l.pids(dir);
        assert_eq!(
            pids,
            [pid_of(s).unwrap()],
            "{when}: {} must run as exactly its one supervised process ({s}); marked processes: {:?}\n{}",
            l.name,
            dir.leftovers(&[]),
            up.output()
        );
    }
}

#[test]
fn regression_crash_storm_never_duplicates() {
    let (_serial, dir) = setup("storm");
    let agent = agent(&dir);
    let long = [
        LongRunner { name: "l1", forms: &[&["sleep", "1001"]] },
        LongRunner { name: "l2", forms: &[&["sleep", "1002"], &["sh", "-c", "exec sleep 1002"]] },
        LongRunner { name: "l3", forms: &[&["sleep", "1003"]] },
        LongRunner { name: "r1", forms: &[&["sleep", "1004"]] },
        LongRunner { name: "r2", forms: &[&["sleep", "1005"], &["sh", "-c", "exec sleep 1005"]] },
    ];
    let looping = r#"restart = "always"
backoff = { initial = "10ms", max = "100ms" }
start_limit = { burst = 1000000, interval = "1s" }
"#;
    let mut services = String::new();
    for l in &long {
        let command = l.forms.last().unwrap();
        let agent = if l.name.starts_with('r') { "agent = \"qm\"\n" } else { "" };
        services += &format!("[services.{}]\ncommand = {command:?}\nrestart = \"always\"\n{agent}\n", l.name);
    }
    services += &format!("[services.flap]\ncommand = [\"sh\", \"-c\", \"sleep 0.05; exit 1\"]\n{looping}\n");
    services +=
        &format!("[services.rflap]\ncommand = [\"sh\", \"-c\", \"sleep 0.06; exit 1\"]\nagent = \"qm\"\n{looping}");
    let services = with_agent(&agent, &services);
    let mut rng = Rng::new();

    // 20 SIGKILLs at random instants. Even rounds wait until every long-runner runs as one
    // process, note how long that took (the start-up), then SIGKILL 0-300 ms later; odd rounds
    // SIGKILL at a random instant within the start-up. Then one long-runner, picked at random,
    // dies too, so that the next start spawns it again: a spawn cut short by the next SIGKILL
    // must not leave a second copy. In every third round the agent is SIGSTOPped for 0.5 s
    // around the start.
    let mut startup = Duration::from_millis(300);
    for round in 0..20 {
        let held = (round % 3 == 2).then(|| stop_for(agent.pid(), Duration::from_millis(500)));
        let started = Instant::now();
        let mut up = spawn(&dir, &services);
        let wait = if round % 2 == 0 {
            assert_one_each(&dir, &up, &long, &format!("round {round}, after the restart"));
            if held.is_none() {
                startup = started.elapsed().min(Duration::from_millis(300));
            }
            rng.below(301)
        } else {
            rng.below(startup.as_millis() as u64 + 1)
        };
        std::thread::sleep(Duration::from_millis(wait));
        assert!(up.running(), "round {round}: holden up ended by itself:\n{}", up.output());
        up.crash();
        // Whatever was cut short, never two of one service.
        for l in &long {
            let pids = l.pids(&dir);
            assert!(pids.len() <= 1, "round {round}: {} runs twice: {:?}", l.name, dir.leftovers(&[]));
        }
        let victim = &long[rng.below(long.len() as u64) as usize];
        for pid in victim.pids(&dir) {
            kill(pid, 9);
        }
        wait_until(
            &format!("round {round}: {} dies", victim.name),
            5 * SECOND,
            || victim.pids(&dir).is_empty(),
            || format!("{:?}", dir.leftovers(&[])),
        );
        if let Some(h) = held {
            h.join().unwrap();
        }
    }

    let up = spawn(&dir, &services);
    assert_one_each(&dir, &up, &long, "after the storm");
    // Settled: still one each a moment later.
    std::thread::sleep(Duration::from_millis(500));
    assert_one_each(&dir, &up, &long, "half a second after the storm");
    up.stop(&dir, &[agent.pid()]);
}

#[test]
fn regression_operator_intent_survives_a_crash() {
    let (_serial, dir) = setup("intent");
    let (ran, tried) = (dir.path("once.ran"), dir.path("limited.tried"));
    let services = format!(
        r#"
[services.svc]
command = ["sleep", "2001"]
restart = "always"

[services.once]
command = ["sh", "-c", "echo ran >> {}"]
restart = "never"

[services.limited]
command = ["sh", "-c", "echo tried >> {}; exit 1"]
backoff = {{ initial = "10ms", max = "10ms" }}
start_limit = {{ burst = 2, interval = "60s" }}
"#,
        ran.display(),
        tried.display()
    );
    let up = start(&dir, &services);
    up.wait_state("svc", "running");
    assert_eq!(up.wait_state("once", "exited")["last_exit"], "code 0");
    up.wait_state("limited", "failed");
    assert_eq!((lines(&ran), lines(&tried)), (1, 2));
    let out = up.cli(&["stop", "svc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    up.wait_state("svc", "stopped");
    assert_eq!(dir.count(&["sleep", "2001"]), 0);
    up.crash();

    let up = start(&dir, &services);
    // For a second, nothing the operator or the policy left down runs again.
    let until = Instant::now() + SECOND;
    while Instant::now() < until {
        assert_eq!(dir.count(&["sleep", "2001"]), 0, "svc was started again:\n{}", up.output());
        assert_eq!((lines(&ran), lines(&tried)), (1, 2), "a finished service ran again:\n{}", up.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    let state = |n: &str| up.service(n)["state"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        (state("svc").as_str(), state("once").as_str(), state("limited").as_str()),
        ("stopped", "exited", "failed"),
        "{}",
        up.output()
    );
    assert_eq!(up.service("svc")["wanted"], "down");

    // The operator's start still works.
    let out = up.cli(&["start", "svc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = pid_of(&up.wait_state("svc", "running")).unwrap();
    assert_eq!(dir.pids_of(&["sleep", "2001"]), [pid]);
    up.stop(&dir, &[]);
}

#[test]
fn regression_spawn_failure_storm_does_not_overflow_the_stack() {
    let (_serial, dir) = setup("spawnstorm");
    let services = r#"
[services.missing]
command = ["/nonexistent"]
restart = "always"
backoff = { initial = "0ms" }
start_limit = { burst = 20000, interval = "0ms" }
"#;
    write_config(&dir, services);
    let out = run_short(Command::new(HOLDEN).args(["check", "-c"]).arg(dir.path("holden.toml")));
    assert!(out.status.success(), "holden check refuses it: {}", stderr(&out));
    let mut up = start(&dir, services);
    std::thread::sleep(3 * SECOND);
    assert!(up.running(), "holden up died in the spawn-failure storm: {:?}", up.proc.try_wait());
    timed_service(&up, "missing");
    up.stop(&dir, &[]);
}

/// `holden status --json` for `name`, which must answer within a second.
fn timed_service(up: &Up, name: &str) -> Value {
    let t = Instant::now();
    let out = up.cli(&["status", "--json"]);
    let took = t.elapsed();
    assert!(out.status.success(), "status: {}", stderr(&out));
    assert!(took < scaled(SECOND), "holden status took {took:?}");
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    list.into_iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no service {name}"))
}

/// `name`'s restarts per second over `d`, asking `holden status` (within a second) every
/// quarter of a second.
fn restart_rate(up: &Up, name: &str, d: Duration) -> f64 {
    let (t0, r0) = (Instant::now(), restarts(&timed_service(up, name)));
    while t0.elapsed() < d {
        std::thread::sleep(Duration::from_millis(250));
        timed_service(up, name);
    }
    let r1 = restarts(&timed_service(up, name));
    let rate = (r1 - r0) as f64 / t0.elapsed().as_secs_f64();
    eprintln!("{name}: {rate:.1} restarts/s");
    rate
}

const LOCAL_FLAP: &str = r#"
[services.flap]
command = ["sh", "-c", "exit 1"]
restart = "always"
backoff = { initial = "20ms", max = "20ms" }
start_limit = { burst = 1000000, interval = "1s" }
"#;

#[test]
fn regression_stopped_agent_does_not_stall_local_services() {
    let (_serial, dir) = setup("stoppedagent");
    let agent = agent(&dir);
    let services = with_agent(
        &agent,
        &format!(
            "{LOCAL_FLAP}
[services.remote]
command = [\"sh\", \"-c\", \"exit 2\"]
agent = \"qm\"
restart = \"always\"
backoff = {{ initial = \"20ms\", max = \"20ms\" }}
start_limit = {{ burst = 1000000, interval = \"1s\" }}
"
        ),
    );
    let up = start(&dir, &services);
    up.wait_for("flap", "restarting", |s| restarts(s) >= 1);
    up.wait_for("remote", "restarting", |s| restarts(s) >= 1);
    let baseline = restart_rate(&up, "flap", 3 * SECOND);
    assert!(baseline >= 3.0, "too few restarts to compare: {baseline:.1}/s");
    let stopped = Stopped::new(agent.pid());
    let during = restart_rate(&up, "flap", 3 * SECOND);
    drop(stopped);
    assert!(
        during >= baseline / 2.0,
        "the local service restarted {during:.1}/s with the agent stopped, {baseline:.1}/s before\n{}",
        up.output()
    );
    up.stop(&dir, &[agent.pid()]);
}

#[test]
fn regression_chatty_service_does_not_stall_supervision() {
    let (_serial, dir) = setup("chatty");
    let services = format!("{LOCAL_FLAP}\n[services.chatty]\ncommand = [\"yes\", \"chatty\"]\nrestart = \"always\"\n");
    let up = start(&dir, &services);
    let out = up.cli(&["stop", "chatty"]);
    assert!(out.status.success(), "{}", stderr(&out));
    up.wait_state("chatty", "stopped");
    up.wait_for("flap", "restarting", |s| restarts(s) >= 1);
    let baseline = restart_rate(&up, "flap", 3 * SECOND);
    assert!(baseline >= 3.0, "too few restarts to compare: {baseline:.1}/s");

    let out = up.cli(&["start", "chatty"]);
    assert!(out.status.success(), "{}", stderr(&out));
    up.wait_state("chatty", "running");
    let log = dir.path("state/logs/chatty.log");
    wait_until("chatty's flood reaches its log", 5 * SECOND, || lines(&log) > 1000, String::new);
    let during = restart_rate(&up, "flap", 3 * SECOND);
    assert!(
        during >= baseline / 2.0,
        "flap restarted {during:.1}/s next to a flood, {baseline:.1}/s before\n{}",
        up.output()
    );
    assert_eq!(up.service("chatty")["state"], "running");
    up.stop(&dir, &[]);
}

#[test]
fn regression_double_forked_daemon_does_not_escape_a_crash() {
    let (_serial, dir) = setup("doublefork");
    let services = r#"
[services.daemon]
command = ["sh", "-c", "setsid sh -c \"exec sleep 1003\" </dev/null >/dev/null 2>&1 & exec sleep 1004"]
kill_mode = "group"
"#;
    let up = start(&dir, services);
    wait_until(
        "both sleeps run",
        5 * SECOND,
        || dir.count(&["sleep", "1003"]) == 1 && dir.count(&["sleep", "1004"]) == 1,
        || format!("{:?}", dir.leftovers(&[])),
    );
    let main = dir.pids_of(&["sleep", "1004"])[0];
    assert_eq!(pid_of(&up.wait_state("daemon", "running")), Some(main));
    up.crash();

    let up = start(&dir, services);
    assert_eq!(pid_of(&up.wait_state("daemon", "running")), Some(main), "adopted:\n{}", up.output());
    assert_eq!(
        (dir.count(&["sleep", "1003"]), dir.count(&["sleep", "1004"])),
        (1, 1),
        "nothing started twice: {:?}",
        dir.leftovers(&[])
    );
    up.stop(&dir, &[]);
}

/// The numbers of the `line N` lines of a captured log (whole lines only); any other stdout
/// line is an error.
fn numbered_lines(log: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .filter_map(|l| l.split_once(" stdout ").map(|(_, m)| m))
        .map(|m| {
            m.strip_prefix("line ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("a garbled line: {m:?}"))
        })
        .collect()
}

#[test]
fn regression_logging_service_survives_a_crash_without_losing_lines() {
    let (_serial, dir) = setup("logcrash");
    let services = r#"
[services.counter]
command = ["sh", "-c", "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.05; done"]
stdout = "log"
"#;
    let log = dir.path("state/logs/counter.log");
    let up = start(&dir, services);
    wait_until("10 lines in the log", 10 * SECOND, || numbered_lines(&log).len() >= 10, String::new);
    let before = up.wait_state("counter", "running");
    let at_crash = numbered_lines(&log).len();
    up.crash();
    std::thread::sleep(SECOND);

    let up = start(&dir, services);
    let after = up.wait_state("counter", "running");
    assert_eq!(
        (pid_of(&after), after["restarts"].as_u64()),
        (pid_of(&before), before["restarts"].as_u64()),
        "adopted, not restarted:\n{}",
        up.output()
    );
    std::thread::sleep(SECOND);
    // It prints about 18 lines a second: those of the second without an orchestrator and of
    // the one after are there, then the numbers run on from 0 without a gap or a repeat.
    wait_until(
        "the lines printed around the crash reach the log",
        5 * SECOND,
        || numbered_lines(&log).len() >= at_crash + 30,
        || format!("{at_crash} lines at the crash, now {:?}\n{}", numbered_lines(&log), up.output()),
    );
    let got = numbered_lines(&log);
    let want: Vec<u64> = (0..got.len() as u64).collect();
    assert_eq!(got, want, "lines lost or repeated across the crash\n{}", up.output());
    up.stop(&dir, &[]);
}

#[test]
fn regression_logs_are_private() {
    let (_serial, dir) = setup("private");
    let services = "[services.talker]\ncommand = [\"sh\", \"-c\", \"echo hi; exec sleep 6001\"]\nstdout = \"log\"\n";
    let up = Up::spawn(&dir, services, &["sh", "-c", "umask 000; exec \"$0\" \"$@\"", HOLDEN], false);
    protect(up.pid());
    wait_for_socket(&up.socket);
    up.wait_state("talker", "running");
    let log = dir.path("state/logs/talker.log");
    wait_until("talker's log", 5 * SECOND, || lines(&log) >= 1, || up.output());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        (mode(&dir.path("state")), mode(&dir.path("state/logs")), mode(&log)),
        (0o700, 0o750, 0o640),
        "state dir, log dir, log file (as octal: {:o}, {:o}, {:o})",
        mode(&dir.path("state")),
        mode(&dir.path("state/logs")),
        mode(&log)
    );
    up.stop(&dir, &[]);
}

#[test]
fn regression_cli_has_a_deadline() {
    let (_serial, dir) = setup("deadline");
    // Accepts every connection and never answers.
    let path = dir.path("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let silent = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };
    let holden = |args: &[&str], timeout: Option<&str>| {
        let mut cmd = Command::new(HOLDEN);
        cmd.args(args).arg("--control-socket").arg(&path).env_remove("HOLDEN_TIMEOUT");
        if let Some(t) = timeout {
            cmd.env("HOLDEN_TIMEOUT", t);
        }
        let (out, took) = run_with_deadline(&mut cmd, 10 * SECOND);
        let out = out.unwrap_or_else(|| panic!("holden {args:?} still waits after {took:?}"));
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "holden {args:?}: {text}");
        assert!(text.contains(&path.display().to_string()) && text.contains("did not answer within"), "{text}");
        took
    };
    let took = holden(&["status"], None);
    assert!(took >= Duration::from_millis(4500), "status gave up after {took:?}, before its 5 s");
    // HOLDEN_TIMEOUT shortens it, for every command; logs -f and events too, which wait for
    // ever only once the orchestrator has answered.
    let calls: [&[&str]; 9] = [
        &["status", "--json"],
        &["start", "s"],
        &["stop", "s"],
        &["restart", "s"],
        &["kill", "s"],
        &["logs", "s"],
        &["logs", "-f", "s"],
        &["events"],
        &["reload"],
    ];
    for args in calls {
        let took = holden(args, Some("0.5"));
        assert!(took < scaled(3 * SECOND), "holden {args:?} with HOLDEN_TIMEOUT=0.5 took {took:?}");
    }
    let out =
        run_short(Command::new(HOLDEN).args(["status", "--control-socket"]).arg(&path).env("HOLDEN_TIMEOUT", "soon"));
    assert_eq!(out.status.code(), Some(2), "a bad HOLDEN_TIMEOUT is a usage error: {}", stderr(&out));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    silent.join().unwrap();
    dir.assert_no_leftovers(&[]);
}

/// CPU time (user + system, clock ticks) `pid` has used.
fn cpu_ticks(pid: i32) -> u64 {
    let f = holden_cli::stat_fields(pid).expect("process alive");
    f[14 - 3].parse::<u64>().unwrap() + f[15 - 3].parse::<u64>().unwrap()
}

/// Asserts `holden up` stays idle (under 0.2 s of CPU in `d`) while nothing happens.
fn assert_idle(up: &Up, d: Duration, what: &str) {
    let before = cpu_ticks(up.pid());
    std::thread::sleep(d);
    let used = cpu_ticks(up.pid()) - before;
    assert!(used < 20, "holden up used {used} ticks of CPU in {d:?} {what}:\n{}", up.output());
}

#[test]
fn regression_holder_gone_does_not_spin_the_loop() {
    let (_serial, dir) = setup("holdergone");
    let up = start(&dir, "[services.s]\ncommand = [\"sleep\", \"1005\"]\n");
    up.wait_state("s", "running");
    let holder = wait_some("the log-pipe holder runs", 5 * SECOND, || {
        dir.leftovers(&[]).into_iter().find(|(_, cmd)| cmd.contains("fdholder")).map(|(pid, _)| pid)
    });
    kill(holder, 9);
    // Before: its hang-up made epoll report the holder's socket at every wait, for ever.
    assert_idle(&up, SECOND, "after the holder died");
    assert!(up.output().contains("log pipe holder: gone"), "{}", up.output());
    up.stop(&dir, &[]);
}

#[test]
fn regression_half_closed_control_client_gets_its_answer_and_no_spin() {
    use std::io::{Read, Write};
    let (_serial, dir) = setup("halfclosed");
    let up = start(&dir, "[services.s]\ncommand = [\"sleep\", \"1006\"]\n");
    up.wait_state("s", "running");
    // A oneway Stop and a List, then the writing side closed at once.
    let mut c = std::os::unix::net::UnixStream::connect(&up.socket).unwrap();
    c.write_all(b"{\"method\":\"io.holden.Orchestrator.Stop\",\"parameters\":{\"names\":[\"s\"]},\"oneway\":true}\0")
        .unwrap();
    c.write_all(b"{\"method\":\"io.holden.Orchestrator.List\"}\0").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    // Before: calls read together with the end were dropped; and while the reply waited unread,
    // the loop spun on the end-of-file.
    up.wait_state("s", "stopped");
    assert_idle(&up, SECOND, "with a half-closed client that does not read");
    let mut reply = Vec::new();
    c.set_read_timeout(Some(5 * SECOND)).unwrap();
    c.read_to_end(&mut reply).unwrap();
    assert!(String::from_utf8_lossy(&reply).contains("\"services\""), "{}", String::from_utf8_lossy(&reply));
    up.stop(&dir, &[]);
}

#[test]
fn regression_stop_in_progress_survives_a_crash() {
    let (_serial, dir) = setup("stopping");
    // Ignores SIGTERM: a stop takes until stop_timeout (SIGKILL).
    let services = r#"
[services.slow]
command = ["sh", "-c", "trap '' TERM; exec sleep 1007"]
restart = "always"
stop_timeout = "3s"
"#;
    let up = start(&dir, services);
    up.wait_state("slow", "running");
    assert!(up.cli(&["stop", "slow"]).status.success());
    up.wait_state("slow", "stopping");
    up.crash();
    let up = start(&dir, services);
    // Before: adopted as running and wanted up, the stop forgotten.
    let s = up.wait_for("slow", "stopped", |s| s["state"] == "stopped");
    assert_eq!(s["wanted"], "down", "{s}");
    assert_eq!(dir.count(&["sleep", "1007"]), 0, "{:?}", dir.leftovers(&[]));
    up.stop(&dir, &[]);
}
