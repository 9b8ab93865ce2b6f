//! The wire format between nodes: versioned, length-capped frames, and the guard that checks an Automerge sync message
//! before Automerge sees it.
//!
//! A frame is `[WIRE_VERSION] ++ postcard(Frame)`; the transport adds a length prefix and rejects anything longer than
//! [`FRAME_BYTES_MAX`] before allocating. Every count inside a frame has a limit checked by [`decode`], so nothing a peer
//! sends can make a node allocate without bound. This module is the only place that knows the byte layout.

use crate::roster::{PublicKey, SignedRecord};
use automerge::sync::{Message, MessageVersion};
use serde::{Deserialize, Serialize};

/// The first byte of every frame. 2: catalog entries say whether the sender holds the case key; `WantKeys`/`Keys`.
pub const WIRE_VERSION: u8 = 2;
/// A frame carries at most one case's sync message; a case with the maximum 2,000 events saves to a few hundred KB, so
/// 4 MiB leaves an order of magnitude while keeping a peer from making us buffer much.
pub const FRAME_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Catalog entries per frame: 1,000 entries of ~80 bytes is an 80 KB frame, small enough to interleave with sync.
pub const CATALOG_BATCH_MAX: usize = 1_000;
/// Change signatures per frame (one per change in the sync message it travels with).
pub const SIGNATURES_PER_FRAME_MAX: usize = 4_096;
/// Hashes in a sync message's heads, need or have lists: a case has few heads; thousands mean a hostile peer.
pub const SYNC_HASHES_MAX: usize = 1_024;
/// Changes in one sync message.
pub const SYNC_CHANGES_MAX: usize = 4_096;
/// Bloom filter parameters automerge itself uses are 7 probes and 10 bits per entry; anything far outside is hostile
/// (0 probes divides by zero, 4 billion probes allocates 16 GB: NOTES.md).
pub const BLOOM_PROBES_MAX: u64 = 32;
pub const BLOOM_BITS_PER_ENTRY_MAX: u64 = 64;

const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);

/// One catalog row: a document and the hash of its heads after the change numbered `seq` on the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub doc_id: String,
    pub heads_hash: [u8; 32],
    pub seq: u64,
    /// The sender holds the case's data key (a peer entitled to it and lacking it asks with `WantKeys`).
    pub keyed: bool,
}

/// A case's data key, handed over a mutually authenticated session to a peer that may hold it (`seal::may_hold_key`,
/// checked by both sides).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseKeyGrant {
    pub doc_id: String,
    pub key: [u8; 32],
}

impl std::fmt::Debug for CaseKeyGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaseKeyGrant({}, …)", self.doc_id)
    }
}

/// A change's signature, relayed with the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSignature {
    pub hash: [u8; 32],
    #[serde(with = "serde_sig")]
    pub signature: [u8; 64],
}

mod serde_sig {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(bytes: &[u8; 64], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 64], D::Error> {
        let bytes: &[u8] = Deserialize::deserialize(deserializer)?;
        bytes.try_into().map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"64 bytes"))
    }
}

/// Everything nodes say to each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame on a connection: who I am, which hall, my roster's digest.
    Hello { hall: PublicKey, node_key: PublicKey, roster_digest: [u8; 32] },
    /// Roster records the peer may lack (all of them when the digests differ).
    Roster { records: Vec<SignedRecord> },
    /// Catalog entries changed since the receiver's checkpoint; `last` ends the initial exchange.
    Catalog { entries: Vec<CatalogEntry>, last: bool },
    /// The receiver has every document of the sender's catalog up to `seq`: the sender may advance its checkpoint.
    CatalogAck { seq: u64 },
    /// An Automerge sync message for one document, with the signatures of the changes it carries.
    Sync { doc_id: String, message: Vec<u8>, signatures: Vec<ChangeSignature> },
    /// The sender closes the session, saying why.
    Bye { reason: String },
    /// Where the sender reached other members (address hints for the receiver; it still dials by key).
    Peers { peers: Vec<PeerHint> },
    // Appended after every older variant: postcard numbers variants by position, so older frames keep their bytes.
    /// The heads of the sender's hall document, sent once after hello: the receiver pushes the changes the sender
    /// lacks (and nothing when the heads match).
    HallHeads { heads: Vec<[u8; 32]> },
    /// Hall document changes the receiver lacks, with the signatures of those the sender holds one for. Only changes
    /// signed by an admin member are accepted (`signing::verify_admin_change`).
    HallChanges { changes: Vec<Vec<u8>>, signatures: Vec<ChangeSignature> },
    /// Documents the sender does not hold at all: the receiver answers with `Docs`, each document whole as it stores
    /// it, instead of an Automerge sync exchange per document (four messages, and the sender re-encoding every change).
    Want { doc_ids: Vec<String> },
    /// Answers to `Want`, each document whole (or marked not offered: the asker then syncs it change by change).
    Docs { docs: Vec<WholeDoc> },
    /// Case keys the sender lacks, may hold, and saw announced as held (`CatalogEntry::keyed`).
    WantKeys { doc_ids: Vec<String> },
    /// Answers to `WantKeys`: the keys the holder may hand to this peer (the others are left out).
    Keys { keys: Vec<CaseKeyGrant> },
}

/// A document as its holder stores it, for a peer that lacks it: Automerge's saved form (empty when the holder keeps
/// only change chunks), the change chunks after it, and the signature of every change in both. The receiver loads it
/// (Automerge recomputes every change hash and checks the heads) and verifies each change's signature before storing
/// it. Both byte lists empty: the holder does not offer this document whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WholeDoc {
    pub doc_id: String,
    pub snapshot: Vec<u8>,
    pub changes: Vec<Vec<u8>>,
    pub signatures: Vec<ChangeSignature>,
    /// The case key, when the holder has it and the asker may hold it (`seal::may_hold_key`): a fresh hall PC takes
    /// documents and keys in one step instead of asking for every key afterwards.
    pub key: Option<[u8; 32]>,
}

impl WholeDoc {
    /// The answer for a document the holder cannot send whole.
    pub fn not_offered(doc_id: String) -> WholeDoc {
        WholeDoc { doc_id, snapshot: Vec::new(), changes: Vec::new(), signatures: Vec::new(), key: None }
    }

    pub fn is_offered(&self) -> bool {
        !self.snapshot.is_empty() || !self.changes.is_empty()
    }

    /// Bytes this document adds to a `Docs` frame, an upper estimate (length prefixes counted at their widest).
    pub fn wire_bytes(&self) -> usize {
        self.doc_id.len()
            + self.snapshot.len()
            + self.changes.iter().map(|change| change.len() + LENGTH_PREFIX_BYTES_MAX).sum::<usize>()
            + self.signatures.len() * SIGNATURE_WIRE_BYTES
            + 33
    }
}

/// A postcard length prefix of a byte list below [`FRAME_BYTES_MAX`]: a varint of at most 4 bytes.
const LENGTH_PREFIX_BYTES_MAX: usize = 4;
/// One [`ChangeSignature`] on the wire: the 32-byte hash, then the 64-byte signature with its 1-byte length (and a
/// byte of slack).
const SIGNATURE_WIRE_BYTES: usize = 32 + 1 + 64 + 1;

/// Documents one `Want` (and one `Docs`) frame names: a page of documents of a few KB each.
pub const WANT_DOCS_MAX: usize = 256;
/// Document bytes a sender packs into one `Docs` frame; a document larger than this alone is not offered whole.
pub const DOCS_FRAME_BYTES_MAX: usize = FRAME_BYTES_MAX / 2;

/// A member and an address it was reached at, as `host:port` text (parsed, and ignored if bad, by the receiver).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHint {
    pub node_key: PublicKey,
    pub addr: String,
}

/// Address hints in one `Peers` frame: a hall has tens of nodes.
pub const PEER_HINTS_MAX: usize = 256;
/// Heads of a hall document: one per admin edit made concurrently with others, so a handful; hundreds mean a hostile
/// peer.
pub const HALL_HEADS_MAX: usize = 256;
/// Changes (and signatures) in one `HallChanges` frame: the hall document gains one change per admin edit, so a
/// hall's whole history fits a few frames; the sender splits longer pushes.
pub const HALL_CHANGES_PER_FRAME_MAX: usize = 1_024;
/// Change bytes a sender packs into one `HallChanges` frame: half the frame limit leaves room for the signatures and
/// the encoding overhead.
pub const HALL_FRAME_CHANGE_BYTES_MAX: usize = FRAME_BYTES_MAX / 2;

/// Why bytes from a peer were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Longer than the limit: refused before decoding.
    #[error("frame of {0} bytes exceeds the limit of {FRAME_BYTES_MAX}")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    /// A frame from a newer (or older) protocol version.
    #[error("unsupported wire version {0} (this node speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("undecodable frame: {0}")]
    Decode(String),
    /// A count or an id inside the frame is out of bounds.
    #[error("frame field out of bounds: {0}")]
    Bounds(&'static str),
    /// The Automerge sync message is malformed or hostile.
    #[error("refused sync message: {0}")]
    SyncMessage(String),
}

/// A document id: a case's ULID, or `hall` for the hall document.
pub fn is_doc_id(text: &str) -> bool {
    text == HALL_DOC_ID || crate::ids::CaseId::parse(text).is_some()
}

/// The id of the hall document in catalogs and sync frames.
pub const HALL_DOC_ID: &str = "hall";

pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut bytes = vec![WIRE_VERSION];
    bytes.extend(postcard::to_allocvec(frame).expect("frames always encode"));
    bytes
}

// ---------------------------------------------------------------------------------------------------------------
// Material files (issue 16 §3): one bidirectional stream per file, beside the sync stream of the same connection.
//
// requester → server: `[WIRE_VERSION, BLOB_STREAM_TAG] ++ postcard(BlobFrame::Request)` (one length-prefixed frame)
// server → requester: `[WIRE_VERSION, BLOB_STREAM_TAG] ++ postcard(BlobFrame::Answer)`, then, when the answer is
//                     `Sending { total }`, exactly `total - offset` raw sealed bytes and the end of the stream.

/// The second byte of every blob-stream frame. As a postcard varint it would start a multi-byte enum tag (≥ 128),
/// which no sync [`Frame`] has: a blob frame can never decode as a sync frame or the other way round.
pub const BLOB_STREAM_TAG: u8 = 0xB1;
/// A blob frame is a hash, an offset and a tag or two: 64 bytes leave room; anything longer is hostile.
pub const BLOB_FRAME_BYTES_MAX: usize = 64;
/// Bytes of a blob hash on the wire (the SHA-256 of the sealed file).
pub const BLOB_HASH_BYTES: usize = 32;

/// What travels on a blob stream before the raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobFrame {
    /// "Send me file `hash` from byte `offset`" (a resume asks for the rest).
    Request { hash: [u8; BLOB_HASH_BYTES], offset: u64 },
    /// The server's one answer.
    Answer(BlobAnswer),
}

/// The server's answer to a [`BlobFrame::Request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobAnswer {
    /// The file has `total` bytes; the bytes from the asked offset follow, then the stream ends.
    Sending { total: u64 },
    /// A case names the file but this node does not have it (yet).
    NotHere,
    /// The asker may not hold the key of the case that names it (`seal::may_hold_key`).
    NotAllowed,
    /// No case on this node names the file.
    Unknown,
    /// The asker has too many blob streams open on this connection.
    Busy,
}

pub fn encode_blob(frame: &BlobFrame) -> Vec<u8> {
    let mut bytes = vec![WIRE_VERSION, BLOB_STREAM_TAG];
    bytes.extend(postcard::to_allocvec(frame).expect("blob frames always encode"));
    bytes
}

/// Decodes a blob-stream frame, length-capped before decoding.
pub fn decode_blob(bytes: &[u8]) -> Result<BlobFrame, WireError> {
    if bytes.len() > BLOB_FRAME_BYTES_MAX {
        return Err(WireError::TooLarge(bytes.len()));
    }
    match bytes {
        [] => Err(WireError::Empty),
        [version, ..] if *version != WIRE_VERSION => Err(WireError::Version(*version)),
        [_, tag, body @ ..] if *tag == BLOB_STREAM_TAG => {
            postcard::from_bytes(body).map_err(|error| WireError::Decode(error.to_string()))
        }
        _ => Err(WireError::Bounds("not a blob stream frame")),
    }
}

/// Decodes and bounds-checks a frame.
pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
    if bytes.len() > FRAME_BYTES_MAX {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let frame: Frame = postcard::from_bytes(body).map_err(|error| WireError::Decode(error.to_string()))?;
    match &frame {
        Frame::Roster { records } if records.len() > crate::roster::ROSTER_RECORDS_MAX => {
            Err(WireError::Bounds("roster records"))
        }
        Frame::Catalog { entries, .. } if entries.len() > CATALOG_BATCH_MAX => {
            Err(WireError::Bounds("catalog entries"))
        }
        Frame::Catalog { entries, .. } if entries.iter().any(|e| !is_doc_id(&e.doc_id)) => {
            Err(WireError::Bounds("catalog doc id"))
        }
        Frame::Sync { doc_id, .. } if !is_doc_id(doc_id) => Err(WireError::Bounds("sync doc id")),
        Frame::Sync { signatures, .. } if signatures.len() > SIGNATURES_PER_FRAME_MAX => {
            Err(WireError::Bounds("signatures"))
        }
        Frame::Bye { reason } if reason.len() > 1_024 => Err(WireError::Bounds("bye reason")),
        Frame::Peers { peers } if peers.len() > PEER_HINTS_MAX => Err(WireError::Bounds("peer hints")),
        Frame::Peers { peers } if peers.iter().any(|p| p.addr.len() > 64) => Err(WireError::Bounds("peer address")),
        Frame::HallHeads { heads } if heads.len() > HALL_HEADS_MAX => Err(WireError::Bounds("hall heads")),
        Frame::HallChanges { changes, signatures }
            if changes.len() > HALL_CHANGES_PER_FRAME_MAX || signatures.len() > HALL_CHANGES_PER_FRAME_MAX =>
        {
            Err(WireError::Bounds("hall changes"))
        }
        Frame::Want { doc_ids } if doc_ids.len() > WANT_DOCS_MAX => Err(WireError::Bounds("wanted documents")),
        Frame::Want { doc_ids } if doc_ids.iter().any(|id| crate::ids::CaseId::parse(id).is_none()) => {
            Err(WireError::Bounds("wanted doc id"))
        }
        Frame::Docs { docs } if docs.len() > WANT_DOCS_MAX => Err(WireError::Bounds("whole documents")),
        Frame::WantKeys { doc_ids } if doc_ids.len() > WANT_DOCS_MAX => Err(WireError::Bounds("wanted keys")),
        Frame::WantKeys { doc_ids } if doc_ids.iter().any(|id| crate::ids::CaseId::parse(id).is_none()) => {
            Err(WireError::Bounds("wanted key id"))
        }
        Frame::Keys { keys } if keys.len() > WANT_DOCS_MAX => Err(WireError::Bounds("keys")),
        Frame::Keys { keys } if keys.iter().any(|grant| crate::ids::CaseId::parse(&grant.doc_id).is_none()) => {
            Err(WireError::Bounds("key doc id"))
        }
        Frame::Docs { docs }
            if docs.iter().any(|doc| {
                crate::ids::CaseId::parse(&doc.doc_id).is_none()
                    || doc.changes.len() > SYNC_CHANGES_MAX
                    || doc.signatures.len() > SIGNATURES_PER_FRAME_MAX
            }) =>
        {
            Err(WireError::Bounds("whole document"))
        }
        _ => Ok(frame),
    }
}

/// The Automerge chunk types a stored or received document may hold: 0 a document, 1 a change, 2 a compressed change.
const DOCUMENT_CHUNK_TYPES: [u8; 3] = [0, 1, 2];

/// Checks the chunk headers of outside document bytes before Automerge parses them: every chunk starts with the magic
/// bytes and is a document or a change, and its length fits the bytes. automerge 0.12 also reads "bundle" chunks
/// (type 3), and a crafted 141-byte one made `load` decode a delta column into more than 12 GB (found by the
/// `case_document` fuzz target, kept in `crdt/fuzz/regressions/case_document/`): a case or hall document never holds
/// one, so it is refused here, before any allocation.
pub fn check_document_chunks(bytes: &[u8]) -> Result<(), String> {
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 9 || !rest.starts_with(&[0x85, 0x6f, 0x4a, 0x83]) {
            return Err("not an Automerge chunk".to_owned());
        }
        let chunk_type = rest[8];
        if !DOCUMENT_CHUNK_TYPES.contains(&chunk_type) {
            return Err(format!("an Automerge chunk of type {chunk_type}, not a document or a change"));
        }
        let mut body = &rest[9..];
        let length = read_leb128(&mut body).ok_or_else(|| "a chunk length that does not decode".to_owned())?;
        let length = usize::try_from(length).ok().filter(|&length| length <= body.len());
        let Some(length) = length else { return Err("a chunk longer than the bytes".to_owned()) };
        rest = &body[length..];
    }
    Ok(())
}

fn read_leb128(bytes: &mut &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Checks an Automerge sync message before Automerge acts on it: size, counts, bloom filter parameters, V1 only (no
/// whole-document chunks, whose changes could not be checked one by one), change chunks only. Returns the decoded message.
pub fn guard_sync_message(bytes: &[u8]) -> Result<Message, WireError> {
    let refuse = |why: String| WireError::SyncMessage(why);
    if bytes.len() > FRAME_BYTES_MAX {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let message = std::panic::catch_unwind(|| Message::decode(bytes))
        .map_err(|_| refuse("the decoder panicked".into()))?
        .map_err(|error| refuse(error.to_string()))?;
    if message.version != MessageVersion::V1 {
        return Err(refuse("only V1 sync messages are accepted".into()));
    }
    if message.heads.len() > SYNC_HASHES_MAX || message.need.len() > SYNC_HASHES_MAX || message.have.len() > 8 {
        return Err(refuse("too many hashes".into()));
    }
    for have in &message.have {
        if have.last_sync.len() > SYNC_HASHES_MAX {
            return Err(refuse("too many hashes in have".into()));
        }
        let bloom = have.bloom.to_bytes();
        let mut rest = bloom.as_slice();
        if !rest.is_empty() {
            let entries = read_leb128(&mut rest).ok_or_else(|| refuse("bloom header".into()))?;
            let bits_per_entry = read_leb128(&mut rest).ok_or_else(|| refuse("bloom header".into()))?;
            let probes = read_leb128(&mut rest).ok_or_else(|| refuse("bloom header".into()))?;
            let bits_ok = (1..=BLOOM_BITS_PER_ENTRY_MAX).contains(&bits_per_entry) && !rest.is_empty();
            if entries > 0 && (!(1..=BLOOM_PROBES_MAX).contains(&probes) || !bits_ok) {
                return Err(refuse(format!("bloom filter with {probes} probes and {bits_per_entry} bits per entry")));
            }
        }
    }
    if message.changes.len() > SYNC_CHANGES_MAX {
        return Err(refuse("too many changes".into()));
    }
    for chunk in message.changes.iter() {
        // Chunk header: 4 magic bytes, 4 checksum bytes, then the type: 1 is a change, 2 a compressed change.
        match chunk.get(8) {
            Some(1 | 2) if chunk.starts_with(&[0x85, 0x6f, 0x4a, 0x83]) => {}
            _ => return Err(refuse("a chunk that is not a single change".into())),
        }
    }
    Ok(message)
}

/// Re-encodes a message we generated as V1 without the flags section, the only form our peers accept. (In automerge
/// 0.12 any flags section makes the receiver assume V2 support and answer a new peer with the whole document, whose
/// changes could not be verified one by one.)
pub fn encode_sync_message(mut message: Message) -> Vec<u8> {
    message.version = MessageVersion::V1;
    message.flags = None;
    message.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_frames_round_trip_and_never_pass_for_sync_frames() {
        let request = BlobFrame::Request { hash: [7; BLOB_HASH_BYTES], offset: 123_456 };
        let bytes = encode_blob(&request);
        assert!(bytes.len() <= BLOB_FRAME_BYTES_MAX);
        assert_eq!(decode_blob(&bytes), Ok(request));
        assert!(decode(&bytes).is_err(), "a blob request is not a sync frame");
        let answer = BlobFrame::Answer(BlobAnswer::Sending { total: u64::MAX });
        assert_eq!(decode_blob(&encode_blob(&answer)), Ok(answer));
        let sync = encode(&Frame::Bye { reason: "x".into() });
        assert!(decode_blob(&sync).is_err(), "a sync frame is not a blob frame");
        assert!(decode_blob(&[WIRE_VERSION; 65]).is_err());
        assert!(decode_blob(&[]).is_err());
    }

    #[test]
    fn frames_round_trip_and_bad_bytes_are_refused() {
        let frame = Frame::Catalog {
            entries: vec![CatalogEntry {
                doc_id: "01KJP1GKJ0SPQPWY4YDAGVJSFM".into(),
                heads_hash: [7; 32],
                seq: 42,
                keyed: true,
            }],
            last: true,
        };
        let bytes = encode(&frame);
        assert_eq!(bytes[0], WIRE_VERSION);
        assert_eq!(decode(&bytes), Ok(frame));
        assert_eq!(decode(&[]), Err(WireError::Empty));
        assert_eq!(decode(&[9, 0]), Err(WireError::Version(9)));
        assert!(matches!(decode(&[WIRE_VERSION, 0xff, 0xff]), Err(WireError::Decode(_))));
        assert!(matches!(decode(&vec![WIRE_VERSION; FRAME_BYTES_MAX + 1]), Err(WireError::TooLarge(_))));
        let bad_id = encode(&Frame::Sync { doc_id: "../etc".into(), message: vec![], signatures: vec![] });
        assert_eq!(decode(&bad_id), Err(WireError::Bounds("sync doc id")));
        let too_many = encode(&Frame::Catalog {
            entries: vec![
                CatalogEntry { doc_id: HALL_DOC_ID.into(), heads_hash: [0; 32], seq: 1, keyed: false };
                CATALOG_BATCH_MAX + 1
            ],
            last: false,
        });
        assert_eq!(decode(&too_many), Err(WireError::Bounds("catalog entries")));
    }

    #[test]
    fn a_bloom_filter_with_zero_probes_is_refused_before_automerge_sees_it() {
        use automerge::sync::SyncDoc;
        use automerge::transaction::Transactable;
        let mut doc = automerge::AutoCommit::new();
        doc.put(automerge::ROOT, "k", 1).unwrap();
        let mut state = automerge::sync::State::new();
        let mut first = doc.sync().generate_sync_message(&mut state).unwrap();
        // Our own messages pass.
        let ok = encode_sync_message(first.clone());
        assert!(guard_sync_message(&ok).is_ok());
        // A hand-made bloom: 5 entries, 10 bits each, 0 probes (divides by zero in automerge 0.12).
        let mut bloom = vec![5, 10, 0];
        bloom.extend([0xff; 7]);
        let crafted = automerge::sync::BloomFilter::try_from(bloom.as_slice()).unwrap();
        first.have = vec![automerge::sync::Have { last_sync: vec![], bloom: crafted }];
        let hostile = encode_sync_message(first);
        assert!(matches!(guard_sync_message(&hostile), Err(WireError::SyncMessage(why)) if why.contains("0 probes")));
        assert!(guard_sync_message(b"\x42garbage").is_err());
    }

    /// The input that crashes automerge 0.12 without the guard: a bloom filter claiming entries but no bits (0 bits per
    /// entry) makes `get_probes` compute `x % 0` when the receiver next generates a message.
    #[test]
    fn the_zero_bit_bloom_that_panics_automerge_is_refused() {
        use automerge::sync::SyncDoc;
        use automerge::transaction::Transactable;
        let mut sender = automerge::AutoCommit::new();
        sender.put(automerge::ROOT, "k", 1).unwrap();
        let mut message = sender.sync().generate_sync_message(&mut automerge::sync::State::new()).unwrap();
        let crafted = automerge::sync::BloomFilter::try_from([5u8, 0, 7].as_slice()).unwrap();
        message.have = vec![automerge::sync::Have { last_sync: vec![], bloom: crafted }];
        let bytes = encode_sync_message(message);
        assert!(matches!(guard_sync_message(&bytes), Err(WireError::SyncMessage(_))));
        // Unguarded, automerge panics (caught here to prove the point without crashing the test).
        let mut receiver = automerge::AutoCommit::new();
        receiver.put(automerge::ROOT, "other", 2).unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut state = automerge::sync::State::new();
            let decoded = automerge::sync::Message::decode(&bytes).unwrap();
            let _ = receiver.sync().receive_sync_message(&mut state, decoded);
            let _ = receiver.sync().generate_sync_message(&mut state);
        }));
        assert!(panicked.is_err(), "automerge 0.12 no longer panics on a zero-bit bloom: the guard may be relaxed");
    }
}
