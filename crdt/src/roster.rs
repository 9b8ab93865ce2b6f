//! Hall membership: enrollments and revocations signed by the hall's root key, and the roster they make.
//!
//! The admin holds the hall root key and signs an [`Enrollment`] for every node (its public key, window code, role,
//! display name) and a [`Revocation`] when a node is retired or lost. Records are small, self-verifying and gossiped:
//! every node keeps all of them and sends them to every peer at every connection, so a revocation learnt from any peer
//! takes effect everywhere. A node accepts a peer, and a change from an author, only if the roster holds a valid
//! enrollment for the key and no revocation.

use crate::ids::is_valid_code;
use crate::limits::NAME_CHARS_MAX;
use crate::model::Role;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An ed25519 public key: a node id, or the hall id (the root key).
pub type PublicKey = [u8; 32];

/// Records one roster may hold: a hall has tens of nodes; a thousand leaves room for years of laptops coming and going
/// while bounding what a peer can make us store.
pub const ROSTER_RECORDS_MAX: usize = 1_000;

/// Domain separation: a roster signature can never be replayed as a change signature or anything else.
const RECORD_DOMAIN: &[u8] = b"zhaowo-roster-record-v1\0";

/// The admin's statement that a node belongs to the hall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The hall's root public key (the hall id).
    pub hall: PublicKey,
    pub node_key: PublicKey,
    /// The window code the node registers under; unique among active nodes (it makes 登记编号 unique).
    pub window: String,
    pub role: Role,
    pub display_name: String,
    pub issued_ms: i64,
}

/// The admin's statement that a node no longer belongs to the hall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub hall: PublicKey,
    pub node_key: PublicKey,
    pub revoked_ms: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    Enrollment(Enrollment),
    Revocation(Revocation),
}

/// A record with the hall root's signature over its canonical (postcard) encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    pub record: Record,
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

mod signature_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 64], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 64], D::Error> {
        let bytes: &[u8] = Deserialize::deserialize(deserializer)?;
        bytes.try_into().map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"64 signature bytes"))
    }
}

/// Why a roster record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    /// The record belongs to another hall.
    #[error("the record belongs to another hall")]
    OtherHall,
    /// The signature does not verify under the hall root key.
    #[error("the record's signature does not verify under the hall root key")]
    BadSignature,
    /// A field is malformed (window code, name length, key bytes).
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// Another active node already registers under this window code.
    #[error("window `{window}` is already held by an active node")]
    WindowTaken { window: String },
    /// The roster is full.
    #[error("the roster holds {ROSTER_RECORDS_MAX} records, the limit")]
    Full,
    /// The bytes are not a record.
    #[error("undecodable record: {0}")]
    Decode(String),
}

impl Record {
    fn hall(&self) -> &PublicKey {
        match self {
            Record::Enrollment(e) => &e.hall,
            Record::Revocation(r) => &r.hall,
        }
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut bytes = RECORD_DOMAIN.to_vec();
        bytes.extend(postcard::to_allocvec(self).expect("a record always encodes"));
        bytes
    }

    /// Signs the record with the hall root key.
    pub fn sign(self, root: &SigningKey) -> SignedRecord {
        self.sign_with(|bytes| root.sign(bytes).to_bytes())
    }

    /// Signs the record with a signer that holds the hall root key elsewhere (a key file, a token).
    pub fn sign_with(self, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> SignedRecord {
        let signature = sign(&self.signed_bytes());
        SignedRecord { record: self, signature }
    }
}

impl SignedRecord {
    /// Checks shape and signature against the hall root key.
    pub fn verify(&self, hall: &PublicKey) -> Result<(), RosterError> {
        if self.record.hall() != hall {
            return Err(RosterError::OtherHall);
        }
        if let Record::Enrollment(e) = &self.record {
            if !is_valid_code(&e.window) {
                return Err(RosterError::Malformed("window code"));
            }
            if e.display_name.chars().count() > NAME_CHARS_MAX || e.display_name.trim().is_empty() {
                return Err(RosterError::Malformed("display name"));
            }
            VerifyingKey::from_bytes(&e.node_key).map_err(|_| RosterError::Malformed("node key"))?;
        }
        if let Record::Revocation(r) = &self.record
            && r.reason.chars().count() > NAME_CHARS_MAX * 4
        {
            return Err(RosterError::Malformed("reason"));
        }
        let root = VerifyingKey::from_bytes(hall).map_err(|_| RosterError::Malformed("hall key"))?;
        root.verify_strict(&self.record.signed_bytes(), &Signature::from_bytes(&self.signature))
            .map_err(|_| RosterError::BadSignature)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a record always encodes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SignedRecord, RosterError> {
        postcard::from_bytes(bytes).map_err(|error| RosterError::Decode(error.to_string()))
    }
}

/// The set of verified records of one hall and what follows from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    hall: PublicKey,
    enrollments: BTreeMap<PublicKey, Enrollment>,
    revocations: BTreeMap<PublicKey, Revocation>,
    records: Vec<SignedRecord>,
}

impl Roster {
    pub fn new(hall: PublicKey) -> Roster {
        Roster { hall, enrollments: BTreeMap::new(), revocations: BTreeMap::new(), records: Vec::new() }
    }

    pub fn hall(&self) -> &PublicKey {
        &self.hall
    }

    /// Verifies and adds a record. Returns whether it was new. A revocation is final: a later enrollment of the same
    /// key is ignored (a lost laptop's key never comes back; the laptop gets a new key).
    pub fn insert(&mut self, record: SignedRecord) -> Result<bool, RosterError> {
        record.verify(&self.hall)?;
        if self.records.contains(&record) {
            return Ok(false);
        }
        if self.records.len() >= ROSTER_RECORDS_MAX {
            return Err(RosterError::Full);
        }
        match &record.record {
            Record::Enrollment(enrollment) => {
                let taken = self.enrollments.values().any(|other| {
                    other.window == enrollment.window
                        && other.node_key != enrollment.node_key
                        && !self.revocations.contains_key(&other.node_key)
                });
                if taken {
                    return Err(RosterError::WindowTaken { window: enrollment.window.clone() });
                }
                // The newest enrollment of a key wins (a node moved to another window keeps its key).
                let newer =
                    self.enrollments.get(&enrollment.node_key).is_none_or(|old| old.issued_ms <= enrollment.issued_ms);
                if newer {
                    self.enrollments.insert(enrollment.node_key, enrollment.clone());
                }
            }
            Record::Revocation(revocation) => {
                self.revocations.entry(revocation.node_key).or_insert_with(|| revocation.clone());
            }
        }
        self.records.push(record);
        Ok(true)
    }

    /// The enrollment of an active (enrolled, never revoked) key.
    pub fn authorized(&self, node_key: &PublicKey) -> Option<&Enrollment> {
        if self.revocations.contains_key(node_key) {
            return None;
        }
        self.enrollments.get(node_key)
    }

    /// The enrollment of a key, revoked or not (changes it made before its revocation stay valid).
    pub fn enrollment(&self, node_key: &PublicKey) -> Option<&Enrollment> {
        self.enrollments.get(node_key)
    }

    pub fn revocation(&self, node_key: &PublicKey) -> Option<&Revocation> {
        self.revocations.get(node_key)
    }

    pub fn is_revoked(&self, node_key: &PublicKey) -> bool {
        self.revocations.contains_key(node_key)
    }

    pub fn records(&self) -> &[SignedRecord] {
        &self.records
    }

    pub fn active(&self) -> impl Iterator<Item = &Enrollment> {
        self.enrollments.values().filter(|e| !self.revocations.contains_key(&e.node_key))
    }

    /// A digest of the record set (order-independent), so peers can tell cheaply whether they hold the same roster.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut encoded: Vec<Vec<u8>> = self.records.iter().map(SignedRecord::to_bytes).collect();
        encoded.sort();
        let mut hasher = Sha256::new();
        for record in encoded {
            hasher.update((record.len() as u64).to_be_bytes());
            hasher.update(record);
        }
        hasher.finalize().into()
    }
}
