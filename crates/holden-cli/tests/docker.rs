//! The agent in a real Docker container (image `holden-agent`, built by `make image`), reached
//! from the host through `holden exec`, the library and an orchestrator service. Needs root
//! and a Docker engine (or podman: `HOLDEN_CONTAINER_ENGINE=podman`, as the podman guest of
//! `make vm-test` sets); `/bin/busybox` (Debian's busybox-static) is bind-mounted into the
//! otherwise empty image to have something to run. Without an engine the test says it did
//! not run and why; with `HOLDEN_REQUIRE_DOCKER=1` (as CI sets) that is a failure.

mod common;

use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const IMAGE: &str = "holden-agent";

/// The container engine's command: `docker`, or `HOLDEN_CONTAINER_ENGINE`.
fn engine() -> String {
    std::env::var("HOLDEN_CONTAINER_ENGINE").ok().filter(|e| !e.is_empty()).unwrap_or_else(|| "docker".into())
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new(engine()).args(args).output().unwrap_or_else(|e| panic!("run {}: {e}", engine()))
}

/// Whether the test can run; panics where it must.
fn engine_ready() -> bool {
    let required = std::env::var("HOLDEN_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let info = Command::new(engine()).arg("info").output();
    match info {
        Ok(o) if o.status.success() => {}
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                Err(e) => format!("docker: {e}"),
            };
            assert!(!required, "HOLDEN_REQUIRE_DOCKER=1 but no Docker engine answers: {why}");
            eprintln!("docker test DID NOT RUN: no Docker engine answers ({why})");
            return false;
        }
    }
    assert!(
        docker(&["image", "inspect", IMAGE]).status.success(),
        "the image {IMAGE} is missing: run `make image` first (.ci/run does)"
    );
    assert!(std::path::Path::new("/bin/busybox").exists(), "/bin/busybox is missing: apt-get install busybox-static");
    true
}

/// A container removed on drop, whatever happens.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

fn ns(pid: impl std::fmt::Display, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).map(|l| l.display().to_string()).unwrap_or_default()
}

fn init_pid(name: &str) -> i64 {
    let o = docker(&["inspect", "-f", "{{.State.Pid}}", name]);
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

#[test]
fn the_agent_in_a_docker_container_serves_the_host() {
    if !engine_ready() {
        return;
    }
    let dir = Dir::new("docker");
    let name = format!("holden-test-{}", std::process::id());
    let socket = dir.path("agent.sock");
    let mount = format!("{}:/run/holden", dir.0.display());
    let out = docker(&[
        "run",
        "-d",
        "--cgroupns",
        "private",
        "--name",
        &name,
        "-v",
        &mount,
        "-v",
        "/bin/busybox:/bin/busybox:ro",
        IMAGE,
    ]);
    assert!(out.status.success(), "docker run: {}", stderr(&out));
    let container = Container(name.clone());
    wait_for_socket(&socket);
    let init = init_pid(&name);

    // The library: the process lives in the container's namespaces and cgroup.
    let mut agent = holden::Agent::connect(&socket).unwrap();
    let features = agent.info().unwrap().features;
    eprintln!("agent features under Docker's seccomp profile: {features:?}");
    let mut sleeper = holden::Command::new("/bin/busybox").args(["sleep", "1000"]).spawn_via(&mut agent).unwrap();
    let pid = sleeper.pid().expect("the host sees the pid");
    for kind in ["pid", "mnt", "net", "uts", "ipc", "cgroup"] {
        assert_eq!(ns(pid, kind), ns(init, kind), "{kind}: the container's");
        assert_ne!(ns(pid, kind), ns("self", kind), "{kind}: not the host's");
    }
    let cgroup = |p: String| std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
    assert_eq!(cgroup(pid.to_string()), cgroup(init.to_string()), "the container's cgroup");
    assert!(cgroup(pid.to_string()) != cgroup("self".into()));
    // Docker's default seccomp profile is in force on what the agent spawns (mode 2: filter).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Seccomp:", "2"]), "{status}");
    // As PID 1 the agent reaps orphans: a background child outlives its shell and ends.
    let mut parent = holden::Command::new("/bin/busybox")
        .args(["sh", "-c", "/bin/busybox sleep 0.2 & exit 0"])
        .spawn_via(&mut agent)
        .unwrap();
    assert_eq!(parent.wait().unwrap().code(), Some(0));
    std::thread::sleep(Duration::from_millis(600));
    let zombies: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| ns(p, "pid") == ns(init, "pid"))
        .filter(|p| holden_cli::stat_fields(*p).is_some_and(|f| f[0] == "Z"))
        .collect();
    assert!(zombies.is_empty(), "zombies in the container: {zombies:?}");
    // Signalled through the pidfd; its exit status read on the host.
    sleeper.signal(15).unwrap();
    assert_eq!(sleeper.wait().unwrap().signal(), Some(15));
    let mut code = holden::Command::new("/bin/busybox").args(["sh", "-c", "exit 7"]).spawn_via(&mut agent).unwrap();
    assert_eq!(code.wait().unwrap().code(), Some(7));
    let mut victim = holden::Command::new("/bin/busybox").args(["sleep", "1000"]).spawn_via(&mut agent).unwrap();
    victim.kill().unwrap();
    assert_eq!(victim.wait().unwrap().signal(), Some(9));

    // holden exec: output, exit code, namespaces.
    let out = Command::new(HOLDEN)
        .args(["exec", "--agent"])
        .arg(&socket)
        .args(["--", "/bin/busybox", "sh", "-c", "readlink /proc/self/ns/pid; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out).trim(), ns(init, "pid"));

    // An orchestrator service through the containerised agent.
    let services = format!(
        "[agents.box]\nsocket = \"{}\"\n\n[services.inside]\ncommand = [\"/bin/busybox\", \"sh\", \"-c\", \"echo hello from the container; exec /bin/busybox sleep 1000\"]\nagent = \"box\"\nbackoff = {{ initial = \"100ms\", max = \"500ms\" }}\n",
        socket.display()
    );
    let up = Up::start(&dir, &services);
    let s = up.wait_state("inside", "running");
    let svc_pid = s["pid"].as_i64().unwrap();
    assert_eq!(ns(svc_pid, "pid"), ns(init, "pid"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stdout(&up.cli(&["logs", "inside"])).contains("stdout hello from the container") {
        assert!(Instant::now() < deadline, "the container's output was not captured");
        std::thread::sleep(Duration::from_millis(20));
    }

    // docker stop: the agent, PID 1, exits 0 on SIGTERM; every process it spawned there ends,
    // and the caller sees it through its pidfds.
    let mut watched = holden::Command::new("/bin/busybox").args(["sleep", "1000"]).spawn_via(&mut agent).unwrap();
    let out = docker(&["stop", "-t", "10", &name]);
    assert!(out.status.success(), "docker stop: {}", stderr(&out));
    assert!(holden_sys::event::poll_readable(watched.pidfd().as_fd(), Some(Duration::from_secs(5))).unwrap());
    if holden_sys::process::probe_features().pidfd_info_exit {
        assert_eq!(watched.wait().unwrap().signal(), Some(9), "killed with the container's pid namespace");
    } else {
        // Before 6.15 only the agent could tell, and it went first (the podman guest of
        // `make vm-test` runs this on 6.12): the library says so rather than guessing.
        let r = watched.wait();
        assert!(matches!(r, Err(holden::Error::ExitUnavailable(_))), "{r:?}");
    }
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &name]);
    assert_eq!(stdout(&code).trim(), "0", "the agent exits 0 on SIGTERM");
    assert!(!socket.exists(), "the agent removed its socket");
    // The orchestrator reports it and retries with backoff until the container is back.
    up.wait_for("inside", "waiting for the agent", |s| {
        s["state"] == "backing-off" && s["last_error"].as_str().is_some_and(|e| e.contains("connect to agent"))
    });
    assert_eq!(up.service("inside")["last_exit"], exit_seen_by_a_non_parent("signal SIGKILL"));
    let out = docker(&["start", &name]);
    assert!(out.status.success(), "docker start: {}", stderr(&out));
    let init2 = init_pid(&name);
    let s = up.wait_for("inside", "running in the restarted container", |s| {
        s["state"] == "running" && s["pid"].as_i64() != Some(svc_pid)
    });
    assert_eq!(ns(s["pid"].as_i64().unwrap(), "pid"), ns(init2, "pid"));
    up.stop(&dir, &[]);

    // Nothing left: no container, no process in it, no socket file.
    drop(agent);
    let out = docker(&["stop", "-t", "10", &name]);
    assert!(out.status.success());
    drop(container);
    let left = docker(&["ps", "-a", "-q", "--filter", &format!("name={name}")]);
    assert!(stdout(&left).trim().is_empty(), "container left: {}", stdout(&left));
    assert!(!socket.exists());
}

#[test]
fn the_readme_examples_run_as_written_in_the_demo_image() {
    if !engine_ready() {
        return;
    }
    const DEMO: &str = "holden-agent-demo";
    assert!(
        docker(&["image", "inspect", DEMO]).status.success(),
        "the image {DEMO} is missing: run `make image-demo` first (.ci/run does)"
    );
    let dir = Dir::new("docker-demo");
    let name = format!("holden-test-demo-{}", std::process::id());
    let mount = format!("{}:/run/holden", dir.0.display());
    // The README's line, with a directory of this test's own for /run/holden.
    let out = docker(&["run", "-d", "--name", &name, "--cgroupns", "private", "-v", &mount, DEMO]);
    assert!(out.status.success(), "run: {}", stderr(&out));
    let _container = Container(name.clone());
    let socket = dir.path("agent.sock");
    wait_for_socket(&socket);
    // `holden exec --agent /run/holden/agent.sock -- /bin/sh -c 'readlink /proc/self/ns/pid'`:
    // the image's own /bin/sh, in the container's pid namespace (exit 127 in the bare image).
    let out = run_short(Command::new(HOLDEN).args(["exec", "--agent"]).arg(&socket).args([
        "--",
        "/bin/sh",
        "-c",
        "readlink /proc/self/ns/pid",
    ]));
    assert!(out.status.success(), "exec: {} {}", out.status, stderr(&out));
    let inside = stdout(&out).trim().to_owned();
    assert!(inside.starts_with("pid:[") && inside != ns("self", "pid"), "{inside}");
    assert_eq!(inside, ns(init_pid(&name), "pid"));
}
