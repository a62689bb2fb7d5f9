//! Answering calls: a Varlink or v0.2 message taken from a connection's buffer, checked,
//! dispatched (Ping, GetInfo, Spawn, the service interface) and answered. The loop and the
//! connections are in the parent module.

use std::os::fd::OwnedFd;

use holden_proto::{self as proto, legacy, AgentError, SpawnParams, SpawnReply};
use holden_sys::process::Exit;

use super::Server;
use crate::conn::{fail_framing, push, take_fds};
use crate::log::{self, Level};

impl Server {
    /// Handles one Varlink message if a whole one is buffered; returns whether it did.
    pub(super) fn next_varlink(&mut self, id: u64) -> bool {
        let c = self.conns.get_mut(&id).expect("live connection");
        let Some(end) = proto::message_end(&c.inbuf) else {
            if c.inbuf.len() > proto::MAX_MESSAGE {
                fail_framing(c, &format!("message larger than {} bytes", proto::MAX_MESSAGE));
            }
            return false;
        };
        if end > proto::MAX_MESSAGE {
            fail_framing(c, &format!("message larger than {} bytes", proto::MAX_MESSAGE));
            return false;
        }
        let msg: Vec<u8> = c.inbuf.drain(..=end).collect();
        let fds = take_fds(c, end + 1);
        c.started = None;
        let call = proto::parse_call(&msg[..end]);
        let (reply, out_fds, watch) = match call {
            Ok(call) => {
                let oneway = call.oneway;
                let (r, f, w) = self.dispatch(id, call, fds);
                if oneway {
                    (None, Vec::new(), None)
                } else {
                    (Some(r), f, w)
                }
            }
            Err(e) => (Some(proto::encode_error(&e)), Vec::new(), None),
        };
        let c = self.conns.get_mut(&id).expect("live connection");
        let delivers = !out_fds.is_empty();
        if let Some(reply) = reply {
            push(c, reply, out_fds);
            if let (Some((pid, _)), true) = (watch, delivers) {
                c.out.back_mut().expect("just pushed").child = Some(pid);
            }
        }
        // `watch` is the spawned child; its exit is streamed only for a call with `more`.
        if let Some((pid, true)) = watch {
            c.watching = Some(pid);
            self.watches.insert(pid, id);
        }
        true
    }

    /// Answers one call: the reply, its descriptors, and a child to watch for an exit stream.
    fn dispatch(&mut self, id: u64, call: proto::Call, fds: Vec<OwnedFd>) -> Answer {
        let err = |e: AgentError| (proto::encode_error(&e), Vec::new(), None);
        if call.upgrade {
            return err(AgentError::MethodNotImplemented { method: format!("{} (upgrade)", call.method) });
        }
        let described = [(proto::AGENT_INTERFACE, proto::AGENT_DESCRIPTION)];
        if let Some(r) = proto::service_call(&call.method, &call.parameters, "holden-agent", &described) {
            return match r {
                Ok(v) => ok(&v),
                Err(e) => err(e.into()),
            };
        }
        match call.method.as_str() {
            "io.holden.Agent.Ping" => ok(&serde_json::json!({})),
            "io.holden.Agent.GetInfo" => ok(&self.info),
            "io.holden.Agent.Spawn" => {
                let c = &self.conns[&id];
                if !c.may_spawn {
                    log::log(
                        Level::Warn,
                        format_args!("pid {} uid {} gid {}: spawn denied", c.cred.pid, c.cred.uid, c.cred.gid),
                    );
                    return err(AgentError::PermissionDenied { uid: c.cred.uid });
                }
                let params = match SpawnParams::from_call(&call.parameters, fds.len()) {
                    Ok(p) => p,
                    Err(e) => return err(e),
                };
                let c = &self.conns[&id];
                let run_as = self.policy.run_as(&c.cred);
                if run_as.is_some() && (params.user.is_some() || params.group.is_some() || params.cgroup.is_some()) {
                    // Processes of this caller run as the caller: it may not choose another user,
                    // nor have the agent move its child into a cgroup of its choosing.
                    return err(AgentError::PermissionDenied { uid: c.cred.uid });
                }
                match self.spawner.spawn(&params, &fds, run_as) {
                    Ok(child) => {
                        log::log(Level::Debug, format_args!("spawned {} as pid {}", params.argv[0], child.pid));
                        let more = call.more && !call.oneway;
                        let reply = SpawnReply { pid: child.pid, pidfd: Some(0), exit: None };
                        (proto::encode_reply(&reply, more), vec![child.pidfd], Some((child.pid, more)))
                    }
                    Err(e) => {
                        log::log(Level::Info, format_args!("spawn {}: {e}", params.argv[0]));
                        err(e)
                    }
                }
            }
            m => match m.rsplit_once('.') {
                Some((iface, _)) if iface == proto::AGENT_INTERFACE || iface == proto::SERVICE_INTERFACE => {
                    err(AgentError::MethodNotFound { method: m.into() })
                }
                Some((iface, _)) => err(AgentError::InterfaceNotFound { interface: iface.into() }),
                None => err(AgentError::MethodNotFound { method: m.into() }),
            },
        }
    }

    /// Handles one v0.2 message if a whole one is buffered; returns whether it did.
    pub(super) fn next_legacy(&mut self, id: u64) -> bool {
        let c = self.conns.get_mut(&id).expect("live connection");
        // v0.2 clients send no descriptors; any that arrive are closed.
        c.infds.clear();
        if c.inbuf.len() < legacy::HEADER {
            return false;
        }
        let header: [u8; legacy::HEADER] = c.inbuf[..legacy::HEADER].try_into().expect("header size");
        let (ty, len) = legacy::parse_header(&header);
        if len as usize > legacy::MAX_BODY {
            log::log(
                Level::Warn,
                format_args!("pid {} uid {}: legacy length {len} too large, closing", c.cred.pid, c.cred.uid),
            );
            push(c, legacy::process_error(&format!("Invalid length {len} for message type {ty}")), Vec::new());
            c.close_after_flush = true;
            c.inbuf.clear();
            return false;
        }
        let total = legacy::HEADER + len as usize;
        if c.inbuf.len() < total {
            return false;
        }
        let msg: Vec<u8> = c.inbuf.drain(..total).collect();
        c.started = None;
        match legacy::decode(ty, &msg[legacy::HEADER..]) {
            Ok(legacy::Request::Ping) => push(c, legacy::pong(), Vec::new()),
            Ok(legacy::Request::StartProcess { name, args }) => {
                if !c.may_spawn {
                    log::log(Level::Warn, format_args!("pid {} uid {}: legacy spawn denied", c.cred.pid, c.cred.uid));
                    push(c, legacy::process_error("Permission denied"), Vec::new());
                    return true;
                }
                match self.spawner.spawn_legacy(&name, &args, self.policy.run_as(&c.cred)) {
                    Ok(child) => {
                        push(c, legacy::process_started(child.pid), Vec::new());
                        push(c, b"x".to_vec(), vec![child.pidfd]);
                        c.out.back_mut().expect("just pushed").child = Some(child.pid);
                    }
                    Err(e) => {
                        let text = match e {
                            AgentError::ExecFailed { message, .. } | AgentError::SpawnFailed { message, .. } => message,
                            other => other.to_string(),
                        };
                        push(c, legacy::process_error(&text), Vec::new());
                    }
                }
            }
            Err(text) => push(c, legacy::process_error(&text), Vec::new()),
        }
        true
    }
}

/// A reply, its descriptors, and the child it delivers with whether its exit is streamed.
type Answer = (Vec<u8>, Vec<OwnedFd>, Option<(i32, bool)>);

/// A single, final reply without descriptors.
fn ok<T: serde::Serialize>(v: &T) -> Answer {
    (proto::encode_reply(v, false), Vec::new(), None)
}

pub(super) fn exit_status(exit: Exit) -> proto::ExitStatus {
    match exit {
        Exit::Exited(code) => proto::ExitStatus { code: Some(code), signal: None, core_dumped: false },
        Exit::Signaled { signal, core_dumped } => proto::ExitStatus { code: None, signal: Some(signal), core_dumped },
    }
}
