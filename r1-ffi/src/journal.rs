//! `r1_journal_*`: read a session journal directly from its file, with no daemon
//! (DESIGN §5 readers), over [`r1_core::journal::Reader`].

use std::ffi::c_char;
use std::path::Path;
use std::time::Duration;

use r1_core::journal::Reader;

use crate::boundary::{self, Failure, FfiResult, out_arg, str_arg, string_to_c, wait_ms};
use crate::handle;
use crate::status::R1Status;

/// An open journal file. Opaque to C.
pub struct R1Journal {
    reader: Reader,
}

/// With no timeout, `r1_journal_next_wait` waits in slices this long so the loop
/// stays responsive to the file being truncated or replaced.
const FOREVER_SLICE: Duration = Duration::from_secs(3600);

/// Opens a journal file (`<home>/sessions/<id>/journal.ndjson`) for reading.
///
/// Works with no daemon and while a daemon appends. The file must be a regular file
/// owned by the caller with no group/other permission bits (r1 opens its files with
/// `O_NOFOLLOW`). On success `*out` receives a handle freed with `r1_journal_free`;
/// on error it is set to NULL. The reader starts before the first record.
///
/// Thread-safety: a journal handle belongs to one thread at a time.
/// Returns `R1_STATUS_OK`, `R1_STATUS_NULL_ARGUMENT`, `R1_STATUS_INVALID_ARGUMENT`
/// (path not UTF-8), `R1_STATUS_NOT_FOUND`, `R1_STATUS_UNSAFE` (symlink, other
/// owner, group/other bits), `R1_STATUS_IO`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_journal_open(
    path: *const c_char,
    out: *mut *mut R1Journal,
) -> R1Status {
    boundary::status(|| {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_arg(out, "out") }?;
        // SAFETY: the caller's contract above.
        let path = unsafe { str_arg(path, "path") }?;
        let reader = Reader::open(Path::new(path))?;
        *out = handle::into_raw(R1Journal { reader });
        Ok(())
    })
}

/// Positions the journal so the next record read has seq > `since_seq` (0 = from the
/// start). Bisects byte offsets: no full scan. Past the last record, only records
/// appended later are read.
///
/// Thread-safety: one thread at a time per handle.
/// Returns `R1_STATUS_OK`, `R1_STATUS_NULL_ARGUMENT`, `R1_STATUS_IO`.
///
/// # Safety
/// `j` is NULL or a live handle from `r1_journal_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_journal_seek(j: *mut R1Journal, since_seq: u64) -> R1Status {
    boundary::status(|| {
        // SAFETY: the caller's contract above.
        let j = unsafe { handle::as_mut(j, "j") }?;
        j.reader.seek(since_seq)?;
        Ok(())
    })
}

/// Reads the next complete, verified record.
///
/// On `R1_STATUS_OK` `*record_json_out` receives the record's line as stored —
/// `{"v":1,"seq":N,"crc":"…","at":"…","kind":"…","data":{…}}` — freed with
/// `r1_string_free`; otherwise it is set to NULL. An incomplete last line (a writer
/// mid-append) is not returned yet and is not an error.
///
/// Thread-safety: one thread at a time per handle.
/// Returns `R1_STATUS_OK`, `R1_STATUS_CLOSED` (at the end: no further complete
/// record now; call again or use `r1_journal_next_wait` to follow),
/// `R1_STATUS_JOURNAL_DAMAGED` (a bad line; the last error names line, offset and
/// why, and the reader stays before it), `R1_STATUS_PROTOCOL` (a newer format
/// version), `R1_STATUS_NULL_ARGUMENT`, `R1_STATUS_IO`.
///
/// # Safety
/// `j` is NULL or a live handle; `record_json_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_journal_next(
    j: *mut R1Journal,
    record_json_out: *mut *mut c_char,
) -> R1Status {
    boundary::status(|| {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_arg(record_json_out, "record_json_out") }?;
        // SAFETY: the caller's contract above.
        let j = unsafe { handle::as_mut(j, "j") }?;
        match j.reader.next_record()? {
            Some(rec) => {
                *out = string_to_c(rec.line().to_owned())?;
                Ok(())
            }
            None => Err(Failure::new(
                R1Status::Closed,
                format!("end of journal {}", j.reader.path().display()),
            )),
        }
    })
}

/// Like `r1_journal_next`, but waits up to `timeout_ms` milliseconds for a record to
/// be appended (follow mode). `timeout_ms` < 0 waits without limit; 0 checks once.
///
/// Thread-safety: one thread at a time per handle; a blocked call cannot be woken
/// from another thread (use a finite timeout in a loop to stay cancellable).
/// Returns `R1_STATUS_OK` (a record in `*record_json_out`, freed with
/// `r1_string_free`), `R1_STATUS_TIMEOUT` (nothing appended in time),
/// `R1_STATUS_CLOSED` (the file was truncated below the read position, replaced or
/// removed: reopen it), `R1_STATUS_JOURNAL_DAMAGED`, `R1_STATUS_PROTOCOL`,
/// `R1_STATUS_NULL_ARGUMENT`, `R1_STATUS_IO`.
///
/// # Safety
/// `j` is NULL or a live handle; `record_json_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_journal_next_wait(
    j: *mut R1Journal,
    timeout_ms: i32,
    record_json_out: *mut *mut c_char,
) -> R1Status {
    boundary::status(|| {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_arg(record_json_out, "record_json_out") }?;
        // SAFETY: the caller's contract above.
        let j = unsafe { handle::as_mut(j, "j") }?;
        let rec = match wait_ms(timeout_ms) {
            Some(t) => j.reader.next_wait(t)?,
            None => loop {
                if let Some(r) = j.reader.next_wait(FOREVER_SLICE)? {
                    break Some(r);
                }
            },
        };
        match rec {
            Some(rec) => {
                *out = string_to_c(rec.line().to_owned())?;
                Ok(())
            }
            None => Err(Failure::new(
                R1Status::Timeout,
                format!(
                    "no record appended to {} within {timeout_ms} ms",
                    j.reader.path().display()
                ),
            )),
        }
    })
}

/// Scans the whole file (independently of the read position) and reports what it
/// holds: `{"records": N, "last_seq": S, "pending_bytes": B, "damage": null |
/// {"line", "offset", "reason"}}`.
///
/// The report goes to `*report_json_out` (freed with `r1_string_free`) both when the
/// journal is intact (`R1_STATUS_OK`) and when it is damaged
/// (`R1_STATUS_JOURNAL_DAMAGED`, the last error naming the first bad line and why —
/// a line of a newer format version counts as damage here too). On any other status
/// it is NULL.
///
/// Thread-safety: one thread at a time per handle.
/// Returns `R1_STATUS_OK`, `R1_STATUS_JOURNAL_DAMAGED`, `R1_STATUS_NULL_ARGUMENT`,
/// `R1_STATUS_IO`.
///
/// # Safety
/// `j` is NULL or a live handle; `report_json_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_journal_verify(
    j: *mut R1Journal,
    report_json_out: *mut *mut c_char,
) -> R1Status {
    boundary::status(|| {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_arg(report_json_out, "report_json_out") }?;
        // SAFETY: the caller's contract above.
        let j = unsafe { handle::as_mut(j, "j") }?;
        verify(j, out)
    })
}

fn verify(j: &mut R1Journal, out: &mut *mut c_char) -> FfiResult<()> {
    let report = j.reader.verify()?;
    let json =
        serde_json::to_string(&report).map_err(|e| Failure::new(R1Status::Panic, e.to_string()))?;
    *out = string_to_c(json)?;
    match &report.damage {
        None => Ok(()),
        Some(d) => Err(Failure::new(
            R1Status::JournalDamaged,
            d.to_error(j.reader.path()).to_string(),
        )),
    }
}

/// Closes a journal handle. NULL is a no-op. The handle must not be used afterwards.
///
/// # Safety
/// `j` is NULL or a live handle not in use by another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_journal_free(j: *mut R1Journal) {
    // SAFETY: the caller's contract above.
    boundary::quiet((), || unsafe { handle::free(j) })
}
