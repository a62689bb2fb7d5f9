//! The agent's Varlink decoders on a client's bytes (calls, `Spawn` parameters, replies), plus
//! a round-trip property: a call that decodes re-encodes to bytes that decode to the same call.
#![no_main]

use holden_proto::{encode_call, message_end, parse_call, parse_reply, SpawnParams};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let msg = match message_end(data) {
        Some(end) => &data[..end],
        None => data,
    };
    if let Ok(call) = parse_call(msg) {
        let nfds = data.len() % 9;
        let _ = SpawnParams::from_call(&call.parameters, nfds);
        let again = encode_call(&call.method, &serde_json::Value::Object(call.parameters.clone()), call.more);
        let end = message_end(&again).expect("encoded calls are NUL-terminated");
        let back = parse_call(&again[..end]).expect("an encoded call decodes");
        assert_eq!((back.method, back.parameters, back.more), (call.method, call.parameters, call.more));
    }
    let _ = parse_reply(msg);
});
