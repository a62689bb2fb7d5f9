//! The control socket, `io.holden.Orchestrator`: accepting connections, answering calls,
//! and streaming logs and events to the connections that follow them. A follower that falls
//! too far behind is dropped; supervision never waits for a reader.

use holden_orchestrator::control::{self, ControlError, Request, ServiceStatus, INTERFACE, MAX_LOG_BYTES};
use holden_orchestrator::machine::{Event, Wanted};
use holden_proto::VarlinkError;
use holden_sys::event::{READABLE, WRITABLE};
use holden_sys::socket;

use crate::conn::{Conn, Follow};
use crate::exits::exit_text;
use crate::logs::LogFile;
use crate::supervisor::{say, Supervisor, Svc, Target};

/// Control connections served at once; more are answered `TooManyClients` and closed.
pub const MAX_CONNECTIONS: usize = 1024;

impl Supervisor {
    pub(crate) fn accept(&mut self) {
        loop {
            let stream = match self.listener.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: the listener stays readable, so stop watching it for
                    // a moment instead of spinning; the clients wait in the backlog.
                    say(&format!("control socket: accept: {e}; pausing for 100 ms"));
                    self.pause_accepting();
                    return;
                }
            };
            if self.connections >= MAX_CONNECTIONS {
                // Too many: answered and closed at once, never queued for.
                let msg = ControlError::TooManyClients { limit: MAX_CONNECTIONS as u32 };
                let _ = std::io::Write::write(&mut &stream, &msg.encode());
                continue;
            }
            let Ok(cred) = socket::peer_cred(&stream) else { continue };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.token();
            if self.epoll.add(&stream, token, READABLE).is_ok() {
                self.connections += 1;
                self.targets.insert(token, Target::Conn(Conn::new(stream, cred)));
            }
        }
    }

    pub(crate) fn on_conn(&mut self, token: u64, events: u32) {
        let Some(Target::Conn(mut conn)) = self.targets.remove(&token) else { return };
        if events & WRITABLE != 0 {
            conn.flush();
        }
        let mut more = false;
        if events & (READABLE | libc::EPOLLHUP as u32) != 0 || !conn.closing {
            let input = conn.read();
            for msg in input.messages {
                if conn.closing {
                    break;
                }
                self.call(&mut conn, &msg);
            }
            conn.closing |= input.ended;
            more = input.more;
        }
        let gone = events & (libc::EPOLLHUP as u32 | libc::EPOLLERR as u32) != 0;
        if conn.closing && (conn.done() || gone) {
            self.followers.remove(&token);
            self.connections -= 1;
            let _ = self.epoll.delete(&conn.stream);
            return;
        }
        if conn.follow.is_some() {
            self.followers.insert(token);
        }
        if more {
            self.ready_conns.push(token);
        }
        // A connection that is closing is only written to (its reading side says EOF for ever).
        let interest = match (conn.closing, conn.pending()) {
            (true, _) => WRITABLE,
            (false, true) => READABLE | WRITABLE,
            (false, false) => READABLE,
        };
        let _ = self.epoll.modify(&conn.stream, token, interest);
        self.targets.insert(token, Target::Conn(conn));
    }

    /// Sends the message `make` builds to every connection following what `wants` accepts,
    /// building it only if there is one; drops followers that are too slow.
    pub(crate) fn broadcast(&mut self, wants: impl Fn(&Follow) -> bool, make: impl FnOnce() -> Vec<u8>) {
        let mut make = Some(make);
        let mut msg = Vec::new();
        let mut dead = Vec::new();
        for token in &self.followers {
            let Some(Target::Conn(c)) = self.targets.get_mut(token) else { continue };
            if !c.follow.as_ref().is_some_and(&wants) {
                continue;
            }
            if let Some(make) = make.take() {
                msg = make();
            }
            c.send(&msg);
            if c.closing {
                dead.push(*token);
            } else {
                let interest = if c.pending() { READABLE | WRITABLE } else { READABLE };
                let _ = self.epoll.modify(&c.stream, *token, interest);
            }
        }
        for t in dead {
            self.followers.remove(&t);
            if let Some(Target::Conn(c)) = self.targets.remove(&t) {
                let _ = self.epoll.delete(&c.stream);
                self.connections -= 1;
            }
        }
    }

    fn call(&mut self, conn: &mut Conn, msg: &[u8]) {
        let call = match holden_proto::parse_call(msg) {
            Ok(c) => c,
            Err(e) => {
                conn.send(&ControlError::InvalidParameter { parameter: e.to_string() }.encode());
                conn.closing = true;
                return;
            }
        };
        let described = [(INTERFACE, control::DESCRIPTION)];
        let service = holden_proto::service_call(&call.method, &call.parameters, "holden", &described);
        let reply = match service {
            Some(r) => r.map(Some).map_err(ControlError::from),
            None => control::parse_request(&call.method, &call.parameters).and_then(|req| {
                if (req.mutates() || matches!(req, Request::Logs(..))) && !self.access.allows(&conn.cred) {
                    return Err(ControlError::PermissionDenied { uid: conn.cred.uid });
                }
                self.answer(req, call.more, conn)
            }),
        };
        if call.oneway {
            return;
        }
        match reply {
            Ok(Some(params)) => conn.send(&holden_proto::encode_reply(&params, conn.follow.is_some())),
            Ok(None) => {}
            Err(e) => conn.send(&e.encode()),
        }
    }

    fn status(&self, name: &str) -> Result<ServiceStatus, ControlError> {
        let s = self.services.get(name).ok_or_else(|| ControlError::NoSuchService { name: name.into() })?;
        Ok(ServiceStatus {
            name: name.into(),
            state: s.m.state.name().into(),
            wanted: if s.m.wanted == Wanted::Up { "up" } else { "down" }.into(),
            pid: s.m.pid,
            since_ms: s.m.since.elapsed().as_millis() as u64,
            restarts: s.m.restarts,
            last_exit: s.m.last_exit.map(exit_text),
            last_error: s.m.last_error.clone(),
            agent: s.cfg.agent.clone(),
            ready: s.m.ready,
            health: s.m.health.name().into(),
            health_check: s.cfg.health.is_some(),
            waiting: s.waiting.clone(),
            ..crate::cgroups::usage(s)
        })
    }

    fn known(&self, names: &[String]) -> Result<(), ControlError> {
        match names.iter().find(|n| self.services.get(*n).is_none_or(|s| s.removing)) {
            Some(n) => Err(ControlError::NoSuchService { name: n.clone() }),
            None => Ok(()),
        }
    }

    /// In dependency order (`rev` for stopping).
    pub(crate) fn ordered(&self, names: &[String], rev: bool) -> Vec<String> {
        let mut v: Vec<String> = self.order.iter().filter(|n| names.contains(n)).cloned().collect();
        if rev {
            v.reverse();
        }
        v
    }

    /// Carries out one request; `Ok(None)` when the reply comes later (a stream).
    fn answer(&mut self, req: Request, more: bool, conn: &mut Conn) -> Result<Option<serde_json::Value>, ControlError> {
        let empty = serde_json::json!({});
        match req {
            Request::List => {
                let list: Vec<ServiceStatus> = self.order.iter().filter_map(|n| self.status(n).ok()).collect();
                let state_error = self.state_error.as_ref().map(|e| e.0.clone());
                Ok(Some(serde_json::json!({ "services": list, "state_file_error": state_error })))
            }
            Request::Status(name) => Ok(Some(serde_json::json!({ "service": self.status(&name)? }))),
            Request::Start(names) => {
                self.known(&names)?;
                if !self.shutting_down {
                    // What they depend on comes up first (held ones wait for its condition).
                    for n in self.to_start(&names) {
                        self.pending_stops.remove(&n);
                        self.by_hand(&n, false);
                        self.feed(&n, Event::Start);
                    }
                }
                Ok(Some(empty))
            }
            Request::Stop(names) => {
                self.known(&names)?;
                // What depends on them stops first; each stops once its dependents are down.
                let names = self.with_dependents(&names);
                for n in &names {
                    self.by_hand(n, true);
                }
                // The intent is on disk before any stop signal goes out (if the write fails,
                // it is retried like any other).
                if self.state_dirty {
                    self.write_state();
                }
                self.pending_stops.extend(names);
                self.advance_stops();
                Ok(Some(empty))
            }
            Request::Restart(names) => {
                self.known(&names)?;
                for n in self.ordered(&names, true) {
                    self.feed(&n, Event::Stop);
                }
                if !self.shutting_down {
                    for n in self.to_start(&names) {
                        self.pending_stops.remove(&n);
                        self.by_hand(&n, false);
                        self.feed(&n, Event::Start);
                    }
                }
                Ok(Some(empty))
            }
            Request::Kill(name, sig) => {
                let s = self.services.get(&name).ok_or_else(|| ControlError::NoSuchService { name: name.clone() })?;
                if s.proc.is_none() {
                    return Err(ControlError::NotRunning { name });
                }
                self.signal(&name, sig);
                Ok(Some(empty))
            }
            Request::Reload => {
                self.reload_and_say("holden reload").map(|r| Some(serde_json::to_value(r).expect("plain struct")))
            }
            Request::Logs(name, lines) => {
                let s = self.services.get(&name).ok_or_else(|| ControlError::NoSuchService { name: name.clone() })?;
                let (tail, truncated) = match &s.log {
                    Some(l) => l.tail(lines as usize, MAX_LOG_BYTES),
                    None if Svc::logs_captured(&s.cfg) => {
                        LogFile::open(&self.log_dir, &name, self.cfg.log_max_size, self.cfg.log_keep)
                            .map(|l| l.tail(lines as usize, MAX_LOG_BYTES))
                            .unwrap_or_default()
                    }
                    None => return Err(ControlError::NoLog { name }),
                };
                if more {
                    conn.follow = Some(Follow::Logs(name));
                }
                let mut reply = serde_json::json!({ "lines": tail });
                if truncated {
                    reply["truncated"] = true.into();
                }
                Ok(Some(reply))
            }
            Request::Events => {
                if !more {
                    return Err(ControlError::InvalidParameter {
                        parameter: "more: Events streams, so the call needs \"more\": true".into(),
                    });
                }
                conn.follow = Some(Follow::Events);
                Ok(None)
            }
        }
    }

    /// Records that the operator stopped (or started) a service by hand: it survives a crash.
    fn by_hand(&mut self, name: &str, stopped: bool) {
        if let Some(s) = self.services.get_mut(name) {
            if s.stopped_by_hand != stopped {
                s.stopped_by_hand = stopped;
                self.state_dirty = true;
            }
            // A stop by hand also cancels the start a pending reload would make.
            if let (true, Some((_, start))) = (stopped, s.replacement.as_mut()) {
                *start = false;
            }
        }
    }
}
