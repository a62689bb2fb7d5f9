//! `holden up`: the supervisor. It reads the configuration, adopts what a crashed predecessor
//! left running, starts the services in dependency order and then keeps them as configured:
//! one thread, one epoll set holding every pidfd, log pipe, control connection and the
//! signalfd, and an epoll timeout set to the earliest deadline (none when idle, so an idle
//! orchestrator never wakes up).
//!
//! The per-service decisions are `holden_orchestrator::machine::next`; this module only
//! carries out its actions and feeds it events.

mod conn;
mod daemon;
mod logs;
mod notify;
mod state;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use daemon::Access;

const HELP: &str = "\
Usage: holden up [-c FILE] [--control-socket PATH] [--socket-mode MODE]
                 [--allow-uid UID]... [--allow-gid GID]...

Runs the supervisor in the foreground: starts the services of FILE (default
/etc/holden/holden.toml) in dependency order, restarts them by their policy, captures their
logs, and serves the control socket that `holden status`, `holden start` and the others use.
State changes are printed on stdout, one line each.

Options:
  -c, --config FILE        the configuration (check it with `holden check -c FILE`)
  --control-socket PATH    the control socket; else $HOLDEN_CONTROL_SOCKET, else the file's
                           [orchestrator] control_socket, else /run/holden/orchestrator.sock
                           (for root) or $XDG_RUNTIME_DIR/holden/orchestrator.sock
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

/// `holden up`'s options.
pub struct Options {
    pub config: PathBuf,
    pub control_socket: Option<PathBuf>,
    pub socket_mode: u32,
    pub access: Access,
}

/// The control socket: the flag, else `$HOLDEN_CONTROL_SOCKET`, else the configuration's,
/// else the default for this user.
pub fn control_socket_path(flag: Option<&Path>, from_config: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.into();
    }
    if let Some(p) = std::env::var_os("HOLDEN_CONTROL_SOCKET").filter(|p| !p.is_empty()) {
        return p.into();
    }
    if let Some(p) = from_config {
        return p.into();
    }
    if holden_sys::fd::geteuid() == 0 {
        return "/run/holden/orchestrator.sock".into();
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("holden-{}", holden_sys::fd::geteuid())));
    runtime.join("holden/orchestrator.sock")
}

/// The state directory (logs, state file): the configuration's, else the default for this user.
pub fn state_dir(from_config: Option<&Path>) -> PathBuf {
    if let Some(p) = from_config {
        return p.into();
    }
    if holden_sys::fd::geteuid() == 0 {
        return "/var/lib/holden".into();
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("holden")
}

fn parse(args: Vec<String>) -> Result<Option<Options>, String> {
    let mut o =
        Options { config: DEFAULT_CONFIG.into(), control_socket: None, socket_mode: 0o660, access: Access::default() };
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
            "-c" | "--config" => o.config = value()?.into(),
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
    Ok(Some(o))
}

pub fn main(args: Vec<String>) -> ExitCode {
    match parse(args) {
        Ok(Some(o)) => daemon::run(o),
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
