//! `holden-agent`: Holden's stateless spawner, as a library so that the `holden` command can
//! run the very same agent (`holden agent`); the `holden-agent` binary is a one-line `main`.
//!
//! It runs inside a container (or anywhere), listens on a Unix socket, spawns what allowed
//! callers ask for with a race-free pidfd, sends the pidfd back and forgets the process. It
//! reaps every child, orphans included, and keeps per-process state only for a caller that asked
//! to be told the exit status on its open connection.
//!
//! It deliberately does not supervise, restart, log output, or track anything across
//! connections: all of that belongs to the caller, which holds the pidfds.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod args;
mod conn;
pub mod listen;
mod log;
mod server;
mod spawner;

pub use args::DEFAULT_SOCKET;

use std::os::unix::net::UnixListener;
use std::process::ExitCode;

use holden_proto::{Features, GetInfoReply};
use holden_sys::{fd, process, socket};

use log::Level;

/// Runs the agent with command-line `args` (without the program name) until SIGTERM/SIGINT.
/// Returns the process exit status: 0 after a signal, 1 on a runtime error, 2 on a usage error.
pub fn main_with_args(args: impl IntoIterator<Item = String>) -> ExitCode {
    let parsed = args::parse(args, std::env::var("HOLDEN_SOCKET_PATH").ok());
    let opts = match parsed {
        Ok(args::Parsed::Run(o)) => o,
        Ok(args::Parsed::Help) => {
            print!("{}", args::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(args::Parsed::Version) => {
            println!("holden-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("holden-agent: {e}");
            return ExitCode::from(2);
        }
    };
    log::set_max(opts.log_level);
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::log(Level::Error, format_args!("{e}"));
            ExitCode::FAILURE
        }
    }
}

fn run(opts: args::Options) -> Result<(), String> {
    // Whatever a launcher leaked to us must not reach children.
    let activated = socket::take_listen_fds();
    fd::set_cloexec_from(3).map_err(|e| format!("mark inherited descriptors close-on-exec: {e}"))?;

    // Many connections need many descriptors; children get the limit we started with.
    let nofile = process::rlimit_resource("nofile").expect("nofile is a resource");
    let child_limits: Vec<process::Rlimit> =
        fd::raise_nofile().map(|(soft, hard)| process::Rlimit { resource: nofile, soft, hard }).into_iter().collect();

    let f = process::probe_features();
    if !f.clone_pidfd {
        return Err("clone(CLONE_PIDFD) is not available: Linux 5.2 or later is needed".into());
    }
    let features = Features {
        clone3: f.clone3,
        clone_pidfd: f.clone_pidfd,
        close_range: f.close_range,
        pidfd_info_exit: f.pidfd_info_exit,
        pidfs: f.pidfs,
        pidfd_signal_group: f.pidfd_signal_group,
    };
    let info = GetInfoReply { version: env!("CARGO_PKG_VERSION").into(), pid: std::process::id() as i32, features };

    // Signals are blocked before the socket listens: from the first connection on, SIGTERM is a
    // clean stop that removes the socket, never the default action.
    let signals = server::Server::signals().map_err(|e| format!("signalfd: {e}"))?;
    let listening = match activated.into_iter().next() {
        Some(fd) => {
            log::log(Level::Info, format_args!("using the socket passed by the service manager"));
            listen::Listening { listener: UnixListener::from(fd), owned_path: None }
        }
        None => {
            let gid = opts.socket_group.as_deref().map(listen::group_id).transpose().map_err(|e| e.to_string())?;
            listen::bind(&opts.socket, opts.socket_mode, gid).map_err(|e| e.to_string())?
        }
    };
    let spawner = spawner::Spawner::new(child_limits).map_err(|e| format!("open /dev/null: {e}"))?;
    let policy = server::Policy {
        own_uid: fd::geteuid(),
        allow_uids: opts.allow_uids,
        allow_gids: opts.allow_gids,
        as_agent_uids: opts.as_agent_uids,
        max_connections: opts.max_connections,
        message_timeout: opts.message_timeout,
    };
    let listener = listening.listener.try_clone().map_err(|e| format!("listener: {e}"))?;
    let mut server =
        server::Server::new(listener, signals, spawner, policy, info).map_err(|e| format!("set up event loop: {e}"))?;
    log::log(
        Level::Info,
        format_args!(
            "listening on {} (pid {}, clone3 {}, pidfd_info_exit {})",
            listening.owned_path.as_deref().map_or("the activated socket".into(), |p| p.display().to_string()),
            std::process::id(),
            features.clone3,
            features.pidfd_info_exit
        ),
    );
    let server::Stop::Signal(sig) = server.run().map_err(|e| format!("event loop: {e}"))?;
    log::log(Level::Info, format_args!("signal {sig}: shutting down"));
    drop(listening);
    Ok(())
}
