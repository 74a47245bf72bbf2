//! [`Journal`]: the single writer of one journal file (DESIGN §5).
//!
//! Durability model:
//!
//! * Every append is encoded into a per-journal buffer (reused, so the hot path
//!   allocates only the shared line handed to subscribers) and written with one
//!   `pwrite(2)` at the journal's known end before `append` returns: a process crash
//!   loses nothing. Nothing is ever buffered in user space.
//! * Durable kinds ([`super::is_durable_kind`]) then wait for an fsync that covers them.
//!   fsyncs are shared (group commit): [`Journal::sync_through`] joins an fsync already
//!   running if that fsync started after the record was written, else starts one. The
//!   fsync (`fdatasync`) runs on the shared descriptor **outside** the append lock, so
//!   appends continue while the disk works, and 64 concurrent durable appenders need a
//!   handful of fsyncs, not 64.
//! * Other records are fsync'd by the process-wide flusher thread (`flusher.rs`)
//!   within `fsync_interval`, through the same group commit.
//! * A failed write (ENOSPC, EIO, EFBIG …) truncates the file back to the last good
//!   offset and returns an [`ErrorKind::Io`] error; the seq is not used, and the next
//!   append writes at the good offset again (so even a failed truncation cannot leave
//!   garbage between two records).
//! * [`Journal::close`] fsyncs and writes the clean marker; [`Journal::open`] removes a
//!   marker durably before returning a writable journal, so a crash after reopening
//!   never trusts a stale one. [`Journal::open_many`] / [`Journal::close_many`] do the
//!   same for a whole daemon's journals with their fsyncs overlapped (one at a time,
//!   1,000 sessions wait for 1,000 directory fsyncs in a row).
//!
//! Live fan-out: `append` sends each record to the broadcast channel while still
//! holding the append lock, after the write; [`Journal::subscribe`] reads the last seq
//! and creates its receiver under the same lock. Subscribers therefore see records in
//! seq order with no gaps other than those tokio reports as `Lagged`. The channel (its
//! ring is `broadcast_capacity` slots of 64 bytes, 16 KiB at the default) exists only while
//! someone subscribes: an idle session with no follower costs a few hundred bytes.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

use super::record::{JOURNAL_VERSION, MAX_LINE_BYTES, RawRecord, is_durable_kind};
use super::recover::{self, Plan, REPAIRED_KIND, RecoveryReport, Repair};
use crate::error::{Error, ErrorKind, Result};
use crate::paths::{check_private_file, fsync_dir};

#[path = "flusher.rs"]
mod flusher;

pub use super::recover::{CleanMarker, clean_marker_path, new_epoch};

/// Options for opening or creating a journal.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Group-commit window for non-durable records (default 100 ms). Zero fsyncs
    /// every record before `append` returns.
    pub fsync_interval: Duration,
    /// Capacity of the live fan-out channel (records), default 256. A subscriber
    /// that falls further behind reads the gap from the file (see
    /// `session::subscribe`), so this bounds memory, not delivery: at 4096 slots
    /// (256 KiB per followed session) 1,000 followed sessions cost 250 MiB.
    pub broadcast_capacity: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            fsync_interval: Duration::from_millis(100),
            broadcast_capacity: 256,
        }
    }
}

/// The result of [`Journal::open`].
#[derive(Debug)]
pub struct OpenOutcome {
    /// The writer, or `None` when the journal is damaged or of a newer version (read-only).
    pub journal: Option<Arc<Journal>>,
    /// What recovery found and did.
    pub report: RecoveryReport,
}

/// One journal file's writer. Thread-safe; share it as `Arc<Journal>`.
pub struct Journal {
    path: PathBuf,
    /// One descriptor for writes (`pwrite` under `state`) and fsyncs (outside it).
    file: File,
    epoch: String,
    opts: WriterOptions,
    /// The append lock.
    state: Mutex<State>,
    /// The last seq whose `write` returned; stored under `state`, read by fsyncers to
    /// know what an fsync starting now covers.
    written_seq: AtomicU64,
    sync: Mutex<SyncState>,
    /// Wakes blocking waiters when an fsync ends.
    sync_done: Condvar,
    /// The number of the latest fsync that ended, for async waiters.
    fsync_finished: watch::Sender<u64>,
    /// Mirror of `SyncState::synced` for lock-free reads.
    synced_seq: AtomicU64,
    fsyncs: AtomicU64,
    /// True while this journal is registered with the flusher.
    flush_pending: AtomicBool,
    /// Handed to the flusher, which must not keep a journal alive.
    me: Weak<Journal>,
}

struct State {
    /// End of the last good record: where the next one is written.
    offset: u64,
    last_seq: u64,
    closed: bool,
    /// A failed write could not be truncated away; retried before the next write.
    needs_truncate: bool,
    /// Encoding buffer, reused across appends.
    buf: Vec<u8>,
    clock: AtClock,
    /// [`MAX_LINE_BYTES`]; a field so unit tests can exercise the limit cheaply.
    max_line: usize,
    /// Present only while someone subscribed (see the module docs).
    tx: Option<broadcast::Sender<RawRecord>>,
}

#[derive(Default)]
struct SyncState {
    /// Every seq up to this is on stable storage.
    synced: u64,
    /// `Some(covers)` while an fsync runs that covers seqs up to `covers`.
    running: Option<u64>,
    /// Number of the latest fsync started.
    generation: u64,
    /// Number of the latest fsync that failed (0: none).
    failed_generation: u64,
}

/// What a caller of [`Journal::sync_through`] does next (see `Journal::next_turn`).
enum SyncTurn {
    /// Its records are durable.
    Done,
    /// Fsync number `generation` is running; wait for it to end, then look again.
    /// `covers_seq`: that fsync started after the caller's record was written.
    Wait { generation: u64, covers_seq: bool },
    /// No fsync was running: this caller runs number `generation`.
    Lead { generation: u64 },
}

/// An fsync claimed by an async caller and handed to the blocking pool. If the pool
/// drops it unrun (runtime shutdown), it runs on drop: a claimed fsync that never
/// ends would leave every waiter of that journal waiting forever.
struct ClaimedFsync {
    journal: Option<Arc<Journal>>,
    generation: u64,
}

impl ClaimedFsync {
    fn run(mut self) -> Result<()> {
        match self.journal.take() {
            Some(j) => j.run_fsync(self.generation),
            None => Ok(()),
        }
    }
}

impl Drop for ClaimedFsync {
    fn drop(&mut self) {
        if let Some(j) = self.journal.take() {
            let _ = j.run_fsync(self.generation);
        }
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("epoch", &self.epoch)
            .field("last_seq", &self.last_seq())
            .field("synced_seq", &self.synced_seq())
            .finish()
    }
}

/// Bytes above which the encoding buffer is released after an append, so one big
/// record does not pin its size for the life of an idle session (the budget is
/// ~20 KiB per idle session; typical records are a few hundred bytes).
const KEEP_BUF_BYTES: usize = 8 * 1024;

impl Journal {
    /// Creates a new journal at `path` (0600, `O_NOFOLLOW`; its directory must exist),
    /// whose first record is `first_kind`/`first_data` at seq 1 with epoch `epoch`,
    /// fsyncs the file and its directory, and returns the writer.
    ///
    /// The epoch is stored as the first record's `data.epoch` (that is where
    /// [`Journal::open`] finds it): it is added when `first_data` is an object without
    /// one, and must match when present. An empty `epoch` with no `data.epoch` (the
    /// bus log) is allowed; such a journal's epoch is `""`. An existing file is a
    /// `Conflict`; a stale clean marker beside it is removed.
    pub fn create(
        path: &Path,
        epoch: &str,
        first_kind: &str,
        first_data: &serde_json::Value,
        opts: WriterOptions,
    ) -> Result<Arc<Journal>> {
        let data = with_epoch(first_data, epoch)?;
        let file = open_journal_file(path, true)?;
        let result = (|| {
            recover::remove_marker(path)?;
            let journal = Journal::build(path, file, 0, 0, epoch.to_owned(), opts);
            let rec = journal.append(first_kind, &data)?;
            journal.sync_through(rec.seq)?;
            fsync_dir(recover::dir_of(path))?;
            Ok(journal)
        })();
        if result.is_err() {
            // Do not leave a half-made journal that would make a retry a Conflict.
            let _ = std::fs::remove_file(path);
        }
        result
    }

    /// Opens an existing journal, running recovery (DESIGN §5), and removes its clean
    /// marker (durably) before any append.
    ///
    /// See [`super::recover`] for exactly what is checked. A damaged journal or one of
    /// a newer format opens read-only: `journal` is `None` and `report.damage` says
    /// where and why ([`super::Damage::to_error`] turns it into a `JournalDamaged` or
    /// `UnsupportedVersion` error). A missing file is `NotFound`.
    pub fn open(path: &Path, opts: WriterOptions) -> Result<OpenOutcome> {
        let file = open_journal_file(path, false)?;
        match recover::plan(path, &file)? {
            Plan::ReadOnly(report) => {
                if let Some(d) = &report.damage {
                    tracing::warn!(
                        path = %path.display(),
                        line = d.line,
                        offset = d.offset,
                        reason = %d.reason,
                        "journal opened read-only"
                    );
                }
                Ok(OpenOutcome {
                    journal: None,
                    report,
                })
            }
            Plan::Ready {
                size,
                last_seq,
                epoch,
                clean,
            } => {
                recover::remove_marker(path)?;
                let journal = Journal::build(path, file, size, last_seq, epoch.clone(), opts);
                Ok(OpenOutcome {
                    journal: Some(journal),
                    report: RecoveryReport {
                        record_count: last_seq,
                        last_seq,
                        epoch,
                        clean,
                        repaired: None,
                        damage: None,
                    },
                })
            }
            Plan::Repair {
                keep,
                size,
                last_good_seq,
                dropped_lines,
            } => {
                // A (non-matching) marker goes first, so no crash in what follows can
                // leave one beside a file it does not describe.
                recover::remove_marker(path)?;
                // DESIGN §5 order: save the tail (fsync file, dir), truncate (fsync),
                // append journal.repaired under a new epoch (fsync).
                let corrupt_path = recover::save_tail(path, &file, keep, size)?;
                file.set_len(keep)
                    .map_err(|e| Error::io("cannot truncate", path, e))?;
                file.sync_all()
                    .map_err(|e| Error::io("cannot fsync", path, e))?;
                let epoch = new_epoch();
                let journal = Journal::build(path, file, keep, last_good_seq, epoch.clone(), opts);
                let dropped_bytes = size - keep;
                journal.append(
                    REPAIRED_KIND,
                    &serde_json::json!({
                        "dropped_bytes": dropped_bytes,
                        "dropped_lines": dropped_lines,
                        "last_good_seq": last_good_seq,
                        "epoch": epoch,
                    }),
                )?;
                tracing::warn!(
                    path = %path.display(),
                    dropped_bytes,
                    dropped_lines,
                    last_good_seq,
                    corrupt = %corrupt_path.display(),
                    "journal torn tail cut"
                );
                let last_seq = journal.last_seq();
                Ok(OpenOutcome {
                    journal: Some(journal),
                    report: RecoveryReport {
                        record_count: last_seq,
                        last_seq,
                        epoch: epoch.clone(),
                        clean: false,
                        repaired: Some(Repair {
                            dropped_bytes,
                            dropped_lines,
                            last_good_seq,
                            epoch,
                            corrupt_path,
                        }),
                        damage: None,
                    },
                })
            }
        }
    }

    /// [`Journal::open`] for many journals at once (daemon start), results in the
    /// order of `paths`. Each journal goes through exactly the steps of `open`, in the
    /// same order; they run on a few worker threads so that their fsyncs (removing
    /// clean markers, repairs) overlap and the file system can commit them together:
    /// one by one, a restart of 1,000 cleanly closed sessions waits for 1,000
    /// directory fsyncs in a row.
    pub fn open_many(paths: &[PathBuf], opts: &WriterOptions) -> Vec<Result<OpenOutcome>> {
        run_parallel(paths, |p| Journal::open(p, opts.clone()))
    }

    /// [`Journal::close`] for many journals at once (daemon shutdown), results in the
    /// order given; overlapping fsyncs as [`Journal::open_many`] does.
    pub fn close_many(journals: &[Arc<Journal>]) -> Vec<Result<()>> {
        run_parallel(journals, |j| j.close())
    }

    fn build(
        path: &Path,
        file: File,
        offset: u64,
        last_seq: u64,
        epoch: String,
        opts: WriterOptions,
    ) -> Arc<Journal> {
        // What recovery found counts as synced: fdatasync is not range-limited, so the
        // next fsync (any durable append, the flusher, close) covers those bytes too,
        // and an fsync per journal at open would cost a restart of 1,000 sessions
        // seconds for nothing a power loss could still take away.
        let synced = last_seq;
        Arc::new_cyclic(|me| Journal {
            path: path.to_path_buf(),
            file,
            epoch,
            opts,
            state: Mutex::new(State {
                offset,
                last_seq,
                closed: false,
                needs_truncate: false,
                buf: Vec::new(),
                clock: AtClock::default(),
                max_line: MAX_LINE_BYTES,
                tx: None,
            }),
            written_seq: AtomicU64::new(last_seq),
            sync: Mutex::new(SyncState {
                synced,
                ..SyncState::default()
            }),
            sync_done: Condvar::new(),
            fsync_finished: watch::Sender::new(0),
            synced_seq: AtomicU64::new(synced),
            fsyncs: AtomicU64::new(0),
            flush_pending: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    /// Appends a record: the line reaches the kernel before this returns, then it is
    /// sent to live subscribers. Durable kinds ([`super::is_durable_kind`]) return only
    /// after an fsync covering them (shared group commit); other kinds are fsync'd by
    /// the flusher within `fsync_interval`. A failed write truncates back to the last
    /// good offset and returns an `Io` error; the journal stays usable.
    ///
    /// Errors: `Closed` after [`Journal::close`]; `TooLarge` for a line over
    /// [`super::record::MAX_LINE_BYTES`] (nothing written); `Io` when the write fails,
    /// or when a durable record was written but its fsync failed.
    pub fn append(&self, kind: &str, data: &serde_json::Value) -> Result<RawRecord> {
        let rec = self.write_record(kind, data)?;
        if self.must_sync(rec.seq, [kind]) {
            self.sync_through(rec.seq)?;
        }
        Ok(rec)
    }

    /// [`Journal::append`] for async callers: the same write, and the fsync (when
    /// the kind needs one) awaited as [`Journal::sync_through_async`] does.
    pub async fn append_async(
        self: &Arc<Self>,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<RawRecord> {
        let rec = self.write_record(kind, data)?;
        if self.must_sync(rec.seq, [kind]) {
            self.sync_through_async(rec.seq).await?;
        }
        Ok(rec)
    }

    /// Appends several records with one `write(2)`: all of them, with consecutive
    /// seqs in the order given, or (on any error, such as one record over the line
    /// limit) none. Returns only after an fsync covering them when any of their
    /// kinds needs one, as [`Journal::append`] does for one record.
    pub fn append_batch(&self, records: &[(&str, &serde_json::Value)]) -> Result<Vec<RawRecord>> {
        let recs = self.write_records(records)?;
        if let Some(last) = recs.last()
            && self.must_sync(last.seq, records.iter().map(|(kind, _)| *kind))
        {
            self.sync_through(last.seq)?;
        }
        Ok(recs)
    }

    /// [`Journal::append_batch`] for async callers (the fsync, when needed, awaited
    /// as [`Journal::sync_through_async`] does).
    pub async fn append_batch_async(
        self: &Arc<Self>,
        records: &[(&str, &serde_json::Value)],
    ) -> Result<Vec<RawRecord>> {
        let recs = self.write_records(records)?;
        if let Some(last) = recs.last()
            && self.must_sync(last.seq, records.iter().map(|(kind, _)| *kind))
        {
            self.sync_through_async(last.seq).await?;
        }
        Ok(recs)
    }

    /// After records of `kinds` up to `seq` were written: true when the append must
    /// fsync them before returning (a durable kind, or no group-commit window);
    /// otherwise leaves them to the flusher and returns false.
    fn must_sync<'k>(&self, seq: u64, kinds: impl IntoIterator<Item = &'k str>) -> bool {
        if self.opts.fsync_interval.is_zero() || kinds.into_iter().any(is_durable_kind) {
            return true;
        }
        self.schedule_flush(seq);
        false
    }

    /// Appends like [`Journal::append`] but never waits for an fsync, even for durable
    /// kinds: the caller makes the record durable with [`Journal::sync_through`] after
    /// releasing its own locks, so concurrent senders share one group-commit fsync.
    /// (The flusher still covers it within the interval.)
    pub fn append_deferred(&self, kind: &str, data: &serde_json::Value) -> Result<RawRecord> {
        let rec = self.write_record(kind, data)?;
        self.schedule_flush(rec.seq);
        Ok(rec)
    }

    /// Writes one line under the append lock and hands it to live subscribers.
    fn write_record(&self, kind: &str, data: &serde_json::Value) -> Result<RawRecord> {
        let mut st = self.lock_state();
        self.ready_to_write(&mut st)?;
        let seq = st.last_seq + 1;
        let rec = encode_record(&mut st, seq, kind, data)?;
        let State {
            buf,
            offset,
            needs_truncate,
            ..
        } = &mut *st;
        self.write_at_end(*offset, needs_truncate, buf)?;
        let len = buf.len() as u64;
        self.committed(&mut st, len, std::slice::from_ref(&rec));
        Ok(rec)
    }

    /// Writes several lines with one `pwrite` under the append lock, then hands them
    /// to live subscribers in order: all of them or, on any error, none (nothing is
    /// written and no seq is used).
    fn write_records(&self, records: &[(&str, &serde_json::Value)]) -> Result<Vec<RawRecord>> {
        let mut st = self.lock_state();
        self.ready_to_write(&mut st)?;
        let mut batch = Vec::new();
        let mut recs = Vec::with_capacity(records.len());
        for (i, (kind, data)) in records.iter().enumerate() {
            let seq = st.last_seq + 1 + i as u64;
            recs.push(encode_record(&mut st, seq, kind, data)?);
            batch.extend_from_slice(&st.buf);
        }
        if recs.is_empty() {
            return Ok(recs);
        }
        let State {
            offset,
            needs_truncate,
            ..
        } = &mut *st;
        self.write_at_end(*offset, needs_truncate, &batch)?;
        self.committed(&mut st, batch.len() as u64, &recs);
        Ok(recs)
    }

    /// Refuses writes after close, and cuts a failed write's leftovers first.
    fn ready_to_write(&self, st: &mut State) -> Result<()> {
        if st.closed {
            return Err(self.closed_error());
        }
        if st.needs_truncate {
            self.file
                .set_len(st.offset)
                .map_err(|e| Error::new(ErrorKind::Io, self.io_message("truncate", &e)))?;
            st.needs_truncate = false;
        }
        Ok(())
    }

    /// Writes `bytes` at the journal's end (`offset`). On failure, cuts whatever part
    /// landed; if even that fails, `needs_truncate` makes the next append retry it
    /// (and that append writes at `offset` regardless).
    fn write_at_end(&self, offset: u64, needs_truncate: &mut bool, bytes: &[u8]) -> Result<()> {
        if let Err(e) = self.file.write_all_at(bytes, offset) {
            *needs_truncate = self.file.set_len(offset).is_err();
            return Err(Error::new(ErrorKind::Io, self.io_message("append to", &e)));
        }
        Ok(())
    }

    /// After `len` bytes holding `recs` were written: moves the end past them and
    /// hands them to live subscribers.
    fn committed(&self, st: &mut State, len: u64, recs: &[RawRecord]) {
        let Some(last) = recs.last() else { return };
        st.offset += len;
        st.last_seq = last.seq;
        self.written_seq.store(last.seq, Ordering::SeqCst);
        if st.buf.capacity() > KEEP_BUF_BYTES {
            st.buf = Vec::new();
        }
        if let Some(tx) = &st.tx {
            for rec in recs {
                if tx.send(rec.clone()).is_err() {
                    // No receiver left: free the ring until someone subscribes again.
                    st.tx = None;
                    break;
                }
            }
        }
    }

    /// Blocks until every record up to `seq` is fsync'd (joins an fsync in progress
    /// that covers it, or starts one).
    ///
    /// A `seq` beyond the last written one means "everything written so far". An
    /// fsync failure is returned to every caller it covered.
    pub fn sync_through(&self, seq: u64) -> Result<()> {
        let seq = seq.min(self.written_seq.load(Ordering::SeqCst));
        if seq == 0 || self.synced_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let mut st = self.lock_sync();
        loop {
            match self.next_turn(&mut st, seq) {
                SyncTurn::Done => return Ok(()),
                SyncTurn::Wait {
                    generation,
                    covers_seq,
                } => {
                    st = self.sync_done.wait(st).unwrap_or_else(|e| e.into_inner());
                    if let Some(e) = self.shared_failure(&st, seq, generation, covers_seq) {
                        return Err(e);
                    }
                }
                SyncTurn::Lead { generation } => {
                    drop(st);
                    self.run_fsync(generation)?;
                    st = self.lock_sync();
                }
            }
        }
    }

    /// [`Journal::sync_through`] for async callers, without a thread per caller.
    ///
    /// Why: with a blocking wait, each of N concurrent durable acks parked a thread
    /// of the blocking pool until its group commit ended, and the hand-offs (wake a
    /// pool thread, wake it again when the fsync ends, wake the task) bounded the ack
    /// rate well below what the disk allows. Here the one caller that starts an fsync
    /// runs it on one blocking-pool thread; every other caller awaits its end.
    pub async fn sync_through_async(self: &Arc<Self>, seq: u64) -> Result<()> {
        let seq = seq.min(self.written_seq.load(Ordering::SeqCst));
        if seq == 0 || self.synced_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        loop {
            let turn = self.next_turn(&mut self.lock_sync(), seq);
            let (generation, covers_seq) = match turn {
                SyncTurn::Done => return Ok(()),
                SyncTurn::Wait {
                    generation,
                    covers_seq,
                } => (generation, covers_seq),
                SyncTurn::Lead { generation } => {
                    let claimed = ClaimedFsync {
                        journal: Some(Arc::clone(self)),
                        generation,
                    };
                    match tokio::task::spawn_blocking(move || claimed.run()).await {
                        // It covered every seq written when it started, `seq` too.
                        Ok(result) => return result,
                        // The runtime is shutting down and dropped the task: the
                        // claim ran its fsync when dropped, so only wait for its end.
                        Err(_) => (generation, true),
                    }
                }
            };
            let mut finished = self.fsync_finished.subscribe();
            // Fails only once the sender is gone, which `self` keeps alive.
            let _ = finished.wait_for(|&done| done >= generation).await;
            let st = self.lock_sync();
            if let Some(e) = self.shared_failure(&st, seq, generation, covers_seq) {
                return Err(e);
            }
        }
    }

    /// Decides, under the sync lock, what a caller that needs `seq` durable does
    /// next; a `Lead` turn has claimed the next fsync and must run it.
    fn next_turn(&self, st: &mut SyncState, seq: u64) -> SyncTurn {
        if st.synced >= seq {
            return SyncTurn::Done;
        }
        if let Some(covers) = st.running {
            return SyncTurn::Wait {
                generation: st.generation,
                covers_seq: covers >= seq,
            };
        }
        // What is written now is covered; `run_fsync` raises this when it starts.
        st.generation += 1;
        st.running = Some(self.written_seq.load(Ordering::SeqCst));
        SyncTurn::Lead {
            generation: st.generation,
        }
    }

    /// Runs the fsync a `Lead` turn claimed and tells every waiter how it went.
    ///
    /// It covers every record written before it starts, not only those written at
    /// the claim: an async leader's claim waits for a blocking-pool thread, and the
    /// appends of that moment then share this fsync instead of needing the next.
    fn run_fsync(&self, generation: u64) -> Result<()> {
        let covers = {
            let mut st = self.lock_sync();
            let covers = self.written_seq.load(Ordering::SeqCst);
            st.running = Some(covers);
            covers
        };
        let result = self.file.sync_data();
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.finish_fsync(generation, covers, result)
    }

    /// Records how fsync `generation` ended and wakes its waiters, blocking and async.
    fn finish_fsync(
        &self,
        generation: u64,
        covers: u64,
        result: std::io::Result<()>,
    ) -> Result<()> {
        let mut st = self.lock_sync();
        st.running = None;
        let outcome = match result {
            Ok(()) => {
                if covers > st.synced {
                    st.synced = covers;
                    self.synced_seq.store(covers, Ordering::Release);
                }
                Ok(())
            }
            Err(e) => {
                st.failed_generation = generation;
                tracing::error!(path = %self.path.display(), error = %e, "journal fsync failed");
                Err(Error::new(ErrorKind::Io, self.io_message("fsync", &e)))
            }
        };
        drop(st);
        self.sync_done.notify_all();
        self.fsync_finished.send_replace(generation);
        outcome
    }

    /// The error a waiter owes its caller once fsync `generation` (which covered its
    /// `seq` if `covers_seq`) has ended, if that fsync failed.
    fn shared_failure(
        &self,
        st: &SyncState,
        seq: u64,
        generation: u64,
        covers_seq: bool,
    ) -> Option<Error> {
        (covers_seq && st.synced < seq && st.failed_generation == generation).then(|| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "cannot fsync journal {}: a shared fsync failed (see the daemon log)",
                    self.path.display()
                ),
            )
        })
    }

    /// Atomically (under the append lock) reads the last seq and registers a live
    /// receiver: every record appended after this call is sent to the receiver.
    ///
    /// After [`Journal::close`] the receiver is already closed.
    pub fn subscribe(&self) -> (u64, broadcast::Receiver<RawRecord>) {
        let mut st = self.lock_state();
        let last = st.last_seq;
        if st.closed {
            let (_tx, rx) = broadcast::channel(1);
            return (last, rx);
        }
        let cap = self.opts.broadcast_capacity.clamp(1, 1 << 20);
        let tx = st.tx.get_or_insert_with(|| broadcast::channel(cap).0);
        (last, tx.subscribe())
    }

    /// The last seq written (0 for none).
    pub fn last_seq(&self) -> u64 {
        self.written_seq.load(Ordering::SeqCst)
    }

    /// The last seq known to be on stable storage. Records found at open count as
    /// synced (the next fsync of any kind covers them too, `fdatasync` being
    /// whole-file); appends advance it through fsyncs.
    pub fn synced_seq(&self) -> u64 {
        self.synced_seq.load(Ordering::Acquire)
    }

    /// How many fsyncs of the journal file this writer has issued (group commit makes
    /// this far smaller than the number of durable appends under concurrency).
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// The journal's size in bytes (the end of its last record).
    pub fn size(&self) -> u64 {
        self.lock_state().offset
    }

    /// True after [`Journal::close`].
    pub fn is_closed(&self) -> bool {
        self.lock_state().closed
    }

    /// The current epoch.
    pub fn epoch(&self) -> String {
        self.epoch.clone()
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fsyncs everything, writes the clean marker `{size, last_seq, epoch}` beside the
    /// journal (`clean`, atomically), and refuses further appends (`Closed`).
    ///
    /// Live receivers see the channel close after the last record. Closing twice is a
    /// no-op. If the fsync fails no marker is written (the next open checks the tail).
    pub fn close(&self) -> Result<()> {
        let (size, last_seq) = {
            let mut st = self.lock_state();
            if st.closed {
                return Ok(());
            }
            st.closed = true;
            st.tx = None;
            if st.needs_truncate {
                st.needs_truncate = self.file.set_len(st.offset).is_err();
            }
            (st.offset, st.last_seq)
        };
        let before = self.fsync_count();
        self.sync_through(last_seq)?;
        if self.fsync_count() == before {
            // Nothing new to cover, but bytes recovered at open (left in the page cache
            // by a crashed process) must be on disk before a marker vouches for them.
            self.file
                .sync_data()
                .map_err(|e| Error::new(ErrorKind::Io, self.io_message("fsync", &e)))?;
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        recover::write_marker(
            &self.path,
            &CleanMarker {
                size,
                last_seq,
                epoch: Some(self.epoch.clone()),
            },
        )
    }

    /// Called by the flusher when this journal's deadline is due.
    fn flush_now(&self) {
        // Clear the flag first: an append after this re-registers, and one before it
        // is covered because its write happened before the fsync below starts.
        self.flush_pending.store(false, Ordering::SeqCst);
        let target = self.written_seq.load(Ordering::SeqCst);
        if let Err(e) = self.sync_through(target) {
            tracing::error!(path = %self.path.display(), error = %e, "journal group commit failed");
        }
    }

    fn schedule_flush(&self, seq: u64) {
        // The plain load keeps the common case (already registered) free of a
        // read-modify-write; the swap decides races.
        if self.flush_pending.load(Ordering::SeqCst)
            || self.flush_pending.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let due = Instant::now() + self.opts.fsync_interval;
        if !flusher::register(self.me.clone(), due) {
            self.flush_pending.store(false, Ordering::SeqCst);
            if let Err(e) = self.sync_through(seq) {
                tracing::error!(path = %self.path.display(), error = %e, "journal fsync failed");
            }
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State inconsistent in a way that
        // matters more than refusing to serve: offset/last_seq only change together
        // after a successful write.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_sync(&self) -> MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn closed_error(&self) -> Error {
        Error::new(
            ErrorKind::Closed,
            format!("journal {} is closed", self.path.display()),
        )
    }

    fn io_message(&self, what: &str, e: &std::io::Error) -> String {
        format!("cannot {what} journal {}: {e}", self.path.display())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Keep the promise of `fsync_interval` even when a journal is dropped before
        // the flusher reaches it (the flusher only holds a Weak).
        let closed = self.state.get_mut().map(|s| s.closed).unwrap_or(true);
        if !closed && self.synced_seq() < self.last_seq() {
            let _ = self.file.sync_data();
        }
    }
}

/// Workers for [`Journal::open_many`] / [`Journal::close_many`]: enough concurrent
/// fsyncs for the file system to batch them, few enough to stay cheap.
const BATCH_WORKERS: usize = 32;

/// Runs `f` over `items` on up to [`BATCH_WORKERS`] scoped threads; results in order.
pub(crate) fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    let workers = items.len().min(BATCH_WORKERS);
    if workers <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, Result<R>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            break;
                        };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    // A panic in `f` is a bug; its items get an error below.
                    Vec::new()
                })
            })
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    let mut results: Vec<Result<R>> = Vec::with_capacity(items.len());
    let mut it = done.into_iter().peekable();
    for i in 0..items.len() {
        match it.next_if(|(j, _)| *j == i) {
            Some((_, r)) => results.push(r),
            None => results.push(Err(Error::internal("journal batch worker panicked"))),
        }
    }
    results
}

/// Opens the journal file read/write with `O_NOFOLLOW` (creating it, 0600 and
/// exclusively, when `create`), then checks owner and mode on the descriptor.
fn open_journal_file(path: &Path, create: bool) -> Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if create {
        o.create_new(true);
    }
    o.mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    let file = o
        .open(path)
        .map_err(|e| match (e.raw_os_error(), e.kind()) {
            (Some(libc::ELOOP), _) => Error::new(
                ErrorKind::Unsafe,
                format!(
                    "{} is a symlink; r1 never follows symlinks for its own files; remove it",
                    path.display()
                ),
            ),
            (_, std::io::ErrorKind::AlreadyExists) => Error::new(
                ErrorKind::Conflict,
                format!("journal {} already exists", path.display()),
            ),
            _ => Error::io("cannot open journal", path, e),
        })?;
    check_private_file(&file, path)?;
    Ok(file)
}

/// `first_data` with `epoch` recorded as `data.epoch` (see [`Journal::create`]).
fn with_epoch<'a>(
    first_data: &'a serde_json::Value,
    epoch: &str,
) -> Result<Cow<'a, serde_json::Value>> {
    match first_data {
        serde_json::Value::Object(map) => match map.get("epoch") {
            Some(serde_json::Value::String(e)) if e == epoch => Ok(Cow::Borrowed(first_data)),
            Some(other) => Err(Error::invalid_params(format!(
                "the first record's data.epoch ({other}) differs from the journal epoch {epoch:?}"
            ))),
            None if epoch.is_empty() => Ok(Cow::Borrowed(first_data)),
            None => {
                let mut map = map.clone();
                map.insert(
                    "epoch".to_owned(),
                    serde_json::Value::String(epoch.to_owned()),
                );
                Ok(Cow::Owned(serde_json::Value::Object(map)))
            }
        },
        _ if epoch.is_empty() => Ok(Cow::Borrowed(first_data)),
        _ => Err(Error::invalid_params(
            "the first record's data must be an object to carry the journal epoch",
        )),
    }
}

/// Encodes one line (with its `\n`) into `buf`, byte-for-byte what
/// [`super::record::encode_line`] produces, without its intermediate strings.
/// Returns where the body starts. (The writer calls [`encode_line_into`] directly.)
#[cfg(test)]
pub(crate) fn encode_into(
    buf: &mut Vec<u8>,
    seq: u64,
    at: &str,
    kind: &str,
    data: &serde_json::Value,
) -> Result<usize> {
    let plain = at
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
    encode_line_into(buf, seq, at, plain, kind, data, MAX_LINE_BYTES)
}

/// Encodes record `seq` into `st.buf` (replacing what it held) and returns it.
fn encode_record(
    st: &mut State,
    seq: u64,
    kind: &str,
    data: &serde_json::Value,
) -> Result<RawRecord> {
    let max_line = st.max_line;
    let State { buf, clock, .. } = st;
    let body_start = match encode_line_into(buf, seq, clock.now(), true, kind, data, max_line) {
        Ok(b) => b,
        Err(e) => {
            // A refused record may have grown the buffer to the line limit.
            st.buf = Vec::new();
            return Err(e);
        }
    };
    let line_len = st.buf.len() - 1;
    // serde_json writes UTF-8, so this only fails on an encoder bug; checked before
    // writing so the file never holds a line our reader would reject.
    let line = std::str::from_utf8(&st.buf[..line_len])
        .map_err(|e| Error::internal(format!("journal encoder produced invalid utf-8: {e}")))?;
    Ok(RawRecord::from_encoded(seq, line, body_start))
}

/// [`encode_into`], told whether `at` needs JSON escaping (the writer's clock never
/// does, and checking it per append is measurable). A line (without its `\n`) over
/// `max_line` bytes is `TooLarge`, detected while serialising, so a huge value is
/// never buffered whole.
fn encode_line_into(
    buf: &mut Vec<u8>,
    seq: u64,
    at: &str,
    at_is_plain: bool,
    kind: &str,
    data: &serde_json::Value,
    max_line: usize,
) -> Result<usize> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.clear();
    buf.extend_from_slice(b"{\"v\":");
    push_decimal(buf, JOURNAL_VERSION);
    buf.extend_from_slice(b",\"seq\":");
    push_decimal(buf, seq);
    buf.extend_from_slice(b",\"crc\":\"");
    let crc_at = buf.len();
    buf.extend_from_slice(b"00000000\",");
    let body_start = buf.len();
    buf.extend_from_slice(b"\"at\":");
    if at_is_plain {
        // Timestamps need no escaping; skip the escaper on the hot path.
        buf.push(b'"');
        buf.extend_from_slice(at.as_bytes());
        buf.push(b'"');
    } else {
        serde_json::to_writer(&mut *buf, at)?;
    }
    buf.extend_from_slice(b",\"kind\":");
    serde_json::to_writer(&mut *buf, kind)?;
    buf.extend_from_slice(b",\"data\":");
    let too_large = || {
        Error::new(
            ErrorKind::TooLarge,
            format!("a {kind} record is over the {max_line}-byte journal line limit"),
        )
    };
    let mut capped = Capped {
        buf: &mut *buf,
        cap: max_line,
    };
    if let Err(e) = serde_json::to_writer(&mut capped, data) {
        return Err(if e.is_io() { too_large() } else { e.into() });
    }
    buf.push(b'}');
    if buf.len() > max_line {
        return Err(too_large());
    }
    let crc = crc32c::crc32c(&buf[body_start..]);
    for (i, slot) in buf[crc_at..crc_at + 8].iter_mut().enumerate() {
        *slot = HEX[((crc >> (28 - 4 * i)) & 0xf) as usize];
    }
    buf.push(b'\n');
    Ok(body_start)
}

/// The `at` timestamp, `2026-05-02T18:30:00.123Z` exactly as
/// [`crate::time_fmt::now_millis`] writes it, with everything up to the second cached:
/// formatting a date costs more than the rest of an append.
struct AtClock {
    secs: u64,
    text: [u8; 24],
}

impl Default for AtClock {
    fn default() -> Self {
        AtClock {
            secs: u64::MAX,
            text: *b"1970-01-01T00:00:00.000Z",
        }
    }
}

impl AtClock {
    fn now(&mut self) -> &str {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since.as_secs();
        if secs != self.secs {
            let prefix = format_seconds_prefix(secs);
            if let Some(dst) = self.text.get_mut(..prefix.len()) {
                dst.copy_from_slice(prefix.as_bytes());
            }
            self.secs = secs;
        }
        let ms = since.subsec_millis();
        self.text[20] = b'0' + (ms / 100 % 10) as u8;
        self.text[21] = b'0' + (ms / 10 % 10) as u8;
        self.text[22] = b'0' + (ms % 10) as u8;
        // ASCII only (digits and `-:T.Z`), so this never fails.
        std::str::from_utf8(&self.text).unwrap_or("1970-01-01T00:00:00.000Z")
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` for a Unix time in seconds (UTC).
fn format_seconds_prefix(secs: u64) -> String {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .filter(|t| (0..=9999).contains(&t.year()))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A `Vec` writer that refuses to grow past `cap` bytes.
struct Capped<'a> {
    buf: &'a mut Vec<u8>,
    cap: usize,
}

impl std::io::Write for Capped<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.cap {
            return Err(std::io::Error::other("over the journal line limit"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
