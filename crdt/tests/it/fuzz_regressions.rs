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
    let targets: [Target; 8] = [
        ("frame", fuzzing::frame),
        ("sync_message", fuzzing::sync_message),
        ("roster_record", fuzzing::roster_record),
        ("enrollment_file", fuzzing::enrollment_file),
        ("case_document", fuzzing::case_document),
        ("bundle_file", fuzzing::bundle_file),
        ("material_file", fuzzing::material_file),
        ("upload_form", fuzzing::upload_form),
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

/// Issue 16 §1: real files made by an image library (Pillow) with a phone's metadata — EXIF with GPS coordinates,
/// the maker, a model and a body serial number, a JPEG comment and a PNG text chunk naming the owner — come out of
/// `materials::clean` without any of it, still of their type and accepted again unchanged (the fuzz target's
/// property); the seeds of the `material_file` fuzz target are these files.
#[test]
fn a_photo_with_gps_exif_comes_out_without_it() {
    use zhaowo_crdt::materials::{MaterialType, clean};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/material_file");
    let leaks: [&[u8]; 5] = [b"Exif", b"SERIAL-HW", b"5566778899", b"13812341234", b"HUAWEI"];
    let mut report = Vec::new();
    for (file, kind) in [
        ("gps-photo.jpg", MaterialType::Jpeg),
        ("gps-photo.webp", MaterialType::Webp),
        ("text.png", MaterialType::Png),
        ("scan.pdf", MaterialType::Pdf),
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let found = |bytes: &[u8]| leaks.iter().filter(|leak| bytes.windows(leak.len()).any(|w| w == **leak)).count();
        let (got, cleaned) = clean(&bytes).unwrap_or_else(|error| panic!("{file}: {error}"));
        assert_eq!(got, kind, "{file}");
        assert_eq!(found(&cleaned), 0, "{file} keeps metadata");
        assert_eq!(fuzzing::material_file(&bytes), Outcome::Accepted, "{file}");
        if kind == MaterialType::Jpeg {
            // The image data is kept byte for byte: the scan from SOS on is identical.
            let scan = |bytes: &[u8]| bytes.windows(2).position(|w| w == [0xFF, 0xDA]).map(|at| bytes[at..].to_vec());
            assert_eq!(scan(&cleaned), scan(&bytes), "the JPEG's image data changed");
        }
        report.push(format!("{file} {}→{} B, metadata hits {}→0", bytes.len(), cleaned.len(), found(&bytes)));
    }
    // Damaged copies are refused, never passed through.
    let jpeg = std::fs::read(dir.join("gps-photo.jpg")).unwrap();
    assert!(clean(&jpeg[..jpeg.len() / 2]).is_err(), "a truncated JPEG was accepted");
    let mut bad_length = jpeg.clone();
    bad_length[4] = 0xFF;
    bad_length[5] = 0xFF;
    assert!(clean(&bad_length).is_err(), "a segment longer than the file was accepted");
    println!("materials: {}", report.join("; "));
}

/// A cheap stand-in for the fuzzer in plain `cargo test`: 4,000 deterministic mutations (flipped, cut, repeated
/// bytes) of each material seed through the fuzz target's entry point, which asserts its properties on what it
/// accepts. Prints how many mutants were accepted and refused.
#[test]
fn mutated_material_files_never_break_the_cleaner() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/material_file");
    let mut state = 0x2026_1206_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut accepted, mut refused) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let seed = std::fs::read(entry.path()).unwrap();
        for _ in 0..4_000 {
            let mut bytes = seed.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % bytes.len().max(1);
                match next() % 4 {
                    0 => bytes[at] ^= 1 << (next() % 8),
                    1 => bytes[at] = next() as u8,
                    2 => bytes.truncate(at),
                    _ => {
                        let run: Vec<u8> = bytes[at..].iter().take(16).copied().collect();
                        bytes.splice(at..at, run);
                    }
                }
                if bytes.is_empty() {
                    break;
                }
            }
            match fuzzing::material_file(&bytes) {
                Outcome::Accepted => accepted += 1,
                _ => refused += 1,
            }
        }
    }
    assert!(accepted > 0 && refused > 0, "mutants all accepted or all refused: {accepted}/{refused}");
    println!("material mutants: accepted {accepted}, refused {refused}, no panic");
}

/// Issue 16: the seeds of the `upload_form` fuzz target are browser-shaped bodies (Chromium, Firefox with
/// `filename*` and an empty file input, a one-character boundary with preamble and epilogue); each is accepted, and
/// every cut of them is refused or accepted without a panic.
#[test]
fn upload_form_seeds_are_accepted_and_their_cuts_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/upload_form");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(fuzzing::upload_form(&bytes), Outcome::Accepted, "{}", path.display());
        for cut in 0..bytes.len() {
            let _ = fuzzing::upload_form(&bytes[..cut]);
        }
        seeds += 1;
    }
    assert!(seeds >= 3, "the upload_form seeds are missing");
}
