//! The commands that talk to a running orchestrator over its control socket: `holden status`,
//! `start`, `stop`, `restart`, `kill`, `logs`, `events`, `reload`; and `holden check`, which
//! only reads a configuration file.
//!
//! Every call has a deadline, 5 s or `$HOLDEN_TIMEOUT`: connecting, sending and each awaited
//! reply. Only what streams after the first reply (`logs -f`, `events`) waits without one;
//! `events`, whose stream has no first reply of its own, first lists the services to learn
//! that the orchestrator answers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use holden::varlink::{ConnError, Connection};
use holden_orchestrator::config;
use holden_orchestrator::control::{ControlError, ReloadReply, ServiceStatus, StateChange, INTERFACE};
use serde_json::Value;

const UNREACHABLE: u8 = 3;

/// How long a call may take, unless `$HOLDEN_TIMEOUT` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The deadline of each call: `$HOLDEN_TIMEOUT` (seconds, more than 0), else 5 s.
fn timeout() -> Result<Duration, String> {
    let Some(v) = std::env::var_os("HOLDEN_TIMEOUT").filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let text = v.to_string_lossy();
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("HOLDEN_TIMEOUT: {text:?} is not a number of seconds above 0"))
}

#[derive(Clone)]
pub(crate) struct Args {
    timeout: Duration,
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
    json: bool,
    watch: bool,
    follow: bool,
    lines: Option<u32>,
    since: Option<String>,
    signal: Option<i32>,
    names: Vec<String>,
    /// `--color`: `auto` (a terminal, and no `NO_COLOR`), `always` or `never`.
    pub(crate) color: crate::cli::Color,
}

impl Args {
    /// Whether to colour output going to a terminal (`tty`) or not.
    pub(crate) fn colour(&self, tty: bool) -> bool {
        match self.color {
            crate::cli::Color::Always => true,
            crate::cli::Color::Never => false,
            crate::cli::Color::Auto => tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    /// The options clap read, checked: the signal, `--since`, and `$HOLDEN_TIMEOUT`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        control: crate::cli::Control,
        json: bool,
        watch: bool,
        follow: bool,
        lines: Option<u32>,
        since: Option<&str>,
        signal: Option<&str>,
        names: Vec<String>,
    ) -> Result<Args, String> {
        Ok(Args {
            timeout: timeout()?,
            socket: control.control_socket,
            config: control.config,
            json,
            watch,
            follow,
            lines,
            since: since.map(logs::parse_since).transpose()?,
            signal: signal.map(config::parse_signal).transpose()?,
            names,
            color: control.color,
        })
    }
}

mod logs;
mod top;

type Params = serde_json::Map<String, Value>;

/// A blocking Varlink client for the control socket, with a deadline on every call.
struct Client {
    conn: Connection,
    path: PathBuf,
    timeout: Duration,
}

enum Failure {
    Unreachable(String),
    /// The orchestrator at this path did not answer within this time.
    Timeout(PathBuf, Duration),
    Refused(ControlError),
    Broken(String),
}

impl Failure {
    fn text(self) -> String {
        match self {
            Failure::Unreachable(e) | Failure::Broken(e) => e,
            Failure::Timeout(path, t) => format!("{} did not answer within {}s", path.display(), t.as_secs_f64()),
            Failure::Refused(e) => e.to_string(),
        }
    }
}

impl Client {
    /// Connects to the orchestrator `a` names, or the one the configuration found names
    /// (see `holden up --help`), or the default. When nothing answers, the error says which
    /// socket was tried and why that one.
    fn connect(a: &Args) -> Result<Client, Failure> {
        // The configuration is read only when the socket is not given outright.
        let given = a.socket.is_some() || std::env::var_os("HOLDEN_CONTROL_SOCKET").is_some_and(|v| !v.is_empty());
        let found = if given { None } else { crate::up::find_config(a.config.as_deref(), false) };
        let from_config = match &found {
            Some((f, _)) => config::control_socket_of(f).map_err(|e| Failure::Broken(e.to_string()))?,
            None => None,
        };
        let (path, how) = holden_supervisor::control_socket_choice(a.socket.as_deref(), from_config.as_deref());
        let how = match (&found, how) {
            _ if given => how.to_string(),
            (Some((f, via)), "the configuration's control_socket") => {
                format!("the control_socket of {} ({via})", f.display())
            }
            (Some((f, via)), how) => format!("{how}; {} ({via}) names none", f.display()),
            (None, how) => {
                format!("{how}; no configuration found ($HOLDEN_CONFIG, ./holden.toml, {})", crate::up::DEFAULT_CONFIG)
            }
        };
        Client::open(&path, a.timeout).map_err(|e| match e {
            Failure::Unreachable(m) if m.contains("Permission denied") => {
                Failure::Broken(format!("{m}: not allowed to connect (the socket was chosen by {how})"))
            }
            Failure::Unreachable(m) => Failure::Unreachable(format!(
                "{m}\n  the socket was chosen by {how}\n  start one with `holden up`, or name its configuration with -c FILE"
            )),
            e => e,
        })
    }

    /// Connects to `path` within `timeout` (a listener whose backlog is full is retried until
    /// then, never waited on for ever).
    fn open(path: &Path, timeout: Duration) -> Result<Client, Failure> {
        match Connection::connect(path, Instant::now() + timeout) {
            Ok(conn) => Ok(Client { conn, path: path.into(), timeout }),
            Err(ConnError::Timeout) => Err(Failure::Timeout(path.into(), timeout)),
            Err(e) => Err(Failure::Unreachable(format!("connect to orchestrator at {}: {e}", path.display()))),
        }
    }

    fn failure(&self, e: ConnError, what: &str) -> Failure {
        match e {
            ConnError::Timeout => Failure::Timeout(self.path.clone(), self.timeout),
            e => Failure::Broken(format!("{what}: {e}")),
        }
    }

    /// Sends a call, done by `deadline`.
    fn send(&mut self, method: &str, params: Value, more: bool, deadline: Instant) -> Result<(), Failure> {
        let msg = holden_proto::encode_call(&format!("{INTERFACE}.{method}"), &params, more);
        self.conn.send(&msg, &[], Some(deadline)).map_err(|e| self.failure(e, "send"))
    }

    /// The next reply's parameters and whether more follow; `None` when the orchestrator
    /// closed the connection. Waits until `deadline`, or for ever with `None`.
    fn recv(&mut self, deadline: Option<Instant>) -> Result<Option<(Params, bool)>, Failure> {
        match self.conn.recv(deadline) {
            Ok((r, _)) => match r.error {
                Some(name) => Err(Failure::Refused(ControlError::from_wire(&name, &r.parameters))),
                None => Ok(Some((r.parameters, r.continues))),
            },
            Err(ConnError::Closed) => Ok(None),
            Err(e) => Err(self.failure(e, "receive")),
        }
    }

    /// The deadline of a call that begins now.
    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// One call and its one reply, both within the deadline.
    fn call(&mut self, method: &str, params: Value) -> Result<Params, Failure> {
        let deadline = self.deadline();
        self.send(method, params, false, deadline)?;
        match self.recv(Some(deadline))? {
            Some((p, _)) => Ok(p),
            None => Err(Failure::Broken("the orchestrator closed the connection".into())),
        }
    }
}

fn field<T: serde::de::DeserializeOwned>(p: &Params, key: &str) -> Result<T, Failure> {
    serde_json::from_value(p.get(key).cloned().unwrap_or(Value::Null))
        .map_err(|e| Failure::Broken(format!("malformed reply ({key}): {e}")))
}

/// Runs `holden CMD` with `a` (or reports why the options are wrong: exit 2).
pub fn main(cmd: &str, a: Result<Args, String>) -> ExitCode {
    let a = match a {
        Ok(a) => a,
        Err(e) => {
            eprintln!("holden {cmd}: {e} (see holden {cmd} --help)");
            return ExitCode::from(2);
        }
    };
    match run(cmd, &a) {
        Ok(code) => code,
        Err(Failure::Unreachable(e)) => {
            eprintln!("holden {cmd}: {e}");
            ExitCode::from(UNREACHABLE)
        }
        Err(f @ Failure::Timeout(..)) => {
            eprintln!("holden: {}", f.text());
            ExitCode::from(UNREACHABLE)
        }
        Err(Failure::Refused(e)) => {
            eprintln!("holden {cmd}: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Broken(e)) => {
            eprintln!("holden {cmd}: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cmd: &str, a: &Args) -> Result<ExitCode, Failure> {
    if cmd == "logs" {
        return logs::run(a);
    }
    if cmd == "top" {
        return top::run(a);
    }
    let mut c = Client::connect(a)?;
    match cmd {
        "status" => {
            let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
            loop {
                let list: Vec<ServiceStatus> = match status_list(&mut c, a) {
                    // Watching, an orchestrator that goes away is the end (exit 3).
                    Err(Failure::Broken(_)) if a.watch => return Err(went_away()),
                    r => r?,
                };
                let mut out = std::io::stdout().lock();
                let text = if a.json {
                    serde_json::to_string_pretty(&list).expect("plain structs") + "\n"
                } else {
                    let fit =
                        if tty { ratatui::crossterm::terminal::size().ok().map(|(w, _)| w as usize) } else { None };
                    let t = table_for(&list, fit, a.colour(tty));
                    if a.watch && tty {
                        // Home, the table, then clear what an older, longer one left.
                        format!("\x1b[H{}\x1b[J", t.replace('\n', "\x1b[K\n"))
                    } else if a.watch {
                        format!("{}\n{t}", holden_cli::timestamp(std::time::SystemTime::now()))
                    } else {
                        t
                    }
                };
                if out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_err() || !a.watch {
                    break;
                }
                drop(out);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        "start" | "stop" | "restart" => {
            let method = match cmd {
                "start" => "Start",
                "stop" => "Stop",
                _ => "Restart",
            };
            c.call(method, serde_json::json!({ "names": a.names }))?;
        }
        "kill" => {
            let signal = a.signal.unwrap_or(libc::SIGTERM);
            c.call("Kill", serde_json::json!({ "name": a.names[0], "signal": signal }))?;
        }
        "reload" => {
            let r: ReloadReply = serde_json::from_value(Value::Object(c.call("Reload", serde_json::json!({}))?))
                .map_err(|e| Failure::Broken(format!("malformed reply: {e}")))?;
            if a.json {
                out_line(&serde_json::to_string(&r).expect("plain struct"));
                return Ok(ExitCode::SUCCESS);
            }
            let list = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(", ") };
            out_line(&format!(
                "added: {}\nremoved: {}\nchanged: {}",
                list(&r.added),
                list(&r.removed),
                list(&r.changed)
            ));
        }
        "events" => {
            // Events replies only when something changes: a List first shows, within the
            // deadline, that the orchestrator answers; the events then come when they come.
            c.call("List", serde_json::json!({}))?;
            let deadline = c.deadline();
            c.send("Events", serde_json::json!({}), true, deadline)?;
            let mut out = std::io::stdout().lock();
            loop {
                let Some((p, _)) = c.recv(None)? else { return Err(went_away()) };
                let e: StateChange = field(&p, "event")?;
                let line = if a.json { serde_json::to_string(&e).expect("plain struct") } else { event_line(&e) };
                if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                    break;
                }
            }
        }
        _ => unreachable!("dispatched by main"),
    }
    Ok(ExitCode::SUCCESS)
}

/// One event as `holden events` prints it: time, service, state, and what changed (ready,
/// healthy, unhealthy, waiting for ..., failed because ...).
fn event_line(e: &StateChange) -> String {
    let mut l = format!("{} {} {}", e.time, e.service, e.state);
    if let Some(pid) = e.pid {
        l += &format!(" pid {pid}");
    }
    match e.change.as_str() {
        "ready" => l += " ready",
        "healthy" | "unhealthy" => l += &format!(" {}", e.change),
        _ => {}
    }
    if let Some(w) = &e.waiting {
        l += &format!(" ({w})");
    }
    if let Some(x) = &e.last_exit {
        l += &format!(" (last exit: {x})");
    }
    if let Some(err) = &e.last_error {
        l += &format!(" (error: {err})");
    }
    l
}

/// Prints a line on stdout; a reader that went away (`| head -0`) is not a crash, nor an error.
fn out_line(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("holden: write: {e}");
        }
    }
}

fn went_away() -> Failure {
    Failure::Unreachable("the orchestrator went away (it closed the connection)".into())
}

/// The services `a` names, or all of them.
fn status_list(c: &mut Client, a: &Args) -> Result<Vec<ServiceStatus>, Failure> {
    if a.names.is_empty() {
        let reply = c.call("List", serde_json::json!({}))?;
        if let Some(e) = reply.get("state_file_error").and_then(|e| e.as_str()) {
            eprintln!("holden status: warning: state file: {e} (retrying)");
        }
        return field(&reply, "services");
    }
    a.names.iter().map(|n| field(&c.call("Status", serde_json::json!({ "name": n }))?, "service")).collect()
}

/// Every service of the orchestrator on `socket` (for the demo's status view).
pub fn list(socket: &std::path::Path) -> Result<Vec<ServiceStatus>, String> {
    let mut c = Client::open(socket, timeout()?).map_err(Failure::text)?;
    let reply = c.call("List", serde_json::json!({})).map_err(Failure::text)?;
    field(&reply, "services").map_err(Failure::text)
}

/// `1h02m`, `3m04s`, `5.2s`.
pub fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{}.{}s", s, ms % 1000 / 100),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

/// `512B`, `3.4K`, `12.0M`, `1.5G` (powers of 1024).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

/// One service's cells in the status table: name, state, ready/health, pid, uptime, restarts,
/// last exit (or error, or what it waits for), agent, MEM, CPU.
pub(crate) fn table_row(s: &ServiceStatus) -> Vec<String> {
    let dash = || "-".to_string();
    vec![
        s.name.clone(),
        if s.wanted == "down" && s.state != "stopped" { format!("{} (down)", s.state) } else { s.state.clone() },
        match s.health.as_str() {
            "healthy" | "unhealthy" if s.health_check => s.health.clone(),
            _ if s.ready => "ready".into(),
            _ => dash(),
        },
        s.pid.map_or_else(dash, |p| p.to_string()),
        if s.state == "running" { human(s.since_ms) } else { dash() },
        s.restarts.to_string(),
        match (&s.last_exit, &s.last_error) {
            _ if s.waiting.is_some() => s.waiting.clone().unwrap_or_default(),
            (_, Some(e)) if s.state != "running" => e.clone(),
            (Some(x), _) => x.clone(),
            _ => dash(),
        },
        s.agent.clone().unwrap_or_else(|| "(local)".into()),
        s.memory_bytes.map_or_else(dash, bytes),
        s.cpu_percent.map_or_else(|| if s.cpu_usec.is_some() { "0%".into() } else { dash() }, |p| format!("{p}%")),
    ]
}

/// The status table.
pub fn table(list: &[ServiceStatus]) -> String {
    table_for(list, None, false)
}

/// The status table, at most `fit` columns wide (the LAST EXIT column is cut with an ellipsis
/// to fit), the states coloured with `colour`.
pub(crate) fn table_for(list: &[ServiceStatus], fit: Option<usize>, colour: bool) -> String {
    let rows: Vec<Vec<String>> = list.iter().map(table_row).collect();
    let mut head =
        vec!["NAME", "STATE", "READY/HEALTH", "PID", "UPTIME", "RESTARTS", "LAST EXIT", "AGENT", "MEM", "CPU"];
    let mut rows = rows;
    // MEM and CPU only where some service has a cgroup.
    if !list.iter().any(|s| s.memory_bytes.is_some() || s.cpu_usec.is_some()) {
        head.truncate(8);
        for r in &mut rows {
            r.truncate(8);
        }
    }
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    // Too wide for the terminal: LAST EXIT (errors are long) gives way, down to its title.
    const LAST: usize = 6;
    if let Some(fit) = fit {
        let total: usize = width.iter().sum::<usize>() + 2 * (width.len() - 1);
        if total > fit {
            width[LAST] = width[LAST].saturating_sub(total - fit).max(head[LAST].len());
            for r in &mut rows {
                if r[LAST].chars().count() > width[LAST] {
                    r[LAST] = r[LAST].chars().take(width[LAST] - 1).collect::<String>() + "…";
                }
            }
        }
    }
    let paint = |i: usize, c: &str| -> Option<&'static str> {
        if !colour {
            return None;
        }
        match (i, c.split(' ').next().unwrap_or_default()) {
            (1, "running") | (2, "healthy") => Some("32"),
            (1, "failed") | (2, "unhealthy") => Some("31"),
            (1, "starting" | "stopping" | "backing-off") => Some("33"),
            _ => None,
        }
    };
    let mut out = String::new();
    let mut line = |cells: Vec<&str>, body: bool| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            let pad =
                if i + 1 == cells.len() { String::new() } else { " ".repeat(w + 2 - c.chars().count().min(w + 2)) };
            match paint(i, c).filter(|_| body) {
                Some(code) => l += &format!("\x1b[{code}m{c}\x1b[0m{pad}"),
                None => l += &format!("{c}{pad}"),
            }
        }
        out += l.trim_end();
        out += "\n";
    };
    line(head.to_vec(), false);
    for r in &rows {
        line(r.iter().map(String::as_str).collect(), true);
    }
    out
}

/// `holden check [-c FILE] [--json]`: validates a configuration without running anything.
pub fn check(file: Option<PathBuf>, json: bool) -> ExitCode {
    let file = crate::up::find_config(file.as_deref(), true).map(|c| c.0).unwrap_or_default();
    match holden_supervisor::load_config(&file) {
        Ok(c) if json => {
            let order = config::start_order(&c.services);
            let agents: Vec<&String> = c.agents.keys().collect();
            out_line(&serde_json::json!({ "file": file, "ok": true, "services": order, "agents": agents }).to_string());
            ExitCode::SUCCESS
        }
        Err(e) if json => {
            let (line, column) = match &e {
                holden_supervisor::Error::Config(c) => (Some(c.line), Some(c.column)),
                _ => (None, None),
            };
            let v = serde_json::json!({ "file": file, "ok": false, "line": line, "column": column, "error": e.to_string() });
            out_line(&v.to_string());
            ExitCode::from(1)
        }
        Ok(c) => {
            let order = config::start_order(&c.services);
            out_line(&format!(
                "{}: ok: {} services ({}), {} agents",
                file.display(),
                order.len(),
                order.join(", "),
                c.agents.len()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, state: &str, error: Option<&str>) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            state: state.into(),
            wanted: "up".into(),
            restarts: 5,
            last_error: error.map(str::to_owned),
            health: "unknown".into(),
            ..ServiceStatus::default()
        }
    }

    #[test]
    fn the_table_fits_the_terminal_and_colours_states() {
        let long = "start limit reached: 5 starts in 60s; last error: exec: No such file or directory";
        let list = [svc("web", "failed", Some(long)), svc("db", "running", None)];
        let wide = table_for(&list, None, false);
        assert!(wide.contains(long), "{wide}");
        let narrow = table_for(&list, Some(80), false);
        assert!(narrow.lines().all(|l| l.chars().count() <= 80), "{narrow}");
        assert!(narrow.contains("start limit reache…") && !narrow.contains(long), "{narrow}");
        let coloured = table_for(&list, Some(80), true);
        assert!(
            coloured.contains("\x1b[31mfailed\x1b[0m") && coloured.contains("\x1b[32mrunning\x1b[0m"),
            "{coloured}"
        );
        // Colours do not move the columns.
        let strip = |s: &str| s.replace("\x1b[31m", "").replace("\x1b[32m", "").replace("\x1b[0m", "");
        assert_eq!(strip(&coloured), narrow);
    }
}
