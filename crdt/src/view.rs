//! `CaseView`: the read model of one case that pages, the CLI, exports and projections print, and the public subset a
//! citizen or Open311 may see.

use crate::event::{Event, EventKind};
use crate::fold::SupersededBy;
use crate::ids::{CaseId, EventId, RegNo};
use crate::model::{
    BadReviewReason, CallbackMethod, CallbackOutcome, CaseResult, Channel, CommandKind, Mode, NotDoneReason, Priority,
    ReviewStep, Role, Satisfaction, Status, SupervisionLevel,
};
use crate::pi::MaskedPersonalData;
use serde::Serialize;
use std::collections::BTreeSet;

/// 涉及事项: the matter that "could not be done" at a regular window.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
pub struct Matter {
    pub name: String,
    pub code: String,
    /// 原办理窗口.
    pub window: String,
}

/// One line of a case's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    pub event_id: EventId,
    pub at_ms: i64,
    pub node: String,
    pub staff: String,
    pub role: Role,
    /// zh-CN name of the event type.
    pub label: &'static str,
    /// A one-line description in zh-CN.
    pub text: String,
    pub public: bool,
    /// The transition did not take effect (see the case's conflicts).
    pub superseded: bool,
}

/// A public reply as the citizen sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicReply {
    pub at_ms: i64,
    pub text: String,
}

/// A 回访 record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Callback {
    pub event_id: EventId,
    pub at_ms: i64,
    pub by: String,
    pub method: CallbackMethod,
    pub reached: bool,
    pub outcome: Option<CallbackOutcome>,
    pub rating: Option<u8>,
    pub comment: String,
}

/// The citizen's 好差评 of the case (issue 15): the latest rating; one per round (a round ends with 重办), changeable
/// for `limits::RATING_CHANGE_DAYS` after the round's first. Who rated is not part of it (GB/T 39734 §4.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rating {
    pub event_id: EventId,
    pub at_ms: i64,
    /// The round's first rating: the change period counts from it.
    pub first_at_ms: i64,
    /// How many 重办 came before it.
    pub round: usize,
    pub level: Satisfaction,
    pub reasons: Vec<BadReviewReason>,
    pub comment: String,
    /// Changes after the round's first rating.
    pub changes: usize,
    /// The 督查科 upheld the unit's appeal: the rating is not counted.
    pub void: bool,
}

/// The 差评 task a 不满意/非常不满意 rating opens for the 督查科: 核实 → 整改 → 反馈, due by `due_ms`; the unit may
/// appeal (申诉复核) and the 督查科 decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadReviewTask {
    pub round: usize,
    pub opened_at_ms: i64,
    pub due_ms: i64,
    pub level: Satisfaction,
    pub reasons: Vec<BadReviewReason>,
    pub steps: Vec<ReviewStepEntry>,
    pub appeal: Option<Appeal>,
    /// The citizen changed the rating to a good one before any step: nothing to follow through.
    pub cancelled: bool,
}

/// One recorded step of a 差评 task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReviewStepEntry {
    pub step: ReviewStep,
    pub at_ms: i64,
    pub by: String,
    pub text: String,
}

/// 申诉复核 of a rating by the unit, and the 督查科's decision once made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Appeal {
    pub at_ms: i64,
    pub by: String,
    pub reason: String,
    /// `(upheld, note, at_ms, by)`.
    pub decision: Option<(bool, String, i64, String)>,
}

impl BadReviewTask {
    /// The step to record next, in order (`None` once 反馈 is recorded).
    pub fn next_step(&self) -> Option<ReviewStep> {
        ReviewStep::ALL.iter().copied().find(|step| !self.steps.iter().any(|entry| entry.step == *step))
    }

    /// Whether the appeal was upheld (the rating voided).
    pub fn appeal_upheld(&self) -> bool {
        self.appeal.as_ref().is_some_and(|appeal| matches!(appeal.decision, Some((true, ..))))
    }

    /// Still to follow through: not cancelled, no upheld appeal, no 反馈 yet.
    pub fn is_open(&self) -> bool {
        !self.cancelled && !self.appeal_upheld() && self.next_step().is_some()
    }

    /// Open past its due date.
    pub fn overdue(&self, now_ms: i64) -> bool {
        self.is_open() && now_ms > self.due_ms
    }

    /// The task's stage in zh-CN (待核实, 待整改, 待反馈, 已反馈, 申诉成立, 群众已改评).
    pub fn stage_zh(&self) -> &'static str {
        if self.cancelled {
            "群众已改评"
        } else if self.appeal_upheld() {
            "申诉成立"
        } else {
            match self.next_step() {
                Some(ReviewStep::Verify) => "待核实",
                Some(ReviewStep::Rectify) => "待整改",
                Some(ReviewStep::Feedback) => "待反馈",
                None => "已反馈",
            }
        }
    }

    /// The 反馈 to the citizen, once recorded.
    pub fn feedback(&self) -> Option<&ReviewStepEntry> {
        self.steps.iter().find(|entry| entry.step == ReviewStep::Feedback)
    }
}

/// An extension request and whether it was approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Extension {
    pub request: EventId,
    pub requested_at_ms: i64,
    pub reason: String,
    pub approved_due_ms: Option<i64>,
}

/// One candidate value of a field written concurrently on two nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldCandidate {
    pub value: String,
    pub node: String,
    pub staff: String,
    pub at_ms: i64,
}

/// A 冲突待核 item: something offline nodes did concurrently that a person should look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// `t-{event id}` for a superseded transition, `f-{field}` for concurrent field values.
    pub id: String,
    pub detail: ConflictDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConflictDetail {
    /// A transition that did not take effect.
    Transition {
        loser: EventId,
        loser_label: &'static str,
        loser_node: String,
        loser_staff: String,
        loser_at_ms: i64,
        reason: SupersededBy,
        /// The transition that won, when one did.
        winner_label: Option<&'static str>,
    },
    /// A scalar field written concurrently: every value Automerge kept (`get_all`), with who wrote it and when.
    Field { field: String, candidates: Vec<FieldCandidate> },
}

/// Orthogonal flags a reviewer should see.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Flags {
    /// 办结后新增内容: a note or reply not seen by the close (added after or concurrently with it).
    pub content_after_close: bool,
    /// The category changed after the case was dispatched.
    pub category_changed_after_dispatch: bool,
    /// An approved extension moved the due date.
    pub extended: bool,
    /// Events the fold could not read (written by a newer version, damaged, or reusing an earlier event's id: the
    /// later one in list order, the same on every replica): counted, not applied.
    pub unreadable_events: usize,
}

/// Everything a page or the CLI prints about a case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseView {
    pub case_id: CaseId,
    pub reg_no: RegNo,
    pub channel: Channel,
    pub registered_at_ms: i64,
    pub registered_by: String,
    pub registered_node: String,
    pub window: String,
    pub nature: crate::model::Nature,
    pub category: String,
    pub modes: BTreeSet<Mode>,
    pub matter: Option<Matter>,
    pub not_done_reason: Option<NotDoneReason>,
    pub summary: String,
    pub detail: String,
    pub expectation: String,
    pub location: String,
    pub priority: Priority,
    pub status: Status,
    pub lead_unit: Option<String>,
    pub co_units: BTreeSet<String>,
    pub assignee: Option<String>,
    pub signed_at_ms: Option<i64>,
    pub first_response_due_ms: i64,
    /// 承诺办结时间: the base due date or the dispatch's, moved by the latest approved extension.
    pub due_ms: i64,
    /// Time spent ON_HOLD so far (closed intervals; an open hold is added by [`CaseView::effective_due_ms`]).
    pub paused_ms: i64,
    pub hold_started_ms: Option<i64>,
    pub first_response_ms: Option<i64>,
    pub replied_at_ms: Option<i64>,
    pub supervision: SupervisionLevel,
    pub supervision_count: usize,
    pub public_reply: Option<String>,
    pub public_replies: Vec<PublicReply>,
    pub notes: Vec<String>,
    pub result: Option<CaseResult>,
    pub closed_at_ms: Option<i64>,
    pub closed_by: Option<String>,
    pub reviewer: Option<String>,
    pub callbacks: Vec<Callback>,
    /// The citizen's 好差评 (the latest; see [`Rating`]) and the 差评 tasks, one per round at most.
    pub rating: Option<Rating>,
    pub bad_reviews: Vec<BadReviewTask>,
    /// What a 待补充 case waits for: the reason of the current 待补充 (the clerk writes it for the citizen).
    pub hold_reason: Option<String>,
    pub extensions: Vec<Extension>,
    pub consultations: usize,
    pub site_visits: usize,
    pub visit_minutes: u64,
    /// 指派上门 still open: the volunteer laptop (node id) named by the latest assignment and when, until that laptop
    /// logs its visit or the case leaves the working states. It may hold the case key meanwhile (`keys`).
    pub visit_assignment: Option<VisitAssignment>,
    pub dispatches: usize,
    pub returns: usize,
    pub reopens: usize,
    pub duplicate_of: Option<CaseId>,
    pub duplicates: BTreeSet<CaseId>,
    pub tags: BTreeSet<String>,
    pub sensitive: bool,
    /// Keyed hash of the phone number (not the number): same citizen, same tag, for duplicate suggestions.
    pub phone_tag: Option<String>,
    pub personal: MaskedPersonalData,
    pub pi_reveals: usize,
    pub updated_at_ms: i64,
    pub timeline: Vec<TimelineEntry>,
    pub conflicts: Vec<Conflict>,
    pub flags: Flags,
    /// Every event id in the case (for "no acknowledged command lost" checks and sync accounting).
    pub event_ids: BTreeSet<EventId>,
    /// 材料 (issue 16), in the order they were added, removed ones included (`removed`).
    pub materials: Vec<Material>,
}

/// A material on the case file: what its `MaterialAdded` event names, folded with later removal, publication and
/// downloads. The files (sealed under the case key) are in the node's blob store under `hash` and `thumb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Material {
    /// The id of the `MaterialAdded` event: how pages and commands name the material.
    pub id: EventId,
    pub hash: String,
    /// Bytes of the sealed file.
    pub bytes: u64,
    pub media: crate::materials::MaterialType,
    /// The file name ([`crate::seal::SEALED_ZH`] without the key).
    pub name: String,
    pub public: bool,
    pub thumb: Option<String>,
    pub thumb_bytes: u64,
    pub added_at_ms: i64,
    pub added_by: String,
    pub added_role: Role,
    pub removed: bool,
    /// Downloads recorded (查看材料).
    pub views: usize,
}

impl CaseView {
    /// The materials not removed.
    pub fn live_materials(&self) -> impl Iterator<Item = &Material> {
        self.materials.iter().filter(|material| !material.removed)
    }

    /// The live material with this id.
    pub fn material(&self, id: &str) -> Option<&Material> {
        self.live_materials().find(|material| material.id.as_str() == id)
    }

    /// The files (content addresses and sizes) a node holding this case should hold: every live material and its
    /// thumbnail, none once the personal data is purged (the key is gone, the bytes are noise).
    pub fn wanted_blobs(&self) -> Vec<(String, u64)> {
        if self.personal.purged {
            return Vec::new();
        }
        self.live_materials()
            .flat_map(|material| {
                std::iter::once((material.hash.clone(), material.bytes))
                    .chain(material.thumb.clone().map(|thumb| (thumb, material.thumb_bytes)))
            })
            .collect()
    }
}

/// A published material on the citizen's lookup and in Open311 (`media_url`): no name, no uploader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicMaterial {
    pub id: EventId,
    pub media: crate::materials::MaterialType,
    pub has_thumb: bool,
}

/// An open 指派上门.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VisitAssignment {
    pub laptop: String,
    pub at_ms: i64,
}

/// What the citizen lookup and Open311 may show: public fields only, never personal data, never internal notes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicCaseView {
    pub case_id: CaseId,
    pub reg_no: RegNo,
    pub nature: crate::model::Nature,
    pub category: String,
    pub summary: String,
    pub status: Status,
    pub open: bool,
    pub lead_unit: Option<String>,
    pub registered_at_ms: i64,
    pub updated_at_ms: i64,
    /// 预计办结时间 (Open311 `expected_datetime`), while the case is open.
    pub expected_ms: Option<i64>,
    pub replies: Vec<PublicReply>,
    pub milestones: Vec<PublicMilestone>,
    /// 待补充: what the case waits for (the clerk's public text); the time limit is paused meanwhile.
    pub waiting_for: Option<String>,
    /// Materials a clerk published (none once the personal data is purged).
    pub materials: Vec<PublicMaterial>,
}

/// A step of the case a citizen may see (登记, 派单, 签收, 答复, 办结…), without who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicMilestone {
    pub at_ms: i64,
    pub label: &'static str,
}

impl CaseView {
    /// Whether Open311 may list and serve the case (issue 13 §5): the citizen agreed to publication (同意脱敏公开),
    /// the case is not sensitive, and its nature is none of 举报 (whistleblowing), 倾诉 (venting) or 投诉 (a complaint
    /// may name staff, and nothing on a case says whether it does: every complaint stays off the public list). A purged
    /// case is never public. The citizen's own lookup (behind the 查询码) does not ask this.
    pub fn open311_public(&self) -> bool {
        use crate::model::Nature;
        self.personal.publish_ok
            && !self.personal.purged
            && !self.sensitive
            && !matches!(self.nature, Nature::Report | Nature::Venting | Nature::Complaint)
    }

    /// The due date with time spent on hold (待补充, the clock paused) added, as of `now_ms`.
    pub fn effective_due_ms(&self, now_ms: i64) -> i64 {
        let open_hold = self.hold_started_ms.map_or(0, |start| (now_ms - start).max(0));
        self.due_ms + self.paused_ms + open_hold
    }

    /// 超期: the solution clock is running and the due date has passed.
    pub fn overdue(&self, now_ms: i64) -> bool {
        self.status.solution_clock_runs() && now_ms > self.effective_due_ms(now_ms)
    }

    /// What `role` may do to this case now, in [`CommandKind::ALL`] order: the kinds the permission table
    /// ([`CommandKind::permitted`]) allows in the case's state, less those this case has nothing to act on (解除并案
    /// of a case not merged, 批准延期 without a pending request, 核定冲突 without a conflict, personal data already
    /// purged). The desk shows a form for each, `zhaowo case show` lists them.
    pub fn allowed(&self, role: Role) -> Vec<CommandKind> {
        CommandKind::ALL
            .iter()
            .copied()
            .filter(|&kind| kind.permitted(role, self.status).is_ok() && self.has_subject(kind))
            .collect()
    }

    /// Whether the case holds what `kind` acts on (a refusal that is not about role or state otherwise).
    fn has_subject(&self, kind: CommandKind) -> bool {
        match kind {
            CommandKind::Unmerge => self.duplicate_of.is_some(),
            CommandKind::ApproveExtension => self.extensions.iter().any(|ext| ext.approved_due_ms.is_none()),
            CommandKind::ResolveConflict => !self.conflicts.is_empty(),
            CommandKind::RevealPersonalData | CommandKind::PurgePersonalData => !self.personal.purged,
            CommandKind::BadReviewStep => self.open_bad_review().is_some(),
            CommandKind::AppealRating => self.appealable_bad_review().is_some(),
            CommandKind::DecideAppeal => self.pending_appeal().is_some(),
            CommandKind::RemoveMaterial | CommandKind::PublishMaterial | CommandKind::ViewMaterial => {
                self.live_materials().next().is_some() && !self.personal.purged
            }
            CommandKind::AddMaterial => !self.personal.purged,
            _ => true,
        }
    }

    /// The open 差评 task, if any (the latest round's).
    pub fn open_bad_review(&self) -> Option<&BadReviewTask> {
        self.bad_reviews.last().filter(|task| task.is_open())
    }

    /// The 差评 task the unit may still appeal: the latest, not cancelled, not appealed yet.
    pub fn appealable_bad_review(&self) -> Option<&BadReviewTask> {
        self.bad_reviews.last().filter(|task| !task.cancelled && task.appeal.is_none())
    }

    /// The appeal waiting for the 督查科's decision.
    pub fn pending_appeal(&self) -> Option<&Appeal> {
        self.bad_reviews.last()?.appeal.as_ref().filter(|appeal| appeal.decision.is_none())
    }

    /// A 差评 task past its due date.
    pub fn bad_review_overdue(&self, now_ms: i64) -> bool {
        self.bad_reviews.iter().any(|task| task.overdue(now_ms))
    }

    /// The case's 1–5 score for 满意率: the citizen's own rating (none when an appeal voided it), else the latest
    /// 回访 that recorded one (a 回访 without a rating counts as 未评价, not as 满意).
    pub fn rating_score(&self) -> Option<u8> {
        match &self.rating {
            Some(rating) => (!rating.void).then_some(rating.level.score()),
            None => self.callbacks.iter().rev().find_map(|callback| callback.rating),
        }
    }

    /// Whether the citizen may rate now (the table allows it and the round's change period is not over).
    pub fn citizen_may_rate(&self, now_ms: i64) -> bool {
        CommandKind::Rate.permitted(Role::Citizen, self.status).is_ok()
            && self.rating.as_ref().is_none_or(|rating| {
                rating.round != self.reopens
                    || now_ms - rating.first_at_ms <= crate::limits::RATING_CHANGE_DAYS * crate::time::DAY_MS
            })
    }

    /// The first response (签收 or a public reply) is late.
    pub fn response_overdue(&self, now_ms: i64) -> bool {
        self.status.is_open() && self.first_response_ms.is_none() && now_ms > self.first_response_due_ms
    }

    pub fn public(&self) -> PublicCaseView {
        PublicCaseView {
            case_id: self.case_id.clone(),
            reg_no: self.reg_no.clone(),
            nature: self.nature,
            category: self.category.clone(),
            summary: self.summary.clone(),
            status: self.status,
            open: self.status.is_open(),
            lead_unit: self.lead_unit.clone(),
            registered_at_ms: self.registered_at_ms,
            updated_at_ms: self.updated_at_ms,
            expected_ms: self.status.is_open().then_some(self.due_ms + self.paused_ms),
            replies: self.public_replies.clone(),
            milestones: self
                .timeline
                .iter()
                .filter(|entry| {
                    entry.public
                        && !entry.superseded
                        && entry.label != EventKind::ReplyPublished { text: String::new() }.label()
                })
                .map(|entry| PublicMilestone { at_ms: entry.at_ms, label: entry.label })
                .collect(),
            waiting_for: self.hold_reason.clone().filter(|_| self.status == Status::OnHold),
            materials: if self.personal.purged {
                Vec::new()
            } else {
                self.live_materials()
                    .filter(|material| material.public)
                    .map(|material| PublicMaterial {
                        id: material.id.clone(),
                        media: material.media,
                        has_thumb: material.thumb.is_some(),
                    })
                    .collect()
            },
        }
    }
}

/// A one-line zh-CN description of an event for the timeline.
pub(crate) fn describe(event: &Event) -> String {
    let units = |units: &[String]| if units.is_empty() { "无".to_owned() } else { units.join("、") };
    match &event.kind {
        EventKind::Registered { submitted: true, .. } => "群众通过小程序提交诉求".to_owned(),
        EventKind::Registered { priority, .. } => format!("登记诉求（{priority}）"),
        EventKind::Accepted {} => "受理".to_owned(),
        EventKind::Rejected { reason, basis } => format!("不予受理：{reason}（依据：{basis}）"),
        EventKind::Dispatched { lead_unit, co_units, due_ms } => {
            format!(
                "派单至 {lead_unit}，协办：{}，办结时限 {}",
                units(co_units),
                crate::time::format_local_minute(*due_ms)
            )
        }
        EventKind::SignedIn { assignee } => format!("签收，承办人 {assignee}"),
        EventKind::Returned { reason, basis } => format!("退单：{reason}（依据：{basis}）"),
        EventKind::Reassigned { lead_unit, co_units, reason, .. } => {
            format!("改派至 {lead_unit}，协办：{}；原因：{reason}", units(co_units))
        }
        EventKind::NoteAdded { text } => text.clone(),
        EventKind::ReplyPublished { text } => text.clone(),
        EventKind::ConsultationHeld { units: u, minutes, site_visit, .. } => {
            format!("会诊（{}）{}：{minutes}", units(u), if *site_visit { "，含现场勘查" } else { "" })
        }
        EventKind::SiteVisitLogged { volunteers, outcome, duration_minutes, .. } => {
            format!("上门（{}，{duration_minutes} 分钟）：{outcome}", units(volunteers))
        }
        EventKind::VisitAssigned { laptop } => {
            format!("指派上门，上门电脑 {}", laptop.get(..12).unwrap_or(laptop))
        }
        EventKind::ExtensionRequested { reason, .. } => format!("申请延期：{reason}"),
        EventKind::ExtensionApproved { due_ms, .. } => {
            format!("批准延期至 {}", crate::time::format_local_minute(*due_ms))
        }
        EventKind::SupervisionIssued { level, comment } => format!("{level}：{comment}"),
        EventKind::PriorityChanged { priority } => format!("紧急程度调整为 {priority}"),
        EventKind::CategoryChanged { category } => format!("诉求类别调整为 {category}"),
        EventKind::FieldEdited { field, .. } => format!("修改{}", field.label()),
        EventKind::TagsAdded { tags } => format!("标签：{}", tags.join("、")),
        EventKind::CoUnitsAdded { units: u } => format!("增加协办单位：{}", units(u)),
        EventKind::Suspended { reason } => format!("待补充材料：{reason}"),
        EventKind::Resumed {} => "恢复办理".to_owned(),
        EventKind::Resolved { result, reply } => format!("{result}：{reply}"),
        EventKind::CallbackRecorded { reached: false, method, .. } => format!("{method}回访未联系上"),
        EventKind::CallbackRecorded { outcome, rating, comment, method, .. } => format!(
            "{method}回访：{}，评价 {}；{comment}",
            outcome.map_or("未说明", |o| o.label()),
            rating.map_or("未评价".to_owned(), |r| format!("{r} 分"))
        ),
        EventKind::Closed { reviewer, forced } => {
            format!("{}，审核人 {reviewer}", if *forced { "强制办结" } else { "办结" })
        }
        EventKind::Reopened { reason } => format!("发回重办：{reason}"),
        EventKind::MarkedDuplicate { master } => format!("并入主案件 {master}"),
        EventKind::DuplicateAttached { duplicate } => format!("重复件 {duplicate} 并入本案"),
        EventKind::Unmerged { master } => format!("解除与 {master} 的并案"),
        EventKind::DuplicateDetached { duplicate } => format!("重复件 {duplicate} 解除并案"),
        EventKind::Withdrawn { reason } => format!("撤回：{reason}"),
        EventKind::Archived {} => "归档".to_owned(),
        EventKind::PiRevealed { purpose } => format!("查看完整个人信息，用途：{purpose}"),
        EventKind::PiPurged {} => "个人信息已清除".to_owned(),
        EventKind::ConflictResolved { conflict, decision, note } => format!("核定冲突 {conflict}：{decision}；{note}"),
        EventKind::RatingReceived { level, reasons, comment, .. } => {
            let mut text = format!("群众评价：{level}");
            if !reasons.is_empty() {
                let reasons: Vec<&str> = reasons.iter().map(|reason| reason.label()).collect();
                text += &format!("（{}）", reasons.join("、"));
            }
            if !comment.is_empty() {
                text += &format!("；{comment}");
            }
            text
        }
        EventKind::BadReviewStepRecorded { step, text } => format!("差评{step}：{text}"),
        EventKind::RatingAppealed { reason } => format!("承办单位申诉复核：{reason}"),
        EventKind::AppealDecided { upheld: true, note } => format!("复核决定：申诉成立，评价不计入满意率；{note}"),
        EventKind::AppealDecided { upheld: false, note } => format!("复核决定：申诉不成立，评价保留；{note}"),
        EventKind::MaterialAdded { name, media, bytes, public, .. } => format!(
            "上传材料「{name}」（{}，{}）{}",
            media.zh(),
            crate::materials::size_zh(*bytes),
            if *public { "，公开" } else { "" }
        ),
        EventKind::MaterialRemoved { material, reason } => format!("删除材料 {material}：{reason}"),
        EventKind::MaterialPublished { material, public: true } => format!("公开材料 {material}"),
        EventKind::MaterialPublished { material, public: false } => format!("取消公开材料 {material}"),
        EventKind::MaterialViewed { material } => format!("查看材料 {material}"),
    }
}
