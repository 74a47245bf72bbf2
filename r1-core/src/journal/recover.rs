//! Recovery of a journal at open (DESIGN §5). (Implemented by the journal work.)

use std::path::PathBuf;

use serde::Serialize;

/// A torn tail that recovery cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repair {
    /// Bytes removed from the end.
    pub dropped_bytes: u64,
    /// Lines (complete or not) removed.
    pub dropped_lines: u64,
    /// The last record kept.
    pub last_good_seq: u64,
    /// The epoch recorded in the `journal.repaired` record.
    pub epoch: String,
    /// Where the removed bytes were saved.
    pub corrupt_path: PathBuf,
}

/// Damage recovery must not cut: a bad line followed by a good one, or a newer `v`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// 1-based line number of the first bad line.
    pub line: u64,
    /// Byte offset of that line.
    pub offset: u64,
    /// Why it is bad (crc mismatch, seq gap, duplicate seq, bad prefix, newer version …).
    pub reason: String,
}

/// What opening a journal found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// Records readable (for an intact journal, equals `last_seq`).
    pub record_count: u64,
    /// The last valid seq.
    pub last_seq: u64,
    /// The current epoch.
    pub epoch: String,
    /// True when a matching clean marker let open skip the tail check.
    pub clean: bool,
    /// A torn tail was cut.
    pub repaired: Option<Repair>,
    /// Damage was found; the journal is read-only.
    pub damage: Option<Damage>,
}
