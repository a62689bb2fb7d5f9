//! `holden up` when something dies under it: the agent (killed and started again while its
//! services run) and the orchestrator itself (SIGKILLed and started again: it adopts what runs,
//! restarts what died meanwhile, and starts no duplicate). Needs root.
//!
//! The test process is a child subreaper, as systemd or a container's init would be for a
//! real orchestrator: processes orphaned by a killed agent or orchestrator are re-parented to
//! it, and a reaper thread reaps them (this VM's PID 1 does not), except the orchestrators and
//! agents the tests wait for themselves and, through `SHORT_CHILD`, the CLI commands they run.

mod common;

use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use common::*;

fn alive(pid: i64) -> bool {
    holden_cli::is_running(pid as i32)
}

fn parent_of(pid: i64) -> i64 {
    holden_cli::stat_fields(pid as i32).unwrap()[1].parse().unwrap()
}

/// One test at a time, with the reaper running, a directory, an agent `qm` in it, and the
/// configuration: `services` after an `[agents.qm]` table. (The lock is released last.)
fn setup(tag: &str, services: &str) -> (MutexGuard<'static, ()>, Dir, Agent, String) {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    reaper();
    let dir = Dir::new(tag);
    let agent = Agent::start(&dir, "qm");
    protect(agent.pid());
    let config = format!("[agents.qm]\nsocket = \"{}\"\n\n{services}", agent.socket.display());
    (serial, dir, agent, config)
}

#[test]
fn agent_services_run_on_when_the_agent_dies_and_return_when_it_is_back() {
    let (_serial, dir, agent, services) = setup(
        "agentdeath",
        r#"
[services.inside]
command = ["sh", "-c", "echo hello from the agent; exec sleep 1000"]
agent = "qm"
backoff = { initial = "100ms", max = "400ms" }
"#,
    );
    let up = Up::start(&dir, &services);
    protect(up.pid());
    let s = up.wait_state("inside", "running");
    assert_eq!(s["agent"], "qm");
    let pid = s["pid"].as_i64().unwrap();
    assert_eq!(parent_of(pid), agent.pid() as i64, "spawned by the agent");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stdout(&up.cli(&["logs", "inside"])).contains("stdout hello from the agent") {
        assert!(Instant::now() < deadline, "output through the agent was not captured");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The agent dies: the service runs on, untouched.
    let mut agent = agent;
    kill(agent.pid(), 9);
    agent.proc.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let s = up.service("inside");
    assert_eq!((s["state"].as_str(), s["pid"].as_i64()), (Some("running"), Some(pid)));
    assert!(alive(pid));

    // Restarted while the agent is away: it is stopped through its pidfd, then waits for the
    // agent, retrying with backoff and showing why.
    assert!(up.cli(&["restart", "inside"]).status.success());
    let s = up.wait_for("inside", "waiting for the agent", |s| {
        s["state"] == "backing-off" && s["last_error"].as_str().is_some_and(|e| e.contains("connect to agent"))
    });
    assert_eq!(s["last_exit"], exit_seen_by_a_non_parent("signal SIGTERM"), "the exit of an orphaned process");
    assert!(!alive(pid));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(up.service("inside")["state"], "backing-off");

    // The agent is back: the service starts again, from the new agent.
    let agent2 = Agent::start(&dir, "qm");
    protect(agent2.pid());
    let s = up.wait_for("inside", "running again", |s| s["state"] == "running" && s["last_error"].is_null());
    let pid2 = s["pid"].as_i64().unwrap();
    assert_eq!(parent_of(pid2), agent2.pid() as i64);
    assert!(up.output().contains("inside: backing-off (connect to agent at"), "{}", up.output());
    up.stop(&dir, &[agent2.pid()]);
}

#[test]
fn a_sigkilled_orchestrator_is_replaced_without_duplicates_or_orphans() {
    let (_serial, dir, agent, services) = setup(
        "readopt",
        r#"
[services.steady]
command = ["sh", "-c", "trap 'echo got USR1' USR1; while :; do sleep 0.05; done"]

[services.victim]
command = ["sleep", "1000"]

[services.remote]
command = ["sleep", "1001"]
agent = "qm"
"#,
    );
    let up = Up::start(&dir, &services);
    let first_start = Instant::now();
    protect(up.pid());
    let pid = |up: &Up, n: &str| up.wait_state(n, "running")["pid"].as_i64().unwrap();
    let (steady, victim, remote) = (pid(&up, "steady"), pid(&up, "victim"), pid(&up, "remote"));
    // How each process will be recognised after the crash: its pidfs inode where pidfds have
    // their own (6.9+), else its start time alone (`make vm-test` runs 6.1).
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("state/state.json")).unwrap()).unwrap();
    let kind = if holden_sys::process::probe_features().pidfs { "pidfs_inode" } else { "start_time" };
    let recorded = state["processes"].as_array().expect("processes");
    assert_eq!(recorded.len(), 3, "{state}");
    for p in recorded {
        assert!(p["identity"].get(kind).is_some(), "identified by {kind}: {p}");
    }

    // SIGKILL: no clean shutdown, so the services run on.
    let mut up = up;
    kill(up.pid(), 9);
    up.proc.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(alive(steady) && alive(victim) && alive(remote));
    // One of them dies while no orchestrator runs.
    kill(victim as i32, 9);
    // Dead and reaped by the reaper thread (a zombie would be adopted, then restarted as
    // ended with an unknown status: also right, but this test takes the "gone" path).
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{victim}")).exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(up);

    let up = Up::start(&dir, &services);
    protect(up.pid());
    assert_eq!(pid(&up, "steady"), steady, "adopted, not restarted");
    // Its uptime goes on from its start, not from the adoption (regression: it began anew).
    let uptime = up.service("steady")["since_ms"].as_u64().unwrap();
    let ran = first_start.elapsed().as_millis() as u64;
    let slack = scaled(Duration::from_millis(500)).as_millis() as u64;
    assert!(uptime + slack >= ran && uptime <= ran + slack, "uptime {uptime} ms, ran {ran} ms");
    assert_eq!(pid(&up, "remote"), remote, "adopted through the agent, not restarted");
    let victim2 = pid(&up, "victim");
    assert_ne!(victim2, victim, "what died meanwhile is started again");
    let out = up.output();
    assert!(out.contains(&format!("steady: adopting pid {steady}")), "{out}");
    assert!(out.contains(&format!("victim: pid {victim} from the last run is gone")), "{out}");
    // No duplicates: one process per service.
    let left = dir.leftovers(&[agent.pid(), up.pid()]);
    let count = |needle: &str| left.iter().filter(|(_, c)| c.starts_with(needle)).count();
    assert_eq!((count("sleep 1000"), count("sleep 1001"), count("sh -c trap")), (1, 1, 1), "{left:?}");

    // The adopted process is fully managed: its output is captured again, and its exit read.
    assert!(up.cli(&["kill", "-s", "USR1", "steady"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stdout(&up.cli(&["logs", "steady"])).contains("stdout got USR1") {
        assert!(Instant::now() < deadline, "the adopted process's output is not captured");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(up.cli(&["stop", "steady"]).status.success());
    let s = up.wait_state("steady", "stopped");
    assert_eq!(s["last_exit"], exit_seen_by_a_non_parent("signal SIGTERM"));
    assert!(!alive(steady));

    up.stop(&dir, &[agent.pid()]);
    assert!(!dir.path("state/state.json").exists(), "a clean shutdown removes the state file");
}
