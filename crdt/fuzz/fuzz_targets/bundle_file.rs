//! Fuzz target: `zhaowo_crdt::fuzzing::bundle_file` on arbitrary bytes (see `crdt/src/fuzzing.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(
    // libfuzzer-sys aborts on any panic; Automerge panics caught inside the node's isolation boundary
    // (`catch_unwind`) are expected outcomes, so a silent hook lets them unwind to it. A panic that escapes is still
    // a crash: libfuzzer-sys aborts when the target itself unwinds.
    init: std::panic::set_hook(Box::new(|_| {})),
    |data: &[u8]| {
        let _ = zhaowo_crdt::fuzzing::bundle_file(data);
    }
);
