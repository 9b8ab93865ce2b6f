//! The guards around the handlers: rate limiting per client address, desk sessions, CSRF tokens and cookies.
//!
//! CSRF: citizen forms use a double-submit token (a random cookie that the form repeats in a hidden field, compared in
//! constant time); desk forms carry the session's own token. Cookies are `HttpOnly` and `SameSite=Strict` always, and
//! `Secure` with the `__Host-` prefix when the node serves HTTPS.

use super::App;
use axum::http::{HeaderMap, header};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use subtle_free::constant_time_eq;
use zhaowo_crdt::model::Role;

/// The name of the session cookie (with the `__Host-` prefix when cookies are `Secure`).
pub const SESSION_COOKIE: &str = "zw_session";
/// The name of the citizen forms' CSRF cookie.
pub const CSRF_COOKIE: &str = "zw_csrf";

/// Constant-time comparison without another dependency: the tokens are fixed-length hex.
mod subtle_free {
    pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// 128 random bits as hex: session ids and CSRF tokens. `None` when the OS refuses randomness: then no session
/// or form token is issued at all (a guessable one would be worse than none).
pub fn random_token() -> Option<String> {
    crate::home::entropy().ok().map(|entropy| format!("{entropy:032x}"))
}

/// What a rate limit guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Report,
    Lookup,
    SignIn,
}

/// A fixed-window counter per (bucket, client address), bounded in memory.
#[derive(Debug)]
pub struct RateLimiter {
    period_ms: i64,
    clients_max: usize,
    counts: Mutex<HashMap<(Bucket, IpAddr), (i64, u32)>>,
}

impl RateLimiter {
    pub fn new(period_ms: i64, clients_max: usize) -> RateLimiter {
        RateLimiter { period_ms, clients_max, counts: Mutex::new(HashMap::new()) }
    }

    /// Counts one request; `false` when the client is over `limit` in the current period (or the table is full).
    pub fn allow(&self, bucket: Bucket, client: IpAddr, limit: u32, now_ms: i64) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let period = self.period_ms;
        if counts.len() >= self.clients_max && !counts.contains_key(&(bucket, client)) {
            counts.retain(|_, (start, _)| now_ms - *start < period);
            if counts.len() >= self.clients_max {
                return false;
            }
        }
        let entry = counts.entry((bucket, client)).or_insert((now_ms, 0));
        if now_ms - entry.0 >= period {
            *entry = (now_ms, 0);
        }
        if entry.1 >= limit {
            return false;
        }
        entry.1 += 1;
        true
    }
}

/// A signed-in staff member.
#[derive(Debug, Clone)]
pub struct Session {
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub csrf: String,
    pub expires_ms: i64,
    /// A notice for the desk header, set per request (the holiday calendar's coverage for 督查科/admin).
    pub notice: Option<String>,
}

impl Session {
    /// The staff name recorded on every action: the display name and the account.
    pub fn staff(&self) -> String {
        format!("{}({})", self.display_name, self.username)
    }
}

/// Live desk sessions by id (in memory: a restart signs everyone out, which is fine for a window PC).
#[derive(Debug)]
pub struct Sessions {
    session_ms: i64,
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(session_ms: i64) -> Sessions {
        Sessions { session_ms, by_id: Mutex::new(HashMap::new()) }
    }

    /// Starts a session; returns its id (`None` without OS randomness).
    pub fn start(&self, username: &str, display_name: &str, role: Role, now_ms: i64) -> Option<String> {
        let (id, csrf) = (random_token()?, random_token()?);
        let mut by_id = self.by_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        by_id.retain(|_, session| session.expires_ms > now_ms);
        if by_id.len() >= super::limits::SESSIONS_MAX {
            // Drop the oldest session rather than refuse a clerk at the window.
            if let Some(oldest) = by_id.iter().min_by_key(|(_, s)| s.expires_ms).map(|(id, _)| id.clone()) {
                by_id.remove(&oldest);
            }
        }
        by_id.insert(
            id.clone(),
            Session {
                username: username.to_owned(),
                display_name: display_name.to_owned(),
                role,
                csrf,
                expires_ms: now_ms + self.session_ms,
                notice: None,
            },
        );
        Some(id)
    }

    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        let by_id = self.by_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        by_id.get(id).filter(|session| session.expires_ms > now_ms).cloned()
    }

    pub fn end(&self, id: &str) {
        self.by_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
    }
}

/// A cookie's value from the request headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|value| value.to_str().ok()).find_map(|line| {
        line.split(';').map(str::trim).find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| value.to_owned())
        })
    })
}

/// The cookie name, with the `__Host-` prefix when cookies are `Secure`.
pub fn cookie_name(app: &App, base: &str) -> String {
    if app.options.secure_cookies { format!("__Host-{base}") } else { base.to_owned() }
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, `Path=/`, and `Secure` when configured.
pub fn set_cookie(app: &App, base: &str, value: &str, max_age_s: Option<i64>) -> String {
    let mut cookie = format!("{}={value}; Path=/; HttpOnly; SameSite=Strict", cookie_name(app, base));
    if let Some(age) = max_age_s {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if app.options.secure_cookies {
        cookie.push_str("; Secure");
    }
    cookie
}

/// The citizen CSRF token of this request's cookie, or a fresh one (and the `Set-Cookie` to send).
pub fn citizen_csrf(app: &App, headers: &HeaderMap) -> (String, Option<String>) {
    match cookie(headers, &cookie_name(app, CSRF_COOKIE)).filter(|token| token.len() == 32) {
        Some(token) => (token, None),
        None => {
            // Without randomness the token stays empty and every form post is refused (`csrf_matches`).
            let token = random_token().unwrap_or_default();
            let set = (!token.is_empty()).then(|| set_cookie(app, CSRF_COOKIE, &token, None));
            (token, set)
        }
    }
}

/// Checks a form's CSRF field against the cookie (citizen forms) or the session token (desk forms).
pub fn csrf_matches(expected: &str, submitted: &str) -> bool {
    !expected.is_empty() && constant_time_eq(expected.as_bytes(), submitted.as_bytes())
}

/// Checks a form posted before sign-in (citizen report, desk login) against its CSRF cookie, counting a refusal.
pub fn cookie_csrf_ok(app: &App, headers: &HeaderMap, submitted: &str) -> bool {
    let expected = cookie(headers, &cookie_name(app, CSRF_COOKIE)).unwrap_or_default();
    let ok = csrf_matches(&expected, submitted);
    if !ok {
        app.counters.csrf_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    ok
}
