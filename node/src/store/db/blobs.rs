//! The store's side of materials (issue 16): which files the cases name (the `blobs` projection, schema 9), for the
//! fetcher (what to ask peers for), the server (which case a requested file belongs to) and the sweep (what to keep).

use super::*;

/// A material file some case names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub hash: String,
    pub doc_id: String,
    /// Bytes of the sealed file, as the event names them (a transfer of more is refused).
    pub bytes: u64,
    pub thumb: bool,
    /// Whether this node holds the case's key (a laptop fetches only those, and only on demand).
    pub keyed: bool,
}

impl Db {
    /// The files cases name, in hash order after `after`, at most `limit`.
    pub(crate) fn blob_refs(&self, after: &str, limit: usize) -> rusqlite::Result<Vec<BlobRef>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT b.hash, b.doc_id, b.bytes, b.thumb, k.doc_id IS NOT NULL FROM blobs b \
             LEFT JOIN case_keys k ON k.doc_id = b.doc_id WHERE b.hash > ?1 ORDER BY b.hash LIMIT ?2",
        )?;
        let rows = statement.query_map(rusqlite::params![after, limit as i64], blob_ref)?;
        rows.collect()
    }

    /// The file `hash`, if a case names it.
    pub(crate) fn blob_ref(&self, hash: &str) -> rusqlite::Result<Option<BlobRef>> {
        self.conn
            .prepare_cached(
                "SELECT b.hash, b.doc_id, b.bytes, b.thumb, k.doc_id IS NOT NULL FROM blobs b \
                 LEFT JOIN case_keys k ON k.doc_id = b.doc_id WHERE b.hash = ?1",
            )?
            .query_row([hash], blob_ref)
            .optional()
    }

    /// How many files cases name, and their bytes.
    pub(crate) fn blob_totals(&self) -> rusqlite::Result<(u64, u64)> {
        self.conn.query_row("SELECT count(*), coalesce(sum(bytes), 0) FROM blobs", [], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
        })
    }
}

fn blob_ref(row: &rusqlite::Row<'_>) -> rusqlite::Result<BlobRef> {
    Ok(BlobRef {
        hash: row.get(0)?,
        doc_id: row.get(1)?,
        bytes: row.get::<_, i64>(2)? as u64,
        thumb: row.get::<_, i64>(3)? != 0,
        keyed: row.get(4)?,
    })
}
