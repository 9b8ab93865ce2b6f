//! The store's side of sync: `DbReplica` (the `crdt::sync::Replica` a session steps on the store thread, inside one
//! `BEGIN IMMEDIATE … COMMIT`), documents sent and received whole, the checks that keep a damaged row from being
//! sent (`check_outgoing`), peer checkpoints.

use super::*;

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
    Ok(Some(WholeDoc { doc_id: doc_id.to_owned(), snapshot, changes, signatures, key: None }))
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
                Ok(Some(doc)) => match keys::open_case(&self.db.conn, &self.db.key_holder, doc) {
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
                    keyed: entry.keyed,
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
                Some(doc) => match keys::open_case(&self.db.conn, &self.db.key_holder, doc) {
                    Ok(mut case) => {
                        let projected =
                            keys::settle_key_in(&self.db.conn, &self.db.key_holder, &mut case).and_then(|destroyed| {
                                self.db.keys_destroyed |= destroyed;
                                project(&self.db.conn, &case)
                            });
                        self.step_docs.docs.insert(doc_id.to_owned(), case.into_automerge());
                        projected
                    }
                    Err((_, doc)) => {
                        self.step_docs.docs.insert(doc_id.to_owned(), doc);
                        projection::remove(&self.db.conn, doc_id)
                    }
                },
                None => {
                    let case = self.db.cache.get_mut(doc_id).expect("cached");
                    keys::settle_key_in(&self.db.conn, &self.db.key_holder, case).and_then(|destroyed| {
                        self.db.keys_destroyed |= destroyed;
                        project(&self.db.conn, case)
                    })
                }
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
        // The key that came with the document (the holder judged this node may hold it): stored if the rule agrees
        // here too; otherwise the view folded with it must not be projected, and the case is folded again without.
        let mut received = received;
        if let (Some(key), Some(view)) = (received.key.take(), received.view.as_ref()) {
            if self.db.key_holder.may_hold(view) {
                if let Err(error) =
                    keys::store_key(&self.db.conn, &self.db.key_holder, doc_id, &key, crate::home::now_ms())
                {
                    return Err(self.fail(error));
                }
            } else {
                received.view = CaseDoc::from_automerge(received.doc.clone()).ok().map(|case| case.view());
            }
        }
        if self.db.projections {
            // The session folded the view beside the signature checks, off this thread.
            let projected = match &received.view {
                Some(view) => projection::upsert(&self.db.conn, view),
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

    fn wants_key(&mut self, doc_id: &str) -> bool {
        self.db.wants_key(doc_id)
    }

    fn key_for_peer(&mut self, doc_id: &str, peer: &zhaowo_crdt::roster::PublicKey) -> Option<[u8; 32]> {
        let role = self.roster.authorized(peer)?.role;
        self.db.key_for(doc_id, role, &zhaowo_crdt::ids::hex_encode(peer))
    }

    fn receive_key(&mut self, doc_id: &str, key: [u8; 32]) -> Result<(), String> {
        self.touched.push(doc_id.to_owned());
        self.db.receive_key(doc_id, key)
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
        // Under the write lock, the cache is refreshed first: a document another process wrote is loaded afresh.
        if let Err(error) = self
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .and_then(|()| self.refresh_cache().inspect_err(|_| drop(self.conn.execute_batch("ROLLBACK"))))
        {
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
                self.truncate_wal_if_keys_destroyed();
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
