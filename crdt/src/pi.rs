//! 诉求人信息: the citizen's personal data and its masked forms.
//!
//! PIPL asks us to minimise and mask. Pages, exports and the public lookup only ever see [`MaskedPersonalData`];
//! the full record leaves the crate only through a `RevealPersonalData` command, which is recorded as an event. In the
//! case document the record is one sealed value (`seal`), readable only where the case key is; its public flags
//! (callback, publication, anonymity) are kept apart in clear, since routing and KPIs need them on every node. A purge
//! removes the record from the current document and makes every node destroy the case key, so the ciphertext left in
//! the history can no longer be opened.

use crate::limits::{LOCATION_CHARS_MAX, NAME_CHARS_MAX};
use crate::model::{ContactPref, SubjectType};
use serde::{Deserialize, Serialize};

/// The full personal record of one case.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PersonalData {
    pub subject_type: Option<SubjectType>,
    pub name: Option<String>,
    /// Digits only after [`normalize_phone`].
    pub phone: Option<String>,
    pub address: Option<String>,
    pub enterprise_name: Option<String>,
    pub contact_pref: Option<ContactPref>,
    /// 同意回访.
    pub callback_ok: bool,
    /// 同意脱敏公开.
    pub publish_ok: bool,
    /// 匿名: excluded from the 回访率 denominator.
    pub anonymous: bool,
    /// 上门地址, purged after the visit.
    pub visit_address: Option<String>,
}

/// What every page and export shows of the personal record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MaskedPersonalData {
    pub subject_type: Option<SubjectType>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub enterprise_name: Option<String>,
    pub contact_pref: Option<ContactPref>,
    pub callback_ok: bool,
    /// 同意脱敏公开: the citizen agreed that the case be listed publicly (Open311), without personal data.
    pub publish_ok: bool,
    pub anonymous: bool,
    /// The record was purged (个人信息已清除): nothing can be revealed any more.
    pub purged: bool,
    /// The record is sealed and this node does not hold the case key (本机无权查看): only the public flags are known.
    pub sealed: bool,
}

/// Why a personal record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersonalDataError {
    /// Not a mainland mobile (11 digits, 1[3-9]…) nor a landline with area code. The value is not kept: a mistyped
    /// phone number is still personal data, and errors reach logs and terminals (issue 13 §7).
    #[error(
        "invalid phone number ({chars} characters): expected an 11-digit mobile (13812341234) or a landline with area code (027-85551234)"
    )]
    InvalidPhone { chars: usize },
    /// A name, address or enterprise name is longer than its limit.
    #[error("{field} is {chars} characters long, the limit is {max}")]
    TooLong { field: &'static str, chars: usize, max: usize },
    /// A field contains a control character (a pasted form feed, a NUL from a bad encoder).
    #[error("{field} contains a control character")]
    ControlCharacter { field: &'static str },
}

/// Strips spaces and hyphens and checks the shape of a Chinese phone number; returns the digits.
pub fn normalize_phone(text: &str) -> Result<String, PersonalDataError> {
    let digits: String = text.chars().filter(|c| !matches!(c, ' ' | '-' | '\u{3000}')).collect();
    let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let mobile = digits.len() == 11 && digits.starts_with('1') && matches!(digits.as_bytes()[1], b'3'..=b'9');
    let landline = digits.starts_with('0') && (10..=12).contains(&digits.len());
    if all_digits && (mobile || landline) {
        Ok(digits)
    } else {
        Err(PersonalDataError::InvalidPhone { chars: text.chars().count() })
    }
}

/// `王小明` → `王**`, `王五` → `王*`: keep the family name, hide the rest.
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        None => String::new(),
        Some(first) => std::iter::once(first).chain(chars.map(|_| '*')).collect(),
    }
}

/// `13812341234` → `138****1234`; a landline keeps its area code and last four digits.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().collect();
    let n = digits.len();
    if n <= 4 {
        return "*".repeat(n);
    }
    let keep_head = if digits[0] == '1' { 3 } else { 4.min(n - 4) };
    let head: String = digits[..keep_head].iter().collect();
    let tail: String = digits[n - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(n - keep_head - 4))
}

/// An address keeps its first six characters (district and street), the rest is hidden.
pub fn mask_address(address: &str) -> String {
    let kept: String = address.chars().take(6).collect();
    if address.chars().count() > 6 { format!("{kept}****") } else { kept }
}

impl PersonalData {
    /// Checks lengths and the phone's shape; returns the record with the phone normalised.
    pub fn validated(mut self) -> Result<PersonalData, PersonalDataError> {
        for (field, value, max) in [
            ("name", &self.name, NAME_CHARS_MAX),
            ("address", &self.address, LOCATION_CHARS_MAX),
            ("enterprise_name", &self.enterprise_name, LOCATION_CHARS_MAX),
            ("visit_address", &self.visit_address, LOCATION_CHARS_MAX),
        ] {
            if let Some(value) = value {
                check_plain_text(field, value, max)?;
            }
        }
        if let Some(phone) = &self.phone {
            self.phone = Some(normalize_phone(phone)?);
        }
        Ok(self)
    }

    pub fn masked(&self) -> MaskedPersonalData {
        MaskedPersonalData {
            subject_type: self.subject_type,
            name: self.name.as_deref().map(mask_name),
            phone: self.phone.as_deref().map(mask_phone),
            address: self.address.as_deref().map(mask_address),
            // The name of a legal person is not personal data (企业专区).
            enterprise_name: self.enterprise_name.clone(),
            contact_pref: self.contact_pref,
            callback_ok: self.callback_ok,
            publish_ok: self.publish_ok,
            anonymous: self.anonymous,
            purged: false,
            sealed: false,
        }
    }
}

pub(crate) fn check_plain_text(field: &'static str, value: &str, max: usize) -> Result<(), PersonalDataError> {
    let chars = value.chars().count();
    if chars > max {
        return Err(PersonalDataError::TooLong { field, chars, max });
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(PersonalDataError::ControlCharacter { field });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_as_the_hall_prints_them() {
        assert_eq!(mask_name("王五"), "王*");
        assert_eq!(mask_name("欧阳小明"), "欧***");
        assert_eq!(mask_name(""), "");
        assert_eq!(mask_phone("13812341234"), "138****1234");
        assert_eq!(mask_phone("02785551234"), "0278***1234");
        assert_eq!(mask_address("武汉市江岸区某某路1号"), "武汉市江岸区****");
    }

    #[test]
    fn phones_are_checked_and_normalised() {
        assert_eq!(normalize_phone("138 1234 1234").unwrap(), "13812341234");
        assert_eq!(normalize_phone("027-85551234").unwrap(), "02785551234");
        for bad in ["", "12345", "12812341234", "1381234123x", "138123412345", "+8613812341234"] {
            assert!(normalize_phone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_over_the_limits_are_refused() {
        let long = PersonalData { name: Some("王".repeat(NAME_CHARS_MAX + 1)), ..PersonalData::default() };
        assert!(matches!(long.validated(), Err(PersonalDataError::TooLong { field: "name", .. })));
        let nul = PersonalData { address: Some("a\0b".into()), ..PersonalData::default() };
        assert!(matches!(nul.validated(), Err(PersonalDataError::ControlCharacter { .. })));
    }
}
