//! Per-service cgroups in `holden up`, on cgroup v2 (the VM guests of `make vm-test`): a memory
//! limit that OOM-kills (`oom-killed`, restarted by policy), a pids limit that stops a fork
//! storm while the orchestrator goes on, a CPU limit that holds a busy loop to its share,
//! `kill_mode = "cgroup"` that stops a double-forking service whole, and nothing left under the
//! cgroup after shutdown. On a host without cgroup v2 (this machine is cgroup v1 hybrid), the
//! same configuration is refused at start-up with an error naming the key. Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// One test at a time: they measure CPU time and fill memory.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cgroup_v2() -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some("/sys/fs/cgroup") && l.split(' ').nth(2) == Some("cgroup2"))
}

/// A cgroup path of this test's own, and its directory.
fn base(tag: &str) -> (String, PathBuf) {
    let path = format!("/holden-test-{tag}-{}", std::process::id());
    let dir = PathBuf::from(format!("/sys/fs/cgroup{path}"));
    (path, dir)
}

/// Where there is no cgroup v2: `holden up` refuses `services` at start-up, before anything
/// runs, with an error that names `what` and the missing cgroup v2. Returns the error.
fn refused_at_start(dir: &Dir, services: &str, what: &str) -> String {
    write_config(dir, services);
    let out =
        Command::new(HOLDEN).args(["up", "-c"]).arg(dir.path("holden.toml")).stdin(Stdio::null()).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(what) && err.contains("not cgroup v2"), "{err}");
    err
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn cgroup_limits_hold_and_nothing_is_left_after_shutdown() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Dir::new("cgroups");
    let (path, cgroup) = base("limits");
    let services = format!(
        r#"cgroup = "{path}"

[services.hog]
command = ["sh", "-c", "x=0123456789abcdef; while :; do x=$x$x; done"]
memory_max = "24M"
backoff = {{ initial = "100ms", max = "200ms" }}
start_limit = {{ burst = 100, interval = "60s" }}

[services.forker]
command = ["sh", "-c", "i=0; while [ $i -lt 40 ]; do sleep 1000 & i=$((i+1)); done; wait"]
pids_max = 8
kill_mode = "process"        # the storm's sleeps stay when its shell gives up

[services.spinner]
command = ["sh", "-c", "while :; do :; done"]
cpu_max = "20%"

[services.daemon]
command = ["sh", "-c", "setsid sh -c 'exec sleep 1003' </dev/null >/dev/null 2>&1 & exec sleep 1004"]
kill_mode = "cgroup"
"#
    );
    if !cgroup_v2() {
        let err = refused_at_start(&dir, &services, "service daemon: kill_mode = \"cgroup\" needs cgroups");
        println!("no cgroup v2 here: the error is {err:?}; make vm-test runs the limits");
        return;
    }
    let up = Up::start(&dir, &services);
    let svc = |name: &str| cgroup.join("services").join(name);

    // memory_max: OOM-killed, shown as such, and restarted by the policy.
    let s = up.wait_for("hog", "oom-killed", |s| s["last_exit"] == "oom-killed" && s["restarts"].as_u64() >= Some(1));
    assert_eq!(s["last_exit"], "oom-killed", "{}", up.output());
    assert_eq!(read(&svc("hog").join("memory.max")).trim(), (24 << 20).to_string());
    assert!(up.output().contains("hog: backing-off (last exit: oom-killed)"), "{}", up.output());

    // pids_max: the storm stops at 8 processes; the orchestrator and the others go on.
    wait_until(
        "forker fills its pids.max",
        Duration::from_secs(10),
        || read(&svc("forker").join("pids.current")).trim() == "8",
        || read(&svc("forker").join("pids.events")),
    );
    assert!(read(&svc("forker").join("pids.events")).contains("max "), "{}", read(&svc("forker").join("pids.events")));
    assert!(up.cli(&["status"]).status.success());

    // cpu_max: the busy loop gets about a fifth of a CPU over 2 s.
    let usage = || -> u64 {
        read(&svc("spinner").join("cpu.stat"))
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec ")?.parse().ok())
            .unwrap()
    };
    up.wait_state("spinner", "running");
    let (u0, t0) = (usage(), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let share = (usage() - u0) as f64 / t0.elapsed().as_micros() as f64;
    println!("spinner used {:.1}% of a CPU with cpu_max = 20%", share * 100.0);
    assert!(share > 0.05 && share < 0.30, "cpu share {share:.3}");

    // What the cgroups say, in `holden status`: MEM and CPU columns, and the JSON keys.
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&up.cli(&["status", "--json", name]).stdout).unwrap()[0].clone()
    };
    let spinner = json("spinner");
    assert!(spinner["memory_bytes"].as_u64().is_some_and(|m| m > 0), "{spinner}");
    assert!(spinner["cpu_usec"].as_u64().is_some_and(|u| u > 0) && spinner["pids"].as_u64() >= Some(1), "{spinner}");
    assert!(json("hog")["oom_kills"].as_u64() >= Some(1), "{}", json("hog"));
    let table = stdout(&up.cli(&["status"]));
    let head = table.lines().next().unwrap();
    assert!(head.contains(" MEM ") && head.ends_with("CPU"), "{table}");
    println!("{table}");

    // kill_mode = "cgroup": the stop takes the daemon it forked too.
    up.wait_state("daemon", "running");
    wait_until(
        "both sleeps in the cgroup",
        Duration::from_secs(5),
        || read(&svc("daemon").join("cgroup.procs")).lines().count() == 2,
        || read(&svc("daemon").join("cgroup.procs")),
    );
    assert!(up.cli(&["stop", "daemon"]).status.success());
    up.wait_state("daemon", "stopped");
    wait_until(
        "the daemon's cgroup is empty",
        Duration::from_secs(5),
        || read(&svc("daemon").join("cgroup.events")).contains("populated 0"),
        String::new,
    );
    assert_eq!(dir.count(&["sleep", "1003"]), 0, "the double-forked daemon was stopped with its service");

    up.stop(&dir, &[]);
    assert!(!cgroup.exists(), "{} is left after shutdown", cgroup.display());
}

#[test]
fn regression_a_base_two_levels_deep_gets_its_controllers_and_is_removed_whole() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Dir::new("cgroups-deep");
    let (top_path, top) = base("deep");
    // Neither level exists: the first is made and passes its controllers to the second (it
    // did not: the limit failed for want of the pids controller), and both go at shutdown.
    let services = format!(
        r#"cgroup = "{top_path}/a/b"

[services.s]
command = ["sleep", "1021"]
pids_max = 8
"#
    );
    if !cgroup_v2() {
        let err = refused_at_start(&dir, &services, "service s: pids_max");
        println!("no cgroup v2 here: the error is {err:?}; make vm-test runs it");
        return;
    }
    let up = Up::start(&dir, &services);
    up.wait_state("s", "running");
    assert_eq!(read(&top.join("a/b/services/s/pids.max")).trim(), "8");
    up.stop(&dir, &[]);
    assert!(!top.exists(), "{} (made for the base) is left after shutdown", top.display());
}

#[test]
fn a_cgroup_limit_with_cgroups_off_or_a_bad_value_is_a_config_error() {
    let dir = Dir::new("cgroups-config");
    for (config, needle) in [
        (
            "cgroup = \"off\"\n[services.s]\ncommand = [\"true\"]\npids_max = 5\n",
            "pids_max needs cgroups, which cgroup = \"off\" disables",
        ),
        ("[services.s]\ncommand = [\"true\"]\ncpu_max = \"fast\"\n", "cpu_max: must be a percentage"),
        ("[services.s]\ncommand = [\"true\"]\nmemory_max = \"lots\"\n", "\"lots\" is not a size"),
        (
            "cgroup = \"../x\"\n[services.s]\ncommand = [\"true\"]\n",
            "cgroup must be \"auto\", \"off\" or an absolute cgroup path",
        ),
        // Names that would walk out of `services/` (the base's own limits, cgroup.kill on it).
        ("[services.\"..\"]\ncommand = [\"true\"]\n", "not begin with '.'"),
        ("[services.\".\"]\ncommand = [\"true\"]\n", "not begin with '.'"),
    ] {
        write_config(&dir, config);
        let out = Command::new(HOLDEN).args(["check", "-c"]).arg(dir.path("holden.toml")).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{config}");
        assert!(stderr(&out).contains(needle), "{config}: {}", stderr(&out));
    }
}

/// An agent in a cgroup of its own (as a container's is): its service's cgroup is made below
/// the agent's, its descriptor travels in `Spawn`, the agent's child joins it before exec, its
/// limits hold, `kill_mode = "cgroup"` stops it whole, and the cgroup is gone after shutdown.
#[test]
fn an_agent_service_gets_its_cgroup_below_the_agents() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Dir::new("cgroups-agent");
    let agent = Agent::start(&dir, "qm");
    let services = format!(
        r#"[agents.qm]
socket = "{}"

[services.inside]
command = ["sh", "-c", "setsid sh -c 'exec sleep 1005' </dev/null >/dev/null 2>&1 & exec sleep 1006"]
agent = "qm"
pids_max = 5
memory_max = "64M"
kill_mode = "cgroup"
"#,
        agent.socket.display()
    );
    if !cgroup_v2() {
        refused_at_start(&dir, &services, "service inside: memory_max needs cgroups");
        return;
    }
    // The agent's own cgroup, as a container runtime would give it.
    let (_, cgroup) = base("agent");
    std::fs::create_dir(&cgroup).unwrap();
    std::fs::write(cgroup.join("cgroup.procs"), agent.pid().to_string()).unwrap();
    let up = Up::start(&dir, &services);
    let pid = up.wait_state("inside", "running")["pid"].as_i64().unwrap();
    let svc = cgroup.join("services/inside");
    let in_cgroup = |pid: i64| read(Path::new(&format!("/proc/{pid}/cgroup"))).trim().to_owned();
    let rel = |p: &Path| format!("0::{}", p.strip_prefix("/sys/fs/cgroup").unwrap().display()).replace("0::", "0::/");
    assert_eq!(in_cgroup(pid), rel(&svc), "the service is in its cgroup below the agent's");
    assert_eq!(in_cgroup(agent.pid() as i64), rel(&cgroup.join("agent")), "the agent moved into a leaf");
    assert_eq!(read(&svc.join("pids.max")).trim(), "5");
    assert_eq!(read(&svc.join("memory.max")).trim(), (64 << 20).to_string());
    wait_until(
        "the daemon runs in the cgroup too",
        Duration::from_secs(5),
        || read(&svc.join("cgroup.procs")).lines().count() == 2,
        || read(&svc.join("cgroup.procs")),
    );
    assert!(up.cli(&["stop", "inside"]).status.success());
    up.wait_state("inside", "stopped");
    wait_until(
        "the service's cgroup is empty",
        Duration::from_secs(5),
        || read(&svc.join("cgroup.events")).contains("populated 0"),
        String::new,
    );
    up.stop(&dir, &[agent.pid()]);
    assert!(!svc.exists(), "the service's cgroup is left after shutdown");
    // The agent's cgroup stays set up for the next run: it finds it so, and nests nothing.
    let up = Up::start(&dir, &services);
    let pid = up.wait_state("inside", "running")["pid"].as_i64().unwrap();
    assert_eq!(in_cgroup(pid), rel(&svc), "the same cgroup on the next run");
    assert_eq!(in_cgroup(agent.pid() as i64), rel(&cgroup.join("agent")), "the agent's leaf is reused");
    up.stop(&dir, &[agent.pid()]);
    assert!(!svc.exists(), "the service's cgroup is left after the second shutdown");
    // The agent goes, and its cgroups with it.
    drop(agent);
    wait_until(
        "the agent's cgroup is empty",
        Duration::from_secs(5),
        || read(&cgroup.join("cgroup.events")).contains("populated 0"),
        String::new,
    );
    std::fs::remove_dir(cgroup.join("agent")).unwrap();
    std::fs::remove_dir(cgroup.join("services")).unwrap();
    std::fs::remove_dir(&cgroup).unwrap();
}

/// `cgroup = "auto"` (the default): an orchestrator started in a cgroup of its own (as systemd's
/// `Delegate=yes` gives it) moves into the leaf `supervisor` and puts its services below; at
/// shutdown `services/` goes; started again from inside the leaf, it finds the same base.
#[test]
fn auto_uses_the_orchestrators_own_cgroup_and_finds_it_again() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Dir::new("cgroups-auto");
    let services = "[services.s]\ncommand = [\"sleep\", \"1007\"]\npids_max = 5\n";
    if !cgroup_v2() {
        refused_at_start(&dir, services, "service s: pids_max needs cgroups");
        return;
    }
    let (_, cgroup) = base("auto");
    std::fs::create_dir(&cgroup).unwrap();
    write_config(&dir, services);
    let rel = |p: &Path| format!("0::/{}", p.strip_prefix("/sys/fs/cgroup").unwrap().display());
    let cgroup_of = |pid: u32| read(Path::new(&format!("/proc/{pid}/cgroup"))).trim().to_owned();
    // Twice: from the cgroup given, then from inside the leaf the first run made.
    for (round, start_in) in [cgroup.clone(), cgroup.join("supervisor")].into_iter().enumerate() {
        let mut up = Command::new("sh")
            .arg("-c")
            .arg(format!("echo $$ > {}/cgroup.procs && exec \"$0\" up -c \"$1\"", start_in.display()))
            .arg(HOLDEN)
            .arg(dir.path("holden.toml"))
            .env(MARKER, &dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_socket(&dir.path("control.sock"));
        let status = || {
            let out = Command::new(HOLDEN)
                .args(["status", "--json", "s", "--control-socket"])
                .arg(dir.path("control.sock"))
                .output()
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()[0].clone()
        };
        wait_until("s runs", Duration::from_secs(10), || status()["state"] == "running", || status().to_string());
        let pid = status()["pid"].as_u64().unwrap() as u32;
        assert_eq!(cgroup_of(pid), rel(&cgroup.join("services/s")), "round {round}: the service below the base");
        assert_eq!(cgroup_of(up.id()), rel(&cgroup.join("supervisor")), "round {round}: the orchestrator in the leaf");
        kill(up.id() as i32, 15);
        assert!(up.wait().unwrap().success(), "round {round}");
        assert!(!cgroup.join("services").exists(), "round {round}: services/ is left after shutdown");
    }
    wait_until(
        "the leaf is empty",
        Duration::from_secs(5),
        || read(&cgroup.join("cgroup.events")).contains("populated 0"),
        String::new,
    );
    std::fs::remove_dir(cgroup.join("supervisor")).unwrap();
    std::fs::remove_dir(&cgroup).unwrap();
    dir.assert_no_leftovers(&[]);
}

/// After an orchestrator crash, the cgroups are how what services forked is found, even a
/// daemon that dropped its spawn tag (`env -i`): an adopted service keeps its cgroup, so that
/// stopping it ends its daemon too; the cgroup of a service that died meanwhile is emptied, its
/// old daemon with it.
#[test]
fn after_a_crash_the_cgroups_find_what_services_forked() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Dir::new("cgroups-crash");
    let (path, cgroup) = base("crash");
    let services = format!(
        r#"cgroup = "{path}"

[services.a]
command = ["sh", "-c", "env -i /bin/sh -c 'exec /bin/sleep 1011' </dev/null >/dev/null 2>&1 & exec sleep 1010"]
pids_max = 10

[services.b]
command = ["sh", "-c", "env -i /bin/sh -c 'exec /bin/sleep 1013' </dev/null >/dev/null 2>&1 & exec sleep 1012"]
pids_max = 10
"#
    );
    if !cgroup_v2() {
        refused_at_start(&dir, &services, "service a: pids_max needs cgroups");
        return;
    }
    let up = Up::start(&dir, &services);
    let a = up.wait_state("a", "running")["pid"].as_i64().unwrap();
    let b = up.wait_state("b", "running")["pid"].as_i64().unwrap();
    // The daemons dropped the test's marker with the rest of their environment: found by
    // their command lines.
    let running = |argv: &str| -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| cmdline(*pid).is_some_and(|c| c.trim_end() == argv) && alive(*pid))
            .collect()
    };
    let both = || running("/bin/sleep 1011").len() == 1 && running("/bin/sleep 1013").len() == 1;
    wait_until("both daemons run", Duration::from_secs(10), both, String::new);
    let (daemon_a, daemon_b) = (running("/bin/sleep 1011")[0], running("/bin/sleep 1013")[0]);
    up.crash();
    // b's main process dies while no orchestrator runs; its daemon lives on, untagged.
    kill(b as i32, 9);
    wait_until("b is gone", Duration::from_secs(5), || !alive(b as i32), String::new);

    let up = Up::start(&dir, &services);
    assert_eq!(up.wait_state("a", "running")["pid"].as_i64(), Some(a), "a is adopted:\n{}", up.output());
    up.wait_for("b", "started again", |s| s["state"] == "running" && s["pid"].as_i64() != Some(b));
    wait_until("b's old daemon is ended", Duration::from_secs(5), || !alive(daemon_b), || up.output());
    assert!(up.output().contains("b: ending what the last run left in"), "{}", up.output());
    assert!(alive(daemon_a), "a's daemon runs on with a");
    assert!(up.cli(&["stop", "a"]).status.success());
    up.wait_state("a", "stopped");
    wait_until("a's daemon is stopped with a", Duration::from_secs(5), || !alive(daemon_a), || up.output());
    up.stop(&dir, &[]);
    // The base existed when the second run began (the first made it), so it stays: a base
    // given by path is removed only by the run that created it.
    assert!(!cgroup.join("services").exists(), "services/ is left after shutdown");
    std::fs::remove_dir(&cgroup).unwrap();
}
