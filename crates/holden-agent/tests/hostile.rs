//! Hostile input: every malformed message gets an error or a closed connection, and the agent
//! keeps serving everyone else.

mod common;
use common::*;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn spawn_call(params: &str) -> Vec<u8> {
    format!(r#"{{"method":"io.holden.Agent.Spawn","parameters":{params}}}"#).into_bytes()
}

fn nul(mut v: Vec<u8>) -> Vec<u8> {
    v.push(0);
    v
}

/// (name, bytes) of malformed Varlink messages.
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let mut c: Vec<(&str, Vec<u8>)> = vec![
        ("not json", nul(b"hello".to_vec())),
        ("empty message", vec![0]),
        ("truncated json", nul(b"{\"method\":".to_vec())),
        ("json array", nul(b"[1,2,3]".to_vec())),
        ("json string", nul(b"\"io.holden.Agent.Ping\"".to_vec())),
        ("no method", nul(b"{}".to_vec())),
        ("method not a string", nul(br#"{"method":5}"#.to_vec())),
        ("unknown method", nul(br#"{"method":"io.holden.Agent.Explode"}"#.to_vec())),
        ("unknown interface", nul(br#"{"method":"com.example.Nope.Call"}"#.to_vec())),
        ("method without interface", nul(br#"{"method":"Spawn"}"#.to_vec())),
        ("parameters not an object", nul(br#"{"method":"io.holden.Agent.Spawn","parameters":"ls"}"#.to_vec())),
        ("more not a boolean", nul(br#"{"method":"io.holden.Agent.Ping","more":"yes"}"#.to_vec())),
        ("upgrade", nul(br#"{"method":"io.holden.Agent.Ping","upgrade":true}"#.to_vec())),
        ("spawn without parameters", nul(br#"{"method":"io.holden.Agent.Spawn"}"#.to_vec())),
        ("empty argv", nul(spawn_call(r#"{"argv":[]}"#))),
        ("argv not an array", nul(spawn_call(r#"{"argv":"ls"}"#))),
        ("argv of numbers", nul(spawn_call(r#"{"argv":[1,2]}"#))),
        ("empty program", nul(spawn_call(r#"{"argv":[""]}"#))),
        ("nul byte in argv", nul(spawn_call(r#"{"argv":["ls\u0000-l"]}"#))),
        ("nul byte in env", nul(spawn_call(r#"{"argv":["ls"],"env":["A=\u0000"]}"#))),
        ("env not an array", nul(spawn_call(r#"{"argv":["ls"],"env":{"A":"1"}}"#))),
        ("env entry without =", nul(spawn_call(r#"{"argv":["ls"],"env":["JUSTKEY"]}"#))),
        ("cwd of wrong type", nul(spawn_call(r#"{"argv":["ls"],"cwd":5}"#))),
        ("stdin index without fds", nul(spawn_call(r#"{"argv":["ls"],"stdin":0}"#))),
        ("negative fd index", nul(spawn_call(r#"{"argv":["ls"],"stdout":-1}"#))),
        ("huge fd index", nul(spawn_call(r#"{"argv":["ls"],"stderr":4294967296}"#))),
        ("umask out of range", nul(spawn_call(r#"{"argv":["ls"],"umask":99999}"#))),
        ("unknown rlimit", nul(spawn_call(r#"{"argv":["ls"],"rlimits":[{"resource":"bogus"}]}"#))),
        ("unknown parameter", nul(spawn_call(r#"{"argv":["ls"],"sudo":true}"#))),
        ("huge number", nul(spawn_call(r#"{"argv":["ls"],"umask":1e999}"#))),
        ("invalid utf-8", nul(b"{\"method\":\"io.holden.Agent.Ping\xff\xfe\"}".to_vec())),
        ("deep nesting", nul([b"[".repeat(100_000), b"]".repeat(100_000)].concat())),
    ];
    let many_args = (0..5000).map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(",");
    c.push(("too many arguments", nul(spawn_call(&format!(r#"{{"argv":[{many_args}]}}"#)))));
    c.push(("message over 1 MiB", vec![b' '; 1024 * 1024 + 100]));
    c.push(("declared 4 GiB legacy body", [1u32.to_ne_bytes(), u32::MAX.to_ne_bytes()].concat()));
    c
}

#[test]
fn malformed_messages_get_errors_and_the_agent_keeps_serving() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut bystander = agent.client();
    let corpus = corpus();
    assert!(corpus.len() >= 30);
    for (name, bytes) in &corpus {
        // No reply means the agent closed the connection: acceptable where framing is lost.
        if let Some(reply) = raw_exchange(&agent.socket, bytes) {
            let text = String::from_utf8_lossy(&reply);
            let is_error = text.contains("\"error\"") || reply.starts_with(&3u32.to_ne_bytes());
            assert!(is_error, "{name}: expected an error, got {text}");
        }
        bystander.ping().unwrap_or_else(|e| panic!("after {name}: bystander ping failed: {e}"));
    }
    let mut child = holden::Command::new("true").spawn_via(&mut bystander).unwrap();
    assert!(child.wait().unwrap().success());
    assert_no_children(agent.pid());
}

#[test]
fn errors_name_the_parameter() {
    require_root();
    let agent = TestAgent::start(&[]);
    for (params, parameter) in [
        (r#"{"argv":[]}"#, "argv"),
        (r#"{"argv":["ls"],"stdin":3}"#, "stdin"),
        (r#"{"argv":["x"],"umask":-1}"#, "umask"),
    ] {
        let reply = raw_exchange(&agent.socket, &nul(spawn_call(params))).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&reply[..reply.len() - 1]).unwrap();
        assert_eq!(v["error"], "io.holden.Agent.InvalidParameter");
        assert_eq!(v["parameters"]["parameter"], parameter);
    }
}

fn send_fds(stream: &UnixStream, bytes: &[u8], n: usize) -> std::io::Result<usize> {
    let files: Vec<OwnedFd> = (0..n).map(|_| std::fs::File::open("/dev/null").unwrap().into()).collect();
    let borrowed: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
    holden_sys::socket::send_with_fds(stream.as_fd(), bytes, &borrowed)
}

#[test]
fn too_many_descriptors_close_the_connection_and_leak_nothing() {
    require_root();
    let agent = TestAgent::start(&[]);
    agent.client().ping().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let before = fd_count(agent.pid());
    for _ in 0..20 {
        let mut s = UnixStream::connect(&agent.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Eight per message is the limit; two messages of eight without a NUL exceed it too.
        send_fds(&s, br#"{"method":"io.holden.Agent.Ping""#, 8).unwrap();
        send_fds(&s, b"}", 8).unwrap();
        let reply = read_reply(&mut s);
        assert!(reply.is_none_or(|r| String::from_utf8_lossy(&r).contains("InvalidMessage")));
    }
    // Unreferenced descriptors on a valid call are closed too.
    let mut s = UnixStream::connect(&agent.socket).unwrap();
    for _ in 0..20 {
        send_fds(&s, &nul(spawn_call(r#"{"argv":["true"]}"#)), 5).unwrap();
        let r = read_reply(&mut s).unwrap();
        assert!(String::from_utf8_lossy(&r).contains("\"pid\""));
    }
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fd_count(agent.pid()), before);
    agent.client().ping().unwrap();
    assert_no_children(agent.pid());
}

#[test]
fn garbage_streams_do_not_crash_the_agent() {
    require_root();
    let agent = TestAgent::start(&["--message-timeout", "0.2"]);
    let mut seed = 0x2545F4914F6CDD1Du64;
    for i in 0..300 {
        let mut bytes = Vec::new();
        for _ in 0..(i % 64 + 1) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push(seed as u8);
        }
        if i % 2 == 0 {
            bytes[0] = b'{';
        }
        if let Ok(mut s) = UnixStream::connect(&agent.socket) {
            let _ = s.write_all(&bytes);
        }
    }
    let mut c = agent.client();
    c.ping().unwrap();
    assert!(holden::Command::new("true").spawn_via(&mut c).unwrap().wait().unwrap().success());
}
