//! The private layer of a case (issue 13): every value a citizen told us, or staff wrote about them, is sealed with
//! XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) under the case's own random 256-bit key before it enters the
//! Automerge document, so it is ciphertext in every byte of the document's history, on every node and in every file
//! that carries the document. A node that holds the key reads the value; any other node sees [`SEALED_ZH`].
//!
//! Which values are private is decided here and nowhere else: [`PRIVATE_ROOT_FIELDS`] of the case document and
//! [`private_payload_fields`] of each event type. Public are what every node needs to sync, fold, route, count and
//! show the register book: ids, 登记编号, category, nature, priority, modes, states and transitions, dates, units, the
//! public summary and public replies, and the citizen's consent flags.
//!
//! Format of a sealed value (a string, so it fits any field): `zs1:` followed by the standard base64 of a 24-byte
//! random nonce and the ciphertext with its 16-byte tag. The associated data binds the value to its place: a domain
//! string with the format version, the case id and the field's path (`detail`, `pi`, `event/<event id>/text`), so a
//! ciphertext cannot be moved to another case or field. The crate reads no random source: the caller gives 32 fresh
//! random bytes per command (`Ctx::secret`), from which a registration derives the case key and each sealed value its
//! nonce, SHA-256 over a domain string, the secret, the field's place and the plaintext (so a secret used twice still
//! never gives one nonce to two plaintexts). The node fills the secret from the OS random source and fails the
//! command when that fails (no fallback).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Bytes of a case key.
pub const CASE_KEY_BYTES: usize = 32;
/// Bytes of an XChaCha20 nonce.
const NONCE_BYTES: usize = 24;
/// Bytes of the Poly1305 tag.
const TAG_BYTES: usize = 16;
/// The prefix of a sealed value (format version 1).
pub const SEALED_PREFIX: &str = "zs1:";
/// Key-derivation domain (format version 1).
const KEY_DOMAIN: &[u8] = b"zhaowo-case-key-v1\0";
/// Nonce-derivation domain (format version 1).
const NONCE_DOMAIN: &[u8] = b"zhaowo-nonce-v1\0";
/// Associated-data domain (format version 1).
const AAD_DOMAIN: &[u8] = b"zhaowo-private-v1\0";
/// What a node that does not hold the case key shows in place of a private value.
pub const SEALED_ZH: &str = "本机无权查看";

/// Root fields of the case document that are private (the personal record `pi` is a sealed JSON object).
pub const PRIVATE_ROOT_FIELDS: &[&str] = &["detail", "expectation", "location", "pi"];

/// The payload fields of an event type (its stored type name) that are private: internal notes, 会诊 minutes, the
/// home visit's outcome, callback and rating comments, the 差评 task's texts (核实, 整改, 反馈 to the citizen, 申诉 and
/// its decision), a conflict resolution's decision and note, and an edited value of a private field (`FieldEdited` of the public summary stays public: see [`payload_is_private`]).
pub fn private_payload_fields(type_name: &str) -> &'static [&'static str] {
    match type_name {
        "NoteAdded" => &["text"],
        "ConsultationHeld" => &["minutes"],
        "SiteVisitLogged" => &["outcome"],
        "CallbackRecorded" => &["comment"],
        "ConflictResolved" => &["decision", "note"],
        "FieldEdited" => &["value"],
        "RatingReceived" => &["comment"],
        "BadReviewStepRecorded" => &["text"],
        "RatingAppealed" => &["reason"],
        "AppealDecided" => &["note"],
        "MaterialAdded" => &["name"],
        "MaterialRemoved" => &["reason"],
        _ => &[],
    }
}

/// Days a volunteer laptop may keep a case key after the visit was assigned, if the visit is never logged.
pub const VISIT_KEY_DAYS_MAX: i64 = 14;

/// **The** rule of who may hold a case's key (issue 13 §2), read by the node that hands a key to a peer, by the node
/// that asks for or accepts one, and by a laptop deciding to destroy one: hall PCs (window, 督查科, admin) for every
/// case; a volunteer laptop only while a visit of the case is assigned to it (until it logs the visit, the case leaves
/// the working states, or [`VISIT_KEY_DAYS_MAX`] pass); nobody once the personal data was purged.
pub fn may_hold_key(role: crate::model::Role, node_id: &str, view: &crate::CaseView, now_ms: i64) -> bool {
    use crate::model::Role;
    if view.personal.purged {
        return false;
    }
    match role {
        Role::Window | Role::Supervision | Role::Admin => true,
        Role::Volunteer => view.visit_assignment.as_ref().is_some_and(|visit| {
            visit.laptop == node_id && now_ms - visit.at_ms <= VISIT_KEY_DAYS_MAX * crate::time::DAY_MS
        }),
        Role::Citizen => false,
    }
}

/// Whether a payload field is sealed, given the whole payload: [`private_payload_fields`], except the value of an
/// edit of the public summary. Readers need not ask: an unsealed value reads as itself.
pub fn payload_is_private(type_name: &str, payload: &serde_json::Map<String, serde_json::Value>, field: &str) -> bool {
    private_payload_fields(type_name).contains(&field)
        && !(type_name == "FieldEdited" && payload.get("field").and_then(serde_json::Value::as_str) == Some("summary"))
}

/// A case's data key. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct CaseKey([u8; CASE_KEY_BYTES]);

impl std::fmt::Debug for CaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaseKey(…)")
    }
}

/// Why a value could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not a sealed value of a format this version reads.
    #[error("not a sealed value")]
    NotSealed,
    /// The value does not open under this key at this place (another key, another case or field, or damaged bytes).
    #[error("the sealed value does not open under this case key")]
    WrongKey,
}

impl CaseKey {
    /// The key of a case registered with the command secret `secret` (fresh random bytes from the caller).
    pub fn derive(secret: &[u8; 32]) -> CaseKey {
        use sha2::Digest;
        let digest = sha2::Sha256::new().chain_update(KEY_DOMAIN).chain_update(secret).finalize();
        CaseKey(digest.into())
    }

    pub fn from_bytes(bytes: [u8; CASE_KEY_BYTES]) -> CaseKey {
        CaseKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; CASE_KEY_BYTES] {
        &self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }
}

fn aad(case_id: &str, field: &str) -> Vec<u8> {
    let mut aad = AAD_DOMAIN.to_vec();
    aad.extend_from_slice(case_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(field.as_bytes());
    aad
}

/// Whether a stored value is sealed (by its prefix).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

/// Seals `plaintext` for `field` of case `case_id`, with a nonce derived from the command's fresh `secret`.
pub fn seal(
    key: &CaseKey,
    secret: &[u8; 32],
    case_id: &str,
    field: &str,
    plaintext: &str,
) -> Result<String, SealError> {
    use sha2::Digest;
    let aad = aad(case_id, field);
    let digest = sha2::Sha256::new()
        .chain_update(NONCE_DOMAIN)
        .chain_update(secret)
        .chain_update((aad.len() as u64).to_le_bytes())
        .chain_update(&aad)
        .chain_update(plaintext.as_bytes())
        .finalize();
    let mut nonce = [0u8; NONCE_BYTES];
    nonce.copy_from_slice(&digest[..NONCE_BYTES]);
    let ciphertext = key
        .cipher()
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: &aad })
        .map_err(|_| SealError::WrongKey)?;
    let mut bytes = nonce.to_vec();
    bytes.extend(ciphertext);
    Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(bytes)))
}

/// Opens a value sealed for `field` of case `case_id`.
pub fn open(key: &CaseKey, case_id: &str, field: &str, sealed: &str) -> Result<String, SealError> {
    let encoded = sealed.strip_prefix(SEALED_PREFIX).ok_or(SealError::NotSealed)?;
    let bytes = STANDARD.decode(encoded).map_err(|_| SealError::NotSealed)?;
    if bytes.len() < NONCE_BYTES + TAG_BYTES {
        return Err(SealError::NotSealed);
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
    let aad = aad(case_id, field);
    let plaintext = key
        .cipher()
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
        .map_err(|_| SealError::WrongKey)?;
    String::from_utf8(plaintext).map_err(|_| SealError::WrongKey)
}

/// What a reader shows for a stored private value: the plaintext with the key, [`SEALED_ZH`] without it (or when it
/// does not open), and the value itself when it is not sealed (an empty value is stored as is: nothing to hide).
pub fn reveal(key: Option<&CaseKey>, case_id: &str, field: &str, stored: &str) -> String {
    if !is_sealed(stored) {
        return stored.to_owned();
    }
    match key.map(|key| open(key, case_id, field, stored)) {
        Some(Ok(plaintext)) => plaintext,
        _ => SEALED_ZH.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_case_and_field() {
        let key = CaseKey::derive(&[1; 32]);
        let secret = [2; 32];
        let sealed = seal(&key, &secret, "C1", "detail", "李建国 13812341234").unwrap();
        assert!(is_sealed(&sealed) && !sealed.contains("1381234"));
        assert_eq!(open(&key, "C1", "detail", &sealed).unwrap(), "李建国 13812341234");
        let other = CaseKey::derive(&[3; 32]);
        assert_ne!(key, other);
        assert_eq!(open(&other, "C1", "detail", &sealed), Err(SealError::WrongKey));
        assert_eq!(open(&key, "C2", "detail", &sealed), Err(SealError::WrongKey), "moved to another case");
        assert_eq!(open(&key, "C1", "location", &sealed), Err(SealError::WrongKey), "moved to another field");
        // Nonces: a fresh secret gives a fresh nonce; a secret used twice still differs by field and by plaintext.
        assert_ne!(
            seal(&key, &[4; 32], "C1", "detail", "x").unwrap(),
            seal(&key, &[5; 32], "C1", "detail", "x").unwrap()
        );
        let nonce = |sealed: &str| STANDARD.decode(&sealed[SEALED_PREFIX.len()..]).unwrap()[..NONCE_BYTES].to_vec();
        let (x, y) =
            (seal(&key, &secret, "C1", "detail", "x").unwrap(), seal(&key, &secret, "C1", "detail", "y").unwrap());
        assert_ne!(nonce(&x), nonce(&y));
        assert_ne!(nonce(&x), nonce(&seal(&key, &secret, "C1", "location", "x").unwrap()));
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(open(&key, "C1", "detail", &String::from_utf8(flipped).unwrap()).is_err());
        assert_eq!(reveal(None, "C1", "detail", &sealed), SEALED_ZH);
        assert_eq!(reveal(Some(&other), "C1", "detail", &sealed), SEALED_ZH);
        assert_eq!(reveal(None, "C1", "detail", ""), "");
        assert_eq!(format!("{key:?}"), "CaseKey(…)");
    }
}
