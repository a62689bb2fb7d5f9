//! `holden up`: the supervisor. It reads the configuration, adopts what a crashed predecessor
//! left running, starts the services in dependency order and then keeps them as configured:
//! one thread, one epoll set holding every pidfd, log pipe, control connection and the
//! signalfd, and an epoll timeout set to the earliest deadline (none when idle, so an idle
//! orchestrator never wakes up).
//!
//! This file is only the command line; the supervisor is the `holden-supervisor` crate.

use std::process::ExitCode;

use holden_supervisor::{Access, Options};

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

/// Runs `holden up` with the options clap read.
pub fn main(
    config: Option<std::path::PathBuf>,
    control_socket: Option<std::path::PathBuf>,
    socket_mode: &str,
    allow_uid: Vec<u32>,
    allow_gid: Vec<u32>,
) -> ExitCode {
    let Some(mode) = u32::from_str_radix(socket_mode, 8).ok().filter(|m| *m <= 0o777) else {
        eprintln!("holden up: --socket-mode: {socket_mode:?} is not an octal mode (see holden up --help)");
        return ExitCode::from(2);
    };
    let o = Options {
        config: find_config(config.as_deref(), true).map(|c| c.0).unwrap_or_else(|| DEFAULT_CONFIG.into()),
        control_socket,
        socket_mode: mode,
        access: Access { uids: allow_uid, gids: allow_gid },
        holder: std::env::current_exe().ok().map(|exe| vec![exe.into_os_string(), "fdholder".into()]),
    };
    match holden_supervisor::run(o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holden up: {e}");
            ExitCode::from(1)
        }
    }
}
