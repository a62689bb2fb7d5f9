//! `holden demo`: the orchestrator on a built-in configuration, with services inside an agent
//! that runs in its own namespaces (when root), shown as a live status view for about 20
//! seconds; `holden demo --agent` is the shorter tour of the agent alone.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use holden::{Agent, Child, Command, Stdio};
use holden_cli::children_of;

fn step(title: &str) {
    println!("\n== {title}");
}

fn ns_id(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map_or_else(|_| "?".into(), |l| l.to_string_lossy().into_owned())
}

/// Everything the demo started, stopped and checked on drop, even on an error path.
struct Demo {
    dir: PathBuf,
    agent_proc: Option<Child>,
    agent_host_pid: Option<i32>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(pid) = self.agent_host_pid {
            if let Ok(fd) = holden_sys::process::pidfd_open(pid) {
                let _ = holden_sys::process::pidfd_send_signal(&fd, 15);
            }
        }
        if let Some(mut p) = self.agent_proc.take() {
            let _ = p.signal(15);
            let _ = p.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the demonstration for `seconds`, or the agent's tour with `agent_only`.
pub fn main(seconds: u64, agent_only: bool) -> ExitCode {
    let result = if agent_only { run() } else { crate::demo_up::run(Duration::from_secs(seconds)) };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holden demo: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn wait_for(path: &Path, proc: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if Agent::connect(path).is_ok() {
            return Ok(());
        }
        if let Ok(Some(s)) = proc.try_wait() {
            return Err(format!("the agent exited early ({s})"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err("the agent did not start listening within 10 s".into())
}

/// `holden agent` on `socket`, under `unshare` with new namespaces when root.
pub(crate) fn agent_launcher(exe: &Path, socket: &Path, root: bool) -> Command {
    let mut launcher = if root {
        println!("running as root: the agent gets new pid, mount, uts, ipc and net namespaces (unshare)");
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "--kill-child=SIGTERM"]);
        c.arg(exe);
        c
    } else {
        println!("not root: the agent runs in this process's namespaces");
        Command::new(exe)
    };
    launcher.args(["agent", "--log-level", "warn", "--socket"]).arg(socket).stdin(Stdio::Null);
    launcher
}

fn read_pipe(r: std::io::PipeReader) -> String {
    let mut s = String::new();
    let _ = std::fs::File::from(std::os::fd::OwnedFd::from(r)).read_to_string(&mut s);
    s
}

fn run() -> Result<(), String> {
    let e = |e: holden::Error| e.to_string();
    let exe = std::env::current_exe().map_err(|e| format!("find this program: {e}"))?;
    let dir = std::env::temp_dir().join(format!("holden-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let socket = dir.join("agent.sock");
    let mut demo = Demo { dir, agent_proc: None, agent_host_pid: None };
    let root = holden_sys::fd::geteuid() == 0;

    step("1. start an agent");
    let mut launcher = agent_launcher(&exe, &socket, root);
    let mut proc = launcher.spawn().map_err(e)?;
    let started = wait_for(&socket, &mut proc);
    demo.agent_proc = Some(proc);
    started?;
    let mut agent = Agent::connect(&socket).map_err(e)?;
    let info = agent.info().map_err(e)?;
    let agent_pid = agent.agent_pid().map_err(e)?.ok_or("the agent's pid is not visible")?;
    demo.agent_host_pid = Some(agent_pid);
    println!(
        "agent {} on {}: pid {agent_pid} here, pid {} in its own namespace",
        info.version,
        socket.display(),
        info.pid
    );
    let f = info.features;
    println!(
        "kernel features it found: clone3 {}, CLONE_PIDFD {}, close_range {}, PIDFD_INFO_EXIT {}, \
         pidfs {}, PIDFD_SIGNAL_PROCESS_GROUP {}",
        f.clone3, f.clone_pidfd, f.close_range, f.pidfd_info_exit, f.pidfs, f.pidfd_signal_group
    );

    step("2. spawn a long-running process through the agent");
    let mut sleeper = Command::new("sleep").arg("60").spawn_via(&mut agent).map_err(e)?;
    let host_pid = sleeper.pid().ok_or("the child's pid is not visible here")?;
    println!(
        "sleep 60: pid {host_pid} here (from the pidfd's fdinfo), pid {} as the agent sees it",
        sleeper.spawner_pid()
    );
    println!("{:<6} {:<28} {:<28} this client", "ns", "the child", "the agent");
    for kind in ["pid", "mnt", "uts", "ipc", "net"] {
        let (c, a, me) = (ns_id(&host_pid.to_string(), kind), ns_id(&agent_pid.to_string(), kind), ns_id("self", kind));
        println!("{kind:<6} {c:<28} {a:<28} {me}");
    }

    step("3. output through a pipe the client passed, and the exit status");
    let (r, w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo \"hello from pid $$ in the agent's namespaces\"; exit 3"])
        .stdout(std::os::fd::OwnedFd::from(w));
    let mut talker = cmd.spawn_via(&mut agent).map_err(e)?;
    drop(cmd);
    print!("child wrote: {}", read_pipe(r));
    println!("child ended with {}", talker.wait().map_err(e)?);

    step("4. signal through the pidfd, then reap");
    sleeper.signal(15).map_err(e)?;
    println!("sent SIGTERM to pid {host_pid}; it ended with {}", sleeper.wait().map_err(e)?);

    step("5. a missing program is an error before anything is started");
    match Command::new("holden-no-such-program").spawn_via(&mut agent) {
        Err(err) => println!("{err}"),
        Ok(_) => return Err("a missing program was started".into()),
    }

    step("6. spawn round trip: through the agent vs in this process (500 runs of /bin/true each)");
    let time = |via_agent: bool, agent: &mut Agent| -> Result<Duration, String> {
        let mut total = Duration::ZERO;
        for _ in 0..500 {
            let mut c = Command::new("/bin/true");
            let t = Instant::now();
            let mut child = if via_agent { c.spawn_via(agent) } else { c.spawn() }.map_err(e)?;
            total += t.elapsed();
            child.wait().map_err(e)?;
        }
        Ok(total / 500)
    };
    let remote = time(true, &mut agent)?;
    let local = time(false, &mut agent)?;
    println!("through the agent: {remote:?} per spawn; in-process clone+pidfd: {local:?} per spawn");

    step("7. stop the agent and check that nothing is left");
    let pidfd = holden_sys::process::pidfd_open(agent_pid).map_err(|e| format!("pidfd_open agent: {e}"))?;
    holden_sys::process::pidfd_send_signal(&pidfd, 15).map_err(|e| format!("signal agent: {e}"))?;
    demo.agent_host_pid = None;
    let mut proc = demo.agent_proc.take().expect("started above");
    let status = proc.wait().map_err(e)?;
    println!("agent stopped ({status}); socket removed: {}", !socket.exists());
    let leftovers = children_of(agent_pid);
    println!(
        "processes left by the agent: {}",
        if leftovers.is_empty() { "none".into() } else { format!("{leftovers:?}") }
    );
    Ok(())
}
