//! The append-only session journal (DESIGN §5).
//!
//! * [`record`] — the line format (fixed prefix, CRC-32C) and [`RawRecord`].
//! * [`writer`] — [`Journal`]: appends (write before return, fsync for durable kinds,
//!   group commit for the rest), fan-out to live subscribers, clean marker on close.
//! * [`recover`] — what happens when a journal is opened: clean marker, tail check,
//!   torn-tail repair with a new epoch, damage detection.
//! * [`reader`] — [`Reader`]: iterate, `seek(since_seq)` by bisection, `verify()`,
//!   follow; works with no daemon and while a writer appends.

pub mod reader;
pub mod record;
pub mod recover;
pub mod writer;

pub use reader::{Reader, VerifyReport};
pub use record::{
    JOURNAL_VERSION, LineError, RawRecord, Record, is_durable_kind, is_reserved_kind,
};
pub use recover::{Damage, RecoveryReport, Repair};
pub use writer::{Journal, OpenOutcome, WriterOptions};
