//! Timestamps in r1's wire formats (UTC, RFC 3339).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, with seconds: `2026-05-02T18:30:00Z` (discovery, API timestamps).
pub fn now_seconds() -> String {
    format_seconds(OffsetDateTime::now_utc())
}

/// `t` with seconds precision.
pub fn format_seconds(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Now, with milliseconds: `2026-05-02T18:30:00.123Z` (journal `at`).
pub fn now_millis() -> String {
    const MILLIS: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::now_utc()
        .format(MILLIS)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

/// Parses an RFC 3339 timestamp.
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0)
}
