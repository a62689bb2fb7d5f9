//! `holden up`: the supervisor. It reads the configuration, adopts what a crashed predecessor
//! left running, starts the services in dependency order and then keeps them as configured:
//! one thread, one epoll set holding every pidfd, log pipe, control connection and the
//! signalfd, and an epoll timeout set to the earliest deadline (none when idle, so an idle
//! orchestrator never wakes up).
//!
//! This file is only the command line; the supervisor is the `holden-supervisor` crate.

use std::process::ExitCode;

use holden_supervisor::{Access, Options};

const HELP: &str = "\
Usage: holden up [-c FILE] [--control-socket PATH] [--socket-mode MODE]
                 [--allow-uid UID]... [--allow-gid GID]...

Runs the supervisor in the foreground: starts the services of FILE (default: $HOLDEN_CONFIG,
else ./holden.toml if there is one, else /etc/holden/holden.toml) in dependency order, restarts them by their policy, captures their
logs, and serves the control socket that `holden status`, `holden start` and the others use.
State changes are printed on stdout, one line each.

Options:
  -c, --config FILE        the configuration (check it with `holden check -c FILE`)
  --control-socket PATH    the control socket; else $HOLDEN_CONTROL_SOCKET, else the file's
                           [orchestrator] control_socket, else /run/holden/orchestrator.sock
                           (for root) or $XDG_RUNTIME_DIR/holden/orchestrator.sock
                           ($TMPDIR/holden-UID/holden/orchestrator.sock without it)
  --socket-mode MODE       the control socket's mode, octal (default 0660)
  --allow-uid UID          besides root and the orchestrator's own uid, who may start, stop,
  --allow-gid GID          kill, reload and read logs (repeatable); anyone who can connect
                           may list services and follow events

Signals: SIGTERM or SIGINT stop every service in reverse dependency order, then exit 0 (a
second one sends SIGKILL to what is left); SIGHUP reloads the configuration.

If the orchestrator is killed, the services keep running; started again with the same state
directory, it adopts them (matching pid and process identity) instead of starting duplicates.

Exit status: 0 after a clean shutdown, 1 when it cannot start (bad configuration, socket in
use), 2 on a usage error.
";

/// The default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/holden/holden.toml";

/// The configuration file to use, and how it was found: `-c FILE`, else `$HOLDEN_CONFIG`, else
/// `./holden.toml` if there is one, else `/etc/holden/holden.toml`. `None` when none was named
/// and neither of the files exists (`need` asks for the last anyway: `holden up` must have one).
pub fn find_config(explicit: Option<&std::path::Path>, need: bool) -> Option<(std::path::PathBuf, &'static str)> {
    if let Some(p) = explicit {
        return Some((p.into(), "-c"));
    }
    if let Some(p) = std::env::var_os("HOLDEN_CONFIG").filter(|p| !p.is_empty()) {
        return Some((p.into(), "$HOLDEN_CONFIG"));
    }
    let here = std::path::Path::new("holden.toml");
    if here.is_file() {
        return Some((here.into(), "./holden.toml"));
    }
    let etc = std::path::Path::new(DEFAULT_CONFIG);
    (need || etc.is_file()).then(|| (etc.into(), DEFAULT_CONFIG))
}

fn parse(args: Vec<String>) -> Result<Option<Options>, String> {
    let holder = std::env::current_exe().ok().map(|exe| vec![exe.into_os_string(), "fdholder".into()]);
    let mut config = None;
    let mut o = Options {
        config: DEFAULT_CONFIG.into(),
        control_socket: None,
        socket_mode: 0o660,
        access: Access::default(),
        holder,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = || -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            args.get(i).cloned().ok_or_else(|| format!("{flag} needs a value"))
        };
        let id = |v: String, what: &str| v.parse::<u32>().map_err(|_| format!("{what}: {v:?} is not a number"));
        match flag {
            "-h" | "--help" => return Ok(None),
            "-c" | "--config" => config = Some(std::path::PathBuf::from(value()?)),
            "--control-socket" => o.control_socket = Some(value()?.into()),
            "--socket-mode" => {
                let v = value()?;
                o.socket_mode = u32::from_str_radix(&v, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| format!("--socket-mode: {v:?} is not an octal mode"))?;
            }
            "--allow-uid" => o.access.uids.push(id(value()?, "--allow-uid")?),
            "--allow-gid" => o.access.gids.push(id(value()?, "--allow-gid")?),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
        i += 1;
    }
    o.config = find_config(config.as_deref(), true).map(|c| c.0).unwrap_or_else(|| DEFAULT_CONFIG.into());
    Ok(Some(o))
}

pub fn main(args: Vec<String>) -> ExitCode {
    match parse(args) {
        Ok(Some(o)) => match holden_supervisor::run(o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("holden up: {e}");
                ExitCode::from(1)
            }
        },
        Ok(None) => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("holden up: {e} (see holden up --help)");
            ExitCode::from(2)
        }
    }
}
