//! The query projections of a case: its register-book row, its full-text row and its contribution to the statistics.
//!
//! Everything here is a pure function of the case's [`CaseView`], written in the same transaction as the change that
//! produced it, so the projections can always be rebuilt from the documents (`reindex`) and checked against them
//! (`verify`).

use rusqlite::{Connection, OptionalExtension, params};
use zhaowo_crdt::CaseView;
use zhaowo_crdt::time::{DAY_MS, OFFSET_MS};

/// A rating at or above this counts as satisfied (满意): 4 and 5 of 5, as the hall's KPI sheet counts.
pub const SATISFIED_RATING_MIN: u8 = 4;

/// One row of the register book (登记簿), as stored in the `cases` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRow {
    pub case_id: String,
    pub reg_no: String,
    /// [`zhaowo_crdt::model::Status::code`].
    pub status: String,
    pub category: String,
    /// [`zhaowo_crdt::model::Nature::code`].
    pub nature: String,
    /// [`zhaowo_crdt::model::Priority::code`].
    pub priority: String,
    pub lead_unit: Option<String>,
    pub window: String,
    pub registered_at_ms: i64,
    pub updated_at_ms: i64,
    /// The due date with closed hold intervals added (see [`CaseView::effective_due_ms`]).
    pub due_ms: i64,
    /// The solution clock runs: the case is overdue once `now_ms > due_ms`.
    pub clock_runs: bool,
    pub first_response_due_ms: i64,
    pub first_response_ms: Option<i64>,
    pub closed_at_ms: Option<i64>,
    /// The case's counted rating (`CaseView::rating_score`): the citizen's own 好差评, else the latest 回访's.
    pub rating: Option<u8>,
    /// [`zhaowo_crdt::model::SupervisionLevel::code`].
    pub supervision: String,
    pub summary: String,
}

/// The searchable text of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText {
    pub summary: String,
    pub detail: String,
    /// Internal notes and public replies, one per line.
    pub notes: String,
}

/// What one case adds to its `stats_daily` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsContribution {
    pub registered: i64,
    pub closed: i64,
    pub closed_on_time: i64,
    pub responded: i64,
    pub responded_on_time: i64,
    pub rated: i64,
    pub rating_sum: i64,
    pub satisfied: i64,
}

/// The day (days since 1970-01-01 in UTC+8, the hall's local time) an instant falls on.
pub fn local_day(ms: i64) -> i64 {
    (ms + OFFSET_MS).div_euclid(DAY_MS)
}

impl CaseRow {
    pub fn of(view: &CaseView) -> CaseRow {
        // Overdue is `clock_runs && now > due`; while the clock runs there is no open hold, so the effective due date
        // does not depend on `now`.
        let clock_runs = view.status.solution_clock_runs();
        CaseRow {
            case_id: view.case_id.as_str().to_owned(),
            reg_no: view.reg_no.to_string(),
            status: view.status.code().to_owned(),
            category: view.category.clone(),
            nature: view.nature.code().to_owned(),
            priority: view.priority.code().to_owned(),
            lead_unit: view.lead_unit.clone(),
            window: view.window.clone(),
            registered_at_ms: view.registered_at_ms,
            updated_at_ms: view.updated_at_ms,
            due_ms: view.due_ms + view.paused_ms,
            clock_runs,
            first_response_due_ms: view.first_response_due_ms,
            first_response_ms: view.first_response_ms,
            closed_at_ms: view.closed_at_ms,
            rating: view.rating_score(),
            supervision: view.supervision.code().to_owned(),
            summary: view.summary.clone(),
        }
    }

    pub fn overdue(&self, now_ms: i64) -> bool {
        self.clock_runs && now_ms > self.due_ms
    }

    pub fn stats(&self) -> StatsContribution {
        let closed = self.closed_at_ms.is_some();
        let responded = self.first_response_ms.is_some();
        StatsContribution {
            registered: 1,
            closed: i64::from(closed),
            closed_on_time: i64::from(self.closed_at_ms.is_some_and(|at| at <= self.due_ms)),
            responded: i64::from(responded),
            responded_on_time: i64::from(self.first_response_ms.is_some_and(|at| at <= self.first_response_due_ms)),
            rated: i64::from(self.rating.is_some()),
            rating_sum: i64::from(self.rating.unwrap_or(0)),
            satisfied: i64::from(self.rating.is_some_and(|rating| rating >= SATISFIED_RATING_MIN)),
        }
    }

    pub(crate) fn from_sql(row: &rusqlite::Row<'_>) -> rusqlite::Result<CaseRow> {
        Ok(CaseRow {
            case_id: row.get("doc_id")?,
            reg_no: row.get("reg_no")?,
            status: row.get("status")?,
            category: row.get("category")?,
            nature: row.get("nature")?,
            priority: row.get("priority")?,
            lead_unit: row.get("lead_unit")?,
            window: row.get("window")?,
            registered_at_ms: row.get("registered_at_ms")?,
            updated_at_ms: row.get("updated_at_ms")?,
            due_ms: row.get("due_ms")?,
            clock_runs: row.get("clock_runs")?,
            first_response_due_ms: row.get("first_response_due_ms")?,
            first_response_ms: row.get("first_response_ms")?,
            closed_at_ms: row.get("closed_at_ms")?,
            rating: row.get("rating")?,
            supervision: row.get("supervision")?,
            summary: row.get("summary")?,
        })
    }
}

impl SearchText {
    pub fn of(view: &CaseView) -> SearchText {
        let mut notes = view.notes.clone();
        notes.extend(view.public_replies.iter().map(|reply| reply.text.clone()));
        SearchText { summary: view.summary.clone(), detail: view.detail.clone(), notes: notes.join("\n") }
    }

    /// The adjacent letter/digit pairs of each field, space-separated: the rows of the bigram index.
    pub fn bigrams(&self) -> String {
        let mut out = String::new();
        for field in [&self.summary, &self.detail, &self.notes] {
            let chars: Vec<char> = field.chars().collect();
            for pair in chars.windows(2) {
                if is_bigram(pair[0], pair[1]) {
                    out.push(pair[0]);
                    out.push(pair[1]);
                    out.push(' ');
                }
            }
        }
        out
    }

    /// Whether every whitespace-separated term of `query` occurs in the text (what search answers), case-insensitively.
    pub fn matches(&self, query: &str) -> bool {
        let haystacks = [self.summary.to_lowercase(), self.detail.to_lowercase(), self.notes.to_lowercase()];
        query.split_whitespace().all(|term| {
            let term = term.to_lowercase();
            haystacks.iter().any(|text| text.contains(&term))
        })
    }
}

/// Whether a pair of characters is indexed as a bigram: both letters or digits, which `unicode61` keeps together as
/// one token (punctuation and spaces would split it).
pub fn is_bigram(first: char, second: char) -> bool {
    first.is_alphanumeric() && second.is_alphanumeric()
}

pub(crate) const CASE_COLUMNS: &str = "doc_id, reg_no, status, category, nature, priority, lead_unit, window, registered_at_ms, \
     updated_at_ms, due_ms, clock_runs, first_response_due_ms, first_response_ms, closed_at_ms, rating, supervision, summary";

fn add_stats(tx: &Connection, day: i64, category: &str, stats: StatsContribution, sign: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO stats_daily (day, category, registered, closed, closed_on_time, responded, responded_on_time, rated, \
         rating_sum, satisfied) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (day, category) DO UPDATE SET registered = registered + ?3, closed = closed + ?4,
             closed_on_time = closed_on_time + ?5, responded = responded + ?6, responded_on_time = responded_on_time + ?7,
             rated = rated + ?8, rating_sum = rating_sum + ?9, satisfied = satisfied + ?10",
    )?
    .execute(params![
        day,
        category,
        sign * stats.registered,
        sign * stats.closed,
        sign * stats.closed_on_time,
        sign * stats.responded,
        sign * stats.responded_on_time,
        sign * stats.rated,
        sign * stats.rating_sum,
        sign * stats.satisfied
    ])?;
    Ok(())
}

/// Writes (or replaces) the projections of one case: the register row, its search text, its statistics and KPI facts,
/// its number in the register of numbers and its count of open conflicts.
pub(crate) fn upsert(tx: &Connection, view: &CaseView) -> rusqlite::Result<()> {
    upsert_facts(tx, view)?;
    upsert_blobs(tx, view)?;
    upsert_rows(tx, &CaseRow::of(view), &SearchText::of(view), view.conflicts.len())
}

/// The material files a case names (schema 9): replaced whole, since a removal or a purge drops some.
fn upsert_blobs(tx: &Connection, view: &CaseView) -> rusqlite::Result<()> {
    let case_id = view.case_id.as_str();
    tx.prepare_cached("DELETE FROM blobs WHERE doc_id = ?1")?.execute([case_id])?;
    // A purged case names no file any more: its key is gone, the bytes are noise (the sweep deletes them).
    if view.materials.is_empty() || view.personal.purged {
        return Ok(());
    }
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO blobs (hash, doc_id, bytes, thumb, added_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for material in view.live_materials() {
        insert.execute(rusqlite::params![material.hash, case_id, material.bytes as i64, 0, material.added_at_ms])?;
        if let Some(thumb) = &material.thumb {
            insert.execute(rusqlite::params![thumb, case_id, material.thumb_bytes as i64, 1, material.added_at_ms])?;
        }
    }
    Ok(())
}

/// The `case_facts` row of a case (`zhaowo_crdt::kpi::CaseFacts` and the keys reports group by).
fn upsert_facts(tx: &Connection, view: &CaseView) -> rusqlite::Result<()> {
    use zhaowo_crdt::kpi::{CaseFacts, GroupBy};
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let columns = CaseFacts::COLUMNS.join(", ");
        let slots: Vec<String> = (9..9 + CaseFacts::COLUMNS.len()).map(|n| format!("?{n}")).collect();
        format!(
            "INSERT OR REPLACE INTO case_facts (doc_id, registered_at_ms, month, window, unit, nature, category, modes, \
             {columns}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, {})",
            slots.join(", ")
        )
    });
    let key = |group: GroupBy| GroupBy::keys(group, view).into_iter().next().unwrap_or_default();
    let modes: String = view.modes.iter().map(|mode| format!(",{}", mode.code())).collect::<String>() + ",";
    let mut values: Vec<rusqlite::types::Value> = vec![
        view.case_id.as_str().to_owned().into(),
        view.registered_at_ms.into(),
        key(GroupBy::Month).into(),
        key(GroupBy::Window).into(),
        key(GroupBy::Unit).into(),
        key(GroupBy::Nature).into(),
        key(GroupBy::Category).into(),
        modes.into(),
    ];
    values.extend(CaseFacts::of(view).values().map(rusqlite::types::Value::from));
    tx.prepare_cached(sql)?.execute(rusqlite::params_from_iter(values))?;
    Ok(())
}

fn upsert_rows(tx: &Connection, row: &CaseRow, text: &SearchText, conflicts: usize) -> rusqlite::Result<()> {
    super::registry::record(tx, &row.case_id, &row.reg_no)?;
    set_conflicts(tx, &row.case_id, conflicts)?;
    let old = tx
        .prepare_cached(&format!("SELECT id, {CASE_COLUMNS} FROM cases WHERE doc_id = ?1"))?
        .query_row([&row.case_id], |sql| Ok((sql.get::<_, i64>("id")?, CaseRow::from_sql(sql)?)))
        .optional()?;
    if let Some((_, old_row)) = &old {
        if old_row == row {
            // The register row is unchanged; the text may still have changed (a note).
        } else {
            add_stats(tx, local_day(old_row.registered_at_ms), &old_row.category, old_row.stats(), -1)?;
            add_stats(tx, local_day(row.registered_at_ms), &row.category, row.stats(), 1)?;
        }
    } else {
        add_stats(tx, local_day(row.registered_at_ms), &row.category, row.stats(), 1)?;
    }
    tx.prepare_cached(
        "INSERT INTO cases (doc_id, reg_no, status, category, nature, priority, lead_unit, window, registered_at_ms, \
         updated_at_ms, due_ms, clock_runs, first_response_due_ms, first_response_ms, closed_at_ms, rating, supervision, summary)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
         ON CONFLICT (doc_id) DO UPDATE SET reg_no = ?2, status = ?3, category = ?4, nature = ?5, priority = ?6,
             lead_unit = ?7, window = ?8, registered_at_ms = ?9, updated_at_ms = ?10, due_ms = ?11, clock_runs = ?12,
             first_response_due_ms = ?13, first_response_ms = ?14, closed_at_ms = ?15, rating = ?16, supervision = ?17,
             summary = ?18",
    )?
    .execute(params![
        row.case_id,
        row.reg_no,
        row.status,
        row.category,
        row.nature,
        row.priority,
        row.lead_unit,
        row.window,
        row.registered_at_ms,
        row.updated_at_ms,
        row.due_ms,
        row.clock_runs,
        row.first_response_due_ms,
        row.first_response_ms,
        row.closed_at_ms,
        row.rating,
        row.supervision,
        row.summary
    ])?;
    let id: i64 = match old {
        Some((id, _)) => id,
        None => {
            tx.prepare_cached("SELECT id FROM cases WHERE doc_id = ?1")?.query_row([&row.case_id], |sql| sql.get(0))?
        }
    };
    let old_text = if old.is_some() { read_text(tx, id)? } else { None };
    if old_text.as_ref() != Some(text) {
        tx.prepare_cached("DELETE FROM cases_fts WHERE rowid = ?1")?.execute([id])?;
        tx.prepare_cached("INSERT INTO cases_fts (rowid, summary, detail, notes) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![id, text.summary, text.detail, text.notes])?;
        tx.prepare_cached("DELETE FROM cases_bigrams WHERE rowid = ?1")?.execute([id])?;
        tx.prepare_cached("INSERT INTO cases_bigrams (rowid, grams) VALUES (?1, ?2)")?
            .execute(params![id, text.bigrams()])?;
    }
    Ok(())
}

/// Removes the projections of a case (its document no longer reads as a case).
pub(crate) fn remove(tx: &Connection, case_id: &str) -> rusqlite::Result<()> {
    let old = tx
        .prepare_cached(&format!("SELECT id, {CASE_COLUMNS} FROM cases WHERE doc_id = ?1"))?
        .query_row([case_id], |sql| Ok((sql.get::<_, i64>("id")?, CaseRow::from_sql(sql)?)))
        .optional()?;
    set_conflicts(tx, case_id, 0)?;
    tx.prepare_cached("DELETE FROM case_facts WHERE doc_id = ?1")?.execute([case_id])?;
    tx.prepare_cached("DELETE FROM blobs WHERE doc_id = ?1")?.execute([case_id])?;
    if let Some((id, row)) = old {
        add_stats(tx, local_day(row.registered_at_ms), &row.category, row.stats(), -1)?;
        tx.prepare_cached("DELETE FROM cases_fts WHERE rowid = ?1")?.execute([id])?;
        tx.prepare_cached("DELETE FROM cases_bigrams WHERE rowid = ?1")?.execute([id])?;
        tx.prepare_cached("DELETE FROM cases WHERE id = ?1")?.execute([id])?;
    }
    Ok(())
}

pub(crate) fn read_text(conn: &rusqlite::Connection, id: i64) -> rusqlite::Result<Option<SearchText>> {
    conn.prepare_cached("SELECT summary, detail, notes FROM cases_fts WHERE rowid = ?1")?
        .query_row([id], |sql| Ok(SearchText { summary: sql.get(0)?, detail: sql.get(1)?, notes: sql.get(2)? }))
        .optional()
}

/// Keeps the `open_conflicts` row of a case: present with the count while the case has open conflicts.
fn set_conflicts(tx: &Connection, case_id: &str, conflicts: usize) -> rusqlite::Result<()> {
    if conflicts == 0 {
        tx.prepare_cached("DELETE FROM open_conflicts WHERE doc_id = ?1")?.execute([case_id])?;
    } else {
        tx.prepare_cached(
            "INSERT INTO open_conflicts (doc_id, conflicts) VALUES (?1, ?2)
             ON CONFLICT (doc_id) DO UPDATE SET conflicts = ?2",
        )?
        .execute(params![case_id, conflicts as i64])?;
    }
    Ok(())
}

/// The stored count of open conflicts of a case (0 without a row).
pub(crate) fn read_conflicts(conn: &Connection, case_id: &str) -> rusqlite::Result<usize> {
    let count: Option<i64> = conn
        .prepare_cached("SELECT conflicts FROM open_conflicts WHERE doc_id = ?1")?
        .query_row([case_id], |row| row.get(0))
        .optional()?;
    Ok(count.unwrap_or(0).max(0) as usize)
}
