//! The panic boundary, the thread-local last error, and argument/return conversions.
//!
//! Every export runs its body through [`status`] or [`quiet`] (rustls-ffi's
//! `ffi_panic_boundary!` pattern): a panic is caught with `catch_unwind` and becomes
//! [`R1Status::Panic`], so unwinding never crosses into C. Failures become a status
//! plus a message in this thread's last-error slot, read by `r1_last_error_message`.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{self, AssertUnwindSafe};

use crate::status::{R1Status, status_for};

/// A failure on its way to C: the status to return and the last-error text.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: R1Status,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: R1Status, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn null(what: &str) -> Failure {
        Failure::new(R1Status::NullArgument, format!("{what} is NULL"))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(R1Status::InvalidArgument, message)
    }
}

impl From<r1_core::Error> for Failure {
    fn from(e: r1_core::Error) -> Failure {
        // DESIGN §10: for an RPC error the last error is the JSON-RPC error object.
        if let Some(obj) = e.rpc() {
            let json = serde_json::to_string(obj).unwrap_or_else(|_| {
                format!(r#"{{"code":{},"message":"unprintable error"}}"#, obj.code)
            });
            return Failure::new(R1Status::Rpc, json);
        }
        Failure::new(status_for(e.kind()), e.to_string())
    }
}

/// Results inside export bodies.
pub(crate) type FfiResult<T> = Result<T, Failure>;

thread_local! {
    /// This thread's last error. A `CString` so `r1_last_error_message` can hand out a
    /// pointer into it; replaced (invalidating that pointer) by the next fallible call.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: &str) {
    // A NUL inside the message would truncate it in C; show it instead.
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // `try_with`: during thread teardown the slot may be gone; nothing to report to then.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut s) = slot.try_borrow_mut() {
            *s = Some(c);
        }
    });
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut s) = slot.try_borrow_mut() {
            *s = None;
        }
    });
}

/// A pointer to this thread's last error, or to `""` when there is none.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| match slot.try_borrow() {
            Ok(s) => s.as_ref().map(|c| c.as_ptr()),
            Err(_) => None,
        })
        .ok()
        .flatten()
        .unwrap_or(c"".as_ptr())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panic in r1 (a bug; please report it): {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panic in r1 (a bug; please report it): {s}")
    } else {
        "panic in r1 (a bug; please report it)".to_owned()
    }
}

/// Runs the body of a status-returning export: clears the last error, catches panics,
/// records failures.
///
/// `AssertUnwindSafe` is sound here because after a panic the caller gets
/// `R1_STATUS_PANIC`, documented as "only free the handle involved": no state a panic
/// may have left half-updated is relied on again.
pub(crate) fn status(body: impl FnOnce() -> FfiResult<()>) -> R1Status {
    clear_last_error();
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => R1Status::Ok,
        Ok(Err(f)) => {
            set_last_error(&f.message);
            f.status
        }
        Err(payload) => {
            let msg = panic_message(payload.as_ref());
            // Dropping a payload can itself panic (a payload type with a panicking
            // Drop); keep even that on this side.
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
            set_last_error(&msg);
            R1Status::Panic
        }
    }
}

/// Runs the body of an export that returns nothing or a fixed value (`_free`,
/// `_close`): panics are swallowed (there is no status to report them with) and the
/// last error is left alone, so freeing a string does not erase the message being read.
pub(crate) fn quiet<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
            fallback
        }
    }
}

/// A required C string argument as `&str` (NULL → NULL_ARGUMENT, not UTF-8 →
/// INVALID_ARGUMENT).
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives the call.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> FfiResult<&'a str> {
    // SAFETY: forwarded from the caller's contract.
    unsafe { opt_str_arg(p, what) }?.ok_or_else(|| Failure::null(what))
}

/// An optional C string argument (NULL → `None`).
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives the call.
pub(crate) unsafe fn opt_str_arg<'a>(p: *const c_char, what: &str) -> FfiResult<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str()
        .map(Some)
        .map_err(|e| Failure::invalid(format!("{what} is not valid UTF-8: {e}")))
}

/// Checks an out-pointer and sets `*out` to NULL, so every error path leaves it NULL.
///
/// # Safety
/// `out` is NULL or valid for writes of a pointer.
pub(crate) unsafe fn out_arg<'a, T>(out: *mut *mut T, what: &str) -> FfiResult<&'a mut *mut T> {
    if out.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-NULL and writable per the caller's contract.
    let slot = unsafe { &mut *out };
    *slot = std::ptr::null_mut();
    Ok(slot)
}

/// A Rust string as a C string owned by the caller (freed with `r1_string_free`).
pub(crate) fn string_to_c(s: String) -> FfiResult<*mut c_char> {
    CString::new(s).map(CString::into_raw).map_err(|_| {
        Failure::new(
            R1Status::Protocol,
            "a value to return contains a NUL byte, which a C string cannot carry",
        )
    })
}

/// Parses an argument that must be JSON.
pub(crate) fn json_arg(text: &str, what: &str) -> FfiResult<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|e| Failure::invalid(format!("{what} is not valid JSON: {e}")))
}

/// A timeout argument in milliseconds: negative = no limit (`None`).
pub(crate) fn wait_ms(timeout_ms: i32) -> Option<std::time::Duration> {
    u64::try_from(timeout_ms)
        .ok()
        .map(std::time::Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        // SAFETY: last_error_ptr always returns a valid NUL-terminated string.
        unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn panic_becomes_status_and_message() {
        let st = status(|| panic!("boom"));
        assert_eq!(st, R1Status::Panic);
        assert!(last().contains("boom"), "{}", last());
        // A later success clears it.
        assert_eq!(status(|| Ok(())), R1Status::Ok);
        assert_eq!(last(), "");
    }

    #[test]
    fn string_panic_payload_and_quiet() {
        let st = status(|| panic!("{}", String::from("formatted")));
        assert_eq!(st, R1Status::Panic);
        assert!(last().contains("formatted"));
        let v = quiet(7, || -> i32 { panic!("x") });
        assert_eq!(v, 7);
        // quiet leaves the last error alone.
        assert!(last().contains("formatted"));
    }

    #[test]
    fn failure_sets_message_and_nul_is_escaped() {
        let st = status(|| Err(Failure::invalid("a\0b")));
        assert_eq!(st, R1Status::InvalidArgument);
        assert_eq!(last(), "a\\0b");
    }

    #[test]
    fn rpc_error_message_is_the_error_object() {
        let e = r1_core::Error::from_rpc(r1_core::RpcErrorObject {
            code: -32001,
            message: "no session".into(),
            data: Some(serde_json::json!({"kind": "not_found"})),
        });
        let f = Failure::from(e);
        assert_eq!(f.status, R1Status::Rpc);
        let v: serde_json::Value = serde_json::from_str(&f.message).unwrap_or_default();
        assert_eq!(v["code"], -32001);
        assert_eq!(v["data"]["kind"], "not_found");
    }

    #[test]
    fn wait_ms_negative_is_unbounded() {
        assert_eq!(wait_ms(-1), None);
        assert_eq!(wait_ms(0), Some(std::time::Duration::ZERO));
        assert_eq!(wait_ms(5), Some(std::time::Duration::from_millis(5)));
    }
}
