//! The staff desk (loopback): sign-in with a hall account, the register book (filters, full-text search, paging), new
//! case, the case page with its timeline and every action the signed-in role may take, the overdue list, supervision
//! statistics with a monthly chart, conflicts to review, peers and sync status, and printable window QR codes.
//!
//! The case page shows a form only when the case rules would accept its command from the signed-in role (`allowed`):
//! lifecycle steps, replies and notes, editing the case fields, 延期 (request, 督查科 approval), 上门/走访 and 会诊
//! records, 并案 and 解除并案, settling 冲突待核 items (the 督查科 picks a field's value or keeps a transition's merge
//! result), and revealing personal data. A refused command shows the case page again with a zh-CN reason and stores
//! nothing.
//!
//! Every action records the staff member (`姓名(账号)`) and this node in its event. Personal data is masked; the
//! reveal button records a `PiRevealed` event and shows the record once.

use super::citizen::{ClientIp, clean, form_rejection, rate_limited, store_unavailable};
use super::guard::{self, Bucket, SESSION_COOKIE, Session};
use super::page::{self, Frame, command_error_zh, error_page, layout, minute, respond};
use super::{App, limits};
use crate::store::{CaseRow, PageCursor, RegisterQuery};
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use zhaowo_crdt::event::{EventKind, transition};
use zhaowo_crdt::fold::SupersededBy;
use zhaowo_crdt::limits::{
    DETAIL_CHARS_MAX, EXPECTATION_CHARS_MAX, EXTENSION_WORKING_DAYS_MAX, LOCATION_CHARS_MAX, NOTE_CHARS_MAX,
    REASON_CHARS_MAX, SUMMARY_CHARS_MAX, VOLUNTEERS_PER_VISIT_MAX,
};
use zhaowo_crdt::model::{
    CallbackMethod, CallbackOutcome, CaseResult, Channel, EditableField, Nature, Priority, Role, Status,
    SupervisionLevel,
};
use zhaowo_crdt::time::Date;
use zhaowo_crdt::view::{Conflict, ConflictDetail};
use zhaowo_crdt::{
    Author, CaseDoc, CaseId, CaseView, Command, CommandError, ConflictDecision, Ctx, EventId, QueryCode, RegNo,
    Registration,
};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/desk/login", get(login_form).post(login_submit))
        .route("/desk/logout", post(logout))
        .route("/desk", get(register_book))
        .route("/desk/new", get(new_form).post(new_submit))
        .route("/desk/case/{id}", get(case_page))
        .route("/desk/case/{id}/act", post(case_action))
        .route("/desk/overdue", get(overdue))
        .route("/desk/stats", get(stats))
        .route("/desk/conflicts", get(conflicts))
        .route("/desk/peers", get(peers))
        .route("/desk/qr", get(qr_codes))
}

/// The signed-in staff member of a request, with the session id.
fn session(app: &App, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = guard::cookie(headers, &guard::cookie_name(app, SESSION_COOKIE))?;
    let session = app.sessions.get(&id, crate::home::now_ms())?;
    Some((id, session))
}

fn to_login() -> Response {
    Redirect::to("/desk/login").into_response()
}

fn frame(session: &Session) -> Frame<'_> {
    Frame::Desk { staff: &session.display_name, role: session.role.label(), csrf: &session.csrf }
}

fn desk_page(session: &Session, status: StatusCode, title: &str, body: Markup) -> Response {
    respond(status, layout(title, frame(session), body))
}

fn hall(app: &App) -> zhaowo_crdt::Hall {
    app.home.hall().unwrap_or_else(|_| zhaowo_crdt::Hall::jiangan_default())
}

fn ctx(app: &App, session: &Session) -> Result<Ctx, Response> {
    let entropy = crate::home::entropy().map_err(|error| store_unavailable(&error))?;
    Ok(Ctx {
        now_ms: crate::home::now_ms(),
        entropy,
        author: Author {
            node: app.home.identity.node_id(),
            staff: session.staff(),
            role: session.role,
            window: app.home.config.window.clone(),
        },
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Sign-in

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LoginForm {
    csrf: String,
    username: String,
    password: String,
}

fn login_page(csrf: &str, username: &str, error: Option<&str>) -> Markup {
    let body = html! {
        h1 { "工作人员登录" }
        @if let Some(error) = error { div.error role="alert" { (error) } }
        form.card method="post" action="/desk/login" {
            input type="hidden" name="csrf" value=(csrf);
            label for="username" { "账号" }
            input type="text" id="username" name="username" autocomplete="username" required value=(username);
            label for="password" { "密码" }
            input type="password" id="password" name="password" autocomplete="current-password" required;
            button type="submit" { "登录" }
        }
        p.hint { "账号由管理员创建（zhaowo staff add），在任一窗口均可登录。" }
    };
    layout("登录", Frame::SignIn, body)
}

fn with_cookies(mut response: Response, cookies: impl IntoIterator<Item = String>) -> Response {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

async fn login_form(State(app): State<App>, headers: HeaderMap) -> Response {
    if session(&app, &headers).is_some() {
        return Redirect::to("/desk").into_response();
    }
    let (csrf, set) = guard::citizen_csrf(&app, &headers);
    with_cookies(respond(StatusCode::OK, login_page(&csrf, "", None)), set)
}

async fn login_submit(
    State(app): State<App>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Form(form) = match form {
        Ok(form) => form,
        Err(rejection) => return form_rejection(&app, &rejection, "/desk/login"),
    };
    if !guard::cookie_csrf_ok(&app, &headers, &form.csrf) {
        return error_page(
            StatusCode::FORBIDDEN,
            "页面已过期",
            "请重新打开登录页后再登录。",
            Some(("/desk/login", "重新登录")),
        );
    }
    if !app.limiter.allow(Bucket::SignIn, client, app.options.sign_in_attempts_per_period, crate::home::now_ms()) {
        return rate_limited(&app, "登录尝试");
    }
    // Accounts live in the hall document on disk: read it afresh so an account an admin just added (or disabled)
    // counts without a restart of the node.
    let hall = crate::home::Home::open(&app.home.dir).and_then(|home| home.hall()).unwrap_or_else(|_| hall(&app));
    let username = form.username.trim().to_owned();
    let password = form.password.clone();
    // argon2 takes tens of milliseconds: off the async workers.
    let checked = tokio::task::spawn_blocking(move || super::auth::sign_in(&hall, &username, &password)).await;
    match checked {
        Ok(Some((display_name, role))) => {
            let Some(id) = app.sessions.start(form.username.trim(), &display_name, role, crate::home::now_ms()) else {
                return store_unavailable(&"no OS randomness for a session id");
            };
            tracing::info!(target: "zhaowo::_events::desk", username = form.username.trim(), "staff signed in");
            let max_age = app.options.session_ms / 1000;
            with_cookies(
                Redirect::to("/desk").into_response(),
                [guard::set_cookie(&app, SESSION_COOKIE, &id, Some(max_age))],
            )
        }
        _ => respond(
            StatusCode::UNAUTHORIZED,
            login_page(&form.csrf, form.username.trim(), Some("账号或密码不正确，请重新输入。")),
        ),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CsrfOnly {
    csrf: String,
}

async fn logout(State(app): State<App>, headers: HeaderMap, form: Result<Form<CsrfOnly>, FormRejection>) -> Response {
    if let (Some((id, session)), Ok(Form(form))) = (session(&app, &headers), form)
        && guard::csrf_matches(&session.csrf, &form.csrf)
    {
        app.sessions.end(&id);
    }
    with_cookies(to_login(), [guard::set_cookie(&app, SESSION_COOKIE, "", Some(0))])
}

/// Checks a desk form's CSRF field against the session token.
fn desk_csrf(app: &App, session: &Session, submitted: &str) -> Result<(), Response> {
    if guard::csrf_matches(&session.csrf, submitted) {
        return Ok(());
    }
    app.counters.csrf_refused.fetch_add(1, Ordering::Relaxed);
    Err(error_page(
        StatusCode::FORBIDDEN,
        "页面已过期",
        "请刷新页面后重新操作，本次操作未执行。",
        Some(("/desk", "返回登记簿")),
    ))
}

// ---------------------------------------------------------------------------------------------------------------
// Register book

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BookQuery {
    status: String,
    category: String,
    nature: String,
    window: String,
    q: String,
    overdue: String,
    after: String,
}

fn label_of<T: Copy>(parse: fn(&str) -> Option<T>, label: fn(T) -> &'static str, code: &str) -> String {
    parse(code).map_or(code.to_owned(), |value| label(value).to_owned())
}

fn rows_table(app: &App, rows: &[CaseRow], now: i64) -> Markup {
    let hall = hall(app);
    html! {
        div.scroll {
            table {
                thead { tr {
                    th { "登记编号" } th { "登记时间" } th { "性质" } th { "类别" } th { "诉求摘要" }
                    th { "状态" } th { "承办单位" } th { "承诺办结" }
                } }
                tbody {
                    @for row in rows {
                        tr {
                            td { a href={ "/desk/case/" (row.case_id) } { (row.reg_no) } }
                            td { (minute(row.registered_at_ms)) }
                            td { (label_of(Nature::parse, Nature::label, &row.nature)) }
                            td { (hall.categories.get(&row.category).map_or(row.category.clone(), |c| c.name.clone())) }
                            td { (row.summary) }
                            td {
                                (label_of(Status::parse, Status::label, &row.status))
                                @if row.overdue(now) { " " span.tag.red { "超期" } }
                            }
                            td { (row.lead_unit.as_ref().map_or("—".to_owned(), |u| hall.units.get(u).map_or(u.clone(), |x| x.name.clone()))) }
                            td { (minute(row.due_ms)) }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() { p.hint { "没有符合条件的案件。" } }
    }
}

async fn register_book(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<BookQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let now = crate::home::now_ms();
    let hall = hall(&app);
    let search = clean(&query.q);
    let (rows, next) = if !search.is_empty() {
        if search.chars().count() > crate::store::SEARCH_QUERY_CHARS_MAX {
            return desk_page(
                &session,
                StatusCode::BAD_REQUEST,
                "登记簿",
                html! {
                    div.error { "搜索内容最多 " (crate::store::SEARCH_QUERY_CHARS_MAX) " 个字。" }
                    a.button href="/desk" { "返回登记簿" }
                },
            );
        }
        match app.store.search(&search, limits::REGISTER_ROWS_PER_PAGE).await {
            Ok(rows) => (rows, None),
            Err(error) => return store_unavailable(&error),
        }
    } else {
        let after = query
            .after
            .split_once(':')
            .and_then(|(ms, id)| Some(PageCursor { registered_at_ms: ms.parse().ok()?, case_id: id.to_owned() }));
        let register_query = RegisterQuery {
            status: Status::parse(&query.status),
            category: Some(query.category.clone()).filter(|c| hall.categories.contains_key(c)),
            nature: Nature::parse(&query.nature),
            lead_unit: None,
            window: Some(query.window.clone()).filter(|w| hall.windows.contains_key(w)),
            registered_from_ms: None,
            registered_to_ms: None,
            overdue_at_ms: (query.overdue == "1").then_some(now),
            after,
            limit: limits::REGISTER_ROWS_PER_PAGE,
        };
        match app.store.register_page(register_query).await {
            Ok(page) => (page.rows, page.next),
            Err(error) => return store_unavailable(&error),
        }
    };
    let next_link = next.map(|cursor| {
        format!(
            "/desk?status={}&category={}&nature={}&window={}&overdue={}&after={}:{}",
            // Only validated codes go back into the link (they are ASCII codes; anything else was ignored above).
            Status::parse(&query.status).map_or("", Status::code),
            Some(query.category.as_str()).filter(|c| hall.categories.contains_key(*c)).unwrap_or(""),
            Nature::parse(&query.nature).map_or("", Nature::code),
            Some(query.window.as_str()).filter(|w| hall.windows.contains_key(*w)).unwrap_or(""),
            if query.overdue == "1" { "1" } else { "" },
            cursor.registered_at_ms,
            cursor.case_id
        )
    });
    let body = html! {
        h1 { "登记簿" }
        form.card.filters method="get" action="/desk" {
            div { label for="q" { "全文搜索" } input type="search" id="q" name="q" value=(query.q) placeholder="摘要、内容、备注、答复"; }
            div { label for="status" { "状态" } select id="status" name="status" {
                option value="" { "全部" }
                @for s in Status::ALL { option value=(s.code()) selected[query.status == s.code()] { (s.label()) } }
            } }
            div { label for="nature" { "性质" } select id="nature" name="nature" {
                option value="" { "全部" }
                @for n in Nature::ALL { option value=(n.code()) selected[query.nature == n.code()] { (n.label()) } }
            } }
            div { label for="category" { "类别" } select id="category" name="category" {
                option value="" { "全部" }
                @for (code, c) in &hall.categories { option value=(code) selected[&query.category == code] { (c.name) } }
            } }
            div { label for="window" { "登记窗口" } select id="window" name="window" {
                option value="" { "全部" }
                @for (code, w) in &hall.windows { option value=(code) selected[&query.window == code] { (w.name) } }
            } }
            div { label.inline { input type="checkbox" name="overdue" value="1" checked[query.overdue == "1"]; " 仅超期" } }
            div { button type="submit" { "筛选" } }
        }
        (rows_table(&app, &rows, now))
        @if let Some(link) = next_link { a.button.secondary href=(link) { "下一页" } }
    };
    desk_page(&session, StatusCode::OK, "登记簿", body)
}

// ---------------------------------------------------------------------------------------------------------------
// New case

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NewCaseForm {
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
            button type="submit" { "登记" }
        }
    }
}

async fn new_form(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let form = NewCaseForm {
        channel: Channel::Window.code().into(),
        nature: Nature::Consultation.code().into(),
        ..Default::default()
    };
    desk_page(&session, StatusCode::OK, "新登记", new_case_page(&app, &session, &form, &[]))
}

async fn new_submit(
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
    let report_form = super::citizen::ReportForm {
        csrf: String::new(),
        nature: form.nature.clone(),
        category: form.category.clone(),
        summary: form.summary.clone(),
        detail: form.detail.clone(),
        name: form.name.clone(),
        phone: form.phone.clone(),
        consent: form.consent.clone(),
    };
    let mut errors = Vec::new();
    let checked = super::citizen::check_report(&hall, &report_form).map_err(|e| errors.extend(e)).ok();
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
    let year = Date::of_ms(ctx.now_ms).year;
    let code = QueryCode::from_entropy(crate::home::entropy().map(|e| e as u64).unwrap_or_default());
    let actor = match app.home.identity.new_actor() {
        Ok(actor) => actor,
        Err(error) => return store_unavailable(&error),
    };
    // The store picks the number inside the transaction that stores the case (`Store::register_new`).
    let receipt_code = code.clone();
    let build: crate::store::RegisterFn = Box::new(move |reg_no| {
        CaseDoc::register(&ctx, &hall, actor, reg_no, &receipt_code, registration).map(|(doc, _)| doc)
    });
    let (ack, reg_no) = match app.store.register_new(&app.home.config.window, year, build).await {
        Ok(registered) => (registered.ack, registered.reg_no),
        Err(crate::store::WriteError::Command(error)) => {
            let errors = vec![command_error_zh(&error)];
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
    let body = html! {
        h1 { "登记成功" }
        div.ok { "已登记，请将登记编号和查询码告知诉求人（查询码只显示这一次）。" }
        div.card { dl {
            dt { "登记编号" } dd.big { (reg_no) }
            dt { "查询码" } dd.big { (code.as_str()) }
        } }
        a.button href={ "/desk/case/" (ack.case_id) } { "打开案件" }
    };
    desk_page(&session, StatusCode::OK, "登记成功", body)
}

// ---------------------------------------------------------------------------------------------------------------
// Case page and actions

/// Minutes one site visit may last. The case rules cut a longer visit to a day (24 × 60 minutes) without a word; the
/// desk refuses the figure instead, so a typo ("900" for "90") is corrected by the person who typed it.
const VISIT_MINUTES_MAX: u32 = 24 * 60;
/// A visit is recorded after it happened: a visit time later than now by more than this (clock slack between window PCs)
/// is a typo.
const VISIT_FUTURE_SLACK_MS: i64 = 10 * 60 * 1000;

/// The actions a role may take on a case in its state: the same transition table and role checks the case rules use,
/// so a form is shown only when its command would be accepted.
fn allowed(view: &CaseView, role: Role) -> BTreeSet<&'static str> {
    let status = view.status;
    let mut actions = BTreeSet::new();
    // The case rules refuse every command on an archived case (its personal data is purged by the retention job).
    if status == Status::Archived {
        return actions;
    }
    let can = |kind: EventKind| transition(&kind, status, role).is_ok();
    let text = String::new;
    let staff = matches!(role, Role::Window | Role::Supervision | Role::Admin);
    let oversight = matches!(role, Role::Supervision | Role::Admin);
    let working = matches!(status, Status::Registered | Status::Dispatched | Status::InProgress | Status::OnHold);
    if can(EventKind::Accepted {}) {
        actions.insert("accept");
    }
    if can(EventKind::Rejected { reason: text(), basis: text() }) {
        actions.insert("reject");
    }
    if can(EventKind::Dispatched { lead_unit: text(), co_units: Vec::new(), due_ms: 0 }) {
        actions.insert("dispatch");
    }
    if can(EventKind::SignedIn { assignee: text() }) {
        actions.insert("sign_in");
    }
    if can(EventKind::Returned { reason: text(), basis: text() }) {
        actions.insert("return");
    }
    if can(EventKind::Suspended { reason: text() }) {
        actions.insert("suspend");
    }
    if can(EventKind::Resumed {}) {
        actions.insert("resume");
    }
    if can(EventKind::Resolved { result: CaseResult::Done, reply: text() }) {
        actions.insert("resolve");
    }
    if can(EventKind::Closed { reviewer: text(), forced: false }) {
        actions.insert("close");
    }
    if can(EventKind::Reopened { reason: text() }) {
        actions.insert("reopen");
    }
    if can(EventKind::Withdrawn { reason: text() }) {
        actions.insert("withdraw");
    }
    if can(EventKind::MarkedDuplicate { master: view.case_id.clone() }) {
        actions.insert("duplicate");
    }
    if view.duplicate_of.is_some() && can(EventKind::Unmerged { master: view.case_id.clone() }) {
        actions.insert("unmerge");
    }
    if staff && status.is_open() {
        actions.extend(["reply", "note", "edit"]);
    }
    if staff && (working || status == Status::Replied) {
        actions.insert("consult");
    }
    if (staff || role == Role::Volunteer) && (working || status == Status::Replied) {
        actions.insert("visit");
    }
    if matches!(role, Role::Window | Role::Admin)
        && matches!(status, Status::Dispatched | Status::InProgress | Status::OnHold)
    {
        actions.insert("extend");
    }
    if oversight && working && view.extensions.iter().any(|extension| extension.approved_due_ms.is_none()) {
        actions.insert("approve_extension");
    }
    if staff && status == Status::Replied {
        actions.insert("callback");
    }
    // 督办 is the 督查科's own act: the case rules take it from the supervision role only (not from an admin).
    if role == Role::Supervision && status.is_open() {
        actions.insert("supervise");
    }
    if oversight && !view.conflicts.is_empty() {
        actions.insert("resolve_conflict");
    }
    if staff && !view.personal.purged {
        actions.insert("reveal");
    }
    actions
}

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
fn field_value<'a>(view: &'a CaseView, field: &str) -> &'a str {
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
fn conflict_item(hall: &zhaowo_crdt::Hall, session: &Session, view: &CaseView, conflict: &Conflict) -> Markup {
    let may_resolve = matches!(session.role, Role::Supervision | Role::Admin) && view.status != Status::Archived;
    let action = format!("/desk/case/{}/act", view.case_id.as_str());
    let head = html! {
        input type="hidden" name="csrf" value=(session.csrf);
        input type="hidden" name="action" value="resolve_conflict";
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
    related
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
    let actions = allowed(view, session.role);
    let id = view.case_id.as_str();
    let suggestion = hall.categories.get(&view.category);
    let csrf = session.csrf.as_str();
    let form_head = |action: &'static str| {
        html! {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="action" value=(action);
        }
    };
    // A refused edit shows what was typed, not the stored values, so nothing typed is lost.
    let typed = |typed: Option<&Option<String>>, stored: &str| -> String {
        typed.and_then(|value| value.clone()).unwrap_or_else(|| stored.to_owned())
    };
    let edit_category = typed(draft.map(|d| &d.category), &view.category);
    let edit_priority = typed(draft.map(|d| &d.priority), view.priority.code());
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
                                    @if actions.contains("approve_extension") {
                                        form method="post" action={ "/desk/case/" (id) "/act" } {
                                            (form_head("approve_extension"))
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
        h2 { "办理" }
        div.grid.noprint {
            @if actions.contains("accept") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } { (form_head("accept")) strong { "受理" } br; button type="submit" { "受理" } }
            }
            @if actions.contains("dispatch") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("dispatch"))
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
            @if actions.contains("sign_in") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("sign_in")) strong { "签收" }
                    label { "承办人" } input type="text" name="text" value=(session.staff());
                    button type="submit" { "签收" }
                }
            }
            @if actions.contains("reply") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("reply")) label for="reply-text" { "对外答复（群众可见）" }
                    textarea id="reply-text" name="text" required {}
                    button type="submit" id="do-reply" { "发布答复" }
                }
            }
            @if actions.contains("note") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("note")) label for="note-text" { "内部备注（仅工作人员可见）" }
                    textarea id="note-text" name="text" required {}
                    button type="submit" { "添加备注" }
                }
            }
            @if actions.contains("consult") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("consult")) strong { "联合会诊" }
                    label { "参会单位代码（逗号分隔）" } input type="text" name="co_units" required;
                    p.hint { @for (i, (code, unit)) in hall.units.iter().enumerate() { @if i > 0 { "；" } (code) " " (unit.name) } }
                    label { "会诊纪要" } textarea name="text" required maxlength=(NOTE_CHARS_MAX) {}
                    p { label.inline { input type="checkbox" name="flag" value="yes"; " 含现场勘查" } }
                    button type="submit" { "记录会诊" }
                }
            }
            @if actions.contains("visit") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("visit")) strong { "上门 / 走访记录" }
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
            @if actions.contains("extend") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("extend")) strong { "申请延期" }
                    p.hint { "当前承诺办结：" (minute(view.effective_due_ms(now))) "。督查科批准后生效。" }
                    label for="extend-days" { "延长工作日（1-" (EXTENSION_WORKING_DAYS_MAX) "）" }
                    input type="number" id="extend-days" name="days" min="1" max=(EXTENSION_WORKING_DAYS_MAX) required value="5";
                    label for="extend-reason" { "延期原因" }
                    input type="text" id="extend-reason" name="text" required maxlength=(REASON_CHARS_MAX);
                    button type="submit" { "申请延期" }
                }
            }
            @if actions.contains("resolve") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("resolve")) strong { "办理完毕 / 答复" }
                    label { "办理结果" } select name="choice" { @for r in CaseResult::ALL { option value=(r.code()) { (r.label()) } } }
                    label { "答复内容（群众可见）" } textarea name="text" required {}
                    button type="submit" { "办理完毕" }
                }
            }
            @if actions.contains("callback") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("callback")) strong { "回访" }
                    label { "方式" } select name="method" { @for m in CallbackMethod::ALL { option value=(m.code()) { (m.label()) } } }
                    label { "结果" } select name="choice" {
                        option value="" { "未联系上" }
                        @for o in CallbackOutcome::ALL { option value=(o.code()) selected[*o == CallbackOutcome::Resolved] { (o.label()) } }
                    }
                    label { "评价（1-5）" } input type="number" name="rating" min="1" max="5" value="5";
                    label { "说明" } input type="text" name="text";
                    button type="submit" { "记录回访" }
                }
            }
            @if actions.contains("close") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("close")) strong { "办结" }
                    label { "审核人" } input type="text" name="text" required;
                    button type="submit" { "办结" }
                }
            }
            @for (action, title, fields) in [("return", "退单", true), ("reject", "不予受理", true)] {
                @if actions.contains(action) {
                    form.card method="post" action={ "/desk/case/" (id) "/act" } {
                        (form_head(action)) strong { (title) }
                        label { "原因" } input type="text" name="text" required;
                        @if fields { label { "依据" } input type="text" name="basis" required; }
                        button.secondary type="submit" { (title) }
                    }
                }
            }
            @for (action, title) in [("suspend", "待补充材料（暂停计时）"), ("reopen", "发回重办"), ("withdraw", "撤回（应诉求人要求）")] {
                @if actions.contains(action) {
                    form.card method="post" action={ "/desk/case/" (id) "/act" } {
                        (form_head(action)) strong { (title) }
                        label { "原因" } input type="text" name="text" required;
                        button.secondary type="submit" { (title) }
                    }
                }
            }
            @if actions.contains("resume") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } { (form_head("resume")) strong { "恢复办理" } br; button type="submit" { "恢复办理" } }
            }
            @if actions.contains("duplicate") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("duplicate")) strong { "并案（标记为重复件）" }
                    p.hint { "本案将并入主案件，状态变为“重复件”；督查科可解除并案。" }
                    label for="duplicate-master" { "主案件登记编号或案件标识" }
                    input type="text" id="duplicate-master" name="master" required placeholder="BBC01-2026-0001";
                    button.secondary type="submit" { "并案" }
                }
            }
            @if actions.contains("unmerge") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("unmerge")) strong { "解除并案" }
                    p.hint { "本案恢复为“已登记”，主案件不再列出本案。" }
                    button.secondary type="submit" { "解除并案" }
                }
            }
            @if actions.contains("supervise") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("supervise")) strong { "督办" }
                    select name="choice" { @for l in &SupervisionLevel::ALL[1..] { option value=(l.code()) { (l.label()) } } }
                    label { "意见" } input type="text" name="text" required;
                    button type="submit" { "督办" }
                }
            }
            @if actions.contains("reveal") {
                form.card method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("reveal")) strong { "查看完整个人信息" }
                    p.hint { "查看将被记录（时间、人员、用途）。" }
                    label { "用途" } input type="text" name="text" required maxlength=(REASON_CHARS_MAX) value="电话回访";
                    button.secondary type="submit" id="do-reveal" { "查看" }
                }
            }
        }
        @if actions.contains("edit") {
            details.card.noprint open[draft.is_some()] {
                summary { strong { "修改诉求信息" } }
                form method="post" action={ "/desk/case/" (id) "/act" } {
                    (form_head("edit"))
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
        h2 { "对外答复" }
        @if view.public_replies.is_empty() { p.hint { "暂无" } }
        ul { @for r in &view.public_replies { li { span.hint { (minute(r.at_ms)) } " " (r.text) } } }
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
async fn case_response(
    app: &App,
    session: &Session,
    status: StatusCode,
    view: &CaseView,
    message: Option<Result<&str, &str>>,
    revealed: Option<Markup>,
    draft: Option<&ActionForm>,
) -> Response {
    let related = related(app, view).await;
    let title = format!("案件 {}", view.reg_no);
    desk_page(session, status, &title, case_body(app, session, view, &related, message, revealed, draft))
}

/// A refused action: the case page again with the reason on top (400); nothing was stored.
async fn refused(app: &App, session: &Session, view: &CaseView, message: &str, draft: Option<&ActionForm>) -> Response {
    case_response(app, session, StatusCode::BAD_REQUEST, view, Some(Err(message)), None, draft).await
}

fn done(view: &CaseView, action: &str) -> Response {
    Redirect::to(&format!("/desk/case/{}?done={action}", view.case_id.as_str())).into_response()
}

async fn load_view(app: &App, id: &str) -> Result<CaseView, Response> {
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
struct CaseQuery {
    done: String,
}

async fn case_page(
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
    let done = query.map(|Query(q)| q.done).unwrap_or_default();
    let message = (!done.is_empty()).then(|| Ok(action_title(&done)));
    case_response(&app, &session, StatusCode::OK, &view, message, None, None).await
}

fn action_title(action: &str) -> &'static str {
    match action {
        "accept" => "已受理",
        "dispatch" => "已派单",
        "sign_in" => "已签收",
        "reply" => "答复已发布",
        "note" => "备注已添加",
        "consult" => "会诊已记录",
        "visit" => "上门/走访已记录",
        "extend" => "延期申请已提交，待督查科批准",
        "approve_extension" => "已批准延期",
        "edit" => "诉求信息已修改",
        "resolve" => "已办理完毕",
        "callback" => "回访已记录",
        "close" => "已办结",
        "return" => "已退单",
        "reject" => "已不予受理",
        "suspend" => "已暂停计时",
        "resume" => "已恢复办理",
        "reopen" => "已发回重办",
        "withdraw" => "已撤回",
        "duplicate" => "已并案：本案为重复件",
        "unmerge" => "已解除并案",
        "supervise" => "已督办",
        "resolve_conflict" => "冲突已核定",
        _ => "操作完成",
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ActionForm {
    csrf: String,
    action: String,
    text: String,
    basis: String,
    lead_unit: String,
    co_units: String,
    choice: String,
    method: String,
    rating: String,
    flag: Option<String>,
    /// A field conflict: the candidate value the reviewer picked.
    value: Option<String>,
    /// 申请延期: working days.
    days: String,
    /// 批准延期: the request event.
    request: String,
    /// 上门: who went, when (`datetime-local`), for how many minutes.
    volunteers: String,
    at: String,
    minutes: String,
    /// 并案: the master's 登记编号 or case id.
    master: String,
    /// 修改诉求信息: a field left out of the form is left as it is.
    summary: Option<String>,
    detail: Option<String>,
    expectation: Option<String>,
    location: Option<String>,
    category: Option<String>,
    priority: Option<String>,
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

/// The command a desk form asks for, or a zh-CN message saying what is missing.
fn command_of(form: &ActionForm, now_ms: i64) -> Result<Command, String> {
    let text = clean(&form.text);
    let required = |label: &str| if text.is_empty() { Err(format!("请填写{label}")) } else { Ok(text.clone()) };
    Ok(match form.action.as_str() {
        "accept" => Command::Accept,
        "dispatch" => Command::Dispatch {
            lead_unit: Some(form.lead_unit.trim().to_owned()).filter(|u| !u.is_empty()),
            co_units: Some(units_list(&form.co_units)),
            due_ms: None,
        },
        "sign_in" => Command::SignIn { assignee: required("承办人")? },
        "reply" => Command::PublishReply { text: required("答复内容")? },
        "note" => Command::AddNote { text: required("备注")? },
        "consult" => Command::HoldConsultation {
            units: units_list(&form.co_units),
            minutes: required("会诊纪要")?,
            site_visit: form.flag.is_some(),
            held_at_ms: now_ms,
        },
        "visit" => {
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
        "extend" => Command::RequestExtension {
            working_days: form
                .days
                .trim()
                .parse()
                .map_err(|_| format!("请填写延长的工作日数（1-{EXTENSION_WORKING_DAYS_MAX}）"))?,
            reason: required("延期原因")?,
        },
        "approve_extension" => Command::ApproveExtension {
            request: EventId::parse(form.request.trim()).ok_or("请选择要批准的延期申请")?,
        },
        "resolve" => Command::Resolve {
            result: CaseResult::parse(&form.choice).ok_or("请选择办理结果")?,
            reply: required("答复内容")?,
        },
        "callback" => {
            let outcome = CallbackOutcome::parse(&form.choice);
            Command::RecordCallback {
                method: CallbackMethod::parse(&form.method).ok_or("请选择回访方式")?,
                reached: outcome.is_some(),
                outcome,
                rating: if outcome.is_some() { form.rating.trim().parse().ok() } else { None },
                comment: text,
            }
        }
        "close" => Command::Close { reviewer: required("审核人")?, forced: false },
        "return" => Command::Return { reason: required("原因")?, basis: clean(&form.basis) },
        "reject" => Command::Reject { reason: required("原因")?, basis: clean(&form.basis) },
        "suspend" => Command::Suspend { reason: required("原因")? },
        "resume" => Command::Resume,
        "reopen" => Command::Reopen { reason: required("原因")? },
        "withdraw" => Command::Withdraw { reason: required("原因")? },
        "resolve_conflict" => Command::ResolveConflict {
            conflict: form.choice.trim().to_owned(),
            decision: match form.value.as_deref().map(clean) {
                Some(value) if !value.is_empty() => ConflictDecision::Choose(value),
                _ => ConflictDecision::Keep,
            },
            note: required("核定说明")?,
        },
        "supervise" => Command::Supervise {
            level: SupervisionLevel::parse(&form.choice).ok_or("请选择督办级别")?,
            comment: required("意见")?,
        },
        _ => return Err("未知的操作".to_owned()),
    })
}

/// The zh-CN name of a field the desk's newer forms send, for the refusals `page::command_error_zh` does not name.
fn desk_field_zh(field: &str) -> Option<&'static str> {
    Some(match field {
        "note" => "核定说明",
        "volunteer" | "volunteers" => "走访人员",
        "outcome" => "走访情况",
        "units" => "参会单位",
        "co-units" => "协办单位",
        "lead unit" => "主办单位",
        "visit time" => "走访时间",
        "consultation time" => "会诊时间",
        _ => return None,
    })
}

/// A case-rule refusal in zh-CN: the desk's own wording for the refusals of its newer forms, else the shared one.
fn command_error_desk(error: &CommandError) -> String {
    use CommandError as E;
    let own = match error {
        E::Empty { field } => desk_field_zh(field).map(|name| format!("请填写{name}")),
        E::TooLong { field, chars, max } => {
            desk_field_zh(field).map(|name| format!("{name}最多 {max} 个字，现为 {chars} 个字"))
        }
        E::TooMany { field, max, count } => {
            desk_field_zh(field).map(|name| format!("{name}最多 {max} 项，现为 {count} 项"))
        }
        E::ExtensionDays { max, .. } => Some(format!("延期须为 1-{max} 个工作日")),
        E::UnknownExtension(_) => Some("没有这条待批准的延期申请（可能已被批准）".to_owned()),
        E::TimeOutOfRange { field } => {
            Some(format!("{}与当前时间相差过远，请检查日期", desk_field_zh(field).unwrap_or("时间")))
        }
        E::UnknownConflict(_) => Some("该冲突不存在或已经核定".to_owned()),
        E::NotACandidate(_) => Some("所选取值不是冲突中的取值之一".to_owned()),
        E::DecisionKind(_) => Some("状态冲突只能维持合并结果".to_owned()),
        E::NoChange(_) => Some("没有需要修改的内容".to_owned()),
        E::DuplicateCycle => Some("不能并入本案自身，也不能并入以本案为主案件的案件".to_owned()),
        E::Purged => Some("本案的个人信息已清除".to_owned()),
        E::TooManyEvents(_) => Some("本案的办理记录已达上限，请联系管理员".to_owned()),
        _ => None,
    };
    own.unwrap_or_else(|| command_error_zh(error))
}

async fn case_action(
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
    match form.action.as_str() {
        "reveal" => return reveal(&app, &session, &id, ctx, &clean(&form.text)).await,
        "edit" => return edit_case(&app, &session, &view, &form).await,
        "duplicate" => return mark_duplicate(&app, &session, &view, ctx, &form).await,
        "unmerge" => return unmerge(&app, &session, &view, ctx).await,
        _ => {}
    }
    let command = match command_of(&form, ctx.now_ms) {
        Ok(command) => command,
        Err(message) => return refused(&app, &session, &view, &message, None).await,
    };
    match app.store.apply(&id, ctx, Arc::new(hall(&app)), command).await {
        Ok(_) => done(&view, &form.action),
        Err(crate::store::WriteError::Command(error)) => {
            refused(&app, &session, &view, &command_error_desk(&error), None).await
        }
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
        Ok(_) => done(view, "edit"),
        Err(crate::store::WriteError::Command(error)) => {
            refused(app, session, view, &command_error_desk(&error), Some(form)).await
        }
        Err(error) => store_unavailable(&error),
    }
}

/// 并案: marks this case a duplicate of the master named by its 登记编号 or case id, then records the duplicate on the
/// master (the two halves of `CaseDoc::mark_duplicate`, one document at a time as the store holds them).
async fn mark_duplicate(app: &App, session: &Session, view: &CaseView, ctx: Ctx, form: &ActionForm) -> Response {
    let typed = form.master.trim();
    let master_id = if let Some(reg_no) = RegNo::parse(typed) {
        match super::cases::find_reg_no(&app.store, &reg_no).await {
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
        Ok(_) => done(view, "duplicate"),
        Err(crate::store::WriteError::Command(error)) => {
            refused(app, session, view, &command_error_desk(&error), None).await
        }
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
        Ok(acks) if acks.second.is_some() => done(view, "unmerge"),
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
        Err(crate::store::WriteError::Command(error)) => {
            refused(app, session, view, &command_error_desk(&error), None).await
        }
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
        Err(crate::store::WriteError::Command(error)) => {
            refused(app, session, &view, &command_error_desk(&error), None).await
        }
        Err(error) => store_unavailable(&error),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Overdue, statistics, conflicts, peers, QR codes

async fn overdue(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let now = crate::home::now_ms();
    let rows = match app.store.overdue(now, crate::store::PAGE_ROWS_MAX).await {
        Ok(rows) => rows,
        Err(error) => return store_unavailable(&error),
    };
    let body = html! {
        h1 { "超期清单（" (rows.len()) " 件）" }
        p.hint { "按超期时长排序，最久的在前。" }
        (rows_table(&app, &rows, now))
    };
    desk_page(&session, StatusCode::OK, "超期清单", body)
}

/// A rate as a percentage, or "—" when nothing was counted (0 / 0 is not 0%).
fn ratio(count: i64, of: i64) -> String {
    if of > 0 { format!("{:.1}%", count as f64 * 100.0 / of as f64) } else { "—".to_owned() }
}

/// A monthly bar chart (registered and closed) as inline SVG: no script, printable.
fn monthly_chart(months: &[(String, i64, i64)]) -> Markup {
    let max = months.iter().map(|(_, r, c)| (*r).max(*c)).max().unwrap_or(0).max(1);
    let (width, height, left, bottom) = (640.0_f64, 220.0_f64, 30.0_f64, 30.0_f64);
    let slot = (width - left) / months.len().max(1) as f64;
    let bar = slot * 0.35;
    let scale = |n: i64| (height - bottom - 10.0) * n as f64 / max as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" aria-label="每月受理量与办结量" style="width:100%;max-width:760px;background:#fff">"#
    );
    svg.push_str(&format!(
        r##"<line x1="{left}" y1="{y}" x2="{width}" y2="{y}" stroke="#999"/>"##,
        y = height - bottom
    ));
    svg.push_str(&format!(r##"<text x="2" y="14" font-size="11" fill="#555">{max}</text>"##));
    for (i, (label, registered, closed)) in months.iter().enumerate() {
        let x = left + slot * i as f64 + slot * 0.1;
        let (hr, hc) = (scale(*registered), scale(*closed));
        svg.push_str(&format!(
            r##"<rect x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{hr:.1}" fill="#b3261e"><title>{label} 受理 {registered}</title></rect>"##,
            height - bottom - hr
        ));
        svg.push_str(&format!(
            r##"<rect x="{:.1}" y="{:.1}" width="{bar:.1}" height="{hc:.1}" fill="#2e7d32"><title>{label} 办结 {closed}</title></rect>"##,
            x + bar,
            height - bottom - hc
        ));
        svg.push_str(&format!(
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#333">{label}</text>"##,
            x + bar,
            height - 10.0
        ));
    }
    svg.push_str("</svg>");
    // Built from numbers and month labels we format ourselves: nothing user-typed reaches the SVG.
    html! {
        (PreEscaped(svg))
        p.hint { span style="color:#b3261e" { "■" } " 受理量　" span style="color:#2e7d32" { "■" } " 办结量" }
    }
}

async fn stats(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let now = crate::home::now_ms();
    let today = Date::of_ms(now);
    let year_start = Date::new(today.year, 1, 1).unwrap_or(today);
    let year = match app.store.statistics(year_start, today).await {
        Ok(stats) => stats,
        Err(error) => return store_unavailable(&error),
    };
    let mut months = Vec::new();
    for back in (0..12).rev() {
        let month_index = today.year * 12 + i32::from(today.month) - 1 - back;
        let (y, m) = (month_index.div_euclid(12), (month_index.rem_euclid(12) + 1) as u8);
        let (Some(first), Some(next)) = (
            Date::new(y, m, 1),
            Date::new((month_index + 1).div_euclid(12), ((month_index + 1).rem_euclid(12) + 1) as u8, 1),
        ) else {
            continue;
        };
        match app.store.statistics(first, next.add_days(-1)).await {
            Ok(s) => months.push((format!("{m}月"), s.counts.registered, s.counts.closed)),
            Err(error) => return store_unavailable(&error),
        }
    }
    let by_status = super::metrics::cases_by_status(&app).await.unwrap_or_default();
    // Damaged documents this node does not send, and numbers held twice (from sync): the store's lists.
    let quarantined = app.store.quarantined().await.unwrap_or_default();
    let repeated = app.store.repeated_numbers().await.unwrap_or_default();
    let c = &year.counts;
    let body = html! {
        h1 { (today.year) " 年督查统计" }
        p.hint { "件数少时比率波动大：比率旁均列出件数，请勿据此对窗口排名。" }
        div.grid {
            div.card { "受理量" div.kpi { (c.registered) " 件" } }
            div.card { "响应率" div.kpi { (ratio(c.responded, c.registered)) } span.hint { (c.responded) " / " (c.registered) } }
            div.card { "按时响应率" div.kpi { (ratio(c.responded_on_time, c.registered)) } span.hint { (c.responded_on_time) " / " (c.registered) } }
            div.card { "办结率" div.kpi { (ratio(c.closed, c.registered)) } span.hint { (c.closed) " / " (c.registered) } }
            div.card { "按期办结率" div.kpi { (ratio(c.closed_on_time, c.closed)) } span.hint { (c.closed_on_time) " / " (c.closed) } }
            div.card { "满意率" div.kpi { (ratio(c.satisfied, c.rated)) } span.hint { (c.satisfied) " / " (c.rated) " · 平均 " (if c.rated > 0 { format!("{:.2}", year.rating_mean) } else { "—".to_owned() }) " 分" } }
        }
        h2 { "近 12 个月" }
        (monthly_chart(&months))
        h2 { "当前状态分布（全部案件）" }
        table { tbody {
            @for (code, count) in &by_status {
                @if *count > 0 { tr { td { (label_of(Status::parse, Status::label, code)) } td { (count) } } }
            }
        } }
        @if quarantined.count > 0 {
            h2 id="quarantine" { "损坏的案件数据（" (quarantined.count) " 件，暂停同步）" }
            p.hint { "以下案件在本机存储中损坏，本节点不再向其他节点发送；请联系管理员从备份恢复后运行 zhaowo verify。" }
            ul { @for doc in &quarantined.docs { li { a href={ "/desk/case/" (doc.case_id) } { (doc.case_id) } } } }
        }
        @if !repeated.is_empty() {
            h2 id="repeated-numbers" { "重复的登记编号（" (repeated.len()) " 个）" }
            ul { @for number in &repeated { li { (number.reg_no) "：" (number.case_ids.len()) " 件" } } }
        }
    };
    desk_page(&session, StatusCode::OK, "督查统计", body)
}

async fn conflicts(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    // The store's list of cases with open conflicts (a projection kept with each change), not a fold of every case.
    let list = match app.store.conflicts(crate::store::CONFLICTS_LISTED_MAX).await {
        Ok(list) => list,
        Err(error) => return store_unavailable(&error),
    };
    let mut found = Vec::with_capacity(list.rows.len());
    for (row, _) in &list.rows {
        match app.store.case_view(&row.case_id).await {
            Ok(view) => found.push(view),
            Err(error) => return store_unavailable(&error),
        }
    }
    let hall = hall(&app);
    let body = html! {
        h1 { "冲突待核（" (list.cases) " 件）" }
        @if (found.len() as u64) < list.cases { p.hint { "仅列出最近登记的 " (found.len()) " 件。" } }
        p.hint { "离线节点同时做出的相互冲突的操作：未生效的一方保留在记录中，请核定。" }
        @for view in &found {
            h2 {
                a href={ "/desk/case/" (view.case_id.as_str()) } { (view.reg_no) } " " (view.summary)
                " " span.tag { (view.status.label()) }
            }
            @for conflict in &view.conflicts { (conflict_item(&hall, &session, view, conflict)) }
        }
        @if found.is_empty() { p { "没有待核的冲突。" } }
    };
    desk_page(&session, StatusCode::OK, "冲突待核", body)
}

async fn peers(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let config = &app.home.config;
    let counts = app.store.counts().await.ok();
    let sync = app.options.sync.as_ref();
    let peers = sync.map(|sync| sync.peers()).unwrap_or_default();
    let totals = sync.map(|sync| sync.counts());
    // The hall document as sync has brought it to this node: read afresh from disk, as sign-in does.
    let fresh_home = crate::home::Home::open(&app.home.dir).ok();
    let hall_edits = fresh_home.as_ref().map(crate::home::Home::hall_history).unwrap_or_default();
    let hall_accounts = fresh_home.as_ref().and_then(|home| home.hall().ok()).map(|hall| hall.accounts.len());
    let now = crate::home::now_ms();
    let ago = |ms: Option<i64>| match ms {
        None => "从未".to_owned(),
        Some(ms) if now - ms < 60_000 => format!("{} 秒前", ((now - ms) / 1000).max(0)),
        Some(ms) if now - ms < 3_600_000 => format!("{} 分钟前", (now - ms) / 60_000),
        Some(ms) => format!("{} 小时前", (now - ms) / 3_600_000),
    };
    let body = html! {
        h1 { "节点与同步" }
        div.card { dl {
            dt { "本节点" } dd { code { (app.home.identity.node_id()) } }
            dt { "窗口" } dd { (config.window) " · " (config.display_name) " · " (config.role.label()) }
            dt { "同步端口" } dd { (sync.and_then(|s| s.local_addr()).map_or(config.listen.to_string(), |a| a.to_string())) }
            @if let Some(c) = counts { dt { "本地案件" } dd { (c.docs) " 件（本地序号 " (c.local_seq) "）" } }
            dt { "大厅配置" } dd {
                (hall_edits.len()) " 次修改"
                @if let Some(accounts) = hall_accounts { " · " (accounts) " 个工作人员账户" }
                @if let Some(edit) = hall_edits.last() {
                    br; "最近：" (edit.what) "（" (edit.by) "，" (zhaowo_crdt::time::format_local_minute(edit.at_ms)) "）"
                }
            }
            @if let Some(t) = totals {
                dt { "在线节点" } dd { (t.peers_connected) }
                dt { "拒收的伪造/未签名修改" } dd { (t.rejected_changes) }
                dt { "拒收的吊销节点修改" } dd { (t.refused_changes) }
            }
        } }
        h2 { "已知节点" }
        @if sync.is_none() {
            div.error { "本节点未启动同步（仅本机数据）。使用 zhaowo run 启动后，此处显示各节点的连接和同步状态。" }
        }
        table { thead { tr {
            th { "节点" } th { "地址" } th { "状态" } th { "最近联系" } th { "对方待同步" } th { "本机待同步" }
            th { "发送 / 接收" } th { "拒收" } th { "最近错误" }
        } } tbody {
            @for peer in &peers { tr {
                td { (peer.window) " " (peer.display_name) br; code.small { (&peer.node_id[..peer.node_id.len().min(16)]) } }
                td { (peer.address.map(|a| a.to_string()).unwrap_or_default()) }
                td { @if peer.connected { @if peer.settled { "已连接 · 已同步" } @else { "已连接 · 同步中" } } @else { "未连接" } }
                td { (ago(peer.last_contact_ms)) }
                td { (peer.docs_behind_peer) " 件" }
                td { (peer.docs_behind_us) " 件" }
                td { (peer.bytes_sent / 1024) " KB / " (peer.bytes_received / 1024) " KB" }
                td { (peer.rejected_changes + peer.refused_changes) }
                td { (peer.last_error.clone().unwrap_or_default()) }
            } }
        } }
        @if peers.is_empty() {
            p.hint { "尚无节点连接。" @if !config.peers.is_empty() { "配置的节点：" @for p in &config.peers { (p) " " } } }
        }
    };
    desk_page(&session, StatusCode::OK, "节点与同步", body)
}

async fn qr_codes(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let hall = hall(&app);
    let base = &app.options.public_base_url;
    let body = html! {
        h1 { "窗口二维码" }
        p.hint.noprint { "打印后张贴在各窗口：群众扫码即可反映问题。链接地址：" (base) "/r/窗口编号" }
        div.grid {
            @for (code, window) in &hall.windows {
                div.card {
                    strong { (window.name) } " " span.hint { (code) " · " (window.floor) }
                    (page::qr_svg(&format!("{base}/r/{code}")))
                    p { "办不成事，扫码找我" }
                }
            }
        }
    };
    desk_page(&session, StatusCode::OK, "窗口二维码", body)
}
