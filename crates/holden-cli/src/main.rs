//! `holden`: the command-line front of Holden. One file per subcommand; this one only
//! dispatches.
#![forbid(unsafe_code)]

mod ctl;
mod demo;
mod demo_up;
mod exec;
mod query;
mod up;

use std::process::ExitCode;

const HELP: &str = "\
holden: process lifecycles across container boundaries, through pidfds

Usage: holden <COMMAND> [ARGS]

Commands:
  demo     run a demonstration (about 20 seconds): an agent in its own namespaces and the
           orchestrator supervising services through it, with a live status view
  up       run the supervisor in the foreground       [-c FILE]
  status   list services and their state              [--json] [--watch] [NAME]...
  top      a live, full-screen view with logs; keys: s x r K l / ? q
  start    start services                             NAME...
  stop     stop services                              NAME...
  restart  restart services                           NAME...
  kill     signal a service                           [-s SIGNAL] NAME
  logs     print captured logs, of all by default     [-f] [-n N] [--since WHEN] [NAME]...
  events   print state changes as they happen         [--json]
  reload   apply the configuration file again
  check    validate a configuration file              [-c FILE]
  exec     run a command through an agent, like `podman exec` (see `holden exec --help`)
  ping     check that an agent answers                [--agent PATH]
  info     print an agent's version and kernel features   [--agent PATH]
  agent    run an agent (the same program as holden-agent; see `holden agent --help`)

Each command has --help. The agent socket is --agent PATH, else $HOLDEN_SOCKET_PATH, else
/run/holden/agent.sock. The orchestrator's control socket is --control-socket PATH, else
$HOLDEN_CONTROL_SOCKET, else the configuration's (-c FILE, else $HOLDEN_CONFIG, else
./holden.toml, else /etc/holden/holden.toml), else /run/holden/orchestrator.sock (root) or
$XDG_RUNTIME_DIR/holden/orchestrator.sock.

Exit status: 0 on success, 1 when the command failed, 2 on a usage error, 3 when the
orchestrator does not answer or goes away (status, top, start, stop, restart, kill, logs,
events, reload);
`holden exec` exits with the command's own status (see `holden exec --help`).
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
        "up" => up::main(rest),
        "check" => ctl::check(rest),
        "status" | "start" | "stop" | "restart" | "kill" | "logs" | "events" | "reload" | "top" => {
            ctl::main(&cmd, rest)
        }
        "ping" | "info" => query::main(&cmd, rest),
        "agent" => holden_agent::main_with_args(rest),
        // The log-pipe holder `holden up` starts for itself (not for direct use).
        "fdholder" => match rest.as_slice() {
            [socket] => match holden_supervisor::holder::serve(std::path::Path::new(socket)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("holden fdholder: {e}");
                    ExitCode::from(1)
                }
            },
            _ => {
                eprintln!("holden fdholder: usage: holden fdholder SOCKET (started by holden up)");
                ExitCode::from(2)
            }
        },
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
