//! [`Reader`]: reads a journal with no daemon, while a writer appends. (Implemented by the journal work.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::record::RawRecord;
use super::recover::Damage;
use crate::error::{Error, Result};

/// The result of [`Reader::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Valid records before the first problem (or in all).
    pub records: u64,
    /// The last valid seq.
    pub last_seq: u64,
    /// Bytes of an incomplete final line (pending, not damage).
    pub pending_bytes: u64,
    /// The first bad line, if any.
    pub damage: Option<Damage>,
}

/// A journal reader.
#[derive(Debug)]
pub struct Reader {
    path: PathBuf,
}

impl Reader {
    /// Opens `path` for reading (`O_NOFOLLOW`).
    pub fn open(path: &Path) -> Result<Reader> {
        Err(Error::internal(format!(
            "journal reader not built yet: {}",
            path.display()
        )))
    }

    /// Positions the reader so the next record has seq > `since_seq`, bisecting byte
    /// offsets (no full scan).
    pub fn seek(&mut self, since_seq: u64) -> Result<()> {
        let _ = since_seq;
        Ok(())
    }

    /// The next complete, verified record; `Ok(None)` at the end (an incomplete last
    /// line is pending, not an error). A bad line is `JournalDamaged` naming the line.
    pub fn next_record(&mut self) -> Result<Option<RawRecord>> {
        Ok(None)
    }

    /// Like [`Reader::next_record`] but waits up to `timeout` for a record to land.
    /// Truncation or replacement of the file is an error of kind `Closed` naming it.
    pub fn next_wait(&mut self, timeout: Duration) -> Result<Option<RawRecord>> {
        let _ = timeout;
        Ok(None)
    }

    /// Full scan from the start: counts, last seq, first bad line and why.
    pub fn verify(&mut self) -> Result<VerifyReport> {
        Ok(VerifyReport {
            records: 0,
            last_seq: 0,
            pending_bytes: 0,
            damage: None,
        })
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
