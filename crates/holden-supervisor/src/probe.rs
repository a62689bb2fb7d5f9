//! One readiness or health probe, run on a short-lived thread of its own so that the event loop
//! never waits on it: an `exec` probe is spawned (through the service's agent, for an agent
//! service) and its exit read through its pidfd; a `tcp` or `http` probe connects from the
//! service's network namespace (the thread enters it through the service's pidfd). Every step
//! has the probe's timeout; a probe that overruns it is killed through its pidfd. The result
//! comes back on a channel, with a byte on a pipe the loop watches.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holden_orchestrator::config::Probe;

/// What a probe needs, taken from the service when it starts.
pub(crate) struct Job {
    pub(crate) service: String,
    /// Which probe of the service this is (a late answer to an older one is ignored).
    pub(crate) seq: u64,
    pub(crate) probe: Probe,
    pub(crate) timeout: Duration,
    /// The service's agent socket: exec probes are spawned there.
    pub(crate) agent: Option<PathBuf>,
    /// The service's process (pidfd, pid), whose network namespace tcp and http probes use.
    pub(crate) netns_of: Option<(OwnedFd, i32)>,
    /// The service's environment additions, directory, user and group, for exec probes.
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) user: Option<String>,
    pub(crate) group: Option<String>,
}

/// A probe's answer.
pub(crate) struct Done {
    pub(crate) service: String,
    pub(crate) seq: u64,
    /// Passed, or why not.
    pub(crate) result: Result<(), Miss>,
}

/// Why a probe did not pass.
#[derive(Debug)]
pub(crate) enum Miss {
    /// It failed: it counts against the service.
    Failed(String),
    /// The service's agent could not be reached to run it (refused, hung, full): the service
    /// is not to blame, so it counts neither way (as an unreachable agent's spawns do).
    NoAnswer(String),
}

/// Local exec probes' pids: the loop's reaper leaves them to the probe's thread.
pub(crate) type ProbePids = Arc<Mutex<HashSet<i32>>>;

/// Starts `job` on a thread; its answer is sent on `tx`, then a byte is written to `wake`.
pub(crate) fn start(
    job: Job,
    tx: Sender<Done>,
    wake: Arc<std::io::PipeWriter>,
    pids: ProbePids,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("holden-probe".into()).stack_size(256 * 1024).spawn(move || {
        let deadline = Instant::now() + job.timeout;
        let result = match &job.probe {
            Probe::Exec(argv) => exec(&job, argv, deadline, &pids, &wake),
            Probe::Tcp(addr) => in_netns(&job, || connect(*addr, deadline).map(drop)).map_err(Miss::Failed),
            Probe::Http { addr, host, path } => {
                in_netns(&job, || http(*addr, host, path, deadline)).map_err(Miss::Failed)
            }
        };
        let _ = tx.send(Done { service: job.service, seq: job.seq, result });
        let _ = holden_sys::event::write_now(wake.as_fd(), b"p");
    })?;
    Ok(())
}

fn left(deadline: Instant) -> Result<Duration, String> {
    deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or_else(|| "timed out".to_string())
}

fn in_netns(job: &Job, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    if let Some((pidfd, pid)) = &job.netns_of {
        // Already there (an agent sharing ours): no setns, which would need CAP_SYS_ADMIN.
        let ns = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
        let same = ns("/proc/thread-self/ns/net").is_some_and(|a| Some(a) == ns(&format!("/proc/{pid}/ns/net")));
        if !same {
            holden_sys::process::enter_net_namespace(pidfd.as_fd(), *pid)
                .map_err(|e| format!("enter the service's network namespace: {e}"))?;
        }
    }
    f()
}

fn connect(addr: SocketAddr, deadline: Instant) -> Result<TcpStream, String> {
    TcpStream::connect_timeout(&addr, left(deadline)?).map_err(|e| format!("connect {addr}: {e}"))
}

/// `GET path` over HTTP/1.1 with `Connection: close`; passes on a 2xx status line.
fn http(addr: SocketAddr, host: &str, path: &str, deadline: Instant) -> Result<(), String> {
    let mut s = connect(addr, deadline)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: holden\r\nConnection: close\r\n\r\n");
    s.set_write_timeout(Some(left(deadline)?)).map_err(|e| e.to_string())?;
    s.write_all(request.as_bytes()).map_err(|e| format!("send to {addr}: {e}"))?;
    // The status line is all that is read: at most 256 bytes.
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < buf.len() {
        s.set_read_timeout(Some(left(deadline)?)).map_err(|e| e.to_string())?;
        match s.read(&mut buf[..256 - head.len()]) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read from {addr}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    match line.split(' ').nth(1) {
        Some(code) if line.starts_with("HTTP/") && code.len() == 3 && code.starts_with('2') => Ok(()),
        Some(code) if line.starts_with("HTTP/") => Err(format!("http {addr}{path}: status {code}")),
        _ => Err(format!("http {addr}{path}: not an HTTP answer: {line:?}")),
    }
}

fn exec(
    job: &Job,
    argv: &[String],
    deadline: Instant,
    pids: &ProbePids,
    wake: &std::io::PipeWriter,
) -> Result<(), Miss> {
    let mut cmd = holden::Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(holden::Stdio::null()).stdout(holden::Stdio::null()).stderr(holden::Stdio::null());
    // A group of its own: at the timeout, what it started (sh -c 'curl ...') goes with it.
    cmd.setsid(true);
    for (k, v) in &job.env {
        cmd.env(k, v);
    }
    if let Some(cwd) = &job.cwd {
        cmd.current_dir(cwd);
    }
    if let Some(u) = &job.user {
        cmd.user(u);
    }
    if let Some(g) = &job.group {
        cmd.group(g);
    }
    let mut child = match &job.agent {
        Some(socket) => {
            let miss = |e: holden::Error| {
                let why = format!("probe through the agent: {e}");
                if crate::spawn::transient(&e) {
                    Miss::NoAnswer(why)
                } else {
                    Miss::Failed(why)
                }
            };
            let mut agent = holden::Agent::connect(socket).map_err(miss)?;
            agent.set_timeout(left(deadline).map_err(Miss::Failed)?);
            cmd.spawn_via(&mut agent).map_err(miss)?
        }
        None => {
            // Held while spawning, so that the loop's reaper cannot take the child first (the
            // reaper only tries the lock: a spawn that hangs never holds the loop up).
            let mut held = pids.lock().unwrap_or_else(|e| e.into_inner());
            let spawned = cmd.spawn();
            if let Ok(child) = &spawned {
                held.insert(child.pid().unwrap_or(0));
            }
            drop(held);
            // The reaper may have met a child while the lock was held: it tries again now.
            let _ = holden_sys::event::write_now(wake.as_fd(), b"s");
            spawned.map_err(|e| Miss::Failed(format!("probe: {e}")))?
        }
    };
    let forget = |child: &holden::Child| {
        if job.agent.is_none() {
            pids.lock().unwrap_or_else(|e| e.into_inner()).remove(&child.pid().unwrap_or(0));
        }
    };
    let ended = left(deadline)
        .and_then(|d| holden_sys::event::poll_readable(child.pidfd(), Some(d)).map_err(|e| e.to_string()));
    if ended != Ok(true) {
        match child.pid() {
            Some(pid) => drop(holden_sys::process::pidfd_send_signal_group(child.pidfd(), pid, libc::SIGKILL)),
            None => drop(child.kill()),
        }
        let _ = child.wait();
        forget(&child);
        return Err(Miss::Failed(format!("{} timed out after {:?}; killed", argv[0], job.timeout)));
    }
    let status = child.wait().map_err(|e| Miss::Failed(format!("probe exit: {e}")));
    forget(&child);
    match status? {
        s if s.success() => Ok(()),
        s => Err(Miss::Failed(format!(
            "{} exited with {}",
            argv[0],
            s.code().map_or_else(|| format!("signal {}", s.signal().unwrap_or(0)), |c| format!("code {c}"))
        ))),
    }
}
