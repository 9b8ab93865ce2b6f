//! Case keys in the store (issue 13): the `case_keys` table holds the data key of every case this node may read, and
//! nothing else does. Keys are attached to documents as they load (`open_case`), written with the registration that
//! made them, taken from peers that hand them over (`receive_key`, through the sync session), and destroyed as soon as
//! the one rule (`zhaowo_crdt::seal::may_hold_key`) says this node may no longer hold them: a purge, a volunteer
//! laptop's visit logged or expired. Destroying a key rewrites the case's projections without its private values and,
//! with `secure_delete` on and the WAL truncated after the commit, leaves none of the old bytes in the files.

use super::*;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zhaowo_crdt::seal::{CASE_KEY_BYTES, CaseKey, may_hold_key};

/// The first byte of a wrapped key row; then a 24-byte nonce and the sealed key with its 16-byte tag.
const WRAPPED_VERSION: u8 = 1;
const WRAP_NONCE_BYTES: usize = 24;
const WRAPPED_BYTES: usize = 1 + WRAP_NONCE_BYTES + CASE_KEY_BYTES + 16;

/// The key that wraps case keys at rest (issue 13 §6): XChaCha20-Poly1305 under the node's
/// `NodeIdentity::case_key_wrap`, a fresh random nonce per row, and the case id as associated data (a row copied under
/// another case's id does not open). A copy of `cases.db` without `node.key` opens no case; with a passphrase on
/// `node.key`, neither does a stolen laptop's whole data directory.
#[derive(Clone)]
pub struct KeyWrap {
    cipher: std::sync::Arc<XChaCha20Poly1305>,
    /// A fingerprint of the wrap key (the first 8 bytes of a labelled SHA-256), kept in `meta` to notice a store
    /// whose keys another node wrapped (a backup restored into a newly enrolled node).
    id: i64,
}

impl std::fmt::Debug for KeyWrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyWrap([redacted])")
    }
}

impl KeyWrap {
    pub fn new(key: &[u8; 32]) -> KeyWrap {
        use sha2::Digest;
        let digest = sha2::Sha256::new().chain_update(b"zhaowo key-wrap id v1\0").chain_update(key).finalize();
        let id = i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        KeyWrap { cipher: std::sync::Arc::new(XChaCha20Poly1305::new(key.into())), id }
    }

    fn wrap(&self, doc_id: &str, key: &CaseKey) -> rusqlite::Result<Vec<u8>> {
        let mut nonce = [0u8; WRAP_NONCE_BYTES];
        // No randomness is an error, never a fixed nonce.
        getrandom::fill(&mut nonce).map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: key.as_bytes(), aad: doc_id.as_bytes() })
            .map_err(|_| rusqlite::Error::ToSqlConversionFailure("cannot wrap a case key".into()))?;
        let mut row = Vec::with_capacity(WRAPPED_BYTES);
        row.push(WRAPPED_VERSION);
        row.extend_from_slice(&nonce);
        row.extend_from_slice(&sealed);
        Ok(row)
    }

    /// The case key of a wrapped row, if this wrap key made it for this case.
    pub fn unwrap(&self, doc_id: &str, row: &[u8]) -> Option<[u8; CASE_KEY_BYTES]> {
        if row.len() != WRAPPED_BYTES || row[0] != WRAPPED_VERSION {
            return None;
        }
        let (nonce, sealed) = row[1..].split_at(WRAP_NONCE_BYTES);
        let key =
            self.cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad: doc_id.as_bytes() }).ok()?;
        key.try_into().ok()
    }
}

/// The stored key of a case: a wrapped row opened with the holder's wrap key, or a clear row (a store opened without
/// a node key: tools and tests; `rewrap_clear_keys` wraps those when a node opens the store).
pub(crate) fn load_key(conn: &Connection, holder: &KeyHolder, doc_id: &str) -> rusqlite::Result<Option<CaseKey>> {
    let row: Option<Vec<u8>> = conn
        .prepare_cached("SELECT key FROM case_keys WHERE doc_id = ?1")?
        .query_row([doc_id], |row| row.get(0))
        .optional()?;
    let Some(row) = row else { return Ok(None) };
    if let Ok(clear) = <[u8; CASE_KEY_BYTES]>::try_from(row.as_slice()) {
        return Ok(Some(CaseKey::from_bytes(clear)));
    }
    let opened = holder.wrap.as_ref().and_then(|wrap| wrap.unwrap(doc_id, &row));
    if opened.is_none() {
        tracing::warn!(%doc_id, "a stored case key does not open with this node's key: the case reads as sealed");
    }
    Ok(opened.map(CaseKey::from_bytes))
}

/// At open, inside the caller's transaction: drops key rows that another node's key wrapped (a backup restored into a
/// newly enrolled node: no use here, and while a row is present the node would not ask for the key again; a hall PC
/// fetches them back at its next sync), then wraps clear rows (see [`rewrap_clear_keys`]). Returns (dropped, wrapped).
pub(crate) fn settle_wrap(conn: &Connection, wrap: &KeyWrap) -> rusqlite::Result<(usize, usize)> {
    let stored: Option<i64> =
        conn.query_row("SELECT value FROM meta WHERE key = 'key_wrap_id'", [], |row| row.get(0)).optional()?;
    let dropped = match stored {
        Some(id) if id == wrap.id => 0,
        Some(_) => conn.execute("DELETE FROM case_keys WHERE length(key) != ?1", [CASE_KEY_BYTES as i64])?,
        None => 0,
    };
    if stored != Some(wrap.id) {
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('key_wrap_id', ?1)", [wrap.id])?;
    }
    Ok((dropped, rewrap_clear_keys(conn, wrap)?))
}

/// Wraps every clear key row under `wrap` (a store written before keys were wrapped, or by a tool without a node
/// key), inside the caller's transaction. Returns how many rows it wrapped.
pub(crate) fn rewrap_clear_keys(conn: &Connection, wrap: &KeyWrap) -> rusqlite::Result<usize> {
    let clear: Vec<(String, Vec<u8>)> = conn
        .prepare("SELECT doc_id, key FROM case_keys WHERE length(key) = ?1")?
        .query_map([CASE_KEY_BYTES as i64], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (doc_id, key) in &clear {
        let key = CaseKey::from_bytes(key.as_slice().try_into().expect("length checked by the query"));
        conn.execute("UPDATE case_keys SET key = ?1 WHERE doc_id = ?2", params![wrap.wrap(doc_id, &key)?, doc_id])?;
    }
    Ok(clear.len())
}

pub(crate) fn has_key(conn: &Connection, doc_id: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM case_keys WHERE doc_id = ?1")?
        .query_row([doc_id], |_| Ok(()))
        .optional()?
        .is_some())
}

pub(crate) fn store_key(
    conn: &Connection,
    holder: &KeyHolder,
    doc_id: &str,
    key: &CaseKey,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let row = match &holder.wrap {
        Some(wrap) => wrap.wrap(doc_id, key)?,
        None => key.as_bytes().to_vec(),
    };
    conn.prepare_cached("INSERT OR REPLACE INTO case_keys (doc_id, key, granted_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![doc_id, row, now_ms])?;
    Ok(())
}

fn delete_key(conn: &Connection, doc_id: &str) -> rusqlite::Result<bool> {
    Ok(conn.prepare_cached("DELETE FROM case_keys WHERE doc_id = ?1")?.execute([doc_id])? > 0)
}

/// Wraps a stored document as a case with this node's key for it, if it holds one.
#[allow(
    clippy::result_large_err,
    reason = "the document is handed back unboxed, as `CaseDoc::from_automerge_or_back` does"
)]
pub(crate) fn open_case(
    conn: &Connection,
    holder: &KeyHolder,
    doc: AutoCommit,
) -> Result<CaseDoc, (zhaowo_crdt::case::LoadError, AutoCommit)> {
    let mut case = CaseDoc::from_automerge_or_back(doc)?;
    let doc_id = case.case_id().as_str().to_owned();
    case.set_key(load_key(conn, holder, &doc_id).ok().flatten());
    Ok(case)
}

/// Who this store holds keys as: the node's role and id (the id a 指派上门 names).
#[derive(Debug, Clone)]
pub(crate) struct KeyHolder {
    pub role: zhaowo_crdt::model::Role,
    pub node_id: String,
    /// Wraps the keys at rest; `None` (no node key: tools and tests) stores them in clear.
    pub wrap: Option<KeyWrap>,
}

impl KeyHolder {
    /// Whether this node may hold the key of a case as it now reads.
    pub fn may_hold(&self, view: &CaseView) -> bool {
        may_hold_key(self.role, &self.node_id, view, crate::home::now_ms())
    }
}

impl Db {
    /// After a case changed (a command, a peer's change): destroys its key when this node may no longer hold it, and
    /// takes it out of the document. Returns whether a key was destroyed (the caller truncates the WAL after the
    /// commit). Runs inside the caller's transaction, before the projections are written.
    pub(crate) fn settle_key(&mut self, case: &mut CaseDoc) -> rusqlite::Result<bool> {
        let destroyed = settle_key_in(&self.conn, &self.key_holder, case)?;
        self.keys_destroyed |= destroyed;
        Ok(destroyed)
    }

    /// Truncates the WAL after a commit that destroyed keys, so the deleted rows' old page images leave the WAL file
    /// too (`secure_delete` already overwrote them in the database file).
    pub(crate) fn truncate_wal_if_keys_destroyed(&mut self) {
        if std::mem::take(&mut self.keys_destroyed)
            && let Err(error) = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(%error, "could not truncate the WAL after destroying case keys");
        }
    }

    /// Destroys every key this node may no longer hold because time passed (a laptop's visits past
    /// `VISIT_KEY_DAYS_MAX`), as a sweep whenever the node asks (at start, then hourly). Returns how many keys were
    /// destroyed. A hall PC's keys end only with a purge, which every write path handles as it stores it
    /// (`settle_key`): the sweep skips them rather than load every case each hour (1M cases on a hall PC).
    pub fn sweep_keys(&mut self) -> Result<usize, WriteError> {
        if self.key_holder.role.is_staff() {
            return Ok(0);
        }
        let ids: Vec<String> = self
            .conn
            .prepare("SELECT doc_id FROM case_keys")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut destroyed = 0;
        for doc_id in ids {
            let outcome = self.write(|db| -> Result<bool, WriteError> {
                let mut case = db.take_case(&doc_id)?;
                let gone = db.settle_key(&mut case)?;
                if gone && db.projections {
                    project(&db.conn, &case)?;
                }
                db.cache.insert(doc_id.clone(), case);
                Ok(gone)
            });
            match outcome {
                Ok(gone) => destroyed += usize::from(gone),
                Err(WriteError::UnknownCase(_)) => {
                    // A key without its document (the document was never stored): nothing to read it with.
                    self.conn.execute("DELETE FROM case_keys WHERE doc_id = ?1", [&doc_id])?;
                    destroyed += 1;
                    self.keys_destroyed = true;
                }
                Err(error) => {
                    self.cache.remove(&doc_id);
                    return Err(error);
                }
            }
        }
        self.truncate_wal_if_keys_destroyed();
        Ok(destroyed)
    }

    /// Closed cases (办结 before `closed_before_ms`) whose key this node still holds: the retention rule's next purges,
    /// oldest first. A purged case has no key here, so it is never listed again.
    pub(crate) fn retention_due(&self, closed_before_ms: i64, limit: usize) -> rusqlite::Result<Vec<String>> {
        self.conn
            .prepare_cached(
                "SELECT c.doc_id FROM cases c JOIN case_keys k ON k.doc_id = c.doc_id \
                 WHERE c.status = ?1 AND c.closed_at_ms IS NOT NULL AND c.closed_at_ms < ?2 \
                 ORDER BY c.closed_at_ms LIMIT ?3",
            )?
            .query_map(params![zhaowo_crdt::model::Status::Closed.code(), closed_before_ms, limit as i64], |row| {
                row.get(0)
            })?
            .collect()
    }

    /// Keys from a bundle: [`Db::receive_key`] for each in one write; returns how many were new.
    pub(crate) fn receive_keys(&mut self, grants: Vec<zhaowo_crdt::wire::CaseKeyGrant>) -> Result<usize, WriteError> {
        let result = self.write(|db| -> Result<usize, WriteError> {
            let mut taken = 0;
            for grant in grants {
                if has_key(&db.conn, &grant.doc_id)? {
                    continue;
                }
                match db.receive_key(&grant.doc_id, grant.key) {
                    Ok(()) => taken += 1,
                    Err(reason) if reason.starts_with("storage:") => {
                        return Err(WriteError::Corrupt(CorruptCase { case_id: grant.doc_id, reason }));
                    }
                    Err(reason) => {
                        tracing::info!(doc_id = %grant.doc_id, %reason, "a case key from a bundle was not taken")
                    }
                }
            }
            Ok(taken)
        });
        if result.is_err() {
            self.cache.clear();
        }
        if let Ok(seq) = stored_local_seq(&self.conn) {
            self.notify.send_replace(seq);
        }
        result
    }

    /// The keys this node holds among `ids`.
    pub(crate) fn case_keys(&self, ids: &[String]) -> rusqlite::Result<Vec<zhaowo_crdt::wire::CaseKeyGrant>> {
        let mut grants = Vec::new();
        for doc_id in ids {
            if let Some(key) = load_key(&self.conn, &self.key_holder, doc_id)? {
                grants.push(zhaowo_crdt::wire::CaseKeyGrant { doc_id: doc_id.clone(), key: *key.as_bytes() });
            }
        }
        Ok(grants)
    }

    pub(crate) fn case_key_count(&self) -> rusqlite::Result<u64> {
        self.conn.query_row("SELECT count(*) FROM case_keys", [], |row| row.get::<_, i64>(0)).map(|count| count as u64)
    }

    /// Whether this node lacks the key of a case it stores and may hold it.
    pub(crate) fn wants_key(&mut self, doc_id: &str) -> bool {
        if !matches!(has_key(&self.conn, doc_id), Ok(false)) {
            return false;
        }
        // A hall PC may hold every key but a purged case's; no holder offers that one (it destroyed it), and
        // `receive_key` checks the rule on the case anyway: no need to load the case here (a fresh hall PC asks for
        // every key of the hall).
        if self.key_holder.role.is_staff() {
            return true;
        }
        match self.case_mut(doc_id) {
            Ok(case) => {
                let view = case.view();
                self.key_holder.may_hold(&view)
            }
            Err(_) => false,
        }
    }

    /// The key of a case for `peer` (its roster role and id), when this node holds it and the peer may hold it.
    pub(crate) fn key_for(&mut self, doc_id: &str, role: zhaowo_crdt::model::Role, peer_id: &str) -> Option<[u8; 32]> {
        let key = load_key(&self.conn, &self.key_holder, doc_id).ok().flatten()?;
        // A hall PC may hold every key but a purged case's, and this node holds no purged case's key (a purge destroys
        // it as it is stored): no need to load the case (a fresh hall PC asks for every key of the hall).
        if role.is_staff() {
            return Some(*key.as_bytes());
        }
        let case = self.case_mut(doc_id).ok()?;
        let view = case.view();
        may_hold_key(role, peer_id, &view, crate::home::now_ms()).then(|| *key.as_bytes())
    }

    /// Takes a key a peer handed over, inside the caller's transaction: the case must be stored here, this node must
    /// be allowed to hold its key, and the key must open it. The case's projections are rewritten with its private
    /// values; the catalog row moves, so peers that lack the key hear that this node holds it.
    pub(crate) fn receive_key(&mut self, doc_id: &str, key: [u8; 32]) -> Result<(), String> {
        let key = CaseKey::from_bytes(key);
        let case = self.case_mut(doc_id).map_err(|error| error.to_string())?;
        if case.key().is_some() {
            return Ok(());
        }
        if !case.key_opens(&key) {
            return Err("the key does not open the case".to_owned());
        }
        case.set_key(Some(key.clone()));
        let view = case.view();
        if !self.key_holder.may_hold(&view) {
            self.case_mut(doc_id).map_err(|error| error.to_string())?.set_key(None);
            return Err("this node may not hold the key of this case".to_owned());
        }
        let stored = (|| -> rusqlite::Result<()> {
            store_key(&self.conn, &self.key_holder, doc_id, &key, crate::home::now_ms())?;
            bump_catalog(&self.conn, doc_id)?;
            if self.projections {
                projection::upsert(&self.conn, &view)?;
            }
            Ok(())
        })();
        if let Err(error) = stored {
            self.cache.remove(doc_id);
            return Err(format!("storage: {error}"));
        }
        Ok(())
    }
}

/// [`Db::settle_key`] on the store's parts (for callers that hold a case borrowed from the cache).
pub(crate) fn settle_key_in(conn: &Connection, holder: &KeyHolder, case: &mut CaseDoc) -> rusqlite::Result<bool> {
    if case.key().is_none() || holder.may_hold(&case.view()) {
        return Ok(false);
    }
    let doc_id = case.case_id().as_str().to_owned();
    case.set_key(None);
    let destroyed = delete_key(conn, &doc_id)?;
    tracing::info!(%doc_id, "case key destroyed: this node may no longer read the case");
    Ok(destroyed)
}

/// Moves a document's catalog row to a new counter value without a change (its key arrived): sync announces it again.
fn bump_catalog(conn: &Connection, doc_id: &str) -> rusqlite::Result<()> {
    let seq = stored_local_seq(conn)? + 1;
    conn.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'local_seq'")?.execute([seq])?;
    conn.prepare_cached("UPDATE catalog SET local_seq = ?1 WHERE doc_id = ?2")?.execute(params![seq, doc_id])?;
    Ok(())
}
