//! Generic Varlink behaviour: introspection through org.varlink.service, oneway calls.

mod common;
use common::*;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn call(s: &mut UnixStream, msg: &str) -> serde_json::Value {
    s.write_all(msg.as_bytes()).unwrap();
    s.write_all(b"\0").unwrap();
    let reply = read_reply(s).expect("a reply");
    serde_json::from_slice(&reply[..reply.len() - 1]).unwrap()
}

#[test]
fn generic_clients_can_introspect_the_agent() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut s = UnixStream::connect(&agent.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let info = call(&mut s, r#"{"method":"org.varlink.service.GetInfo"}"#);
    assert_eq!(info["parameters"]["product"], "holden-agent");
    let ifaces = info["parameters"]["interfaces"].as_array().unwrap();
    assert!(ifaces.iter().any(|i| i == "io.holden.Agent") && ifaces.iter().any(|i| i == "org.varlink.service"));
    let d = call(
        &mut s,
        r#"{"method":"org.varlink.service.GetInterfaceDescription","parameters":{"interface":"io.holden.Agent"}}"#,
    );
    let text = d["parameters"]["description"].as_str().unwrap();
    assert!(
        text.contains("interface io.holden.Agent")
            && text.contains("method Spawn(")
            && text.contains("error ExecFailed")
    );
    let missing = call(
        &mut s,
        r#"{"method":"org.varlink.service.GetInterfaceDescription","parameters":{"interface":"com.example.None"}}"#,
    );
    assert_eq!(missing["error"], "org.varlink.service.InterfaceNotFound");
    assert_eq!(missing["parameters"]["interface"], "com.example.None");
}

#[test]
fn oneway_calls_get_no_reply_and_the_connection_goes_on() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut s = UnixStream::connect(&agent.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let marker = agent.dir.0.join("oneway-ran");
    let spawn = format!(
        r#"{{"method":"io.holden.Agent.Spawn","oneway":true,"parameters":{{"argv":["touch","{}"]}}}}"#,
        marker.display()
    );
    s.write_all(spawn.as_bytes()).unwrap();
    s.write_all(b"\0").unwrap();
    // The next reply on this connection is the Ping's: the oneway Spawn sent none.
    let pong = call(&mut s, r#"{"method":"io.holden.Agent.Ping"}"#);
    assert_eq!(pong, serde_json::json!({"parameters": {}}));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !marker.exists() {
        assert!(std::time::Instant::now() < deadline, "the oneway spawn ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_no_children(agent.pid());
}
