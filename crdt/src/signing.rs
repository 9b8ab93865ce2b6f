//! Signed changes: every Automerge change a node authors is signed with its key, and nothing from a peer reaches
//! Automerge before each change's signature is checked against the enrolled, unrevoked key its actor id names.
//!
//! Automerge authenticates nothing: any peer can write under any actor id, and a forged change with a genuine actor's
//! (actor, seq) makes the genuine change fail forever ("duplicate seq", NOTES.md). So the actor id of a node is its
//! 32-byte public key followed by an 8-byte incarnation (random per installation, so a reinstalled node never reuses
//! sequence numbers), and a change's signature covers its hash, which Automerge computes from the change's bytes.

use crate::roster::{PublicKey, Roster};
use automerge::{ActorId, Change, ChangeHash};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Bytes of an actor id: a 32-byte public key + an incarnation of 8 to 32 random bytes.
pub const ACTOR_BYTES_MIN: usize = 40;
pub const ACTOR_BYTES_MAX: usize = 64;
const CHANGE_DOMAIN: &[u8] = b"zhaowo-change-v1\0";

/// The actor id of a node's installation.
pub fn actor_id(node_key: &PublicKey, incarnation: &[u8]) -> ActorId {
    let mut bytes = node_key.to_vec();
    bytes.extend_from_slice(incarnation);
    ActorId::from(bytes)
}

/// The node key an actor id names, if it has our shape.
pub fn node_key_of(actor: &ActorId) -> Option<PublicKey> {
    let bytes = actor.to_bytes();
    (ACTOR_BYTES_MIN..=ACTOR_BYTES_MAX).contains(&bytes.len()).then(|| bytes[..32].try_into().expect("32 bytes"))
}

fn message(hash: &ChangeHash) -> Vec<u8> {
    let mut bytes = CHANGE_DOMAIN.to_vec();
    bytes.extend_from_slice(&hash.0);
    bytes
}

/// Signs a change's hash.
pub fn sign_change(key: &SigningKey, hash: &ChangeHash) -> [u8; 64] {
    key.sign(&message(hash)).to_bytes()
}

/// Whether `signature` is `node_key`'s signature over the change `hash` (the key's own check, nothing about
/// membership): what a node re-checks on the signatures it stores before it sends them (a damaged row is not sent).
pub fn signature_holds(node_key: &PublicKey, hash: &ChangeHash, signature: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(node_key)
        .is_ok_and(|key| key.verify_strict(&message(hash), &Signature::from_bytes(signature)).is_ok())
}

/// Why a change was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRejected {
    /// The bytes are not an Automerge change.
    #[error("not a change: {0}")]
    Malformed(String),
    /// The actor id does not name a node key.
    #[error("actor id {0} does not name a node key")]
    ForeignActor(String),
    /// The author is not enrolled in this hall.
    #[error("author {0} is not a member of the hall")]
    Unauthorized(String),
    /// The author was revoked and the change is timestamped at or after the revocation. Not the relaying peer's
    /// fault (it may have taken the change before it learned of the revocation): the document is skipped, the peer kept.
    #[error("author {0} was revoked before change {1} was made")]
    Revoked(String, String),
    /// No signature came with the change.
    #[error("change {0} is unsigned")]
    Unsigned(String),
    /// The signature does not verify under the author's key.
    #[error("change {0} has a forged signature")]
    Forged(String),
    /// A hall document change by a member who is not an admin (only admins may change the hall configuration).
    #[error("author {0} of hall change {1} is not an admin")]
    NotAdmin(String, String),
}

impl ChangeRejected {
    /// Whether the peer that sent the change must be dropped: it sent something no honest node would relay.
    pub fn drops_peer(&self) -> bool {
        !matches!(self, ChangeRejected::Revoked(..))
    }
}

/// Checks one change (its raw bytes) and returns its hash and author key. `signature_of` looks up the signature the peer
/// sent for a hash.
pub fn verify_change(
    roster: &Roster,
    bytes: &[u8],
    signature_of: impl Fn(&ChangeHash) -> Option<[u8; 64]>,
) -> Result<(ChangeHash, PublicKey), ChangeRejected> {
    // Automerge's parser has panicked on crafted input before (NOTES.md): a panic here is a rejection, not a crash.
    let parsed = std::panic::catch_unwind(|| Change::from_bytes(bytes.to_vec()))
        .map_err(|_| ChangeRejected::Malformed("the parser panicked".into()))?
        .map_err(|error| ChangeRejected::Malformed(error.to_string()))?;
    verify_signed(
        &mut AuthorKeys::default(),
        roster,
        parsed.actor_id(),
        parsed.hash(),
        parsed.timestamp(),
        signature_of,
    )
}

/// Authors' keys as points, kept while checking many changes (decompressing a key costs about a tenth of a
/// verification, and a case's changes have one or two authors).
#[derive(Debug, Default)]
pub struct AuthorKeys(std::collections::BTreeMap<PublicKey, VerifyingKey>);

/// Checks a change known by its author, hash and timestamp (seconds), as Automerge lists the changes of a document it
/// loaded and re-hashed (a document received whole): the same rules as [`verify_change`]. Authors' keys are kept in
/// `keys` for the next change.
pub fn verify_signed(
    keys: &mut AuthorKeys,
    roster: &Roster,
    actor: &automerge::ActorId,
    hash: ChangeHash,
    timestamp_secs: i64,
    signature_of: impl Fn(&ChangeHash) -> Option<[u8; 64]>,
) -> Result<(ChangeHash, PublicKey), ChangeRejected> {
    let node_key = node_key_of(actor).ok_or_else(|| ChangeRejected::ForeignActor(actor.to_hex_string()))?;
    match roster.revocation(&node_key) {
        // Changes a member made before the admin revoked it stay valid (the hall relies on them, and every node judges
        // them alike, so nodes converge); a change stamped later is refused everywhere, whoever relays it. Timestamps
        // are the author's clock in seconds: a thief could backdate, but cannot deliver, because the transport refuses
        // the revoked key and honest nodes relay only what they took while the key was active.
        Some(revocation) if timestamp_secs.saturating_mul(1000) >= revocation.revoked_ms => {
            return Err(ChangeRejected::Revoked(crate::ids::hex_encode(&node_key), hash.to_string()));
        }
        Some(_) => {}
        None if roster.enrollment(&node_key).is_none() => {
            return Err(ChangeRejected::Unauthorized(crate::ids::hex_encode(&node_key)));
        }
        None => {}
    }
    let signature = signature_of(&hash).ok_or_else(|| ChangeRejected::Unsigned(hash.to_string()))?;
    let key = match keys.0.get(&node_key) {
        Some(key) => *key,
        None => {
            let key = VerifyingKey::from_bytes(&node_key)
                .map_err(|_| ChangeRejected::Unauthorized(crate::ids::hex_encode(&node_key)))?;
            keys.0.insert(node_key, key);
            key
        }
    };
    key.verify_strict(&message(&hash), &Signature::from_bytes(&signature))
        .map_err(|_| ChangeRejected::Forged(hash.to_string()))?;
    Ok((hash, node_key))
}

/// Checks one change of the hall document: [`verify_change`], and its author must be enrolled as an admin (DESIGN.md:
/// only admin keys may change the hall document). A revoked admin's earlier changes stay valid, as for cases.
pub fn verify_admin_change(
    roster: &Roster,
    bytes: &[u8],
    signature_of: impl Fn(&ChangeHash) -> Option<[u8; 64]>,
) -> Result<(ChangeHash, PublicKey), ChangeRejected> {
    let (hash, node_key) = verify_change(roster, bytes, signature_of)?;
    match roster.enrollment(&node_key) {
        Some(enrollment) if enrollment.role == crate::model::Role::Admin => Ok((hash, node_key)),
        _ => Err(ChangeRejected::NotAdmin(crate::ids::hex_encode(&node_key), hash.to_string())),
    }
}
