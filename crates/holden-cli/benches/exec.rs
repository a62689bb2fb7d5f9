//! `holden exec -- true` against `nsenter` into the agent's namespaces and against `true` run
//! directly, in one run: `cargo bench -p holden-cli --bench exec` (as root: the agent gets its
//! own namespaces). Prints figures, asserts nothing.

use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HOLDEN: &str = env!("CARGO_BIN_EXE_holden");
const RUNS: usize = 300;

fn time(mut cmd: impl FnMut() -> Command) -> (Duration, Duration) {
    let mut v: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let mut c = cmd();
            c.stdin(Stdio::null()).stdout(Stdio::null());
            let t = Instant::now();
            let s = c.status().unwrap();
            let d = t.elapsed();
            assert!(s.success(), "{c:?}: {s}");
            d
        })
        .collect();
    v.sort();
    (v[RUNS / 2], v[RUNS * 9 / 10])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("holden-exec-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("agent.sock");
    let mut agent = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--kill-child=SIGTERM",
            HOLDEN,
            "agent",
            "--socket",
        ])
        .arg(&socket)
        .stdin(Stdio::null())
        .spawn()
        .expect("unshare (run as root)");
    while UnixStream::connect(&socket).is_err() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let agent_pid = holden::Agent::connect(&socket).unwrap().agent_pid().unwrap().unwrap().to_string();
    println!("{RUNS} runs each; wall time of the whole command, as a shell would see it");
    let rows = [
        ("true, run directly", time(|| Command::new("true"))),
        (
            "nsenter -t AGENT -p -m -u -i -n true",
            time(|| {
                let mut c = Command::new("nsenter");
                c.args(["-t", &agent_pid, "-p", "-m", "-u", "-i", "-n", "true"]);
                c
            }),
        ),
        (
            "holden exec -- true",
            time(|| {
                let mut c = Command::new(HOLDEN);
                c.arg("exec").arg("--agent").arg(&socket).args(["--", "true"]);
                c
            }),
        ),
    ];
    for (name, (p50, p90)) in rows {
        println!("  {name:<40} p50 {:>8.1} µs   p90 {:>8.1} µs", p50.as_secs_f64() * 1e6, p90.as_secs_f64() * 1e6);
    }
    let _ = Command::new("kill").arg(&agent_pid).status();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
