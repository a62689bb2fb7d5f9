//! Concurrency and stalled clients: many callers at once, none delaying another.

mod common;
use common::*;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[test]
fn ten_thousand_spawns_from_eight_clients() {
    require_root();
    let agent = TestAgent::start(&[]);
    // Warm up, let the agent close that connection, then take the baseline of its descriptors.
    agent.client().ping().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let fds_before = fd_count(agent.pid());
    let socket = agent.socket.clone();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut client = holden::Agent::connect(&socket).unwrap();
                let mut failures = 0;
                for _ in 0..1250 {
                    match holden::Command::new("/bin/true").spawn_via(&mut client).and_then(|mut c| c.wait()) {
                        Ok(s) if s.success() => {}
                        other => {
                            eprintln!("spawn failed: {other:?}");
                            failures += 1;
                        }
                    }
                }
                failures
            })
        })
        .collect();
    let failures: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(failures, 0);
    assert_no_children(agent.pid());
    // Connections close asynchronously after the clients drop them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fd_count(agent.pid()) != fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(fd_count(agent.pid()), fds_before, "agent descriptors back to where they started");
}

#[test]
fn five_hundred_silent_connections_delay_nobody() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut silent: Vec<UnixStream> = (0..500).map(|_| UnixStream::connect(&agent.socket).unwrap()).collect();
    // Some send half a message and stop.
    for s in silent.iter_mut().take(100) {
        s.write_all(br#"{"method":"io.holden.Agent.Sp"#).unwrap();
    }
    let start = Instant::now();
    let mut client = agent.client();
    client.set_timeout(Duration::from_secs(2));
    client.ping().unwrap();
    let mut child = holden::Command::new("true").spawn_via(&mut client).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(start.elapsed() < scaled(Duration::from_secs(2)));
    drop(silent);
    assert_no_children(agent.pid());
}

#[test]
fn a_slow_message_is_cut_off_after_the_deadline_but_idle_connections_stay() {
    require_root();
    let agent = TestAgent::start(&["--message-timeout", "0.3"]);
    let mut partial = UnixStream::connect(&agent.socket).unwrap();
    partial.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    partial.write_all(br#"{"method":"io.holden"#).unwrap();
    let mut idle = agent.client();
    let start = Instant::now();
    let reply = read_reply(&mut partial).expect("an error before the close");
    assert!(String::from_utf8_lossy(&reply).contains("io.holden.Agent.InvalidMessage"));
    assert!(read_reply(&mut partial).is_none(), "then the connection is closed");
    assert!(start.elapsed() >= Duration::from_millis(250));
    // The idle connection was not cut: it still answers after the deadline passed.
    std::thread::sleep(Duration::from_millis(500));
    idle.ping().unwrap();
}

#[test]
fn an_exit_stream_connection_stays_open_while_it_waits() {
    require_root();
    let agent = TestAgent::start(&["--message-timeout", "0.2"]);
    let mut client = agent.client();
    client.force_exit_stream(true);
    let mut child = holden::Command::new("sh").args(["-c", "sleep 0.6; exit 7"]).spawn_via(&mut client).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(7));
}

#[test]
fn connection_limit_refuses_with_too_many_clients() {
    require_root();
    let agent = TestAgent::start(&["--max-connections", "3"]);
    // Let the agent close the readiness probe's connection first.
    std::thread::sleep(Duration::from_millis(200));
    let held: Vec<_> = (0..3)
        .map(|_| {
            let mut c = agent.client();
            c.ping().unwrap();
            c
        })
        .collect();
    let reply = raw_exchange(&agent.socket, b"").expect("an error reply");
    assert!(
        String::from_utf8_lossy(&reply).contains("io.holden.Agent.TooManyClients"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(50));
    agent.client().ping().unwrap();
}

#[test]
fn a_client_that_hangs_up_on_an_exit_stream_leaves_nothing() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    client.force_exit_stream(true);
    let child = holden::Command::new("sleep").arg("0.3").spawn_via(&mut client).unwrap();
    let pid = child.pid().unwrap();
    drop(child);
    std::thread::sleep(Duration::from_millis(600));
    assert!(!alive(pid));
    assert_no_children(agent.pid());
    agent.client().ping().unwrap();
}

#[test]
fn pipelined_calls_in_one_write_are_all_answered_in_order() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut s = UnixStream::connect(&agent.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let calls = concat!(
        "{\"method\":\"io.holden.Agent.Ping\"}\0",
        "{\"method\":\"io.holden.Agent.GetInfo\"}\0",
        "{\"method\":\"io.holden.Agent.Nope\"}\0",
        "{\"method\":\"io.holden.Agent.Ping\"}\0"
    );
    s.write_all(calls.as_bytes()).unwrap();
    let mut replies = Vec::new();
    let mut buf = Vec::new();
    while replies.len() < 4 {
        let mut chunk = [0u8; 4096];
        let n = std::io::Read::read(&mut s, &mut chunk).expect("all four replies arrive");
        assert!(n > 0, "closed after {} replies", replies.len());
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.iter().position(|&b| b == 0) {
            replies.push(String::from_utf8(buf.drain(..=end).collect()).unwrap());
        }
    }
    assert!(replies[0].starts_with("{\"parameters\":{}"));
    assert!(replies[1].contains("\"features\""));
    assert!(replies[2].contains("MethodNotFound"));
    assert!(replies[3].starts_with("{\"parameters\":{}"));
    // Half-closing after a pipelined burst still gets every answer.
    let mut s = UnixStream::connect(&agent.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(calls.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut all).unwrap();
    assert_eq!(all.iter().filter(|&&b| b == 0).count(), 4);
}
