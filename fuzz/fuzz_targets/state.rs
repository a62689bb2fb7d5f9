//! The state file's decoder on arbitrary bytes, plus a round trip: what decodes re-encodes to
//! the same snapshot.
#![no_main]

use holden_supervisor::state::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snap) = serde_json::from_slice::<Snapshot>(data) {
        let again = serde_json::to_vec(&snap).expect("a snapshot encodes");
        let back: Snapshot = serde_json::from_slice(&again).expect("an encoded snapshot decodes");
        assert_eq!(back, snap);
    }
});
