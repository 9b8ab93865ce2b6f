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
    };
    desk_page(&session, StatusCode::OK, "登记簿", body)
}
