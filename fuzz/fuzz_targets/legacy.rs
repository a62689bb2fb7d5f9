//! The v0.2 decoders on a client's bytes: the header, then the body, whole or cut.
#![no_main]

use holden_proto::legacy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < legacy::HEADER {
        return;
    }
    let (ty, len) = legacy::parse_header(data[..legacy::HEADER].try_into().unwrap());
    let body = &data[legacy::HEADER..];
    if (len as usize) <= body.len() {
        let _ = legacy::decode(ty, &body[..len as usize]);
    }
    let _ = legacy::decode(ty, body);
});
