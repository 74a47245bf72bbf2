//! Opaque handles: C sees `typedef struct R1Journal R1Journal;` and a pointer; Rust
//! owns a `Box` of the real value behind it (as rustls-ffi's `Castable` boxes do).
//!
//! A handle is created by `Box::into_raw` in its constructor and destroyed exactly
//! once by its `_free` (or `r1_daemon_stop`), which takes the `Box` back.

use crate::boundary::{Failure, FfiResult};

/// Hands a new handle to C.
pub(crate) fn into_raw<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Borrows a handle for the duration of a call (NULL → NULL_ARGUMENT).
///
/// # Safety
/// `p` is NULL or a pointer returned by [`into_raw`] for `T` and not yet freed; for
/// `&mut` use, no other thread uses it concurrently (the header's thread rules).
pub(crate) unsafe fn as_ref<'a, T>(p: *const T, what: &str) -> FfiResult<&'a T> {
    // SAFETY: per the caller's contract, a non-NULL `p` is a live Box allocation.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::null(what))
}

/// Mutably borrows a handle for the duration of a call (NULL → NULL_ARGUMENT).
///
/// # Safety
/// As for [`as_ref`], and the handle is used by one thread at a time.
pub(crate) unsafe fn as_mut<'a, T>(p: *mut T, what: &str) -> FfiResult<&'a mut T> {
    // SAFETY: per the caller's contract.
    unsafe { p.as_mut() }.ok_or_else(|| Failure::null(what))
}

/// Takes a handle back from C and drops it; NULL is a no-op.
///
/// # Safety
/// `p` is NULL or a pointer returned by [`into_raw`] for `T` and not yet freed; no
/// other thread is using it.
pub(crate) unsafe fn free<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: per the caller's contract, `p` came from Box::into_raw and is live.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// Takes a handle back from C without dropping it (`r1_daemon_stop` needs the value).
///
/// # Safety
/// As for [`free`].
pub(crate) unsafe fn take<T>(p: *mut T) -> Option<Box<T>> {
    if p.is_null() {
        None
    } else {
        // SAFETY: per the caller's contract.
        Some(unsafe { Box::from_raw(p) })
    }
}
