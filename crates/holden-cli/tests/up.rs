//! `holden up` and the commands that drive it, against real processes and a real agent.
//! Needs root (the unprivileged-caller test switches to uid 65534).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A service that runs until stopped and writes its start and stop into `file`.
fn recorder(name: &str, file: &std::path::Path, deps: &[&str]) -> String {
    format!(
        "[services.{name}]\ncommand = [\"sh\", \"-c\", \"echo start {name} >> {f}; trap 'echo stop {name} >> {f}; exit 0' TERM; while :; do sleep 0.05; done\"]\ndepends_on = {deps:?}\n",
        f = file.display()
    )
}

#[test]
fn a_crashing_service_restarts_with_the_configured_backoff_then_fails_at_the_start_limit() {
    let dir = Dir::new("backoff");
    let up = Up::start(
        &dir,
        r#"
[services.crash]
command = ["sh", "-c", "exit 3"]
backoff = { initial = "100ms", max = "400ms", factor = 2.0 }
start_limit = { burst = 5, interval = "60s" }
"#,
    );
    let s = up.wait_state("crash", "failed");
    assert_eq!(
        (s["restarts"].as_u64(), s["last_exit"].as_str(), &s["pid"]),
        (Some(4), Some("code 3"), &serde_json::Value::Null)
    );
    let out = up.output();
    let backoffs = events(&out, "crash: backing-off");
    let starts = events(&out, "crash: starting");
    assert_eq!((starts.len(), backoffs.len()), (5, 4), "{out}");
    for (i, want) in [100, 200, 400, 400].into_iter().enumerate() {
        let waited = starts[i + 1].0 - backoffs[i].0;
        let slack = scaled(Duration::from_millis(250)).as_millis() as u64;
        assert!(waited >= want - 1 && waited < want + slack, "delay {i}: {waited} ms, want {want}\n{out}");
    }
    // A start by hand begins anew.
    assert!(up.cli(&["start", "crash"]).status.success());
    up.wait_for("crash", "failed again after 5 more starts", |s| {
        s["state"] == "failed" && s["restarts"].as_u64() == Some(9)
    });
    up.stop(&dir, &[]);
}

#[test]
fn restart_never_leaves_an_ended_service_exited() {
    let dir = Dir::new("never");
    let up = Up::start(
        &dir,
        r#"
[services.once]
command = ["sh", "-c", "exit 7"]
restart = "never"
[services.ok]
command = ["true"]
"#,
    );
    let s = up.wait_state("once", "exited");
    assert_eq!((s["last_exit"].as_str(), s["restarts"].as_u64()), (Some("code 7"), Some(0)));
    // on-failure (the default) does not restart a clean exit either.
    let s = up.wait_state("ok", "exited");
    assert_eq!(s["last_exit"].as_str(), Some("code 0"));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(up.service("once")["state"], "exited");
    up.stop(&dir, &[]);
}

#[test]
fn a_service_ignoring_sigterm_is_killed_after_stop_timeout() {
    let dir = Dir::new("stubborn");
    let up = Up::start(
        &dir,
        r#"
[services.stubborn]
command = ["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"]
stop_timeout = "700ms"
"#,
    );
    let pid = up.wait_state("stubborn", "running")["pid"].as_i64().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    assert!(up.cli(&["stop", "stubborn"]).status.success());
    let s = up.wait_state("stubborn", "stopped");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(700) && took < scaled(Duration::from_secs(3)), "{took:?}");
    assert_eq!(s["last_exit"].as_str(), Some("signal SIGKILL"));
    assert!(!holden_cli::is_running(pid as i32), "pid {pid} is gone");
    up.stop(&dir, &[]);
}

#[test]
fn dependencies_start_first_and_stop_last() {
    let dir = Dir::new("deps");
    let file = dir.path("order");
    let services =
        [recorder("db", &file, &[]), recorder("app", &file, &["db"]), recorder("web", &file, &["app"])].concat();
    let up = Up::start(&dir, &services);
    for s in ["db", "app", "web"] {
        up.wait_state(s, "running");
    }
    let out = up.output();
    let order: Vec<String> =
        events(&out, ": running").into_iter().map(|(_, l)| l.split(':').next().unwrap().to_owned()).collect();
    assert_eq!(order, ["db", "app", "web"], "{out}");
    up.stop(&dir, &[]);
    let text = std::fs::read_to_string(&file).unwrap();
    let stops: Vec<&str> = text.lines().filter(|l| l.starts_with("stop")).collect();
    assert_eq!(stops, ["stop web", "stop app", "stop db"], "{text}");
}

#[test]
fn reload_adds_removes_and_changes_services_and_leaves_unchanged_ones_running() {
    let dir = Dir::new("reload");
    let svc = |name: &str, arg: &str| format!("[services.{name}]\ncommand = [\"sleep\", \"{arg}\"]\n");
    let up = Up::start(&dir, &[svc("keep", "1000"), svc("change", "1000"), svc("remove", "1000")].concat());
    let pid = |up: &Up, n: &str| up.wait_state(n, "running")["pid"].as_i64().unwrap();
    let (keep, change, remove) = (pid(&up, "keep"), pid(&up, "change"), pid(&up, "remove"));

    // A configuration that does not load changes nothing and names the place.
    std::fs::write(&up.config, "[services.keep]\ncommand = []\n").unwrap();
    let out = up.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("holden.toml:2:11: service keep: the command is empty"), "{}", stderr(&out));
    assert_eq!(up.status().len(), 3);

    write_config(&dir, &[svc("keep", "1000"), svc("change", "2000"), svc("add", "1000")].concat());
    let out = up.cli(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "added: add\nremoved: remove\nchanged: change\n");
    assert_eq!(pid(&up, "keep"), keep, "an unchanged service is not touched");
    let changed = up.wait_for("change", "restarted", |s| s["state"] == "running" && s["pid"].as_i64() != Some(change));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", changed["pid"])).unwrap();
    assert_eq!(cmdline, b"sleep\x002000\x00");
    pid(&up, "add");
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.status().iter().any(|s| s["name"] == "remove") {
        assert!(Instant::now() < deadline, "remove is still listed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!holden_cli::is_running(remove as i32), "the removed service's process ended");
    // SIGHUP reloads too.
    write_config(&dir, &[svc("keep", "1000"), svc("change", "2000")].concat());
    kill(up.pid(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.status().len() != 2 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pid(&up, "keep"), keep);
    // Both ways are on the record (regression: a reload through the CLI was not).
    let out = up.output();
    assert!(
        out.contains("reloaded (holden reload): added [\"add\"], removed [\"remove\"], changed [\"change\"]"),
        "{out}"
    );
    assert!(out.contains("reload (holden reload): reload failed, nothing changed: "), "{out}");
    wait_until(
        "SIGHUP's line",
        Duration::from_secs(5),
        || up.output().contains("reloaded (SIGHUP): added []"),
        || up.output(),
    );
    up.stop(&dir, &[]);
}

#[test]
fn logs_are_captured_timestamped_rotated_and_followed() {
    let dir = Dir::new("logs");
    let up = Up::start(
        &dir,
        r#"log_max_size = 16384
log_keep = 2

[services.chatty]
command = ["sh", "-c", "i=0; while [ $i -lt 600 ]; do echo \"line $i $(printf '%080d' 0)\"; i=$((i+1)); done; echo to-stderr >&2; exec sleep 1000"]
"#,
    );
    let logs = dir.path("state/logs");
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    loop {
        // stdout and stderr are two pipes, read in turn: the stderr line may come before the
        // last stdout lines (under emulation, it did).
        let text = std::fs::read_to_string(logs.join("chatty.log")).unwrap_or_default();
        if text.contains("to-stderr") && text.contains(" line 599 ") {
            break;
        }
        assert!(Instant::now() < deadline, "the log never got the last lines");
        std::thread::sleep(Duration::from_millis(20));
    }
    let size = |n: &str| std::fs::metadata(logs.join(n)).map(|m| m.len()).unwrap_or(0);
    assert!(size("chatty.log") <= 16384 && size("chatty.log.1") > 15000 && size("chatty.log.2") > 15000);
    assert!(!logs.join("chatty.log.3").exists(), "only log_keep = 2 rotated files are kept");

    let out = up.cli(&["logs", "-n", "3", "chatty"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].contains(" stdout line 599 "), "{text}");
    assert!(lines[2].ends_with(" stderr to-stderr"), "{text}");
    assert!(lines[2].starts_with("20") && lines[2].as_bytes()[10] == b'T', "timestamped: {text}");

    // -f follows new output: a kill -s USR1 makes no output, so restart and watch the new run.
    let mut follow = Command::new(HOLDEN)
        .args(["logs", "-f", "-n", "0", "chatty", "--control-socket"])
        .arg(&up.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(up.cli(&["restart", "chatty"]).status.success());
    let mut reader = BufReader::new(follow.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.contains(" stdout line 0 "), "{first}");
    kill(follow.id() as i32, 15);
    let _ = follow.wait();
    up.stop(&dir, &[]);
}

#[test]
fn every_command_against_a_running_orchestrator() {
    let dir = Dir::new("cli");
    let up = Up::start(
        &dir,
        r#"
[services.a]
command = ["sh", "-c", "trap 'echo got USR1' USR1; echo hello; while :; do sleep 0.05; done"]
[services.b]
command = ["sleep", "1000"]
kill_mode = "group"
"#,
    );
    let a = up.wait_state("a", "running")["pid"].as_i64().unwrap();
    let b = up.wait_state("b", "running")["pid"].as_i64().unwrap();

    let out = up.cli(&["status"]);
    let text = stdout(&out);
    assert!(out.status.success());
    assert!(text.starts_with("NAME  STATE    READY/HEALTH  PID"), "{text}");
    assert!(text.lines().nth(1).unwrap().starts_with(&format!("a     running  ready         {a}")), "{text}");
    assert!(text.contains("(local)"));
    let one: serde_json::Value = serde_json::from_slice(&up.cli(&["status", "--json", "b"]).stdout).unwrap();
    assert_eq!(one[0]["name"], "b");
    for key in ["name", "state", "pid", "restarts", "last_exit"] {
        assert!(one[0].get(key).is_some(), "--json lacks {key}");
    }

    // events: every state change, as it happens.
    let mut events = Command::new(HOLDEN)
        .args(["events", "--control-socket"])
        .arg(&up.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    assert!(up.cli(&["stop", "b"]).status.success());
    assert_eq!(up.wait_state("b", "stopped")["pid"], serde_json::Value::Null);
    // The group was signalled with PIDFD_SIGNAL_PROCESS_GROUP where the kernel has it (6.9+),
    // else with kill(-pgid) (`make vm-test` runs 6.1).
    let how = if holden_sys::process::probe_features().pidfd_signal_group {
        "through its leader's pidfd".to_string()
    } else {
        format!("with kill(-{b})")
    };
    let line = format!("b: SIGTERM to process group {b} {how}");
    assert!(up.output().contains(&line), "no {line:?} in\n{}", up.output());
    assert!(up.cli(&["start", "b"]).status.success());
    up.wait_state("b", "running");
    let out = up.cli(&["restart", "a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let a2 = up.wait_for("a", "restarted", |s| s["state"] == "running" && s["pid"].as_i64() != Some(a));
    assert_eq!(a2["restarts"].as_u64(), Some(1));

    let mut reader = BufReader::new(events.stdout.take().unwrap());
    let mut seen = Vec::new();
    while seen.len() < 7 {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        seen.push(l.split_whitespace().skip(1).take(2).collect::<Vec<_>>().join(" "));
    }
    assert_eq!(seen, ["b stopping", "b stopped", "b starting", "b running", "a stopping", "a starting", "a running"]);
    kill(events.id() as i32, 15);
    let _ = events.wait();

    std::thread::sleep(Duration::from_millis(100));
    assert!(up.cli(&["kill", "-s", "USR1", "a"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = stdout(&up.cli(&["logs", "a"]));
        if logs.contains("stdout got USR1") {
            assert!(logs.contains("stdout hello"));
            break;
        }
        assert!(Instant::now() < deadline, "USR1 never reached a: {logs}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(up.cli(&["kill", "b"]).status.success(), "SIGTERM to b's group");
    up.wait_for("b", "restarted after SIGTERM", |s| s["last_exit"] == "signal SIGTERM" && s["state"] == "running");

    // Errors: exit 1 for what the orchestrator refuses, 2 for usage, 3 when nobody answers.
    let out = up.cli(&["stop", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no such service: ghost"), "{}", stderr(&out));
    up.cli(&["stop", "b"]);
    up.wait_state("b", "stopped");
    let out = up.cli(&["kill", "b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("service b is not running"));
    assert_eq!(up.cli(&["start"]).status.code(), Some(2));
    assert_eq!(up.cli(&["kill", "-s", "SIGNOPE", "a"]).status.code(), Some(2));
    let out = Command::new(HOLDEN).args(["status", "--control-socket"]).arg(dir.path("nothing.sock")).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("connect to orchestrator at"), "{}", stderr(&out));
    for cmd in ["up", "status", "start", "stop", "restart", "kill", "logs", "events", "reload", "check"] {
        let out = Command::new(HOLDEN).args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success() && stdout(&out).contains("Usage: holden"), "{cmd} --help");
    }

    // check validates without running anything.
    let out = Command::new(HOLDEN).args(["check", "-c"]).arg(&up.config).output().unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("ok: 2 services (a, b)"), "{}", stdout(&out));
    std::fs::write(dir.path("bad.toml"), "[services.x]\ncommand = [\"x\"]\nrestart = \"sometimes\"\n").unwrap();
    let out = Command::new(HOLDEN).args(["check", "-c"]).arg(dir.path("bad.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad.toml:3:11: unknown variant"), "{}", stderr(&out));
    // holden up refuses a bad file with its place, and a missing one.
    let out = Command::new(HOLDEN).args(["up", "-c"]).arg(dir.path("bad.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad.toml:3:11: unknown variant"), "{}", stderr(&out));
    let out = Command::new(HOLDEN).args(["up", "-c"]).arg(dir.path("missing.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.toml:1:1: cannot read the file"), "{}", stderr(&out));
    assert_eq!(Command::new(HOLDEN).args(["up", "--bogus"]).output().unwrap().status.code(), Some(2));
    // A second orchestrator on the same socket refuses to start.
    let out = Command::new(HOLDEN).args(["up", "-c"]).arg(&up.config).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("another orchestrator is already listening"), "{}", stderr(&out));
    // So does one on another socket but the same state directory: two would adopt and sweep
    // each other's processes.
    let other = dir.path("other.sock");
    let out =
        Command::new(HOLDEN).args(["up", "-c"]).arg(&up.config).arg("--control-socket").arg(&other).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("uses the state directory"), "{}", stderr(&out));
    assert!(!other.exists(), "the refused orchestrator left its socket behind");
    up.stop(&dir, &[]);
}

#[test]
fn an_unprivileged_uid_is_refused_on_the_control_socket() {
    let dir = Dir::new("access");
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let services = "[services.s]\ncommand = [\"sleep\", \"1000\"]\n";
    let as_nobody = |up: &Up, args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", HOLDEN])
            .args(args)
            .arg("--control-socket")
            .arg(&up.socket)
            .output()
            .unwrap()
    };
    // The default mode, 0660, keeps other users from connecting at all.
    let up = Up::start(&dir, services);
    up.wait_state("s", "running");
    let out = as_nobody(&up, &["status"]);
    assert_eq!(out.status.code(), Some(1), "not allowed is not \"no orchestrator\": {}", stderr(&out));
    assert!(stderr(&out).contains("ermission denied"), "{}", stderr(&out));
    up.stop(&dir, &[]);

    // With 0666 anyone may look, but only allowed callers may act or read logs.
    let up = Up::start_with(&dir, services, &["--socket-mode", "0666"], &[]);
    let pid = up.wait_state("s", "running")["pid"].clone();
    assert!(as_nobody(&up, &["status"]).status.success());
    for args in [&["stop", "s"][..], &["kill", "s"], &["restart", "s"], &["reload"], &["logs", "s"]] {
        let out = as_nobody(&up, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains("permission denied for uid 65534"), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(up.service("s")["pid"], pid, "nothing changed");
    up.stop(&dir, &[]);

    // --allow-uid lets that uid act.
    let up = Up::start_with(&dir, services, &["--socket-mode", "0666", "--allow-uid", "65534"], &[]);
    up.wait_state("s", "running");
    assert!(as_nobody(&up, &["stop", "s"]).status.success());
    up.wait_state("s", "stopped");
    up.stop(&dir, &[]);
}

#[test]
fn sd_notify_ready_watchdog_status_and_stopping() {
    let dir = Dir::new("notify");
    let path = dir.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let up = Up::start_with(
        &dir,
        "[services.s]\ncommand = [\"sleep\", \"1000\"]\n",
        &[],
        &[("NOTIFY_SOCKET", path.to_str().unwrap()), ("WATCHDOG_USEC", "400000")],
    );
    let mut buf = [0u8; 4096];
    let mut recv = || {
        let n = sock.recv(&mut buf).expect("a notification");
        (started.elapsed(), String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    // Messages until READY=1: the initial service must be running by then.
    loop {
        let (_, m) = recv();
        if m.contains("READY=1") {
            assert!(m.contains("STATUS=1 services: 1 running"), "{m}");
            break;
        }
    }
    assert_eq!(up.service("s")["state"], "running");
    let mut watchdogs = Vec::new();
    while watchdogs.len() < 3 {
        let (t, m) = recv();
        if m == "WATCHDOG=1" {
            watchdogs.push(t);
        }
    }
    let gap = watchdogs[2] - watchdogs[1];
    assert!(gap >= Duration::from_millis(150) && gap < scaled(Duration::from_millis(450)), "WATCHDOG=1 every {gap:?}");
    kill(up.pid(), 15);
    loop {
        let (_, m) = recv();
        if m.contains("STOPPING=1") {
            break;
        }
    }
    up.stop(&dir, &[]);
}

#[test]
fn the_demo_runs_its_services_and_leaves_nothing_behind() {
    let out = Command::new(HOLDEN).args(["demo", "--seconds", "6"]).output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("running as root: the agent gets new pid"), "{text}");
    for needle in [
        "clock  running",
        "web    running",
        "flaky: backing-off (last exit: code 1)",
        "holden up ended with exit code 0",
        "sockets removed: true; processes left: none",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(text.contains("stdout serving as pid "), "web's log came through the agent: {text}");
    // Piped, it still runs its 6 seconds, not more (regression: 7, in steps of 4 s).
    let mut last =
        text.lines().filter_map(|l| l.strip_prefix("-- ")?.split(" s --").next()?.trim().parse::<f64>().ok());
    let last = last.next_back().expect("status frames");
    assert!((5.5..6.6).contains(&last), "the last frame at {last} s:\n{text}");
}

#[test]
fn processes_a_service_leaves_behind_end_with_holden_up() {
    let dir = Dir::new("orphans");
    // The background sleep outlives its shell and is re-parented to holden up (a subreaper).
    let up = Up::start(&dir, "[services.forker]\ncommand = [\"sh\", \"-c\", \"sleep 1000 & exec sleep 1001\"]\n");
    up.wait_state("forker", "running");
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.leftovers(&[up.pid()]).len() < 2 {
        assert!(Instant::now() < deadline, "the background sleep never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    up.stop(&dir, &[]);
}

#[test]
fn hostile_bytes_on_the_control_socket_get_errors_and_harm_nobody() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let dir = Dir::new("hostile");
    let up = Up::start(&dir, "[services.s]\ncommand = [\"sleep\", \"1000\"]\n");
    let pid = up.wait_state("s", "running")["pid"].clone();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json\0".to_vec(), "InvalidParameter"),
        (b"[1,2,3]\0".to_vec(), "InvalidParameter"),
        (b"{\"method\": 42}\0".to_vec(), "InvalidParameter"),
        (format!("{deep}\0").into_bytes(), "InvalidParameter"),
        (b"{\"method\":\"io.holden.Orchestrator.Nope\"}\0".to_vec(), "MethodNotFound"),
        (
            b"{\"method\":\"io.holden.Orchestrator.Stop\",\"parameters\":{\"names\":\"s\"}}\0".to_vec(),
            "InvalidParameter",
        ),
        (
            b"{\"method\":\"io.holden.Orchestrator.Kill\",\"parameters\":{\"name\":\"s\",\"signal\":99}}\0".to_vec(),
            "InvalidParameter",
        ),
        (
            b"{\"method\":\"io.holden.Orchestrator.Logs\",\"parameters\":{\"name\":\"s\",\"lines\":-5}}\0".to_vec(),
            "InvalidParameter",
        ),
        (b"{\"method\":\"io.holden.Orchestrator.Events\"}\0".to_vec(), "InvalidParameter"),
        (b"\xff\xfe\xfd\0".to_vec(), "InvalidParameter"),
        // Generic Varlink introspection works.
        (b"{\"method\":\"org.varlink.service.GetInfo\"}\0".to_vec(), "io.holden.Orchestrator"),
        (
            b"{\"method\":\"org.varlink.service.GetInterfaceDescription\",\"parameters\":{\"interface\":\"io.holden.Orchestrator\"}}\0".to_vec(),
            "method Reload() -> (added: []string",
        ),
    ];
    for (msg, want) in cases {
        let mut c = UnixStream::connect(&up.socket).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(&msg).unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while !reply.contains(&0) {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&reply);
        assert!(text.contains(want), "{:?}: {text}", String::from_utf8_lossy(&msg[..msg.len().min(60)]));
    }
    // More than a message may hold, without a NUL: the connection is dropped.
    let mut c = UnixStream::connect(&up.socket).unwrap();
    let _ = c.write_all(&vec![b'x'; 2 * 1024 * 1024]);
    let mut buf = [0u8; 16];
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
    // Half a message, then silence, then a hang-up; and 200 idle connections held open.
    let mut half = UnixStream::connect(&up.socket).unwrap();
    half.write_all(b"{\"method\":\"io.holden.Orch").unwrap();
    let idle: Vec<UnixStream> = (0..200).map(|_| UnixStream::connect(&up.socket).unwrap()).collect();
    drop(half);
    // Everyone else is served, and nothing changed.
    let s = up.service("s");
    assert_eq!((s["state"].as_str(), &s["pid"]), (Some("running"), &pid));
    drop(idle);
    up.stop(&dir, &[]);
}

#[test]
fn a_closed_stdout_does_not_stop_supervision() {
    let dir = Dir::new("stdout");
    write_config(&dir, "[services.flap]\ncommand = [\"sh\", \"-c\", \"sleep 0.05; exit 1\"]\nstart_limit = { burst = 1000, interval = \"1s\" }\nbackoff = { initial = \"10ms\", max = \"10ms\" }\n");
    // holden up's stdout is a pipe nobody reads: its state-change lines get EPIPE.
    let mut proc = Command::new(HOLDEN)
        .args(["up", "-c"])
        .arg(dir.path("holden.toml"))
        .env(MARKER, &dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(proc.stdout.take());
    let socket = dir.path("control.sock");
    wait_for_socket(&socket);
    let up = Up { proc, config: dir.path("holden.toml"), socket, out: dir.path("none") };
    up.wait_for("flap", "restarted many times", |s| s["restarts"].as_u64() >= Some(10));
    up.stop(&dir, &[]);
}

#[test]
fn regression_followers_fail_when_the_orchestrator_goes_away() {
    let dir = Dir::new("followers");
    let up = Up::start(&dir, "[services.s]\ncommand = [\"sh\", \"-c\", \"echo hello; exec sleep 1000\"]\n");
    up.wait_state("s", "running");
    let follow = |args: &[&str]| {
        Command::new(HOLDEN)
            .args(args)
            .arg("--control-socket")
            .arg(&up.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let logs = follow(&["logs", "-f", "s"]);
    let events = follow(&["events"]);
    std::thread::sleep(scaled(Duration::from_millis(300)));
    let pid = up.pid();
    up.crash();
    for (what, child) in [("logs -f", logs), ("events", events)] {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{what}: it used to end 0 as if all was well");
        assert!(stderr(&out).contains("the orchestrator went away"), "{what}: {}", stderr(&out));
    }
    assert!(!alive(pid));
}

#[test]
fn logs_of_every_service_interleave_by_time_with_their_names() {
    let dir = Dir::new("logs-all");
    let up = Up::start(
        &dir,
        r#"
[services.alpha]
command = ["sh", "-c", "echo a1; sleep 0.4; echo a2; sleep 0.4; echo a3; exec sleep 1000"]

[services.beta]
command = ["sh", "-c", "sleep 0.2; echo b1; sleep 0.4; echo b2; exec sleep 1000"]

[services.quiet]
command = ["sleep", "1000"]
stdout = "null"
stderr = "null"
"#,
    );
    let logs = |args: &[&str]| {
        let out = up.cli(&[&["logs"], args].concat());
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    wait_until("five lines", scaled(Duration::from_secs(5)), || logs(&[]).lines().count() == 5, || logs(&[]));
    // No name: every service with a log (quiet has none), by time, each line named.
    let all = logs(&[]);
    let order: Vec<&str> = all.lines().map(|l| l.rsplit(' ').next().unwrap()).collect();
    assert_eq!(order, ["a1", "b1", "a2", "b2", "a3"], "{all}");
    assert!(all.lines().all(|l| l.starts_with("alpha | ") || l.starts_with("beta  | ")), "{all}");
    // -n counts them all; several names likewise; one name is as it always was.
    assert_eq!(logs(&["-n", "2"]).lines().count(), 2);
    assert_eq!(
        logs(&["alpha", "beta", "-n", "3"]).lines().map(|l| &l[..5]).collect::<Vec<_>>(),
        ["alpha", "beta ", "alpha"]
    );
    assert!(logs(&["beta"]).lines().all(|l| l.contains(" stdout b")), "{}", logs(&["beta"]));
    // --since: a duration ago, or a time.
    assert_eq!(logs(&["--since", "1h"]).lines().count(), 5);
    assert_eq!(logs(&["--since", "2099-01-01T00:00"]), "");
    let bad = up.cli(&["logs", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    // A named service without a log is an error, as before.
    assert_eq!(up.cli(&["logs", "quiet"]).status.code(), Some(1));
    // -f with two names: new lines of both, named.
    let mut follow = Command::new(HOLDEN)
        .args(["logs", "-f", "-n", "0", "alpha", "beta", "--control-socket"])
        .arg(&up.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    std::thread::sleep(scaled(Duration::from_millis(200)));
    assert!(up.cli(&["restart", "beta"]).status.success());
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("beta  | ") && first.ends_with(" stdout b1"), "{first}");
    kill(follow.id() as i32, 15);
    follow.wait().unwrap();
    up.stop(&dir, &[]);
}

#[test]
fn commands_find_the_orchestrator_without_flags_and_say_where_they_looked() {
    use std::os::unix::process::CommandExt;
    let dir = Dir::new("discover");
    let up = Up::start(&dir, "[services.s]\ncommand = [\"sleep\", \"1000\"]\n");
    up.wait_state("s", "running");
    let holden = |cwd: &std::path::Path, env: &[(&str, &std::path::Path)]| {
        let mut c = Command::new(HOLDEN);
        c.arg("status").current_dir(cwd).env_remove("HOLDEN_CONFIG").env_remove("HOLDEN_CONTROL_SOCKET");
        for (k, v) in env {
            c.env(k, v);
        }
        run_short(&mut c)
    };
    // ./holden.toml, then $HOLDEN_CONFIG: its control_socket.
    let here = holden(&dir.0, &[]);
    assert!(here.status.success() && stdout(&here).contains("s     running"), "{}", stderr(&here));
    let elsewhere = std::env::temp_dir();
    let via_env = holden(&elsewhere, &[("HOLDEN_CONFIG", &up.config)]);
    assert!(via_env.status.success(), "{}", stderr(&via_env));
    // Nothing answers: which socket, chosen how, and what to do.
    let gone = dir.path("gone.sock");
    let none = holden(&elsewhere, &[("HOLDEN_CONTROL_SOCKET", &gone)]);
    assert_eq!(none.status.code(), Some(3));
    let err = stderr(&none);
    assert!(err.contains(&gone.display().to_string()) && err.contains("chosen by $HOLDEN_CONTROL_SOCKET"), "{err}");
    assert!(err.contains("start one with `holden up`"), "{err}");
    // Not allowed to connect is not "no orchestrator" (regression: exit 3 for both).
    std::fs::set_permissions(&up.socket, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let denied =
        run_short(Command::new(HOLDEN).args(["status", "--control-socket"]).arg(&up.socket).uid(65534).gid(65534));
    assert_eq!(denied.status.code(), Some(1), "{}", stderr(&denied));
    assert!(stderr(&denied).contains("not allowed to connect"), "{}", stderr(&denied));
    up.stop(&dir, &[]);
}

#[test]
fn regression_ctrl_c_in_the_terminal_reaches_the_orchestrator_alone() {
    use std::os::unix::process::CommandExt;
    let dir = Dir::new("ctrl-c");
    let file = dir.path("signals");
    write_config(
        &dir,
        &format!(
            "[services.s]\ncommand = [\"sh\", \"-c\", \"trap 'echo INT >> {f}' INT; trap 'echo TERM >> {f}; exit 0' TERM; while :; do sleep 0.05; done\"]\n",
            f = file.display()
        ),
    );
    // As in a terminal: holden up leads the foreground process group, and Ctrl-C is SIGINT to
    // that whole group. The services used to be in it, and got SIGINT straight away.
    let mut up = Command::new(HOLDEN)
        .args(["up", "-c"])
        .arg(dir.path("holden.toml"))
        .env(MARKER, &dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    wait_for_socket(&dir.path("control.sock"));
    let status = |args: &[&str]| {
        run_short(Command::new(HOLDEN).args(args).arg("--control-socket").arg(dir.path("control.sock")))
    };
    wait_until(
        "s running",
        scaled(Duration::from_secs(5)),
        || stdout(&status(&["status"])).contains("running"),
        String::new,
    );
    std::thread::sleep(scaled(Duration::from_millis(200)));
    run_short(Command::new("kill").args(["-INT", "--", &format!("-{}", up.id())]));
    assert!(up.wait().unwrap().success());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "TERM\n",
        "the service got only the orchestrator's stop signal"
    );
    dir.assert_no_leftovers(&[]);
}

#[test]
fn status_watch_prints_a_table_every_second_until_the_orchestrator_goes_away() {
    let dir = Dir::new("watch");
    let up = Up::start(&dir, "[services.s]\ncommand = [\"sleep\", \"1000\"]\n");
    up.wait_state("s", "running");
    let mut watch = Command::new(HOLDEN)
        .args(["status", "--watch", "--control-socket"])
        .arg(&up.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut tables = 0;
    while tables < 2 {
        let l = lines.next().unwrap().unwrap();
        if l.starts_with("NAME ") {
            tables += 1;
        } else {
            assert!(l.starts_with("20") || l.starts_with("s "), "{l}");
        }
    }
    up.crash();
    let out = watch.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn json_on_every_command_that_prints_data() {
    let dir = Dir::new("json");
    let agent = Agent::start(&dir, "agent");
    let up = Up::start(&dir, "[services.s]\ncommand = [\"sh\", \"-c\", \"echo one; exec sleep 1000\"]\n");
    up.wait_state("s", "running");
    let json = |out: std::process::Output| -> Vec<serde_json::Value> {
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
    };
    wait_until(
        "a log line",
        scaled(Duration::from_secs(5)),
        || stdout(&up.cli(&["logs", "s"])).contains("one"),
        String::new,
    );
    let lines = json(up.cli(&["logs", "--json", "s"]));
    assert_eq!(
        (&lines[0]["service"], &lines[0]["stream"], &lines[0]["text"]),
        (&"s".into(), &"stdout".into(), &"one".into())
    );
    assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
    let r = json(up.cli(&["reload", "--json"]));
    assert_eq!(r[0], serde_json::json!({ "added": [], "removed": [], "changed": [] }));
    let c = json(run_short(Command::new(HOLDEN).args(["check", "--json", "-c"]).arg(&up.config)));
    assert_eq!((&c[0]["ok"], &c[0]["services"]), (&true.into(), &serde_json::json!(["s"])));
    let bad = dir.path("bad.toml");
    std::fs::write(&bad, "[services.a]\ncommand = []\n").unwrap();
    let out = run_short(Command::new(HOLDEN).args(["check", "--json", "-c"]).arg(&bad));
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!((&v["ok"], &v["line"], &v["column"]), (&false.into(), &2.into(), &11.into()));
    let agent_json = |cmd: &str| {
        let out = run_short(Command::new(HOLDEN).args([cmd, "--json", "--agent"]).arg(&agent.socket));
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()
    };
    assert!(agent_json("ping")["answered_us"].is_u64());
    let info = agent_json("info");
    assert!(info["version"].is_string() && info["features"]["clone_pidfd"].is_boolean(), "{info}");
    up.stop(&dir, &[agent.pid()]);
}
