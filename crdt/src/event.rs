//! 案件事件: the append-only event log of a case (DOMAIN.md §5.3).
//!
//! An event is stored as an Automerge map in the case's `events` list: header fields (`id`, `hlc`, `wall_ms`, `node`,
//! `staff`, `role`, `window`, `parents`, `seen`) and `type` + `payload`. Two offline nodes appending concurrently both
//! keep their events (list inserts commute); the state is a fold over the set (see `fold`), so the list order does not
//! matter.

use crate::command::Refusal;
use crate::hall::Span;
use crate::ids::{CaseId, EventId};
use crate::materials::MaterialType;
use crate::model::{
    BadReviewReason, CallbackMethod, CallbackOutcome, CaseResult, CommandKind, EditableField, Priority, ReviewStep,
    Role, Satisfaction, Status, SupervisionLevel,
};
use crate::time::Hlc;
use serde::{Deserialize, Serialize};

/// Who authored an event: the node, the staff member signed in on it, the node's role and its window code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    /// The node id (the node's public key, hex).
    pub node: String,
    /// The staff member (or `citizen` for the QR channel).
    pub staff: String,
    pub role: Role,
    /// The window code this node registers under.
    pub window: String,
}

/// One event of a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub hlc: Hlc,
    /// When the action was really performed (the author's clock): used for SLA clocks and statistics.
    pub wall_ms: i64,
    pub node: String,
    pub staff: String,
    pub role: Role,
    pub window: String,
    /// The case's event heads the author had seen: causal concurrency is detected from these, not from clocks.
    pub parents: Vec<EventId>,
    /// For transitions: the state the author saw.
    pub seen: Option<Status>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The payload of an event, by type. Names follow Znuny's history types where DOMAIN.md §5.3 does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum EventKind {
    Registered {
        submitted: bool,
        priority: Priority,
    },
    Accepted {},
    Rejected {
        reason: String,
        basis: String,
    },
    Dispatched {
        lead_unit: String,
        co_units: Vec<String>,
        due_ms: i64,
    },
    SignedIn {
        assignee: String,
    },
    Returned {
        reason: String,
        basis: String,
    },
    Reassigned {
        lead_unit: String,
        co_units: Vec<String>,
        due_ms: i64,
        reason: String,
    },
    NoteAdded {
        text: String,
    },
    ReplyPublished {
        text: String,
    },
    ConsultationHeld {
        units: Vec<String>,
        minutes: String,
        site_visit: bool,
        held_at_ms: i64,
    },
    SiteVisitLogged {
        volunteers: Vec<String>,
        outcome: String,
        visited_at_ms: i64,
        duration_minutes: u32,
    },
    VisitAssigned {
        laptop: String,
    },
    ExtensionRequested {
        span: Span,
        reason: String,
    },
    ExtensionApproved {
        request: EventId,
        due_ms: i64,
    },
    SupervisionIssued {
        level: SupervisionLevel,
        comment: String,
    },
    PriorityChanged {
        priority: Priority,
    },
    CategoryChanged {
        category: String,
    },
    FieldEdited {
        field: EditableField,
        value: String,
    },
    TagsAdded {
        tags: Vec<String>,
    },
    CoUnitsAdded {
        units: Vec<String>,
    },
    Suspended {
        reason: String,
    },
    Resumed {},
    Resolved {
        result: CaseResult,
        reply: String,
    },
    CallbackRecorded {
        method: CallbackMethod,
        reached: bool,
        outcome: Option<CallbackOutcome>,
        rating: Option<u8>,
        comment: String,
        /// Set when the citizen said 不满意/非常不满意 at the 回访 and the round had no 差评 task: the task's due date,
        /// fixed when recorded (as `RatingReceived::task_due_ms`). Absent otherwise, so other 回访 keep their bytes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_due_ms: Option<i64>,
    },
    Closed {
        reviewer: String,
        forced: bool,
    },
    Reopened {
        reason: String,
    },
    MarkedDuplicate {
        master: CaseId,
    },
    DuplicateAttached {
        duplicate: CaseId,
    },
    Unmerged {
        master: CaseId,
    },
    DuplicateDetached {
        duplicate: CaseId,
    },
    Withdrawn {
        reason: String,
    },
    Archived {},
    PiRevealed {
        purpose: String,
    },
    PiPurged {},
    ConflictResolved {
        conflict: String,
        decision: String,
        note: String,
    },
    /// 好差评 by the citizen (issue 15). `task_due_ms` is set when the rating opens a 差评 task: its due date, fixed
    /// when rated (from the hall's limit then), so every replica folds the same task.
    RatingReceived {
        level: Satisfaction,
        reasons: Vec<BadReviewReason>,
        comment: String,
        task_due_ms: Option<i64>,
    },
    /// A step of the 差评 task (督查科): 核实, 整改, 反馈 (the 反馈 text is shown to the citizen).
    BadReviewStepRecorded {
        step: ReviewStep,
        text: String,
    },
    /// 申诉复核: the unit holds the rating mistaken or malicious.
    RatingAppealed {
        reason: String,
    },
    /// The 督查科's decision on an appeal: `upheld` voids the rating (no longer counted).
    AppealDecided {
        upheld: bool,
        note: String,
    },
    /// 上传材料 (issue 16): the sealed file's content address (`materials::blob_hash`) and size, its type, the file
    /// name (sealed), whether the citizen's lookup shows it, and its thumbnail's address and size. The files are in
    /// the blob store, never in the document.
    MaterialAdded {
        hash: String,
        bytes: u64,
        media: MaterialType,
        name: String,
        public: bool,
        thumb: Option<String>,
        thumb_bytes: u64,
    },
    /// 删除材料: the material leaves the case file (its files are deleted on every node; the reason is sealed).
    MaterialRemoved {
        material: EventId,
        reason: String,
    },
    /// 公开材料 / 取消公开: whether the citizen's lookup (and Open311 `media_url`) shows the material.
    MaterialPublished {
        material: EventId,
        public: bool,
    },
    /// 查看材料: a download of a material by staff, recorded like a reveal of personal data.
    MaterialViewed {
        material: EventId,
    },
}

impl EventKind {
    /// The type name stored in the document.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Registered { .. } => "Registered",
            EventKind::Accepted {} => "Accepted",
            EventKind::Rejected { .. } => "Rejected",
            EventKind::Dispatched { .. } => "Dispatched",
            EventKind::SignedIn { .. } => "SignedIn",
            EventKind::Returned { .. } => "Returned",
            EventKind::Reassigned { .. } => "Reassigned",
            EventKind::NoteAdded { .. } => "NoteAdded",
            EventKind::ReplyPublished { .. } => "ReplyPublished",
            EventKind::ConsultationHeld { .. } => "ConsultationHeld",
            EventKind::SiteVisitLogged { .. } => "SiteVisitLogged",
            EventKind::VisitAssigned { .. } => "VisitAssigned",
            EventKind::ExtensionRequested { .. } => "ExtensionRequested",
            EventKind::ExtensionApproved { .. } => "ExtensionApproved",
            EventKind::SupervisionIssued { .. } => "SupervisionIssued",
            EventKind::PriorityChanged { .. } => "PriorityChanged",
            EventKind::CategoryChanged { .. } => "CategoryChanged",
            EventKind::FieldEdited { .. } => "FieldEdited",
            EventKind::TagsAdded { .. } => "TagsAdded",
            EventKind::CoUnitsAdded { .. } => "CoUnitsAdded",
            EventKind::Suspended { .. } => "Suspended",
            EventKind::Resumed {} => "Resumed",
            EventKind::Resolved { .. } => "Resolved",
            EventKind::CallbackRecorded { .. } => "CallbackRecorded",
            EventKind::Closed { .. } => "Closed",
            EventKind::Reopened { .. } => "Reopened",
            EventKind::MarkedDuplicate { .. } => "MarkedDuplicate",
            EventKind::DuplicateAttached { .. } => "DuplicateAttached",
            EventKind::Unmerged { .. } => "Unmerged",
            EventKind::DuplicateDetached { .. } => "DuplicateDetached",
            EventKind::Withdrawn { .. } => "Withdrawn",
            EventKind::Archived {} => "Archived",
            EventKind::PiRevealed { .. } => "PiRevealed",
            EventKind::PiPurged {} => "PiPurged",
            EventKind::ConflictResolved { .. } => "ConflictResolved",
            EventKind::RatingReceived { .. } => "RatingReceived",
            EventKind::BadReviewStepRecorded { .. } => "BadReviewStepRecorded",
            EventKind::RatingAppealed { .. } => "RatingAppealed",
            EventKind::AppealDecided { .. } => "AppealDecided",
            EventKind::MaterialAdded { .. } => "MaterialAdded",
            EventKind::MaterialRemoved { .. } => "MaterialRemoved",
            EventKind::MaterialPublished { .. } => "MaterialPublished",
            EventKind::MaterialViewed { .. } => "MaterialViewed",
        }
    }

    /// The zh-CN name shown in a timeline.
    pub fn label(&self) -> &'static str {
        match self {
            EventKind::Registered { .. } => "登记",
            EventKind::Accepted {} => "受理",
            EventKind::Rejected { .. } => "不予受理",
            EventKind::Dispatched { .. } => "派单",
            EventKind::SignedIn { .. } => "签收",
            EventKind::Returned { .. } => "退单",
            EventKind::Reassigned { .. } => "改派",
            EventKind::NoteAdded { .. } => "内部备注",
            EventKind::ReplyPublished { .. } => "对外答复",
            EventKind::ConsultationHeld { .. } => "会诊",
            EventKind::SiteVisitLogged { .. } => "上门/现场勘查",
            EventKind::VisitAssigned { .. } => "指派上门",
            EventKind::ExtensionRequested { .. } => "申请延期",
            EventKind::ExtensionApproved { .. } => "批准延期",
            EventKind::SupervisionIssued { .. } => "督办",
            EventKind::PriorityChanged { .. } => "调整紧急程度",
            EventKind::CategoryChanged { .. } => "调整诉求类别",
            EventKind::FieldEdited { .. } => "修改诉求信息",
            EventKind::TagsAdded { .. } => "添加标签",
            EventKind::CoUnitsAdded { .. } => "增加协办单位",
            EventKind::Suspended { .. } => "待补充材料（计时暂停）",
            EventKind::Resumed {} => "恢复办理",
            EventKind::Resolved { .. } => "办理完毕/答复",
            EventKind::CallbackRecorded { .. } => "回访",
            EventKind::Closed { .. } => "办结",
            EventKind::Reopened { .. } => "发回重办",
            EventKind::MarkedDuplicate { .. } => "并案（重复件）",
            EventKind::DuplicateAttached { .. } => "关联重复件",
            EventKind::Unmerged { .. } => "解除并案",
            EventKind::DuplicateDetached { .. } => "解除关联重复件",
            EventKind::Withdrawn { .. } => "撤回",
            EventKind::Archived {} => "归档",
            EventKind::PiRevealed { .. } => "查看完整个人信息",
            EventKind::PiPurged {} => "个人信息清除",
            EventKind::ConflictResolved { .. } => "冲突核定",
            EventKind::RatingReceived { .. } => "好差评",
            EventKind::BadReviewStepRecorded { .. } => "差评处理",
            EventKind::RatingAppealed { .. } => "申诉复核",
            EventKind::AppealDecided { .. } => "复核决定",
            EventKind::MaterialAdded { .. } => "上传材料",
            EventKind::MaterialRemoved { .. } => "删除材料",
            EventKind::MaterialPublished { .. } => "材料公开设置",
            EventKind::MaterialViewed { .. } => "查看材料",
        }
    }

    /// Whether a citizen may see this event in the public lookup (public replies and the visible milestones).
    pub fn is_public(&self) -> bool {
        matches!(
            self,
            EventKind::Registered { .. }
                | EventKind::Accepted {}
                | EventKind::Rejected { .. }
                | EventKind::Dispatched { .. }
                | EventKind::SignedIn { .. }
                | EventKind::ReplyPublished { .. }
                | EventKind::Resolved { .. }
                | EventKind::Closed { .. }
                | EventKind::Reopened { .. }
                | EventKind::Withdrawn { .. }
                | EventKind::RatingReceived { .. }
        )
    }

    /// Transition events change the state; the fold orders and arbitrates them.
    pub fn is_transition(&self) -> bool {
        transition_kind(self).is_some()
    }
}

/// The command kind that authors a transition event, or `None` for an event that is not a transition.
pub fn transition_kind(kind: &EventKind) -> Option<CommandKind> {
    Some(match kind {
        EventKind::Accepted {} => CommandKind::Accept,
        EventKind::Rejected { .. } => CommandKind::Reject,
        EventKind::Dispatched { .. } => CommandKind::Dispatch,
        EventKind::SignedIn { .. } => CommandKind::SignIn,
        EventKind::Returned { .. } => CommandKind::Return,
        EventKind::Reassigned { .. } => CommandKind::Reassign,
        EventKind::Suspended { .. } => CommandKind::Suspend,
        EventKind::Resumed {} => CommandKind::Resume,
        EventKind::Resolved { .. } => CommandKind::Resolve,
        EventKind::Closed { forced: false, .. } => CommandKind::Close,
        EventKind::Closed { forced: true, .. } => CommandKind::ForceClose,
        EventKind::Reopened { .. } => CommandKind::Reopen,
        EventKind::MarkedDuplicate { .. } => CommandKind::MarkDuplicate,
        EventKind::Unmerged { .. } => CommandKind::Unmerge,
        EventKind::Withdrawn { .. } => CommandKind::Withdraw,
        EventKind::Archived {} => CommandKind::Archive,
        _ => return None,
    })
}

/// The lifecycle of DOMAIN.md §6.2: the state `kind` leads to from `from` when authored by `role`.
///
/// Command validation, the fold and the surfaces all read [`CommandKind::permitted`], so what a node may author, what
/// the fold accepts after a merge and what a page offers are the same rules. A non-transition event is refused
/// (`State`).
pub fn transition(kind: &EventKind, from: Status, role: Role) -> Result<Status, Refusal> {
    let command = transition_kind(kind).ok_or(Refusal::State)?;
    command.permitted(role, from)?;
    command.target().ok_or(Refusal::State)
}

/// Precedence class of a transition (DOMAIN.md §6.3), 1 is the strongest. Concurrent conflicting transitions are won by
/// the stronger class; within a class the earlier (HLC, then node id) wins.
///
/// Class 3 ("回访不满意 → 重办 beats a concurrent 办结") has no member of its own: 发回重办 is a 督查科 action and so already in
/// class 2, which beats every 办结 except the 督查科's own 强制办结.
pub fn precedence(kind: &EventKind, role: Role) -> u8 {
    let oversight = role.is_oversight();
    match kind {
        EventKind::Withdrawn { .. } => 1,
        EventKind::Reassigned { .. } | EventKind::Reopened { .. } | EventKind::Unmerged { .. } => 2,
        EventKind::MarkedDuplicate { .. } | EventKind::Closed { .. } | EventKind::Dispatched { .. } if oversight => 2,
        EventKind::SignedIn { .. }
        | EventKind::Returned { .. }
        | EventKind::Resolved { .. }
        | EventKind::Suspended { .. }
        | EventKind::Resumed {} => 4,
        _ => 5,
    }
}
