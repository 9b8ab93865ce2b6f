//! The citizen pages on the hall LAN: `/r/{window}` (the report form a window's QR code opens), the receipt with
//! 登记编号, 查询码 and a QR code of the lookup link, and `/q` (progress lookup by 登记编号 + 查询码).
//!
//! Only public fields are ever shown ([`zhaowo_crdt::PublicCaseView`]): no personal data, no internal notes. A wrong
//! number and a wrong code get the same answer, so the lookup tells nothing about which cases exist.

use super::guard::{self, Bucket};
use super::limits::CITIZEN_PHOTOS_MAX;
use super::page::{self, Frame, error_page, layout, respond};
use super::{App, CitizenRouting};
use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
pub use zhaowo_crdt::intake::{CheckedReport, ReportForm, check_report, clean};
use zhaowo_crdt::intake::{FormError, decode_form};
use zhaowo_crdt::limits::{
    DETAIL_CHARS_MAX, NAME_CHARS_MAX, RATING_CHANGE_DAYS, RATING_COMMENT_CHARS_MAX, REASON_CHARS_MAX, SUMMARY_CHARS_MAX,
};
use zhaowo_crdt::model::{BadReviewReason, Channel, CommandKind, Nature, Priority, Role, Satisfaction};
use zhaowo_crdt::{Author, CaseDoc, CaseView, Command, Ctx, QueryCode, RegNo, Registration};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(index))
        // A report with photos is read within `CITIZEN_UPLOAD_BODY_BYTES_MAX` by `read_report` itself; one without
        // (url-encoded) keeps the default `BODY_BYTES_MAX` of `DefaultBodyLimit`.
        .route("/r/{window}", get(report_form).post(report_submit))
        .route("/q", get(lookup))
        .route("/q/rate", axum::routing::post(rate_submit))
        .route("/q/withdraw", axum::routing::post(withdraw_submit))
        .route("/q/materials", axum::routing::post(supplement_submit))
        .route("/text-size", get(text_size))
}

/// The client's address: the TCP peer (tests insert it with `MockConnectInfo`).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<ClientIp, Infallible> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip());
        Ok(ClientIp(ip))
    }
}

/// A form body that could not be read: too large (413) or malformed (400). Nothing is stored.
pub fn form_rejection(app: &App, rejection: &FormRejection, back: &str) -> Response {
    app.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "提交内容过长",
            &format!("提交的内容超过了 {} KB 的上限，请精简后重新填写。", app.options.body_bytes_max / 1024),
            Some((back, "返回重新填写")),
        )
    } else {
        error_page(
            StatusCode::BAD_REQUEST,
            "提交内容无法识别",
            "表单内容不完整或格式不正确，请返回重新填写。",
            Some((back, "返回")),
        )
    }
}

/// A wait as the pages say it: whole minutes, at least one.
pub fn minutes_zh(wait: std::time::Duration) -> u64 {
    wait.as_secs().div_ceil(60).max(1)
}

/// The page a client over its rate limit sees, with how long until it may try again.
pub fn rate_limited(app: &App, what: &str, wait: std::time::Duration) -> Response {
    app.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
    let minutes = minutes_zh(wait);
    let mut response = error_page(
        StatusCode::TOO_MANY_REQUESTS,
        "操作过于频繁",
        &format!("您的{what}次数过多，请 {minutes} 分钟后再试。如有急事，请直接到窗口咨询。"),
        None,
    );
    response.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from(wait.as_secs().max(1)));
    response
}

/// A form body decoded strictly ([`decode_form`]): `application/x-www-form-urlencoded`, within the body limit,
/// received within the body-read timeout, every name and value UTF-8 (no U+FFFD put in place of bad bytes).
#[derive(Debug)]
pub struct StrictForm<T>(pub T);

/// Why a [`StrictForm`] could not be read. Nothing is stored.
#[derive(Debug)]
pub enum BodyRejection {
    /// Over the body limit (413).
    TooLarge,
    /// Not received within the body-read timeout (408).
    TooSlow,
    /// Not a form, or not UTF-8 (400).
    Form(FormError),
}

impl BodyRejection {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyRejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyRejection::TooSlow => StatusCode::REQUEST_TIMEOUT,
            BodyRejection::Form(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response {
        let text = match &self {
            BodyRejection::TooLarge => "提交内容过长",
            BodyRejection::TooSlow => "提交超时",
            BodyRejection::Form(error) => error.zh(),
        };
        (self.status(), text).into_response()
    }
}

impl<T: serde::de::DeserializeOwned + Send> FromRequest<App> for StrictForm<T> {
    type Rejection = BodyRejection;

    async fn from_request(request: axum::extract::Request, app: &App) -> Result<StrictForm<T>, BodyRejection> {
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim_start().starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(BodyRejection::Form(FormError::Malformed("not application/x-www-form-urlencoded".into())));
        }
        let timeout = std::time::Duration::from_millis(app.options.body_read_timeout_ms);
        let bytes = match tokio::time::timeout(timeout, axum::body::Bytes::from_request(request, app)).await {
            Err(_) => return Err(BodyRejection::TooSlow),
            Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(BodyRejection::TooLarge);
            }
            Ok(Err(rejection)) => return Err(BodyRejection::Form(FormError::Malformed(rejection.body_text()))),
            Ok(Ok(bytes)) => bytes,
        };
        decode_form(&bytes).map(StrictForm).map_err(BodyRejection::Form)
    }
}

/// The page for a [`BodyRejection`].
pub fn body_rejection(app: &App, rejection: &BodyRejection, back: &str) -> Response {
    app.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
    match rejection {
        BodyRejection::TooLarge => error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "提交内容过长",
            &format!("提交的内容超过了 {} KB 的上限，请精简后重新填写。", app.options.body_bytes_max / 1024),
            Some((back, "返回重新填写")),
        ),
        BodyRejection::TooSlow => error_page(
            StatusCode::REQUEST_TIMEOUT,
            "提交超时",
            "提交的内容未能在规定时间内收完，请检查网络后重新提交。",
            Some((back, "返回")),
        ),
        BodyRejection::Form(error) => {
            error_page(StatusCode::BAD_REQUEST, "提交内容无法识别", error.zh(), Some((back, "返回")))
        }
    }
}

async fn index() -> Response {
    let body = html! {
        h1 { "办不成事，来找我" }
        div.card {
            p { "请扫描窗口上的二维码反映问题，或凭回执查询办理进度。" }
            a.button href="/q" { "查询办理进度" }
        }
    };
    respond(StatusCode::OK, layout("首页", Frame::Citizen, body))
}

/// Natures a citizen may choose (倾诉 included: listening is part of the window's work).
fn natures() -> &'static [Nature] {
    Nature::ALL
}

fn report_page(app: &App, window: &str, form: &ReportForm, errors: &[String], csrf: &str) -> Markup {
    let hall = app.hall().expect(crate::home::SERVED_HALL);
    let window_name = hall.windows.get(window).map_or(window.to_owned(), |w| w.name.clone());
    let body = html! {
        h1 { "反映问题" }
        p.hint { "窗口：" (window_name) "（" (window) "）。提交后您将获得登记编号和查询码，可随时查询办理进度。" }
        @if !errors.is_empty() {
            div.error role="alert" {
                p { "请修改以下内容后重新提交：" }
                ul { @for error in errors { li { (error) } } }
            }
        }
        form.card method="post" action={ "/r/" (window) } enctype="multipart/form-data" data-progress {
            input type="hidden" name="csrf" value=(csrf);
            label for="nature" { "诉求性质" }
            select id="nature" name="nature" {
                @for nature in natures() {
                    option value=(nature.code()) selected[form.nature == nature.code()] { (nature.label()) }
                }
            }
            label for="category" { "诉求类别" }
            select id="category" name="category" {
                @for (code, category) in &hall.categories {
                    option value=(code) selected[&form.category == code] { (category.name) }
                }
            }
            label for="summary" { "诉求摘要（公开查询时显示，请勿填写电话、证件号）" }
            input type="text" id="summary" name="summary" maxlength=(SUMMARY_CHARS_MAX) required value=(form.summary);
            label for="detail" { "详细情况" }
            textarea id="detail" name="detail" maxlength=(DETAIL_CHARS_MAX) required { (form.detail) }
            label for="name" { "姓名或称呼（选填）" }
            input type="text" id="name" name="name" maxlength=(NAME_CHARS_MAX) value=(form.name);
            label for="phone" { "联系电话（同意回访时必填）" }
            input type="tel" id="phone" name="phone" maxlength="20" value=(form.phone);
            p {
                input type="checkbox" id="consent" name="consent" value="yes" checked[form.consent.is_some()];
                " "
                label.inline for="consent" { "我同意工作人员通过电话与我联系、回访" }
            }
            p {
                input type="checkbox" id="sms" name="sms" value="yes" checked[form.sms.is_some()];
                " "
                label.inline for="sms" { "同意接收短信通知（登记回执、答复、补充材料提醒和评价邀请）" }
            }
            p {
                input type="checkbox" id="publish" name="publish" value="yes" checked[form.publish.is_some()];
                " "
                label.inline for="publish" { "我同意在公开的诉求列表中展示本诉求的摘要和办理进度（不含姓名、电话）" }
            }
            label for="photos" { "照片（选填，最多 " (CITIZEN_PHOTOS_MAX) " 张）" }
            input type="file" id="photos" name="photos" accept="image/*" multiple data-max-files=(CITIZEN_PHOTOS_MAX);
            p.hint {
                "可拍照或从相册选择，每张不超过 " (zhaowo_crdt::materials::MATERIAL_BYTES_MAX / (1024 * 1024)) " MB；"
                "照片中的位置等信息会被去除，照片仅工作人员可见。"
            }
            p.hint { "您的姓名和电话仅用于办理和回访，不会公开显示。" }
            progress hidden max="100" value="0" {} " " span.progress-text.hint role="status" {}
            button type="submit" id="do-report" { "提交" }
        }
        script src="/static/upload.js" defer {}
        p { a href="/q" { "已有回执？查询办理进度" } }
    };
    layout("反映问题", Frame::Citizen, body)
}

fn with_cookie(mut response: Response, set_cookie: Option<String>) -> Response {
    if let Some(value) = set_cookie.and_then(|value| axum::http::HeaderValue::from_str(&value).ok()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn unknown_window(window: &str) -> Response {
    let _ = window;
    error_page(
        StatusCode::NOT_FOUND,
        "窗口不存在",
        "二维码中的窗口编号不存在，请扫描窗口上张贴的二维码。",
        Some(("/", "返回首页")),
    )
}

async fn report_form(State(app): State<App>, Path(window): Path<String>, headers: HeaderMap) -> Response {
    if !app.hall().is_ok_and(|hall| hall.windows.contains_key(&window)) {
        return unknown_window(&window);
    }
    let (csrf, set_cookie) = guard::citizen_csrf(&app, &headers);
    let form = ReportForm { nature: Nature::Help.code().to_owned(), ..ReportForm::default() };
    with_cookie(respond(StatusCode::OK, report_page(&app, &window, &form, &[], &csrf)), set_cookie)
}

/// Why a citizen report could not be stored (after it passed the form checks).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No registration number is left this year.
    #[error("no registration number left")]
    NumbersExhausted,
    /// The case rules refused it.
    #[error(transparent)]
    Command(#[from] zhaowo_crdt::CommandError),
    /// The store failed.
    #[error("the store failed: {0}")]
    Store(String),
    /// The OS gave no randomness.
    #[error("no randomness: {0}")]
    Entropy(String),
}

/// Registers a citizen report under this node's window code (registration numbers are per node), tagged with the
/// window whose QR code was scanned, then routes it. Returns the registration number, the query code and the case id.
pub async fn register_report(
    app: &App,
    scanned_window: &str,
    report: CheckedReport,
) -> Result<(RegNo, QueryCode, String), ReportError> {
    let (reg_no, code, case_id, _) = register_report_with_photos(app, scanned_window, report, Vec::new()).await?;
    Ok((reg_no, code, case_id))
}

/// A photo a citizen attached to a report (checked by `materials::clean` before the case was registered).
#[derive(Debug)]
pub struct Photo {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// [`register_report`] with photos: each is attached right after the registration, by the citizen (role 群众, the
/// case still 提交, where the permission table lets a citizen add materials), before the routing table dispatches it.
/// Returns the sentences for the photos that could not be stored after all (the case is registered regardless).
pub async fn register_report_with_photos(
    app: &App,
    scanned_window: &str,
    report: CheckedReport,
    photos: Vec<Photo>,
) -> Result<(RegNo, QueryCode, String, Vec<String>), ReportError> {
    let home = &app.home;
    let hall = app.hall().map_err(|error| ReportError::Store(error.to_string()))?;
    let entropy = || crate::home::entropy().map_err(|error| ReportError::Entropy(error.to_string()));
    let author = Author {
        node: home.identity.node_id(),
        staff: "citizen".to_owned(),
        role: Role::Citizen,
        window: home.config.window.clone(),
    };
    let now = crate::home::now_ms();
    let secret = crate::home::secret().map_err(|error| ReportError::Entropy(error.to_string()))?;
    let ctx = Ctx { now_ms: now, entropy: entropy()?, secret, author };
    let year = zhaowo_crdt::time::Date::of_ms(now).year;
    let code = QueryCode::from_entropy(entropy()? as u64);
    let mut tags = BTreeSet::new();
    tags.insert(format!("扫码:{scanned_window}"));
    let registration = Registration {
        channel: Channel::MiniProgram,
        nature: report.nature,
        category: report.category,
        modes: BTreeSet::new(),
        priority: Priority::Normal,
        matter: None,
        not_done_reason: None,
        summary: report.summary,
        detail: report.detail,
        expectation: String::new(),
        location: String::new(),
        sensitive: false,
        tags,
        personal: report.personal,
    };
    let actor = home.identity.new_actor().map_err(|error| ReportError::Store(error.to_string()))?;
    // The store picks the number inside the transaction that stores the case (`Store::register_new`).
    let receipt_code = code.clone();
    let build_hall = hall.clone();
    let build: crate::store::RegisterFn = Box::new(move |reg_no| {
        CaseDoc::register(&ctx, &build_hall, actor, reg_no, &receipt_code, registration).map(|(doc, _)| doc)
    });
    let registered = match app.store.register_new_with_receipt(&home.config.window, year, &code, build).await {
        Ok(registered) => registered,
        Err(crate::store::WriteError::Command(error)) => return Err(ReportError::Command(error)),
        Err(crate::store::WriteError::NumbersExhausted { .. }) => return Err(ReportError::NumbersExhausted),
        Err(error) => return Err(ReportError::Store(error.to_string())),
    };
    let (ack, reg_no) = (registered.ack, registered.reg_no);
    app.counters.citizen_reports.fetch_add(1, Ordering::Relaxed);
    let mut photo_refusals = Vec::new();
    let shared_hall = std::sync::Arc::new(hall.clone());
    for (index, photo) in photos.into_iter().enumerate() {
        let label = super::materials::file_label(&photo.name, index);
        let attached = match citizen_ctx(app) {
            Ok(ctx) => super::materials::attach_file(
                app,
                &ack.case_id,
                ctx,
                shared_hall.clone(),
                photo.name,
                photo.bytes,
                false,
            )
            .await
            .map_err(|error| error.zh()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(reason) = attached {
            tracing::warn!(case_id = ack.case_id, "a citizen's photo was not stored after the registration");
            photo_refusals.push(format!("照片{label}未能保存：{reason}"));
        }
    }
    route_report(app, &ack.case_id, &hall).await;
    Ok((reg_no, code, ack.case_id, photo_refusals))
}

/// 受理 (and 派单 by the routing table) of a fresh citizen report, by the node. The report is stored already; a
/// failure here leaves it 待受理 for a clerk and is logged.
async fn route_report(app: &App, case_id: &str, hall: &zhaowo_crdt::Hall) {
    let commands = match app.options.citizen_routing {
        CitizenRouting::Dispatch => {
            vec![Command::Accept, Command::Dispatch { lead_unit: None, co_units: None, due_ms: None }]
        }
        CitizenRouting::Accept => vec![Command::Accept],
        CitizenRouting::None => Vec::new(),
    };
    let hall = std::sync::Arc::new(hall.clone());
    for command in commands {
        let name = command.name();
        let ctx = match crate::home::entropy().and_then(|entropy| Ok((entropy, crate::home::secret()?))) {
            Ok((entropy, secret)) => Ctx {
                now_ms: crate::home::now_ms(),
                entropy,
                secret,
                author: Author {
                    node: app.home.identity.node_id(),
                    staff: "系统（路由表）".to_owned(),
                    role: Role::Window,
                    window: app.home.config.window.clone(),
                },
            },
            Err(error) => {
                tracing::warn!(case_id, %error, "citizen report not routed");
                return;
            }
        };
        if let Err(error) = app.store.apply(case_id, ctx, hall.clone(), command).await {
            tracing::warn!(case_id, command = name, %error, "citizen report not routed");
            return;
        }
    }
}

/// The fields of a report sent as `multipart/form-data` (the form with its photo input), each text field at most
/// once, and its photos (file parts named `photos`). `None`: a field twice, a file in a text field, or a field not
/// UTF-8 (a crafted body).
fn report_of_parts(parts: Vec<zhaowo_crdt::upload::Part>) -> Option<(ReportForm, Vec<Photo>)> {
    let mut form = ReportForm::default();
    let mut photos = Vec::new();
    let mut seen = BTreeSet::new();
    for part in parts {
        if part.is_file() {
            if part.name != "photos" {
                return None;
            }
            photos.push(Photo { name: part.file_name.unwrap_or_default(), bytes: part.data });
            continue;
        }
        if !seen.insert(part.name.clone()) {
            return None;
        }
        let value = part.text()?.to_owned();
        match part.name.as_str() {
            "csrf" => form.csrf = value,
            "nature" => form.nature = value,
            "category" => form.category = value,
            "summary" => form.summary = value,
            "detail" => form.detail = value,
            "name" => form.name = value,
            "phone" => form.phone = value,
            "consent" => form.consent = Some(value),
            "publish" => form.publish = Some(value),
            "sms" => form.sms = Some(value),
            _ => {}
        }
    }
    Some((form, photos))
}

/// A report body: the url-encoded form (no photos; `StrictForm`, within `BODY_BYTES_MAX`) or the multipart form
/// with photos (within `CITIZEN_UPLOAD_BODY_BYTES_MAX`, parsed by `crdt::upload` with the citizen limits).
async fn read_report(
    app: &App,
    request: axum::extract::Request,
    back: &str,
) -> Result<(ReportForm, Vec<Photo>), Response> {
    let content_type = super::materials::content_type(request.headers());
    if !content_type.trim_start().to_ascii_lowercase().starts_with("multipart/form-data") {
        return match StrictForm::<ReportForm>::from_request(request, app).await {
            Ok(StrictForm(form)) => Ok((form, Vec::new())),
            Err(rejection) => Err(body_rejection(app, &rejection, back)),
        };
    }
    let body = super::materials::read_upload(request, super::limits::CITIZEN_UPLOAD_BODY_BYTES_MAX)
        .await
        .map_err(|refusal| super::materials::upload_read_refused(app, &refusal, back))?;
    use zhaowo_crdt::upload::UploadError as E;
    let refused = |too_large: bool, message: String| {
        app.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        let (status, title) = if too_large {
            (StatusCode::PAYLOAD_TOO_LARGE, "提交内容过长")
        } else {
            (StatusCode::BAD_REQUEST, "提交内容无法识别")
        };
        error_page(status, title, &message, Some((back, "返回重新填写")))
    };
    let parts = zhaowo_crdt::upload::parse(&content_type, &body, &zhaowo_crdt::upload::UploadLimits::citizen())
        .map_err(|error| {
            let too_large = matches!(error, E::FieldTooLarge { .. } | E::FileTooLarge { .. } | E::BodyTooLarge { .. });
            refused(too_large, error.zh())
        })?;
    report_of_parts(parts).ok_or_else(|| refused(false, "表单内容重复或格式不正确，请返回重新填写。".to_owned()))
}

/// Checks each photo as `blobs::attach` will (`materials::clean`, off the async workers) before anything is stored:
/// the sentences naming the refused ones.
async fn check_photos(photos: Vec<Photo>) -> (Vec<Photo>, Vec<String>) {
    tokio::task::spawn_blocking(move || {
        let mut refusals = Vec::new();
        for (index, photo) in photos.iter().enumerate() {
            if let Err(error) = zhaowo_crdt::materials::clean(&photo.bytes) {
                let label = super::materials::file_label(&photo.name, index);
                refusals.push(format!("照片{label}无法接收：{}请重新选择照片。", error.zh()));
            }
        }
        (photos, refusals)
    })
    .await
    .unwrap_or_else(|_| (Vec::new(), vec!["照片检查失败，请重新选择照片。".to_owned()]))
}

async fn report_submit(
    State(app): State<App>,
    Path(window): Path<String>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    let back = format!("/r/{window}");
    let hall = match app.hall() {
        Ok(hall) if hall.windows.contains_key(&window) => hall,
        _ => return unknown_window(&window),
    };
    let (form, photos) = match read_report(&app, request, &back).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    if !guard::cookie_csrf_ok(&app, &headers, &form.csrf) {
        return error_page(
            StatusCode::FORBIDDEN,
            "页面已过期",
            "为保护您的信息安全，请返回重新打开表单后提交（请使用本机浏览器直接提交）。",
            Some((&back, "重新填写")),
        );
    }
    if let Err(wait) = app.limiter.check(Bucket::Report, client) {
        return rate_limited(&app, "提交", wait);
    }
    let report = match check_report(&hall, &form) {
        Ok(report) => report,
        Err(errors) => {
            app.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return respond(StatusCode::BAD_REQUEST, report_page(&app, &window, &form, &errors, &form.csrf));
        }
    };
    // A refused photo refuses the report with every typed field kept (the citizen is still at the form with the
    // phone in hand and picks another photo in seconds; once registered, the case is dispatched at once and a photo
    // could only be brought to a window). See ARCHITECTURE.md, *Materials on the web*.
    let (photos, photo_errors) = check_photos(photos).await;
    if !photo_errors.is_empty() {
        app.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        return respond(StatusCode::BAD_REQUEST, report_page(&app, &window, &form, &photo_errors, &form.csrf));
    }
    let photo_count = photos.len();
    match register_report_with_photos(&app, &window, report, photos).await {
        Ok((reg_no, code, _, photo_refusals)) => {
            receipt(&app, &reg_no, &code, photo_count - photo_refusals.len(), &photo_refusals)
        }
        Err(ReportError::Command(error)) => {
            app.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            let errors = vec![format!("提交内容不符合要求：{}", page::command_error_zh(&error))];
            respond(StatusCode::BAD_REQUEST, report_page(&app, &window, &form, &errors, &form.csrf))
        }
        Err(error) => {
            tracing::error!(%error, "citizen report not stored");
            error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "暂时无法提交",
                "系统暂时无法保存您的诉求，请稍后再试或直接到窗口反映。",
                Some((&back, "返回")),
            )
        }
    }
}

/// The lookup link of a receipt (its QR code): the number and the code, so scanning shows the progress at once.
pub(crate) fn lookup_link(app: &App, reg_no: &RegNo, code: &QueryCode) -> String {
    format!("{}/q?no={reg_no}&code={}", app.options.public_base_url, code.as_str())
}

fn receipt(app: &App, reg_no: &RegNo, code: &QueryCode, photos: usize, photo_refusals: &[String]) -> Response {
    let link = lookup_link(app, reg_no, code);
    let body = html! {
        h1 { "提交成功" }
        div.ok role="status" { "您的诉求已登记，我们会尽快办理并答复。" @if photos > 0 { span id="photos-stored" { "已收到照片 " (photos) " 张。" } } }
        @if !photo_refusals.is_empty() {
            div.error role="alert" id="photo-refusals" {
                @for refusal in photo_refusals { p { (refusal) } }
                p { "诉求已登记；未保存的照片请到窗口补交。" }
            }
        }
        div.card {
            dl {
                dt { "登记编号" } dd.big id="reg-no" { (reg_no) }
                dt { "查询码" } dd.big id="query-code" { (code.as_str()) }
            }
            p.hint { "请截图或抄下登记编号和查询码，凭此查询办理进度。查询码只显示这一次。" }
            (page::qr_svg(&link))
            p.hint { "扫描二维码可直接查看办理进度。" }
            a.button href={ "/q?no=" (reg_no) } { "查询办理进度" }
        }
        (pi_notice(app))
    };
    let mut response = respond(StatusCode::OK, layout("登记回执", Frame::Citizen, body));
    response.headers_mut().insert(header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    response
}

/// 个人信息告知 (issue 15 §3, 个人信息保护法 §17): why the hall keeps the citizen's details, for how long, and who
/// receives them; on every receipt. The retention is the hall's own setting.
pub(crate) fn pi_notice(app: &App) -> Markup {
    let retention_days = app.hall().map_or(zhaowo_crdt::hall::RETENTION_DAYS_DEFAULT, |hall| hall.retention_days);
    html! {
        div.card id="pi-notice" {
            strong { "个人信息告知" }
            ul {
                li { "用途：您的姓名、电话和诉求内容仅用于办理本诉求、向您答复和回访，以及督查科对办理情况的核查。" }
                li { "保存期限：办结后 " (retention_days) " 天，到期自动清除；去标识化的办理记录保留用于统计。" }
                li { "接收方：本大厅的受理窗口、承办单位和督查科；上门服务时，被指派的志愿者在上门期间可以查看。不向其他任何单位或个人提供。" }
                li { "安全：个人信息在系统中加密保存；您可以凭查询码查询进度、评价或撤回，也可以到窗口要求查阅或更正。" }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LookupQuery {
    no: Option<String>,
    code: Option<String>,
}

fn lookup_form(no: &str, error: Option<&str>) -> Markup {
    html! {
        h1 { "查询办理进度" }
        @if let Some(error) = error { div.error role="alert" { (error) } }
        form.card method="get" action="/q" {
            label for="no" { "登记编号" }
            input type="text" id="no" name="no" maxlength="40" placeholder="如 BBC01-2026-0001" required value=(no);
            label for="code" { "查询码" }
            input type="text" id="code" name="code" maxlength="20" autocomplete="off" required;
            button type="submit" { "查询" }
        }
    }
}

async fn lookup(
    State(app): State<App>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    query: Result<Query<LookupQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        app.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        return error_page(
            StatusCode::BAD_REQUEST,
            "查询参数不正确",
            "请通过查询页面输入登记编号和查询码。",
            Some(("/q", "返回查询")),
        );
    };
    let no = query.no.unwrap_or_default();
    let typed_code = query.code.unwrap_or_default();
    if typed_code.trim().is_empty() {
        let no = if no.chars().count() <= 40 { no } else { String::new() };
        return respond(StatusCode::OK, layout("查询办理进度", Frame::Citizen, lookup_form(no.trim(), None)));
    }
    if let Err(wait) = app.limiter.check(Bucket::Lookup, client) {
        return rate_limited(&app, "查询", wait);
    }
    app.counters.citizen_lookups.fetch_add(1, Ordering::Relaxed);
    let case_id = match find_case(&app, &no, &typed_code).await {
        Ok(case_id) => case_id,
        Err(response) => return response,
    };
    let view = match app.store.case_view(&case_id).await {
        Ok(view) => view,
        Err(error) => return store_unavailable(&error),
    };
    let (csrf, set_cookie) = guard::citizen_csrf(&app, &headers);
    let page = progress_page(&app, &view, typed_code.trim(), &csrf, None);
    with_cookie(respond(StatusCode::OK, page), set_cookie)
}

/// The answer to a wrong 登记编号 or 查询码 (the same for both), with the lookup form again.
fn wrong_lookup(app: &App, no: &str) -> Response {
    app.counters.lookups_failed.fetch_add(1, Ordering::Relaxed);
    let no = if no.chars().count() <= 40 { no } else { "" };
    respond(
        StatusCode::NOT_FOUND,
        layout("查询办理进度", Frame::Citizen, lookup_form(no, Some("登记编号或查询码不正确，请核对回执后重新输入。"))),
    )
}

/// The case of a 登记编号 whose 查询码 matches, or the page to answer with (a wrong number and a wrong code get the same
/// answer, at the same cost).
async fn find_case(app: &App, no: &str, typed_code: &str) -> Result<String, Response> {
    let Some(reg_no) = RegNo::parse(&no.trim().to_ascii_uppercase()) else { return Err(wrong_lookup(app, no.trim())) };
    let case_id = match super::cases::find_reg_no(&app.store, &reg_no).await {
        Ok(Some(case_id)) => case_id,
        Ok(None) => {
            // A wrong number costs a hash like a wrong code (no timing difference between the two).
            let _ = zhaowo_crdt::ids::query_code_matches(&zhaowo_crdt::CaseId::new(0, 0), "", typed_code);
            return Err(wrong_lookup(app, no.trim()));
        }
        Err(error) => return Err(store_unavailable(&error)),
    };
    match super::cases::query_code_matches(&app.store, &case_id, typed_code).await {
        Ok(true) => Ok(case_id),
        Ok(false) => Err(wrong_lookup(app, no.trim())),
        Err(error) => Err(store_unavailable(&error)),
    }
}

/// The progress page behind the 查询码: public fields only (`CaseView::public`), plus what belongs to this citizen
/// (their own rating and the 督查科's 反馈 to it), and the forms they may use now (好差评, 撤回).
fn progress_page(app: &App, full: &CaseView, code: &str, csrf: &str, message: Option<Result<&str, &str>>) -> Markup {
    let now = crate::home::now_ms();
    let view = full.public();
    let hall = app.hall().expect(crate::home::SERVED_HALL);
    let category = hall.categories.get(&view.category).map_or(view.category.clone(), |c| c.name.clone());
    let unit = view.lead_unit.as_ref().map(|unit| hall.units.get(unit).map_or(unit.clone(), |u| u.name.clone()));
    let may_rate = full.citizen_may_rate(now);
    let may_withdraw = CommandKind::Withdraw.permitted(Role::Citizen, full.status).is_ok();
    let rating = full.rating.as_ref();
    let change_until = rating.map(|r| r.first_at_ms + RATING_CHANGE_DAYS * zhaowo_crdt::time::DAY_MS);
    let body = html! {
        h1 { "办理进度" }
        @match message {
            Some(Ok(text)) => div.ok role="status" id="message" { (text) },
            Some(Err(text)) => div.error role="alert" id="message" { (text) "（未保存）" },
            None => {},
        }
        div.card {
            dl {
                dt { "登记编号" } dd id="reg-no" { (view.reg_no) }
                dt { "当前状态" } dd id="status" { strong { (view.status.label()) } }
                dt { "诉求性质" } dd { (view.nature.label()) }
                dt { "诉求类别" } dd { (category) }
                dt { "诉求摘要" } dd id="summary" { (view.summary) }
                dt { "承办单位" } dd { (unit.unwrap_or_else(|| "待派单".to_owned())) }
                dt { "登记时间" } dd { (page::minute(view.registered_at_ms)) }
                dt { "最近更新" } dd { (page::minute(view.updated_at_ms)) }
                @if let Some(expected) = view.expected_ms {
                    dt { "预计办结" } dd id="expected" { (page::minute(expected)) }
                }
            }
        }
        @if let Some(waiting) = &view.waiting_for {
            div.card id="waiting-for" {
                strong { "请补充材料" }
                p { (waiting) }
                p.hint { "补充材料期间，办理时限暂停计时；可以在下面拍照上传，也可以携带材料到窗口。" }
                @if CommandKind::AddMaterial.permitted(Role::Citizen, full.status).is_ok() {
                    form method="post" action="/q/materials" enctype="multipart/form-data" data-progress {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="no" value=(view.reg_no);
                        input type="hidden" name="code" value=(code);
                        label for="supplement" { "材料照片或 PDF（最多 " (CITIZEN_PHOTOS_MAX) " 个）" }
                        input type="file" id="supplement" name="photos" accept="image/*,application/pdf" multiple required data-max-files=(CITIZEN_PHOTOS_MAX);
                        p.hint { "每个不超过 " (zhaowo_crdt::materials::MATERIAL_BYTES_MAX / (1024 * 1024)) " MB；照片中的位置等信息会被去除，材料仅工作人员可见。" }
                        progress hidden max="100" value="0" {} " " span.progress-text.hint role="status" {}
                        button type="submit" id="do-supplement" { "上传补充材料" }
                    }
                    script src="/static/upload.js" defer {}
                }
            }
        }
        @if !view.materials.is_empty() {
            h2 { "公开材料" }
            div.card.photos id="public-materials" {
                @for material in &view.materials {
                    @let link = format!("/m/{}/{}", view.case_id.as_str(), material.id.as_str());
                    p {
                        a href=(link) {
                            @if material.has_thumb { img.thumb src={ (link) "/thumb" } alt={ "公开材料（" (material.media.zh()) "）" }; }
                            @else { (material.media.zh()) }
                        }
                    }
                }
            }
        }
        h2 { "答复" }
        @if view.replies.is_empty() {
            p.hint id="replies" { "暂无答复，工作人员正在办理。" }
        } @else {
            ul.card id="replies" {
                @for reply in view.replies.iter().rev() {
                    li { span.hint { (page::minute(reply.at_ms)) } br; (reply.text) }
                }
            }
        }
        @if let Some(rating) = rating {
            h2 { "我的评价" }
            div.card id="my-rating" {
                strong { (rating.level.label()) }
                @if !rating.reasons.is_empty() { " · " (rating.reasons.iter().map(|r| r.label()).collect::<Vec<_>>().join("、")) }
                @if !rating.comment.is_empty() { p { (rating.comment) } }
                p.hint { (page::minute(rating.at_ms)) " 提交" }
            }
        }
        @for task in full.bad_reviews.iter().filter(|task| !task.cancelled) {
            div.card id="bad-review" {
                strong { "差评处理：" (task.stage_zh()) }
                @match task.feedback() {
                    Some(feedback) => { p id="feedback" { (feedback.text) } p.hint { (page::minute(feedback.at_ms)) " 督查科反馈" } },
                    None => p.hint { "督查科正在核实处理，将在 " (page::minute(task.due_ms)) " 前向您反馈。" },
                }
            }
        }
        @if may_rate {
            h2 id="rate" { @if rating.is_some() { "修改评价" } @else { "评价本次服务" } }
            form.card method="post" action="/q/rate" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="no" value=(view.reg_no);
                input type="hidden" name="code" value=(code);
                fieldset {
                    legend { "您对本次办理是否满意？" }
                    @for level in Satisfaction::ALL {
                        label.choice { input type="radio" name="level" value=(level.code()) required checked[rating.is_some_and(|r| r.level == *level)]; (level.label()) }
                    }
                }
                fieldset {
                    legend { "不满意的原因（选择“不满意”或“非常不满意”时请勾选）" }
                    @for reason in BadReviewReason::ALL {
                        label.choice { input type="checkbox" name="reason" value=(reason.code()) checked[rating.is_some_and(|r| r.reasons.contains(reason))]; (reason.label()) }
                    }
                }
                label for="rate-comment" { "意见或建议（选填）" }
                textarea id="rate-comment" name="comment" maxlength=(RATING_COMMENT_CHARS_MAX) { (rating.map_or("", |r| r.comment.as_str())) }
                p.hint {
                    "每件诉求评价一次，提交后 " (RATING_CHANGE_DAYS) " 天内可以修改"
                    @if let Some(until) = change_until { "（可修改至 " (page::minute(until)) "）" }
                    "。您的评价不会向承办单位显示您的身份；不满意的评价由督查科核实整改并向您反馈。"
                }
                button type="submit" id="do-rate" { "提交评价" }
            }
        }
        h2 { "办理过程" }
        ul.card.timeline {
            @for step in &view.milestones {
                li { span.hint { (page::minute(step.at_ms)) } " " (step.label) }
            }
        }
        @if may_withdraw {
            details.card id="withdraw" {
                summary { "撤回诉求" }
                form method="post" action="/q/withdraw" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="no" value=(view.reg_no);
                    input type="hidden" name="code" value=(code);
                    label for="withdraw-reason" { "撤回原因（选填）" }
                    input type="text" id="withdraw-reason" name="reason" maxlength=(REASON_CHARS_MAX);
                    p { label.inline { input type="checkbox" name="confirm" value="yes" required; " 我确认撤回，撤回后本诉求不再办理" } }
                    button.secondary type="submit" id="do-withdraw" { "撤回" }
                }
            }
        }
        a.button.secondary href="/q" { "查询其他诉求" }
    };
    layout("办理进度", Frame::Citizen, body)
}

/// 补充材料 from the lookup page (issue 16): a 待补充 case asks the citizen for papers, who may photograph them and
/// upload up to [`CITIZEN_PHOTOS_MAX`] files here, behind the 登记编号 and 查询码 like every lookup action (rate-limited,
/// the same answer for a wrong number and a wrong code). Each file is checked before anything is stored; a refused
/// file refuses the upload (the citizen picks another at once), and the case rules decide the rest (only while
/// 待补充, the per-case limits).
async fn supplement_submit(
    State(app): State<App>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    let content_type = super::materials::content_type(request.headers());
    let body = match super::materials::read_upload(request, super::limits::CITIZEN_UPLOAD_BODY_BYTES_MAX).await {
        Ok(body) => body,
        Err(refusal) => return super::materials::upload_read_refused(&app, &refusal, "/q"),
    };
    let unreadable = |app: &App, message: String| {
        app.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        error_page(StatusCode::BAD_REQUEST, "提交内容无法识别", &message, Some(("/q", "返回")))
    };
    let parts = match zhaowo_crdt::upload::parse(&content_type, &body, &zhaowo_crdt::upload::UploadLimits::citizen()) {
        Ok(parts) => parts,
        Err(error) => return unreadable(&app, error.zh()),
    };
    let mut pairs = Vec::new();
    let mut photos = Vec::new();
    for part in parts {
        if part.is_file() && part.name == "photos" {
            photos.push(Photo { name: part.file_name.unwrap_or_default(), bytes: part.data });
        } else if let Some(text) = part.text().filter(|_| !part.is_file()) {
            pairs.push((part.name.clone(), text.to_owned()));
        } else {
            return unreadable(&app, "表单内容格式不正确。".to_owned());
        }
    }
    let Some(form) = CitizenCaseForm::from_pairs(pairs) else {
        return unreadable(&app, "表单内容重复或格式不正确。".to_owned());
    };
    let case_id = match citizen_case_of(&app, client, &headers, &form).await {
        Ok(case_id) => case_id,
        Err(response) => return response,
    };
    if photos.is_empty() {
        return citizen_refusal(&app, &case_id, &form, "请选择要上传的材料").await;
    }
    let (photos, refusals) = check_photos(photos).await;
    if let Some(first) = refusals.first() {
        return citizen_refusal(&app, &case_id, &form, first).await;
    }
    let hall = match app.hall() {
        Ok(hall) => std::sync::Arc::new(hall),
        Err(error) => return store_unavailable(&error),
    };
    let total = photos.len();
    let mut stored = 0;
    for (index, photo) in photos.into_iter().enumerate() {
        let ctx = match citizen_ctx(&app) {
            Ok(ctx) => ctx,
            Err(error) => return store_unavailable(&error),
        };
        let label = super::materials::file_label(&photo.name, index);
        match super::materials::attach_file(&app, &case_id, ctx, hall.clone(), photo.name, photo.bytes, false).await {
            Ok(()) => stored += 1,
            Err(error) => {
                let reason = format!("{label}未能保存：{}（已保存 {stored} 个，共 {total} 个）", error.zh());
                return citizen_refusal(&app, &case_id, &form, &reason).await;
            }
        }
    }
    let done = format!("已收到补充材料 {stored} 个，工作人员核对后将恢复办理");
    match app.store.case_view(&case_id).await {
        Ok(view) => respond(StatusCode::OK, progress_page(&app, &view, form.code.trim(), &form.csrf, Some(Ok(&done)))),
        Err(error) => store_unavailable(&error),
    }
}

/// The fields of the lookup page's forms (好差评, 撤回), read from the pairs of a strictly decoded body: `reason`
/// repeats (one per ticked box); every other field once.
#[derive(Debug, Default)]
struct CitizenCaseForm {
    csrf: String,
    no: String,
    code: String,
    level: Option<String>,
    reasons: Vec<String>,
    comment: String,
    reason: String,
    confirm: bool,
}

impl CitizenCaseForm {
    /// `None` when a field that may appear once appears twice (a crafted body).
    fn from_pairs(pairs: Vec<(String, String)>) -> Option<CitizenCaseForm> {
        let mut form = CitizenCaseForm::default();
        let mut seen = BTreeSet::new();
        for (name, value) in pairs {
            if name != "reason" && !seen.insert(name.clone()) {
                return None;
            }
            match name.as_str() {
                "csrf" => form.csrf = value,
                "no" => form.no = value,
                "code" => form.code = value,
                "level" => form.level = Some(value),
                "reason" if seen.contains("withdraw") => form.reason = value,
                "reason" => form.reasons.push(value),
                "comment" => form.comment = value,
                "confirm" => form.confirm = value == "yes",
                _ => {}
            }
        }
        Some(form)
    }
}

/// What a citizen's command on the lookup page is, once the form was read.
enum CitizenAction {
    Rate,
    Withdraw,
}

async fn rate_submit(
    State(app): State<App>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    form: Result<StrictForm<Vec<(String, String)>>, BodyRejection>,
) -> Response {
    citizen_case_action(app, client, headers, form, CitizenAction::Rate).await
}

async fn withdraw_submit(
    State(app): State<App>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    form: Result<StrictForm<Vec<(String, String)>>, BodyRejection>,
) -> Response {
    citizen_case_action(app, client, headers, form, CitizenAction::Withdraw).await
}

/// 好差评 and 撤回 from the lookup page (issue 15): hostile input like every citizen form. The 查询码 is checked as the
/// lookup checks it (rate-limited, the same answer for a wrong number and a wrong code); the case rules decide the
/// rest (one rating per round, reasons, sizes, states). Any refusal stores nothing.
async fn citizen_case_action(
    app: App,
    client: IpAddr,
    headers: HeaderMap,
    form: Result<StrictForm<Vec<(String, String)>>, BodyRejection>,
    action: CitizenAction,
) -> Response {
    let StrictForm(pairs) = match form {
        Ok(form) => form,
        Err(rejection) => return body_rejection(&app, &rejection, "/q"),
    };
    let mut pairs = pairs;
    if matches!(action, CitizenAction::Withdraw) {
        // Marks the form so `reason` reads as the withdrawal's one reason, not as a rating reason.
        pairs.insert(0, ("withdraw".to_owned(), String::new()));
    }
    let Some(form) = CitizenCaseForm::from_pairs(pairs) else {
        app.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        return error_page(
            StatusCode::BAD_REQUEST,
            "提交内容无法识别",
            "表单内容重复或格式不正确。",
            Some(("/q", "返回")),
        );
    };
    let case_id = match citizen_case_of(&app, client, &headers, &form).await {
        Ok(case_id) => case_id,
        Err(response) => return response,
    };
    let command = match action {
        CitizenAction::Rate => {
            let level = form.level.as_deref().and_then(Satisfaction::parse);
            let reasons: Option<Vec<BadReviewReason>> =
                form.reasons.iter().map(|code| BadReviewReason::parse(code)).collect();
            match (level, reasons) {
                (Some(level), Some(reasons)) => Command::Rate { level, reasons, comment: clean(&form.comment) },
                (None, _) => return citizen_refusal(&app, &case_id, &form, "请选择满意程度").await,
                (_, None) => return citizen_refusal(&app, &case_id, &form, "不满意原因不正确").await,
            }
        }
        CitizenAction::Withdraw if !form.confirm => {
            return citizen_refusal(&app, &case_id, &form, "请勾选确认后再撤回").await;
        }
        CitizenAction::Withdraw => Command::Withdraw { reason: clean(&form.reason) },
    };
    let ctx = match citizen_ctx(&app) {
        Ok(ctx) => ctx,
        Err(error) => return store_unavailable(&error),
    };
    let hall = match app.hall() {
        Ok(hall) => std::sync::Arc::new(hall),
        Err(error) => return store_unavailable(&error),
    };
    let done = match command {
        Command::Rate { .. } => "评价已提交，感谢您的反馈",
        _ => "诉求已撤回",
    };
    match app.store.apply(&case_id, ctx, hall, command).await {
        Ok(_) => {}
        Err(crate::store::WriteError::Command(error)) => {
            return citizen_refusal(&app, &case_id, &form, &page::command_error_zh(&error)).await;
        }
        Err(error) => return store_unavailable(&error),
    }
    match app.store.case_view(&case_id).await {
        Ok(view) => respond(StatusCode::OK, progress_page(&app, &view, form.code.trim(), &form.csrf, Some(Ok(done)))),
        Err(error) => store_unavailable(&error),
    }
}

/// The checks every citizen action on the lookup page passes before the case rules: the CSRF cookie, the lookup's
/// rate limit, and the 登记编号 + 查询码 (one answer for a wrong number and a wrong code). The case's id, or the page.
async fn citizen_case_of(
    app: &App,
    client: IpAddr,
    headers: &HeaderMap,
    form: &CitizenCaseForm,
) -> Result<String, Response> {
    if !guard::cookie_csrf_ok(app, headers, &form.csrf) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "页面已过期",
            "为保护您的信息安全，请重新查询后再提交（请使用本机浏览器直接提交）。",
            Some(("/q", "重新查询")),
        ));
    }
    if let Err(wait) = app.limiter.check(Bucket::Lookup, client) {
        return Err(rate_limited(app, "查询", wait));
    }
    app.counters.citizen_lookups.fetch_add(1, Ordering::Relaxed);
    match find_case(app, &form.no, &form.code).await {
        Ok(case_id) => Ok(case_id),
        Err(response) if response.status() == StatusCode::NOT_FOUND => Err(error_page(
            StatusCode::NOT_FOUND,
            "登记编号或查询码不正确",
            "登记编号或查询码不正确，请核对回执后重新查询。",
            Some(("/q", "重新查询")),
        )),
        Err(response) => Err(response),
    }
}

/// A refused citizen action: the progress page again with the reason (400), nothing stored.
async fn citizen_refusal(app: &App, case_id: &str, form: &CitizenCaseForm, reason: &str) -> Response {
    app.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
    match app.store.case_view(case_id).await {
        Ok(view) => {
            respond(StatusCode::BAD_REQUEST, progress_page(app, &view, form.code.trim(), &form.csrf, Some(Err(reason))))
        }
        Err(error) => store_unavailable(&error),
    }
}

/// The context of a command the citizen gives on this node's pages (author role 群众, as the report form's
/// registration).
fn citizen_ctx(app: &App) -> Result<Ctx, ReportError> {
    let home = &app.home;
    Ok(Ctx {
        now_ms: crate::home::now_ms(),
        entropy: crate::home::entropy().map_err(|error| ReportError::Entropy(error.to_string()))?,
        secret: crate::home::secret().map_err(|error| ReportError::Entropy(error.to_string()))?,
        author: Author {
            node: home.identity.node_id(),
            staff: "citizen".to_owned(),
            role: Role::Citizen,
            window: home.config.window.clone(),
        },
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TextSizeQuery {
    large: String,
    back: String,
}

/// 适老化: turns the large-text mode on or off on this device (a cookie for a year) and returns to the page it was
/// switched on; only a path on this site is followed.
async fn text_size(query: Result<Query<TextSizeQuery>, axum::extract::rejection::QueryRejection>) -> Response {
    let Query(query) = query.unwrap_or_default();
    // A path of this site, as `page_settings` wrote it (percent-encoded ASCII): nothing that could leave the site or
    // break the `Location` header.
    let local = query.back.len() <= 1024
        && query.back.starts_with('/')
        && !query.back.starts_with("//")
        && query.back.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    let back = if local { query.back } else { "/".to_owned() };
    let cookie = if query.large == "1" {
        format!("{}=large; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax", page::TEXT_SIZE_COOKIE)
    } else {
        format!("{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax", page::TEXT_SIZE_COOKIE)
    };
    let mut response = axum::response::Redirect::to(&back).into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

pub fn store_unavailable(error: &dyn std::fmt::Display) -> Response {
    tracing::error!(%error, "store read failed");
    error_page(StatusCode::SERVICE_UNAVAILABLE, "暂时无法查询", "系统暂时无法读取数据，请稍后再试。", None)
}

impl IntoResponse for ReportError {
    fn into_response(self) -> Response {
        store_unavailable(&self)
    }
}
