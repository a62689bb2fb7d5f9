//! The orchestrator's control socket on a client's bytes: the Varlink call, then the checked
//! decoding of `io.holden.Orchestrator` requests.
#![no_main]

use holden_orchestrator::control::parse_request;
use holden_proto::{message_end, parse_call};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let msg = match message_end(data) {
        Some(end) => &data[..end],
        None => data,
    };
    if let Ok(call) = parse_call(msg) {
        let _ = parse_request(&call.method, &call.parameters);
    }
});
