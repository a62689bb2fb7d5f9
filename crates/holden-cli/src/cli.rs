// The command line of `holden`, as clap types only: `main.rs` parses with it, and the build
// script includes this file (`include!`) to write the man pages, so it uses nothing but std
// and clap. Values that need the crate's own parsers (signals, durations) stay strings here and
// are checked by the commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `holden exec`'s exit statuses, for its help.
pub const EXEC_EXIT: &str = "Exit status (as podman exec and docker exec):
  the command's own exit code, or 128 + N if signal N killed it
  125  holden exec itself failed: agent unreachable, permission denied, bad arguments
  126  the command was found but could not be run (not executable, bad --cwd, ...)
  127  the command was not found";

/// Holden: process lifecycles across container boundaries, through pidfds.
#[derive(Parser, Debug)]
#[command(
    name = "holden",
    version,
    about = "holden: process lifecycles across container boundaries, through pidfds",
    long_about = "holden: process lifecycles across container boundaries, through pidfds.\n\n\
        The agent socket is --agent PATH, else $HOLDEN_SOCKET_PATH, else /run/holden/agent.sock. \
        The orchestrator's control socket is --control-socket PATH, else $HOLDEN_CONTROL_SOCKET, \
        else the configuration's (-c FILE, else $HOLDEN_CONFIG, else ./holden.toml, else \
        /etc/holden/holden.toml), else /run/holden/orchestrator.sock (root) or \
        $XDG_RUNTIME_DIR/holden/orchestrator.sock, or $TMPDIR/holden-UID/holden/orchestrator.sock \
        (/tmp without $TMPDIR) when $XDG_RUNTIME_DIR is unset.",
    after_help = "Exit status: 0 on success, 1 when the command failed, 2 on a usage error, 3 when the \
        orchestrator does not answer or goes away; `holden exec` exits with the command's own status \
        (see `holden exec --help`).",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

/// The orchestrator's socket, for the commands that talk to it.
#[derive(Args, Debug, Clone)]
pub struct Control {
    /// The orchestrator's control socket (else $HOLDEN_CONTROL_SOCKET, else the configuration's)
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Read the control socket's path from this configuration (else $HOLDEN_CONFIG,
    /// ./holden.toml, /etc/holden/holden.toml)
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Colours: auto (on a terminal, unless NO_COLOR is set), always or never
    #[arg(long, value_enum, default_value_t = Color::Auto, value_name = "WHEN")]
    pub color: Color,
}

/// When to colour.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// An agent's socket.
#[derive(Args, Debug, Clone)]
pub struct AgentSocket {
    /// The agent's socket (else $HOLDEN_SOCKET_PATH, else /run/holden/agent.sock)
    #[arg(long = "agent", value_name = "PATH")]
    pub agent: Option<PathBuf>,
}

/// Shells `holden completions` writes for.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a demonstration: an agent in its own namespaces and the orchestrator supervising
    /// services through it, with a live status view
    Demo {
        /// How long the live view runs, in seconds (1 to 3600)
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
        seconds: u64,
        /// The shorter tour of the agent alone instead: namespaces, pipes, exit status, signals
        #[arg(long)]
        agent: bool,
    },
    /// Run the supervisor in the foreground (see the README's "The orchestrator")
    Up {
        /// The configuration (default: $HOLDEN_CONFIG, else ./holden.toml, else /etc/holden/holden.toml)
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// The control socket (else $HOLDEN_CONTROL_SOCKET, else the file's, else the default)
        #[arg(long, value_name = "PATH")]
        control_socket: Option<PathBuf>,
        /// The control socket's mode, octal
        #[arg(long, value_name = "MODE", default_value = "0660")]
        socket_mode: String,
        /// Besides root and the orchestrator's uid, who may start, stop, kill, reload and read logs
        #[arg(long, value_name = "UID")]
        allow_uid: Vec<u32>,
        /// The same, by group
        #[arg(long, value_name = "GID")]
        allow_gid: Vec<u32>,
    },
    /// List services and their state
    Status {
        /// A JSON array of objects instead of the table
        #[arg(long)]
        json: bool,
        /// Again every second until interrupted (in place on a terminal)
        #[arg(short = 'w', long)]
        watch: bool,
        /// Only these services
        names: Vec<String>,
        #[command(flatten)]
        control: Control,
    },
    /// A live, full-screen view with a log pane; keys: s x r K l / ? q
    Top {
        #[command(flatten)]
        control: Control,
    },
    /// Start services (and what they depend on)
    Start {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        control: Control,
    },
    /// Stop services (and, first, what depends on them)
    Stop {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        control: Control,
    },
    /// Stop services and start them again
    Restart {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        control: Control,
    },
    /// Send a signal to a running service (its process group with kill_mode = "group")
    Kill {
        /// The signal: a name (SIGHUP, HUP) or a number
        #[arg(short = 's', long, default_value = "SIGTERM")]
        signal: String,
        name: String,
        #[command(flatten)]
        control: Control,
    },
    /// Print captured logs: of every service, or those named, interleaved by time
    Logs {
        /// Then every new line until interrupted
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many lines, of all of them together (default 10)
        #[arg(short = 'n', long, value_name = "N")]
        lines: Option<u32>,
        /// From then on: a duration ago (30s, 10m, 2h, 1d) or a UTC time (2026-11-27T10:00[:05][Z])
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// One JSON object per line: service, time, stream, text
        #[arg(long)]
        json: bool,
        names: Vec<String>,
        #[command(flatten)]
        control: Control,
    },
    /// Print state changes as they happen
    Events {
        /// One JSON object per change
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        control: Control,
    },
    /// Apply the configuration file again
    Reload {
        /// An object with the lists added, removed and changed
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        control: Control,
    },
    /// Validate a configuration file and print its services in start order
    Check {
        /// The configuration (default: $HOLDEN_CONFIG, else ./holden.toml, else /etc/holden/holden.toml)
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// An object: file, ok, services and agents, or line, column and error
        #[arg(long)]
        json: bool,
    },
    /// Run a command through an agent, like `podman exec`, with this terminal's own stdio
    #[command(after_help = EXEC_EXIT)]
    Exec {
        /// The agent's socket (else $HOLDEN_SOCKET_PATH, else /run/holden/agent.sock)
        #[arg(long = "agent", value_name = "PATH")]
        agent: Option<PathBuf>,
        /// Set KEY to VALUE in the command's environment (repeatable)
        #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// The command's working directory, in the agent's container
        #[arg(long, value_name = "DIR")]
        cwd: Option<String>,
        /// The command and its arguments (options end at the command; `--` before it is fine)
        #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Check that an agent answers
    Ping {
        #[command(flatten)]
        agent: AgentSocket,
        /// An object: socket, answered_us
        #[arg(long)]
        json: bool,
    },
    /// Print an agent's version and kernel features
    Info {
        #[command(flatten)]
        agent: AgentSocket,
        /// An object: socket, version, pid, features
        #[arg(long)]
        json: bool,
    },
    /// Run an agent (the same program as holden-agent; see `holden agent --help`)
    #[command(disable_help_flag = true)]
    Agent {
        /// The agent's own options
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Print a shell completion script: bash, zsh or fish
    Completions { shell: Shell },
    /// Print a man page (roff), generated at build time: holden(1), or a command's
    #[command(hide = true)]
    Man {
        /// The page: a command (status) or a page's name (holden-status); none: holden(1)
        page: Option<String>,
        /// List the pages' names
        #[arg(long)]
        list: bool,
    },
    /// The log-pipe holder `holden up` starts for itself (not for direct use)
    #[command(hide = true)]
    Fdholder { socket: PathBuf },
}
