//! Typed commands for the whole lifecycle of a case (DOMAIN.md §6.2), their context and their errors.
//!
//! A command is checked against the current state (the fold) and the author's role before anything is written; an
//! error says why and leaves the document unchanged.

use crate::event::Author;
use crate::hall::HallError;
use crate::ids::EventId;
use crate::materials::MaterialType;
use crate::model::{
    BadReviewReason, CallbackMethod, CallbackOutcome, CaseResult, Channel, CommandKind, EditableField, Mode, Nature,
    NotDoneReason, Priority, ReviewStep, Role, Satisfaction, Status, SupervisionLevel,
};
use crate::pi::{PersonalData, PersonalDataError};
use crate::view::Matter;
use std::collections::BTreeSet;

/// What every command needs from its caller: the time, fresh entropy (for event ids), a fresh secret (for sealing)
/// and who is acting. The crate reads no clock and no random source itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Ctx {
    pub now_ms: i64,
    /// At least 80 fresh random bits per command.
    pub entropy: u128,
    /// 32 fresh random bytes per command, never stored: a registration derives the case key from them, and every
    /// sealed value its nonce (`seal`). Reusing a secret for two commands leaks nothing by itself (nonces also bind
    /// the field and the plaintext), but a predictable one would make a registered case's key predictable.
    pub secret: [u8; 32],
    pub author: Author,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("now_ms", &self.now_ms)
            .field("entropy", &self.entropy)
            .field("author", &self.author)
            .finish_non_exhaustive()
    }
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
    /// 指派上门: names the volunteer laptop (its node id) that visits the citizen; that laptop, and only while the
    /// visit is open, may hold the case key (issue 13).
    AssignVisit {
        laptop: String,
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
    /// 好差评 by the citizen (issue 15): one rating per round (registration, or 重办 to its answer), which the citizen
    /// may change for `limits::RATING_CHANGE_DAYS`; 不满意/非常不满意 need reasons and open a 差评 task.
    Rate {
        level: Satisfaction,
        reasons: Vec<BadReviewReason>,
        comment: String,
    },
    /// The next step of the open 差评 task (督查科): 核实, then 整改, then 反馈 (shown to the citizen).
    BadReviewStep {
        step: ReviewStep,
        text: String,
    },
    /// 申诉复核: the unit appeals a 差评 it holds mistaken or malicious; the 督查科 decides.
    AppealRating {
        reason: String,
    },
    /// The 督查科's decision on the pending appeal: `upheld` voids the rating.
    DecideAppeal {
        upheld: bool,
        note: String,
    },
    /// 上传材料 (issue 16): a material sealed by [`crate::CaseDoc::seal_material`] whose files the caller stored
    /// first (file before event: a crash between the two leaves an unnamed file, which the blob store sweeps).
    AddMaterial {
        hash: String,
        bytes: u64,
        media: MaterialType,
        name: String,
        public: bool,
        thumbnail: Option<(String, u64)>,
    },
    /// 删除材料, with a reason (sealed).
    RemoveMaterial {
        material: EventId,
        reason: String,
    },
    /// Shows or hides a material on the citizen's lookup and in Open311.
    PublishMaterial {
        material: EventId,
        public: bool,
    },
}

impl Command {
    /// The command's kind: what it is without its payload (the key of the permission table).
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Accept => CommandKind::Accept,
            Command::Reject { .. } => CommandKind::Reject,
            Command::Dispatch { .. } => CommandKind::Dispatch,
            Command::SignIn { .. } => CommandKind::SignIn,
            Command::Return { .. } => CommandKind::Return,
            Command::Reassign { .. } => CommandKind::Reassign,
            Command::AddNote { .. } => CommandKind::AddNote,
            Command::PublishReply { .. } => CommandKind::PublishReply,
            Command::HoldConsultation { .. } => CommandKind::HoldConsultation,
            Command::LogVisit { .. } => CommandKind::LogVisit,
            Command::AssignVisit { .. } => CommandKind::AssignVisit,
            Command::RequestExtension { .. } => CommandKind::RequestExtension,
            Command::ApproveExtension { .. } => CommandKind::ApproveExtension,
            Command::Supervise { .. } => CommandKind::Supervise,
            Command::ChangePriority { .. } => CommandKind::ChangePriority,
            Command::ChangeCategory { .. } => CommandKind::ChangeCategory,
            Command::EditField { .. } => CommandKind::EditField,
            Command::AddTags { .. } => CommandKind::AddTags,
            Command::AddCoUnits { .. } => CommandKind::AddCoUnits,
            Command::Suspend { .. } => CommandKind::Suspend,
            Command::Resume => CommandKind::Resume,
            Command::Resolve { .. } => CommandKind::Resolve,
            Command::RecordCallback { .. } => CommandKind::RecordCallback,
            Command::Close { forced: false, .. } => CommandKind::Close,
            Command::Close { forced: true, .. } => CommandKind::ForceClose,
            Command::Reopen { .. } => CommandKind::Reopen,
            Command::Unmerge => CommandKind::Unmerge,
            Command::Withdraw { .. } => CommandKind::Withdraw,
            Command::Archive => CommandKind::Archive,
            Command::PurgePersonalData => CommandKind::PurgePersonalData,
            Command::ResolveConflict { .. } => CommandKind::ResolveConflict,
            Command::Rate { .. } => CommandKind::Rate,
            Command::BadReviewStep { .. } => CommandKind::BadReviewStep,
            Command::AppealRating { .. } => CommandKind::AppealRating,
            Command::DecideAppeal { .. } => CommandKind::DecideAppeal,
            Command::AddMaterial { .. } => CommandKind::AddMaterial,
            Command::RemoveMaterial { .. } => CommandKind::RemoveMaterial,
            Command::PublishMaterial { .. } => CommandKind::PublishMaterial,
        }
    }

    /// The command's name in errors and logs.
    pub fn name(&self) -> &'static str {
        self.kind().verb()
    }
}

/// Why the permission table refuses a kind of command: the role, or (for a permitted role) the case's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The role may not run this kind of command (in this state).
    Role,
    /// The role may, but not in the case's current state.
    State,
}

impl CommandKind {
    /// The English verb in errors and logs ("a 窗口 node may not reassign").
    pub fn verb(self) -> &'static str {
        use CommandKind as K;
        match self {
            K::Accept => "accept",
            K::Reject => "reject",
            K::Dispatch => "dispatch",
            K::SignIn => "sign in",
            K::Return => "return",
            K::Reassign => "reassign",
            K::AddNote => "note",
            K::PublishReply => "reply",
            K::HoldConsultation => "consult",
            K::LogVisit => "visit",
            K::AssignVisit => "assign a visit",
            K::RequestExtension => "request extension",
            K::ApproveExtension => "approve extension",
            K::Supervise => "supervise",
            K::ChangePriority => "change priority",
            K::ChangeCategory => "change category",
            K::EditField => "edit",
            K::AddTags => "tag",
            K::AddCoUnits => "add co-units",
            K::Suspend => "suspend",
            K::Resume => "resume",
            K::Resolve => "resolve",
            K::RecordCallback => "callback",
            K::Close => "close",
            K::ForceClose => "force-close",
            K::Reopen => "reopen",
            K::MarkDuplicate => "mark duplicate",
            K::Unmerge => "unmerge",
            K::Withdraw => "withdraw",
            K::Archive => "archive",
            K::PurgePersonalData => "purge personal data",
            K::RevealPersonalData => "reveal personal data",
            K::ResolveConflict => "resolve conflict",
            K::Rate => "rate",
            K::BadReviewStep => "record a bad-review step",
            K::AppealRating => "appeal a rating",
            K::DecideAppeal => "decide an appeal",
            K::AddMaterial => "attach a material",
            K::RemoveMaterial => "remove a material",
            K::PublishMaterial => "publish a material",
            K::ViewMaterial => "view a material",
        }
    }

    /// The transition this kind takes a case through (its target state), or `None` for a command that leaves the
    /// state as it is. The fold replays transitions with [`crate::event::transition`], which reads this table too.
    pub fn target(self) -> Option<Status> {
        use CommandKind as K;
        Some(match self {
            K::Accept | K::Return | K::Unmerge => Status::Registered,
            K::Reject => Status::Rejected,
            K::Dispatch | K::Reassign => Status::Dispatched,
            K::SignIn | K::Resume | K::Reopen => Status::InProgress,
            K::Suspend => Status::OnHold,
            K::Resolve => Status::Replied,
            K::Close | K::ForceClose => Status::Closed,
            K::MarkDuplicate => Status::Duplicate,
            K::Withdraw => Status::Withdrawn,
            K::Archive => Status::Archived,
            K::AddNote
            | K::PublishReply
            | K::HoldConsultation
            | K::LogVisit
            | K::AssignVisit
            | K::RequestExtension
            | K::ApproveExtension
            | K::Supervise
            | K::ChangePriority
            | K::ChangeCategory
            | K::EditField
            | K::AddTags
            | K::AddCoUnits
            | K::RecordCallback
            | K::PurgePersonalData
            | K::RevealPersonalData
            | K::ResolveConflict
            | K::Rate
            | K::BadReviewStep
            | K::AppealRating
            | K::DecideAppeal
            | K::AddMaterial
            | K::RemoveMaterial
            | K::PublishMaterial
            | K::ViewMaterial => return None,
        })
    }

    /// **The** table of who may do what in which state (DOMAIN.md §6): command validation (`CaseDoc::apply`), the
    /// fold's replay of transitions, the desk's forms and the CLI's `case show` all ask it, and nothing else encodes
    /// these rules. The role is checked first: a role that may never run the kind is refused for its role.
    pub fn permitted(self, role: Role, status: Status) -> Result<(), Refusal> {
        use CommandKind as K;
        use Status::*;
        // An archived case is read-only (its personal data was purged by the retention job); only a purge that a
        // retention run left unfinished may still write.
        if status == Archived && self != K::PurgePersonalData {
            return Err(Refusal::State);
        }
        let staff = role.is_staff();
        let oversight = role.is_oversight();
        let lead_desk = role.is_lead_desk();
        let any_member = role != Role::Citizen;
        let open = status.is_open();
        let working = matches!(status, Registered | Dispatched | InProgress | OnHold);
        let (role_ok, state_ok) = match self {
            K::Accept => (staff, status == Submitted),
            K::Reject => (staff, matches!(status, Submitted | Registered)),
            // 转派 of a case in progress needs the 督查科.
            K::Dispatch => {
                (if status == InProgress { oversight } else { staff }, matches!(status, Registered | InProgress))
            }
            K::SignIn | K::Return => (lead_desk, status == Dispatched),
            K::Reassign => (oversight, matches!(status, Dispatched | InProgress)),
            K::Suspend => (lead_desk, status == InProgress),
            K::Resume => (lead_desk, status == OnHold),
            // 即办 answers a registered case on the spot; a unit may answer a dispatched case without signing first.
            K::Resolve => (staff, matches!(status, Registered | Dispatched | InProgress)),
            K::Close => (staff, status == Replied),
            // 强制办结 by the 督查科 of a case stuck anywhere before 办结.
            K::ForceClose => (oversight, matches!(status, Registered | Dispatched | InProgress | OnHold | Replied)),
            K::Reopen => (oversight, matches!(status, Replied | Closed)),
            K::MarkDuplicate => (
                if matches!(status, Dispatched | InProgress | OnHold) { oversight } else { staff },
                matches!(status, Submitted | Registered | Dispatched | InProgress | OnHold),
            ),
            K::Unmerge => (oversight, status == Duplicate),
            // A citizen withdraws their own case; a clerk may record a withdrawal the citizen asked for in person.
            K::Withdraw => (role == Role::Citizen || lead_desk, open),
            K::Archive => (role == Role::Admin, matches!(status, Closed | Rejected | Duplicate | Withdrawn)),
            K::AddNote | K::AddTags => (any_member, true),
            K::PublishReply | K::ChangePriority | K::ChangeCategory | K::EditField => (staff, open),
            K::HoldConsultation => (staff, working || status == Replied),
            K::LogVisit => (staff || role == Role::Volunteer, working || status == Replied),
            K::AssignVisit => (staff, working || status == Replied),
            K::RequestExtension => (lead_desk, matches!(status, Dispatched | InProgress | OnHold)),
            K::ApproveExtension => (oversight, working),
            // 督办 is the 督查科's own act (not an admin's).
            K::Supervise => (role == Role::Supervision, open),
            K::AddCoUnits => (staff, working),
            K::RecordCallback => (any_member, matches!(status, Replied | Closed)),
            // 督查科 or admin (issue 13 §3); a purge makes every node destroy the case key.
            K::PurgePersonalData => (oversight, true),
            K::RevealPersonalData => (staff, true),
            K::ResolveConflict => (oversight, true),
            // 好差评: only the citizen rates (the lookup page, behind the 查询码), once the case is answered.
            K::Rate => (role == Role::Citizen, matches!(status, Replied | Closed)),
            // The 差评 task is the 督查科's (an admin may stand in); the unit appeals, the 督查科 alone decides.
            K::BadReviewStep => (oversight, true),
            K::AppealRating => (lead_desk, true),
            K::DecideAppeal => (role == Role::Supervision, true),
            // Materials (issue 16): the citizen with the report (提交) and when asked for more (待补充); a volunteer on
            // a visit (who holds the key only then); staff while the case is open. Writing needs the case key.
            K::AddMaterial => match role {
                Role::Citizen => (true, matches!(status, Submitted | OnHold)),
                Role::Volunteer => (true, working || status == Replied),
                _ => (staff, open),
            },
            K::RemoveMaterial => (staff, open),
            K::PublishMaterial => (staff, true),
            // Downloading a material is recorded like a reveal of personal data.
            K::ViewMaterial => (staff || role == Role::Volunteer, true),
        };
        if !role_ok {
            Err(Refusal::Role)
        } else if !state_ok {
            Err(Refusal::State)
        } else {
            Ok(())
        }
    }

    /// [`CommandKind::permitted`] as the error a command returns.
    pub fn check(self, role: Role, status: Status) -> Result<(), CommandError> {
        self.permitted(role, status).map_err(|refusal| match refusal {
            Refusal::Role => CommandError::Role { command: self, role },
            Refusal::State => CommandError::State { command: self, status },
        })
    }
}

/// Why a command was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The author's role may not issue this command.
    #[error("a {role} node may not {verb}", verb = command.verb())]
    Role { command: CommandKind, role: Role },
    /// The command does not apply in the case's current state.
    #[error("cannot {verb} a case that is {status} ({code})", verb = command.verb(), code = status.code())]
    State { command: CommandKind, status: Status },
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
    /// The command writes private text (a note, minutes, an outcome, a comment, a field of the private layer) and this
    /// node does not hold the case's key (issue 13).
    #[error("this node does not hold the key of the case, so it cannot write {0} (private data)")]
    NoCaseKey(&'static str),
    /// 指派上门 names a node id (64 hex digits) of the hall's volunteer laptops.
    #[error("`{0}` is not a node id (64 hex digits)")]
    NotALaptop(String),
    /// Sealing failed: nothing was written.
    #[error("sealing private data failed: {0}")]
    Seal(String),
    /// 差评 reasons: at least one with 不满意/非常不满意, none with a good rating, none twice.
    #[error("a rating of {level} takes {rule}")]
    RatingReasons { level: Satisfaction, rule: &'static str },
    /// The rating's change period is over.
    #[error("the rating can no longer be changed: {days} days after it was given")]
    RatingPeriodOver { days: i64 },
    /// No open 差评 task (or, for an appeal, none that may still be appealed).
    #[error("no open bad-review task on this case")]
    NoBadReview,
    /// The 差评 task's steps go 核实 → 整改 → 反馈.
    #[error("the next step of the bad-review task is {expected}")]
    ReviewStepOrder { expected: ReviewStep },
    /// A text shown to the citizen (what a 待补充 case waits for) looks like it holds a phone, id number or e-mail.
    #[error("the {field} is shown to the citizen and must not contain a phone or id number")]
    PublicHasPersonalData { field: &'static str },
    /// No appeal waits for a decision.
    #[error("no pending appeal on this case")]
    NoPendingAppeal,
    /// A material's description is not what a sealed file of the blob store looks like (a bug of the caller).
    #[error("bad material: {0}")]
    BadMaterial(&'static str),
    /// The case holds its limit of materials (count or bytes).
    #[error("the case holds {count} materials of {bytes} bytes; the limits are {count_max} and {bytes_max} bytes")]
    MaterialsFull { count: usize, bytes: u64, count_max: usize, bytes_max: u64 },
    /// No (live) material with that id on the case.
    #[error("no material `{0}` on this case")]
    UnknownMaterial(String),
    /// Automerge refused a write (a bug, or a damaged document).
    #[error("document error: {0}")]
    Document(String),
}

/// The zh-CN name of a field named in a refusal (the `field` of [`CommandError::Empty`] and its siblings).
fn field_zh(field: &str) -> &str {
    match field {
        "summary" => "诉求摘要",
        "detail" => "诉求内容",
        "expectation" => "诉求人期望",
        "location" => "地点",
        "name" => "姓名",
        "address" => "地址",
        "enterprise" => "企业名称",
        "reply" | "text" => "答复内容",
        "note" => "备注",
        "resolution note" => "核定说明",
        "reason" => "原因",
        "basis" => "依据",
        "minutes" => "会诊纪要",
        "purpose" => "用途",
        "tag" | "tags" => "标签",
        "assignee" => "承办人",
        "reviewer" => "审核人",
        "comment" => "说明",
        "volunteer" | "volunteers" => "走访人员",
        "outcome" => "走访情况",
        "units" => "参会单位",
        "co-units" => "协办单位",
        "lead unit" => "主办单位",
        "visit time" => "走访时间",
        "consultation time" => "会诊时间",
        "due date" => "办结时限",
        "matter name" => "涉及事项名称",
        "matter code" => "涉及事项编码",
        "matter window" => "原办理窗口",
        "review" => "处理情况",
        "rating comment" => "评价意见",
        "file name" => "文件名",
        other => other,
    }
}

impl CommandError {
    /// The refusal in zh-CN for a page (the desk, the citizen form, Open311): one exhaustive table, so a new refusal
    /// cannot reach a person in English.
    pub fn zh(&self) -> String {
        use CommandError as E;
        match self {
            E::Role { command, role } => format!("您的角色（{}）不能执行此操作（{}）", role.label(), command.label()),
            E::State { command, status } => {
                format!("案件当前状态为“{}”，不能执行此操作（{}）", status.label(), command.label())
            }
            E::Empty { field } => format!("请填写{}", field_zh(field)),
            E::TooLong { field, chars, max } => format!("{}最多 {max} 个字，现为 {chars} 个字", field_zh(field)),
            E::ControlCharacter { field } => format!("{}含有无法识别的控制字符", field_zh(field)),
            E::TooMany { field, count, max } => format!("{}最多 {max} 项，现为 {count} 项", field_zh(field)),
            E::SummaryHasPersonalData => "诉求摘要会公开显示，不能包含电话号码或证件号码".to_owned(),
            E::UnknownCategory(code) => format!("诉求类别 {code} 不存在"),
            E::UnknownUnit(code) => format!("单位 {code} 不存在"),
            E::UnknownWindow(code) => format!("窗口 {code} 不存在"),
            E::RegNoWindow { reg_no, window } => format!("登记编号 {reg_no} 不属于窗口 {window}"),
            E::CitizenChannel => "群众提交的诉求只能来自小程序渠道".to_owned(),
            E::PersonalData(PersonalDataError::InvalidPhone { .. }) => {
                "联系电话格式不正确：请填写 11 位手机号或带区号的固定电话".to_owned()
            }
            E::PersonalData(PersonalDataError::TooLong { field, chars, max }) => {
                format!("{}最多 {max} 个字，现为 {chars} 个字", field_zh(field))
            }
            E::PersonalData(PersonalDataError::ControlCharacter { field }) => {
                format!("{}含有无法识别的控制字符", field_zh(field))
            }
            E::Rating(rating) => format!("评价须为 1-5 分，收到 {rating}"),
            E::CallbackNotReached => "未联系上群众的回访不能记录结果或评价".to_owned(),
            E::CallbackRequired { .. } => "群众要求回访：请先回访（或记录未联系上），再办结".to_owned(),
            E::CallbackUnresolved => "最近一次回访表示问题未解决：请发回重办，而不是办结".to_owned(),
            E::ExtensionDays { max, .. } => format!("延期须为 1-{max} 个工作日"),
            E::UnknownExtension(_) => "没有这条待批准的延期申请（可能已被批准）".to_owned(),
            E::TimeOutOfRange { field } => format!("{}与当前时间相差过远，请检查日期", field_zh(field)),
            E::DueBeforeRegistration => "办结时限早于登记时间".to_owned(),
            E::UnknownConflict(_) => "该冲突不存在或已经核定".to_owned(),
            E::NotACandidate(_) => "所选取值不是冲突中的取值之一".to_owned(),
            E::DecisionKind(_) => "状态冲突只能维持合并结果".to_owned(),
            E::NoChange(_) => "没有需要修改的内容".to_owned(),
            E::DuplicateCycle => "不能并入本案自身，也不能并入以本案为主案件的案件".to_owned(),
            E::Purged => "本案的个人信息已清除".to_owned(),
            E::TooManyEvents(_) => "本案的办理记录已达上限，请联系管理员".to_owned(),
            E::Hall(_) => "大厅配置有误，请联系管理员".to_owned(),
            E::NoCaseKey(_) => {
                "本机无权查看此案件的个人信息，不能写入办理记录中的内容；请在大厅电脑上操作，或请督查科指派上门"
                    .to_owned()
            }
            E::NotALaptop(_) => "请选择一台志愿者上门电脑".to_owned(),
            E::Seal(_) => "加密失败，未写入任何内容，请联系管理员".to_owned(),
            E::Document(_) => "案件文档写入失败，请联系管理员".to_owned(),
            E::RatingReasons { level, .. } if level.is_bad() => {
                format!("选择“{}”时，请勾选至少一项原因（每项只勾选一次）", level.label())
            }
            E::RatingReasons { level, .. } => format!("选择“{}”时无需勾选不满意原因", level.label()),
            E::RatingPeriodOver { days } => format!("评价提交已超过 {days} 天，不能再修改"),
            E::NoBadReview => "本案没有待处理的差评".to_owned(),
            E::ReviewStepOrder { expected } => format!("请先完成差评的“{}”步骤", expected.label()),
            E::NoPendingAppeal => "本案没有待复核的申诉".to_owned(),
            E::BadMaterial(_) => "材料文件有误，未写入任何内容，请重新上传".to_owned(),
            E::MaterialsFull { count_max, bytes_max, .. } => format!(
                "本案材料已达上限（最多 {count_max} 个文件、共 {} MB），请先删除不需要的材料",
                bytes_max / (1024 * 1024)
            ),
            E::UnknownMaterial(_) => "本案没有这份材料（可能已被删除）".to_owned(),
            E::PublicHasPersonalData { field } => {
                format!("{}会向群众显示，不能包含电话号码、证件号码或电子邮箱", field_zh(field))
            }
        }
    }
}
