//! Bundles: sneakernet for laptops that cannot reach the hall LAN (`zhaowo bundle export` → a USB stick →
//! `zhaowo bundle import`). A bundle is a file of case documents' changes, each with its author's signature; importing
//! verifies every signature against the roster exactly as sync does, so a bundle can carry nothing a peer could not.
//!
//! Format: [`BUNDLE_MAGIC`], a version byte, then the postcard encoding of [`Bundle`]. A file from outside is hostile
//! input: [`decode`] caps the size and every count before anything is allocated for it, and [`verify`] checks every
//! change before anything reaches Automerge. On disk the bundle is encrypted to the hall's PCs with age (the node's
//! `import` module); this is what is inside.

use crate::roster::{PublicKey, Roster};
use crate::signing::{ChangeRejected, verify_change};
use crate::wire::{ChangeSignature, is_doc_id};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The first bytes of every bundle file.
pub const BUNDLE_MAGIC: &[u8] = b"zhaowo-bundle\n";
/// The version of the encoding after the magic.
/// 2 (issue 13): the bundle carries the case keys the exporter holds (readable only inside the age encryption).
/// 3 (issue 16): and the material files of the exported cases (sealed, as stored). Version 2 bundles still import.
pub const BUNDLE_VERSION: u8 = 3;
/// Material files in one bundle: 50 per case (`materials::CASE_MATERIALS_MAX`) for a laptop's few hundred cases; the
/// bytes are bounded by [`BUNDLE_BYTES_MAX`] anyway.
pub const BUNDLE_MATERIALS_MAX: usize = 100_000;
/// A bundle file: a laptop's week of home visits is a few hundred KB; a whole hall's year (~154 cases at ~2 KB) is well
/// under a MB. 256 MiB leaves room for a full store copy while bounding what an import holds in memory.
pub const BUNDLE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Documents in one bundle (a million-case store fits).
pub const BUNDLE_DOCS_MAX: usize = 2_000_000;
/// Changes of one document in a bundle: a case has tens of changes; thousands would be a broken or hostile file.
pub const BUNDLE_CHANGES_PER_DOC_MAX: usize = 10_000;

/// A bundle: the hall it belongs to, who exported it, and the documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub hall: PublicKey,
    /// The exporting node's key.
    pub from: PublicKey,
    pub created_ms: i64,
    pub docs: Vec<BundleDoc>,
    /// The keys of the exported cases the exporter holds; an importer takes those it may hold (`seal::may_hold_key`).
    pub keys: Vec<crate::wire::CaseKeyGrant>,
    /// The material files of the exported cases the exporter holds (none with `--no-materials`), sealed under their
    /// case keys as stored; an importer keeps those a case it may read names.
    pub materials: Vec<BundleMaterial>,
}

/// One sealed material file, under its content address ([`crate::materials::blob_hash`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleMaterial {
    pub hash: String,
    pub bytes: Vec<u8>,
}

/// Version 2 of the bundle (before materials): still read, so a laptop's older stick imports.
#[derive(Deserialize)]
struct BundleV2 {
    hall: PublicKey,
    from: PublicKey,
    created_ms: i64,
    docs: Vec<BundleDoc>,
    keys: Vec<crate::wire::CaseKeyGrant>,
}

/// Every change of one document the exporter holds (importing is idempotent, so nothing needs to be subtracted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleDoc {
    pub doc_id: String,
    /// Encoded Automerge changes.
    pub changes: Vec<Vec<u8>>,
    pub signatures: Vec<ChangeSignature>,
}

/// Why a bundle file was refused as a whole. Nothing of it was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("not a zhaowo bundle (the file does not start with the bundle marker)")]
    NotABundle,
    #[error("bundle version {0} is not supported (this zhaowo reads version {BUNDLE_VERSION})")]
    Version(u8),
    #[error("the bundle is {0} bytes, over the limit of {BUNDLE_BYTES_MAX}")]
    TooLarge(usize),
    #[error("the bundle is damaged: {0}")]
    Damaged(String),
    #[error("the bundle belongs to another hall")]
    OtherHall,
    /// A change is forged, unsigned, by a non-member or malformed: the whole bundle is refused.
    #[error("case {doc_id}: {reason}")]
    Rejected { doc_id: String, reason: String },
}

pub fn encode(bundle: &Bundle) -> Vec<u8> {
    let mut bytes = BUNDLE_MAGIC.to_vec();
    bytes.push(BUNDLE_VERSION);
    bytes.extend(postcard::to_allocvec(bundle).expect("bundles always encode"));
    bytes
}

/// Decodes and bounds-checks a bundle file.
pub fn decode(bytes: &[u8]) -> Result<Bundle, BundleError> {
    if bytes.len() > BUNDLE_BYTES_MAX {
        return Err(BundleError::TooLarge(bytes.len()));
    }
    let body = bytes.strip_prefix(BUNDLE_MAGIC).ok_or(BundleError::NotABundle)?;
    let (&version, body) = body.split_first().ok_or(BundleError::NotABundle)?;
    let damaged = |error: postcard::Error| BundleError::Damaged(error.to_string());
    let bundle: Bundle = match version {
        BUNDLE_VERSION => postcard::from_bytes(body).map_err(damaged)?,
        2 => {
            let old: BundleV2 = postcard::from_bytes(body).map_err(damaged)?;
            Bundle {
                hall: old.hall,
                from: old.from,
                created_ms: old.created_ms,
                docs: old.docs,
                keys: old.keys,
                materials: Vec::new(),
            }
        }
        other => return Err(BundleError::Version(other)),
    };
    if bundle.materials.len() > BUNDLE_MATERIALS_MAX {
        return Err(BundleError::Damaged(format!(
            "{} material files, over the limit of {BUNDLE_MATERIALS_MAX}",
            bundle.materials.len()
        )));
    }
    for material in &bundle.materials {
        use crate::materials::{SEALED_BLOB_BYTES_MAX, blob_hash, is_blob_hash};
        if !is_blob_hash(&material.hash)
            || material.bytes.len() > SEALED_BLOB_BYTES_MAX
            || blob_hash(&material.bytes) != material.hash
        {
            return Err(BundleError::Damaged(format!(
                "material file {} does not match its name",
                material.hash.escape_default()
            )));
        }
    }
    if bundle.docs.len() > BUNDLE_DOCS_MAX {
        return Err(BundleError::Damaged(format!(
            "{} documents, over the limit of {BUNDLE_DOCS_MAX}",
            bundle.docs.len()
        )));
    }
    if bundle.keys.len() > BUNDLE_DOCS_MAX || bundle.keys.iter().any(|grant| !is_doc_id(&grant.doc_id)) {
        return Err(BundleError::Damaged("the case keys are malformed".to_owned()));
    }
    for doc in &bundle.docs {
        if !is_doc_id(&doc.doc_id) {
            return Err(BundleError::Damaged(format!("`{}` is not a case id", doc.doc_id.escape_default())));
        }
        if doc.changes.len() > BUNDLE_CHANGES_PER_DOC_MAX || doc.signatures.len() > BUNDLE_CHANGES_PER_DOC_MAX {
            return Err(BundleError::Damaged(format!("case {} has too many changes", doc.doc_id)));
        }
    }
    Ok(bundle)
}

/// What [`verify`] found acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// Documents whose every change verified: store these.
    pub accepted: Vec<usize>,
    /// Documents skipped because a revoked member made a change after its revocation (as sync skips them).
    pub refused: Vec<(String, String)>,
    pub changes: usize,
}

/// Checks the bundle belongs to the roster's hall and that every change is signed by an enrolled key; a forged,
/// unsigned or foreign change refuses the whole bundle.
pub fn verify(bundle: &Bundle, roster: &Roster) -> Result<Verified, BundleError> {
    if &bundle.hall != roster.hall() {
        return Err(BundleError::OtherHall);
    }
    let mut verified = Verified::default();
    'docs: for (index, doc) in bundle.docs.iter().enumerate() {
        let signatures: BTreeMap<[u8; 32], [u8; 64]> = doc.signatures.iter().map(|s| (s.hash, s.signature)).collect();
        for change in &doc.changes {
            match verify_change(roster, change, |hash| signatures.get(&hash.0).copied()) {
                Ok(_) => {}
                Err(refused @ ChangeRejected::Revoked(..)) => {
                    verified.refused.push((doc.doc_id.clone(), refused.to_string()));
                    continue 'docs;
                }
                Err(rejected) => {
                    return Err(BundleError::Rejected { doc_id: doc.doc_id.clone(), reason: rejected.to_string() });
                }
            }
        }
        verified.changes += doc.changes.len();
        verified.accepted.push(index);
    }
    Ok(verified)
}
