//! Duplicate suggestions: the same citizen (same phone tag) with the same category within a few days.
//!
//! A suggestion is only shown to the 督查科; merging is always an explicit `mark_duplicate` event, never automatic
//! (DOMAIN.md §6.3).

use crate::ids::CaseId;
use crate::view::CaseView;

/// Cases registered within seven days of each other are suggested (DOMAIN.md §6.3).
pub const SUGGESTION_WINDOW_MS: i64 = 7 * 86_400_000;

/// Pairs `(older, newer)` of open, not yet merged cases with the same phone tag and category within `window_ms`.
pub fn suggestions(views: &[CaseView], window_ms: i64) -> Vec<(CaseId, CaseId)> {
    let mut candidates: Vec<&CaseView> =
        views.iter().filter(|v| v.phone_tag.is_some() && v.status.is_open() && v.duplicate_of.is_none()).collect();
    candidates.sort_by(|a, b| {
        (&a.phone_tag, &a.category, a.registered_at_ms).cmp(&(&b.phone_tag, &b.category, b.registered_at_ms))
    });
    let mut pairs = Vec::new();
    for (i, older) in candidates.iter().enumerate() {
        for newer in &candidates[i + 1..] {
            if newer.phone_tag != older.phone_tag || newer.category != older.category {
                break;
            }
            if newer.registered_at_ms - older.registered_at_ms <= window_ms
                && !older.duplicates.contains(&newer.case_id)
            {
                pairs.push((older.case_id.clone(), newer.case_id.clone()));
            }
        }
    }
    pairs
}
