//! Texts to citizens (issue 15 §4, §5): the SMS templates and the canned replies (服务用语) of the hall
//! configuration, their placeholders and checks, which event asks for which SMS, and the text it renders to.
//!
//! Pure, like the rest of the crate: the node's outbox (`node::outbox`) decides *when* to send and to which phone;
//! this module decides *what* (the template of an event) and checks what an admin imports.
//!
//! A template holds plain text and placeholders in braces, e.g. `您的诉求已登记，编号{登记编号}，查询码{查询码}。`.
//! Each kind allows the placeholders listed by [`SmsKind::placeholders`]; an unknown or misplaced one is refused at
//! import. `{查询码}` is allowed only in the `registered` template: the code is stored only hashed, so the text can be
//! built only by the registering node, at registration (the outbox keeps the code with the message until it is sent).

use crate::limits::SUMMARY_CHARS_MAX;
use crate::model::{Nature, Status};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Characters of one SMS template: a long SMS is split by the carrier at 70 characters a part; 300 is four parts and
/// a limit an admin notices before the citizen's phone does.
pub const SMS_TEMPLATE_CHARS_MAX: usize = 300;
/// Canned replies in one hall: a few per nature and state; 256 keeps the desk's list usable.
pub const CANNED_REPLIES_MAX: usize = 256;
/// Characters of a canned reply's title (the list entry the clerk picks).
pub const CANNED_TITLE_CHARS_MAX: usize = 32;
/// Characters of a canned reply's text: what a reply may hold ([`SUMMARY_CHARS_MAX`] × 4, a few paragraphs).
pub const CANNED_TEXT_CHARS_MAX: usize = SUMMARY_CHARS_MAX * 4;
/// Characters a placeholder's value contributes at most (a long reply is cut with …): keeps an SMS a few parts long.
pub const PLACEHOLDER_VALUE_CHARS_MAX: usize = 120;

crate::model::vocabulary! {
    /// Which SMS a case event asks for (the key of a template in the hall configuration).
    SmsKind {
        Registered = ("registered", "登记成功"),
        Replied = ("replied", "已答复"),
        Supplement = ("supplement", "待补充材料"),
        RatingInvite = ("rating_invite", "邀请评价"),
        BadRatingFeedback = ("bad_rating", "差评反馈"),
    }
}

/// Every placeholder a template may use.
pub const PLACEHOLDERS: &[&str] = &["登记编号", "查询码", "大厅", "诉求类别", "答复", "补充材料"];

impl SmsKind {
    /// The placeholders allowed in this kind's template.
    pub fn placeholders(self) -> &'static [&'static str] {
        match self {
            SmsKind::Registered => &["登记编号", "查询码", "大厅", "诉求类别"],
            SmsKind::Replied => &["登记编号", "大厅", "诉求类别", "答复"],
            SmsKind::Supplement => &["登记编号", "大厅", "诉求类别", "补充材料"],
            SmsKind::RatingInvite | SmsKind::BadRatingFeedback => &["登记编号", "大厅", "诉求类别"],
        }
    }
}

/// The SMS an event asks for, if any: 登记 (`Registered`), a public reply or 办理完毕 (`ReplyPublished`,
/// `Resolved`), 待补充 (`Suspended`, with what to bring) and 办结 (`Closed`: the invitation to rate).
/// `BadRatingFeedback` follows the 督查科's 反馈 step of a 差评 task.
pub fn sms_for(kind: &crate::EventKind) -> Option<(SmsKind, BTreeMap<&'static str, String>)> {
    use crate::EventKind as K;
    let one = |name: &'static str, value: &str| BTreeMap::from([(name, value.to_owned())]);
    match kind {
        K::Registered { .. } => Some((SmsKind::Registered, BTreeMap::new())),
        K::ReplyPublished { text } => Some((SmsKind::Replied, one("答复", text))),
        K::Resolved { reply, .. } => Some((SmsKind::Replied, one("答复", reply))),
        K::Suspended { reason } => Some((SmsKind::Supplement, one("补充材料", reason))),
        K::Closed { .. } => Some((SmsKind::RatingInvite, BTreeMap::new())),
        // The 督查科's 反馈 to a 差评: the text itself is read on the lookup page (behind the 查询码), not sent.
        K::BadReviewStepRecorded { step: crate::model::ReviewStep::Feedback, .. } => {
            Some((SmsKind::BadRatingFeedback, BTreeMap::new()))
        }
        _ => None,
    }
}

/// A canned reply (服务用语) offered in the desk's reply box, for cases of a nature and/or in a state (none: all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CannedReply {
    pub title: String,
    pub text: String,
    #[serde(default)]
    pub nature: Option<Nature>,
    #[serde(default)]
    pub status: Option<Status>,
}

/// The texts of a hall: SMS templates by [`SmsKind`] code, and canned replies. A hall document written before they
/// existed holds none (no SMS is sent, no canned reply offered).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Messages {
    pub sms: BTreeMap<String, String>,
    pub canned_replies: Vec<CannedReply>,
}

/// Why the texts of a hall were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessagesError {
    /// An SMS template under a key that is not a kind.
    #[error("unknown SMS template `{0}`: expected one of {known}", known = SmsKind::known())]
    UnknownKind(String),
    /// A template is empty or too long.
    #[error("the SMS template `{kind}` must be 1-{SMS_TEMPLATE_CHARS_MAX} characters (is {chars})")]
    TemplateLength { kind: String, chars: usize },
    /// A placeholder the kind does not know (or `{查询码}` outside `registered`).
    #[error("the SMS template `{kind}` uses `{{{placeholder}}}`, which it cannot fill: allowed are {allowed}")]
    Placeholder { kind: String, placeholder: String, allowed: String },
    /// A `{` without its `}` (or the reverse).
    #[error("the SMS template `{0}` has an unclosed `{{` or a stray `}}`")]
    Braces(String),
    /// More canned replies than [`CANNED_REPLIES_MAX`].
    #[error("{0} canned replies, more than {CANNED_REPLIES_MAX}")]
    TooManyReplies(usize),
    /// A canned reply's title or text is empty, too long or holds a control character.
    #[error("canned reply {index}: the {field} must be 1-{max} printable characters")]
    Reply { index: usize, field: &'static str, max: usize },
}

/// The placeholders of a template in order, or `None` when its braces do not pair.
pub fn placeholders_of(template: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return None;
        }
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        let name = &after[..close];
        if name.contains('{') {
            return None;
        }
        out.push(name);
        rest = &after[close + 1..];
    }
    Some(out)
}

/// Checks one SMS template for `kind` (its length, braces and placeholders).
pub fn check_template(kind: &str, template: &str) -> Result<SmsKind, MessagesError> {
    let parsed =
        SmsKind::parse(kind).filter(|k| k.code() == kind).ok_or_else(|| MessagesError::UnknownKind(kind.into()))?;
    let chars = template.chars().count();
    if template.trim().is_empty() || chars > SMS_TEMPLATE_CHARS_MAX || template.chars().any(char::is_control) {
        return Err(MessagesError::TemplateLength { kind: kind.into(), chars });
    }
    let names = placeholders_of(template).ok_or_else(|| MessagesError::Braces(kind.into()))?;
    let allowed = parsed.placeholders();
    if let Some(bad) = names.iter().find(|name| !allowed.contains(name)) {
        let allowed = allowed.iter().map(|name| format!("{{{name}}}")).collect::<Vec<_>>().join(" ");
        return Err(MessagesError::Placeholder { kind: kind.into(), placeholder: (*bad).to_owned(), allowed });
    }
    Ok(parsed)
}

impl Messages {
    /// Checks every template and canned reply.
    pub fn validate(&self) -> Result<(), MessagesError> {
        for (kind, template) in &self.sms {
            check_template(kind, template)?;
        }
        if self.canned_replies.len() > CANNED_REPLIES_MAX {
            return Err(MessagesError::TooManyReplies(self.canned_replies.len()));
        }
        let printable = |text: &str, max: usize, lines: bool| {
            let chars = text.chars().count();
            !text.trim().is_empty()
                && chars <= max
                && !text.chars().any(|c| c.is_control() && !(lines && matches!(c, '\n' | '\t')))
        };
        for (index, reply) in self.canned_replies.iter().enumerate() {
            if !printable(&reply.title, CANNED_TITLE_CHARS_MAX, false) {
                return Err(MessagesError::Reply { index, field: "title", max: CANNED_TITLE_CHARS_MAX });
            }
            if !printable(&reply.text, CANNED_TEXT_CHARS_MAX, true) {
                return Err(MessagesError::Reply { index, field: "text", max: CANNED_TEXT_CHARS_MAX });
            }
        }
        Ok(())
    }

    /// The template of `kind`, if the hall has one.
    pub fn template(&self, kind: SmsKind) -> Option<&str> {
        self.sms.get(kind.code()).map(String::as_str)
    }

    /// The canned replies for a case of `nature` in `status`: those naming it (or nothing) for both.
    pub fn replies_for(&self, nature: Nature, status: Status) -> Vec<&CannedReply> {
        self.canned_replies
            .iter()
            .filter(|reply| reply.nature.is_none_or(|n| n == nature) && reply.status.is_none_or(|s| s == status))
            .collect()
    }

    /// What a hall starts with (`Hall::template`, the demo): one template per kind and a few 服务用语.
    pub fn recommended() -> Messages {
        let sms = [
            (SmsKind::Registered, "【{大厅}】您的诉求已登记，编号{登记编号}，查询码{查询码}，请妥善保存。"),
            (SmsKind::Replied, "【{大厅}】您的诉求{登记编号}已答复：{答复}"),
            (SmsKind::Supplement, "【{大厅}】您的诉求{登记编号}需补充材料：{补充材料}。请携带材料到大厅办理。"),
            (SmsKind::RatingInvite, "【{大厅}】您的诉求{登记编号}已办结，欢迎对本次服务进行评价（好差评）。"),
            (
                SmsKind::BadRatingFeedback,
                "【{大厅}】您对诉求{登记编号}的评价已核实整改，处理情况请凭查询码在查询页面查看。",
            ),
        ]
        .into_iter()
        .map(|(kind, text)| (kind.code().to_owned(), text.to_owned()))
        .collect();
        let reply = |title: &str, text: &str, nature: Option<Nature>, status: Option<Status>| CannedReply {
            title: title.to_owned(),
            text: text.to_owned(),
            nature,
            status,
        };
        Messages {
            sms,
            canned_replies: vec![
                reply("已受理", "您好，您反映的问题已受理，我们将尽快办理并答复您。", None, None),
                reply("咨询答复", "您好，关于您咨询的事项，办理所需材料和流程如下：", Some(Nature::Consultation), None),
                reply(
                    "投诉核实",
                    "您好，您投诉的问题我们已转相关单位核实，核实后将答复您。",
                    Some(Nature::Complaint),
                    None,
                ),
                reply("请补充材料", "您好，办理还需补充以下材料：", None, Some(Status::InProgress)),
            ],
        }
    }
}

/// Renders a template: each placeholder takes its value (cut at [`PLACEHOLDER_VALUE_CHARS_MAX`] characters with …).
/// A placeholder without a value is an error naming it (e.g. `查询码` when the code was not kept).
pub fn render(template: &str, values: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| "unclosed `{`".to_owned())?;
        let name = &after[..close];
        let value = values.get(name).ok_or_else(|| name.to_owned())?;
        let mut chars = value.chars();
        let cut: String = chars.by_ref().take(PLACEHOLDER_VALUE_CHARS_MAX).collect();
        out.push_str(&cut);
        if chars.next().is_some() {
            out.push('…');
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_checked_by_kind() {
        assert!(check_template("registered", "编号{登记编号} 查询码{查询码}").is_ok());
        let error = check_template("replied", "查询码{查询码}").unwrap_err().to_string();
        assert!(error.contains("`{查询码}`"), "{error}");
        assert!(check_template("replied", "{答复").is_err());
        assert!(check_template("replied", "答复}").is_err());
        assert!(matches!(check_template("hello", "x"), Err(MessagesError::UnknownKind(_))));
        assert!(matches!(check_template("已答复", "x"), Err(MessagesError::UnknownKind(_))), "codes only");
        assert!(check_template("replied", "").is_err());
        Messages::recommended().validate().unwrap();
    }

    #[test]
    fn the_hall_document_keeps_the_texts_and_an_older_hall_has_none() {
        let hall = crate::Hall::jiangan_default();
        let actor = automerge::ActorId::from(vec![1u8; 16]);
        let doc = crate::HallDoc::create(actor, crate::model::Role::Admin, "admin", 0, &hall).unwrap();
        assert_eq!(doc.hall().unwrap().messages, hall.messages);
        let mut older = serde_json::to_value(&hall).unwrap();
        older.as_object_mut().unwrap().remove("messages");
        let older: crate::Hall = serde_json::from_value(older).unwrap();
        assert_eq!(older.messages, Messages::default());
        let mut bad = hall.clone();
        bad.messages.sms.insert("replied".into(), "{查询码}".into());
        assert!(matches!(bad.validate(), Err(crate::hall::HallError::Messages(_))));
    }

    #[test]
    fn events_ask_for_their_kind_of_message() {
        use crate::EventKind as K;
        let kind = |event: &K| sms_for(event).map(|(kind, values)| (kind, values.into_iter().collect::<Vec<_>>()));
        let reason = "户口簿原件".to_owned();
        assert_eq!(
            kind(&K::Suspended { reason: reason.clone() }),
            Some((SmsKind::Supplement, vec![("补充材料", reason)]))
        );
        assert_eq!(kind(&K::Closed { reviewer: "张三".into(), forced: false }), Some((SmsKind::RatingInvite, vec![])));
        assert_eq!(kind(&K::ReplyPublished { text: "x".into() }).unwrap().0, SmsKind::Replied);
        assert_eq!(kind(&K::NoteAdded { text: "内部".into() }), None, "internal notes never reach the citizen");
        assert_eq!(kind(&K::Accepted {}), None);
    }

    #[test]
    fn rendering_fills_and_cuts() {
        let values = BTreeMap::from([("登记编号", "BBC01-2026-1".to_owned()), ("答复", "长".repeat(200))]);
        let text = render("编号{登记编号}：{答复}", &values).unwrap();
        assert!(text.starts_with("编号BBC01-2026-1："));
        assert!(text.ends_with('…'));
        assert_eq!(render("{查询码}", &values).unwrap_err(), "查询码");
    }
}
