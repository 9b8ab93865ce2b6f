//! Identifiers: case and event ids (ULIDs, unique without coordination), registration numbers (登记编号, allocated by the
//! store) and query codes (查询码).
//!
//! Nothing here draws randomness: callers pass the entropy they drew, so tests and simulations are reproducible.

use crate::limits::CODE_CHARS_MAX;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// A ULID: 48 bits of milliseconds then 80 bits of caller-supplied entropy, time-sortable, made offline.
fn ulid_string(now_ms: i64, entropy: u128) -> String {
    let ms = u64::try_from(now_ms.max(0)).unwrap_or(0) & ((1 << 48) - 1);
    ulid::Ulid::from_parts(ms, entropy & ((1 << 80) - 1)).to_string()
}

fn is_ulid(text: &str) -> bool {
    text.len() == 26 && ulid::Ulid::from_string(text).is_ok()
}

/// 案件标识: the document id of a case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CaseId(String);

impl CaseId {
    pub fn new(now_ms: i64, entropy: u128) -> CaseId {
        CaseId(ulid_string(now_ms, entropy))
    }
    pub fn parse(text: &str) -> Option<CaseId> {
        is_ulid(text).then(|| CaseId(text.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id of one event in a case's log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(String);

impl EventId {
    pub fn new(now_ms: i64, entropy: u128) -> EventId {
        EventId(ulid_string(now_ms, entropy))
    }
    pub fn parse(text: &str) -> Option<EventId> {
        is_ulid(text).then(|| EventId(text.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_conversions {
    ($($name:ident),+) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<$name, String> {
                $name::parse(&text).ok_or_else(|| format!(concat!("invalid ", stringify!($name), " `{}`"), text))
            }
        }
    )+};
}
string_newtype_conversions!(CaseId, EventId);

/// A window, unit or category code: 1–16 ASCII letters, digits, `_` (e.g. `BBC01`, `2F03`, `BDC`).
pub fn is_valid_code(code: &str) -> bool {
    !code.is_empty() && code.len() <= CODE_CHARS_MAX && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// 登记编号 `{window}-{year}-{seq}`, e.g. `2F03-2026-0154`.
///
/// Each node registers under its own window code (the roster gives each enrolled node a distinct code); within a
/// node, the store allocates the sequence inside the transaction that stores the case (`node::store`'s register of
/// numbers, with a UNIQUE index), so two processes or requests never get one number. [`RegNo::next_after`] is the
/// arithmetic it uses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegNo {
    pub window: String,
    pub year: i32,
    pub seq: u32,
}

/// The sequence part has at least four digits and at most this value: a window registers ~154 cases a year.
pub const REG_SEQ_MAX: u32 = 999_999;

impl RegNo {
    /// The registration number after `last` (the highest this node has issued for `window` in `year`).
    pub fn next_after(window: &str, year: i32, last: Option<u32>) -> Option<RegNo> {
        let seq = last.map_or(Some(1), |seq| seq.checked_add(1))?;
        (is_valid_code(window) && seq <= REG_SEQ_MAX).then(|| RegNo { window: window.to_owned(), year, seq })
    }

    pub fn parse(text: &str) -> Option<RegNo> {
        let (rest, seq) = text.rsplit_once('-')?;
        let (window, year) = rest.rsplit_once('-')?;
        if seq.len() < 4 || !seq.bytes().all(|b| b.is_ascii_digit()) || year.len() != 4 || !is_valid_code(window) {
            return None;
        }
        let seq: u32 = seq.parse().ok()?;
        (1..=REG_SEQ_MAX).contains(&seq).then_some(())?;
        Some(RegNo { window: window.to_owned(), year: year.parse().ok()?, seq })
    }
}

impl fmt::Display for RegNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:04}-{:04}", self.window, self.year, self.seq)
    }
}

impl From<RegNo> for String {
    fn from(reg_no: RegNo) -> String {
        reg_no.to_string()
    }
}

impl TryFrom<String> for RegNo {
    type Error = String;
    fn try_from(text: String) -> Result<RegNo, String> {
        RegNo::parse(&text).ok_or_else(|| format!("invalid registration number `{text}`"))
    }
}

/// The alphabet of query codes: digits and capitals without the look-alikes 0/O, 1/I/L (read aloud over the phone).
const QUERY_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// 8 characters of a 31-letter alphabet: ~39.6 bits. Lookups are rate-limited per client by the node.
pub const QUERY_CODE_CHARS: usize = 8;

/// 查询码: the citizen's receipt secret for looking up progress. Only its hash is stored in the case.
#[derive(Clone, PartialEq, Eq)]
pub struct QueryCode(String);

impl fmt::Debug for QueryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("QueryCode(****)")
    }
}

impl QueryCode {
    /// Makes a code from caller randomness (use at least 40 random bits).
    pub fn from_entropy(mut entropy: u64) -> QueryCode {
        let base = QUERY_ALPHABET.len() as u64;
        let code = (0..QUERY_CODE_CHARS)
            .map(|_| {
                let digit = QUERY_ALPHABET[(entropy % base) as usize];
                entropy /= base;
                char::from(digit)
            })
            .collect();
        QueryCode(code)
    }

    /// Parses what a citizen typed: case-insensitive, spaces ignored.
    pub fn parse(text: &str) -> Option<QueryCode> {
        let code: String = text.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
        (code.len() == QUERY_CODE_CHARS && code.bytes().all(|b| QUERY_ALPHABET.contains(&b))).then_some(QueryCode(code))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stored form: SHA-256 over a domain tag, the case id and the code, hex.
    pub fn hash_for(&self, case_id: &CaseId) -> String {
        hex_encode(&query_digest(case_id, self.0.as_bytes()))
    }
}

fn query_digest(case_id: &CaseId, code: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"zhaowo-query-code-v1\0");
    hasher.update(case_id.as_str().as_bytes());
    hasher.update(b"\0");
    hasher.update(code);
    hasher.finalize().into()
}

/// Checks a typed code against the stored hash in constant time (no early exit on the first differing byte).
pub fn query_code_matches(case_id: &CaseId, stored_hash_hex: &str, typed: &str) -> bool {
    let Some(stored) = hex_decode(stored_hash_hex) else { return false };
    // An unparseable code still costs one hash, so a wrong format is not faster than a wrong code.
    let typed_bytes = QueryCode::parse(typed).map_or_else(|| typed.as_bytes().to_vec(), |code| code.0.into_bytes());
    let digest = query_digest(case_id, &typed_bytes);
    stored.len() == digest.len() && bool::from(digest.as_slice().ct_eq(&stored))
}

/// Lowercase hex of bytes (the one hex encoder of the workspace, over the `hex` crate).
pub fn hex_encode(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Bytes of lowercase or uppercase hex; `None` for odd lengths or other characters (a sign included: the hand-written
/// decoder this replaced took `+f` for a byte, as `u8::from_str_radix` does).
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reg_numbers_print_parse_and_count() {
        let first = RegNo::next_after("2F03", 2026, None).unwrap();
        assert_eq!(first.to_string(), "2F03-2026-0001");
        let next = RegNo::next_after("2F03", 2026, Some(153)).unwrap();
        assert_eq!(next.to_string(), "2F03-2026-0154");
        assert_eq!(RegNo::parse("2F03-2026-0154"), Some(next));
        assert_eq!(RegNo::parse("BBC01-2025-12345").unwrap().seq, 12_345);
        for bad in ["", "2F03-2026-154", "2F03-26-0154", "2F-03-2026-x154", "-2026-0001", "2F03-2026-0000"] {
            assert_eq!(RegNo::parse(bad), None, "{bad}");
        }
        assert_eq!(RegNo::next_after("bad code", 2026, None), None);
        assert_eq!(RegNo::next_after("W1", 2026, Some(REG_SEQ_MAX)), None);
    }

    #[test]
    fn query_codes_hash_and_check() {
        let case_id = CaseId::new(1_700_000_000_000, 42);
        let code = QueryCode::from_entropy(0x1234_5678_9abc);
        assert_eq!(code.as_str().len(), QUERY_CODE_CHARS);
        let stored = code.hash_for(&case_id);
        assert!(!stored.contains(code.as_str()));
        assert!(query_code_matches(&case_id, &stored, code.as_str()));
        assert!(query_code_matches(&case_id, &stored, &code.as_str().to_lowercase()));
        assert!(!query_code_matches(&case_id, &stored, "AAAAAAAA"));
        assert!(!query_code_matches(&case_id, &stored, ""));
        assert!(!query_code_matches(&CaseId::new(1, 1), &stored, code.as_str()));
        assert!(!query_code_matches(&case_id, "zz", code.as_str()));
        assert_eq!(format!("{code:?}"), "QueryCode(****)");
    }

    #[test]
    fn ulids_sort_by_time() {
        let a = CaseId::new(1_000, u128::MAX);
        let b = CaseId::new(1_001, 0);
        assert!(a < b);
        assert!(CaseId::parse(a.as_str()).is_some());
        assert!(CaseId::parse("not-a-ulid").is_none());
    }
}
