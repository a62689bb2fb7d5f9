//! `pidfd_monitor "LOCAL CMD" "AGENT CMD"`: v0.2's monitor, done right. Runs the first command
//! here and the second through the agent, waits on both pidfds, reports each death with a
//! timestamp and how it died, and restarts it, after a growing delay if it keeps dying at once.
#![forbid(unsafe_code)]

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use holden::{Agent, Child, Command, ExitStatus};
use holden_cli::{signal_name, split_words, timestamp};
use holden_sys::event::{Epoll, Event, SignalFd, READABLE};

const HELP: &str = "\
Usage: pidfd_monitor \"LOCAL COMMAND\" \"AGENT COMMAND\"

Runs LOCAL COMMAND as a child of this process and AGENT COMMAND through the Holden agent
($HOLDEN_SOCKET_PATH, else /run/holden/agent.sock), waits on both pidfds, prints a timestamped
line when one ends (exit code or signal) and restarts it. A command that ends within a second of
starting is restarted after a delay that grows from 100 ms to 5 s; one that ran longer is
restarted at once. Commands are split into words like a shell does (quotes honoured, no
expansion). Ctrl-C or SIGTERM stops both commands (SIGTERM, then SIGKILL after 2 s) and exits 0.

Exit status: 0 after Ctrl-C/SIGTERM, 1 if the agent is unreachable or a command cannot be
started, 2 on a usage error.
";

use libc::{SIGINT, SIGKILL, SIGTERM};
const QUICK_DEATH: Duration = Duration::from_secs(1);
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);
const STOP_GRACE: Duration = Duration::from_secs(2);

/// One supervised command.
struct Slot {
    label: &'static str,
    line: String,
    argv: Vec<String>,
    child: Option<Child>,
    started: Instant,
    delay: Duration,
    restart_at: Option<Instant>,
}

fn say(msg: std::fmt::Arguments<'_>) {
    println!("[{}] {msg}", timestamp(SystemTime::now()));
}

fn how(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => {
            format!("killed by {}{}", signal_name(s), if status.core_dumped() { " (core dumped)" } else { "" })
        }
        _ => "ended".into(),
    }
}

impl Slot {
    fn spawn(&mut self, agent: &mut Agent) -> Result<(), holden::Error> {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]);
        let child = if self.label == "agent" { cmd.spawn_via(agent)? } else { cmd.spawn()? };
        let pid = child.pid().map_or_else(|| format!("agent pid {}", child.spawner_pid()), |p| format!("pid {p}"));
        say(format_args!("{}: started \"{}\" as {pid}", self.label, self.line));
        self.child = Some(child);
        self.started = Instant::now();
        self.restart_at = None;
        Ok(())
    }

    /// Reaps the child and schedules the restart.
    fn reap(&mut self, now: Instant) {
        let Some(mut child) = self.child.take() else { return };
        let ran = now - self.started;
        let what = match child.wait() {
            Ok(s) => how(s),
            Err(e) => format!("ended ({e})"),
        };
        self.delay = if ran < QUICK_DEATH {
            if self.delay.is_zero() {
                FIRST_DELAY
            } else {
                (self.delay * 2).min(MAX_DELAY)
            }
        } else {
            Duration::ZERO
        };
        say(format_args!(
            "{}: \"{}\" {what} after {:.2} s; restarting in {} ms",
            self.label,
            self.line,
            ran.as_secs_f64(),
            self.delay.as_millis()
        ));
        self.restart_at = Some(now + self.delay);
    }

    fn restart_failed(&mut self, e: &holden::Error, now: Instant) {
        self.delay = (self.delay * 2).clamp(FIRST_DELAY, MAX_DELAY);
        say(format_args!(
            "{}: cannot restart \"{}\": {e}; retrying in {} ms",
            self.label,
            self.line,
            self.delay.as_millis()
        ));
        self.restart_at = Some(now + self.delay);
    }

    /// SIGTERM, then SIGKILL after the grace period; always reaps.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = child.signal(SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            let _ = holden_sys::event::poll_readable(child.as_fd(), Some(Duration::from_millis(50)));
        }
        if !matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.signal(SIGKILL);
        }
        match child.wait() {
            Ok(s) => say(format_args!("{}: stopped \"{}\" ({})", self.label, self.line, how(s))),
            Err(e) => say(format_args!("{}: stopping \"{}\": {e}", self.label, self.line)),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if args.len() != 2 {
        eprint!("pidfd_monitor: expected two commands\n\n{HELP}");
        return ExitCode::from(2);
    }
    let mut slots = Vec::new();
    for (label, line) in ["local", "agent"].into_iter().zip(&args) {
        match split_words(line) {
            Ok(argv) if !argv.is_empty() => slots.push(Slot {
                label,
                line: line.clone(),
                argv,
                child: None,
                started: Instant::now(),
                delay: Duration::ZERO,
                restart_at: None,
            }),
            Ok(_) => {
                eprintln!("pidfd_monitor: the {label} command is empty");
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("pidfd_monitor: the {label} command {line:?}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match run(slots) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pidfd_monitor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut slots: Vec<Slot>) -> Result<(), String> {
    let signals = SignalFd::new(&[SIGINT, SIGTERM]).map_err(|e| format!("signalfd: {e}"))?;
    let path = Agent::default_path();
    let mut agent = Agent::connect(&path)
        .map_err(|e| format!("{e} (is holden-agent running? HOLDEN_SOCKET_PATH sets the socket)"))?;
    for i in 0..slots.len() {
        if let Err(e) = slots[i].spawn(&mut agent) {
            slots.iter_mut().for_each(Slot::stop);
            return Err(format!("{}: cannot start \"{}\": {e}", slots[i].label, slots[i].line));
        }
    }
    let mut epoll = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    epoll.add(&signals, 0, READABLE).map_err(|e| format!("epoll: {e}"))?;
    let watch = |epoll: &Epoll, slots: &[Slot], i: usize| {
        if let Some(c) = &slots[i].child {
            let _ = epoll.add(c.as_fd(), 1 + i as u64, READABLE);
        }
    };
    for i in 0..slots.len() {
        watch(&epoll, &slots, i);
    }
    let mut events: Vec<Event> = Vec::new();
    loop {
        let now = Instant::now();
        let next = slots.iter().filter_map(|s| s.restart_at).min();
        events.clear();
        epoll.wait(next.map(|t| t.saturating_duration_since(now)), &mut events).map_err(|e| format!("epoll: {e}"))?;
        let now = Instant::now();
        for ev in &events {
            if ev.token == 0 {
                if let Ok(Some(sig)) = signals.read() {
                    say(format_args!("{}: stopping both commands", signal_name(sig)));
                    slots.iter_mut().for_each(Slot::stop);
                    return Ok(());
                }
            } else {
                // Closing the pidfd (dropping the child) also removes it from the epoll set.
                slots[ev.token as usize - 1].reap(now);
            }
        }
        for i in 0..slots.len() {
            if slots[i].restart_at.is_some_and(|t| t <= now) {
                match slots[i].spawn(&mut agent) {
                    Ok(()) => watch(&epoll, &slots, i),
                    Err(e) => slots[i].restart_failed(&e, now),
                }
            }
        }
    }
}
