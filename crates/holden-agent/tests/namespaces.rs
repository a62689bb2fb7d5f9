//! An agent in its own pid, mount, uts, ipc and net namespaces; the client outside.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn ns(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap().to_string_lossy().into_owned()
}

#[test]
fn spawned_process_lives_in_the_agents_namespaces() {
    require_root();
    let dir = TempDir::new("ns");
    let socket = dir.0.join("agent.sock");
    let unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "--kill-child=SIGTERM"])
        .arg(AGENT)
        .arg("--socket")
        .arg(&socket)
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .spawn()
        .expect("unshare (util-linux)");
    // The guard stops unshare, and with it the agent (--kill-child), even if an assertion fails.
    let mut guard = TestAgent { proc: Some(unshare), socket: socket.clone(), dir };
    guard.wait_ready();
    let mut client = holden::Agent::connect(&socket).unwrap();
    let agent_pid = client.agent_pid().unwrap().expect("agent visible from the host").to_string();
    assert_eq!(client.info().unwrap().pid, 1, "the agent is PID 1 of its pid namespace");

    let mut child = holden::Command::new("sleep").arg("30").spawn_via(&mut client).unwrap();
    let host_pid = child.pid().expect("host-side pid from the pidfd's fdinfo");
    assert_ne!(host_pid, child.spawner_pid(), "the agent sees a different pid");
    let hp = host_pid.to_string();
    for kind in ["pid", "mnt", "uts", "ipc", "net"] {
        assert_eq!(ns(&hp, kind), ns(&agent_pid, kind), "{kind}: child and agent share it");
        assert_ne!(ns(&hp, kind), ns("self", kind), "{kind}: differs from the client's");
    }
    child.signal(15).unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(15));

    // Orphans re-parented to the agent (PID 1 there) are reaped.
    let mut parent = holden::Command::new("sh").args(["-c", "sleep 0.2 & exit 0"]).spawn_via(&mut client).unwrap();
    assert!(parent.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
    assert_no_children(agent_pid.parse().unwrap());

    signal(agent_pid.parse().unwrap(), 15);
    let status = wait_timeout(guard.proc.as_mut().unwrap(), Duration::from_secs(5)).expect("agent and unshare exit");
    guard.proc = None;
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "socket removed at shutdown");
}
