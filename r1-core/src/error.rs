//! The one error type of r1-core.
//!
//! Each module reports what failed with its own context (path, mode, seq …) in the
//! message; [`ErrorKind`] is the stable classification that the JSON-RPC code table
//! (`rpc::codes`), the C status and the Python exception are all derived from.

use std::fmt;
use std::path::Path;

/// What kind of failure an [`Error`] is. Stable: bindings map it one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// A session, subscription, file or route that does not exist.
    NotFound,
    /// The request clashes with current state (e.g. `--single-session`, already running).
    Conflict,
    /// The target is in a state that does not allow the operation.
    InvalidState,
    /// Missing, wrong, expired or insufficiently scoped credentials.
    Unauthorized,
    /// A message, body, batch or record over its limit.
    TooLarge,
    /// A journal has damage that recovery must not cut.
    JournalDamaged,
    /// A peer or file speaks a version this build does not.
    UnsupportedVersion,
    /// The file system or a socket failed (disk full, EIO …).
    Io,
    /// Parameters that do not fit the method or function.
    InvalidParams,
    /// A JSON-RPC envelope that is not a valid request.
    InvalidRequest,
    /// An unknown JSON-RPC method.
    MethodNotFound,
    /// Bytes that are not JSON.
    Parse,
    /// A file or directory r1 owns has an owner or mode it must not trust.
    Unsafe,
    /// No daemon could be found or reached (missing or stale discovery).
    DaemonNotFound,
    /// An operation did not finish within its timeout.
    Timeout,
    /// The connection, subscription or journal was closed.
    Closed,
    /// The peer answered something that is not the r1 protocol.
    Protocol,
    /// The daemon answered a call with a JSON-RPC error (see [`Error::rpc`]).
    Rpc,
    /// A bug: an invariant did not hold. Never expected.
    Internal,
}

impl ErrorKind {
    /// The snake_case name used in JSON-RPC `data.kind` and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidState => "invalid_state",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::JournalDamaged => "journal_damaged",
            ErrorKind::UnsupportedVersion => "unsupported_version",
            ErrorKind::Io => "io",
            ErrorKind::InvalidParams => "invalid_params",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::MethodNotFound => "method_not_found",
            ErrorKind::Parse => "parse",
            ErrorKind::Unsafe => "unsafe",
            ErrorKind::DaemonNotFound => "daemon_not_found",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "closed",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Rpc => "rpc",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JSON-RPC error object as received from (or sent by) the daemon.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RpcErrorObject {
    /// The JSON-RPC error code (`-32700` … `-32008`).
    pub code: i64,
    /// The human message.
    pub message: String,
    /// `{kind, …}` for r1's own codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// An r1 error: a stable [`ErrorKind`] plus a lowercase message that names what
/// failed and, where there is one, the fix.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    data: Option<serde_json::Value>,
    rpc: Option<Box<RpcErrorObject>>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            data: None,
            rpc: None,
        }
    }

    /// Adds structured detail (merged into JSON-RPC `data`).
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }

    /// An I/O failure on `path`, classified by the OS error.
    pub fn io(what: &str, path: &Path, err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        };
        Error::new(kind, format!("{what} {}: {err}", path.display()))
    }

    /// The error the daemon answered to a call.
    pub fn from_rpc(obj: RpcErrorObject) -> Self {
        Error {
            kind: ErrorKind::Rpc,
            message: obj.message.clone(),
            data: None,
            rpc: Some(Box::new(obj)),
        }
    }

    /// Shorthand constructors.
    pub fn not_found(m: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, m)
    }
    /// See [`ErrorKind::InvalidParams`].
    pub fn invalid_params(m: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidParams, m)
    }
    /// See [`ErrorKind::InvalidState`].
    pub fn invalid_state(m: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidState, m)
    }
    /// See [`ErrorKind::Internal`].
    pub fn internal(m: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, m)
    }

    /// The classification.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message (lowercase, names the path and the fix).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Structured detail, if any.
    pub fn data(&self) -> Option<&serde_json::Value> {
        self.data.as_ref()
    }

    /// The JSON-RPC error object when the daemon answered with an error.
    pub fn rpc(&self) -> Option<&RpcErrorObject> {
        self.rpc.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rpc {
            Some(rpc) => write!(f, "{} (code {})", rpc.message, rpc.code),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::new(ErrorKind::Parse, format!("invalid json: {e}"))
    }
}
