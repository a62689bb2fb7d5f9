//! The orchestrator's figures, beside the supervisors Debian packages (supervisord, s6, runit)
//! when they are installed: `cargo bench -p holden-cli --bench up` (as root). Prints figures,
//! asserts nothing.
//!
//! - restart latency: SIGKILL of the service → its next incarnation running (backoff 0),
//!   locally and through an agent. "Running" is when the new process, a probe (this binary
//!   run as `probe SOCKET`), reports from its `main` over a datagram socket;
//! - detection latency: SIGKILL → the state change visible to a `holden events` client;
//! - context switches of the supervisor's processes over 10 s idle with 100 services;
//! - RSS with 10, 100 and 1,000 services;
//! - time from launching the supervisor to 100 probes running.

use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HOLDEN: &str = env!("CARGO_BIN_EXE_holden");

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// The service: reports "PID NANOS" once, then waits forever.
fn probe(socket: &str) -> ! {
    let s = UnixDatagram::unbound().unwrap();
    let _ = s.send_to(format!("{} {}", std::process::id(), now_ns()).as_bytes(), socket);
    loop {
        std::thread::park();
    }
}

fn kill(pid: i32, sig: i32) {
    if let Ok(fd) = holden_sys::process::pidfd_open(pid) {
        let _ = holden_sys::process::pidfd_send_signal(&fd, sig);
    }
}

struct Probes {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Probes {
    fn new(dir: &Path) -> Probes {
        let path = dir.join("probe.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Probes { sock, path }
    }
    fn next(&self) -> (i32, u128) {
        let mut buf = [0u8; 64];
        let n = self.sock.recv(&mut buf).expect("a probe reports within 30 s");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let (pid, ns) = text.split_once(' ').unwrap();
        (pid.parse().unwrap(), ns.parse().unwrap())
    }
    fn command(&self) -> Vec<String> {
        vec![std::env::current_exe().unwrap().display().to_string(), "probe".into(), self.path.display().to_string()]
    }
}

/// Restart latencies: kill the current incarnation `samples` times, `settle` after each start.
fn restart_latencies(p: &Probes, mut pid: i32, samples: usize, settle: Duration) -> Vec<Duration> {
    let mut v = Vec::new();
    for _ in 0..samples {
        std::thread::sleep(settle);
        let t0 = now_ns();
        kill(pid, 9);
        let (new, t1) = p.next();
        v.push(Duration::from_nanos((t1.saturating_sub(t0)) as u64));
        pid = new;
    }
    v.sort();
    v
}

fn pct(v: &[Duration]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    format!("p50 {:?}, p90 {:?} ({} samples)", v[v.len() / 2], v[v.len() * 9 / 10], v.len())
}

fn status_field(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().trim_end_matches(" kB").parse().unwrap_or(0)))
        .unwrap_or(0)
}

fn switches(pids: &[i32]) -> u64 {
    pids.iter()
        .map(|p| status_field(*p, "voluntary_ctxt_switches:") + status_field(*p, "nonvoluntary_ctxt_switches:"))
        .sum()
}

fn rss_kib(pids: &[i32]) -> u64 {
    pids.iter().map(|p| status_field(*p, "VmRSS:")).sum()
}

/// The supervisor's own processes: `root` and its descendants whose command is one of `names`.
fn tree(root: i32, names: &[&str]) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        for c in holden_cli::children_of(out[i]) {
            let comm = std::fs::read_to_string(format!("/proc/{c}/comm")).unwrap_or_default();
            if names.contains(&comm.trim()) {
                out.push(c);
            }
        }
        i += 1;
    }
    out
}

fn wait_socket(p: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(p).is_err() {
        assert!(Instant::now() < deadline, "nothing on {}", p.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn toml_list(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", "))
}

struct Holden {
    proc: Child,
    socket: PathBuf,
}

impl Holden {
    fn start(dir: &Path, services: &str) -> Holden {
        let _ = std::fs::remove_dir_all(dir.join("state"));
        let socket = dir.join("control.sock");
        let cfg = dir.join("holden.toml");
        std::fs::write(
            &cfg,
            format!(
                "[orchestrator]\ncontrol_socket = \"{}\"\nstate_dir = \"{}\"\n{services}",
                socket.display(),
                dir.join("state").display()
            ),
        )
        .unwrap();
        let proc = Command::new(HOLDEN)
            .args(["up", "-c"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_socket(&socket);
        Holden { proc, socket }
    }
    fn pid(&self) -> i32 {
        self.proc.id() as i32
    }
    fn stop(mut self) {
        kill(self.pid(), 15);
        let _ = self.proc.wait();
    }
}

fn sleepers(n: usize, extra: &str) -> String {
    (0..n).map(|i| format!("[services.s{i}]\ncommand = [\"sleep\", \"100000\"]\n{extra}")).collect()
}

fn probes(n: usize, p: &Probes, extra: &str) -> String {
    let cmd = toml_list(&p.command());
    (0..n).map(|i| format!("[services.p{i}]\ncommand = {cmd}\n{extra}")).collect()
}

fn holden_figures(dir: &Path) {
    println!("== holden up");
    let p = Probes::new(dir);
    let zero = "backoff = { initial = \"0ms\" }\nstart_limit = { burst = 1000000, interval = \"1s\" }\n";

    // The floor: the same probe spawned directly, spawn → its report.
    let mut base = Vec::new();
    for _ in 0..200 {
        let cmd = p.command();
        let t0 = now_ns();
        let mut c = holden::Command::new(&cmd[0]).args(&cmd[1..]).spawn().unwrap();
        let (_, t1) = p.next();
        base.push(Duration::from_nanos(t1.saturating_sub(t0) as u64));
        c.kill().unwrap();
        c.wait().unwrap();
    }
    base.sort();
    println!("floor: the probe spawned directly (spawn → running): {}", pct(&base));

    let h = Holden::start(dir, &probes(1, &p, zero));
    let (pid, _) = p.next();
    println!("restart latency, local:          {}", pct(&restart_latencies(&p, pid, 200, Duration::from_millis(20))));
    // Detection: SIGKILL → the event reaches a client of the control socket.
    let mut ev = UnixStream::connect(&h.socket).unwrap();
    ev.write_all(b"{\"method\":\"io.holden.Orchestrator.Events\",\"more\":true}\0").unwrap();
    let mut det = Vec::new();
    let list = Command::new(HOLDEN).args(["status", "--json", "--control-socket"]).arg(&h.socket).output().unwrap();
    let mut pid = serde_json::from_slice::<serde_json::Value>(&list.stdout).unwrap()[0]["pid"].as_i64().unwrap() as i32;
    let mut rd = std::io::BufReader::new(ev);
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        kill(pid, 9);
        // Events until the one that says it is no longer running.
        loop {
            let mut msg = Vec::new();
            std::io::BufRead::read_until(&mut rd, 0, &mut msg).unwrap();
            let text = String::from_utf8_lossy(&msg);
            if !text.contains("\"state\":\"running\"") {
                det.push(t0.elapsed());
                break;
            }
        }
        let (new, _) = p.next();
        pid = new;
        // Drain the starting/running events of the new incarnation.
        let mut seen_running = false;
        while !seen_running {
            let mut msg = Vec::new();
            std::io::BufRead::read_until(&mut rd, 0, &mut msg).unwrap();
            seen_running = String::from_utf8_lossy(&msg).contains("\"state\":\"running\"");
        }
    }
    det.sort();
    println!("detection latency (SIGKILL → event at a client): {}", pct(&det));
    h.stop();

    let agent_sock = dir.join("agent.sock");
    let mut agent =
        Command::new(HOLDEN).args(["agent", "--log-level", "warn", "--socket"]).arg(&agent_sock).spawn().unwrap();
    wait_socket(&agent_sock);
    let agent_cfg = format!("[agents.a]\nsocket = \"{}\"\n", agent_sock.display());
    let h = Holden::start(dir, &format!("{agent_cfg}{}", probes(1, &p, &format!("agent = \"a\"\n{zero}"))));
    let (pid, _) = p.next();
    println!("restart latency, through agent:  {}", pct(&restart_latencies(&p, pid, 200, Duration::from_millis(20))));
    h.stop();
    kill(agent.id() as i32, 15);
    let _ = agent.wait();

    // 100 probes up: launch → the 100th reports.
    let t0 = now_ns();
    let h = Holden::start(dir, &probes(100, &p, ""));
    let mut last = 0;
    for _ in 0..100 {
        last = last.max(p.next().1);
    }
    println!("100 services up (launch → 100th running): {:?}", Duration::from_nanos((last - t0) as u64));
    idle(&[h.pid()], "holden up");
    h.stop();

    for n in [10, 100, 1000] {
        let h = Holden::start(dir, &sleepers(n, ""));
        let deadline = Instant::now() + Duration::from_secs(30);
        while holden_cli::children_of(h.pid()).len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        println!("RSS with {n:>4} services: {} KiB", rss_kib(&[h.pid()]));
        h.stop();
    }
    let h = Holden::start(dir, "");
    println!("RSS with    0 services: {} KiB", rss_kib(&[h.pid()]));
    h.stop();
}

fn idle(pids: &[i32], what: &str) {
    std::thread::sleep(Duration::from_millis(500));
    let before = switches(pids);
    std::thread::sleep(Duration::from_secs(10));
    let after = switches(pids);
    println!("context switches in 10 s idle, 100 services ({what}): {}", after - before);
    println!("RSS with 100 services ({what}, {} processes): {} KiB", pids.len(), rss_kib(pids));
}

fn which(p: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {p}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// s6 and runit: one service directory per service with a `run` script.
fn scan_dir(dir: &Path, n: usize, run: &str) -> PathBuf {
    let scan = dir.join("scan");
    let _ = std::fs::remove_dir_all(&scan);
    for i in 0..n {
        let s = scan.join(format!("p{i}"));
        std::fs::create_dir_all(&s).unwrap();
        let f = s.join("run");
        std::fs::write(&f, format!("#!/bin/sh\nexec {run}\n")).unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    scan
}

fn peer(dir: &Path, name: &str, start: &dyn Fn(&Path, usize, &Probes) -> Child, names: &[&str]) {
    println!("== {name}");
    let p = Probes::new(dir);
    let mut sup = start(dir, 1, &p);
    let (pid, _) = p.next();
    // s6 and runit wait 1 s before restarting a service that ran less than 1 s: let each run longer.
    println!(
        "restart latency, local:          {} (each run 1.1 s first)",
        pct(&restart_latencies(&p, pid, 8, Duration::from_millis(1100)))
    );
    stop_peer(&mut sup);
    drop(p);
    let p = Probes::new(dir);
    let t0 = now_ns();
    let mut sup = start(dir, 100, &p);
    let mut last = 0;
    for _ in 0..100 {
        last = last.max(p.next().1);
    }
    println!("100 services up (launch → 100th running): {:?}", Duration::from_nanos((last - t0) as u64));
    idle(&tree(sup.id() as i32, names), name);
    stop_peer(&mut sup);
}

fn stop_peer(sup: &mut Child) {
    // Kill the whole session: the supervisor, its helpers and the services (supervisord puts
    // each service in a process group of its own, but all stay in the session).
    let sid = sup.id().to_string();
    let _ = Command::new("pkill").args(["-KILL", "-s", &sid]).status();
    let _ = sup.wait();
    std::thread::sleep(Duration::from_millis(300));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("probe") {
        probe(&args[2]);
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    assert_eq!(holden_sys::fd::geteuid(), 0, "run as root");
    // Orphans of killed peers come here to be reaped.
    holden_sys::process::set_child_subreaper().unwrap();
    std::thread::spawn(|| loop {
        let _ = holden_sys::process::reap_any();
        std::thread::sleep(Duration::from_millis(50));
    });
    let dir = std::env::temp_dir().join(format!("holden-up-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    holden_figures(&dir);

    if which("supervisord") {
        peer(
            &dir,
            "supervisord",
            &|dir, n, p| {
                let mut conf = format!(
                    "[supervisord]\nnodaemon=true\nlogfile={0}/sd.log\npidfile={0}/sd.pid\n[unix_http_server]\nfile={0}/sd.sock\n",
                    dir.display()
                );
                for i in 0..n {
                    conf += &format!(
                        "[program:p{i}]\ncommand={}\nautorestart=true\nstartsecs=0\nstartretries=1000000\nstdout_logfile=NONE\nstderr_logfile=NONE\n",
                        p.command().join(" ")
                    );
                }
                std::fs::write(dir.join("sd.conf"), conf).unwrap();
                Command::new("setsid")
                    .args(["supervisord", "-c"])
                    .arg(dir.join("sd.conf"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            },
            &["supervisord"],
        );
    } else {
        println!("== supervisord: not installed (apt-get install supervisor)");
    }
    // s6 and runit: a scan directory of run scripts, watched by one scanner per supervisor.
    for (name, scanner, names, package) in [
        ("s6", "s6-svscan", ["s6-svscan", "s6-supervise"], "s6"),
        ("runit", "runsvdir", ["runsvdir", "runsv"], "runit"),
    ] {
        if !which(scanner) {
            println!("== {name}: not installed (apt-get install {package})");
            continue;
        }
        peer(
            &dir,
            name,
            &|dir, n, p| {
                let scan = scan_dir(dir, n, &p.command().join(" "));
                Command::new("setsid")
                    .arg(scanner)
                    .arg(scan)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            },
            &names,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
