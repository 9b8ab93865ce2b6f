//! Replays every input the fuzzers found (`crdt/fuzz/regressions/<target>/`) through the same entry points, so a
//! found crash stays fixed (or stays isolated) in plain `cargo test`.
#![allow(clippy::print_stdout)] // Prints what it replayed.
use std::path::Path;
use zhaowo_crdt::fuzzing::{self, Outcome};

fn replay(target: &str, run: fn(&[u8]) -> Outcome) -> Vec<(String, Outcome)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut results = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap();
        results.push((entry.file_name().to_string_lossy().into_owned(), run(&bytes)));
    }
    results
}

/// A fuzz target's name and its entry point.
type Target = (&'static str, fn(&[u8]) -> Outcome);

#[test]
fn every_found_input_is_refused_or_isolated() {
    let targets: [Target; 6] = [
        ("frame", fuzzing::frame),
        ("sync_message", fuzzing::sync_message),
        ("roster_record", fuzzing::roster_record),
        ("enrollment_file", fuzzing::enrollment_file),
        ("case_document", fuzzing::case_document),
        ("bundle_file", fuzzing::bundle_file),
    ];
    let mut total = 0;
    for (target, run) in targets {
        for (name, outcome) in replay(target, run) {
            println!("fuzz regression {target}/{name}: {outcome:?}");
            total += 1;
        }
    }
    assert!(total >= 1, "the regression corpus is missing");
    println!("fuzz regressions replayed={total}");
}

/// automerge 0.12 (hexane 1.0.0-alpha.5, `lib.rs:354`) panics while loading this crafted document, and another crafted
/// document made `load` decode a delta column into more than 12 GB (an out-of-memory abort that `catch_unwind` cannot
/// stop). Both are "bundle" chunks (type 3), which no case or hall document holds: `wire::check_document_chunks`
/// refuses them before Automerge allocates anything. The panicking one still shows that the loads run inside
/// `catch_unwind` when it reaches Automerge directly.
#[test]
fn crafted_bundle_chunks_are_refused_before_automerge_sees_them() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/case_document");
    for name in ["hexane-delta-panic-on-load", "bundle-chunk-delta-bomb-oom"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(fuzzing::case_document(&bytes), Outcome::Refused, "{name}");
        let refused = zhaowo_crdt::wire::check_document_chunks(&bytes).unwrap_err();
        println!("{name}: refused in {:?} ({refused})", started.elapsed());
    }
    let panics = std::fs::read(dir.join("hexane-delta-panic-on-load")).unwrap();
    let isolated = std::panic::catch_unwind(|| automerge::AutoCommit::load(&panics));
    assert!(isolated.is_err(), "automerge 0.12 still panics on it; if it stops, automerge fixed it");
}

#[test]
fn valid_inputs_are_accepted_by_the_fuzz_entry_points() {
    use zhaowo_crdt::wire::{self, Frame};
    assert_eq!(fuzzing::frame(&wire::encode(&Frame::CatalogAck { seq: 3 })), Outcome::Accepted);
    assert_eq!(fuzzing::frame(b"\x02"), Outcome::Refused);
    assert_eq!(fuzzing::roster_record(b""), Outcome::Refused);
    assert_eq!(fuzzing::enrollment_file(b"{}"), Outcome::Refused);
    assert_eq!(fuzzing::case_document(b"junk"), Outcome::Refused);
    assert_eq!(fuzzing::sync_message(b"\x42"), Outcome::Refused);
}
