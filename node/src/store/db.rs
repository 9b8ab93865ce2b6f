//! The store's connection owner: documents as a snapshot plus change rows, the catalog, the projections, reads and
//! maintenance. Only the store thread touches a [`Db`]; everything here is synchronous.
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
        conn.execute_batch(&format!(
            "PRAGMA synchronous = FULL; PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA foreign_keys = OFF;"
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
        let mut version_now = version;
        if version < target {
            let migrated = schema::migrate(&tx, version, target).map_err(sqlite)?;
            db.projections = target >= SCHEMA_VERSION_LATEST;
            if migrated.reindex {
                tracing::info!(from = migrated.from, to = migrated.to, "rebuilding projections after migration");
                reindex_in(&tx, &db.actor, &mut Vec::new()).map_err(sqlite)?;
            }
            version_now = target;
        }
        tx.commit().map_err(sqlite)?;
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
    fn case_mut(&mut self, doc_id: &str) -> Result<&mut CaseDoc, ReadError> {
        if self.cache.get_mut(doc_id).is_none() {
            let doc = load_automerge(&self.conn, &self.actor, doc_id)?
                .ok_or_else(|| ReadError::UnknownCase(doc_id.to_owned()))?;
            let case = CaseDoc::from_automerge(doc).map_err(|error| {
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
        let version: i64 = self.conn.query_row("PRAGMA data_version", [], |row| row.get(0))?;
        if version == self.data_version {
            return Ok(());
        }
        self.data_version = version;
        // Our own writes since the last check are in the answer too: dropping them costs a reload, nothing more.
        let mut statement = self.conn.prepare_cached("SELECT doc_id, local_seq FROM catalog WHERE local_seq > ?1")?;
        let rows =
            statement.query_map([self.checked_seq], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
        let mut newest = self.checked_seq;
        for row in rows {
            let (doc_id, seq) = row?;
            newest = newest.max(seq);
            self.cache.remove(&doc_id);
        }
        self.checked_seq = newest;
        Ok(())
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

    /// Registers a new case under the next number of `window` in `year`, picked in the registering transaction.
    pub fn register_new(&mut self, window: &str, year: i32, build: RegisterFn) -> Result<Registered, WriteError> {
        if !self.projections {
            return Err(WriteError::from(ReadError::NoProjections));
        }
        let (window, year) = (window.to_owned(), year);
        let mut allocated = None;
        let ack = self.register_inner(build, |db| {
            let reg_no = registry::next_number(&db.conn, &window, year)?
                .ok_or_else(|| WriteError::NumbersExhausted { window: window.clone(), year })?;
            allocated = Some(reg_no.clone());
            Ok(reg_no)
        })?;
        Ok(Registered { ack, reg_no: allocated.expect("allocated before registering") })
    }

    fn register_with(&mut self, build: RegisterFn, reg_no: Option<RegNo>) -> Result<Acknowledged, WriteError> {
        let reg_no = reg_no.expect("a pre-numbered case");
        self.register_inner(build, move |_| Ok(reg_no))
    }

    fn register_inner(
        &mut self,
        build: RegisterFn,
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
            if db.projections {
                project(&db.conn, &case)?;
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
    fn persist_case(&self, case: &mut CaseDoc, heads_before: &[ChangeHash]) -> rusqlite::Result<Stored> {
        let doc_id = case.case_id().as_str().to_owned();
        let stored = persist(
            &self.conn,
            &doc_id,
            case.automerge_mut(),
            heads_before,
            self.compact_min_bytes,
            signing(&self.signer),
        )?;
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
            let hash = heads_hash(&case.automerge_mut().get_heads());
            Ok(Acknowledged {
                case_id: doc_id.to_owned(),
                local_seq: stored.local_seq,
                heads_hash: hash,
                event_id: Some(event_id),
            })
        });
        if let Ok(ack) = &result {
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
        let result = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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
                let (case, was_cached) = match doc {
                    DocState::Case(case) => (Some(case), true),
                    DocState::Raw(raw) => (CaseDoc::from_automerge(raw).ok(), false),
                };
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
            "SELECT doc_id, heads_hash, local_seq FROM catalog WHERE local_seq > ?1 ORDER BY local_seq LIMIT ?2",
        )?;
        let rows = statement.query_map(params![after_local_seq, limit.min(CATALOG_PAGE_MAX) as i64], |row| {
            let hash: Vec<u8> = row.get(1)?;
            Ok(CatalogEntry {
                case_id: row.get(0)?,
                heads_hash: hash.try_into().unwrap_or([0; 32]),
                local_seq: row.get(2)?,
            })
        })?;
        rows.collect()
    }

    // ---- reads ----

    pub fn case_view(&mut self, doc_id: &str) -> Result<CaseView, ReadError> {
        Ok(self.case_mut(doc_id)?.view())
    }

    fn need_projections(&self) -> Result<(), ReadError> {
        if self.projections { Ok(()) } else { Err(ReadError::NoProjections) }
    }

    pub fn register_page(&self, query: &RegisterQuery) -> Result<RegisterPage, ReadError> {
        self.need_projections()?;
        let limit = query.limit.clamp(1, PAGE_ROWS_MAX);
        let mut clauses = Vec::new();
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        let mut push = |clause: &str, value: rusqlite::types::Value| {
            values.push(value);
            clauses.push(clause.replace('?', &format!("?{}", values.len())));
        };
        use rusqlite::types::Value;
        if let Some(status) = query.status {
            push("status = ?", Value::Text(status.code().to_owned()));
        }
        if let Some(category) = &query.category {
            push("category = ?", Value::Text(category.clone()));
        }
        if let Some(nature) = query.nature {
            push("nature = ?", Value::Text(nature.code().to_owned()));
        }
        if let Some(unit) = &query.lead_unit {
            push("lead_unit = ?", Value::Text(unit.clone()));
        }
        if let Some(window) = &query.window {
            push("window = ?", Value::Text(window.clone()));
        }
        if let Some(from) = query.registered_from_ms {
            push("registered_at_ms >= ?", Value::Integer(from));
        }
        if let Some(to) = query.registered_to_ms {
            push("registered_at_ms < ?", Value::Integer(to));
        }
        if let Some(now) = query.overdue_at_ms {
            push("clock_runs = 1 AND due_ms < ?", Value::Integer(now));
        }
        if let Some(cursor) = &query.after {
            values.push(Value::Integer(cursor.registered_at_ms));
            values.push(Value::Text(cursor.case_id.clone()));
            clauses.push(format!("(registered_at_ms, doc_id) < (?{}, ?{})", values.len() - 1, values.len()));
        }
        values.push(Value::Integer(limit as i64 + 1));
        let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
        let sql = format!(
            "SELECT {CASE_COLUMNS} FROM cases {filter} ORDER BY registered_at_ms DESC, doc_id DESC LIMIT ?{}",
            values.len()
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        let mut rows: Vec<CaseRow> = statement
            .query_map(rusqlite::params_from_iter(values), CaseRow::from_sql)?
            .collect::<rusqlite::Result<_>>()?;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|row| PageCursor { registered_at_ms: row.registered_at_ms, case_id: row.case_id.clone() })
        } else {
            None
        };
        Ok(RegisterPage { rows, next })
    }

    pub fn search(&self, text: &str, limit: usize) -> Result<Vec<CaseRow>, ReadError> {
        self.need_projections()?;
        let terms: Vec<&str> = text.split_whitespace().collect();
        if terms.is_empty() {
            return Err(ReadError::BadQuery("empty search".to_owned()));
        }
        if terms.len() > SEARCH_TERMS_MAX || text.chars().count() > SEARCH_QUERY_CHARS_MAX {
            return Err(ReadError::BadQuery(format!(
                "a search takes at most {SEARCH_TERMS_MAX} terms and {SEARCH_QUERY_CHARS_MAX} characters"
            )));
        }
        use rusqlite::types::Value;
        use std::collections::HashSet;
        let limit = limit.clamp(1, PAGE_ROWS_MAX);
        let quote = |term: &str| format!("\"{}\"", term.replace('"', "\"\""));
        // Trigrams index terms of three or more characters, bigrams two-character terms of letters or digits; each
        // index is asked on its own and the row sets intersected here (SQLite drove one MATCH per row of the other
        // when both were in one statement: 15 s at 200k cases).
        let long: Vec<String> = terms.iter().filter(|term| term.chars().count() >= 3).map(|term| quote(term)).collect();
        let is_bigram_term = |term: &str| {
            let chars: Vec<char> = term.chars().collect();
            chars.len() == 2 && projection::is_bigram(chars[0], chars[1])
        };
        let bigrams: Vec<String> = terms.iter().filter(|term| is_bigram_term(term)).map(|term| quote(term)).collect();
        let mut scanned: Vec<&str> =
            terms.iter().copied().filter(|term| term.chars().count() < 3 && !is_bigram_term(term)).collect();
        let mut matches: Option<HashSet<i64>> = None;
        for (table, expression) in [("cases_fts", long.join(" AND ")), ("cases_bigrams", bigrams.join(" AND "))] {
            if expression.is_empty() {
                continue;
            }
            if table == "cases_bigrams"
                && matches.as_ref().is_some_and(|rows| rows.len() <= self.search_sort_matches_max)
            {
                // The longer terms left few rows: check the two-character terms against their text rather than list
                // every row holding a common word (编号 in every case: 460 ms at 1M cases).
                scanned.extend(terms.iter().copied().filter(|term| is_bigram_term(term)));
                continue;
            }
            let mut statement =
                self.conn.prepare_cached(&format!("SELECT rowid FROM {table} WHERE {table} MATCH ?1"))?;
            let rows: HashSet<i64> =
                statement.query_map([&expression], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?;
            matches = Some(match matches {
                None => rows,
                Some(previous) => previous.intersection(&rows).copied().collect(),
            });
        }
        let Some(mut matches) = matches else {
            // Only one-character (or punctuated two-character) terms: LIKE over the text, newest first.
            let mut values: Vec<Value> = Vec::new();
            let mut clauses = Vec::new();
            for term in &scanned {
                let escaped = term.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                values.push(Value::Text(format!("%{escaped}%")));
                let n = values.len();
                clauses.push(format!(
                    "(f.summary LIKE ?{n} ESCAPE '\\' OR f.detail LIKE ?{n} ESCAPE '\\' OR f.notes LIKE ?{n} ESCAPE '\\')"
                ));
            }
            values.push(Value::Integer(limit as i64));
            let columns = CASE_COLUMNS.split(", ").map(|column| format!("c.{column}")).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "SELECT {columns} FROM cases_fts f JOIN cases c ON c.id = f.rowid WHERE {} \
                 ORDER BY c.registered_at_ms DESC, c.doc_id DESC LIMIT ?{}",
                clauses.join(" AND "),
                values.len()
            );
            let mut statement = self.conn.prepare_cached(&sql)?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(values), CaseRow::from_sql)?
                .collect::<rusqlite::Result<_>>()?;
            return Ok(rows);
        };
        if !scanned.is_empty() {
            let query = scanned.join(" ");
            let mut kept = HashSet::new();
            for id in matches {
                if projection::read_text(&self.conn, id)?.is_some_and(|text| text.matches(&query)) {
                    kept.insert(id);
                }
            }
            matches = kept;
        }
        let mut by_id = self.conn.prepare_cached(&format!("SELECT {CASE_COLUMNS} FROM cases WHERE id = ?1"))?;
        if matches.len() > self.search_sort_matches_max {
            // Many matches: walk the register index newest first and stop at `limit` (~limit × cases / matches
            // entries) instead of a random row lookup per match.
            let mut newest =
                self.conn.prepare_cached("SELECT id FROM cases ORDER BY registered_at_ms DESC, doc_id DESC")?;
            let mut ids = Vec::with_capacity(limit);
            let mut rows = newest.query([])?;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                if matches.contains(&id) {
                    ids.push(id);
                    if ids.len() == limit {
                        break;
                    }
                }
            }
            drop(rows);
            return ids
                .into_iter()
                .map(|id| by_id.query_row([id], CaseRow::from_sql).map_err(ReadError::from))
                .collect();
        }
        let mut rows: Vec<CaseRow> =
            matches.into_iter().map(|id| by_id.query_row([id], CaseRow::from_sql)).collect::<rusqlite::Result<_>>()?;
        rows.sort_by(|a, b| (b.registered_at_ms, &b.case_id).cmp(&(a.registered_at_ms, &a.case_id)));
        rows.truncate(limit);
        Ok(rows)
    }

    pub fn overdue(&self, now_ms: i64, limit: usize) -> Result<Vec<CaseRow>, ReadError> {
        self.need_projections()?;
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {CASE_COLUMNS} FROM cases WHERE clock_runs = 1 AND due_ms < ?1 ORDER BY due_ms, doc_id LIMIT ?2"
        ))?;
        let rows = statement
            .query_map(params![now_ms, limit.clamp(1, PAGE_ROWS_MAX) as i64], CaseRow::from_sql)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    pub fn statistics(
        &self,
        from: zhaowo_crdt::time::Date,
        to: zhaowo_crdt::time::Date,
    ) -> Result<Statistics, ReadError> {
        self.need_projections()?;
        let counts = self
            .conn
            .prepare_cached(
                "SELECT coalesce(sum(registered), 0), coalesce(sum(closed), 0), coalesce(sum(closed_on_time), 0),
                    coalesce(sum(responded), 0), coalesce(sum(responded_on_time), 0), coalesce(sum(rated), 0),
                    coalesce(sum(rating_sum), 0), coalesce(sum(satisfied), 0)
             FROM stats_daily WHERE day BETWEEN ?1 AND ?2",
            )?
            .query_row(params![from.to_days(), to.to_days()], |row| {
                Ok(StatsCounts {
                    registered: row.get(0)?,
                    closed: row.get(1)?,
                    closed_on_time: row.get(2)?,
                    responded: row.get(3)?,
                    responded_on_time: row.get(4)?,
                    rated: row.get(5)?,
                    rating_sum: row.get(6)?,
                    satisfied: row.get(7)?,
                })
            })?;
        Ok(Statistics::from_counts(counts))
    }

    pub fn counts(&self) -> rusqlite::Result<StoreCounts> {
        Ok(StoreCounts {
            docs: self.conn.query_row("SELECT count(*) FROM catalog", [], |row| row.get(0))?,
            change_rows: self.conn.query_row("SELECT count(*) FROM changes", [], |row| row.get(0))?,
            snapshots: self
                .conn
                .query_row("SELECT count(*) FROM docs WHERE length(snapshot) > 0", [], |row| row.get(0))?,
            local_seq: stored_local_seq(&self.conn)?,
            cached_docs: self.cache.len() as i64,
        })
    }

    // ---- register of numbers, counts, conflicts, quarantine ----

    pub fn case_id_by_reg_no(&self, reg_no: &str) -> Result<Option<String>, ReadError> {
        self.need_projections()?;
        Ok(registry::case_id_by_reg_no(&self.conn, reg_no)?)
    }

    pub fn status_counts(&self) -> Result<BTreeMap<String, u64>, ReadError> {
        self.need_projections()?;
        let mut counts: BTreeMap<String, u64> =
            zhaowo_crdt::model::Status::ALL.iter().map(|status| (status.code().to_owned(), 0)).collect();
        // One pass over the `cases_by_status` index.
        let mut statement = self.conn.prepare_cached("SELECT status, count(*) FROM cases GROUP BY status")?;
        for row in statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))? {
            let (status, count) = row?;
            counts.insert(status, count.max(0) as u64);
        }
        Ok(counts)
    }

    pub fn overdue_count(&self, now_ms: i64) -> Result<u64, ReadError> {
        self.need_projections()?;
        let count: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM cases WHERE clock_runs = 1 AND due_ms < ?1")?
            .query_row([now_ms], |row| row.get(0))?;
        Ok(count.max(0) as u64)
    }

    pub fn conflicts(&self, limit: usize) -> Result<ConflictList, ReadError> {
        self.need_projections()?;
        let (cases, conflicts): (i64, i64) = self
            .conn
            .prepare_cached("SELECT count(*), coalesce(sum(conflicts), 0) FROM open_conflicts")?
            .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        let columns = CASE_COLUMNS.split(", ").map(|column| format!("c.{column}")).collect::<Vec<_>>().join(", ");
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {columns}, o.conflicts AS open FROM open_conflicts o JOIN cases c ON c.doc_id = o.doc_id
             ORDER BY c.registered_at_ms DESC, c.doc_id DESC LIMIT ?1"
        ))?;
        let rows = statement
            .query_map([limit.clamp(1, CONFLICTS_LISTED_MAX) as i64], |row| {
                Ok((CaseRow::from_sql(row)?, row.get::<_, i64>("open")?.max(0) as u64))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ConflictList { cases: cases.max(0) as u64, conflicts: conflicts.max(0) as u64, rows })
    }

    pub fn repeated_numbers(&self) -> Result<Vec<RepeatedNumber>, ReadError> {
        self.need_projections()?;
        Ok(registry::repeated(&self.conn)?)
    }

    pub fn quarantined(&self) -> Result<QuarantineList, ReadError> {
        self.need_projections()?;
        let count: i64 =
            self.conn.prepare_cached("SELECT count(*) FROM quarantine")?.query_row([], |row| row.get(0))?;
        let mut statement =
            self.conn.prepare_cached("SELECT doc_id, reason, at_ms FROM quarantine ORDER BY doc_id LIMIT ?1")?;
        let docs = statement
            .query_map([QUARANTINE_LISTED_MAX as i64], |row| {
                Ok(Quarantined { case_id: row.get(0)?, reason: row.get(1)?, at_ms: row.get(2)? })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(QuarantineList { count: count.max(0) as u64, docs })
    }

    // ---- maintenance ----

    pub fn integrity_check(&self) -> rusqlite::Result<Vec<String>> {
        let mut statement = self.conn.prepare("PRAGMA integrity_check")?;
        statement.query_map([], |row| row.get(0))?.collect()
    }

    pub fn reindex(&mut self) -> Result<ReindexReport, MaintenanceError> {
        if !self.projections {
            return Err(MaintenanceError::NoProjections);
        }
        let mut problems = Vec::new();
        self.cache.clear();
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let cases = reindex_in(&tx, &self.actor, &mut problems)?;
        tx.commit()?;
        Ok(ReindexReport { cases, problems })
    }

    pub fn verify(&mut self, roster: Option<&Roster>) -> Result<VerifyReport, MaintenanceError> {
        let mut report = VerifyReport::default();
        let mut after = String::new();
        loop {
            let ids = doc_ids_after(&self.conn, &after, WALK_CHUNK_DOCS)?;
            let Some(last) = ids.last() else { break };
            after = last.clone();
            for doc_id in ids {
                report.docs += 1;
                let before = report.problems.len();
                self.verify_doc(&doc_id, roster, &mut report)?;
                if self.projections {
                    // A document whose rows are damaged is not sent to peers until repaired; a healthy one leaves.
                    let damage = report.problems[before..].iter().find_map(|problem| match &problem.kind {
                        ProblemKind::Unreadable(reason) => Some(format!("unreadable: {reason}")),
                        ProblemKind::BadSignature(reason) => Some(format!("bad signature: {reason}")),
                        _ => None,
                    });
                    match damage {
                        Some(reason) => quarantine(&self.conn, &doc_id, &reason)?,
                        None => {
                            self.conn.prepare_cached("DELETE FROM quarantine WHERE doc_id = ?1")?.execute([&doc_id])?;
                        }
                    }
                }
            }
        }
        if self.projections {
            for repeated in registry::repeated(&self.conn)? {
                report.problems.push(Problem {
                    case_id: repeated.case_ids.first().cloned().unwrap_or_default(),
                    kind: ProblemKind::RepeatedNumber { reg_no: repeated.reg_no, case_ids: repeated.case_ids },
                });
            }
        }
        // Rows that belong to no catalogued document.
        let orphans = [
            "SELECT DISTINCT doc_id FROM docs WHERE doc_id NOT IN (SELECT doc_id FROM catalog)",
            "SELECT DISTINCT doc_id FROM changes WHERE doc_id NOT IN (SELECT doc_id FROM catalog)",
        ];
        for sql in orphans {
            let mut statement = self.conn.prepare(sql)?;
            for doc_id in statement.query_map([], |row| row.get::<_, String>(0))? {
                report.problems.push(Problem { case_id: doc_id?, kind: ProblemKind::Orphan });
            }
        }
        if self.projections {
            let mut statement =
                self.conn.prepare("SELECT doc_id FROM cases WHERE doc_id NOT IN (SELECT doc_id FROM catalog)")?;
            for doc_id in statement.query_map([], |row| row.get::<_, String>(0))? {
                report.problems.push(Problem { case_id: doc_id?, kind: ProblemKind::Orphan });
            }
            // The statistics must equal the sum of the cases' contributions.
            let mut statement = self.conn.prepare(
                "SELECT coalesce(a.day, b.day), coalesce(a.category, b.category) FROM
                 (SELECT day, category, registered, closed, closed_on_time, responded, responded_on_time, rated, rating_sum, satisfied
                    FROM stats_daily WHERE registered != 0 OR closed != 0 OR responded != 0 OR rated != 0) a
                 FULL OUTER JOIN
                 (SELECT (registered_at_ms + 28800000) / 86400000 AS day, category, count(*) AS registered,
                         count(closed_at_ms) AS closed, sum(closed_at_ms IS NOT NULL AND closed_at_ms <= due_ms) AS closed_on_time,
                         count(first_response_ms) AS responded,
                         sum(first_response_ms IS NOT NULL AND first_response_ms <= first_response_due_ms) AS responded_on_time,
                         count(rating) AS rated, coalesce(sum(rating), 0) AS rating_sum, sum(coalesce(rating, 0) >= 4) AS satisfied
                    FROM cases GROUP BY 1, 2) b
                 ON a.day = b.day AND a.category = b.category
                 WHERE a.day IS NULL OR b.day IS NULL OR a.registered != b.registered OR a.closed != b.closed
                    OR a.closed_on_time != b.closed_on_time OR a.responded != b.responded
                    OR a.responded_on_time != b.responded_on_time OR a.rated != b.rated OR a.rating_sum != b.rating_sum
                    OR a.satisfied != b.satisfied",
            )?;
            for row in statement.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))? {
                let (day, category) = row?;
                report
                    .problems
                    .push(Problem { case_id: String::new(), kind: ProblemKind::Statistics { day, category } });
            }
        }
        Ok(report)
    }

    fn verify_doc(&mut self, doc_id: &str, roster: Option<&Roster>, report: &mut VerifyReport) -> rusqlite::Result<()> {
        let signatures: BTreeMap<[u8; 32], [u8; 64]> =
            stored_signatures(&self.conn, doc_id)?.into_iter().map(|s| (s.hash, s.signature)).collect();
        let VerifyReport { problems, signatures_checked, unsigned_changes, .. } = report;
        let mut problem = |kind| problems.push(Problem { case_id: doc_id.to_owned(), kind });
        let mut doc = match load_automerge(&self.conn, &self.actor, doc_id) {
            Ok(Some(doc)) => doc,
            Ok(None) => {
                problem(ProblemKind::Unreadable("catalogued but no stored changes".to_owned()));
                return Ok(());
            }
            Err(ReadError::Sqlite(error)) => return Err(error),
            Err(error) => {
                problem(ProblemKind::Unreadable(error.to_string()));
                return Ok(());
            }
        };
        let catalog: Vec<u8> = self
            .conn
            .prepare_cached("SELECT heads_hash FROM catalog WHERE doc_id = ?1")?
            .query_row([doc_id], |row| row.get(0))?;
        if catalog != heads_hash(&doc.get_heads()) {
            problem(ProblemKind::HeadsMismatch);
        }
        if let Some(roster) = roster {
            // Every change against the roster, by the rules a peer applies (`verify_signed`); a change without a
            // signature stays local (imported from a plain file, or a store without a node key) and is counted.
            let mut keys = zhaowo_crdt::signing::AuthorKeys::default();
            for meta in doc.get_changes_meta(&[]) {
                let signature_of = |hash: &ChangeHash| signatures.get(&hash.0).copied();
                let checked = zhaowo_crdt::signing::verify_signed(
                    &mut keys,
                    roster,
                    &meta.actor,
                    meta.hash,
                    meta.timestamp,
                    signature_of,
                );
                match checked {
                    Ok(_) => *signatures_checked += 1,
                    Err(zhaowo_crdt::signing::ChangeRejected::Unsigned(_)) => *unsigned_changes += 1,
                    // Valid before the revocation, or refused alike on every node: not damage.
                    Err(zhaowo_crdt::signing::ChangeRejected::Revoked(..)) => *signatures_checked += 1,
                    Err(rejected) => problem(ProblemKind::BadSignature(rejected.to_string())),
                }
            }
        }
        if !self.projections {
            return Ok(());
        }
        let stored = self
            .conn
            .prepare_cached(&format!("SELECT id, {CASE_COLUMNS} FROM cases WHERE doc_id = ?1"))?
            .query_row([doc_id], |row| Ok((row.get::<_, i64>("id")?, CaseRow::from_sql(row)?)))
            .optional()?;
        match CaseDoc::from_automerge(doc) {
            Ok(case) => {
                let view = case.view();
                match stored {
                    None => problem(ProblemKind::MissingProjection),
                    Some((id, row)) => {
                        if row != CaseRow::of(&view) {
                            problem(ProblemKind::StaleProjection);
                        }
                        if projection::read_text(&self.conn, id)? != Some(SearchText::of(&view)) {
                            problem(ProblemKind::StaleSearchText);
                        }
                        if projection::read_conflicts(&self.conn, doc_id)? != view.conflicts.len() {
                            problem(ProblemKind::StaleConflicts);
                        }
                        if registry::case_id_by_reg_no(&self.conn, &view.reg_no.to_string())?.is_none() {
                            problem(ProblemKind::MissingNumber);
                        }
                    }
                }
            }
            Err(error) => {
                problem(ProblemKind::NotACase(error.to_string()));
                if stored.is_some() {
                    problem(ProblemKind::StaleProjection);
                }
            }
        }
        Ok(())
    }

    pub fn backup(&self, to: &std::path::Path) -> Result<(), MaintenanceError> {
        if to.exists() {
            return Err(MaintenanceError::BackupExists(to.to_path_buf()));
        }
        let target = to.to_str().ok_or_else(|| MaintenanceError::BadPath(to.to_path_buf()))?;
        self.conn.execute("VACUUM INTO ?1", [target])?;
        Ok(())
    }

    /// Test hook: runs raw SQL on the store (to damage rows in corruption tests).
    pub fn execute_raw(&mut self, sql: &str) -> rusqlite::Result<()> {
        self.cache.clear();
        self.conn.execute_batch(sql)
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

fn doc_ids_after(conn: &Connection, after: &str, limit: usize) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare_cached("SELECT doc_id FROM catalog WHERE doc_id > ?1 ORDER BY doc_id LIMIT ?2")?;
    statement.query_map(params![after, limit as i64], |row| row.get(0))?.collect()
}

/// Rebuilds every projection from the documents inside `tx`; unreadable documents are reported and skipped.
fn reindex_in(tx: &Transaction<'_>, actor: &ActorId, problems: &mut Vec<Problem>) -> rusqlite::Result<u64> {
    tx.execute_batch(
        "DELETE FROM cases; DELETE FROM cases_fts; DELETE FROM cases_bigrams; DELETE FROM stats_daily; \
         DELETE FROM open_conflicts;",
    )?;
    let mut after = String::new();
    let mut cases = 0;
    loop {
        let ids = doc_ids_after(tx, &after, WALK_CHUNK_DOCS)?;
        let Some(last) = ids.last() else { break };
        after = last.clone();
        for doc_id in ids {
            match load_automerge(tx, actor, &doc_id) {
                Ok(Some(doc)) => match CaseDoc::from_automerge(doc) {
                    Ok(case) => {
                        project(tx, &case)?;
                        cases += 1;
                    }
                    Err(error) => {
                        problems.push(Problem { case_id: doc_id, kind: ProblemKind::NotACase(error.to_string()) })
                    }
                },
                Ok(None) => problems
                    .push(Problem { case_id: doc_id, kind: ProblemKind::Unreadable("no stored changes".into()) }),
                Err(ReadError::Sqlite(error)) => return Err(error),
                Err(error) => {
                    problems.push(Problem { case_id: doc_id, kind: ProblemKind::Unreadable(error.to_string()) })
                }
            }
        }
    }
    Ok(cases)
}

fn project(tx: &Connection, case: &CaseDoc) -> rusqlite::Result<()> {
    let view = case.view();
    projection::upsert(tx, &CaseRow::of(&view), &SearchText::of(&view), view.conflicts.len())
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

/// Automerge chunks start with these magic bytes, then a 4-byte checksum (the first bytes of the SHA-256 of the
/// chunk type, length and contents), the type byte and the length as unsigned LEB128.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Checks the checksum of every chunk in `bytes` (a snapshot) without loading it: what a receiving Automerge checks
/// first, at the cost of one SHA-256 over the bytes instead of a load.
pub(crate) fn chunks_intact(mut bytes: &[u8]) -> Result<(), String> {
    use sha2::Digest;
    while !bytes.is_empty() {
        if bytes.len() < 9 || bytes[..4] != CHUNK_MAGIC {
            return Err("not an Automerge chunk".to_owned());
        }
        let checksum = &bytes[4..8];
        let mut length: u64 = 0;
        let mut at = 9;
        let mut shift = 0;
        loop {
            let Some(&byte) = bytes.get(at) else { return Err("truncated chunk length".to_owned()) };
            if shift > 56 {
                return Err("chunk length too long".to_owned());
            }
            length |= u64::from(byte & 0x7f) << shift;
            at += 1;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let end =
            usize::try_from(length).ok().and_then(|length| at.checked_add(length)).filter(|&end| end <= bytes.len());
        let Some(end) = end else { return Err("truncated chunk".to_owned()) };
        let digest = sha2::Sha256::digest(&bytes[8..end]);
        if digest[..4] != *checksum {
            return Err("chunk checksum mismatch".to_owned());
        }
        bytes = &bytes[end..];
    }
    Ok(())
}

/// Whether this node can vouch for a stored document it is about to send whole: every change row parses and
/// matches its stored hash, the snapshot's checksums hold, and every stored signature verifies under its signer's
/// key. A damaged row would make the peer refuse the document (and drop us) on every retry.
fn check_outgoing(whole: &WholeDoc, conn: &Connection, doc_id: &str) -> Result<(), String> {
    chunks_intact(&whole.snapshot).map_err(|reason| format!("snapshot: {reason}"))?;
    let mut statement = conn
        .prepare_cached("SELECT hash, bytes FROM changes WHERE doc_id = ?1 ORDER BY seq")
        .map_err(|error| error.to_string())?;
    let rows = statement
        .query_map([doc_id], |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?)))
        .map_err(|error| error.to_string())?;
    for row in rows {
        let (hash, bytes) = row.map_err(|error| error.to_string())?;
        parse_change(&bytes, Some(&hash)).map_err(|reason| format!("change row: {reason}"))?;
    }
    let mut signers = conn
        .prepare_cached("SELECT hash, signer, signature FROM change_signatures WHERE doc_id = ?1")
        .map_err(|error| error.to_string())?;
    let rows = signers
        .query_map([doc_id], |row| {
            Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?, row.get::<_, Vec<u8>>(2)?))
        })
        .map_err(|error| error.to_string())?;
    for row in rows {
        let (hash, signer, signature) = row.map_err(|error| error.to_string())?;
        let holds = match (<[u8; 32]>::try_from(hash), <[u8; 32]>::try_from(signer), <[u8; 64]>::try_from(signature)) {
            (Ok(hash), Ok(signer), Ok(signature)) => {
                zhaowo_crdt::signing::signature_holds(&signer, &ChangeHash(hash), &signature)
            }
            _ => false,
        };
        if !holds {
            return Err("a stored change signature does not verify".to_owned());
        }
    }
    Ok(())
}

/// A stored document as sync sends it whole: the snapshot and change rows as stored, and every signature stored for
/// its changes. `Ok(None)` when nothing is stored under `doc_id`.
fn stored_whole_doc(conn: &Connection, doc_id: &str) -> rusqlite::Result<Option<WholeDoc>> {
    let snapshot: Option<Vec<u8>> = conn
        .prepare_cached("SELECT snapshot FROM docs WHERE doc_id = ?1")?
        .query_row([doc_id], |row| row.get(0))
        .optional()?;
    let Some(snapshot) = snapshot else { return Ok(None) };
    let changes = conn
        .prepare_cached("SELECT bytes FROM changes WHERE doc_id = ?1 ORDER BY seq")?
        .query_map([doc_id], |row| row.get::<_, Vec<u8>>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let signatures = stored_signatures(conn, doc_id)?;
    Ok(Some(WholeDoc { doc_id: doc_id.to_owned(), snapshot, changes, signatures }))
}

/// Stores a document received whole (see `zhaowo_crdt::sync::ReceivedDoc`) as it came: its snapshot and change rows
/// byte for byte (no re-encoding), its signatures, its catalog row. The caller checked that nothing is stored under
/// `doc_id`. Runs inside the caller's transaction.
fn persist_whole(tx: &Connection, doc_id: &str, received: &ReceivedDoc) -> rusqlite::Result<()> {
    let mut local_seq = stored_local_seq(tx)?;
    let mut changes_bytes = 0i64;
    {
        let mut insert =
            tx.prepare_cached("INSERT INTO changes (doc_id, hash, actor, seq, bytes) VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for change in &received.changes {
            local_seq += 1;
            insert.execute(params![
                doc_id,
                change.hash.0.as_slice(),
                change.actor.to_bytes(),
                local_seq,
                change.bytes.as_slice()
            ])?;
            changes_bytes += change.bytes.len() as i64;
        }
    }
    if received.changes.is_empty() {
        local_seq += 1;
    }
    let snapshot_heads: Vec<u8> = received.snapshot_heads.iter().flat_map(|head| head.0).collect();
    tx.prepare_cached("INSERT INTO docs (doc_id, snapshot, snapshot_heads, changes_bytes) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![doc_id, received.snapshot.as_slice(), snapshot_heads, changes_bytes])?;
    for (signature, signer) in &received.signatures {
        store_signature(tx, doc_id, &signature.hash, signer, &signature.signature)?;
    }
    store_catalog(tx, doc_id, &received.heads, local_seq)
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

// ---- sync ----

/// A document a sync step holds outside the LRU: one the node does not have yet (an empty document, or one just
/// received), or one that loads but is not a case. Dropped at the end of the step: a document assembled from
/// received changes holds far more memory than the same case loaded from its snapshot (see `apply_remote`).
struct StepDocs {
    docs: HashMap<String, AutoCommit>,
}

/// The store's side of a sync session, for the duration of one step on the store thread, inside one transaction.
struct DbReplica<'a> {
    db: &'a mut Db,
    step_docs: StepDocs,
    roster: Roster,
    new_records: Vec<SignedRecord>,
    /// Documents changed in this step's transaction (evicted from the LRU if the commit fails).
    touched: Vec<String>,
    /// The first storage error: the step rolls back and the peer is dropped (the peer did nothing wrong).
    storage_error: Option<String>,
    /// The node's hall document, locked for the step (the driver writes its files once the step is over).
    hall: Option<&'a mut SignedHall>,
    hall_changed: bool,
}

impl DbReplica<'_> {
    /// The document to sync: the cached case, the stored one (loaded into the LRU when it is a case), or an empty one.
    fn doc(&mut self, doc_id: &str) -> Result<&mut AutoCommit, String> {
        if self.step_docs.docs.contains_key(doc_id) {
            return Ok(self.step_docs.docs.get_mut(doc_id).expect("checked"));
        }
        if self.db.cache.get_mut(doc_id).is_none() {
            match load_automerge(&self.db.conn, &self.db.actor, doc_id) {
                Ok(None) => {
                    self.step_docs.docs.insert(doc_id.to_owned(), AutoCommit::new().with_actor(self.db.actor.clone()));
                    return Ok(self.step_docs.docs.get_mut(doc_id).expect("inserted"));
                }
                Ok(Some(doc)) => match CaseDoc::from_automerge_or_back(doc) {
                    Ok(case) => self.db.cache.insert(doc_id.to_owned(), case),
                    Err((_, doc)) => {
                        self.step_docs.docs.insert(doc_id.to_owned(), doc);
                        return Ok(self.step_docs.docs.get_mut(doc_id).expect("inserted"));
                    }
                },
                Err(error) => return Err(error.to_string()),
            }
        }
        Ok(self.db.cache.get_mut(doc_id).expect("cached above").automerge_mut())
    }

    fn fail(&mut self, error: impl std::fmt::Display) -> String {
        let text = format!("storage: {error}");
        self.storage_error.get_or_insert_with(|| text.clone());
        text
    }
}

impl Replica for DbReplica<'_> {
    fn catalog_after(&mut self, after: u64, limit: usize) -> Vec<WireCatalogEntry> {
        match self.db.catalog_since(i64::try_from(after).unwrap_or(i64::MAX), limit) {
            Ok(entries) => entries
                .into_iter()
                .map(|entry| WireCatalogEntry {
                    doc_id: entry.case_id,
                    heads_hash: entry.heads_hash,
                    seq: entry.local_seq as u64,
                })
                .collect(),
            Err(error) => {
                self.fail(error);
                Vec::new()
            }
        }
    }

    fn heads_hash(&mut self, doc_id: &str) -> Option<[u8; 32]> {
        let found = self
            .db
            .conn
            .prepare_cached("SELECT heads_hash FROM catalog WHERE doc_id = ?1")
            .and_then(|mut statement| statement.query_row([doc_id], |row| row.get::<_, Vec<u8>>(0)).optional());
        match found {
            Ok(hash) => hash.and_then(|hash| hash.try_into().ok()),
            Err(error) => {
                self.fail(error);
                None
            }
        }
    }

    fn has_all(&mut self, doc_id: &str, heads: &[ChangeHash]) -> bool {
        match self.doc(doc_id) {
            Ok(doc) => heads.iter().all(|head| doc.get_change_by_hash(head).is_some()),
            Err(_) => false,
        }
    }

    fn generate(&mut self, doc_id: &str, state: &mut SyncState) -> Option<SyncMessage> {
        use automerge::sync::SyncDoc;
        match self.doc(doc_id) {
            Ok(doc) => doc.sync().generate_sync_message(state),
            Err(_) => None,
        }
    }

    fn receive(
        &mut self,
        doc_id: &str,
        state: &mut SyncState,
        message: SyncMessage,
        signatures: &[ChangeSignature],
    ) -> Result<(), String> {
        use automerge::sync::SyncDoc;
        if zhaowo_crdt::CaseId::parse(doc_id).is_none() {
            return Err(format!("`{doc_id}` is not a case id"));
        }
        let compact_min_bytes = self.db.compact_min_bytes;
        let projections = self.db.projections;
        let doc = self.doc(doc_id)?;
        let heads_before = doc.get_heads();
        doc.sync().receive_sync_message(state, message).map_err(|error| error.to_string())?;
        if doc.get_heads() == heads_before {
            return Ok(());
        }
        let signatures: BTreeMap<[u8; 32], [u8; 64]> = signatures.iter().map(|s| (s.hash, s.signature)).collect();
        self.touched.push(doc_id.to_owned());
        // Re-borrow: `doc` borrowed `self` mutably.
        let (conn, doc) = match self.step_docs.docs.get_mut(doc_id) {
            Some(doc) => (&self.db.conn, doc),
            None => (&self.db.conn, self.db.cache.get_mut(doc_id).expect("doc() cached it").automerge_mut()),
        };
        let stored = persist(conn, doc_id, doc, &heads_before, compact_min_bytes, Signing::Relayed(&signatures));
        let stored = match stored {
            Ok(stored) => stored,
            Err(error) => return Err(self.fail(error)),
        };
        if projections && stored.changes > 0 {
            let projected = match self.step_docs.docs.remove(doc_id) {
                // Lent to a `CaseDoc` for the projection and put back (no copy).
                Some(doc) => match CaseDoc::from_automerge_or_back(doc) {
                    Ok(case) => {
                        let projected = project(&self.db.conn, &case);
                        self.step_docs.docs.insert(doc_id.to_owned(), case.into_automerge());
                        projected
                    }
                    Err((_, doc)) => {
                        self.step_docs.docs.insert(doc_id.to_owned(), doc);
                        projection::remove(&self.db.conn, doc_id)
                    }
                },
                None => project(&self.db.conn, self.db.cache.get_mut(doc_id).expect("cached")),
            };
            if let Err(error) = projected {
                return Err(self.fail(error));
            }
        }
        Ok(())
    }

    fn reload(&mut self, doc_id: &str) {
        self.db.cache.remove(doc_id);
        self.step_docs.docs.remove(doc_id);
    }

    fn takes_whole_docs(&self) -> bool {
        true
    }

    fn whole_doc(&mut self, doc_id: &str) -> Option<WholeDoc> {
        let conn = &self.db.conn;
        match is_quarantined(conn, doc_id).and_then(
            |quarantined| {
                if quarantined { Ok(None) } else { stored_whole_doc(conn, doc_id) }
            },
        ) {
            // Never send what this node cannot itself vouch for: quarantine it and go on with the others (the peer
            // then tries it change by change, which refuses it on this side, see `signature`).
            Ok(Some(whole)) => match check_outgoing(&whole, conn, doc_id) {
                Ok(()) => Some(whole),
                Err(reason) => {
                    if let Err(error) = quarantine(conn, doc_id, &reason) {
                        self.fail(error);
                    }
                    None
                }
            },
            Ok(None) => None,
            Err(error) => {
                self.fail(error);
                None
            }
        }
    }

    fn receive_whole(&mut self, doc_id: &str, received: ReceivedDoc) -> Result<(), String> {
        if zhaowo_crdt::CaseId::parse(doc_id).is_none() {
            return Err(format!("`{doc_id}` is not a case id"));
        }
        // An empty stand-in an earlier frame of this step made for the document must not outlive it.
        self.step_docs.docs.remove(doc_id);
        self.db.cache.remove(doc_id);
        if let Err(error) = persist_whole(&self.db.conn, doc_id, &received) {
            return Err(self.fail(error));
        }
        self.touched.push(doc_id.to_owned());
        if self.db.projections {
            // The session folded the view beside the signature checks, off this thread.
            let projected = match &received.view {
                Some(view) => {
                    projection::upsert(&self.db.conn, &CaseRow::of(view), &SearchText::of(view), view.conflicts.len())
                }
                None => projection::remove(&self.db.conn, doc_id),
            };
            if let Err(error) = projected {
                return Err(self.fail(error));
            }
        }
        // Not cached: a later read loads it from its snapshot, which holds far less memory than this copy.
        Ok(())
    }

    fn signature(&mut self, doc_id: &str, hash: &ChangeHash) -> Option<[u8; 64]> {
        let conn = &self.db.conn;
        let found = is_quarantined(conn, doc_id).and_then(|quarantined| {
            if quarantined {
                return Ok(None);
            }
            conn.prepare_cached("SELECT signer, signature FROM change_signatures WHERE doc_id = ?1 AND hash = ?2")
                .and_then(|mut statement| {
                    statement
                        .query_row(params![doc_id, hash.0.as_slice()], |row| {
                            Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?))
                        })
                        .optional()
                })
        });
        match found {
            Ok(Some((signer, signature))) => {
                let checked = <[u8; 32]>::try_from(signer).ok().zip(<[u8; 64]>::try_from(signature).ok());
                match checked {
                    Some((signer, signature)) if zhaowo_crdt::signing::signature_holds(&signer, hash, &signature) => {
                        Some(signature)
                    }
                    // A damaged signature row: without a signature the session keeps the document local for this
                    // session instead of sending what the peer would take for a forgery; quarantined until repaired.
                    _ => {
                        if let Err(error) = quarantine(conn, doc_id, "a stored change signature does not verify") {
                            self.fail(error);
                        }
                        None
                    }
                }
            }
            Ok(None) => None,
            Err(error) => {
                self.fail(error);
                None
            }
        }
    }

    fn roster(&self) -> &Roster {
        &self.roster
    }

    fn add_roster_records(&mut self, records: Vec<SignedRecord>) -> usize {
        let mut added = 0;
        for record in records {
            // A record that does not verify is the peer's problem, not a reason to refuse the rest.
            if let Ok(true) = self.roster.insert(record.clone()) {
                self.new_records.push(record);
                added += 1;
            }
        }
        added
    }

    fn hall(&mut self) -> Option<&mut SignedHall> {
        self.hall.as_deref_mut()
    }

    fn hall_changed(&mut self) {
        self.hall_changed = true;
    }
}

impl Db {
    /// Runs one step of a sync session: feeds it the inputs, lets it pump, and commits everything it stored (changes,
    /// signatures, projections, the peer's checkpoint) in one transaction before any frame it produced is handed out.
    pub fn sync_step(&mut self, mut step: SyncStep) -> SyncOutcome {
        let mut outcome = SyncOutcome::default();
        if let Err(error) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            outcome.storage_error = Some(format!("storage: {error}"));
            outcome.session = Some(step.session);
            return outcome;
        }
        let seq_before = self.notify.borrow().to_owned();
        let hall = step.hall.take();
        let mut hall_guard = hall.as_ref().map(|hall| hall.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut replica = DbReplica {
            db: self,
            step_docs: StepDocs { docs: HashMap::new() },
            roster: step.roster,
            new_records: Vec::new(),
            touched: Vec::new(),
            storage_error: None,
            hall: hall_guard.as_deref_mut(),
            hall_changed: false,
        };
        let session = &mut step.session;
        for input in step.inputs {
            let result = match input {
                SyncInput::Frame(bytes) => session.handle_frame(&bytes, &mut replica),
                SyncInput::CatchUp => {
                    session.catch_up();
                    session.pump(&mut replica);
                    Ok(())
                }
                SyncInput::Reconcile => {
                    session.reconcile();
                    session.pump(&mut replica);
                    Ok(())
                }
                SyncInput::HallPush => {
                    session.push_hall(&mut replica);
                    Ok(())
                }
            };
            if let Err(error) = result {
                outcome.error = Some(error);
                break;
            }
            if replica.storage_error.is_some() {
                break;
            }
        }
        while let Some(event) = session.poll_event() {
            if let SessionEvent::CheckpointAdvanced { seq } = &event {
                let saved = replica
                    .db
                    .conn
                    .prepare_cached(
                        "INSERT INTO peer_checkpoints (node_key, checkpoint) VALUES (?1, ?2)
                         ON CONFLICT (node_key) DO UPDATE SET checkpoint = max(checkpoint, ?2)",
                    )
                    .and_then(|mut statement| {
                        statement.execute(params![step.peer_key.as_slice(), i64::try_from(*seq).unwrap_or(i64::MAX)])
                    });
                if let Err(error) = saved {
                    replica.fail(error);
                }
            }
            outcome.events.push(event);
        }
        let DbReplica { touched, storage_error, new_records, roster, hall_changed, .. } = replica;
        drop(hall_guard);
        outcome.hall_changed = hall_changed;
        outcome.new_records = new_records;
        outcome.roster = Some(roster);
        let committed = match storage_error {
            Some(error) => Err(error),
            None => self.conn.execute_batch("COMMIT").map_err(|error| format!("storage: {error}")),
        };
        match committed {
            Ok(()) => {
                outcome.frames = std::iter::from_fn(|| session.poll_transmit()).collect();
                outcome.changed_docs = touched.len();
                let seq_after = stored_local_seq(&self.conn).unwrap_or(seq_before);
                if seq_after != seq_before {
                    self.notify.send_replace(seq_after);
                }
            }
            Err(error) => {
                drop(self.conn.execute_batch("ROLLBACK"));
                for doc_id in touched {
                    self.cache.remove(&doc_id);
                }
                outcome.storage_error = Some(error);
            }
        }
        outcome.session = Some(step.session);
        outcome
    }

    /// The signatures stored for a document's changes (its author's, relayed by sync or bundles).
    pub fn signatures(&self, doc_id: &str) -> rusqlite::Result<Vec<ChangeSignature>> {
        stored_signatures(&self.conn, doc_id)
    }

    /// Every peer's acknowledged checkpoint and how many of our documents changed after it.
    pub fn peer_checkpoints(&self) -> rusqlite::Result<Vec<([u8; 32], u64, u64)>> {
        let mut statement = self.conn.prepare_cached("SELECT node_key, checkpoint FROM peer_checkpoints")?;
        let rows: Vec<(Vec<u8>, i64)> =
            statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        let mut peers = Vec::new();
        for (key, checkpoint) in rows {
            if let Ok(key) = key.try_into() {
                let checkpoint = checkpoint.max(0) as u64;
                peers.push((key, checkpoint, self.entries_after(checkpoint)?));
            }
        }
        Ok(peers)
    }

    /// The catalog position this node last had acknowledged by `peer`: the next session resumes after it.
    pub fn checkpoint(&self, peer: &[u8; 32]) -> rusqlite::Result<u64> {
        let seq: Option<i64> = self
            .conn
            .prepare_cached("SELECT checkpoint FROM peer_checkpoints WHERE node_key = ?1")?
            .query_row([peer.as_slice()], |row| row.get(0))
            .optional()?;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// Documents the peer has not acknowledged yet: catalog entries after its checkpoint ("behind" in the status).
    pub fn entries_after(&self, seq: u64) -> rusqlite::Result<u64> {
        let count: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM catalog WHERE local_seq > ?1")?
            .query_row([i64::try_from(seq).unwrap_or(i64::MAX)], |row| row.get(0))?;
        Ok(count as u64)
    }
}
