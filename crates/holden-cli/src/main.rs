//! `holden`: the command-line front of Holden. One file per subcommand; this one only
//! dispatches.
#![forbid(unsafe_code)]

mod demo;
mod exec;
mod query;

use std::process::ExitCode;

const HELP: &str = "\
holden: process lifecycles across container boundaries, through pidfds

Usage: holden <COMMAND> [ARGS]

Commands:
  demo     run a demonstration: an agent in its own namespaces, and a client that spawns,
           signals and reaps through it (about 10 seconds)
  exec     run a command through an agent, like `podman exec` (see `holden exec --help`)
  ping     check that an agent answers        [--agent PATH]
  info     print an agent's version and kernel features   [--agent PATH]
  agent    run an agent (the same program as holden-agent; see `holden agent --help`)

The agent socket is --agent PATH, else $HOLDEN_SOCKET_PATH, else /run/holden/agent.sock.

Exit status: 0 on success, 1 when the command failed, 2 on a usage error; `holden exec` exits
with the command's own status (see `holden exec --help`).
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(cmd) = args.next() else {
        eprint!("{HELP}");
        return ExitCode::from(2);
    };
    let rest: Vec<String> = args.collect();
    match cmd.as_str() {
        "demo" => demo::main(rest),
        "exec" => exec::main(rest),
        "ping" | "info" => query::main(&cmd, rest),
        "agent" => holden_agent::main_with_args(rest),
        "-h" | "--help" | "help" => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        "-V" | "--version" => {
            println!("holden {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("holden: unknown command {other:?} (see holden --help)");
            ExitCode::from(2)
        }
    }
}

/// Reads `--agent PATH` / `--agent=PATH` at `args[*i]`, advancing `i`.
pub(crate) fn agent_flag(args: &[String], i: &mut usize) -> Result<Option<std::path::PathBuf>, String> {
    let a = &args[*i];
    if let Some(v) = a.strip_prefix("--agent=") {
        return Ok(Some(v.into()));
    }
    if a == "--agent" {
        *i += 1;
        return args.get(*i).map(|v| Some(v.into())).ok_or_else(|| "--agent needs a path".to_string());
    }
    Ok(None)
}
