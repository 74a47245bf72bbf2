//! Helpers shared by r1-core's integration tests (each test file is its own crate
//! and includes this module).

/// This process's resident memory (`VmRSS`), in KiB; 0 when it cannot be read.
pub fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
