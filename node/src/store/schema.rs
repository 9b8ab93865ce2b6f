//! Versioned schema migrations of the store database.
//!
//! The schema version lives in `PRAGMA user_version`; `application_id` marks the file as a zhaowo store so that a
//! stray SQLite file is refused instead of being "migrated". Every migration runs in the same transaction as the
//! version bump, so a process killed mid-migration leaves the previous version intact. A database written by a newer
//! zhaowo (a larger `user_version`) is refused: an older binary must never rewrite tables it does not understand.

use rusqlite::{OptionalExtension, Transaction};

/// `application_id` of a zhaowo store: the bytes "zhwo".
pub const APPLICATION_ID: i32 = 0x7a68_776f;

/// The schema version this build writes.
pub const SCHEMA_VERSION_LATEST: i64 = 9;

/// Version 1: documents (snapshot + changes), the catalog, the node-wide counter and change signatures.
const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
INSERT INTO meta (key, value) VALUES ('local_seq', 0);

-- One row per document: the latest compacted snapshot (empty until the first compaction).
CREATE TABLE docs (
    doc_id         TEXT PRIMARY KEY,
    snapshot       BLOB NOT NULL,
    snapshot_heads BLOB NOT NULL,
    changes_bytes  INTEGER NOT NULL
) STRICT;

-- Incremental changes since the snapshot, each with its actor and hash. `seq` is the node-wide counter value the
-- change got when stored (its rowid: insertion order, which is causal order per document). A rowid table, not
-- WITHOUT ROWID: rows of ~1 KB would spill to a whole overflow page each in an index b-tree (measured: 6 KB/case).
CREATE TABLE changes (
    seq    INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    hash   BLOB NOT NULL,
    actor  BLOB NOT NULL,
    bytes  BLOB NOT NULL
) STRICT;
CREATE UNIQUE INDEX changes_by_doc ON changes (doc_id, hash);

-- What sync compares: the hash of each document's heads and the counter value of its last stored change.
CREATE TABLE catalog (
    doc_id     TEXT PRIMARY KEY,
    heads_hash BLOB NOT NULL,
    local_seq  INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX catalog_by_local_seq ON catalog (local_seq);

-- Signatures of changes by their author's key (filled by sync).
CREATE TABLE change_signatures (
    doc_id    TEXT NOT NULL,
    hash      BLOB NOT NULL,
    signer    BLOB NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (doc_id, hash)
) STRICT, WITHOUT ROWID;
"#;

/// Version 2: the projections (register book, full-text search, statistics), rebuilt from the documents.
///
/// FTS5 uses the `trigram` tokenizer: Chinese has no spaces, so `unicode61` would index a whole sentence as one
/// token and find nothing by a word inside it; a CJK segmenter (jieba and friends) is not in the bundled SQLite and
/// would miss words its dictionary lacks (street names, company names). Trigrams find any substring of three or more
/// characters; shorter queries (two-character words are common in Chinese) use `LIKE`, which the trigram table also
/// answers, by a scan.
const V2: &str = r#"
CREATE TABLE cases (
    id                    INTEGER PRIMARY KEY,
    doc_id                TEXT NOT NULL UNIQUE,
    reg_no                TEXT NOT NULL,
    status                TEXT NOT NULL,
    category              TEXT NOT NULL,
    nature                TEXT NOT NULL,
    priority              TEXT NOT NULL,
    lead_unit             TEXT,
    window                TEXT NOT NULL,
    registered_at_ms      INTEGER NOT NULL,
    updated_at_ms         INTEGER NOT NULL,
    due_ms                INTEGER NOT NULL,
    clock_runs            INTEGER NOT NULL,
    first_response_due_ms INTEGER NOT NULL,
    first_response_ms     INTEGER,
    closed_at_ms          INTEGER,
    rating                INTEGER,
    supervision           TEXT NOT NULL,
    summary               TEXT NOT NULL
) STRICT;
CREATE INDEX cases_by_registered ON cases (registered_at_ms, doc_id);
CREATE INDEX cases_by_status ON cases (status, registered_at_ms);
CREATE INDEX cases_by_category ON cases (category, registered_at_ms);
CREATE INDEX cases_by_nature ON cases (nature, registered_at_ms);
CREATE INDEX cases_by_unit ON cases (lead_unit, registered_at_ms);
CREATE INDEX cases_by_window ON cases (window, registered_at_ms);
CREATE INDEX cases_overdue ON cases (clock_runs, due_ms);

CREATE VIRTUAL TABLE cases_fts USING fts5 (summary, detail, notes, tokenize = 'trigram');

-- Counts per registration day (UTC+8) and category, kept by adding and subtracting each case's contribution.
CREATE TABLE stats_daily (
    day               INTEGER NOT NULL,
    category          TEXT NOT NULL,
    registered        INTEGER NOT NULL,
    closed            INTEGER NOT NULL,
    closed_on_time    INTEGER NOT NULL,
    responded         INTEGER NOT NULL,
    responded_on_time INTEGER NOT NULL,
    rated             INTEGER NOT NULL,
    rating_sum        INTEGER NOT NULL,
    satisfied         INTEGER NOT NULL,
    PRIMARY KEY (day, category)
) STRICT, WITHOUT ROWID;
"#;

/// Version 3: bigrams for two-character search terms, which trigrams cannot index (户口, 社保, 低保 are words).
///
/// zhaowo writes each text's adjacent letter/digit pairs as space-separated tokens (`SearchText::bigrams`), so the
/// `unicode61` tokenizer indexes exactly those pairs; the table is contentless (the text is in `cases_fts`).
const V3: &str = r#"
CREATE VIRTUAL TABLE cases_bigrams USING fts5 (grams, content = '', contentless_delete = 1, tokenize = 'unicode61 remove_diacritics 0');
"#;

/// Version 4: per-peer sync checkpoints: the highest catalog position of ours each peer acknowledged. Written in the
/// same transaction as the sync step that received the acknowledgement.
const V4: &str = r#"
CREATE TABLE peer_checkpoints (
    node_key   BLOB PRIMARY KEY,
    checkpoint INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
"#;

/// Version 5: the register of numbers (登记编号), the open-conflict projection and the quarantine.
///
/// `reg_numbers` holds every stored case's number, with `local = 1` for the numbers this store allocated itself
/// (`Db::register_new`, inside the registering transaction). The partial UNIQUE index makes a repeated local number
/// impossible; a case that arrives by sync or from a file with a number already used (a re-enrolled window code, an old
/// bundle) is stored with `local = 0` beside it, so sync never fails or diverges over it, and `verify` and `status`
/// report the repeat. Rows are kept when a document stops reading as a case: its number stays used. Migrated stores
/// fill the table from their documents (`local = 0`: which numbers this node issued before is not recorded).
///
/// `open_conflicts` lists the cases whose read model has open conflicts, written with the register row.
/// `quarantine` holds the documents this node will not send (a change whose signature does not verify, a document
/// that does not load), found by `verify` or by the sync sender; rows are removed when the document is repaired.
const V5: &str = r#"
CREATE TABLE reg_numbers (
    doc_id TEXT PRIMARY KEY,
    reg_no TEXT NOT NULL,
    window TEXT NOT NULL,
    year   INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    local  INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX reg_numbers_local ON reg_numbers (reg_no) WHERE local = 1;
CREATE INDEX reg_numbers_by_no ON reg_numbers (reg_no);
CREATE INDEX reg_numbers_by_seq ON reg_numbers (window, year, seq);

CREATE TABLE open_conflicts (
    doc_id    TEXT PRIMARY KEY,
    conflicts INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE quarantine (
    doc_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    at_ms  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
"#;

/// Version 6 (issue 13): the data keys of the cases this node may read, and FTS5's secure delete, so that text removed
/// from the search index (a case whose key was destroyed) leaves no old tokens in the index segments.
const V6: &str = r#"
CREATE TABLE case_keys (
    doc_id     TEXT PRIMARY KEY,
    key        BLOB NOT NULL,
    granted_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO cases_fts (cases_fts, rank) VALUES ('secure-delete', 1);
INSERT INTO cases_bigrams (cases_bigrams, rank) VALUES ('secure-delete', 1);
"#;

/// Version 7 (issue 15 §6): what each case adds to the 督查科's figures (`zhaowo_crdt::kpi::CaseFacts`, columns in
/// `CaseFacts::COLUMNS` order), with the keys a report groups by; modes as `,CODE,CODE,` (a case counts under each).
const V7: &str = r#"
CREATE TABLE case_facts (
    doc_id               TEXT PRIMARY KEY,
    registered_at_ms     INTEGER NOT NULL,
    month                TEXT NOT NULL,
    window               TEXT NOT NULL,
    unit                 TEXT NOT NULL,
    nature               TEXT NOT NULL,
    category             TEXT NOT NULL,
    modes                TEXT NOT NULL,
    registered           INTEGER NOT NULL,
    answered             INTEGER NOT NULL,
    closed               INTEGER NOT NULL,
    closed_on_time       INTEGER NOT NULL,
    callback_valid       INTEGER NOT NULL,
    callback_resolved    INTEGER NOT NULL,
    callback_eligible    INTEGER NOT NULL,
    called_back          INTEGER NOT NULL,
    rated_1              INTEGER NOT NULL,
    rated_2              INTEGER NOT NULL,
    rated_3              INTEGER NOT NULL,
    rated_4              INTEGER NOT NULL,
    rated_5              INTEGER NOT NULL,
    bad_rectified        INTEGER NOT NULL,
    named_bad            INTEGER NOT NULL,
    named_bad_contacted  INTEGER NOT NULL,
    dispatches           INTEGER NOT NULL,
    returns              INTEGER NOT NULL,
    reopened             INTEGER NOT NULL,
    extended             INTEGER NOT NULL,
    consultations        INTEGER NOT NULL,
    site_visits          INTEGER NOT NULL,
    expedited            INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX case_facts_registered ON case_facts (registered_at_ms);
"#;

/// Version 8 (issue 15 §4): the SMS outbox, node-local. One row per message, keyed by the event that asked for it
/// (the idempotency key the SMS platform dedupes on), written in the transaction that stores the event. `query_code`
/// is the 查询码 of a registration's message (the document keeps only its hash), cleared once the message is sent or
/// given up; the phone is never stored here (it is read from the sealed record when the message is sent).
const V8: &str = r#"
CREATE TABLE outbox (
    event_id   TEXT PRIMARY KEY,
    doc_id     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    query_code TEXT,
    state      TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'failed')),
    reason     TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    next_ms    INTEGER NOT NULL,
    done_ms    INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX outbox_due ON outbox (next_ms) WHERE state = 'queued';
CREATE INDEX outbox_by_doc ON outbox (doc_id);
"#;

/// Version 9 (issue 16): the material files each case names (`CaseView::wanted_blobs`: live materials and their
/// thumbnails, none of a purged case), by content address, so the node knows what to fetch, what to serve to whom
/// and what to sweep without reading documents. No case held materials before, so no reindex.
const V9: &str = r#"
CREATE TABLE blobs (
    hash     TEXT PRIMARY KEY,
    doc_id   TEXT NOT NULL,
    bytes    INTEGER NOT NULL,
    thumb    INTEGER NOT NULL,
    added_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX blobs_by_doc ON blobs (doc_id);
"#;

/// Migrations in order: `MIGRATIONS[i]` takes version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9];
const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION_LATEST);

/// Whether the projections must be rebuilt after migrating (a migration created or changed them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Migrated {
    pub from: i64,
    pub to: i64,
    pub reindex: bool,
}

/// Whether a store from before version 6 holds case documents of the first layout (personal data in clear): such a
/// store is refused, not migrated (a clean break; no hall runs an earlier version). Reads the `schema` field of the
/// first stored document (every document of a store was written by the same layout generation).
pub(crate) fn holds_documents_before_private_layer(tx: &Transaction<'_>) -> Result<bool, rusqlite::Error> {
    let first: Option<String> =
        tx.query_row("SELECT doc_id FROM catalog ORDER BY local_seq LIMIT 1", [], |row| row.get(0)).optional()?;
    let Some(doc_id) = first else { return Ok(false) };
    let actor = automerge::ActorId::from(vec![0u8; 16]);
    Ok(match super::db::load_automerge(tx, &actor, &doc_id) {
        Ok(Some(doc)) => {
            matches!(zhaowo_crdt::CaseDoc::from_automerge(doc), Err(zhaowo_crdt::case::LoadError::OlderSchema { .. }))
        }
        _ => false,
    })
}

/// Reads the schema version, refusing files that are not zhaowo stores or are newer than this build.
pub(crate) fn version(tx: &Transaction<'_>) -> Result<(i64, i32), rusqlite::Error> {
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let application_id: i32 = tx.query_row("PRAGMA application_id", [], |row| row.get(0))?;
    Ok((version, application_id))
}

/// Runs the migrations from `from` up to `to` (at most [`SCHEMA_VERSION_LATEST`]) inside `tx`.
pub(crate) fn migrate(tx: &Transaction<'_>, from: i64, to: i64) -> Result<Migrated, rusqlite::Error> {
    debug_assert!(from <= to && to <= SCHEMA_VERSION_LATEST);
    if from == 0 {
        tx.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}"))?;
    }
    let mut reindex = false;
    for version in from..to {
        tx.execute_batch(MIGRATIONS[version as usize])?;
        // Versions 2, 3, 5 and 7 add projections: a store that had documents rebuilds them.
        reindex |= matches!(version + 1, 2 | 3 | 5 | 7);
    }
    tx.execute_batch(&format!("PRAGMA user_version = {to}"))?;
    Ok(Migrated { from, to, reindex: reindex && from > 0 && to >= SCHEMA_VERSION_LATEST })
}
