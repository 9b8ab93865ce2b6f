//! Case helpers shared by the desk, the citizen pages, Open311 and the CLI: finding a case by its 登记编号 (through
//! the store's index of numbers) and checking a 查询码 against the stored case. Registration numbers themselves are
//! allocated by the store (`Store::register_new`), never here.

use crate::store::{ReadError, Store};
use zhaowo_crdt::{CaseDoc, RegNo};

/// The case id of a registration number, if a case with it is stored (`Store::case_id_by_reg_no`).
pub async fn find_reg_no(store: &Store, reg_no: &RegNo) -> Result<Option<String>, ReadError> {
    store.case_id_by_reg_no(reg_no).await
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
