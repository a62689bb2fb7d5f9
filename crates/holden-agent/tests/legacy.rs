//! The Holden v0.2 protocol on the agent's socket, driven by a v0.2 client written from the
//! spec (`legacy-v0.2-protocol.md`): raw host-endian structs, the pidfd in a separate one-byte
//! message.

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

const START_PROCESS: u32 = 1;
const PROCESS_STARTED: u32 = 2;
const PROCESS_ERROR: u32 = 3;
const PING: u32 = 11;
const PONG: u32 = 12;
const START_BODY: usize = 8452;

/// A v0.2 client, as the C orchestrator of v0.2 was.
struct V02 {
    s: UnixStream,
}

#[derive(Debug)]
enum Reply {
    Started { host_pid: i32, pidfd: OwnedFd },
    Error(String),
    Pong,
    Closed,
}

fn header(ty: u32, len: u32) -> Vec<u8> {
    [ty.to_ne_bytes(), len.to_ne_bytes()].concat()
}

fn start_body(name: &str, args: &[&str], count: i32) -> Vec<u8> {
    let mut b = vec![0u8; START_BODY];
    b[..name.len()].copy_from_slice(name.as_bytes());
    for (i, a) in args.iter().enumerate() {
        b[256 + i * 256..256 + i * 256 + a.len()].copy_from_slice(a.as_bytes());
    }
    b[8448..].copy_from_slice(&count.to_ne_bytes());
    b
}

impl V02 {
    fn connect(socket: &std::path::Path) -> V02 {
        let s = UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        V02 { s }
    }

    fn send(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes);
    }

    fn start(&mut self, name: &str, args: &[&str]) -> Reply {
        let mut m = header(START_PROCESS, START_BODY as u32);
        m.extend(start_body(name, args, args.len() as i32));
        self.send(&m);
        self.reply()
    }

    fn ping(&mut self) -> Reply {
        self.send(&header(PING, 0));
        self.reply()
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> bool {
        self.s.read_exact(buf).is_ok()
    }

    fn reply(&mut self) -> Reply {
        let mut h = [0u8; 8];
        if !self.read_exact(&mut h) {
            return Reply::Closed;
        }
        let ty = u32::from_ne_bytes(h[..4].try_into().unwrap());
        let len = u32::from_ne_bytes(h[4..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len];
        assert!(self.read_exact(&mut body), "body of type {ty}");
        match ty {
            PROCESS_STARTED => {
                assert_eq!(len, 8);
                let host_pid = i32::from_ne_bytes(body[..4].try_into().unwrap());
                // The pidfd arrives in a separate message of one byte, 'x'.
                let mut byte = [0u8; 1];
                let mut fds = Vec::new();
                let got = holden_sys::socket::recv_with_fds(self.s.as_fd(), &mut byte, &mut fds).unwrap();
                assert_eq!((got.len, byte[0], fds.len()), (1, b'x', 1));
                Reply::Started { host_pid, pidfd: fds.pop().unwrap() }
            }
            PROCESS_ERROR => {
                assert_eq!(len, 512);
                let end = body.iter().position(|&b| b == 0).expect("NUL-terminated error text");
                Reply::Error(String::from_utf8_lossy(&body[..end]).into_owned())
            }
            PONG => Reply::Pong,
            other => panic!("unexpected reply type {other}"),
        }
    }
}

/// Waits for the process behind `pidfd` to end and checks its exit code (128 + signal) where the
/// kernel can tell a pidfd's holder (PIDFD_INFO_EXIT, 6.15+); on older kernels a v0.2 caller
/// learns only that it ended, so that is all this checks there.
fn assert_exit(pidfd: &OwnedFd, code: i32) {
    assert!(holden_sys::event::poll_readable(pidfd.as_fd(), Some(Duration::from_secs(10))).unwrap());
    if !holden_sys::process::probe_features().pidfd_info_exit {
        return;
    }
    loop {
        if let Some(e) = holden_sys::process::pidfd_exit_info(pidfd.as_fd()).unwrap() {
            let got = match e {
                holden_sys::process::Exit::Exited(c) => c,
                holden_sys::process::Exit::Signaled { signal, .. } => 128 + signal,
            };
            assert_eq!(got, code);
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn v02_client_spawns_pings_and_gets_working_pidfds() {
    require_root();
    let agent = TestAgent::start(&[]);
    // Several requests on one connection.
    let mut c = V02::connect(&agent.socket);
    assert!(matches!(c.ping(), Reply::Pong));
    for code in [0, 3, 42] {
        match c.start("sh", &["-c", &format!("exit {code}")]) {
            Reply::Started { host_pid, pidfd } => {
                assert!(host_pid > 0);
                assert_exit(&pidfd, code);
            }
            other => panic!("{other:?}"),
        }
    }
    // The pidfd signals the process.
    let Reply::Started { pidfd, .. } = c.start("sleep", &["30"]) else { panic!() };
    holden_sys::process::pidfd_send_signal(&pidfd, 9).unwrap();
    assert_exit(&pidfd, 128 + 9);
    assert!(matches!(c.ping(), Reply::Pong));
    // Requests written back to back in one write are all answered, in order.
    let mut burst = header(PING, 0);
    burst.extend(header(START_PROCESS, START_BODY as u32));
    burst.extend(start_body("true", &[], 0));
    burst.extend(header(PING, 0));
    c.send(&burst);
    assert!(matches!(c.reply(), Reply::Pong));
    let Reply::Started { pidfd, .. } = c.reply() else { panic!("pipelined START_PROCESS") };
    assert_exit(&pidfd, 0);
    assert!(matches!(c.reply(), Reply::Pong));
    // One connection per request, as v0.2's own orchestrator does.
    for _ in 0..20 {
        let Reply::Started { pidfd, .. } = V02::connect(&agent.socket).start("true", &[]) else { panic!() };
        assert_exit(&pidfd, 0);
    }
    assert_no_children(agent.pid());
}

#[test]
fn v02_missing_program_is_an_error_not_a_started_process() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut c = V02::connect(&agent.socket);
    match c.start("holden-no-such-program", &[]) {
        Reply::Error(text) => assert!(text.contains("no such file"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.ping(), Reply::Pong), "the connection keeps serving");
    assert_no_children(agent.pid());
}

#[test]
fn v02_thousand_short_spawns_never_fail() {
    // v0.2 lost about 0.5 % of these to a SIGCHLD handler that reaped before pidfd_open.
    require_root();
    let agent = TestAgent::start(&[]);
    let mut c = V02::connect(&agent.socket);
    for i in 0..1000 {
        match c.start("/bin/true", &[]) {
            Reply::Started { pidfd, .. } => assert_exit(&pidfd, 0),
            other => panic!("spawn {i}: {other:?}"),
        }
    }
    assert_no_children(agent.pid());
}

/// (name, bytes, whether the connection may stay usable afterwards).
fn hostile() -> Vec<(&'static str, Vec<u8>)> {
    let ok = start_body("true", &[], 0);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = ok.clone();
        f(&mut b);
        [header(START_PROCESS, START_BODY as u32), b].concat()
    };
    vec![
        ("length over the maximum", header(START_PROCESS, u32::MAX)),
        ("length of 64 KiB", [header(START_PROCESS, 65536), vec![0; 65536]].concat()),
        ("start with a short body", [header(START_PROCESS, 100), vec![b'a'; 100]].concat()),
        ("start with a long body", [header(START_PROCESS, START_BODY as u32 - 1), vec![0; START_BODY - 1]].concat()),
        ("arg_count 33", with(&|b| b[8448..].copy_from_slice(&33i32.to_ne_bytes()))),
        ("arg_count -1", with(&|b| b[8448..].copy_from_slice(&(-1i32).to_ne_bytes()))),
        ("arg_count i32::MIN", with(&|b| b[8448..].copy_from_slice(&i32::MIN.to_ne_bytes()))),
        ("arg_count i32::MAX", with(&|b| b[8448..].copy_from_slice(&i32::MAX.to_ne_bytes()))),
        ("name without NUL", with(&|b| b[..256].fill(b'a'))),
        (
            "argument without NUL",
            with(&|b| {
                b[8448..].copy_from_slice(&1i32.to_ne_bytes());
                b[256..512].fill(b'z');
            }),
        ),
        ("empty name", with(&|b| b[0] = 0)),
        ("ping with a body", [header(PING, 4), vec![1, 2, 3, 4]].concat()),
        ("retired STOP_PROCESS", header(7, 0)),
        ("retired LIST_PROCESSES", header(5, 0)),
        ("reply type sent as request", [header(PROCESS_STARTED, 8), vec![0; 8]].concat()),
        ("unknown type 12 (PONG) with body", [header(PONG, 3), vec![9; 3]].concat()),
        ("truncated header", vec![1, 0, 0]),
        ("header then silence", header(START_PROCESS, START_BODY as u32)),
        ("non-UTF-8 program", with(&|b| b[..3].copy_from_slice(&[0xff, 0xfe, 0]))),
    ]
}

#[test]
fn v02_hostile_messages_get_errors_and_the_agent_keeps_serving() {
    require_root();
    let agent = TestAgent::start(&["--message-timeout", "0.5"]);
    let corpus = hostile();
    assert!(corpus.len() >= 15);
    for (name, bytes) in corpus {
        let mut c = V02::connect(&agent.socket);
        c.send(&bytes);
        match c.reply() {
            Reply::Error(_) | Reply::Closed => {}
            other => panic!("{name}: {other:?}"),
        }
        let mut fresh = V02::connect(&agent.socket);
        assert!(matches!(fresh.ping(), Reply::Pong), "after {name}");
    }
    // Errors that leave the framing intact keep the connection serving.
    let mut c = V02::connect(&agent.socket);
    c.send(&[header(START_PROCESS, START_BODY as u32), start_body("true", &[], 40)].concat());
    assert!(matches!(c.reply(), Reply::Error(t) if t.contains("arg_count")));
    c.send(&header(9, 0));
    assert!(matches!(c.reply(), Reply::Error(t) if t == "Unknown message type: 9"));
    assert!(matches!(c.ping(), Reply::Pong));
    assert_no_children(agent.pid());
}
