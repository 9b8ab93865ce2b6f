//! The sans-IO sync session between two nodes: catalogs since a checkpoint, Automerge's sync protocol for the documents
//! that differ, signed changes verified before Automerge sees them, live pushes, acknowledged checkpoints.
//!
//! Vocabulary of quinn-proto: feed inputs with [`Session::handle_frame`], [`Session::handle_local_change`] and
//! [`Session::handle_timeout`], then drain [`Session::poll_event`] (persist first), [`Session::poll_transmit`] and
//! [`Session::poll_timeout`]. The session never touches a socket, a clock or a database: the node's store implements
//! [`Replica`] and commits received changes inside [`Replica::receive`], so by the time a reply frame is drained the
//! changes it answers are durable.
//!
//! Protocol, per connection (both sides run the same session):
//! 1. `Hello` (hall, node key, roster digest); `Roster` when digests differ.
//! 2. `Catalog` batches: our entries with `seq` above the checkpoint the peer acknowledged (all on first contact).
//! 3. For every entry whose heads differ from ours, an Automerge sync exchange of `Sync` frames, each carrying the
//!    signatures of the changes in it; at most [`DOCS_IN_FLIGHT_MAX`] documents at a time, each from a fresh
//!    `sync::State` (NOTES.md: never reuse a state across connections).
//! 4. `CatalogAck { seq }` once every differing document up to `seq` is caught up: the peer advances its checkpoint.
//! 5. While connected, every new local or received change is pushed as a one-entry `Catalog`.
//!
//! The hall document travels beside the catalog, outside it: after hello each side sends `HallHeads`; a side that
//! holds changes the other's heads lack pushes them in `HallChanges`, each signed by an admin (see
//! [`SignedHall`]), and pushes again whenever its hall document grows ([`Session::push_hall`]). In-sync peers
//! exchange two frames of ~40 bytes.

use crate::hall::SignedHall;
use crate::roster::{PublicKey, Roster, SignedRecord};
use crate::signing::{AuthorKeys, ChangeRejected, verify_change, verify_signed};
use crate::wire::{self, CatalogEntry, ChangeSignature, Frame, WholeDoc, WireError};
use automerge::sync::{Message, State};
use automerge::{ActorId, AutoCommit, Change, ChangeHash};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Documents synced at once per peer: enough to fill a LAN pipe (each exchange is a few round trips of ~0.1 ms), few
/// enough that a slow peer holds at most this many `sync::State`s of ours.
pub const DOCS_IN_FLIGHT_MAX: usize = 64;
/// Open document exchanges kept per session (their `sync::State`s): twice the in-flight limit.
pub const EXCHANGES_MAX: usize = 2 * DOCS_IN_FLIGHT_MAX;
/// Frames queued for sending before the session stops producing more (backpressure on the catalog pump).
pub const OUT_FRAMES_MAX: usize = 256;
/// Rounds of one document's exchange before the peer is considered broken: a settled exchange takes 2-4 messages.
pub const DOC_ROUNDS_MAX: u32 = 64;
/// Documents the peer's catalog may leave waiting for sync: bounds memory against a peer announcing endless ids.
pub const PENDING_DOCS_MAX: usize = 2_000_000;
/// Documents asked for whole and not yet answered: four pages of [`WANT_PAGE_DOCS`] keep the pipe full.
pub const WHOLE_DOCS_IN_FLIGHT_MAX: usize = 4 * WANT_PAGE_DOCS;
/// Whole documents one session may refuse as damaged (a change that fails its signature check, bytes Automerge
/// refuses) before the peer is dropped. An honest holder never sends one (it verifies what it sends and quarantines what
/// fails), so a damaged document costs only itself; a peer sending many is broken or hostile, and a session that only
/// verifies and refuses is not worth keeping. Changes of a revoked author do not count (honest relays may carry them).
pub const REFUSED_WHOLE_DOCS_MAX: usize = 16;
/// `WantKeys` pages (of up to `wire::WANT_DOCS_MAX` ids) awaiting their `Keys` answer.
pub const KEY_PAGES_IN_FLIGHT_MAX: usize = 4;
/// Documents per `Want` frame we send: a page answers in one `Docs` frame of ~100 KB for cases of ~1.5 KB.
pub const WANT_PAGE_DOCS: usize = 64;

/// The node's side of a session: its documents, catalog, signatures and roster.
pub trait Replica {
    /// Our catalog entries with `seq > after`, ascending, at most `limit`.
    fn catalog_after(&mut self, after: u64, limit: usize) -> Vec<CatalogEntry>;
    /// The hash of our heads of a document, `None` if we do not hold it.
    fn heads_hash(&mut self, doc_id: &str) -> Option<[u8; 32]>;
    /// Whether we hold every change in `heads` (and so everything before them).
    fn has_all(&mut self, doc_id: &str, heads: &[ChangeHash]) -> bool;
    /// Automerge's next sync message for a document (an empty document if we do not hold it).
    fn generate(&mut self, doc_id: &str, state: &mut State) -> Option<Message>;
    /// Applies a checked message whose changes all carry verified signatures, and commits it durably (changes and
    /// signatures) before returning. A panic inside must leave the replica able to reload the document.
    fn receive(
        &mut self,
        doc_id: &str,
        state: &mut State,
        message: Message,
        signatures: &[ChangeSignature],
    ) -> Result<(), String>;
    /// Drops any in-memory copy of a document (after Automerge panicked on it) so it is reloaded from storage.
    fn reload(&mut self, doc_id: &str);
    /// Whether documents we lack may arrive whole ([`Replica::receive_whole`]); when false every document is synced
    /// change by change.
    fn takes_whole_docs(&self) -> bool {
        false
    }
    /// A document as we store it, to send whole to a peer that lacks it: the snapshot, the change chunks after it and
    /// the signatures we hold for its changes. `None` when we do not hold it (the peer then syncs it change by change).
    fn whole_doc(&mut self, _doc_id: &str) -> Option<WholeDoc> {
        None
    }
    /// Stores a document received whole and verified by the session (every change signed by a member), as
    /// [`Replica::receive`] does: durably, before returning. Only called for documents [`Replica::heads_hash`] does
    /// not know.
    fn receive_whole(&mut self, doc_id: &str, _received: ReceivedDoc) -> Result<(), String> {
        Err(format!("{doc_id}: this replica does not take whole documents"))
    }
    /// Whether this replica lacks the data key of a document it holds and may hold it (`seal::may_hold_key`): the
    /// session then asks a peer that announced the key. The default replica holds no keys.
    fn wants_key(&mut self, _doc_id: &str) -> bool {
        false
    }
    /// The data key of `doc_id` for `peer`, when this replica holds it and the peer may hold it.
    fn key_for_peer(&mut self, _doc_id: &str, _peer: &PublicKey) -> Option<[u8; 32]> {
        None
    }
    /// Stores a key the peer handed over after we asked for it, durably, before returning; `Err` says why it was not
    /// taken (it does not open the case, the case was purged, this node may not hold it).
    fn receive_key(&mut self, doc_id: &str, _key: [u8; 32]) -> Result<(), String> {
        Err(format!("{doc_id}: this replica holds no keys"))
    }
    /// The signature we hold for a change of a document (ours or relayed).
    fn signature(&mut self, doc_id: &str, hash: &ChangeHash) -> Option<[u8; 64]>;
    fn roster(&self) -> &Roster;
    /// Verifies and stores roster records from the peer; returns how many were new.
    fn add_roster_records(&mut self, records: Vec<SignedRecord>) -> usize;
    /// The hall document and the signatures of its changes, if this replica syncs it. `None` (the default) sends no
    /// hall frames and ignores the peer's.
    fn hall(&mut self) -> Option<&mut SignedHall> {
        None
    }
    /// The hall document grew or learned signatures through this session: persist it (before the step's frames go
    /// out, like [`Replica::receive`]).
    fn hall_changed(&mut self) {}
}

/// A document that arrived whole, loaded by Automerge (which recomputed every change hash and checked the heads) and
/// with every change's signature verified.
#[derive(Debug)]
pub struct ReceivedDoc {
    pub doc: AutoCommit,
    /// The document's heads (snapshot and changes).
    pub heads: Vec<ChangeHash>,
    /// The snapshot as received (empty when the document came as change chunks only), and the heads it holds.
    pub snapshot: Vec<u8>,
    pub snapshot_heads: Vec<ChangeHash>,
    /// The change chunks after the snapshot, as received, with their hash and author.
    pub changes: Vec<ReceivedChange>,
    /// The verified signature of every change of the document, with its signer.
    pub signatures: Vec<(ChangeSignature, PublicKey)>,
    /// The case's view, folded while the page was checked on the machine's cores (for the replica's projections),
    /// with the case key when one came and opens the case; `None` when the document is not a case.
    pub view: Option<crate::CaseView>,
    /// The case key that came with the document and opens it (the replica stores it if it may hold it).
    pub key: Option<crate::seal::CaseKey>,
}

#[derive(Debug)]
pub struct ReceivedChange {
    pub hash: ChangeHash,
    pub actor: ActorId,
    pub bytes: Vec<u8>,
}

/// Loads a whole document from a peer. Everything here is the peer's bytes: Automerge's panics are errors, the
/// snapshot must be a document chunk, and the result must depend on nothing it lacks. The signatures are left for
/// the caller to verify.
fn load_whole(whole: &mut WholeDoc) -> Result<ReceivedDoc, String> {
    let snapshot = std::mem::take(&mut whole.snapshot);
    let mut doc = if snapshot.is_empty() {
        AutoCommit::new()
    } else {
        // Header: 4 magic bytes, a 4-byte checksum, the chunk type (0: document).
        if snapshot.get(8) != Some(&0) {
            return Err("the snapshot is not an Automerge document".to_owned());
        }
        crate::wire::check_document_chunks(&snapshot)?;
        std::panic::catch_unwind(|| AutoCommit::load(&snapshot))
            .map_err(|_| "automerge panicked loading the snapshot".to_owned())?
            .map_err(|error| format!("snapshot: {error}"))?
    };
    let snapshot_heads = doc.get_heads();
    let mut changes = Vec::with_capacity(whole.changes.len());
    let mut parsed = Vec::with_capacity(whole.changes.len());
    for bytes in std::mem::take(&mut whole.changes) {
        let change = std::panic::catch_unwind(|| Change::from_bytes(bytes.clone()))
            .map_err(|_| "automerge panicked parsing a change".to_owned())?
            .map_err(|error| format!("change: {error}"))?;
        changes.push(ReceivedChange { hash: change.hash(), actor: change.actor_id().clone(), bytes });
        parsed.push(change);
    }
    if !parsed.is_empty() {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| doc.apply_changes(parsed)))
            .map_err(|_| "automerge panicked applying the changes".to_owned())?
            .map_err(|error| format!("applying the changes: {error}"))?;
    }
    if !doc.get_missing_deps(&[]).is_empty() {
        return Err("the document depends on changes it does not carry".to_owned());
    }
    let heads = doc.get_heads();
    Ok(ReceivedDoc { doc, heads, snapshot, snapshot_heads, changes, signatures: Vec::new(), view: None, key: None })
}

/// Why a document received whole is not stored.
enum WholeFault {
    /// Automerge refused (or panicked on) the bytes: the peer sent something no honest holder stores.
    Automerge(String),
    /// A change failed its signature check.
    Rejected(ChangeRejected),
}

/// Loads a whole document and verifies the signature of every change Automerge lists in it (hashes it recomputed
/// itself, so the signatures cover the content).
fn check_whole(mut whole: WholeDoc, roster: &Roster) -> Result<ReceivedDoc, WholeFault> {
    let mut received = load_whole(&mut whole).map_err(WholeFault::Automerge)?;
    let by_hash: BTreeMap<[u8; 32], [u8; 64]> = whole.signatures.iter().map(|s| (s.hash, s.signature)).collect();
    let metas = received.doc.get_changes_meta(&[]);
    let mut signatures = Vec::with_capacity(metas.len());
    let mut keys = AuthorKeys::default();
    for meta in metas {
        let signature_of = |hash: &ChangeHash| by_hash.get(&hash.0).copied();
        let (hash, signer) = verify_signed(&mut keys, roster, &meta.actor, meta.hash, meta.timestamp, signature_of)
            .map_err(WholeFault::Rejected)?;
        signatures.push((ChangeSignature { hash: hash.0, signature: by_hash[&hash.0] }, signer));
    }
    received.signatures = signatures;
    received.doc = match crate::CaseDoc::from_automerge_or_back(received.doc) {
        Ok(mut case) => {
            // A key that does not open the case is dropped (the document is still good; the replica may ask later).
            let key = whole.key.map(crate::seal::CaseKey::from_bytes).filter(|key| case.key_opens(key));
            case.set_key(key.clone());
            received.view = Some(case.view());
            received.key = key;
            case.set_key(None);
            case.into_automerge()
        }
        Err((_, doc)) => doc,
    };
    Ok(received)
}

/// Helper threads [`check_pipelined`] starts at most, and the fewest documents worth starting them for.
const CHECK_THREADS_MAX: usize = 4;
const CHECK_THREADS_DOCS_MIN: usize = 8;

/// Checks documents received whole ([`check_whole`]) on helper threads, one per core, while the calling thread hands
/// each result to `consume` in the documents' order as soon as it is ready: the store writes one document while the
/// next ones load and verify. The first error `consume` returns stops the helpers (at their next result) and is
/// returned.
fn check_pipelined<E>(
    docs: Vec<WholeDoc>,
    roster: &Roster,
    mut consume: impl FnMut(String, Result<ReceivedDoc, WholeFault>) -> Result<(), E>,
) -> Result<(), E> {
    let check = |whole: WholeDoc| {
        let doc_id = whole.doc_id.clone();
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_whole(whole, roster)))
            .unwrap_or_else(|_| Err(WholeFault::Automerge("automerge panicked".to_owned())));
        (doc_id, checked)
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(CHECK_THREADS_MAX);
    if threads < 2 || docs.len() < CHECK_THREADS_DOCS_MIN {
        for whole in docs {
            let (doc_id, checked) = check(whole);
            consume(doc_id, checked)?;
        }
        return Ok(());
    }
    let total = docs.len();
    // Round robin: helper k checks documents k, k + threads, … so results come out roughly in order.
    let mut lanes: Vec<Vec<(usize, WholeDoc)>> = (0..threads).map(|_| Vec::new()).collect();
    for (index, whole) in docs.into_iter().enumerate() {
        lanes[index % threads].push((index, whole));
    }
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::channel();
        for lane in lanes {
            let sender = sender.clone();
            let check = &check;
            scope.spawn(move || {
                for (index, whole) in lane {
                    if sender.send((index, check(whole))).is_err() {
                        return; // The consumer stopped at an error.
                    }
                }
            });
        }
        drop(sender);
        let mut ready = BTreeMap::new();
        let mut next = 0;
        while next < total {
            let Ok((index, checked)) = receiver.recv() else { break };
            ready.insert(index, checked);
            while let Some((doc_id, checked)) = ready.remove(&next) {
                next += 1;
                consume(doc_id, checked)?;
            }
        }
        Ok(())
    })
}

/// What the node must act on, drained before frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The peer acknowledged our catalog up to `seq`: persist it as this peer's checkpoint.
    CheckpointAdvanced { seq: u64 },
    /// A document changed through this session (reindex projections, push to other peers).
    DocChanged { doc_id: String },
    /// New roster records arrived (a revocation may close other connections).
    RosterChanged { new_records: usize },
    /// The peer relayed a change we refuse without blaming the peer (made by a revoked member after its revocation):
    /// the document is skipped for the rest of this session. Count it and log it.
    ChangeRefused { doc_id: String, reason: String },
    /// The peer handed over a case key this node asked for, and the replica stored it.
    KeyReceived { doc_id: String },
    /// A key the peer handed over was not taken (see [`Replica::receive_key`]): counted and logged, the peer kept.
    KeyRefused { doc_id: String, reason: String },
    /// The session is caught up in both directions (initial catalogs exchanged, nothing in flight).
    Settled,
    /// The peer told us where it reached other members: address hints to dial by key.
    PeerHints(Vec<wire::PeerHint>),
    /// The hall document took changes (or signatures) from the peer, already handed to [`Replica::hall_changed`]:
    /// push it to the other peers.
    HallChanged { applied: usize, signatures_learned: usize },
}

/// Why the session with a peer ended. Every variant drops the peer; none panics the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The peer broke the protocol (a frame out of order, a hello that does not match the connection).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The peer sent a change that is unsigned, forged, or by a non-member.
    #[error("rejected change: {0}")]
    RejectedChange(String),
    /// The peer belongs to another hall.
    #[error("the peer belongs to another hall")]
    OtherHall,
    /// The peer is not (or no longer) an active member.
    #[error("the peer is not an active member of the hall")]
    Unauthorized,
    /// Automerge refused or panicked on the peer's data; the document was reloaded from storage.
    #[error("automerge refused the peer's data for {doc_id}: {reason}")]
    Automerge { doc_id: String, reason: String },
    /// A document exchange did not settle.
    #[error("document {0} did not settle in {DOC_ROUNDS_MAX} rounds")]
    NoProgress(String),
    /// The peer said goodbye.
    #[error("the peer closed the session: {0}")]
    Closed(String),
}

#[derive(Debug)]
struct DocExchange {
    state: State,
    rounds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    Running,
}

/// One sync session with one peer over one connection.
#[derive(Debug)]
pub struct Session {
    our_key: PublicKey,
    peer_key: PublicKey,
    phase: Phase,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<SessionEvent>,
    /// Our catalog: where the next batch starts, the highest seq ever sent (what the peer may acknowledge), whether the
    /// catalog is sent up to our latest entry, and whether the initial exchange (ending in `last`) is complete.
    sent_seq: u64,
    max_sent_seq: u64,
    sent_all: bool,
    initial_sent: bool,
    /// Their catalog: documents to sync (doc id → their entry seq), the highest seq seen, whether they sent `last`.
    to_sync: VecDeque<String>,
    pending: BTreeMap<String, u64>,
    /// `pending`'s seqs with their counts: the lowest pending seq in O(log n) (a whole-map scan on every pump made an
    /// initial sync of 10k documents quadratic).
    pending_seqs: BTreeMap<u64, usize>,
    their_max_seq: u64,
    their_last: bool,
    acked_to_them: u64,
    /// Documents of their catalog we hold nothing of, to ask for whole; and those asked for, not yet answered.
    wanted: VecDeque<String>,
    requested: BTreeSet<String>,
    /// Documents with an exchange open on this connection.
    exchanges: BTreeMap<String, DocExchange>,
    /// Documents skipped for the rest of the session because the peer relayed a refused change in them.
    refused: BTreeSet<String>,
    /// Whole documents refused as damaged in this session (see [`REFUSED_WHOLE_DOCS_MAX`]).
    damaged_whole_docs: usize,
    /// Case keys the peer announced (`CatalogEntry::keyed`): waiting for their document to be caught up, then ready
    /// to be asked for (if the replica wants them); and the pages of `WantKeys` sent, answered in order.
    key_waiting: BTreeSet<String>,
    key_ready: VecDeque<String>,
    key_pages: VecDeque<BTreeSet<String>>,
    settled_reported: bool,
    /// What the peer holds of the hall document: its announced heads plus the changes exchanged since (`None` until
    /// its `HallHeads`).
    their_hall: Option<BTreeSet<[u8; 32]>>,
}

impl Session {
    /// A session with `peer_key` (authenticated by the transport), resuming from the checkpoint the peer last
    /// acknowledged. Queues our `Hello`.
    pub fn new(our_key: PublicKey, peer_key: PublicKey, checkpoint: u64, roster: &Roster) -> Session {
        let mut session = Session {
            our_key,
            peer_key,
            phase: Phase::AwaitHello,
            out: VecDeque::new(),
            events: VecDeque::new(),
            sent_seq: checkpoint,
            max_sent_seq: checkpoint,
            sent_all: false,
            initial_sent: false,
            to_sync: VecDeque::new(),
            pending: BTreeMap::new(),
            pending_seqs: BTreeMap::new(),
            their_max_seq: 0,
            their_last: false,
            acked_to_them: 0,
            wanted: VecDeque::new(),
            requested: BTreeSet::new(),
            exchanges: BTreeMap::new(),
            refused: BTreeSet::new(),
            damaged_whole_docs: 0,
            key_waiting: BTreeSet::new(),
            key_ready: VecDeque::new(),
            key_pages: VecDeque::new(),
            settled_reported: false,
            their_hall: None,
        };
        session.send(&Frame::Hello { hall: *roster.hall(), node_key: our_key, roster_digest: roster.digest() });
        session
    }

    pub fn peer_key(&self) -> &PublicKey {
        &self.peer_key
    }

    fn send(&mut self, frame: &Frame) {
        self.out.push_back(wire::encode(frame));
    }

    /// Handles one frame from the peer.
    pub fn handle_frame(&mut self, bytes: &[u8], replica: &mut impl Replica) -> Result<(), SyncError> {
        let frame = wire::decode(bytes)?;
        match (self.phase, frame) {
            (Phase::AwaitHello, Frame::Hello { hall, node_key, roster_digest }) => {
                if &hall != replica.roster().hall() {
                    return Err(SyncError::OtherHall);
                }
                if node_key != self.peer_key {
                    return Err(SyncError::Protocol("hello names another key than the connection"));
                }
                if replica.roster().authorized(&self.peer_key).is_none() {
                    return Err(SyncError::Unauthorized);
                }
                if roster_digest != replica.roster().digest() {
                    let records = replica.roster().records().to_vec();
                    self.send(&Frame::Roster { records });
                }
                self.phase = Phase::Running;
                if let Some(hall) = replica.hall() {
                    let heads = hall.heads().into_iter().take(wire::HALL_HEADS_MAX).map(|hash| hash.0).collect();
                    self.send(&Frame::HallHeads { heads });
                }
            }
            (Phase::AwaitHello, _) => return Err(SyncError::Protocol("first frame must be hello")),
            (Phase::Running, Frame::Hello { .. }) => return Err(SyncError::Protocol("second hello")),
            (Phase::Running, Frame::Roster { records }) => {
                let new_records = replica.add_roster_records(records);
                if new_records > 0 {
                    self.events.push_back(SessionEvent::RosterChanged { new_records });
                }
                if replica.roster().authorized(&self.peer_key).is_none() {
                    return Err(SyncError::Unauthorized);
                }
            }
            (Phase::Running, Frame::Catalog { entries, last }) => {
                // Keyed documents we already hold as the peer does: their key may be asked for at once.
                let mut keyed_in_sync = Vec::new();
                for entry in entries {
                    self.their_max_seq = self.their_max_seq.max(entry.seq);
                    let ours = replica.heads_hash(&entry.doc_id);
                    if self.refused.contains(&entry.doc_id) {
                        continue;
                    }
                    if ours == Some(entry.heads_hash) {
                        if entry.keyed && self.pending.contains_key(&entry.doc_id) {
                            self.key_waiting.insert(entry.doc_id);
                        } else if entry.keyed {
                            keyed_in_sync.push(entry.doc_id);
                        }
                        continue;
                    }
                    if self.pending.len() >= PENDING_DOCS_MAX {
                        return Err(SyncError::Protocol("too many documents pending"));
                    }
                    if !self.pending.contains_key(&entry.doc_id) {
                        let whole = ours.is_none() && entry.doc_id != wire::HALL_DOC_ID && replica.takes_whole_docs();
                        if whole {
                            self.wanted.push_back(entry.doc_id.clone());
                        } else {
                            self.to_sync.push_back(entry.doc_id.clone());
                        }
                    }
                    // Keep the lowest seq still waiting for this document: the ack may not pass it.
                    self.add_pending(entry.doc_id.clone(), entry.seq);
                    if entry.keyed && self.key_waiting.len() < PENDING_DOCS_MAX {
                        self.key_waiting.insert(entry.doc_id);
                    }
                }
                for doc_id in keyed_in_sync {
                    if self.key_ready.len() < PENDING_DOCS_MAX {
                        self.key_ready.push_back(doc_id);
                    }
                }
                self.their_last |= last;
            }
            (Phase::Running, Frame::CatalogAck { seq }) => {
                if seq > self.max_sent_seq {
                    return Err(SyncError::Protocol("ack beyond what was sent"));
                }
                self.events.push_back(SessionEvent::CheckpointAdvanced { seq });
            }
            (Phase::Running, Frame::Sync { doc_id, message, signatures }) => {
                self.receive_sync(doc_id, &message, &signatures, replica)?;
            }
            (Phase::Running, Frame::Peers { peers }) => {
                let peers: Vec<_> =
                    peers.into_iter().filter(|hint| replica.roster().authorized(&hint.node_key).is_some()).collect();
                if !peers.is_empty() {
                    self.events.push_back(SessionEvent::PeerHints(peers));
                }
            }
            (Phase::Running, Frame::HallHeads { heads }) => {
                if self.their_hall.is_some() {
                    return Err(SyncError::Protocol("second hall heads"));
                }
                self.their_hall = Some(heads.into_iter().collect());
                self.push_hall(replica);
            }
            (Phase::Running, Frame::HallChanges { changes, signatures }) => {
                self.receive_hall(&changes, &signatures, replica)?;
            }
            (Phase::Running, Frame::Want { doc_ids }) => self.send_whole(doc_ids, replica),
            (Phase::Running, Frame::Docs { docs }) => self.receive_docs(docs, replica)?,
            (Phase::Running, Frame::WantKeys { doc_ids }) => {
                let peer = self.peer_key;
                let keys = doc_ids
                    .into_iter()
                    .filter_map(|doc_id| {
                        replica.key_for_peer(&doc_id, &peer).map(|key| wire::CaseKeyGrant { doc_id, key })
                    })
                    .collect();
                self.send(&Frame::Keys { keys });
            }
            (Phase::Running, Frame::Keys { keys }) => {
                let Some(page) = self.key_pages.pop_front() else {
                    return Err(SyncError::Protocol("keys nobody asked for"));
                };
                for grant in keys {
                    if !page.contains(&grant.doc_id) {
                        return Err(SyncError::Protocol("a key that was not asked for"));
                    }
                    let stored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        replica.receive_key(&grant.doc_id, grant.key)
                    }))
                    .unwrap_or_else(|_| Err("the replica panicked storing the key".to_owned()));
                    match stored {
                        Ok(()) => self.events.push_back(SessionEvent::KeyReceived { doc_id: grant.doc_id }),
                        Err(reason) => self.events.push_back(SessionEvent::KeyRefused { doc_id: grant.doc_id, reason }),
                    }
                }
            }
            (_, Frame::Bye { reason }) => return Err(SyncError::Closed(reason)),
        }
        self.pump(replica);
        Ok(())
    }

    fn receive_sync(
        &mut self,
        doc_id: String,
        message: &[u8],
        signatures: &[ChangeSignature],
        replica: &mut impl Replica,
    ) -> Result<(), SyncError> {
        let message = wire::guard_sync_message(message)?;
        let by_hash: BTreeMap<[u8; 32], [u8; 64]> = signatures.iter().map(|s| (s.hash, s.signature)).collect();
        if self.refused.contains(&doc_id) {
            return Ok(());
        }
        for chunk in message.changes.iter() {
            match verify_change(replica.roster(), chunk, |hash| by_hash.get(&hash.0).copied()) {
                Ok(_) => {}
                Err(rejected) if rejected.drops_peer() => return Err(SyncError::RejectedChange(rejected.to_string())),
                Err(refused) => {
                    self.refuse_doc(&doc_id, refused.to_string());
                    return Ok(());
                }
            }
        }
        let carried_changes = !message.changes.is_empty();
        let their_heads = message.heads.clone();
        let exchange =
            self.exchanges.entry(doc_id.clone()).or_insert_with(|| DocExchange { state: State::new(), rounds: 0 });
        exchange.rounds += 1;
        if exchange.rounds > DOC_ROUNDS_MAX {
            return Err(SyncError::NoProgress(doc_id));
        }
        let state = &mut exchange.state;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            replica.receive(&doc_id, state, message, signatures)
        }));
        // Whatever the peer advertised, never answer it with a whole document (see `wire::encode_sync_message`).
        if let Some(exchange) = self.exchanges.get_mut(&doc_id) {
            exchange.state.their_capabilities = None;
        }
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(SyncError::Automerge { doc_id, reason }),
            Err(_) => {
                replica.reload(&doc_id);
                self.exchanges.remove(&doc_id);
                return Err(SyncError::Automerge { doc_id, reason: "automerge panicked".into() });
            }
        }
        if carried_changes {
            self.events.push_back(SessionEvent::DocChanged { doc_id: doc_id.clone() });
        }
        let sent = self.step_exchange(&doc_id, replica);
        let caught_up = replica.has_all(&doc_id, &their_heads);
        if caught_up {
            self.remove_pending(&doc_id);
        }
        if !sent && caught_up {
            // Quiet both ways: the exchange is over. A later change opens a new one from a fresh state.
            self.exchanges.remove(&doc_id);
        }
        Ok(())
    }

    /// Answers a `Want`: each document whole, packed into `Docs` frames of at most [`wire::DOCS_FRAME_BYTES_MAX`]
    /// document bytes. A document we do not hold, or too large for a frame, is marked not offered.
    fn send_whole(&mut self, doc_ids: Vec<String>, replica: &mut impl Replica) {
        let mut docs = Vec::new();
        let mut bytes = 0;
        let peer = self.peer_key;
        for doc_id in doc_ids {
            let whole = replica
                .whole_doc(&doc_id)
                .filter(|whole| whole.wire_bytes() <= wire::DOCS_FRAME_BYTES_MAX)
                .map(|mut whole| {
                    if whole.is_offered() {
                        whole.key = replica.key_for_peer(&doc_id, &peer);
                    }
                    whole
                })
                .unwrap_or_else(|| WholeDoc::not_offered(doc_id));
            let size = whole.wire_bytes();
            if bytes + size > wire::DOCS_FRAME_BYTES_MAX {
                self.send(&Frame::Docs { docs: std::mem::take(&mut docs) });
                bytes = 0;
            }
            bytes += size;
            docs.push(whole);
        }
        if !docs.is_empty() {
            self.send(&Frame::Docs { docs });
        }
    }

    /// A `Docs` frame: each document loaded, every change's signature verified, then stored by the replica, in the
    /// frame's order. A document not offered, one we came to hold meanwhile, or one with an unsigned change (a holder
    /// keeps changes imported from plain files local) goes the change-by-change way, which knows how to skip it.
    fn receive_docs(&mut self, docs: Vec<WholeDoc>, replica: &mut impl Replica) -> Result<(), SyncError> {
        let mut to_check = Vec::with_capacity(docs.len());
        for whole in docs {
            if !self.requested.remove(&whole.doc_id) {
                return Err(SyncError::Protocol("a whole document that was not asked for"));
            }
            if !self.pending.contains_key(&whole.doc_id) || self.refused.contains(&whole.doc_id) {
                continue;
            }
            if !whole.is_offered() || replica.heads_hash(&whole.doc_id).is_some() {
                self.to_sync.push_back(whole.doc_id);
                continue;
            }
            to_check.push(whole);
        }
        // Automerge's loading and ed25519 are most of a fresh node's initial sync: helper threads check the page's
        // documents while this thread stores them, in the frame's order, as they come out checked.
        let roster = replica.roster().clone();
        check_pipelined(to_check, &roster, |doc_id, checked| {
            let received = match checked {
                Ok(received) => received,
                Err(WholeFault::Rejected(ChangeRejected::Unsigned(_))) => {
                    self.to_sync.push_back(doc_id);
                    return Ok(());
                }
                Err(WholeFault::Rejected(revoked @ ChangeRejected::Revoked(..))) => {
                    self.refuse_doc(&doc_id, revoked.to_string());
                    return Ok(());
                }
                // A damaged document (a forged or flipped signature, bytes Automerge refuses) is refused alone: the
                // rest of the session goes on (issue 14 §1), up to a bound.
                Err(WholeFault::Rejected(damaged)) => return self.refuse_damaged(&doc_id, damaged.to_string()),
                Err(WholeFault::Automerge(reason)) => return self.refuse_damaged(&doc_id, reason),
            };
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| replica.receive_whole(&doc_id, received)));
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => return Err(SyncError::Automerge { doc_id, reason }),
                Err(_) => {
                    replica.reload(&doc_id);
                    return Err(SyncError::Automerge { doc_id, reason: "automerge panicked".into() });
                }
            }
            self.remove_pending(&doc_id);
            self.events.push_back(SessionEvent::DocChanged { doc_id });
            Ok(())
        })
    }

    /// Sends our next sync message for a document; returns whether there was anything to say.
    fn step_exchange(&mut self, doc_id: &str, replica: &mut impl Replica) -> bool {
        let Some(exchange) = self.exchanges.get_mut(doc_id) else { return false };
        let Some(message) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| replica.generate(doc_id, &mut exchange.state)))
                .unwrap_or_else(|_| {
                    replica.reload(doc_id);
                    None
                })
        else {
            return false;
        };
        let mut signatures = Vec::with_capacity(message.changes.len());
        for chunk in message.changes.iter() {
            let signature = automerge::Change::from_bytes(chunk.to_vec()).ok().and_then(|change| {
                replica
                    .signature(doc_id, &change.hash())
                    .map(|signature| ChangeSignature { hash: change.hash().0, signature })
            });
            match signature {
                Some(signature) => signatures.push(signature),
                None => {
                    // A change we hold without its author's signature (imported from a plain Automerge file): the
                    // peer would rightly drop us for it. Keep it local, skip this document for the session.
                    self.refuse_doc(
                        doc_id,
                        "a change of ours has no member's signature: kept local, not relayed".to_owned(),
                    );
                    return false;
                }
            }
        }
        let bytes = wire::encode_sync_message(message);
        self.send(&Frame::Sync { doc_id: doc_id.to_owned(), message: bytes, signatures });
        true
    }

    fn receive_hall(
        &mut self,
        changes: &[Vec<u8>],
        signatures: &[ChangeSignature],
        replica: &mut impl Replica,
    ) -> Result<(), SyncError> {
        let roster = replica.roster().clone();
        let Some(hall) = replica.hall() else { return Ok(()) };
        let received = hall
            .receive(&roster, changes, signatures)
            .map_err(|rejected| SyncError::RejectedChange(format!("hall document: {rejected}")))?;
        if let Some(theirs) = &mut self.their_hall {
            // The peer holds what it sent: never push it back.
            theirs.extend(signatures.iter().map(|signature| signature.hash));
        }
        if let Some(reason) = received.refused {
            self.events.push_back(SessionEvent::ChangeRefused { doc_id: wire::HALL_DOC_ID.to_owned(), reason });
        }
        if received.applied > 0 || received.signatures_learned > 0 {
            replica.hall_changed();
            self.events.push_back(SessionEvent::HallChanged {
                applied: received.applied,
                signatures_learned: received.signatures_learned,
            });
        }
        Ok(())
    }

    /// Pushes the hall document changes the peer lacks (after its `HallHeads`, and whenever ours grew). Costs a set
    /// comparison when the peer already holds our heads. Changes we hold unsigned stay local (see [`SignedHall`]).
    pub fn push_hall(&mut self, replica: &mut impl Replica) {
        if self.phase != Phase::Running {
            return;
        }
        let (Some(theirs), Some(hall)) = (&mut self.their_hall, replica.hall()) else { return };
        if hall.heads().iter().all(|head| theirs.contains(&head.0)) {
            return;
        }
        let (changes, _unsigned) = hall.changes_for(theirs);
        let mut frames = Vec::new();
        let (mut batch, mut batch_signatures, mut batch_bytes) = (Vec::new(), Vec::new(), 0);
        for change in changes {
            if change.bytes.len() > wire::HALL_FRAME_CHANGE_BYTES_MAX {
                continue;
            }
            if batch.len() == wire::HALL_CHANGES_PER_FRAME_MAX
                || batch_bytes + change.bytes.len() > wire::HALL_FRAME_CHANGE_BYTES_MAX
            {
                frames.push(Frame::HallChanges {
                    changes: std::mem::take(&mut batch),
                    signatures: std::mem::take(&mut batch_signatures),
                });
                batch_bytes = 0;
            }
            theirs.insert(change.hash);
            batch_bytes += change.bytes.len();
            batch.push(change.bytes);
            batch_signatures.push(ChangeSignature { hash: change.hash, signature: change.signature });
        }
        if !batch.is_empty() {
            frames.push(Frame::HallChanges { changes: batch, signatures: batch_signatures });
        }
        for frame in frames {
            self.send(&frame);
        }
    }

    /// A local change (ours, or received from another peer) to announce.
    pub fn handle_local_change(&mut self, entry: CatalogEntry) {
        if self.phase == Phase::Running && self.sent_all && entry.seq > self.sent_seq {
            self.sent_seq = entry.seq;
            self.max_sent_seq = self.max_sent_seq.max(entry.seq);
            self.send(&Frame::Catalog { entries: vec![entry], last: false });
        }
    }

    /// Our catalog grew (local commands, changes relayed from other peers, another process writing the store): the
    /// next [`Session::pump`] announces every entry after the last one sent. Cheap when nothing is new, and it cannot
    /// miss an entry the way a lossy notification channel could.
    pub fn catch_up(&mut self) {
        if self.phase == Phase::Running && self.initial_sent {
            self.sent_all = false;
        }
    }

    /// Sends our whole catalog again (periodic full reconciliation): the peer compares every `(doc_id, heads_hash)`
    /// and syncs any document a lost checkpoint or a bug left behind. Costs ~50 bytes per document.
    pub fn reconcile(&mut self) {
        if self.phase == Phase::Running && self.initial_sent {
            self.sent_seq = 0;
            self.sent_all = false;
        }
    }

    /// Refuses a whole document the peer sent damaged; drops the peer once it sent more than
    /// [`REFUSED_WHOLE_DOCS_MAX`] of them in this session.
    fn refuse_damaged(&mut self, doc_id: &str, reason: String) -> Result<(), SyncError> {
        self.damaged_whole_docs += 1;
        if self.damaged_whole_docs > REFUSED_WHOLE_DOCS_MAX {
            return Err(SyncError::RejectedChange(format!(
                "more than {REFUSED_WHOLE_DOCS_MAX} damaged documents in one session; the last, {doc_id}: {reason}"
            )));
        }
        self.refuse_doc(doc_id, format!("damaged whole document: {reason}"));
        Ok(())
    }

    /// Skips a document for the rest of the session (a change in it is refused, without blaming the peer): no
    /// exchange, nothing pending, an event for the node to count and log.
    fn refuse_doc(&mut self, doc_id: &str, reason: String) {
        self.exchanges.remove(doc_id);
        self.key_waiting.remove(doc_id);
        self.remove_pending(doc_id);
        if self.refused.len() < PENDING_DOCS_MAX {
            self.refused.insert(doc_id.to_owned());
        }
        self.events.push_back(SessionEvent::ChangeRefused { doc_id: doc_id.to_owned(), reason });
    }

    fn add_pending(&mut self, doc_id: String, seq: u64) {
        if let std::collections::btree_map::Entry::Vacant(vacant) = self.pending.entry(doc_id) {
            vacant.insert(seq);
            *self.pending_seqs.entry(seq).or_insert(0) += 1;
        }
    }

    fn remove_pending(&mut self, doc_id: &str) {
        if self.key_waiting.remove(doc_id) {
            self.key_ready.push_back(doc_id.to_owned());
        }
        if let Some(seq) = self.pending.remove(doc_id)
            && let std::collections::btree_map::Entry::Occupied(mut count) = self.pending_seqs.entry(seq)
        {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }

    /// Moves the session forward: more catalog, more document exchanges, acknowledgements.
    pub fn pump(&mut self, replica: &mut impl Replica) {
        if self.phase != Phase::Running {
            return;
        }
        while !self.sent_all && self.out.len() < OUT_FRAMES_MAX {
            let entries = replica.catalog_after(self.sent_seq, wire::CATALOG_BATCH_MAX);
            let last = entries.len() < wire::CATALOG_BATCH_MAX;
            if let Some(max) = entries.iter().map(|e| e.seq).max() {
                self.sent_seq = max;
                self.max_sent_seq = self.max_sent_seq.max(max);
            }
            if !entries.is_empty() || !self.initial_sent {
                self.send(&Frame::Catalog { entries, last });
            }
            self.sent_all = last;
            self.initial_sent |= last;
        }
        // Exchanges we answered last and the peer found nothing more to say about linger; drop the oldest-keyed ones not
        // waiting on the peer's catalog once there are too many (a new change reopens them from a fresh state).
        if self.exchanges.len() > EXCHANGES_MAX {
            let idle: Vec<String> =
                self.exchanges.keys().filter(|doc_id| !self.pending.contains_key(*doc_id)).cloned().collect();
            for doc_id in idle.into_iter().take(self.exchanges.len() - EXCHANGES_MAX) {
                self.exchanges.remove(&doc_id);
            }
        }
        // Exchanges are few (bounded above); pending documents may be many.
        let in_flight = self.exchanges.keys().filter(|doc_id| self.pending.contains_key(*doc_id)).count();
        let mut room = DOCS_IN_FLIGHT_MAX.saturating_sub(in_flight);
        while room > 0 && self.out.len() < OUT_FRAMES_MAX {
            let Some(doc_id) = self.to_sync.pop_front() else { break };
            if !self.pending.contains_key(&doc_id) {
                continue;
            }
            self.exchanges.insert(doc_id.clone(), DocExchange { state: State::new(), rounds: 0 });
            self.step_exchange(&doc_id, replica);
            room -= 1;
        }
        while self.requested.len() < WHOLE_DOCS_IN_FLIGHT_MAX && self.out.len() < OUT_FRAMES_MAX {
            let room = (WHOLE_DOCS_IN_FLIGHT_MAX - self.requested.len()).min(WANT_PAGE_DOCS);
            let mut page = Vec::with_capacity(room);
            while page.len() < room {
                let Some(doc_id) = self.wanted.pop_front() else { break };
                if self.pending.contains_key(&doc_id) && !self.requested.contains(&doc_id) {
                    self.requested.insert(doc_id.clone());
                    page.push(doc_id);
                }
            }
            if page.is_empty() {
                break;
            }
            self.send(&Frame::Want { doc_ids: page });
        }
        // Case keys the peer announced, for documents now caught up: ask for those this replica may hold and lacks.
        while self.key_pages.len() < KEY_PAGES_IN_FLIGHT_MAX && self.out.len() < OUT_FRAMES_MAX {
            let mut page = BTreeSet::new();
            while page.len() < wire::WANT_DOCS_MAX {
                let Some(doc_id) = self.key_ready.pop_front() else { break };
                if replica.wants_key(&doc_id) {
                    page.insert(doc_id);
                }
            }
            if page.is_empty() {
                break;
            }
            self.send(&Frame::WantKeys { doc_ids: page.iter().cloned().collect() });
            self.key_pages.push_back(page);
        }
        let ack = match self.pending_seqs.keys().next() {
            Some(&lowest) => lowest.saturating_sub(1),
            None => self.their_max_seq,
        };
        if ack > self.acked_to_them {
            self.acked_to_them = ack;
            self.send(&Frame::CatalogAck { seq: ack });
        }
        if self.is_settled() && !self.settled_reported {
            self.settled_reported = true;
            self.events.push_back(SessionEvent::Settled);
        }
    }

    /// Caught up both ways: catalogs exchanged, nothing pending from the peer's catalog.
    pub fn is_settled(&self) -> bool {
        self.phase == Phase::Running
            && self.sent_all
            && self.their_last
            && self.pending.is_empty()
            && self.to_sync.is_empty()
            && self.wanted.is_empty()
            && self.requested.is_empty()
            && self.key_ready.is_empty()
            && self.key_pages.is_empty()
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// Documents waiting to be synced from the peer (for per-peer status: "documents behind").
    pub fn docs_behind(&self) -> usize {
        self.pending.len()
    }

    /// The hello key of this side (for logs).
    pub fn our_key(&self) -> &PublicKey {
        &self.our_key
    }

    /// A goodbye frame to send before closing.
    pub fn bye(reason: &str) -> Vec<u8> {
        wire::encode(&Frame::Bye { reason: reason.chars().take(200).collect() })
    }
}

/// The hash of a document's heads, as catalogs carry it: SHA-256 over the sorted heads.
pub fn heads_hash(heads: &[ChangeHash]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let sorted: BTreeSet<&ChangeHash> = heads.iter().collect();
    let mut hasher = Sha256::new();
    for head in sorted {
        hasher.update(head.0);
    }
    hasher.finalize().into()
}
