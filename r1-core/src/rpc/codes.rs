//! The one table from core error kinds to JSON-RPC codes (DESIGN §7). The C status
//! (`r1-ffi`) and the Python exception (`r1-py`) follow the same kinds.

use serde_json::json;

use crate::error::{Error, ErrorKind, RpcErrorObject};

/// JSON-RPC 2.0: invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC 2.0: not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC 2.0: no such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC 2.0: bad params.
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC 2.0: internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// r1: no such session / subscription.
pub const NOT_FOUND: i64 = -32001;
/// r1: conflicts with current state (e.g. single-session).
pub const CONFLICT: i64 = -32002;
/// r1: the session's state does not allow it.
pub const INVALID_STATE: i64 = -32003;
/// r1: the credentials do not allow it.
pub const UNAUTHORIZED: i64 = -32004;
/// r1: over a size limit.
pub const TOO_LARGE: i64 = -32005;
/// r1: the journal is damaged.
pub const JOURNAL_DAMAGED: i64 = -32006;
/// r1: a version this build does not speak.
pub const UNSUPPORTED_VERSION: i64 = -32007;
/// r1: the file system failed (disk full …).
pub const IO: i64 = -32008;

/// The JSON-RPC code for an error kind. Exhaustive on purpose: a new kind must be
/// placed here before it compiles.
pub fn code_for(kind: ErrorKind) -> i64 {
    match kind {
        ErrorKind::Parse => PARSE_ERROR,
        ErrorKind::InvalidRequest => INVALID_REQUEST,
        ErrorKind::MethodNotFound => METHOD_NOT_FOUND,
        ErrorKind::InvalidParams => INVALID_PARAMS,
        ErrorKind::Internal => INTERNAL_ERROR,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Conflict => CONFLICT,
        ErrorKind::InvalidState => INVALID_STATE,
        ErrorKind::Unauthorized => UNAUTHORIZED,
        ErrorKind::TooLarge => TOO_LARGE,
        ErrorKind::JournalDamaged => JOURNAL_DAMAGED,
        ErrorKind::UnsupportedVersion => UNSUPPORTED_VERSION,
        ErrorKind::Io => IO,
        // Client-side kinds never leave the daemon as such; if one does, it is a bug
        // or a failure of the daemon's own I/O.
        ErrorKind::Unsafe => IO,
        ErrorKind::DaemonNotFound => INTERNAL_ERROR,
        ErrorKind::Timeout => INTERNAL_ERROR,
        ErrorKind::Closed => INVALID_STATE,
        ErrorKind::Protocol => INVALID_REQUEST,
        ErrorKind::Rpc => INTERNAL_ERROR,
    }
}

/// The kind a JSON-RPC code stands for (clients map daemon errors back).
pub fn kind_for(code: i64) -> ErrorKind {
    match code {
        PARSE_ERROR => ErrorKind::Parse,
        INVALID_REQUEST => ErrorKind::InvalidRequest,
        METHOD_NOT_FOUND => ErrorKind::MethodNotFound,
        INVALID_PARAMS => ErrorKind::InvalidParams,
        NOT_FOUND => ErrorKind::NotFound,
        CONFLICT => ErrorKind::Conflict,
        INVALID_STATE => ErrorKind::InvalidState,
        UNAUTHORIZED => ErrorKind::Unauthorized,
        TOO_LARGE => ErrorKind::TooLarge,
        JOURNAL_DAMAGED => ErrorKind::JournalDamaged,
        UNSUPPORTED_VERSION => ErrorKind::UnsupportedVersion,
        IO => ErrorKind::Io,
        _ => ErrorKind::Internal,
    }
}

/// The HTTP status for an error kind (REST mirror).
pub fn http_status_for(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::Parse
        | ErrorKind::InvalidRequest
        | ErrorKind::InvalidParams
        | ErrorKind::Protocol => 400,
        ErrorKind::Unauthorized => 403,
        ErrorKind::NotFound | ErrorKind::MethodNotFound => 404,
        ErrorKind::Conflict
        | ErrorKind::InvalidState
        | ErrorKind::JournalDamaged
        | ErrorKind::Closed => 409,
        ErrorKind::TooLarge => 413,
        ErrorKind::UnsupportedVersion => 400,
        ErrorKind::Io | ErrorKind::Unsafe => 507,
        ErrorKind::Timeout => 504,
        ErrorKind::Internal | ErrorKind::DaemonNotFound | ErrorKind::Rpc => 500,
    }
}

/// The error object for an error: `{code, message, data: {kind, …}}`.
pub fn error_object(err: &Error) -> RpcErrorObject {
    if let Some(rpc) = err.rpc() {
        return rpc.clone();
    }
    let mut data = json!({ "kind": err.kind().as_str() });
    if let (Some(extra), Some(obj)) = (err.data().and_then(|d| d.as_object()), data.as_object_mut())
    {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    RpcErrorObject {
        code: code_for(err.kind()),
        message: err.message().to_owned(),
        data: Some(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r1_codes_round_trip() {
        for (kind, code) in [
            (ErrorKind::NotFound, -32001),
            (ErrorKind::Conflict, -32002),
            (ErrorKind::InvalidState, -32003),
            (ErrorKind::Unauthorized, -32004),
            (ErrorKind::TooLarge, -32005),
            (ErrorKind::JournalDamaged, -32006),
            (ErrorKind::UnsupportedVersion, -32007),
            (ErrorKind::Io, -32008),
            (ErrorKind::Parse, -32700),
            (ErrorKind::InvalidRequest, -32600),
            (ErrorKind::MethodNotFound, -32601),
            (ErrorKind::InvalidParams, -32602),
            (ErrorKind::Internal, -32603),
        ] {
            assert_eq!(code_for(kind), code);
            assert_eq!(kind_for(code), kind);
        }
    }

    #[test]
    fn error_object_carries_kind() {
        let e = Error::not_found("no session sess_x");
        let o = error_object(&e);
        assert_eq!(o.code, -32001);
        assert_eq!(o.data.unwrap()["kind"], "not_found");
    }
}
