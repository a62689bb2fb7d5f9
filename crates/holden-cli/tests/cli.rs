//! The command-line programs against a real agent: `holden exec`, `pidfd_monitor`, `make all`.
//! Needs root, like the agent's own tests.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holden_cli::children_of;

const HOLDEN: &str = env!("CARGO_BIN_EXE_holden");
const MONITOR: &str = env!("CARGO_BIN_EXE_pidfd_monitor");

struct Agent {
    proc: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Agent {
    /// `holden agent`: the same code as holden-agent.
    fn start() -> Agent {
        assert_eq!(holden_sys::fd::geteuid(), 0, "these tests need root");
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("holden-cli-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("agent.sock");
        let proc = Command::new(HOLDEN)
            .args(["agent", "--log-level", "warn", "--socket"])
            .arg(&socket)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "agent did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        Agent { proc, dir, socket }
    }

    fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new(HOLDEN);
        c.arg("exec").arg("--agent").arg(&self.socket).arg("--").args(args);
        c
    }

    fn children(&self) -> Vec<i32> {
        children_of(self.proc.id() as i32)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        kill(self.proc.id() as i32, 15);
        let _ = self.proc.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Stops a process when dropped, so a failing test leaves nothing running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            kill(self.0.id() as i32, 2);
            let _ = self.0.wait();
        }
    }
}

fn kill(pid: i32, sig: i32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

fn assert_no_children(agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agent.children().is_empty() {
        assert!(Instant::now() < deadline, "agent still has children: {:?}", agent.children());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn exec_passes_output_and_exit_code_through() {
    let agent = Agent::start();
    let out = agent.exec(&["sh", "-c", "echo out; echo err >&2; exit 7"]).output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(agent.exec(&["false"]).status().unwrap().code(), Some(1));
    assert_eq!(agent.exec(&["true"]).status().unwrap().code(), Some(0));
    assert_eq!(agent.exec(&["sh", "-c", "kill -9 $$"]).status().unwrap().code(), Some(128 + 9));
    // Without --env the variable is unset: the agent's own environment applies.
    let out = agent.exec(&["sh", "-c", "echo \"${GREETING-unset}\""]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "unset\n");
    let mut c = Command::new(HOLDEN);
    c.args(["exec", "--env", "GREETING=hi", "--cwd", "/tmp", "--agent"]).arg(&agent.socket);
    let out = c.args(["sh", "-c", "echo \"$GREETING\"; pwd"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n/tmp\n");
    assert_no_children(&agent);
}

#[test]
fn exec_failures_have_distinct_documented_codes() {
    let agent = Agent::start();
    let out = agent.exec(&["holden-no-such-program"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file or directory"));
    let file = agent.dir.join("plain-file");
    std::fs::write(&file, "not a program").unwrap();
    let out = agent.exec(&[file.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(126));
    let out = Command::new(HOLDEN)
        .args(["exec", "--cwd", "/nonexistent", "--agent"])
        .arg(&agent.socket)
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126));
    let out = Command::new(HOLDEN).args(["exec", "--agent", "/nonexistent/agent.sock", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connect to agent at /nonexistent/agent.sock"));
    let out = Command::new(HOLDEN).args(["exec"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    let help = Command::new(HOLDEN).args(["exec", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("127  the command was not found"));
    assert_no_children(&agent);
}

#[test]
fn exec_stdin_reaches_the_child() {
    let agent = Agent::start();
    let mut p = agent.exec(&["tr", "a-z", "A-Z"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    p.stdin.take().unwrap().write_all(b"piped through holden exec\n").unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PIPED THROUGH HOLDEN EXEC\n");
}

#[test]
fn exec_forwards_signals_to_the_child() {
    let agent = Agent::start();
    for (sig, name) in [(15, "TERM"), (2, "INT"), (1, "HUP")] {
        let script = format!("trap 'echo got {name}; exit 42' {name}; echo ready; while :; do sleep 0.05; done");
        let mut p = agent.exec(&["sh", "-c", &script]).stdout(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(p.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        kill(p.id() as i32, sig);
        assert_eq!(lines.next().unwrap().unwrap(), format!("got {name}"));
        assert_eq!(p.wait().unwrap().code(), Some(42), "{name}");
    }
    assert_no_children(&agent);
}

#[test]
fn pidfd_monitor_restarts_both_commands_and_stops_cleanly() {
    let agent = Agent::start();
    let mut mon = Killed(
        Command::new(MONITOR)
            .args(["sleep 0.2", "sh -c 'sleep 0.3; exit 2'"])
            .env("HOLDEN_SOCKET_PATH", &agent.socket)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mon = &mut mon.0;
    let stdout = mon.stdout.take().unwrap();
    let reader = std::thread::spawn(move || BufReader::new(stdout).lines().map(Result::unwrap).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_secs(3));
    let during = children_of(mon.id() as i32);
    kill(mon.id() as i32, 2);
    let status = mon.wait().unwrap();
    let lines = reader.join().unwrap();
    let text = lines.join("\n");
    assert!(status.success(), "{status:?}\n{text}");
    let count = |pat: &str| lines.iter().filter(|l| l.contains(pat)).count();
    assert!(count("local: started") >= 3, "{text}");
    assert!(count("agent: started") >= 3, "{text}");
    assert!(count("exited with code 0") >= 2 && count("exited with code 2") >= 2, "{text}");
    assert!(lines.iter().all(|l| l.starts_with("[20")), "every line is timestamped:\n{text}");
    assert!(text.contains("restarting in 200 ms"), "the delay grows:\n{text}");
    // Nothing is left: not the local child, not the agent's.
    for pid in during {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "local child {pid} left behind");
    }
    assert_no_children(&agent);
}

#[test]
fn pidfd_monitor_reports_an_unreachable_agent_and_a_bad_command() {
    let out =
        Command::new(MONITOR).args(["true", "true"]).env("HOLDEN_SOCKET_PATH", "/nonexistent/a.sock").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connect to agent at /nonexistent/a.sock"));
    let agent = Agent::start();
    let out = Command::new(MONITOR)
        .args(["sleep 5", "holden-no-such-program"])
        .env("HOLDEN_SOCKET_PATH", &agent.socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot start") && err.contains("no such file"), "{err}");
    let out = Command::new(MONITOR).args(["echo 'unterminated", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_no_children(&agent);
}

#[test]
fn help_completions_man_page_and_typos() {
    let run = |args: &[&str]| Command::new(HOLDEN).args(args).output().unwrap();
    let help = run(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for cmd in [
        "demo",
        "up",
        "status",
        "top",
        "start",
        "stop",
        "restart",
        "kill",
        "logs",
        "events",
        "reload",
        "check",
        "exec",
        "ping",
        "info",
        "agent",
        "completions",
    ] {
        assert!(text.contains(&format!("  {cmd} ")), "holden --help lists {cmd}:\n{text}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && script.contains("holden") && script.contains("status"), "{shell}");
    }
    let man = run(&["man"]);
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.starts_with(".ie") && page.contains(".TH holden 1") && page.contains("status"), "{page}");
    // A page for each command, with its options.
    let list = String::from_utf8_lossy(&run(&["man", "--list"]).stdout).into_owned();
    assert!(list.lines().any(|l| l == "holden-logs") && list.lines().any(|l| l == "holden-status"), "{list}");
    for page in ["logs", "holden-logs"] {
        let man = run(&["man", page]);
        let text = String::from_utf8_lossy(&man.stdout);
        assert!(text.contains(".TH holden-logs 1") && text.contains("since"), "{text}");
    }
    let out = run(&["man", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no page holden-nosuch"));
    // A typo: a usage error (2) that suggests what was meant.
    let out = run(&["stauts"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'status'"));
    let out = run(&["logs", "--folow"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--follow"));
    // The agent keeps its own small parser.
    let out = run(&["agent", "--help"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("--socket"));
}
