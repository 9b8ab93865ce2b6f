//! Maintenance of the store: SQLite's integrity check, `verify` (every document against its catalog row, projections
//! and, given the roster, every change signature; repeated registration numbers; quarantine), `reindex` (every
//! projection rebuilt from the documents, skipped documents listed), `backup`, and the raw-SQL test hook.

use super::*;

impl Db {
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
        let cases = reindex_in(&tx, &self.actor, &self.key_holder, &mut problems)?;
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
        match super::keys::open_case(&self.conn, &self.key_holder, doc).map_err(|(error, _)| error) {
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

fn doc_ids_after(conn: &Connection, after: &str, limit: usize) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare_cached("SELECT doc_id FROM catalog WHERE doc_id > ?1 ORDER BY doc_id LIMIT ?2")?;
    statement.query_map(params![after, limit as i64], |row| row.get(0))?.collect()
}

/// Rebuilds every projection from the documents inside `tx`; unreadable documents are reported and skipped.
pub(crate) fn reindex_in(
    tx: &Transaction<'_>,
    actor: &ActorId,
    holder: &super::keys::KeyHolder,
    problems: &mut Vec<Problem>,
) -> rusqlite::Result<u64> {
    tx.execute_batch(
        "DELETE FROM cases; DELETE FROM cases_fts; DELETE FROM cases_bigrams; DELETE FROM stats_daily; DELETE FROM case_facts; \
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
                Ok(Some(doc)) => match super::keys::open_case(tx, holder, doc).map_err(|(error, _)| error) {
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
