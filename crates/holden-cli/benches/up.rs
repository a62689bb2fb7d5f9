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
//! - time from launching the supervisor to 100 probes running, beside the same 100 probes
//!   started by a bare loop in this process (`std::process::Command::spawn` + `pidfd_open`);
//! - chatty neighbour: restarts of a crash-looping service per 5 s, and `holden status` latency,
//!   alone and beside a service that runs `yes` into its log;
//! - stopped agent: the same for a local crash-looper before and while an agent that spawns
//!   another crash-looper is SIGSTOPped;
//! - reload of 500 services (250 removed, 250 added): the longest gap between consecutive
//!   answers of a client that calls `List` back to back on the control socket.
//!
//! Every process the bench starts, directly or through a supervisor, carries the run's marker
//! (in its command line, and as `HOLDEN_UP_BENCH_MARK` in its environment): each supervisor's
//! whole tree is remembered (a pidfd each) before it is stopped and what outlives the stop is
//! killed, and the bench ends by sweeping `/proc` for marked processes (`leftover processes: N`).

use std::io::{BufRead, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const HOLDEN: &str = env!("CARGO_BIN_EXE_holden");

#[path = "up/faults.rs"]
mod faults;
#[path = "up/procs.rs"]
mod procs;
use faults::*;
use procs::*;

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
    /// `probe SOCKET MARK`: the marker is only there to be found in `/proc`.
    fn command(&self) -> Vec<String> {
        vec![
            std::env::current_exe().unwrap().display().to_string(),
            "probe".into(),
            self.path.display().to_string(),
            mark().into(),
        ]
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

fn toml_list(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", "))
}

fn sleepers(n: usize, extra: &str) -> String {
    parkers(0..n, extra)
}

/// Services that only wait (this binary as `park MARK`), named `sN` for N in `range`.
fn parkers(range: std::ops::Range<usize>, extra: &str) -> String {
    let cmd = toml_list(&[std::env::current_exe().unwrap().display().to_string(), "park".into(), mark().into()]);
    range.map(|i| format!("[services.s{i}]\ncommand = {cmd}\n{extra}")).collect()
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
        let mut c = holden::Command::new(&cmd[0]).args(&cmd[1..]).env(MARK_VAR, mark()).spawn().unwrap();
        let (_, t1) = p.next();
        base.push(Duration::from_nanos(t1.saturating_sub(t0) as u64));
        c.kill().unwrap();
        c.wait().unwrap();
    }
    base.sort();
    println!("floor: the probe spawned directly (spawn → running): {}", pct(&base));
    // The kernel's share of detection: SIGKILL of a running probe → its pidfd readable, in
    // this process (no supervisor, no client).
    let mut kfloor = Vec::new();
    for _ in 0..200 {
        let cmd = p.command();
        let mut c = holden::Command::new(&cmd[0]).args(&cmd[1..]).env(MARK_VAR, mark()).spawn().unwrap();
        p.next();
        let t0 = Instant::now();
        c.kill().unwrap();
        holden_sys::event::poll_readable(c.pidfd(), None).unwrap();
        kfloor.push(t0.elapsed());
        c.wait().unwrap();
    }
    kfloor.sort();
    println!("floor: SIGKILL → pidfd readable, no supervisor: {}", pct(&kfloor));

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
    let agent = start_agent(&agent_sock);
    let agent_cfg = format!("[agents.a]\nsocket = \"{}\"\n", agent_sock.display());
    let h = Holden::start(dir, &format!("{agent_cfg}{}", probes(1, &p, &format!("agent = \"a\"\n{zero}"))));
    let (pid, _) = p.next();
    println!("restart latency, through agent:  {}", pct(&restart_latencies(&p, pid, 200, Duration::from_millis(20))));
    h.stop();
    stop_agent(agent);

    // 100 probes up: launch → the 100th reports.
    let t0 = now_ns();
    let h = Holden::start(dir, &probes(100, &p, ""));
    let mut last = 0;
    for _ in 0..100 {
        last = last.max(p.next().1);
    }
    let up = Duration::from_nanos((last - t0) as u64);
    println!("100 services up (launch → 100th running): {up:?}");
    idle(&[h.pid()], "holden up");
    h.stop();
    let bare = bare_loop(&p);
    println!("100 probes by a bare loop (Command::spawn + pidfd_open ×100 → 100th running): {bare:?}");
    println!("100 services up, holden up / bare loop: {:.2}", up.as_secs_f64() / bare.as_secs_f64());

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

/// The same 100 probes started by this process: `Command::spawn` and a pidfd each, then the
/// wait for their 100 reports.
fn bare_loop(p: &Probes) -> Duration {
    let cmd = p.command();
    let t0 = now_ns();
    let mut kids = Vec::new();
    for _ in 0..100 {
        let c = Command::new(&cmd[0])
            .args(&cmd[1..])
            .env(MARK_VAR, mark())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let fd = holden_sys::process::pidfd_open(c.id() as i32).unwrap();
        kids.push((c, fd));
    }
    let mut last = 0;
    for _ in 0..100 {
        last = last.max(p.next().1);
    }
    for (mut c, fd) in kids {
        let _ = holden_sys::process::pidfd_send_signal(&fd, libc::SIGKILL);
        let _ = c.wait();
    }
    Duration::from_nanos((last - t0) as u64)
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
    stop_peer(name, names[0], dir, &mut sup);
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
    stop_peer(name, names[0], dir, &mut sup);
}

/// Stops a peer supervisor the way that makes its services end, then kills whatever is left of
/// its tree as it was before the stop (services that left its session or process group
/// included). `scanner` is the command name of the supervisor itself, which `setsid` may have
/// forked.
fn stop_peer(name: &str, scanner: &str, dir: &Path, sup: &mut Child) {
    let procs = Procs::under(sup.id() as i32);
    let main = procs
        .0
        .iter()
        .map(|(pid, _)| *pid)
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == scanner))
        .unwrap_or(sup.id() as i32);
    match name {
        // SIGHUP: runsvdir sends SIGTERM to every runsv, which stops its service and exits.
        // (On SIGTERM runsvdir would exit alone and leave them all running.)
        "runit" => kill(main, libc::SIGHUP),
        // Services down first, then s6-svscan told to exit (it stops its s6-supervise).
        "s6" => {
            let scan = dir.join("scan");
            for service in std::fs::read_dir(&scan).into_iter().flatten().flatten() {
                let _ = Command::new("s6-svc").arg("-d").arg(service.path()).stderr(Stdio::null()).status();
            }
            let told = Command::new("s6-svscanctl")
                .arg("-t")
                .arg(&scan)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !told {
                kill(main, libc::SIGTERM);
            }
        }
        // SIGTERM: supervisord stops every program, then exits.
        _ => kill(main, libc::SIGTERM),
    }
    if !procs.wait_root(Duration::from_secs(15)) {
        println!("note: {name} did not exit within 15 s of its stop");
    }
    procs.finish(name, Duration::from_secs(5));
    let _ = sup.wait();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("probe") => probe(&args[2]),
        // A service that only waits; its argument is the marker.
        Some("park") => loop {
            std::thread::park();
        },
        _ => {}
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    assert_eq!(holden_sys::fd::geteuid(), 0, "run as root");
    // Orphans of stopped supervisors come here rather than to PID 1, and are reaped by pidfd
    // when their supervisor's tree is finished (no reaper thread: a `waitid(P_ALL)` would take
    // the exit statuses of the bench's own `Command`s from under them).
    holden_sys::process::set_child_subreaper().unwrap();
    MARK.set(format!("holden-up-bench-{}-{}", std::process::id(), now_ns())).unwrap();
    // A run that panics half-way still leaves nothing behind.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("leftover processes after the panic (killed): {}", sweep());
    }));
    let dir = std::env::temp_dir().join(mark());
    std::fs::create_dir_all(&dir).unwrap();
    holden_figures(&dir);
    chatty_neighbour(&dir);
    stopped_agent(&dir);
    reload_500(&dir);

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
    // Whatever carries the marker now outlived every stop above.
    std::thread::sleep(Duration::from_millis(200));
    let left = sweep();
    println!("leftover processes: {left}");
    if left > 0 {
        std::thread::sleep(Duration::from_millis(500));
        println!("leftover processes after SIGKILL: {}", sweep());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
