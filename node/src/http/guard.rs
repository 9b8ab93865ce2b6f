//! The guards around the handlers: rate limiting per client address, desk sessions, CSRF tokens and cookies.
//!
//! CSRF: citizen forms use a double-submit token (a random cookie that the form repeats in a hidden field, compared in
//! constant time); desk forms carry the session's own token. Cookies are `HttpOnly` and `SameSite=Strict` always, and
//! `Secure` with the `__Host-` prefix when the node serves HTTPS.

use super::App;
use axum::http::{HeaderMap, header};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{NotUntil, Quota};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;
use subtle::ConstantTimeEq;
use zhaowo_crdt::model::Role;

/// The name of the session cookie (with the `__Host-` prefix when cookies are `Secure`).
pub const SESSION_COOKIE: &str = "zw_session";
/// The name of the citizen forms' CSRF cookie.
pub const CSRF_COOKIE: &str = "zw_csrf";

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

/// The key of a client: its IPv4 address, or the /64 prefix of its IPv6 address (one phone or home holds a whole
/// /64, so per-address limits on IPv6 would be per-request).
fn client_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// A governor state store bounded by eviction: at most `clients_max` keys; when full, the least recently seen
/// eighth is dropped (an entry not seen for long has refilled its quota anyway, so dropping it forgets nothing that
/// still limits anyone). A table that refused new keys when full let 10,000 lookups from distinct addresses lock
/// out every new citizen (issue 14 §2).
#[derive(Debug)]
struct BoundedStore {
    clients_max: usize,
    inner: Mutex<BoundedInner>,
}

#[derive(Debug, Default)]
struct BoundedInner {
    /// Per key: the GCRA state and the tick it was last used at.
    states: HashMap<IpAddr, (InMemoryState, u64)>,
    tick: u64,
}

impl BoundedStore {
    fn new(clients_max: usize) -> BoundedStore {
        BoundedStore { clients_max: clients_max.max(1), inner: Mutex::new(BoundedInner::default()) }
    }
}

impl StateStore for BoundedStore {
    type Key = IpAddr;

    fn measure_and_replace<T, F, E>(&self, key: &IpAddr, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.tick += 1;
        let tick = inner.tick;
        if !inner.states.contains_key(key) && inner.states.len() >= self.clients_max {
            // Evict the least recently used eighth in one pass (amortised O(1) per new key).
            let drop_count = (self.clients_max / 8).max(1);
            let mut ticks: Vec<u64> = inner.states.values().map(|(_, used)| *used).collect();
            let cut = ticks.len().min(drop_count) - 1;
            let (_, oldest_kept, _) = ticks.select_nth_unstable(cut);
            let oldest_kept = *oldest_kept;
            inner.states.retain(|_, (_, used)| *used > oldest_kept);
        }
        let entry = inner.states.entry(*key).or_insert_with(|| (InMemoryState::default(), tick));
        entry.1 = tick;
        entry.0.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

type KeyedLimiter = governor::RateLimiter<IpAddr, BoundedStore, DefaultClock, NoOpMiddleware>;

/// One bucket's limit: `None` when its limit is 0 (every request refused).
#[derive(Debug)]
struct Limit {
    limiter: Option<KeyedLimiter>,
    period: Duration,
}

impl Limit {
    /// `limit` requests per `period`, as a burst of `limit` that refills one request every `period / limit`
    /// (GCRA): the same total per period as a fixed window, without the double burst at a window's edge.
    fn new(limit: u32, period: Duration, clients_max: usize) -> Limit {
        let limiter = NonZeroU32::new(limit).and_then(|burst| {
            let quota = Quota::with_period(period / burst.get())?.allow_burst(burst);
            Some(governor::RateLimiter::new(quota, BoundedStore::new(clients_max), DefaultClock::default()))
        });
        Limit { limiter, period }
    }
}

/// Rate limits per (bucket, client address) for one listener: the desk and the public port each have their own,
/// so what one listener suffers never locks out the other (issue 14 §2). Bounded in memory by eviction.
#[derive(Debug)]
pub struct RateLimiter {
    report: Limit,
    lookup: Limit,
    sign_in: Limit,
    clock: DefaultClock,
}

impl RateLimiter {
    pub fn new(options: &super::HttpOptions) -> RateLimiter {
        let period = Duration::from_millis(u64::try_from(options.rate_period_ms.max(1)).unwrap_or(u64::MAX));
        let clients = options.rate_clients_max;
        RateLimiter {
            report: Limit::new(options.citizen_reports_per_period, period, clients),
            lookup: Limit::new(options.citizen_lookups_per_period, period, clients),
            sign_in: Limit::new(options.sign_in_attempts_per_period, period, clients),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request; `Err(wait)` when the client is over its limit, with how long until it may try again.
    pub fn check(&self, bucket: Bucket, client: IpAddr) -> Result<(), Duration> {
        let limit = match bucket {
            Bucket::Report => &self.report,
            Bucket::Lookup => &self.lookup,
            Bucket::SignIn => &self.sign_in,
        };
        let Some(limiter) = &limit.limiter else { return Err(limit.period) };
        limiter
            .check_key(&client_key(client))
            .map_err(|not_until: NotUntil<_>| not_until.wait_time_from(self.clock.now()))
    }
}

/// Consecutive failed sign-ins an account takes before it is locked (typos happen; guessing takes thousands).
pub const SIGN_IN_FAILURES_FREE: u32 = 5;
/// The first lock after [`SIGN_IN_FAILURES_FREE`] failures; each further failure doubles it.
pub const SIGN_IN_LOCK_FIRST_MS: i64 = 30 * 1000;
/// The longest lock: a clerk locked out by someone else's guessing gets in again within a quarter hour (or asks the
/// admin), while guessing stays at four tries an hour.
pub const SIGN_IN_LOCK_MAX_MS: i64 = 15 * 60 * 1000;
/// A failure streak is forgotten after this long without a failure.
pub const SIGN_IN_FAILURES_FORGET_MS: i64 = 24 * 3_600 * 1000;
/// Usernames that are not accounts tracked at once (they get the same lockout, so a lockout tells nothing about which
/// accounts exist): bounded by eviction of the least recently failed; real accounts are tracked apart, bounded by
/// the hall document's account list.
pub const SIGN_IN_UNKNOWN_NAMES_MAX: usize = 10_000;

/// One username's failure streak.
#[derive(Debug, Clone, Copy, Default)]
struct Streak {
    failures: u32,
    last_failure_ms: i64,
    locked_until_ms: i64,
}

/// Per-account sign-in lockout with exponential backoff, whatever address the attempts come from.
#[derive(Debug, Default)]
pub struct AccountLockout {
    inner: Mutex<LockoutInner>,
}

#[derive(Debug, Default)]
struct LockoutInner {
    known: HashMap<String, Streak>,
    unknown: HashMap<String, Streak>,
}

impl LockoutInner {
    fn table(&mut self, known: bool) -> &mut HashMap<String, Streak> {
        if known { &mut self.known } else { &mut self.unknown }
    }
}

/// The table key of a typed username (a longer one cannot be an account; its first characters stand for it).
fn lockout_key(username: &str) -> String {
    username.chars().take(super::limits::USERNAME_CHARS_MAX + 1).collect()
}

impl AccountLockout {
    /// `Err(wait_ms)` while `username` is locked: refuse without checking the password.
    pub fn check(&self, username: &str, known: bool, now_ms: i64) -> Result<(), i64> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match inner.table(known).get(&lockout_key(username)) {
            Some(streak) if streak.locked_until_ms > now_ms => Err(streak.locked_until_ms - now_ms),
            _ => Ok(()),
        }
    }

    /// Records a failed password; returns the lock it started, if any (ms).
    pub fn failed(&self, username: &str, known: bool, now_ms: i64) -> Option<i64> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let table = inner.table(known);
        let key = lockout_key(username);
        if !known && !table.contains_key(&key) && table.len() >= SIGN_IN_UNKNOWN_NAMES_MAX {
            table.retain(|_, streak| streak.locked_until_ms > now_ms);
            if table.len() >= SIGN_IN_UNKNOWN_NAMES_MAX
                && let Some(oldest) = table.iter().min_by_key(|(_, s)| s.last_failure_ms).map(|(k, _)| k.clone())
            {
                table.remove(&oldest);
            }
        }
        let streak = table.entry(key).or_default();
        if now_ms - streak.last_failure_ms > SIGN_IN_FAILURES_FORGET_MS {
            *streak = Streak::default();
        }
        streak.failures += 1;
        streak.last_failure_ms = now_ms;
        let lock = lock_ms(streak.failures)?;
        streak.locked_until_ms = now_ms + lock;
        Some(lock)
    }

    /// A successful sign-in ends the streak.
    pub fn succeeded(&self, username: &str, known: bool) {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.table(known).remove(&lockout_key(username));
    }
}

/// The lock after `failures` consecutive failures: none up to [`SIGN_IN_FAILURES_FREE`], then
/// [`SIGN_IN_LOCK_FIRST_MS`] doubling per failure up to [`SIGN_IN_LOCK_MAX_MS`].
pub fn lock_ms(failures: u32) -> Option<i64> {
    let over = failures.checked_sub(SIGN_IN_FAILURES_FREE)?;
    Some(SIGN_IN_LOCK_FIRST_MS.saturating_mul(1_i64 << over.min(20)).min(SIGN_IN_LOCK_MAX_MS))
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
    // `subtle` compares equal-length slices in constant time (a length difference returns at once: tokens are
    // fixed-length hex, so the length tells nothing).
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(submitted.as_bytes()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lockout_backs_off_per_account_and_a_success_ends_it() {
        let lockout = AccountLockout::default();
        let mut now = 1_000_000;
        let mut locks = Vec::new();
        for _ in 0..SIGN_IN_FAILURES_FREE - 1 {
            assert_eq!(lockout.failed("wangmin", true, now), None);
            assert_eq!(lockout.check("wangmin", true, now), Ok(()));
        }
        // Each failure after the free ones, tried once the previous lock ended, locks twice as long, up to the cap.
        for _ in 0..8 {
            let lock = lockout.failed("wangmin", true, now).expect("locked");
            assert_eq!(lockout.check("wangmin", true, now + 1), Err(lock - 1));
            assert_eq!(lockout.check("dc", true, now + 1), Ok(()), "another account is not locked");
            locks.push(lock / 1000);
            now += lock;
            assert_eq!(lockout.check("wangmin", true, now), Ok(()), "the lock ends");
        }
        assert_eq!(locks, [30, 60, 120, 240, 480, 900, 900, 900]);
        lockout.succeeded("wangmin", true);
        assert_eq!(lockout.failed("wangmin", true, now), None, "a success ends the streak");
        println!("lockout backoff (s): {locks:?}");
    }

    #[test]
    fn the_rate_table_evicts_instead_of_refusing() {
        let mut options =
            super::super::HttpOptions::recommended("127.0.0.1:0".parse().unwrap(), "http://127.0.0.1".to_owned());
        options.rate_clients_max = 64;
        options.citizen_lookups_per_period = 2;
        let limiter = RateLimiter::new(&options);
        let address = |n: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        let refused = (0..1_000).filter(|&n| limiter.check(Bucket::Lookup, address(n)).is_err()).count();
        assert_eq!(refused, 0, "new clients get in when the table is full");
        // The per-client limit still holds for a client seen recently.
        let me = address(5_000);
        assert!(limiter.check(Bucket::Lookup, me).is_ok() && limiter.check(Bucket::Lookup, me).is_ok());
        assert!(limiter.check(Bucket::Lookup, me).is_err(), "third lookup within the period refused");
        // IPv6 clients are limited per /64.
        let v6 = |last: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2408, 0x8000, 0, 1, 0, 0, 0, last));
        assert!(limiter.check(Bucket::Lookup, v6(1)).is_ok() && limiter.check(Bucket::Lookup, v6(2)).is_ok());
        assert!(limiter.check(Bucket::Lookup, v6(3)).is_err(), "same /64");
        println!("rate table: 1,000 distinct clients through a 64-entry table, 0 refused; per-client limit holds");
    }
}
