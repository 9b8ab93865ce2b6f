//! The register book (登记簿): the desk's home page, filters, full-text search and paging over the store's register.

use super::{desk_page, hall, session, to_login};
use crate::http::citizen::{clean, store_unavailable};
use crate::http::page::minute;
use crate::http::{App, limits};
use crate::store::{CaseRow, PageCursor, RegisterQuery};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use zhaowo_crdt::model::{Nature, Status};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct BookQuery {
    status: String,
    category: String,
    nature: String,
    window: String,
    q: String,
    overdue: String,
    after: String,
}

pub(super) fn label_of<T: Copy>(parse: fn(&str) -> Option<T>, label: fn(T) -> &'static str, code: &str) -> String {
    parse(code).map_or(code.to_owned(), |value| label(value).to_owned())
}

pub(super) fn rows_table(app: &App, rows: &[CaseRow], now: i64) -> Markup {
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

pub(super) async fn register_book(
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
        p { a.button.secondary href="/desk/export.xlsx" { "导出本年度登记簿（xlsx，个人信息已脱敏）" } }
    };
    desk_page(&session, StatusCode::OK, "登记簿", body)
}

/// Cases in one desk export: a year of a large hall (the article's hall registers a few thousand a year) fits many
/// times over, and the workbook of 20,000 rows stays a few MB built in memory; a larger register is exported per year
/// or from the CLI (`zhaowo export`, which streams every case).
pub const DESK_EXPORT_ROWS_MAX: usize = 20_000;
/// The first year a desk export accepts: no hall registered cases in zhaowo before it; an earlier or absurd year is a
/// typo, answered with a page instead of an empty workbook.
pub const DESK_EXPORT_YEAR_MIN: i32 = 2000;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ExportQuery {
    /// The year of registration (default: this year).
    year: String,
}

/// 导出登记簿: the register of one year as xlsx, personal data masked (the desk never exports it in full; an
/// unmasked export is the admin's CLI, which records a reveal in every case).
pub(super) async fn export_xlsx(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    use axum::response::IntoResponse;
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let this_year = zhaowo_crdt::time::Date::of_ms(crate::home::now_ms()).year;
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let year = if query.year.is_empty() { Some(this_year) } else { query.year.parse::<i32>().ok() };
    let Some(bounds) = year.filter(|y| (DESK_EXPORT_YEAR_MIN..=this_year + 1).contains(y)).and_then(|year| {
        let from = zhaowo_crdt::time::Date::new(year, 1, 1)?.at_minute_ms(0);
        let to = zhaowo_crdt::time::Date::new(year + 1, 1, 1)?.at_minute_ms(0);
        Some((year, from, to))
    }) else {
        return desk_page(
            &session,
            StatusCode::BAD_REQUEST,
            "导出登记簿",
            html! {
                div.error { "年份无效：请填写 " (DESK_EXPORT_YEAR_MIN) " 至 " (this_year + 1) " 之间的年份。" }
                a.button href="/desk" { "返回登记簿" }
            },
        );
    };
    let (year, from, to) = bounds;
    let mut rows = Vec::new();
    let mut register_query = RegisterQuery {
        registered_from_ms: Some(from),
        registered_to_ms: Some(to),
        limit: crate::store::PAGE_ROWS_MAX,
        ..RegisterQuery::default()
    };
    loop {
        let page = match app.store.register_page(register_query.clone()).await {
            Ok(page) => page,
            Err(error) => return store_unavailable(&error),
        };
        for row in &page.rows {
            if rows.len() == DESK_EXPORT_ROWS_MAX {
                return desk_page(
                    &session,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "导出登记簿",
                    html! {
                        div.error { (year) " 年登记超过 " (DESK_EXPORT_ROWS_MAX) " 件，请由管理员使用命令行 zhaowo export 导出。" }
                        a.button href="/desk" { "返回登记簿" }
                    },
                );
            }
            match app.store.case_view(&row.case_id).await {
                // The view holds the masked record only: nothing personal leaves in full.
                Ok(view) => rows.push(crate::export::export_row(&view, None)),
                Err(error) => return store_unavailable(&error),
            }
        }
        match page.next {
            Some(next) => register_query.after = Some(next),
            None => break,
        }
    }
    let bytes = match crate::export::xlsx_bytes(&rows) {
        Ok(bytes) => bytes,
        Err(error) => return store_unavailable(&error),
    };
    tracing::info!(target: "zhaowo::_events::desk", staff = session.display_name.as_str(), year, cases = rows.len(), "register exported (masked)");
    (
        StatusCode::OK,
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".to_owned(),
            ),
            (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"register-{year}.xlsx\"")),
        ],
        bytes,
    )
        .into_response()
}
