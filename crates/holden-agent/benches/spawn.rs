//! Spawn benchmark: prints figures, asserts nothing. `cargo bench -p holden-agent --bench spawn`
//! (set HOLDEN_BENCH_SPAWNS to change the RSS run's 100,000 spawns).
//!
//! In one run: the spawn round trip through the agent (request sent → pidfd received) against
//! an in-process spawn + pidfd_open of the same program; spawns per second with 1 and 8 clients;
//! the agent's RSS before and after many spawns; errors.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_holden-agent");
const PROGRAM: &str = "/bin/true";

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
    format!("p50 {:>7.1} µs  p90 {:>7.1} µs  p99 {:>7.1} µs", us(p(0.5)), us(p(0.9)), us(p(0.99)))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
}

fn throughput(socket: &Path, clients: usize, per_client: usize) -> (f64, usize) {
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let socket = socket.to_owned();
            std::thread::spawn(move || {
                let mut agent = holden::Agent::connect(&socket).unwrap();
                let mut errors = 0;
                for _ in 0..per_client {
                    let ok = holden::Command::new(PROGRAM)
                        .spawn_via(&mut agent)
                        .and_then(|mut c| c.wait())
                        .is_ok_and(|s| s.success());
                    errors += usize::from(!ok);
                }
                errors
            })
        })
        .collect();
    let errors = handles.into_iter().map(|h| h.join().unwrap()).sum();
    ((clients * per_client) as f64 / start.elapsed().as_secs_f64(), errors)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; there is nothing to list.
    }
    let dir = std::env::temp_dir().join(format!("holden-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("agent.sock");
    let mut agent_proc = Command::new(AGENT)
        .arg("--socket")
        .arg(&socket)
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    while holden::Agent::connect(&socket).is_err() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = agent_proc.id();
    let mut agent = holden::Agent::connect(&socket).unwrap();
    let n = 3000;
    let mut errors = 0usize;

    // Warm caches (page cache for the program, the agent's allocator).
    for _ in 0..200 {
        holden::Command::new(PROGRAM).spawn_via(&mut agent).unwrap().wait().unwrap();
        Command::new(PROGRAM).spawn().unwrap().wait().unwrap();
    }

    println!("spawn round trip of {PROGRAM}, {n} runs each (the process is waited for outside the timing)");
    let mut std_times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut child = Command::new(PROGRAM).spawn().unwrap();
        let fd = holden_sys::process::pidfd_open(child.id() as i32).unwrap();
        std_times.push(t.elapsed());
        drop(fd);
        child.wait().unwrap();
    }
    let mut local_times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut child = holden::Command::new(PROGRAM).spawn().unwrap();
        local_times.push(t.elapsed());
        child.wait().unwrap();
    }
    let mut agent_times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = holden::Command::new(PROGRAM).spawn_via(&mut agent);
        agent_times.push(t.elapsed());
        match r.and_then(|mut c| c.wait()) {
            Ok(s) if s.success() => {}
            _ => errors += 1,
        }
    }
    let mut ping_times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        agent.ping().unwrap();
        ping_times.push(t.elapsed());
    }
    let base = p50(std_times.clone());
    let via = p50(agent_times.clone());
    println!("  in-process std::process::Command::spawn + pidfd_open  {}", percentiles(std_times));
    println!("  in-process holden::Command::spawn (clone CLONE_PIDFD)  {}", percentiles(local_times));
    println!("  through the agent (request sent -> pidfd received)    {}", percentiles(agent_times));
    println!("  Ping round trip (the protocol alone)                   {}", percentiles(ping_times));
    println!("  ratio of p50s, agent / in-process std: {:.2}x", via.as_secs_f64() / base.as_secs_f64());

    for clients in [1, 8] {
        let (rate, e) = throughput(&socket, clients, 8000 / clients);
        errors += e;
        println!("spawn+wait through the agent with {clients} client(s): {rate:.0} spawns/s, {e} errors");
    }

    let total: usize = std::env::var("HOLDEN_BENCH_SPAWNS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let rss_start = rss_kib(pid);
    let (_, e) = throughput(&socket, 4, total / 4);
    errors += e;
    let rss_end = rss_kib(pid);
    println!("agent RSS: {rss_start} KiB before, {rss_end} KiB after {total} more spawns (4 clients), {e} errors");
    println!("total errors: {errors}");

    let _ = Command::new("kill").arg(pid.to_string()).status();
    agent_proc.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
