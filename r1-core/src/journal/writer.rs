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
//!   never trusts a stale one.
//!
//! Live fan-out: `append` sends each record to the broadcast channel while still
//! holding the append lock, after the write; [`Journal::subscribe`] reads the last seq
//! and creates its receiver under the same lock. Subscribers therefore see records in
//! seq order with no gaps other than those tokio reports as `Lagged`. The channel (its
//! ring is `broadcast_capacity` slots, ~230 KiB at the default) exists only while
//! someone subscribes: an idle session with no follower costs a few hundred bytes.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::record::{JOURNAL_VERSION, MAX_LINE_BYTES, RawRecord, is_durable_kind, parse_line};
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
    /// Capacity of the live fan-out channel (records), default 4096.
    pub broadcast_capacity: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            fsync_interval: Duration::from_millis(100),
            broadcast_capacity: 4096,
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
    sync_done: Condvar,
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

/// Bytes above which the encoding buffer is released after an append, so one huge
/// record does not pin megabytes for the life of an idle session.
const KEEP_BUF_BYTES: usize = 64 * 1024;

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
            let journal = Journal::build(path, file, 0, 0, epoch.to_owned(), opts, false);
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
                let journal =
                    Journal::build(path, file, size, last_seq, epoch.clone(), opts, clean);
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
                // DESIGN §5 order: save the tail (fsync file, dir), truncate (fsync),
                // append journal.repaired under a new epoch (fsync).
                let corrupt_path = recover::save_tail(path, &file, keep, size)?;
                file.set_len(keep)
                    .map_err(|e| Error::io("cannot truncate", path, e))?;
                file.sync_all()
                    .map_err(|e| Error::io("cannot fsync", path, e))?;
                let epoch = new_epoch();
                let journal =
                    Journal::build(path, file, keep, last_good_seq, epoch.clone(), opts, true);
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
                recover::remove_marker(path)?;
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

    fn build(
        path: &Path,
        file: File,
        offset: u64,
        last_seq: u64,
        epoch: String,
        opts: WriterOptions,
        synced: bool,
    ) -> Arc<Journal> {
        let synced = if synced { last_seq } else { 0 };
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
                tx: None,
            }),
            written_seq: AtomicU64::new(last_seq),
            sync: Mutex::new(SyncState {
                synced,
                ..SyncState::default()
            }),
            sync_done: Condvar::new(),
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
        if is_durable_kind(kind) || self.opts.fsync_interval.is_zero() {
            self.sync_through(rec.seq)?;
        } else {
            self.schedule_flush(rec.seq);
        }
        Ok(rec)
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
        let rec = {
            let mut st = self.lock_state();
            if st.closed {
                return Err(self.closed_error());
            }
            if st.needs_truncate {
                self.file
                    .set_len(st.offset)
                    .map_err(|e| Error::new(ErrorKind::Io, self.io_message("truncate", &e)))?;
                st.needs_truncate = false;
            }
            let seq = st.last_seq + 1;
            let at = crate::time_fmt::now_millis();
            let State { buf, .. } = &mut *st;
            let body_start = encode_into(buf, seq, &at, kind, data)?;
            let line_len = buf.len() - 1;
            if line_len > MAX_LINE_BYTES {
                st.buf = Vec::new();
                return Err(Error::new(
                    ErrorKind::TooLarge,
                    format!(
                        "a {kind} record of {line_len} bytes is over the {MAX_LINE_BYTES}-byte journal line limit"
                    ),
                ));
            }
            // The encoder is the only source of these bytes (serde_json output and
            // ASCII framing, CRC computed over the body), so the line is built without
            // re-parsing it; tests and debug builds still check every line against
            // the reader's rules.
            debug_assert!(
                parse_line(&st.buf[..line_len]).is_ok(),
                "journal encoder produced an invalid line"
            );
            let text = std::str::from_utf8(&st.buf[..line_len]).map_err(|e| {
                Error::internal(format!("journal encoder produced invalid UTF-8: {e}"))
            })?;
            let rec = RawRecord::from_encoded(seq, text, body_start);
            if let Err(e) = self.file.write_all_at(&st.buf, st.offset) {
                // Cut whatever part of the line landed; if even that fails, the next
                // append retries it (and writes at `offset` regardless).
                st.needs_truncate = self.file.set_len(st.offset).is_err();
                return Err(Error::new(ErrorKind::Io, self.io_message("append to", &e)));
            }
            st.offset += st.buf.len() as u64;
            st.last_seq = seq;
            self.written_seq.store(seq, Ordering::SeqCst);
            if st.buf.capacity() > KEEP_BUF_BYTES {
                st.buf = Vec::new();
            }
            if let Some(tx) = &st.tx
                && tx.send(rec.clone()).is_err()
            {
                // No receiver left: free the ring until someone subscribes again.
                st.tx = None;
            }
            rec
        };
        Ok(rec)
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
            if st.synced >= seq {
                return Ok(());
            }
            if let Some(covers) = st.running {
                let generation = st.generation;
                st = self.sync_done.wait(st).unwrap_or_else(|e| e.into_inner());
                if covers >= seq && st.synced < seq && st.failed_generation == generation {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!(
                            "cannot fsync journal {}: a shared fsync failed (see the daemon log)",
                            self.path.display()
                        ),
                    ));
                }
                continue;
            }
            // Everything written before this fsync starts is covered by it.
            let covers = self.written_seq.load(Ordering::SeqCst);
            st.generation += 1;
            let generation = st.generation;
            st.running = Some(covers);
            drop(st);
            let result = self.file.sync_data();
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            st = self.lock_sync();
            st.running = None;
            match result {
                Ok(()) => {
                    if covers > st.synced {
                        st.synced = covers;
                        self.synced_seq.store(covers, Ordering::Release);
                    }
                    self.sync_done.notify_all();
                }
                Err(e) => {
                    st.failed_generation = generation;
                    self.sync_done.notify_all();
                    tracing::error!(path = %self.path.display(), error = %e, "journal fsync failed");
                    return Err(Error::new(ErrorKind::Io, self.io_message("fsync", &e)));
                }
            }
        }
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

    /// The last seq known to be on stable storage.
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
        self.sync_through(last_seq)?;
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
        if self.flush_pending.swap(true, Ordering::SeqCst) {
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
/// Returns where the body (the CRC'd part) starts.
pub(crate) fn encode_into(
    buf: &mut Vec<u8>,
    seq: u64,
    at: &str,
    kind: &str,
    data: &serde_json::Value,
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
    serde_json::to_writer(&mut *buf, at)?;
    buf.extend_from_slice(b",\"kind\":");
    serde_json::to_writer(&mut *buf, kind)?;
    buf.extend_from_slice(b",\"data\":");
    serde_json::to_writer(&mut *buf, data)?;
    buf.push(b'}');
    let crc = crc32c::crc32c(&buf[body_start..]);
    for (i, slot) in buf[crc_at..crc_at + 8].iter_mut().enumerate() {
        *slot = HEX[((crc >> (28 - 4 * i)) & 0xf) as usize];
    }
    buf.push(b'\n');
    Ok(body_start)
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
