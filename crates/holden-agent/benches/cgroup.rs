//! Cgroup benchmark: the cost of spawning into a cgroup v2 (the child joins it before exec),
//! locally and through an agent. Prints figures, asserts nothing. Needs root and a cgroup v2
//! mount: `/sys/fs/cgroup` (the VM guests: `make vm-test KERNEL=6.12 BENCH=cgroup`), or on a
//! hybrid host `/sys/fs/cgroup/unified` (`cargo bench -p holden-agent --bench cgroup`);
//! elsewhere it says so and exits 0.
//!
//! For each way (local, through the agent) and each setting (no cgroup, a cgroup): the time of
//! the spawn call (request → pidfd) for `true`, 1,000 times, interleaved so that both settings
//! see the same machine.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_holden-agent");
const ROUNDS: usize = 1000;

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn p(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * q) as usize]
}

/// Where cgroup v2 is mounted: `/sys/fs/cgroup`, or on a hybrid host (cgroup v1 controllers)
/// `/sys/fs/cgroup/unified`, which has no controllers but moves processes all the same.
fn cgroup2_root() -> Option<&'static str> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"].into_iter().find(|root| {
        mounts.lines().any(|l| l.split(' ').nth(1) == Some(*root) && l.split(' ').nth(2) == Some("cgroup2"))
    })
}

fn procs(dir: &Path) -> OwnedFd {
    std::fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs")).unwrap().into()
}

/// Times one spawn (and reaps it); `via`: through that agent.
fn spawn_once(cgroup: Option<&Path>, via: Option<&mut holden::Agent>) -> Duration {
    let mut cmd = holden::Command::new("true");
    if let Some(dir) = cgroup {
        cmd.cgroup(procs(dir));
    }
    let start = Instant::now();
    let mut child = match via {
        Some(agent) => cmd.spawn_via(agent).unwrap(),
        None => cmd.spawn().unwrap(),
    };
    let took = start.elapsed();
    child.wait().unwrap();
    took
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (Some(root), 0) = (cgroup2_root(), holden_sys::fd::geteuid()) else {
        println!("cgroup bench DID NOT RUN: it needs root and a cgroup v2 mount (make vm-test BENCH=cgroup)");
        return;
    };
    println!(
        "cgroup v2 at {root}, kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    let base = PathBuf::from(format!("{root}/holden-bench-{}", std::process::id()));
    std::fs::create_dir(&base).unwrap();
    let dir = std::env::temp_dir().join(format!("holden-bench-cgroup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("agent.sock");
    let mut agent_proc = Command::new(AGENT)
        .arg("--socket")
        .arg(&socket)
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    while holden::Agent::connect(&socket).is_err() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut agent = holden::Agent::connect(&socket).unwrap();
    println!("spawn of `true`, {ROUNDS} times each, the spawn call only (request → pidfd):");
    for via_agent in [false, true] {
        let (mut plain, mut joined) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let a = if via_agent { Some(&mut agent) } else { None };
            plain.push(spawn_once(None, a));
            let a = if via_agent { Some(&mut agent) } else { None };
            joined.push(spawn_once(Some(&base), a));
        }
        let (p50a, p50b) = (p(&mut plain, 0.5), p(&mut joined, 0.5));
        println!(
            "  {:<14} no cgroup p50 {:>7.1} µs p95 {:>7.1} µs | into a cgroup p50 {:>7.1} µs p95 {:>7.1} µs | p50 overhead {:>6.1} µs",
            if via_agent { "through agent" } else { "local" },
            us(p50a),
            us(p(&mut plain, 0.95)),
            us(p50b),
            us(p(&mut joined, 0.95)),
            us(p50b) - us(p50a),
        );
    }
    drop(agent);
    let _ = Command::new("kill").arg(agent_proc.id().to_string()).status();
    let _ = agent_proc.wait();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::remove_dir(&base).unwrap();
}
