//! libr1: the C ABI of r1 (DESIGN §10). The header `include/r1.h` is generated from
//! this crate by cbindgen (see `build.rs`) and checked in; the test script fails when
//! regenerating it changes it.
//!
//! Conventions, as in rustls-ffi and Delta Chat:
//!
//! * Opaque handles ([`R1Client`], [`R1Subscription`], [`R1Daemon`], [`R1Journal`]);
//!   constructors fill a trailing `**out` and return an [`R1Status`] with pinned
//!   values. Every `_free` accepts NULL.
//! * Every export runs inside one panic boundary ([`boundary`]): no panic or unwinding
//!   ever crosses into C; a caught panic is `R1_STATUS_PANIC`.
//! * Failures leave a message in a thread-local slot read by
//!   [`r1_last_error_message`]; for `R1_STATUS_RPC` it is the JSON-RPC error object.
//! * Strings returned by r1 are the caller's and go back through [`r1_string_free`].
//! * [`r1_client_call`] reaches every JSON-RPC method, so C needs no per-method twin.
//!
//! Layout: [`status`] (the status enum and the error-kind table), [`boundary`] (panic
//! boundary, last error, argument conversion), [`handle`] (opaque handle ownership),
//! and one module per area: [`discover`], [`client`], [`daemon`], [`journal`].
#![warn(missing_docs)]

use std::ffi::{CStr, c_char};

pub mod boundary;
pub mod client;
pub mod daemon;
pub mod discover;
pub mod handle;
pub mod journal;
pub mod status;

pub use client::{R1Client, R1Subscription};
pub use daemon::R1Daemon;
pub use journal::R1Journal;
pub use status::R1Status;

/// Passed as `since_seq` to `r1_client_subscribe`: live records only, no replay.
pub const R1_SINCE_NOW: u64 = u64::MAX;

/// The version as a C string with its NUL, built at compile time.
const VERSION_C: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => c"unknown",
    };

/// The version of this libr1 (`"0.1.0"`), a static string: never free it.
///
/// Compare with the `R1_VERSION_MAJOR/MINOR/PATCH` macros of the header you compiled
/// against to detect a mismatched library. Thread-safe; never fails.
#[unsafe(no_mangle)]
pub extern "C" fn r1_version() -> *const c_char {
    VERSION_C.as_ptr()
}

/// The message of the last failed r1 call on this thread, or `""` when the last
/// status-returning call succeeded. Never NULL.
///
/// For `R1_STATUS_RPC` it is the JSON-RPC error object as JSON, e.g.
/// `{"code":-32001,"message":"…","data":{"kind":"not_found"}}`; otherwise one
/// lowercase line naming what failed and, where there is one, the fix.
///
/// Owned by r1: do not free it. Valid until this thread's next call of a function
/// that returns `R1Status` (each of them resets it); `r1_version`, `r1_string_free`
/// and the `_free`/`_close` functions leave it alone. Thread-safe (one slot per thread).
#[unsafe(no_mangle)]
pub extern "C" fn r1_last_error_message() -> *const c_char {
    boundary::quiet(c"".as_ptr(), boundary::last_error_ptr)
}

/// Frees a string returned by r1 (through a `char **` out-parameter). NULL is a
/// no-op. Never pass a string r1 did not allocate, nor free one twice; never free
/// `r1_version()` or `r1_last_error_message()` with it.
///
/// Thread-safe: a string may be freed on any thread.
///
/// # Safety
/// `s` is NULL or a string returned by an r1 out-parameter and not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_string_free(s: *mut c_char) {
    boundary::quiet((), || {
        if !s.is_null() {
            // SAFETY: per the contract, `s` came from CString::into_raw in this library.
            drop(unsafe { std::ffi::CString::from_raw(s) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_the_crate_version() {
        // SAFETY: r1_version returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(r1_version()) };
        assert_eq!(v.to_str().ok(), Some(env!("CARGO_PKG_VERSION")));
    }
}
