//! `holden exec`: run a command inside the agent's container with the caller's own stdio.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use holden_sys::event::{Epoll, Event, SignalFd, READABLE};

const HELP: &str = "\
Usage: holden exec [--agent PATH] [--env KEY=VALUE]... [--cwd DIR] [--] COMMAND [ARGS]...

Runs COMMAND through the agent, so it lives in the agent's namespaces, cgroup and security
context, with this process's own stdin, stdout and stderr (no relay). SIGINT, SIGTERM, SIGHUP
and SIGQUIT are forwarded to it through its pidfd.

Exit status (as podman exec and docker exec):
  the command's own exit code, or 128 + N if signal N killed it
  125  holden exec itself failed: agent unreachable, permission denied, bad arguments
  126  the command was found but could not be run (not executable, bad --cwd, ...)
  127  the command was not found
";

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

enum Parsed {
    Run(Args),
    Help,
}

fn parse(args: Vec<String>) -> Result<Parsed, String> {
    let mut a = Args { agent: None, env: Vec::new(), cwd: None, argv: Vec::new() };
    let mut i = 0;
    while i < args.len() {
        if let Some(p) = crate::agent_flag(&args, &mut i)? {
            a.agent = Some(p);
            i += 1;
            continue;
        }
        let arg = &args[i];
        let mut value = |flag: &str| -> Result<String, String> {
            if let Some(v) = arg.strip_prefix(&format!("{flag}=")) {
                return Ok(v.to_owned());
            }
            i += 1;
            args.get(i).cloned().ok_or_else(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--" => {
                a.argv = args[i + 1..].to_vec();
                break;
            }
            s if s == "--env" || s.starts_with("--env=") || s == "-e" => {
                let kv = value(if s == "-e" { "-e" } else { "--env" })?;
                match kv.split_once('=') {
                    Some((k, v)) if !k.is_empty() => a.env.push((k.into(), v.into())),
                    _ => return Err(format!("--env: {kv:?} is not KEY=VALUE")),
                }
            }
            s if s == "--cwd" || s.starts_with("--cwd=") => a.cwd = Some(value("--cwd")?),
            s if s.starts_with('-') => return Err(format!("unknown option {s:?} (put the command after --)")),
            _ => {
                a.argv = args[i..].to_vec();
                break;
            }
        }
        i += 1;
    }
    if a.argv.is_empty() {
        return Err("no command given".into());
    }
    Ok(Parsed::Run(a))
}

pub fn main(args: Vec<String>) -> ExitCode {
    let a = match parse(args) {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("holden exec: {e}");
            return ExitCode::from(FAILED);
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_options_then_command() {
        let Parsed::Run(a) =
            parse(argv(&["--agent", "/s", "--env", "A=1", "-e", "B=2", "--cwd=/tmp", "--", "ls", "-l"])).unwrap()
        else {
            panic!()
        };
        assert_eq!(a.agent, Some(PathBuf::from("/s")));
        assert_eq!(a.env, vec![("A".into(), "1".into()), ("B".into(), "2".into())]);
        assert_eq!(a.cwd.as_deref(), Some("/tmp"));
        assert_eq!(a.argv, argv(&["ls", "-l"]));
        let Parsed::Run(a) = parse(argv(&["echo", "--env", "x"])).unwrap() else { panic!() };
        assert_eq!(a.argv, argv(&["echo", "--env", "x"]), "options end at the command");
    }

    #[test]
    fn rejects_bad_usage() {
        assert!(parse(argv(&[])).is_err());
        assert!(parse(argv(&["--"])).is_err());
        assert!(parse(argv(&["--env", "NOEQUALS", "ls"])).is_err());
        assert!(parse(argv(&["--bogus", "ls"])).is_err());
        assert!(parse(argv(&["--agent"])).is_err());
    }
}
