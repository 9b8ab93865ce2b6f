//! The examples are `[[example]]` targets; this library holds what the benchmark programs share.

/// This process's resident memory in MB (Linux `/proc/self/status`; NaN where it cannot be read).
pub fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
