//! `holden exec`: run a command inside the agent's container with the caller's own stdio.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use holden_sys::event::{Epoll, Event, SignalFd, READABLE};

/// Exit codes of `holden exec` itself.
const FAILED: u8 = 125;
const CANNOT_RUN: u8 = 126;
const NOT_FOUND: u8 = 127;

struct Args {
    agent: Option<PathBuf>,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    argv: Vec<String>,
}

/// Runs `holden exec` with the options clap read (a usage error exits 125, as podman's).
pub fn main(agent: Option<PathBuf>, env: Vec<String>, cwd: Option<String>, argv: Vec<String>) -> ExitCode {
    let mut a = Args { agent, env: Vec::new(), cwd, argv };
    for kv in env {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => a.env.push((k.into(), v.into())),
            _ => {
                eprintln!("holden exec: --env: {kv:?} is not KEY=VALUE");
                return ExitCode::from(FAILED);
            }
        }
    }
    match run(a) {
        Ok(code) => ExitCode::from(code),
        Err((code, msg)) => {
            eprintln!("holden exec: {msg}");
            ExitCode::from(code)
        }
    }
}

const FORWARDED: [i32; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM];

fn run(a: Args) -> Result<u8, (u8, String)> {
    // Take the signals before the child exists, so none is lost in between.
    let signals = SignalFd::new(&FORWARDED).map_err(|e| (FAILED, format!("signalfd: {e}")))?;
    let path = a.agent.unwrap_or_else(holden::Agent::default_path);
    let mut agent = holden::Agent::connect(&path).map_err(|e| (FAILED, e.to_string()))?;
    let mut cmd = holden::Command::new(&a.argv[0]);
    cmd.args(&a.argv[1..])
        .envs(a.env)
        .stdin(holden::Stdio::Inherit)
        .stdout(holden::Stdio::Inherit)
        .stderr(holden::Stdio::Inherit);
    if let Some(cwd) = a.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn_via(&mut agent).map_err(|e| {
        let code = match &e {
            holden::Error::Agent(holden::AgentError::ExecFailed { errno: 2, .. }) => NOT_FOUND,
            holden::Error::Agent(holden::AgentError::ExecFailed { .. } | holden::AgentError::SpawnFailed { .. }) => {
                CANNOT_RUN
            }
            _ => FAILED,
        };
        (code, e.to_string())
    })?;
    let io = |e: std::io::Error| (FAILED, format!("wait for the command: {e}"));
    let mut epoll = Epoll::new().map_err(io)?;
    epoll.add(child.as_fd(), 0, READABLE).map_err(io)?;
    epoll.add(&signals, 1, READABLE).map_err(io)?;
    let mut events: Vec<Event> = Vec::new();
    loop {
        events.clear();
        epoll.wait(None, &mut events).map_err(io)?;
        if events.iter().any(|e| e.token == 1) {
            while let Some(sig) = signals.read().map_err(io)? {
                // ESRCH: it is already gone; its status follows.
                let _ = child.signal(sig);
            }
        }
        if events.iter().any(|e| e.token == 0) {
            let status = child.wait().map_err(|e| (FAILED, e.to_string()))?;
            return Ok(status.shell_code().clamp(0, 255) as u8);
        }
    }
}
