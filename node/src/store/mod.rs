//! The node's store: SQLite persistence that never loses an acknowledged case.
//!
//! One named thread (`zhaowo-store`) owns the `rusqlite::Connection` and a bounded LRU of loaded case documents,
//! behind a bounded channel of requests; async callers await a oneshot reply (iroh-docs' actor-owned store). A local
//! command is acknowledged only after the transaction holding its change has committed with `synchronous = FULL` in
//! WAL mode, so a power cut after the acknowledgement cannot lose it (NOTES.md: NORMAL lost acknowledged commits in a
//! power-cut model, FULL lost none).
//!
//! Layout (see `schema`): per document a snapshot plus incremental change rows (compacted when the increments
//! outgrow the snapshot), a catalog row `(doc_id, heads_hash, local_seq)`, change signatures, and the projections
//! (register book, FTS5 search, daily statistics) written in the same transaction as the change.
//!
//! ```no_run
//! # async fn demo(case: zhaowo_crdt::CaseDoc) -> Result<(), Box<dyn std::error::Error>> {
//! use zhaowo_node::store::{Store, StoreOptions};
//! let store = Store::open(StoreOptions::recommended("cases.db".into(), automerge::ActorId::from(vec![1; 16])))?;
//! let ack = store.register(case).await?; // returns after COMMIT
//! let view = store.case_view(&ack.case_id).await?;
//! # Ok(()) }
//! ```

mod cache;
mod db;
pub mod projection;
mod registry;
mod schema;

pub use db::{BlobRef, KeyWrap, heads_hash};
pub use projection::{CaseRow, SearchText, StatsContribution};
pub use registry::RepeatedNumber;
pub use schema::{APPLICATION_ID, SCHEMA_VERSION_LATEST};

use automerge::{ActorId, ChangeHash};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use zhaowo_crdt::hall::SignedHall;
use zhaowo_crdt::model::{Nature, Status};
use zhaowo_crdt::roster::{Roster, SignedRecord};
use zhaowo_crdt::sync::{Session, SessionEvent, SyncError};
use zhaowo_crdt::time::Date;
use zhaowo_crdt::wire::ChangeSignature;
use zhaowo_crdt::{CaseDoc, CaseView, Command, CommandError, Ctx, EventId, Hall, QueryCode, RegNo};

/// How long a write waits for another process holding the store's write lock (the CLI while `zhaowo run` writes, or
/// the other way round) before SQLite gives up with "database is locked". A write transaction holds the lock for one
/// fsync (~10 ms) up to a sync step of 1,024 documents (~1 s); 30 s covers a queue of dozens of writers behind a
/// large step, and a clerk who waits that long sees the page load rather than an error.
pub const BUSY_TIMEOUT_MS: u32 = 30_000;
/// Cases with open conflicts listed in one answer (the desk's conflicts page, `zhaowo conflicts list`): a hall
/// settles its conflicts as they come, so more than this is a backlog to work through page by page.
pub const CONFLICTS_LISTED_MAX: usize = 500;
/// Documents listed by `quarantined` (status, desk, metrics): their count is exact, the ids beyond this are elided.
pub const QUARANTINE_LISTED_MAX: usize = 100;
/// Documents kept loaded: ~17 KB each (NOTES.md), so 4096 documents are ~70 MB, and a window's working set (the open
/// cases of a day) fits many times over.
pub const CACHE_DOCS_MAX: usize = 4096;
/// Requests waiting for the store thread: enough for every window and peer of a hall to have a few in flight; a full
/// queue makes callers wait (backpressure) instead of growing memory.
pub const QUEUE_REQUESTS_MAX: usize = 256;
/// A document's change rows are kept until they exceed its snapshot and this many bytes. A case's registration change
/// is ~500 B deflated and its compacted snapshot ~1 KB: at 1 KB a case compacts after its first edit or two, which
/// keeps the store near the snapshot size per case (measured: 3.7 KB/case with every case left as change rows) while an
/// edit rewrites a snapshot only every few changes.
pub const COMPACT_MIN_BYTES: usize = 1024;
/// Documents in one remote batch (one transaction): bounds the transaction's memory and the time other requests wait.
pub const REMOTE_BATCH_DOCS_MAX: usize = 1024;
/// One remote change: a case's change is ~1 KB; 1 MiB leaves room for long texts and refuses absurd input early.
pub const REMOTE_CHANGE_BYTES_MAX: usize = 1 << 20;
/// Rows in one register page or search answer: a screen shows 20-100.
pub const PAGE_ROWS_MAX: usize = 500;
/// Catalog entries in one answer (sync sends them in bounded batches).
pub const CATALOG_PAGE_MAX: usize = 4096;
/// Above this many full-text matches, search walks the register index newest first instead of sorting the matches:
/// sorting costs a random row lookup per match, the walk ~limit × cases / matches index entries; at 2,000 matches of
/// 1M cases the walk reads ~25k index entries, about what sorting 2,000 rows costs.
pub const SEARCH_SORT_MATCHES_MAX: usize = 2000;
/// Search terms in one query.
pub const SEARCH_TERMS_MAX: usize = 8;
/// Characters in one search query.
pub const SEARCH_QUERY_CHARS_MAX: usize = 100;

/// KPI tallies by group key.
pub type KpiGroups = Vec<(String, zhaowo_crdt::kpi::Tally)>;

/// How to open a store. Build it with [`StoreOptions::recommended`] and change what a test needs.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The SQLite database file (created when missing).
    pub path: PathBuf,
    /// The Automerge actor of this node (its public key plus an incarnation suffix).
    pub actor: ActorId,
    /// See [`CACHE_DOCS_MAX`].
    pub cache_docs_max: usize,
    /// See [`QUEUE_REQUESTS_MAX`].
    pub queue_requests_max: usize,
    /// See [`COMPACT_MIN_BYTES`].
    pub compact_min_bytes: usize,
    /// See [`SEARCH_SORT_MATCHES_MAX`] (tests lower it to cover both search plans on small data).
    pub search_sort_matches_max: usize,
    /// The schema version to migrate to: [`SCHEMA_VERSION_LATEST`] except in migration tests.
    pub schema_version_target: i64,
    /// A registered SQLite VFS to open the file with (the power-cut model); `None` is the platform default.
    pub vfs: Option<String>,
    /// Signs every change this node authors, stored with it and relayed by sync. `None` leaves changes unsigned
    /// (peers refuse them): only tools and tests that never sync.
    pub signer: Option<ChangeSigner>,
    /// The node's role for case keys (`zhaowo_crdt::seal::may_hold_key`): a hall PC (window, 督查科, admin) holds
    /// every case's key; a volunteer laptop only those of its open visits. The node id a 指派上门 names is the
    /// signer's key (the actor's first 32 bytes without a signer).
    pub key_role: zhaowo_crdt::model::Role,
    /// Wraps the case keys at rest under the node key (`NodeIdentity::case_key_wrap`); `None` stores them in clear,
    /// for tools and tests without a node key only (`Home::open_store` always sets it).
    pub key_wrap: Option<KeyWrap>,
    /// Set by [`Store::open`]; callers leave the default.
    #[doc(hidden)]
    pub notify: tokio::sync::watch::Sender<i64>,
}

/// A signature over a change hash.
pub type SignFn = dyn Fn(&ChangeHash) -> [u8; 64] + Send + Sync;

/// Signs the hash of a change this node authored with the node key (`zhaowo_crdt::signing::sign_change`).
#[derive(Clone)]
pub struct ChangeSigner {
    pub node_key: [u8; 32],
    pub sign: Arc<SignFn>,
}

impl std::fmt::Debug for ChangeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeSigner").field("node_key", &zhaowo_crdt::ids::hex_encode(&self.node_key)).finish()
    }
}

impl StoreOptions {
    pub fn recommended(path: PathBuf, actor: ActorId) -> StoreOptions {
        StoreOptions {
            path,
            actor,
            cache_docs_max: CACHE_DOCS_MAX,
            queue_requests_max: QUEUE_REQUESTS_MAX,
            compact_min_bytes: COMPACT_MIN_BYTES,
            search_sort_matches_max: SEARCH_SORT_MATCHES_MAX,
            schema_version_target: SCHEMA_VERSION_LATEST,
            vfs: None,
            signer: None,
            key_role: zhaowo_crdt::model::Role::Window,
            key_wrap: None,
            notify: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenStoreError {
    /// SQLite could not open or create the file.
    #[error("cannot open store `{path}`")]
    Open { path: PathBuf, source: rusqlite::Error },
    /// The file is not a zhaowo store (another SQLite database, or not SQLite at all).
    #[error("`{path}` is not a zhaowo store: {reason}")]
    NotAStore { path: PathBuf, reason: String },
    /// The store holds case documents written before the sealed private layer (case schema 1): their personal data
    /// is in clear and this version does not read them.
    #[error(
        "store `{path}` holds case documents written before the sealed private layer (zhaowo before issue 13): this version does not read them; move the data directory away and start from a fresh `zhaowo init` (see the README's changelog)"
    )]
    BeforePrivateLayer { path: PathBuf },
    /// The store was written by a newer zhaowo; this version must not touch it.
    #[error(
        "store `{path}` has schema version {found}, newer than this zhaowo understands ({supported}): upgrade zhaowo"
    )]
    NewerSchema { path: PathBuf, found: i64, supported: i64 },
    /// A statement failed while opening or migrating.
    #[error("store `{path}`: sqlite error while opening")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    /// The store thread could not be started.
    #[error("cannot start the store thread")]
    Thread(#[source] std::io::Error),
}

/// A stored case could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("case {case_id} is damaged: {reason}")]
pub struct CorruptCase {
    pub case_id: String,
    pub reason: String,
}

/// Why a local command was not acknowledged (nothing was stored).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The command was refused by the case rules.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// No case with this id is stored.
    #[error("no case {0}")]
    UnknownCase(String),
    /// A case with this id is already stored.
    #[error("case {0} is already stored")]
    DuplicateCase(String),
    /// The registration number is held by another case already (a pre-numbered registration).
    #[error("registration number {reg_no} is already held by case {case_id}")]
    RegNoTaken { reg_no: String, case_id: String },
    /// Every number of the window's year is used (`zhaowo_crdt::ids::REG_SEQ_MAX`).
    #[error("no registration number left for window {window} in {year}")]
    NumbersExhausted { window: String, year: i32 },
    /// The stored case cannot be read.
    #[error(transparent)]
    Corrupt(CorruptCase),
    /// The command panicked; the case was reloaded from disk.
    #[error("the command panicked: {0}")]
    Panicked(String),
    /// SQLite failed; the change was not stored.
    #[error("sqlite error, the change was not stored")]
    Sqlite(#[from] rusqlite::Error),
    /// The store has shut down.
    #[error("the store is closed")]
    Closed,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No case with this id is stored.
    #[error("no case {0}")]
    UnknownCase(String),
    /// The stored case cannot be read; the rest of the store keeps serving.
    #[error(transparent)]
    Corrupt(CorruptCase),
    /// The query is malformed or too large.
    #[error("bad query: {0}")]
    BadQuery(String),
    /// The store was opened at an older schema version (migration tests only).
    #[error("this store was opened at an older schema version without the projection tables")]
    NoProjections,
    /// SQLite failed.
    #[error("sqlite error")]
    Sqlite(#[from] rusqlite::Error),
    /// The store has shut down.
    #[error("the store is closed")]
    Closed,
}

impl From<ReadError> for WriteError {
    fn from(error: ReadError) -> WriteError {
        match error {
            ReadError::UnknownCase(id) => WriteError::UnknownCase(id),
            ReadError::Corrupt(corrupt) => WriteError::Corrupt(corrupt),
            ReadError::Sqlite(error) => WriteError::Sqlite(error),
            ReadError::Closed => WriteError::Closed,
            ReadError::BadQuery(text) => WriteError::Corrupt(CorruptCase { case_id: String::new(), reason: text }),
            ReadError::NoProjections => {
                WriteError::Corrupt(CorruptCase { case_id: String::new(), reason: "no projections".into() })
            }
        }
    }
}

/// Why a remote batch was not applied (nothing of it was stored).
#[derive(Debug, thiserror::Error)]
pub enum ApplyRemoteError {
    /// More documents than [`REMOTE_BATCH_DOCS_MAX`].
    #[error("a remote batch of {docs} documents exceeds {max}")]
    BatchTooLarge { docs: usize, max: usize },
    /// SQLite failed; the whole batch was rolled back.
    #[error("sqlite error, the batch was not stored")]
    Sqlite(#[from] rusqlite::Error),
    /// The store has shut down.
    #[error("the store is closed")]
    Closed,
}

/// Why a maintenance operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// The backup target exists already; backups never overwrite.
    #[error("backup target `{0}` exists already")]
    BackupExists(PathBuf),
    /// The path is not valid UTF-8 (SQLite's `VACUUM INTO` takes text).
    #[error("path `{0}` is not valid UTF-8")]
    BadPath(PathBuf),
    /// The file to restore is not a healthy zhaowo store.
    #[error("`{path}` cannot be restored: {reason}")]
    BadBackup { path: PathBuf, reason: String },
    /// The store was opened at an older schema version (migration tests only).
    #[error("this store was opened at an older schema version without the projection tables")]
    NoProjections,
    /// A file operation failed.
    #[error("{what} `{path}`")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// SQLite failed.
    #[error("sqlite error")]
    Sqlite(#[from] rusqlite::Error),
    /// The store has shut down.
    #[error("the store is closed")]
    Closed,
}

/// The reply to an acknowledged local command: its change is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    pub case_id: String,
    /// The node-wide counter after this change.
    pub local_seq: i64,
    pub heads_hash: [u8; 32],
    /// The event the command added (`None` for a registration, whose event is in the document).
    pub event_id: Option<EventId>,
}

/// The reply to a registration whose number the store allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub ack: Acknowledged,
    /// The number the store picked in the registering transaction.
    pub reg_no: RegNo,
}

/// The reply to a two-case edit (并案, 解除并案), committed in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairAcknowledged {
    /// The duplicate's change.
    pub first: Acknowledged,
    /// The master's change (`None` when the master is not stored on this node: 解除并案 of a case whose master has
    /// not arrived; the master's list heals when it syncs).
    pub second: Option<Acknowledged>,
}

/// The cases with open conflicts, newest first (from the `open_conflicts` projection, not by folding every case).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConflictList {
    /// How many cases have open conflicts in all.
    pub cases: u64,
    /// How many open conflicts they have in all.
    pub conflicts: u64,
    /// Up to [`CONFLICTS_LISTED_MAX`] of them with their count of open conflicts.
    pub rows: Vec<(CaseRow, u64)>,
}

/// A document this node will not send to peers, and why (see `schema::V5`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub case_id: String,
    pub reason: String,
    pub at_ms: i64,
}

/// Documents in quarantine: the exact count and up to [`QUARANTINE_LISTED_MAX`] of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuarantineList {
    pub count: u64,
    pub docs: Vec<Quarantined>,
}

/// Changes of one document received from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChanges {
    pub case_id: String,
    /// Encoded Automerge changes (`Change::raw_bytes`).
    pub changes: Vec<Vec<u8>>,
}

/// A document of a remote batch that was refused (the rest of the batch is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedDoc {
    pub case_id: String,
    pub reason: String,
}

/// What a remote batch did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoteReport {
    /// Changes newly stored.
    pub applied_changes: usize,
    /// Documents that gained changes.
    pub changed_docs: usize,
    /// Documents whose changes were all stored already (the batch was a repeat).
    pub duplicate_docs: usize,
    /// Documents with changes waiting for a dependency the peer has not sent yet (not stored).
    pub waiting_for_deps: usize,
    pub rejected: Vec<RejectedDoc>,
}

/// One catalog row: what sync compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub case_id: String,
    pub heads_hash: [u8; 32],
    pub local_seq: i64,
    /// This node holds the case's data key.
    pub keyed: bool,
}

/// Where a register page continues: the last row of the previous page (keyset paging, O(page) at any depth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    pub registered_at_ms: i64,
    pub case_id: String,
}

/// Filters and paging of the register book; rows come newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegisterQuery {
    pub status: Option<Status>,
    pub category: Option<String>,
    pub nature: Option<Nature>,
    pub lead_unit: Option<String>,
    pub window: Option<String>,
    /// Registered at or after.
    pub registered_from_ms: Option<i64>,
    /// Registered before.
    pub registered_to_ms: Option<i64>,
    /// Only cases overdue at this instant.
    pub overdue_at_ms: Option<i64>,
    pub after: Option<PageCursor>,
    /// Rows per page, at most [`PAGE_ROWS_MAX`].
    pub limit: usize,
}

/// One page of the register book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterPage {
    pub rows: Vec<CaseRow>,
    /// The cursor of the next page, when there is one.
    pub next: Option<PageCursor>,
}

/// Counts for a period (cases registered in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsCounts {
    pub registered: i64,
    pub closed: i64,
    pub closed_on_time: i64,
    pub responded: i64,
    pub responded_on_time: i64,
    pub rated: i64,
    pub rating_sum: i64,
    pub satisfied: i64,
}

/// Statistics of the cases registered in a period: counts and the hall's rates.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Statistics {
    pub counts: StatsCounts,
    /// 响应率: responded / registered.
    pub response_rate: f64,
    /// 按时响应率: responded on time / registered.
    pub response_on_time_rate: f64,
    /// 办结率: closed / registered.
    pub close_rate: f64,
    /// 按时办结率: closed on time / closed.
    pub close_on_time_rate: f64,
    /// 满意率: satisfied (rating ≥ 4) / rated.
    pub satisfaction_rate: f64,
    /// Mean rating of rated cases.
    pub rating_mean: f64,
}

impl Statistics {
    pub fn from_counts(counts: StatsCounts) -> Statistics {
        let rate = |part: i64, whole: i64| if whole == 0 { 0.0 } else { part as f64 / whole as f64 };
        Statistics {
            counts,
            response_rate: rate(counts.responded, counts.registered),
            response_on_time_rate: rate(counts.responded_on_time, counts.registered),
            close_rate: rate(counts.closed, counts.registered),
            close_on_time_rate: rate(counts.closed_on_time, counts.closed),
            satisfaction_rate: rate(counts.satisfied, counts.rated),
            rating_mean: rate(counts.rating_sum, counts.rated),
        }
    }
}

/// What is in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCounts {
    pub docs: i64,
    pub change_rows: i64,
    pub snapshots: i64,
    pub local_seq: i64,
    pub cached_docs: i64,
}

/// One problem `verify` or `reindex` found, by case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Empty for problems that belong to no single case (statistics).
    pub case_id: String,
    pub kind: ProblemKind,
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// The document's rows do not load.
    Unreadable(String),
    /// The document loads but is not a readable case.
    NotACase(String),
    /// The catalog's heads hash differs from the document's heads.
    HeadsMismatch,
    /// The case has no register row.
    MissingProjection,
    /// The register row differs from the document.
    StaleProjection,
    /// The full-text row differs from the document.
    StaleSearchText,
    /// Rows for a document the catalog does not know.
    Orphan,
    /// A `stats_daily` row differs from the sum of its cases.
    Statistics { day: i64, category: String },
    /// A change's signature does not verify against the roster (a damaged row, or a change by a non-member).
    BadSignature(String),
    /// The open-conflict projection differs from the document.
    StaleConflicts,
    /// The case's number is missing from the register of numbers.
    MissingNumber,
    /// One registration number held by several cases (see `registry`).
    RepeatedNumber { reg_no: String, case_ids: Vec<String> },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let case = if self.case_id.is_empty() { "-" } else { &self.case_id };
        match &self.kind {
            ProblemKind::Unreadable(reason) => write!(f, "{case}: unreadable: {reason}"),
            ProblemKind::NotACase(reason) => write!(f, "{case}: not a case: {reason}"),
            ProblemKind::HeadsMismatch => write!(f, "{case}: catalog heads differ from the document"),
            ProblemKind::MissingProjection => write!(f, "{case}: missing from the register book"),
            ProblemKind::StaleProjection => write!(f, "{case}: register row differs from the document"),
            ProblemKind::StaleSearchText => write!(f, "{case}: search text differs from the document"),
            ProblemKind::Orphan => write!(f, "{case}: rows without a catalog entry"),
            ProblemKind::Statistics { day, category } => {
                write!(f, "statistics of day {day} category {category} differ from the cases")
            }
            ProblemKind::BadSignature(reason) => write!(f, "{case}: bad change signature: {reason}"),
            ProblemKind::StaleConflicts => write!(f, "{case}: open-conflict count differs from the document"),
            ProblemKind::MissingNumber => write!(f, "{case}: missing from the register of numbers"),
            ProblemKind::RepeatedNumber { reg_no, case_ids } => {
                write!(f, "registration number {reg_no} is held by {} cases: {}", case_ids.len(), case_ids.join(", "))
            }
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub docs: u64,
    /// Change signatures checked against the roster (0 when no roster was given).
    pub signatures_checked: u64,
    /// Changes stored without a signature (kept local, never sent).
    pub unsigned_changes: u64,
    pub problems: Vec<Problem>,
}

/// What `reindex` rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReindexReport {
    pub cases: u64,
    /// Documents that could not be projected (reported, skipped).
    pub problems: Vec<Problem>,
}

/// An edit run on the store thread against the cached case; its change is stored when it returns `Ok`.
pub type EditFn = Box<dyn FnOnce(&mut CaseDoc) -> Result<EventId, CommandError> + Send>;

/// The state of an outbox message (issue 15 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    /// Waiting for its first attempt or a retry.
    Queued = 0,
    /// The SMS platform accepted it.
    Sent = 1,
    /// Given up, with the reason.
    Failed = 2,
}

impl OutboxState {
    pub fn code(self) -> &'static str {
        match self {
            OutboxState::Queued => "queued",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
        }
    }

    pub fn parse(code: &str) -> Option<OutboxState> {
        [OutboxState::Queued, OutboxState::Sent, OutboxState::Failed].into_iter().find(|state| state.code() == code)
    }

    /// 已排队 / 已发送 / 发送失败.
    pub fn label(self) -> &'static str {
        match self {
            OutboxState::Queued => "已排队",
            OutboxState::Sent => "已发送",
            OutboxState::Failed => "发送失败",
        }
    }
}

/// One outbox message as the case page shows it (no phone, no text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// The event that asked for it: the idempotency key.
    pub event_id: String,
    pub case_id: String,
    pub kind: zhaowo_crdt::messages::SmsKind,
    pub state: OutboxState,
    /// Why it failed, or why the last attempt did (while it is queued for a retry).
    pub reason: String,
    pub attempts: u32,
    pub created_ms: i64,
    pub next_ms: i64,
    pub done_ms: Option<i64>,
}

/// A message ready to send: rendered, with the phone read from the sealed record. Held in memory for one request.
#[derive(Clone)]
pub struct OutboxJob {
    pub event_id: String,
    pub case_id: String,
    pub kind: zhaowo_crdt::messages::SmsKind,
    pub attempts: u32,
    pub created_ms: i64,
    pub phone: String,
    pub text: String,
}

impl std::fmt::Debug for OutboxJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The phone and the text never reach a log.
        f.debug_struct("OutboxJob")
            .field("event_id", &self.event_id)
            .field("case_id", &self.case_id)
            .field("kind", &self.kind)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// What became of one attempt to send a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxOutcome {
    Sent,
    /// A transient failure (platform down, 5xx, timeout): try again at `next_ms`.
    Retry {
        reason: String,
        next_ms: i64,
    },
    /// Given up (the platform refused it, or it waited too long).
    Failed(String),
}

/// Builds a new case under the registration number the store allocated (`CaseDoc::register`), on the store thread
/// inside the registering transaction.
pub type RegisterFn = Box<dyn FnOnce(RegNo) -> Result<CaseDoc, CommandError> + Send>;

/// An edit of two cases at once (the second absent when not stored); returns the event each got.
pub type PairEditFn =
    Box<dyn FnOnce(&mut CaseDoc, Option<&mut CaseDoc>) -> Result<[Option<EventId>; 2], CommandError> + Send>;

type Reply<T> = oneshot::Sender<T>;

/// A peer's key, its acknowledged checkpoint, and how many of our documents changed after it.
type PeerCheckpoint = ([u8; 32], u64, u64);

enum Request {
    Register(Box<CaseDoc>, Reply<Result<Acknowledged, WriteError>>),
    RegisterNew(String, i32, Option<String>, RegisterFn, Reply<Result<Registered, WriteError>>),
    OutboxForCase(String, Reply<Result<Vec<OutboxRow>, ReadError>>),
    OutboxCounts(Reply<Result<[u64; 3], ReadError>>),
    OutboxDue(i64, Arc<Hall>, usize, Reply<Result<Vec<OutboxJob>, WriteError>>),
    OutboxSettle(String, OutboxOutcome, i64, Reply<Result<(), WriteError>>),
    EditPair(String, Option<String>, bool, PairEditFn, Reply<Result<PairAcknowledged, WriteError>>),
    CaseIdByRegNo(String, Reply<Result<Option<String>, ReadError>>),
    StatusCounts(Reply<Result<std::collections::BTreeMap<String, u64>, ReadError>>),
    OverdueCount(i64, Reply<Result<u64, ReadError>>),
    Conflicts(usize, Reply<Result<ConflictList, ReadError>>),
    RepeatedNumbers(Reply<Result<Vec<RepeatedNumber>, ReadError>>),
    Quarantined(Reply<Result<QuarantineList, ReadError>>),
    Edit(String, EditFn, Reply<Result<Acknowledged, WriteError>>),
    ApplyRemote(Vec<RemoteChanges>, Vec<ChangeSignature>, Reply<Result<RemoteReport, ApplyRemoteError>>),
    Signatures(String, Reply<Result<Vec<ChangeSignature>, ReadError>>),
    PeerCheckpoints(Reply<Result<Vec<PeerCheckpoint>, ReadError>>),
    ChangesSince(String, Vec<ChangeHash>, Reply<Result<Vec<Vec<u8>>, ReadError>>),
    CatalogSince(i64, usize, Reply<Result<Vec<CatalogEntry>, ReadError>>),
    CaseView(String, Reply<Result<CaseView, ReadError>>),
    RegisterPage(Box<RegisterQuery>, Reply<Result<RegisterPage, ReadError>>),
    Search(String, usize, Reply<Result<Vec<CaseRow>, ReadError>>),
    Overdue(i64, usize, Reply<Result<Vec<CaseRow>, ReadError>>),
    BadlyRated(usize, Reply<Result<Vec<CaseRow>, ReadError>>),
    Statistics(Date, Date, Reply<Result<Statistics, ReadError>>),
    KpiTallies(Date, Date, Option<zhaowo_crdt::kpi::GroupBy>, Reply<Result<KpiGroups, ReadError>>),
    Counts(Reply<Result<StoreCounts, ReadError>>),
    SchemaVersion(Reply<Result<i64, ReadError>>),
    IntegrityCheck(Reply<Result<Vec<String>, MaintenanceError>>),
    Verify(Option<Box<Roster>>, Reply<Result<VerifyReport, MaintenanceError>>),
    Reindex(Reply<Result<ReindexReport, MaintenanceError>>),
    SweepKeys(Reply<Result<usize, WriteError>>),
    BlobRefs(String, usize, Reply<Result<Vec<BlobRef>, ReadError>>),
    BlobRef(String, Reply<Result<Option<BlobRef>, ReadError>>),
    BlobTotals(Reply<Result<(u64, u64), ReadError>>),
    CaseKey(String, Reply<Result<Option<zhaowo_crdt::seal::CaseKey>, ReadError>>),
    CaseKeyCount(Reply<Result<u64, ReadError>>),
    RetentionDue(i64, usize, Reply<Result<Vec<String>, ReadError>>),
    ReceiveKeys(Vec<zhaowo_crdt::wire::CaseKeyGrant>, Reply<Result<usize, WriteError>>),
    CaseKeys(Vec<String>, Reply<Result<Vec<zhaowo_crdt::wire::CaseKeyGrant>, ReadError>>),
    Backup(PathBuf, Reply<Result<(), MaintenanceError>>),
    ExecuteRaw(String, Reply<Result<(), MaintenanceError>>),
    SyncStep(Box<SyncStep>, Reply<Box<SyncOutcome>>),
    Checkpoint([u8; 32], Reply<Result<(u64, u64), ReadError>>),
}

/// What a sync driver hands the store thread: the session (moved there and back, never shared) and its inputs.
#[derive(Debug)]
pub struct SyncStep {
    pub session: Session,
    pub peer_key: [u8; 32],
    /// A copy of the node's roster: records the peer sends are verified into it and come back in the outcome.
    pub roster: Roster,
    pub inputs: Vec<SyncInput>,
    /// The node's hall document, shared by every session (`None`: the hall document is not synced).
    pub hall: Option<Arc<std::sync::Mutex<SignedHall>>>,
}

/// One input of a sync step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncInput {
    /// A frame the peer sent.
    Frame(Vec<u8>),
    /// Our catalog may have grown: announce what is new.
    CatchUp,
    /// Send our whole catalog again (periodic full reconciliation).
    Reconcile,
    /// Our hall document grew: push what the peer lacks.
    HallPush,
}

/// What a sync step did. Frames are present only when the step's transaction committed.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// The session, back from the store thread (`None` only if the store is closed).
    pub session: Option<Session>,
    /// Frames to send, in order; their answers to received changes are durable.
    pub frames: Vec<Vec<u8>>,
    pub events: Vec<SessionEvent>,
    /// The peer broke the protocol or sent refused data: drop it.
    pub error: Option<SyncError>,
    /// The store failed (nothing of the step was kept): drop the peer and retry later.
    pub storage_error: Option<String>,
    /// Roster records the peer taught us, verified.
    pub new_records: Vec<SignedRecord>,
    pub roster: Option<Roster>,
    /// Documents that gained changes in this step.
    pub changed_docs: usize,
    /// The hall document took changes or signatures from the peer: write its files and push it to the other peers.
    pub hall_changed: bool,
}

/// A handle to the store thread. Cheap to share behind an `Arc`; dropping it shuts the thread down after the
/// requests already queued.
#[derive(Debug)]
pub struct Store {
    requests: Option<mpsc::Sender<Request>>,
    notify: tokio::sync::watch::Sender<i64>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

fn serve(mut db: db::Db, mut requests: mpsc::Receiver<Request>) {
    // A caller that stopped waiting (its future dropped) is not an error: the work is done or rolled back either way.
    while let Some(request) = requests.blocking_recv() {
        if let Err(error) = db.refresh_cache() {
            tracing::warn!(%error, "cannot check the store for other processes' writes; dropping every cached document");
            db.clear_cache();
        }
        match request {
            Request::Register(case, reply) => drop(reply.send(db.register(*case))),
            Request::Edit(case_id, edit, reply) => drop(reply.send(db.edit(&case_id, edit))),
            Request::RegisterNew(window, year, code, build, reply) => {
                drop(reply.send(db.register_new(&window, year, code, build)))
            }
            Request::OutboxForCase(case_id, reply) => drop(reply.send(db.outbox_for_case(&case_id))),
            Request::OutboxCounts(reply) => drop(reply.send(db.outbox_counts())),
            Request::OutboxDue(now_ms, hall, limit, reply) => drop(reply.send(db.outbox_due(now_ms, &hall, limit))),
            Request::OutboxSettle(event_id, outcome, now_ms, reply) => {
                drop(reply.send(db.outbox_settle(&event_id, outcome, now_ms)))
            }
            Request::EditPair(first, second, required, edit, reply) => {
                drop(reply.send(db.edit_pair(&first, second.as_deref(), required, edit)))
            }
            Request::CaseIdByRegNo(reg_no, reply) => drop(reply.send(db.case_id_by_reg_no(&reg_no))),
            Request::StatusCounts(reply) => drop(reply.send(db.status_counts())),
            Request::OverdueCount(now_ms, reply) => drop(reply.send(db.overdue_count(now_ms))),
            Request::Conflicts(limit, reply) => drop(reply.send(db.conflicts(limit))),
            Request::RepeatedNumbers(reply) => drop(reply.send(db.repeated_numbers())),
            Request::Quarantined(reply) => drop(reply.send(db.quarantined())),
            Request::ApplyRemote(batch, signatures, reply) => {
                let signatures = signatures.into_iter().map(|s| (s.hash, s.signature)).collect();
                drop(reply.send(db.apply_remote(batch, &signatures)))
            }
            Request::Signatures(case_id, reply) => drop(reply.send(db.signatures(&case_id).map_err(Into::into))),
            Request::PeerCheckpoints(reply) => drop(reply.send(db.peer_checkpoints().map_err(Into::into))),
            Request::ChangesSince(case_id, heads, reply) => drop(reply.send(db.changes_since(&case_id, &heads))),
            Request::CatalogSince(after, limit, reply) => {
                drop(reply.send(db.catalog_since(after, limit).map_err(Into::into)))
            }
            Request::CaseView(case_id, reply) => drop(reply.send(db.case_view(&case_id))),
            Request::RegisterPage(query, reply) => drop(reply.send(db.register_page(&query))),
            Request::Search(text, limit, reply) => drop(reply.send(db.search(&text, limit))),
            Request::Overdue(now_ms, limit, reply) => drop(reply.send(db.overdue(now_ms, limit))),
            Request::BadlyRated(limit, reply) => drop(reply.send(db.badly_rated(limit))),
            Request::Statistics(from, to, reply) => drop(reply.send(db.statistics(from, to))),
            Request::KpiTallies(from, to, group, reply) => drop(reply.send(db.kpi_tallies(from, to, group))),
            Request::Counts(reply) => drop(reply.send(db.counts().map_err(Into::into))),
            Request::SchemaVersion(reply) => drop(reply.send(db.schema_version().map_err(Into::into))),
            Request::IntegrityCheck(reply) => drop(reply.send(db.integrity_check().map_err(Into::into))),
            Request::Verify(roster, reply) => drop(reply.send(db.verify(roster.as_deref()))),
            Request::Reindex(reply) => drop(reply.send(db.reindex())),
            Request::SweepKeys(reply) => drop(reply.send(db.sweep_keys())),
            Request::BlobRefs(after, limit, reply) => {
                drop(reply.send(db.blob_refs(&after, limit).map_err(ReadError::from)))
            }
            Request::BlobRef(hash, reply) => drop(reply.send(db.blob_ref(&hash).map_err(ReadError::from))),
            Request::CaseKey(case_id, reply) => drop(reply.send(db.case_mut(&case_id).map(|case| case.key().cloned()))),
            Request::BlobTotals(reply) => drop(reply.send(db.blob_totals().map_err(ReadError::from))),
            Request::CaseKeyCount(reply) => drop(reply.send(db.case_key_count().map_err(ReadError::from))),
            Request::ReceiveKeys(grants, reply) => drop(reply.send(db.receive_keys(grants))),
            Request::CaseKeys(ids, reply) => drop(reply.send(db.case_keys(&ids).map_err(ReadError::from))),
            Request::RetentionDue(before, limit, reply) => {
                drop(reply.send(db.retention_due(before, limit).map_err(ReadError::from)))
            }
            Request::Backup(path, reply) => drop(reply.send(db.backup(&path))),
            Request::ExecuteRaw(sql, reply) => drop(reply.send(db.execute_raw(&sql).map_err(Into::into))),
            Request::SyncStep(step, reply) => drop(reply.send(Box::new(db.sync_step(*step)))),
            Request::Checkpoint(peer, reply) => drop(
                reply.send(
                    db.checkpoint(&peer)
                        .and_then(|checkpoint| Ok((checkpoint, db.entries_after(checkpoint)?)))
                        .map_err(Into::into),
                ),
            ),
        }
    }
    tracing::debug!(cached_docs = db.cached_docs(), "store thread stops");
}

impl Store {
    /// Opens (creating or migrating) the store and starts its thread. Blocks for the open and any migration.
    pub fn open(options: StoreOptions) -> Result<Store, OpenStoreError> {
        let (requests, receiver) = mpsc::channel(options.queue_requests_max);
        let notify = options.notify.clone();
        let (opened_sender, opened) = std::sync::mpsc::sync_channel(1);
        let path = options.path.clone();
        let thread = std::thread::Builder::new()
            .name("zhaowo-store".to_owned())
            .spawn(move || match db::Db::open(&options) {
                Ok(db) => {
                    drop(opened_sender.send(Ok(())));
                    serve(db, receiver);
                }
                Err(error) => drop(opened_sender.send(Err(error))),
            })
            .map_err(OpenStoreError::Thread)?;
        match opened.recv() {
            Ok(Ok(())) => Ok(Store { requests: Some(requests), notify, thread: Some(thread), path }),
            Ok(Err(error)) => {
                drop(thread.join());
                Err(error)
            }
            Err(_) => {
                let panicked = thread.join().err().map(|_| "the store thread panicked while opening");
                Err(OpenStoreError::Thread(std::io::Error::other(panicked.unwrap_or("the store thread stopped"))))
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request, closed: T) -> T {
        let (reply, answer) = oneshot::channel();
        let Some(requests) = &self.requests else { return closed };
        if requests.send(make(reply)).await.is_err() {
            return closed;
        }
        answer.await.unwrap_or(closed)
    }

    /// Stores a newly registered case (its whole history); returns after COMMIT.
    pub async fn register(&self, case: CaseDoc) -> Result<Acknowledged, WriteError> {
        self.call(|reply| Request::Register(Box::new(case), reply), Err(WriteError::Closed)).await
    }

    /// Registers a new case under the next registration number of `window` in `year`, allocated by the store in the
    /// same `BEGIN IMMEDIATE … COMMIT` that stores the case (see `registry`): no two registrations, in this process
    /// or another writing the same file, get one number. `build` makes the case from the number (on the store
    /// thread); returns after COMMIT with the number.
    pub async fn register_new(&self, window: &str, year: i32, build: RegisterFn) -> Result<Registered, WriteError> {
        self.call(|reply| Request::RegisterNew(window.to_owned(), year, None, build, reply), Err(WriteError::Closed))
            .await
    }

    /// [`Store::register_new`] for a registration whose receipt the citizen gets: the 查询码 goes into the
    /// registration's SMS (issue 15 §4), written in the same transaction, if the citizen agreed to SMS.
    pub async fn register_new_with_receipt(
        &self,
        window: &str,
        year: i32,
        query_code: &QueryCode,
        build: RegisterFn,
    ) -> Result<Registered, WriteError> {
        let code = Some(query_code.as_str().to_owned());
        self.call(|reply| Request::RegisterNew(window.to_owned(), year, code, build, reply), Err(WriteError::Closed))
            .await
    }

    /// The SMS messages of one case as this node's outbox holds them (the case page).
    pub async fn outbox_for_case(&self, case_id: &str) -> Result<Vec<OutboxRow>, ReadError> {
        self.call(|reply| Request::OutboxForCase(case_id.to_owned(), reply), Err(ReadError::Closed)).await
    }

    /// The outbox's messages by state: `[queued, sent, failed]`.
    pub async fn outbox_counts(&self) -> Result<[u64; 3], ReadError> {
        self.call(Request::OutboxCounts, Err(ReadError::Closed)).await
    }

    /// The messages due at `now_ms`, rendered with `hall`'s templates (see `db::outbox`); those that cannot be built
    /// any more are settled as failed, with the reason.
    pub async fn outbox_due(&self, now_ms: i64, hall: Arc<Hall>, limit: usize) -> Result<Vec<OutboxJob>, WriteError> {
        self.call(|reply| Request::OutboxDue(now_ms, hall, limit, reply), Err(WriteError::Closed)).await
    }

    /// Records the outcome of one attempt to send a message.
    pub async fn outbox_settle(&self, event_id: &str, outcome: OutboxOutcome, now_ms: i64) -> Result<(), WriteError> {
        self.call(|reply| Request::OutboxSettle(event_id.to_owned(), outcome, now_ms, reply), Err(WriteError::Closed))
            .await
    }

    /// 并案: marks `duplicate` a duplicate of `master` (`CaseDoc::mark_duplicate`), both documents in one transaction.
    pub async fn mark_duplicate(
        &self,
        duplicate: &str,
        master: &str,
        ctx: Ctx,
    ) -> Result<PairAcknowledged, WriteError> {
        let edit: PairEditFn = Box::new(move |duplicate, master| {
            let master = master.expect("required by the request");
            let (first, second) = CaseDoc::mark_duplicate(duplicate, master, &ctx)?;
            Ok([Some(first), Some(second)])
        });
        let (duplicate, master) = (duplicate.to_owned(), Some(master.to_owned()));
        self.call(|reply| Request::EditPair(duplicate, master, true, edit, reply), Err(WriteError::Closed)).await
    }

    /// 解除并案: the duplicate returns to 已登记 and its master (when stored here) stops listing it
    /// (`CaseDoc::unmerge`), both documents in one transaction. A master not on this node is left to sync.
    pub async fn unmerge(
        &self,
        duplicate: &str,
        master: &str,
        ctx: Ctx,
        hall: Arc<Hall>,
    ) -> Result<PairAcknowledged, WriteError> {
        let edit: PairEditFn = Box::new(move |duplicate, master| match master {
            Some(master) => {
                let (first, second) = CaseDoc::unmerge(duplicate, master, &ctx, &hall)?;
                Ok([Some(first), Some(second)])
            }
            None => Ok([Some(duplicate.apply(&ctx, &hall, Command::Unmerge)?), None]),
        });
        let (duplicate, master) = (duplicate.to_owned(), Some(master.to_owned()));
        self.call(|reply| Request::EditPair(duplicate, master, false, edit, reply), Err(WriteError::Closed)).await
    }

    /// The case with registration number `reg_no`, through the register of numbers' index.
    pub async fn case_id_by_reg_no(&self, reg_no: &RegNo) -> Result<Option<String>, ReadError> {
        self.call(|reply| Request::CaseIdByRegNo(reg_no.to_string(), reply), Err(ReadError::Closed)).await
    }

    /// Cases in the register book by status code; every status is present (0 when none).
    pub async fn status_counts(&self) -> Result<std::collections::BTreeMap<String, u64>, ReadError> {
        self.call(Request::StatusCounts, Err(ReadError::Closed)).await
    }

    /// How many cases are overdue at `now_ms` (one pass over the overdue index, no cap).
    pub async fn overdue_count(&self, now_ms: i64) -> Result<u64, ReadError> {
        self.call(|reply| Request::OverdueCount(now_ms, reply), Err(ReadError::Closed)).await
    }

    /// The cases with open conflicts, newest first, at most `limit` (≤ [`CONFLICTS_LISTED_MAX`]) rows.
    pub async fn conflicts(&self, limit: usize) -> Result<ConflictList, ReadError> {
        self.call(|reply| Request::Conflicts(limit, reply), Err(ReadError::Closed)).await
    }

    /// Registration numbers held by more than one case (from sync or files; local allocation never repeats).
    pub async fn repeated_numbers(&self) -> Result<Vec<RepeatedNumber>, ReadError> {
        self.call(Request::RepeatedNumbers, Err(ReadError::Closed)).await
    }

    /// The documents this node will not send to peers (a damaged row), with why.
    pub async fn quarantined(&self) -> Result<QuarantineList, ReadError> {
        self.call(Request::Quarantined, Err(ReadError::Closed)).await
    }

    /// Runs `edit` on the case and stores the change it made; returns after COMMIT.
    pub async fn edit(&self, case_id: &str, edit: EditFn) -> Result<Acknowledged, WriteError> {
        self.call(|reply| Request::Edit(case_id.to_owned(), edit, reply), Err(WriteError::Closed)).await
    }

    /// Applies a lifecycle command to a case; returns after COMMIT.
    pub async fn apply(
        &self,
        case_id: &str,
        ctx: Ctx,
        hall: Arc<Hall>,
        command: Command,
    ) -> Result<Acknowledged, WriteError> {
        self.edit(case_id, Box::new(move |case: &mut CaseDoc| case.apply(&ctx, &hall, command))).await
    }

    /// Stores changes received from peers, many documents in one transaction. Repeats are no-ops. The changes are
    /// stored unsigned: this node cannot relay them to peers (use [`Store::apply_signed`] for anything that syncs).
    pub async fn apply_remote(&self, batch: Vec<RemoteChanges>) -> Result<RemoteReport, ApplyRemoteError> {
        self.call(|reply| Request::ApplyRemote(batch, Vec::new(), reply), Err(ApplyRemoteError::Closed)).await
    }

    /// [`Store::apply_remote`] with the changes' signatures, which the caller has verified against the roster
    /// (`zhaowo_crdt::signing::verify_change`); they are stored so this node relays the changes like its own.
    pub async fn apply_signed(
        &self,
        batch: Vec<RemoteChanges>,
        signatures: Vec<ChangeSignature>,
    ) -> Result<RemoteReport, ApplyRemoteError> {
        self.call(|reply| Request::ApplyRemote(batch, signatures, reply), Err(ApplyRemoteError::Closed)).await
    }

    /// The signatures stored for a case's changes.
    pub async fn signatures(&self, case_id: &str) -> Result<Vec<ChangeSignature>, ReadError> {
        self.call(|reply| Request::Signatures(case_id.to_owned(), reply), Err(ReadError::Closed)).await
    }

    /// Every peer's acknowledged catalog position and how many of our documents changed after it.
    pub async fn peer_checkpoints(&self) -> Result<Vec<([u8; 32], u64, u64)>, ReadError> {
        self.call(Request::PeerCheckpoints, Err(ReadError::Closed)).await
    }

    /// The encoded changes of a case not reachable from `heads` (every change for empty heads).
    pub async fn changes_since(&self, case_id: &str, heads: Vec<ChangeHash>) -> Result<Vec<Vec<u8>>, ReadError> {
        self.call(|reply| Request::ChangesSince(case_id.to_owned(), heads, reply), Err(ReadError::Closed)).await
    }

    /// Catalog entries whose `local_seq` is above `after`, in counter order.
    pub async fn catalog_since(&self, after: i64, limit: usize) -> Result<Vec<CatalogEntry>, ReadError> {
        self.call(|reply| Request::CatalogSince(after, limit, reply), Err(ReadError::Closed)).await
    }

    pub async fn case_view(&self, case_id: &str) -> Result<CaseView, ReadError> {
        self.call(|reply| Request::CaseView(case_id.to_owned(), reply), Err(ReadError::Closed)).await
    }

    pub async fn register_page(&self, query: RegisterQuery) -> Result<RegisterPage, ReadError> {
        self.call(|reply| Request::RegisterPage(Box::new(query), reply), Err(ReadError::Closed)).await
    }

    /// Cases whose summary, detail, notes or replies contain every whitespace-separated term, newest first.
    pub async fn search(&self, text: &str, limit: usize) -> Result<Vec<CaseRow>, ReadError> {
        self.call(|reply| Request::Search(text.to_owned(), limit, reply), Err(ReadError::Closed)).await
    }

    /// Cases overdue at `now_ms`, most overdue first.
    pub async fn overdue(&self, now_ms: i64, limit: usize) -> Result<Vec<CaseRow>, ReadError> {
        self.call(|reply| Request::Overdue(now_ms, limit, reply), Err(ReadError::Closed)).await
    }

    /// Cases whose counted rating is a 差评 (2 or less of 5), latest first: where the 差评 tasks are (issue 15). Their
    /// tasks' due dates are in the documents, not in the projection: the desk reads each case's view.
    pub async fn badly_rated(&self, limit: usize) -> Result<Vec<CaseRow>, ReadError> {
        self.call(|reply| Request::BadlyRated(limit, reply), Err(ReadError::Closed)).await
    }

    /// Statistics of the cases registered from `from` to `to` (local dates, both included).
    pub async fn statistics(&self, from: Date, to: Date) -> Result<Statistics, ReadError> {
        self.call(|reply| Request::Statistics(from, to, reply), Err(ReadError::Closed)).await
    }

    /// The 督查科's figures (`zhaowo_crdt::kpi`) of the cases registered from `from` to `to`, per group of `group` (one
    /// group `全部` without); see [`Db::kpi_tallies`](db::Db::kpi_tallies).
    pub async fn kpi_tallies(
        &self,
        from: Date,
        to: Date,
        group: Option<zhaowo_crdt::kpi::GroupBy>,
    ) -> Result<KpiGroups, ReadError> {
        self.call(|reply| Request::KpiTallies(from, to, group, reply), Err(ReadError::Closed)).await
    }

    pub async fn counts(&self) -> Result<StoreCounts, ReadError> {
        self.call(Request::Counts, Err(ReadError::Closed)).await
    }

    pub async fn schema_version(&self) -> Result<i64, ReadError> {
        self.call(Request::SchemaVersion, Err(ReadError::Closed)).await
    }

    /// SQLite's `PRAGMA integrity_check`: `["ok"]` for a healthy file.
    pub async fn integrity_check(&self) -> Result<Vec<String>, MaintenanceError> {
        self.call(Request::IntegrityCheck, Err(MaintenanceError::Closed)).await
    }

    /// Checks every document loads, its heads match the catalog and its projections match it, every registration
    /// number is held once, and (given the roster) every stored change signature verifies. Documents whose rows are
    /// damaged are put in quarantine (not sent to peers) and documents found healthy leave it.
    pub async fn verify(&self, roster: Option<Roster>) -> Result<VerifyReport, MaintenanceError> {
        self.call(|reply| Request::Verify(roster.map(Box::new), reply), Err(MaintenanceError::Closed)).await
    }

    /// Destroys every case key this node may no longer hold (a laptop's visits logged or expired, purged cases);
    /// returns how many. The node runs it at start and hourly; commands and sync destroy keys as they go too.
    pub async fn sweep_keys(&self) -> Result<usize, WriteError> {
        self.call(Request::SweepKeys, Err(WriteError::Closed)).await
    }

    /// Closed cases (办结 before `closed_before_ms`) whose key this node holds, oldest first, at most `limit`: what the
    /// retention rule purges next.
    pub async fn retention_due(&self, closed_before_ms: i64, limit: usize) -> Result<Vec<String>, ReadError> {
        self.call(|reply| Request::RetentionDue(closed_before_ms, limit, reply), Err(ReadError::Closed)).await
    }

    /// Takes case keys that came other than by sync (a bundle): each only for a case stored here that it opens and
    /// this node may hold (`seal::may_hold_key`); returns how many were new. One transaction.
    pub async fn receive_keys(&self, grants: Vec<zhaowo_crdt::wire::CaseKeyGrant>) -> Result<usize, WriteError> {
        self.call(|reply| Request::ReceiveKeys(grants, reply), Err(WriteError::Closed)).await
    }

    /// The keys this node holds among `case_ids` (for a bundle it exports, which is encrypted to the hall's PCs).
    pub async fn case_keys(&self, case_ids: Vec<String>) -> Result<Vec<zhaowo_crdt::wire::CaseKeyGrant>, ReadError> {
        self.call(|reply| Request::CaseKeys(case_ids, reply), Err(ReadError::Closed)).await
    }

    /// The material files cases name (issue 16), in hash order after `after` (start with ""), at most `limit`.
    pub async fn blob_refs(&self, after: &str, limit: usize) -> Result<Vec<BlobRef>, ReadError> {
        self.call(|reply| Request::BlobRefs(after.to_owned(), limit, reply), Err(ReadError::Closed)).await
    }

    /// The case that names the material file `hash`, if any (a live material of a case not purged).
    pub async fn blob_ref(&self, hash: &str) -> Result<Option<BlobRef>, ReadError> {
        self.call(|reply| Request::BlobRef(hash.to_owned(), reply), Err(ReadError::Closed)).await
    }

    /// The key of a case, when this node holds it (to open the case's material files off the store thread).
    pub async fn case_key(&self, case_id: &str) -> Result<Option<zhaowo_crdt::seal::CaseKey>, ReadError> {
        self.call(|reply| Request::CaseKey(case_id.to_owned(), reply), Err(ReadError::Closed)).await
    }

    /// How many material files cases name, and their sealed bytes.
    pub async fn blob_totals(&self) -> Result<(u64, u64), ReadError> {
        self.call(Request::BlobTotals, Err(ReadError::Closed)).await
    }

    /// How many case keys this node holds (status, metrics, tests).
    pub async fn case_key_count(&self) -> Result<u64, ReadError> {
        self.call(Request::CaseKeyCount, Err(ReadError::Closed)).await
    }

    /// Rebuilds every projection from the documents, in one transaction.
    pub async fn reindex(&self) -> Result<ReindexReport, MaintenanceError> {
        self.call(Request::Reindex, Err(MaintenanceError::Closed)).await
    }

    /// Writes a consistent copy of the live store to `to` (`VACUUM INTO`); writers wait meanwhile.
    pub async fn backup(&self, to: &Path) -> Result<(), MaintenanceError> {
        self.call(|reply| Request::Backup(to.to_path_buf(), reply), Err(MaintenanceError::Closed)).await
    }

    /// Test hook: runs raw SQL on the store's connection and empties the cache (corruption tests).
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &str) -> Result<(), MaintenanceError> {
        self.call(|reply| Request::ExecuteRaw(sql.to_owned(), reply), Err(MaintenanceError::Closed)).await
    }

    /// Runs one step of a sync session on the store thread (see [`SyncStep`]); everything it stored is committed
    /// before the outcome's frames are returned.
    pub async fn sync_step(&self, step: SyncStep) -> SyncOutcome {
        let closed = SyncOutcome { storage_error: Some("the store is closed".to_owned()), ..SyncOutcome::default() };
        *self.call(|reply| Request::SyncStep(Box::new(step), reply), Box::new(closed)).await
    }

    /// The catalog position `peer` last acknowledged, and how many of our documents changed after it.
    pub async fn checkpoint(&self, peer: [u8; 32]) -> Result<(u64, u64), ReadError> {
        self.call(|reply| Request::Checkpoint(peer, reply), Err(ReadError::Closed)).await
    }

    /// Watches the node-wide counter: it changes after every commit that stored a change (local or from a peer).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.notify.subscribe()
    }

    /// Stops the thread after the queued requests and closes the connection.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the store thread panicked");
        }
    }

    /// Replaces the store file at `target` with the backup at `backup` after checking the backup is a healthy zhaowo
    /// store. The store at `target` must be closed.
    pub fn restore(backup: &Path, target: &Path) -> Result<(), MaintenanceError> {
        let bad = |reason: String| MaintenanceError::BadBackup { path: backup.to_path_buf(), reason };
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| MaintenanceError::Io { what, path, source }
        };
        {
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = rusqlite::Connection::open_with_flags(backup, flags).map_err(|error| bad(error.to_string()))?;
            let application_id: i32 = conn
                .query_row("PRAGMA application_id", [], |row| row.get(0))
                .map_err(|error| bad(error.to_string()))?;
            if application_id != APPLICATION_ID {
                return Err(bad("not a zhaowo store".to_owned()));
            }
            let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
            if version > SCHEMA_VERSION_LATEST {
                return Err(bad(format!(
                    "schema version {version} is newer than this zhaowo ({SCHEMA_VERSION_LATEST})"
                )));
            }
            let check: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))?;
            if check != "ok" {
                return Err(bad(format!("integrity check: {check}")));
            }
        }
        let mut staging = target.as_os_str().to_owned();
        staging.push(".restoring");
        let staging = PathBuf::from(staging);
        std::fs::copy(backup, &staging).map_err(io("cannot copy the backup to", &staging))?;
        std::fs::File::open(&staging).and_then(|file| file.sync_all()).map_err(io("cannot sync", &staging))?;
        // The old WAL must go before the new file takes the name, or SQLite would replay it onto the restored file.
        for suffix in ["-wal", "-shm"] {
            let mut side = target.as_os_str().to_owned();
            side.push(suffix);
            match std::fs::remove_file(&side) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io("cannot remove", Path::new(&side))(error)),
            }
        }
        std::fs::rename(&staging, target).map_err(io("cannot move the restored file to", target))?;
        if let Some(dir) = target.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(io("cannot sync directory", dir))?;
        }
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}
