//! [`R1Status`]: the one return code of every fallible export, and the single table
//! from [`r1_core::ErrorKind`] to it.

use r1_core::ErrorKind;

/// What an r1 function did. The numbers are pinned (DESIGN §10): they are part of
/// the ABI and never change meaning.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum R1Status {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// An argument was malformed (not UTF-8, not JSON, unknown option, over a limit),
    /// or conflicts with the current state (e.g. a daemon already running in that home).
    InvalidArgument = 2,
    /// No such file, session or daemon (discovery missing or stale).
    NotFound = 3,
    /// A file or directory r1 owns has an owner or mode it must not trust; the last
    /// error names the path and the fix.
    Unsafe = 4,
    /// The operating system failed (disk full, permission, socket error …).
    Io = 5,
    /// The peer or a file does not speak r1's protocol or format version.
    Protocol = 6,
    /// The daemon answered with a JSON-RPC error; `r1_last_error_message()` holds the
    /// error object `{code, message, data}` as JSON.
    Rpc = 7,
    /// Nothing happened within the timeout.
    Timeout = 8,
    /// The subscription, connection or journal is closed, or at its end.
    Closed = 9,
    /// Credentials were missing, wrong or not allowed to do this.
    Auth = 10,
    /// A journal is damaged (a bad line that recovery must not cut).
    JournalDamaged = 11,
    /// A bug in r1: a caught panic or a broken invariant. The handle involved should
    /// only be freed.
    Panic = 99,
}

/// The status for an error kind.
///
/// `ErrorKind` is `#[non_exhaustive]`, so Rust demands a wildcard arm here even though
/// every kind r1-core has today is listed. The test
/// `every_core_error_kind_has_an_explicit_status` reads r1-core's enum and fails when
/// a kind reaches the wildcard, so a new kind cannot slip through unmapped.
pub fn status_for(kind: ErrorKind) -> R1Status {
    explicit_status_for(kind).unwrap_or(R1Status::Io)
}

/// The mapping proper; `None` only for kinds added to r1-core after this table.
fn explicit_status_for(kind: ErrorKind) -> Option<R1Status> {
    Some(match kind {
        ErrorKind::NotFound => R1Status::NotFound,
        ErrorKind::DaemonNotFound => R1Status::NotFound,
        ErrorKind::Conflict => R1Status::InvalidArgument,
        ErrorKind::InvalidState => R1Status::InvalidArgument,
        ErrorKind::InvalidParams => R1Status::InvalidArgument,
        ErrorKind::InvalidRequest => R1Status::InvalidArgument,
        ErrorKind::MethodNotFound => R1Status::InvalidArgument,
        ErrorKind::Parse => R1Status::InvalidArgument,
        ErrorKind::TooLarge => R1Status::InvalidArgument,
        ErrorKind::Unauthorized => R1Status::Auth,
        ErrorKind::JournalDamaged => R1Status::JournalDamaged,
        ErrorKind::UnsupportedVersion => R1Status::Protocol,
        ErrorKind::Protocol => R1Status::Protocol,
        ErrorKind::Io => R1Status::Io,
        ErrorKind::Unsafe => R1Status::Unsafe,
        ErrorKind::Timeout => R1Status::Timeout,
        ErrorKind::Closed => R1Status::Closed,
        ErrorKind::Rpc => R1Status::Rpc,
        ErrorKind::Internal => R1Status::Panic,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pinned numbers of DESIGN §10.
    #[test]
    fn pinned_values() {
        let pinned = [
            (R1Status::Ok, 0),
            (R1Status::NullArgument, 1),
            (R1Status::InvalidArgument, 2),
            (R1Status::NotFound, 3),
            (R1Status::Unsafe, 4),
            (R1Status::Io, 5),
            (R1Status::Protocol, 6),
            (R1Status::Rpc, 7),
            (R1Status::Timeout, 8),
            (R1Status::Closed, 9),
            (R1Status::Auth, 10),
            (R1Status::JournalDamaged, 11),
            (R1Status::Panic, 99),
        ];
        for (s, n) in pinned {
            assert_eq!(s as i32, n, "{s:?}");
        }
    }

    /// Reads the variants of `r1_core::ErrorKind` from its source and checks each has
    /// an explicit arm (the wildcard exists only because the enum is non-exhaustive).
    #[test]
    fn every_core_error_kind_has_an_explicit_status() {
        let src = include_str!("../../r1-core/src/error.rs");
        let start = src
            .find("pub enum ErrorKind {")
            .unwrap_or_else(|| panic!("ErrorKind not found in r1-core/src/error.rs"));
        let body = &src[start..];
        let end = body.find("\n}").unwrap_or(body.len());
        let mut seen = 0;
        for line in body[..end].lines().skip(1) {
            let t = line.trim();
            if t.starts_with("///") || t.starts_with('#') || t.is_empty() {
                continue;
            }
            let name = t.trim_end_matches(',');
            // CamelCase → the snake_case serde name.
            let mut snake = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_ascii_uppercase() {
                    if i > 0 {
                        snake.push('_');
                    }
                    snake.push(c.to_ascii_lowercase());
                } else {
                    snake.push(c);
                }
            }
            let kind: ErrorKind = serde_json::from_value(serde_json::Value::String(snake.clone()))
                .unwrap_or_else(|e| panic!("{name} ({snake}): {e}"));
            assert!(
                explicit_status_for(kind).is_some(),
                "ErrorKind::{name} has no R1Status arm in r1-ffi/src/status.rs"
            );
            seen += 1;
        }
        assert!(seen >= 19, "parsed only {seen} kinds");
    }
}
