//! Typed commands for the whole lifecycle of a case (DOMAIN.md §6.2), their context and their errors.
//!
//! A command is checked against the current state (the fold) and the author's role before anything is written; an
//! error says why and leaves the document unchanged.

use crate::event::Author;
use crate::hall::HallError;
use crate::ids::EventId;
use crate::model::{
    CallbackMethod, CallbackOutcome, CaseResult, Channel, EditableField, Mode, Nature, NotDoneReason, Priority, Role,
    Status, SupervisionLevel,
};
use crate::pi::{PersonalData, PersonalDataError};
use crate::view::Matter;
use std::collections::BTreeSet;

/// What every command needs from its caller: the time, fresh entropy (for event ids) and who is acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctx {
    pub now_ms: i64,
    /// At least 80 fresh random bits per command.
    pub entropy: u128,
    pub author: Author,
}

/// A new case as the window (or the citizen form) fills it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub channel: Channel,
    pub nature: Nature,
    pub category: String,
    pub modes: BTreeSet<Mode>,
    pub priority: Priority,
    pub matter: Option<Matter>,
    pub not_done_reason: Option<NotDoneReason>,
    /// ≤100 characters and no personal data: shown on the public lookup.
    pub summary: String,
    pub detail: String,
    pub expectation: String,
    pub location: String,
    pub sensitive: bool,
    pub tags: BTreeSet<String>,
    pub personal: PersonalData,
}

/// How a conflict is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflictDecision {
    /// Keep what the fold decided (a transition conflict) or the value the document shows now (a field conflict).
    Keep,
    /// A field conflict: write this candidate value.
    Choose(String),
}

/// Every lifecycle command on an existing case. (Registration is [`crate::CaseDoc::register`]; 并案 spans two cases and
/// is [`crate::CaseDoc::mark_duplicate`]; reading personal data is [`crate::CaseDoc::reveal_personal_data`].)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// 受理 a mini-program submission.
    Accept,
    /// 不予受理, with the reason and the legal or policy basis (shown to the citizen).
    Reject {
        reason: String,
        basis: String,
    },
    /// 派单. `None` takes the routing table's lead unit / co-units and keeps the current due date.
    Dispatch {
        lead_unit: Option<String>,
        co_units: Option<Vec<String>>,
        due_ms: Option<i64>,
    },
    /// 签收 by the lead unit.
    SignIn {
        assignee: String,
    },
    /// 退单 by the lead unit.
    Return {
        reason: String,
        basis: String,
    },
    /// 改派 by the 督查科.
    Reassign {
        lead_unit: String,
        co_units: Vec<String>,
        reason: String,
    },
    /// 内部备注 (never shown to the citizen).
    AddNote {
        text: String,
    },
    /// 对外答复 (shown to the citizen): allowed in every open state, "事事有回应".
    PublishReply {
        text: String,
    },
    /// 会诊.
    HoldConsultation {
        units: Vec<String>,
        minutes: String,
        site_visit: bool,
        held_at_ms: i64,
    },
    /// 上门 / 现场勘查.
    LogVisit {
        volunteers: Vec<String>,
        outcome: String,
        visited_at_ms: i64,
        duration_minutes: u32,
    },
    /// 申请延期.
    RequestExtension {
        working_days: u16,
        reason: String,
    },
    /// 批准延期 (督查科).
    ApproveExtension {
        request: EventId,
    },
    /// 督办 / 催办 (督查科).
    Supervise {
        level: SupervisionLevel,
        comment: String,
    },
    ChangePriority {
        priority: Priority,
    },
    ChangeCategory {
        category: String,
    },
    EditField {
        field: EditableField,
        value: String,
    },
    AddTags {
        tags: Vec<String>,
    },
    AddCoUnits {
        units: Vec<String>,
    },
    /// 待补充材料: pauses the solution clock.
    Suspend {
        reason: String,
    },
    Resume,
    /// 办理完毕 / 答复, with the result and the public reply.
    Resolve {
        result: CaseResult,
        reply: String,
    },
    /// 回访, with a 1-5 rating when the citizen gives one.
    RecordCallback {
        method: CallbackMethod,
        reached: bool,
        outcome: Option<CallbackOutcome>,
        rating: Option<u8>,
        comment: String,
    },
    /// 办结, signed by a reviewer (审核人). `forced` is the 督查科's 强制办结.
    Close {
        reviewer: String,
        forced: bool,
    },
    /// 发回重办 (督查科).
    Reopen {
        reason: String,
    },
    /// 解除并案 (督查科).
    Unmerge,
    /// 撤回 (the citizen, or a clerk on the citizen's request).
    Withdraw {
        reason: String,
    },
    /// 归档 (retention job, admin).
    Archive,
    /// 个人信息清除 (admin).
    PurgePersonalData,
    /// Settles a listed conflict; recorded as an event, never a silent overwrite.
    ResolveConflict {
        conflict: String,
        decision: ConflictDecision,
        note: String,
    },
}

impl Command {
    /// The command's name in errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Accept => "accept",
            Command::Reject { .. } => "reject",
            Command::Dispatch { .. } => "dispatch",
            Command::SignIn { .. } => "sign in",
            Command::Return { .. } => "return",
            Command::Reassign { .. } => "reassign",
            Command::AddNote { .. } => "note",
            Command::PublishReply { .. } => "reply",
            Command::HoldConsultation { .. } => "consult",
            Command::LogVisit { .. } => "visit",
            Command::RequestExtension { .. } => "request extension",
            Command::ApproveExtension { .. } => "approve extension",
            Command::Supervise { .. } => "supervise",
            Command::ChangePriority { .. } => "change priority",
            Command::ChangeCategory { .. } => "change category",
            Command::EditField { .. } => "edit",
            Command::AddTags { .. } => "tag",
            Command::AddCoUnits { .. } => "add co-units",
            Command::Suspend { .. } => "suspend",
            Command::Resume => "resume",
            Command::Resolve { .. } => "resolve",
            Command::RecordCallback { .. } => "callback",
            Command::Close { .. } => "close",
            Command::Reopen { .. } => "reopen",
            Command::Unmerge => "unmerge",
            Command::Withdraw { .. } => "withdraw",
            Command::Archive => "archive",
            Command::PurgePersonalData => "purge personal data",
            Command::ResolveConflict { .. } => "resolve conflict",
        }
    }
}

/// Why a command was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The author's role may not issue this command.
    #[error("a {role} node may not {command}")]
    Role { command: &'static str, role: Role },
    /// The command does not apply in the case's current state.
    #[error("cannot {command} a case that is {status} ({code})", code = status.code())]
    State { command: &'static str, status: Status },
    /// A required text is empty.
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    /// A text is longer than its limit.
    #[error("{field} is {chars} characters long, the limit is {max}")]
    TooLong { field: &'static str, chars: usize, max: usize },
    /// A text contains control characters.
    #[error("{field} contains a control character")]
    ControlCharacter { field: &'static str },
    /// Too many items in a list (units, tags, volunteers).
    #[error("{field} has {count} items, the limit is {max}")]
    TooMany { field: &'static str, count: usize, max: usize },
    /// The summary looks like it contains a phone or id number; it is shown publicly.
    #[error("the summary is shown publicly and must not contain a phone or id number")]
    SummaryHasPersonalData,
    #[error("unknown category `{0}`")]
    UnknownCategory(String),
    #[error("unknown unit `{0}`")]
    UnknownUnit(String),
    /// The registering window is not in the hall configuration.
    #[error("unknown window `{0}`")]
    UnknownWindow(String),
    /// The registration number does not belong to the author's window.
    #[error("registration number {reg_no} does not belong to window {window}")]
    RegNoWindow { reg_no: String, window: String },
    /// The citizen channel only takes mini-program submissions.
    #[error("a citizen submission must come through the mini-program channel")]
    CitizenChannel,
    #[error(transparent)]
    PersonalData(#[from] PersonalDataError),
    #[error("rating must be 1-5, got {0}")]
    Rating(u8),
    /// A callback that did not reach the citizen cannot carry an outcome or a rating.
    #[error("an unanswered callback cannot record an outcome or a rating")]
    CallbackNotReached,
    /// 办结 needs a callback first (DOMAIN.md §6.2), unless the citizen opted out or could not be reached.
    #[error("close needs a callback first: the citizen asked for one (or {attempts} failed attempts)")]
    CallbackRequired { attempts: usize },
    /// The latest callback said the problem is not solved: reopen instead of closing.
    #[error("the latest callback says the problem is not solved: reopen the case instead of closing it")]
    CallbackUnresolved,
    #[error("extension must be 1-{max} working days, got {got}")]
    ExtensionDays { got: u16, max: u16 },
    #[error("no pending extension request `{0}`")]
    UnknownExtension(String),
    /// A date-time given with the command is implausibly far from now.
    #[error("{field} is too far from the current time")]
    TimeOutOfRange { field: &'static str },
    /// The due date is before the case was registered.
    #[error("due date is before the registration time")]
    DueBeforeRegistration,
    #[error("no open conflict `{0}`")]
    UnknownConflict(String),
    #[error("`{0}` is not one of the conflicting values")]
    NotACandidate(String),
    /// The decision does not fit the conflict (choosing a value for a transition conflict).
    #[error("conflict `{0}` takes `keep` as its decision")]
    DecisionKind(String),
    /// The value is already what the document holds.
    #[error("nothing to change: {0}")]
    NoChange(&'static str),
    #[error("cannot mark a case as a duplicate of itself or of a case it is the master of")]
    DuplicateCycle,
    #[error("the personal data of this case was purged")]
    Purged,
    #[error("the case has {0} events, the limit is {max}", max = crate::limits::EVENTS_PER_CASE_MAX)]
    TooManyEvents(usize),
    #[error(transparent)]
    Hall(#[from] HallError),
    /// Automerge refused a write (a bug, or a damaged document).
    #[error("document error: {0}")]
    Document(String),
}
