//! The process-wide group-commit flusher: one thread for every journal.
//!
//! A non-durable append registers its journal here (once per dirty period, through
//! [`Journal`]'s `flush_pending` flag) with a deadline of `now + fsync_interval`. The
//! thread sleeps until the earliest deadline, then fsyncs each due journal through
//! [`Journal::sync_through`], so its fsync is shared with any durable appender that is
//! syncing at the same moment.
//!
//! One thread rather than one per journal: a daemon may hold 1,000 journals and an idle
//! session should cost a few KiB, not a thread stack. The registry holds [`Weak`]
//! references, so it never keeps a dropped journal alive. The thread is started on
//! first use and then sleeps on a condition variable when nothing is dirty.
//!
//! One slow fsync delays the other due journals behind it; that is the price of a
//! single thread, and it only stretches the power-loss window, never loses a write
//! (every record reached the kernel before its `append` returned).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock, Weak};
use std::time::Instant;

use super::Journal;

struct Entry {
    due: Instant,
    /// Registration order, so equal deadlines pop first-come first-served.
    order: u64,
    journal: Weak<Journal>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: `BinaryHeap` is a max-heap and we want the earliest deadline on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .due
            .cmp(&self.due)
            .then_with(|| other.order.cmp(&self.order))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Entry>,
    next_order: u64,
    started: bool,
}

struct Flusher {
    queue: Mutex<Queue>,
    wake: Condvar,
}

static FLUSHER: OnceLock<Flusher> = OnceLock::new();

fn flusher() -> &'static Flusher {
    FLUSHER.get_or_init(|| Flusher {
        queue: Mutex::new(Queue::default()),
        wake: Condvar::new(),
    })
}

/// Asks the flusher to fsync `journal` at `due`. Returns false when the flusher
/// thread cannot be started (the caller then syncs itself).
pub(crate) fn register(journal: Weak<Journal>, due: Instant) -> bool {
    let f = flusher();
    let mut q = f.queue.lock().unwrap_or_else(|e| e.into_inner());
    if !q.started {
        let spawned = std::thread::Builder::new()
            .name("r1-jrnl-flush".to_owned())
            // fsync needs little stack; keep the one thread cheap.
            .stack_size(256 * 1024)
            .spawn(run);
        match spawned {
            Ok(_) => q.started = true,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the journal flusher thread; syncing inline");
                return false;
            }
        }
    }
    let earliest = q.heap.peek().is_none_or(|top| due < top.due);
    let order = q.next_order;
    q.next_order += 1;
    q.heap.push(Entry {
        due,
        order,
        journal,
    });
    drop(q);
    if earliest {
        f.wake.notify_one();
    }
    true
}

fn run() {
    let f = flusher();
    let mut due: Vec<Weak<Journal>> = Vec::new();
    let mut q = f.queue.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        match q.heap.peek() {
            None => {
                q = f.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            Some(top) if top.due > now => {
                let wait = top.due - now;
                q = f
                    .wake
                    .wait_timeout(q, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
                continue;
            }
            Some(_) => {}
        }
        while q.heap.peek().is_some_and(|top| top.due <= now) {
            if let Some(e) = q.heap.pop() {
                due.push(e.journal);
            }
        }
        // Never hold the registry lock across an fsync: appenders register here.
        drop(q);
        for weak in due.drain(..) {
            if let Some(journal) = weak.upgrade() {
                journal.flush_now();
            }
        }
        q = f.queue.lock().unwrap_or_else(|e| e.into_inner());
    }
}
