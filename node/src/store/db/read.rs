//! The store's reads: a case's view, the register book page by page, search (FTS5 trigrams and bigrams), overdue
//! cases, statistics, counts by status, the list of cases with open conflicts, lookup by 登记编号, repeated numbers
//! and the quarantine list. Everything here answers from the projections in one statement or a few.

use super::*;

impl Db {
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

    pub fn badly_rated(&self, limit: usize) -> Result<Vec<CaseRow>, ReadError> {
        self.need_projections()?;
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {CASE_COLUMNS} FROM cases WHERE rating <= 2 ORDER BY updated_at_ms DESC, doc_id LIMIT ?1"
        ))?;
        let rows = statement
            .query_map(params![limit.clamp(1, PAGE_ROWS_MAX) as i64], CaseRow::from_sql)?
            .collect::<rusqlite::Result<_>>()?;
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

    /// The KPI tallies of the cases registered from `from` to `to` (inclusive, the hall's days), per group of `group`
    /// (sorted by key), or one group `全部` without. By service mode a case counts under each of its modes.
    pub fn kpi_tallies(
        &self,
        from: zhaowo_crdt::time::Date,
        to: zhaowo_crdt::time::Date,
        group: Option<zhaowo_crdt::kpi::GroupBy>,
    ) -> Result<Vec<(String, zhaowo_crdt::kpi::Tally)>, ReadError> {
        use zhaowo_crdt::kpi::{CaseFacts, GroupBy, Tally};
        self.need_projections()?;
        // The column is chosen from a closed list, never from input.
        let column = match group {
            None => "'全部'",
            Some(GroupBy::Month) => "month",
            Some(GroupBy::Window) => "window",
            Some(GroupBy::Unit) => "unit",
            Some(GroupBy::Nature) => "nature",
            Some(GroupBy::Category) => "category",
            Some(GroupBy::Mode) => "modes",
        };
        let sums: Vec<String> = CaseFacts::COLUMNS.iter().map(|c| format!("coalesce(sum({c}), 0)")).collect();
        let sql = format!(
            "SELECT {column}, {} FROM case_facts WHERE registered_at_ms >= ?1 AND registered_at_ms < ?2 \
             GROUP BY {column} ORDER BY {column}",
            sums.join(", ")
        );
        let start = from.to_days() * zhaowo_crdt::time::DAY_MS - zhaowo_crdt::time::OFFSET_MS;
        let end = (to.to_days() + 1) * zhaowo_crdt::time::DAY_MS - zhaowo_crdt::time::OFFSET_MS;
        let rows: Vec<(String, CaseFacts)> = self
            .conn
            .prepare_cached(&sql)?
            .query_map(params![start, end], |row| {
                let mut values = [0i64; 23];
                for (i, value) in values.iter_mut().enumerate() {
                    *value = row.get(i + 1)?;
                }
                Ok((row.get(0)?, CaseFacts::from_values(values)))
            })?
            .collect::<rusqlite::Result<_>>()?;
        if group != Some(GroupBy::Mode) {
            return Ok(rows.into_iter().map(|(key, facts)| (key, Tally(facts))).collect());
        }
        let mut by_mode: BTreeMap<String, Tally> = BTreeMap::new();
        for (modes, facts) in rows {
            let codes: Vec<&str> = modes.split(',').filter(|code| !code.is_empty()).collect();
            let keys = if codes.is_empty() { vec!["无"] } else { codes };
            for key in keys {
                *by_mode.entry(key.to_owned()).or_default() += &facts;
            }
        }
        Ok(by_mode.into_iter().collect())
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
}
