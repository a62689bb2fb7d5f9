//! Holden against `docker exec`, in one run: `cargo bench -p holden-cli --bench container` (as
//! root, with a Docker engine and the image from `make image`; /bin/busybox from Debian's
//! busybox-static is bind-mounted into it). Prints figures, asserts nothing.
//! - `holden exec -- /bin/busybox true` into the container vs `docker exec C /bin/busybox true`;
//! - an exec health or readiness probe of `holden up` for an agent service, as it makes it
//!   (connect to the agent, `Spawn`, wait for the exit through the pidfd) vs the same `docker
//!   exec`, which is what Docker's own health checks cost;
//! - spawns per second (spawn + wait of /bin/busybox true, one client) through the
//!   containerised agent vs through an agent on the host.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HOLDEN: &str = env!("CARGO_BIN_EXE_holden");

fn p50(mut cmd: impl FnMut() -> Command, runs: usize) -> (Duration, Duration) {
    let mut v: Vec<Duration> = (0..runs)
        .map(|_| {
            let mut c = cmd();
            c.stdin(Stdio::null()).stdout(Stdio::null());
            let t = Instant::now();
            let s = c.status().unwrap();
            assert!(s.success(), "{c:?}: {s}");
            t.elapsed()
        })
        .collect();
    v.sort();
    (v[runs / 2], v[runs * 9 / 10])
}

fn spawns_per_second(socket: &Path) -> f64 {
    let mut agent = holden::Agent::connect(socket).unwrap();
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        let mut c = holden::Command::new("/bin/busybox").arg("true").spawn_via(&mut agent).unwrap();
        assert!(c.wait().unwrap().success());
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// The cost of one exec probe through the agent on `socket`, as `holden up` makes it.
fn exec_probe(socket: &Path) -> Duration {
    let t = Instant::now();
    let mut agent = holden::Agent::connect(socket).unwrap();
    let mut cmd = holden::Command::new("/bin/busybox");
    cmd.arg("true").stdin(holden::Stdio::null()).stdout(holden::Stdio::null()).stderr(holden::Stdio::null());
    let mut c = cmd.spawn_via(&mut agent).unwrap();
    holden_sys::event::poll_readable(c.pidfd(), Some(Duration::from_secs(2))).unwrap();
    assert!(c.wait().unwrap().success());
    t.elapsed()
}

fn wait_socket(p: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(p).is_err() {
        assert!(Instant::now() < deadline, "nothing on {}", p.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let docker_ok = Command::new("docker")
        .args(["image", "inspect", "holden-agent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !docker_ok {
        println!("container bench did not run: no Docker engine or no image holden-agent (make image)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("holden-container-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("c")).unwrap();
    let name = format!("holden-bench-{}", std::process::id());
    let mount = format!("{}:/run/holden", dir.join("c").display());
    let ok = Command::new("docker")
        .args(["run", "-d", "--name", &name, "-v", &mount, "-v", "/bin/busybox:/bin/busybox:ro", "holden-agent"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let csock = dir.join("c/agent.sock");
    wait_socket(&csock);
    let hsock = dir.join("host.sock");
    let mut host = Command::new(HOLDEN).args(["agent", "--log-level", "warn", "--socket"]).arg(&hsock).spawn().unwrap();
    wait_socket(&hsock);

    let (h50, h90) = p50(
        || {
            let mut c = Command::new(HOLDEN);
            c.arg("exec").arg("--agent").arg(&csock).args(["--", "/bin/busybox", "true"]);
            c
        },
        200,
    );
    let (d50, d90) = p50(
        || {
            let mut c = Command::new("docker");
            c.args(["exec", &name, "/bin/busybox", "true"]);
            c
        },
        50,
    );
    println!("holden exec -- true into the container: p50 {h50:?}, p90 {h90:?} (200 runs)");
    println!("docker exec CONTAINER true:            p50 {d50:?}, p90 {d90:?} (50 runs)");
    println!("ratio (p50): {:.0}x", d50.as_secs_f64() / h50.as_secs_f64());
    let mut probes: Vec<Duration> = (0..500).map(|_| exec_probe(&csock)).collect();
    probes.sort();
    println!(
        "exec probe of holden up into the container (connect, Spawn, wait): p50 {:?}, p90 {:?} (500 runs); vs docker exec p50: {:.0}x",
        probes[250],
        probes[450],
        d50.as_secs_f64() / probes[250].as_secs_f64()
    );
    println!(
        "spawns per second (spawn + wait, 1 client): containerised agent {:.0}/s, host agent {:.0}/s",
        spawns_per_second(&csock),
        spawns_per_second(&hsock)
    );

    let _ = Command::new("docker").args(["rm", "-f", &name]).stdout(Stdio::null()).status();
    let _ = Command::new("kill").arg(host.id().to_string()).status();
    let _ = host.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
