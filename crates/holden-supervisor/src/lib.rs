//! `holden-supervisor`: the runtime of `holden up`, the I/O around the pure
//! `holden-orchestrator` core. It reads the configuration, adopts what a crashed predecessor
//! left running, starts the services in dependency order and keeps them as configured.
//!
//! One thread, one epoll set ([`supervisor`]): every pidfd, log pipe, control connection, agent
//! call in flight and the signalfd, with the epoll timeout set to the earliest deadline (none
//! when idle, so an idle supervisor never wakes up). Nothing in the loop waits on anything
//! slow: a spawn through an agent is a call in flight with a deadline ([`spawn`]), a chatty
//! pipe gets one read per iteration ([`logs`]), a failed state write is retried ([`state`]).
//!
//! Modules, one job each: [`supervisor`] the loop and the glue to the state machine,
//! [`spawn`] local and agent spawns, [`control`] the control socket, `adopt` adoption and
//! the sweep of strays, `reload`, [`state`] the state file, [`logs`], [`holder`] the process
//! that keeps log pipes open across a crash, [`notify`] `sd_notify`, [`procfs`] and [`text`];
//! `ready` and `probe` readiness and health, `deps` dependency conditions, `cgroups`.
//!
//! What it deliberately does not do: decide. Every per-service decision is
//! `holden_orchestrator::machine::next`; reload and shutdown order are pure functions of
//! `holden_orchestrator::plan`. Argument parsing and output formats are the CLI's.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod adopt;
mod cgroups;
mod conn;
pub mod control;
mod deps;
mod drive;
mod exits;
pub mod holder;
pub mod logs;
pub mod notify;
mod probe;
pub mod procfs;
mod ready;
mod reload;
pub mod spawn;
pub mod state;
pub mod supervisor;
mod svc;
pub mod text;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use holden_sys::socket::PeerCred;

/// How `holden up` is run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration file.
    pub config: PathBuf,
    /// The control socket, if given on the command line.
    pub control_socket: Option<PathBuf>,
    /// The control socket's mode.
    pub socket_mode: u32,
    /// Who may change things.
    pub access: Access,
    /// The command that runs the log-pipe holder (the socket path is appended), e.g.
    /// `[holden, fdholder]`. `None`: no holder, so logs of adopted services are re-opened
    /// through `/proc` and a service that writes while no supervisor runs gets SIGPIPE.
    pub holder: Option<Vec<OsString>>,
}

/// Who may call the control methods that change something or read logs: root, the
/// supervisor's own uid, and these.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Allowed uids.
    pub uids: Vec<u32>,
    /// Allowed gids (primary or supplementary).
    pub gids: Vec<u32>,
}

impl Access {
    /// Whether the peer may.
    pub fn allows(&self, c: &PeerCred) -> bool {
        holden_proto::peer_allowed(c.uid, c.gid, &c.groups, holden_sys::fd::geteuid(), &self.uids, &self.gids)
    }
}

/// Why the supervisor could not start or went down.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration does not load.
    #[error("{0}")]
    Config(#[from] holden_orchestrator::config::ConfigError),
    /// A local service's user or group is not in this system's user database.
    #[error("{}: service {service}: {source}", file.display())]
    Account {
        /// The configuration file.
        file: PathBuf,
        /// The service.
        service: String,
        /// What is missing.
        #[source]
        source: holden_sys::users::LookupError,
    },
    /// Cgroups are needed and cannot be had (cgroup v1, the root cgroup, a missing controller).
    #[error("{0}")]
    Cgroup(String),
    /// Another supervisor serves the control socket.
    #[error("another orchestrator is already listening on {}", .0.display())]
    AlreadyServed(PathBuf),
    /// Another supervisor uses the state directory (it holds the directory's lock).
    #[error("another orchestrator uses the state directory {} (its lock is held)", .0.display())]
    StateDirInUse(PathBuf),
    /// Setting up something it needs failed.
    #[error("{what}: {source}")]
    Setup {
        /// What.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn setup(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Setup { what, source }
    }
}

/// Loads and checks a configuration file, with what only this system can check: that the users
/// and groups of local services exist here (an agent resolves its services' in its container).
pub fn load_config(file: &Path) -> Result<holden_orchestrator::config::Config, Error> {
    let cfg = holden_orchestrator::config::load(file)?;
    for (name, s) in cfg.services.iter().filter(|(_, s)| s.agent.is_none()) {
        let c = &s.constraints;
        holden_sys::users::resolve(Path::new("/"), c.user.as_deref(), c.group.as_deref(), 0)
            .map_err(|source| Error::Account { file: file.into(), service: name.clone(), source })?;
    }
    Ok(cfg)
}

/// Runs the supervisor until a clean shutdown.
pub fn run(options: Options) -> Result<(), Error> {
    supervisor::Supervisor::new(options)?.run()
}

/// The control socket: the flag, else `$HOLDEN_CONTROL_SOCKET`, else the configuration's,
/// else the default for this user.
pub fn control_socket_path(flag: Option<&Path>, from_config: Option<&Path>) -> PathBuf {
    control_socket_choice(flag, from_config).0
}

/// [`control_socket_path`], and how it was chosen (for messages): `--control-socket`,
/// `$HOLDEN_CONTROL_SOCKET`, `the configuration's control_socket`, or the default.
pub fn control_socket_choice(flag: Option<&Path>, from_config: Option<&Path>) -> (PathBuf, &'static str) {
    if let Some(p) = flag {
        return (p.into(), "--control-socket");
    }
    if let Some(p) = std::env::var_os("HOLDEN_CONTROL_SOCKET").filter(|p| !p.is_empty()) {
        return (p.into(), "$HOLDEN_CONTROL_SOCKET");
    }
    if let Some(p) = from_config {
        return (p.into(), "the configuration's control_socket");
    }
    if holden_sys::fd::geteuid() == 0 {
        return ("/run/holden/orchestrator.sock".into(), "the default for root");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(r) => (PathBuf::from(r).join("holden/orchestrator.sock"), "the default: $XDG_RUNTIME_DIR/holden"),
        None => (
            std::env::temp_dir().join(format!("holden-{}", holden_sys::fd::geteuid())).join("holden/orchestrator.sock"),
            "the default without $XDG_RUNTIME_DIR: $TMPDIR/holden-UID/holden",
        ),
    }
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
