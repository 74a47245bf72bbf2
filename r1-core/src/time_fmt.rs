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
    format_millis(OffsetDateTime::now_utc())
}

/// The `time` crate's rendering of the journal timestamp: the reference for
/// [`format_millis`], and its fallback outside years 0–9999.
const MILLIS: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// `t` (in UTC) as `2026-05-02T18:30:00.123Z`.
///
/// Every journal record carries one, so this is on the append hot path: the digits
/// are written directly (a tenth of the instructions of the format-description
/// machinery); the calendar arithmetic is still the `time` crate's.
pub fn format_millis(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let (year, month, day) = t.to_calendar_date();
    let Ok(year) = u32::try_from(year) else {
        return slow_millis(t);
    };
    if year > 9999 {
        return slow_millis(t);
    }
    let mut s = String::with_capacity(24);
    push_digits(&mut s, year, 4);
    s.push('-');
    push_digits(&mut s, u32::from(u8::from(month)), 2);
    s.push('-');
    push_digits(&mut s, u32::from(day), 2);
    s.push('T');
    push_digits(&mut s, u32::from(t.hour()), 2);
    s.push(':');
    push_digits(&mut s, u32::from(t.minute()), 2);
    s.push(':');
    push_digits(&mut s, u32::from(t.second()), 2);
    s.push('.');
    push_digits(&mut s, u32::from(t.millisecond()), 3);
    s.push('Z');
    s
}

fn slow_millis(t: OffsetDateTime) -> String {
    t.format(MILLIS)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

/// `n` as exactly `width` decimal digits (zero-padded; `n` < 10^width).
fn push_digits(s: &mut String, n: u32, width: u32) {
    for i in (0..width).rev() {
        let d = (n / 10u32.pow(i)) % 10;
        s.push(char::from(b'0' + d as u8));
    }
}

/// Parses an RFC 3339 timestamp.
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_millis_matches_the_time_crate() {
        let mut stamps: Vec<i128> = vec![
            0,
            951_782_400_000,     // 2000-02-29
            1_777_746_600_123,   // 2026-05-02T18:30:00.123
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            -62_167_219_200_000, // 0000-01-01
        ];
        // A spread of instants across centuries, leap days and millisecond values.
        let mut x: i128 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2000 {
            x = (x * 6_364_136_223_846_793_005 + 1_442_695_040_888_963_407) % (1i128 << 62);
            stamps.push(x.rem_euclid(253_402_300_799_999));
        }
        for ms in stamps {
            let t = OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).unwrap();
            assert_eq!(format_millis(t), slow_millis(t), "at {ms} ms");
        }
        // Outside the 4-digit years the reference rendering is used as is.
        let far = OffsetDateTime::from_unix_timestamp(-62_167_219_201).unwrap();
        assert_eq!(format_millis(far), slow_millis(far));
    }

    #[test]
    fn now_millis_has_the_journal_shape() {
        let s = now_millis();
        assert_eq!(s.len(), 24, "{s}");
        assert!(parse(&s).is_some(), "{s}");
    }
}
