//! Case helpers shared by the desk, the citizen pages, Open311 and the CLI: the next registration number of a window,
//! finding a case by its 登记编号, and checking a 查询码 against the stored case.

use crate::store::{PAGE_ROWS_MAX, ReadError, RegisterQuery, Store};
use zhaowo_crdt::time::Date;
use zhaowo_crdt::{CaseDoc, RegNo};

/// The next registration number of `window` in `year`: the highest stored so far plus one (`None` when the year's
/// sequence is used up). Callers serialise allocation and registration (two at once would get the same number).
pub async fn next_reg_no(store: &Store, window: &str, year: i32) -> Result<Option<RegNo>, ReadError> {
    let mut last = None;
    let mut query = RegisterQuery {
        window: Some(window.to_owned()),
        registered_from_ms: Date::new(year, 1, 1).map(|d| d.at_minute_ms(0)),
        limit: PAGE_ROWS_MAX,
        ..RegisterQuery::default()
    };
    loop {
        let page = store.register_page(query.clone()).await?;
        for row in &page.rows {
            if let Some(reg_no) = RegNo::parse(&row.reg_no).filter(|r| r.window == window && r.year == year) {
                last = last.max(Some(reg_no.seq));
            }
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    Ok(RegNo::next_after(window, year, last))
}

/// The case id of a registration number, if a case with it is stored.
pub async fn find_reg_no(store: &Store, reg_no: &RegNo) -> Result<Option<String>, ReadError> {
    let mut query = RegisterQuery {
        window: Some(reg_no.window.clone()),
        registered_from_ms: Date::new(reg_no.year, 1, 1).map(|d| d.at_minute_ms(0)),
        registered_to_ms: Date::new(reg_no.year + 1, 1, 1).map(|d| d.at_minute_ms(0)),
        limit: PAGE_ROWS_MAX,
        ..RegisterQuery::default()
    };
    let wanted = reg_no.to_string();
    loop {
        let page = store.register_page(query.clone()).await?;
        if let Some(row) = page.rows.iter().find(|row| row.reg_no == wanted) {
            return Ok(Some(row.case_id.clone()));
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(None),
        }
    }
}

/// Checks a typed 查询码 against the case's stored hash (constant time). Reads the case's changes and loads them
/// into a scratch document: the read model deliberately does not carry the hash.
pub async fn query_code_matches(store: &Store, case_id: &str, typed: &str) -> Result<bool, ReadError> {
    let changes = store.changes_since(case_id, Vec::new()).await?;
    let mut doc = automerge::AutoCommit::new();
    for change in changes {
        if doc.load_incremental(&change).is_err() {
            return Ok(false);
        }
    }
    Ok(CaseDoc::from_automerge(doc).is_ok_and(|case| case.query_code_matches(typed)))
}
