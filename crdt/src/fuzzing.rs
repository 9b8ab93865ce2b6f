//! Entry points for the fuzz targets (`crdt/fuzz/`) and for the plain tests that replay the inputs they found
//! (`crdt/tests/fuzz_regressions.rs`): every decoder that takes bytes from outside, driven the way the node drives it.
//!
//! Each function must return normally on any input. Automerge panics inside `catch_unwind` are the node's isolation
//! working (the peer is dropped, the document reloaded) and are counted, not failures; a panic in our own code, an
//! abort or an allocation beyond the fuzzer's limit is a finding.

use crate::CaseDoc;
use crate::roster::SignedRecord;
use crate::wire;
use automerge::sync::SyncDoc;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What one input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused with a typed error.
    Refused,
    /// Accepted and processed.
    Accepted,
    /// Automerge panicked inside the isolation boundary.
    Isolated,
}

/// A frame from a peer: `wire::decode`, and re-encoding what decodes.
pub fn frame(bytes: &[u8]) -> Outcome {
    match wire::decode(bytes) {
        Ok(frame) => {
            let again = wire::decode(&wire::encode(&frame)).expect("a decoded frame re-encodes to a decodable frame");
            assert_eq!(again, frame, "frame round trip");
            Outcome::Accepted
        }
        Err(_) => Outcome::Refused,
    }
}

/// A sync message from a peer: the guard, then Automerge's receive and the reply it generates, on a small case.
pub fn sync_message(bytes: &[u8]) -> Outcome {
    let Ok(message) = wire::guard_sync_message(bytes) else { return Outcome::Refused };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut doc = automerge::AutoCommit::new().with_actor(automerge::ActorId::from(vec![7; 16]));
        use automerge::transaction::Transactable;
        let _ = doc.put(automerge::ROOT, "schema", 1_i64);
        let mut state = automerge::sync::State::new();
        let _ = doc.sync().receive_sync_message(&mut state, message);
        state.their_capabilities = None;
        let _ = doc.sync().generate_sync_message(&mut state);
    }));
    if result.is_ok() { Outcome::Accepted } else { Outcome::Isolated }
}

/// A roster record from a peer or an enrollment file.
pub fn roster_record(bytes: &[u8]) -> Outcome {
    match SignedRecord::from_bytes(bytes) {
        Ok(record) => {
            let hall = match &record.record {
                crate::roster::Record::Enrollment(e) => e.hall,
                crate::roster::Record::Revocation(r) => r.hall,
            };
            let _ = record.verify(&hall);
            Outcome::Accepted
        }
        Err(_) => Outcome::Refused,
    }
}

/// An enrollment file handed to `zhaowo join`, and the hall document inside it.
pub fn enrollment_file(bytes: &[u8]) -> Outcome {
    match crate::enrollment::decode(bytes) {
        Ok(decoded) => {
            let loaded = catch_unwind(|| {
                crate::hall::HallDoc::load(&decoded.hall_doc, automerge::ActorId::from(vec![7; 16])).map(|_| ())
            });
            if loaded.is_ok() { Outcome::Accepted } else { Outcome::Isolated }
        }
        Err(_) => Outcome::Refused,
    }
}

/// A stored or imported case document: load, then the whole read model.
pub fn case_document(bytes: &[u8]) -> Outcome {
    let result = catch_unwind(|| match CaseDoc::load(bytes, automerge::ActorId::from(vec![7; 16])) {
        Ok(doc) => {
            let view = doc.view();
            let _ = view.public();
            Outcome::Accepted
        }
        Err(_) => Outcome::Refused,
    });
    result.unwrap_or(Outcome::Isolated)
}

/// A bundle file handed to `zhaowo bundle import`: the decoder's bounds, then every change checked against a roster of
/// the bundle's own hall (no member is enrolled in it, so the signature path runs up to the roster lookup).
pub fn bundle_file(bytes: &[u8]) -> Outcome {
    match crate::bundle::decode(bytes) {
        Ok(bundle) => match crate::bundle::verify(&bundle, &crate::roster::Roster::new(bundle.hall)) {
            Ok(_) => Outcome::Accepted,
            Err(_) => Outcome::Refused,
        },
        Err(_) => Outcome::Refused,
    }
}

/// A citizen report form body and an Open311 `POST requests.json` body, decoded and checked as the node's handlers
/// do (`intake`), plus the public-text check on the raw text. What is accepted must hold: a public summary without
/// a disguised number, e-mail or invisible character, and no invisible character in any other text.
pub fn citizen_bodies(bytes: &[u8]) -> Outcome {
    static HALL: std::sync::OnceLock<crate::Hall> = std::sync::OnceLock::new();
    let hall = HALL.get_or_init(crate::Hall::jiangan_default);
    let _ = crate::public_text::check_public(&String::from_utf8_lossy(bytes));
    let mut accepted = false;
    if let Ok(form) = crate::intake::decode_form::<crate::intake::ReportForm>(bytes)
        && let Ok(report) = crate::intake::check_report(hall, &form)
    {
        assert!(crate::public_text::check_public(&report.summary).is_ok(), "summary accepted: {:?}", report.summary);
        assert!(crate::public_text::hidden_character(&report.detail).is_none(), "detail: {:?}", report.detail);
        assert!(report.summary.chars().count() <= crate::limits::SUMMARY_CHARS_MAX);
        accepted = true;
    }
    if let Ok(form) = crate::intake::decode_form::<crate::intake::Open311Request>(bytes)
        && let Ok(report) = crate::intake::check_open311(hall, &form)
    {
        assert!(crate::public_text::hidden_character(&report.detail).is_none(), "detail: {:?}", report.detail);
        assert!(report.detail.chars().count() <= crate::limits::DETAIL_CHARS_MAX);
        accepted = true;
    }
    if accepted { Outcome::Accepted } else { Outcome::Refused }
}

/// An uploaded material file (issue 16): `materials::clean`. What is accepted keeps its type, is no larger than the
/// input, and is already clean (cleaning the output again changes nothing).
pub fn material_file(bytes: &[u8]) -> Outcome {
    match crate::materials::clean(bytes) {
        Ok((kind, cleaned)) => {
            assert!(cleaned.len() <= bytes.len(), "cleaning grew the file");
            assert_eq!(crate::materials::sniff(&cleaned), Some(kind), "cleaning changed the type");
            let again = crate::materials::clean(&cleaned).expect("a cleaned file is accepted again");
            assert_eq!(again.1, cleaned, "cleaning is not idempotent");
            Outcome::Accepted
        }
        Err(_) => Outcome::Refused,
    }
}

/// The content types `upload_form` chooses from with its first byte: a Chromium boundary, a Firefox-style one, a
/// quoted one with spaces, and a one-character boundary (the most delimiter-like bytes in random input).
const UPLOAD_CONTENT_TYPES: [&str; 4] = [
    "multipart/form-data; boundary=----WebKitFormBoundaryq3kY8Lz7xGm1RtVb",
    "multipart/form-data; boundary=---------------------------91734582611463",
    "multipart/form-data; charset=utf-8; boundary=\"a b:c\"",
    "multipart/form-data; boundary=X",
];

/// A `multipart/form-data` upload (issue 16): the first byte chooses a content type (the four above, or, from 4 on,
/// a content type read from the input: its length in the second byte, then that many bytes), the rest is the body,
/// parsed under the citizen's limits and under small limits that random input reaches. What is accepted must hold
/// the limits, and every text field must be UTF-8 and every file name a bare, visible name.
pub fn upload_form(bytes: &[u8]) -> Outcome {
    use crate::upload::{self, UploadLimits};
    let Some((&choice, rest)) = bytes.split_first() else { return Outcome::Refused };
    let (content_type, body) = match UPLOAD_CONTENT_TYPES.get(usize::from(choice)) {
        Some(content_type) => (*content_type, rest),
        None => {
            let Some((&len, rest)) = rest.split_first() else { return Outcome::Refused };
            let len = usize::from(len).min(rest.len());
            let Ok(content_type) = std::str::from_utf8(&rest[..len]) else { return Outcome::Refused };
            (content_type, &rest[len..])
        }
    };
    let small =
        UploadLimits { parts_max: 6, files_max: 2, file_bytes_max: 64, field_bytes_max: 16, body_bytes_max: 4096 };
    let mut accepted = false;
    for limits in [UploadLimits::citizen(), small] {
        let Ok(parts) = upload::parse(content_type, body, &limits) else { continue };
        accepted = true;
        assert!(parts.len() <= limits.parts_max, "parts");
        assert!(parts.iter().filter(|part| part.is_file()).count() <= limits.files_max, "files");
        assert!(parts.iter().map(|part| part.data.len()).sum::<usize>() <= body.len(), "data grew");
        for part in &parts {
            assert!(!part.name.is_empty());
            match &part.file_name {
                Some(file_name) => {
                    assert!(part.data.len() <= limits.file_bytes_max, "file bytes");
                    assert!(!file_name.is_empty() && file_name.len() <= upload::UPLOAD_FILE_NAME_BYTES_MAX);
                    assert!(!file_name.contains(['/', '\\']), "path in {file_name:?}");
                    assert!(!file_name.chars().any(char::is_control), "control in {file_name:?}");
                    assert!(crate::public_text::hidden_character(file_name).is_none(), "{file_name:?}");
                }
                None => {
                    assert!(part.data.len() <= limits.field_bytes_max, "field bytes");
                    assert!(part.text().is_some(), "text field not UTF-8");
                }
            }
        }
    }
    if accepted { Outcome::Accepted } else { Outcome::Refused }
}
