//! [`Journal`]: the single writer of one journal file. (Implemented by the journal work.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::record::RawRecord;
use super::recover::RecoveryReport;
use crate::error::{Error, Result};

/// Options for opening or creating a journal.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Group-commit window for non-durable records (default 100 ms).
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
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// Creates a new journal at `path` (0600, `O_NOFOLLOW`; its directory must exist),
    /// whose first record is `first_kind`/`first_data` at seq 1 with epoch `epoch`,
    /// fsyncs the file and its directory, and returns the writer.
    pub fn create(
        path: &Path,
        epoch: &str,
        first_kind: &str,
        first_data: &serde_json::Value,
        opts: WriterOptions,
    ) -> Result<Arc<Journal>> {
        let _ = (epoch, first_kind, first_data, opts);
        Err(Error::internal(format!(
            "journal writer not built yet: {}",
            path.display()
        )))
    }

    /// Opens an existing journal, running recovery (DESIGN §5), and removes its clean
    /// marker (durably) before any append.
    pub fn open(path: &Path, opts: WriterOptions) -> Result<OpenOutcome> {
        let _ = opts;
        Err(Error::internal(format!(
            "journal writer not built yet: {}",
            path.display()
        )))
    }

    /// Appends a record: the line reaches the kernel before this returns, then it is
    /// sent to live subscribers. Durable kinds ([`super::is_durable_kind`]) return only
    /// after an fsync covering them (shared group commit); other kinds are fsync'd by
    /// the flusher within `fsync_interval`. A failed write truncates back to the last
    /// good offset and returns an `Io` error; the journal stays usable.
    pub fn append(&self, kind: &str, data: &serde_json::Value) -> Result<RawRecord> {
        let _ = (kind, data);
        Err(Error::internal("journal writer not built yet"))
    }

    /// Appends like [`Journal::append`] but never fsyncs, even for durable kinds: the
    /// caller makes the record durable with [`Journal::sync_through`] after releasing
    /// its own locks (so concurrent senders share one group-commit fsync).
    pub fn append_deferred(&self, kind: &str, data: &serde_json::Value) -> Result<RawRecord> {
        let _ = (kind, data);
        Err(Error::internal("journal writer not built yet"))
    }

    /// Blocks until every record up to `seq` is fsync'd (joins an fsync in progress
    /// that covers it, or starts one).
    pub fn sync_through(&self, seq: u64) -> Result<()> {
        let _ = seq;
        Ok(())
    }

    /// Atomically (under the append lock) reads the last seq and registers a live
    /// receiver: every record appended after this call is sent to the receiver.
    pub fn subscribe(&self) -> (u64, broadcast::Receiver<RawRecord>) {
        let (_tx, rx) = broadcast::channel(1);
        (0, rx)
    }

    /// The last seq written (0 for none).
    pub fn last_seq(&self) -> u64 {
        0
    }

    /// The current epoch.
    pub fn epoch(&self) -> String {
        String::new()
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fsyncs everything, writes the clean marker `{size, last_seq, epoch}` beside the
    /// journal (`clean`, atomically), and refuses further appends (`Closed`).
    pub fn close(&self) -> Result<()> {
        Ok(())
    }
}
