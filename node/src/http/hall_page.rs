//! The hall's configuration on the desk, read-only for every signed-in role (`/desk/hall`): windows, units, routing,
//! time limits, working hours and the holiday calendar of the covered years with its 调休 days; and the calendar's
//! coverage, as a notice in the desk header of 督查科 and admins and as gauges on `/metrics`.
//!
//! The hall is read afresh from `hall.automerge` (what sync and the admin's `zhaowo hall import` wrote), like sign-in:
//! an imported configuration shows without restarting the node. An unreadable hall is said, never replaced by another.

use super::App;
use super::citizen::store_unavailable;
use super::desk::{desk_page, session, to_login};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use std::collections::BTreeSet;
use zhaowo_crdt::Hall;
use zhaowo_crdt::hall::{Calendar, Span};
use zhaowo_crdt::model::{Nature, Priority, Role};
use zhaowo_crdt::time::Date;

/// The hall as this node's data directory holds it now.
fn fresh_hall(app: &App) -> Result<Hall, crate::home::HomeError> {
    // A running node's live configuration (what sync and the admin's CLI brought); routers built without a node read
    // the file.
    if let Some(live) = &app.options.live {
        return Ok(live.hall().hall.clone());
    }
    // A read-only load: the actor is never used to write.
    let actor = automerge::ActorId::from(vec![0; 16]);
    match crate::home::Home::read_signed_hall(&app.home.dir, actor)? {
        Some(signed) => Ok(signed.doc.hall()?),
        None => Err(crate::home::HomeError::NoHall),
    }
}

fn today() -> Date {
    Date::of_ms(crate::home::now_ms())
}

/// The desk header's notice for 督查科 and admins: the calendar's coverage warning, or that the hall is unreadable.
pub(super) fn header_notice(app: &App, role: Role) -> Option<String> {
    if !matches!(role, Role::Supervision | Role::Admin) {
        return None;
    }
    match fresh_hall(app) {
        Ok(hall) => hall.calendar.coverage(today()).warning_zh(),
        Err(error) => {
            tracing::error!(%error, "the hall document is unreadable");
            Some("无法读取大厅配置，请管理员检查本机数据目录（zhaowo status）。".to_owned())
        }
    }
}

/// `zhaowo_calendar_days_left` and `zhaowo_calendar_warning` in the Prometheus text format (nothing when the hall is
/// unreadable: `/metrics` then lacks the gauges, and the log says why).
/// The calendar's coverage today for `/metrics` (`None`, logged, when the hall document is unreadable).
pub(super) fn calendar_coverage(app: &App) -> Option<zhaowo_crdt::calendar::Coverage> {
    match fresh_hall(app) {
        Ok(hall) => Some(hall.calendar.coverage(today())),
        Err(error) => {
            tracing::error!(%error, "the hall document is unreadable: no calendar gauges");
            None
        }
    }
}

fn span_zh(span: Span) -> String {
    match span {
        Span::WorkingDays(0) => "当日".to_owned(),
        Span::WorkingDays(days) => format!("{days} 个工作日"),
        Span::Hours(hours) => format!("{hours} 小时"),
    }
}

/// Consecutive days as `M月D日` or `M月D日—M月D日`.
fn day_ranges(days: &BTreeSet<Date>) -> Vec<String> {
    let mut out = Vec::new();
    let mut iter = days.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek().is_some_and(|next| *next == last.add_days(1)) {
            last = iter.next().unwrap_or(last);
        }
        if first == last {
            out.push(format!("{}月{}日", first.month, first.day));
        } else {
            let days = last.to_days() - first.to_days() + 1;
            out.push(format!("{}月{}日—{}月{}日（{days}天）", first.month, first.day, last.month, last.day));
        }
    }
    out
}

const WEEKDAYS_ZH: [&str; 7] = ["周一", "周二", "周三", "周四", "周五", "周六", "周日"];

fn calendar_markup(calendar: &Calendar) -> Markup {
    let coverage = calendar.coverage(today());
    html! {
        @match coverage.last_covered_day {
            Some(last) => {
                p #calendar-coverage { "节假日日历覆盖至 " (last.to_string()) "（还剩 " (coverage.days_left) " 天）。" }
            }
            None => {
                p #calendar-coverage { "节假日日历未包含 " (coverage.today.year) " 年：办理时限只按周一至周五计算。" }
            }
        }
        @for year in calendar.covered_years() {
            @let holidays: BTreeSet<Date> = calendar.holidays.iter().copied().filter(|d| d.year == year).collect();
            @let make_up: Vec<&Date> = calendar.make_up_workdays.iter().filter(|d| d.year == year).collect();
            h3 { (year) " 年" }
            table {
                tr { th { "放假" } td { (day_ranges(&holidays).join("；")) } }
                tr {
                    th { "调休上班" }
                    td {
                        @if make_up.is_empty() { "无" }
                        @for (i, day) in make_up.iter().enumerate() {
                            @if i > 0 { "；" }
                            (day.month) "月" (day.day) "日（" (WEEKDAYS_ZH[usize::from(day.weekday() - 1)]) "）"
                        }
                    }
                }
            }
        }
    }
}

/// `GET /desk/hall`: the configuration, read-only.
pub(super) async fn hall_page(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let hall = match fresh_hall(&app) {
        Ok(hall) => hall,
        Err(error) => return store_unavailable(&error),
    };
    let unit_name = |code: &str| hall.units.get(code).map_or_else(|| code.to_owned(), |unit| unit.name.clone());
    let minute = hall.calendar.workday_end_minute;
    let body = html! {
        h1 { "大厅配置" }
        p.hint { "只读。管理员用 zhaowo hall export 导出、编辑后以 zhaowo hall import 导入，各节点自动同步。" }
        p { "大厅：" strong #hall-name { (hall.name) } "；每日下班时间 " (format!("{:02}:{:02}", minute / 60, minute % 60)) "（按工作日计算的时限到当日下班为止）。" }
        p #hall-kpi { "个人信息保存期限：办结后 " (hall.retention_days) " 天；满意率统计：" (if hall.satisfaction_counts_basic { "基本满意计入满意" } else { "基本满意不计入满意" }) "。" }
        h2 { "窗口" }
        table #windows {
            tr { th { "代码" } th { "名称" } th { "楼层" } }
            @for (code, window) in &hall.windows { tr { td { (code) } td { (window.name) } td { (window.floor) } } }
        }
        h2 { "承办单位" }
        table #units {
            tr { th { "代码" } th { "名称" } }
            @for (code, unit) in &hall.units { tr { td { (code) } td { (unit.name) } } }
        }
        h2 { "诉求类别与分派" }
        table #routing {
            tr { th { "代码" } th { "类别" } th { "主办单位" } th { "协办单位" } }
            @for (code, category) in &hall.categories {
                tr {
                    td { (code) }
                    td { (category.name) }
                    td { (unit_name(&category.lead_unit)) }
                    td { (category.co_units.iter().map(|u| unit_name(u)).collect::<Vec<_>>().join("、")) }
                }
            }
        }
        h2 { "办理时限" }
        table #time-limits {
            tr { th { "诉求性质" } @for priority in Priority::ALL { th { (priority.label()) "：首次响应 / 办结" } } }
            @for nature in Nature::ALL {
                tr {
                    td { (nature.label()) }
                    @for priority in Priority::ALL {
                        td {
                            @match hall.time_limit(*nature, *priority) {
                                Some(rule) => { (span_zh(rule.response)) " / " (span_zh(rule.solve)) }
                                None => { "—" }
                            }
                        }
                    }
                }
            }
        }
        h2 { "节假日与调休" }
        (calendar_markup(&hall.calendar))
    };
    desk_page(&session, StatusCode::OK, "大厅配置", body)
}
