//! The desk's other pages: the overdue list, supervision statistics with a monthly chart, conflicts to review, peers
//! and sync status, and printable window QR codes.

use super::book::{label_of, rows_table};
use super::case_page::conflict_item;
use super::{desk_page, hall, session, to_login};
use crate::http::App;
use crate::http::citizen::store_unavailable;
use crate::http::page::{self};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, PreEscaped, html};
use zhaowo_crdt::model::Status;
use zhaowo_crdt::time::Date;

pub(super) async fn overdue(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let now = crate::home::now_ms();
    let rows = match app.store.overdue(now, crate::store::PAGE_ROWS_MAX).await {
        Ok(rows) => rows,
        Err(error) => return store_unavailable(&error),
    };
    // 差评 tasks past their due date (issue 15 §2): among the badly rated cases, those whose task is late.
    let rated = match app.store.badly_rated(crate::store::PAGE_ROWS_MAX).await {
        Ok(rows) => rows,
        Err(error) => return store_unavailable(&error),
    };
    let mut late_reviews = Vec::new();
    for row in rated {
        match app.store.case_view(&row.case_id).await {
            Ok(view) => {
                if let Some(task) = view.bad_reviews.iter().find(|task| task.overdue(now)) {
                    late_reviews.push((row.case_id.clone(), view.reg_no.to_string(), task.clone()));
                }
            }
            Err(error) => return store_unavailable(&error),
        }
    }
    let body = html! {
        h1 { "超期清单（" (rows.len()) " 件）" }
        p.hint { "按超期时长排序，最久的在前。" }
        (rows_table(&app, &rows, now))
        h2 id="late-bad-reviews" { "差评整改超期（" (late_reviews.len()) " 件）" }
        @if late_reviews.is_empty() {
            p.hint { "没有超期的差评整改任务。" }
        } @else {
            div.scroll { table {
                thead { tr { th { "登记编号" } th { "差评" } th { "阶段" } th { "反馈时限" } } }
                tbody { @for (case_id, reg_no, task) in &late_reviews {
                    tr {
                        td { a href={ "/desk/case/" (case_id) "#rating" } { (reg_no) } }
                        td { (task.level.label()) }
                        td { (task.stage_zh()) }
                        td { (page::minute(task.due_ms)) " " span.tag.red { "超期" } }
                    }
                } }
            } }
        }
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

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct StatsQuery {
    /// First and last day of registration (YYYY-MM-DD); default: this year.
    from: String,
    to: String,
    /// A grouping (`GroupBy::code`); default: month.
    by: String,
}

/// The period and grouping of a statistics request, or the zh-CN reason it is refused.
fn stats_period(query: &StatsQuery, today: Date) -> Result<(Date, Date, zhaowo_crdt::kpi::GroupBy), String> {
    let day = |text: &str, default: Date| -> Result<Date, String> {
        if text.is_empty() {
            return Ok(default);
        }
        Date::parse(text).ok_or_else(|| format!("日期“{text}”无效：请按 年-月-日 填写，如 2026-11-30。"))
    };
    let from = day(&query.from, Date::new(today.year, 1, 1).unwrap_or(today))?;
    let to = day(&query.to, today)?;
    if from > to {
        return Err("开始日期晚于结束日期。".to_owned());
    }
    let by = match query.by.as_str() {
        "" => zhaowo_crdt::kpi::GroupBy::Month,
        code => zhaowo_crdt::kpi::GroupBy::parse(code).ok_or_else(|| {
            let valid: Vec<&str> = zhaowo_crdt::kpi::GroupBy::ALL.iter().map(|g| g.zh()).collect();
            format!("分组方式无效：可选 {}。", valid.join("、"))
        })?,
    };
    Ok((from, to, by))
}

pub(super) async fn stats(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    use zhaowo_crdt::kpi::{GroupBy, Kpi};
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let now = crate::home::now_ms();
    let today = Date::of_ms(now);
    let query = query.map(|axum::extract::Query(q)| q).unwrap_or_default();
    let (from, to, by) = match stats_period(&query, today) {
        Ok(period) => period,
        Err(reason) => {
            let body = html! { div.error { (reason) } a.button href="/desk/stats" { "返回督查统计" } };
            return desk_page(&session, StatusCode::BAD_REQUEST, "督查统计", body);
        }
    };
    let the_hall = hall(&app);
    let report = match crate::report::build(&app.store, &the_hall, from, to, &[by]).await {
        Ok(report) => report,
        Err(error) => return store_unavailable(&error),
    };
    let month = format!("{:04}-{:02}", today.year, today.month);
    let kpi_section = html! {
        h2 #kpis { "督查指标（" (from) " 至 " (to) "，按登记时间）" }
        form.inline method="get" action="/desk/stats" {
            label { "从 " input type="date" name="from" value=(from.to_string()); }
            label { " 至 " input type="date" name="to" value=(to.to_string()); }
            label { " 分组 " select name="by" {
                @for group in GroupBy::ALL { option value=(group.code()) selected[*group == by] { (group.zh()) } }
            } }
            " " button type="submit" { "查看" }
        }
        (report.summary_table())
        h3 { "按" (by.zh()) }
        (report.group_table(by, &[Kpi::Registered, Kpi::AnswerRate, Kpi::OnTimeCloseRate, Kpi::SatisfactionRate, Kpi::BadRate, Kpi::CallbackRate, Kpi::ReturnRate]))
        p {
            "月度通报：" a #report-html href={ "/desk/report?month=" (month) } { "本月（可打印）" }
            "　" a #report-xlsx href={ "/desk/report.xlsx?month=" (month) } { "本月 xlsx" }
            "　其他月份：在地址中改 month=年-月，或用 zhaowo stats --month 年-月 --out 通报.xlsx"
        }
    };
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
    let by_status = crate::http::metrics::cases_by_status(&app).await.unwrap_or_default();
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
            // 按期办结率, 满意率 and the other figures of the 督查科 are in the table below, with their formulas (one owner:
            // `zhaowo_crdt::kpi`), for the period chosen there.
        }
        h2 { "近 12 个月" }
        (monthly_chart(&months))
        (kpi_section)
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

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct ReportQuery {
    /// `YYYY-MM`; default: this month.
    month: String,
}

/// 月度通报: every figure of one month's cases by every grouping, as a printable page (`/desk/report`) or an xlsx
/// workbook (`/desk/report.xlsx`), for the 督查科 to hand upward.
pub(super) async fn report_page(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    report(app, headers, query, false).await
}

pub(super) async fn report_xlsx(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    report(app, headers, query, true).await
}

async fn report(
    app: App,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
    xlsx: bool,
) -> Response {
    use axum::response::IntoResponse;
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let today = Date::of_ms(crate::home::now_ms());
    let query = query.map(|axum::extract::Query(q)| q).unwrap_or_default();
    let month = if query.month.is_empty() { format!("{:04}-{:02}", today.year, today.month) } else { query.month };
    let Some((from, to)) = crate::report::month_range(&month) else {
        let body = html! { div.error { "月份“" (month) "”无效：请按 年-月 填写，如 2026-11。" } a.button href="/desk/stats" { "返回督查统计" } };
        return desk_page(&session, StatusCode::BAD_REQUEST, "月度通报", body);
    };
    let report = match crate::report::build(&app.store, &hall(&app), from, to, zhaowo_crdt::kpi::GroupBy::ALL).await {
        Ok(report) => report,
        Err(error) => return store_unavailable(&error),
    };
    if !xlsx {
        return (StatusCode::OK, axum::response::Html(report.printable().into_string())).into_response();
    }
    match report.xlsx() {
        Ok(bytes) => (
            StatusCode::OK,
            [
                (
                    axum::http::header::CONTENT_TYPE,
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".to_owned(),
                ),
                (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"report-{month}.xlsx\"")),
            ],
            bytes,
        )
            .into_response(),
        Err(error) => store_unavailable(&error),
    }
}

pub(super) async fn conflicts(State(app): State<App>, headers: HeaderMap) -> Response {
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

pub(super) async fn peers(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let config = &app.home.config;
    let counts = app.store.counts().await.ok();
    let sync = app.options.sync.as_ref();
    let peers = sync.map(|sync| sync.peers()).unwrap_or_default();
    let totals = sync.map(|sync| sync.counts());
    // The hall document as sync has brought it to this node: the live copy, as sign-in reads it.
    let (hall_edits, hall_accounts) = match &app.options.live {
        Some(live) => {
            let view = live.hall();
            (view.history.clone(), Some(view.hall.accounts.len()))
        }
        None => {
            let fresh_home = crate::home::Home::open(&app.home.dir).ok();
            let edits = fresh_home.as_ref().map(crate::home::Home::hall_history).unwrap_or_default();
            (edits, fresh_home.as_ref().and_then(|home| home.hall().ok()).map(|hall| hall.accounts.len()))
        }
    };
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
                dt { "跳过的文档（吊销节点的修改或文档损坏）" } dd { (t.refused_changes) }
                dt { "已获取的材料文件" } dd { (t.transfers.files_received) " 个，" (t.transfers.bytes_received / 1024) " KB" }
                dt { "拒收的材料传输（内容不符、超长或过慢）" } dd { (t.transfers.rejected_transfers) }
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
                td { (peer.rejected_changes + peer.refused_changes + peer.rejected_transfers) }
                td { @if let Some(refusal) = peer.refusal { (refusal.label()) "（" (ago(peer.refused_ms)) "）" } @else { (peer.last_error.clone().unwrap_or_default()) } }
            } }
        } }
        @if peers.is_empty() {
            p.hint { "尚无节点连接。" @if !config.peers.is_empty() { "配置的节点：" @for p in &config.peers { (p) " " } } }
        }
    };
    desk_page(&session, StatusCode::OK, "节点与同步", body)
}

pub(super) async fn qr_codes(State(app): State<App>, headers: HeaderMap) -> Response {
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
