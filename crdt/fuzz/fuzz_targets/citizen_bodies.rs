//! Fuzz target: `zhaowo_crdt::fuzzing::citizen_bodies` on arbitrary bytes: the citizen report form and the Open311
//! request body, decoded strictly and checked as the node's handlers do (see `crdt/src/fuzzing.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = zhaowo_crdt::fuzzing::citizen_bodies(data);
});
