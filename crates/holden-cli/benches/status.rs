//! `holden status` with its MEM and CPU columns for 500 services, each in a cgroup of its own:
//! the latency of the whole command (`holden status`, process start to exit) and of the `List`
//! call alone on the control socket, 200 times each. Prints figures, asserts nothing. Needs root.
//! With cgroup v2 and the memory, cpu and pids controllers (the VM guests:
//! `make vm-test KERNEL=6.12 BENCH=status`) every service has a cgroup; elsewhere (this host,
//! cgroup v1 hybrid) the same runs without cgroups, so without the MEM and CPU columns, and
//! says so: the cost of the table itself.
//!
//! The services are `sleep` processes with `cpu_weight` set (so each has a cgroup); the bench
//! stops the orchestrator at the end and checks that its cgroup subtree is gone.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SERVICES: usize = 500;
const ROUNDS: usize = 200;

/// The `holden` built with this bench, or the one on `PATH` (in a VM guest the build's path
/// does not exist).
fn holden() -> PathBuf {
    let built = PathBuf::from(env!("CARGO_BIN_EXE_holden"));
    if built.exists() {
        built
    } else {
        PathBuf::from("holden")
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * q) as usize]
}

fn controllers_ready() -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let v2 =
        mounts.lines().any(|l| l.split(' ').nth(1) == Some("/sys/fs/cgroup") && l.split(' ').nth(2) == Some("cgroup2"));
    let have = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    v2 && ["memory", "cpu", "pids"].iter().all(|c| have.split_whitespace().any(|h| h == *c))
}

/// One `List` call on a connection: Varlink, NUL-terminated.
fn list(conn: &mut BufReader<UnixStream>) -> serde_json::Value {
    conn.get_mut().write_all(b"{\"method\":\"io.holden.Orchestrator.List\"}\0").unwrap();
    let mut buf = Vec::new();
    conn.read_until(0, &mut buf).unwrap();
    buf.pop();
    serde_json::from_slice(&buf).unwrap()
}

fn summary(what: &str, v: &mut [Duration]) {
    println!(
        "  {what:<34} p50 {:>7.2} ms  p95 {:>7.2} ms  max {:>7.2} ms",
        ms(pct(v, 0.5)),
        ms(pct(v, 0.95)),
        ms(pct(v, 1.0))
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if holden_sys::fd::geteuid() != 0 {
        println!("status bench DID NOT RUN: it needs root");
        return;
    }
    let cgroups = controllers_ready();
    if !cgroups {
        println!("no cgroup v2 with memory, cpu and pids here: services without cgroups, no MEM and CPU columns");
    }
    let dir = std::env::temp_dir().join(format!("holden-bench-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cgroup = format!("/holden-bench-status-{}", std::process::id());
    let control = dir.join("control.sock");
    let mut config = format!(
        "[orchestrator]\ncontrol_socket = \"{}\"\nstate_dir = \"{}\"\n{}\n\n",
        control.display(),
        dir.join("state").display(),
        if cgroups { format!("cgroup = \"{cgroup}\"") } else { String::new() }
    );
    let limit = if cgroups { "cpu_weight = 100" } else { "" };
    for i in 0..SERVICES {
        config.push_str(&format!("[services.s{i:03}]\ncommand = [\"sleep\", \"100000\"]\n{limit}\n\n"));
    }
    let conf = dir.join("holden.toml");
    std::fs::write(&conf, config).unwrap();
    let started = Instant::now();
    let mut up = Command::new(holden())
        .args(["up", "-c"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("up.log")).unwrap())
        .spawn()
        .unwrap();
    // Every service running, each with a cgroup that reports its memory.
    let mut conn = loop {
        if let Ok(s) = UnixStream::connect(&control) {
            break BufReader::new(s);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no control socket; see {}",
            dir.join("up.log").display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    loop {
        let reply = list(&mut conn);
        let services = reply["parameters"]["services"].as_array().cloned().unwrap_or_default();
        let running =
            services.iter().filter(|s| s["state"] == "running" && (!cgroups || s["memory_bytes"].is_u64())).count();
        if running == SERVICES {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "{running} of {SERVICES} running after 300 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "{SERVICES} services running{} {:.1} s after launch; kernel {}",
        if cgroups { " in their cgroups" } else { "" },
        started.elapsed().as_secs_f64(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    let mut calls = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let reply = list(&mut conn);
        calls.push(t.elapsed());
        assert!(!cgroups || reply["parameters"]["services"][SERVICES - 1]["cpu_usec"].is_u64(), "{reply}");
    }
    let mut commands = Vec::new();
    let mut lines = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let out = Command::new(holden()).args(["status", "-c"]).arg(&conf).stdin(Stdio::null()).output().unwrap();
        commands.push(t.elapsed());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        lines = out.stdout.iter().filter(|&&b| b == b'\n').count();
    }
    let how = if cgroups { "MEM and CPU read from each service's cgroup" } else { "no cgroups" };
    println!("{ROUNDS} rounds each (a table of {lines} lines, {how}):");
    summary("List call on the control socket", &mut calls);
    summary("`holden status` (a process each)", &mut commands);
    drop(conn);
    let _ = Command::new("kill").arg(up.id().to_string()).status();
    let _ = up.wait();
    let left = Path::new("/sys/fs/cgroup").join(cgroup.trim_start_matches('/'));
    if cgroups {
        println!("after shutdown the cgroup subtree {}", if left.exists() { "IS STILL THERE" } else { "is gone" });
    }
    let _ = std::fs::remove_dir_all(&dir);
}
