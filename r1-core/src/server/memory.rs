//! Gives memory freed by departed connections back to the system.
//!
//! glibc keeps freed heap memory for reuse: only free space at the very top of a
//! heap is returned on `free`, and a thousand closed WebSockets (or deleted
//! sessions) leave their freed memory scattered between live allocations. The
//! daemon's resident set then stays at its peak long after the peers left (the
//! benchmark's row 10: 44 MiB with 1,000 subscribers, 40 MiB after subscribers and
//! sessions were all gone, against 16 MiB idle). `malloc_trim(0)` walks the arenas
//! and hands every free page back (`MADV_DONTNEED`): 40 → 12 MiB there.
//!
//! Streaming connections (WebSocket and unix socket) ask for a release when they
//! end.
//!
//! A trim costs a walk of every arena under its lock, so it is not done per
//! connection: a close asks for one, and at most one runs per [`QUIET`] — after
//! [`QUIET`], so a burst of closes is trimmed once, when most of it is over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long after a release is asked for it runs (and the most often it runs).
pub(crate) const QUIET: Duration = Duration::from_millis(500);

/// Set while a release is scheduled: the requests in between share it.
static SCHEDULED: AtomicBool = AtomicBool::new(false);

/// Asks for freed memory to go back to the system soon (module docs). Call from
/// inside the runtime when something that held a lot of memory went away.
pub(crate) fn release_soon() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    if SCHEDULED.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        SCHEDULED.store(false, Ordering::Release);
        return;
    };
    rt.spawn(async {
        tokio::time::sleep(QUIET).await;
        // Cleared before the trim: memory freed while it runs gets the next one.
        SCHEDULED.store(false, Ordering::Release);
        // The walk takes the arenas' locks; keep it off the runtime's workers.
        let _ = tokio::task::spawn_blocking(release_now).await;
    });
}

/// Returns free heap pages to the system now; true if any were.
pub(crate) fn release_now() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free pages of malloc's own arenas; it
        // takes their locks itself and touches no live allocation.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
