//! The enrollment file an admin hands to a new node (`zhaowo enroll` → `zhaowo join`): the hall's root key, the new
//! node's signed enrollment, every roster record the admin knows, the hall document and where to find a first peer.
//!
//! A file from outside is hostile input: [`decode`] caps its size, checks every field and verifies every signature
//! before anything of it is used.

use crate::roster::{Enrollment, PublicKey, Record, Roster, RosterError, SignedRecord};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// An enrollment file carries the roster and the hall document: a few hundred records and a few KB of configuration.
pub const ENROLLMENT_FILE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Peer addresses in one file: the issuing node's addresses.
pub const ENROLLMENT_PEERS_MAX: usize = 16;
/// The format tag of version 1.
pub const ENROLLMENT_FORMAT: &str = "zhaowo-enrollment-v1";

/// The file, as JSON with hex fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentFile {
    pub format: String,
    /// The hall root public key, hex.
    pub hall: String,
    pub hall_name: String,
    /// The new node's signed enrollment, hex.
    pub record: String,
    /// Every roster record the admin knows, hex.
    pub roster: Vec<String>,
    /// The hall document, hex.
    pub hall_doc: String,
    /// Addresses of the issuing node.
    pub peers: Vec<SocketAddr>,
}

/// A checked enrollment file.
#[derive(Debug, Clone)]
pub struct DecodedEnrollment {
    pub enrollment: Enrollment,
    /// The roster, every record verified, the enrollment included.
    pub roster: Roster,
    /// The hall document's bytes (load them with `HallDoc::load`, which checks them).
    pub hall_doc: Vec<u8>,
    pub hall_name: String,
    pub peers: Vec<SocketAddr>,
}

/// Why an enrollment file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentError {
    #[error("the enrollment file is {0} bytes, more than the limit of {ENROLLMENT_FILE_BYTES_MAX}")]
    TooLarge(usize),
    /// Not JSON of the expected shape.
    #[error("not an enrollment file: {0}")]
    Syntax(String),
    #[error("unknown enrollment format `{0}`")]
    Format(String),
    /// A field is not what it should be (hex, a key, an enrollment).
    #[error("enrollment file: {0}")]
    Field(&'static str),
    #[error(transparent)]
    Roster(#[from] RosterError),
}

use crate::ids::hex_decode as unhex;

impl EnrollmentFile {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("an enrollment file always encodes")
    }
}

/// Parses and verifies an enrollment file.
pub fn decode(bytes: &[u8]) -> Result<DecodedEnrollment, EnrollmentError> {
    if bytes.len() > ENROLLMENT_FILE_BYTES_MAX {
        return Err(EnrollmentError::TooLarge(bytes.len()));
    }
    let file: EnrollmentFile =
        serde_json::from_slice(bytes).map_err(|error| EnrollmentError::Syntax(error.to_string()))?;
    if file.format != ENROLLMENT_FORMAT {
        return Err(EnrollmentError::Format(file.format.chars().take(64).collect()));
    }
    if file.peers.len() > ENROLLMENT_PEERS_MAX || file.roster.len() > crate::roster::ROSTER_RECORDS_MAX {
        return Err(EnrollmentError::Field("too many peers or roster records"));
    }
    let hall: PublicKey =
        unhex(&file.hall).and_then(|b| b.try_into().ok()).ok_or(EnrollmentError::Field("hall is not a key"))?;
    let record = SignedRecord::from_bytes(&unhex(&file.record).ok_or(EnrollmentError::Field("record is not hex"))?)?;
    record.verify(&hall)?;
    let Record::Enrollment(enrollment) = record.record.clone() else {
        return Err(EnrollmentError::Field("the record is not an enrollment"));
    };
    let mut roster = Roster::new(hall);
    for text in &file.roster {
        let other =
            SignedRecord::from_bytes(&unhex(text).ok_or(EnrollmentError::Field("a roster record is not hex"))?)?;
        roster.insert(other)?;
    }
    roster.insert(record)?;
    let hall_doc = unhex(&file.hall_doc).ok_or(EnrollmentError::Field("hall_doc is not hex"))?;
    Ok(DecodedEnrollment { enrollment, roster, hall_doc, hall_name: file.hall_name, peers: file.peers })
}
