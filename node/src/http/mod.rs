//! The node's HTTP surfaces: the staff desk (登记簿, case pages, actions), the citizen pages (report, receipt, lookup),
//! Open311 GeoReport v2 and `/metrics`.
//!
//! Server-rendered HTML (maud escapes every interpolation), no script but the optional upload progress
//! (`/static/upload.js`): the pages work on a phone and a desktop browser, and the Content-Security-Policy allows
//! scripts from this origin only, never inline, so an injected `<script>` could not run even if escaping failed. Two listeners: the desk (everything) on loopback, the citizen pages and Open311 on the hall LAN address.
//!
//! Every handler turns bad input into a clear zh-CN page (or an Open311 error array) and stores nothing; limits are
//! named in [`limits`] with their reasons.
//!
//! Each listener runs its own accept loop (`conn`), connection caps and rate-limit tables: slow or hostile clients
//! on the public port (headers never finished, answers never read, one address opening hundreds of connections,
//! lookups from thousands of addresses) cost that listener its own budget and never the desk's.

// Handlers answer errors with a whole `Response`; boxing it in `Result<_, Response>` helpers would buy nothing.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod cases;
mod citizen;
mod conn;
mod desk;
mod guard;
mod hall_page;
mod materials;
mod metrics;
mod open311;
mod page;

use crate::home::Home;
use crate::store::Store;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Named limits of the HTTP surfaces, each with why.
pub mod limits {
    /// One request body: the citizen form's longest field is 4,000 characters of detail (12 KB of UTF-8, ~36 KB
    /// percent-encoded); 64 KiB holds every form with room and refuses absurd bodies before parsing.
    pub const BODY_BYTES_MAX: usize = 64 * 1024;
    /// Citizen reports per client address and period: a person reports one or two problems; a hall's shared Wi-Fi NAT
    /// may put a few phones behind one address.
    pub const CITIZEN_REPORTS_PER_PERIOD: u32 = 10;
    /// Lookups per client address and period: checking progress a few times a day; a 查询码 has ~40 bits, so this
    /// makes guessing hopeless.
    pub const CITIZEN_LOOKUPS_PER_PERIOD: u32 = 30;
    /// Desk sign-in attempts per client address and period (password guessing).
    pub const SIGN_IN_ATTEMPTS_PER_PERIOD: u32 = 10;
    /// The rate-limit period.
    pub const RATE_PERIOD_MS: i64 = 10 * 60 * 1000;
    /// Client addresses each rate-limit table (per listener and bucket) remembers: a hall has a few hundred phones a
    /// day. When full, the least recently seen are evicted, never new clients refused (issue 14 §2).
    pub const RATE_CLIENTS_MAX: usize = 10_000;
    /// Time for a client to send a whole request head, and the longest a kept-alive connection waits for its next
    /// one: a phone on weak hall Wi-Fi sends its headers in well under a second; 10 s allows a few retransmissions.
    /// Without it, ~20,000 connections that never finished their headers exhausted the node's descriptors.
    pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
    /// A connection on which no byte moved either way for this long is closed (a client that stops reading its
    /// answer, or trickles a body): longer than any page takes to render or any form to upload on Wi-Fi.
    pub const IDLE_TIMEOUT_MS: u64 = 60_000;
    /// Time to receive a form body once its head arrived: 64 KiB at a slow 4 KiB/s.
    pub const BODY_READ_TIMEOUT_MS: u64 = 16_000;
    /// Open connections of the public listener: ~40 phones at a time with a browser's six each; well under the
    /// default 1,024 descriptors of a process, which the desk, SQLite and QUIC need too.
    pub const PUBLIC_CONNECTIONS_MAX: usize = 256;
    /// Open connections of the desk listener (loopback: the window PC's own browser, a few tabs).
    pub const DESK_CONNECTIONS_MAX: usize = 64;
    /// Open connections from one address on the public listener: a browser opens six, a NAT of the hall's Wi-Fi
    /// may put a few phones behind one address.
    pub const CONNECTIONS_PER_ADDRESS_MAX: usize = 32;
    /// A desk session lasts a working day.
    pub const SESSION_MS: i64 = 10 * 3_600 * 1000;
    /// Live desk sessions: a hall has tens of staff.
    pub const SESSIONS_MAX: usize = 1_000;
    /// Usernames: short ASCII handles.
    pub const USERNAME_CHARS_MAX: usize = 32;
    /// Passwords: at least this long.
    pub const PASSWORD_CHARS_MIN: usize = 8;
    /// Passwords: argon2 takes any length; a bound keeps hashing cost fixed.
    pub const PASSWORD_CHARS_MAX: usize = 128;
    /// Rows of one register book page.
    pub const REGISTER_ROWS_PER_PAGE: usize = 50;
    /// Rows of an Open311 `requests.json` answer (the spec suggests at most 1,000; a hall has ~154 cases a year).
    pub const OPEN311_REQUESTS_MAX: usize = 200;
    /// Files in one desk upload: the upload parser's desk limit (a clerk scans a citizen's papers in one go).
    pub const DESK_UPLOAD_FILES_MAX: usize = zhaowo_crdt::upload::UPLOAD_FILES_MAX;
    /// The body of one desk upload: files max × `MATERIAL_BYTES_MAX` + the parser's slack for part headers and
    /// fields. Only the upload route takes it; every other route keeps `BODY_BYTES_MAX`.
    pub const DESK_UPLOAD_BODY_BYTES_MAX: usize = zhaowo_crdt::upload::UploadLimits::desk().body_bytes_max;
    /// Photos on one citizen report: the parser's citizen limit (a photo or two of the problem and a document).
    pub const CITIZEN_PHOTOS_MAX: usize = zhaowo_crdt::upload::UPLOAD_CITIZEN_FILES_MAX;
    /// The body of a citizen report with photos: photos max × `MATERIAL_BYTES_MAX` + the parser's slack. A report
    /// without photos (a url-encoded body) is still held to `BODY_BYTES_MAX`.
    pub const CITIZEN_UPLOAD_BODY_BYTES_MAX: usize = zhaowo_crdt::upload::UploadLimits::citizen().body_bytes_max;
    /// Time to receive an upload's body: 31 MiB of photos at 256 KiB/s (a phone on busy hall Wi-Fi) is two minutes;
    /// a connection on which nothing moves is closed sooner by `IDLE_TIMEOUT_MS`.
    pub const UPLOAD_READ_TIMEOUT_MS: u64 = 180_000;
    const _: () = assert!(
        DESK_UPLOAD_BODY_BYTES_MAX >= DESK_UPLOAD_FILES_MAX * zhaowo_crdt::materials::MATERIAL_BYTES_MAX
            && CITIZEN_UPLOAD_BODY_BYTES_MAX >= CITIZEN_PHOTOS_MAX * zhaowo_crdt::materials::MATERIAL_BYTES_MAX
    );
    const _: () = assert!(BODY_BYTES_MAX >= 4 * 4_000 * 3);
    const _: () = assert!(PASSWORD_CHARS_MIN < PASSWORD_CHARS_MAX);
    const _: () = assert!(HEADER_READ_TIMEOUT_MS < IDLE_TIMEOUT_MS && BODY_READ_TIMEOUT_MS < IDLE_TIMEOUT_MS);
    const _: () = assert!(CONNECTIONS_PER_ADDRESS_MAX < PUBLIC_CONNECTIONS_MAX);
}

/// What a citizen report does after it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CitizenRouting {
    /// 受理 and 派单 by the routing table (category → lead unit + co-units) at once, by the node.
    Dispatch,
    /// 受理 only: a clerk dispatches it from the desk, with the routing table's suggestion preselected.
    Accept,
    /// Leave it 待受理 for a clerk.
    None,
}

/// How the HTTP surfaces behave. Build it with [`HttpOptions::recommended`] and change what a test needs.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The staff desk listener (with every route); loopback so only the window PC's own browser reaches it.
    pub desk_listen: SocketAddr,
    /// The base of citizen links printed in QR codes (the hall LAN address of the citizen listener), no trailing `/`.
    pub public_base_url: String,
    pub body_bytes_max: usize,
    pub citizen_reports_per_period: u32,
    pub citizen_lookups_per_period: u32,
    pub sign_in_attempts_per_period: u32,
    pub rate_period_ms: i64,
    pub rate_clients_max: usize,
    pub session_ms: i64,
    pub header_read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub public_connections_max: usize,
    pub desk_connections_max: usize,
    /// Per client address, on the public listener (the desk's clients are all loopback: its own cap holds).
    pub connections_per_address_max: usize,
    /// Mark cookies `Secure` (and use the `__Host-` prefix): only when the pages are served over HTTPS.
    pub secure_cookies: bool,
    pub citizen_routing: CitizenRouting,
    /// The running sync runtime's status, for the desk's sync page and `/metrics` (`None`: this node does not sync).
    pub sync: Option<crate::sync::SyncStatus>,
    /// The node's live hall document and roster (sign-in reads accounts from it; `None`: the startup snapshot).
    pub live: Option<crate::live::Live>,
    /// The node's material files (issue 16; `Node::spawn` passes `Home::blobs()`). `None`: the routers open the
    /// data directory's own (`Home::blobs`), so routers built by tests and tools serve materials too.
    pub blobs: Option<crate::blobs::BlobStore>,
}

impl HttpOptions {
    pub fn recommended(desk_listen: SocketAddr, public_base_url: String) -> HttpOptions {
        HttpOptions {
            desk_listen,
            public_base_url,
            body_bytes_max: limits::BODY_BYTES_MAX,
            citizen_reports_per_period: limits::CITIZEN_REPORTS_PER_PERIOD,
            citizen_lookups_per_period: limits::CITIZEN_LOOKUPS_PER_PERIOD,
            sign_in_attempts_per_period: limits::SIGN_IN_ATTEMPTS_PER_PERIOD,
            rate_period_ms: limits::RATE_PERIOD_MS,
            rate_clients_max: limits::RATE_CLIENTS_MAX,
            session_ms: limits::SESSION_MS,
            header_read_timeout_ms: limits::HEADER_READ_TIMEOUT_MS,
            idle_timeout_ms: limits::IDLE_TIMEOUT_MS,
            body_read_timeout_ms: limits::BODY_READ_TIMEOUT_MS,
            public_connections_max: limits::PUBLIC_CONNECTIONS_MAX,
            desk_connections_max: limits::DESK_CONNECTIONS_MAX,
            connections_per_address_max: limits::CONNECTIONS_PER_ADDRESS_MAX,
            // The desk and the hall LAN pages are plain HTTP today; a `Secure` cookie would never be sent back.
            secure_cookies: false,
            // The issue: "the new case is dispatched by the routing table".
            citizen_routing: CitizenRouting::Dispatch,
            sync: None,
            live: None,
            blobs: None,
        }
    }
}

/// Why the HTTP server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// Accepting or serving failed.
    #[error("the HTTP server on {addr} failed")]
    Serve { addr: SocketAddr, source: std::io::Error },
}

/// Counters shown by `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub citizen_reports: AtomicU64,
    pub citizen_lookups: AtomicU64,
    pub lookups_failed: AtomicU64,
    pub rate_limited: AtomicU64,
    pub csrf_refused: AtomicU64,
    pub bad_requests: AtomicU64,
    pub open311_requests: AtomicU64,
    /// Material files stored through the desk or the citizen pages (issue 16).
    pub material_uploads: AtomicU64,
}

/// The state of one listener's handlers: what both listeners share (sessions, counters, the account lockout, the
/// registration lock) behind `Arc`s, and the listener's own rate-limit tables.
#[derive(Debug)]
pub(crate) struct AppState {
    /// Shared with the rest of the node (`serve` takes a `Home` or an `Arc<Home>`).
    pub home: Arc<Home>,
    pub store: Arc<Store>,
    pub options: HttpOptions,
    pub sessions: Arc<guard::Sessions>,
    /// This listener's own tables: a flood on the public port never spends the desk's budget.
    pub limiter: guard::RateLimiter,
    /// Failed sign-ins per account, whatever address they come from.
    pub lockout: Arc<guard::AccountLockout>,
    pub counters: Arc<Counters>,
    /// The node's material files; `None` only when the data directory's `materials/` could not be opened (the
    /// material routes then answer that the files are unavailable, everything else works).
    pub blobs: Option<crate::blobs::BlobStore>,
}

pub(crate) type App = Arc<AppState>;

impl AppState {
    /// The hall configuration this node serves: a running node's live copy (what sync and the admin's CLI brought
    /// since it started, published by `live::Live`), else the one read when the data directory was opened (routers
    /// built without a node: tests and tools).
    pub(crate) fn hall(&self) -> Result<zhaowo_crdt::Hall, crate::home::HomeError> {
        match &self.options.live {
            Some(live) => Ok(live.hall().hall.clone()),
            None => self.home.hall(),
        }
    }
}

impl AppState {
    /// The hall's volunteer laptops a 指派上门 may name (active in the roster this node knows): (node id, name).
    pub(crate) fn volunteer_laptops(&self) -> Vec<(String, String)> {
        let roster = match &self.options.live {
            Some(live) => Some((*live.roster()).clone()),
            None => self.home.roster().cloned(),
        };
        let Some(roster) = roster else { return Vec::new() };
        roster
            .active()
            .filter(|enrollment| enrollment.role == zhaowo_crdt::model::Role::Volunteer)
            .map(|enrollment| (zhaowo_crdt::ids::hex_encode(&enrollment.node_key), enrollment.display_name.clone()))
            .collect()
    }
}

/// The desk's state and the public listener's: shared parts once, a rate limiter each.
fn states(home: Arc<Home>, store: Arc<Store>, options: HttpOptions) -> (App, App) {
    let sessions = Arc::new(guard::Sessions::new(options.session_ms));
    let lockout = Arc::new(guard::AccountLockout::default());
    let counters = Arc::new(Counters::default());
    let blobs = options.blobs.clone().or_else(|| match home.blobs() {
        Ok(blobs) => Some(blobs),
        Err(error) => {
            tracing::error!(%error, "the material files cannot be opened; materials are unavailable");
            None
        }
    });
    let one = |options: HttpOptions| {
        Arc::new(AppState {
            limiter: guard::RateLimiter::new(&options),
            home: home.clone(),
            store: store.clone(),
            options,
            sessions: sessions.clone(),
            lockout: lockout.clone(),
            counters: counters.clone(),
            blobs: blobs.clone(),
        })
    };
    (one(options.clone()), one(options))
}

/// Security headers on every answer: no inline or foreign scripts, no framing, no sniffing, no referrer (a lookup URL holds a 查询码).
async fn security_headers(request: axum::extract::Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

fn finish(router: Router<App>, app: App) -> Router {
    let body_max = app.options.body_bytes_max;
    router
        .fallback(page::not_found)
        .method_not_allowed_fallback(page::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_max))
        .layer(middleware::from_fn(page::page_settings))
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

/// The citizen listener's routes: report, receipt, lookup and Open311 (no desk, no metrics).
fn public_routes() -> Router<App> {
    citizen::routes().merge(open311::routes()).merge(materials::routes())
}

/// Every route: the desk, `/metrics`, and the citizen pages and Open311 (so a clerk can show them on the window PC).
fn desk_routes() -> Router<App> {
    public_routes().merge(desk::routes()).merge(metrics::routes())
}

/// The desk router (every route) and the public router (citizen pages and Open311): shared sessions and counters,
/// separate rate-limit tables.
pub fn routers(home: impl Into<Arc<Home>>, store: Arc<Store>, options: HttpOptions) -> (Router, Router) {
    let (desk, public) = states(home.into(), store, options);
    (finish(desk_routes(), desk), finish(public_routes(), public))
}

/// The router with every route (what the desk listener serves), for tests.
pub fn router(home: impl Into<Arc<Home>>, store: Arc<Store>, options: HttpOptions) -> Router {
    routers(home, store, options).0
}

/// Serves the citizen pages and Open311 on `listen_addr` (the hall LAN address) and the desk on
/// `options.desk_listen` (loopback), until one of them fails.
pub async fn serve(
    home: impl Into<Arc<Home>>,
    store: Arc<Store>,
    listen_addr: SocketAddr,
    options: HttpOptions,
) -> Result<(), ServeError> {
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })
    };
    let desk_listener = bind(options.desk_listen).await?;
    let public_listener = bind(listen_addr).await?;
    serve_on(home, store, desk_listener, public_listener, options).await
}

/// [`serve`] on listeners the caller bound (tests bind port 0 and read the ports back).
pub async fn serve_on(
    home: impl Into<Arc<Home>>,
    store: Arc<Store>,
    desk_listener: tokio::net::TcpListener,
    public_listener: tokio::net::TcpListener,
    options: HttpOptions,
) -> Result<(), ServeError> {
    let local = |listener: &tokio::net::TcpListener| {
        listener.local_addr().map_err(|source| ServeError::Bind { addr: SocketAddr::from(([0, 0, 0, 0], 0)), source })
    };
    let (desk_addr, public_addr) = (local(&desk_listener)?, local(&public_listener)?);
    if !desk_addr.ip().is_loopback() {
        tracing::warn!(desk = %desk_addr, "the staff desk listens beyond loopback: anyone on that network reaches the sign-in page");
    }
    let desk_limits = conn::ConnectionLimits {
        connections_max: options.desk_connections_max,
        per_address_max: options.desk_connections_max,
        header_read_timeout: Duration::from_millis(options.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(options.idle_timeout_ms),
    };
    let public_limits = conn::ConnectionLimits {
        connections_max: options.public_connections_max,
        per_address_max: options.connections_per_address_max,
        ..desk_limits
    };
    let (desk, public) = routers(home, store, options);
    tracing::info!(desk = %desk_addr, public = %public_addr, "http listening");
    // Two accept loops, each with its own caps: the public port full of slow clients leaves the desk untouched.
    let serve_one = |listener: tokio::net::TcpListener, router: Router, limits, addr: SocketAddr, name| async move {
        conn::serve_listener(listener, router, limits, name).await.map_err(|source| ServeError::Serve { addr, source })
    };
    tokio::try_join!(
        serve_one(desk_listener, desk, desk_limits, desk_addr, "desk"),
        serve_one(public_listener, public, public_limits, public_addr, "public")
    )
    .map(drop)
}
