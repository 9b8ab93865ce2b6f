//! The store's connection owner: opening and migrating, the document cache, local writes (registration with the
//! number allocated in the same transaction, edits, two-case edits), remote changes, and how documents are stored
//! (snapshot plus change rows, catalog, signatures). Reads are in `read`, maintenance in `maintenance`, sync in
//! `replica`. Only the store thread touches a [`Db`]; everything here is synchronous.
//!
//! Invariants:
//! - A document's stored state is `snapshot` (possibly empty) plus every row of `changes` for it; loading applies the
//!   rows to the snapshot and must leave no change waiting for a missing dependency.
//! - Every stored change bumps `meta.local_seq` by one, and the catalog row of its document takes the new value.
//! - Projections are written in the same transaction as the changes they reflect.
//! - A document in the LRU equals its stored state: a failed command or a failed commit evicts it.

use super::cache::Lru;
use super::projection::{self, CASE_COLUMNS, CaseRow, SearchText};
use super::registry;
use super::schema::{self, APPLICATION_ID, SCHEMA_VERSION_LATEST};
use super::*;
use automerge::sync::{Message as SyncMessage, State as SyncState};
use automerge::{ActorId, AutoCommit, Change, ChangeHash};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use zhaowo_crdt::roster::{Roster, SignedRecord};
use zhaowo_crdt::sync::{ReceivedDoc, Replica, SessionEvent};
use zhaowo_crdt::wire::{CatalogEntry as WireCatalogEntry, ChangeSignature, WholeDoc};
use zhaowo_crdt::{CaseDoc, CaseView, RegNo};

mod blobs;
mod keys;
pub use blobs::BlobRef;
pub use keys::KeyWrap;
mod maintenance;
mod outbox;
mod read;
mod replica;

pub(crate) use keys::KeyHolder;

use maintenance::reindex_in;

/// Prepared statements kept: more than the store has distinct statements (search builds a few per filter shape).
const STATEMENTS_CACHED_MAX: usize = 128;

/// The node-wide change counter as stored (`meta.local_seq`).
fn stored_local_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = 'local_seq'")?.query_row([], |row| row.get(0))
}

/// Doc ids read per step when walking every document (verify, reindex): bounds memory at ~100 KB of ids.
const WALK_CHUNK_DOCS: usize = 1024;

pub(crate) struct Db {
    conn: Connection,
    actor: ActorId,
    cache: Lru<CaseDoc>,
    compact_min_bytes: usize,
    search_sort_matches_max: usize,
    /// Signs the changes this node authors (`None`: unsigned, for tools and tests without a node key).
    signer: Option<ChangeSigner>,
    /// The node-wide counter after the last commit, for sync drivers waiting for new entries.
    notify: tokio::sync::watch::Sender<i64>,
    /// The schema has every projection table (the latest version; older versions are opened only by migration tests).
    projections: bool,
    /// `PRAGMA data_version` when the cache was last checked: it moves only when *another* connection commits (the
    /// CLI writing a case while `zhaowo run` holds this store), and then cached documents may be stale.
    data_version: i64,
    /// Every catalog entry at or below this counter was on disk when the cache was last checked, so a cached
    /// document with nothing newer is current.
    checked_seq: i64,
    /// Whose case keys this store holds (see `keys`).
    key_holder: KeyHolder,
    /// A key was destroyed in the current write: truncate the WAL after its commit.
    keys_destroyed: bool,
}

/// Drops cached documents another connection changed since the last check (see [`Db::refresh_cache`]).
fn refresh(
    conn: &Connection,
    cache: &mut Lru<CaseDoc>,
    data_version: &mut i64,
    checked_seq: &mut i64,
) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA data_version", [], |row| row.get(0))?;
    if version == *data_version {
        return Ok(());
    }
    *data_version = version;
    // Our own writes since the last check are in the answer too: dropping them costs a reload, nothing more.
    let mut statement = conn.prepare_cached("SELECT doc_id, local_seq FROM catalog WHERE local_seq > ?1")?;
    let rows = statement.query_map([*checked_seq], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
    let mut newest = *checked_seq;
    for row in rows {
        let (doc_id, seq) = row?;
        newest = newest.max(seq);
        cache.remove(&doc_id);
    }
    *checked_seq = newest;
    Ok(())
}

/// The hash the catalog keeps of a set of heads: SHA-256 over the sorted head hashes.
pub fn heads_hash(heads: &[ChangeHash]) -> [u8; 32] {
    // One definition for the catalog and the sync session: they compare these hashes across nodes.
    zhaowo_crdt::sync::heads_hash(heads)
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// Parses one change from bytes, checking it against its stored hash when there is one.
fn parse_change(bytes: &[u8], expected: Option<&[u8]>) -> Result<Change, String> {
    let change = catch_unwind(|| Change::try_from(bytes))
        .map_err(|payload| format!("decoding panicked: {}", panic_text(payload)))?
        .map_err(|error| error.to_string())?;
    if let Some(expected) = expected
        && change.hash().0.as_slice() != expected
    {
        return Err(format!("change hash {} does not match the stored hash", change.hash()));
    }
    Ok(change)
}

impl Db {
    pub fn open(options: &StoreOptions) -> Result<Db, OpenStoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match &options.vfs {
            Some(vfs) => Connection::open_with_flags_and_vfs(&options.path, flags, vfs.as_str()),
            None => Connection::open_with_flags(&options.path, flags),
        }
        .map_err(|source| OpenStoreError::Open { path: options.path.clone(), source })?;
        let sqlite = |source| OpenStoreError::Sqlite { path: options.path.clone(), source };
        let not_a_store = |reason: String| OpenStoreError::NotAStore { path: options.path.clone(), reason };
        // A file that is not SQLite fails on the first read, not on open.
        let journal: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|source| not_a_store(source.to_string()))?;
        if !journal.eq_ignore_ascii_case("wal") {
            return Err(not_a_store(format!("journal mode stays `{journal}`, WAL is required")));
        }
        // secure_delete: a deleted row (a destroyed case key, a projection rewritten without private values) is
        // overwritten with zeros in the file, not left on a free page (NOTES.md *Erasure*).
        conn.execute_batch(&format!(
            "PRAGMA synchronous = FULL; PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA foreign_keys = OFF; PRAGMA secure_delete = ON;"
        ))
        .map_err(sqlite)?;
        // The store uses a few dozen distinct statements; rusqlite's default cache of 16 re-parsed SQL on every sync
        // step (a tenth of an initial sync's CPU).
        conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED_MAX);
        let mut db = Db {
            conn,
            actor: options.actor.clone(),
            cache: Lru::new(options.cache_docs_max),
            compact_min_bytes: options.compact_min_bytes,
            search_sort_matches_max: options.search_sort_matches_max,
            signer: options.signer.clone(),
            notify: options.notify.clone(),
            projections: false,
            // Set once the schema is ready, at the end of `open`.
            data_version: 0,
            checked_seq: 0,
            key_holder: KeyHolder {
                role: options.key_role,
                node_id: match &options.signer {
                    Some(signer) => zhaowo_crdt::ids::hex_encode(&signer.node_key),
                    None => zhaowo_crdt::ids::hex_encode(
                        &options.actor.to_bytes()[..options.actor.to_bytes().len().min(32)],
                    ),
                },
                wrap: options.key_wrap.clone(),
            },
            keys_destroyed: false,
        };
        let target = options.schema_version_target;
        assert!((1..=SCHEMA_VERSION_LATEST).contains(&target), "schema_version_target out of range");
        let tx = db.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sqlite)?;
        let (version, application_id) = schema::version(&tx).map_err(sqlite)?;
        if version > SCHEMA_VERSION_LATEST {
            return Err(OpenStoreError::NewerSchema {
                path: options.path.clone(),
                found: version,
                supported: SCHEMA_VERSION_LATEST,
            });
        }
        if application_id != APPLICATION_ID {
            let tables: i64 =
                tx.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0)).map_err(sqlite)?;
            if application_id != 0 || tables > 0 {
                return Err(not_a_store(format!(
                    "application id {application_id:#x} is not zhaowo's ({APPLICATION_ID:#x})"
                )));
            }
        }
        if (1..6).contains(&version) && schema::holds_documents_before_private_layer(&tx).map_err(sqlite)? {
            return Err(OpenStoreError::BeforePrivateLayer { path: options.path.clone() });
        }
        let mut version_now = version;
        if version < target {
            let migrated = schema::migrate(&tx, version, target).map_err(sqlite)?;
            db.projections = target >= SCHEMA_VERSION_LATEST;
            if migrated.reindex {
                tracing::info!(from = migrated.from, to = migrated.to, "rebuilding projections after migration");
                reindex_in(&tx, &db.actor, &db.key_holder, &mut Vec::new()).map_err(sqlite)?;
            }
            version_now = target;
        }
        // Keys written in clear (before keys were wrapped, or by a tool without a node key) are wrapped now.
        let (dropped, rewrapped) = match (&db.key_holder.wrap, version_now >= 6) {
            (Some(wrap), true) => keys::settle_wrap(&tx, wrap).map_err(sqlite)?,
            _ => (0, 0),
        };
        tx.commit().map_err(sqlite)?;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "case keys another node wrapped were dropped: the hall's PCs hand them back at the next sync"
            );
        }
        if rewrapped + dropped > 0 {
            tracing::info!(rewrapped, "case keys wrapped under the node key");
            db.keys_destroyed = true;
            db.truncate_wal_if_keys_destroyed();
        }
        db.projections = version_now >= SCHEMA_VERSION_LATEST;
        if let Ok(seq) = stored_local_seq(&db.conn) {
            db.notify.send_replace(seq);
            db.checked_seq = seq;
        }
        db.data_version = db.conn.query_row("PRAGMA data_version", [], |row| row.get(0)).map_err(sqlite)?;
        Ok(db)
    }

    pub fn schema_version(&self) -> rusqlite::Result<i64> {
        self.conn.query_row("PRAGMA user_version", [], |row| row.get(0))
    }

    // ---- documents ----

    fn catalog_has(&self, doc_id: &str) -> rusqlite::Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM catalog WHERE doc_id = ?1")?
            .query_row([doc_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The cached document, or the stored one loaded into the cache.
    pub(crate) fn case_mut(&mut self, doc_id: &str) -> Result<&mut CaseDoc, ReadError> {
        if self.cache.get_mut(doc_id).is_none() {
            let doc = load_automerge(&self.conn, &self.actor, doc_id)?
                .ok_or_else(|| ReadError::UnknownCase(doc_id.to_owned()))?;
            let case = keys::open_case(&self.conn, &self.key_holder, doc).map_err(|(error, _)| {
                ReadError::Corrupt(CorruptCase { case_id: doc_id.to_owned(), reason: error.to_string() })
            })?;
            self.cache.insert(doc_id.to_owned(), case);
        }
        Ok(self.cache.get_mut(doc_id).expect("inserted above"))
    }

    pub fn cached_docs(&self) -> usize {
        self.cache.len()
    }

    /// Drops cached documents another process changed since the last check. Runs before every request: a document
    /// written by the CLI while the node runs must not be served, synced or compacted from a stale copy (compacting
    /// a stale copy would replace the other process's change rows with a snapshot that lacks them).
    pub fn refresh_cache(&mut self) -> rusqlite::Result<()> {
        refresh(&self.conn, &mut self.cache, &mut self.data_version, &mut self.checked_seq)
    }

    /// Forgets every cached document (they reload from disk on demand).
    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }

    // ---- local writes ----

    /// Runs `work` inside `BEGIN IMMEDIATE … COMMIT` (ROLLBACK when it fails). The write lock is taken first and the
    /// cache refreshed under it, so an edit always starts from the stored document: another process writing the same
    /// file waits for this transaction (`busy_timeout`) and can never slip a change in between. On an error the caller
    /// evicts what it touched from the cache.
    fn write<T, E: From<rusqlite::Error>>(&mut self, work: impl FnOnce(&mut Db) -> Result<T, E>) -> Result<T, E> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = match self.refresh_cache() {
            Ok(()) => work(self),
            Err(error) => Err(error.into()),
        };
        let result = match result {
            Ok(value) => self.conn.execute_batch("COMMIT").map(|()| value).map_err(E::from),
            Err(error) => Err(error),
        };
        if result.is_err() && !self.conn.is_autocommit() {
            drop(self.conn.execute_batch("ROLLBACK"));
        }
        result
    }

    /// Stores a case registered elsewhere with its number (tests, tools): the number must not be held by another case.
    pub fn register(&mut self, case: CaseDoc) -> Result<Acknowledged, WriteError> {
        let reg_no = case.view().reg_no;
        self.register_with(Box::new(move |_| Ok(case)), Some(reg_no))
    }

    /// Registers a new case under the next number of `window` in `year`, picked in the registering transaction;
    /// `query_code` (the receipt's 查询码) goes into the registration's SMS, if the citizen asked for one.
    pub fn register_new(
        &mut self,
        window: &str,
        year: i32,
        query_code: Option<String>,
        build: RegisterFn,
    ) -> Result<Registered, WriteError> {
        if !self.projections {
            return Err(WriteError::from(ReadError::NoProjections));
        }
        let (window, year) = (window.to_owned(), year);
        let mut allocated = None;
        let ack = self.register_inner(build, query_code, |db| {
            let reg_no = registry::next_number(&db.conn, &window, year)?
                .ok_or_else(|| WriteError::NumbersExhausted { window: window.clone(), year })?;
            allocated = Some(reg_no.clone());
            Ok(reg_no)
        })?;
        Ok(Registered { ack, reg_no: allocated.expect("allocated before registering") })
    }

    fn register_with(&mut self, build: RegisterFn, reg_no: Option<RegNo>) -> Result<Acknowledged, WriteError> {
        let reg_no = reg_no.expect("a pre-numbered case");
        self.register_inner(build, None, move |_| Ok(reg_no))
    }

    fn register_inner(
        &mut self,
        build: RegisterFn,
        query_code: Option<String>,
        number: impl FnOnce(&Db) -> Result<RegNo, WriteError>,
    ) -> Result<Acknowledged, WriteError> {
        let mut registered_id = None;
        let result = self.write(|db| -> Result<(Acknowledged, CaseDoc), WriteError> {
            let reg_no = number(db)?;
            let mut case = match catch_unwind(AssertUnwindSafe(|| build(reg_no.clone()))) {
                Ok(built) => built?,
                Err(payload) => return Err(WriteError::Panicked(panic_text(payload))),
            };
            let doc_id = case.case_id().as_str().to_owned();
            if case.view().reg_no != reg_no {
                return Err(WriteError::Corrupt(CorruptCase {
                    case_id: doc_id,
                    reason: format!("registered under {} instead of the allocated {reg_no}", case.view().reg_no),
                }));
            }
            if db.catalog_has(&doc_id)? {
                return Err(WriteError::DuplicateCase(doc_id));
            }
            if db.projections {
                if let Some(holder) = registry::holder_other_than(&db.conn, &reg_no.to_string(), &doc_id)? {
                    return Err(WriteError::RegNoTaken { reg_no: reg_no.to_string(), case_id: holder });
                }
                registry::claim_local(&db.conn, &doc_id, &reg_no)?;
            }
            registered_id = Some(doc_id.clone());
            let stored =
                persist(&db.conn, &doc_id, case.automerge_mut(), &[], db.compact_min_bytes, signing(&db.signer))?;
            // The key the registration drew, kept with the case (every node that registers may read what it wrote;
            // a laptop's key goes at the next `settle_key` if it may not keep it).
            // (Stores below schema 6, only opened by migration tests, have no key table.)
            if let Some(key) = case.key().filter(|_| db.projections) {
                keys::store_key(&db.conn, &db.key_holder, &doc_id, key, crate::home::now_ms())?;
            }
            db.settle_key(&mut case)?;
            if db.projections {
                project(&db.conn, &case)?;
                let registered = case
                    .events()
                    .0
                    .into_iter()
                    .find(|event| matches!(event.kind, zhaowo_crdt::EventKind::Registered { .. }));
                if let Some(event) = registered {
                    outbox::enqueue(&db.conn, &case, &event.id, query_code.as_deref(), crate::home::now_ms())?;
                }
            }
            let heads = case.automerge_mut().get_heads();
            let ack = Acknowledged {
                case_id: doc_id,
                local_seq: stored.local_seq,
                heads_hash: heads_hash(&heads),
                event_id: None,
            };
            Ok((ack, case))
        });
        match result {
            Ok((ack, case)) => {
                self.truncate_wal_if_keys_destroyed();
                self.notify.send_replace(ack.local_seq);
                self.cache.insert(ack.case_id.clone(), case);
                Ok(ack)
            }
            Err(error) => {
                if let Some(doc_id) = registered_id {
                    self.cache.remove(&doc_id);
                }
                Err(error)
            }
        }
    }

    /// Takes a case out of the cache (or loads it) for a write; it goes back only after the commit.
    fn take_case(&mut self, doc_id: &str) -> Result<CaseDoc, ReadError> {
        self.case_mut(doc_id)?;
        Ok(self.cache.remove(doc_id).expect("loaded above"))
    }

    /// Stores the change a command made to a taken case, with its projections (inside the caller's transaction).
    fn persist_case(&mut self, case: &mut CaseDoc, heads_before: &[ChangeHash]) -> rusqlite::Result<Stored> {
        let doc_id = case.case_id().as_str().to_owned();
        let stored = persist(
            &self.conn,
            &doc_id,
            case.automerge_mut(),
            heads_before,
            self.compact_min_bytes,
            signing(&self.signer),
        )?;
        self.settle_key(case)?;
        if self.projections && stored.changes > 0 {
            project(&self.conn, case)?;
        }
        Ok(stored)
    }

    pub fn edit(&mut self, doc_id: &str, edit: EditFn) -> Result<Acknowledged, WriteError> {
        let mut taken = None;
        let result = self.write(|db| -> Result<Acknowledged, WriteError> {
            let case = taken.insert(db.take_case(doc_id)?);
            let heads_before = case.automerge_mut().get_heads();
            let event_id = match catch_unwind(AssertUnwindSafe(|| edit(&mut *case))) {
                Ok(Ok(event_id)) => event_id,
                Ok(Err(error)) => {
                    if case.automerge_mut().get_heads() == heads_before
                        && automerge::transaction::Transactable::pending_ops(case.automerge()) == 0
                    {
                        // Nothing changed: the copy is still the stored document.
                        let case = taken.take().expect("taken above");
                        db.cache.insert(doc_id.to_owned(), case);
                    }
                    return Err(WriteError::Command(error));
                }
                Err(payload) => return Err(WriteError::Panicked(panic_text(payload))),
            };
            let stored = db.persist_case(case, &heads_before)?;
            if db.projections && stored.changes > 0 {
                // The message this event asks for, in the event's own transaction (issue 15 §4).
                outbox::enqueue(&db.conn, case, &event_id, None, crate::home::now_ms())?;
            }
            let hash = heads_hash(&case.automerge_mut().get_heads());
            Ok(Acknowledged {
                case_id: doc_id.to_owned(),
                local_seq: stored.local_seq,
                heads_hash: hash,
                event_id: Some(event_id),
            })
        });
        if let Ok(ack) = &result {
            self.truncate_wal_if_keys_destroyed();
            self.notify.send_replace(ack.local_seq);
            if let Some(case) = taken {
                self.cache.insert(doc_id.to_owned(), case);
            }
        }
        // On an error the changed copy is dropped (it was out of the cache): the caller was not acknowledged.
        result
    }

    /// Edits two cases in one transaction (并案, 解除并案): both changes are stored, or neither. `second` may be missing
    /// from this store unless `second_required` (the master of a duplicate that has not reached this node).
    pub fn edit_pair(
        &mut self,
        first: &str,
        second: Option<&str>,
        second_required: bool,
        edit: PairEditFn,
    ) -> Result<PairAcknowledged, WriteError> {
        let mut taken: Vec<CaseDoc> = Vec::new();
        let result = self.write(|db| -> Result<PairAcknowledged, WriteError> {
            taken.push(db.take_case(first)?);
            let second_present = match second {
                Some(second) if second == first => {
                    return Err(WriteError::Command(CommandError::DuplicateCycle));
                }
                Some(second) => match db.take_case(second) {
                    Ok(case) => {
                        taken.push(case);
                        true
                    }
                    Err(ReadError::UnknownCase(_)) if !second_required => false,
                    Err(error) => return Err(error.into()),
                },
                None => false,
            };
            let heads: Vec<Vec<ChangeHash>> = taken.iter_mut().map(|case| case.automerge_mut().get_heads()).collect();
            let (a, rest) = taken.split_first_mut().expect("the first case is taken");
            let events = match catch_unwind(AssertUnwindSafe(|| edit(a, rest.first_mut()))) {
                Ok(Ok(events)) => events,
                Ok(Err(error)) => return Err(WriteError::Command(error)),
                Err(payload) => return Err(WriteError::Panicked(panic_text(payload))),
            };
            let mut acks = Vec::new();
            for (index, case) in taken.iter_mut().enumerate() {
                let stored = db.persist_case(case, &heads[index])?;
                acks.push(Acknowledged {
                    case_id: case.case_id().as_str().to_owned(),
                    local_seq: stored.local_seq,
                    heads_hash: heads_hash(&case.automerge_mut().get_heads()),
                    event_id: events.get(index).cloned().flatten(),
                });
            }
            let mut acks = acks.into_iter();
            let first = acks.next().expect("one ack per taken case");
            Ok(PairAcknowledged { first, second: if second_present { acks.next() } else { None } })
        });
        if let Ok(acks) = &result {
            self.truncate_wal_if_keys_destroyed();
            let seq = acks.second.as_ref().map_or(acks.first.local_seq, |second| second.local_seq);
            self.notify.send_replace(seq.max(acks.first.local_seq));
            for case in taken {
                self.cache.insert(case.case_id().as_str().to_owned(), case);
            }
        }
        result
    }

    // ---- remote changes ----

    /// Stores remote changes; `signatures` (by change hash, verified by the caller) are stored with the changes they
    /// sign, so this node can relay them.
    pub fn apply_remote(
        &mut self,
        batch: Vec<RemoteChanges>,
        signatures: &BTreeMap<[u8; 32], [u8; 64]>,
    ) -> Result<RemoteReport, ApplyRemoteError> {
        if batch.len() > REMOTE_BATCH_DOCS_MAX {
            return Err(ApplyRemoteError::BatchTooLarge { docs: batch.len(), max: REMOTE_BATCH_DOCS_MAX });
        }
        let mut report = RemoteReport::default();
        let mut touched = Vec::new();
        let projections = self.projections;
        let compact_min_bytes = self.compact_min_bytes;
        let key_holder = &self.key_holder;
        let mut keys_destroyed = false;
        let result = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Under the write lock: what another process committed before it is dropped from the cache.
            refresh(&tx, &mut self.cache, &mut self.data_version, &mut self.checked_seq)?;
            for remote in batch {
                let doc_id = remote.case_id;
                if zhaowo_crdt::CaseId::parse(&doc_id).is_none() {
                    report.rejected.push(RejectedDoc { case_id: doc_id, reason: "not a case id".to_owned() });
                    continue;
                }
                let mut changes = Vec::with_capacity(remote.changes.len());
                let mut bad = None;
                for bytes in &remote.changes {
                    if bytes.len() > REMOTE_CHANGE_BYTES_MAX {
                        bad = Some(format!("a change of {} bytes exceeds {REMOTE_CHANGE_BYTES_MAX}", bytes.len()));
                        break;
                    }
                    match parse_change(bytes, None) {
                        Ok(change) => changes.push(change),
                        Err(reason) => {
                            bad = Some(reason);
                            break;
                        }
                    }
                }
                if let Some(reason) = bad {
                    report.rejected.push(RejectedDoc { case_id: doc_id, reason });
                    continue;
                }
                // Take the document out of the cache while it changes; it goes back only after the commit.
                let mut doc = match self.cache.remove(&doc_id) {
                    Some(case) => DocState::Case(case),
                    None => match load_automerge(&tx, &self.actor, &doc_id) {
                        Ok(Some(doc)) => DocState::Raw(doc),
                        Ok(None) => DocState::Raw(AutoCommit::new().with_actor(self.actor.clone())),
                        Err(ReadError::Sqlite(error)) => return Err(error),
                        Err(error) => {
                            report.rejected.push(RejectedDoc { case_id: doc_id, reason: error.to_string() });
                            continue;
                        }
                    },
                };
                let am = doc.automerge_mut();
                let heads_before = am.get_heads();
                let applied = catch_unwind(AssertUnwindSafe(|| am.apply_changes(changes)));
                match applied {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        report.rejected.push(RejectedDoc { case_id: doc_id, reason: error.to_string() });
                        continue;
                    }
                    Err(payload) => {
                        report.rejected.push(RejectedDoc {
                            case_id: doc_id,
                            reason: format!("automerge panicked: {}", panic_text(payload)),
                        });
                        continue;
                    }
                }
                if !am.get_missing_deps(&[]).is_empty() {
                    report.waiting_for_deps += 1;
                }
                let stored = persist(&tx, &doc_id, am, &heads_before, compact_min_bytes, Signing::Relayed(signatures))?;
                if stored.changes == 0 {
                    report.duplicate_docs += 1;
                } else {
                    report.applied_changes += stored.changes;
                    report.changed_docs += 1;
                }
                let (mut case, was_cached) = match doc {
                    DocState::Case(case) => (Some(case), true),
                    DocState::Raw(raw) => (keys::open_case(&tx, key_holder, raw).ok(), false),
                };
                if let Some(case) = case.as_mut() {
                    keys_destroyed |= keys::settle_key_in(&tx, key_holder, case)?;
                }
                if projections && stored.changes > 0 {
                    match &case {
                        Some(case) => project(&tx, case)?,
                        None => projection::remove(&tx, &doc_id)?,
                    }
                }
                // Only documents that were cached go back: a document assembled by `apply_changes` holds ~0.5 MB
                // (measured: RSS 2.6 GB with 4096 of them cached) where the same case loaded from its snapshot holds
                // ~40 KB, so a bulk import must not fill the cache with them.
                if let Some(case) = case.filter(|_| was_cached) {
                    touched.push((doc_id, case));
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                self.keys_destroyed |= keys_destroyed;
                self.truncate_wal_if_keys_destroyed();
                for (doc_id, case) in touched {
                    self.cache.insert(doc_id, case);
                }
                if report.applied_changes > 0
                    && let Ok(seq) = stored_local_seq(&self.conn)
                {
                    self.notify.send_replace(seq);
                }
                Ok(report)
            }
            Err(error) => Err(ApplyRemoteError::Sqlite(error)),
        }
    }

    /// The stored changes of a document that are not reachable from `heads` (all of them for empty heads).
    pub fn changes_since(&mut self, doc_id: &str, heads: &[ChangeHash]) -> Result<Vec<Vec<u8>>, ReadError> {
        let case = self.case_mut(doc_id)?;
        Ok(case.automerge_mut().get_changes(heads).iter().map(|change| change.raw_bytes().to_vec()).collect())
    }

    pub fn catalog_since(&self, after_local_seq: i64, limit: usize) -> rusqlite::Result<Vec<CatalogEntry>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT c.doc_id, c.heads_hash, c.local_seq, k.doc_id IS NOT NULL FROM catalog c \
             LEFT JOIN case_keys k ON k.doc_id = c.doc_id WHERE c.local_seq > ?1 ORDER BY c.local_seq LIMIT ?2",
        )?;
        let rows = statement.query_map(params![after_local_seq, limit.min(CATALOG_PAGE_MAX) as i64], |row| {
            let hash: Vec<u8> = row.get(1)?;
            Ok(CatalogEntry {
                case_id: row.get(0)?,
                heads_hash: hash.try_into().unwrap_or([0; 32]),
                local_seq: row.get(2)?,
                keyed: row.get(3)?,
            })
        })?;
        rows.collect()
    }
}

enum DocState {
    Case(CaseDoc),
    Raw(AutoCommit),
}

impl DocState {
    fn automerge_mut(&mut self) -> &mut AutoCommit {
        match self {
            DocState::Case(case) => case.automerge_mut(),
            DocState::Raw(doc) => doc,
        }
    }
}

fn project(tx: &Connection, case: &CaseDoc) -> rusqlite::Result<()> {
    let view = case.view();
    projection::upsert(tx, &view)
}

/// Which signatures [`persist`] stores with the changes it writes.
#[derive(Clone, Copy)]
pub(crate) enum Signing<'a> {
    /// None (a store without a node key: tests, tools; and changes merged from files without signatures).
    Unsigned,
    /// This node authored the changes: sign each with the node key.
    Local(&'a ChangeSigner),
    /// Changes from a peer, whose signatures the sync session verified (by change hash).
    Relayed(&'a BTreeMap<[u8; 32], [u8; 64]>),
}

fn signing(signer: &Option<ChangeSigner>) -> Signing<'_> {
    signer.as_ref().map_or(Signing::Unsigned, Signing::Local)
}

/// What [`persist`] wrote.
struct Stored {
    changes: usize,
    local_seq: i64,
}

/// Stores the changes of `doc` not reachable from `heads_before`, compacts when the increments outgrow the snapshot,
/// and updates the catalog and the node-wide counter. Runs inside the caller's transaction.
fn persist(
    tx: &Connection,
    doc_id: &str,
    doc: &mut AutoCommit,
    heads_before: &[ChangeHash],
    compact_min_bytes: usize,
    signing: Signing<'_>,
) -> rusqlite::Result<Stored> {
    let changes = doc.get_changes(heads_before);
    let n_changes = changes.len();
    let mut local_seq: i64 = stored_local_seq(tx)?;
    if n_changes == 0 {
        return Ok(Stored { changes: 0, local_seq });
    }
    // The copy we changed must be the stored document: if another process committed to it since we loaded it, the
    // catalog, the projections and a compaction computed from our copy would drop that process's changes. Refuse
    // (unacknowledged, the cached copy is dropped by the caller) and let the caller retry from the stored document.
    let stored_heads: Option<Vec<u8>> = tx
        .prepare_cached("SELECT heads_hash FROM catalog WHERE doc_id = ?1")?
        .query_row([doc_id], |row| row.get(0))
        .optional()?;
    if let Some(stored_heads) = stored_heads
        && stored_heads.as_slice() != heads_hash(heads_before).as_slice()
    {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some(format!("case {doc_id} was changed by another process meanwhile; retry")),
        ));
    }
    let mut added_bytes = 0i64;
    let mut stored = 0;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO changes (doc_id, hash, actor, seq, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for mut change in changes {
            // `bytes()` is the deflated form when that is smaller (changes carry Chinese text); loading accepts both.
            let hash = change.hash();
            let actor = change.actor_id().to_bytes().to_vec();
            let bytes = change.bytes();
            if insert.execute(params![doc_id, hash.0.as_slice(), actor, local_seq + 1, bytes.as_ref()])? == 1 {
                local_seq += 1;
                stored += 1;
                added_bytes += bytes.len() as i64;
                let signature = match signing {
                    Signing::Unsigned => None,
                    Signing::Local(signer) => Some((signer.node_key, (signer.sign)(&hash))),
                    Signing::Relayed(signatures) => signatures
                        .get(&hash.0)
                        .zip(zhaowo_crdt::signing::node_key_of(change.actor_id()))
                        .map(|(signature, signer)| (signer, *signature)),
                };
                if let Some((signer, signature)) = signature {
                    store_signature(tx, doc_id, &hash.0, &signer, &signature)?;
                }
            }
        }
    }
    if stored == 0 {
        return Ok(Stored { changes: 0, local_seq });
    }
    let existing = tx
        .prepare_cached("SELECT length(snapshot), changes_bytes FROM docs WHERE doc_id = ?1")?
        .query_row([doc_id], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))
        .optional()?;
    let (snapshot_bytes, changes_bytes) = match existing {
        Some((snapshot_bytes, changes_bytes)) => (snapshot_bytes, changes_bytes + added_bytes),
        None => {
            tx.prepare_cached(
                "INSERT INTO docs (doc_id, snapshot, snapshot_heads, changes_bytes) VALUES (?1, x'', x'', 0)",
            )?
            .execute([doc_id])?;
            (0, added_bytes)
        }
    };
    let heads = doc.get_heads();
    if changes_bytes > snapshot_bytes.max(compact_min_bytes as i64) {
        // Compaction: the new snapshot replaces the old one and the change rows in this same transaction, so a crash
        // leaves either the old snapshot with its rows or the new snapshot without them.
        let snapshot = doc.save();
        let snapshot_heads: Vec<u8> = heads.iter().flat_map(|head| head.0).collect();
        tx.prepare_cached("UPDATE docs SET snapshot = ?2, snapshot_heads = ?3, changes_bytes = 0 WHERE doc_id = ?1")?
            .execute(params![doc_id, snapshot, snapshot_heads])?;
        tx.prepare_cached("DELETE FROM changes WHERE doc_id = ?1")?.execute([doc_id])?;
    } else {
        tx.prepare_cached("UPDATE docs SET changes_bytes = ?2 WHERE doc_id = ?1")?
            .execute(params![doc_id, changes_bytes])?;
    }
    store_catalog(tx, doc_id, &heads, local_seq)?;
    Ok(Stored { changes: stored, local_seq })
}

/// A document's catalog row and the node-wide counter after storing its changes (inside the caller's transaction).
fn store_catalog(tx: &Connection, doc_id: &str, heads: &[ChangeHash], local_seq: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO catalog (doc_id, heads_hash, local_seq) VALUES (?1, ?2, ?3)
         ON CONFLICT (doc_id) DO UPDATE SET heads_hash = ?2, local_seq = ?3",
    )?
    .execute(params![doc_id, heads_hash(heads).as_slice(), local_seq])?;
    tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'local_seq'")?.execute([local_seq])?;
    Ok(())
}

/// A change's signature, kept so this node can relay the change (a repeat is a no-op).
fn store_signature(
    tx: &Connection,
    doc_id: &str,
    hash: &[u8; 32],
    signer: &[u8; 32],
    signature: &[u8; 64],
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO change_signatures (doc_id, hash, signer, signature) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![doc_id, hash.as_slice(), signer.as_slice(), signature.as_slice()])?;
    Ok(())
}

/// Puts a document in quarantine (inside the caller's transaction, if any): sync will not send it.
fn quarantine(conn: &Connection, doc_id: &str, reason: &str) -> rusqlite::Result<()> {
    tracing::warn!(case_id = doc_id, reason, "document quarantined: it is not sent to peers until repaired");
    conn.prepare_cached(
        "INSERT INTO quarantine (doc_id, reason, at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (doc_id) DO UPDATE SET reason = ?2",
    )?
    .execute(params![doc_id, reason, crate::home::now_ms()])?;
    Ok(())
}

fn is_quarantined(conn: &Connection, doc_id: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM quarantine WHERE doc_id = ?1")?
        .query_row([doc_id], |_| Ok(()))
        .optional()?
        .is_some())
}
/// The signatures stored for a document's changes.
fn stored_signatures(conn: &Connection, doc_id: &str) -> rusqlite::Result<Vec<ChangeSignature>> {
    let mut statement = conn.prepare_cached("SELECT hash, signature FROM change_signatures WHERE doc_id = ?1")?;
    let rows = statement.query_map([doc_id], |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?)))?;
    let mut signatures = Vec::new();
    for row in rows {
        let (hash, signature) = row?;
        if let (Ok(hash), Ok(signature)) = (hash.try_into(), signature.try_into()) {
            signatures.push(ChangeSignature { hash, signature });
        }
    }
    Ok(signatures)
}

/// Loads a stored document: its snapshot plus its change rows. `Ok(None)` when nothing is stored under `doc_id`.
pub(crate) fn load_automerge(
    conn: &Connection,
    actor: &ActorId,
    doc_id: &str,
) -> Result<Option<AutoCommit>, ReadError> {
    let corrupt = |reason: String| ReadError::Corrupt(CorruptCase { case_id: doc_id.to_owned(), reason });
    let row = conn
        .prepare_cached("SELECT snapshot, snapshot_heads FROM docs WHERE doc_id = ?1")?
        .query_row([doc_id], |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?)))
        .optional()?;
    let Some((snapshot, snapshot_heads)) = row else { return Ok(None) };
    let mut doc = if snapshot.is_empty() {
        AutoCommit::new()
    } else {
        catch_unwind(|| AutoCommit::load(&snapshot))
            .map_err(|payload| corrupt(format!("snapshot decoding panicked: {}", panic_text(payload))))?
            .map_err(|error| corrupt(format!("snapshot: {error}")))?
    };
    let mut doc_heads: Vec<u8> = {
        let mut heads = doc.get_heads();
        heads.sort();
        heads.iter().flat_map(|head| head.0).collect()
    };
    let mut expected_heads = snapshot_heads.chunks(32).map(<[u8]>::to_vec).collect::<Vec<_>>();
    expected_heads.sort();
    if doc_heads != expected_heads.concat() {
        return Err(corrupt("snapshot heads differ from the recorded heads".to_owned()));
    }
    doc_heads.clear();
    let mut statement = conn.prepare_cached("SELECT hash, bytes FROM changes WHERE doc_id = ?1 ORDER BY seq")?;
    let mut changes = Vec::new();
    for row in statement.query_map([doc_id], |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?)))? {
        let (hash, bytes) = row?;
        changes.push(parse_change(&bytes, Some(&hash)).map_err(|reason| corrupt(format!("change row: {reason}")))?);
    }
    if snapshot.is_empty() && changes.is_empty() {
        return Err(corrupt("no snapshot and no changes".to_owned()));
    }
    if !changes.is_empty() {
        catch_unwind(AssertUnwindSafe(|| doc.apply_changes(changes)))
            .map_err(|payload| corrupt(format!("applying changes panicked: {}", panic_text(payload))))?
            .map_err(|error| corrupt(format!("applying changes: {error}")))?;
    }
    if !doc.get_missing_deps(&[]).is_empty() {
        return Err(corrupt("a stored change depends on a change that is not stored".to_owned()));
    }
    Ok(Some(doc.with_actor(actor.clone())))
}
