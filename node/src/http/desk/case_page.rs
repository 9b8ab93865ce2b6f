//! The case page: the case, its timeline, conflicts to settle, related cases, and a form for each action the
//! signed-in role may take.

use super::actions::ActionForm;
use super::{desk_page, hall, session, to_login};
use crate::http::App;
use crate::http::citizen::store_unavailable;
use crate::http::guard::Session;
use crate::http::page::{error_page, minute};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use zhaowo_crdt::fold::SupersededBy;
use zhaowo_crdt::limits::{
    DETAIL_CHARS_MAX, EXPECTATION_CHARS_MAX, EXTENSION_WORKING_DAYS_MAX, LOCATION_CHARS_MAX, NOTE_CHARS_MAX,
    REASON_CHARS_MAX, SUMMARY_CHARS_MAX, VOLUNTEERS_PER_VISIT_MAX,
};
use zhaowo_crdt::model::{
    CallbackMethod, CallbackOutcome, CaseResult, CommandKind, CommandKind as K, EditableField, Priority, Satisfaction,
    SupervisionLevel,
};
use zhaowo_crdt::view::{Conflict, ConflictDetail};
use zhaowo_crdt::{CaseId, CaseView};

/// Minutes one site visit may last. The case rules cut a longer visit to a day (24 × 60 minutes) without a word; the
/// desk refuses the figure instead, so a typo ("900" for "90") is corrected by the person who typed it.
pub(super) const VISIT_MINUTES_MAX: u32 = 24 * 60;
/// A visit is recorded after it happened: a visit time later than now by more than this (clock slack between window PCs)
/// is a typo.
pub(super) const VISIT_FUTURE_SLACK_MS: i64 = 10 * 60 * 1000;

/// The author shown on the desk: the QR channel's `citizen` reads as 群众.
fn staff_label(staff: &str) -> &str {
    if staff == "citizen" { "群众（扫码提交）" } else { staff }
}

fn unit_name(hall: &zhaowo_crdt::Hall, code: &str) -> String {
    hall.units.get(code).map_or(code.to_owned(), |u| format!("{}（{code}）", u.name))
}

fn category_name(hall: &zhaowo_crdt::Hall, code: &str) -> String {
    hall.categories.get(code).map_or(code.to_owned(), |c| c.name.clone())
}

/// The first characters of a node id (the whole id is 64 hex digits).
fn node_short(node: &str) -> &str {
    node.get(..8).unwrap_or(node)
}

/// The zh-CN name of a case field that offline nodes may write concurrently.
fn field_label(field: &str) -> &str {
    match EditableField::parse(field) {
        Some(editable) => editable.label(),
        None if field == "category" => "诉求类别",
        None => field,
    }
}

/// The value a conflicting field shows now (the merge's last writer).
pub(super) fn field_value<'a>(view: &'a CaseView, field: &str) -> &'a str {
    match field {
        "summary" => &view.summary,
        "detail" => &view.detail,
        "expectation" => &view.expectation,
        "location" => &view.location,
        "category" => &view.category,
        _ => "",
    }
}

fn superseded_reason(reason: &SupersededBy) -> String {
    match reason {
        SupersededBy::Concurrent { .. } => "与另一节点离线时同时做出的操作相冲突，按优先级规则未生效".to_owned(),
        SupersededBy::InvalidAfterMerge { state } => {
            format!("合并后案件状态为“{}”，该操作已不适用", state.label())
        }
        SupersededBy::DuplicateCycle { .. } => "两案同时被互相并案，以登记较早的案件为主案件".to_owned(),
    }
}

/// One 冲突待核 item with, for the 督查科 (and admins), the form that settles it: a field conflict takes the value the
/// reviewer picks; a transition conflict keeps the merge result (the case rules decide the winning transition, so
/// "adopt the loser instead" is a new action on the case page after the review).
pub(super) fn conflict_item(
    hall: &zhaowo_crdt::Hall,
    session: &Session,
    view: &CaseView,
    conflict: &Conflict,
) -> Markup {
    let may_resolve = view.allowed(session.role).contains(&CommandKind::ResolveConflict);
    let action = format!("/desk/case/{}/act", view.case_id.as_str());
    let head = html! {
        input type="hidden" name="csrf" value=(session.csrf);
        input type="hidden" name="action" value=(CommandKind::ResolveConflict.code());
        input type="hidden" name="choice" value=(conflict.id);
    };
    let note = html! {
        label for={ "note-" (conflict.id) } { "核定说明（最多 " (REASON_CHARS_MAX) " 字）" }
        input type="text" id={ "note-" (conflict.id) } name="text" required maxlength=(REASON_CHARS_MAX);
    };
    html! {
        div.card.conflict id={ "conflict-" (conflict.id) } {
            @match &conflict.detail {
                ConflictDetail::Transition { loser_label, loser_node, loser_staff, loser_at_ms, reason, winner_label, .. } => {
                    p {
                        strong { "「" (loser_label) "」未生效" }
                        " " span.hint { (minute(*loser_at_ms)) " · " (staff_label(loser_staff)) " · 节点 " (node_short(loser_node)) }
                    }
                    p.hint {
                        (superseded_reason(reason))
                        @if let Some(winner) = winner_label { "；生效的是「" (winner) "」" }
                        "。"
                    }
                    @if may_resolve {
                        form method="post" action=(action) {
                            (head) (note)
                            button.secondary type="submit" { "维持合并结果" }
                            p.hint { "如应采用未生效的操作，请核定后在案件页重新办理。" }
                        }
                    }
                }
                ConflictDetail::Field { field, candidates } => {
                    p { strong { (field_label(field)) " 有 " (candidates.len()) " 个并发取值" } }
                    @let current = field_value(view, field);
                    @if may_resolve {
                        form method="post" action=(action) {
                            (head)
                            @for candidate in candidates {
                                div.candidate {
                                    label.inline {
                                        input type="radio" name="value" value=(candidate.value) required checked[candidate.value == current];
                                        " "
                                        @if field == "category" { (category_name(hall, &candidate.value)) } @else { span style="white-space:pre-wrap" { (candidate.value) } }
                                    }
                                    br;
                                    span.hint {
                                        (staff_label(&candidate.staff)) " · " (minute(candidate.at_ms)) " · 节点 " (node_short(&candidate.node))
                                        @if candidate.value == current { " · 当前显示" }
                                    }
                                }
                            }
                            (note)
                            button type="submit" { "采用所选取值" }
                        }
                    } @else {
                        ul { @for candidate in candidates {
                            li {
                                @if field == "category" { (category_name(hall, &candidate.value)) } @else { (candidate.value) }
                                " " span.hint { (staff_label(&candidate.staff)) " · " (minute(candidate.at_ms)) }
                            }
                        } }
                    }
                }
            }
        }
    }
}

/// The cases a case is merged with (its master, its duplicates) as case id and 登记编号, for links on the case page.
#[derive(Debug, Default)]
struct Related {
    master: Option<(String, String)>,
    duplicates: Vec<(String, String)>,
    /// This node's SMS messages for the case (issue 15 §4): the outbox is node-local.
    sms: Vec<crate::store::OutboxRow>,
    /// The canned reply picked for the reply boxes (`?canned=N`, an index into the hall's canned replies).
    canned: Option<usize>,
    /// What this node holds of the case's materials (key, files).
    materials: super::materials::MaterialsHere,
}

/// A case id with its 登记编号 (the id itself while that case has not reached this node).
async fn linked(app: &App, id: &CaseId) -> (String, String) {
    let reg_no = app.store.case_view(id.as_str()).await.map_or_else(|_| id.to_string(), |view| view.reg_no.to_string());
    (id.to_string(), reg_no)
}

async fn related(app: &App, view: &CaseView) -> Related {
    let mut related = Related::default();
    if let Some(master) = &view.duplicate_of {
        related.master = Some(linked(app, master).await);
    }
    for duplicate in &view.duplicates {
        related.duplicates.push(linked(app, duplicate).await);
    }
    related.sms = app.store.outbox_for_case(view.case_id.as_str()).await.unwrap_or_default();
    related.materials = super::materials::materials_here(app, view).await;
    related
}

/// One SMS message's state as the case page says it: 已排队 / 已发送 / 发送失败：原因.
fn sms_state(row: &crate::store::OutboxRow) -> String {
    use crate::store::OutboxState as S;
    match row.state {
        S::Queued if row.attempts == 0 => S::Queued.label().to_owned(),
        S::Queued => format!(
            "{}（已尝试 {} 次，上次：{}；下次 {}）",
            S::Queued.label(),
            row.attempts,
            row.reason,
            minute(row.next_ms)
        ),
        S::Sent => format!("{}（{}）", S::Sent.label(), row.done_ms.map(minute).unwrap_or_default()),
        S::Failed => format!("{}：{}", S::Failed.label(), row.reason),
    }
}

/// The canned replies (服务用语) for this case, as links that fill the reply boxes (no script needed), and the text
/// picked, if any.
fn canned_links(hall: &zhaowo_crdt::Hall, view: &CaseView, picked: Option<usize>) -> (Markup, String) {
    let all = &hall.messages.canned_replies;
    let fitting: Vec<(usize, &zhaowo_crdt::messages::CannedReply)> = all
        .iter()
        .enumerate()
        .filter(|(_, r)| r.nature.is_none_or(|n| n == view.nature) && r.status.is_none_or(|s| s == view.status))
        .collect();
    let text = picked.and_then(|index| fitting.iter().find(|(i, _)| *i == index)).map(|(_, r)| r.text.clone());
    let links = html! {
        @if !fitting.is_empty() {
            p.hint.canned {
                "服务用语："
                @for (index, reply) in &fitting {
                    a href={ "/desk/case/" (view.case_id.as_str()) "?canned=" (index) "#reply-text" } title=(reply.text) { (reply.title) }
                    " "
                }
            }
        }
    };
    (links, text.unwrap_or_default())
}

fn case_body(
    app: &App,
    session: &Session,
    view: &CaseView,
    related: &Related,
    message: Option<Result<&str, &str>>,
    revealed: Option<Markup>,
    draft: Option<&ActionForm>,
) -> Markup {
    let hall = hall(app);
    let now = crate::home::now_ms();
    // What the case rules let this role do now: one form per kind (`CaseView::allowed`, the crdt's table).
    let actions = view.allowed(session.role);
    let id = view.case_id.as_str();
    let suggestion = hall.categories.get(&view.category);
    let csrf = session.csrf.as_str();
    let form_head = |kind: CommandKind| {
        html! {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="action" value=(kind.code());
        }
    };
    // A refused edit shows what was typed, not the stored values, so nothing typed is lost.
    let typed = |typed: Option<&Option<String>>, stored: &str| -> String {
        typed.and_then(|value| value.clone()).unwrap_or_else(|| stored.to_owned())
    };
    let edit_category = typed(draft.map(|d| &d.category), &view.category);
    let edit_priority = typed(draft.map(|d| &d.priority), view.priority.code());
    let (canned, canned_text) = canned_links(&hall, view, related.canned);
    let sms_configured = app.home.config.sms.is_some();
    html! {
        h1 { "案件 " (view.reg_no) " " span.tag { (view.status.label()) } @if view.overdue(now) { " " span.tag.red { "超期" } } }
        @match message {
            Some(Ok(text)) => div.ok role="status" { (text) },
            Some(Err(text)) => div.error role="alert" { (text) "（未保存）" },
            None => {},
        }
        @if let Some(revealed) = revealed { (revealed) }
        div.card { dl {
            dt { "诉求摘要" } dd id="summary" { (view.summary) }
            dt { "诉求内容" } dd id="detail" style="white-space:pre-wrap" { (view.detail) }
            @if !view.expectation.is_empty() { dt { "诉求人期望" } dd id="expectation" { (view.expectation) } }
            @if !view.location.is_empty() { dt { "地点" } dd id="location" { (view.location) } }
            dt { "性质 / 类别" } dd id="category" { (view.nature.label()) " / " (category_name(&hall, &view.category)) }
            dt { "来源渠道" } dd { (view.channel.label()) " · 窗口 " (view.window) }
            dt { "紧急程度" } dd id="priority" { (view.priority.label()) }
            dt { "登记" } dd { (minute(view.registered_at_ms)) " · " (staff_label(&view.registered_by)) }
            dt { "主办单位" } dd { (view.lead_unit.as_deref().map_or("未派单".to_owned(), |u| unit_name(&hall, u))) }
            @if !view.co_units.is_empty() { dt { "协办单位" } dd { (view.co_units.iter().map(|u| unit_name(&hall, u)).collect::<Vec<_>>().join("、")) } }
            @if let Some(assignee) = &view.assignee { dt { "承办人" } dd { (assignee) } }
            dt { "承诺办结" } dd id="due" { (minute(view.effective_due_ms(now))) @if view.flags.extended { " " span.tag { "已延期" } } }
            dt { "督办" } dd { (view.supervision.label()) }
            @if view.consultations > 0 || view.site_visits > 0 {
                dt { "会诊 / 上门" } dd id="visits" {
                    "会诊 " (view.consultations) " 次；上门/走访 " (view.site_visits) " 次，共 " (view.visit_minutes) " 分钟"
                }
            }
            @if let Some((master_id, master_reg_no)) = &related.master {
                dt { "并案" } dd id="merged-into" {
                    "本案为重复件，已并入主案件 " a href={ "/desk/case/" (master_id) } { (master_reg_no) }
                }
            }
            @if !related.duplicates.is_empty() {
                dt { "重复件" } dd id="duplicates" {
                    @for (i, (dup_id, dup_reg_no)) in related.duplicates.iter().enumerate() {
                        @if i > 0 { "、" }
                        a href={ "/desk/case/" (dup_id) } { (dup_reg_no) }
                    }
                    " 已并入本案"
                }
            }
            dt { "诉求人" } dd id="personal" {
                (view.personal.name.clone().unwrap_or_else(|| "（未留姓名）".into())) " "
                (view.personal.phone.clone().unwrap_or_default())
                @if view.pi_reveals > 0 { " " span.hint id="pi-reveals" { "已查看完整信息 " (view.pi_reveals) " 次" } }
            }
            @if !view.tags.is_empty() { dt { "标签" } dd { @for t in &view.tags { span.tag { (t) } " " } } }
        } }
        @if !view.conflicts.is_empty() {
            h2 id="conflicts" { "冲突待核（" (view.conflicts.len()) " 项）" }
            div.error { "离线节点同时做出的操作相互冲突，须由督查科核定。" }
            @for conflict in &view.conflicts { (conflict_item(&hall, session, view, conflict)) }
        }
        @if !view.extensions.is_empty() {
            h2 { "延期" }
            div.scroll { table id="extensions" {
                thead { tr { th { "申请时间" } th { "申请人" } th { "原因" } th { "状态" } } }
                tbody { @for extension in &view.extensions {
                    tr {
                        td { (minute(extension.requested_at_ms)) }
                        td { (view.timeline.iter().find(|entry| entry.event_id == extension.request).map_or("", |entry| staff_label(&entry.staff))) }
                        td { (extension.reason) }
                        td {
                            @match extension.approved_due_ms {
                                Some(due) => { "已批准，办结时限延至 " (minute(due)) }
                                None => {
                                    "待督查科批准"
                                    @if actions.contains(&K::ApproveExtension) {
                                        form method="post" action={ "/desk/case/" (id) "/act" } {
                                            (form_head(K::ApproveExtension))
                                            input type="hidden" name="request" value=(extension.request.as_str());
                                            button type="submit" { "批准延期" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                } }
            } }
        }
        @if view.rating.is_some() || !view.bad_reviews.is_empty() { (rating_section(view, &actions, csrf, now)) }
        h2 { "办理" }
        div.grid.noprint {
            @if actions.contains(&K::Accept) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } { (form_head(K::Accept)) strong { "受理" } br; button type="submit" { "受理" } }
            }
            @if actions.contains(&K::Dispatch) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::Dispatch))
                    strong { "派单" }
                    @if let Some(s) = suggestion { p.hint { "路由表建议：" (unit_name(&hall, &s.lead_unit)) @if !s.co_units.is_empty() { "，协办 " (s.co_units.join("、")) } } }
                    label for="lead_unit" { "主办单位" }
                    select id="lead_unit" name="lead_unit" {
                        @for (code, unit) in &hall.units {
                            option value=(code) selected[suggestion.is_some_and(|s| &s.lead_unit == code)] { (unit.name) }
                        }
                    }
                    label for="co_units" { "协办单位代码（逗号分隔）" }
                    input type="text" id="co_units" name="co_units" value=(suggestion.map(|s| s.co_units.join(",")).unwrap_or_default());
                    button type="submit" id="do-dispatch" { "派单" }
                }
            }
            @if actions.contains(&K::SignIn) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::SignIn)) strong { "签收" }
                    label { "承办人" } input type="text" name="text" value=(session.staff());
                    button type="submit" id="do-sign-in" { "签收" }
                }
            }
            @if actions.contains(&K::PublishReply) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::PublishReply)) label for="reply-text" { "对外答复（群众可见）" }
                    (canned)
                    textarea id="reply-text" name="text" required { (canned_text) }
                    button type="submit" id="do-reply" { "发布答复" }
                }
            }
            @if actions.contains(&K::AddNote) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::AddNote)) label for="note-text" { "内部备注（仅工作人员可见）" }
                    textarea id="note-text" name="text" required {}
                    button type="submit" { "添加备注" }
                }
            }
            @if actions.contains(&K::HoldConsultation) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::HoldConsultation)) strong { "联合会诊" }
                    label { "参会单位代码（逗号分隔）" } input type="text" name="co_units" required;
                    p.hint { @for (i, (code, unit)) in hall.units.iter().enumerate() { @if i > 0 { "；" } (code) " " (unit.name) } }
                    label { "会诊纪要" } textarea name="text" required maxlength=(NOTE_CHARS_MAX) {}
                    p { label.inline { input type="checkbox" name="flag" value="yes"; " 含现场勘查" } }
                    button type="submit" { "记录会诊" }
                }
            }
            @if actions.contains(&K::LogVisit) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::LogVisit)) strong { "上门 / 走访记录" }
                    label for="visit-volunteers" { "走访人员（逗号分隔，最多 " (VOLUNTEERS_PER_VISIT_MAX) " 人）" }
                    input type="text" id="visit-volunteers" name="volunteers" required value=(session.display_name);
                    label for="visit-at" { "走访时间" }
                    input type="datetime-local" id="visit-at" name="at" required value=(minute(now).replace(' ', "T"));
                    label for="visit-minutes" { "时长（分钟）" }
                    input type="number" id="visit-minutes" name="minutes" min="1" max=(VISIT_MINUTES_MAX) required value="60";
                    label for="visit-outcome" { "走访情况" }
                    textarea id="visit-outcome" name="text" required maxlength=(NOTE_CHARS_MAX) {}
                    button type="submit" { "记录走访" }
                }
            }
            @if actions.contains(&K::AssignVisit) {
                @let laptops = app.volunteer_laptops();
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::AssignVisit)) strong { "指派上门" }
                    @if let Some(visit) = &view.visit_assignment {
                        p.hint { "已指派：" (laptops.iter().find(|(node, _)| node == &visit.laptop).map_or(visit.laptop.as_str(), |(_, name)| name.as_str())) "（" (minute(visit.at_ms)) "）。重新指派后由新的电脑上门。" }
                    }
                    @if laptops.is_empty() {
                        p.hint { "本大厅还没有登记的志愿者上门电脑。" }
                    } @else {
                        label for="assign-laptop" { "上门电脑" }
                        select id="assign-laptop" name="laptop" required {
                            @for (node, name) in &laptops { option value=(node) { (name) } }
                        }
                        p.hint { "被指派的电脑在走访记录完成前（最长 " (zhaowo_crdt::seal::VISIT_KEY_DAYS_MAX) " 天）可以查看本案的个人信息。" }
                        button type="submit" { "指派" }
                    }
                }
            }
            @if actions.contains(&K::RequestExtension) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::RequestExtension)) strong { "申请延期" }
                    p.hint { "当前承诺办结：" (minute(view.effective_due_ms(now))) "。督查科批准后生效。" }
                    label for="extend-days" { "延长工作日（1-" (EXTENSION_WORKING_DAYS_MAX) "）" }
                    input type="number" id="extend-days" name="days" min="1" max=(EXTENSION_WORKING_DAYS_MAX) required value="5";
                    label for="extend-reason" { "延期原因" }
                    input type="text" id="extend-reason" name="text" required maxlength=(REASON_CHARS_MAX);
                    button type="submit" { "申请延期" }
                }
            }
            @if actions.contains(&K::Resolve) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::Resolve)) strong { "办理完毕 / 答复" }
                    label { "办理结果" } select name="choice" { @for r in CaseResult::ALL { option value=(r.code()) { (r.label()) } } }
                    label for="resolve-text" { "答复内容（群众可见）" }
                    @if !actions.contains(&K::PublishReply) { (canned) }
                    textarea id="resolve-text" name="text" required { (canned_text) }
                    button type="submit" id="do-resolve" { "办理完毕" }
                }
            }
            @if actions.contains(&K::RecordCallback) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::RecordCallback)) strong { "回访" }
                    label { "方式" } select name="method" { @for m in CallbackMethod::ALL { option value=(m.code()) { (m.label()) } } }
                    p.hint { "请按群众所说记录，不要代替群众选择。" }
                    label for="callback-choice" { "结果" } select id="callback-choice" name="choice" required {
                        option value="" selected disabled { "请选择" }
                        option value=(super::actions::CALLBACK_UNREACHED) { "未联系上" }
                        option value=(super::actions::CALLBACK_UNSAID) { "已联系，未说明是否解决" }
                        @for o in CallbackOutcome::ALL { option value=(o.code()) { (o.label()) } }
                    }
                    label for="callback-rating" { "群众评价" } select id="callback-rating" name="rating" {
                        option value="" selected { "未评价" }
                        @for level in Satisfaction::ALL { option value=(level.code()) { (level.label()) } }
                    }
                    label { "说明" } input type="text" name="text";
                    button type="submit" { "记录回访" }
                }
            }
            @if actions.contains(&K::Close) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::Close)) strong { "办结" }
                    label { "审核人" } input type="text" name="text" required;
                    button type="submit" { "办结" }
                }
            }
            @for action in [K::Return, K::Reject] {
                @if actions.contains(&action) {
                    form.card method="post" action={ "/desk/case/" (id) "/act" } {
                        (form_head(action)) strong { (action.label()) }
                        label { "原因" } input type="text" name="text" required;
                        label { "依据" } input type="text" name="basis" required;
                        button.secondary type="submit" { (action.label()) }
                    }
                }
            }
            @for (action, title) in [(K::Suspend, "待补充材料（暂停计时）"), (K::Reopen, "发回重办"), (K::Withdraw, "撤回（应诉求人要求）")] {
                @if actions.contains(&action) {
                    form.card method="post" action={ "/desk/case/" (id) "/act" } {
                        (form_head(action)) strong { (title) }
                        @if action == K::Suspend {
                            label for="suspend-text" { "需补充的材料（群众查询时可见，请勿填写个人信息）" }
                            input type="text" id="suspend-text" name="text" required maxlength=(REASON_CHARS_MAX);
                        } @else {
                            label { "原因" } input type="text" name="text" required;
                        }
                        button.secondary type="submit" { (title) }
                    }
                }
            }
            @if actions.contains(&K::PurgePersonalData) && !view.personal.purged {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::PurgePersonalData)) strong { "清除个人信息" }
                    p.hint { "清除后，各节点销毁本案密钥：诉求人信息、诉求内容、备注和走访记录将永久无法查看；去标识化的案件仍保留在登记簿和统计中。大厅按保存期限（办结后 " (hall.retention_days) " 天）自动清除。" }
                    p { label.inline { input type="checkbox" name="flag" value="yes" required; " 我确认此操作不可恢复" } }
                    button.secondary type="submit" { "清除个人信息" }
                }
            }
            @if actions.contains(&K::Resume) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } { (form_head(K::Resume)) strong { "恢复办理" } br; button type="submit" { "恢复办理" } }
            }
            @if actions.contains(&K::MarkDuplicate) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::MarkDuplicate)) strong { "并案（标记为重复件）" }
                    p.hint { "本案将并入主案件，状态变为“重复件”；督查科可解除并案。" }
                    label for="duplicate-master" { "主案件登记编号或案件标识" }
                    input type="text" id="duplicate-master" name="master" required placeholder="BBC01-2026-0001";
                    button.secondary type="submit" { "并案" }
                }
            }
            @if actions.contains(&K::Unmerge) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::Unmerge)) strong { "解除并案" }
                    p.hint { "本案恢复为“已登记”，主案件不再列出本案。" }
                    button.secondary type="submit" { "解除并案" }
                }
            }
            @if actions.contains(&K::Supervise) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::Supervise)) strong { "督办" }
                    select name="choice" { @for l in &SupervisionLevel::ALL[1..] { option value=(l.code()) { (l.label()) } } }
                    label { "意见" } input type="text" name="text" required;
                    button type="submit" { "督办" }
                }
            }
            @if actions.contains(&K::Reassign) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::Reassign)) strong { "改派" }
                    p.hint { "当前主办：" (view.lead_unit.as_deref().map_or("未派单".to_owned(), |u| unit_name(&hall, u))) }
                    label for="reassign-lead" { "新主办单位" }
                    select id="reassign-lead" name="lead_unit" {
                        @for (code, unit) in &hall.units { option value=(code) selected[view.lead_unit.as_deref() == Some(code.as_str())] { (unit.name) } }
                    }
                    label for="reassign-co" { "协办单位代码（逗号分隔）" }
                    input type="text" id="reassign-co" name="co_units" value=(view.co_units.iter().cloned().collect::<Vec<_>>().join(","));
                    label for="reassign-reason" { "改派原因" }
                    input type="text" id="reassign-reason" name="text" required maxlength=(REASON_CHARS_MAX);
                    button.secondary type="submit" id="do-reassign" { "改派" }
                }
            }
            @if actions.contains(&K::AddCoUnits) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::AddCoUnits)) strong { "增加协办单位" }
                    label for="co-units-add" { "协办单位代码（逗号分隔）" }
                    input type="text" id="co-units-add" name="co_units" required;
                    p.hint { @for (i, (code, unit)) in hall.units.iter().enumerate() { @if i > 0 { "；" } (code) " " (unit.name) } }
                    button.secondary type="submit" id="do-co-units" { "增加协办" }
                }
            }
            @if actions.contains(&K::AddTags) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::AddTags)) strong { "添加标签" }
                    label for="tags-add" { "标签（逗号分隔）" }
                    input type="text" id="tags-add" name="text" required;
                    button.secondary type="submit" id="do-tags" { "添加标签" }
                }
            }
            @if actions.contains(&K::ForceClose) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::ForceClose)) strong { "强制办结" }
                    p.hint { "督查科对无法正常办结的案件直接办结，不要求回访。" }
                    label for="force-close-reviewer" { "审核人" }
                    input type="text" id="force-close-reviewer" name="text" required value=(session.staff());
                    button.secondary type="submit" id="do-force-close" { "强制办结" }
                }
            }
            @if actions.contains(&K::RevealPersonalData) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::RevealPersonalData)) strong { "查看完整个人信息" }
                    p.hint { "查看将被记录（时间、人员、用途）。" }
                    label { "用途" } input type="text" name="text" required maxlength=(REASON_CHARS_MAX) value="电话回访";
                    button.secondary type="submit" id="do-reveal" { "查看" }
                }
            }
        }
        @if actions.contains(&K::EditField) {
            details.card.noprint open[draft.is_some()] {
                summary { strong { "修改诉求信息" } }
                form method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::EditField))
                    label for="edit-summary" { "诉求摘要（公开，勿含个人信息，最多 " (SUMMARY_CHARS_MAX) " 字）" }
                    input type="text" id="edit-summary" name="summary" required maxlength=(SUMMARY_CHARS_MAX)
                        value=(typed(draft.map(|d| &d.summary), &view.summary));
                    label for="edit-detail" { "诉求内容（最多 " (DETAIL_CHARS_MAX) " 字）" }
                    textarea id="edit-detail" name="detail" required maxlength=(DETAIL_CHARS_MAX) { (typed(draft.map(|d| &d.detail), &view.detail)) }
                    label for="edit-expectation" { "诉求人期望" }
                    input type="text" id="edit-expectation" name="expectation" maxlength=(EXPECTATION_CHARS_MAX)
                        value=(typed(draft.map(|d| &d.expectation), &view.expectation));
                    label for="edit-location" { "地点" }
                    input type="text" id="edit-location" name="location" maxlength=(LOCATION_CHARS_MAX)
                        value=(typed(draft.map(|d| &d.location), &view.location));
                    div.filters {
                        div { label for="edit-category" { "诉求类别" } select id="edit-category" name="category" {
                            @for (code, c) in &hall.categories { option value=(code) selected[&edit_category == code] { (c.name) } }
                        } }
                        div { label for="edit-priority" { "紧急程度" } select id="edit-priority" name="priority" {
                            @for p in Priority::ALL { option value=(p.code()) selected[edit_priority == p.code()] { (p.label()) } }
                        } }
                    }
                    @if view.lead_unit.is_some() { p.hint { "已派单的案件修改类别后，将提示督查科核查。" } }
                    button type="submit" id="do-edit" { "保存修改" }
                }
            }
        }
        (super::materials::material_section(session, view, &related.materials))
        h2 { "对外答复" }
        @if view.public_replies.is_empty() { p.hint { "暂无" } }
        ul { @for r in &view.public_replies { li { span.hint { (minute(r.at_ms)) } " " (r.text) } } }
        @if !related.sms.is_empty() || view.personal.sms_ok {
            h2 { "短信通知" }
            @if related.sms.is_empty() {
                p.hint id="sms-none" { "本机没有该案件的短信：短信由做出该操作的电脑发送，状态在那台电脑的案件页。" }
            } @else {
                div.scroll { table id="sms" {
                    thead { tr { th { "短信" } th { "时间" } th { "状态" } } }
                    tbody { @for row in &related.sms {
                        tr {
                            td { (row.kind.label()) }
                            td { (minute(row.created_ms)) }
                            td.sms-state { (sms_state(row)) }
                        }
                    } }
                } }
                @if !sms_configured && related.sms.iter().any(|row| row.state == crate::store::OutboxState::Queued) {
                    p.hint { "本机未配置短信平台（node.toml 的 [sms]），短信在本机排队，配置后发出。" }
                }
            }
        }
        h2 { "办理过程" }
        ol.card.timeline id="timeline" {
            @for entry in &view.timeline {
                li class=(if entry.superseded { "superseded" } else { "" }) {
                    span.hint { (minute(entry.at_ms)) " · " (staff_label(&entry.staff)) "（" (entry.role.label()) "）· 节点 " (node_short(&entry.node)) }
                    br;
                    strong { (entry.label) } " "
                    @if !entry.public { span.tag { "内部" } " " }
                    (entry.text)
                }
            }
        }
    }
}

/// The case page with a message (or a refusal) on top.
pub(super) async fn case_response(
    app: &App,
    session: &Session,
    status: StatusCode,
    view: &CaseView,
    message: Option<Result<&str, &str>>,
    revealed: Option<Markup>,
    draft: Option<&ActionForm>,
) -> Response {
    case_response_with(app, session, status, view, message, revealed, draft, None).await
}

/// [`case_response`] with a canned reply picked for the reply boxes.
#[allow(clippy::too_many_arguments, reason = "the page's parts, passed through")]
async fn case_response_with(
    app: &App,
    session: &Session,
    status: StatusCode,
    view: &CaseView,
    message: Option<Result<&str, &str>>,
    revealed: Option<Markup>,
    draft: Option<&ActionForm>,
    canned: Option<usize>,
) -> Response {
    let mut related = related(app, view).await;
    related.canned = canned;
    let title = format!("案件 {}", view.reg_no);
    desk_page(session, status, &title, case_body(app, session, view, &related, message, revealed, draft))
}

/// A refused action: the case page again with the reason on top (400); nothing was stored.
pub(super) async fn refused(
    app: &App,
    session: &Session,
    view: &CaseView,
    message: &str,
    draft: Option<&ActionForm>,
) -> Response {
    case_response(app, session, StatusCode::BAD_REQUEST, view, Some(Err(message)), None, draft).await
}

pub(super) fn done(view: &CaseView, kind: CommandKind) -> Response {
    Redirect::to(&format!("/desk/case/{}?done={}", view.case_id.as_str(), kind.code())).into_response()
}

pub(super) async fn load_view(app: &App, id: &str) -> Result<CaseView, Response> {
    if zhaowo_crdt::CaseId::parse(id).is_none() {
        return Err(error_page(StatusCode::NOT_FOUND, "案件不存在", "案件标识不正确。", Some(("/desk", "返回登记簿"))));
    }
    match app.store.case_view(id).await {
        Ok(view) => Ok(view),
        Err(crate::store::ReadError::UnknownCase(_)) => {
            Err(error_page(StatusCode::NOT_FOUND, "案件不存在", "没有找到该案件。", Some(("/desk", "返回登记簿"))))
        }
        Err(error) => Err(store_unavailable(&error)),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct CaseQuery {
    done: String,
    /// A canned reply to put in the reply boxes (its index in the hall's canned replies).
    canned: Option<usize>,
}

pub(super) async fn case_page(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<CaseQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let view = match load_view(&app, &id).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let message = CommandKind::parse(&query.done).map(|kind| Ok(action_title(kind)));
    case_response_with(&app, &session, StatusCode::OK, &view, message, None, None, query.canned).await
}

/// 好差评 on the case page (issue 15): the citizen's rating without who gave it (GB/T 39734 §4.1: the page names no
/// rater), the 差评 task with its due date and steps, and the forms of the next step, the appeal and its decision.
fn rating_section(view: &CaseView, actions: &[CommandKind], csrf: &str, now: i64) -> Markup {
    let id = view.case_id.as_str();
    let form_head = |kind: CommandKind| {
        html! {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="action" value=(kind.code());
        }
    };
    html! {
        h2 id="rating" { "好差评" }
        @if let Some(rating) = &view.rating {
            div.card id="citizen-rating" {
                strong { (rating.level.label()) }
                @if rating.void { " " span.tag { "申诉成立，不计入满意率" } }
                @if !rating.reasons.is_empty() {
                    " · " (rating.reasons.iter().map(|r| r.label()).collect::<Vec<_>>().join("、"))
                }
                @if !rating.comment.is_empty() { p { (rating.comment) } }
                p.hint { (minute(rating.at_ms)) " 群众自评" @if rating.changes > 0 { "（修改 " (rating.changes) " 次）" } "；评价人信息不向承办单位显示。" }
            }
        }
        @for task in &view.bad_reviews {
            div.card.bad-review {
                strong { "差评整改任务" } " " span.tag { (task.stage_zh()) }
                @if task.overdue(now) { " " span.tag.red { "超期" } }
                p { "差评：" (task.level.label()) " · " (task.reasons.iter().map(|r| r.label()).collect::<Vec<_>>().join("、")) }
                p.hint { "开始 " (minute(task.opened_at_ms)) "，反馈时限 " (minute(task.due_ms)) }
                @if !task.steps.is_empty() {
                    ol { @for step in &task.steps { li { strong { (step.step.label()) } " " span.hint { (minute(step.at_ms)) " " (step.by) } br; (step.text) } } }
                }
                @if let Some(appeal) = &task.appeal {
                    p { "申诉复核：" (appeal.reason) " " span.hint { (minute(appeal.at_ms)) " " (appeal.by) } }
                    @match &appeal.decision {
                        Some((upheld, note, at, by)) => p { "复核决定：" (if *upheld { "申诉成立，评价不计入满意率" } else { "申诉不成立，评价保留" }) "；" (note) " " span.hint { (minute(*at)) " " (by) } },
                        None => p.hint { "待督查科复核" },
                    }
                }
            }
        }
        div.grid.noprint {
            @if let Some(step) = view.open_bad_review().and_then(|task| task.next_step()).filter(|_| actions.contains(&K::BadReviewStep)) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::BadReviewStep))
                    input type="hidden" name="choice" value=(step.code());
                    strong { "差评" (step.label()) }
                    @if step == zhaowo_crdt::model::ReviewStep::Feedback { p.hint { "反馈内容将在群众的查询页面显示。" } }
                    label for="review-text" { (step.label()) "情况" }
                    textarea id="review-text" name="text" required maxlength=(zhaowo_crdt::limits::REPLY_CHARS_MAX) {}
                    button type="submit" id="do-review" { "记录" (step.label()) }
                }
            }
            @if actions.contains(&K::AppealRating) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::AppealRating)) strong { "申诉复核" }
                    p.hint { "认为差评有误或属恶意评价时，可提请督查科复核。" }
                    label for="appeal-text" { "申诉理由" }
                    textarea id="appeal-text" name="text" required maxlength=(REASON_CHARS_MAX) {}
                    button.secondary type="submit" { "提交申诉" }
                }
            }
            @if actions.contains(&K::DecideAppeal) {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head(K::DecideAppeal)) strong { "复核决定" }
                    label for="appeal-choice" { "决定" }
                    select id="appeal-choice" name="choice" required {
                        option value="" selected disabled { "请选择" }
                        option value="UPHELD" { "申诉成立（评价不计入满意率）" }
                        option value="DISMISSED" { "申诉不成立（评价保留）" }
                    }
                    label for="decide-text" { "复核意见" }
                    textarea id="decide-text" name="text" required maxlength=(REASON_CHARS_MAX) {}
                    button type="submit" { "记录复核决定" }
                }
            }
        }
    }
}

/// The message on top of the case page after an action succeeded (exhaustive: a new kind needs its line here).
fn action_title(kind: CommandKind) -> &'static str {
    use CommandKind as K;
    match kind {
        K::Accept => "已受理",
        K::Dispatch => "已派单",
        K::SignIn => "已签收",
        K::PublishReply => "答复已发布",
        K::AddNote => "备注已添加",
        K::HoldConsultation => "会诊已记录",
        K::LogVisit => "上门/走访已记录",
        K::AssignVisit => "已指派上门：该志愿者电脑将获得本案的查看权限，直到走访记录完成",
        K::RequestExtension => "延期申请已提交，待督查科批准",
        K::ApproveExtension => "已批准延期",
        K::EditField | K::ChangePriority | K::ChangeCategory => "诉求信息已修改",
        K::Resolve => "已办理完毕",
        K::RecordCallback => "回访已记录",
        K::Close => "已办结",
        K::ForceClose => "已强制办结",
        K::Return => "已退单",
        K::Reject => "已不予受理",
        K::Suspend => "已暂停计时",
        K::Resume => "已恢复办理",
        K::Reopen => "已发回重办",
        K::Withdraw => "已撤回",
        K::MarkDuplicate => "已并案：本案为重复件",
        K::Unmerge => "已解除并案",
        K::Supervise => "已督办",
        K::ResolveConflict => "冲突已核定",
        K::Reassign => "已改派",
        K::AddTags => "标签已添加",
        K::AddCoUnits => "协办单位已增加",
        K::Archive => "已归档",
        K::PurgePersonalData => "个人信息已清除",
        K::RevealPersonalData => "已查看完整个人信息",
        K::Rate => "评价已记录",
        K::BadReviewStep => "差评处理已记录",
        K::AppealRating => "申诉已提交，待督查科复核",
        K::DecideAppeal => "复核决定已记录",
        K::AddMaterial => "材料已上传",
        K::RemoveMaterial => "材料已删除",
        K::PublishMaterial => "材料公开设置已修改",
        K::ViewMaterial => "已查看材料",
    }
}
