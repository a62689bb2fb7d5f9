//! # Holden's wire contract
//!
//! This crate is the specification of what travels on an agent's socket, and the code that
//! encodes and checks it. It does no I/O and has no runtime, so it can be fuzzed and tested
//! alone. Two protocols share one socket; the agent tells them apart by the first byte of a
//! connection: a byte from 1 to 12 (a v0.2 message type, little-endian) is the v0.2 legacy
//! protocol ([`legacy`]); anything else is Varlink.
//!
//! ## Framing (Varlink)
//! A `SOCK_STREAM` Unix socket carrying JSON objects, each terminated by one NUL byte
//! (<https://varlink.org>). A message, NUL excluded, is at most [`MAX_MESSAGE`] bytes; a longer
//! one gets `InvalidMessage` and the connection is closed, because framing is lost. A message
//! that has begun must arrive whole within the agent's message deadline (10 s by default) or the
//! connection is closed; an idle connection between messages is never closed.
//!
//! ## Calls and replies
//! A call is `{"method": "io.holden.Agent.Spawn", "parameters": {...}, "more": true}`; the keys
//! `oneway` (no reply is sent) and `upgrade` (refused) are also read, other keys are ignored.
//! A reply is `{"parameters": {...}}`, with `"continues": true` on every reply but the last of a
//! `more` call. An error is `{"error": "io.holden.Agent.ExecFailed", "parameters": {...}}`. Calls
//! on one connection are answered in order; a call is read only once the previous one is
//! answered in full.
//!
//! ## Descriptors (the sd-varlink convention)
//! Descriptors travel as `SCM_RIGHTS` ancillary data on the message they belong to, sent with
//! its first byte. An `int` parameter that names a descriptor (`stdin`, `pidfd`, ...) is an
//! index into that message's descriptor array. At most [`MAX_FDS`] descriptors per message;
//! more is `InvalidMessage` and the connection is closed. Descriptors that no parameter names are
//! closed. A client must not send a descriptor-carrying call while an earlier call of the same
//! connection is still unanswered.
//!
//! ## Interfaces
//! - `io.holden.Agent` ([`AGENT_DESCRIPTION`], the IDL with every method, type and error):
//!   `Ping`, `GetInfo`, `Spawn`; errors `ExecFailed(errno, message)`,
//!   `SpawnFailed(stage, errno, message)`, `InvalidParameter(parameter, reason)`,
//!   `InvalidMessage(reason)`, `PermissionDenied(uid)`, `TooManyClients(limit)`.
//! - `org.varlink.service` ([`SERVICE_DESCRIPTION`]): `GetInfo`, `GetInterfaceDescription`, with
//!   the standard errors `InterfaceNotFound(interface)`, `MethodNotFound(method)`,
//!   `MethodNotImplemented(method)` and `InvalidParameter(parameter)`.
//!
//! ## Limits
//! [`MAX_MESSAGE`] bytes per message, [`MAX_ARGS`] argv entries, [`MAX_ENV`] environment
//! entries (in `env` and `env_update` each), [`MAX_RLIMITS`] rlimits, [`MAX_FDS`] descriptors.
//!
//! Once released, a field name keeps its meaning; a retired field stays documented as retired.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod legacy;
pub mod signal;
mod spawn;

pub use spawn::{
    ExitStatus, Features, GetInfoReply, PassFd, Rlimit, SpawnParams, SpawnReply, MAX_FD_NUMBER, RLIMIT_NAMES,
};

use serde::Serialize;
use serde_json::{Map, Value};

/// The agent's interface name.
pub const AGENT_INTERFACE: &str = "io.holden.Agent";
/// The Varlink IDL of `io.holden.Agent`.
pub const AGENT_DESCRIPTION: &str = include_str!("io.holden.Agent.varlink");
/// The standard introspection interface's name.
pub const SERVICE_INTERFACE: &str = "org.varlink.service";
/// The Varlink IDL of `org.varlink.service`, as varlink.org defines it.
pub const SERVICE_DESCRIPTION: &str = include_str!("org.varlink.service.varlink");

/// Largest message, NUL excluded.
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// Most argv entries in a `Spawn`.
pub const MAX_ARGS: usize = 4096;
/// Most entries in `env`, and in `env_update`.
pub const MAX_ENV: usize = 4096;
/// Most rlimits in a `Spawn`.
pub const MAX_RLIMITS: usize = 16;
/// Most descriptors on one message.
pub const MAX_FDS: usize = 8;

/// Returns the length of the first complete message in `buf` (its NUL excluded), if any.
pub fn message_end(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == 0)
}

/// A decoded Varlink call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Fully qualified method name, `interface.Method`.
    pub method: String,
    /// The parameters object (empty when absent).
    pub parameters: Map<String, Value>,
    /// The caller accepts several replies.
    pub more: bool,
    /// The caller wants no reply.
    pub oneway: bool,
    /// The caller asks to leave Varlink after the reply (refused by Holden).
    pub upgrade: bool,
}

/// Parses JSON into a `Value`, refusing an object that names a key twice, at any depth (plain
/// `serde_json` keeps the last, so `{"method": "Spawn", "method": "Ping"}` would be a Ping).
pub fn parse_json_strict(msg: &[u8]) -> Result<Value, serde_json::Error> {
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    struct Strict(Value);
    impl<'de> Deserialize<'de> for Strict {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
            d.deserialize_any(StrictVisitor).map(Strict)
        }
    }
    struct StrictVisitor;
    impl<'de> Visitor<'de> for StrictVisitor {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut v = Vec::new();
            while let Some(Strict(e)) = seq.next_element()? {
                v.push(e);
            }
            Ok(Value::Array(v))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut m = Map::new();
            while let Some(k) = map.next_key::<String>()? {
                if m.contains_key(&k) {
                    return Err(de::Error::custom(format!("duplicate key {k:?}")));
                }
                let Strict(v) = map.next_value()?;
                m.insert(k, v);
            }
            Ok(Value::Object(m))
        }
    }
    serde_json::from_slice::<Strict>(msg).map(|s| s.0)
}

/// Decodes one call (without its NUL).
pub fn parse_call(msg: &[u8]) -> Result<Call, AgentError> {
    let invalid = |reason: String| AgentError::InvalidMessage { reason };
    let value = parse_json_strict(msg).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(invalid("a call must be a JSON object".into()));
    };
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return Err(invalid("\"method\" must be a string".into())),
        None => return Err(invalid("a call needs \"method\"".into())),
    };
    let parameters = match obj.remove("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(invalid("\"parameters\" must be an object".into())),
    };
    let flag = |obj: &Map<String, Value>, key: &str| -> Result<bool, AgentError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(invalid(format!("\"{key}\" must be a boolean"))),
        }
    };
    Ok(Call {
        more: flag(&obj, "more")?,
        oneway: flag(&obj, "oneway")?,
        upgrade: flag(&obj, "upgrade")?,
        method,
        parameters,
    })
}

/// Encodes a call, NUL-terminated.
pub fn encode_call(method: &str, parameters: &impl Serialize, more: bool) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a, P> {
        method: &'a str,
        parameters: &'a P,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    }
    terminate(serde_json::to_vec(&Out { method, parameters, more }))
}

/// Encodes a reply, NUL-terminated.
pub fn encode_reply(parameters: &impl Serialize, continues: bool) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a, P> {
        parameters: &'a P,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        continues: bool,
    }
    terminate(serde_json::to_vec(&Out { parameters, continues }))
}

/// An error that crosses the wire: a Varlink error name and its parameters. The agent's
/// [`AgentError`] and the orchestrator's control errors implement it, and
/// [`VarlinkError::encode`] is the one encoder of error replies.
pub trait VarlinkError {
    /// The fully qualified error name, such as `io.holden.Agent.ExecFailed`.
    fn varlink_name(&self) -> std::borrow::Cow<'_, str>;
    /// The error's parameters object.
    fn varlink_parameters(&self) -> Value;
    /// The error reply, NUL-terminated.
    fn encode(&self) -> Vec<u8> {
        let out = serde_json::json!({ "error": self.varlink_name(), "parameters": self.varlink_parameters() });
        terminate(serde_json::to_vec(&out))
    }
}

impl VarlinkError for AgentError {
    fn varlink_name(&self) -> std::borrow::Cow<'_, str> {
        self.name().into()
    }
    fn varlink_parameters(&self) -> Value {
        self.parameters()
    }
}

/// Encodes an error reply, NUL-terminated ([`VarlinkError::encode`]).
pub fn encode_error(error: &impl VarlinkError) -> Vec<u8> {
    error.encode()
}

fn terminate(v: serde_json::Result<Vec<u8>>) -> Vec<u8> {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no I/O.
    let mut v = v.expect("serialising a reply");
    v.push(0);
    v
}

/// A decoded reply, as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The parameters object (empty when absent).
    pub parameters: Map<String, Value>,
    /// More replies follow.
    pub continues: bool,
    /// The error name, if this is an error reply.
    pub error: Option<String>,
}

/// Decodes one reply (without its NUL).
pub fn parse_reply(msg: &[u8]) -> Result<Reply, AgentError> {
    let invalid = |reason: String| AgentError::InvalidMessage { reason };
    let value = parse_json_strict(msg).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(invalid("a reply must be a JSON object".into()));
    };
    let parameters = match obj.remove("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(invalid("\"parameters\" must be an object".into())),
    };
    let continues = matches!(obj.get("continues"), Some(Value::Bool(true)));
    let error = match obj.remove("error") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => Some(e),
        Some(_) => return Err(invalid("\"error\" must be a string".into())),
    };
    Ok(Reply { parameters, continues, error })
}

/// Every error an agent sends, by its Varlink name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// `io.holden.Agent.ExecFailed`.
    #[error("exec failed: {message} (errno {errno})")]
    ExecFailed {
        /// The errno of execve(2).
        errno: i32,
        /// Human-readable text naming the program.
        message: String,
    },
    /// `io.holden.Agent.SpawnFailed`.
    #[error("spawn failed at {stage}: {message} (errno {errno})")]
    SpawnFailed {
        /// `clone`, `stdio`, `setsid`, `rlimit`, `user`, `cwd`, `deliver` or `receive`.
        stage: String,
        /// The errno of the failing call.
        errno: i32,
        /// Human-readable text.
        message: String,
    },
    /// `io.holden.Agent.InvalidParameter`.
    #[error("invalid parameter {parameter}: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        parameter: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `io.holden.Agent.InvalidMessage`.
    #[error("invalid message: {reason}")]
    InvalidMessage {
        /// What is wrong with it.
        reason: String,
    },
    /// `io.holden.Agent.PermissionDenied`.
    #[error("permission denied for uid {uid}")]
    PermissionDenied {
        /// The caller's uid as the agent saw it.
        uid: u32,
    },
    /// `io.holden.Agent.TooManyClients`.
    #[error("too many clients (limit {limit})")]
    TooManyClients {
        /// The agent's connection limit.
        limit: u32,
    },
    /// `org.varlink.service.MethodNotFound`.
    #[error("method not found: {method}")]
    MethodNotFound {
        /// The method that was called.
        method: String,
    },
    /// `org.varlink.service.InterfaceNotFound`.
    #[error("interface not found: {interface}")]
    InterfaceNotFound {
        /// The interface that was asked for.
        interface: String,
    },
    /// `org.varlink.service.MethodNotImplemented`.
    #[error("method not implemented: {method}")]
    MethodNotImplemented {
        /// The method (or call flag) that is not implemented.
        method: String,
    },
    /// Any other error name, with its raw parameters (for forward compatibility).
    #[error("{name}: {parameters}")]
    Other {
        /// The error name.
        name: String,
        /// Its parameters, as JSON text.
        parameters: String,
    },
}

impl AgentError {
    /// The Varlink error name.
    pub fn name(&self) -> &str {
        match self {
            AgentError::ExecFailed { .. } => "io.holden.Agent.ExecFailed",
            AgentError::SpawnFailed { .. } => "io.holden.Agent.SpawnFailed",
            AgentError::InvalidParameter { .. } => "io.holden.Agent.InvalidParameter",
            AgentError::InvalidMessage { .. } => "io.holden.Agent.InvalidMessage",
            AgentError::PermissionDenied { .. } => "io.holden.Agent.PermissionDenied",
            AgentError::TooManyClients { .. } => "io.holden.Agent.TooManyClients",
            AgentError::MethodNotFound { .. } => "org.varlink.service.MethodNotFound",
            AgentError::InterfaceNotFound { .. } => "org.varlink.service.InterfaceNotFound",
            AgentError::MethodNotImplemented { .. } => "org.varlink.service.MethodNotImplemented",
            AgentError::Other { name, .. } => name,
        }
    }

    /// The error's parameters object.
    pub fn parameters(&self) -> Value {
        use serde_json::json;
        match self {
            AgentError::ExecFailed { errno, message } => json!({ "errno": errno, "message": message }),
            AgentError::SpawnFailed { stage, errno, message } => {
                json!({ "stage": stage, "errno": errno, "message": message })
            }
            AgentError::InvalidParameter { parameter, reason } => {
                json!({ "parameter": parameter, "reason": reason })
            }
            AgentError::InvalidMessage { reason } => json!({ "reason": reason }),
            AgentError::PermissionDenied { uid } => json!({ "uid": uid }),
            AgentError::TooManyClients { limit } => json!({ "limit": limit }),
            AgentError::MethodNotFound { method } => json!({ "method": method }),
            AgentError::InterfaceNotFound { interface } => json!({ "interface": interface }),
            AgentError::MethodNotImplemented { method } => json!({ "method": method }),
            AgentError::Other { parameters, .. } => {
                serde_json::from_str(parameters).unwrap_or(Value::Object(Map::new()))
            }
        }
    }

    /// Rebuilds an error from its wire form; unknown names or malformed fields give `Other`.
    pub fn from_wire(name: &str, parameters: &Map<String, Value>) -> AgentError {
        let s = |k: &str| parameters.get(k).and_then(Value::as_str).map(str::to_owned);
        let i = |k: &str| parameters.get(k).and_then(Value::as_i64);
        let known = match name {
            "io.holden.Agent.ExecFailed" => i("errno")
                .zip(s("message"))
                .map(|(errno, message)| AgentError::ExecFailed { errno: errno as i32, message }),
            "io.holden.Agent.SpawnFailed" => match (s("stage"), i("errno"), s("message")) {
                (Some(stage), Some(errno), Some(message)) => {
                    Some(AgentError::SpawnFailed { stage, errno: errno as i32, message })
                }
                _ => None,
            },
            "io.holden.Agent.InvalidParameter" => s("parameter")
                .map(|parameter| AgentError::InvalidParameter { parameter, reason: s("reason").unwrap_or_default() }),
            // The standard error has only `parameter`.
            "org.varlink.service.InvalidParameter" => {
                s("parameter").map(|parameter| AgentError::InvalidParameter { parameter, reason: String::new() })
            }
            "io.holden.Agent.InvalidMessage" => s("reason").map(|reason| AgentError::InvalidMessage { reason }),
            "io.holden.Agent.PermissionDenied" => i("uid").map(|uid| AgentError::PermissionDenied { uid: uid as u32 }),
            "io.holden.Agent.TooManyClients" => {
                i("limit").map(|limit| AgentError::TooManyClients { limit: limit as u32 })
            }
            "org.varlink.service.MethodNotFound" => s("method").map(|method| AgentError::MethodNotFound { method }),
            "org.varlink.service.InterfaceNotFound" => {
                s("interface").map(|interface| AgentError::InterfaceNotFound { interface })
            }
            "org.varlink.service.MethodNotImplemented" => {
                s("method").map(|method| AgentError::MethodNotImplemented { method })
            }
            _ => None,
        };
        known.unwrap_or_else(|| AgentError::Other {
            name: name.to_owned(),
            parameters: Value::Object(parameters.clone()).to_string(),
        })
    }
}

/// `org.varlink.service.GetInfo`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ServiceInfo {
    /// Who made it.
    pub vendor: String,
    /// What it is.
    pub product: String,
    /// Its version.
    pub version: String,
    /// Where to read about it.
    pub url: String,
    /// The interfaces it serves.
    pub interfaces: Vec<String>,
}

/// Whether a peer (its uid, gid and supplementary groups, as `SO_PEERCRED` and
/// `SO_PEERGROUPS` give them) may call what needs privilege on a Holden server: root, the
/// server's own uid, a uid in `uids`, or a member of a group in `gids`. The one access rule of
/// the agent and the orchestrator.
pub fn peer_allowed(uid: u32, gid: u32, groups: &[u32], own_uid: u32, uids: &[u32], gids: &[u32]) -> bool {
    uid == 0 || uid == own_uid || uids.contains(&uid) || gids.contains(&gid) || groups.iter().any(|g| gids.contains(g))
}

/// Why an `org.varlink.service` call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceError {
    /// `GetInterfaceDescription` of an interface the server does not serve.
    InterfaceNotFound(String),
    /// `interface` is missing or not a string.
    InvalidInterface,
}

impl From<ServiceError> for AgentError {
    fn from(e: ServiceError) -> AgentError {
        match e {
            ServiceError::InterfaceNotFound(interface) => AgentError::InterfaceNotFound { interface },
            ServiceError::InvalidInterface => {
                AgentError::InvalidParameter { parameter: "interface".into(), reason: "must be a string".into() }
            }
        }
    }
}

/// Answers the `org.varlink.service` calls every Holden server serves the same way:
/// `GetInfo` (Holden, `product`, this version, the interfaces) and `GetInterfaceDescription`
/// of `org.varlink.service` itself or of one of `interfaces` (name, description). `None` when
/// `method` is neither, so the server's own dispatch goes on.
pub fn service_call(
    method: &str,
    parameters: &Map<String, Value>,
    product: &str,
    interfaces: &[(&str, &str)],
) -> Option<Result<Value, ServiceError>> {
    let all = || std::iter::once((SERVICE_INTERFACE, SERVICE_DESCRIPTION)).chain(interfaces.iter().copied());
    match method {
        "org.varlink.service.GetInfo" => {
            let info = ServiceInfo {
                vendor: "Holden".into(),
                product: product.into(),
                version: env!("CARGO_PKG_VERSION").into(),
                url: String::new(),
                interfaces: all().map(|(name, _)| name.to_owned()).collect(),
            };
            Some(Ok(serde_json::to_value(info).expect("a plain struct")))
        }
        "org.varlink.service.GetInterfaceDescription" => Some(match parameters.get("interface") {
            Some(Value::String(i)) => match all().find(|(name, _)| name == i) {
                Some((_, description)) => Ok(serde_json::json!({ "description": description })),
                None => Err(ServiceError::InterfaceNotFound(i.clone())),
            },
            _ => Err(ServiceError::InvalidInterface),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
