//! The new-case form (登记): a case registered at the window, its registration number and query code shown once.

use super::{ctx, desk_csrf, desk_page, hall, session, to_login};
use crate::http::App;
use crate::http::citizen::{clean, form_rejection, store_unavailable};
use crate::http::guard::Session;
use crate::http::page::error_page;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::BTreeSet;
use zhaowo_crdt::model::{Channel, Nature, Priority};
use zhaowo_crdt::time::Date;
use zhaowo_crdt::{CaseDoc, QueryCode, Registration};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct NewCaseForm {
    csrf: String,
    channel: String,
    nature: String,
    category: String,
    priority: String,
    summary: String,
    detail: String,
    expectation: String,
    location: String,
    name: String,
    phone: String,
    consent: Option<String>,
    publish: Option<String>,
    sms: Option<String>,
}

fn new_case_page(app: &App, session: &Session, form: &NewCaseForm, errors: &[String]) -> Markup {
    let hall = hall(app);
    html! {
        h1 { "新登记" }
        @if !errors.is_empty() { div.error role="alert" { ul { @for e in errors { li { (e) } } } } }
        form.card method="post" action="/desk/new" {
            input type="hidden" name="csrf" value=(session.csrf);
            div.filters {
                div { label for="channel" { "来源渠道" } select id="channel" name="channel" {
                    @for c in Channel::ALL { @if *c != Channel::MiniProgram { option value=(c.code()) selected[form.channel == c.code()] { (c.label()) } } }
                } }
                div { label for="nature" { "诉求性质" } select id="nature" name="nature" {
                    @for n in Nature::ALL { option value=(n.code()) selected[form.nature == n.code()] { (n.label()) } }
                } }
                div { label for="category" { "诉求类别" } select id="category" name="category" {
                    @for (code, c) in &hall.categories { option value=(code) selected[&form.category == code] { (c.name) } }
                } }
                div { label for="priority" { "紧急程度" } select id="priority" name="priority" {
                    @for p in Priority::ALL { option value=(p.code()) selected[form.priority == p.code()] { (p.label()) } }
                } }
            }
            label for="summary" { "诉求摘要（公开，勿含个人信息）" }
            input type="text" id="summary" name="summary" maxlength="100" required value=(form.summary);
            label for="detail" { "诉求内容" }
            textarea id="detail" name="detail" required { (form.detail) }
            label for="expectation" { "诉求人期望" }
            input type="text" id="expectation" name="expectation" value=(form.expectation);
            label for="location" { "地点" }
            input type="text" id="location" name="location" value=(form.location);
            label for="name" { "诉求人姓名" }
            input type="text" id="name" name="name" value=(form.name);
            label for="phone" { "联系电话" }
            input type="tel" id="phone" name="phone" value=(form.phone);
            p { label.inline { input type="checkbox" name="consent" value="yes" checked[form.consent.is_some()]; " 同意回访" } }
            p { label.inline { input type="checkbox" name="sms" value="yes" checked[form.sms.is_some()]; " 同意接收短信通知" } }
            p {
                label.inline {
                    input type="checkbox" name="publish" value="yes" checked[form.publish.is_some()];
                    " 同意脱敏公开（摘要和进度列入公开列表；举报、倾诉、投诉和敏感件一律不公开）"
                }
            }
            button type="submit" { "登记" }
        }
    }
}

pub(super) async fn new_form(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let form = NewCaseForm {
        channel: Channel::Window.code().into(),
        nature: Nature::Consultation.code().into(),
        ..Default::default()
    };
    desk_page(&session, StatusCode::OK, "新登记", new_case_page(&app, &session, &form, &[]))
}

pub(super) async fn new_submit(
    State(app): State<App>,
    headers: HeaderMap,
    form: Result<Form<NewCaseForm>, FormRejection>,
) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let Form(form) = match form {
        Ok(form) => form,
        Err(rejection) => return form_rejection(&app, &rejection, "/desk/new"),
    };
    if let Err(response) = desk_csrf(&app, &session, &form.csrf) {
        return response;
    }
    let hall = hall(&app);
    let report_form = crate::http::citizen::ReportForm {
        csrf: String::new(),
        nature: form.nature.clone(),
        category: form.category.clone(),
        summary: form.summary.clone(),
        detail: form.detail.clone(),
        name: form.name.clone(),
        phone: form.phone.clone(),
        consent: form.consent.clone(),
        publish: form.publish.clone(),
        sms: form.sms.clone(),
    };
    let mut errors = Vec::new();
    let checked = crate::http::citizen::check_report(&hall, &report_form).map_err(|e| errors.extend(e)).ok();
    let channel = Channel::parse(&form.channel).filter(|c| *c != Channel::MiniProgram);
    let priority = Priority::parse(&form.priority);
    if channel.is_none() {
        errors.push("请选择来源渠道。".into());
    }
    if priority.is_none() {
        errors.push("请选择紧急程度。".into());
    }
    let (Some(report), Some(channel), Some(priority)) = (checked, channel, priority) else {
        return desk_page(&session, StatusCode::BAD_REQUEST, "新登记", new_case_page(&app, &session, &form, &errors));
    };
    let mut ctx = match ctx(&app, &session) {
        Ok(ctx) => ctx,
        Err(response) => return response,
    };
    let report_summary = report.summary.clone();
    let registration = Registration {
        channel,
        nature: report.nature,
        category: report.category,
        modes: BTreeSet::new(),
        priority,
        matter: None,
        not_done_reason: None,
        summary: report.summary,
        detail: report.detail,
        expectation: clean(&form.expectation),
        location: clean(&form.location),
        sensitive: false,
        tags: BTreeSet::new(),
        personal: report.personal,
    };
    ctx.now_ms = crate::home::now_ms();
    let (summary, registered_ms, hall_now) = (report_summary, ctx.now_ms, hall.clone());
    let year = Date::of_ms(ctx.now_ms).year;
    let code = match crate::home::entropy() {
        Ok(entropy) => QueryCode::from_entropy(entropy as u64),
        Err(error) => return store_unavailable(&error),
    };
    let actor = match app.home.identity.new_actor() {
        Ok(actor) => actor,
        Err(error) => return store_unavailable(&error),
    };
    // The store picks the number inside the transaction that stores the case (`Store::register_new`).
    let receipt_code = code.clone();
    let build: crate::store::RegisterFn = Box::new(move |reg_no| {
        CaseDoc::register(&ctx, &hall, actor, reg_no, &receipt_code, registration).map(|(doc, _)| doc)
    });
    let (ack, reg_no) = match app.store.register_new_with_receipt(&app.home.config.window, year, &code, build).await {
        Ok(registered) => (registered.ack, registered.reg_no),
        Err(crate::store::WriteError::Command(error)) => {
            let errors = vec![error.zh()];
            return desk_page(
                &session,
                StatusCode::BAD_REQUEST,
                "新登记",
                new_case_page(&app, &session, &form, &errors),
            );
        }
        Err(crate::store::WriteError::NumbersExhausted { .. }) => {
            return error_page(StatusCode::CONFLICT, "无法登记", "本年度登记编号已用完。", None);
        }
        Err(error) => return store_unavailable(&error),
    };
    // The printable 回执 (issue 15 §3): the number, the code, the lookup QR code and the 告知; the desk's header and
    // buttons are not printed (`noprint`, the print stylesheet).
    let link = crate::http::citizen::lookup_link(&app, &reg_no, &code);
    let window_name =
        hall_now.windows.get(&app.home.config.window).map_or(app.home.config.window.clone(), |w| w.name.clone());
    let body = html! {
        div.ok.noprint { "已登记。请打印回执交给诉求人（浏览器菜单“打印”或 Ctrl+P），查询码只显示这一次。" }
        div.card id="receipt" {
            h1 { (hall_now.name) " · 诉求登记回执" }
            dl {
                dt { "登记编号" } dd.big id="reg-no" { (reg_no) }
                dt { "查询码" } dd.big id="query-code" { (code.as_str()) }
                dt { "诉求摘要" } dd { (summary) }
                dt { "登记时间" } dd { (crate::http::page::minute(registered_ms)) }
                dt { "受理窗口" } dd { (window_name) }
            }
            (crate::http::page::qr_svg(&link))
            p.hint { "扫描二维码或访问查询页面，输入登记编号和查询码，可查看办理进度、补充材料要求、答复，并对服务作出评价。" }
        }
        (crate::http::citizen::pi_notice(&app))
        p.noprint { a.button href={ "/desk/case/" (ack.case_id) } { "打开案件" } }
    };
    desk_page(&session, StatusCode::OK, "登记成功", body)
}
