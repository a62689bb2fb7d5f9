//! Readiness and health figures: `cargo bench -p holden-cli --bench ready` (as root). Prints
//! figures, asserts nothing.
//!
//! - ready → dependent started: `db` (`ready = { notify = "fd" }`) writes its newline when the
//!   bench writes to a FIFO it reads (then blocks on the FIFO again, rather than exec something
//!   that would compete for this 2-core machine with the spawn measured); `web` (`depends_on = { db = "ready" }`, `sleep`) is
//!   spawned once the orchestrator reads it. The time from the FIFO write to `web: running` on
//!   an Events stream (its spawn done: `sleep` exec'd), 50 rounds (each: stop both, start web,
//!   which pulls db in and is held until db is ready), beside the floor: `sleep` spawned
//!   directly by this process (`holden::Command::spawn`, which returns once it exec'd);
//! - (an exec probe through an agent against `docker exec`: the `container` bench, one run);
//! - 200 services with an exec health check every second: the orchestrator's CPU share over
//!   10 s (its own time, and its children's, the probes'), and `holden status` p50/p95.
//!
//! Every process the bench starts carries its marker in the environment; the bench ends by
//! counting marked processes left (`leftover processes: N`).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HOLDEN: &str = env!("CARGO_BIN_EXE_holden");
const MARK: &str = "HOLDEN_READY_BENCH";

/// This run's marker value.
fn mark() -> String {
    std::process::id().to_string()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * q) as usize]
}

/// One Varlink call on the control socket; the reply's parameters.
fn call(control: &Path, method: &str, params: serde_json::Value) -> serde_json::Value {
    let mut s = UnixStream::connect(control).unwrap();
    let msg = serde_json::json!({ "method": format!("io.holden.Orchestrator.{method}"), "parameters": params });
    s.write_all(format!("{msg}\0").as_bytes()).unwrap();
    let mut buf = Vec::new();
    std::io::BufRead::read_until(&mut std::io::BufReader::new(s), 0, &mut buf).unwrap();
    buf.pop();
    let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    assert!(v.get("error").is_none(), "{method}: {v}");
    v["parameters"].clone()
}

fn service<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list["services"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()
}

fn up(dir: &Path, services: &str) -> (std::process::Child, PathBuf) {
    let control = dir.join("control.sock");
    let conf = dir.join("holden.toml");
    let text = format!(
        "[orchestrator]\ncontrol_socket = \"{}\"\nstate_dir = \"{}\"\n\n{services}",
        control.display(),
        dir.join("state").display()
    );
    std::fs::write(&conf, text).unwrap();
    let log = std::fs::File::create(dir.join("up.log")).unwrap();
    let child = Command::new(HOLDEN)
        .args(["up", "-c"])
        .arg(&conf)
        .env(MARK, mark())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let t = Instant::now();
    while UnixStream::connect(&control).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "no control socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, control)
}

fn down(mut child: std::process::Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(60), "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn ready_to_dependent(dir: &Path) {
    let fifo = dir.join("go");
    let _ = std::fs::remove_file(&fifo);
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (child, control) = up(
        dir,
        &format!(
            r#"
[services.db]
command = ["sh", "-c", "read x < {fifo}; echo >&3; read x < {fifo}"]
ready = {{ notify = "fd" }}

[services.web]
command = ["sleep", "100000"]
depends_on = {{ db = "ready" }}
"#,
            fifo = fifo.display(),
        ),
    );
    // An Events follower: when each `web: running` arrives.
    let (tx, rx) = std::sync::mpsc::channel::<(bool, Instant)>();
    let mut ev = UnixStream::connect(&control).unwrap();
    ev.write_all(b"{\"method\":\"io.holden.Orchestrator.Events\",\"more\":true}\0").unwrap();
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(ev);
        let mut msg = Vec::new();
        while std::io::BufRead::read_until(&mut r, 0, &mut msg).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&msg);
            if text.contains("\"service\":\"web\"") && text.contains("\"state\":\"running\"") {
                let _ = tx.send((true, Instant::now()));
            }
            if text.contains("\"service\":\"db\"") && text.contains("\"change\":\"ready\"") {
                let _ = tx.send((false, Instant::now()));
            }
            msg.clear();
        }
    });
    let (mut spawned, mut seen, mut between) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..51 {
        let t0;
        if round == 0 {
            // The first start: both come up with the orchestrator.
            wait_until("web held", || {
                service(&call(&control, "List", serde_json::json!({})), "web")["waiting"].is_string()
            });
        }
        {
            t0 = Instant::now();
            let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            f.write_all(b"go\n").unwrap();
        }
        let ready = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let running = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(!ready.0 && running.0, "db: ready comes first");
        if round > 0 {
            spawned.push(running.1.saturating_duration_since(t0));
            seen.push(ready.1.saturating_duration_since(t0));
            between.push(running.1.saturating_duration_since(ready.1));
        }
        call(&control, "Stop", serde_json::json!({ "names": ["db"] }));
        wait_until("both stopped", || {
            let l = call(&control, "List", serde_json::json!({}));
            service(&l, "db")["state"] == "stopped" && service(&l, "web")["state"] == "stopped"
        });
        call(&control, "Start", serde_json::json!({ "names": ["web"] }));
        wait_until("web held", || {
            service(&call(&control, "List", serde_json::json!({})), "web")["waiting"].is_string()
        });
        while rx.try_recv().is_ok() {}
        // db is blocked on the FIFO, web waits for it: give the loop a moment to settle.
        std::thread::sleep(Duration::from_millis(20));
    }
    down(child);
    let mut floor = Vec::new();
    for _ in 0..50 {
        let t0 = Instant::now();
        let mut c = holden::Command::new("sleep").arg("100000").env(MARK, mark()).spawn().unwrap();
        floor.push(t0.elapsed());
        let _ = c.kill();
        let _ = c.wait();
    }
    println!(
        "ready -> dependent started (db's newline on fd 3 -> `web: running` on an Events stream), 50 rounds: p50 {:.3} ms  p95 {:.3} ms",
        ms(pct(&mut spawned, 0.5)),
        ms(pct(&mut spawned, 0.95))
    );
    println!(
        "  of which: FIFO write -> `db: ready` event p50 {:.3} ms (sh woken, its echo, the loop reads it); `db: ready` -> `web: running` events p50 {:.3} ms",
        ms(pct(&mut seen, 0.5)),
        ms(pct(&mut between, 0.5))
    );
    println!(
        "  the floor, the same `sleep` spawned directly here: p50 {:.3} ms (the FIFO wake-up and sh's echo are in the first figure too)",
        ms(pct(&mut floor, 0.5))
    );
}

/// utime + stime, and cutime + cstime, of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<u64> = stat.rsplit_once(')').unwrap().1.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // After the command: field 3 is index 0; utime 14, stime 15, cutime 16, cstime 17.
    (f[11] + f[12], f[13] + f[14])
}

fn health_load(dir: &Path) {
    let n = 200;
    let services: String = (0..n)
        .map(|i| {
            format!("[services.h{i:03}]\ncommand = [\"sleep\", \"100000\"]\nhealth = {{ exec = [\"true\"], interval = \"1s\" }}\n\n")
        })
        .collect();
    let (child, control) = up(dir, &services);
    wait_until("200 healthy", || {
        let l = call(&control, "List", serde_json::json!({}));
        l["services"].as_array().unwrap().iter().filter(|s| s["health"] == "healthy").count() == n
    });
    let hz = 100.0; // USER_HZ on Linux
    let (own0, kids0) = cpu_ticks(child.id());
    let t0 = Instant::now();
    let mut status = Vec::new();
    while t0.elapsed() < Duration::from_secs(10) {
        let t = Instant::now();
        let out = Command::new(HOLDEN).args(["status", "--control-socket"]).arg(&control).output().unwrap();
        status.push(t.elapsed());
        assert!(out.status.success());
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = t0.elapsed().as_secs_f64();
    let (own1, kids1) = cpu_ticks(child.id());
    println!(
        "{n} services with an exec health check every 1 s, over {wall:.1} s: orchestrator CPU {:.1}% of one CPU (its children, the probes: {:.1}%); `holden status` p50 {:.2} ms p95 {:.2} ms ({} calls)",
        (own1 - own0) as f64 / hz / wall * 100.0,
        (kids1 - kids0) as f64 / hz / wall * 100.0,
        ms(pct(&mut status, 0.5)),
        ms(pct(&mut status, 0.95)),
        status.len()
    );
    down(child);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if holden_sys::fd::geteuid() != 0 {
        println!("ready bench DID NOT RUN: it needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("holden-bench-ready-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sub = |name: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    ready_to_dependent(&sub("a"));
    health_load(&sub("b"));
    std::thread::sleep(Duration::from_millis(500));
    let left = holden_cli::processes_with_env(MARK, &mark());
    println!("leftover processes: {}", left.len());
    for pid in left {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    if std::env::var_os("KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
