//! Environment variables the CLI reads, declared once (uv's `EnvVars`).

/// The node's data directory (`--dir`).
pub const ZHAOWO_DIR: &str = "ZHAOWO_DIR";
/// The staff member acting (`--staff`).
pub const ZHAOWO_STAFF: &str = "ZHAOWO_STAFF";
