//! Environment variables the CLI reads, declared once (uv's `EnvVars`).

/// The node's data directory (`--dir`).
pub const ZHAOWO_DIR: &str = "ZHAOWO_DIR";
/// The staff member acting (`--staff`).
pub const ZHAOWO_STAFF: &str = "ZHAOWO_STAFF";
/// The passphrase of this node's key files, for services that cannot be asked at a terminal (`zhaowo run` under a
/// service manager); without it, a protected node asks on the terminal.
pub const ZHAOWO_PASSPHRASE: &str = "ZHAOWO_PASSPHRASE";
/// The new passphrase for `zhaowo key passphrase` without a terminal.
pub const ZHAOWO_NEW_PASSPHRASE: &str = "ZHAOWO_NEW_PASSPHRASE";
