//! Fuzz target: `zhaowo_crdt::fuzzing::material_file` on arbitrary bytes: an uploaded JPEG, PNG, WebP or PDF checked
//! and stripped of its metadata (see `crdt/src/materials.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = zhaowo_crdt::fuzzing::material_file(data);
});
