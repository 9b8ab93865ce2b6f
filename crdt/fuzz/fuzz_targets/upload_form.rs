//! Fuzz target: `zhaowo_crdt::fuzzing::upload_form` on arbitrary bytes: a `multipart/form-data` upload of materials,
//! parsed strictly under the citizen's and small limits (see `crdt/src/fuzzing.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = zhaowo_crdt::fuzzing::upload_form(data);
});
