//! `/metrics` in the Prometheus text format: cases by status, overdue cases, the HTTP guards' counters, and (on a
//! syncing node) peers connected, sync lag and changes rejected.

use super::App;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use zhaowo_crdt::model::Status;

pub fn routes() -> Router<App> {
    Router::new().route("/metrics", get(metrics))
}

/// Counts the register book by status, page by page (a hall has ~154 cases a year; bounded by
/// [`super::limits::METRICS_CASES_MAX`]).
pub async fn cases_by_status(app: &App) -> Result<BTreeMap<String, u64>, crate::store::ReadError> {
    let mut counts: BTreeMap<String, u64> = Status::ALL.iter().map(|s| (s.code().to_owned(), 0)).collect();
    let mut query =
        crate::store::RegisterQuery { limit: crate::store::PAGE_ROWS_MAX, ..crate::store::RegisterQuery::default() };
    let mut seen = 0;
    loop {
        let page = app.store.register_page(query.clone()).await?;
        seen += page.rows.len();
        for row in &page.rows {
            *counts.entry(row.status.clone()).or_default() += 1;
        }
        match page.next {
            Some(next) if seen < super::limits::METRICS_CASES_MAX => query.after = Some(next),
            _ => return Ok(counts),
        }
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let now = crate::home::now_ms();
    let (counts, overdue) =
        match (cases_by_status(&app).await, app.store.overdue(now, crate::store::PAGE_ROWS_MAX).await) {
            (Ok(counts), Ok(overdue)) => (counts, overdue.len()),
            _ => return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response(),
        };
    let mut text = String::new();
    let _ = writeln!(text, "# HELP zhaowo_cases Cases in the register book by status.");
    let _ = writeln!(text, "# TYPE zhaowo_cases gauge");
    for (status, count) in &counts {
        let _ = writeln!(text, "zhaowo_cases{{status=\"{status}\"}} {count}");
    }
    let _ = writeln!(
        text,
        "# HELP zhaowo_cases_overdue Open cases past their due date (capped at {}).",
        crate::store::PAGE_ROWS_MAX
    );
    let _ = writeln!(text, "# TYPE zhaowo_cases_overdue gauge");
    let _ = writeln!(text, "zhaowo_cases_overdue {overdue}");
    super::hall_page::write_calendar_gauges(&mut text, &app);
    let counters = &app.counters;
    let rows = [
        ("zhaowo_http_citizen_reports_total", "Citizen reports stored.", &counters.citizen_reports),
        ("zhaowo_http_citizen_lookups_total", "Citizen progress lookups.", &counters.citizen_lookups),
        ("zhaowo_http_lookups_failed_total", "Lookups with a wrong number or query code.", &counters.lookups_failed),
        ("zhaowo_http_rate_limited_total", "Requests refused by a rate limit.", &counters.rate_limited),
        (
            "zhaowo_http_csrf_refused_total",
            "Form posts refused for a missing or wrong CSRF token.",
            &counters.csrf_refused,
        ),
        ("zhaowo_http_bad_requests_total", "Requests refused as malformed or too large.", &counters.bad_requests),
        ("zhaowo_http_open311_posts_total", "Open311 POST requests.json calls.", &counters.open311_requests),
    ];
    for (name, help, counter) in rows {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} counter");
        let _ = writeln!(text, "{name} {}", counter.load(Ordering::Relaxed));
    }
    if let Some(sync) = &app.options.sync {
        let counts = sync.counts();
        let gauges = [
            ("zhaowo_sync_peers_connected", "gauge", "Peers with a live sync session.", counts.peers_connected),
            (
                "zhaowo_sync_lag_docs",
                "gauge",
                "Our documents the slowest connected peer has not acknowledged yet.",
                counts.max_docs_behind,
            ),
            (
                "zhaowo_sync_changes_rejected_total",
                "counter",
                "Forged, unsigned or non-member changes refused (each dropped the peer).",
                counts.rejected_changes,
            ),
            (
                "zhaowo_sync_changes_refused_total",
                "counter",
                "Relayed changes by a revoked member made after its revocation, refused per document.",
                counts.refused_changes,
            ),
            ("zhaowo_sync_sessions_total", "counter", "Sync sessions started.", counts.sessions),
            (
                "zhaowo_sync_sessions_failed_total",
                "counter",
                "Sync sessions that ended in an error.",
                counts.sessions_failed,
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(text, "# HELP {name} {help}");
            let _ = writeln!(text, "# TYPE {name} {kind}");
            let _ = writeln!(text, "{name} {value}");
        }
        let _ = writeln!(text, "# HELP zhaowo_sync_peer_docs_behind Our documents each peer has not acknowledged yet.");
        let _ = writeln!(text, "# TYPE zhaowo_sync_peer_docs_behind gauge");
        for peer in sync.peers() {
            let _ = writeln!(
                text,
                "zhaowo_sync_peer_docs_behind{{peer=\"{}\",window=\"{}\"}} {}",
                &peer.node_id[..peer.node_id.len().min(16)],
                peer.window.escape_default(),
                peer.docs_behind_peer
            );
        }
    }
    let mut response = (StatusCode::OK, text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
