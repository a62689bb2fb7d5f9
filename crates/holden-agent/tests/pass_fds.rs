//! Extra descriptors for the child (`Command::fd`, the `fds` parameter of `Spawn`): placed on
//! the numbers asked for, locally and through the agent, and nothing else crosses; bad numbers
//! and indexes are refused with the parameter named, and the agent goes on. Needs root.

mod common;

use std::io::Read;

use common::*;

/// A child that writes "N" to descriptor N for 3, 5 and 9, and lists its descriptors on 1.
fn writer() -> holden::Command {
    let mut cmd = holden::Command::new("sh");
    cmd.args(["-c", "echo three >&3; echo five >&5; echo nine >&9; ls /proc/self/fd"]);
    cmd
}

fn check(mut cmd: holden::Command, via: Option<&mut holden::Agent>) {
    let mut readers = Vec::new();
    for n in [9, 3, 5] {
        let (r, w) = pipe();
        cmd.fd(n, w);
        readers.push((n, r));
    }
    let (mut listing, w) = pipe();
    cmd.stdout(holden::Stdio::from(w));
    let mut child = match via {
        Some(a) => cmd.spawn_via(a).unwrap(),
        None => cmd.spawn().unwrap(),
    };
    drop(cmd);
    assert!(child.wait().unwrap().success());
    for (n, mut r) in readers {
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        let want = match n {
            3 => "three\n",
            5 => "five\n",
            _ => "nine\n",
        };
        assert_eq!(got, want, "descriptor {n}");
    }
    let mut fds = String::new();
    listing.read_to_string(&mut fds).unwrap();
    // 0, 1, 2, the three passed, and 4, the lowest free, which ls opened to list them: nothing
    // else crossed.
    let mut fds: Vec<u32> = fds.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    fds.sort();
    assert_eq!(fds, [0, 1, 2, 3, 4, 5, 9]);
}

#[test]
fn extra_descriptors_land_on_their_numbers_locally_and_through_the_agent() {
    require_root();
    check(writer(), None);
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    check(writer(), Some(&mut client));
    // A number out of range is the caller's error, before anything runs.
    let (_r, w) = pipe();
    let e = holden::Command::new("true").fd(2, w).spawn().unwrap_err();
    assert!(e.to_string().contains("descriptor number 2"), "{e}");
    let (_r, w) = pipe();
    let e = holden::Command::new("true").fd(256, w).spawn_via(&mut client).unwrap_err();
    assert!(e.to_string().contains("descriptor number 256"), "{e}");
    // More than a call can carry.
    let mut many = holden::Command::new("true");
    for n in 3..10 {
        many.fd(n, pipe().1);
    }
    let e = many.stdout(holden::Stdio::null()).stderr(holden::Stdio::null()).spawn_via(&mut client).unwrap_err();
    assert!(e.to_string().contains("at most 8"), "{e}");
    assert_no_children(agent.pid());
}

#[test]
fn bad_fds_parameters_are_refused_with_the_parameter_named() {
    require_root();
    let agent = TestAgent::start(&[]);
    for params in [
        r#"{"argv":["true"],"fds":[{"fd":0,"number":3}]}"#,
        r#"{"argv":["true"],"fds":{"fd":0}}"#,
        r#"{"argv":["true"],"fds":[{"fd":0,"number":2}]}"#,
        r#"{"argv":["true"],"fds":[{"fd":-1,"number":3}]}"#,
        r#"{"argv":["true"],"fds":[{"number":3}]}"#,
        r#"{"argv":["true"],"fds":[{"fd":0,"number":3,"x":1}]}"#,
        r#"{"argv":["true"],"fds":[7]}"#,
    ] {
        let call = format!(r#"{{"method":"io.holden.Agent.Spawn","parameters":{params}}}"#);
        let mut bytes = call.into_bytes();
        bytes.push(0);
        let reply = raw_exchange(&agent.socket, &bytes).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&reply[..reply.len() - 1]).unwrap();
        assert_eq!(v["error"], "io.holden.Agent.InvalidParameter", "{params}: {v}");
        assert_eq!(v["parameters"]["parameter"], "fds", "{params}: {v}");
    }
    // And it still serves.
    let mut c = holden::Command::new("true").spawn_via(&mut agent.client()).unwrap();
    assert!(c.wait().unwrap().success());
    assert_no_children(agent.pid());
}
