//! `holden demo`'s main part: an agent, `holden up` on a built-in configuration, and a live
//! status view until the time is up or Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use holden::Child;
use holden_sys::event::{Epoll, SignalFd, READABLE};

use crate::demo::{agent_launcher, wait_for};

/// Set in the environment of everything the demo starts, so it can prove nothing is left.
const MARKER: &str = "HOLDEN_DEMO";

fn config(dir: &Path, agent: &Path) -> String {
    format!(
        r#"# The demo's built-in configuration.
[orchestrator]
control_socket = "{dir}/orchestrator.sock"
state_dir = "{dir}/state"

[agents.box]
socket = "{agent}"

# Local: spawned by the orchestrator itself.
[services.clock]
command = ["sh", "-c", "while :; do echo tick; sleep 1; done"]
kill_mode = "group"      # stop signals the shell and its sleep

# Through the agent: lives in the agent's namespaces; its output comes back through a pipe.
[services.web]
command = ["sh", "-c", "echo serving as pid $$ on host $(hostname) inside the agent; exec sleep 3600"]
agent = "box"
depends_on = ["clock"]

# Through the agent, and crashes every 2 seconds: watch the backoff grow (500 ms, 1 s, 2 s).
[services.flaky]
command = ["sh", "-c", "echo up; sleep 2; echo giving up >&2; exit 1"]
kill_mode = "group"
agent = "box"
backoff = {{ initial = "500ms", max = "4s", factor = 2.0, reset_after = "10s" }}
start_limit = {{ burst = 50, interval = "60s" }}
"#,
        dir = dir.display(),
        agent = agent.display()
    )
}

struct Cleanup {
    dir: PathBuf,
    procs: Vec<Child>,
    agent_pidfd: Option<std::os::fd::OwnedFd>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // The orchestrator first (it stops its services), then the agent.
        for (i, p) in self.procs.iter_mut().enumerate().rev() {
            if let Ok(None) = p.try_wait() {
                match (&self.agent_pidfd, i) {
                    (Some(fd), 0) => {
                        let _ = holden_sys::process::pidfd_send_signal(fd, libc::SIGTERM);
                    }
                    _ => {
                        let _ = p.signal(libc::SIGTERM);
                    }
                }
                let _ = p.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn run(length: Duration) -> Result<(), String> {
    let e = |e: holden::Error| e.to_string();
    let exe = std::env::current_exe().map_err(|e| format!("find this program: {e}"))?;
    let dir = std::env::temp_dir().join(format!("holden-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut cleanup = Cleanup { dir: dir.clone(), procs: Vec::new(), agent_pidfd: None };
    // Ctrl-C and SIGTERM end the view early; blocked before anything is started.
    let signals = SignalFd::new(&[libc::SIGINT, libc::SIGTERM]).map_err(|e| format!("signalfd: {e}"))?;
    let root = holden_sys::fd::geteuid() == 0;

    println!("== 1. an agent");
    let socket = dir.join("agent.sock");
    let mut launcher = agent_launcher(&exe, &socket, root);
    launcher.env(MARKER, &dir);
    let mut agent = launcher.spawn().map_err(e)?;
    let started = wait_for(&socket, &mut agent);
    cleanup.procs.push(agent);
    started?;
    // Under unshare, the agent is unshare's child: signals go to it, not to unshare.
    let agent_pid = holden::Agent::connect(&socket).and_then(|mut a| a.agent_pid()).map_err(e)?;
    let agent_pidfd = agent_pid.map(holden_sys::process::pidfd_open).transpose().map_err(|e| e.to_string())?;
    cleanup.agent_pidfd = agent_pidfd;

    println!("\n== 2. the orchestrator, on this built-in configuration");
    let cfg_path = dir.join("holden.toml");
    let text = config(&dir, &socket);
    std::fs::write(&cfg_path, &text).map_err(|e| format!("write {}: {e}", cfg_path.display()))?;
    for l in text.lines().filter(|l| !l.starts_with("# The demo")) {
        println!("    {l}");
    }
    let out_path = dir.join("up.out");
    let out = std::fs::File::create(&out_path).map_err(|e| format!("create {}: {e}", out_path.display()))?;
    let control = dir.join("orchestrator.sock");
    let mut up = holden::Command::new(&exe);
    up.args(["up", "-c"]).arg(&cfg_path).env(MARKER, &dir).env_remove("NOTIFY_SOCKET");
    up.stdin(holden::Stdio::Null).stdout(out.try_clone().map_err(|e| e.to_string())?).stderr(out);
    let up_proc = up.spawn().map_err(e)?;
    cleanup.procs.push(up_proc);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&control).is_err() {
        if Instant::now() > deadline {
            return Err(format!("holden up did not start:\n{}", read(&out_path)));
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    println!("\n== 3. live status ({} s, or Ctrl-C); the same view as `holden status`", length.as_secs());
    // The services' first moments, then a frame every second (every 4 s when piped), the
    // last one at `length`, whether stdout is a terminal or not.
    let warmup = Duration::from_secs(3).min(length);
    std::thread::sleep(warmup);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut epoll = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    epoll.add(&signals, 0, READABLE).map_err(|e| format!("epoll: {e}"))?;
    let start = Instant::now();
    let every = if tty { Duration::from_secs(1) } else { Duration::from_secs(4) };
    let mut events = Vec::new();
    let mut interrupted = false;
    loop {
        let list = crate::ctl::list(&control)?;
        if tty {
            print!("\x1b[H\x1b[2J");
        }
        println!(
            "-- {:>4.1} s -- {} (host services) / agent in its own namespaces --",
            (start.elapsed() + warmup).as_secs_f64(),
            control.display()
        );
        print!("{}", crate::ctl::table(&list));
        println!("recent events:");
        let up_text = read(&out_path);
        for l in up_text.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev() {
            println!("  {l}");
        }
        let left = length.saturating_sub(start.elapsed() + warmup);
        if left < Duration::from_millis(50) {
            break;
        }
        events.clear();
        epoll.wait(Some(every.min(left)), &mut events).map_err(|e| format!("epoll_wait: {e}"))?;
        if !events.is_empty() {
            let _ = signals.read();
            interrupted = true;
            break;
        }
    }
    let web_log = std::fs::read_to_string(dir.join("state/logs/web.log")).unwrap_or_default();
    println!("\nweb's captured log (written inside the agent, timestamped by the orchestrator):");
    for l in web_log.lines().take(2) {
        println!("  {l}");
    }

    println!("\n== 4. shut down{}", if interrupted { " (interrupted)" } else { "" });
    let mut up_proc = cleanup.procs.pop().expect("started above");
    up_proc.signal(libc::SIGTERM).map_err(e)?;
    let status = up_proc.wait().map_err(e)?;
    for l in read(&out_path).lines().skip_while(|l| !l.contains("stopping every service")) {
        println!("  {l}");
    }
    println!("holden up ended with {status}");
    let mut agent = cleanup.procs.pop().expect("started above");
    match cleanup.agent_pidfd.take() {
        Some(fd) => holden_sys::process::pidfd_send_signal(&fd, libc::SIGTERM).map_err(|e| e.to_string())?,
        None => agent.signal(libc::SIGTERM).map_err(e)?,
    }
    agent.wait().map_err(e)?;
    let left = holden_cli::processes_with_env(MARKER, &dir.to_string_lossy());
    println!(
        "agent stopped; sockets removed: {}; processes left: {}",
        !socket.exists() && !control.exists(),
        if left.is_empty() { "none".into() } else { format!("{left:?}") }
    );
    if !left.is_empty() {
        return Err("processes were left behind".into());
    }
    Ok(())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
