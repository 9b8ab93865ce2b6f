//! What the public submits, decoded strictly and checked field by field before anything is stored: the citizen
//! report form (`/r/{window}`, and the desk's own registration form) and the Open311 `POST requests.json` body.
//!
//! Pure (no I/O), so the fuzz target `citizen_bodies` drives exactly what the node's handlers run. Every refusal is a
//! zh-CN sentence for the citizen; the node answers it with a 4xx and stores nothing.

use crate::hall::Hall;
use crate::limits::{DETAIL_CHARS_MAX, NAME_CHARS_MAX, SUMMARY_CHARS_MAX};
use crate::model::Nature;
use crate::pi::{PersonalData, normalize_phone};
use crate::public_text::{self, hidden_character};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Characters of an Open311 coordinate (`-179.123456789`): a longer one is not a coordinate.
pub const COORDINATE_CHARS_MAX: usize = 32;
/// Characters of an Open311 address string: a street address fits the location limit of a case.
pub const ADDRESS_CHARS_MAX: usize = crate::limits::LOCATION_CHARS_MAX;

/// Why a form body could not be decoded. Nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A name or value is not UTF-8 once percent-decoded (lenient decoders put U+FFFD in its place).
    #[error("the form holds bytes that are not UTF-8")]
    InvalidUtf8,
    /// The body is not `application/x-www-form-urlencoded` as the fields expect.
    #[error("malformed form: {0}")]
    Malformed(String),
}

impl FormError {
    /// The sentence a citizen sees.
    pub fn zh(&self) -> &'static str {
        match self {
            FormError::InvalidUtf8 => "提交内容含有无法识别的字符（不是有效的 UTF-8 文本），请返回重新填写。",
            FormError::Malformed(_) => "表单内容不完整或格式不正确，请返回重新填写。",
        }
    }
}

/// Decodes an `application/x-www-form-urlencoded` body into `T`, refusing any name or value that is not UTF-8 after
/// percent-decoding (instead of replacing it with U+FFFD as `serde_urlencoded` does).
pub fn decode_form<T: DeserializeOwned>(body: &[u8]) -> Result<T, FormError> {
    for piece in body.split(|&b| b == b'&') {
        for part in piece.splitn(2, |&b| b == b'=') {
            let plus_as_space: Vec<u8> = part.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
            let decoded: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
            if std::str::from_utf8(&decoded).is_err() {
                return Err(FormError::InvalidUtf8);
            }
        }
    }
    serde_urlencoded::from_bytes(body).map_err(|error| FormError::Malformed(error.to_string()))
}

/// Browsers send textarea line breaks as CR LF; the case rules take LF only.
pub fn clean(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n").trim().to_owned()
}

/// What the report form holds (every field optional so a missing one gets a clear message, not a parse error).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct ReportForm {
    pub csrf: String,
    pub nature: String,
    pub category: String,
    pub summary: String,
    pub detail: String,
    pub name: String,
    pub phone: String,
    pub consent: Option<String>,
    /// 同意脱敏公开: the case may be listed publicly (Open311), without personal data.
    pub publish: Option<String>,
    /// 同意接收短信通知 (issue 15 §4).
    pub sms: Option<String>,
}

/// A citizen's report, checked field by field.
#[derive(Debug, Clone)]
pub struct CheckedReport {
    pub nature: Nature,
    pub category: String,
    pub summary: String,
    pub detail: String,
    pub personal: PersonalData,
}

/// The message for a public summary that would publish personal data.
pub const SUMMARY_PERSONAL_ZH: &str =
    "诉求摘要会公开显示，请不要填写电话号码、证件号码或电子邮箱（可写在详细情况中）。";

/// Checks one text field: required, length, control and invisible characters.
fn check_text(errors: &mut Vec<String>, label: &str, text: &str, max: usize, required: bool) {
    let chars = text.chars().count();
    if required && chars == 0 {
        errors.push(format!("请填写{label}。"));
    } else if chars > max {
        errors.push(format!("{label}最多 {max} 个字，您填写了 {chars} 个字。"));
    } else if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        errors.push(format!("{label}含有无法识别的控制字符。"));
    } else if let Some(c) = hidden_character(text) {
        errors.push(format!("{label}含有不可见的格式字符（U+{:04X}），请删除后重新填写。", c as u32));
    }
}

/// Checks the summary as public text (after its field checks passed).
fn check_summary(errors: &mut Vec<String>, summary: &str) {
    if public_text::personal_number(summary).is_some() || public_text::has_email(summary) {
        errors.push(SUMMARY_PERSONAL_ZH.to_owned());
    }
}

/// Checks a report form; the errors are zh-CN sentences, one per problem.
pub fn check_report(hall: &Hall, form: &ReportForm) -> Result<CheckedReport, Vec<String>> {
    let mut errors = Vec::new();
    let nature = Nature::parse(&form.nature);
    if nature.is_none() {
        errors.push("请选择诉求性质。".to_owned());
    }
    if !hall.categories.contains_key(&form.category) {
        errors.push("请选择诉求类别。".to_owned());
    }
    let summary = clean(&form.summary);
    let detail = clean(&form.detail);
    let name = clean(&form.name);
    let before = errors.len();
    check_text(&mut errors, "诉求摘要", &summary, SUMMARY_CHARS_MAX, true);
    if errors.len() == before {
        check_summary(&mut errors, &summary);
    }
    check_text(&mut errors, "详细情况", &detail, DETAIL_CHARS_MAX, true);
    check_text(&mut errors, "姓名", &name, NAME_CHARS_MAX, false);
    let consent = form.consent.is_some();
    let phone_text = form.phone.trim();
    let sms = form.sms.is_some();
    let phone = if phone_text.is_empty() {
        if consent {
            errors.push("同意回访时请填写联系电话。".to_owned());
        }
        if sms {
            errors.push("同意接收短信通知时请填写手机号码。".to_owned());
        }
        None
    } else {
        match normalize_phone(phone_text) {
            Ok(phone) => Some(phone),
            Err(_) => {
                errors
                    .push("联系电话格式不正确：请填写 11 位手机号码或带区号的固定电话（如 027-85551234）。".to_owned());
                None
            }
        }
    };
    match (errors.is_empty(), nature) {
        (true, Some(nature)) => Ok(CheckedReport {
            nature,
            category: form.category.clone(),
            summary,
            detail,
            personal: PersonalData {
                name: (!name.is_empty()).then_some(name),
                phone,
                callback_ok: consent,
                publish_ok: form.publish.is_some(),
                sms_ok: sms,
                anonymous: form.name.trim().is_empty() && phone_text.is_empty(),
                ..PersonalData::default()
            },
        }),
        _ => Err(errors),
    }
}

/// The fields of Open311 `POST requests.json` (the spec's names; location is optional in a service hall).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Open311Request {
    pub service_code: String,
    pub description: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: String,
    pub email: String,
    pub address_string: String,
    pub lat: String,
    pub long: String,
    #[serde(rename = "attribute[nature]")]
    pub nature: String,
    #[serde(rename = "attribute[callback]")]
    pub callback: String,
    /// `true`, `1` or `yes`: the citizen agrees that the request be listed publicly (同意脱敏公开).
    #[serde(rename = "attribute[publish]")]
    pub publish: String,
}

/// A coordinate in degrees: a finite decimal number within `±limit`.
fn coordinate(text: &str, limit: f64) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() || text.len() > COORDINATE_CHARS_MAX {
        return None;
    }
    // Plain decimals only: `NaN`, `inf` and exponents are valid floats in Rust but not coordinates.
    if !text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.')) {
        return None;
    }
    text.parse::<f64>().ok().filter(|value| value.is_finite() && value.abs() <= limit)
}

/// Checks an Open311 request; the error is one zh-CN sentence naming the field (Open311 answers one error).
pub fn check_open311(hall: &Hall, form: &Open311Request) -> Result<CheckedReport, String> {
    let Some(category) = hall.categories.get(&form.service_code) else {
        return Err("service_code 缺失或不存在".to_owned());
    };
    let description = clean(&form.description);
    if description.is_empty() {
        return Err("description 不能为空".to_owned());
    }
    if description.chars().count() > DETAIL_CHARS_MAX {
        return Err(format!("description 最多 {DETAIL_CHARS_MAX} 个字"));
    }
    let nature = if form.nature.is_empty() { Some(Nature::Help) } else { Nature::parse(&form.nature) };
    let Some(nature) = nature else {
        return Err("attribute[nature] 不是有效的诉求性质代码".to_owned());
    };
    let name = clean(&format!("{}{}", form.last_name.trim(), form.first_name.trim()));
    if name.chars().count() > NAME_CHARS_MAX {
        return Err(format!("姓名最多 {NAME_CHARS_MAX} 个字"));
    }
    let location = clean(&form.address_string);
    if location.chars().count() > ADDRESS_CHARS_MAX {
        return Err(format!("address_string 最多 {ADDRESS_CHARS_MAX} 个字"));
    }
    for (field, text) in [("description", &description), ("first_name/last_name", &name), ("address_string", &location)]
    {
        if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(format!("{field} 含有控制字符"));
        }
        if let Some(c) = hidden_character(text) {
            return Err(format!("{field} 含有不可见的格式字符（U+{:04X}）", c as u32));
        }
    }
    let phone = if form.phone.trim().is_empty() {
        None
    } else {
        match normalize_phone(form.phone.trim()) {
            Ok(phone) => Some(phone),
            Err(_) => return Err("phone 格式不正确".to_owned()),
        }
    };
    let coordinates = match (form.lat.trim().is_empty(), form.long.trim().is_empty()) {
        (true, true) => None,
        _ => match (coordinate(&form.lat, 90.0), coordinate(&form.long, 180.0)) {
            (Some(lat), Some(long)) => Some((lat, long)),
            (None, _) => return Err("lat 须为 -90 到 90 之间的十进制度数（与 long 一起提供）".to_owned()),
            (_, None) => return Err("long 须为 -180 到 180 之间的十进制度数（与 lat 一起提供）".to_owned()),
        },
    };
    let mut detail = description;
    if !location.is_empty() {
        detail = format!("{detail}\n地点：{location}");
    }
    if let Some((lat, long)) = coordinates {
        detail = format!("{detail}\n坐标：{lat}, {long}");
    }
    if detail.chars().count() > DETAIL_CHARS_MAX {
        return Err(format!("description 与地点合计最多 {DETAIL_CHARS_MAX} 个字"));
    }
    Ok(CheckedReport {
        nature,
        category: form.service_code.clone(),
        // The public summary: the service name only (a description may carry personal data).
        summary: format!("{}诉求（在线提交）", category.name),
        detail,
        personal: PersonalData {
            name: (!name.is_empty()).then_some(name),
            callback_ok: phone.is_some() && matches!(form.callback.as_str(), "true" | "1" | "yes"),
            publish_ok: matches!(form.publish.as_str(), "true" | "1" | "yes"),
            anonymous: phone.is_none(),
            phone,
            ..PersonalData::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_refused_not_replaced() {
        for body in [&b"summary=%FF%FE"[..], b"detail=%E4%BD", b"summary=\xFF", b"%FF=x"] {
            assert_eq!(decode_form::<ReportForm>(body).unwrap_err(), FormError::InvalidUtf8, "{body:?}");
        }
        let form: ReportForm = decode_form(b"summary=%E8%B7%AF%E7%81%AF+x&detail=a%2Bb").unwrap();
        assert_eq!((form.summary.as_str(), form.detail.as_str()), ("路灯 x", "a+b"));
    }

    #[test]
    fn coordinates_are_finite_decimals_in_range() {
        for (text, limit, ok) in [
            ("30.58", 90.0, true),
            ("-179.5", 180.0, true),
            ("abc", 90.0, false),
            ("999", 90.0, false),
            ("NaN", 90.0, false),
            ("inf", 90.0, false),
            ("1e1", 90.0, false),
            ("<script>", 90.0, false),
            ("", 90.0, false),
        ] {
            assert_eq!(coordinate(text, limit).is_some(), ok, "{text}");
        }
    }
}
