//! The control commands against a running `holden up`: every command, logs, `--json`, `--watch`
//! and how the CLI finds its orchestrator. Real processes. Needs root.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

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

#[test]
fn regression_logs_larger_than_one_reply_are_cut_and_said_so() {
    // Before: `holden logs -n 50000` and `--since` asked for more than one reply could carry
    // and failed ("reply larger than the protocol allows"), whatever the time range.
    let dir = Dir::new("logs-big");
    let up = Up::start(
        &dir,
        r#"log_max_size = 4194304

[services.big]
command = ["sh", "-c", "seq 12000 | sed 's/^/line /; s/$/ 000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000/'; echo last; exec sleep 1034"]
"#,
    );
    let log = dir.path("state/logs/big.log");
    wait_until(
        "every line logged",
        scaled(Duration::from_secs(30)),
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains(" stdout last")),
        String::new,
    );
    let out = up.cli(&["logs", "-n", "50000", "big"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("big: older lines were left out"), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.len() < 600 * 1024 && text.lines().count() > 3000, "{} bytes", text.len());
    assert!(text.lines().last().unwrap().ends_with(" stdout last"));
    // Every line is newer than a minute ago: the cut is in range, and said.
    let out = up.cli(&["logs", "--since", "1m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("older lines were left out"), "{}", stderr(&out));
    // The last 5 since then: nothing left out that would be shown.
    let out = up.cli(&["logs", "--since", "1m", "-n", "5", "big"]);
    assert_eq!((stdout(&out).lines().count(), stderr(&out)), (5, String::new()));
    // A few lines: all there, nothing said.
    let out = up.cli(&["logs", "-n", "10", "big"]);
    assert_eq!((stdout(&out).lines().count(), stderr(&out)), (10, String::new()));
    up.stop(&dir, &[]);
}

#[test]
fn regression_logs_follow_with_nothing_to_follow_says_so() {
    // Before: it exited 3, "the orchestrator went away", with the orchestrator fine.
    let dir = Dir::new("logs-none");
    let up =
        Up::start(&dir, "[services.quiet]\ncommand = [\"sleep\", \"1035\"]\nstdout = \"null\"\nstderr = \"null\"\n");
    let out = up.cli(&["logs", "-f"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to follow"), "{}", stderr(&out));
    up.stop(&dir, &[]);
}

#[test]
fn regression_top_without_a_terminal_and_output_to_a_closed_pipe() {
    let dir = Dir::new("no-tty");
    let up = Up::start(&dir, "[services.s]\ncommand = [\"sleep\", \"1036\"]\n");
    // Before: with stdin /dev/null it redrew at full CPU for ever (or panicked with no
    // terminal at all); now it says what it needs.
    let (out, _) = run_with_deadline(
        Command::new(HOLDEN).args(["top", "--control-socket"]).arg(&up.socket),
        scaled(Duration::from_secs(5)),
    );
    let out = out.expect("holden top without a terminal ends at once");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("needs a terminal"), "{}", stderr(&out));
    // Before: `println!` to a reader that is gone panicked (exit 101, or 134 with abort).
    for args in [&["check", "--json", "-c"][..], &["reload", "--control-socket"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let target = if args[0] == "check" { &up.config } else { &up.socket };
        let out = run_short(Command::new(HOLDEN).args(args).arg(target).stdout(writer));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
    up.stop(&dir, &[]);
}
