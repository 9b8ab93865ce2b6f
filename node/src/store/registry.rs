//! Where registration numbers (登记编号) come from: the store allocates them inside the transaction that registers the
//! case, from its own `reg_numbers` table, so two requests or two processes writing one store never get one number.
//!
//! The rule (ARCHITECTURE.md, "where registration numbers come from"): a number is `{window}-{year}-{seq}` with `seq`
//! one above the highest `seq` of any case this store holds for that window and year (local or synced), picked under
//! `BEGIN IMMEDIATE` and written with `local = 1`; the partial UNIQUE index refuses a second local row with the same
//! number. A case that arrives by sync or from a file keeps the number its node gave it (`local = 0`): when it repeats
//! one already held, both cases are kept, `verify` reports the repeat and `status` counts it.

use rusqlite::{Connection, OptionalExtension, params};
use zhaowo_crdt::RegNo;

/// The next number of `window` in `year` (`None` when the year's sequence is used up). Call inside the write
/// transaction that registers the case.
pub(crate) fn next_number(conn: &Connection, window: &str, year: i32) -> rusqlite::Result<Option<RegNo>> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT max(seq) FROM reg_numbers WHERE window = ?1 AND year = ?2")?
        .query_row(params![window, year], |row| row.get(0))?;
    let last = match last {
        None => None,
        // A stored sequence above `u32` cannot come from `RegNo::parse`; treat it as used up rather than wrap.
        Some(seq) => match u32::try_from(seq) {
            Ok(seq) => Some(seq),
            Err(_) => return Ok(None),
        },
    };
    Ok(RegNo::next_after(window, year, last))
}

/// The case holding `reg_no` other than `doc_id`, if any.
pub(crate) fn holder_other_than(conn: &Connection, reg_no: &str, doc_id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT doc_id FROM reg_numbers WHERE reg_no = ?1 AND doc_id != ?2 LIMIT 1")?
        .query_row([reg_no, doc_id], |row| row.get(0))
        .optional()
}

/// Records a number this store allocated (or a pre-numbered local registration) for `doc_id`.
pub(crate) fn claim_local(conn: &Connection, doc_id: &str, reg_no: &RegNo) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO reg_numbers (doc_id, reg_no, window, year, seq, local) VALUES (?1, ?2, ?3, ?4, ?5, 1)
         ON CONFLICT (doc_id) DO UPDATE SET local = 1",
    )?
    .execute(params![doc_id, reg_no.to_string(), reg_no.window, reg_no.year, reg_no.seq])?;
    Ok(())
}

/// Records the number of a stored case (a projection write): new rows are remote (`local = 0`); an existing row is
/// left as it is (a case's number never changes).
pub(crate) fn record(conn: &Connection, doc_id: &str, reg_no: &str) -> rusqlite::Result<()> {
    let Some(parsed) = RegNo::parse(reg_no) else {
        // `CaseDoc` refuses a document without a valid number, so a case always has one; nothing to record otherwise.
        return Ok(());
    };
    conn.prepare_cached(
        "INSERT INTO reg_numbers (doc_id, reg_no, window, year, seq, local) VALUES (?1, ?2, ?3, ?4, ?5, 0)
         ON CONFLICT (doc_id) DO NOTHING",
    )?
    .execute(params![doc_id, reg_no, parsed.window, parsed.year, parsed.seq])?;
    Ok(())
}

/// The case with number `reg_no`: the one this store allocated it to, else the oldest by case id (a repeated number
/// from sync is listed by `verify`; the lookup stays deterministic).
pub(crate) fn case_id_by_reg_no(conn: &Connection, reg_no: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT doc_id FROM reg_numbers WHERE reg_no = ?1 ORDER BY local DESC, doc_id LIMIT 1")?
        .query_row([reg_no], |row| row.get(0))
        .optional()
}

/// A number held by more than one stored case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatedNumber {
    pub reg_no: String,
    /// The cases holding it, by case id.
    pub case_ids: Vec<String>,
}

/// Every number held by more than one case, in number order.
pub(crate) fn repeated(conn: &Connection) -> rusqlite::Result<Vec<RepeatedNumber>> {
    let mut statement = conn.prepare_cached(
        "SELECT reg_no, doc_id FROM reg_numbers WHERE reg_no IN
            (SELECT reg_no FROM reg_numbers GROUP BY reg_no HAVING count(*) > 1)
         ORDER BY reg_no, doc_id",
    )?;
    let mut out: Vec<RepeatedNumber> = Vec::new();
    for row in statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))? {
        let (reg_no, doc_id) = row?;
        match out.last_mut() {
            Some(last) if last.reg_no == reg_no => last.case_ids.push(doc_id),
            _ => out.push(RepeatedNumber { reg_no, case_ids: vec![doc_id] }),
        }
    }
    Ok(out)
}
