//! The case page's actions: the submitted form becomes a case command (or a store operation: 编辑, 并案, 解除并案,
//! 查看个人信息), applied through the store; a refusal shows the case page again with a zh-CN reason.

use super::case_page::{
    VISIT_FUTURE_SLACK_MS, VISIT_MINUTES_MAX, case_response, done, field_value, load_view, refused,
};
use super::{ctx, desk_csrf, hall, session, to_login};
use crate::http::App;
use crate::http::citizen::{clean, form_rejection, store_unavailable};
use crate::http::guard::Session;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use std::sync::Arc;
use zhaowo_crdt::limits::EXTENSION_WORKING_DAYS_MAX;
use zhaowo_crdt::model::{
    CallbackMethod, CallbackOutcome, CaseResult, CommandKind, EditableField, Priority, ReviewStep, Satisfaction,
    Status, SupervisionLevel,
};
use zhaowo_crdt::time::Date;
use zhaowo_crdt::{CaseDoc, CaseId, CaseView, Command, CommandError, ConflictDecision, Ctx, EventId, RegNo};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ActionForm {
    pub(super) csrf: String,
    pub(super) action: String,
    pub(super) text: String,
    pub(super) basis: String,
    pub(super) lead_unit: String,
    pub(super) co_units: String,
    pub(super) choice: String,
    pub(super) method: String,
    pub(super) rating: String,
    pub(super) flag: Option<String>,
    /// A field conflict: the candidate value the reviewer picked.
    pub(super) value: Option<String>,
    /// 申请延期: working days.
    pub(super) days: String,
    /// 批准延期: the request event.
    pub(super) request: String,
    /// 上门: who went, when (`datetime-local`), for how many minutes.
    pub(super) volunteers: String,
    pub(super) at: String,
    pub(super) minutes: String,
    /// 指派上门: the volunteer laptop's node id.
    pub(super) laptop: String,
    /// 并案: the master's 登记编号 or case id.
    pub(super) master: String,
    /// 修改诉求信息: a field left out of the form is left as it is.
    pub(super) summary: Option<String>,
    pub(super) detail: Option<String>,
    pub(super) expectation: Option<String>,
    pub(super) location: Option<String>,
    pub(super) category: Option<String>,
    pub(super) priority: Option<String>,
}

fn units_list(text: &str) -> Vec<String> {
    text.split([',', '，', '、', ' ']).map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect()
}

/// Names typed into one field: split on commas and 、 (not on spaces: a name may hold one).
fn names_list(text: &str) -> Vec<String> {
    text.split([',', '，', '、', ';', '；', '\n']).map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect()
}

/// A `datetime-local` value (`2026-03-02T09:30`, seconds optional) as an instant in the hall's zone (+08:00).
fn parse_local_minute(text: &str) -> Option<i64> {
    let (date, time) = text.trim().split_once(['T', ' '])?;
    let date = Date::parse(date)?;
    let (hour, minute) = time.split_once(':')?;
    let (hour, minute): (u32, u32) = (hour.parse().ok()?, minute.get(..2)?.parse().ok()?);
    (hour < 24 && minute < 60).then(|| date.at_minute_ms(hour * 60 + minute))
}

/// The 回访 result "not reached" and "reached, did not say whether solved" (the other values are `CallbackOutcome` codes).
pub(super) const CALLBACK_UNREACHED: &str = "UNREACHED";
pub(super) const CALLBACK_UNSAID: &str = "UNSAID";

/// The command a desk form asks for, or a zh-CN message saying what is missing.
fn command_of(kind: CommandKind, form: &ActionForm, now_ms: i64) -> Result<Command, String> {
    let text = clean(&form.text);
    let required = |label: &str| if text.is_empty() { Err(format!("请填写{label}")) } else { Ok(text.clone()) };
    use CommandKind as K;
    Ok(match kind {
        K::Accept => Command::Accept,
        K::Dispatch => Command::Dispatch {
            lead_unit: Some(form.lead_unit.trim().to_owned()).filter(|u| !u.is_empty()),
            co_units: Some(units_list(&form.co_units)),
            due_ms: None,
        },
        K::SignIn => Command::SignIn { assignee: required("承办人")? },
        K::PublishReply => Command::PublishReply { text: required("答复内容")? },
        K::AddNote => Command::AddNote { text: required("备注")? },
        K::HoldConsultation => Command::HoldConsultation {
            units: units_list(&form.co_units),
            minutes: required("会诊纪要")?,
            site_visit: form.flag.is_some(),
            held_at_ms: now_ms,
        },
        K::LogVisit => {
            let visited_at_ms = parse_local_minute(&form.at).ok_or("请填写走访时间（年-月-日 时:分）")?;
            if visited_at_ms > now_ms + VISIT_FUTURE_SLACK_MS {
                return Err("走访时间晚于现在：请在走访之后记录".to_owned());
            }
            let duration_minutes = form
                .minutes
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|m| (1..=VISIT_MINUTES_MAX).contains(m))
                .ok_or(format!("走访时长须为 1-{VISIT_MINUTES_MAX} 分钟"))?;
            Command::LogVisit {
                volunteers: names_list(&form.volunteers),
                outcome: required("走访情况")?,
                visited_at_ms,
                duration_minutes,
            }
        }
        K::AssignVisit => Command::AssignVisit { laptop: form.laptop.trim().to_owned() },
        K::RequestExtension => Command::RequestExtension {
            working_days: form
                .days
                .trim()
                .parse()
                .map_err(|_| format!("请填写延长的工作日数（1-{EXTENSION_WORKING_DAYS_MAX}）"))?,
            reason: required("延期原因")?,
        },
        K::ApproveExtension => Command::ApproveExtension {
            request: EventId::parse(form.request.trim()).ok_or("请选择要批准的延期申请")?,
        },
        K::Resolve => Command::Resolve {
            result: CaseResult::parse(&form.choice).ok_or("请选择办理结果")?,
            reply: required("答复内容")?,
        },
        K::RecordCallback => {
            // Nothing is pre-filled (issue 15): the clerk picks what the citizen said, and 未说明 / 未评价 are answers.
            let (reached, outcome) = match form.choice.trim() {
                "" => return Err("请选择回访结果".to_owned()),
                CALLBACK_UNREACHED => (false, None),
                CALLBACK_UNSAID => (true, None),
                code => (true, Some(CallbackOutcome::parse(code).ok_or("回访结果不正确")?)),
            };
            let rating = match form.rating.trim() {
                "" => None,
                code => Some(
                    Satisfaction::parse(code)
                        .map(Satisfaction::score)
                        .or_else(|| code.parse::<u8>().ok().filter(|score| (1..=5).contains(score)))
                        .ok_or("评价不正确：请选择五级评价之一或“未评价”")?,
                ),
            };
            Command::RecordCallback {
                method: CallbackMethod::parse(&form.method).ok_or("请选择回访方式")?,
                reached,
                outcome,
                rating,
                comment: text,
            }
        }
        K::BadReviewStep => Command::BadReviewStep {
            step: ReviewStep::parse(form.choice.trim()).ok_or("请选择差评处理步骤")?,
            text: required("处理情况")?,
        },
        K::AppealRating => Command::AppealRating { reason: required("申诉理由")? },
        K::DecideAppeal => Command::DecideAppeal {
            upheld: match form.choice.trim() {
                "UPHELD" => true,
                "DISMISSED" => false,
                _ => return Err("请选择复核决定".to_owned()),
            },
            note: required("复核意见")?,
        },
        K::Close => Command::Close { reviewer: required("审核人")?, forced: false },
        K::Return => Command::Return { reason: required("原因")?, basis: clean(&form.basis) },
        K::Reject => Command::Reject { reason: required("原因")?, basis: clean(&form.basis) },
        K::Suspend => Command::Suspend { reason: required("原因")? },
        K::Resume => Command::Resume,
        K::Reopen => Command::Reopen { reason: required("原因")? },
        K::Withdraw => Command::Withdraw { reason: required("原因")? },
        K::PurgePersonalData => {
            if form.flag.is_none() {
                return Err("清除个人信息不可恢复：请勾选确认后再提交".to_owned());
            }
            Command::PurgePersonalData
        }
        K::ResolveConflict => Command::ResolveConflict {
            conflict: form.choice.trim().to_owned(),
            decision: match form.value.as_deref().map(clean) {
                Some(value) if !value.is_empty() => ConflictDecision::Choose(value),
                _ => ConflictDecision::Keep,
            },
            note: required("核定说明")?,
        },
        K::Supervise => Command::Supervise {
            level: SupervisionLevel::parse(&form.choice).ok_or("请选择督办级别")?,
            comment: required("意见")?,
        },
        K::Reassign => Command::Reassign {
            lead_unit: form.lead_unit.trim().to_owned(),
            co_units: units_list(&form.co_units),
            reason: required("改派原因")?,
        },
        K::ForceClose => Command::Close { reviewer: required("审核人")?, forced: true },
        K::AddCoUnits => Command::AddCoUnits { units: units_list(&form.co_units) },
        K::AddTags => Command::AddTags { tags: names_list(&required("标签")?) },
        // Not desk forms: 修改 (several commands, `edit_case`), 并案 / 解除并案 / 查看 (store operations, see
        // `case_action`), and 归档.
        K::EditField
        | K::ChangePriority
        | K::ChangeCategory
        | K::MarkDuplicate
        | K::Unmerge
        | K::RevealPersonalData
        | K::Archive => return Err("办事台不提供此操作".to_owned()),
        K::RemoveMaterial => Command::RemoveMaterial {
            material: EventId::parse(form.choice.trim()).ok_or("请选择要删除的材料")?,
            reason: required("删除原因")?,
        },
        K::PublishMaterial => Command::PublishMaterial {
            material: EventId::parse(form.choice.trim()).ok_or("请选择材料")?,
            public: form.flag.is_some(),
        },
        // Uploads and downloads have their own routes (multipart bodies, file answers).
        K::AddMaterial | K::ViewMaterial => return Err("请使用案件页面的“上传材料”或材料下载链接".to_owned()),
        // 好差评 is the citizen's own, on the lookup page: staff record what a citizen said with 回访.
        K::Rate => return Err("好差评由群众在查询页面提交；工作人员请用“回访”记录群众的意见".to_owned()),
    })
}

pub(super) async fn case_action(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let back = format!("/desk/case/{id}");
    let Form(form) = match form {
        Ok(form) => form,
        Err(rejection) => return form_rejection(&app, &rejection, &back),
    };
    if let Err(response) = desk_csrf(&app, &session, &form.csrf) {
        return response;
    }
    let view = match load_view(&app, &id).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    let ctx = match ctx(&app, &session) {
        Ok(ctx) => ctx,
        Err(response) => return response,
    };
    let Some(kind) = CommandKind::parse(&form.action) else {
        return refused(&app, &session, &view, "未知的操作", None).await;
    };
    match kind {
        CommandKind::RevealPersonalData => return reveal(&app, &session, &id, ctx, &clean(&form.text)).await,
        CommandKind::EditField => return edit_case(&app, &session, &view, &form).await,
        CommandKind::MarkDuplicate => return mark_duplicate(&app, &session, &view, ctx, &form).await,
        CommandKind::Unmerge => return unmerge(&app, &session, &view, ctx).await,
        _ => {}
    }
    let command = match command_of(kind, &form, ctx.now_ms) {
        Ok(command) => command,
        Err(message) => return refused(&app, &session, &view, &message, None).await,
    };
    match app.store.apply(&id, ctx, Arc::new(hall(&app)), command).await {
        Ok(_) => done(&view, kind),
        Err(crate::store::WriteError::Command(error)) => refused(&app, &session, &view, &error.zh(), None).await,
        Err(error) => store_unavailable(&error),
    }
}

/// 修改诉求信息: one command per changed field (summary, detail, expectation, location, category, priority), applied in
/// one store edit so that a refused field stores none of the others.
async fn edit_case(app: &App, session: &Session, view: &CaseView, form: &ActionForm) -> Response {
    let mut commands = Vec::new();
    for (field, typed) in [
        (EditableField::Summary, &form.summary),
        (EditableField::Detail, &form.detail),
        (EditableField::Expectation, &form.expectation),
        (EditableField::Location, &form.location),
    ] {
        if let Some(value) = typed.as_deref().map(clean)
            && value != field_value(view, field.code())
        {
            commands.push(Command::EditField { field, value });
        }
    }
    if let Some(category) = form.category.as_deref().map(str::trim)
        && category != view.category
    {
        commands.push(Command::ChangeCategory { category: category.to_owned() });
    }
    if let Some(typed) = &form.priority {
        let Some(priority) = Priority::parse(typed.trim()) else {
            return refused(app, session, view, "请选择紧急程度", Some(form)).await;
        };
        if priority != view.priority {
            commands.push(Command::ChangePriority { priority });
        }
    }
    if commands.is_empty() {
        return refused(app, session, view, "没有需要修改的内容", Some(form)).await;
    }
    // Each command gets its own context: fresh entropy per event id.
    let mut steps = Vec::with_capacity(commands.len());
    for command in commands {
        match ctx(app, session) {
            Ok(ctx) => steps.push((ctx, command)),
            Err(response) => return response,
        }
    }
    let hall = Arc::new(hall(app));
    let edit: crate::store::EditFn = Box::new(move |case: &mut CaseDoc| {
        let mut last = None;
        for (ctx, command) in steps {
            last = Some(case.apply(&ctx, &hall, command)?);
        }
        last.ok_or(CommandError::NoChange("nothing to edit"))
    });
    match app.store.edit(view.case_id.as_str(), edit).await {
        Ok(_) => done(view, CommandKind::EditField),
        Err(crate::store::WriteError::Command(error)) => refused(app, session, view, &error.zh(), Some(form)).await,
        Err(error) => store_unavailable(&error),
    }
}

/// 并案: marks this case a duplicate of the master named by its 登记编号 or case id, then records the duplicate on the
/// master (the two halves of `CaseDoc::mark_duplicate`, one document at a time as the store holds them).
async fn mark_duplicate(app: &App, session: &Session, view: &CaseView, ctx: Ctx, form: &ActionForm) -> Response {
    let typed = form.master.trim();
    let master_id = if let Some(reg_no) = RegNo::parse(typed) {
        match crate::http::cases::find_reg_no(&app.store, &reg_no).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                let message = format!("没有找到登记编号为 {reg_no} 的案件");
                return refused(app, session, view, &message, None).await;
            }
            Err(error) => return store_unavailable(&error),
        }
    } else if CaseId::parse(typed).is_some() {
        typed.to_owned()
    } else {
        let message = "请填写主案件的登记编号（如 BBC01-2026-0001）或案件标识";
        return refused(app, session, view, message, None).await;
    };
    let master_view = match app.store.case_view(&master_id).await {
        Ok(master_view) => master_view,
        Err(crate::store::ReadError::UnknownCase(_)) => {
            return refused(app, session, view, "没有找到该主案件", None).await;
        }
        Err(error) => return store_unavailable(&error),
    };
    if matches!(master_view.status, Status::Duplicate | Status::Archived) {
        let message = format!("主案件 {} 的状态为“{}”，不能作为主案件", master_view.reg_no, master_view.status.label());
        return refused(app, session, view, &message, None).await;
    }
    // Both halves (`MarkedDuplicate` here, `DuplicateAttached` on the master) in one store transaction.
    match app.store.mark_duplicate(view.case_id.as_str(), &master_id, ctx).await {
        Ok(_) => done(view, CommandKind::MarkDuplicate),
        Err(crate::store::WriteError::Command(error)) => refused(app, session, view, &error.zh(), None).await,
        Err(error) => store_unavailable(&error),
    }
}

/// 解除并案 (督查科): the duplicate returns to 已登记 and the master stops listing it, both in one store transaction
/// (`Store::unmerge`).
async fn unmerge(app: &App, session: &Session, view: &CaseView, ctx: Ctx) -> Response {
    let Some(master) = view.duplicate_of.clone() else {
        return refused(app, session, view, "本案不是重复件，无需解除并案", None).await;
    };
    let hall = Arc::new(hall(app));
    match app.store.unmerge(view.case_id.as_str(), master.as_str(), ctx, hall).await {
        Ok(acks) if acks.second.is_some() => done(view, CommandKind::Unmerge),
        Ok(_) => {
            // The master has not reached this node: the duplicate is unmerged; the master's list heals when the
            // master's node unmerges or the documents sync (the duplicate's own event says it left).
            let view = match load_view(app, view.case_id.as_str()).await {
                Ok(view) => view,
                Err(response) => return response,
            };
            let message = "已解除并案（主案件不在本节点，主案件一侧未记录）";
            case_response(app, session, StatusCode::OK, &view, Some(Ok(message)), None, None).await
        }
        Err(crate::store::WriteError::Command(error)) => refused(app, session, view, &error.zh(), None).await,
        Err(error) => store_unavailable(&error),
    }
}

/// Shows the full personal record once and records who looked and why (a `PiRevealed` event).
async fn reveal(app: &App, session: &Session, id: &str, ctx: Ctx, purpose: &str) -> Response {
    let shown: Arc<std::sync::Mutex<Option<zhaowo_crdt::pi::PersonalData>>> = Arc::default();
    let slot = shown.clone();
    let purpose_owned = purpose.to_owned();
    let edit: crate::store::EditFn = Box::new(move |case: &mut CaseDoc| {
        let (personal, event) = case.reveal_personal_data_event(&ctx, &purpose_owned)?;
        *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(personal);
        Ok(event)
    });
    let result = app.store.edit(id, edit).await;
    let view = match load_view(app, id).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    match result {
        Ok(_) => {
            let personal = shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take().unwrap_or_default();
            tracing::info!(target: "zhaowo::_events::pi", case_id = id, staff = %session.staff(), "personal data revealed");
            let revealed = html! {
                div.card id="revealed" {
                    strong { "完整个人信息（已记录查看）" }
                    dl {
                        dt { "姓名" } dd { (personal.name.unwrap_or_default()) }
                        dt { "电话" } dd { (personal.phone.unwrap_or_default()) }
                        @if let Some(address) = personal.address { dt { "地址" } dd { (address) } }
                    }
                }
            };
            case_response(app, session, StatusCode::OK, &view, None, Some(revealed), None).await
        }
        Err(crate::store::WriteError::Command(error)) => refused(app, session, &view, &error.zh(), None).await,
        Err(error) => store_unavailable(&error),
    }
}
