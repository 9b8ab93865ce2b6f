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

mod actions;
mod book;
mod case_page;
mod materials;
mod new_case;
mod reports;

use actions::case_action;
use book::register_book;
use case_page::case_page;
use new_case::{new_form, new_submit};
use reports::{conflicts, overdue, peers, qr_codes, stats};

use super::App;
use super::citizen::{ClientIp, form_rejection, rate_limited, store_unavailable};
use super::guard::{self, Bucket, SESSION_COOKIE, Session};
use super::page::{Frame, error_page, layout, respond};
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::atomic::Ordering;
use zhaowo_crdt::{Author, Ctx};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/desk/login", get(login_form).post(login_submit))
        .route("/desk/logout", post(logout))
        .route("/desk", get(register_book))
        .route("/desk/export.xlsx", get(book::export_xlsx))
        .route("/desk/new", get(new_form).post(new_submit))
        .route("/desk/case/{id}", get(case_page))
        .route("/desk/case/{id}/act", post(case_action))
        .route("/desk/case/{id}/material/{material}/thumb", get(materials::thumbnail))
        // Read within `DESK_UPLOAD_BODY_BYTES_MAX` by the handler itself (`read_upload`); every other route keeps the
        // default `BODY_BYTES_MAX`.
        .route("/desk/case/{id}/materials", post(materials::upload))
        .route("/desk/case/{id}/material/{material}/download", post(materials::download))
        .route("/desk/overdue", get(overdue))
        .route("/desk/stats", get(stats))
        .route("/desk/report", get(reports::report_page))
        .route("/desk/report.xlsx", get(reports::report_xlsx))
        .route("/desk/conflicts", get(conflicts))
        .route("/desk/peers", get(peers))
        .route("/desk/qr", get(qr_codes))
        .route("/desk/hall", get(super::hall_page::hall_page))
}

/// The signed-in staff member of a request, with the session id.
pub(super) fn session(app: &App, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = guard::cookie(headers, &guard::cookie_name(app, SESSION_COOKIE))?;
    let mut session = app.sessions.get(&id, crate::home::now_ms())?;
    session.notice = super::hall_page::header_notice(app, session.role);
    Some((id, session))
}

pub(super) fn to_login() -> Response {
    Redirect::to("/desk/login").into_response()
}

fn frame(session: &Session) -> Frame<'_> {
    Frame::Desk {
        staff: &session.display_name,
        role: session.role.label(),
        csrf: &session.csrf,
        notice: session.notice.as_deref(),
    }
}

pub(super) fn desk_page(session: &Session, status: StatusCode, title: &str, body: Markup) -> Response {
    respond(status, layout(title, frame(session), body))
}

pub(super) fn hall(app: &App) -> zhaowo_crdt::Hall {
    app.hall().expect(crate::home::SERVED_HALL)
}

fn ctx(app: &App, session: &Session) -> Result<Ctx, Response> {
    let entropy = crate::home::entropy().map_err(|error| store_unavailable(&error))?;
    let secret = crate::home::secret().map_err(|error| store_unavailable(&error))?;
    Ok(Ctx {
        now_ms: crate::home::now_ms(),
        entropy,
        secret,
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
    if let Err(wait) = app.limiter.check(Bucket::SignIn, client) {
        return rate_limited(&app, "登录尝试", wait);
    }
    // Accounts live in the hall document: the node's live copy (what sync and the admin's CLI brought, published by
    // `live::Live`), so an account an admin just added (or disabled) counts without a restart and without opening the
    // data directory per request. Routers built without a node (tests, tools) read the files.
    let hall = match &app.options.live {
        Some(live) => live.hall().hall.clone(),
        None => match crate::home::Home::open(&app.home.dir).and_then(|home| home.hall()) {
            Ok(hall) => hall,
            Err(error) => return store_unavailable(&error),
        },
    };
    let username = form.username.trim().to_owned();
    let password = form.password.clone();
    // The account lockout (whatever the address), then argon2 off the async workers.
    let checked = match super::auth::sign_in_guarded(&app, hall, username, password).await {
        Ok(checked) => checked,
        Err(wait) => return super::auth::account_locked(&app, wait),
    };
    match checked {
        Some((display_name, role)) => {
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
