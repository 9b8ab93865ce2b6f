//! Staff accounts of the web desk: argon2id password hashes (PHC strings) kept in the hall document, so an account made
//! by an admin signs in at any window once the hall document has synced.

use super::limits::{PASSWORD_CHARS_MAX, PASSWORD_CHARS_MIN, USERNAME_CHARS_MAX};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use zhaowo_crdt::hall::Hall;
use zhaowo_crdt::limits::NAME_CHARS_MAX;
use zhaowo_crdt::model::Role;

/// Bytes of salt per hash (the PHC recommendation).
const SALT_BYTES: usize = 16;

/// Checks a new account's fields; the error is a zh-CN sentence for the admin.
pub fn check_new_account(username: &str, display_name: &str, role: Role, password: &str) -> Result<(), String> {
    if username.is_empty()
        || username.len() > USERNAME_CHARS_MAX
        || !username.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!("用户名须为 1-{USERNAME_CHARS_MAX} 个英文字母、数字或 _ . -"));
    }
    let name_chars = display_name.trim().chars().count();
    if name_chars == 0 || name_chars > NAME_CHARS_MAX {
        return Err(format!("姓名须为 1-{NAME_CHARS_MAX} 个字"));
    }
    if role == Role::Citizen {
        return Err("工作人员账号不能是群众角色".to_owned());
    }
    let password_chars = password.chars().count();
    if !(PASSWORD_CHARS_MIN..=PASSWORD_CHARS_MAX).contains(&password_chars) {
        return Err(format!("密码须为 {PASSWORD_CHARS_MIN}-{PASSWORD_CHARS_MAX} 个字符"));
    }
    Ok(())
}

/// Hashes a password as an argon2id PHC string with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let entropy = crate::home::entropy().map_err(|error| format!("无法获取随机数：{error}"))?;
    let salt: [u8; SALT_BYTES] = entropy.to_le_bytes();
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| format!("密码哈希失败：{error}"))
}

/// Checks a password against a PHC string (argon2's comparison is constant-time).
pub fn verify_password(password: &str, phc: &str) -> bool {
    password.chars().count() <= PASSWORD_CHARS_MAX
        && Argon2::default().verify_password(password.as_bytes(), phc).is_ok()
}

/// A hash of a password nobody has, checked when the username is unknown so that a wrong username costs the same time
/// as a wrong password (no account enumeration by timing).
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("zhaowo-decoy-password").unwrap_or_default())
}

/// The account a username and password sign in as, if they match an enabled account of the hall.
pub fn sign_in(hall: &Hall, username: &str, password: &str) -> Option<(String, Role)> {
    match hall.accounts.get(username) {
        Some(account) if !account.disabled => {
            verify_password(password, &account.password_hash).then(|| (account.display_name.clone(), account.role))
        }
        _ => {
            let _ = verify_password(password, decoy_hash());
            None
        }
    }
}

/// Signs in with the per-account lockout around the password check: `Err(wait_ms)` while the account (or the
/// typed name, if it is no account: the same answer, so a lockout tells nothing about which accounts exist) is
/// locked after failed passwords from any address; argon2 runs off the async workers. A failure counts toward the
/// lock, a success ends the streak.
pub(crate) async fn sign_in_guarded(
    app: &super::App,
    hall: Hall,
    username: String,
    password: String,
) -> Result<Option<(String, Role)>, i64> {
    let known = hall.accounts.contains_key(&username);
    app.lockout.check(&username, known, crate::home::now_ms())?;
    let name = username.clone();
    let checked = tokio::task::spawn_blocking(move || sign_in(&hall, &name, &password)).await.ok().flatten();
    match &checked {
        Some(_) => app.lockout.succeeded(&username, known),
        None => {
            if let Some(lock_ms) = app.lockout.failed(&username, known, crate::home::now_ms()) {
                tracing::warn!(target: "zhaowo::_events::desk", lock_ms, "a desk account is locked after failed sign-ins");
            }
        }
    }
    Ok(checked)
}

/// The page of a locked account: how long, and whom to ask.
pub(crate) fn account_locked(app: &super::App, wait_ms: i64) -> axum::response::Response {
    app.counters.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let wait = std::time::Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
    let mut response = super::page::error_page(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "账号已暂时锁定",
        &format!(
            "该账号因多次密码错误已暂时锁定，请 {} 分钟后再试；如非本人操作，请联系管理员。",
            super::citizen::minutes_zh(wait)
        ),
        Some(("/desk/login", "返回登录")),
    );
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, wait.as_secs().max(1).into());
    response
}
