use super::*;
use serde_json::json;

fn params(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[test]
fn call_round_trip() {
    let msg = encode_call("io.holden.Agent.Spawn", &json!({"argv": ["true"]}), true);
    let end = message_end(&msg).unwrap();
    assert_eq!(end, msg.len() - 1);
    let call = parse_call(&msg[..end]).unwrap();
    assert_eq!(call.method, "io.holden.Agent.Spawn");
    assert!(call.more && !call.oneway);
    let p = SpawnParams::from_call(&call.parameters, 0).unwrap();
    assert_eq!(p.argv, vec!["true"]);
}

#[test]
fn spawn_params_errors_name_the_parameter() {
    let cases = [
        (json!({}), "argv"),
        (json!({"argv": []}), "argv"),
        (json!({"argv": [""]}), "argv"),
        (json!({"argv": "ls"}), "argv"),
        (json!({"argv": [1]}), "argv"),
        (json!({"argv": ["a\u{0}b"]}), "argv"),
        (json!({"argv": ["ls"], "env": ["NOEQUALS"]}), "env"),
        (json!({"argv": ["ls"], "env": ["=x"]}), "env"),
        (json!({"argv": ["ls"], "env_update": [""]}), "env_update"),
        (json!({"argv": ["ls"], "cwd": 3}), "cwd"),
        (json!({"argv": ["ls"], "cwd": ""}), "cwd"),
        (json!({"argv": ["ls"], "stdin": 0}), "stdin"),
        (json!({"argv": ["ls"], "stdout": -1}), "stdout"),
        (json!({"argv": ["ls"], "stderr": "x"}), "stderr"),
        (json!({"argv": ["ls"], "umask": 512}), "umask"),
        (json!({"argv": ["ls"], "setsid": 1}), "setsid"),
        (json!({"argv": ["ls"], "rlimits": [{"resource": "bogus"}]}), "rlimits"),
        (json!({"argv": ["ls"], "rlimits": [{"resource": "nofile", "soft": 10, "hard": 5}]}), "rlimits"),
        (json!({"argv": ["ls"], "frobnicate": true}), "frobnicate"),
    ];
    for (p, want) in cases {
        match SpawnParams::from_call(&params(p.clone()), 0) {
            Err(AgentError::InvalidParameter { parameter, .. }) => assert_eq!(parameter, want, "{p}"),
            other => panic!("{p}: {other:?}"),
        }
    }
    let many: Vec<String> = (0..MAX_ARGS + 1).map(|i| i.to_string()).collect();
    assert!(SpawnParams::from_call(&params(json!({ "argv": many })), 0).is_err());
}

#[test]
fn spawn_params_accept_a_full_call() {
    let p = json!({"argv": ["sh", "-c", "exit 3"], "env": ["A=1"], "env_update": ["B=2", "A"],
        "cwd": "/", "stdin": 0, "stdout": 1, "stderr": 1, "setsid": true, "umask": 18,
        "rlimits": [{"resource": "nofile", "soft": 64, "hard": 128}, {"resource": "core", "soft": null, "hard": null}]});
    let s = SpawnParams::from_call(&params(p), 2).unwrap();
    assert_eq!(s.stdout, Some(1));
    assert_eq!(s.umask, Some(18));
    assert_eq!(s.rlimits.unwrap().len(), 2);
}

#[test]
fn errors_round_trip_through_the_wire() {
    let errors = [
        AgentError::ExecFailed { errno: 2, message: "nope: no such file".into() },
        AgentError::SpawnFailed { stage: "cwd".into(), errno: 2, message: "m".into() },
        AgentError::InvalidParameter { parameter: "argv".into(), reason: "r".into() },
        AgentError::InvalidMessage { reason: "r".into() },
        AgentError::PermissionDenied { uid: 1000 },
        AgentError::TooManyClients { limit: 4 },
        AgentError::MethodNotFound { method: "x.Y".into() },
        AgentError::InterfaceNotFound { interface: "x".into() },
        AgentError::MethodNotImplemented { method: "upgrade".into() },
    ];
    for e in errors {
        let wire = encode_error(&e);
        let reply = parse_reply(&wire[..wire.len() - 1]).unwrap();
        assert_eq!(AgentError::from_wire(reply.error.as_deref().unwrap(), &reply.parameters), e);
    }
    let other = AgentError::from_wire("com.example.Weird", &Map::new());
    assert!(matches!(other, AgentError::Other { .. }));
}

/// A small deterministic generator, so that the property below needs no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn arbitrary_bytes_never_panic_the_decoders() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let seeds: [&[u8]; 4] = [
        br#"{"method":"io.holden.Agent.Spawn","parameters":{"argv":["true"],"stdin":0}}"#,
        br#"{"parameters":{"pid":1,"pidfd":0},"continues":true}"#,
        br#"{"method":"org.varlink.service.GetInterfaceDescription","parameters":{"interface":"io.holden.Agent"}}"#,
        b"[1,2,{\"a\":null}]",
    ];
    for i in 0..20_000 {
        let mut m = seeds[i % seeds.len()].to_vec();
        for _ in 0..(rng.next() % 4) {
            let at = (rng.next() as usize) % m.len();
            m[at] = rng.next() as u8;
        }
        if let Ok(call) = parse_call(&m) {
            let _ = SpawnParams::from_call(&call.parameters, (rng.next() % 9) as usize);
        }
        let _ = parse_reply(&m);
        let _ = legacy::decode((rng.next() % 14) as u32, &m);
    }
}

#[test]
fn legacy_round_trip_and_checks() {
    let m = legacy::encode_start(b"sleep", &[b"1"]).unwrap();
    let (ty, len) = legacy::parse_header(m[..8].try_into().unwrap());
    assert_eq!((ty, len as usize), (legacy::START_PROCESS, legacy::START_BODY));
    assert_eq!(
        legacy::decode(ty, &m[8..]),
        Ok(legacy::Request::StartProcess { name: b"sleep".to_vec(), args: vec![b"1".to_vec()] })
    );
    let mut bad = m[8..].to_vec();
    bad[8448..].copy_from_slice(&33i32.to_ne_bytes());
    assert!(legacy::decode(ty, &bad).unwrap_err().contains("arg_count"));
    bad[8448..].copy_from_slice(&(-1i32).to_ne_bytes());
    assert!(legacy::decode(ty, &bad).is_err());
    let mut unterminated = m[8..].to_vec();
    unterminated[..256].fill(b'a');
    assert!(legacy::decode(ty, &unterminated).unwrap_err().contains("NUL"));
    assert_eq!(legacy::decode(5, &[]), Err("Unknown message type: 5".into()));
    assert_eq!(legacy::decode(legacy::PING, &[]), Ok(legacy::Request::Ping));
    assert_eq!(legacy::process_error(&"x".repeat(600)).len(), 8 + 512);
}

/// Found by the fuzzer (`fuzz/`): a long float must decode to the same value after a re-encode.
#[test]
fn fuzz_regression_long_float_round_trips_exactly() {
    let msg = br#"{"method":"x.Y","parameters":{"n":88888888888888151016666666666666666666666666666666666666666666666666666666666666666666666912594050682418}}"#;
    let call = parse_call(msg).unwrap();
    let again = encode_call(&call.method, &Value::Object(call.parameters.clone()), false);
    let back = parse_call(&again[..again.len() - 1]).unwrap();
    assert_eq!(back.parameters, call.parameters);
}

#[test]
fn regression_duplicate_json_keys_are_rejected() {
    let dup = br#"{"method": "io.holden.Agent.Spawn", "method": "io.holden.Agent.Ping"}"#;
    assert!(matches!(parse_call(dup), Err(AgentError::InvalidMessage { reason }) if reason.contains("duplicate key")));
    let nested = br#"{"method": "io.holden.Agent.Spawn", "parameters": {"argv": ["a"], "argv": ["b"]}}"#;
    assert!(parse_call(nested).is_err());
    let deep = br#"{"method": "m", "parameters": {"x": [{"k": 1, "k": 2}]}}"#;
    assert!(parse_call(deep).is_err());
    let reply = br#"{"parameters": {}, "error": "a", "error": "b"}"#;
    assert!(parse_reply(reply).is_err());
    // The same key in different objects is fine.
    let fine = br#"{"method": "m", "parameters": {"a": {"k": 1}, "b": {"k": 1.5e300}}}"#;
    assert_eq!(parse_call(fine).unwrap().parameters["b"]["k"], serde_json::json!(1.5e300));
}
