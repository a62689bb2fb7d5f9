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

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const HOLDEN: &str = env!("CARGO_BIN_EXE_holden");

/// The environment variable that marks every process the bench starts.
const MARK_VAR: &str = "HOLDEN_UP_BENCH_MARK";
/// This run's marker, unique to it: `holden-up-bench-PID-NANOS`, also the name of its directory.
static MARK: OnceLock<String> = OnceLock::new();

fn mark() -> &'static str {
    MARK.get().expect("the marker is set first")
}

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
    dir: PathBuf,
}

impl Holden {
    fn write_config(dir: &Path, services: &str) {
        std::fs::write(
            dir.join("holden.toml"),
            format!(
                "[orchestrator]\ncontrol_socket = \"{}\"\nstate_dir = \"{}\"\n{services}",
                dir.join("control.sock").display(),
                dir.join("state").display()
            ),
        )
        .unwrap();
    }
    fn start(dir: &Path, services: &str) -> Holden {
        let _ = std::fs::remove_dir_all(dir.join("state"));
        let socket = dir.join("control.sock");
        Holden::write_config(dir, services);
        let proc = Command::new(HOLDEN)
            .args(["up", "-c"])
            .arg(dir.join("holden.toml"))
            .env(MARK_VAR, mark())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_socket(&socket);
        Holden { proc, socket, dir: dir.into() }
    }
    fn pid(&self) -> i32 {
        self.proc.id() as i32
    }
    /// SIGTERM, then whatever of its tree (as it was before the signal) outlives it is killed.
    fn stop(mut self) {
        let procs = Procs::under(self.pid());
        kill(self.pid(), libc::SIGTERM);
        let _ = self.proc.wait();
        procs.finish("holden up", Duration::from_secs(5));
    }
}

/// A process tree as it was at one instant, with a pidfd for each process, so that what is
/// left of it after a stop can be killed without a pid reused meanwhile being hit.
struct Procs(Vec<(i32, OwnedFd)>);

impl Procs {
    /// `root` and all its descendants.
    fn under(root: i32) -> Procs {
        let mut kids: HashMap<i32, Vec<i32>> = HashMap::new();
        for pid in holden_supervisor::procfs::all_pids() {
            if let Some(ppid) = holden_supervisor::procfs::parent_of(pid) {
                kids.entry(ppid).or_default().push(pid);
            }
        }
        let mut pids = vec![root];
        let mut i = 0;
        while i < pids.len() {
            pids.extend(kids.get(&pids[i]).into_iter().flatten());
            i += 1;
        }
        let mut out = Vec::new();
        for (n, &pid) in pids.iter().enumerate() {
            let Ok(fd) = holden_sys::process::pidfd_open(pid) else { continue };
            // The pid may have been reused between the scan and the open: keep it only if it
            // still has the parent it was found under.
            if n == 0 || pids[..n].iter().any(|&p| holden_supervisor::procfs::parent_of(pid) == Some(p)) {
                out.push((pid, fd));
            }
        }
        Procs(out)
    }
    /// Waits up to `grace` for the first process (the root) to end; whether it did.
    fn wait_root(&self, grace: Duration) -> bool {
        self.0.first().is_none_or(|(_, fd)| holden_sys::event::poll_readable(fd.as_fd(), Some(grace)).unwrap_or(true))
    }
    /// Waits up to `grace` in all for every process to end, SIGKILLs those still there, and
    /// says so when there were any. Those that were orphaned to this process are reaped; the
    /// root is left to its `Child`.
    fn finish(self, what: &str, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut killed = Vec::new();
        for (pid, fd) in &self.0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if !holden_sys::event::poll_readable(fd.as_fd(), Some(left)).unwrap_or(true)
                && holden_sys::process::pidfd_send_signal(fd, libc::SIGKILL).is_ok()
            {
                killed.push(*pid);
            }
        }
        for (_, fd) in self.0.iter().skip(1) {
            reap_if_orphan(fd);
        }
        if !killed.is_empty() {
            println!(
                "note: {} of the {} processes of {what} outlived its stop by {grace:?}; killed: {killed:?}",
                killed.len(),
                self.0.len()
            );
        }
    }
}

/// Reaps the process behind `fd` once it has ended (within 1 s), if it is this process's child:
/// an orphan of a stopped supervisor, come here as to a subreaper.
fn reap_if_orphan(fd: &OwnedFd) {
    if holden_sys::event::poll_readable(fd.as_fd(), Some(Duration::from_secs(1))).unwrap_or(false) {
        // ECHILD when it is not ours.
        let _ = holden_sys::process::wait_pidfd(fd.as_fd(), true);
    }
}

/// Whether `pid`'s command line holds this run's marker, or its environment `MARK_VAR=MARK`.
fn marked(pid: i32) -> bool {
    let m = mark().as_bytes();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if cmdline.windows(m.len()).any(|w| w == m) {
        return true;
    }
    let entry = format!("{MARK_VAR}={}", mark());
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    environ.split(|&b| b == 0).any(|v| v == entry.as_bytes())
}

/// Kills (SIGKILL) every live process but this one that carries the marker; how many there were.
fn sweep() -> usize {
    let me = std::process::id() as i32;
    let mut found = 0;
    for pid in holden_supervisor::procfs::all_pids().filter(|&p| p != me && marked(p)) {
        let Ok(fd) = holden_sys::process::pidfd_open(pid) else { continue };
        // Checked again through the open pidfd's pid, so a pid reused since is left alone.
        if marked(pid) && holden_cli::is_running(pid) {
            found += 1;
            let _ = holden_sys::process::pidfd_send_signal(&fd, libc::SIGKILL);
            reap_if_orphan(&fd);
        }
    }
    found
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

/// A service that exits 1 at once and is restarted 10 ms later, forever.
fn crash_looper(name: &str, extra: &str) -> String {
    format!(
        "[services.{name}]\ncommand = [\"sh\", \"-c\", \"exit 1\", \"{}\"]\n\
         backoff = {{ initial = \"10ms\", max = \"10ms\" }}\n\
         start_limit = {{ burst = 1000000, interval = \"1s\" }}\n{extra}",
        mark()
    )
}

/// One `holden status --json` call (deadline 2 s): how long it took, and the list if it
/// answered, else why not.
fn status_call(socket: &Path) -> (Duration, Result<Vec<Value>, String>) {
    let t0 = Instant::now();
    let out = Command::new(HOLDEN)
        .args(["status", "--json", "--control-socket"])
        .arg(socket)
        .env("HOLDEN_TIMEOUT", "2")
        .stdin(Stdio::null())
        .output();
    let took = t0.elapsed();
    let list = match out {
        Err(e) => Err(format!("run holden status: {e}")),
        Ok(o) if !o.status.success() => Err(format!("{}: {}", o.status, String::from_utf8_lossy(&o.stderr).trim())),
        Ok(o) => serde_json::from_slice(&o.stdout).map_err(|e| format!("malformed output: {e}")),
    };
    (took, list)
}

fn restarts_of(list: &[Value], name: &str) -> Option<u64> {
    list.iter().find(|s| s["name"] == name)?["restarts"].as_u64()
}

/// What one phase of the chatty-neighbour and stopped-agent figures measured.
struct Phase {
    /// Per service asked for: restarts in 5 s (scaled to exactly 5 s), if status answered.
    restarts: Vec<Option<f64>>,
    /// `holden status` latencies of the calls that answered.
    status: Vec<Duration>,
    /// Calls that failed or did not answer within 2 s.
    failed: usize,
    /// How long the first failed call took, and why it failed.
    first_failure: Option<(Duration, String)>,
}

/// Restarts of `services` over 5 s, then ~100 `holden status` calls 20 ms apart (at most 20 s).
fn phase(socket: &Path, services: &[&str]) -> Phase {
    std::thread::sleep(Duration::from_millis(500));
    let l0 = status_call(socket).1.ok();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let l1 = status_call(socket).1.ok();
    let secs = t0.elapsed().as_secs_f64();
    let restarts = services
        .iter()
        .map(|s| {
            let r0 = restarts_of(l0.as_deref()?, s)?;
            let r1 = restarts_of(l1.as_deref()?, s)?;
            Some(r1.saturating_sub(r0) as f64 * 5.0 / secs)
        })
        .collect();
    let (mut status, mut failed, mut first_failure) = (Vec::new(), 0, None);
    let end = Instant::now() + Duration::from_secs(20);
    while status.len() + failed < 100 && Instant::now() < end {
        match status_call(socket) {
            (took, Ok(_)) => status.push(took),
            (took, Err(why)) => {
                failed += 1;
                first_failure.get_or_insert((took, why));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    status.sort();
    Phase { restarts, status, failed, first_failure }
}

fn fmt_restarts(r: Option<f64>) -> String {
    r.map_or("- (status did not answer)".into(), |r| format!("{r:.0}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// p50, p95 and max of sorted latencies.
fn lat(p: &Phase) -> String {
    let v = &p.status;
    let failed = match &p.first_failure {
        Some((took, why)) => format!("{} failed or over 2 s, the first after {took:?}: {why}", p.failed),
        None => "none failed".into(),
    };
    if v.is_empty() {
        return format!("- (none answered; {failed})");
    }
    format!(
        "p50 {:?}, p95 {:?}, max {:?} ({} calls; {failed})",
        v[v.len() / 2],
        v[(v.len() * 95 / 100).min(v.len() - 1)],
        v[v.len() - 1],
        v.len() + p.failed
    )
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

fn start_agent(socket: &Path) -> Child {
    let agent = Command::new(HOLDEN)
        .args(["agent", "--log-level", "warn", "--socket"])
        .arg(socket)
        .env(MARK_VAR, mark())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_socket(socket);
    agent
}

fn stop_agent(mut agent: Child) {
    let procs = Procs::under(agent.id() as i32);
    kill(agent.id() as i32, libc::SIGTERM);
    let _ = agent.wait();
    procs.finish("holden agent", Duration::from_secs(5));
}

/// A crash-looper's restarts and `holden status` latency, alone and beside a `yes` neighbour.
fn chatty_neighbour(dir: &Path) {
    println!("== chatty neighbour (crash-looper `sh -c 'exit 1'`, backoff 10 ms; neighbour `yes` into its log)");
    let crash = crash_looper("crash", "");
    let h = Holden::start(dir, &crash);
    let alone = phase(&h.socket, &["crash"]);
    h.stop();
    let h = Holden::start(dir, &format!("{crash}[services.chatty]\ncommand = [\"yes\", \"{}\"]\n", mark()));
    let beside = phase(&h.socket, &["crash"]);
    h.stop();
    println!("crash-looper restarts per 5 s, alone:        {}", fmt_restarts(alone.restarts[0]));
    println!("crash-looper restarts per 5 s, beside `yes`: {}", fmt_restarts(beside.restarts[0]));
    println!("crash-looper restarts, beside / alone:       {}", ratio(beside.restarts[0], alone.restarts[0]));
    println!("holden status latency, alone:        {}", lat(&alone));
    println!("holden status latency, beside `yes`: {}", lat(&beside));
}

/// A local crash-looper's restarts and `holden status` latency before and while the agent that
/// runs another crash-looper is SIGSTOPped.
fn stopped_agent(dir: &Path) {
    println!("== stopped agent (a crash-looper through agent a, one local; backoff 10 ms)");
    let agent_sock = dir.join("agent-stop.sock");
    let agent = start_agent(&agent_sock);
    let h = Holden::start(
        dir,
        &format!(
            "[agents.a]\nsocket = \"{}\"\n{}{}",
            agent_sock.display(),
            crash_looper("remote", "agent = \"a\"\n"),
            crash_looper("local", "")
        ),
    );
    let before = phase(&h.socket, &["local", "remote"]);
    kill(agent.id() as i32, libc::SIGSTOP);
    let stopped = phase(&h.socket, &["local", "remote"]);
    kill(agent.id() as i32, libc::SIGCONT);
    let after = phase(&h.socket, &["remote"]);
    h.stop();
    stop_agent(agent);
    println!(
        "local restarts per 5 s, agent running:     {} (through the agent: {})",
        fmt_restarts(before.restarts[0]),
        fmt_restarts(before.restarts[1])
    );
    println!(
        "local restarts per 5 s, agent SIGSTOPped:  {} (through the agent: {})",
        fmt_restarts(stopped.restarts[0]),
        fmt_restarts(stopped.restarts[1])
    );
    println!("local restarts, stopped / running:        {}", ratio(stopped.restarts[0], before.restarts[0]));
    println!("through the agent after SIGCONT, per 5 s: {}", fmt_restarts(after.restarts[0]));
    println!("holden status latency, agent running:    {}", lat(&before));
    println!("holden status latency, agent SIGSTOPped: {}", lat(&stopped));
}

/// 500 waiting services; the configuration then loses 250 and gains 250 and `holden reload`
/// applies it, while a client calls `List` back to back: the gaps between its answers.
fn reload_500(dir: &Path) {
    println!("== reload of 500 services (250 removed, 250 added)");
    let h = Holden::start(dir, &parkers(0..500, ""));
    let deadline = Instant::now() + Duration::from_secs(60);
    while holden_cli::children_of(h.pid()).len() < 500 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    Holden::write_config(&h.dir, &parkers(250..750, ""));

    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (socket, stop) = (h.socket.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut s = UnixStream::connect(&socket).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut rd = std::io::BufReader::new(s.try_clone().unwrap());
            let mut answers = vec![Instant::now()];
            let mut msg = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                s.write_all(b"{\"method\":\"io.holden.Orchestrator.List\"}\0").unwrap();
                msg.clear();
                rd.read_until(0, &mut msg).unwrap();
                let head = &msg[..msg.len().min(64)];
                assert!(
                    head.windows(11).any(|w| w == b"\"services\":"),
                    "List answered {}",
                    String::from_utf8_lossy(head)
                );
                answers.push(Instant::now());
            }
            answers
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let out = Command::new(HOLDEN)
        .args(["reload", "--control-socket"])
        .arg(&h.socket)
        .env("HOLDEN_TIMEOUT", "30")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1).saturating_sub(took).max(Duration::from_millis(200)));
    stop.store(true, Ordering::Relaxed);
    let answers = client.join().unwrap();
    let window = answers[answers.len() - 1] - answers[0];
    // The longest gap, and when it began relative to the reload call.
    let (at, longest) = answers
        .windows(2)
        .map(|w| (w[0], w[1] - w[0]))
        .max_by_key(|(_, gap)| *gap)
        .expect("List answered at least once");
    let from_reload = if at >= t0 { format!("+{:?}", at - t0) } else { format!("-{:?}", t0 - at) };
    // The same client's longest gap in the second before the call: what the machine gives anyway.
    let before = answers.windows(2).filter(|w| w[1] <= t0).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let mut gaps: Vec<Duration> = answers.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();

    // Then until the 250 new ones run.
    let mut running_at = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while running_at.is_none() && Instant::now() < deadline {
        if let (_, Ok(list)) = status_call(&h.socket) {
            if list.len() == 500 && list.iter().all(|s| s["state"] == "running") {
                running_at = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    h.stop();
    // "added: a, b\nremoved: c\nchanged: -" → "added 2, removed 1, changed 0".
    let summary: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| format!("{k} {}", if v == "-" { 0 } else { v.split(", ").count() }))
        .collect();
    println!("holden reload: {took:?}, {} ({})", out.status, summary.join(", "));
    println!(
        "List back to back around the reload: {} answers in {window:?}; gap p50 {:?}, p99 {:?}",
        gaps.len(),
        gaps[gaps.len() / 2],
        gaps[(gaps.len() * 99 / 100).min(gaps.len() - 1)]
    );
    println!(
        "longest gap between List answers (the loop's longest block): {longest:?}, beginning at reload {}",
        from_reload
    );
    println!("longest gap in the second before the reload call (baseline): {before:?}");
    println!(
        "reload → 500 running again (the 250 new ones up): {}",
        running_at.map_or("not within 60 s".into(), |d| format!("{d:?}"))
    );
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
