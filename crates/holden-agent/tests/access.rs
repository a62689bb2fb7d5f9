//! Access control by peer credentials, tested with a real client process running as `nobody`.
//!
//! The client is this test binary itself, copied where `nobody` may run it and started as uid
//! 65534 with `HOLDEN_TEST_CLIENT` naming the socket: `client_role` then acts as the client and
//! prints what happened. In a normal run `client_role` has nothing to do.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

const NOBODY: u32 = 65534;

#[test]
fn client_role() {
    let Ok(socket) = std::env::var("HOLDEN_TEST_CLIENT") else { return };
    let outcome = match holden::Agent::connect(&socket) {
        Err(e) => format!("connect-error {e}"),
        Ok(mut agent) => {
            let ping = agent.ping().map_or_else(|e| format!("ping-error {e}"), |()| "ping-ok".into());
            // Exits with its uid modulo 256: 254 for nobody, 0 for root.
            let mut cmd = holden::Command::new("sh");
            cmd.args(["-c", "exit $(( $(id -u) % 256 ))"]);
            let spawn = match cmd.spawn_via(&mut agent) {
                Ok(mut c) => format!("spawn-ok {}", c.wait().unwrap()),
                Err(holden::Error::Agent(holden::AgentError::PermissionDenied { uid })) => {
                    format!("spawn-denied {uid}")
                }
                Err(e) => format!("spawn-error {e}"),
            };
            format!("{ping} {spawn}")
        }
    };
    println!("OUTCOME: {outcome}");
}

fn run_as_nobody(dir: &TempDir, socket: &std::path::Path) -> String {
    let exe = dir.0.join("client");
    if !exe.exists() {
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new(&exe)
        .args(["--exact", "client_role", "--nocapture", "--test-threads=1"])
        .env("HOLDEN_TEST_CLIENT", socket)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("OUTCOME: ").map(|(_, o)| o))
        .unwrap_or_else(|| panic!("client printed no outcome: {stdout} {}", String::from_utf8_lossy(&out.stderr)))
        .to_owned()
}

#[test]
fn regression_an_allowed_caller_gets_processes_running_as_itself_not_as_root() {
    require_root();
    let dir = TempDir::new("access");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Default mode 0660: nobody cannot even connect.
    let agent = TestAgent::start_at(TempDir::new("access-a"), dir.0.join("a.sock"), &[]);
    let mode = std::fs::metadata(&agent.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    assert!(run_as_nobody(&dir, &agent.socket).starts_with("connect-error"));
    drop(agent);

    // World-connectable socket: nobody may ping but not spawn.
    let agent = TestAgent::start_at(TempDir::new("access-b"), dir.0.join("b.sock"), &["--socket-mode", "0666"]);
    assert_eq!(run_as_nobody(&dir, &agent.socket), format!("ping-ok spawn-denied {NOBODY}"));
    drop(agent);

    // Allowed by uid, and by gid: the processes run as the caller (uid 65534 exits 254), not as
    // the agent's root; only --allow-uid-as-agent gives the agent's own user (exit 0).
    for (allow, code) in
        [(["--allow-uid", "65534"], 254), (["--allow-gid", "65534"], 254), (["--allow-uid-as-agent", "65534"], 0)]
    {
        let args = ["--socket-mode", "0666", allow[0], allow[1]];
        let agent = TestAgent::start_at(TempDir::new("access-c"), dir.0.join("c.sock"), &args);
        assert_eq!(run_as_nobody(&dir, &agent.socket), format!("ping-ok spawn-ok exit code {code}"), "{allow:?}");
        let pid = agent.pid();
        drop(agent);
        assert!(!alive(pid));
    }
}
