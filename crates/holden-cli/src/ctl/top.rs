//! `holden top`: a live, full-screen view of the orchestrator, a plain client of
//! `io.holden.Orchestrator`. The table follows the `Events` stream (a `List` every 2 s brings
//! CPU and MEM); a log pane follows the selected service's `Logs`, or every service's. Keys:
//! arrows or j/k select, s start, x stop, r restart, K kill (asks first), l cycles the log pane
//! (selected, all, off), / filters by name, ? help, q quits. Calls run on threads of their own,
//! so the screen never waits on the orchestrator; the terminal is restored on q, on SIGTERM,
//! SIGINT or SIGHUP, and on a panic. `NO_COLOR` turns colours off.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use holden_orchestrator::control::{ServiceStatus, StateChange};
use ratatui::crossterm::event::{self, Event as Term, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap};

use super::{field, went_away, Args, Client, Failure};

/// What the threads tell the screen.
enum Msg {
    List(Vec<ServiceStatus>),
    Event(StateChange),
    /// Log lines of the follower of this generation.
    Log(u64, Vec<String>),
    /// A call's outcome, for the status line.
    Done(String),
    Gone(String),
    Quit,
}

struct Row_ {
    s: ServiceStatus,
    /// When `s.since_ms` was true.
    at: Instant,
}

#[derive(PartialEq, Clone, Copy)]
enum Pane {
    Selected,
    All,
    Off,
}

struct App {
    rows: BTreeMap<String, Row_>,
    order: Vec<String>,
    state: TableState,
    filter: String,
    typing_filter: bool,
    help: bool,
    confirm_kill: Option<String>,
    pane: Pane,
    log: Vec<String>,
    /// The log follower's generation: lines of an older one are dropped.
    log_gen: Arc<AtomicU64>,
    status: String,
    colour: bool,
}

impl App {
    fn visible(&self) -> Vec<&String> {
        self.order.iter().filter(|n| n.contains(&self.filter)).collect()
    }

    fn selected(&self) -> Option<String> {
        let v = self.visible();
        self.state.selected().and_then(|i| v.get(i)).map(|n| n.to_string())
    }

    fn style(&self, state: &str) -> Style {
        if !self.colour {
            return Style::new();
        }
        match state {
            "running" => Style::new().fg(Color::Green),
            "failed" | "unhealthy" => Style::new().fg(Color::Red),
            "backing-off" | "starting" | "stopping" => Style::new().fg(Color::Yellow),
            _ => Style::new(),
        }
    }
}

/// Runs `holden top`.
pub(super) fn run(a: &Args) -> Result<ExitCode, Failure> {
    // The keys are read from stdin and the screen drawn on stdout: both must be the terminal
    // (not `</dev/null`, a pipe, or ssh without -t).
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Err(Failure::Broken(
            "it needs a terminal on stdin and stdout (elsewhere, holden status --watch)".into(),
        ));
    }
    // Before any thread: the signals that end it arrive on a descriptor, not as a kill.
    let signals = holden_sys::event::SignalFd::new(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
        .map_err(|e| Failure::Broken(format!("signalfd: {e}")))?;
    let mut first = Client::connect(a)?;
    let list: Vec<ServiceStatus> = field(&first.call("List", serde_json::json!({}))?, "services")?;
    let socket = first.path.display().to_string();
    let (tx, rx) = mpsc::channel::<Msg>();
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = holden_sys::event::poll_readable(std::os::fd::AsFd::as_fd(&signals), None);
            let _ = tx.send(Msg::Quit);
        });
    }
    spawn_events(a, tx.clone())?;
    spawn_lister(a, tx.clone());
    let mut app = App {
        rows: BTreeMap::new(),
        order: Vec::new(),
        state: TableState::default(),
        filter: String::new(),
        typing_filter: false,
        help: false,
        confirm_kill: None,
        pane: Pane::Selected,
        log: Vec::new(),
        log_gen: Arc::new(AtomicU64::new(0)),
        status: format!("{socket} | ? help, q quit"),
        colour: a.colour(true),
    };
    apply_list(&mut app, list);
    app.state.select(Some(0));
    let mut following: Option<(Pane, Option<String>)> = None;
    let mut terminal = ratatui::init();
    let outcome = loop {
        // The log pane follows what it shows.
        let want = (app.pane, app.selected());
        if following.as_ref() != Some(&want) {
            app.log.clear();
            let g = app.log_gen.fetch_add(1, Ordering::SeqCst) + 1;
            if app.pane != Pane::Off {
                let names = match app.pane {
                    Pane::All => app.order.clone(),
                    _ => want.1.iter().cloned().collect(),
                };
                spawn_logs(a, names, app.pane == Pane::All, g, app.log_gen.clone(), tx.clone());
            }
            following = Some(want);
        }
        if let Err(e) = terminal.draw(|f| draw(f, &mut app)) {
            break Err(Failure::Broken(format!("draw: {e}")));
        }
        // Keys, then what the threads brought; a quarter of a second at most between frames
        // (the uptimes move). The terminal is watched here, not in the key reader: on a
        // terminal that went away (its emulator closed, an ssh session dropped) the reader
        // would spin on end-of-file, and this would never end.
        let tty = std::io::stdin();
        if holden_sys::event::hung_up(tty.as_fd()) {
            break Err(Failure::Unreachable("the terminal went away".into()));
        }
        // Wait for a key (or a quarter of a second), then take every key there is: the reader
        // keeps what it read ahead (two keys typed at once) in a buffer of its own.
        let _ = holden_sys::event::poll_readable(tty.as_fd(), Some(Duration::from_millis(250)));
        let mut quit = None;
        while quit.is_none() && !holden_sys::event::hung_up(tty.as_fd()) && event::poll(Duration::ZERO).unwrap_or(false)
        {
            match event::read() {
                Ok(Term::Key(k)) if k.kind == KeyEventKind::Press && !key(&mut app, a, k.code, k.modifiers, &tx) => {
                    quit = Some(Ok(ExitCode::SUCCESS));
                }
                Ok(_) => {}
                Err(e) => quit = Some(Err(Failure::Broken(format!("read the terminal: {e}")))),
            }
        }
        if let Some(q) = quit {
            break q;
        }
        let mut end = None;
        while let Ok(m) = rx.try_recv() {
            match m {
                Msg::List(l) => apply_list(&mut app, l),
                Msg::Event(e) => apply_event(&mut app, e),
                Msg::Log(g, lines) if g == app.log_gen.load(Ordering::SeqCst) => {
                    app.log.extend(lines);
                    let over = app.log.len().saturating_sub(1000);
                    app.log.drain(..over);
                }
                Msg::Log(..) => {}
                Msg::Done(s) => app.status = s,
                Msg::Gone(e) => end = Some(Err(Failure::Unreachable(e))),
                Msg::Quit => end = Some(Ok(ExitCode::SUCCESS)),
            }
        }
        if let Some(end) = end {
            break end;
        }
    };
    ratatui::restore();
    outcome
}

/// One key; false to quit.
fn key(app: &mut App, a: &Args, code: KeyCode, mods: KeyModifiers, tx: &mpsc::Sender<Msg>) -> bool {
    if let Some(name) = app.confirm_kill.take() {
        if matches!(code, KeyCode::Char('y') | KeyCode::Char('Y')) {
            call(
                a,
                tx,
                "Kill",
                serde_json::json!({ "name": name, "signal": libc::SIGKILL }),
                format!("SIGKILL to {name}"),
            );
        } else {
            app.status = format!("kill of {name}: not sent");
        }
        return true;
    }
    if app.typing_filter {
        match code {
            KeyCode::Enter | KeyCode::Esc => app.typing_filter = false,
            KeyCode::Backspace => {
                app.filter.pop();
            }
            KeyCode::Char(c) => app.filter.push(c),
            _ => {}
        }
        app.state.select(Some(0));
        return true;
    }
    let n = app.visible().len();
    let at = app.state.selected().unwrap_or(0);
    match code {
        KeyCode::Char('q') => return false,
        KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => return false,
        KeyCode::Down | KeyCode::Char('j') if n > 0 => app.state.select(Some((at + 1).min(n - 1))),
        KeyCode::Up | KeyCode::Char('k') => app.state.select(Some(at.saturating_sub(1))),
        KeyCode::Char('?') => app.help = !app.help,
        KeyCode::Char('/') => {
            app.typing_filter = true;
            app.filter.clear();
        }
        KeyCode::Esc => app.help = false,
        KeyCode::Char('l') => {
            app.pane = match app.pane {
                Pane::Selected => Pane::All,
                Pane::All => Pane::Off,
                Pane::Off => Pane::Selected,
            }
        }
        KeyCode::Char(c @ ('s' | 'x' | 'r' | 'K')) => {
            let Some(name) = app.selected() else { return true };
            match c {
                's' => call(a, tx, "Start", serde_json::json!({ "names": [name] }), format!("start {name}")),
                'x' => call(a, tx, "Stop", serde_json::json!({ "names": [name] }), format!("stop {name}")),
                'r' => call(a, tx, "Restart", serde_json::json!({ "names": [name] }), format!("restart {name}")),
                _ => {
                    app.status = format!("SIGKILL to {name}? y/n");
                    app.confirm_kill = Some(name);
                }
            }
        }
        _ => {}
    }
    true
}

/// A call on a thread of its own; its outcome goes to the status line.
fn call(a: &Args, tx: &mpsc::Sender<Msg>, method: &'static str, params: serde_json::Value, what: String) {
    let (tx, a) = (tx.clone(), a.clone());
    std::thread::spawn(move || {
        let r = Client::connect(&a).and_then(|mut c| c.call(method, params));
        let _ = tx.send(Msg::Done(match r {
            Ok(_) => format!("{what}: done"),
            Err(e) => format!("{what}: error: {}", e.text()),
        }));
    });
}

fn spawn_events(a: &Args, tx: mpsc::Sender<Msg>) -> Result<(), Failure> {
    let mut c = Client::connect(a)?;
    let deadline = c.deadline();
    c.send("Events", serde_json::json!({}), true, deadline)?;
    std::thread::spawn(move || loop {
        match c.recv(None) {
            Ok(Some((p, _))) => {
                if let Ok(e) = field::<StateChange>(&p, "event") {
                    let _ = tx.send(Msg::Event(e));
                }
            }
            Ok(None) => return drop(tx.send(Msg::Gone(went_away().text()))),
            Err(e) => return drop(tx.send(Msg::Gone(e.text()))),
        }
    });
    Ok(())
}

/// A `List` every 2 s: uptimes, CPU and MEM.
fn spawn_lister(a: &Args, tx: mpsc::Sender<Msg>) {
    let a = a.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(2));
        let r = Client::connect(&a).and_then(|mut c| field(&c.call("List", serde_json::json!({}))?, "services"));
        if let Ok(l) = r {
            if tx.send(Msg::List(l)).is_err() {
                return;
            }
        }
    });
}

/// Follows the logs of `names` (prefixed with the name when `all`) while `gen` is current.
fn spawn_logs(a: &Args, names: Vec<String>, all: bool, gen: u64, current: Arc<AtomicU64>, tx: mpsc::Sender<Msg>) {
    for name in names {
        let (a, tx, current) = (a.clone(), tx.clone(), current.clone());
        std::thread::spawn(move || {
            let Ok(mut c) = Client::connect(&a) else { return };
            let deadline = c.deadline();
            let lines = if all { 5 } else { 200 };
            if c.send("Logs", serde_json::json!({ "name": name, "lines": lines }), true, deadline).is_err() {
                return;
            }
            while current.load(Ordering::SeqCst) == gen {
                match c.recv(Some(Instant::now() + Duration::from_millis(500))) {
                    Ok(Some((p, _))) => {
                        let lines: Vec<String> = field(&p, "lines").unwrap_or_default();
                        let lines =
                            if all { lines.into_iter().map(|l| format!("{name}: {l}")).collect() } else { lines };
                        if tx.send(Msg::Log(gen, lines)).is_err() {
                            return;
                        }
                    }
                    Err(Failure::Timeout(..)) => {}
                    // No log (stdout and stderr not captured), or gone: nothing to follow.
                    Ok(None) | Err(_) => return,
                }
            }
        });
    }
}

fn apply_list(app: &mut App, list: Vec<ServiceStatus>) {
    let now = Instant::now();
    app.order = list.iter().map(|s| s.name.clone()).collect();
    app.rows = list.into_iter().map(|s| (s.name.clone(), Row_ { s, at: now })).collect();
}

fn apply_event(app: &mut App, e: StateChange) {
    let Some(r) = app.rows.get_mut(&e.service) else { return };
    if r.s.state != e.state || r.s.pid != e.pid {
        r.s.since_ms = 0;
        r.at = Instant::now();
    }
    r.s.state = e.state;
    r.s.pid = e.pid;
    r.s.last_exit = e.last_exit;
    r.s.last_error = e.last_error;
    r.s.ready = e.ready;
    r.s.health = e.health;
    r.s.waiting = e.waiting;
}

fn draw(f: &mut ratatui::Frame, app: &mut App) {
    let log_height = if app.pane == Pane::Off { 0 } else { f.area().height.saturating_sub(6) / 2 };
    let [table_area, log_area, status_area] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(log_height), Constraint::Length(1)]).areas(f.area());
    let with_usage = app.rows.values().any(|r| r.s.memory_bytes.is_some() || r.s.cpu_usec.is_some());
    let mut head = vec!["NAME", "STATE", "READY", "PID", "UPTIME", "RST", "LAST EXIT", "AGENT"];
    if with_usage {
        head.extend(["CPU", "MEM"]);
    }
    let rows: Vec<Row> = app
        .visible()
        .into_iter()
        .filter_map(|n| app.rows.get(n))
        .map(|r| {
            let s = &r.s;
            let rs = super::table_row(s);
            let up = if s.state == "running" {
                super::human(s.since_ms + r.at.elapsed().as_millis() as u64)
            } else {
                "-".into()
            };
            let mut cells = vec![
                Cell::from(rs[0].clone()),
                Cell::from(Span::styled(rs[1].clone(), app.style(&s.state))),
                Cell::from(Span::styled(rs[2].clone(), app.style(&rs[2]))),
                Cell::from(rs[3].clone()),
                Cell::from(up),
                Cell::from(rs[5].clone()),
                Cell::from(rs[6].clone()),
                Cell::from(rs[7].clone()),
            ];
            if with_usage {
                cells.extend([Cell::from(rs[9].clone()), Cell::from(rs[8].clone())]);
            }
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![
        Constraint::Min(8),
        Constraint::Length(11),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(3),
        Constraint::Min(10),
        Constraint::Length(8),
    ];
    if with_usage {
        widths.extend([Constraint::Length(5), Constraint::Length(7)]);
    }
    let title =
        if app.filter.is_empty() { " holden top ".to_string() } else { format!(" holden top (/{}) ", app.filter) };
    // Reverse video: visible with and without colours.
    let highlight = Style::new().add_modifier(Modifier::REVERSED);
    let table = Table::new(rows, widths)
        .header(Row::new(head).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::new().borders(Borders::ALL).title(title))
        .row_highlight_style(highlight);
    f.render_stateful_widget(table, table_area, &mut app.state);
    if app.pane != Pane::Off {
        let title = match app.pane {
            Pane::All => " logs: every service (l: off) ".to_string(),
            _ => format!(" logs: {} (l: every service) ", app.selected().unwrap_or_default()),
        };
        let inner = log_area.height.saturating_sub(2) as usize;
        let lines: Vec<Line> =
            app.log.iter().skip(app.log.len().saturating_sub(inner)).map(|l| Line::from(l.as_str())).collect();
        f.render_widget(Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(title)), log_area);
    }
    let status = if app.typing_filter { format!("filter: /{}_", app.filter) } else { app.status.clone() };
    f.render_widget(Paragraph::new(status), status_area);
    if app.help {
        let help = "arrows, j/k  select\ns  start    x  stop    r  restart\nK  SIGKILL (asks y/n)\nl  log pane: selected, every service, off\n/  filter by name (Enter ends)\n?  this help (Esc closes)\nq  quit";
        let area = f.area().inner(ratatui::layout::Margin { horizontal: 4, vertical: 3 });
        f.render_widget(ratatui::widgets::Clear, area);
        f.render_widget(
            Paragraph::new(help).wrap(Wrap { trim: false }).block(Block::new().borders(Borders::ALL).title(" help ")),
            area,
        );
    }
}
