//! How a service says it is ready, how its health is checked, and what its dependents wait
//! for: the `ready`, `ready_timeout`, `health` and `depends_on` keys, checked.
//!
//! ```toml
//! [services.db]
//! ready = { notify = "fd" }                 # a newline on fd 3 (s6 style); { notify = "fd", fd = 5 }
//! # ready = { notify = "systemd" }          # sd_notify READY=1 on $NOTIFY_SOCKET
//! # ready = { log = "Ready to accept" }     # a line of its captured stdout/stderr holds this
//! # ready = { exec = ["redis-cli", "ping"] }  # a probe that exits 0
//! # ready = { tcp = "127.0.0.1:6380" }      # a connect that succeeds
//! # ready = { http = "http://127.0.0.1:8080/healthz" }  # a 2xx answer
//! ready_timeout = "30s"
//! health = { exec = ["redis-cli", "ping"], interval = "5s", timeout = "2s", failures = 3, start_period = "10s" }
//!
//! [services.web]
//! depends_on = { db = "ready", init = "completed", cache = { condition = "ready", restart = true } }
//! ```
//!
//! Probe addresses are IP literals or `localhost` (no name lookup: it could block, and would
//! resolve in the wrong place for a service in a container).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use toml::Value;

/// A check that runs beside the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A command that must exit 0 (run where the service runs: through its agent, if any).
    Exec(Vec<String>),
    /// A TCP connect that must succeed (in the service's network namespace).
    Tcp(SocketAddr),
    /// An HTTP/1.1 GET that must answer 2xx (in the service's network namespace).
    Http {
        /// Where to connect.
        addr: SocketAddr,
        /// The `Host` header.
        host: String,
        /// The path and query.
        path: String,
    },
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Exec(argv) => write!(f, "exec {argv:?}"),
            Probe::Tcp(a) => write!(f, "tcp {a}"),
            Probe::Http { addr, path, .. } => write!(f, "http {addr}{path}"),
        }
    }
}

/// How readiness is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyWhen {
    /// A newline written to this descriptor.
    Fd(i32),
    /// `READY=1` sent to `$NOTIFY_SOCKET`.
    Systemd,
    /// A line of its captured output that contains this.
    Log(String),
    /// A probe that succeeds, polled every 100 ms at first, then less often up to `interval`.
    Probe {
        /// The probe.
        probe: Probe,
        /// The longest pause between two tries.
        interval: Duration,
        /// How long one try may take.
        timeout: Duration,
    },
}

/// A health check, run while the service is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The probe.
    pub probe: Probe,
    /// The pause between two checks.
    pub interval: Duration,
    /// How long one check may take; longer is a failure (the probe is killed).
    pub timeout: Duration,
    /// Consecutive failures that make the service unhealthy (and restart it).
    pub failures: u32,
    /// After a start, failures do not count for this long.
    pub start_period: Duration,
}

/// What a dependent waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Only the order: started before, stopped after.
    Started,
    /// Running and ready (a service without `ready` is ready once running).
    Ready,
    /// Exited with status 0, and not restarted.
    Completed,
}

impl Condition {
    /// As written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Ready => "ready",
            Condition::Completed => "completed",
        }
    }
}

/// One dependency's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dependency {
    /// What the dependent waits for before it starts.
    pub condition: Condition,
    /// Restart the dependent once the dependency meets the condition again after a restart.
    pub restart: bool,
}

/// The default pause between health checks, and the longest between readiness tries.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// The default time one probe may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default consecutive failures before unhealthy.
pub const DEFAULT_FAILURES: u32 = 3;
/// How long a service with `ready` may take to become ready, unless `ready_timeout` says.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) type Located<T> = Result<T, (Range<usize>, String)>;

fn string(v: &Value, what: &str, span: &Range<usize>) -> Located<String> {
    v.as_str().map(str::to_owned).ok_or_else(|| (span.clone(), format!("{what} must be a string")))
}

fn duration(v: Option<&Value>, what: &str, default: Duration, span: &Range<usize>) -> Located<Duration> {
    match v {
        None => Ok(default),
        Some(v) => {
            crate::config::parse_duration(&string(v, what, span)?).map_err(|m| (span.clone(), format!("{what}: {m}")))
        }
    }
}

/// `IP:port`, `[v6]:port` or `localhost:port` (the port may be left to `default_port`).
fn address(s: &str, default_port: Option<u16>) -> Result<SocketAddr, String> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (h, after) = rest.split_once(']').ok_or_else(|| format!("{s:?}: [ without its ]"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(format!("{s:?}: ] is followed by :PORT or nothing")),
            }
        }
        None => match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return Err(format!("{s:?}: an IPv6 address goes in brackets ([::1]:80)")),
            None => (s, None),
        },
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{s:?}: the port must be a number from 1 to 65535"))?,
        None => default_port.ok_or_else(|| format!("{s:?} needs a port (HOST:PORT)"))?,
    };
    let ip = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h
            .parse::<IpAddr>()
            .map_err(|_| format!("{s:?}: the host must be an IP address or localhost (names are not looked up)"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

fn probe_of(t: &toml::Table, key: &str, span: &Range<usize>) -> Located<Probe> {
    let v = &t[key];
    match key {
        "exec" => {
            let argv: Option<Vec<String>> =
                v.as_array().and_then(|a| a.iter().map(|x| x.as_str().map(str::to_owned)).collect());
            match argv {
                Some(a) if !a.is_empty() && !a[0].is_empty() && !a.iter().any(|x| x.contains('\0')) => {
                    Ok(Probe::Exec(a))
                }
                _ => Err((span.clone(), "exec must be a non-empty array of strings without NUL bytes".into())),
            }
        }
        "tcp" => {
            Ok(Probe::Tcp(address(&string(v, "tcp", span)?, None).map_err(|m| (span.clone(), format!("tcp {m}")))?))
        }
        "http" => {
            let url = string(v, "http", span)?;
            let bad = |m: &str| (span.clone(), format!("http {url:?}: {m}"));
            let rest =
                url.strip_prefix("http://").ok_or_else(|| bad("must begin with http:// (https is not probed)"))?;
            // The authority ends at the path or the query (`host:80?x` asks for `/?x`).
            let (authority, path) = match rest.find(['/', '?']) {
                Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
                Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
                None => (rest, "/".to_owned()),
            };
            if path.chars().any(|c| c.is_control() || c == ' ') {
                return Err(bad("the path may not hold spaces or control characters"));
            }
            let addr = address(authority, Some(80)).map_err(|m| bad(&m))?;
            Ok(Probe::Http { addr, host: authority.to_owned(), path })
        }
        _ => unreachable!("asked for a probe key"),
    }
}

const PROBES: [&str; 3] = ["exec", "tcp", "http"];

/// Checks `ready = { ... }`.
pub(crate) fn ready(v: &Value, span: &Range<usize>, captured_output: bool) -> Located<ReadyWhen> {
    let t = v.as_table().ok_or_else(|| (span.clone(), "ready must be a table, such as { notify = \"fd\" }".into()))?;
    let kinds: Vec<&str> = ["notify", "log"].into_iter().chain(PROBES).filter(|k| t.contains_key(*k)).collect();
    let [kind] = kinds[..] else {
        return Err((span.clone(), "ready takes one of notify, log, exec, tcp or http".into()));
    };
    let allowed: &[&str] = match kind {
        "notify" => &["notify", "fd"],
        "log" => &["log"],
        _ => &[kind, "interval", "timeout"],
    };
    if let Some(k) = t.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err((span.clone(), format!("ready: unknown key {k:?} with {kind} (allowed: {})", allowed.join(", "))));
    }
    match kind {
        "notify" => match (string(&t["notify"], "notify", span)?.as_str(), t.get("fd")) {
            ("fd", None) => Ok(ReadyWhen::Fd(3)),
            ("fd", Some(fd)) => match fd.as_integer() {
                Some(n @ 3..=255) => Ok(ReadyWhen::Fd(n as i32)),
                _ => Err((span.clone(), "ready fd must be a number from 3 to 255".into())),
            },
            ("systemd", None) => Ok(ReadyWhen::Systemd),
            ("systemd", Some(_)) => Err((span.clone(), "ready: fd goes with notify = \"fd\" only".into())),
            (other, _) => Err((span.clone(), format!("ready notify must be \"fd\" or \"systemd\", not {other:?}"))),
        },
        "log" => {
            let text = string(&t["log"], "log", span)?;
            if text.is_empty() || text.contains('\n') {
                return Err((span.clone(), "ready log must be a non-empty text on one line".into()));
            }
            if !captured_output {
                return Err((
                    span.clone(),
                    "ready log needs stdout or stderr = \"log\" (it reads the captured output)".into(),
                ));
            }
            Ok(ReadyWhen::Log(text))
        }
        _ => {
            let (interval, timeout) = timing(t, "ready", span)?;
            Ok(ReadyWhen::Probe { probe: probe_of(t, kind, span)?, interval, timeout })
        }
    }
}

/// A probe's `interval` and `timeout` (`what` is `ready` or `health`): each at least 10 ms.
fn timing(t: &toml::Table, what: &str, span: &Range<usize>) -> Located<(Duration, Duration)> {
    let at_least_10ms = |key: &str, default: Duration| {
        let name = format!("{what} {key}");
        let d = duration(t.get(key), &name, default, span)?;
        if d < Duration::from_millis(10) {
            return Err((span.clone(), format!("{name} must be at least 10ms")));
        }
        Ok(d)
    };
    Ok((at_least_10ms("interval", DEFAULT_INTERVAL)?, at_least_10ms("timeout", DEFAULT_TIMEOUT)?))
}

/// Checks `health = { ... }`.
pub(crate) fn health(v: &Value, span: &Range<usize>) -> Located<Health> {
    let t = v
        .as_table()
        .ok_or_else(|| (span.clone(), "health must be a table, such as { tcp = \"127.0.0.1:80\" }".into()))?;
    let kinds: Vec<&str> = PROBES.into_iter().filter(|k| t.contains_key(*k)).collect();
    let [kind] = kinds[..] else {
        return Err((span.clone(), "health takes one of exec, tcp or http".into()));
    };
    let allowed = [kind, "interval", "timeout", "failures", "start_period"];
    if let Some(k) = t.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err((span.clone(), format!("health: unknown key {k:?} (allowed: {})", allowed.join(", "))));
    }
    let failures = match t.get("failures") {
        None => DEFAULT_FAILURES,
        Some(f) => match f.as_integer() {
            Some(n @ 1..=1000) => n as u32,
            _ => return Err((span.clone(), "health failures must be a number from 1 to 1000".into())),
        },
    };
    let (interval, timeout) = timing(t, "health", span)?;
    Ok(Health {
        probe: probe_of(t, kind, span)?,
        interval,
        timeout,
        failures,
        start_period: duration(t.get("start_period"), "health start_period", Duration::ZERO, span)?,
    })
}

/// Checks `depends_on`: a list of names (each `started`), or a table of name → condition or
/// `{ condition, restart }`. Returns the names in order and their terms; `find(name)` locates a
/// name in the file for errors.
pub(crate) fn depends_on(v: &Value, span: &Range<usize>) -> Located<Vec<(String, Dependency)>> {
    let started = Dependency { condition: Condition::Started, restart: false };
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(|n| (n.to_owned(), started)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| (span.clone(), "depends_on must list service names".into())),
        Value::Table(t) => t
            .iter()
            .map(|(name, terms)| {
                let cond = |s: &str| match s {
                    "started" => Ok(Condition::Started),
                    "ready" => Ok(Condition::Ready),
                    "completed" => Ok(Condition::Completed),
                    other => Err((
                        span.clone(),
                        format!("depends_on {name}: condition must be \"started\", \"ready\" or \"completed\", not {other:?}"),
                    )),
                };
                let dep = match terms {
                    Value::String(s) => Dependency { condition: cond(s)?, restart: false },
                    Value::Table(t) => {
                        if let Some(k) = t.keys().find(|k| !["condition", "restart"].contains(&k.as_str())) {
                            return Err((span.clone(), format!("depends_on {name}: unknown key {k:?} (condition, restart)")));
                        }
                        let restart = match t.get("restart") {
                            None => false,
                            Some(Value::Boolean(b)) => *b,
                            Some(_) => return Err((span.clone(), format!("depends_on {name}: restart must be true or false"))),
                        };
                        let condition = match t.get("condition") {
                            None => Condition::Started,
                            Some(c) => cond(&string(c, "condition", span)?)?,
                        };
                        if restart && condition == Condition::Completed {
                            return Err((
                                span.clone(),
                                format!("depends_on {name}: restart = true goes with \"started\" or \"ready\" (a completed dependency does not come back)"),
                            ));
                        }
                        Dependency { condition, restart }
                    }
                    _ => return Err((span.clone(), format!("depends_on {name}: a condition (\"ready\") or a table"))),
                };
                Ok((name.clone(), dep))
            })
            .collect(),
        _ => Err((span.clone(), "depends_on must be a list of names or a table of name = condition".into())),
    }
}

/// Where `name` first appears inside `span` of `text` (quoted), else the whole span.
pub(crate) fn locate(text: &str, span: &Range<usize>, name: &str) -> Range<usize> {
    let inner = text.get(span.clone()).unwrap_or_default();
    for quoted in [format!("\"{name}\""), name.to_owned()] {
        if let Some(i) = inner.find(&quoted) {
            return span.start + i..span.start + i + quoted.len();
        }
    }
    span.clone()
}
