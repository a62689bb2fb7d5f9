//! Fault tests of the state file of `holden up`: a full disk, a FIFO, a symlink, garbage, a
//! forgery, a second supervisor on the same directory. Each is named after the defect it guards
//! against. Needs root (mounts, /proc of every process). Like up_faults.rs, the orphan reaper
//! runs, and one test runs at a time.

mod common;

use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, Instant};

use common::faults::*;
use common::*;
use serde_json::Value;

#[test]
fn regression_state_file_recovers_after_a_full_disk() {
    let (_serial, dir) = setup("fulldisk");
    let state = dir.path("state");
    let _tmpfs = Tmpfs::mount(&state, "1m");
    // It crash-loops while the flag exists, then runs for good as `sleep 3001`.
    let flag = dir.path("flap.flag");
    std::fs::write(&flag, "").unwrap();
    let script = format!("if [ -e {} ]; then sleep 0.3; exit 1; fi; exec sleep 3001", flag.display());
    let services = format!(
        r#"
[services.flap]
command = ["sh", "-c", "{script}"]
restart = "always"
backoff = {{ initial = "10ms", max = "10ms" }}
start_limit = {{ burst = 1000000, interval = "1s" }}
stdout = "null"
stderr = "null"
"#
    );
    let mut up = Up::spawn(&dir, &services, &[HOLDEN], true);
    protect(up.pid());
    wait_for_socket(&up.socket);
    up.wait_for("flap", "restarted", |s| restarts(s) >= 1);

    // The disk is full: the next state-file writes fail.
    let out = run_short(
        Command::new("dd").arg("if=/dev/zero").arg(format!("of={}", state.join("fill").display())).arg("bs=4k"),
    );
    assert!(stderr(&out).contains("No space left"), "dd did not fill the tmpfs: {}", stderr(&out));
    wait_until(
        "holden up reports the failed state-file write on stdout",
        Duration::from_secs(10),
        || up.output().lines().any(|l| l.contains("state file")),
        || format!("stdout:\n{}\nstderr:\n{}", up.output(), up.errors()),
    );
    assert!(up.running(), "holden up ended on a full disk:\n{}\n{}", up.output(), up.errors());
    up.service("flap");
    // `holden status` says so while it lasts.
    let warned = up.cli(&["status"]);
    assert!(stderr(&warned).contains("state file"), "status does not warn: {}", stderr(&warned));

    // The last pid change happens while the disk is still full: only a retried write records it.
    std::fs::remove_file(&flag).unwrap();
    let pid = wait_some("flap runs sleep 3001", Duration::from_secs(10), || {
        let s = up.service("flap");
        pid_of(&s).filter(|p| s["state"] == "running" && cmdline(*p).as_deref() == Some("sleep 3001 "))
    });
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(state.join("fill")).unwrap();
    std::thread::sleep(2 * SECOND);
    assert!(up.running(), "holden up ended:\n{}\n{}", up.output(), up.errors());
    up.crash();

    let up = start(&dir, &services);
    let s = up.wait_state("flap", "running");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pid_of(&s), Some(pid), "sleep 3001 is adopted, not replaced:\n{}", up.output());
    assert_eq!(
        (dir.pids_of(&["sleep", "3001"]), dir.count(&["sh", "-c", &script])),
        (vec![pid], 0),
        "one process of flap: {:?}\n{}",
        dir.leftovers(&[]),
        up.output()
    );
    up.stop(&dir, &[]);
}

#[test]
fn regression_fifo_symlink_or_garbage_state_file_is_set_aside() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    reaper();
    let services = "[services.s]\ncommand = [\"sleep\", \"4001\"]\nrestart = \"always\"\n";
    for case in ["fifo", "symlink", "garbage"] {
        let dir = Dir::new(&format!("aside-{case}"));
        let state = dir.path("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        let file = state.join("state.json");
        let target = dir.path("elsewhere.json");
        let precious = b"{\"precious\": true}\n";
        match case {
            "fifo" => {
                let out = run_short(Command::new("mkfifo").arg(&file));
                assert!(out.status.success(), "mkfifo: {}", stderr(&out));
            }
            "symlink" => {
                std::fs::write(&target, precious).unwrap();
                std::os::unix::fs::symlink(&target, &file).unwrap();
            }
            _ => std::fs::write(&file, b"\x00\xff{\"boot_id\": [[[ not json\n").unwrap(),
        }
        let started = Instant::now();
        let up = spawn(&dir, services);
        wait_until(
            &format!("{case}: the control socket answers"),
            Duration::from_secs(5),
            || std::os::unix::net::UnixStream::connect(&up.socket).is_ok(),
            || up.output(),
        );
        assert!(started.elapsed() < scaled(Duration::from_secs(5)));
        let out = up.cli(&["status"]);
        assert!(out.status.success(), "{case}: status: {}", stderr(&out));
        let pid = pid_of(&up.wait_state("s", "running"));
        assert_eq!(dir.pids_of(&["sleep", "4001"]), [pid.unwrap()], "{case}");
        assert!(up.output().contains("state.json"), "{case}: the output does not name state.json:\n{}", up.output());
        up.stop(&dir, &[]);
        if case == "symlink" {
            assert!(std::fs::symlink_metadata(&target).unwrap().file_type().is_file());
            assert_eq!(std::fs::read(&target).unwrap(), precious, "the symlink's target was modified");
        }
    }
}

/// `{"pidfs_inode": N}` if the kernel has pidfs, else `{"start_time": N}`; and the start time.
fn identity(pid: i32) -> (Value, u64) {
    let start_time: u64 = holden_cli::stat_fields(pid).unwrap()[22 - 3].parse().unwrap();
    let pidfd = holden_sys::process::pidfd_open(pid).unwrap();
    let identity = match holden_sys::process::pidfs_inode(pidfd.as_fd()).unwrap() {
        Some(ino) => serde_json::json!({ "pidfs_inode": ino }),
        None => serde_json::json!({ "start_time": start_time }),
    };
    (identity, start_time)
}

/// Whether a line of holden up's output says it adopted or signalled `pid`.
fn claims(line: &str, pid: i32) -> bool {
    let names =
        |p: &str| line.match_indices(p).any(|(i, m)| !line[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
    names(&format!("adopting pid {pid}"))
        || names(&format!("adopted pid {pid}"))
        || (names(&format!("pid {pid}")) && line.contains("sending SIG"))
}

#[test]
fn regression_forged_state_never_signals_pid1_self_or_ancestors() {
    let (_serial, dir) = setup("forged");
    let me = std::process::id() as i32;
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim().to_owned();
    let entry = |service: &str, pid: i32, n: u32| {
        let (identity, start_time) = identity(pid);
        serde_json::json!({
            "service": service,
            "pid": pid,
            "identity": identity,
            "start_time": start_time,
            "tag": format!("0123456789abcdef.{n}"),
        })
    };
    let forged = serde_json::json!({
        "boot_id": boot_id,
        "run": "0123456789abcdef",
        "runs": [],
        "processes": [entry("gone", 1, 1), entry("gone2", me, 2), entry("svc", me, 3)],
        "intents": {},
    });
    let state = dir.path("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(state.join("state.json"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, forged.to_string().as_bytes()))
        .unwrap();

    let up = start(&dir, "[services.svc]\ncommand = [\"sleep\", \"5001\"]\nrestart = \"always\"\n");
    let pid = pid_of(&up.wait_state("svc", "running")).unwrap();
    assert_ne!(pid, me, "svc adopted the test process");
    assert_eq!(dir.pids_of(&["sleep", "5001"]), [pid], "svc runs as a process of its own");
    assert_eq!(up.status().len(), 1, "only configured services are listed: {:?}", up.status());
    std::thread::sleep(Duration::from_millis(300));
    let output = up.out.clone();
    up.stop(&dir, &[]);
    // A SIGTERM or SIGKILL to this process would have ended the test binary before this line.
    assert!(alive(me) && alive(1));
    let out = std::fs::read_to_string(output).unwrap();
    for pid in [1, me] {
        let bad: Vec<&str> = out.lines().filter(|l| claims(l, pid)).collect();
        assert!(bad.is_empty(), "holden up adopted or signalled pid {pid}: {bad:?}\n{out}");
    }
}

#[test]
fn regression_a_second_supervisor_on_the_same_state_directory_is_refused() {
    let (_serial, dir) = setup("samestate");
    let up = start(&dir, "[services.s]\ncommand = [\"sleep\", \"1008\"]\n");
    up.wait_state("s", "running");
    let other = dir.path("other.sock");
    let (out, _) = run_with_deadline(
        Command::new(HOLDEN).args(["up", "-c"]).arg(&up.config).arg("--control-socket").arg(&other),
        5 * SECOND,
    );
    // Before: it ran, adopted the first one's service, and its clean stop stopped it.
    let out = out.expect("the second holden up exits at once");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("uses the state directory"), "{}", stderr(&out));
    assert_eq!(dir.count(&["sleep", "1008"]), 1);
    up.stop(&dir, &[]);
}
