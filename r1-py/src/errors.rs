//! The exception tree of `import r1` (DESIGN §11) and the one mapping from
//! [`r1_core::ErrorKind`] to it (the polars `exceptions.rs` pattern).
//!
//! ```text
//! R1Error(Exception)                      .kind (r1 error kind), .data (detail or None)
//! ├── DaemonNotFound(R1Error, ConnectionError)
//! ├── UnsafeDiscovery
//! ├── AuthError
//! ├── RpcError                            .code, .message, .data (the JSON-RPC error)
//! ├── JournalCorrupt                      .report (verify() report, or None)
//! ├── Timeout(R1Error, TimeoutError)
//! ├── InvalidArgument(R1Error, ValueError)
//! ├── IoError(R1Error, OSError)
//! │   └── NotFoundError(IoError, FileNotFoundError)
//! ├── ProtocolError
//! └── ClosedError
//! ```
//!
//! The first seven are DESIGN's names. The rest keep Python's conventions: bad
//! arguments are `ValueError`s, file and socket failures `OSError`s, timeouts
//! `TimeoutError`s, so `except OSError` and friends keep working around r1 calls.
//! Wrong Python *types* are `TypeError`s raised by argument extraction, as for any
//! Python function.
//!
//! Errors the daemon answered (JSON-RPC error objects) are always [`RpcError`],
//! whatever their code; the other classes describe failures on this side.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::create_exception;
use pyo3::exceptions::{
    PyConnectionError, PyException, PyFileNotFoundError, PyOSError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use r1_core::ErrorKind;

use crate::convert;

create_exception!(
    r1,
    R1Error,
    PyException,
    "Base class of every error r1 raises.\n\n`kind` is the r1 error kind (`not_found`, `io`, `conflict`, ...); `data` is structured detail or None."
);
create_exception!(
    r1,
    UnsafeDiscovery,
    R1Error,
    "A file or directory r1 owns (the discovery file, the home) has an owner or mode r1 must not trust; the message names the path, the mode and the fix."
);
create_exception!(
    r1,
    AuthError,
    R1Error,
    "Missing, wrong, expired or insufficiently scoped credentials."
);
create_exception!(
    r1,
    RpcError,
    R1Error,
    "The daemon answered a call with a JSON-RPC error.\n\n`code` is the JSON-RPC code (-32001 not found, -32602 invalid params, ...), `message` the daemon's message, `data` its `data` member ({'kind': ...})."
);
create_exception!(
    r1,
    JournalCorrupt,
    R1Error,
    "A journal has a bad line (CRC mismatch, seq gap, garbage); the message names the line and why. `report` holds the verify() report when raised by Journal.verify()."
);
create_exception!(
    r1,
    ProtocolError,
    R1Error,
    "The peer (daemon or file) speaks something this build does not understand: not JSON, not the r1 protocol, or a newer version."
);
create_exception!(
    r1,
    ClosedError,
    R1Error,
    "The client, subscription, connection or journal was closed (or the journal file was truncated or replaced under a follower)."
);

/// An exception class with two bases (an r1 one and a Python builtin), created with
/// `type(name, bases, dict)` on first use: `create_exception!` takes one base only.
struct DualException {
    name: &'static str,
    doc: &'static str,
    bases: for<'py> fn(Python<'py>) -> PyResult<[Bound<'py, PyType>; 2]>,
    cell: PyOnceLock<Py<PyType>>,
}

impl DualException {
    const fn new(
        name: &'static str,
        doc: &'static str,
        bases: for<'py> fn(Python<'py>) -> PyResult<[Bound<'py, PyType>; 2]>,
    ) -> DualException {
        DualException {
            name,
            doc,
            bases,
            cell: PyOnceLock::new(),
        }
    }

    fn get<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyType>> {
        let ty = self.cell.get_or_try_init(py, || -> PyResult<Py<PyType>> {
            let bases = PyTuple::new(py, (self.bases)(py)?)?;
            let dict = PyDict::new(py);
            dict.set_item("__doc__", self.doc)?;
            dict.set_item("__module__", "r1")?;
            let made = py
                .get_type::<PyType>()
                .call1((self.name, bases, dict))?
                .cast_into::<PyType>()?;
            Ok(made.unbind())
        })?;
        Ok(ty.bind(py).clone())
    }
}

static DAEMON_NOT_FOUND: DualException = DualException::new(
    "DaemonNotFound",
    "No daemon could be found or reached: no discovery file, a stale one (pid dead, socket not answering, another instance), or auto-spawn failed. Also a ConnectionError.",
    |py| Ok([py.get_type::<R1Error>(), py.get_type::<PyConnectionError>()]),
);
static TIMEOUT: DualException = DualException::new(
    "Timeout",
    "An operation did not finish within its timeout. Also a TimeoutError.",
    |py| Ok([py.get_type::<R1Error>(), py.get_type::<PyTimeoutError>()]),
);
static INVALID_ARGUMENT: DualException = DualException::new(
    "InvalidArgument",
    "An argument r1 cannot use: a value that is not JSON-serialisable, out of range, or an option the daemon or embedded daemon refuses. Also a ValueError.",
    |py| Ok([py.get_type::<R1Error>(), py.get_type::<PyValueError>()]),
);
static IO_ERROR: DualException = DualException::new(
    "IoError",
    "A file or socket operation failed (disk full, EIO, permission denied ...); the message names the path. Also an OSError.",
    |py| Ok([py.get_type::<R1Error>(), py.get_type::<PyOSError>()]),
);
static NOT_FOUND_ERROR: DualException = DualException::new(
    "NotFoundError",
    "A file r1 was asked to open does not exist (e.g. a journal path). Also a FileNotFoundError.",
    |py| Ok([IO_ERROR.get(py)?, py.get_type::<PyFileNotFoundError>()]),
);

/// Every exception class with its name and the `kind` its class attribute carries,
/// for the module to export (and set defaults on).
pub fn classes(py: Python<'_>) -> PyResult<Vec<(&'static str, Bound<'_, PyType>, &'static str)>> {
    Ok(vec![
        ("R1Error", py.get_type::<R1Error>(), "internal"),
        (
            "DaemonNotFound",
            DAEMON_NOT_FOUND.get(py)?,
            "daemon_not_found",
        ),
        (
            "UnsafeDiscovery",
            py.get_type::<UnsafeDiscovery>(),
            "unsafe",
        ),
        ("AuthError", py.get_type::<AuthError>(), "unauthorized"),
        ("RpcError", py.get_type::<RpcError>(), "rpc"),
        (
            "JournalCorrupt",
            py.get_type::<JournalCorrupt>(),
            "journal_damaged",
        ),
        ("Timeout", TIMEOUT.get(py)?, "timeout"),
        (
            "InvalidArgument",
            INVALID_ARGUMENT.get(py)?,
            "invalid_params",
        ),
        ("IoError", IO_ERROR.get(py)?, "io"),
        ("NotFoundError", NOT_FOUND_ERROR.get(py)?, "not_found"),
        ("ProtocolError", py.get_type::<ProtocolError>(), "protocol"),
        ("ClosedError", py.get_type::<ClosedError>(), "closed"),
    ])
}

/// Adds every exception class to the module, with class-level defaults for the
/// attributes instances carry (so `RpcError.code` exists even on a hand-made one).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    for (name, ty, kind) in classes(py)? {
        ty.setattr("kind", kind)?;
        m.add(name, ty)?;
    }
    let base = py.get_type::<R1Error>();
    base.setattr("data", py.None())?;
    let rpc = py.get_type::<RpcError>();
    rpc.setattr("code", r1_core::rpc::codes::INTERNAL_ERROR)?;
    rpc.setattr("message", "")?;
    py.get_type::<JournalCorrupt>()
        .setattr("report", py.None())?;
    Ok(())
}

/// The exception class for an error kind: the one table (DESIGN §7 says the JSON-RPC
/// code, C status and Python exception all follow the kind).
fn class_for(py: Python<'_>, kind: ErrorKind) -> PyResult<Bound<'_, PyType>> {
    Ok(match kind {
        ErrorKind::Rpc => py.get_type::<RpcError>(),
        ErrorKind::DaemonNotFound => DAEMON_NOT_FOUND.get(py)?,
        ErrorKind::Unsafe => py.get_type::<UnsafeDiscovery>(),
        ErrorKind::Unauthorized => py.get_type::<AuthError>(),
        ErrorKind::JournalDamaged => py.get_type::<JournalCorrupt>(),
        ErrorKind::Timeout => TIMEOUT.get(py)?,
        ErrorKind::InvalidParams => INVALID_ARGUMENT.get(py)?,
        ErrorKind::Io => IO_ERROR.get(py)?,
        // Locally, not_found is a file that does not exist (daemon-side "no such
        // session" arrives as an RpcError).
        ErrorKind::NotFound => NOT_FOUND_ERROR.get(py)?,
        ErrorKind::Closed => py.get_type::<ClosedError>(),
        // A newer journal format is a version problem, not damage: the file is fine
        // for a newer r1.
        ErrorKind::Protocol
        | ErrorKind::Parse
        | ErrorKind::InvalidRequest
        | ErrorKind::MethodNotFound
        | ErrorKind::UnsupportedVersion => py.get_type::<ProtocolError>(),
        // State clashes (another daemon holds the home's lock, single-session) and
        // bugs: no class of their own; `.kind` tells them apart.
        ErrorKind::Conflict
        | ErrorKind::InvalidState
        | ErrorKind::TooLarge
        | ErrorKind::Internal => py.get_type::<R1Error>(),
        // `ErrorKind` is `#[non_exhaustive]` in another crate, so the compiler demands
        // this arm; a kind added later is an `R1Error` with its `.kind` until it is
        // placed above (tests/test_errors.py checks every known kind's class).
        _ => py.get_type::<R1Error>(),
    })
}

/// Builds the Python exception for a core error. Never fails: if building the
/// exception itself raised, that exception is returned instead.
pub fn core_to_pyerr(py: Python<'_>, err: &r1_core::Error) -> PyErr {
    build(py, err).unwrap_or_else(|e| e)
}

fn build(py: Python<'_>, err: &r1_core::Error) -> PyResult<PyErr> {
    let kind = err.kind();
    let class = class_for(py, kind)?;
    let value = class.call1((err.to_string(),))?;
    match err.rpc() {
        Some(rpc) => {
            let data = match &rpc.data {
                Some(d) => convert::to_py(py, d)?,
                None => py.None().into_bound(py),
            };
            let rpc_kind = rpc
                .data
                .as_ref()
                .and_then(|d| d.get("kind"))
                .and_then(|k| k.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| r1_core::rpc::codes::kind_for(rpc.code).as_str().to_owned());
            value.setattr("code", rpc.code)?;
            value.setattr("message", rpc.message.as_str())?;
            value.setattr("data", data)?;
            value.setattr("kind", rpc_kind)?;
        }
        None => {
            value.setattr("kind", kind.as_str())?;
            if let Some(d) = err.data() {
                value.setattr("data", convert::to_py(py, d)?)?;
            }
        }
    }
    Ok(PyErr::from_value(value))
}

/// `r1.InvalidArgument(message)` for input rejected on this side.
pub fn invalid_argument(message: impl Into<String>) -> Error {
    Error::Core(r1_core::Error::invalid_params(message))
}

/// `r1.ClosedError(message)`.
pub fn closed(message: impl Into<String>) -> Error {
    Error::Core(r1_core::Error::new(ErrorKind::Closed, message))
}

/// Either an r1 error (mapped by kind when it reaches Python) or a Python one
/// (a failed conversion, KeyboardInterrupt from `check_signals`), so `?` works on
/// both inside one function.
#[derive(Debug)]
pub enum Error {
    /// From r1-core.
    Core(r1_core::Error),
    /// Already a Python exception.
    Py(PyErr),
}

impl From<r1_core::Error> for Error {
    fn from(e: r1_core::Error) -> Error {
        Error::Core(e)
    }
}

impl From<PyErr> for Error {
    fn from(e: PyErr) -> Error {
        Error::Py(e)
    }
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        match e {
            Error::Py(e) => e,
            Error::Core(c) => Python::attach(|py| core_to_pyerr(py, &c)),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs one binding entry point with a panic boundary: a Rust panic becomes an
/// `r1.R1Error` of kind `internal` (never pyo3's `PanicException`, which derives
/// from `BaseException` and slips past `except Exception`).
pub fn guard<T>(f: impl FnOnce() -> Result<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(PyErr::from),
        Err(payload) => Err(PyErr::from(Error::Core(r1_core::Error::internal(format!(
            "internal error (a bug in r1): {}; please report it",
            panic_message(payload.as_ref())
        ))))),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Locks `m`, ignoring poisoning: a panic while it was held was already reported
/// by [`guard`], and the data it protects (a reader, a client handle) stays usable
/// or reports its own closed state.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Test hook: the exception r1 raises for an error of `kind` (an `ErrorKind` name
/// such as `"not_found"`) with `message`; `kind == "rpc"` builds a daemon error of
/// `code`. Lets the test suite check the whole kind → class table, including kinds
/// no Python call can provoke on demand.
#[pyfunction]
#[pyo3(signature = (kind, message, code = None))]
pub fn _error_for_kind(
    py: Python<'_>,
    kind: &str,
    message: &str,
    code: Option<i64>,
) -> PyResult<Py<PyAny>> {
    guard(|| {
        let k: ErrorKind = serde_json::from_value(serde_json::Value::from(kind))
            .map_err(|_| invalid_argument(format!("unknown error kind {kind:?}")))?;
        let err = if k == ErrorKind::Rpc {
            let code = code.unwrap_or(r1_core::rpc::codes::INTERNAL_ERROR);
            r1_core::Error::from_rpc(r1_core::RpcErrorObject {
                code,
                message: message.to_owned(),
                data: Some(serde_json::json!({
                    "kind": r1_core::rpc::codes::kind_for(code).as_str()
                })),
            })
        } else {
            r1_core::Error::new(k, message)
        };
        Ok(core_to_pyerr(py, &err).into_value(py).into_any())
    })
}

/// Test hook: panics inside the panic boundary, to show that a Rust panic reaches
/// Python as `r1.R1Error` (kind `internal`), never as `PanicException`.
#[pyfunction]
pub fn _panic(message: &str) -> PyResult<()> {
    guard(|| -> Result<()> { std::panic::panic_any(message.to_owned()) })
}
