//! `/metrics` in the OpenMetrics text format (`prometheus-client`): cases by status, overdue cases, cases with open
//! conflicts, repeated registration numbers and quarantined documents (all counted by the store, not by paging the
//! register book), the HTTP guards' counters, and (on a syncing node) peers connected, sync lag and changes rejected.

use super::App;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// The OpenMetrics text media type `prometheus-client` writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn routes() -> Router<App> {
    Router::new().route("/metrics", get(metrics))
}

/// The register book by status code, every status present, from the store's count.
pub async fn cases_by_status(app: &App) -> Result<BTreeMap<String, u64>, crate::store::ReadError> {
    app.store.status_counts().await
}

type Labels = Vec<(String, String)>;

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let metric = Gauge::<i64>::default();
    metric.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, metric);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let metric = Counter::<u64>::default();
    metric.inc_by(value);
    registry.register(name, help, metric);
}

fn labelled(registry: &mut Registry, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, u64)>) {
    let family = Family::<Labels, Gauge>::default();
    for (labels, value) in rows {
        family.get_or_create(&labels).set(i64::try_from(value).unwrap_or(i64::MAX));
    }
    registry.register(name, help, family);
}

async fn metrics(State(app): State<App>) -> Response {
    let now = crate::home::now_ms();
    let store = &app.store;
    let (counts, overdue, conflicts, repeated, quarantined) = match (
        store.status_counts().await,
        store.overdue_count(now).await,
        store.conflicts(1).await,
        store.repeated_numbers().await,
        store.quarantined().await,
    ) {
        (Ok(counts), Ok(overdue), Ok(conflicts), Ok(repeated), Ok(quarantined)) => {
            (counts, overdue, conflicts, repeated, quarantined)
        }
        _ => return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response(),
    };
    let mut registry = Registry::default();
    labelled(
        &mut registry,
        "zhaowo_cases",
        "Cases in the register book by status",
        counts.into_iter().map(|(status, count)| (vec![("status".to_owned(), status)], count)),
    );
    gauge(&mut registry, "zhaowo_cases_overdue", "Open cases past their due date", overdue);
    gauge(&mut registry, "zhaowo_cases_conflicted", "Cases with open conflicts for the 督查科", conflicts.cases);
    gauge(
        &mut registry,
        "zhaowo_register_repeated_numbers",
        "Registration numbers held by more than one case (arrived by sync or from files)",
        repeated.len() as u64,
    );
    gauge(
        &mut registry,
        "zhaowo_store_quarantined_docs",
        "Documents with damaged rows this node does not send to peers",
        quarantined.count,
    );
    labelled(
        &mut registry,
        "zhaowo_store_quarantined",
        "A quarantined document, by case id (the first ones listed)",
        quarantined.docs.into_iter().map(|doc| (vec![("case_id".to_owned(), doc.case_id)], 1)),
    );
    if let Ok(outbox) = store.outbox_counts().await {
        let states =
            [crate::store::OutboxState::Queued, crate::store::OutboxState::Sent, crate::store::OutboxState::Failed];
        labelled(
            &mut registry,
            "zhaowo_sms_outbox",
            "SMS messages in this node's outbox by state (issue 15: queued, sent, failed)",
            states
                .into_iter()
                .map(|state| (vec![("state".to_owned(), state.code().to_owned())], outbox[state as usize])),
        );
    }
    // Materials (issue 16): what the cases name, one aggregate over the `blobs` projection. (Which of them are not on
    // this node yet needs the folder listed: `zhaowo status` and `verify` say it.)
    if let Ok((files, bytes)) = store.blob_totals().await {
        gauge(&mut registry, "zhaowo_materials_named_files", "Material files (and thumbnails) live cases name", files);
        gauge(
            &mut registry,
            "zhaowo_materials_named_bytes",
            "Sealed bytes of the material files live cases name",
            bytes,
        );
    }
    if let Some(coverage) = super::hall_page::calendar_coverage(&app) {
        gauge(
            &mut registry,
            "zhaowo_calendar_days_left",
            "Days until the last day the holiday calendar covers (0: today is not covered and due dates count Monday to Friday only)",
            u64::try_from(coverage.days_left).unwrap_or(0),
        );
        gauge(
            &mut registry,
            "zhaowo_calendar_warning",
            &format!(
                "1 when the holiday calendar ends within {} days or does not cover today",
                zhaowo_crdt::calendar::COVERAGE_WARN_DAYS
            ),
            u64::from(coverage.warn),
        );
    }
    let counters = &app.counters;
    let rows = [
        ("zhaowo_http_citizen_reports", "Citizen reports stored", &counters.citizen_reports),
        ("zhaowo_http_citizen_lookups", "Citizen progress lookups", &counters.citizen_lookups),
        ("zhaowo_http_lookups_failed", "Lookups with a wrong number or query code", &counters.lookups_failed),
        ("zhaowo_http_rate_limited", "Requests refused by a rate limit", &counters.rate_limited),
        ("zhaowo_http_csrf_refused", "Form posts refused for a missing or wrong CSRF token", &counters.csrf_refused),
        ("zhaowo_http_bad_requests", "Requests refused as malformed or too large", &counters.bad_requests),
        ("zhaowo_http_open311_posts", "Open311 POST requests.json calls", &counters.open311_requests),
        (
            "zhaowo_http_material_uploads",
            "Material files stored from the desk and citizen pages",
            &counters.material_uploads,
        ),
    ];
    for (name, help, value) in rows {
        // Counters get the `_total` suffix from the encoder.
        counter(&mut registry, name, help, value.load(Ordering::Relaxed));
    }
    if let Some(sync) = &app.options.sync {
        let counts = sync.counts();
        gauge(&mut registry, "zhaowo_sync_peers_connected", "Peers with a live sync session", counts.peers_connected);
        gauge(
            &mut registry,
            "zhaowo_sync_lag_docs",
            "Our documents the slowest connected peer has not acknowledged yet",
            counts.max_docs_behind,
        );
        counter(
            &mut registry,
            "zhaowo_sync_changes_rejected",
            "Forged, unsigned or non-member changes refused (each dropped the peer)",
            counts.rejected_changes,
        );
        counter(
            &mut registry,
            "zhaowo_sync_changes_refused",
            "Documents refused one by one, the peer kept: a revoked member's later changes, or a damaged whole document",
            counts.refused_changes,
        );
        counter(&mut registry, "zhaowo_sync_sessions", "Sync sessions started", counts.sessions);
        counter(
            &mut registry,
            "zhaowo_materials_files_received",
            "Material files fetched from peers, verified and stored",
            counts.transfers.files_received,
        );
        counter(
            &mut registry,
            "zhaowo_materials_bytes_received",
            "Sealed material bytes read from peers' blob streams",
            counts.transfers.bytes_received,
        );
        counter(
            &mut registry,
            "zhaowo_materials_transfers_rejected",
            "Material transfers refused as hostile (wrong bytes, oversize, too slow; each dropped the peer)",
            counts.transfers.rejected_transfers,
        );
        counter(
            &mut registry,
            "zhaowo_sync_sessions_failed",
            "Sync sessions that ended in an error",
            counts.sessions_failed,
        );
        labelled(
            &mut registry,
            "zhaowo_sync_peer_docs_behind",
            "Our documents each peer has not acknowledged yet",
            sync.peers().into_iter().map(|peer| {
                let labels = vec![
                    ("peer".to_owned(), peer.node_id[..peer.node_id.len().min(16)].to_owned()),
                    ("window".to_owned(), peer.window.clone()),
                ];
                (labels, peer.docs_behind_peer)
            }),
        );
    }
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::error!(%error, "cannot encode the metrics");
        return (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response();
    }
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}
