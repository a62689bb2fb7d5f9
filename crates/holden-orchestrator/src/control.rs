//! The control protocol: Varlink interface `io.holden.Orchestrator`, spoken on the
//! orchestrator's control socket by `holden status`, `holden start` and the rest.
//!
//! Framing is plain Varlink, as for the agent: each message is a JSON object followed by a NUL
//! byte; calls are answered in order; `more` asks for a stream (Logs, Events), whose replies
//! carry `"continues": true`. No descriptors travel on this socket.
//!
//! The interface description, [`DESCRIPTION`], is the contract; this module holds its types
//! and the checked decoding of every call's parameters. Errors are named
//! `io.holden.Orchestrator.<Name>` (see [`ControlError`]); a malformed call gets
//! `org.varlink.service.InvalidParameter`, an unknown method
//! `org.varlink.service.MethodNotFound`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The interface name.
pub const INTERFACE: &str = "io.holden.Orchestrator";
/// The interface description (Varlink IDL).
pub const DESCRIPTION: &str = include_str!("io.holden.Orchestrator.varlink");
/// The largest message either side accepts, NUL excluded.
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// The most names one Start/Stop/Restart call may carry.
pub const MAX_NAMES: usize = 4096;
/// The most log lines one Logs call may ask for.
pub const MAX_LOG_LINES: u32 = 100_000;
/// The most bytes of lines, written as JSON strings, one Logs reply carries (older lines are
/// left out, and the reply says `truncated`): half of [`MAX_MESSAGE`].
pub const MAX_LOG_BYTES: usize = MAX_MESSAGE / 2;

/// One service as the orchestrator sees it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// `stopped`, `starting`, `running`, `backing-off`, `stopping`, `exited` or `failed`.
    pub state: String,
    /// `up` or `down`.
    pub wanted: String,
    /// The process, while there is one (host pid).
    pub pid: Option<i32>,
    /// Milliseconds in the current state.
    pub since_ms: u64,
    /// Starts after the first.
    pub restarts: u32,
    /// How the last run ended: `code N`, `signal NAME` or `unknown`.
    pub last_exit: Option<String>,
    /// The last spawn error, until a spawn succeeds.
    pub last_error: Option<String>,
    /// The agent that spawns it; `None`: the orchestrator itself.
    pub agent: Option<String>,
    /// With a cgroup: its memory use (`memory.current`), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// With a cgroup: the CPU time used (`cpu.stat` `usage_usec`), in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_usec: Option<u64>,
    /// With a cgroup: the CPU used since the previous status of it, in percent of one CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u32>,
    /// With a cgroup: the OOM killer's kills there (`memory.events` `oom_kill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
    /// With a cgroup: its processes and threads (`pids.current`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Running and ready (its `ready` check passed; at once without one).
    #[serde(default)]
    pub ready: bool,
    /// `unknown`, `healthy` or `unhealthy`; `unknown` also without a health check.
    #[serde(default = "unknown")]
    pub health: String,
    /// Whether it has a health check (the table shows `-` where it has none).
    #[serde(default)]
    pub health_check: bool,
    /// Held back before its spawn: what it waits for (`waiting for db: ready`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

fn unknown() -> String {
    "unknown".into()
}

/// A state change, as Events streams it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// UTC, ISO 8601 with milliseconds.
    pub time: String,
    /// The service.
    pub service: String,
    /// Its new state.
    pub state: String,
    /// Its process, if it has one.
    pub pid: Option<i32>,
    /// How its last run ended.
    pub last_exit: Option<String>,
    /// Its last spawn error.
    pub last_error: Option<String>,
    /// Running and ready.
    #[serde(default)]
    pub ready: bool,
    /// `unknown`, `healthy` or `unhealthy`.
    #[serde(default = "unknown")]
    pub health: String,
    /// What changed: `state` (the state or the pid), `ready`, `healthy`, `unhealthy` or
    /// `waiting` (held back by a dependency).
    #[serde(default = "state_kind")]
    pub change: String,
    /// Held back before its spawn: what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

fn state_kind() -> String {
    "state".into()
}

/// What Reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// Services that are new and were started.
    pub added: Vec<String>,
    /// Services that are gone and were stopped.
    pub removed: Vec<String>,
    /// Services whose settings changed and that were restarted with them.
    pub changed: Vec<String>,
}

/// A decoded, checked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `List()`.
    List,
    /// `Status(name)`.
    Status(String),
    /// `Start(names)`.
    Start(Vec<String>),
    /// `Stop(names)`.
    Stop(Vec<String>),
    /// `Restart(names)`.
    Restart(Vec<String>),
    /// `Kill(name, signal)`.
    Kill(String, i32),
    /// `Reload()`.
    Reload,
    /// `Logs(name, lines)`; follow when the call has `more`.
    Logs(String, u32),
    /// `Events()`.
    Events,
}

impl Request {
    /// Whether the request changes anything (and so needs an allowed caller).
    pub fn mutates(&self) -> bool {
        matches!(self, Request::Start(_) | Request::Stop(_) | Request::Restart(_) | Request::Kill(..) | Request::Reload)
    }
}

/// Every error the control socket sends, by its Varlink name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// `io.holden.Orchestrator.NoSuchService`.
    #[error("no such service: {name}")]
    NoSuchService {
        /// The name asked for.
        name: String,
    },
    /// `io.holden.Orchestrator.NotRunning`.
    #[error("service {name} is not running")]
    NotRunning {
        /// The service.
        name: String,
    },
    /// `io.holden.Orchestrator.NoLog`.
    #[error("service {name} has no captured log (its stdout and stderr are not \"log\")")]
    NoLog {
        /// The service.
        name: String,
    },
    /// `io.holden.Orchestrator.ReloadFailed`: the configuration did not load; nothing changed.
    #[error("reload failed, nothing changed: {message}")]
    ReloadFailed {
        /// Why.
        message: String,
    },
    /// `io.holden.Orchestrator.InvalidParameter`.
    #[error("invalid parameter: {parameter}")]
    InvalidParameter {
        /// Which, and why.
        parameter: String,
    },
    /// `io.holden.Orchestrator.PermissionDenied`.
    #[error("permission denied for uid {uid}")]
    PermissionDenied {
        /// The caller's uid.
        uid: u32,
    },
    /// `io.holden.Orchestrator.TooManyClients`: the connection was refused.
    #[error("too many clients (limit {limit})")]
    TooManyClients {
        /// The orchestrator's connection limit.
        limit: u32,
    },
    /// `org.varlink.service.MethodNotFound`.
    #[error("method not found: {method}")]
    MethodNotFound {
        /// The method asked for.
        method: String,
    },
    /// `org.varlink.service.InterfaceNotFound`.
    #[error("interface not found: {interface}")]
    InterfaceNotFound {
        /// The interface asked for.
        interface: String,
    },
    /// Any other error name, as received.
    #[error("{name}: {parameters}")]
    Other {
        /// The error name.
        name: String,
        /// Its parameters, as JSON.
        parameters: String,
    },
}

impl ControlError {
    /// The Varlink error name.
    pub fn name(&self) -> String {
        let local = match self {
            ControlError::NoSuchService { .. } => "NoSuchService",
            ControlError::NotRunning { .. } => "NotRunning",
            ControlError::NoLog { .. } => "NoLog",
            ControlError::ReloadFailed { .. } => "ReloadFailed",
            ControlError::InvalidParameter { .. } => "InvalidParameter",
            ControlError::PermissionDenied { .. } => "PermissionDenied",
            ControlError::TooManyClients { .. } => "TooManyClients",
            ControlError::MethodNotFound { .. } => return "org.varlink.service.MethodNotFound".into(),
            ControlError::InterfaceNotFound { .. } => return "org.varlink.service.InterfaceNotFound".into(),
            ControlError::Other { name, .. } => return name.clone(),
        };
        format!("{INTERFACE}.{local}")
    }

    /// The error's parameters object.
    pub fn parameters(&self) -> Value {
        match self {
            ControlError::NoSuchService { name } | ControlError::NotRunning { name } | ControlError::NoLog { name } => {
                serde_json::json!({ "name": name })
            }
            ControlError::ReloadFailed { message } => serde_json::json!({ "message": message }),
            ControlError::InvalidParameter { parameter } => serde_json::json!({ "parameter": parameter }),
            ControlError::PermissionDenied { uid } => serde_json::json!({ "uid": uid }),
            ControlError::TooManyClients { limit } => serde_json::json!({ "limit": limit }),
            ControlError::MethodNotFound { method } => serde_json::json!({ "method": method }),
            ControlError::InterfaceNotFound { interface } => serde_json::json!({ "interface": interface }),
            ControlError::Other { parameters, .. } => serde_json::from_str(parameters).unwrap_or(Value::Null),
        }
    }

    /// Rebuilds an error from its wire form.
    pub fn from_wire(name: &str, p: &Map<String, Value>) -> ControlError {
        let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let local = name.strip_prefix(INTERFACE).and_then(|n| n.strip_prefix('.'));
        match (local, name) {
            (Some("NoSuchService"), _) => ControlError::NoSuchService { name: s("name") },
            (Some("NotRunning"), _) => ControlError::NotRunning { name: s("name") },
            (Some("NoLog"), _) => ControlError::NoLog { name: s("name") },
            (Some("ReloadFailed"), _) => ControlError::ReloadFailed { message: s("message") },
            (Some("InvalidParameter"), _) | (_, "org.varlink.service.InvalidParameter") => {
                ControlError::InvalidParameter { parameter: s("parameter") }
            }
            (Some("PermissionDenied"), _) => ControlError::PermissionDenied {
                uid: p.get("uid").and_then(Value::as_u64).unwrap_or(u64::from(u32::MAX)) as u32,
            },
            (Some("TooManyClients"), _) => ControlError::TooManyClients {
                limit: p.get("limit").and_then(Value::as_u64).unwrap_or(0).min(u64::from(u32::MAX)) as u32,
            },
            (_, "org.varlink.service.MethodNotFound") => ControlError::MethodNotFound { method: s("method") },
            (_, "org.varlink.service.InterfaceNotFound") => {
                ControlError::InterfaceNotFound { interface: s("interface") }
            }
            _ => ControlError::Other { name: name.into(), parameters: Value::Object(p.clone()).to_string() },
        }
    }
}

impl From<holden_proto::ServiceError> for ControlError {
    fn from(e: holden_proto::ServiceError) -> ControlError {
        match e {
            holden_proto::ServiceError::InterfaceNotFound(interface) => ControlError::InterfaceNotFound { interface },
            holden_proto::ServiceError::InvalidInterface => {
                ControlError::InvalidParameter { parameter: "interface: must be a string".into() }
            }
        }
    }
}

impl holden_proto::VarlinkError for ControlError {
    fn varlink_name(&self) -> std::borrow::Cow<'_, str> {
        self.name().into()
    }
    fn varlink_parameters(&self) -> Value {
        self.parameters()
    }
}

fn invalid(parameter: impl Into<String>) -> ControlError {
    ControlError::InvalidParameter { parameter: parameter.into() }
}

fn string(p: &Map<String, Value>, key: &str) -> Result<String, ControlError> {
    match p.get(key) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Ok(s.clone()),
        Some(Value::String(_)) => Err(invalid(format!("{key}: must be 1 to 256 bytes"))),
        Some(_) => Err(invalid(format!("{key}: must be a string"))),
        None => Err(invalid(format!("{key}: missing"))),
    }
}

fn names(p: &Map<String, Value>) -> Result<Vec<String>, ControlError> {
    let Some(Value::Array(a)) = p.get("names") else {
        return Err(invalid("names: must be an array of strings"));
    };
    if a.is_empty() || a.len() > MAX_NAMES {
        return Err(invalid(format!("names: must hold 1 to {MAX_NAMES} names")));
    }
    a.iter()
        .map(|v| match v {
            Value::String(s) if !s.is_empty() && s.len() <= 256 => Ok(s.clone()),
            _ => Err(invalid("names: each must be a string of 1 to 256 bytes")),
        })
        .collect()
}

fn no_extra(p: &Map<String, Value>, allowed: &[&str]) -> Result<(), ControlError> {
    match p.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!("{k}: unknown parameter"))),
        None => Ok(()),
    }
}

/// Decodes a call's method and parameters into a checked [`Request`].
pub fn parse_request(method: &str, p: &Map<String, Value>) -> Result<Request, ControlError> {
    let local = method.strip_prefix(INTERFACE).and_then(|m| m.strip_prefix('.'));
    let req = match (local, method) {
        (Some("List"), _) => no_extra(p, &[]).map(|_| Request::List)?,
        (Some("Status"), _) => {
            no_extra(p, &["name"])?;
            Request::Status(string(p, "name")?)
        }
        (Some("Start"), _) => no_extra(p, &["names"]).and_then(|_| names(p)).map(Request::Start)?,
        (Some("Stop"), _) => no_extra(p, &["names"]).and_then(|_| names(p)).map(Request::Stop)?,
        (Some("Restart"), _) => no_extra(p, &["names"]).and_then(|_| names(p)).map(Request::Restart)?,
        (Some("Kill"), _) => {
            no_extra(p, &["name", "signal"])?;
            let signal = match p.get("signal").and_then(Value::as_i64) {
                Some(s @ 1..=64) => s as i32,
                _ => return Err(invalid("signal: must be an integer from 1 to 64")),
            };
            Request::Kill(string(p, "name")?, signal)
        }
        (Some("Reload"), _) => no_extra(p, &[]).map(|_| Request::Reload)?,
        (Some("Logs"), _) => {
            no_extra(p, &["name", "lines"])?;
            let lines = match p.get("lines") {
                None | Some(Value::Null) => 10,
                Some(v) => match v.as_u64() {
                    Some(n) if n <= u64::from(MAX_LOG_LINES) => n as u32,
                    _ => return Err(invalid(format!("lines: must be an integer from 0 to {MAX_LOG_LINES}"))),
                },
            };
            Request::Logs(string(p, "name")?, lines)
        }
        (Some("Events"), _) => no_extra(p, &[]).map(|_| Request::Events)?,
        _ => return Err(ControlError::MethodNotFound { method: method.into() }),
    };
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, params: Value) -> Result<Request, ControlError> {
        let Value::Object(p) = params else { panic!() };
        parse_request(&format!("{INTERFACE}.{method}"), &p)
    }

    #[test]
    fn requests_decode_and_bad_parameters_are_named() {
        assert_eq!(req("List", serde_json::json!({})), Ok(Request::List));
        assert_eq!(
            req("Start", serde_json::json!({"names": ["a", "b"]})),
            Ok(Request::Start(vec!["a".into(), "b".into()]))
        );
        assert_eq!(req("Kill", serde_json::json!({"name": "a", "signal": 9})), Ok(Request::Kill("a".into(), 9)));
        assert_eq!(req("Logs", serde_json::json!({"name": "a"})), Ok(Request::Logs("a".into(), 10)));
        let bad = [
            ("Start", serde_json::json!({})),
            ("Start", serde_json::json!({"names": []})),
            ("Start", serde_json::json!({"names": [1]})),
            ("Stop", serde_json::json!({"names": ["a"], "extra": true})),
            ("Kill", serde_json::json!({"name": "a", "signal": 0})),
            ("Kill", serde_json::json!({"name": "a", "signal": "TERM"})),
            ("Status", serde_json::json!({"name": ""})),
            ("Logs", serde_json::json!({"name": "a", "lines": -1})),
            ("Logs", serde_json::json!({"name": "a", "lines": 1e12})),
        ];
        for (m, p) in bad {
            let e = req(m, p.clone()).unwrap_err();
            assert!(matches!(e, ControlError::InvalidParameter { .. }), "{m} {p}: {e:?}");
        }
        assert!(matches!(req("Nope", serde_json::json!({})), Err(ControlError::MethodNotFound { .. })));
        assert!(req("Reload", serde_json::json!({})).unwrap().mutates());
        assert!(!req("List", serde_json::json!({})).unwrap().mutates());
    }

    #[test]
    fn errors_round_trip_through_their_wire_form() {
        let errors = [
            ControlError::NoSuchService { name: "x".into() },
            ControlError::NotRunning { name: "x".into() },
            ControlError::NoLog { name: "x".into() },
            ControlError::ReloadFailed { message: "f:1:1: bad".into() },
            ControlError::InvalidParameter { parameter: "names".into() },
            ControlError::PermissionDenied { uid: 65534 },
            ControlError::TooManyClients { limit: 1024 },
            ControlError::MethodNotFound { method: "m".into() },
            ControlError::InterfaceNotFound { interface: "i".into() },
        ];
        for e in errors {
            let Value::Object(p) = e.parameters() else { panic!() };
            assert_eq!(ControlError::from_wire(&e.name(), &p), e);
        }
    }

    #[test]
    fn the_description_names_the_interface_and_every_method() {
        assert!(DESCRIPTION.contains(&format!("interface {INTERFACE}\n")));
        for m in ["List", "Status", "Start", "Stop", "Restart", "Kill", "Reload", "Logs", "Events"] {
            assert!(DESCRIPTION.contains(&format!("method {m}(")), "{m}");
        }
    }
}
