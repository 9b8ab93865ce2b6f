//! Open311 GeoReport v2 under `/open311/v2/` (JSON only): services, service definitions, posting a request, listing
//! and reading requests, and tokens. Public fields only ([`zhaowo_crdt::PublicCaseView`]).
//!
//! Mapping: `service_code` is the category code, `service_request_id` the 登记编号, `token` the case id (returned by
//! `POST requests.json`; `tokens/{token}.json` resolves it), `status_notes` the latest public reply,
//! `agency_responsible` the lead unit, `expected_datetime` the due date. Datetimes are `+08:00`. `description` is
//! the public summary: a case's detail may hold personal data and is never published. Errors are arrays of
//! `{code, description}` with the matching HTTP status. Only cases for which [`zhaowo_crdt::CaseView::open311_public`]
//! holds are listed or served by number (consent to publication, not sensitive, not 举报/倾诉/投诉); any other case
//! answers 404 as if it did not exist.

use super::App;
use super::citizen::{BodyRejection, ClientIp, ReportError, StrictForm, register_report};
use super::guard::Bucket;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use zhaowo_crdt::intake::{FormError, Open311Request, check_open311};
use zhaowo_crdt::model::Status;
use zhaowo_crdt::time::{Date, format_rfc3339};
use zhaowo_crdt::{CaseView, Hall, RegNo};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/open311/v2/services.json", get(services))
        .route("/open311/v2/services/{file}", get(service_definition))
        .route("/open311/v2/requests.json", get(requests).post(post_request))
        .route("/open311/v2/requests/{file}", get(request))
        .route("/open311/v2/tokens/{file}", get(token))
        .route("/open311/v2/{*rest}", get(unknown).post(unknown))
}

/// An Open311 error answer: `[{"code": status, "description": …}]`.
fn error(status: StatusCode, description: &str) -> Response {
    (status, Json(json!([{ "code": status.as_u16(), "description": description }]))).into_response()
}

async fn unknown() -> Response {
    error(StatusCode::NOT_FOUND, "接口不存在（Open311 GeoReport v2：services、requests、tokens）")
}

/// The id part of `{id}.json`; other formats are refused (JSON only).
fn json_file(file: &str) -> Result<&str, Response> {
    match file.rsplit_once('.') {
        Some((id, "json")) if !id.is_empty() => Ok(id),
        Some((_, "xml")) => Err(error(StatusCode::BAD_REQUEST, "仅支持 JSON 格式（.json）")),
        _ => Err(error(StatusCode::NOT_FOUND, "资源不存在：请使用 {id}.json")),
    }
}

fn hall(app: &App) -> Hall {
    app.hall().expect(crate::home::SERVED_HALL)
}

fn service_json(code: &str, category: &zhaowo_crdt::hall::Category, hall: &Hall) -> Value {
    let unit = hall.units.get(&category.lead_unit).map_or(category.lead_unit.as_str(), |u| u.name.as_str());
    json!({
        "service_code": code,
        "service_name": category.name,
        "description": format!("{}相关诉求，默认承办单位：{unit}", category.name),
        "metadata": false,
        "type": "realtime",
        "keywords": category.name,
        "group": unit,
    })
}

async fn services(State(app): State<App>) -> Response {
    let hall = hall(&app);
    let list: Vec<Value> = hall.categories.iter().map(|(code, category)| service_json(code, category, &hall)).collect();
    Json(list).into_response()
}

async fn service_definition(State(app): State<App>, Path(file): Path<String>) -> Response {
    let code = match json_file(&file) {
        Ok(code) => code,
        Err(response) => return response,
    };
    if !hall(&app).categories.contains_key(code) {
        return error(StatusCode::NOT_FOUND, "service_code 不存在");
    }
    // No service has extra attributes (`metadata: false`); the definition lists none.
    Json(json!({ "service_code": code, "attributes": [] })).into_response()
}

async fn post_request(
    State(app): State<App>,
    ClientIp(client): ClientIp,
    form: Result<StrictForm<Open311Request>, BodyRejection>,
) -> Response {
    app.counters.open311_requests.fetch_add(1, Ordering::Relaxed);
    let StrictForm(form) = match form {
        Ok(form) => form,
        Err(rejection) => {
            app.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return match rejection {
                BodyRejection::TooLarge => error(StatusCode::PAYLOAD_TOO_LARGE, "请求内容过长"),
                BodyRejection::TooSlow => error(StatusCode::REQUEST_TIMEOUT, "请求内容未能在规定时间内收完"),
                BodyRejection::Form(FormError::InvalidUtf8) => {
                    error(StatusCode::BAD_REQUEST, "请求含有不是 UTF-8 的字节（请以 UTF-8 编码提交）")
                }
                BodyRejection::Form(_) => {
                    error(StatusCode::BAD_REQUEST, "请求须为 application/x-www-form-urlencoded 表单")
                }
            };
        }
    };
    if let Err(wait) = app.limiter.check(Bucket::Report, client) {
        app.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "提交过于频繁，请稍后再试");
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, wait.as_secs().max(1).into());
        return response;
    }
    let report = match check_open311(&hall(&app), &form) {
        Ok(report) => report,
        Err(message) => {
            app.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::BAD_REQUEST, &message);
        }
    };
    let window = app.home.config.window.clone();
    match register_report(&app, &window, report).await {
        Ok((reg_no, code, case_id)) => Json(json!([{
            "service_request_id": reg_no.to_string(),
            "token": case_id,
            "service_notice": format!("已登记，登记编号 {reg_no}，查询码 {}，请妥善保存。", code.as_str()),
            "account_id": Value::Null,
        }]))
        .into_response(),
        Err(ReportError::Command(refused)) => error(StatusCode::BAD_REQUEST, &super::page::command_error_zh(&refused)),
        Err(other) => {
            tracing::error!(error = %other, "open311 request not stored");
            error(StatusCode::SERVICE_UNAVAILABLE, "暂时无法保存，请稍后再试")
        }
    }
}

/// One request as Open311 shows it, from the public view only.
fn request_json(app: &App, view: &CaseView, hall: &Hall) -> Value {
    let public = view.public();
    // The first published image (issue 16 §4): a PDF is no `media_url` (Open311 clients show it as a picture).
    let media_url = public
        .materials
        .iter()
        .find(|material| material.media != zhaowo_crdt::materials::MaterialType::Pdf)
        .map(|material| super::materials::public_url(app, view.case_id.as_str(), &material.id));
    let service_name = hall.categories.get(&public.category).map_or(public.category.clone(), |c| c.name.clone());
    let agency = public.lead_unit.as_ref().map(|unit| hall.units.get(unit).map_or(unit.clone(), |u| u.name.clone()));
    json!({
        "service_request_id": public.reg_no.to_string(),
        "status": if public.open { "open" } else { "closed" },
        "status_notes": public.replies.last().map(|reply| reply.text.clone()),
        "service_name": service_name,
        "service_code": public.category,
        "description": public.summary,
        "agency_responsible": agency,
        "service_notice": public.status.label(),
        "requested_datetime": format_rfc3339(public.registered_at_ms),
        "updated_datetime": format_rfc3339(public.updated_at_ms),
        "expected_datetime": public.expected_ms.map(format_rfc3339),
        "address": Value::Null,
        "address_id": Value::Null,
        "zipcode": Value::Null,
        "lat": Value::Null,
        "long": Value::Null,
        "media_url": media_url,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RequestsQuery {
    service_request_id: Option<String>,
    service_code: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    status: Option<String>,
}

/// The date of a W3C datetime (`2026-11-01T00:00:00+08:00` or `2026-11-01`): the lists filter by day.
fn parse_day(text: &str) -> Option<Date> {
    Date::parse(text.get(..10)?)
}

async fn view_of_reg_no(app: &App, text: &str) -> Result<Option<CaseView>, Response> {
    let Some(reg_no) = RegNo::parse(text.trim()) else { return Ok(None) };
    match super::cases::find_reg_no(&app.store, &reg_no).await {
        Ok(Some(case_id)) => match app.store.case_view(&case_id).await {
            Ok(view) => Ok(Some(view)),
            Err(_) => Err(error(StatusCode::SERVICE_UNAVAILABLE, "暂时无法读取数据")),
        },
        Ok(None) => Ok(None),
        Err(_) => Err(error(StatusCode::SERVICE_UNAVAILABLE, "暂时无法读取数据")),
    }
}

async fn requests(
    State(app): State<App>,
    query: Result<Query<RequestsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else { return error(StatusCode::BAD_REQUEST, "查询参数格式不正确") };
    let hall = hall(&app);
    if let Some(ids) = &query.service_request_id {
        let ids: Vec<&str> = ids.split(',').filter(|id| !id.trim().is_empty()).collect();
        if ids.len() > super::limits::OPEN311_REQUESTS_MAX {
            return error(StatusCode::BAD_REQUEST, "service_request_id 过多");
        }
        let mut list = Vec::new();
        for id in ids {
            match view_of_reg_no(&app, id).await {
                Ok(Some(view)) if view.open311_public() => list.push(request_json(&app, &view, &hall)),
                Ok(_) => {}
                Err(response) => return response,
            }
        }
        return Json(list).into_response();
    }
    let status_open = match query.status.as_deref() {
        None | Some("") => None,
        Some("open") => Some(true),
        Some("closed") => Some(false),
        Some(_) => return error(StatusCode::BAD_REQUEST, "status 只能是 open 或 closed"),
    };
    if let Some(code) = query.service_code.as_deref().filter(|code| !code.is_empty())
        && !hall.categories.contains_key(code)
    {
        return error(StatusCode::BAD_REQUEST, "service_code 不存在");
    }
    let now = crate::home::now_ms();
    let day = |text: &Option<String>| match text.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => parse_day(text).map(Some).ok_or(()),
    };
    let (Ok(start), Ok(end)) = (day(&query.start_date), day(&query.end_date)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "start_date / end_date 须为 W3C 日期时间（如 2026-11-01T00:00:00+08:00）",
        );
    };
    // The spec's default window: the last 90 days.
    let from_ms = start.map_or(now - 90 * zhaowo_crdt::time::DAY_MS, |d| d.at_minute_ms(0));
    let to_ms = end.map(|d| d.add_days(1).at_minute_ms(0));
    let register_query = crate::store::RegisterQuery {
        category: query.service_code.clone().filter(|code| !code.is_empty()),
        registered_from_ms: Some(from_ms),
        registered_to_ms: to_ms,
        limit: crate::store::PAGE_ROWS_MAX,
        ..crate::store::RegisterQuery::default()
    };
    let page = match app.store.register_page(register_query).await {
        Ok(page) => page,
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "暂时无法读取数据"),
    };
    let mut list = Vec::new();
    for row in page.rows {
        let open = Status::parse(&row.status).is_none_or(Status::is_open);
        if status_open.is_some_and(|wanted| wanted != open) {
            continue;
        }
        if list.len() >= super::limits::OPEN311_REQUESTS_MAX {
            break;
        }
        match app.store.case_view(&row.case_id).await {
            Ok(view) if view.open311_public() => list.push(request_json(&app, &view, &hall)),
            _ => continue,
        }
    }
    Json(list).into_response()
}

async fn request(State(app): State<App>, Path(file): Path<String>) -> Response {
    let id = match json_file(&file) {
        Ok(id) => id,
        Err(response) => return response,
    };
    match view_of_reg_no(&app, id).await {
        Ok(Some(view)) if view.open311_public() => {
            Json(json!([request_json(&app, &view, &hall(&app))])).into_response()
        }
        // A case that is not public answers as if it did not exist: a 403 would confirm the number.
        Ok(_) => error(StatusCode::NOT_FOUND, "service_request_id 不存在"),
        Err(response) => response,
    }
}

async fn token(State(app): State<App>, Path(file): Path<String>) -> Response {
    let token = match json_file(&file) {
        Ok(token) => token,
        Err(response) => return response,
    };
    if zhaowo_crdt::CaseId::parse(token).is_none() {
        return error(StatusCode::NOT_FOUND, "token 不存在");
    }
    match app.store.case_view(token).await {
        // The token (the case id, returned only to the client that posted) resolves to the number even for a case
        // that is not public: it reveals nothing else.
        Ok(view) => Json(json!([{ "service_request_id": view.reg_no.to_string(), "token": token }])).into_response(),
        Err(crate::store::ReadError::UnknownCase(_)) => error(StatusCode::NOT_FOUND, "token 不存在"),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "暂时无法读取数据"),
    }
}
