//! [`Reader`]: reads a journal with no daemon, while a writer appends (DESIGN §5).
//!
//! * [`Reader::next_record`] iterates complete, verified lines. An incomplete last line
//!   is *pending* (a writer is in the middle of `write(2)`, or crashed there): it is
//!   neither returned nor reported as damage, and is read again on the next call.
//! * [`Reader::seek`] bisects byte offsets: a line starts right after a `\n`, and its
//!   seq is readable from the fixed prefix, so `O(log size)` short reads find any seq.
//! * [`Reader::verify`] is the full scan: every line's prefix, CRC, JSON shape and seq
//!   contiguity, reporting the first bad line and why.
//! * [`Reader::next_wait`] follows the file by polling (no inotify dependency): a
//!   truncation below our position or a replaced/removed path is reported as
//!   [`ErrorKind::Closed`] naming which.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::record::{
    CheckedLine, LineError, MAX_LINE_BYTES, RawRecord, check_line, parse_line, parse_prefix,
};
use super::recover::{self, Damage};
use crate::error::{Error, ErrorKind, Result};
use crate::paths::{OpenMode, open_private};

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

/// How long [`Reader::next_wait`] sleeps between polls: short enough that a follower
/// sees a record within ~10 ms, long enough that an idle follower costs nothing.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Bytes read per `pread` while iterating (grows for longer lines).
const READ_CHUNK: usize = 64 * 1024;

/// Below this many bytes between the bisection bounds, [`Reader::seek`] stops bisecting
/// and reads forward (a few hundred short lines: cheaper than more random reads).
const SEEK_LINEAR_WINDOW: u64 = 64 * 1024;

/// A journal reader.
pub struct Reader {
    path: PathBuf,
    file: File,
    scanner: LineScanner,
    /// The seq of the record before our position, when known: the next record must be
    /// `prev_seq + 1`. `None` right after a seek that landed on its first candidate.
    prev_seq: Option<u64>,
    /// 1-based number of the next line, when known (unknown after a seek).
    next_line_no: Option<u64>,
    /// Identity of the file we opened, to notice replacement at the path.
    dev: u64,
    ino: u64,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.path)
            .field("offset", &self.scanner.pos())
            .field("prev_seq", &self.prev_seq)
            .finish()
    }
}

impl Reader {
    /// Opens `path` for reading (`O_NOFOLLOW`).
    pub fn open(path: &Path) -> Result<Reader> {
        let file = open_private(path, OpenMode::Read)?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("cannot fstat", path, e))?;
        Ok(Reader {
            path: path.to_path_buf(),
            file,
            scanner: LineScanner::new(0, READ_CHUNK),
            prev_seq: Some(0),
            next_line_no: Some(1),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Positions the reader so the next record has seq > `since_seq`, bisecting byte
    /// offsets (no full scan).
    ///
    /// Bisection reads the seq from each probed line's prefix only; the record the
    /// reader lands on is fully verified by the next [`Reader::next_record`]. When
    /// `since_seq` is at or past the last record, the reader is positioned after the
    /// last complete line, so it yields only records appended later.
    pub fn seek(&mut self, since_seq: u64) -> Result<()> {
        if since_seq == 0 {
            self.scanner.set_pos(0);
            self.prev_seq = Some(0);
            self.next_line_no = Some(1);
            return Ok(());
        }
        let size = self.file_len()?;
        // Invariant: `lo` is a line start whose seq is <= since_seq (or 0, the first
        // line), and no line starting at or after `hi` holds the target's start
        // except `hi` itself.
        let mut lo: u64 = 0;
        let mut hi: u64 = size;
        while hi - lo > SEEK_LINEAR_WINDOW {
            let mid = lo + (hi - lo) / 2;
            match next_line_start(&self.file, mid, hi)
                .map_err(|e| Error::io("cannot read", &self.path, e))?
            {
                None => hi = mid,
                Some((start, seq)) if seq <= since_seq => lo = start,
                Some((start, _)) => hi = start,
            }
        }
        // Read forward from `lo` to the first line whose seq is > since_seq.
        self.scanner.set_pos(lo);
        let mut prev: Option<u64> = None;
        let mut skipped: u64 = 0;
        let mut landed = false;
        loop {
            let here = self.scanner.pos();
            let item = self
                .scanner
                .next(&self.file)
                .map_err(|e| Error::io("cannot read", &self.path, e))?;
            match item {
                Next::Line { line, .. } => match parse_prefix(line) {
                    Ok((_, seq, _, _)) if seq <= since_seq => {
                        prev = Some(seq);
                        skipped += 1;
                    }
                    // Either the target, or a line we cannot read the seq of: land
                    // there so next_record reports it instead of skipping it silently.
                    _ => {
                        self.scanner.set_pos(here);
                        landed = true;
                        break;
                    }
                },
                Next::TooLong { .. } => {
                    self.scanner.set_pos(here);
                    landed = true;
                    break;
                }
                Next::Pending { .. } | Next::Eof => break,
            }
        }
        // Seqs are contiguous from 1, so the record we land on must be since_seq + 1
        // (a gap there is damage, reported by next_record); at the end, the next one
        // must follow the last we saw.
        self.prev_seq = if landed {
            prev.or(Some(since_seq))
        } else {
            prev
        };
        self.next_line_no = (lo == 0).then_some(1 + skipped);
        Ok(())
    }

    /// The next complete, verified record; `Ok(None)` at the end (an incomplete last
    /// line is pending, not an error). A bad line is `JournalDamaged` naming the line.
    ///
    /// A line of a newer format version is `UnsupportedVersion`. On an error the
    /// reader does not move past the bad line, so calling again repeats the error.
    pub fn next_record(&mut self) -> Result<Option<RawRecord>> {
        let here = self.scanner.pos();
        let item = self
            .scanner
            .next(&self.file)
            .map_err(|e| Error::io("cannot read", &self.path, e))?;
        let (offset, parsed) = match item {
            Next::Line { offset, line } => (offset, parse_line(line)),
            Next::TooLong { offset, .. } => (offset, Err(LineError::TooLong)),
            Next::Pending { .. } | Next::Eof => return Ok(None),
        };
        let result = match parsed {
            Ok(raw) => match self.prev_seq {
                Some(prev) if raw.seq != prev + 1 => Err(seq_reason(prev + 1, raw.seq)),
                _ => Ok(raw),
            },
            Err(e) => Err(recover::line_error_reason(&e)),
        };
        match result {
            Ok(raw) => {
                self.prev_seq = Some(raw.seq);
                self.next_line_no = self.next_line_no.map(|n| n + 1);
                Ok(Some(raw))
            }
            Err(reason) => {
                self.scanner.set_pos(here);
                let damage = Damage {
                    line: self.next_line_no.unwrap_or(0),
                    offset,
                    reason,
                };
                Err(damage.to_error(&self.path))
            }
        }
    }

    /// Like [`Reader::next_record`] but waits up to `timeout` for a record to land.
    /// Truncation or replacement of the file is an error of kind `Closed` naming it.
    ///
    /// Records still readable from the file we opened are delivered before a
    /// replacement is reported. Polls every ~10 ms.
    pub fn next_wait(&mut self, timeout: Duration) -> Result<Option<RawRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(rec) = self.next_record()? {
                return Ok(Some(rec));
            }
            self.check_still_same()?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }

    /// Full scan from the start: counts, last seq, first bad line and why.
    ///
    /// Independent of the reader's position. A complete bad line anywhere (even the
    /// last) is reported; an incomplete last line is `pending_bytes`.
    pub fn verify(&mut self) -> Result<VerifyReport> {
        let scan =
            recover::full_scan(&self.file).map_err(|e| Error::io("cannot read", &self.path, e))?;
        Ok(VerifyReport {
            records: scan.records,
            last_seq: scan.last_seq,
            pending_bytes: if scan.first_bad.is_none() {
                scan.pending_bytes
            } else {
                0
            },
            damage: scan.first_bad,
        })
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The byte offset of the next line to be read.
    pub fn offset(&self) -> u64 {
        self.scanner.pos()
    }

    fn file_len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|e| Error::io("cannot fstat", &self.path, e))?
            .len())
    }

    /// Reports a truncation below our position, or a path that no longer names the
    /// file we opened.
    fn check_still_same(&self) -> Result<()> {
        let size = self.file_len()?;
        let pos = self.scanner.pos();
        if size < pos {
            return Err(Error::new(
                ErrorKind::Closed,
                format!(
                    "journal {} was truncated to {size} bytes, below the read position {pos}; reopen and seek",
                    self.path.display()
                ),
            ));
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => Ok(()),
            Ok(_) => Err(Error::new(
                ErrorKind::Closed,
                format!(
                    "journal {} was replaced by another file; reopen it",
                    self.path.display()
                ),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::new(
                ErrorKind::Closed,
                format!("journal {} was removed", self.path.display()),
            )),
            Err(e) => Err(Error::io("cannot stat", &self.path, e)),
        }
    }
}

/// The reason text for a seq that is not `expected` (shared with recovery and verify).
pub(crate) fn seq_reason(expected: u64, found: u64) -> String {
    if found < expected {
        format!("duplicated seq: expected {expected}, found {found} again")
    } else {
        format!("seq gap: expected {expected}, found {found}")
    }
}

/// Index of the first `\n` in `hay` (the `memchr` crate's vectorised search:
/// scanning is the hot loop of every full read).
pub(crate) fn find_newline(hay: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', hay)
}

/// How [`walk_verified`] ended.
#[derive(Debug)]
pub(crate) enum WalkEnd {
    /// Every complete line verified (an incomplete last line is pending, as for
    /// [`Reader::next_record`]).
    Intact,
    /// The first bad line, as [`Reader::next_record`] would name it.
    Damaged(Damage),
}

/// Visits every record of `file` in order, verified exactly as [`Reader::next_record`]
/// verifies them (prefix, CRC, shape, seqs contiguous from 1), and stops at the
/// first bad line. No line is copied: this is the scan a restart runs over every
/// journal. `size_hint` (the file's size) sizes the read buffer.
pub(crate) fn walk_verified(
    file: &File,
    size_hint: u64,
    mut visit: impl FnMut(&CheckedLine<'_>),
) -> std::io::Result<WalkEnd> {
    // One read for a typical journal, at most 1 MiB at a time for a large one.
    let chunk =
        usize::try_from(size_hint.saturating_add(1)).map_or(WALK_CHUNK, |n| n.min(WALK_CHUNK));
    let mut scanner = LineScanner::new(0, chunk);
    let mut prev_seq = 0u64;
    let mut line_no = 0u64;
    loop {
        line_no += 1;
        let (offset, reason) = match scanner.next(file)? {
            Next::Line { offset, line } => match check_line(line) {
                Ok(checked) if checked.seq == prev_seq + 1 => {
                    prev_seq = checked.seq;
                    visit(&checked);
                    continue;
                }
                Ok(checked) => (offset, seq_reason(prev_seq + 1, checked.seq)),
                Err(e) => (offset, recover::line_error_reason(&e)),
            },
            Next::TooLong { offset, .. } => {
                (offset, recover::line_error_reason(&LineError::TooLong))
            }
            Next::Pending { .. } | Next::Eof => {
                return Ok(WalkEnd::Intact);
            }
        };
        return Ok(WalkEnd::Damaged(Damage {
            line: line_no,
            offset,
            reason,
        }));
    }
}

/// Largest read [`walk_verified`] makes.
const WALK_CHUNK: usize = 1 << 20;

/// Reads at `offset` until `buf` is full or EOF; returns the bytes read.
pub(crate) fn read_at_full(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The first line start `L` with `from <= L < limit` whose prefix parses, and its
/// seq. A line starts at 0 or right after a `\n`; a raw `\n` never occurs inside a
/// record (JSON escapes it), so every `\n{"v":` is a line start.
fn next_line_start(file: &File, from: u64, limit: u64) -> std::io::Result<Option<(u64, u64)>> {
    const PROBE: usize = 4096;
    // Enough bytes after a line start to hold the longest prefix (20-digit seq).
    const PREFIX_MAX: usize = 64;
    let mut buf = vec![0u8; PROBE + PREFIX_MAX];
    // Start one byte early so a `\n` right before `from` counts.
    let mut at = from.saturating_sub(1);
    if from == 0 {
        let n = read_at_full(file, &mut buf[..PREFIX_MAX], 0)?;
        if let Ok((_, seq, _, _)) = parse_prefix(&buf[..n]) {
            return Ok(Some((0, seq)));
        }
        at = 0;
    }
    while at < limit {
        let n = read_at_full(file, &mut buf, at)?;
        if n == 0 {
            return Ok(None);
        }
        let mut i = 0;
        // Only newlines in the first PROBE bytes: the rest is look-ahead for a prefix.
        let scan_end = n.min(PROBE);
        while let Some(k) = find_newline(&buf[i..scan_end]) {
            let start = at + (i + k) as u64 + 1;
            if start >= limit {
                return Ok(None);
            }
            if let Ok((_, seq, _, _)) = parse_prefix(&buf[i + k + 1..n]) {
                return Ok(Some((start, seq)));
            }
            i += k + 1;
        }
        if n < PROBE {
            return Ok(None);
        }
        at += PROBE as u64;
    }
    Ok(None)
}

/// One step of a [`LineScanner`].
#[derive(Debug)]
pub(crate) enum Next<'a> {
    /// A complete line (without its `\n`) starting at `offset`.
    Line { offset: u64, line: &'a [u8] },
    /// A line longer than [`MAX_LINE_BYTES`] at `offset`, skipped through its `\n`
    /// (or to EOF); `len` bytes including the newline if there was one.
    TooLong { offset: u64, len: u64 },
    /// End of file inside an incomplete line of `len` bytes at `offset`. The scanner
    /// stays before it, so a later call re-reads it (it may be completed, or cut).
    Pending { offset: u64, len: u64 },
    /// End of file at a line boundary.
    Eof,
}

/// Splits a file into lines with `pread`, keeping a buffer that grows to the longest
/// line seen (up to [`MAX_LINE_BYTES`]). Shared by the reader, verify and recovery.
pub(crate) struct LineScanner {
    /// `buf[..filled]` holds file bytes; the rest is room for the next read, kept
    /// between reads so it is zeroed once, not before every `pread`.
    buf: Vec<u8>,
    filled: usize,
    /// File offset of `buf[0]`.
    buf_off: u64,
    /// Index in `buf` of the next line's first byte.
    start: usize,
    /// Bytes after `start` already searched for a newline (avoids quadratic rescans
    /// of a long line arriving in pieces).
    searched: usize,
    chunk: usize,
}

impl LineScanner {
    pub(crate) fn new(offset: u64, chunk: usize) -> LineScanner {
        LineScanner {
            buf: Vec::new(),
            filled: 0,
            buf_off: offset,
            start: 0,
            searched: 0,
            chunk: chunk.max(4096),
        }
    }

    /// The file offset of the next line.
    pub(crate) fn pos(&self) -> u64 {
        self.buf_off + self.start as u64
    }

    /// Moves to `offset`, keeping buffered bytes when they cover it.
    pub(crate) fn set_pos(&mut self, offset: u64) {
        let end = self.buf_off + self.filled as u64;
        if offset >= self.buf_off && offset <= end {
            self.start = (offset - self.buf_off) as usize;
        } else {
            self.filled = 0;
            self.buf_off = offset;
            self.start = 0;
        }
        self.searched = 0;
    }

    /// The next line, reading more of the file as needed.
    pub(crate) fn next(&mut self, file: &File) -> std::io::Result<Next<'_>> {
        loop {
            let avail = self.filled - self.start;
            if let Some(k) = find_newline(&self.buf[self.start + self.searched..self.filled]) {
                let s = self.start;
                let e = s + self.searched + k;
                self.start = e + 1;
                self.searched = 0;
                let offset = self.buf_off + s as u64;
                if e - s > MAX_LINE_BYTES {
                    return Ok(Next::TooLong {
                        offset,
                        len: (e + 1 - s) as u64,
                    });
                }
                return Ok(Next::Line {
                    offset,
                    line: &self.buf[s..e],
                });
            }
            self.searched = avail;
            if avail > MAX_LINE_BYTES {
                return self.skip_long_line(file);
            }
            // Move the unfinished line to the front before reading more, so the
            // buffer holds one line plus one chunk at most.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.filled, 0);
                self.filled = avail;
                self.buf_off += self.start as u64;
                self.start = 0;
            }
            let want = self.chunk.max(avail);
            if self.buf.len() < self.filled + want {
                self.buf.resize(self.filled + want, 0);
            }
            let at = self.buf_off + self.filled as u64;
            let room = &mut self.buf[self.filled..self.filled + want];
            let n = read_at_full(file, room, at)?;
            self.filled += n;
            if n == 0 {
                // Forget the incomplete bytes: the line may be completed, or cut by
                // a recovery, before we look again.
                let len = self.filled as u64;
                let offset = self.buf_off;
                self.filled = 0;
                self.searched = 0;
                return Ok(if len == 0 {
                    Next::Eof
                } else {
                    Next::Pending { offset, len }
                });
            }
        }
    }

    /// Discards an over-long line without buffering it whole.
    fn skip_long_line(&mut self, file: &File) -> std::io::Result<Next<'static>> {
        let offset = self.buf_off + self.start as u64;
        let mut at = self.buf_off + self.filled as u64;
        self.filled = 0;
        self.start = 0;
        self.searched = 0;
        let mut chunk = vec![0u8; self.chunk];
        loop {
            let n = read_at_full(file, &mut chunk, at)?;
            if n == 0 {
                // No newline before EOF: a pending line, but far too long to ever be
                // valid; report it as too long so it is not waited for forever.
                self.buf_off = at;
                return Ok(Next::TooLong {
                    offset,
                    len: at - offset,
                });
            }
            if let Some(k) = find_newline(&chunk[..n]) {
                let next = at + k as u64 + 1;
                self.buf_off = next;
                return Ok(Next::TooLong {
                    offset,
                    len: next - offset,
                });
            }
            at += n as u64;
        }
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
