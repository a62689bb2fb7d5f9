//! `holden up` and the commands that drive it, against real processes and a real agent.
//! Needs root (the unprivileged-caller test switches to uid 65534).

mod common;

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
